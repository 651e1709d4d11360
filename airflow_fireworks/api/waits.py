"""What one look at a deployment means for a wait: the single rule the manager's loops, the
triggers, the sensors and the operators share.

``check_deployment`` never sends anything. Its ``probe`` outcome asks the caller to send one
small inference request: it tells whether a CREATING deployment already serves, and it is also
the request that wakes a deployment the platform scaled to zero (the documented way to bring
one back).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from airflow_fireworks.api.errors import (
    DeploymentFailedError,
    DeploymentNotFoundError,
    DeploymentScaledToZeroError,
    FireworksError,
    FireworksTimeoutError,
)
from airflow_fireworks.api.models import Availability, DeploymentInfo, DeploymentState


class DeploymentTarget(StrEnum):
    """What a deployment wait is waiting for."""

    READY = "ready"
    """READY with at least ``min_replicas`` replicas (or CREATING while the inference probe
    answers, when one replica is enough)."""
    SERVING = "serving"
    """At least one replica serves; a deployment at zero replicas is woken by a probe."""
    DELETED = "deleted"
    """The deployment is gone (404) or reports DELETED."""
    SCALED_TO_ZERO = "scaled_to_zero"
    """No replica is left (replica count 0, or the deployment is gone)."""


@dataclass(frozen=True)
class DeploymentCheck:
    """One look at a deployment against a wait target.

    ``outcome``: ``success`` or ``error`` (done), ``pending`` (keep waiting) or ``probe`` (send one
    inference request: the target is reached when it answers 200). ``reason`` says why an error
    is one, so each caller can raise the matching exception.
    """

    outcome: Literal["success", "error", "pending", "probe"]
    message: str
    reason: Literal["gone", "failed", "scaled_to_zero"] | None = None

    def error(self, deployment_id: str, info: DeploymentInfo | None) -> FireworksError:
        """The exception for an ``error`` outcome (none of them is fixed by waiting)."""
        if self.reason == "gone":
            return DeploymentNotFoundError(deployment_id, self.message)
        if self.reason == "scaled_to_zero":
            return DeploymentScaledToZeroError(deployment_id, self.message)
        state = info.state.value if info is not None else "UNKNOWN"
        status = info.status_message if info is not None else None
        return DeploymentFailedError(deployment_id, state, status)


def served(info: DeploymentInfo) -> DeploymentInfo:
    """``info`` as seen once the probe answered: READY."""
    return dataclasses.replace(info, state=DeploymentState.READY)


def check_deployment(
    target: DeploymentTarget | str,
    deployment_id: str,
    info: DeploymentInfo | None,
    *,
    min_replicas: int = 0,
) -> DeploymentCheck:
    """Decide what ``info`` (None: the deployment does not exist) means for a wait on ``target``."""
    target = DeploymentTarget(target)
    name = repr(deployment_id)
    if target in (DeploymentTarget.READY, DeploymentTarget.SERVING):
        return _check_serving(target, name, info, min_replicas)
    if info is None or info.state is DeploymentState.DELETED:
        gone = "deleted" if target is DeploymentTarget.DELETED else "gone; no replica is left"
        return DeploymentCheck("success", f"deployment {name} is {gone}")
    seen = f"deployment {name} is {info.describe()}"
    if target is DeploymentTarget.DELETED:
        return DeploymentCheck("pending", seen)
    if info.state is DeploymentState.FAILED:
        detail = f": {info.status_message}" if info.status_message else ""
        return DeploymentCheck("error", f"deployment {name} is FAILED{detail}", "failed")
    if info.state in (DeploymentState.UPDATING, DeploymentState.CREATING):
        return DeploymentCheck("pending", seen)
    replicas = info.replica_count if info.replica_count is not None else info.max_replica_count
    if not replicas:
        return DeploymentCheck("success", f"deployment {name} has no replica left")
    return DeploymentCheck("pending", seen)


def _check_serving(
    target: DeploymentTarget, name: str, info: DeploymentInfo | None, min_replicas: int
) -> DeploymentCheck:
    if info is None:
        return DeploymentCheck(
            "error",
            f"deployment {name} not found (deleted by hand or by the platform, or never created); "
            "run the create task, which creates it again",
            "gone",
        )
    seen = f"deployment {name} is {info.describe()}"
    availability = info.availability()
    if availability is Availability.FAILED:
        detail = f": {info.status_message}" if info.status_message else ""
        return DeploymentCheck("error", f"deployment {name} is {info.state.value}{detail}", "failed")
    if target is DeploymentTarget.SERVING:
        if availability is Availability.SCALED_TO_ZERO:
            return DeploymentCheck(
                "error",
                f"deployment {name} is scaled to zero on purpose (maxReplicaCount 0; {info.describe()}); "
                "nothing serves "
                "until its replica counts change: run the create task (it restores the configured "
                "min/max_replica_count) or raise them with FireworksUpdateDeploymentOperator",
                "scaled_to_zero",
            )
        if availability is Availability.SERVING:
            return DeploymentCheck("success", f"deployment {name} serves ({info.describe()})")
        if availability is Availability.AT_ZERO:
            return DeploymentCheck(
                "probe", f"deployment {name} is at zero replicas; waking it with an inference request"
            )
        if info.state is DeploymentState.CREATING and info.inference_model:
            return DeploymentCheck("probe", f"deployment {name} is CREATING; probing whether it serves")
        return DeploymentCheck("pending", seen)
    replicas_ok = info.replica_count is None or info.replica_count >= min_replicas
    if info.state is DeploymentState.READY:
        if replicas_ok:
            return DeploymentCheck("success", f"deployment {name} is READY ({info.describe()})")
        return DeploymentCheck("pending", f"{seen}; waiting for {min_replicas} replica(s)")
    if info.state is DeploymentState.CREATING and info.inference_model and min_replicas <= 1:
        return DeploymentCheck("probe", f"deployment {name} is CREATING; probing whether it serves")
    return DeploymentCheck("pending", seen)


def sleep_until_next_look(deadline: float, poll_interval_s: float, timed_out: str) -> None:
    """The pause of a blocking wait: one poll interval, never past ``deadline`` (a
    ``time.monotonic()`` value); ``FireworksTimeoutError(timed_out)`` once the deadline has passed."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise FireworksTimeoutError(timed_out)
    time.sleep(min(poll_interval_s, remaining))
