"""Trainer-job records without a server: config validation and wire form, response parsing, the
wait rule (every state of the SDK's table), the budgets, and the deployment-link helpers."""

from __future__ import annotations

from datetime import timedelta

import pytest

from airflow_fireworks.api import (
    DeploymentConfig,
    DeploymentInfo,
    DeploymentState,
    FireworksTimeoutError,
    FireworksValidationError,
    TrainerCheckpoint,
    TrainerJobConfig,
    TrainerJobDeletedError,
    TrainerJobFailedError,
    TrainerJobInfo,
    TrainerJobNotFoundError,
    TrainerJobState,
    TrainerTarget,
    TrainerWaitClock,
    TrainingShapeProfile,
    check_trainer_job,
)
from airflow_fireworks.api.trainer_models import (
    generated_job_id,
    is_attached,
    job_id_from,
    parse_checkpoint_name,
    trainer_link_patch,
)

BASE_MODEL = "accounts/fireworks/models/qwen3-8b"
SHAPE = "accounts/fireworks/trainingShapes/qwen3-8b-policy"


def config(**overrides: object) -> TrainerJobConfig:
    return TrainerJobConfig(**{"base_model": BASE_MODEL, **overrides})  # type: ignore[arg-type]


def info(state: str, **extra: object) -> TrainerJobInfo:
    return TrainerJobInfo.from_response({"name": "accounts/a/rlorTrainerJobs/j", "state": state, **extra})


# --- TrainerJobConfig -------------------------------------------------------------------------


def test_defaults_are_the_sdks() -> None:
    c = config()
    assert (c.lora_rank, c.learning_rate, c.use_reservation, c.auto_select_training_shape) == (
        0,
        1e-5,
        True,
        False,
    )
    assert c.requested_job_id is None and c.launch_path == "manual"


def test_manual_path_wire_form_in_the_sdk_order() -> None:
    c = config(
        requested_job_id="job-1",
        extra_args=["--a 1", "--b"],
        inactivity_timeout=timedelta(seconds=90.5),
        region="us_ohio_1",
        accelerator_type="NVIDIA_H100_80GB",
        accelerator_count=8,
        projection_head_dim=4,
        max_context_length=4096,
        display_name="grpo",
        extra_values={"k": "v"},
        forward_only=True,
        preemptible=True,
        trainer_replica_count=2,
        reservation_target="res-a",
    )
    assert c.to_query_params() == [("skipValidations", "true"), ("rlorTrainerJobId", "job-1")]
    body = c.to_request_body()
    assert list(body) == [
        "serviceMode",
        "keepAlive",
        "dataset",
        "trainingConfig",
        "trainerReplicaCount",
        "useReservation",
        "reservationTarget",
        "nodeCount",
        "displayName",
        "extraValues",
        "forwardOnly",
        "preemptible",
        "inactivityTimeout",
    ]
    assert body["trainingConfig"] == {
        "baseModel": BASE_MODEL,
        "loraRank": 0,
        "learningRate": 1e-5,
        "projectionHeadDim": 4,
        "maxContextLength": 4096,
        "acceleratorType": "NVIDIA_H100_80GB",
        "acceleratorCount": 8,
        "region": "US_OHIO_1",
        "extraArgs": ["--a", "1", "--b"],
    }
    assert (body["serviceMode"], body["keepAlive"], body["dataset"]) == (True, False, "")
    assert body["useReservation"] is False  # a reservation target pins the capacity
    assert body["nodeCount"] == 1 and body["inactivityTimeout"] == "90.5s"


def test_shape_path_leaves_context_and_hardware_to_the_shape() -> None:
    c = config(training_shape_ref=SHAPE, max_context_length=4096, requested_job_id="j", skip_validations=True)
    assert c.to_query_params() == [
        ("trainingShape", SHAPE),
        ("skipValidations", "true"),
        ("rlorTrainerJobId", "j"),
    ]
    body = c.to_request_body()
    assert "maxContextLength" not in body["trainingConfig"] and "nodeCount" not in body


def test_auto_shape_path_sends_context_but_no_skip_validations() -> None:
    c = config(auto_select_training_shape=True, max_context_length=8192, requested_job_id="j")
    assert c.to_query_params() == [("rlorTrainerJobId", "j")]
    assert c.to_request_body()["trainingConfig"]["maxContextLength"] == 8192


def test_deprecated_deployment_scope_goes_first_in_the_query() -> None:
    c = config(hot_load_deployment_id="dep-a", requested_job_id="j")
    assert c.to_query_params()[0] == ("deploymentId", "dep-a")
    assert c.to_request_body()["hotLoadDeploymentId"] == "dep-a"


def test_job_id_is_generated_once_and_kept() -> None:
    c = config()
    first = c.ensure_job_id()
    assert first.startswith("training-api-service-") and len(first) == len("training-api-service-") + 8
    assert c.to_query_params()[-1] == ("rlorTrainerJobId", first)
    assert c.ensure_job_id() == first
    assert generated_job_id("run/a") == generated_job_id("run/a") != generated_job_id("run/b")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"base_model": "qwen3-8b"}, "base_model"),
        ({"lora_rank": -1}, "lora_rank"),
        ({"lora_rank": True}, "lora_rank"),
        ({"projection_head_dim": -2}, "projection_head_dim"),
        ({"max_context_length": 0}, "max_context_length"),
        ({"learning_rate": 0}, "learning_rate"),
        ({"learning_rate": float("nan")}, "learning_rate"),
        ({"gradient_accumulation_steps": 4}, "gradient_accumulation_steps"),
        ({"node_count": -1}, "node_count"),
        ({"trainer_replica_count": 0}, "trainer_replica_count"),
        ({"display_name": "x" * 64}, "display_name"),
        ({"hot_load_deployment_id": "Bad_Id"}, "hot_load_deployment_id"),
        ({"region": "MARS_1"}, "region"),
        ({"extra_args": "--flag"}, "extra_args"),
        ({"extra_values": {"k": 1}}, "extra_values"),
        ({"accelerator_type": "TPU"}, "accelerator_type"),
        ({"training_shape_ref": "shapes/x"}, "training_shape_ref"),
        ({"training_shape_ref": SHAPE, "auto_select_training_shape": True}, "training_shape_ref"),
        ({"training_shape_ref": SHAPE, "node_count": 2}, "training_shape_ref"),
        ({"auto_select_training_shape": True, "accelerator_count": 8}, "training_shape_ref"),
        ({"auto_select_training_shape": True, "skip_validations": True}, "skip_validations"),
        ({"inactivity_timeout": "4h"}, "inactivity_timeout"),
        ({"inactivity_timeout": timedelta(hours=4)}, "inactivity_timeout"),
        ({"inactivity_timeout": "-5s"}, "inactivity_timeout"),
        ({"forward_only": "yes"}, "forward_only"),
        ({"requested_job_id": "Job_1"}, "requested_job_id"),
        ({"purpose": 3}, "purpose"),
    ],
)
def test_each_bad_field_is_named(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(FireworksValidationError) as raised:
        config(**overrides)
    assert raised.value.field == field
    assert field in str(raised.value)


def test_all_problems_are_reported_together() -> None:
    with pytest.raises(FireworksValidationError) as raised:
        config(lora_rank=-1, display_name="x" * 70, region="MARS_1")
    text = str(raised.value)
    assert raised.value.field == "lora_rank"
    assert "display_name" in text and "region" in text


def test_shape_path_tolerates_zero_hardware_fields() -> None:
    assert config(training_shape_ref=SHAPE, node_count=0, accelerator_count=0).launch_path == "shape"


@pytest.mark.parametrize(
    ("value", "wire"),
    [(timedelta(minutes=30), "1800s"), ("90.5s", "90.5s"), (600, "600s"), (timedelta(0), "0s")],
)
def test_inactivity_timeout_forms(value: object, wire: str) -> None:
    assert config(inactivity_timeout=value).to_request_body()["inactivityTimeout"] == wire


def test_from_dict_converts_rendered_strings_and_refuses_unknown_keys() -> None:
    c = TrainerJobConfig.from_dict(
        {"base_model": BASE_MODEL, "lora_rank": "16", "forward_only": "true", "learning_rate": "3e-5"}
    )
    assert (c.lora_rank, c.forward_only, c.learning_rate) == (16, True, 3e-5)
    with pytest.raises(FireworksValidationError, match="unknown trainer job config key"):
        TrainerJobConfig.from_dict({"base_model": BASE_MODEL, "epochs": 3})
    with pytest.raises(FireworksValidationError, match="base_model"):
        TrainerJobConfig.from_dict({"lora_rank": 0})


# --- records ----------------------------------------------------------------------------------


def test_job_parsing_follows_the_sdk() -> None:
    parsed = TrainerJobInfo.from_response(
        {
            "name": "accounts/a/rlorTrainerJobs/job-7",
            "state": "JOB_STATE_FAILED",
            "status": {"code": 14, "message": "preempted"},
            "trainingConfig": {"baseModel": BASE_MODEL, "maxContextLength": 4096, "loraRank": 8},
        }
    )
    assert (parsed.job_id, parsed.state, parsed.status_code) == (
        "job-7",
        TrainerJobState.FAILED,
        "UNAVAILABLE",
    )
    assert (parsed.status_message, parsed.max_context_length, parsed.lora_rank) == ("preempted", 4096, 8)
    assert parsed.to_dict()["state"] == "JOB_STATE_FAILED" and "raw" not in parsed.to_dict()
    assert info("", statusMessage="first", status={"message": "second"}).status_message == "first"
    assert info("", status="plain text").status_message == "plain text"
    assert info("").state is TrainerJobState.UNSPECIFIED
    assert info("JOB_STATE_SOMETHING_NEW").state is TrainerJobState.UNKNOWN
    assert info("JOB_STATE_RUNNING", trainingConfig={"maxContextLength": 0}).max_context_length is None


def test_a_job_without_name_is_refused() -> None:
    with pytest.raises(Exception, match="no 'name'"):
        TrainerJobInfo.from_response({"state": "JOB_STATE_PENDING"})


def test_checkpoint_rows_and_names() -> None:
    row = TrainerCheckpoint.from_response(
        {"name": "accounts/a/rlorTrainerJobs/j/checkpoints/step-3", "checkpointType": "X", "promotable": True}
    )
    assert (row.checkpoint_id, row.job_id, row.promotable) == ("step-3", "j", True)
    assert parse_checkpoint_name(row.name) == ("a", "j", "step-3")
    with pytest.raises(FireworksValidationError, match="name"):
        parse_checkpoint_name("accounts/a/checkpoints/step-3")
    assert job_id_from("accounts/a/rlorTrainerJobs/job-9") == "job-9"


def test_shape_profile_fields_and_derivations() -> None:
    profile = TrainingShapeProfile.from_version(
        {
            "name": f"{SHAPE}/versions/v2",
            "snapshot": {
                "trainerImageTag": "t",
                "maxSupportedContextLength": 32768,
                "deploymentShapeVersion": "accounts/f/deploymentShapes/d/versions/v1",
                "trainerShardingScheme": {"pipelineParallelism": 2},
                "trainerMode": "LORA_TRAINER",
            },
        }
    )
    assert (profile.training_shape, profile.max_supported_context_length) == (SHAPE, 32768)
    assert (profile.node_count, profile.pipeline_parallelism, profile.supports_lora) == (1, 2, True)
    assert profile.deployment_shape == "accounts/f/deploymentShapes/d/versions/v1"


# --- the wait rule ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "outcome", "reason"),
    [
        ("JOB_STATE_PENDING", "pending", None),
        ("JOB_STATE_CREATING", "pending", None),
        ("JOB_STATE_VALIDATING", "pending", None),
        ("", "pending", None),
        ("JOB_STATE_BRAND_NEW", "pending", None),
        ("JOB_STATE_PAUSED", "pending", None),
        ("JOB_STATE_RUNNING", "probe", None),
        ("JOB_STATE_FAILED", "error", "failed"),
        ("JOB_STATE_DELETED", "error", "deleted"),
        ("JOB_STATE_ARCHIVED", "error", "deleted"),
        ("JOB_STATE_CANCELLED", "error", "stopped"),
        ("JOB_STATE_COMPLETED", "error", "stopped"),
        ("JOB_STATE_EARLY_STOPPED", "error", "stopped"),
        ("JOB_STATE_CANCELLING", "error", "stopped"),
        ("JOB_STATE_DELETING", "error", "stopped"),
    ],
)
def test_each_state_without_grace(state: str, outcome: str, reason: str | None) -> None:
    check = check_trainer_job(TrainerTarget.READY, "j", info(state))
    assert (check.outcome, check.reason) == (outcome, reason)


def test_stopped_states_are_tolerated_during_the_grace_only() -> None:
    clock = TrainerWaitClock(1000.0, timeout_s=900, pending_timeout_s=3600)
    assert (
        check_trainer_job("ready", "j", info("JOB_STATE_CANCELLED"), clock=clock, now=1010).outcome
        == "pending"
    )
    assert (
        check_trainer_job("ready", "j", info("JOB_STATE_CANCELLED"), clock=clock, now=1031).outcome == "error"
    )
    # FAILED gets no grace (the SDK raises at once), tombstones neither.
    assert check_trainer_job("ready", "j", info("JOB_STATE_FAILED"), clock=clock, now=1001).outcome == "error"
    assert (
        check_trainer_job("ready", "j", info("JOB_STATE_DELETED"), clock=clock, now=1001).outcome == "error"
    )


def test_absent_is_an_error_for_ready_and_success_for_deleted() -> None:
    assert check_trainer_job("ready", "j", None).reason == "gone"
    assert check_trainer_job("deleted", "j", None).outcome == "success"
    assert check_trainer_job("deleted", "j", info("JOB_STATE_DELETED")).outcome == "success"
    assert check_trainer_job("deleted", "j", info("JOB_STATE_DELETING")).outcome == "pending"


def test_placement_budget_counts_from_the_start_and_readiness_from_leaving_pending() -> None:
    clock = TrainerWaitClock(0.0, timeout_s=10, pending_timeout_s=100)
    assert (
        check_trainer_job("ready", "j", info("JOB_STATE_PENDING"), clock=clock, now=99).outcome == "pending"
    )
    spent = check_trainer_job("ready", "j", info("JOB_STATE_PENDING"), clock=clock, now=100)
    assert spent.outcome == "timeout" and "PENDING" in spent.message
    clock = TrainerWaitClock(0.0, timeout_s=10, pending_timeout_s=100)
    assert (
        check_trainer_job("ready", "j", info("JOB_STATE_CREATING"), clock=clock, now=50).outcome == "pending"
    )
    assert clock.ready_deadline == 60  # armed at the first observation that is not PENDING
    # a return to PENDING does not disarm it, but is judged by the placement budget
    assert (
        check_trainer_job("ready", "j", info("JOB_STATE_PENDING"), clock=clock, now=61).outcome == "pending"
    )
    assert (
        check_trainer_job("ready", "j", info("JOB_STATE_CREATING"), clock=clock, now=61).outcome == "timeout"
    )
    assert clock.hard_deadline() == 100


def test_a_running_job_is_ready_only_when_the_probe_answers() -> None:
    clock = TrainerWaitClock(0.0, timeout_s=10, pending_timeout_s=100)
    probe = check_trainer_job("ready", "j", info("JOB_STATE_RUNNING"), clock=clock, now=1)
    assert probe.after_probe(True, "ready").outcome == "success"
    assert probe.after_probe(False, "ready").outcome == "pending"
    late = check_trainer_job("ready", "j", info("JOB_STATE_RUNNING"), clock=clock, now=20)
    assert late.outcome == "probe"  # a healthy job is still ready past the budget
    assert late.after_probe(False, "ready").outcome == "timeout"


def test_check_errors_map_to_exceptions() -> None:
    failed = info("JOB_STATE_FAILED", status={"code": "UNAVAILABLE", "message": "preempted"})
    error = check_trainer_job("ready", "j", failed).error("j", failed)
    assert isinstance(error, TrainerJobFailedError) and "preempted" in str(error) and "resume" in str(error)
    deleted = info("JOB_STATE_DELETED")
    assert isinstance(check_trainer_job("ready", "j", deleted).error("j", deleted), TrainerJobDeletedError)
    assert isinstance(check_trainer_job("ready", "j", None).error("j", None), TrainerJobNotFoundError)
    clock = TrainerWaitClock(0.0, timeout_s=1, pending_timeout_s=1)
    spent = check_trainer_job("ready", "j", info("JOB_STATE_PENDING"), clock=clock, now=5)
    assert isinstance(spent.error("j", None), FireworksTimeoutError)


def test_clock_refuses_bad_numbers() -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        TrainerWaitClock(0.0, timeout_s=float("inf"))
    with pytest.raises(ValueError, match="pending_timeout_s"):
        TrainerWaitClock(0.0, pending_timeout_s=-1)


# --- the deployment link ----------------------------------------------------------------------

TRAINER = "accounts/a/rlorTrainerJobs/t2"


def deployment(**fields: object) -> DeploymentInfo:
    return DeploymentInfo(
        deployment_id="d", name="accounts/a/deployments/d", state=DeploymentState.READY, **fields
    )  # type: ignore[arg-type]


def test_link_patch_names_only_what_differs() -> None:
    assert trainer_link_patch(deployment(hot_load_trainer_job="accounts/a/rlorTrainerJobs/t1"), TRAINER) == (
        {"hotLoadTrainerJob": TRAINER},
        "hot_load_trainer_job",
    )
    assert trainer_link_patch(deployment(hot_load_trainer_job=TRAINER), TRAINER) is None
    assert (
        trainer_link_patch(deployment(hot_load_trainer_job=TRAINER), TRAINER, "ASYNC") is None
    )  # unset = ASYNC
    assert trainer_link_patch(deployment(hot_load_trainer_job=TRAINER), TRAINER, "SYNC") == (
        {"hotLoadTransitionType": "SYNC"},
        "hot_load_transition_type",
    )
    assert is_attached(
        deployment(hot_load_trainer_job=TRAINER, hot_load_transition_type="SYNC"), TRAINER, "SYNC"
    )
    assert not is_attached(deployment(hot_load_trainer_job=TRAINER), TRAINER, "SYNC")


def test_bring_your_own_bucket_needs_its_url_and_type() -> None:
    body = DeploymentConfig(
        deployment_id="d", base_model=BASE_MODEL, hot_load_bucket_type="S3", hot_load_bucket_url="s3://b/rl"
    ).to_request_body()
    assert (body["hotLoadBucketType"], body["hotLoadBucketUrl"]) == ("S3", "s3://b/rl")
    for overrides, field in (
        ({"hot_load_bucket_type": "S3"}, "hot_load_bucket_url"),
        ({"hot_load_bucket_url": "s3://b/rl"}, "hot_load_bucket_type"),
        ({"hot_load_bucket_type": "MINIO", "hot_load_bucket_url": "s3://b/rl/"}, "hot_load_bucket_url"),
        (
            {
                "hot_load_bucket_type": "S3",
                "hot_load_bucket_url": "s3://b/rl",
                "hot_load_trainer_job": TRAINER,
            },
            "hot_load_bucket_url",
        ),
    ):
        with pytest.raises(FireworksValidationError) as raised:
            DeploymentConfig(deployment_id="d", base_model=BASE_MODEL, **overrides)  # type: ignore[arg-type]
        assert raised.value.field == field
