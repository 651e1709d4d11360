"""Every exception the Fireworks client raises, one family rooted at ``FireworksError``.

Sampling failures extend it in ``airflow_fireworks.sampling.errors``; which of these no retry can
fix is decided for Airflow in ``airflow_fireworks.operators._common.is_final``.

Every message is safe to log: none of them ever contains the API key (it travels only in
headers, and server messages are scrubbed of it before they are stored).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_fireworks.api.drift import DeploymentDrift

__all__ = [
    "DeploymentDriftError",
    "DeploymentFailedError",
    "DeploymentNotFoundError",
    "DeploymentScaledToZeroError",
    "FireworksAPIError",
    "FireworksConnectionError",
    "FireworksError",
    "FireworksTimeoutError",
    "FireworksValidationError",
    "HotloadFailedError",
    "SnapshotChainError",
    "TrainerJobDeletedError",
    "TrainerJobFailedError",
    "TrainerJobNotFoundError",
]

_STATUS_HINTS: dict[int, str] = {
    400: "the request was rejected as invalid; check region, deployment shape, base model, "
    "accelerator, extra args and the hot-load scope (trainer job or deployment-owned bucket)",
    401: "the API key is not valid for this account or is not training-scoped "
    "(inference-only keys get 401); check the connection's password",
    403: "the API key has no permission for this resource or operation",
    404: "not found in the account the API key resolves to; check the id and the account",
    408: "the server timed out waiting for the request; retry later",
    409: "the resource already exists or is in a transitional state (creating, updating, deleting)",
    425: "the deployment is not ready yet (booting or hot-loading); retry later",
    429: "rate limited; slow down or retry after the advertised delay",
    500: "server error; retry later",
    502: "bad gateway; retry later",
    503: "service unavailable; retry later",
    504: "gateway timeout; retry later",
}


class FireworksError(Exception):
    """Base class of every error raised by ``airflow_fireworks.api``."""


class FireworksValidationError(FireworksError, ValueError):
    """Bad input detected on the client, before any request is sent."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class FireworksAPIError(FireworksError):
    """A non-2xx answer from a Fireworks endpoint (after retries, when the status is retryable)."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        method: str,
        url: str,
        request_id: str | None = None,
        retryable: bool = False,
        retry_after_s: float | None = None,
    ) -> None:
        self.status_code = status_code
        self.message = message
        self.method = method
        self.url = url
        self.request_id = request_id
        self.retryable = retryable
        self.retry_after_s = retry_after_s
        super().__init__(self._render())

    @property
    def hint(self) -> str | None:
        """A short explanation of what the status usually means for this API."""
        return _STATUS_HINTS.get(self.status_code)

    def _render(self) -> str:
        text = f"HTTP {self.status_code} {self.method} {self.url}: {self.message or '(no message)'}"
        if self.request_id:
            text += f" (request id {self.request_id})"
        if self.hint:
            text += f" [{self.hint}]"
        return text


class FireworksConnectionError(FireworksError, ConnectionError):
    """The service could not be reached or the connection broke (after retries)."""

    def __init__(self, method: str, url: str, reason: str) -> None:
        self.method = method
        self.url = url
        self.reason = reason
        super().__init__(f"{method} {url} failed: {reason}")


class DeploymentNotFoundError(FireworksError):
    """The deployment does not exist (or disappeared while waiting for it)."""

    def __init__(self, deployment_id: str, message: str | None = None) -> None:
        self.deployment_id = deployment_id
        super().__init__(message or f"deployment {deployment_id!r} not found")


class DeploymentFailedError(FireworksError):
    """The deployment reached a state from which it will not serve (FAILED, DELETED, DELETING)."""

    def __init__(self, deployment_id: str, state: str, status_message: str | None = None) -> None:
        self.deployment_id = deployment_id
        self.state = state
        self.status_message = status_message
        text = f"deployment {deployment_id!r} is {state}"
        if status_message:
            text += f": {status_message}"
        super().__init__(text)


class HotloadFailedError(FireworksError):
    """A replica reported stage ``error`` for the snapshot identity being loaded."""

    def __init__(self, identity: str, stage: str, message: str) -> None:
        self.identity = identity
        self.stage = stage
        self.message = message
        super().__init__(message)


class FireworksTimeoutError(FireworksError, TimeoutError):
    """A client-side wait (ready, deleted, hotload) ran past its deadline."""


class SnapshotChainError(FireworksError):
    """An incremental snapshot was refused before sending: the replicas do not serve its base."""

    def __init__(self, deployment_id: str, identity: str, previous_identity: str, served: str) -> None:
        self.deployment_id = deployment_id
        self.identity = identity
        self.previous_identity = previous_identity
        self.served = served
        super().__init__(
            f"incremental snapshot {identity!r} is a delta on {previous_identity!r}, but on deployment "
            f"{deployment_id!r} {served}. Nothing was sent. The deployment was recreated, scaled from "
            "zero onto new replicas, or an earlier load failed; load a full snapshot instead (give "
            "fallback_snapshot_identity, or drop previous_snapshot_identity with a full snapshot) and "
            "have the trainer save a full snapshot next"
        )


class DeploymentScaledToZeroError(FireworksError):
    """The deployment's ``maxReplicaCount`` is 0: nothing will serve until its replica counts change."""

    def __init__(self, deployment_id: str, message: str) -> None:
        self.deployment_id = deployment_id
        super().__init__(message)


class DeploymentDriftError(FireworksError):
    """The deployment exists with values that cannot be changed in place."""

    def __init__(self, drift: DeploymentDrift) -> None:
        self.drift = drift
        fields = "; ".join(f"{c.field} is {c.current!r}, requested {c.requested!r}" for c in drift.immutable)
        super().__init__(
            f"deployment {drift.deployment_id!r} exists with settings that cannot be changed in place: "
            f"{fields}. Either pass force_recreate=True (deletes and recreates the deployment; its "
            "replicas and loaded snapshot are lost) or use a new deployment id. Nothing was changed."
        )


class TrainerJobNotFoundError(FireworksError):
    """The trainer job does not exist (never created, or removed past its retention window)."""

    def __init__(self, job_id: str, message: str | None = None) -> None:
        self.job_id = job_id
        super().__init__(message or f"trainer job {job_id!r} not found")


class TrainerJobFailedError(FireworksError):
    """The trainer job reached a state from which it will not become ready by waiting (FAILED, a
    stopped state, a tombstone), with the server's status when it gave one."""

    def __init__(
        self,
        job_id: str,
        state: str,
        status_message: str | None = None,
        status_code: str | None = None,
        hint: str = "",
    ) -> None:
        self.job_id = job_id
        self.state = state
        self.status_message = status_message
        self.status_code = status_code
        text = f"trainer job {job_id!r} is {state.removeprefix('JOB_STATE_')}"
        if status_message:
            text += f": {status_message}"
        if status_code and status_code != "OK":
            text += f" ({status_code})"
        super().__init__(text + (f"; {hint}" if hint else ""))


class TrainerJobDeletedError(TrainerJobFailedError):
    """The job is a DELETED/ARCHIVED tombstone: its id cannot be created, resumed or waited for again."""
