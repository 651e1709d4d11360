"""Create, update, scale-to-zero and delete operators against the emulator, sync and deferred."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException, TaskDeferred

from airflow_fireworks.api.errors import DeploymentFailedError, FireworksTimeoutError
from airflow_fireworks.hooks.fireworks import FireworksHook
from airflow_fireworks.links import FireworksDeploymentLink
from airflow_fireworks.operators.deployment import (
    DEFERRAL_GRACE_S,
    FireworksCreateDeploymentOperator,
    FireworksDeleteDeploymentOperator,
    FireworksScaleToZeroOperator,
    FireworksUpdateDeploymentOperator,
    validate_event,
)
from airflow_fireworks.triggers.deployment import FireworksDeploymentTrigger
from tests.airflow_helpers import run_deferred, task_context
from tests.conftest import TEST_API_KEY

BASE_MODEL = "accounts/fireworks/models/qwen3-8b"
FAST_EMULATOR = {"create_delay_s": 0.3, "hotload_stage_s": 0.05, "update_delay_s": 0.1, "delete_delay_s": 0.1}
FAST = {"poll_interval": 0.1, "timeout": 20}
LINK_KEY = "_link_FireworksDeploymentLink"


@pytest.fixture
def hook(emulator, fireworks_conn_env) -> FireworksHook:
    emulator.configure(**FAST_EMULATOR)
    return FireworksHook()


def create_op(deployment_id: str, **kwargs) -> FireworksCreateDeploymentOperator:
    return FireworksCreateDeploymentOperator(
        task_id="create", deployment_id=deployment_id, base_model=BASE_MODEL, **{**FAST, **kwargs}
    )


def raw(emulator, deployment_id: str) -> dict:
    response = emulator.session.get(
        f"{emulator.url}/v1/accounts/{emulator.account_id}/deployments/{deployment_id}",
        headers={"X-Api-Key": emulator.api_key},
        timeout=5,
    )
    return dict(response.json()) if response.status_code == 200 else {}


# --- create ----------------------------------------------------------------------------------


def test_create_waits_in_the_worker_and_publishes_model_and_link(hook, emulator):
    context = task_context()
    result = create_op("op-create", deferrable=False).execute(context)
    assert result["state"] == "READY"
    assert result["deployment_id"] == "op-create"
    assert context["ti"].xcoms["inference_model"] == "accounts/emulator/deployments/op-create"
    assert context["ti"].xcoms[LINK_KEY] == "https://app.fireworks.ai/dashboard/deployments/op-create"
    assert TEST_API_KEY not in json.dumps(result)


async def test_create_defers_with_an_absolute_deadline_and_resumes(hook, emulator):
    emulator.configure(create_delay_s=3.0)  # still CREATING when the second try looks, even under load
    op = create_op("op-create-deferred", deferrable=True, timeout=timedelta(minutes=5))
    before = time.time()
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(task_context())
    trigger = deferred.value.trigger
    assert isinstance(trigger, FireworksDeploymentTrigger)
    assert before + 300 <= trigger.deadline <= time.time() + 300
    assert deferred.value.method_name == "execute_complete"
    assert deferred.value.timeout.total_seconds() == pytest.approx(300 + DEFERRAL_GRACE_S, abs=5)

    context = task_context()
    result = await run_deferred(create_op("op-create-deferred", deferrable=True), context)
    assert result["state"] == "READY"
    assert context["ti"].xcoms["inference_model"] == "accounts/emulator/deployments/op-create-deferred"
    assert len(emulator.requests(route="create")) == 1


def test_a_retried_create_reuses_the_deployment(hook, emulator):
    create_op("op-retry", deferrable=False, wait_for_completion=False).execute(task_context())
    result = create_op("op-retry", deferrable=False).execute(task_context())
    assert result["state"] == "READY"
    assert len(emulator.requests(route="create")) == 1


def test_an_already_ready_deployment_is_returned_without_deferring(hook):
    create_op("op-ready", deferrable=False).execute(task_context())
    result = create_op("op-ready", deferrable=True).execute(task_context())
    assert result["state"] == "READY"


def test_force_recreate_happens_once_per_task_instance(hook, emulator):
    create_op("op-recreate", deferrable=False).execute(task_context())
    context = task_context()
    create_op("op-recreate", deferrable=False, force_recreate=True).execute(context)
    assert len(emulator.requests(route="create")) == 2
    assert len(emulator.requests(route="delete")) == 1
    create_op("op-recreate", deferrable=False, force_recreate=True).execute(context)  # a retry
    assert len(emulator.requests(route="create")) == 2


def test_without_waiting_the_creating_deployment_is_returned(hook):
    hook_result = create_op("op-nowait", deferrable=False, wait_for_completion=False).execute(task_context())
    assert hook_result["state"] == "CREATING"


def test_a_deployment_failing_during_the_wait_fails_the_task_with_the_server_message(hook, emulator):
    emulator.configure(create_delay_s=60)
    create_op("op-fail", deferrable=False, wait_for_completion=False).execute(task_context())
    gets_before = len(emulator.requests(route="get"))
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(create_op("op-fail", deferrable=False).execute, task_context())
        deadline = time.time() + 10
        while len(emulator.requests(route="get")) < gets_before + 2 and time.time() < deadline:
            time.sleep(0.05)
        emulator.fail_deployment("op-fail", "quota exceeded for NVIDIA_H200_141GB")
        with pytest.raises(DeploymentFailedError, match="quota exceeded for NVIDIA_H200_141GB"):
            waiting.result(timeout=15)


async def test_a_failed_deployment_fails_the_deferred_task(hook, emulator):
    emulator.configure(create_delay_s=60)
    op = create_op("op-fail-deferred", deferrable=True)
    context = task_context()
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    emulator.fail_deployment("op-fail-deferred", "image pull failed")
    event = await deferred.value.trigger.run().asend(None)
    with pytest.raises(AirflowException, match="image pull failed"):
        op.execute_complete(context, event=event.payload)


def test_sync_wait_times_out(hook, emulator):
    emulator.configure(create_delay_s=60)
    with pytest.raises(FireworksTimeoutError, match="not ready"):
        create_op("op-slow", deferrable=False, timeout=0.5).execute(task_context())


def test_templated_fields_are_rendered_then_validated_before_any_request(hook, emulator):
    op = create_op(
        "{{ params.deployment }}",
        max_replica_count="{{ params.replicas }}",
        config={
            "scale_to_zero_window_s": "{{ params.window }}",
            "description": "run {{ params.deployment }}",
        },
        deferrable=False,
    )
    context = task_context(params={"deployment": "op-templated", "replicas": "3", "window": "600"})
    op.render_template_fields(context)
    assert op.deployment_id == "op-templated"
    result = op.execute(context)
    assert result["max_replica_count"] == 3
    body = raw(emulator, "op-templated")
    assert body["autoscalingPolicy"]["scaleToZeroWindow"] == "600s"
    assert body["description"] == "run op-templated"

    bad = create_op("{{ params.deployment }}", deferrable=False)
    bad_context = task_context(params={"deployment": "Not_Valid"})
    bad.render_template_fields(bad_context)
    with pytest.raises(AirflowFailException, match="deployment_id"):  # no retry can fix it
        bad.execute(bad_context)
    assert len(emulator.requests(route="create")) == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"deployment_id": "Bad_Id"}, "deployment_id"),
        ({"base_model": "qwen3-8b"}, "base_model"),
        ({"min_replica_count": 3, "max_replica_count": 1}, "max_replica_count"),
        ({"config": {"region": "MARS_1"}}, "region"),
        ({"config": {"no_such_field": 1}}, "no_such_field"),
        ({"config": {"max_replica_count": 2}}, "config repeats max_replica_count"),
        ({"timeout": 0}, "timeout"),
        ({"poll_interval": "soon"}, "poll_interval"),
    ],
)
def test_bad_parameters_fail_at_construction(kwargs, match):
    args = {"task_id": "create", "deployment_id": "dep", "base_model": BASE_MODEL, **kwargs}
    with pytest.raises(ValueError, match=match):
        FireworksCreateDeploymentOperator(**args)


def test_on_kill_deletes_only_when_asked(hook, emulator):
    create_op("op-kill", deferrable=False, wait_for_completion=False).execute(task_context())
    create_op("op-kill").on_kill()
    assert hook.get_deployment("op-kill") is not None
    create_op("op-kill", delete_on_kill=True).on_kill()
    assert len(emulator.requests(route="delete")) == 1


def test_deferred_create_passes_delete_on_kill_to_the_trigger(hook):
    with pytest.raises(TaskDeferred) as deferred:
        create_op("op-kill-deferred", deferrable=True, delete_on_kill=True).execute(task_context())
    assert deferred.value.trigger.serialize()[1]["delete_on_kill"] is True


def test_deferrable_defaults_to_the_airflow_setting(monkeypatch):
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "true")
    from airflow_fireworks.operators import deployment

    assert deployment.default_deferrable() is True
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "false")
    assert deployment.default_deferrable() is False


# --- events ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "match"),
    [
        (None, "must be a dict"),
        ("success", "must be a dict"),
        ({"message": "x"}, "status None"),
        ({"status": "done", "message": "x"}, "status 'done'"),
        ({"status": "success"}, "message"),
        ({"status": "success", "message": "ok"}, "lacks deployment"),
        ({"status": "success", "message": "ok", "deployment": "READY"}, "must be a dict or null"),
        ({"status": "error", "message": "deployment is FAILED: boom"}, "error: deployment is FAILED: boom"),
        ({"status": "timeout", "message": "timed out"}, "timeout: timed out"),
    ],
)
def test_execute_complete_rejects_bad_or_failed_events(event, match):
    with pytest.raises(AirflowException, match=match):
        create_op("op-events").execute_complete(task_context(), event=event)


def test_validate_event_keeps_good_events():
    event = {"status": "success", "message": "ok", "deployment": None}
    assert validate_event(event, ("deployment",)) == event


# --- update ----------------------------------------------------------------------------------


def test_update_builds_body_and_mask_from_convenience_parameters(hook, emulator):
    create_op("op-update", deferrable=False).execute(task_context())
    op = FireworksUpdateDeploymentOperator(
        task_id="update",
        deployment_id="op-update",
        min_replica_count=1,
        max_replica_count="4",
        scale_up_window_s=45,
        scale_to_zero_window_s=timedelta(minutes=10),
        wait_for_completion=True,
        deferrable=False,
        **FAST,
    )
    result = op.execute(task_context())
    assert (result["state"], result["min_replica_count"], result["max_replica_count"]) == ("READY", 1, 4)
    (patch,) = emulator.requests(route="update")
    mask = patch["query"]["updateMask"]
    assert set(mask.split(",")) == {
        "min_replica_count",
        "max_replica_count",
        "autoscaling_policy.scale_up_window",
        "autoscaling_policy.scale_to_zero_window",
    }
    assert raw(emulator, "op-update")["autoscalingPolicy"]["scaleUpWindow"] == "45s"


async def test_update_with_body_and_mask_waits_deferred(hook, emulator):
    create_op("op-update-d", deferrable=False).execute(task_context())
    op = FireworksUpdateDeploymentOperator(
        task_id="update",
        deployment_id="op-update-d",
        body={"maxReplicaCount": 2},
        update_mask=["max_replica_count"],
        wait_for_completion=True,
        deferrable=True,
        **FAST,
    )
    result = await run_deferred(op, task_context())
    assert result["max_replica_count"] == 2 and result["state"] == "READY"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"body": {"maxReplicaCount": 2}}, "update_mask is required"),
        ({"update_mask": "max_replica_count"}, "without body"),
        ({}, "nothing to update"),
        ({"body": {"maxReplicaCount": 2}, "update_mask": "min_replica_count"}, "not covered by the mask"),
        (
            {"body": {"maxReplicaCount": 2}, "update_mask": "max_replica_count", "max_replica_count": 3},
            "already sets",
        ),
        ({"min_replica_count": 3, "max_replica_count": 1}, "must be <="),
        ({"scale_to_zero_window_s": 60}, ">= 300"),
        ({"min_replica_count": -1}, "integer >= 0"),
    ],
)
def test_update_rejects_bad_parameters_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FireworksUpdateDeploymentOperator(task_id="update", deployment_id="dep", **kwargs)


def test_templated_update_without_mask_fails_before_any_request(hook, emulator):
    op = FireworksUpdateDeploymentOperator(
        task_id="update", deployment_id="dep", body={"maxReplicaCount": "{{ params.replicas }}"}
    )
    context = task_context(params={"replicas": 2})
    op.render_template_fields(context)
    with pytest.raises(AirflowFailException, match="update_mask is required"):
        op.execute(context)
    assert emulator.requests(route="update") == []


# --- scale to zero and delete ----------------------------------------------------------------


@pytest.mark.parametrize("deferrable", [False, True])
async def test_scale_to_zero_waits_for_zero_replicas(hook, emulator, deferrable):
    deployment_id = f"op-zero-{int(deferrable)}"
    create_op(deployment_id, deferrable=False).execute(task_context())
    op = FireworksScaleToZeroOperator(
        task_id="release",
        deployment_id=deployment_id,
        wait_for_completion=True,
        deferrable=deferrable,
        **FAST,
    )
    context = task_context()
    result = await run_deferred(op, context) if deferrable else op.execute(context)
    assert result["replica_count"] == 0 and result["max_replica_count"] == 0
    assert context["ti"].xcoms[LINK_KEY].endswith(f"/dashboard/deployments/{deployment_id}")
    body = raw(emulator, deployment_id)
    assert (body["replicaCount"], body["baseModel"]) == (0, BASE_MODEL)


def test_scale_to_zero_of_a_missing_deployment_is_done(hook):
    op = FireworksScaleToZeroOperator(
        task_id="release", deployment_id="op-never-created", wait_for_completion=True
    )
    assert op.execute(task_context()) is None


def test_scale_to_zero_and_delete_work_as_teardown_tasks():
    from airflow.sdk import DAG, TriggerRule

    with DAG("teardown_shape", schedule=None):
        create = create_op("op-teardown")
        release = FireworksScaleToZeroOperator(task_id="release", deployment_id="op-teardown")
        delete = FireworksDeleteDeploymentOperator(task_id="delete", deployment_id="op-teardown")
        create >> [release.as_teardown(setups=create), delete.as_teardown(setups=create)]
    assert release.is_teardown and delete.is_teardown
    assert release.trigger_rule == TriggerRule.ALL_DONE_SETUP_SUCCESS


@pytest.mark.parametrize("deferrable", [False, True])
async def test_delete_waits_until_gone(hook, emulator, deferrable):
    emulator.configure(delete_delay_s=0.3)
    deployment_id = f"op-delete-{int(deferrable)}"
    create_op(deployment_id, deferrable=False).execute(task_context())
    op = FireworksDeleteDeploymentOperator(
        task_id="delete", deployment_id=deployment_id, wait_for_completion=True, deferrable=deferrable, **FAST
    )
    result = await run_deferred(op, task_context()) if deferrable else op.execute(task_context())
    assert result == {"deployment_id": deployment_id, "deleted": True}
    assert hook.get_deployment(deployment_id) is None


def test_delete_of_a_missing_deployment_is_done(hook):
    op = FireworksDeleteDeploymentOperator(
        task_id="delete", deployment_id="op-gone", wait_for_completion=True
    )
    assert op.execute(task_context()) == {"deployment_id": "op-gone", "deleted": False}


# --- link ------------------------------------------------------------------------------------


def test_link_uses_the_console_url_of_the_connection(emulator, monkeypatch):
    conn = {
        "conn_type": "fireworks",
        "host": emulator.url,
        "password": emulator.api_key,
        "extra": {"console_url": "https://console.example.com/"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_FW_CONSOLE", json.dumps(conn))
    op = FireworksDeleteDeploymentOperator(
        task_id="delete", deployment_id="linked", fireworks_conn_id="fw_console"
    )
    link = FireworksDeploymentLink()
    assert link.get_link(op, ti_key=None) == "https://console.example.com/dashboard/deployments/linked"
    op.deployment_id = "{{ not rendered }}"
    assert link.get_link(op, ti_key=None) == ""
    assert link.xcom_key == LINK_KEY
