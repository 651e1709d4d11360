"""The deployment and hotload triggers, run for real against the emulator."""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import time
from typing import Any

import pytest
from airflow.serialization.serialized_objects import BaseSerialization
from airflow.triggers.base import BaseTrigger

from airflow_fireworks.hooks.fireworks import FireworksHook
from airflow_fireworks.triggers import base as trigger_base
from airflow_fireworks.triggers.base import shared_async_client
from airflow_fireworks.triggers.deployment import FireworksDeploymentTrigger, FireworksHotloadTrigger
from tests.conftest import TEST_API_KEY

BASE_MODEL = "accounts/fireworks/models/qwen3-8b"
FAST = {"create_delay_s": 0.3, "hotload_stage_s": 0.05, "update_delay_s": 0.1, "delete_delay_s": 0.1}


def rebuild(trigger: BaseTrigger) -> BaseTrigger:
    """Serialize as the triggerer stores it (Airflow's serializer), then rebuild from the classpath."""
    classpath, kwargs = trigger.serialize()
    stored = BaseSerialization.serialize(kwargs)
    module, _, name = classpath.rpartition(".")
    return getattr(importlib.import_module(module), name)(**BaseSerialization.deserialize(stored))


async def first_event(trigger: BaseTrigger) -> dict[str, Any]:
    event = await rebuild(trigger).run().asend(None)
    payload = dict(event.payload)
    assert TEST_API_KEY not in json.dumps(payload)
    return payload


def deployment_trigger(deployment_id: str, **kwargs: Any) -> FireworksDeploymentTrigger:
    kwargs.setdefault("deadline", time.time() + 20)
    kwargs.setdefault("poll_interval", 0.1)
    return FireworksDeploymentTrigger(deployment_id, **kwargs)


def hotload_trigger(deployment_id: str, identity: str, **kwargs: Any) -> FireworksHotloadTrigger:
    kwargs.setdefault("deadline", time.time() + 20)
    kwargs.setdefault("poll_interval", 0.1)
    return FireworksHotloadTrigger(deployment_id, BASE_MODEL, identity, **kwargs)


@pytest.fixture
def hook(emulator, fireworks_conn_env) -> FireworksHook:
    emulator.configure(**FAST)
    return FireworksHook()


def create(hook: FireworksHook, deployment_id: str, *, ready: bool = False) -> None:
    hook.create_or_get({"deployment_id": deployment_id, "base_model": BASE_MODEL})
    if ready:
        hook.wait_for_ready(deployment_id, timeout_s=10, poll_interval_s=0.05)


# --- serialization ---------------------------------------------------------------------------


def test_deployment_trigger_serializes_losslessly():
    trigger = FireworksDeploymentTrigger(
        "dep-a",
        target="scaled_to_zero",
        fireworks_conn_id="fw",
        deadline=1.8e9,
        poll_interval=2.5,
        delete_on_kill=True,
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_fireworks.triggers.deployment.FireworksDeploymentTrigger"
    assert kwargs == {
        "deployment_id": "dep-a",
        "target": "scaled_to_zero",
        "fireworks_conn_id": "fw",
        "deadline": 1.8e9,
        "poll_interval": 2.5,
        "delete_on_kill": True,
        "min_replicas": 0,
    }
    assert rebuild(trigger).serialize() == (classpath, kwargs)


def test_hotload_trigger_serializes_losslessly():
    trigger = FireworksHotloadTrigger(
        "dep-a",
        BASE_MODEL,
        "snap-7",
        fireworks_conn_id="fw",
        deadline=1.8e9,
        poll_interval=1,
        started_at=1.7e9,
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_fireworks.triggers.deployment.FireworksHotloadTrigger"
    assert kwargs["expected_identity"] == "snap-7" and kwargs["started_at"] == 1.7e9
    assert rebuild(trigger).serialize() == (classpath, kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"deployment_id": "Bad_Id"}, "deployment_id"),
        ({"target": "gone"}, "target must be one of"),
        ({"deadline": float("nan")}, "deadline"),
        ({"poll_interval": 0}, "poll_interval"),
    ],
)
def test_deployment_trigger_rejects_bad_arguments(kwargs, message):
    args = {"deployment_id": "dep-a", "deadline": time.time() + 5, "poll_interval": 1.0, **kwargs}
    with pytest.raises(ValueError, match=message):
        FireworksDeploymentTrigger(args.pop("deployment_id"), **args)


def test_hotload_trigger_rejects_bad_arguments():
    with pytest.raises(ValueError, match="base_model"):
        FireworksHotloadTrigger("dep-a", "qwen3-8b", "snap", deadline=time.time() + 5)
    with pytest.raises(ValueError, match="expected_identity"):
        FireworksHotloadTrigger("dep-a", BASE_MODEL, " ", deadline=time.time() + 5)


# --- deployment waits ------------------------------------------------------------------------


async def test_waits_until_ready(hook):
    create(hook, "trig-ready")
    event = await first_event(deployment_trigger("trig-ready"))
    assert event["status"] == "success"
    assert event["deployment_id"] == "trig-ready" and event["target"] == "ready"
    assert event["deployment"]["state"] == "READY"
    assert event["deployment"]["inference_model"] == "accounts/emulator/deployments/trig-ready"


async def test_ready_when_the_probe_answers_while_creating(hook, emulator):
    emulator.configure(create_delay_s=60, serve_while_creating=True)
    create(hook, "trig-probe")
    event = await first_event(deployment_trigger("trig-probe"))
    assert event["status"] == "success"
    assert "probe" in event["message"]
    assert event["deployment"]["state"] == "READY"


async def test_fails_fast_on_failed_with_the_server_message(hook, emulator):
    emulator.configure(create_delay_s=60)
    create(hook, "trig-failed")
    emulator.fail_deployment("trig-failed", "no H200 capacity in US_IOWA_1")
    event = await first_event(deployment_trigger("trig-failed"))
    assert event["status"] == "error"
    assert "FAILED" in event["message"] and "no H200 capacity in US_IOWA_1" in event["message"]
    assert event["deployment"]["state"] == "FAILED"


async def test_error_when_the_deployment_does_not_exist(hook):
    event = await first_event(deployment_trigger("trig-absent"))
    assert event["status"] == "error"
    assert "not found" in event["message"] and "run the create task" in event["message"]
    assert event["deployment"] is None


async def test_timeout_reports_the_last_state(hook, emulator):
    emulator.configure(create_delay_s=60)
    create(hook, "trig-slow")
    event = await first_event(deployment_trigger("trig-slow", deadline=time.time() + 0.4))
    assert event["status"] == "timeout"
    assert "timed out" in event["message"]
    assert event["deployment"]["state"] == "CREATING"


async def test_deadline_already_passed_times_out_at_once(hook):
    event = await first_event(deployment_trigger("trig-late", deadline=time.time() - 1))
    assert event["status"] == "timeout"
    assert hook.get_deployment("trig-late") is None


async def test_waits_for_deletion(hook, emulator):
    emulator.configure(delete_delay_s=0.3)
    create(hook, "trig-delete", ready=True)
    hook.delete_deployment("trig-delete")
    event = await first_event(deployment_trigger("trig-delete", target="deleted"))
    assert event["status"] == "success"
    assert hook.get_deployment("trig-delete") is None


async def test_waits_for_zero_replicas(hook, emulator):
    emulator.configure(update_delay_s=0.3)
    create(hook, "trig-zero", ready=True)
    hook.scale_to_zero("trig-zero")
    event = await first_event(deployment_trigger("trig-zero", target="scaled_to_zero"))
    assert event["status"] == "success"
    assert event["deployment"]["replica_count"] == 0
    assert event["deployment"]["state"] == "READY"


async def test_transient_errors_are_polled_through(hook, emulator):
    create(hook, "trig-flaky")
    emulator.add_fault(route="get", deployment_id="trig-flaky", kind="status", status=503, times=1)
    emulator.add_fault(route="get", deployment_id="trig-flaky", kind="reset", times=1)
    event = await first_event(deployment_trigger("trig-flaky"))
    assert event["status"] == "success"
    statuses = [r.get("status") for r in emulator.requests(route="get")]
    assert 503 in statuses


async def test_transient_errors_until_the_deadline_end_in_timeout_not_error(hook, emulator):
    create(hook, "trig-down")
    emulator.add_fault(route="get", deployment_id="trig-down", kind="status", status=503, times=None)
    event = await first_event(deployment_trigger("trig-down", deadline=time.time() + 1.0))
    assert event["status"] == "timeout"


async def test_permanent_errors_end_the_wait(emulator, monkeypatch):
    wrong_key = "fw-revoked-key-1234567"
    conn = {"conn_type": "fireworks", "host": emulator.url, "password": wrong_key}
    monkeypatch.setenv("AIRFLOW_CONN_FW_REVOKED", json.dumps(conn))
    event = await first_event(deployment_trigger("trig-any", fireworks_conn_id="fw_revoked"))
    assert event["status"] == "error"
    assert "401" in event["message"]
    assert wrong_key not in json.dumps(event)


async def test_a_missing_connection_is_an_error_event(emulator):
    event = await first_event(deployment_trigger("trig-any", fireworks_conn_id="no_such_connection"))
    assert event["status"] == "error"
    assert "no_such_connection" in event["message"]


async def test_two_copies_running_at_once_both_succeed(hook):
    create(hook, "trig-twice")
    events = await asyncio.gather(
        first_event(deployment_trigger("trig-twice")), first_event(deployment_trigger("trig-twice"))
    )
    assert [e["status"] for e in events] == ["success", "success"]
    assert len([d for d in hook.list_deployments()]) == 1


async def test_triggers_in_one_loop_share_one_client_and_close_it(fireworks_conn_env):
    params = await FireworksHook.aget_connection_params("fireworks_default")
    loop = asyncio.get_running_loop()
    async with shared_async_client(params) as first, shared_async_client(params) as second:
        assert first is second
        assert trigger_base._clients[loop][params.cache_key()].users == 2
        await first.account_id()
    assert params.cache_key() not in trigger_base._clients.get(loop, {})


async def test_cancelled_trigger_releases_its_client(hook, emulator):
    emulator.configure(create_delay_s=60)
    create(hook, "trig-cancel")
    task = asyncio.ensure_future(first_event(deployment_trigger("trig-cancel")))
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not trigger_base._clients.get(asyncio.get_running_loop())


async def test_on_kill_deletes_only_when_asked(hook, emulator):
    emulator.configure(create_delay_s=60)
    create(hook, "trig-keep")
    create(hook, "trig-kill")
    await deployment_trigger("trig-keep").on_kill()
    await deployment_trigger("trig-kill", delete_on_kill=True).on_kill()
    assert hook.get_deployment("trig-keep") is not None
    gone = hook.get_deployment("trig-kill")
    assert gone is None or gone.state.value in ("DELETING", "DELETED")


# --- hotload waits ---------------------------------------------------------------------------


async def test_hotload_wait_succeeds_when_every_replica_serves(hook):
    hook.create_or_get(
        {"deployment_id": "hot-ok", "base_model": BASE_MODEL, "min_replica_count": 2, "max_replica_count": 2}
    )
    hook.wait_for_ready("hot-ok", timeout_s=10, poll_interval_s=0.05)
    started = time.time()
    hook.hotload("hot-ok", BASE_MODEL, "snap-1")
    event = await first_event(hotload_trigger("hot-ok", "snap-1", started_at=started))
    assert event["status"] == "success"
    assert event["identity"] == "snap-1" and event["started_at"] == started
    assert event["elapsed_s"] > 0
    replicas = event["hotload"]["replicas"]
    assert len(replicas) == 2
    assert all(r["current_snapshot_identity"] == "snap-1" and r["readiness"] for r in replicas)


async def test_hotload_error_stage_fails_with_the_server_message(hook, emulator):
    emulator.configure(hotload_fail_identities=["snap-bad"])
    create(hook, "hot-bad", ready=True)
    hook.hotload("hot-bad", BASE_MODEL, "snap-bad")
    event = await first_event(hotload_trigger("hot-bad", "snap-bad"))
    assert event["status"] == "error"
    assert "snap-bad" in event["message"] and "failed" in event["message"]
    assert event["hotload"]["replicas"][0]["stage"] == "error"


async def test_hotload_timeout(hook, emulator):
    emulator.configure(hotload_stage_s=30)
    create(hook, "hot-slow", ready=True)
    hook.hotload("hot-slow", BASE_MODEL, "snap-slow")
    event = await first_event(hotload_trigger("hot-slow", "snap-slow", deadline=time.time() + 0.5))
    assert event["status"] == "timeout"
    assert "snap-slow" in event["message"]


async def test_hotload_status_of_an_absent_deployment_is_an_error(hook):
    event = await first_event(hotload_trigger("hot-absent", "snap-1"))
    assert event["status"] == "error"
    assert event["hotload"] is None


async def test_no_log_line_carries_the_key(hook, emulator, caplog):
    caplog.set_level(logging.DEBUG)
    create(hook, "trig-logs")
    emulator.add_fault(route="get", deployment_id="trig-logs", kind="status", status=503, times=1)
    event = await first_event(deployment_trigger("trig-logs"))
    assert event["status"] == "success"
    assert caplog.records
    assert TEST_API_KEY not in caplog.text
