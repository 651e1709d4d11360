"""What the Fireworks operators and sensors share: parse-time checks, trigger events, error
mapping (which failures no retry can fix) and the "is a replica serving?" step before work."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.sdk import conf
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from airflow_fireworks.api import (
    DeploymentDriftError,
    DeploymentNotFoundError,
    DeploymentScaledToZeroError,
    DeploymentTarget,
    FireworksAPIError,
    FireworksError,
    FireworksValidationError,
    SnapshotChainError,
    TrainerJobDeletedError,
    TrainerJobNotFoundError,
    check_deployment,
)

if TYPE_CHECKING:
    from airflow_fireworks.hooks.fireworks import FireworksHook

#: Grace the framework adds to a trigger's own deadline before it fails the task by itself.
DEFERRAL_GRACE_S = 60.0
EVENT_STATUSES = ("success", "error", "timeout")


def is_static(value: Any) -> bool:
    """True when ``value`` is known at parse time (no Jinja template, no XComArg inside)."""
    if value is None or isinstance(value, bool | int | float):
        return True
    if isinstance(value, str):
        return "{{" not in value and "{%" not in value
    if isinstance(value, Mapping):
        return all(is_static(k) and is_static(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(is_static(v) for v in value)
    return False


def to_seconds(value: Any, field: str) -> float:
    """A duration > 0 in seconds from a number, numeric string or ``timedelta``."""
    if isinstance(value, timedelta):
        value = value.total_seconds()
    elif isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"{field} must be a number of seconds, got {value!r}") from None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{field} must be a number of seconds > 0, got {value!r}")
    return float(value)


def validate_event(event: Any, required: Sequence[str]) -> dict[str, Any]:
    """Check a trigger event: a dict with a known ``status``, a ``message`` string and, on
    success, the ``required`` keys. Raises AirflowException otherwise."""
    if not isinstance(event, Mapping):
        raise AirflowException(f"trigger event must be a dict with 'status' and 'message', got {event!r}")
    status = event.get("status")
    if status not in EVENT_STATUSES:
        raise AirflowException(
            f"trigger event has status {status!r}; expected one of {', '.join(EVENT_STATUSES)}"
        )
    if not isinstance(event.get("message"), str):
        raise AirflowException("trigger event has no 'message' string")
    missing = [key for key in required if key not in event]
    if status == "success" and missing:
        raise AirflowException(f"trigger success event lacks {', '.join(missing)}")
    return dict(event)


#: Errors that no retry can fix: the task fails at once instead of using its retries.
_FINAL_ERRORS = (
    FireworksValidationError,
    DeploymentDriftError,
    DeploymentNotFoundError,
    DeploymentScaledToZeroError,
    SnapshotChainError,
    TrainerJobNotFoundError,
    TrainerJobDeletedError,
)
#: Event ``reason`` values of a deployment wait that no retry can fix.
FINAL_EVENT_REASONS = ("gone", "scaled_to_zero")


def is_final(err: FireworksError) -> bool:
    """True when sending or waiting again cannot help: bad input, immutable drift, a deployment or
    trainer job that is gone (a deleted job's id cannot be reused), scaled to zero on purpose, a
    broken snapshot chain, or a 4xx the retry policy does not retry (401, 403, 404, ...)."""
    return isinstance(err, _FINAL_ERRORS) or (
        isinstance(err, FireworksAPIError) and not err.retryable and 400 <= err.status_code < 500
    )


def raise_for_airflow(err: FireworksError) -> NoReturn:
    """Raise a client error the way Airflow should treat it.

    A final error (``is_final``) becomes ``AirflowFailException`` chained to it, so the task fails
    without using its retries; any other error propagates as itself, with its type and fields
    (``status_code``, ``deployment_id``, ...) for failure callbacks, and Airflow retries it.
    """
    if is_final(err):
        raise AirflowFailException(str(err)) from err
    raise err


@contextmanager
def failing_on_bad_input() -> Iterator[None]:
    """Turn a ``ValueError`` from checking rendered input into ``AirflowFailException``: the
    message names the field, and no retry would render a different value."""
    try:
        yield
    except ValueError as err:
        raise AirflowFailException(str(err)) from err


def default_deferrable() -> bool:
    """``[operators] default_deferrable`` (False when unset)."""
    return conf.getboolean("operators", "default_deferrable", fallback=False)


def serving_now(hook: FireworksHook, deployment_id: str, log: logging.Logger | Any) -> bool:
    """True when a replica of the deployment serves now; False when it is at zero replicas and
    was just sent the inference request that wakes it (wait for ``DeploymentTarget.SERVING``).

    Raises ``AirflowFailException``, naming the state and the fix, when it is gone, failed or
    scaled to zero on purpose (``maxReplicaCount`` 0): waiting would not help.
    """
    try:
        info = hook.get_deployment(deployment_id)
        check = check_deployment(DeploymentTarget.SERVING, deployment_id, info)
        if check.outcome == "error":
            raise check.error(deployment_id, info)
        if check.outcome == "success":
            return True
        log.info("%s", check.message)
        if check.outcome == "probe" and hook.probe(deployment_id):
            log.info("Deployment %s answers inference", deployment_id)
            return True
    except FireworksError as err:
        raise_for_airflow(err)
    return False
