"""Hotload operator and the two sensors against the emulator, sync and deferred."""

from __future__ import annotations

import time

import pytest
from airflow.sdk.exceptions import AirflowException, TaskDeferred

from airflow_fireworks.api.errors import FireworksTimeoutError, HotloadFailedError
from airflow_fireworks.hooks.fireworks import FireworksHook
from airflow_fireworks.operators.deployment import FireworksHotloadOperator
from airflow_fireworks.sensors.deployment import FireworksDeploymentSensor, FireworksHotloadSensor
from airflow_fireworks.triggers.deployment import FireworksDeploymentTrigger, FireworksHotloadTrigger
from tests.airflow_helpers import run_deferred, task_context

BASE_MODEL = "accounts/fireworks/models/qwen3-8b"
FAST_EMULATOR = {"create_delay_s": 0.2, "hotload_stage_s": 0.05, "update_delay_s": 0.1, "delete_delay_s": 0.1}
FAST = {"poll_interval": 0.1, "timeout": 20}


@pytest.fixture
def hook(emulator, fireworks_conn_env) -> FireworksHook:
    emulator.configure(**FAST_EMULATOR)
    return FireworksHook()


def ready(hook: FireworksHook, deployment_id: str, replicas: int = 1) -> None:
    hook.create_or_get(
        {
            "deployment_id": deployment_id,
            "base_model": BASE_MODEL,
            "min_replica_count": replicas,
            "max_replica_count": replicas,
        }
    )
    hook.wait_for_ready(deployment_id, timeout_s=10, poll_interval_s=0.05)


def hotload_op(deployment_id: str, identity: str, **kwargs) -> FireworksHotloadOperator:
    return FireworksHotloadOperator(
        task_id="hotload",
        deployment_id=deployment_id,
        base_model=BASE_MODEL,
        snapshot_identity=identity,
        **{**FAST, **kwargs},
    )


def hotload_posts(emulator) -> list[dict]:
    return [r for r in emulator.requests(route="hotload_load")]


# --- hotload operator ------------------------------------------------------------------------


def test_full_hotload_in_the_worker(hook, emulator):
    ready(hook, "hl-sync", replicas=2)
    result = hotload_op("hl-sync", "step-1", deferrable=False).execute(task_context())
    assert result["identity"] == "step-1"
    assert (result["sent"], result["incremental"], result["replicas"]) == (True, False, 2)
    assert result["load_s"] > 0
    (post,) = hotload_posts(emulator)
    assert post["body"]["identity"] == "step-1"
    assert "incremental_snapshot_metadata" not in post["body"]
    assert hook.hotload_status("hl-sync", BASE_MODEL).current_identities == ["step-1", "step-1"]


async def test_deferred_hotload_resumes_with_timing(hook, emulator):
    ready(hook, "hl-deferred")
    op = hotload_op("hl-deferred", "step-1", deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(task_context())
    assert isinstance(deferred.value.trigger, FireworksHotloadTrigger)
    assert deferred.value.kwargs == {
        "plan": {"identity": "step-1", "chain": "full", "sent": True, "served_before": [None]}
    }

    result = await run_deferred(hotload_op("hl-deferred", "step-1", deferrable=True), task_context())
    assert result["identity"] == "step-1" and result["replicas"] == 1
    assert result["sent"] is False  # the first execute already sent it; the retry only waits
    assert len(hotload_posts(emulator)) == 1


def test_incremental_hotload_sends_the_previous_identity(hook, emulator):
    ready(hook, "hl-delta")
    hotload_op("hl-delta", "step-1", deferrable=False).execute(task_context())
    result = hotload_op("hl-delta", "step-2", previous_snapshot_identity="step-1", deferrable=False).execute(
        task_context()
    )
    assert (result["identity"], result["previous_identity"], result["incremental"]) == (
        "step-2",
        "step-1",
        True,
    )
    delta = hotload_posts(emulator)[-1]["body"]
    assert delta["incremental_snapshot_metadata"] == {
        "previous_snapshot_identity": "step-1",
        "compression_format": "arc_v2",
        "checksum_format": "alder32",
    }


def test_a_retried_hotload_of_a_served_snapshot_is_not_sent_again(hook, emulator):
    ready(hook, "hl-retry")
    hotload_op("hl-retry", "step-1", deferrable=False).execute(task_context())
    again = hotload_op("hl-retry", "step-1", deferrable=False).execute(task_context())
    assert again["sent"] is False
    assert len(hotload_posts(emulator)) == 1


def test_error_stage_fails_the_task_with_the_server_message(hook, emulator):
    emulator.configure(hotload_fail_identities=["step-bad"])
    ready(hook, "hl-bad")
    with pytest.raises(HotloadFailedError, match="step-bad"):
        hotload_op("hl-bad", "step-bad", deferrable=False).execute(task_context())


async def test_error_stage_fails_the_deferred_task(hook, emulator):
    emulator.configure(hotload_fail_identities=["step-bad"])
    ready(hook, "hl-bad-deferred")
    with pytest.raises(AirflowException, match=r"hotload error: .*step-bad"):
        await run_deferred(hotload_op("hl-bad-deferred", "step-bad", deferrable=True), task_context())


def test_hotload_timeout(hook, emulator):
    emulator.configure(hotload_stage_s=30)
    ready(hook, "hl-slow")
    with pytest.raises(FireworksTimeoutError, match="step-slow"):
        hotload_op("hl-slow", "step-slow", deferrable=False, timeout=0.5).execute(task_context())


def test_warmup_after_the_load(hook):
    ready(hook, "hl-warm")
    result = hotload_op(
        "hl-warm", "step-1", deferrable=False, warmup=True, warmup_max_retries=5, warmup_retry_interval=0.1
    ).execute(task_context())
    assert result["warmup_ok"] is True
    assert result["warmup_s"] is not None


def test_templated_identity_is_rendered(hook, emulator):
    ready(hook, "hl-templated")
    op = hotload_op("hl-templated", "{{ params.step }}", previous_snapshot_identity="{{ params.previous }}")
    context = task_context(params={"step": "step-9", "previous": ""})
    op.render_template_fields(context)
    result = op.execute(context)
    assert result["identity"] == "step-9" and result["incremental"] is False


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"snapshot_identity": ""}, "snapshot_identity"),
        ({"base_model": "qwen"}, "base_model"),
        ({"previous_snapshot_identity": "same"}, "equals snapshot_identity"),
        ({"warmup_max_retries": 0}, "warmup_max_retries"),
        ({"deployment_id": "-bad"}, "deployment_id"),
    ],
)
def test_hotload_rejects_bad_parameters_at_construction(kwargs, match):
    args = {
        "task_id": "hl",
        "deployment_id": "dep",
        "base_model": BASE_MODEL,
        "snapshot_identity": "same",
        **kwargs,
    }
    with pytest.raises(ValueError, match=match):
        FireworksHotloadOperator(**args)


@pytest.mark.parametrize(
    ("event", "match"),
    [
        ({"status": "success", "message": "ok"}, "lacks"),
        (
            {"status": "success", "message": "ok", "hotload": [], "started_at": 1.0, "elapsed_s": 1.0},
            "replicas list",
        ),
        (
            {
                "status": "success",
                "message": "ok",
                "hotload": {"replicas": []},
                "started_at": "x",
                "elapsed_s": 1,
            },
            "must be numbers",
        ),
    ],
)
def test_hotload_execute_complete_rejects_malformed_events(event, match):
    with pytest.raises(AirflowException, match=match):
        hotload_op("dep", "step").execute_complete(task_context(), event=event)


# --- sensors ---------------------------------------------------------------------------------


def test_deployment_sensor_pokes_until_ready(hook):
    hook.create_or_get({"deployment_id": "sn-ready", "base_model": BASE_MODEL})
    sensor = FireworksDeploymentSensor(
        task_id="wait", deployment_id="sn-ready", poll_interval=0.1, timeout=20
    )
    assert sensor.poke_interval == 0.1
    result = sensor.execute(task_context())
    assert result["state"] == "READY"


def test_deployment_sensor_fails_fast_on_failed(hook, emulator):
    emulator.configure(create_delay_s=60)
    hook.create_or_get({"deployment_id": "sn-failed", "base_model": BASE_MODEL})
    emulator.fail_deployment("sn-failed", "node lost")
    sensor = FireworksDeploymentSensor(
        task_id="wait", deployment_id="sn-failed", poll_interval=0.1, timeout=20
    )
    with pytest.raises(AirflowException, match="node lost"):
        sensor.execute(task_context())


async def test_deployment_sensor_deferred_waits_for_zero_replicas(hook, emulator):
    ready(hook, "sn-zero")
    emulator.configure(update_delay_s=1.0)
    hook.scale_to_zero("sn-zero")
    sensor = FireworksDeploymentSensor(
        task_id="wait", deployment_id="sn-zero", target="scaled_to_zero", deferrable=True, poll_interval=0.1
    )
    result = await run_deferred(sensor, task_context())
    assert result["replica_count"] == 0


def test_deferrable_sensor_returns_at_once_when_already_done(hook):
    ready(hook, "sn-done")
    sensor = FireworksDeploymentSensor(task_id="wait", deployment_id="sn-done", deferrable=True)
    assert sensor.execute(task_context())["state"] == "READY"


def test_deferrable_sensor_defers_with_an_absolute_deadline(hook, emulator):
    emulator.configure(create_delay_s=60)
    hook.create_or_get({"deployment_id": "sn-defer", "base_model": BASE_MODEL})
    sensor = FireworksDeploymentSensor(task_id="wait", deployment_id="sn-defer", deferrable=True, timeout=120)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(task_context())
    assert isinstance(deferred.value.trigger, FireworksDeploymentTrigger)
    assert deferred.value.trigger.deadline == pytest.approx(time.time() + 120, abs=5)


def test_deployment_sensor_rejects_an_unknown_target():
    with pytest.raises(ValueError, match="target must be one of"):
        FireworksDeploymentSensor(task_id="wait", deployment_id="dep", target="warm")


def test_hotload_sensor_pokes_until_served(hook):
    ready(hook, "sn-hot")
    hook.hotload("sn-hot", BASE_MODEL, "step-3")
    sensor = FireworksHotloadSensor(
        task_id="wait",
        deployment_id="sn-hot",
        base_model=BASE_MODEL,
        snapshot_identity="step-3",
        poll_interval=0.1,
    )
    status = sensor.execute(task_context())
    assert status["replicas"][0]["current_snapshot_identity"] == "step-3"


async def test_hotload_sensor_deferred_fails_on_error_stage(hook, emulator):
    emulator.configure(hotload_fail_identities=["step-x"])
    ready(hook, "sn-hot-bad")
    hook.hotload("sn-hot-bad", BASE_MODEL, "step-x")
    sensor = FireworksHotloadSensor(
        task_id="wait",
        deployment_id="sn-hot-bad",
        base_model=BASE_MODEL,
        snapshot_identity="step-x",
        deferrable=True,
        poll_interval=0.1,
        timeout=20,
    )
    with pytest.raises(AirflowException, match=r"error: .*step-x"):
        await run_deferred(sensor, task_context())
