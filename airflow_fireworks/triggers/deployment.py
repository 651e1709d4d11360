"""Triggers that wait, in the triggerer, for a deployment state or a finished hotload.

Events are dictionaries ``{"status": "success" | "error" | "timeout", "message": str, ...}``:

- ``FireworksDeploymentTrigger`` adds ``deployment_id``, ``target`` and ``deployment`` (the last
  ``DeploymentInfo.to_dict()`` seen, or None when the deployment does not exist);
- ``FireworksHotloadTrigger`` adds ``deployment_id``, ``identity``, ``hotload`` (the last
  ``HotloadStatus.to_dict()`` seen, or None), ``started_at`` and ``elapsed_s``.

Events never carry the API key (only the connection id travels, and the key is fetched inside the
triggerer).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from airflow_fireworks.api import (
    DeploymentCheck,
    DeploymentTarget,
    check_deployment,
    validate_base_model,
    validate_deployment_id,
)
from airflow_fireworks.api.validation import check_int
from airflow_fireworks.api.waits import served
from airflow_fireworks.hooks.fireworks import FireworksHook
from airflow_fireworks.triggers.base import FireworksPollingTrigger, Outcome, parse_target

if TYPE_CHECKING:
    from airflow_fireworks.api import AsyncFireworksClient, DeploymentInfo, HotloadStatus


class FireworksDeploymentTrigger(FireworksPollingTrigger):
    """Wait for a deployment to be ready, serving (woken from zero), deleted, or scaled to zero.

    Fails fast, with the server's status message, when waiting for READY or SERVING and the
    deployment is FAILED, DELETED, DELETING or absent (or, for SERVING, scaled to zero on
    purpose), or when waiting for zero replicas and it is FAILED. Each change of what it sees
    (state, replicas) is logged at INFO in the task log, not every poll.

    :param deployment_id: the deployment to watch.
    :param target: ``ready``, ``serving``, ``deleted`` or ``scaled_to_zero``.
    :param fireworks_conn_id: the ``fireworks`` connection.
    :param deadline: absolute deadline, epoch seconds.
    :param poll_interval: seconds between polls.
    :param delete_on_kill: when the task is killed by a user (mark failed/success, clear) while
        this trigger waits, delete the deployment so it stops holding GPUs.
    :param min_replicas: for ``ready``, the replicas that must serve.
    """

    def __init__(
        self,
        deployment_id: str,
        *,
        target: str = DeploymentTarget.READY,
        fireworks_conn_id: str = FireworksHook.default_conn_name,
        deadline: float,
        poll_interval: float = 15.0,
        delete_on_kill: bool = False,
        min_replicas: int = 0,
    ) -> None:
        super().__init__(fireworks_conn_id=fireworks_conn_id, deadline=deadline, poll_interval=poll_interval)
        self.min_replicas = check_int(min_replicas, "min_replicas", 0)
        self.deployment_id = validate_deployment_id(deployment_id)
        self.target = parse_target(DeploymentTarget, target)
        self.delete_on_kill = bool(delete_on_kill)
        self._last: DeploymentInfo | None = None

    def serialized_kwargs(self) -> dict[str, Any]:
        return {
            "deployment_id": self.deployment_id,
            "target": self.target.value,
            "fireworks_conn_id": self.fireworks_conn_id,
            "deadline": self.deadline,
            "poll_interval": self.poll_interval,
            "delete_on_kill": self.delete_on_kill,
            "min_replicas": self.min_replicas,
        }

    def describe(self) -> str:
        return f"deployment {self.deployment_id!r} to be {self.target.value.replace('_', ' ')}"

    def base_payload(self) -> dict[str, Any]:
        return {"deployment_id": self.deployment_id, "target": self.target.value}

    def last_seen(self) -> dict[str, Any]:
        return {"deployment": self._last.to_dict() if self._last is not None else None}

    async def poll_once(self, client: AsyncFireworksClient) -> Outcome | None:
        info = await client.get_deployment(self.deployment_id)
        self._last = info
        check: DeploymentCheck = check_deployment(
            self.target, self.deployment_id, info, min_replicas=self.min_replicas
        )
        if check.outcome == "probe" and info is not None and info.inference_model:
            self.log_change(check.message)
            if not await client.probe(info.inference_model):
                return None
            message = f"deployment {self.deployment_id!r} answers inference"
            return "success", message, {"deployment": served(info).to_dict()}
        return self.conclude(check)

    async def on_kill(self) -> None:
        """Delete the deployment when ``delete_on_kill`` is set (the task was killed by a user)."""
        if self.delete_on_kill:
            await self.delete_on_kill_with(
                f"deployment {self.deployment_id}",
                lambda client: client.delete_deployment(self.deployment_id),
            )


class FireworksHotloadTrigger(FireworksPollingTrigger):
    """Wait until every replica of a deployment is ready and serves a snapshot identity.

    Fails when a replica reports stage ``error`` for that identity (stale errors for other
    identities are ignored). Never sends a hotload itself, so running it twice is harmless.

    :param deployment_id: the deployment being hot-loaded.
    :param base_model: the deployment's base model (routes the hotload status request).
    :param expected_identity: the snapshot identity to wait for.
    :param fireworks_conn_id: the ``fireworks`` connection.
    :param deadline: absolute deadline, epoch seconds.
    :param poll_interval: seconds between polls.
    :param started_at: epoch seconds when the hotload was sent (for ``elapsed_s``); default now.
    """

    def __init__(
        self,
        deployment_id: str,
        base_model: str,
        expected_identity: str,
        *,
        fireworks_conn_id: str = FireworksHook.default_conn_name,
        deadline: float,
        poll_interval: float = 5.0,
        started_at: float | None = None,
    ) -> None:
        super().__init__(fireworks_conn_id=fireworks_conn_id, deadline=deadline, poll_interval=poll_interval)
        self.deployment_id = validate_deployment_id(deployment_id)
        self.base_model = validate_base_model(base_model)
        if not isinstance(expected_identity, str) or not expected_identity.strip():
            raise ValueError(f"expected_identity must be a non-empty string, got {expected_identity!r}")
        self.expected_identity = expected_identity
        self.started_at = float(started_at) if started_at is not None else time.time()
        self._last: HotloadStatus | None = None

    def serialized_kwargs(self) -> dict[str, Any]:
        return {
            "deployment_id": self.deployment_id,
            "base_model": self.base_model,
            "expected_identity": self.expected_identity,
            "fireworks_conn_id": self.fireworks_conn_id,
            "deadline": self.deadline,
            "poll_interval": self.poll_interval,
            "started_at": self.started_at,
        }

    def describe(self) -> str:
        return f"deployment {self.deployment_id!r} to serve snapshot {self.expected_identity!r}"

    def base_payload(self) -> dict[str, Any]:
        return {
            "deployment_id": self.deployment_id,
            "identity": self.expected_identity,
            "started_at": self.started_at,
            "elapsed_s": round(time.time() - self.started_at, 3),
        }

    def last_seen(self) -> dict[str, Any]:
        return {"hotload": self._last.to_dict() if self._last is not None else None}

    async def poll_once(self, client: AsyncFireworksClient) -> Outcome | None:
        status = await client.hotload_status(self.deployment_id, self.base_model)
        self._last = status
        progress = status.evaluate(self.expected_identity)
        self.log_change(progress.message)
        if progress.outcome == "pending":
            return None
        return "success" if progress.outcome == "ready" else "error", progress.message, self.last_seen()
