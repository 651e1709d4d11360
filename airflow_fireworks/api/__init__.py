"""Fireworks client: typed records, errors, the retry policy, sync and async calls (no Airflow)."""

from __future__ import annotations

from airflow_fireworks.api.aio import AsyncFireworksClient
from airflow_fireworks.api.deployments import DeploymentManager, Reconciliation
from airflow_fireworks.api.drift import DeploymentDrift, DeploymentDriftError, FieldDrift, config_drift
from airflow_fireworks.api.errors import (
    DeploymentFailedError,
    DeploymentNotFoundError,
    FireworksAPIError,
    FireworksConnectionError,
    FireworksError,
    FireworksTimeoutError,
    FireworksValidationError,
    HotloadFailedError,
    SnapshotChainError,
)
from airflow_fireworks.api.models import (
    Availability,
    DeploymentConfig,
    DeploymentInfo,
    DeploymentState,
    HotloadProgress,
    HotloadStatus,
    ReplicaHotloadStatus,
    deployment_name,
    validate_base_model,
    validate_deployment_id,
    validate_deployment_shape,
    validate_trainer_job,
    validate_update_mask,
)
from airflow_fireworks.api.retry import RETRYABLE_STATUS, RetryableHTTPStatus, RetryPolicy
from airflow_fireworks.api.waits import (
    DeploymentCheck,
    DeploymentScaledToZeroError,
    DeploymentTarget,
    check_deployment,
)

__all__ = [
    "RETRYABLE_STATUS",
    "AsyncFireworksClient",
    "Availability",
    "DeploymentCheck",
    "DeploymentConfig",
    "DeploymentDrift",
    "DeploymentDriftError",
    "DeploymentFailedError",
    "DeploymentInfo",
    "DeploymentManager",
    "DeploymentNotFoundError",
    "DeploymentScaledToZeroError",
    "DeploymentState",
    "DeploymentTarget",
    "FieldDrift",
    "FireworksAPIError",
    "FireworksConnectionError",
    "FireworksError",
    "FireworksTimeoutError",
    "FireworksValidationError",
    "HotloadFailedError",
    "HotloadProgress",
    "HotloadStatus",
    "Reconciliation",
    "ReplicaHotloadStatus",
    "RetryPolicy",
    "RetryableHTTPStatus",
    "SnapshotChainError",
    "check_deployment",
    "config_drift",
    "deployment_name",
    "validate_base_model",
    "validate_deployment_id",
    "validate_deployment_shape",
    "validate_trainer_job",
    "validate_update_mask",
]
