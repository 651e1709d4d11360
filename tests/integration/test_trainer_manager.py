"""TrainerJobManager (and the deployment link on DeploymentManager) against the emulator over
real HTTP: every method, the waits through each state, idempotent create and delete, checkpoints,
promotion, training shapes, faults on the new routes, and the key kept out of every error."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest

from airflow_fireworks.api import (
    DeploymentConfig,
    DeploymentManager,
    FireworksAPIError,
    FireworksConnectionError,
    FireworksTimeoutError,
    FireworksValidationError,
    RetryPolicy,
    TrainerJobConfig,
    TrainerJobDeletedError,
    TrainerJobFailedError,
    TrainerJobManager,
    TrainerJobNotFoundError,
    TrainerJobState,
    TrainerWaitClock,
)
from tests.conftest import TEST_API_KEY
from tests.emulator_control import EmulatorProcess

BASE_MODEL = "accounts/fireworks/models/qwen3-8b"
SHAPE = "accounts/fireworks/trainingShapes/qwen3-8b-policy"
FAST_RETRY = RetryPolicy(max_attempts=4, initial_backoff_s=0.01, max_backoff_s=0.05, max_total_s=10.0)
FAST = {
    "trainer_placement_s": 0.2,
    "trainer_boot_s": 0.2,
    "trainer_resume_delay_s": 0.2,
    "trainer_promote_s": 0.2,
    "delete_delay_s": 0.1,
    "create_delay_s": 0.1,
    "update_delay_s": 0.1,
}
POLL = 0.05


@pytest.fixture
def emu(emulator: EmulatorProcess) -> EmulatorProcess:
    emulator.configure(**FAST)
    return emulator


@pytest.fixture
def trainers(emu: EmulatorProcess) -> Iterator[TrainerJobManager]:
    with TrainerJobManager(emu.api_key, base_url=emu.url, retry_policy=FAST_RETRY) as manager:
        yield manager


@pytest.fixture
def deployments(emu: EmulatorProcess) -> Iterator[DeploymentManager]:
    with DeploymentManager(emu.api_key, base_url=emu.url, retry_policy=FAST_RETRY) as manager:
        yield manager


def config(job_id: str | None = "job-a", **overrides: object) -> TrainerJobConfig:
    return TrainerJobConfig(base_model=BASE_MODEL, requested_job_id=job_id, **overrides)  # type: ignore[arg-type]


def ready(trainers: TrainerJobManager, job_id: str = "job-a", **overrides: object) -> str:
    trainers.create_and_wait(config(job_id, **overrides), poll_interval_s=POLL, timeout_s=10)
    return job_id


# --- create -----------------------------------------------------------------------------------


def test_create_sends_the_documented_request_and_waits_through_each_state(
    trainers: TrainerJobManager, emu: EmulatorProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    endpoint = trainers.create_and_wait(config(display_name="grpo"), poll_interval_s=POLL, timeout_s=10)

    assert endpoint.job_name == f"accounts/{emu.account_id}/rlorTrainerJobs/job-a"
    assert endpoint.job_id == "job-a"
    assert endpoint.base_url == f"{emu.url}/training/v1/rlorTrainerJobs/{emu.account_id}/job-a"
    assert endpoint.max_context_length == 8192
    assert trainers.boot_time_s is not None and trainers.boot_time_s >= 0.3
    [create] = emu.requests(route="trainer_create")
    assert create["query"] == {"skipValidations": "true", "rlorTrainerJobId": "job-a"}
    assert (
        create["body"]["serviceMode"] is True and create["body"]["trainingConfig"]["baseModel"] == BASE_MODEL
    )
    assert "x-api-key" in create["headers"] and "authorization" not in create["headers"]
    [health, *_] = emu.requests(route="trainer_health")
    assert {"x-api-key", "authorization"} <= set(health["headers"])
    seen = caplog.text
    assert seen.index("PENDING") < seen.index("CREATING") < seen.index("is ready")


def test_a_generated_id_is_kept_across_retries_of_the_create(
    trainers: TrainerJobManager, emu: EmulatorProcess
) -> None:
    emu.add_fault(route="trainer_create", kind="reset", times=FAST_RETRY.max_attempts + 1)
    same = config(None)
    with pytest.raises(FireworksConnectionError):
        trainers.create(same)  # every attempt of this call failed: the task would be retried
    created = trainers.create(same)

    creates = emu.requests(route="trainer_create")
    assert len(creates) == FAST_RETRY.max_attempts + 2
    ids = {c["query"]["rlorTrainerJobId"] for c in creates}
    assert ids == {created.job_id} and created.job_id.startswith("training-api-service-")
    assert [j.job_id for j in trainers.list_jobs()] == [created.job_id]


def test_create_of_an_existing_id_returns_it(trainers: TrainerJobManager, emu: EmulatorProcess) -> None:
    first = trainers.create(config())
    again = trainers.create(config())
    assert (again.job_id, again.reused, first.reused) == ("job-a", True, False)
    assert [r["status"] for r in emu.requests(route="trainer_create")] == [200, 409]


def test_create_of_a_deleted_id_is_refused(trainers: TrainerJobManager, emu: EmulatorProcess) -> None:
    ready(trainers)
    trainers.delete("job-a")
    trainers.wait_for_deleted("job-a", timeout_s=5, poll_interval_s=POLL)
    with pytest.raises(TrainerJobDeletedError, match="new job id"):
        trainers.create(config())


def test_shape_path_takes_the_context_length_of_the_shape(
    trainers: TrainerJobManager, emu: EmulatorProcess
) -> None:
    endpoint = trainers.create_and_wait(
        config(training_shape_ref=SHAPE, max_context_length=1024), poll_interval_s=POLL, timeout_s=10
    )
    assert endpoint.max_context_length == 32768  # the latest validated version's limit
    [create] = emu.requests(route="trainer_create")
    assert create["query"]["trainingShape"] == SHAPE and "skipValidations" not in create["query"]


def test_server_side_refusals_carry_status_and_message(trainers: TrainerJobManager) -> None:
    with pytest.raises(FireworksAPIError) as raised:
        trainers.create(config(training_shape_ref="accounts/fireworks/trainingShapes/unknown"))
    assert raised.value.status_code == 400 and "unknown" in raised.value.message


def test_bad_input_is_refused_before_sending(trainers: TrainerJobManager, emu: EmulatorProcess) -> None:
    with pytest.raises(FireworksValidationError, match="config"):
        trainers.create({"base_model": BASE_MODEL})  # type: ignore[arg-type]
    with pytest.raises(FireworksValidationError, match="disable_inactivity_cleanup"):
        trainers.create(config(disable_inactivity_cleanup=True))
    for call in (
        lambda: trainers.get("Bad_Id"),
        lambda: trainers.wait_for_ready("job-a", poll_interval_s=0),
        lambda: trainers.list_checkpoints("job-a", page_size=500),
        lambda: trainers.promote_checkpoint("job-a", "c", "Bad Model", BASE_MODEL),
        lambda: trainers.promote_checkpoint("job-a", "c", "out", "qwen"),
        lambda: trainers.resolve_training_profile("shapes/x"),
    ):
        with pytest.raises(FireworksValidationError):
            call()
    assert emu.requests(route="trainer_create") == [] and emu.requests(route="trainer_get") == []


# --- reads and waits --------------------------------------------------------------------------


def test_get_and_try_get(trainers: TrainerJobManager) -> None:
    assert trainers.try_get("job-a") is None
    with pytest.raises(TrainerJobNotFoundError):
        trainers.get("job-a")
    trainers.create(config())
    job = trainers.get("accounts/emulator/rlorTrainerJobs/job-a")  # a full name works too
    assert job.state is TrainerJobState.PENDING and job.base_model == BASE_MODEL


def test_wait_for_an_absent_job_fails_at_once(trainers: TrainerJobManager) -> None:
    with pytest.raises(TrainerJobNotFoundError):
        trainers.wait_for_existing("job-a", poll_interval_s=POLL, timeout_s=10)


def test_placement_timeout(trainers: TrainerJobManager, emu: EmulatorProcess) -> None:
    emu.configure(trainer_placement_s=60)
    trainers.create(config())
    started = time.monotonic()
    with pytest.raises(FireworksTimeoutError, match="PENDING"):
        trainers.wait_for_ready("job-a", poll_interval_s=POLL, timeout_s=0.1, pending_timeout_s=0.5)
    assert 0.4 < time.monotonic() - started < 3


def test_readiness_budget_starts_when_the_job_leaves_pending(
    trainers: TrainerJobManager, emu: EmulatorProcess
) -> None:
    emu.configure(trainer_placement_s=0.5, trainer_boot_s=60)
    trainers.create(config())
    with pytest.raises(FireworksTimeoutError, match="left PENDING"):
        trainers.wait_for_ready("job-a", poll_interval_s=POLL, timeout_s=0.3, pending_timeout_s=10)


def test_running_but_unhealthy_keeps_waiting(trainers: TrainerJobManager, emu: EmulatorProcess) -> None:
    emu.configure(trainer_health_delay_s=0.5)
    ready(trainers)
    statuses = [r["status"] for r in emu.requests(route="trainer_health")]
    assert statuses[0] == 503 and statuses[-1] == 200


def test_a_failed_job_fails_the_wait_with_the_server_message(
    trainers: TrainerJobManager, emu: EmulatorProcess
) -> None:
    trainers.create(config())
    emu.set_trainer_state("job-a", "FAILED", "image pull failed", code="INTERNAL")
    with pytest.raises(TrainerJobFailedError, match="image pull failed"):
        trainers.wait_for_ready("job-a", poll_interval_s=POLL, timeout_s=10)


def test_a_stopped_job_fails_once_the_grace_is_over(
    trainers: TrainerJobManager, emu: EmulatorProcess
) -> None:
    trainers.create(config())
    emu.set_trainer_state("job-a", "CANCELLED")
    clock = TrainerWaitClock(time.time(), 10, 10, stopped_grace_s=0.3)
    started = time.monotonic()
    with pytest.raises(TrainerJobFailedError, match="CANCELLED"):
        trainers.wait_with("job-a", clock, POLL)
    assert time.monotonic() - started >= 0.3


def test_transient_faults_on_trainer_routes_are_retried(
    trainers: TrainerJobManager, emu: EmulatorProcess
) -> None:
    trainers.create(config())
    emu.add_fault(route="trainer_get", deployment_id="job-a", status=503, retry_after_s=0, times=2)
    emu.add_fault(route="trainer_health", kind="reset", times=1)
    endpoint = trainers.wait_for_existing("job-a", poll_interval_s=POLL, timeout_s=10)
    assert endpoint.job_id == "job-a"
    assert [r["status"] for r in emu.requests(route="trainer_get")][:3] == [503, 503, 200]


# --- resume, reconnect, delete -----------------------------------------------------------------


def test_resume_of_a_paused_job_waits_through_the_asynchronous_flip(
    trainers: TrainerJobManager, emu: EmulatorProcess
) -> None:
    ready(trainers)
    emu.set_trainer_state("job-a", "PAUSED")
    endpoint = trainers.resume_and_wait("job-a", poll_interval_s=POLL, timeout_s=10)
    assert endpoint.job_id == "job-a"
    [resume] = emu.requests(route="trainer_action")
    assert resume["path"].endswith("/job-a:resume") and resume["body"] is None


def test_resume_of_a_running_job_is_refused(trainers: TrainerJobManager) -> None:
    ready(trainers)
    with pytest.raises(FireworksAPIError) as raised:
        trainers.resume("job-a")
    assert raised.value.status_code == 400
    with pytest.raises(TrainerJobNotFoundError):
        trainers.resume("job-b")


def test_reconnect_after_a_preemption(trainers: TrainerJobManager, emu: EmulatorProcess) -> None:
    ready(trainers)
    emu.preempt_trainer("job-a")
    assert trainers.get("job-a").state is TrainerJobState.FAILED
    assert not trainers.is_healthy("job-a")
    endpoint = trainers.reconnect_and_wait("job-a", poll_interval_s=POLL, timeout_s=10)
    assert endpoint.job_id == "job-a" and trainers.is_healthy("job-a")
    assert len(emu.requests(route="trainer_action")) == 1


def test_reconnect_to_a_running_or_starting_job_sends_no_resume(
    trainers: TrainerJobManager, emu: EmulatorProcess
) -> None:
    trainers.create(config())
    _, resumed = trainers.reconnect("job-a")
    assert resumed is False
    trainers.reconnect_and_wait("job-a", poll_interval_s=POLL, timeout_s=10)
    assert emu.requests(route="trainer_action") == []


def test_reconnect_gives_up_on_a_job_stuck_stopping_and_on_a_deleted_one(
    trainers: TrainerJobManager, emu: EmulatorProcess
) -> None:
    ready(trainers)
    emu.set_trainer_state("job-a", "CANCELLING")
    with pytest.raises(TrainerJobFailedError, match="stuck in CANCELLING"):
        trainers.reconnect("job-a", max_wait_for_resumable_s=0.3)
    trainers.delete("job-a")
    trainers.wait_for_deleted("job-a", timeout_s=5, poll_interval_s=POLL)
    with pytest.raises(TrainerJobDeletedError):
        trainers.reconnect("job-a", max_wait_for_resumable_s=0.3)
    with pytest.raises(TrainerJobNotFoundError):
        trainers.reconnect("job-b", max_wait_for_resumable_s=0.2)


def test_delete_is_idempotent_and_leaves_a_tombstone(
    trainers: TrainerJobManager, emu: EmulatorProcess
) -> None:
    ready(trainers)
    assert trainers.delete("job-a") is True
    assert trainers.delete("job-a") is False  # already DELETING
    trainers.wait_for_deleted("job-a", timeout_s=5, poll_interval_s=POLL)
    assert trainers.get("job-a").state is TrainerJobState.DELETED
    assert trainers.delete("job-a") is False
    assert trainers.delete("job-b") is False  # absent
    assert len(emu.requests(route="trainer_delete")) == 1
    [delete] = emu.requests(route="trainer_delete")
    assert delete["query"] == {}  # no ignoreChecks/hard, unlike deployments


def test_a_failed_delete_raises_instead_of_being_swallowed(
    trainers: TrainerJobManager, emu: EmulatorProcess
) -> None:
    ready(trainers)
    emu.add_fault(route="trainer_delete", status=403, message="permission denied", times=1)
    with pytest.raises(FireworksAPIError, match="permission denied"):
        trainers.delete("job-a")


def test_wait_for_deleted_times_out(trainers: TrainerJobManager, emu: EmulatorProcess) -> None:
    emu.configure(delete_delay_s=30)
    ready(trainers)
    trainers.delete("job-a")
    with pytest.raises(FireworksTimeoutError, match="not deleted"):
        trainers.wait_for_deleted("job-a", timeout_s=0.3, poll_interval_s=POLL)


def test_list_jobs_pages(trainers: TrainerJobManager, emu: EmulatorProcess) -> None:
    for job_id in ("job-1", "job-2", "job-3"):
        trainers.create(config(job_id))
    assert [j.job_id for j in trainers.list_jobs(page_size=2)] == ["job-1", "job-2", "job-3"]
    assert len(emu.requests(route="trainer_list")) == 2


# --- checkpoints and promotion -----------------------------------------------------------------


def test_checkpoints_are_listed_oldest_first_across_pages_also_after_deletion(
    trainers: TrainerJobManager, emu: EmulatorProcess
) -> None:
    ready(trainers)
    saved = [emu.save_checkpoint("job-a", f"step-{i}") for i in range(3)]
    assert [s["checkpoint_type"] for s in saved] == ["base", "delta", "delta"]
    assert saved[2]["previous_identity"] == "step-1"
    trainers.delete("job-a")
    trainers.wait_for_deleted("job-a", timeout_s=5, poll_interval_s=POLL)
    rows = trainers.list_checkpoints("job-a", page_size=2)
    assert [r.checkpoint_id for r in rows] == ["step-0", "step-1", "step-2"]
    assert len(emu.requests(route="trainer_checkpoints")) == 2  # two pages
    assert [r.promotable for r in rows] == [True, False, False]
    assert trainers.latest_promotable_checkpoint("job-a").checkpoint_id == "step-0"
    with pytest.raises(TrainerJobNotFoundError):
        trainers.list_checkpoints("job-b")


def test_promotion_polls_the_operation_and_a_retry_returns_the_model(
    trainers: TrainerJobManager, emu: EmulatorProcess
) -> None:
    ready(trainers)
    emu.save_checkpoint("job-a", "step-0")
    name = "accounts/emulator/rlorTrainerJobs/job-a/checkpoints/step-0"
    model = trainers.promote_checkpoint(
        name=name, output_model_id="grpo-final", base_model=BASE_MODEL, poll_interval_s=POLL, timeout_s=10
    )
    assert model["name"] == "accounts/emulator/models/grpo-final" and model["state"] == "READY"
    assert "@type" not in model
    [promote] = emu.requests(route="trainer_promote")
    assert promote["path"] == "/v1/accounts/emulator/checkpoints/step-0:promote"
    assert promote["body"] == {
        "output_model": "accounts/emulator/models/grpo-final",
        "trainer_job_id": "accounts/emulator/rlorTrainerJobs/job-a",
        "base_model": BASE_MODEL,
        "async_promotion": True,
    }
    assert emu.requests(route="operations")
    again = trainers.promote_checkpoint("job-a", "step-0", "grpo-final", BASE_MODEL, poll_interval_s=POLL)
    assert again["name"] == model["name"]


def test_a_delta_or_missing_checkpoint_is_refused_before_sending(
    trainers: TrainerJobManager, emu: EmulatorProcess
) -> None:
    ready(trainers)
    emu.save_checkpoint("job-a", "step-0")
    emu.save_checkpoint("job-a", "step-1")
    with pytest.raises(FireworksValidationError, match="not promotable"):
        trainers.promote_checkpoint("job-a", "step-1", "grpo-final", BASE_MODEL)
    with pytest.raises(FireworksValidationError, match="not among"):
        trainers.promote_checkpoint("job-a", "step-9", "grpo-final", BASE_MODEL)
    assert emu.requests(route="trainer_promote") == []
    with pytest.raises(FireworksAPIError) as raised:  # the server refuses it too
        trainers.promote_checkpoint("job-a", "step-1", "grpo-final", BASE_MODEL, check_promotable=False)
    assert raised.value.status_code == 400


def test_promotion_falls_back_when_async_promotion_is_rejected(
    trainers: TrainerJobManager, emu: EmulatorProcess
) -> None:
    ready(trainers)
    emu.save_checkpoint("job-a", "step-0")
    emu.add_fault(route="trainer_promote", status=400, message="unknown field async_promotion", times=1)
    model = trainers.promote_checkpoint("job-a", "step-0", "grpo-final", BASE_MODEL)
    assert model["state"] == "READY"
    first, second = emu.requests(route="trainer_promote")  # the fault answers before reading the body
    assert first["status"] == 400 and "async_promotion" not in second["body"]


def test_training_shape_profiles(trainers: TrainerJobManager) -> None:
    latest = trainers.resolve_training_profile(SHAPE)
    assert latest.training_shape_version == f"{SHAPE}/versions/v2"  # v3 is not validated
    pinned = trainers.resolve_training_profile(f"{SHAPE}/versions/v1")
    assert pinned.max_supported_context_length == 16384 and pinned.deployment_shape is not None
    with pytest.raises(FireworksAPIError) as raised:
        trainers.resolve_training_profile("accounts/fireworks/trainingShapes/none")
    assert raised.value.status_code == 404


# --- the deployment link ----------------------------------------------------------------------


def test_a_linked_deployment_shares_the_trainer_bucket_and_a_dangling_link_is_refused(
    trainers: TrainerJobManager, deployments: DeploymentManager
) -> None:
    name = trainers.create(config()).job_name
    info = deployments.create_or_get(
        DeploymentConfig(deployment_id="dep-a", base_model=BASE_MODEL, hot_load_trainer_job=name)
    )
    assert info.hot_load_trainer_job == name
    assert info.hot_load_bucket_url is not None and info.hot_load_bucket_url.endswith(
        "/rlorTrainerJobs/job-a"
    )
    with pytest.raises(FireworksAPIError) as raised:
        deployments.create_or_get(
            DeploymentConfig(
                deployment_id="dep-b",
                base_model=BASE_MODEL,
                hot_load_trainer_job="accounts/emulator/rlorTrainerJobs/missing",
            )
        )
    assert raised.value.status_code == 400 and "not found" in raised.value.message


def test_reattach_patches_only_what_differs_and_waits(
    trainers: TrainerJobManager, deployments: DeploymentManager, emu: EmulatorProcess
) -> None:
    first = trainers.create(config("job-a")).job_name
    second = trainers.create(config("job-b")).job_name
    deployments.create_or_get(
        DeploymentConfig(deployment_id="dep-a", base_model=BASE_MODEL, hot_load_trainer_job=first)
    )
    same = deployments.reattach_trainer(
        "dep-a", base_model=BASE_MODEL, trainer_job_name=first, timeout_s=10, poll_interval_s=POLL
    )
    assert same.hot_load_trainer_job == first and emu.requests(route="update") == []
    moved = deployments.reattach_trainer(
        same,
        base_model=BASE_MODEL,
        trainer_job_name=second,
        timeout_s=10,
        poll_interval_s=POLL,
        hot_load_transition_type="sync",
    )
    assert (moved.hot_load_trainer_job, moved.hot_load_transition_type) == (second, "SYNC")
    assert moved.hot_load_bucket_url is not None and moved.hot_load_bucket_url.endswith("/job-b")
    [patch] = emu.requests(route="update")
    assert patch["query"] == {"updateMask": "hot_load_trainer_job,hot_load_transition_type"}
    with pytest.raises(FireworksValidationError, match="base_model"):
        deployments.reattach_trainer(
            "dep-a", base_model="accounts/fireworks/models/other", trainer_job_name=first, timeout_s=5
        )


def test_bring_your_own_bucket_is_sent_and_echoed(deployments: DeploymentManager) -> None:
    info = deployments.create_or_get(
        DeploymentConfig(
            deployment_id="dep-byo",
            base_model=BASE_MODEL,
            hot_load_bucket_type="S3",
            hot_load_bucket_url="s3://b/rl",
        )
    )
    assert info.hot_load_bucket_url == "s3://b/rl"


# --- secrets ----------------------------------------------------------------------------------


def test_the_key_never_appears_in_errors_logs_or_repr(
    trainers: TrainerJobManager, emu: EmulatorProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    emu.add_fault(route="trainer_create", status=400, message=f"bad request from key {TEST_API_KEY}", times=1)
    with pytest.raises(FireworksAPIError) as raised:
        trainers.create(config())
    assert TEST_API_KEY not in str(raised.value)
    with (
        TrainerJobManager("fw-wrong-key-123456", base_url=emu.url, retry_policy=FAST_RETRY) as wrong,
        pytest.raises(FireworksAPIError) as unauthorized,
    ):
        wrong.get("job-a")
    assert unauthorized.value.status_code == 401 and "fw-wrong-key-123456" not in str(unauthorized.value)
    ready(trainers)

    assert TEST_API_KEY not in repr(trainers) and TEST_API_KEY not in caplog.text
