"""config_drift and patch_request: what differs, what can be patched, and how it is encoded."""

from __future__ import annotations

import pytest

from airflow_fireworks.api import DeploymentConfig, DeploymentInfo, FireworksValidationError, config_drift
from airflow_fireworks.api.drift import parse_duration_s, patch_request

BASE = "accounts/fireworks/models/qwen3-8b"
SHAPE = "accounts/fireworks/deploymentShapes/qwen3-8b-rl"


def info(**fields) -> DeploymentInfo:
    body = {"name": "accounts/a/deployments/dep", "state": "READY", "baseModel": BASE, **fields}
    return DeploymentInfo.from_response(body, "a")


def config(**fields) -> DeploymentConfig:
    return DeploymentConfig(deployment_id="dep", base_model=BASE, **fields)


def test_identical_deployment_has_no_drift():
    current = info(minReplicaCount=1, maxReplicaCount=2, deploymentShape=f"{SHAPE}/versions/7")
    assert (
        config_drift(
            config(min_replica_count=1, max_replica_count=2, deployment_shape=SHAPE), current
        ).changes
        == ()
    )


def test_absent_replica_counts_read_as_zero_as_protobuf_json_omits_them():
    drift = config_drift(config(min_replica_count=1, max_replica_count=1), info())
    assert [(c.field, c.current, c.requested) for c in drift.changes] == [
        ("min_replica_count", 0, 1),
        ("max_replica_count", 0, 1),
    ]
    assert drift.update_mask() == "min_replica_count,max_replica_count"
    assert drift.patch_body() == {"minReplicaCount": 1, "maxReplicaCount": 1}


def test_a_shape_version_must_match_only_when_one_is_requested():
    current = info(maxReplicaCount=1, deploymentShape=f"{SHAPE}/versions/7")
    assert config_drift(config(deployment_shape=SHAPE), current).changes == ()
    drift = config_drift(config(deployment_shape=f"{SHAPE}/versions/8"), current)
    assert [(c.field, c.mutable) for c in drift.changes] == [("deployment_shape", False)]


def test_fields_the_config_leaves_unset_or_the_server_does_not_report_are_not_compared():
    current = info(maxReplicaCount=1, acceleratorType="NVIDIA_H100_80GB", description="by hand")
    assert config_drift(config(), current).changes == ()  # accelerator and description unset
    assert (
        config_drift(config(extra_args=["--x"], preemptible=True, annotations={"a": "b"}), current).changes
        == ()
    )


def test_windows_compare_as_durations_and_patch_as_protobuf_text():
    current = info(maxReplicaCount=1, autoscalingPolicy={"scaleToZeroWindow": "1h", "scaleUpWindow": "30s"})
    drift = config_drift(config(scale_to_zero_window_s=3600, scale_up_window_s=45), current)
    assert [(c.field, c.current, c.requested) for c in drift.changes] == [("scale_up_window_s", 30.0, 45.0)]
    assert drift.patch_body() == {"autoscalingPolicy": {"scaleUpWindow": "45s"}}
    assert drift.update_mask() == "autoscaling_policy.scale_up_window"


def test_annotations_are_merged_so_other_keys_survive_the_patch():
    current = info(maxReplicaCount=1, annotations={"owner": "ops", "team": "old"})
    drift = config_drift(config(annotations={"team": "rl"}), current)
    assert drift.patch_body() == {"annotations": {"owner": "ops", "team": "rl"}}


def test_immutable_and_mutable_changes_are_told_apart():
    current = info(maxReplicaCount=1, placement={"region": "US_IOWA_1"}, acceleratorType="NVIDIA_H100_80GB")
    drift = config_drift(
        config(region="EU_LONDON_1", accelerator_type="NVIDIA_A100_80GB", max_replica_count=3), current
    )
    assert {c.field for c in drift.immutable} == {"region", "accelerator_type"}
    assert {c.field for c in drift.mutable} == {"max_replica_count"}
    assert "region: 'US_IOWA_1' -> 'EU_LONDON_1'" in [c.describe() for c in drift.changes]


def test_patch_request_encodes_with_the_same_table():
    patch = patch_request("dep", {"max_replica_count": 4, "scale_to_zero_window_s": 600.0})
    assert patch.patch_body() == {"maxReplicaCount": 4, "autoscalingPolicy": {"scaleToZeroWindow": "600s"}}
    assert patch.update_mask() == "max_replica_count,autoscaling_policy.scale_to_zero_window"
    with pytest.raises(FireworksValidationError, match="base_model"):
        patch_request("dep", {"base_model": BASE})


@pytest.mark.parametrize(
    ("text", "seconds"), [("300s", 300.0), ("1.5s", 1.5), ("10m", 600.0), ("1h", 3600.0)]
)
def test_durations_parse(text, seconds):
    assert parse_duration_s(text) == seconds
    assert parse_duration_s("soon") is None


def test_a_changed_bring_your_own_bucket_is_immutable_drift_and_an_unreported_one_is_not_compared():
    byo = {"hot_load_bucket_type": "S3", "hot_load_bucket_url": "s3://policies/run-2"}
    drift = config_drift(config(**byo), info(hotLoadBucketType="S3", hotLoadBucketUrl="s3://policies/run-1"))
    assert [(c.field, c.current, c.requested, c.mutable) for c in drift.immutable] == [
        ("hot_load_bucket_url", "s3://policies/run-1", "s3://policies/run-2", False)
    ]
    assert config_drift(config(**byo), info(hotLoadBucketType="S3")).immutable == ()
    same = info(hotLoadBucketType="S3", hotLoadBucketUrl="s3://policies/run-2")
    assert config_drift(config(**byo), same).immutable == ()
