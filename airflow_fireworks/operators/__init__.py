"""Operators: deployment lifecycle (create, update, hotload, scale to zero, delete), sampling, and
trainer jobs (create, resume, delete, promote a checkpoint, reattach a deployment)."""

from __future__ import annotations

from airflow_fireworks.operators.deployment import (
    FireworksCreateDeploymentOperator,
    FireworksDeleteDeploymentOperator,
    FireworksHotloadOperator,
    FireworksScaleToZeroOperator,
    FireworksUpdateDeploymentOperator,
)
from airflow_fireworks.operators.sampling import FireworksSampleOperator
from airflow_fireworks.operators.trainer import (
    FireworksCreateTrainerJobOperator,
    FireworksDeleteTrainerJobOperator,
    FireworksPromoteCheckpointOperator,
    FireworksReattachTrainerOperator,
    FireworksResumeTrainerJobOperator,
)

__all__ = [
    "FireworksCreateDeploymentOperator",
    "FireworksCreateTrainerJobOperator",
    "FireworksDeleteDeploymentOperator",
    "FireworksDeleteTrainerJobOperator",
    "FireworksHotloadOperator",
    "FireworksPromoteCheckpointOperator",
    "FireworksReattachTrainerOperator",
    "FireworksResumeTrainerJobOperator",
    "FireworksSampleOperator",
    "FireworksScaleToZeroOperator",
    "FireworksUpdateDeploymentOperator",
]
