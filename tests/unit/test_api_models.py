"""DeploymentConfig validation and wire format, DeploymentInfo parsing, hotload status evaluation."""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_fireworks.api import (
    DeploymentConfig,
    DeploymentInfo,
    DeploymentState,
    FireworksError,
    FireworksValidationError,
    HotloadStatus,
    deployment_name,
    validate_deployment_id,
    validate_update_mask,
)

BASE = "accounts/fireworks/models/qwen3-8b"


def config(**overrides: Any) -> DeploymentConfig:
    return DeploymentConfig(**{"deployment_id": "grpo-run", "base_model": BASE, **overrides})


class TestDeploymentState:
    def test_unknown_strings_map_to_unknown(self) -> None:
        assert DeploymentState("SOMETHING_NEW") is DeploymentState.UNKNOWN
        assert DeploymentState("READY") is DeploymentState.READY

    @pytest.mark.parametrize("state", ["FAILED", "DELETED", "DELETING"])
    def test_failed_states(self, state: str) -> None:
        assert DeploymentState(state).is_failed()
        assert not DeploymentState(state).is_serving()

    @pytest.mark.parametrize("state", ["READY", "UPDATING"])
    def test_serving_states(self, state: str) -> None:
        assert DeploymentState(state).is_serving()
        assert not DeploymentState(state).is_failed()

    @pytest.mark.parametrize("state", ["CREATING", "STATE_UNSPECIFIED", "UNKNOWN"])
    def test_neither(self, state: str) -> None:
        assert not DeploymentState(state).is_serving()
        assert not DeploymentState(state).is_failed()


class TestValidation:
    @pytest.mark.parametrize("value", ["a", "grpo-qwen3-8b", "a" * 63, "x1-2-3"])
    def test_valid_ids(self, value: str) -> None:
        assert validate_deployment_id(value) == value

    @pytest.mark.parametrize(
        "value", ["", "1abc", "-abc", "abc-", "ABC", "a_b", "a" * 64, "a b", "a/b", None, 7]
    )
    def test_invalid_ids_name_the_field(self, value: Any) -> None:
        with pytest.raises(FireworksValidationError) as info:
            validate_deployment_id(value, field="my_id")
        assert info.value.field == "my_id"
        assert "my_id" in str(info.value)

    @pytest.mark.parametrize(
        ("overrides", "field"),
        [
            ({"deployment_id": "Bad_Id"}, "deployment_id"),
            ({"base_model": "qwen3-8b"}, "base_model"),
            ({"base_model": "accounts/fireworks/deployments/x"}, "base_model"),
            ({"deployment_shape": "accounts/f/shapes/s"}, "deployment_shape"),
            ({"deployment_shape": "accounts/f/deploymentShapes/s/versions/"}, "deployment_shape"),
            ({"hot_load_trainer_job": "accounts/f/trainerJobs/j"}, "hot_load_trainer_job"),
            ({"min_replica_count": -1}, "min_replica_count"),
            ({"min_replica_count": 3, "max_replica_count": 2}, "max_replica_count"),
            ({"max_replica_count": 1.5}, "max_replica_count"),
            ({"max_replica_count": True}, "max_replica_count"),
            ({"region": "MARS_1"}, "region"),
            ({"hot_load_bucket_type": "FTP"}, "hot_load_bucket_type"),
            ({"hot_load_transition_type": "LAZY"}, "hot_load_transition_type"),
            ({"accelerator_type": "NVIDIA_GTX_1080"}, "accelerator_type"),
            ({"accelerator_type": "ACCELERATOR_TYPE_UNSPECIFIED"}, "accelerator_type"),
            (
                {"deployment_shape": "accounts/f/deploymentShapes/s", "accelerator_type": "NVIDIA_H100_80GB"},
                "accelerator_type",
            ),
            (
                {"deployment_shape": "accounts/f/deploymentShapes/s", "accelerator_count": 2},
                "accelerator_count",
            ),
            ({"accelerator_count": 0}, "accelerator_count"),
            ({"scale_to_zero_window_s": 299}, "scale_to_zero_window_s"),
            ({"scale_up_window_s": -1}, "scale_up_window_s"),
            ({"scale_down_window_s": float("nan")}, "scale_down_window_s"),
            ({"extra_args": "--flag"}, "extra_args"),
            ({"extra_values": {"a": 1}}, "extra_values"),
            ({"annotations": ["x"]}, "annotations"),
            ({"enable_hot_load": "yes"}, "enable_hot_load"),
            ({"long_prompt": 1}, "long_prompt"),
            ({"description": 5}, "description"),
        ],
    )
    def test_config_rules_name_the_field(self, overrides: dict[str, Any], field: str) -> None:
        with pytest.raises(FireworksValidationError) as info:
            config(**overrides)
        assert info.value.field == field
        assert str(info.value).startswith(f"{field}:")
        assert isinstance(info.value, ValueError)

    def test_normalises_enums(self) -> None:
        cfg = config(
            hot_load_transition_type=" sync ", region="us_iowa_1", accelerator_type="nvidia_h100_80gb"
        )
        assert cfg.hot_load_transition_type == "SYNC"
        assert cfg.region == "US_IOWA_1"
        assert cfg.accelerator_type == "NVIDIA_H100_80GB"

    def test_versioned_shape_accepted(self) -> None:
        shape = "accounts/fireworks/deploymentShapes/qwen3-8b-128k-h200/versions/v3"
        assert config(deployment_shape=shape).deployment_shape == shape


class TestRequestBody:
    def test_defaults(self) -> None:
        body = config().to_request_body()
        assert list(body) == [
            "baseModel",
            "description",
            "minReplicaCount",
            "maxReplicaCount",
            "enableHotLoad",
            "forTraining",
            "hotLoadBucketType",
            "acceleratorType",
        ]
        assert body["description"] == "Fireworks training deployment"
        assert body["acceleratorType"] == "NVIDIA_H200_141GB"
        assert body["hotLoadBucketType"] == "FW_HOSTED"
        assert config().to_query_params() == {"deploymentId": "grpo-run"}

    def test_full_body_key_order_and_formats(self) -> None:
        cfg = config(
            description="rl",
            region="US_IOWA_1",
            hot_load_trainer_job="accounts/a/rlorTrainerJobs/j1",
            hot_load_transition_type="async",
            accelerator_type="NVIDIA_H100_80GB",
            accelerator_count=2,
            extra_args=["--a 1", "--b"],
            extra_values={"k": "v"},
            annotations={"team": "rl"},
            scale_up_window_s=30,
            scale_down_window_s=600.0,
            scale_to_zero_window_s=300,
            long_prompt=True,
            enable_addons=False,
            disable_speculative_decoding=True,
            min_replica_count=1,
            max_replica_count=4,
            for_training=True,
        )
        body = cfg.to_request_body()
        assert list(body) == [
            "baseModel",
            "description",
            "minReplicaCount",
            "maxReplicaCount",
            "enableHotLoad",
            "forTraining",
            "placement",
            "hotLoadBucketType",
            "hotLoadTrainerJob",
            "hotLoadTransitionType",
            "acceleratorType",
            "acceleratorCount",
            "extraArgs",
            "extraValues",
            "annotations",
            "autoscalingPolicy",
            "autoTune",
            "enableAddons",
        ]
        assert body["placement"] == {"region": "US_IOWA_1"}
        assert body["extraArgs"] == ["--a", "1", "--b"]
        assert body["autoscalingPolicy"] == {
            "scaleUpWindow": "30s",
            "scaleDownWindow": "600s",
            "scaleToZeroWindow": "300s",
        }
        assert body["autoTune"] == {"longPrompt": True}
        assert body["hotLoadTransitionType"] == "ASYNC"
        assert cfg.to_query_params() == {"deploymentId": "grpo-run", "disableSpeculativeDecoding": "true"}
        json.dumps(body)

    def test_shape_replaces_accelerator(self) -> None:
        body = config(deployment_shape="accounts/f/deploymentShapes/s").to_request_body()
        assert body["deploymentShape"] == "accounts/f/deploymentShapes/s"
        assert "acceleratorType" not in body

    def test_bucket_type_none_is_omitted(self) -> None:
        assert "hotLoadBucketType" not in config(hot_load_bucket_type=None).to_request_body()

    def test_fractional_window(self) -> None:
        body = config(scale_up_window_s=1.5).to_request_body()
        assert body["autoscalingPolicy"] == {"scaleUpWindow": "1.5s"}

    def test_long_fractional_window_stays_a_plain_duration(self) -> None:
        # Protobuf durations take no exponent: 1234567.5 s must not become "1.23457e+06s".
        body = config(scale_down_window_s=1234567.5, scale_up_window_s=0.25).to_request_body()
        assert body["autoscalingPolicy"] == {"scaleUpWindow": "0.25s", "scaleDownWindow": "1234567.5s"}


class TestFromDict:
    def test_coerces_rendered_strings(self) -> None:
        cfg = DeploymentConfig.from_dict(
            {
                "deployment_id": "run-1",
                "base_model": BASE,
                "min_replica_count": "1",
                "max_replica_count": "2",
                "enable_hot_load": "False",
                "scale_to_zero_window_s": "600",
                "long_prompt": "none",
            }
        )
        assert (cfg.min_replica_count, cfg.max_replica_count) == (1, 2)
        assert cfg.enable_hot_load is False
        assert cfg.scale_to_zero_window_s == 600.0
        assert cfg.long_prompt is None

    def test_unknown_key_named(self) -> None:
        with pytest.raises(FireworksValidationError) as info:
            DeploymentConfig.from_dict({"deployment_id": "a", "base_model": BASE, "replicas": 2})
        assert info.value.field == "replicas"

    def test_missing_required_named(self) -> None:
        with pytest.raises(FireworksValidationError) as info:
            DeploymentConfig.from_dict({"deployment_id": "a"})
        assert info.value.field == "base_model"

    def test_bad_string_still_rejected(self) -> None:
        with pytest.raises(FireworksValidationError) as info:
            DeploymentConfig.from_dict({"deployment_id": "a", "base_model": BASE, "max_replica_count": "two"})
        assert info.value.field == "max_replica_count"

    def test_not_a_mapping(self) -> None:
        with pytest.raises(FireworksValidationError) as info:
            DeploymentConfig.from_dict(["deployment_id"])  # type: ignore[arg-type]
        assert info.value.field == "config"


class TestUpdateMask:
    def test_list_and_string(self) -> None:
        body = {"minReplicaCount": 1, "maxReplicaCount": 2}
        assert (
            validate_update_mask(body, ["min_replica_count", "max_replica_count"])
            == "min_replica_count,max_replica_count"
        )
        assert (
            validate_update_mask(body, " min_replica_count , max_replica_count ")
            == "min_replica_count,max_replica_count"
        )

    @pytest.mark.parametrize("mask", [None, "", [], " , "])
    def test_empty_mask_refused(self, mask: Any) -> None:
        with pytest.raises(FireworksValidationError) as info:
            validate_update_mask({"minReplicaCount": 1}, mask)
        assert info.value.field == "update_mask"
        assert "required" in str(info.value)

    def test_camel_case_path_refused(self) -> None:
        with pytest.raises(FireworksValidationError, match="min_replica_count"):
            validate_update_mask({"minReplicaCount": 1}, "minReplicaCount")

    def test_body_key_outside_mask_refused(self) -> None:
        with pytest.raises(FireworksValidationError, match="hot_load_trainer_job"):
            validate_update_mask({"minReplicaCount": 1, "hotLoadTrainerJob": "x"}, "min_replica_count")

    def test_nested_path_covers_root_key(self) -> None:
        body = {"autoscalingPolicy": {"scaleUpWindow": "30s"}}
        assert (
            validate_update_mask(body, "autoscaling_policy.scale_up_window")
            == "autoscaling_policy.scale_up_window"
        )

    def test_empty_body_refused(self) -> None:
        with pytest.raises(FireworksValidationError) as info:
            validate_update_mask({}, "min_replica_count")
        assert info.value.field == "body"


class TestDeploymentInfo:
    def test_camel_case(self) -> None:
        body = {
            "name": "accounts/acme/deployments/dep-1",
            "state": "READY",
            "baseModel": BASE,
            "hotLoadBucketUrl": "gs://b/p",
            "hotLoadTrainerJob": "accounts/acme/rlorTrainerJobs/j",
            "hotLoadTransitionType": "HOT_LOAD_TRANSITION_TYPE_UNSPECIFIED",
            "deploymentShape": "accounts/f/deploymentShapes/s/versions/1",
            "replicaCount": 1,
            "minReplicaCount": 0,
            "maxReplicaCount": 2,
            "status": {"code": "OK", "message": ""},
        }
        info = DeploymentInfo.from_response(body, "acme")
        assert info.deployment_id == "dep-1"
        assert info.state is DeploymentState.READY
        assert info.inference_model == "accounts/acme/deployments/dep-1" == deployment_name("acme", "dep-1")
        assert info.hot_load_transition_type is None
        assert info.deployment_shape_version == "accounts/f/deploymentShapes/s/versions/1"
        assert (info.replica_count, info.min_replica_count, info.max_replica_count) == (1, 0, 2)
        assert info.status_message is None
        assert info.raw == body
        assert "raw" not in repr(info)
        dumped = info.to_dict()
        assert dumped["state"] == "READY" and "raw" not in dumped
        assert json.loads(json.dumps(dumped)) == dumped

    def test_snake_case_and_failure_message(self) -> None:
        info = DeploymentInfo.from_response(
            {
                "name": "accounts/a/deployments/d",
                "state": "FAILED",
                "base_model": BASE,
                "hot_load_trainer_job": "accounts/a/rlorTrainerJobs/j",
                "hot_load_transition_type": "SYNC",
                "status": {"code": "RESOURCE_EXHAUSTED", "message": "out of GPUs"},
            },
            "a",
        )
        assert info.base_model == BASE
        assert info.hot_load_trainer_job == "accounts/a/rlorTrainerJobs/j"
        assert info.hot_load_transition_type == "SYNC"
        assert info.status_message == "out of GPUs"
        assert info.state.is_failed()

    def test_missing_fields_fall_back(self) -> None:
        info = DeploymentInfo.from_response({}, "a", deployment_id="d")
        assert info.state is DeploymentState.UNKNOWN
        assert info.name == ""
        assert info.inference_model == "accounts/a/deployments/d"

    def test_eq_ignores_raw(self) -> None:
        a = DeploymentInfo.from_response({"name": "accounts/a/deployments/d", "state": "READY"}, "a")
        b = DeploymentInfo.from_response({"name": "accounts/a/deployments/d", "state": "READY", "x": 1}, "a")
        assert a == b

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"state": 3}, "state"),
            ({"replicaCount": "1"}, "replicaCount"),
            ({"maxReplicaCount": True}, "maxReplicaCount"),
            ({"baseModel": ["x"]}, "baseModel"),
            ({"status": {"message": 5}}, "status.message"),
        ],
    )
    def test_bad_types_name_the_field(self, body: dict[str, Any], field: str) -> None:
        with pytest.raises(FireworksError, match=field.replace(".", r"\.")):
            DeploymentInfo.from_response({"name": "accounts/a/deployments/d", **body}, "a")

    def test_not_an_object(self) -> None:
        with pytest.raises(FireworksError, match="JSON object"):
            DeploymentInfo.from_response([], "a")  # type: ignore[arg-type]


def replica(
    identity: str | None,
    ready: bool,
    stage: str = "ready",
    target: str | None = None,
    adapters: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "current_snapshot_identity": identity,
        "readiness": ready,
        "loading_state": {"stage": stage, "target_snapshot_identity": target},
    }
    if adapters is not None:
        item["loaded_adapters"] = adapters
    return item


class TestHotloadStatus:
    def test_missing_replicas_is_an_error(self) -> None:
        with pytest.raises(FireworksError, match="replicas"):
            HotloadStatus.from_response({"status": "ok"})
        with pytest.raises(FireworksError, match="replicas"):
            HotloadStatus.from_response({"replicas": {}})

    def test_empty_is_pending(self) -> None:
        assert HotloadStatus.from_response({"replicas": []}).evaluate("s1").outcome == "pending"

    def test_ready_needs_every_replica(self) -> None:
        status = HotloadStatus.from_response({"replicas": [replica("s1", True), replica("s0", True)]})
        assert status.evaluate("s1").outcome == "pending"
        status = HotloadStatus.from_response({"replicas": [replica("s1", True), replica("s1", True)]})
        assert status.evaluate("s1").outcome == "ready"
        assert status.current_identities == ["s1", "s1"]

    def test_not_ready_when_readiness_false(self) -> None:
        status = HotloadStatus.from_response({"replicas": [replica("s1", False, "warming")]})
        progress = status.evaluate("s1")
        assert progress.outcome == "pending"
        assert "warming" in progress.message

    def test_loaded_adapter_counts(self) -> None:
        status = HotloadStatus.from_response(
            {
                "replicas": [
                    replica("base", True, adapters=[{"identity": "lora-1", "status": "loaded"}]),
                ]
            }
        )
        assert status.evaluate("lora-1").outcome == "ready"
        status = HotloadStatus.from_response(
            {
                "replicas": [
                    replica("base", True, adapters=[{"identity": "lora-1", "status": "loading"}]),
                ]
            }
        )
        assert status.evaluate("lora-1").outcome == "pending"

    def test_error_for_expected_identity_fails(self) -> None:
        bad = replica("s0", True, "error", "s1")
        bad["loading_state"]["message"] = "previous snapshot mismatch"
        status = HotloadStatus.from_response({"replicas": [replica("s1", True), bad]})
        progress = status.evaluate("s1")
        assert progress.outcome == "failed"
        assert "previous snapshot mismatch" in progress.message
        assert "replica 1" in progress.message

    def test_stale_error_for_other_identity_ignored(self) -> None:
        status = HotloadStatus.from_response({"replicas": [replica("s0", False, "error", "s-old")]})
        assert status.evaluate("s1").outcome == "pending"

    def test_missing_fields_default(self) -> None:
        status = HotloadStatus.from_response({"replicas": [{}]})
        assert status.replicas[0].stage == "unknown"
        assert status.replicas[0].readiness is False
        assert status.to_dict()["replicas"][0]["current_snapshot_identity"] is None

    def test_bad_replica_types(self) -> None:
        with pytest.raises(FireworksError, match=r"replicas\[0\]\.readiness"):
            HotloadStatus.from_response({"replicas": [{"readiness": "yes"}]})
        with pytest.raises(FireworksError, match=r"replicas\[0\]"):
            HotloadStatus.from_response({"replicas": ["x"]})


def test_sdk_create_options_go_to_the_query_and_body() -> None:
    config = DeploymentConfig(
        deployment_id="opts",
        base_model="accounts/fireworks/models/qwen3-8b",
        skip_shape_validation=True,
        accept_shapeless_risk=True,
        disable_speculative_decoding=True,
        preemptible=True,
    )

    assert config.to_query_params() == {
        "deploymentId": "opts",
        "skipShapeValidation": "true",
        "acceptShapelessRisk": "true",
        "disableSpeculativeDecoding": "true",
    }
    assert list(config.to_request_body())[-1] == "preemptible"
    plain = DeploymentConfig(deployment_id="opts", base_model="accounts/fireworks/models/qwen3-8b")
    assert plain.to_query_params() == {"deploymentId": "opts"}
    assert "preemptible" not in plain.to_request_body()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        (
            {"deployment_shape": "accounts/f/deploymentShapes/s", "accept_shapeless_risk": True},
            "accept_shapeless_risk",
        ),
        (
            {
                "deployment_shape": "accounts/f/deploymentShapes/s",
                "expected_deployment_shape": "accounts/f/x",
            },
            "expected_deployment_shape",
        ),
        ({"expected_deployment_shape": "accounts/f/deploymentShapes/s"}, "expected_deployment_shape"),
        ({"preemptible": "yes"}, "preemptible"),
    ],
)
def test_sdk_create_option_guards(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(FireworksValidationError) as info:
        DeploymentConfig(deployment_id="opts", base_model="accounts/fireworks/models/qwen3-8b", **kwargs)
    assert info.value.field == field


def test_expected_deployment_shape_matching_the_shape_is_accepted() -> None:
    shape = "accounts/f/deploymentShapes/s"
    config = DeploymentConfig(
        deployment_id="opts",
        base_model="accounts/fireworks/models/qwen3-8b",
        deployment_shape=shape,
        expected_deployment_shape=f" {shape} ",
    )
    assert "expectedDeploymentShape" not in config.to_request_body()
