"""FireworksSampleOperator run after run on one deployment (real emulator over HTTP, real Airflow):
a deployment the platform scaled to zero is woken before the first prompt, one that is gone or
scaled to zero on purpose fails at once without sending a prompt, and the snapshot identity the
replicas serve at the start and the end of sampling is recorded (and, with
``require_stable_identity``, enforced after the output is written)."""

from __future__ import annotations

import asyncio
import json
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException, TaskDeferred

from airflow_fireworks.api import DeploymentTarget, FireworksValidationError
from airflow_fireworks.hooks.fireworks import FireworksHook
from airflow_fireworks.operators.sampling import FireworksSampleOperator
from airflow_fireworks.sampling.output import iter_records
from tests.airflow_helpers import RecordingTaskInstance, run_dag_file, task_context, task_states, xcom
from tests.emulator_control import EmulatorProcess

DEPLOYMENT = "day2-sample"
BASE_MODEL = "accounts/fireworks/models/qwen3-8b"
HOUR = 3600.0
EMULATOR = {
    "create_delay_s": 0.05,
    "update_delay_s": 0.0,
    "delete_delay_s": 0.0,
    "hotload_stage_s": 0.02,
    "decode_step_base_s": 0.0005,
    "decode_step_per_seq_s": 0.00001,
    "cold_start_s": 1.0,
}
PROMPTS = [{"prompt_token_ids": [1, 100 + i, 7]} for i in range(6)]  # no tokenizer needed
#: Completions of about 0.4 s each: long enough to hot-load another snapshot while sampling.
SLOW = {"decode_step_base_s": 0.01, "eos_probability": 0.0}


@pytest.fixture
def hook(emulator: EmulatorProcess, fireworks_conn_env: str) -> Iterator[FireworksHook]:
    emulator.configure(**EMULATOR)
    hook = FireworksHook()
    yield hook
    hook.close()


def serving(hook: FireworksHook, deployment_id: str = DEPLOYMENT) -> None:
    """Create a min-0 hot-load deployment (the platform may scale it to zero) and wait until it serves."""
    hook.reconcile(
        {
            "deployment_id": deployment_id,
            "base_model": BASE_MODEL,
            "min_replica_count": 0,
            "max_replica_count": 1,
        }
    )
    hook.wait_for(DeploymentTarget.SERVING, deployment_id, timeout_s=10, poll_interval_s=0.02)


def hotloaded(hook: FireworksHook, identity: str) -> None:
    """Hot-load ``identity`` and wait until every replica serves it."""
    hook.hotload(DEPLOYMENT, BASE_MODEL, identity)
    hook.wait_for_hotload(DEPLOYMENT, BASE_MODEL, identity, timeout_s=10, poll_interval_s=0.02)


def operator(**kwargs: Any) -> FireworksSampleOperator:
    defaults: dict[str, Any] = {
        "task_id": "sample",
        "deployment_id": DEPLOYMENT,
        "prompts": PROMPTS,
        "n": 2,
        "max_tokens": 8,
        "seed": 3,
        "deferrable": False,
        "poll_interval": 0.05,
        "wake_timeout": 30,
        "not_ready_retries": 2,  # a broken wake check fails in a second, not after minutes
        "not_ready_interval_s": 0.05,
    }
    return FireworksSampleOperator(**{**defaults, **kwargs})


def log_mark(emulator: EmulatorProcess) -> int:
    """Where the emulator's request log stands now (for ``requests_since``)."""
    return len(emulator.requests(limit=1000))


def requests_since(emulator: EmulatorProcess, mark: int, route: str | None = None) -> list[dict[str, Any]]:
    """The requests logged after ``mark``, in the order they ended (optionally of one route)."""
    return [e for e in emulator.requests(limit=1000)[mark:] if route is None or e["route"] == route]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open() as fp:
        return list(iter_records(fp))


def sampled(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The completion requests that carried one of ``PROMPTS`` (not the wake-up probe)."""
    prompts = [p["prompt_token_ids"] for p in PROMPTS]
    return [e for e in entries if (e["body"] or {}).get("prompt") in prompts]


def hotload_when_sampling(emulator: EmulatorProcess, identity: str, started: int) -> threading.Thread:
    """A thread that hot-loads ``identity`` once ``started`` completions began (as a trainer
    racing the sample task would)."""

    def run() -> None:
        deadline = time.monotonic() + 20
        while emulator.stats()["completions"]["started"] < started:
            assert time.monotonic() < deadline, "sampling did not start"
            time.sleep(0.01)
        racing = FireworksHook()
        try:
            hotloaded(racing, identity)
        finally:
            racing.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


# -- fail fast: nothing serves and waiting would not help -------------------------------------


@pytest.mark.parametrize("deferrable", [False, True], ids=["worker", "deferrable"])
def test_a_deployment_scaled_to_zero_on_purpose_fails_at_once_naming_the_fix(
    hook, emulator, tmp_path, deferrable
):
    serving(hook)
    hook.scale_to_zero(DEPLOYMENT)  # PATCH min 0 / max 0 with its update mask
    hook.wait_for(DeploymentTarget.SCALED_TO_ZERO, DEPLOYMENT, timeout_s=10, poll_interval_s=0.02)
    since = log_mark(emulator)
    started = time.monotonic()

    with pytest.raises(AirflowFailException) as error:
        operator(deferrable=deferrable, output_path=f"file://{tmp_path}").execute(task_context())

    assert time.monotonic() - started < 5
    message = str(error.value)
    assert "scaled to zero on purpose" in message and "max 0)" in message
    assert "run the create task" in message and "min/max_replica_count" in message
    assert requests_since(emulator, since, "completions") == []
    assert {"minReplicaCount": 0, "maxReplicaCount": 0} in [
        e["body"] for e in emulator.requests(route="update")
    ]


@pytest.mark.parametrize("named_by", ["deployment_id", "model"])
def test_a_deleted_deployment_fails_at_once(hook, emulator, named_by):
    serving(hook)
    hook.delete_deployment(DEPLOYMENT)
    hook.wait_for_deleted(DEPLOYMENT, timeout_s=10, poll_interval_s=0.02)
    kwargs: dict[str, Any] = {"deployment_id": DEPLOYMENT}
    if named_by == "model":
        kwargs = {"deployment_id": None, "model": f"accounts/{emulator.account_id}/deployments/{DEPLOYMENT}"}
    since = log_mark(emulator)
    started = time.monotonic()

    with pytest.raises(AirflowFailException) as error:
        operator(**kwargs).execute(task_context())

    message = str(error.value)
    assert f"deployment '{DEPLOYMENT}'" in message and "run the create task" in message
    assert time.monotonic() - started < 5
    assert requests_since(emulator, since, "completions") == []


# -- wake a deployment the platform scaled to zero ----------------------------------------------


def test_an_idle_deployment_is_woken_and_sampled_after_its_cold_start(hook, emulator, tmp_path):
    serving(hook)
    emulator.advance_clock(HOUR)  # an hour without traffic: the platform scaled it to zero
    info = hook.get_deployment(DEPLOYMENT)
    assert info is not None and info.replica_count == 0 and info.max_replica_count == 1
    since = log_mark(emulator)

    summary = operator(output_path=f"file://{tmp_path}").execute(task_context())

    assert summary["num_completions"] == 12 and summary["num_prompts_failed"] == 0
    completions = requests_since(emulator, since, "completions")
    assert completions[0]["status"] == 425  # the wake-up request, answered during the cold start
    # the cold start was waited for: every prompt was sent once, to a serving replica
    assert [e["status"] for e in sampled(completions)] == [200] * 12
    assert hook.get_deployment(DEPLOYMENT).replica_count == 1


def test_a_deferrable_task_defers_the_wake_up_to_the_triggerer(hook, emulator, tmp_path):
    serving(hook)
    emulator.advance_clock(HOUR)
    op = operator(deferrable=True, output_path=f"file://{tmp_path}", wake_timeout=120)
    since = log_mark(emulator)

    with pytest.raises(TaskDeferred) as deferred:
        op.execute(task_context())

    assert deferred.value.method_name == "execute_after_wake"
    classpath, kwargs = deferred.value.trigger.serialize()
    assert classpath.endswith("FireworksDeploymentTrigger")
    assert kwargs["deployment_id"] == DEPLOYMENT and kwargs["target"] == "serving"
    assert 100 < kwargs["deadline"] - time.time() <= 120
    assert [e["status"] for e in requests_since(emulator, since, "completions")] == [425]  # the wake-up


async def first_event(trigger: Any) -> Any:
    """The trigger's first event, as the triggerer would get it."""
    events = trigger.run()
    try:
        return await anext(events)
    finally:
        await events.aclose()


def test_after_a_failed_wait_the_resumed_task_fails_naming_the_state(hook, emulator, tmp_path):
    """The deployment was scaled to zero on purpose while the triggerer waited for it to wake:
    the resumed task looks again and fails without retry; a wait that timed out is retried."""
    serving(hook)
    emulator.advance_clock(HOUR)
    op = operator(deferrable=True, output_path=f"file://{tmp_path}")
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(task_context())
    hook.scale_to_zero(DEPLOYMENT)
    event = asyncio.run(first_event(deferred.value.trigger))
    assert event.payload["status"] == "error"
    since = log_mark(emulator)

    with pytest.raises(AirflowFailException, match="scaled to zero on purpose"):
        op.execute_after_wake(task_context(), event=event.payload)
    with pytest.raises(AirflowException, match="did not wake within wake_timeout=30s") as timed_out:
        op.execute_after_wake(task_context(), event={"status": "timeout", "message": "still at zero"})

    assert not isinstance(timed_out.value, AirflowFailException)
    assert sampled(requests_since(emulator, since, "completions")) == []


DAG_FILE = """
from __future__ import annotations

import datetime

from airflow.sdk import DAG, task

from airflow_fireworks.operators.sampling import FireworksSampleOperator

PROMPTS = {prompts!r}

for dag_id, kwargs in (
    ("sample_wakes", {{"deferrable": True}}),
    ("sample_stable", {{"require_stable_identity": True, "max_tokens": 40, "concurrency": 2}}),
):
    with DAG(dag_id, schedule=None, start_date=datetime.datetime(2025, 1, 1), catchup=False):
        sample = FireworksSampleOperator(
            task_id="sample",
            deployment_id="{deployment}",
            base_model="{base_model}",
            prompts=PROMPTS,
            n=2,
            seed=3,
            output_path="{output}/{{{{ dag.dag_id }}}}",
            poll_interval=0.05,
            wake_timeout=30,
            not_ready_interval_s=0.05,
            **{{"max_tokens": 8, **kwargs}},
        )

        @task(trigger_rule="all_done")
        def evidence(summary: dict) -> dict:
            return {{"served_identity": summary["served_identity"], "n": summary["num_completions"]}}

        evidence(sample.output)
"""


@pytest.fixture
def dag_file(tmp_path: Path) -> Path:
    path = tmp_path / "dags" / "sample_day_two.py"
    path.parent.mkdir()
    source = DAG_FILE.format(
        prompts=PROMPTS, deployment=DEPLOYMENT, base_model=BASE_MODEL, output=f"file://{tmp_path}/out"
    )
    path.write_text(textwrap.dedent(source))
    return path


def test_in_a_dag_run_the_deferred_wake_up_resumes_into_sampling(
    hook, emulator, dag_file, tmp_path, monkeypatch
):
    serving(hook)
    hotloaded(hook, "step-1")
    emulator.advance_clock(HOUR)
    since = log_mark(emulator)
    resumed: list[str] = []
    resume = FireworksSampleOperator.execute_after_wake

    def spy(self: FireworksSampleOperator, context: Any, event: dict[str, Any]) -> Any:
        resumed.append(event["status"])
        return resume(self, context, event)

    monkeypatch.setattr(FireworksSampleOperator, "execute_after_wake", spy)

    run = run_dag_file(dag_file, "sample_wakes")

    assert task_states(run) == {"sample": "success", "evidence": "success"}
    assert resumed == ["success"]  # the triggerer saw it wake, the task resumed into sampling
    summary = xcom(run, "sample")
    assert summary["num_completions"] == 12 and summary["num_prompts_failed"] == 0
    assert 425 in [e["status"] for e in requests_since(emulator, since, "completions")]
    assert [e["status"] for e in sampled(requests_since(emulator, since, "completions"))] == [200] * 12
    # the replica that woke up serves the last snapshot again, before and after sampling
    served = {"start": ["step-1"], "end": ["step-1"], "changed": False}
    assert xcom(run, "evidence") == {"served_identity": served, "n": 12}
    manifest = json.loads((tmp_path / "out" / "sample_wakes" / "shard-000000" / "manifest.json").read_text())
    assert manifest["served_identity"] == served


# -- on-policy evidence: the identity served at the start and the end -------------------------


def test_the_served_identity_is_read_at_the_start_and_the_end(hook, emulator, tmp_path):
    serving(hook)
    hotloaded(hook, "step-1")
    since = log_mark(emulator)

    summary = operator(base_model=BASE_MODEL, output_path=f"file://{tmp_path}").execute(task_context())

    served = {"start": ["step-1"], "end": ["step-1"], "changed": False}
    manifest = json.loads((tmp_path / "shard-000000" / "manifest.json").read_text())
    assert manifest["served_identity"] == summary["served_identity"] == served
    control = [e["route"] for e in requests_since(emulator, since) if e["route"] != "completions"]
    assert control.count("get") == 2  # the serving check, and the replica count for the GPU time
    assert control.count("hotload_status") == 2
    log = requests_since(emulator, since)
    samples = [i for i, e in enumerate(log) if e in sampled(log)]
    reads = [i for i, e in enumerate(log) if e["route"] == "hotload_status"]
    assert len(samples) == 12 and reads[0] < samples[0] and samples[-1] < reads[1]
    assert sorted(p.name for p in (tmp_path / "shard-000000").iterdir()) == [
        "completions.jsonl",
        "errors.jsonl",
        "manifest.json",
    ]

    in_xcom = operator(base_model=BASE_MODEL).execute(task_context())
    assert in_xcom["served_identity"] == served and len(in_xcom["completions"]) == 12


def test_without_base_model_the_served_identity_is_null_and_not_read(hook, emulator, tmp_path):
    serving(hook)
    hotloaded(hook, "step-1")
    since = log_mark(emulator)

    summary = operator(output_path=f"file://{tmp_path}").execute(task_context())

    manifest = json.loads((tmp_path / "shard-000000" / "manifest.json").read_text())
    assert "served_identity" in manifest and manifest["served_identity"] is None
    assert summary["served_identity"] is None
    assert requests_since(emulator, since, "hotload_status") == []


def test_a_change_during_sampling_is_recorded_and_tolerated_by_default(hook, emulator):
    serving(hook)
    hotloaded(hook, "step-1")
    emulator.configure(**SLOW)
    racer = hotload_when_sampling(emulator, "step-2", started=2)

    result = operator(base_model=BASE_MODEL, max_tokens=40, concurrency=2, not_ready_retries=50).execute(
        task_context()
    )
    racer.join()

    assert result["served_identity"] == {"start": ["step-1"], "end": ["step-2"], "changed": True}
    assert result["num_completions"] == 12


@pytest.mark.parametrize("output", ["object_storage", "xcom"])
def test_require_stable_identity_fails_after_writing_everything_when_the_identity_changes(
    hook, emulator, tmp_path, output
):
    serving(hook)
    hotloaded(hook, "step-1")
    emulator.configure(**SLOW)
    racer = hotload_when_sampling(emulator, "step-2", started=2)
    kwargs: dict[str, Any] = {"output_path": f"file://{tmp_path}"} if output == "object_storage" else {}
    context = task_context()
    op = operator(
        base_model=BASE_MODEL,
        require_stable_identity=True,
        max_tokens=40,
        concurrency=2,
        not_ready_retries=50,
        **kwargs,
    )

    with pytest.raises(AirflowFailException) as error:
        op.execute(context)
    racer.join()

    assert "['step-1'] at the start, ['step-2'] at the end" in str(error.value)
    changed = {"start": ["step-1"], "end": ["step-2"], "changed": True}
    pushed = context["ti"].xcoms["return_value"]  # nothing is lost, not even without output_path
    assert pushed["served_identity"] == changed and pushed["num_completions"] == 12
    if output == "xcom":
        assert len(pushed["completions"]) == 12
        assert "XCom return_value" in str(error.value)
        return
    shard = tmp_path / "shard-000000"
    assert str(shard / "manifest.json") in str(error.value)
    manifest = json.loads((shard / "manifest.json").read_text())
    assert manifest["served_identity"] == changed and manifest["num_completions"] == 12
    assert len(read_jsonl(shard / "completions.jsonl")) == 12

    # a rerun finds the finished shard and gives the same verdict (it never passes silently)
    with pytest.raises(AirflowFailException, match="changed during sampling"):
        operator(base_model=BASE_MODEL, require_stable_identity=True, max_tokens=40, **kwargs).execute(
            task_context()
        )


def test_in_a_dag_run_the_failed_task_still_hands_its_summary_downstream(hook, emulator, dag_file):
    serving(hook)
    hotloaded(hook, "step-1")
    emulator.configure(**SLOW)
    racer = hotload_when_sampling(emulator, "step-2", started=2)

    run = run_dag_file(dag_file, "sample_stable")
    racer.join()

    assert task_states(run) == {"sample": "failed", "evidence": "success"}
    changed = {"start": ["step-1"], "end": ["step-2"], "changed": True}
    assert xcom(run, "evidence") == {"served_identity": changed, "n": 12}


def test_a_retry_keeps_the_identity_its_first_attempt_sampled_from(hook, emulator, tmp_path):
    """A killed attempt wrote some groups under step-1; the retry resumes under step-2. The
    manifest must not claim the shard was sampled from step-2 alone."""
    serving(hook)
    hotloaded(hook, "step-1")
    emulator.configure(**SLOW)
    out = f"file://{tmp_path}"
    first = operator(base_model=BASE_MODEL, output_path=out, max_tokens=40, concurrency=2)
    outcome: dict[str, BaseException] = {}

    def run_first() -> None:
        try:
            first.execute(task_context())
        except BaseException as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=run_first)
    worker.start()
    deadline = time.monotonic() + 20
    while emulator.stats()["completions"]["finished"] < 4:
        assert time.monotonic() < deadline, "sampling did not progress"
        time.sleep(0.01)
    first.on_kill()
    worker.join(timeout=10)
    assert "cancelled" in str(outcome.get("error"))
    hotloaded(hook, "step-2")
    emulator.configure(decode_step_base_s=EMULATOR["decode_step_base_s"])

    summary = operator(base_model=BASE_MODEL, output_path=out, max_tokens=40, concurrency=2).execute(
        task_context(ti=RecordingTaskInstance(try_number=2))
    )

    assert summary["num_prompts_resumed"] >= 1
    assert summary["served_identity"] == {"start": ["step-1"], "end": ["step-2"], "changed": True}
    assert sorted(p.name for p in (tmp_path / "shard-000000").iterdir()) == [
        "completions.jsonl",
        "errors.jsonl",
        "manifest.json",
    ]


def test_a_retry_of_failed_prompts_keeps_the_identity_the_rest_was_sampled_from(hook, emulator, tmp_path):
    serving(hook)
    hotloaded(hook, "step-1")
    emulator.configure(max_context_length=64)
    prompts = [*PROMPTS, {"prompt_token_ids": [5] * 80}]  # too long: fails this time
    kwargs: dict[str, Any] = {
        "prompts": prompts,
        "base_model": BASE_MODEL,
        "output_path": f"file://{tmp_path}",
    }
    with pytest.raises(AirflowException, match="1 of 7 prompts failed"):
        operator(**kwargs).execute(task_context())
    manifest = json.loads((tmp_path / "shard-000000" / "manifest.json").read_text())
    assert manifest["served_identity"] == {"start": ["step-1"], "end": ["step-1"], "changed": False}
    hotloaded(hook, "step-2")
    emulator.configure(max_context_length=8192)

    summary = operator(**kwargs).execute(task_context(ti=RecordingTaskInstance(try_number=2)))

    assert summary["num_prompts_failed"] == 0 and summary["num_prompts_resumed"] == 6
    assert summary["served_identity"] == {"start": ["step-1"], "end": ["step-2"], "changed": True}


# -- parameters checked when the DAG is parsed ---------------------------------------------------

BAD_PARAMETERS = [
    ({"require_stable_identity": "yes", "base_model": BASE_MODEL}, "require_stable_identity"),
    ({"require_stable_identity": True}, "require_stable_identity"),  # needs base_model
    ({"base_model": "qwen3-8b"}, "base_model"),
    (
        {"base_model": BASE_MODEL, "deployment_id": None, "model": f"{BASE_MODEL}#accounts/a/deployments/d"},
        "base_model",
    ),
    ({"deferrable": "yes"}, "deferrable"),
]


@pytest.mark.parametrize(("kwargs", "field"), BAD_PARAMETERS, ids=[str(k) for k, _ in BAD_PARAMETERS])
def test_bad_day_two_parameters_are_refused_at_parse_time(kwargs, field):
    with pytest.raises(FireworksValidationError) as info:
        operator(**kwargs)
    assert info.value.field == field


def test_timeouts_and_a_templated_base_model_at_parse_time():
    with pytest.raises(ValueError, match="wake_timeout"):
        operator(wake_timeout=0)
    with pytest.raises(ValueError, match="poll_interval"):
        operator(poll_interval=-1)
    # a base_model still to be rendered satisfies require_stable_identity at parse time
    op = operator(base_model="{{ params.base_model }}", require_stable_identity=True)
    assert "base_model" in op.template_fields
    assert operator(wake_timeout=timedelta(minutes=2)).wake_timeout == 120.0
