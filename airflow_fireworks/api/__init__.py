"""Fireworks client: typed records, errors, the retry policy, sync and async calls (no Airflow)."""

from __future__ import annotations

from airflow_fireworks.api.aio import AsyncFireworksClient
from airflow_fireworks.api.deployments import DeploymentManager
from airflow_fireworks.api.errors import (
    DeploymentFailedError,
    DeploymentNotFoundError,
    FireworksAPIError,
    FireworksConnectionError,
    FireworksError,
    FireworksTimeoutError,
    FireworksValidationError,
    HotloadFailedError,
)
from airflow_fireworks.api.models import (
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

__all__ = [
    "RETRYABLE_STATUS",
    "AsyncFireworksClient",
    "DeploymentConfig",
    "DeploymentFailedError",
    "DeploymentInfo",
    "DeploymentManager",
    "DeploymentNotFoundError",
    "DeploymentState",
    "FireworksAPIError",
    "FireworksConnectionError",
    "FireworksError",
    "FireworksTimeoutError",
    "FireworksValidationError",
    "HotloadFailedError",
    "HotloadProgress",
    "HotloadStatus",
    "ReplicaHotloadStatus",
    "RetryPolicy",
    "RetryableHTTPStatus",
    "deployment_name",
    "validate_base_model",
    "validate_deployment_id",
    "validate_deployment_shape",
    "validate_trainer_job",
    "validate_update_mask",
]
