"""The API key never leaks: run the example DAGs (successes and failures) with a distinctive key
against an emulator that echoes the key back in its error messages, then search every place a
key could end up: task and trigger logs (stdout/stderr and log records, DEBUG included), every
file under AIRFLOW_HOME (the metadata database with its XComs, rendered template fields, trigger
rows and task history), the exception texts, the output files, and the reprs of the objects.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import Connection

from airflow_fireworks.api import AsyncFireworksClient, DeploymentConfig, DeploymentManager
from airflow_fireworks.hooks.fireworks import FireworksConnectionParams, FireworksHook
from airflow_fireworks.sampling import DeploymentSampler
from airflow_fireworks.triggers.deployment import FireworksDeploymentTrigger
from tests.airflow_helpers import TESTS_DAGS, run_dag_file, task_states
from tests.conftest import REPO_ROOT
from tests.emulator_control import EmulatorProcess
from tests.reliability.conftest import BASE_MODEL, FAST_EMULATOR

SECRET = "fw-CANARY-7f3e9a2b5c8d1e4f6a0b"
EXAMPLES = REPO_ROOT / "example_dags"
ECHO = f"invalid request from key {SECRET}"  # what a careless server might answer


@pytest.fixture(scope="module")
def canary_emulator() -> Iterator[EmulatorProcess]:
    with EmulatorProcess.start(api_key=SECRET) as process:
        yield process


@pytest.fixture
def canary(
    canary_emulator: EmulatorProcess, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> EmulatorProcess:
    canary_emulator.reset()
    canary_emulator.configure(**{**FAST_EMULATOR, "update_delay_s": 0.05})
    conn = {"conn_type": "fireworks", "host": canary_emulator.url, "password": SECRET}
    monkeypatch.setenv("AIRFLOW_CONN_FIREWORKS_DEFAULT", json.dumps(conn))
    caplog.set_level(logging.DEBUG)
    return canary_emulator


def rows(dag_run: Any, model: Any) -> list[Any]:
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = select(model).where(model.dag_id == dag_run.dag_id, model.run_id == dag_run.run_id)
        return list(session.scalars(query))


def assert_no_secret_anywhere(
    dag_run: Any, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, output: Path | None
) -> str:
    """Search every place the key could leak to; return the captured logs (to check they are real)."""
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.models.xcom import XComModel

    out, err = capfd.readouterr()
    logs = out + err + caplog.text
    assert SECRET not in logs
    xcoms = rows(dag_run, XComModel)
    rendered = rows(dag_run, RenderedTaskInstanceFields)
    assert rendered, "no rendered template fields were stored"
    for row in xcoms:
        assert SECRET not in json.dumps(XComModel.deserialize_value(row), default=str)
    for row in rendered:
        assert SECRET not in json.dumps(row.rendered_fields, default=str)
    for path in Path(os.environ["AIRFLOW_HOME"]).rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    if output is not None:
        files = [path for path in output.rglob("*") if path.is_file()]
        assert files
        for path in files:
            assert SECRET.encode() not in path.read_bytes(), path
    return logs


def test_rl_loop_failing_in_sampling_leaks_nothing(
    canary: EmulatorProcess,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    canary.add_fault(route="get", status=503, message=ECHO, times=2)
    canary.add_fault(route="hotload_status", status=502, message=ECHO, times=1)
    canary.add_fault(route="completions", kind="stream_error", status=503, message=ECHO, times=3)
    # stream faults spare the hotload's (non-streamed) warmup requests; every sample fails for good
    canary.add_fault(route="completions", kind="stream_error", status=400, message=ECHO, times=None)
    monkeypatch.setenv("FIREWORKS_EXAMPLE_RETRIES", "0")  # the failure is the point: no retry delays

    run = run_dag_file(
        EXAMPLES / "fireworks_rl_loop.py",
        "fireworks_rl_loop",
        conf={"output_root": tmp_path.as_uri(), "samples_per_prompt": 1, "max_tokens": 8},
    )

    states = task_states(run)
    assert run.state == "failed" and states["sample_step_0"] == "failed", states
    assert states["release_gpus"] == "success" and states["delete_trainer"] == "success", states
    logs = assert_no_secret_anywhere(run, capfd, caplog, tmp_path)
    assert "prompts failed" in logs and "***" in logs
    errors = [
        json.loads(line) for path in tmp_path.rglob("errors.jsonl") for line in path.read_text().splitlines()
    ]
    assert len(errors) == 96
    assert all("***" in error["error"]["message"] for error in errors)


def test_mapped_eval_with_echoing_retryable_faults_leaks_nothing(
    canary: EmulatorProcess,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    canary.add_fault(route="create", status=503, message=ECHO, times=1)
    canary.add_fault(route="hotload_load", status=429, retry_after_s=0.05, message=ECHO, times=1)
    canary.add_fault(route="completions", kind="stream_error", status=503, message=ECHO, times=5)
    canary.add_fault(route="completions", status=502, message=ECHO, times=5)

    run = run_dag_file(
        EXAMPLES / "fireworks_mapped_eval.py",
        "fireworks_mapped_eval",
        conf={"output_root": tmp_path.as_uri()},
    )

    assert run.state == "success", task_states(run)
    assert sum(rule["hits"] for rule in canary.admin("GET", "faults")) == 12
    assert_no_secret_anywhere(run, capfd, caplog, tmp_path)


def test_mapped_eval_failing_at_create_leaks_nothing(
    canary: EmulatorProcess,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    canary.add_fault(route="create", status=403, message=ECHO, times=None)

    run = run_dag_file(
        EXAMPLES / "fireworks_mapped_eval.py",
        "fireworks_mapped_eval",
        conf={"output_root": tmp_path.as_uri()},
    )

    assert run.state == "failed" and task_states(run)["create_deployment"] == "failed"
    logs = assert_no_secret_anywhere(run, capfd, caplog, None)
    assert "HTTP 403" in logs and "invalid request from key ***" in logs


def test_cleanup_leaks_nothing(
    canary: EmulatorProcess, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    with DeploymentManager(SECRET, canary.url) as manager:
        for deployment_id in ("grpo-arith-a", "grpo-arith-b"):
            manager.create_or_get(DeploymentConfig(deployment_id=deployment_id, base_model=BASE_MODEL))
    canary.add_fault(route="list", status=500, message=ECHO, times=1)
    canary.add_fault(route="delete", status=503, message=ECHO, times=1)

    run = run_dag_file(EXAMPLES / "fireworks_cleanup.py", "fireworks_cleanup")

    assert run.state == "success", task_states(run)
    assert canary.stats()["deployments"] == {}
    assert_no_secret_anywhere(run, capfd, caplog, None)


def test_deferred_waits_with_a_trigger_error_leak_nothing(
    canary: EmulatorProcess, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    canary.add_fault(route="hotload_status", status=403, message=ECHO, times=None)

    run = run_dag_file(TESTS_DAGS / "fireworks_lifecycle.py", "fireworks_lifecycle_deferrable")

    states = task_states(run)
    assert states["create"] == "success" and states["hotload"] == "failed", states
    logs = assert_no_secret_anywhere(run, capfd, caplog, None)
    assert "HTTP 403" in logs and "***" in logs


def test_reprs_and_serialized_triggers_hold_no_key(canary: EmulatorProcess) -> None:
    conn = Connection(conn_id="fw", conn_type="fireworks", host=canary.url, password=SECRET)
    params = FireworksConnectionParams.from_connection(conn)
    trigger = FireworksDeploymentTrigger("dep", deadline=time.time() + 5)
    objects = [
        params,
        FireworksHook(),
        params.manager(),
        AsyncFireworksClient(SECRET, canary.url),
        DeploymentSampler(canary.url, "accounts/a/deployments/d", SECRET),
        trigger.serialize(),
    ]
    for item in objects:
        assert SECRET not in repr(item) and SECRET not in str(item)
