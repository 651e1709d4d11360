"""Fireworks client: typed records, errors, the retry policy, sync and async calls (no Airflow).

The records and errors modules name their public API in ``__all__``; it is re-exported here as is.
"""

from __future__ import annotations

from airflow_fireworks.api import errors, models, trainer_models
from airflow_fireworks.api.aio import AsyncFireworksClient
from airflow_fireworks.api.deployments import DeploymentManager, Reconciliation
from airflow_fireworks.api.drift import DeploymentDrift, FieldDrift, config_drift
from airflow_fireworks.api.errors import *  # noqa: F403
from airflow_fireworks.api.models import *  # noqa: F403
from airflow_fireworks.api.retry import RETRYABLE_STATUS, RetryableHTTPStatus, RetryPolicy
from airflow_fireworks.api.trainer_models import *  # noqa: F403
from airflow_fireworks.api.trainer_waits import (
    TrainerJobCheck,
    TrainerTarget,
    TrainerWaitClock,
    check_trainer_job,
)
from airflow_fireworks.api.trainers import AsyncTrainerJobs, TrainerJobManager
from airflow_fireworks.api.transport import ClientConfig
from airflow_fireworks.api.waits import (
    DeploymentCheck,
    DeploymentTarget,
    check_deployment,
)

__all__ = [
    "RETRYABLE_STATUS",
    "AsyncFireworksClient",
    "AsyncTrainerJobs",
    "ClientConfig",
    "DeploymentCheck",
    "DeploymentDrift",
    "DeploymentManager",
    "DeploymentTarget",
    "FieldDrift",
    "Reconciliation",
    "RetryPolicy",
    "RetryableHTTPStatus",
    "TrainerJobCheck",
    "TrainerJobManager",
    "TrainerTarget",
    "TrainerWaitClock",
    "check_deployment",
    "check_trainer_job",
    "config_drift",
]
__all__ += errors.__all__
__all__ += models.__all__
__all__ += trainer_models.__all__
