"""The trainer-job operators against the emulator: create (sync and deferred), delete, resume or
reconnect, promote, reattach; idempotent retries, kills, bad input and the key kept out."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException, TaskDeferred

from airflow_fireworks.api.errors import FireworksAPIError, FireworksTimeoutError, TrainerJobFailedError
from airflow_fireworks.hooks.fireworks import FireworksHook
from airflow_fireworks.operators._common import DEFERRAL_GRACE_S
from airflow_fireworks.operators.deployment import FireworksCreateDeploymentOperator
from airflow_fireworks.operators.trainer import (
    FireworksCreateTrainerJobOperator,
    FireworksDeleteTrainerJobOperator,
    FireworksPromoteCheckpointOperator,
    FireworksReattachTrainerOperator,
    FireworksResumeTrainerJobOperator,
)
from airflow_fireworks.triggers.deployment import FireworksDeploymentTrigger
from airflow_fireworks.triggers.trainer import FireworksTrainerJobTrigger
from tests.airflow_helpers import RecordingTaskInstance, run_deferred, task_context
from tests.conftest import TEST_API_KEY

BASE_MODEL = "accounts/fireworks/models/qwen3-8b"
FAST_EMULATOR = {
    "trainer_placement_s": 0.3,
    "trainer_boot_s": 0.3,
    "trainer_resume_delay_s": 0.2,
    "trainer_promote_s": 0.2,
    "delete_delay_s": 0.1,
    "create_delay_s": 0.2,
    "update_delay_s": 0.1,
}
FAST = {"poll_interval": 0.05, "timeout": 20}
LINK_KEY = "_link_FireworksTrainerJobLink"


@pytest.fixture
def hook(emulator, fireworks_conn_env) -> FireworksHook:
    emulator.configure(**FAST_EMULATOR)
    return FireworksHook()


def create_op(job_id: str | None = "op-trainer", **kwargs: Any) -> FireworksCreateTrainerJobOperator:
    return FireworksCreateTrainerJobOperator(
        task_id="create_trainer", job_id=job_id, base_model=BASE_MODEL, **{**FAST, **kwargs}
    )


class RunTaskInstance(RecordingTaskInstance):
    """A task instance of a DAG run (what a derived job id is made from)."""

    def __init__(self, run_id: str, try_number: int = 1) -> None:
        super().__init__("create_trainer", try_number)
        self.dag_id, self.run_id, self.map_index = "rl", run_id, -1


# --- create -----------------------------------------------------------------------------------


def test_create_waits_in_the_worker_and_publishes_name_url_and_link(hook, emulator) -> None:
    context = task_context()
    result = create_op(display_name="grpo", config={"learning_rate": "2e-5"}, deferrable=False).execute(
        context
    )

    assert result["job_name"] == "accounts/emulator/rlorTrainerJobs/op-trainer"
    assert result["job_id"] == "op-trainer"
    assert result["service_url"] == f"{emulator.url}/training/v1/rlorTrainerJobs/emulator/op-trainer"
    assert result["max_context_length"] == 8192
    assert context["ti"].xcoms["job_name"] == result["job_name"]
    assert (
        context["ti"].xcoms[LINK_KEY]
        == "https://app.fireworks.ai/dashboard/fine-tuning/reinforcement/op-trainer"
    )
    [create] = emulator.requests(route="trainer_create")
    assert (
        create["body"]["displayName"] == "grpo" and create["body"]["trainingConfig"]["learningRate"] == 2e-5
    )
    assert TEST_API_KEY not in json.dumps(result)


async def test_create_defers_with_absolute_budgets_and_resumes(hook, emulator) -> None:
    op = create_op(deferrable=True, timeout=timedelta(minutes=5), pending_timeout=timedelta(hours=1))
    before = time.time()
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(task_context())
    trigger = deferred.value.trigger
    assert isinstance(trigger, FireworksTrainerJobTrigger)
    assert before <= trigger.clock.started_at <= time.time()
    assert (trigger.clock.timeout_s, trigger.clock.pending_timeout_s) == (300, 3600)
    assert trigger.service_url == f"{emulator.url}/training/v1/rlorTrainerJobs/emulator/op-trainer"
    expected = trigger.deadline - time.time() + DEFERRAL_GRACE_S
    assert deferred.value.timeout.total_seconds() == pytest.approx(expected, abs=5)

    context = task_context()
    result = await run_deferred(create_op(deferrable=True), context)
    assert result["job_id"] == "op-trainer" and context["ti"].xcoms["job_name"] == result["job_name"]
    assert len(emulator.requests(route="trainer_create")) == 2  # the second was a 409 -> get


def test_a_retried_create_reuses_the_job_and_resumes_a_failed_one(hook, emulator) -> None:
    create_op(deferrable=False, wait_for_completion=False).execute(task_context())
    emulator.preempt_trainer("op-trainer")
    result = create_op(deferrable=False).execute(task_context())
    assert result["job_id"] == "op-trainer"
    assert [r["status"] for r in emulator.requests(route="trainer_create")] == [200, 409]
    assert len(emulator.requests(route="trainer_action")) == 1  # one resume


def test_a_derived_id_is_stable_across_retries_and_skips_deleted_jobs(hook, emulator) -> None:
    first = create_op(None, deferrable=False, wait_for_completion=False).execute(
        task_context(ti=RunTaskInstance("run-1"))
    )
    retry = create_op(None, deferrable=False).execute(task_context(ti=RunTaskInstance("run-1", try_number=2)))
    other_run = create_op(None, deferrable=False, wait_for_completion=False).execute(
        task_context(ti=RunTaskInstance("run-2"))
    )
    assert first["job_id"] == retry["job_id"] != other_run["job_id"]
    assert first["job_id"].startswith("training-api-service-")
    hook.get_trainer_manager().delete(first["job_id"])
    time.sleep(0.3)
    cleared = create_op(None, deferrable=False, wait_for_completion=False).execute(
        task_context(ti=RunTaskInstance("run-1", try_number=3))
    )
    assert cleared["job_id"] not in (first["job_id"], other_run["job_id"])


def test_an_explicit_deleted_id_fails_without_retries(hook, emulator) -> None:
    emulator.add_trainer_job("op-trainer")
    hook.get_trainer_manager().delete("op-trainer")
    time.sleep(0.3)
    with pytest.raises(AirflowFailException, match="new job id"):
        create_op(deferrable=False).execute(task_context())


def test_a_failed_trainer_fails_the_task_with_the_server_message(hook, emulator) -> None:
    emulator.configure(trainer_placement_s=60)
    create_op(deferrable=False, wait_for_completion=False).execute(task_context())
    emulator.set_trainer_state("op-trainer", "FAILED", "no H200 capacity in US_OHIO_1")
    with pytest.raises(TrainerJobFailedError, match="no H200 capacity"):
        create_op(deferrable=False, resume_if_stopped=False).execute(task_context())


def test_placement_timeout_fails_the_task(hook, emulator) -> None:
    emulator.configure(trainer_placement_s=60)
    with pytest.raises(FireworksTimeoutError, match="PENDING"):
        create_op(deferrable=False, pending_timeout=0.4).execute(task_context())


async def test_a_deferred_wait_fails_when_the_trainer_is_preempted(hook, emulator) -> None:
    emulator.configure(trainer_placement_s=60)
    op = create_op(deferrable=True)
    context = task_context()
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    emulator.set_trainer_state("op-trainer", "FAILED", "trainer preempted", code="UNAVAILABLE")
    event = await deferred.value.trigger.run().asend(None)
    with pytest.raises(AirflowException, match="preempted"):
        op.execute_complete(context, event=event.payload)


def test_kill_during_the_wait_deletes_only_when_asked(hook, emulator) -> None:
    emulator.configure(trainer_placement_s=60)
    create_op(deferrable=False, wait_for_completion=False).execute(task_context())
    create_op().on_kill()
    assert hook.get_trainer_manager().get("op-trainer").state.short == "PENDING"
    create_op(delete_on_kill=True).on_kill()
    assert hook.get_trainer_manager().get("op-trainer").state.short in ("DELETING", "DELETED")


async def test_kill_during_the_deferred_wait_deletes_the_trainer(hook, emulator) -> None:
    emulator.configure(trainer_placement_s=60)
    with pytest.raises(TaskDeferred) as deferred:
        create_op(deferrable=True, delete_on_kill=True).execute(task_context())
    trigger = deferred.value.trigger
    assert trigger.serialize()[1]["delete_on_kill"] is True
    await trigger.on_kill()
    assert hook.get_trainer_manager().get("op-trainer").state.short in ("DELETING", "DELETED")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"job_id": "Bad_Id"}, "job_id"),
        ({"base_model": "qwen3-8b"}, "base_model"),
        ({"lora_rank": -1}, "lora_rank"),
        ({"training_shape_ref": "shapes/x"}, "training_shape_ref"),
        ({"config": {"epochs": 3}}, "unknown trainer job config key"),
        ({"config": {"lora_rank": 8}}, "config repeats lora_rank"),
        ({"config": {"inactivity_timeout": "4h"}}, "inactivity_timeout"),
        ({"poll_interval": 0}, "poll_interval"),
        ({"pending_timeout": -5}, "pending_timeout"),
    ],
)
def test_bad_input_fails_at_parse_time(kwargs: dict[str, Any], message: str) -> None:
    args = {"task_id": "t", "base_model": BASE_MODEL, **kwargs}
    with pytest.raises(ValueError, match=message):
        FireworksCreateTrainerJobOperator(**args)


def test_templated_input_is_validated_after_rendering_without_retries(hook, emulator) -> None:
    op = create_op("{{ params.job }}", lora_rank="{{ params.rank }}")
    op.job_id, op.lora_rank = "op-trainer", "-3"  # what rendering produced
    with pytest.raises(AirflowFailException, match="lora_rank"):
        op.execute(task_context())
    assert emulator.requests(route="trainer_create") == []


# --- delete -----------------------------------------------------------------------------------


def delete_op(job_id: str = "op-trainer", **kwargs: Any) -> FireworksDeleteTrainerJobOperator:
    return FireworksDeleteTrainerJobOperator(task_id="delete_trainer", job_id=job_id, **{**FAST, **kwargs})


def test_delete_is_teardown_safe(hook, emulator) -> None:
    emulator.add_trainer_job("op-trainer")
    assert delete_op(wait_for_completion=True, deferrable=False).execute(task_context()) == {
        "job_id": "op-trainer",
        "deleted": True,
    }
    assert hook.get_trainer_manager().get("op-trainer").state.short == "DELETED"
    assert delete_op().execute(task_context())["deleted"] is False  # a tombstone
    assert delete_op("never-created").execute(task_context())["deleted"] is False
    assert len(emulator.requests(route="trainer_delete")) == 1


async def test_delete_waits_deferred(hook, emulator) -> None:
    emulator.configure(delete_delay_s=0.4)
    emulator.add_trainer_job("op-trainer")
    result = await run_deferred(
        delete_op("accounts/emulator/rlorTrainerJobs/op-trainer", wait_for_completion=True, deferrable=True),
        task_context(),
    )
    assert result == {"job_id": "op-trainer", "deleted": True}


def test_a_delete_failing_with_a_server_error_fails_the_task_so_it_is_retried(hook, emulator) -> None:
    emulator.add_trainer_job("op-trainer")
    emulator.add_fault(route="trainer_delete", status=500, message="backend unavailable", times=50)
    with pytest.raises(FireworksAPIError, match="backend unavailable") as raised:
        delete_op().execute(task_context())
    assert raised.value.status_code == 500
    assert not isinstance(raised.value, AirflowFailException)


def test_a_delete_refused_for_permission_fails_the_task_without_retries(hook, emulator) -> None:
    emulator.add_trainer_job("op-trainer")
    emulator.add_fault(route="trainer_delete", status=403, message="permission denied", times=1)
    with pytest.raises(AirflowFailException, match="permission denied") as raised:
        delete_op().execute(task_context())
    assert isinstance(raised.value.__cause__, FireworksAPIError)
    assert raised.value.__cause__.status_code == 403


# --- resume / reconnect -----------------------------------------------------------------------


def resume_op(**kwargs: Any) -> FireworksResumeTrainerJobOperator:
    return FireworksResumeTrainerJobOperator(task_id="resume", job_id="op-trainer", **{**FAST, **kwargs})


async def test_reconnect_after_preemption_deferred(hook, emulator) -> None:
    emulator.add_trainer_job("op-trainer")
    emulator.preempt_trainer("op-trainer")
    context = task_context()
    result = await run_deferred(resume_op(deferrable=True), context)
    assert result["job_id"] == "op-trainer" and context["ti"].xcoms["resumed"] is True
    assert hook.get_trainer_manager().is_healthy("op-trainer")


def test_reconnect_to_a_running_trainer_sends_nothing(hook, emulator) -> None:
    emulator.add_trainer_job("op-trainer")
    context = task_context()
    resume_op(deferrable=False).execute(context)
    assert context["ti"].xcoms["resumed"] is False and emulator.requests(route="trainer_action") == []


def test_resume_mode_and_its_errors(hook, emulator) -> None:
    emulator.add_trainer_job("op-trainer")
    emulator.set_trainer_state("op-trainer", "PAUSED")
    assert resume_op(mode="resume", deferrable=False).execute(task_context())["job_id"] == "op-trainer"
    with pytest.raises(AirflowFailException, match="only FAILED"):
        resume_op(mode="resume", deferrable=False).execute(task_context())  # RUNNING: a 400
    with pytest.raises(ValueError, match="mode"):
        resume_op(mode="restart")
    with pytest.raises(AirflowFailException, match="not found"):
        FireworksResumeTrainerJobOperator(
            task_id="r", job_id="missing", max_wait_for_resumable=0.2, **FAST
        ).execute(task_context())


# --- promote ----------------------------------------------------------------------------------


def promote_op(**kwargs: Any) -> FireworksPromoteCheckpointOperator:
    args = {
        "job_id": "op-trainer",
        "output_model_id": "grpo-final",
        "base_model": BASE_MODEL,
        "poll_interval": 0.05,
    }
    return FireworksPromoteCheckpointOperator(task_id="promote", **{**args, **kwargs})


def test_promote_the_newest_promotable_checkpoint(hook, emulator) -> None:
    emulator.add_trainer_job("op-trainer")
    emulator.save_checkpoint("op-trainer", "step-0")
    emulator.save_checkpoint("op-trainer", "step-1")
    emulator.save_checkpoint("op-trainer", "step-2", "base")
    emulator.save_checkpoint("op-trainer", "step-3")
    model = promote_op().execute(task_context())
    assert model["name"] == "accounts/emulator/models/grpo-final" and model["state"] == "READY"
    assert model["checkpoint"] == "accounts/emulator/rlorTrainerJobs/op-trainer/checkpoints/step-2"
    assert promote_op().execute(task_context())["name"] == model["name"]  # a retry


def test_promote_refuses_a_delta_before_sending(hook, emulator) -> None:
    emulator.add_trainer_job("op-trainer")
    emulator.save_checkpoint("op-trainer", "step-0")
    emulator.save_checkpoint("op-trainer", "step-1")
    with pytest.raises(AirflowFailException, match="not promotable"):
        promote_op(checkpoint_id="step-1").execute(task_context())
    assert emulator.requests(route="trainer_promote") == []
    with pytest.raises(ValueError, match="output_model_id"):
        promote_op(output_model_id="Grpo Final")


# --- the deployment link ----------------------------------------------------------------------


def test_the_deployment_create_operator_links_to_the_trainer_from_xcom(hook, emulator) -> None:
    trainer = create_op(deferrable=False).execute(task_context())
    deployment = FireworksCreateDeploymentOperator(
        task_id="create_deployment",
        deployment_id="op-dep",
        base_model=BASE_MODEL,
        hot_load_trainer_job="{{ ti.xcom_pull(task_ids='create_trainer')['job_name'] }}",
        **FAST,
    )
    deployment.hot_load_trainer_job = trainer["job_name"]  # what rendering the template produced
    result = deployment.execute(task_context())
    assert result["hot_load_trainer_job"] == trainer["job_name"]
    assert result["hot_load_bucket_url"].endswith("/rlorTrainerJobs/op-trainer")


def reattach_op(trainer_job: str, **kwargs: Any) -> FireworksReattachTrainerOperator:
    return FireworksReattachTrainerOperator(
        task_id="reattach",
        deployment_id="op-dep",
        base_model=BASE_MODEL,
        trainer_job=trainer_job,
        **{**FAST, **kwargs},
    )


@pytest.mark.parametrize("deferrable", [False, True])
async def test_reattach_a_recreated_trainer(hook, emulator, deferrable: bool) -> None:
    emulator.add_trainer_job("trainer-1")
    emulator.add_trainer_job("trainer-2")
    hook.create_or_get(
        {
            "deployment_id": "op-dep",
            "base_model": BASE_MODEL,
            "hot_load_trainer_job": "accounts/emulator/rlorTrainerJobs/trainer-1",
        }
    )
    op = reattach_op(
        "accounts/emulator/rlorTrainerJobs/trainer-2", hot_load_transition_type="sync", deferrable=deferrable
    )
    context = task_context()
    result = await run_deferred(op, context) if deferrable else op.execute(context)
    assert result["hot_load_trainer_job"] == "accounts/emulator/rlorTrainerJobs/trainer-2"
    assert result["hot_load_transition_type"] == "SYNC"
    [patch] = emulator.requests(route="update")
    assert patch["query"] == {"updateMask": "hot_load_trainer_job,hot_load_transition_type"}
    assert context["ti"].xcoms[LINK_KEY].endswith("/trainer-2")
    again = reattach_op(
        "accounts/emulator/rlorTrainerJobs/trainer-2", hot_load_transition_type="SYNC", deferrable=deferrable
    )
    again.execute(task_context())
    assert len(emulator.requests(route="update")) == 1  # already attached: nothing sent


def test_reattach_defers_until_the_deployment_is_ready(hook, emulator) -> None:
    emulator.configure(create_delay_s=60)
    emulator.add_trainer_job("trainer-2")
    hook.create_or_get({"deployment_id": "op-dep", "base_model": BASE_MODEL})
    with pytest.raises(TaskDeferred) as deferred:
        reattach_op("accounts/emulator/rlorTrainerJobs/trainer-2", deferrable=True).execute(task_context())
    assert isinstance(deferred.value.trigger, FireworksDeploymentTrigger)
    assert deferred.value.method_name == "execute_when_ready"


def test_reattach_refuses_another_base_model_and_a_missing_trainer(hook, emulator) -> None:
    emulator.add_trainer_job("trainer-2")
    hook.create_or_get({"deployment_id": "op-dep", "base_model": BASE_MODEL})
    hook.wait_for_ready("op-dep", timeout_s=10, poll_interval_s=0.05)
    with pytest.raises(AirflowFailException, match="base_model"):
        FireworksReattachTrainerOperator(
            task_id="r",
            deployment_id="op-dep",
            base_model="accounts/fireworks/models/other",
            trainer_job="accounts/emulator/rlorTrainerJobs/trainer-2",
            deferrable=False,
            **FAST,
        ).execute(task_context())
    with pytest.raises(AirflowFailException, match="not found"):
        reattach_op("accounts/emulator/rlorTrainerJobs/missing", deferrable=False).execute(task_context())
    with pytest.raises(ValueError, match="trainer_job"):
        reattach_op("trainer-2")
    with pytest.raises(ValueError, match="hot_load_transition_type"):
        reattach_op("accounts/emulator/rlorTrainerJobs/trainer-2", hot_load_transition_type="LATER")


def test_a_server_message_echoing_the_key_is_scrubbed(hook, emulator) -> None:
    emulator.add_fault(
        route="trainer_create", status=400, message=f"bad request from key {TEST_API_KEY}", times=1
    )
    with pytest.raises(AirflowFailException) as raised:
        create_op(deferrable=False).execute(task_context())
    assert "bad request from key" in str(raised.value) and TEST_API_KEY not in str(raised.value)
