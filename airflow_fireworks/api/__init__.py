"""Fireworks client: typed records, errors, the retry policy, sync and async calls (no Airflow)."""

from __future__ import annotations

from airflow_fireworks.api.errors import (
    DeploymentFailedError,
    DeploymentNotFoundError,
    FireworksAPIError,
    FireworksError,
    FireworksTimeoutError,
    FireworksValidationError,
    HotloadFailedError,
)
from airflow_fireworks.api.retry import RETRYABLE_STATUS, RetryableHTTPStatus, RetryPolicy

__all__ = [
    "RETRYABLE_STATUS",
    "DeploymentFailedError",
    "DeploymentNotFoundError",
    "FireworksAPIError",
    "FireworksError",
    "FireworksTimeoutError",
    "FireworksValidationError",
    "HotloadFailedError",
    "RetryPolicy",
    "RetryableHTTPStatus",
]
