"""The trainer-job trigger and sensor, run for real against the emulator."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowException, TaskDeferred

from airflow_fireworks.hooks.fireworks import FireworksHook
from airflow_fireworks.sensors.trainer import FireworksTrainerJobSensor
from airflow_fireworks.triggers.trainer import FireworksTrainerJobTrigger
from tests.airflow_helpers import run_deferred, task_context
from tests.conftest import TEST_API_KEY
from tests.integration.test_triggers import rebuild

FAST = {
    "trainer_placement_s": 0.3,
    "trainer_boot_s": 0.3,
    "trainer_resume_delay_s": 0.2,
    "delete_delay_s": 0.1,
}


@pytest.fixture
def hook(emulator, fireworks_conn_env) -> FireworksHook:
    emulator.configure(**FAST)
    return FireworksHook()


def service_url(emulator, job_id: str) -> str:
    return f"{emulator.url}/training/v1/rlorTrainerJobs/{emulator.account_id}/{job_id}"


def trigger(emulator, job_id: str, **kwargs: Any) -> FireworksTrainerJobTrigger:
    kwargs.setdefault("poll_interval", 0.05)
    if kwargs.get("target", "ready") == "ready":
        kwargs.setdefault("service_url", service_url(emulator, job_id))
    return FireworksTrainerJobTrigger(job_id, **kwargs)


async def first_event(trigger: FireworksTrainerJobTrigger) -> dict[str, Any]:
    event = await rebuild(trigger).run().asend(None)
    payload = dict(event.payload)
    assert TEST_API_KEY not in json.dumps(payload)
    return payload


def test_serializes_losslessly_with_its_budgets() -> None:
    original = FireworksTrainerJobTrigger(
        "job-a",
        service_url="https://api.fireworks.ai/training/v1/rlorTrainerJobs/acct/job-a",
        fireworks_conn_id="fw",
        started_at=1.8e9,
        timeout=600,
        pending_timeout=3600,
        stopped_grace=30,
        ready_deadline=1.8e9 + 700,
        poll_interval=2.5,
        delete_on_kill=True,
    )
    classpath, kwargs = original.serialize()
    assert classpath == "airflow_fireworks.triggers.trainer.FireworksTrainerJobTrigger"
    assert kwargs["ready_deadline"] == 1.8e9 + 700 and kwargs["pending_timeout"] == 3600
    assert rebuild(original).serialize() == (classpath, kwargs)
    assert original.deadline == 1.8e9 + 3600  # the later of the armed deadline and the placement budget
    assert (
        FireworksTrainerJobTrigger(
            "job-a", service_url="http://h", started_at=0, timeout=5, pending_timeout=10
        ).deadline
        == 15
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"job_id": "Bad_Id", "service_url": "http://h"}, "job_id"),
        ({"target": "gone", "service_url": "http://h"}, "target must be one of"),
        ({}, "service_url is required"),
        ({"service_url": "ftp://h"}, "service_url"),
        ({"service_url": "http://h", "timeout": -1}, "timeout"),
        ({"service_url": "http://h", "poll_interval": 0}, "poll_interval"),
    ],
)
def test_rejects_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    args = {"job_id": "job-a", **kwargs}
    with pytest.raises(ValueError, match=message):
        FireworksTrainerJobTrigger(args.pop("job_id"), **args)


async def test_waits_through_placement_and_boot(hook, emulator) -> None:
    hook.get_trainer_manager().create(_config("trig-ready"))
    event = await first_event(trigger(emulator, "trig-ready"))
    assert event["status"] == "success", event
    assert event["endpoint"]["base_url"] == service_url(emulator, "trig-ready")
    assert event["endpoint"]["job_name"] == "accounts/emulator/rlorTrainerJobs/trig-ready"
    assert event["job"]["state"] == "JOB_STATE_RUNNING" and event["ready_deadline"] is not None


async def test_placement_timeout_is_a_timeout_event(hook, emulator) -> None:
    emulator.configure(trainer_placement_s=60)
    hook.get_trainer_manager().create(_config("trig-pending"))
    event = await first_event(trigger(emulator, "trig-pending", timeout=5, pending_timeout=0.4))
    assert event["status"] == "timeout" and "PENDING" in event["message"]
    assert event["job"]["state"] == "JOB_STATE_PENDING"


async def test_a_preempted_job_ends_the_wait_with_the_server_message(hook, emulator) -> None:
    emulator.add_trainer_job("trig-preempted")
    emulator.preempt_trainer("trig-preempted")
    event = await first_event(trigger(emulator, "trig-preempted"))
    assert (event["status"], event["reason"]) == ("error", "failed")
    assert "preempted" in event["message"]


async def test_absent_and_deleted_jobs(hook, emulator) -> None:
    event = await first_event(trigger(emulator, "trig-absent"))
    assert (event["status"], event["reason"], event["job"]) == ("error", "gone", None)
    emulator.add_trainer_job("trig-deleted")
    hook.get_trainer_manager().delete("trig-deleted")
    deleted = await first_event(trigger(emulator, "trig-deleted", target="deleted", timeout=10))
    assert deleted["status"] == "success" and deleted["job"]["state"] == "JOB_STATE_DELETED"
    again = await first_event(trigger(emulator, "trig-deleted"))
    assert (again["status"], again["reason"]) == ("error", "deleted")


async def test_transient_errors_are_polled_through(hook, emulator) -> None:
    emulator.add_trainer_job("trig-flaky")
    emulator.add_fault(route="trainer_get", deployment_id="trig-flaky", status=503, times=1)
    emulator.add_fault(route="trainer_health", deployment_id="trig-flaky", kind="reset", times=1)
    event = await first_event(trigger(emulator, "trig-flaky"))
    assert event["status"] == "success"


async def test_on_kill_deletes_only_when_asked(hook, emulator) -> None:
    emulator.add_trainer_job("trig-keep")
    emulator.add_trainer_job("trig-kill")
    await trigger(emulator, "trig-keep").on_kill()
    await trigger(emulator, "trig-kill", delete_on_kill=True).on_kill()
    manager = hook.get_trainer_manager()
    assert manager.get("trig-keep").state.short == "RUNNING"
    assert manager.get("trig-kill").state.short in ("DELETING", "DELETED")


async def test_a_cancelled_trigger_can_be_killed_while_waiting_for_capacity(hook, emulator) -> None:
    emulator.configure(trainer_placement_s=60)
    hook.get_trainer_manager().create(_config("trig-cancel"))
    waiting = trigger(emulator, "trig-cancel", delete_on_kill=True)
    task = asyncio.ensure_future(first_event(waiting))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await waiting.on_kill()
    assert hook.get_trainer_manager().get("trig-cancel").state.short in ("DELETING", "DELETED")


# --- sensor -----------------------------------------------------------------------------------


def sensor(job_id: str, **kwargs: Any) -> FireworksTrainerJobSensor:
    kwargs.setdefault("poll_interval", 0.05)
    kwargs.setdefault("timeout", 10)
    return FireworksTrainerJobSensor(task_id="sense", job_id=job_id, **kwargs)


def test_sensor_pokes_until_ready(hook, emulator) -> None:
    hook.get_trainer_manager().create(_config("sense-ready"))
    context = task_context()
    result = sensor("sense-ready", deferrable=False).execute(context)
    assert result["job_id"] == "sense-ready" and result["service_url"] == service_url(emulator, "sense-ready")
    assert (
        "dashboard/fine-tuning/reinforcement/sense-ready"
        in context["ti"].xcoms["_link_FireworksTrainerJobLink"]
    )


def test_sensor_fails_at_once_on_a_failed_job(hook, emulator) -> None:
    emulator.add_trainer_job("sense-failed")
    emulator.set_trainer_state("sense-failed", "FAILED", "out of memory")
    with pytest.raises(AirflowException, match="out of memory"):
        sensor("sense-failed", deferrable=False).execute(task_context())


async def test_sensor_defers_and_resumes(hook, emulator) -> None:
    hook.get_trainer_manager().create(_config("sense-deferred"))
    op = sensor("sense-deferred", deferrable=True, timeout=60)
    before = time.time()
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(task_context())
    assert deferred.value.trigger.clock.stopped_grace_s == 0
    assert before + 60 <= deferred.value.trigger.deadline <= time.time() + 120
    result = await run_deferred(sensor("sense-deferred", deferrable=True), task_context())
    assert result["job_name"] == "accounts/emulator/rlorTrainerJobs/sense-deferred"


async def test_sensor_waits_for_deletion(hook, emulator) -> None:
    emulator.configure(delete_delay_s=0.3)
    emulator.add_trainer_job("sense-delete")
    hook.get_trainer_manager().delete("sense-delete")
    assert (
        await run_deferred(sensor("sense-delete", target="deleted", deferrable=True), task_context()) is None
    )


def test_sensor_checks_its_arguments_at_parse_time() -> None:
    with pytest.raises(ValueError, match="job_id"):
        sensor("Bad_Id")
    with pytest.raises(ValueError, match="target"):
        sensor("job-a", target="running")


def _config(job_id: str):
    from airflow_fireworks.api import TrainerJobConfig

    return TrainerJobConfig(base_model="accounts/fireworks/models/qwen3-8b", requested_job_id=job_id)
