"""Bad input, table by table: operator parameters, connection fields, prompt files and server
answers. Each gets a clear error that names the field (raised by this package, before any request,
never a ``KeyError``/``TypeError`` from deep inside a library), or is handled; partial output is
never presented as complete.
"""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import DAG, Connection
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from airflow_fireworks.api import DeploymentInfo, FireworksError, HotloadStatus
from airflow_fireworks.api._http import account_from_response
from airflow_fireworks.hooks.fireworks import FireworksConnectionParams, FireworksHook
from airflow_fireworks.operators.deployment import (
    FireworksCreateDeploymentOperator,
    FireworksHotloadOperator,
    FireworksUpdateDeploymentOperator,
)
from airflow_fireworks.operators.sampling import FireworksSampleOperator
from airflow_fireworks.sampling import InvalidCompletionError, StreamProtocolError, StreamTruncatedError
from airflow_fireworks.sampling.completion import CompletionOptions, build_completion
from airflow_fireworks.sampling.stream import SSEDecoder, StreamAssembler
from tests.airflow_helpers import RecordingTaskInstance, task_context
from tests.conftest import TEST_API_KEY
from tests.emulator_control import EmulatorProcess
from tests.reliability.conftest import BASE_MODEL, QUICK_RETRY, create_ready, quote_key_in_faults

SECRET = "fw-bad-input-secret-5e1d"
OPERATORS: dict[str, Any] = {
    "create": FireworksCreateDeploymentOperator,
    "update": FireworksUpdateDeploymentOperator,
    "hotload": FireworksHotloadOperator,
    "sample": FireworksSampleOperator,
}
CREATE = {"deployment_id": "ok-dep", "base_model": BASE_MODEL}
HOTLOAD = {"deployment_id": "ok-dep", "base_model": BASE_MODEL, "snapshot_identity": "snap-1"}
SAMPLE = {"deployment_id": "ok-dep", "prompts": [{"prompt_token_ids": [1, 2, 3]}], "max_tokens": 8}
CHAT = [{"role": "user", "content": "hi"}]
#: Every parameter name of the operators under test (what an error's text may start with).
OPERATOR_FIELDS = {
    name for operator in OPERATORS.values() for name in inspect.signature(operator.__init__).parameters
} | {"config"}


def assert_clear(caught: pytest.ExceptionInfo[BaseException], *words: str) -> None:
    """The error is ours (raised in ``airflow_fireworks``), names what is wrong, and hides the keys
    (the connection's and the emulator's, which the emulator's error messages quote)."""
    text = str(caught.value)
    for word in words:
        assert word in text, f"{word!r} not in {text!r}"
    assert SECRET not in text and TEST_API_KEY not in text
    assert SECRET not in repr(caught.value) and TEST_API_KEY not in repr(caught.value)
    innermost = str(caught.traceback[-1].path)
    assert "/airflow_fireworks/" in innermost, f"raised from {innermost}: {caught.value!r}"


_LEADING_NAME = re.compile(r"([a-z_][a-z0-9_]*)\b")


def error_field(error: BaseException) -> str | None:
    """The parameter an error is about: its ``field``, else the parameter name its text starts
    with (``"n: must be ..."``, ``"timeout must be ..."``); None when it starts with no parameter
    name of the operators under test."""
    field = getattr(error, "field", None)
    if isinstance(field, str):
        return field
    match = _LEADING_NAME.match(str(error))
    return match.group(1) if match and match.group(1) in OPERATOR_FIELDS else None


@pytest.fixture
def emulator(emulator: EmulatorProcess, monkeypatch: pytest.MonkeyPatch) -> EmulatorProcess:
    """The session emulator; the messages of its faults quote the key."""
    quote_key_in_faults(emulator, monkeypatch)
    return emulator


# --- operator parameters (DAG parse time) ------------------------------------------------------------

OPERATOR_PARAMETERS: list[tuple[str, dict[str, Any], str | None, str]] = [
    ("create", {**CREATE, "deployment_id": "Bad_Id"}, "deployment_id", "'Bad_Id' is not a valid"),
    ("create", {**CREATE, "deployment_id": "x" * 64}, "deployment_id", "is not a valid deployment id"),
    ("create", {**CREATE, "base_model": "qwen3-8b"}, "base_model", "accounts/<account>/models/<model>"),
    ("create", {**CREATE, "min_replica_count": 3, "max_replica_count": 1}, "max_replica_count",
     ">= min_replica_count (3), got 1"),
    ("create", {**CREATE, "min_replica_count": -1}, "min_replica_count", "got -1"),
    ("create", {**CREATE, "max_replica_count": "two"}, "max_replica_count", "got 'two'"),
    ("create", {**CREATE, "region": "MARS_NORTH_1"}, "region", "'MARS_NORTH_1' is not one of"),
    ("create", {**CREATE, "accelerator_type": "NVIDIA_H100_80GB",
                "deployment_shape": "accounts/a/deploymentShapes/s"}, "accelerator_type", "deployment_shape"),
    ("create", {**CREATE, "deployment_shape": "shape-1"}, "deployment_shape", "'shape-1'"),
    ("create", {**CREATE, "hot_load_trainer_job": "job-1"}, "hot_load_trainer_job", "'job-1'"),
    ("create", {**CREATE, "config": {"replicas": 2}}, "replicas", "unknown deployment config key"),
    ("create", {**CREATE, "config": {"scale_to_zero_window_s": 60}}, "scale_to_zero_window_s", "got 60"),
    ("create", {**CREATE, "config": {"base_model": BASE_MODEL}}, "config", "repeats base_model"),
    ("create", {**CREATE, "config": {"enable_hot_load": "sometimes"}}, "enable_hot_load", "got 'sometimes'"),
    ("create", {**CREATE, "config": ["region"]}, "config", "must be a dict"),
    ("create", {**CREATE, "timeout": -5}, "timeout", "got -5"),
    ("create", {**CREATE, "poll_interval": "soon"}, "poll_interval", "got 'soon'"),
    ("update", {"deployment_id": "ok-dep", "body": {"minReplicaCount": 1}}, "update_mask", "is required"),
    ("update", {"deployment_id": "ok-dep", "update_mask": "min_replica_count"}, "update_mask",
     "without body"),
    ("update", {"deployment_id": "ok-dep", "body": {"minReplicaCount": 1}, "update_mask": "minReplicaCount"},
     "update_mask", "'minReplicaCount' must be snake_case"),
    ("update", {"deployment_id": "ok-dep", "body": {"minReplicaCount": 1, "maxReplicaCount": 2},
                "update_mask": "min_replica_count"}, "update_mask", "'maxReplicaCount' is not covered"),
    ("update", {"deployment_id": "ok-dep", "scale_to_zero_window_s": 100}, "scale_to_zero_window_s",
     "got 100"),
    ("update", {"deployment_id": "ok-dep", "min_replica_count": 4, "max_replica_count": 2},
     "min_replica_count", "<= max_replica_count (2)"),
    ("update", {"deployment_id": "ok-dep"}, None, "nothing to update: pass body and update_mask"),
    ("hotload", {**HOTLOAD, "snapshot_identity": "  "}, "snapshot_identity", "got '  '"),
    ("hotload", {**HOTLOAD, "previous_snapshot_identity": "snap-1"}, "previous_snapshot_identity",
     "equals snapshot_identity"),
    ("hotload", {**HOTLOAD, "base_model": "accounts/x/deployments/y"}, "base_model",
     "'accounts/x/deployments/y'"),
    ("hotload", {**HOTLOAD, "warmup_max_retries": 0}, "warmup_max_retries", "got 0"),
    ("sample", {**SAMPLE, "n": 0}, "n", "between 1 and 128, got 0"),
    ("sample", {**SAMPLE, "n": 129}, "n", "got 129"),
    ("sample", {**SAMPLE, "n": "eight"}, "n", "got 'eight'"),
    ("sample", {**SAMPLE, "temperature": 3.5}, "temperature", "got 3.5"),
    ("sample", {**SAMPLE, "temperature": float("nan")}, "temperature", "got nan"),
    ("sample", {**SAMPLE, "top_p": 0}, "top_p", "got 0"),
    ("sample", {**SAMPLE, "top_k": 101}, "top_k", "got 101"),
    ("sample", {**SAMPLE, "stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
    ("sample", {**SAMPLE, "stop": ["a", 1]}, "stop", "not mixed"),
    ("sample", {**SAMPLE, "top_logprobs": 3}, "top_logprobs", "needs logprobs=True"),
    ("sample", {**SAMPLE, "logprobs": "yes"}, "logprobs", "got 'yes'"),
    ("sample", {**SAMPLE, "max_tokens": 0}, "max_tokens", "must be >= 1"),
    ("sample", {**SAMPLE, "max_tokens": -1}, "max_tokens", "got -1"),
    ("sample", {**SAMPLE, "max_seq_len": 0}, "max_seq_len", "got 0"),
    ("sample", {**SAMPLE, "seed": -1}, "seed", "got -1"),
    ("sample", {**SAMPLE, "shard_index": 2, "num_shards": 2}, "shard_index", "num_shards=2"),
    ("sample", {**SAMPLE, "num_shards": 0}, "num_shards", "got 0"),
    ("sample", {**SAMPLE, "concurrency": 0}, "concurrency", "got 0"),
    ("sample", {**SAMPLE, "concurrency": {"windows": 4}}, "concurrency", "['windows']"),
    ("sample", {**SAMPLE, "concurrency": {"max_window": 0}}, "concurrency", "max_window"),
    ("sample", {**SAMPLE, "concurrency": "fast"}, "concurrency", "'adaptive'"),
    ("sample", {**SAMPLE, "max_failed_prompt_fraction": 1.5}, "max_failed_prompt_fraction", "got 1.5"),
    ("sample", {**SAMPLE, "max_xcom_completions": -1}, "max_xcom_completions", "got -1"),
    ("sample", {**SAMPLE, "progress_interval_s": 0}, "progress_interval_s", "got 0"),
    ("sample", {**SAMPLE, "output_path": "relative/dir"}, "output_path", "'relative/dir' is a relative path"),
    ("sample", {**SAMPLE, "output_path": 42}, "output_path", "got 42"),
    ("sample", {**SAMPLE, "model": "qwen3"}, "deployment_id", "exactly one of deployment_id or model"),
    ("sample", {"prompts": ["hi"], "model": "qwen3"}, "model", "'qwen3' is not an inference model name"),
    ("sample", {"prompts": ["hi"]}, "deployment_id", "exactly one of deployment_id or model"),
    ("sample", {**SAMPLE, "prompts_path": "/data/p.jsonl"}, "prompts", "exactly one prompt source"),
    ("sample", {"deployment_id": "ok-dep"}, "prompts", "exactly one prompt source"),
    ("sample", {**SAMPLE, "tokenizer": ""}, "tokenizer", "Hugging Face model id"),
    ("sample", {**SAMPLE, "prompts": "What is 2 + 2?"}, "prompts", "is a string, not a list"),
    ("sample", {**SAMPLE, "prompts": {"p": "hi"}}, "prompts", "must be a list of prompts, got dict"),
    ("sample", {**SAMPLE, "prompts": []}, "prompts", "holds no prompt"),
    ("sample", {**SAMPLE, "prompts": [""]}, "prompts", "item 0 is an empty string"),
    ("sample", {**SAMPLE, "prompts": [42]}, "prompts", "item 0 is a int"),
    ("sample", {**SAMPLE, "prompts": [None]}, "prompts", "item 0 is a NoneType"),
    ("sample", {**SAMPLE, "prompts": [{"role": "user", "content": "hi"}]}, "prompts",
     "item 0 has unknown key(s) ['content', 'role']"),
    ("sample", {**SAMPLE, "prompts": [{"messages": "hi"}]}, "prompts", "item 0 messages: must be"),
    ("sample", {**SAMPLE, "prompts": [{"messages": [{"content": "hi"}]}]}, "prompts",
     "item 0 messages[0]: must be a dict with a string 'role'"),
    ("sample", {**SAMPLE, "prompts": [{"messages": CHAT, "prompt_token_ids": [1]}]}, "prompts",
     "item 0 needs exactly one"),
    ("sample", {**SAMPLE, "prompts": [{"prompt_token_ids": []}]}, "prompts", "item 0 prompt_token_ids: must"),
    ("sample", {**SAMPLE, "prompts": [{"prompt_token_ids": [1, -2]}]}, "prompts",
     "item 0 prompt_token_ids: contains -2"),
    ("sample", {**SAMPLE, "prompts": [{"prompt_token_ids": [1, "2"]}]}, "prompts",
     "item 0 prompt_token_ids: contains '2'"),
    ("sample", {**SAMPLE, "prompts": [{"prompt_token_ids": [1, 2.0]}]}, "prompts",
     "item 0 prompt_token_ids: contains 2.0"),
    ("sample", {**SAMPLE, "prompts": [{"prompt_token_ids": [1], "metadata": 5}]}, "prompts",
     "item 0 'metadata' must be an object"),
    ("sample", {**SAMPLE, "prompts": [{"prompt_token_ids": [1], "answer": "5"}]}, "prompts",
     "item 0 has unknown key(s) ['answer']"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("operator", "kwargs", "field", "says"),
    OPERATOR_PARAMETERS,
    ids=[f"{op}-{i}-{field or 'none'}" for i, (op, _, field, _) in enumerate(OPERATOR_PARAMETERS)],
)
def test_invalid_operator_parameters_fail_at_dag_parse_naming_the_field(
    operator: str, kwargs: dict[str, Any], field: str | None, says: str
) -> None:
    with pytest.raises(ValueError) as caught:
        OPERATORS[operator](task_id="bad", **kwargs)
    assert_clear(caught, says)
    assert error_field(caught.value) == field, str(caught.value)


#: (operator, templated parameters, the run's params / upstream XCom "p", the error's field, and
#: what its text must quote: the rendered value, or the problem).
RENDERED: list[tuple[str, dict[str, Any], Any, str, str]] = [
    ("create", {**CREATE, "deployment_id": "{{ params.v }}"}, "Not Valid", "deployment_id", "'Not Valid'"),
    ("create", {**CREATE, "max_replica_count": "{{ params.v }}"}, "lots", "max_replica_count", "'lots'"),
    ("hotload", {**HOTLOAD, "snapshot_identity": "{{ params.v }}"}, "", "snapshot_identity", "got ''"),
    ("sample", {**SAMPLE, "n": "{{ params.v }}"}, "many", "n", "got 'many'"),
    ("sample", {**SAMPLE, "temperature": "{{ params.v }}"}, "hot", "temperature", "got 'hot'"),
    ("sample", {**SAMPLE, "deployment_id": "{{ params.v }}"}, "UPPER", "deployment_id", "'UPPER'"),
    ("sample", {**SAMPLE, "prompts": "{{ ti.xcom_pull('p') }}"}, "What is 2+2?", "prompts",
     "is a string, not a list"),
    ("sample", {**SAMPLE, "prompts": "{{ ti.xcom_pull('p') }}"}, [{"text": "hi"}], "prompts",
     "item 0 has unknown key(s) ['text']"),
    ("sample", {"deployment_id": "ok-dep", "prompts_path": "{{ params.v }}"}, "/no/such/prompts.jsonl",
     "prompts_path", "/no/such/prompts.jsonl"),
    ("sample", {**SAMPLE, "prompts": [{"messages": CHAT}]}, None, "tokenizer", "tokenizer"),
]  # fmt: skip


class UpstreamTaskInstance(RecordingTaskInstance):
    """A task instance whose upstream task ``p`` pushed ``value``."""

    def __init__(self, value: Any) -> None:
        super().__init__("bad")
        self.value = value

    def xcom_pull(self, task_ids: str | None = None, **_: Any) -> Any:
        return self.value if task_ids == "p" else None


@pytest.mark.parametrize(
    ("operator", "kwargs", "value", "field", "says"),
    RENDERED,
    ids=[f"{op}-{i}-{field}" for i, (op, _, _, field, _) in enumerate(RENDERED)],
)
def test_invalid_rendered_values_fail_before_any_request(
    emulator: EmulatorProcess,
    fireworks_conn_env: str,
    operator: str,
    kwargs: dict[str, Any],
    value: Any,
    field: str,
    says: str,
) -> None:
    with DAG("bad_rendered", schedule=None, render_template_as_native_obj=True):
        task = OPERATORS[operator](task_id="bad", **kwargs)  # valid until rendered
    context = task_context(params={"v": value}, ti=UpstreamTaskInstance(value))
    task.render_template_fields(context)  # what the task runner does before execute()

    # No retry renders a different value: the task fails at once (AirflowFailException).
    with pytest.raises(AirflowFailException) as caught:
        task.execute(context)

    assert_clear(caught, says)
    assert error_field(caught.value) == field, str(caught.value)
    assert emulator.requests() == []


# --- connection fields --------------------------------------------------------------------------------

CONNECTIONS: list[tuple[dict[str, Any], str, str]] = [
    ({"password": None}, "password", "is empty"),
    ({"password": "   "}, "password", "is empty"),
    ({"host": "ftp://api.fireworks.ai"}, "host", "not an http(s) URL"),
    ({"host": "https://api.fireworks.ai/?region=us"}, "host", "query string"),
    ({"extra": json.dumps({"inference_url": "ftp://gateway"})}, "inference_url", "not an http(s) URL"),
    ({"extra": json.dumps({"hotload_url": 5})}, "hotload_url", "must be a URL string"),
    ({"extra": json.dumps({"console_url": "gopher://c"})}, "console_url", "not an http(s) URL"),
    ({"extra": json.dumps({"additional_headers": "{not json"})}, "additional_headers", "JSON object"),
    ({"extra": json.dumps({"additional_headers": {"X-Team": 7}})}, "additional_headers", "string values"),
    ({"extra": json.dumps({"additional_headers": ["X-Team"]})}, "additional_headers", "string values"),
    ({"extra": json.dumps({"verify_ssl": "maybe"})}, "verify_ssl", "got 'maybe'"),
    ({"extra": json.dumps({"extra__fireworks__verify_ssl": 2})}, "verify_ssl", "got 2"),
]


def connection(**fields: Any) -> Connection:
    values = {"conn_id": "fw_bad", "conn_type": "fireworks", "host": "https://api.fireworks.ai",
              "password": SECRET, **fields}  # fmt: skip
    return Connection(**values)


@pytest.mark.parametrize(
    ("fields", "field", "problem"), CONNECTIONS, ids=[f"{i}-{c[1]}" for i, c in enumerate(CONNECTIONS)]
)
def test_invalid_connection_fields_name_the_field_and_never_the_key(
    fields: dict[str, Any], field: str, problem: str
) -> None:
    with pytest.raises(ValueError) as caught:
        FireworksConnectionParams.from_connection(connection(**fields))
    assert_clear(caught, "fw_bad", repr(field), problem)
    assert getattr(caught.value, "field", None) == field


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"host": "api.fireworks.ai"}, "https://api.fireworks.ai"),
        ({"host": "http://127.0.0.1", "port": 8765}, "http://127.0.0.1:8765"),
        ({"host": "  https://api.fireworks.ai/  "}, "https://api.fireworks.ai"),
        ({"host": None}, "https://api.fireworks.ai"),
        ({"extra": json.dumps({"verify_ssl": "False", "inference_url": " "})}, "https://api.fireworks.ai"),
    ],
    ids=["bare-host", "port-field", "spaces-and-slash", "no-host", "string-bool-and-blank-extra"],
)
def test_lenient_connection_spellings_are_handled(fields: dict[str, Any], expected: str) -> None:
    params = FireworksConnectionParams.from_connection(connection(**fields))
    assert params.base_url == expected
    assert SECRET not in repr(params)


def test_a_wrong_key_is_one_clear_401_without_the_key(emulator: EmulatorProcess, monkeypatch) -> None:
    conn = {"conn_type": "fireworks", "host": emulator.url, "password": SECRET}
    monkeypatch.setenv("AIRFLOW_CONN_FIREWORKS_DEFAULT", json.dumps(conn))
    task = FireworksCreateDeploymentOperator(task_id="create", **CREATE)

    with pytest.raises(AirflowException) as caught:
        task.execute(task_context())
    ok, message = FireworksHook().test_connection()

    assert_clear(caught, "HTTP 401", "password")
    assert not ok and "401" in message and SECRET not in message
    assert len(emulator.requests(route="accounts")) == 2  # one per call: a 401 is never retried


def test_an_empty_key_in_the_connection_fails_the_sample_task_before_any_request(
    emulator: EmulatorProcess, monkeypatch, tmp_path: Path
) -> None:
    conn = {"conn_type": "fireworks", "host": emulator.url, "password": ""}
    monkeypatch.setenv("AIRFLOW_CONN_FIREWORKS_DEFAULT", json.dumps(conn))
    task = FireworksSampleOperator(task_id="sample", **SAMPLE, output_path=tmp_path.as_uri())

    with pytest.raises(ValueError) as caught:
        task.execute(task_context())

    assert_clear(caught, "password")
    assert emulator.requests() == []


# --- prompt files -------------------------------------------------------------------------------------

GOOD_LINE = json.dumps({"messages": CHAT, "metadata": {"id": 1}})
PROMPT_FILES: list[tuple[str, bytes, str]] = [
    ("empty-file", b"", "holds no prompt"),
    ("blank-lines-only", b"\n  \n\n", "holds no prompt"),
    ("malformed-json", f"{GOOD_LINE}\n{GOOD_LINE}\n{{'messages': oops}}\n".encode(), "line 3"),
    ("truncated-last-line", f"{GOOD_LINE}\n{GOOD_LINE[:20]}".encode(), "line 2"),
    ("number-line", b"42\n", "is a int"),
    ("list-of-strings", b'["hi", "there"]\n', "messages"),
    ("messages-not-a-list", b'{"messages": "hi"}\n', "messages"),
    ("message-without-role", b'{"messages": [{"content": "hi"}]}\n', "role"),
    ("ids-with-strings", b'{"prompt_token_ids": [1, "2"]}\n', "prompt_token_ids"),
    ("ids-negative", b'{"prompt_token_ids": [1, -5]}\n', "ints >= 0"),
    ("ids-and-messages", b'{"prompt_token_ids": [1], "messages": [{"role": "user", "content": "x"}]}\n',
     "exactly one"),
    ("unknown-key", b'{"prompt": "What is 2+2?"}\n', "unknown key"),
    ("metadata-not-object", b'{"prompt_token_ids": [1], "metadata": [1]}\n', "metadata"),
    ("not-utf8", b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}\n', "line 1"),
    ("bad-line-after-many-good", (GOOD_LINE + "\n") .encode() * 500 + b"{\n", "line 501"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "content", "says"), PROMPT_FILES, ids=[p[0] for p in PROMPT_FILES])
def test_bad_prompt_files_fail_naming_the_line_before_any_request(
    emulator: EmulatorProcess,
    fireworks_conn_env: str,
    tokenizer_dir: Path,
    tmp_path: Path,
    name: str,
    content: bytes,
    says: str,
) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_bytes(content)
    task = FireworksSampleOperator(
        task_id="sample", deployment_id="ok-dep", tokenizer=str(tokenizer_dir), prompts_path=prompts.as_uri(),
        output_path=(tmp_path / "out").as_uri(), max_tokens=8,
    )  # fmt: skip

    with pytest.raises(AirflowFailException) as caught:
        task.execute(task_context())

    assert_clear(caught, "prompts_path", says)
    assert emulator.requests() == []
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.jsonl"))


def test_prompts_longer_than_max_seq_len_are_skipped_and_reported_not_sampled(
    emulator: EmulatorProcess, fireworks_conn_env: str, tmp_path: Path
) -> None:
    emulator.configure(create_delay_s=0.05)
    create_ready(emulator, "ok-dep")
    prompts = [
        {"prompt_token_ids": [1] * length, "metadata": {"len": length}} for length in (4, 40, 6, 64, 5)
    ]
    task = FireworksSampleOperator(
        task_id="sample", deployment_id="ok-dep", prompts=prompts, n=2, max_tokens=8, max_seq_len=32,
        output_path=tmp_path.as_uri(),
    )  # fmt: skip

    summary = task.execute(task_context())

    records = [json.loads(line) for line in Path(summary["completions_uri"][7:]).read_text().splitlines()]
    assert sorted({r["prompt_index"] for r in records}) == [0, 2, 4]
    assert summary["num_prompts_skipped"] == 2 and summary["num_prompts_failed"] == 0
    assert all(r["prompt_len"] + r["completion_len"] <= 32 for r in records)
    assert len(emulator.requests(route="completions")) == 3 * 2
    manifest = json.loads(Path(summary["manifest_uri"][7:]).read_text())
    assert manifest["skipped_prompt_indices"] == [1, 3]


def test_a_prompt_longer_than_the_model_context_is_an_error_record_and_fails_the_task(
    emulator: EmulatorProcess, fireworks_conn_env: str, tmp_path: Path
) -> None:
    emulator.configure(create_delay_s=0.05, max_context_length=256)
    create_ready(emulator, "ok-dep")
    prompts = [{"prompt_token_ids": [1, 2, 3]}, {"prompt_token_ids": [5] * 300}, {"prompt_token_ids": [4, 2]}]
    task = FireworksSampleOperator(
        task_id="sample", deployment_id="ok-dep", prompts=prompts, n=2, max_tokens=8,
        output_path=tmp_path.as_uri(),
    )  # fmt: skip

    with pytest.raises(AirflowException) as caught:
        task.execute(task_context())

    assert_clear(caught, "1 of 3 prompts failed", "prompt 1", "HTTP 400")
    shard = tmp_path / "shard-000000"
    records = [json.loads(line) for line in (shard / "completions.jsonl").read_text().splitlines()]
    errors = [json.loads(line) for line in (shard / "errors.jsonl").read_text().splitlines()]
    assert {r["prompt_index"] for r in records} == {0, 2}
    assert [e["prompt_index"] for e in errors] == [1]
    manifest = json.loads((shard / "manifest.json").read_text())
    assert manifest["num_prompts_failed"] == 1 and manifest["num_completions"] == 4


# --- server answers -----------------------------------------------------------------------------------

ACCOUNT = "acc"
DEPLOYMENT_ANSWERS: list[tuple[str, Any, type[Exception] | None, str]] = [
    ("unknown-fields", {"name": "accounts/acc/deployments/d", "state": "READY", "newField": {"x": [1]}},
     None, "READY"),
    ("unknown-state", {"name": "accounts/acc/deployments/d", "state": "WARMING_UP"}, None, "UNKNOWN"),
    ("missing-state", {"name": "accounts/acc/deployments/d"}, None, "UNKNOWN"),
    ("missing-name", {"state": "CREATING"}, None, "CREATING"),
    ("snake-case-keys", {"name": "accounts/acc/deployments/d", "state": "READY", "replica_count": 2}, None,
     "READY"),
    ("state-wrong-type", {"name": "accounts/acc/deployments/d", "state": 3}, FireworksError, "'state'"),
    ("replicas-wrong-type", {"name": "accounts/acc/deployments/d", "replicaCount": "two"}, FireworksError,
     "'replicaCount'"),
    ("name-wrong-type", {"name": ["d"], "state": "READY"}, FireworksError, "'name'"),
    ("status-message-wrong-type", {"name": "accounts/acc/deployments/d", "status": {"message": 5}},
     FireworksError, "status.message"),
    ("not-an-object", ["accounts/acc/deployments/d"], FireworksError, "JSON object"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "body", "error", "says"), DEPLOYMENT_ANSWERS, ids=[a[0] for a in DEPLOYMENT_ANSWERS]
)
def test_deployment_answers(name: str, body: Any, error: type[Exception] | None, says: str) -> None:
    if error is None:
        info = DeploymentInfo.from_response(body, ACCOUNT, deployment_id="d")
        assert info.state.value == says and info.deployment_id == "d"
        assert info.raw == body
        return
    with pytest.raises(error) as caught:
        DeploymentInfo.from_response(body, ACCOUNT, deployment_id="d")
    assert_clear(caught, says)


HOTLOAD_ANSWERS: list[tuple[str, Any, type[Exception] | None, str]] = [
    ("unknown-fields", {"replicas": [{"readiness": True, "current_snapshot_identity": "s", "gpu": "h200"}],
                        "build": "x"}, None, "ready"),
    ("missing-loading-state", {"replicas": [{"readiness": False}]}, None, "pending"),
    ("no-replicas-yet", {"replicas": []}, None, "pending"),
    ("missing-replicas", {"status": "ok"}, FireworksError, "no 'replicas' list"),
    ("replicas-wrong-type", {"replicas": {"0": {}}}, FireworksError, "no 'replicas' list"),
    ("replica-not-object", {"replicas": [7]}, FireworksError, "replicas[0]"),
    ("readiness-wrong-type", {"replicas": [{"readiness": "yes"}]}, FireworksError, "readiness"),
    ("identity-wrong-type", {"replicas": [{"current_snapshot_identity": 3}]}, FireworksError,
     "current_snapshot_identity"),
    ("loading-state-wrong-type", {"replicas": [{"loading_state": "busy"}]}, FireworksError, "loading_state"),
    ("adapters-wrong-type", {"replicas": [{"loaded_adapters": "a"}]}, FireworksError, "loaded_adapters"),
    ("not-an-object", "ready", FireworksError, "JSON object"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "body", "error", "says"), HOTLOAD_ANSWERS, ids=[a[0] for a in HOTLOAD_ANSWERS]
)
def test_hotload_status_answers(name: str, body: Any, error: type[Exception] | None, says: str) -> None:
    if error is None:
        assert HotloadStatus.from_response(body).evaluate("s").outcome == says
        return
    with pytest.raises(error) as caught:
        HotloadStatus.from_response(body)
    assert_clear(caught, says)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({}, "not associated with any account"),
        ({"accounts": "acc"}, "not associated with any account"),
        ({"accounts": [{"name": "accounts/a"}, {"name": "accounts/b"}]}, "several accounts"),
        ({"accounts": [{"email": "x@y"}]}, "without a name"),
        ({"accounts": [{"name": "accounts/"}]}, "empty account name"),
    ],
    ids=["empty", "wrong-type", "two-accounts", "missing-name", "empty-name"],
)
def test_account_answers(body: Any, says: str) -> None:
    with pytest.raises(FireworksError) as caught:
        account_from_response(body)
    assert_clear(caught, says)


FINAL = {"text": "!", "finish_reason": "stop", "raw_output": {"completion_token_ids": [7, 2]}}
STREAM_ANSWERS: list[tuple[str, list[Any], type[Exception] | None, str]] = [
    ("unknown-fields", [{"id": "r", "future": 1, "choices": [{"text": "a", "extra": {}}]},
                        {"choices": [FINAL], "usage": {"completion_tokens": 2}}, "[DONE]"], None, "a!"),
    ("missing-done-after-raw-output", [{"choices": [FINAL]}], None, "!"),
    ("choices-not-a-list", [{"choices": {"text": "a"}}], StreamProtocolError, "'choices' is not a list"),
    ("choice-not-an-object", [{"choices": ["a"]}], StreamProtocolError, "not an object"),
    ("text-wrong-type", [{"choices": [{"text": 5}]}], StreamProtocolError, "'text' is not a string"),
    ("chunk-is-a-list", [[1, 2]], StreamProtocolError, "not an object"),
    ("usage-wrong-type", [{"choices": [], "usage": "many"}], StreamProtocolError, "'usage'"),
    ("raw-output-wrong-type", [{"choices": [{**FINAL, "raw_output": [7, 2]}]}], StreamProtocolError,
     "'raw_output'"),
    ("logprobs-content-wrong-type", [{"choices": [{"text": "a", "logprobs": {"content": "x"}}]}],
     StreamProtocolError, "logprobs.content"),
    ("missing-token-ids", [{"choices": [{**FINAL, "raw_output": {"text": "!"}}]}, "[DONE]"],
     InvalidCompletionError, "completion_token_ids"),
    ("token-ids-wrong-type",
     [{"choices": [{**FINAL, "raw_output": {"completion_token_ids": "7 2"}}]}, "[DONE]"],
     InvalidCompletionError, "completion_token_ids"),
    ("logprob-rows-not-objects",
     [{"choices": [{"text": "a", "logprobs": {"content": [1, 2]}}]}, {"choices": [FINAL]}, "[DONE]"],
     InvalidCompletionError, "logprobs.content"),
    ("missing-finish-reason", [{"choices": [{"text": "a"}]}, "[DONE]"], StreamTruncatedError,
     "finish reason"),
    ("no-chunks-at-all", ["[DONE]"], StreamTruncatedError, "finish reason"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "chunks", "error", "says"), STREAM_ANSWERS, ids=[a[0] for a in STREAM_ANSWERS]
)
def test_streamed_completion_answers(
    name: str, chunks: list[Any], error: type[Exception] | None, says: str
) -> None:
    body = b"".join(
        b"data: " + (c.encode() if isinstance(c, str) else json.dumps(c).encode()) + b"\n\n" for c in chunks
    )

    def assemble() -> Any:
        assembled = StreamAssembler()
        for event, data in SSEDecoder().feed(body):
            assembled.add_event(event, data)
        assembled.check_complete()
        return build_completion(assembled, [1, 2, 3], CompletionOptions(logprobs=True))

    if error is None:
        completion = assemble()
        assert completion.text == says and completion.completion_tokens == [7, 2]
        assert completion.finish_reason == "stop"
        return
    with pytest.raises(error) as caught:
        assemble()
    assert_clear(caught, says)


# --- server answers over HTTP (the emulator's ``body`` fault answers any JSON value) -----------------

SERVER_ANSWERS_HTTP: list[tuple[str, str, int, Any, str | None]] = [
    ("get-unknown-fields", "get", 200,
     {"name": "accounts/emulator/deployments/ans-dep", "state": "READY", "replicaCount": 1, "newThing": [1]},
     None),
    ("get-state-wrong-type", "get", 200, {"name": "accounts/emulator/deployments/ans-dep", "state": 7},
     "'state' should be a string"),
    ("get-not-an-object", "get", 200, ["READY"], "did not return a JSON object"),
    ("get-not-json-text", "get", 200, f"<html>gateway {TEST_API_KEY}</html>", "did not return a JSON object"),
    ("accounts-empty", "accounts", 200, {"accounts": []}, "not associated with any account"),
    ("accounts-missing-name", "accounts", 200, {"accounts": [{"state": "READY"}]}, "without a name"),
    ("create-replicas-wrong-type", "create", 200,
     {"name": "accounts/emulator/deployments/new-dep", "state": "CREATING", "replicaCount": "1"},
     "'replicaCount' should be an integer"),
    ("hotload-status-missing-replicas", "hotload_status", 200, {"status": "ok"}, "no 'replicas' list"),
    ("hotload-status-readiness-wrong-type", "hotload_status", 200, {"replicas": [{"readiness": "yes"}]},
     "readiness"),
    ("error-body-unusual-shape", "get", 400, {"error": f"plain text problem for key {TEST_API_KEY}"},
     "HTTP 400"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "route", "status", "body", "says"), SERVER_ANSWERS_HTTP, ids=[a[0] for a in SERVER_ANSWERS_HTTP]
)
def test_server_answers_over_http_are_handled_or_clear_errors(
    emulator: EmulatorProcess, name: str, route: str, status: int, body: Any, says: str | None
) -> None:
    from airflow_fireworks.api import DeploymentConfig, DeploymentManager

    emulator.configure(create_delay_s=0.05)
    create_ready(emulator, "ans-dep")
    calls = {
        "get": lambda m: m.get("ans-dep"),
        "accounts": lambda m: m.account_id,
        "create": lambda m: m.create_or_get(DeploymentConfig(deployment_id="new-dep", base_model=BASE_MODEL)),
        "hotload_status": lambda m: m.hotload_check_status("ans-dep", BASE_MODEL),
    }
    with DeploymentManager(emulator.api_key, emulator.url) as manager:
        if route != "accounts":
            assert manager.account_id == emulator.account_id
        before = len(emulator.requests(route=route))
        emulator.add_fault(route=route, kind="body", status=status, body=body, times=None)
        if says is None:
            info = calls[route](manager)
            assert info.state.value == "READY" and info.raw["newThing"] == [1]
            return
        with pytest.raises(FireworksError) as caught:
            calls[route](manager)
    assert_clear(caught, says)
    assert len(emulator.requests(route=route)) - before == 1  # a bad answer is not retried


def test_the_emulator_body_fault_answers_verbatim_and_needs_a_body(emulator: EmulatorProcess) -> None:
    refused = emulator.session.post(f"{emulator.url}/_emulator/faults", json={"kind": "body"}, timeout=5)
    emulator.add_fault(route="accounts", kind="body", body=[1, "two", None], times=1)
    answer = emulator.session.get(f"{emulator.url}/v1/accounts", headers={"X-Api-Key": emulator.api_key})
    teapot = emulator.add_fault(route="accounts", kind="body", status=418, body={"error": 1}, times=1)
    second = emulator.session.get(f"{emulator.url}/v1/accounts", headers={"X-Api-Key": emulator.api_key})

    assert refused.status_code == 400 and "needs a 'body'" in refused.text
    assert answer.status_code == 200 and answer.json() == [1, "two", None]
    assert teapot and second.status_code == 418 and second.json() == {"error": 1}


async def _first_event(trigger: Any) -> dict[str, Any]:
    run = trigger.run()
    try:
        return dict((await run.asend(None)).payload)
    finally:
        await run.aclose()


def test_a_bad_deployment_answer_fails_the_wait_and_the_trigger_clearly(
    emulator: EmulatorProcess, fireworks_conn_env: str
) -> None:
    import asyncio
    import time

    from airflow_fireworks.triggers.deployment import FireworksDeploymentTrigger

    emulator.configure(create_delay_s=0.05)
    create_ready(emulator, "ans-dep")
    emulator.add_fault(route="get", kind="body", body={"name": "accounts/emulator/deployments/ans-dep",
                                                       "state": ["READY"]}, times=None)  # fmt: skip
    trigger = FireworksDeploymentTrigger("ans-dep", deadline=time.time() + 10, poll_interval=0.05)
    task = FireworksCreateDeploymentOperator(task_id="create", **{**CREATE, "deployment_id": "ans-dep"})

    event = asyncio.run(_first_event(trigger))
    with pytest.raises((AirflowException, FireworksError)) as caught:
        task.execute(task_context())

    assert event["status"] == "error" and "'state' should be a string" in event["message"]
    assert_clear(caught, "'state' should be a string")


async def test_a_json_answer_instead_of_a_stream_is_never_counted_as_a_completion(
    emulator: EmulatorProcess,
) -> None:
    from airflow_fireworks.sampling import DeploymentSampler, PromptSpec, sample_prompts

    emulator.configure(create_delay_s=0.05)
    model = create_ready(emulator, "ans-dep")
    answer = {"choices": [{"text": "4", "finish_reason": "stop"}], "usage": {"completion_tokens": 1}}
    emulator.add_fault(route="completions", kind="body", body=answer, times=None)
    prompts = [PromptSpec(0, prompt_token_ids=[1, 2, 3])]

    async with DeploymentSampler(emulator.url, model, emulator.api_key, retry_policy=QUICK_RETRY) as sampler:
        results = [result async for result in sample_prompts(sampler, prompts, max_tokens=8)]

    [result] = results
    assert result.completions == [] and result.error is not None
    assert result.error["final_error_kind"] == "sse_truncation"
    assert result.error["attempts"] == QUICK_RETRY.max_attempts
    assert "finish reason" in result.error["message"]


@pytest.mark.parametrize(
    ("operator", "kwargs", "field"),
    [
        ("sample", {**SAMPLE, "max_tokens": "--5"}, "max_tokens"),
        ("sample", {**SAMPLE, "n": "²"}, "n"),
        ("update", {"deployment_id": "ok-dep", "min_replica_count": "+-1"}, "min_replica_count"),
    ],
)
def test_malformed_integer_strings_name_the_field(operator: str, kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError) as caught:
        OPERATORS[operator](task_id="bad", **kwargs)
    assert_clear(caught, f"{field}", "must be an integer")
    assert "invalid literal" not in str(caught.value)


@pytest.mark.parametrize("field", ["reset_prompt_cache", "warmup"])
def test_hotload_flags_must_be_bools_at_dag_parse(emulator: EmulatorProcess, field: str) -> None:
    with pytest.raises(ValueError) as caught:
        FireworksHotloadOperator(task_id="bad", **HOTLOAD, **{field: "no"})
    assert_clear(caught, field, "true or false")
    assert emulator.requests() == []
