"""FireworksSampleOperator against the emulator over HTTP: prompts from a list or a JSONL file,
JSON Lines output with a manifest, XCom output and its size limit, resume after a crash, reuse of
a finished shard, error records, validation before any request, and on_kill."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import fsspec
import pytest
import requests
from airflow.sdk import ObjectStoragePath
from airflow.sdk.exceptions import AirflowException, AirflowFailException
from airflow.sdk.io import attach

from airflow_fireworks.api import FireworksValidationError
from airflow_fireworks.operators._sample_store import ShardStore
from airflow_fireworks.operators.sampling import FireworksSampleOperator
from airflow_fireworks.sampling import FixedConcurrencyController, load_tokenizer
from airflow_fireworks.sampling.output import iter_records
from airflow_fireworks.sampling.run import (
    SUMMARY_KEYS,
    TIMELINE_FIRST_INTERVAL_S,
    TIMELINE_MAX_POINTS,
    SamplingRun,
)
from tests.emulator_control import EmulatorProcess

DEPLOYMENT = "sample-dep"
BASE_MODEL = "accounts/fireworks/models/qwen3-8b"
FAST = {"create_delay_s": 0.05, "decode_step_base_s": 0.0005, "decode_step_per_seq_s": 0.00001}


def create_deployment(emulator: EmulatorProcess, deployment_id: str = DEPLOYMENT) -> str:
    """Create a READY deployment over the control plane; return its inference model name."""
    url = f"{emulator.url}/v1/accounts/{emulator.account_id}/deployments"
    headers = {"X-Api-Key": emulator.api_key}
    body = requests.post(
        url,
        params={"deploymentId": deployment_id},
        json={"baseModel": BASE_MODEL},
        headers=headers,
        timeout=10,
    ).json()
    deadline = time.monotonic() + 10
    while body.get("state") != "READY":
        assert time.monotonic() < deadline, "deployment did not become READY"
        time.sleep(0.02)
        body = requests.get(f"{url}/{deployment_id}", headers=headers, timeout=10).json()
    return f"accounts/{emulator.account_id}/deployments/{deployment_id}"


def context(try_number: int = 1) -> Any:
    """The part of the task context the operator reads."""
    return {"ti": SimpleNamespace(try_number=try_number, map_index=-1)}


def completion_requests(emulator: EmulatorProcess) -> list[dict[str, Any]]:
    return emulator.requests(route="completions", limit=1000)


def operator_requests(emulator: EmulatorProcess) -> list[str]:
    """Routes of the requests sent after the test created its deployment."""
    return [r["route"] for r in emulator.requests() if r["route"] not in ("create", "get")]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open() as fp:
        return list(iter_records(fp))


@pytest.fixture
def emu(emulator: EmulatorProcess, fireworks_conn_env: str) -> EmulatorProcess:
    emulator.configure(**FAST)
    create_deployment(emulator)
    return emulator


@pytest.fixture
def tokenizer(tokenizer_dir: Path) -> str:
    return str(tokenizer_dir)


def operator(**kwargs: Any) -> FireworksSampleOperator:
    defaults: dict[str, Any] = {
        "task_id": "sample",
        "deployment_id": DEPLOYMENT,
        "max_tokens": 8,
        "temperature": 0.8,
        "seed": 7,
    }
    return FireworksSampleOperator(**{**defaults, **kwargs})


MIXED_PROMPTS: list[Any] = [
    "What is 2 + 2?",
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a prime."}],
    {"messages": [{"role": "user", "content": "Spell cat."}], "metadata": {"answer": "c-a-t"}},
    {"prompt_token_ids": [1, 320, 85, 201, 17], "metadata": {"id": "ids"}},
]


def test_list_prompts_write_one_record_per_completion_and_a_manifest(emu, tokenizer, tmp_path):
    out = tmp_path / "rollouts"
    op = operator(
        prompts=MIXED_PROMPTS,
        tokenizer=tokenizer,
        n=3,
        logprobs=True,
        output_path=f"file://{out}",
        concurrency=4,
    )

    summary = op.execute(context())

    shard = out / "shard-000000"
    assert sorted(p.name for p in shard.iterdir()) == ["completions.jsonl", "errors.jsonl", "manifest.json"]
    records = read_jsonl(shard / "completions.jsonl")
    assert [(r["prompt_index"], r["sample_index"]) for r in records] == [
        (p, s) for p in range(4) for s in range(3)
    ]
    tok = load_tokenizer(tokenizer)
    expected_prompts = [
        tok.apply_chat_template(
            [{"role": "user", "content": "What is 2 + 2?"}],
            tokenize=True,
            add_generation_prompt=True,
            return_dict=False,
        ),
        tok.apply_chat_template(
            MIXED_PROMPTS[1], tokenize=True, add_generation_prompt=True, return_dict=False
        ),
        tok.apply_chat_template(
            MIXED_PROMPTS[2]["messages"], tokenize=True, add_generation_prompt=True, return_dict=False
        ),
        [1, 320, 85, 201, 17],
    ]
    for record in records:
        assert record["prompt_token_ids"] == expected_prompts[record["prompt_index"]]
        assert record["prompt_len"] == len(record["prompt_token_ids"])
        assert 1 <= record["completion_len"] == len(record["completion_token_ids"]) <= 8
        assert len(record["inference_logprobs"]) == record["completion_len"]
    assert records[6]["metadata"] == {"answer": "c-a-t"} and records[9]["metadata"] == {"id": "ids"}
    # the n samples of a prompt differ (seed + sample index) and the server saw one request per sample
    assert len({tuple(r["completion_token_ids"]) for r in records[:3]}) > 1
    assert len(completion_requests(emu)) == 12

    manifest = json.loads((shard / "manifest.json").read_text())
    assert manifest["num_prompts"] == 4 and manifest["num_completions"] == 12
    assert manifest["num_prompts_failed"] == 0 and manifest["num_prompts_skipped"] == 0
    assert manifest["completion_tokens"] == sum(r["completion_len"] for r in records)
    assert manifest["prompt_tokens"] == sum(r["prompt_len"] for r in records)
    assert sum(manifest["finish_reasons"].values()) == 12
    assert manifest["model"] == f"accounts/{emu.account_id}/deployments/{DEPLOYMENT}"
    assert manifest["tokenizer"] == tokenizer
    assert manifest["sampling"] == {
        "n": 3,
        "max_tokens": 8,
        "temperature": 0.8,
        "top_p": None,
        "top_k": None,
        "stop": None,
        "seed": 7,
        "logprobs": True,
        "top_logprobs": None,
        "echo": False,
        "max_seq_len": None,
    }
    assert manifest["concurrency"] == {"mode": "fixed", "max_concurrency": 4}
    assert manifest["controller"]["window"] == 4
    assert manifest["timeline"] and set(manifest["timeline"][0]) == {
        "t_s",
        "completions",
        "completion_tokens",
        "tokens_per_s",
        "window",
        "in_flight",
    }
    assert manifest["timeline"][-1]["completions"] == 12 and manifest["timeline"][-1]["in_flight"] == 0
    assert manifest["throughput"]["completions_per_s"] > 0
    assert manifest["attempts"] == [
        {
            "try_number": 1,
            "prompts_sampled": 4,
            "prompts_failed": 0,
            "prompts_resumed": 0,
            "sampling_s": manifest["throughput"]["sampling_s"],
        }
    ]
    assert (shard / "errors.jsonl").read_text() == ""

    assert set(summary) == {*SUMMARY_KEYS, "reused", "storage"}
    expected = {k: manifest[k] for k in SUMMARY_KEYS} | {"reused": False, "storage": manifest["storage"]}
    assert summary == expected
    assert manifest["storage"]["completions_uri"] == manifest["completions_uri"]  # a local disk: no conn id
    assert summary["completions_uri"] == f"file://{shard}/completions.jsonl"
    assert summary["manifest_uri"] == f"file://{shard}/manifest.json"
    assert len(json.dumps(summary)) < 4000
    for text in [json.dumps(summary), *(p.read_text() for p in shard.iterdir())]:
        assert emu.api_key not in text


def test_prompts_from_a_jsonl_file(emu, tokenizer, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    lines = [json.dumps(p) for p in MIXED_PROMPTS]
    prompts.write_text(lines[0] + "\n\n" + "\n".join(lines[1:]) + "\n")  # a blank line is no prompt
    out = tmp_path / "out"

    summary = operator(
        prompts_path=ObjectStoragePath(f"file://{prompts}"),
        tokenizer=tokenizer,
        n=2,
        output_path=ObjectStoragePath(f"file://{out}"),
    ).execute(context())

    records = read_jsonl(out / "shard-000000" / "completions.jsonl")
    assert [(r["prompt_index"], r["sample_index"]) for r in records] == [
        (p, s) for p in range(4) for s in range(2)
    ]
    assert records[-1]["prompt_token_ids"] == [1, 320, 85, 201, 17]
    assert summary["num_completions"] == 8
    manifest = json.loads((out / "shard-000000" / "manifest.json").read_text())
    assert manifest["prompts_source"] == f"file://{prompts}"


def test_without_output_path_the_records_go_to_xcom(emu, tokenizer):
    result = operator(prompts=["one", "two"], tokenizer=tokenizer, n=2).execute(context())

    assert [(r["prompt_index"], r["sample_index"]) for r in result["completions"]] == [
        (0, 0),
        (0, 1),
        (1, 0),
        (1, 1),
    ]
    assert result["errors"] == [] and result["num_completions"] == 4
    assert result["completions_uri"] is None
    assert all(r["completion_token_ids"] for r in result["completions"])
    json.dumps(result)


def test_too_many_completions_for_xcom_are_refused_before_any_request(emu, tokenizer):
    op = operator(
        prompts=[f"prompt {i}" for i in range(30)], tokenizer=tokenizer, n=4, max_xcom_completions=100
    )

    with pytest.raises(
        AirflowFailException,
        match=r"30 prompts x n=4 = 120 completions exceed "
        r"max_xcom_completions=100.*output_path",
    ) as info:
        op.execute(context())

    assert info.value.__cause__.field == "max_xcom_completions"
    assert emu.stats()["requests"].get("completions") is None
    assert operator_requests(emu) == []  # not even the account lookup


def part_lines(records: list[dict[str, Any]]) -> list[str]:
    return [json.dumps(r, separators=(",", ":"), ensure_ascii=False) + "\n" for r in records]


def test_a_retry_resumes_from_the_parts_and_duplicates_nothing(emu, tokenizer, tmp_path):
    prompts = [{"prompt_token_ids": [1, 100 + i, 7], "metadata": {"i": i}} for i in range(8)]
    first = tmp_path / "first"
    operator(prompts=prompts, n=3, output_path=f"file://{first}").execute(context())
    done = read_jsonl(first / "shard-000000" / "completions.jsonl")
    inputs = json.loads((first / "shard-000000" / "manifest.json").read_text())["inputs"]
    by_prompt = {
        p: [{**r, "text": f"attempt 1, prompt {p}"} for r in done if r["prompt_index"] == p] for p in range(8)
    }
    shard = tmp_path / "second" / "shard-000000"
    shard.mkdir(parents=True)
    (shard / "inputs.json").write_text(json.dumps(inputs))
    # A crashed attempt left whole groups of prompts 0, 1, 2 and 4, then prompt 5's group cut
    # short in the middle of its second line.
    kept = [*by_prompt[0], *by_prompt[1], *by_prompt[2], *by_prompt[4]]
    torn = part_lines(by_prompt[5][:2])
    (shard / "part-1-0a1b2c3d.jsonl").write_text("".join(part_lines(kept)) + torn[0] + torn[1][:25])
    # Another one wrote prompt 7 (samples out of order), prompt 1 again, and two of prompt 6's
    # three records, cut at a line end.
    later = [*reversed(by_prompt[7]), *by_prompt[1], *by_prompt[6][:2]]
    (shard / "part-2-4e5f6a7b.jsonl").write_text("".join(part_lines(later)))
    emu.reset()
    emu.configure(**FAST)
    create_deployment(emu)

    summary = operator(prompts=prompts, n=3, output_path=f"file://{tmp_path / 'second'}").execute(context(3))

    sent = [tuple(r["body"]["prompt"]) for r in completion_requests(emu)]
    assert sorted(sent) == sorted((1, 100 + i, 7) for i in (3, 5, 6) for _ in range(3))
    records = read_jsonl(shard / "completions.jsonl")
    assert [(r["prompt_index"], r["sample_index"]) for r in records] == [
        (p, s) for p in range(8) for s in range(3)
    ]
    resumed = [r for r in records if r["prompt_index"] in (0, 1, 2, 4, 7)]
    assert resumed == [*by_prompt[0], *by_prompt[1], *by_prompt[2], *by_prompt[4], *by_prompt[7]]
    assert all(
        r["text"] != f"attempt 1, prompt {r['prompt_index']}"
        for r in records
        if r["prompt_index"] in (3, 5, 6)
    )
    assert sorted(p.name for p in shard.iterdir()) == ["completions.jsonl", "errors.jsonl", "manifest.json"]
    assert summary["num_prompts_resumed"] == 5 and summary["num_prompts_sampled"] == 3
    assert summary["num_completions"] == 24


def test_a_rerun_of_a_finished_shard_returns_its_summary_without_sampling(emu, tokenizer, tmp_path):
    kwargs: dict[str, Any] = {
        "prompts": ["a", "b", "c"],
        "tokenizer": tokenizer,
        "n": 2,
        "output_path": f"file://{tmp_path}",
    }
    first = operator(**kwargs).execute(context())
    requests_before = len(completion_requests(emu))

    again = operator(**kwargs).execute(context(2))

    assert len(completion_requests(emu)) == requests_before == 6
    assert again["reused"] is True and again["num_prompts_sampled"] == 0
    assert {k: v for k, v in again.items() if k not in ("reused", "num_prompts_sampled")} == {
        k: v for k, v in first.items() if k not in ("reused", "num_prompts_sampled")
    }


def test_other_inputs_in_the_output_path_are_refused_unless_overwrite(emu, tokenizer, tmp_path):
    operator(prompts=["a", "b"], tokenizer=tokenizer, output_path=f"file://{tmp_path}").execute(context())

    with pytest.raises(FireworksValidationError, match=r"different sampling.n \(1 != 2\)") as info:
        operator(prompts=["a", "b"], tokenizer=tokenizer, n=2, output_path=f"file://{tmp_path}").execute(
            context()
        )
    assert info.value.field == "output_path"

    summary = operator(
        prompts=["a", "b"], tokenizer=tokenizer, n=2, output_path=f"file://{tmp_path}", overwrite=True
    ).execute(context())
    assert summary["num_completions"] == 4 and summary["reused"] is False
    assert len(read_jsonl(tmp_path / "shard-000000" / "completions.jsonl")) == 4


def test_a_failing_prompt_becomes_an_error_record_and_fails_the_task_after_writing(emu, tokenizer, tmp_path):
    emu.configure(max_context_length=64)
    prompts: list[Any] = [
        "short one",
        {"prompt_token_ids": [5] * 80, "metadata": {"why": "too long"}},
        "short two",
    ]
    shard = tmp_path / "shard-000000"

    with pytest.raises(AirflowException, match=r"1 of 3 prompts failed.*prompt 1: HTTP 400"):
        operator(prompts=prompts, tokenizer=tokenizer, n=2, output_path=f"file://{tmp_path}").execute(
            context()
        )

    errors = read_jsonl(shard / "errors.jsonl")
    assert len(errors) == 1 and errors[0]["prompt_index"] == 1 and errors[0]["type"] == "error"
    assert errors[0]["error"]["final_status"] == 400 and errors[0]["metadata"] == {"why": "too long"}
    assert [r["prompt_index"] for r in read_jsonl(shard / "completions.jsonl")] == [0, 0, 2, 2]
    manifest = json.loads((shard / "manifest.json").read_text())
    assert manifest["num_prompts_failed"] == 1 and manifest["errors"][0]["prompt_index"] == 1
    assert manifest["errors_by_kind"] == {"http_status": 1}
    sent = len(completion_requests(emu))

    # the retry samples only the failed prompt (which fails again) and keeps the rest
    with pytest.raises(AirflowException, match="1 of 3 prompts failed"):
        operator(prompts=prompts, tokenizer=tokenizer, n=2, output_path=f"file://{tmp_path}").execute(
            context(2)
        )
    retried = completion_requests(emu)[: len(completion_requests(emu)) - sent]
    assert {len(r["body"]["prompt"]) for r in retried} == {80}
    assert len(read_jsonl(shard / "completions.jsonl")) == 4

    # tolerating the failure: the finished shard is accepted as it is
    summary = operator(
        prompts=prompts,
        tokenizer=tokenizer,
        n=2,
        output_path=f"file://{tmp_path}",
        max_failed_prompt_fraction=0.5,
    ).execute(context(3))
    assert summary["reused"] is True and summary["num_prompts_failed"] == 1
    assert summary["errors_uri"] == f"file://{shard}/errors.jsonl"


def test_max_seq_len_skips_long_prompts_and_reports_them(emu, tokenizer, tmp_path):
    prompts = [{"prompt_token_ids": [1, 2, 3]}, {"prompt_token_ids": list(range(1, 41))}]

    summary = operator(prompts=prompts, n=2, max_seq_len=30, output_path=f"file://{tmp_path}").execute(
        context()
    )

    assert summary["num_prompts_skipped"] == 1 and summary["num_completions"] == 2
    manifest = json.loads((tmp_path / "shard-000000" / "manifest.json").read_text())
    assert manifest["skipped_prompt_indices"] == [1]
    assert {len(r["body"]["prompt"]) for r in completion_requests(emu)} == {3}


BAD_PARAMETERS = [
    ({"n": 0}, "n"),
    ({"n": 129}, "n"),
    ({"temperature": 2.5}, "temperature"),
    ({"temperature": -0.1}, "temperature"),
    ({"top_k": 101}, "top_k"),
    ({"top_p": 0}, "top_p"),
    ({"top_logprobs": 6, "logprobs": True}, "top_logprobs"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"seed": -1}, "seed"),
    ({"max_seq_len": 0}, "max_seq_len"),
    ({"shard_index": 3, "num_shards": 3}, "shard_index"),
    ({"num_shards": 0}, "num_shards"),
    ({"concurrency": 0}, "concurrency"),
    ({"concurrency": "fast"}, "concurrency"),
    ({"concurrency": {"initial_window": 8, "max_windw": 4}}, "concurrency"),
    ({"concurrency": {"min_window": 0}}, "concurrency"),
    ({"max_failed_prompt_fraction": 1.5}, "max_failed_prompt_fraction"),
    ({"model": "qwen3-8b", "deployment_id": None}, "model"),
    ({"model": f"accounts/a/deployments/{DEPLOYMENT}"}, "deployment_id"),  # both given
    ({"deployment_id": "Bad_Id"}, "deployment_id"),
    ({"prompts_path": "file:///tmp/p.jsonl"}, "prompts"),  # two prompt sources
    ({"prompts": None}, "prompts"),  # none
    ({"prompts": []}, "prompts"),
    ({"prompts": "just a string"}, "prompts"),
    ({"prompts": [""]}, "prompts"),
    ({"prompts": [42]}, "prompts"),
    ({"prompts": [{"role": "user", "content": "hi"}]}, "prompts"),
    ({"prompts": [{"messages": [{"role": "user", "content": "x"}], "answer": 4}]}, "prompts"),
    ({"prompts": [{"prompt_token_ids": []}]}, "prompts"),
    ({"prompts": [{"prompt_token_ids": [1, -2]}]}, "prompts"),
    ({"prompts": [[{"content": "no role"}]]}, "prompts"),
    ({"prompts": [{"messages": [], "prompt_token_ids": [1]}]}, "prompts"),
    ({"prompts": [{"prompt_token_ids": [1], "metadata": "x"}]}, "prompts"),
    ({"output_path": "relative/dir"}, "output_path"),
    ({"logprobs": "yes"}, "logprobs"),
]


@pytest.mark.parametrize(("kwargs", "field"), BAD_PARAMETERS, ids=[str(k) for k, _ in BAD_PARAMETERS])
def test_bad_parameters_are_refused_at_construction(kwargs, field):
    with pytest.raises(FireworksValidationError) as info:
        operator(**{"prompts": ["hello"], **kwargs})
    assert info.value.field == field


def test_a_bad_record_is_named_by_its_line(emu, tokenizer, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('"fine"\n\n{"messages": [{"role": "user", "content": "ok"}]}\n{"messages": [}\n')

    with pytest.raises(AirflowFailException, match=r"line 4 of file://.*prompts.jsonl is not valid JSON"):
        operator(prompts_path=f"file://{prompts}", tokenizer=tokenizer).execute(context())

    prompts.write_text('"fine"\n{"prompt_token_ids": [1, 2], "extra": 1}\n')
    with pytest.raises(AirflowFailException, match=r"line 2 of .*unknown key\(s\) \['extra'\]"):
        operator(prompts_path=f"file://{prompts}", tokenizer=tokenizer).execute(context())

    prompts.write_text("\n\n")
    with pytest.raises(AirflowFailException, match="holds no prompt"):
        operator(prompts_path=f"file://{prompts}", tokenizer=tokenizer).execute(context())

    with pytest.raises(AirflowFailException, match="does not exist"):
        operator(prompts_path=f"file://{tmp_path}/missing.jsonl", tokenizer=tokenizer).execute(context())
    assert operator_requests(emu) == []


def test_rendered_values_are_checked_before_any_request(emu, tokenizer):
    op = operator(prompts=["hi"], tokenizer=tokenizer, temperature="{{ params.t }}")
    op.temperature = "3.5"  # what the template rendered
    with pytest.raises(AirflowFailException, match="temperature"):
        op.execute(context())

    chat = operator(prompts=["hi"])  # chat prompts without a tokenizer
    with pytest.raises(AirflowFailException, match="need a tokenizer") as info:
        chat.execute(context())
    assert info.value.__cause__.field == "tokenizer"
    assert operator_requests(emu) == []


def test_on_kill_cancels_the_requests_in_flight(emu, tokenizer, tmp_path):
    emu.configure(decode_step_base_s=0.05)  # each completion takes about 10 s
    op = operator(
        prompts=[f"prompt {i}" for i in range(4)],
        tokenizer=tokenizer,
        n=2,
        max_tokens=200,
        output_path=f"file://{tmp_path}",
    )
    outcome: dict[str, BaseException] = {}

    def run() -> None:
        try:
            op.execute(context())
        except BaseException as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 10
    while emu.stats()["completions"]["started"] < 8:
        assert time.monotonic() < deadline, "sampling did not start"
        time.sleep(0.02)
    op.on_kill()
    worker.join(timeout=10)

    assert not worker.is_alive()
    assert isinstance(outcome.get("error"), AirflowException) and "cancelled" in str(outcome["error"])
    deadline = time.monotonic() + 5
    while emu.stats()["completions"]["aborted"] < 8:
        assert time.monotonic() < deadline, f"requests not aborted: {emu.stats()['completions']}"
        time.sleep(0.02)
    shard = tmp_path / "shard-000000"
    assert not (shard / "manifest.json").exists()
    assert [p.name.startswith("part-1-") for p in shard.glob("part-*")] == [True]


def test_the_timeline_stays_bounded_and_its_rates_follow_the_kept_points():
    run = SamplingRun(n=1, controller=FixedConcurrencyController(3))
    clock = run.started
    for step in range(TIMELINE_MAX_POINTS + 1):
        run.tally.completion_tokens = 10 * step
        clock += 0.5  # half a second between points, whatever the machine's load
        run.finished = clock  # elapsed_s reads the finish time when one is set
        run.sample_timeline()

    assert len(run.timeline) == (TIMELINE_MAX_POINTS + 1) // 2
    assert run.timeline_interval_s == 2 * TIMELINE_FIRST_INTERVAL_S
    later = run.timeline[1:]
    assert all(point["window"] == 3 and point["in_flight"] == 0 for point in later)
    assert {point["tokens_per_s"] for point in later} == {20.0}  # 10 tokens per 0.5 s between points


def record(prompt: int, sample: int) -> dict[str, Any]:
    return {"type": "completion", "prompt_index": prompt, "sample_index": sample, "prompt_len": 3,
            "completion_len": 2, "finish_reason": "stop", "text": "ab", "prompt_token_ids": [1, 2, 3],
            "completion_token_ids": [4, 5], "inference_logprobs": None, "logprobs_echoed": False,
            "metadata": {}}  # fmt: skip


@pytest.mark.parametrize(
    ("tail", "done"),
    [
        ("", {0, 1}),  # prompt 1 ends the file with all of its samples
        ('{"type":"compl', {0, 1}),  # torn before its prompt is known: prompt 1 stays whole
        ('{"type":"completion","prompt_index":2,"sam', {0, 1}),  # prompt 2 was being written
        ('{"type":"completion","prompt_index":1,"sam', {0}),  # a fourth record of prompt 1?
        ("not json\n", {0}),  # a whole line that is no record damages the group it is in
    ],
)
def test_a_crashed_part_keeps_exactly_the_whole_groups(tmp_path, tail, done):
    store = ShardStore(ObjectStoragePath(f"file://{tmp_path}"), 0)
    store.directory.mkdir(parents=True)
    lines = part_lines([record(0, 0), record(0, 1), record(1, 0), record(1, 1)])
    (tmp_path / "shard-000000" / "part-1-00000000.jsonl").write_text("".join(lines) + tail)

    assert store.scan(2).done == done


def test_only_a_crashed_part_can_hold_a_group_cut_short(tmp_path):
    store = ShardStore(ObjectStoragePath(f"file://{tmp_path}"), 0)
    store.directory.mkdir(parents=True)
    # prompt 0 lost a sample to max_seq_len; prompt 1 may have been cut by a crash
    lines = part_lines([record(0, 0), record(0, 2), record(1, 0), record(1, 1)])
    (tmp_path / "shard-000000" / "part-1-00000000.jsonl").write_text("".join(lines))

    assert store.scan(3).done == {0}
    assert store.scan(3, clean={"part-1-00000000.jsonl"}).done == {0, 1}
    torn_next = '{"type":"completion","prompt_index":2,"sample_index":0,"prompt_l'
    (tmp_path / "shard-000000" / "part-1-00000000.jsonl").write_text("".join(lines) + torn_next)
    assert store.scan(3).done == {0, 1}  # prompt 2's write began, so prompt 1's had ended


def test_any_fsspec_filesystem_holds_the_output(emu, tokenizer):
    attach("memory", fs=fsspec.filesystem("memory"))
    root = ObjectStoragePath("memory://rollouts/run-1")

    summary = operator(prompts=["a", "b"], tokenizer=tokenizer, n=2, output_path=root).execute(context())

    shard = root / "shard-000000"
    assert sorted(p.name for p in shard.iterdir()) == ["completions.jsonl", "errors.jsonl", "manifest.json"]
    with (shard / "completions.jsonl").open("r") as fp:
        assert [(r["prompt_index"], r["sample_index"]) for r in iter_records(fp)] == [
            (0, 0),
            (0, 1),
            (1, 0),
            (1, 1),
        ]
    assert summary["completions_uri"] == "memory://rollouts/run-1/shard-000000/completions.jsonl"
    again = operator(prompts=["a", "b"], tokenizer=tokenizer, n=2, output_path=root).execute(context(2))
    assert again["reused"] is True


def test_a_deployment_that_stops_serving_stops_the_task_and_a_retry_resumes(emu, tokenizer, tmp_path):
    """A vanished deployment fails the task after one prompt's not-ready retries (not one per
    prompt), keeps the whole groups written so far, and the retry samples only the rest."""
    out = tmp_path / "rollouts"
    prompts = [f"Question {i}: what is {i} + {i}?" for i in range(40)]
    emu.configure(decode_step_base_s=0.01)
    stop_after = 8

    def vanish_when_some_are_done() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(completion_requests(emu)) < stop_after * 2:
            time.sleep(0.02)
        emu.vanish_deployment(DEPLOYMENT)

    vanisher = threading.Thread(target=vanish_when_some_are_done)
    vanisher.start()
    first = operator(
        prompts=prompts,
        tokenizer=tokenizer,
        n=2,
        output_path=f"file://{out}",
        concurrency=4,
        not_ready_retries=2,
        not_ready_interval_s=0.05,
    )
    with pytest.raises(AirflowException, match=r"Sampling stopped after .* still not serving") as caught:
        first.execute(context())
    vanisher.join()

    assert "kept for a retry" in str(caught.value)
    assert emu.api_key not in str(caught.value)
    refused = [r for r in completion_requests(emu) if r["status"] == 404]
    assert len(refused) <= 4 * (2 + 1)  # at most the requests in flight, each with its 2 retries
    create_deployment(emu)
    summary = operator(
        prompts=prompts, tokenizer=tokenizer, n=2, output_path=f"file://{out}", concurrency=4
    ).execute(context(try_number=2))

    records = read_jsonl(out / "shard-000000" / "completions.jsonl")
    assert [(r["prompt_index"], r["sample_index"]) for r in records] == [
        (p, s) for p in range(40) for s in range(2)
    ]
    assert summary["num_prompts_resumed"] > 0
    assert summary["num_prompts_resumed"] + summary["num_prompts_sampled"] == 40


def test_a_fixed_window_rendered_from_a_template_is_a_number(emu, tokenizer, tmp_path):
    out = tmp_path / "rollouts"

    operator(prompts=["Say hi."], tokenizer=tokenizer, output_path=f"file://{out}", concurrency="4").execute(
        context()
    )

    manifest = json.loads((out / "shard-000000" / "manifest.json").read_text())
    assert manifest["concurrency"] == {"mode": "fixed", "max_concurrency": 4}
