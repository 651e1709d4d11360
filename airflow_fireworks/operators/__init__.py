"""Operators: deployment lifecycle (create, update, hotload, scale to zero, delete) and sampling."""

from __future__ import annotations

from airflow_fireworks.operators.deployment import (
    FireworksCreateDeploymentOperator,
    FireworksDeleteDeploymentOperator,
    FireworksHotloadOperator,
    FireworksScaleToZeroOperator,
    FireworksUpdateDeploymentOperator,
)
from airflow_fireworks.operators.sampling import FireworksSampleOperator

__all__ = [
    "FireworksCreateDeploymentOperator",
    "FireworksDeleteDeploymentOperator",
    "FireworksHotloadOperator",
    "FireworksSampleOperator",
    "FireworksScaleToZeroOperator",
    "FireworksUpdateDeploymentOperator",
]
