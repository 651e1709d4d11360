"""Day two: the same deployment id, run after run. Reconcile instead of reuse, fail fast on what
waiting cannot fix, and keep the snapshot chain honest (real emulator over HTTP)."""

from __future__ import annotations

import logging
import time

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_fireworks.api import (
    DeploymentConfig,
    DeploymentDriftError,
    DeploymentManager,
    DeploymentScaledToZeroError,
    DeploymentTarget,
)
from airflow_fireworks.hooks.fireworks import FireworksHook
from airflow_fireworks.operators.deployment import (
    RECONCILE_XCOM_KEY,
    SNAPSHOT_CHAIN_XCOM_KEY,
    FireworksCreateDeploymentOperator,
    FireworksHotloadOperator,
)
from airflow_fireworks.triggers.deployment import FireworksDeploymentTrigger
from tests.airflow_helpers import run_deferred, task_context
from tests.conftest import TEST_API_KEY

BASE_MODEL = "accounts/fireworks/models/qwen3-8b"
FAST_EMULATOR = {"create_delay_s": 0.2, "hotload_stage_s": 0.03, "update_delay_s": 0.1, "delete_delay_s": 0.1}
FAST = {"poll_interval": 0.05, "timeout": 20}
WRITES = ("create", "update", "delete", "action", "hotload_load")


@pytest.fixture
def manager(emulator) -> DeploymentManager:
    emulator.configure(**FAST_EMULATOR)
    with DeploymentManager(api_key=TEST_API_KEY, base_url=emulator.url) as client:
        yield client


@pytest.fixture
def hook(emulator, fireworks_conn_env) -> FireworksHook:
    emulator.configure(**FAST_EMULATOR)
    return FireworksHook()


def writes(emulator) -> list[dict]:
    return [entry for entry in emulator.requests(limit=1000) if entry["route"] in WRITES]


def serving(manager: DeploymentManager, deployment_id: str, **fields) -> None:
    config = DeploymentConfig(deployment_id=deployment_id, base_model=BASE_MODEL, **fields)
    manager.reconcile(config)
    manager.wait_for_ready(deployment_id, timeout_s=10, poll_interval_s=0.05, min_replicas=1)


def create_op(deployment_id: str, **kwargs) -> FireworksCreateDeploymentOperator:
    return FireworksCreateDeploymentOperator(
        task_id="create", deployment_id=deployment_id, base_model=BASE_MODEL, **{**FAST, **kwargs}
    )


def hotload_op(deployment_id: str, identity: str, **kwargs) -> FireworksHotloadOperator:
    return FireworksHotloadOperator(
        task_id="hotload",
        deployment_id=deployment_id,
        base_model=BASE_MODEL,
        snapshot_identity=identity,
        **{**FAST, "deferrable": False, **kwargs},
    )


# --- reconcile (client) ----------------------------------------------------------------------


def test_reconcile_after_scale_to_zero_patches_exactly_the_drifted_fields(manager, emulator, caplog):
    serving(manager, "day2-a", min_replica_count=1, max_replica_count=1)
    manager.scale_to_zero("day2-a")
    before = len(writes(emulator))
    config = DeploymentConfig(
        deployment_id="day2-a",
        base_model=BASE_MODEL,
        min_replica_count=1,
        max_replica_count=2,
        scale_to_zero_window_s=900,
        annotations={"team": "rl"},
    )

    with caplog.at_level(logging.INFO, logger="airflow_fireworks"):
        outcome = manager.reconcile(config)

    assert outcome.action == "updated"
    (patch,) = writes(emulator)[before:]
    assert patch["route"] == "update"
    assert patch["query"]["updateMask"] == (
        "min_replica_count,max_replica_count,autoscaling_policy.scale_to_zero_window,annotations"
    )
    assert patch["body"] == {
        "minReplicaCount": 1,
        "maxReplicaCount": 2,
        "autoscalingPolicy": {"scaleToZeroWindow": "900s"},
        "annotations": {"team": "rl"},
    }
    assert "min_replica_count: 0 -> 1" in caplog.text
    assert "max_replica_count: 0 -> 2" in caplog.text
    info = manager.wait_for_ready("day2-a", timeout_s=10, poll_interval_s=0.05, min_replicas=1)
    assert (info.replica_count, info.min_replica_count, info.max_replica_count) == (1, 1, 2)

    again = manager.reconcile(config)
    assert again.action == "unchanged" and again.changes == ()
    assert len(writes(emulator)) == before + 1  # nothing more sent


def test_immutable_drift_is_refused_before_any_write(manager, emulator):
    serving(manager, "day2-b", accelerator_type="NVIDIA_H100_80GB")
    before = len(writes(emulator))
    config = DeploymentConfig(
        deployment_id="day2-b",
        base_model="accounts/fireworks/models/llama-v3p1-8b-instruct",
        accelerator_type="NVIDIA_A100_80GB",
        min_replica_count=2,
        max_replica_count=2,
    )

    with pytest.raises(DeploymentDriftError) as error:
        manager.reconcile(config)

    message = str(error.value)
    assert "base_model is 'accounts/fireworks/models/qwen3-8b', requested" in message
    assert "accelerator_type is 'NVIDIA_H100_80GB', requested 'NVIDIA_A100_80GB'" in message
    assert "force_recreate=True" in message and "new deployment id" in message
    assert {c.field for c in error.value.drift.immutable} == {"base_model", "accelerator_type"}
    assert writes(emulator)[before:] == []  # not even the mutable replica counts were patched

    recreated = manager.reconcile(config, force_recreate=True)
    assert recreated.action == "recreated"
    assert recreated.deployment.base_model == config.base_model


def test_create_or_get_keeps_the_sdk_semantics_and_only_logs_drift(manager, emulator, caplog):
    serving(manager, "day2-c")
    manager.scale_to_zero("day2-c")
    before = len(writes(emulator))
    with caplog.at_level(logging.INFO, logger="airflow_fireworks"):
        info = manager.create_or_get(
            DeploymentConfig(deployment_id="day2-c", base_model=BASE_MODEL, min_replica_count=1)
        )
    assert info.max_replica_count == 0
    assert writes(emulator)[before:] == []
    assert "differs from the config (not applied): min_replica_count: 0 -> 1" in caplog.text


def test_serving_wait_refuses_a_deployment_scaled_to_zero_on_purpose_at_once(manager):
    serving(manager, "day2-d")
    manager.scale_to_zero("day2-d")
    manager.wait_for(DeploymentTarget.SCALED_TO_ZERO, "day2-d", timeout_s=10, poll_interval_s=0.05)
    started = time.monotonic()
    with pytest.raises(DeploymentScaledToZeroError, match="scaled to zero on purpose") as error:
        manager.wait_until_serving("day2-d", timeout_s=60, poll_interval_s=0.05)
    assert time.monotonic() - started < 5
    assert "run the create task" in str(error.value)


# --- create operator -------------------------------------------------------------------------


def test_create_operator_brings_replicas_back_after_teardown(hook, emulator):
    first = create_op("day2-op", min_replica_count=1, max_replica_count=1, deferrable=False)
    first.execute(task_context())
    hook.scale_to_zero("day2-op")
    hook.wait_for(DeploymentTarget.SCALED_TO_ZERO, "day2-op", timeout_s=10, poll_interval_s=0.05)

    context = task_context()
    result = create_op("day2-op", min_replica_count=1, max_replica_count=1, deferrable=False).execute(context)

    assert result["state"] == "READY" and result["replica_count"] == 1
    assert context["ti"].xcoms[RECONCILE_XCOM_KEY] == {
        "action": "updated",
        "changes": [
            {"field": "min_replica_count", "current": 0, "requested": 1},
            {"field": "max_replica_count", "current": 0, "requested": 1},
        ],
    }


async def test_deferred_create_waits_for_the_requested_replicas(hook, emulator):
    hook.reconcile({"deployment_id": "day2-def", "base_model": BASE_MODEL, "min_replica_count": 1})
    hook.wait_for_ready("day2-def", timeout_s=10, poll_interval_s=0.05)
    hook.scale_to_zero("day2-def")
    hook.wait_for(DeploymentTarget.SCALED_TO_ZERO, "day2-def", timeout_s=10, poll_interval_s=0.05)
    op = create_op("day2-def", min_replica_count=2, max_replica_count=2, deferrable=True)

    result = await run_deferred(op, task_context())

    assert result["replica_count"] == 2


def test_create_operator_fails_without_retry_on_immutable_drift(hook, emulator):
    create_op("day2-imm", deferrable=False).execute(task_context())
    before = len(writes(emulator))
    op = create_op("day2-imm", deferrable=False, config={"preemptible": True})
    with pytest.raises(AirflowFailException, match="preemptible is False, requested True"):
        op.execute(task_context())
    assert writes(emulator)[before:] == []


# --- hotload operator: fail fast, honest chain -----------------------------------------------


def test_hotload_on_a_deployment_scaled_to_zero_on_purpose_fails_fast_naming_the_fix(hook, emulator):
    create_op("day2-h0", min_replica_count=1, max_replica_count=1, deferrable=False).execute(task_context())
    hook.scale_to_zero("day2-h0")
    started = time.monotonic()
    with pytest.raises(AirflowFailException) as error:
        hotload_op("day2-h0", "snap-1").execute(task_context())
    assert time.monotonic() - started < 5
    assert "scaled to zero on purpose" in str(error.value)
    assert "run the create task" in str(error.value)
    assert emulator.requests(route="hotload_load") == []


def test_hotload_on_a_vanished_deployment_fails_fast(hook, emulator):
    create_op("day2-gone", deferrable=False).execute(task_context())
    emulator.vanish_deployment("day2-gone")
    with pytest.raises(AirflowFailException, match=r"not found.*run the create task"):
        hotload_op("day2-gone", "snap-1").execute(task_context())


def test_broken_chain_is_refused_before_sending_and_reported(hook, emulator):
    create_op("day2-chain", min_replica_count=1, max_replica_count=1, deferrable=False).execute(
        task_context()
    )
    hotload_op("day2-chain", "snap-1").execute(task_context())
    loads = len(emulator.requests(route="hotload_load"))
    context = task_context()
    op = hotload_op("day2-chain", "snap-3", previous_snapshot_identity="snap-2")

    started = time.monotonic()
    with pytest.raises(AirflowFailException) as error:
        op.execute(context)

    assert time.monotonic() - started < 5
    message = str(error.value)
    assert "'snap-3' is a delta on 'snap-2'" in message and "replica 0 serves 'snap-1'" in message
    assert "fallback_snapshot_identity" in message
    assert len(emulator.requests(route="hotload_load")) == loads  # nothing reached the emulator
    assert context["ti"].xcoms[SNAPSHOT_CHAIN_XCOM_KEY]["chain"] == "broken"
    assert context["ti"].xcoms[SNAPSHOT_CHAIN_XCOM_KEY]["served_before"] == ["snap-1"]


def test_broken_chain_restarts_from_the_fallback_full_snapshot(hook, emulator):
    create_op("day2-fb", min_replica_count=2, max_replica_count=2, deferrable=False).execute(task_context())
    hotload_op("day2-fb", "snap-1").execute(task_context())
    context = task_context()
    result = hotload_op(
        "day2-fb", "snap-3", previous_snapshot_identity="snap-2", fallback_snapshot_identity="snap-3-full"
    ).execute(context)

    assert (result["chain"], result["identity"], result["requested_identity"]) == (
        "restarted",
        "snap-3-full",
        "snap-3",
    )
    last = emulator.requests(route="hotload_load")[-1]
    assert last["body"]["identity"] == "snap-3-full"
    assert "incremental_snapshot_metadata" not in last["body"]
    assert hook.hotload_status("day2-fb", BASE_MODEL).current_identities == ["snap-3-full"] * 2


def test_continued_chain_sends_the_delta(hook, emulator):
    create_op("day2-ok", min_replica_count=1, max_replica_count=1, deferrable=False).execute(task_context())
    hotload_op("day2-ok", "snap-1").execute(task_context())
    result = hotload_op(
        "day2-ok", "snap-2", previous_snapshot_identity="snap-1", fallback_snapshot_identity="snap-2-full"
    ).execute(task_context())
    assert (result["chain"], result["identity"], result["incremental"]) == ("continued", "snap-2", True)
    last = emulator.requests(route="hotload_load")[-1]
    assert last["body"]["incremental_snapshot_metadata"]["previous_snapshot_identity"] == "snap-1"


# --- waits say what they wait for ------------------------------------------------------------


async def test_deployment_trigger_logs_each_state_change_once(hook, emulator, caplog, capsys):
    emulator.configure(create_delay_s=0.6)
    hook.create_or_get({"deployment_id": "day2-log", "base_model": BASE_MODEL, "min_replica_count": 1})
    trigger = FireworksDeploymentTrigger(
        "day2-log", target="ready", deadline=time.time() + 20, poll_interval=0.03, min_replicas=1
    )
    with caplog.at_level(logging.INFO):
        event = await trigger.run().asend(None)
    assert event.payload["status"] == "success"
    logged = caplog.text + capsys.readouterr().out  # the trigger logs through structlog in Airflow 3
    creating = [line for line in logged.splitlines() if "is CREATING" in line]
    polls = len([e for e in emulator.requests(route="get", limit=1000) if e["path"].endswith("/day2-log")])
    assert len(creating) == 1 and polls > 3, logged  # polled many times, logged once
    assert "info" in creating[0].lower()


# --- deployments the platform scales to zero, wakes and deletes ------------------------------

IDLE = {"min_replica_count": 0, "max_replica_count": 1, "config": {"scale_to_zero_window_s": 300}}


def idle_deployment(emulator, deployment_id: str, **settings) -> None:
    """A min-0 deployment that served, then sat idle past its scale-to-zero window."""
    emulator.configure(cold_start_s=0.4, **settings)
    create_op(deployment_id, deferrable=False, **IDLE).execute(task_context())
    hotload_op(deployment_id, "snap-1").execute(task_context())
    emulator.advance_clock(400)


def test_hotload_wakes_an_idle_deployment_in_the_worker(hook, emulator):
    idle_deployment(emulator, "day2-wake")
    assert hook.get_deployment("day2-wake").replica_count == 0

    started = time.monotonic()
    result = hotload_op("day2-wake", "snap-2", previous_snapshot_identity="snap-1").execute(task_context())

    assert time.monotonic() - started >= 0.4  # waited through the cold start
    assert (result["identity"], result["chain"]) == ("snap-2", "continued")
    waking = sorted(emulator.requests(route="completions"), key=lambda entry: entry["time"])
    assert waking and waking[0]["status"] == 425  # the request that woke it found it at zero
    assert hook.get_deployment("day2-wake").replica_count == 1


async def test_hotload_wakes_an_idle_deployment_through_the_triggerer(hook, emulator):
    idle_deployment(emulator, "day2-wake-d")
    op = hotload_op("day2-wake-d", "snap-2", previous_snapshot_identity="snap-1", deferrable=True)

    result = await run_deferred(op, task_context())

    assert (result["identity"], result["chain"], result["sent"]) == ("snap-2", "continued", True)
    assert hook.hotload_status("day2-wake-d", BASE_MODEL).current_identities == ["snap-2"]


def test_new_replicas_on_base_weights_break_the_chain_and_the_fallback_restarts_it(hook, emulator):
    idle_deployment(emulator, "day2-base", boot_identity="base")
    refused = task_context()
    with pytest.raises(AirflowFailException, match="replica 0 serves 'the base model"):
        hotload_op("day2-base", "snap-2", previous_snapshot_identity="snap-1").execute(refused)
    assert refused["ti"].xcoms[SNAPSHOT_CHAIN_XCOM_KEY]["chain"] == "broken"
    assert [e["body"]["identity"] for e in emulator.requests(route="hotload_load")] == ["snap-1"]

    result = hotload_op(
        "day2-base", "snap-2", previous_snapshot_identity="snap-1", fallback_snapshot_identity="snap-2-full"
    ).execute(task_context())
    assert (result["chain"], result["identity"]) == ("restarted", "snap-2-full")


def test_auto_deleted_deployment_fails_hotload_fast_and_the_create_task_brings_it_back(hook, emulator):
    idle_deployment(emulator, "day2-expired")
    emulator.advance_clock(8 * 24 * 3600)  # 7 days without traffic: the platform deletes it
    with pytest.raises(AirflowFailException, match="not found"):
        hotload_op("day2-expired", "snap-2", previous_snapshot_identity="snap-1").execute(task_context())

    context = task_context()
    create_op("day2-expired", deferrable=False, **IDLE).execute(context)
    assert context["ti"].xcoms[RECONCILE_XCOM_KEY]["action"] == "created"
    result = hotload_op("day2-expired", "snap-1").execute(task_context())
    assert result["chain"] == "full"
