"""Sensors: the wait halves of the deployment operators, on their own (see ``sensors.base`` for
poking and deferral)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import PokeReturnValue
from airflow.sdk.exceptions import AirflowException

from airflow_fireworks.api import validate_base_model, validate_deployment_id
from airflow_fireworks.links import FireworksDeploymentLink
from airflow_fireworks.operators._common import is_static
from airflow_fireworks.sensors.base import FireworksBaseSensor
from airflow_fireworks.triggers.base import parse_target
from airflow_fireworks.triggers.deployment import (
    DeploymentTarget,
    FireworksDeploymentTrigger,
    FireworksHotloadTrigger,
    check_deployment,
)

if TYPE_CHECKING:
    from airflow.sdk import Context
    from airflow.triggers.base import BaseTrigger


class _FireworksSensor(FireworksBaseSensor):
    """Shared by the deployment sensors: the deployment id and its console link."""

    template_fields: Sequence[str] = ("deployment_id", "fireworks_conn_id")
    operator_extra_links = (FireworksDeploymentLink(),)

    def __init__(self, *, deployment_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.deployment_id = deployment_id
        if is_static(deployment_id):
            validate_deployment_id(deployment_id)

    def validate_rendered(self) -> None:
        self.deployment_id = validate_deployment_id(self.deployment_id)


class FireworksDeploymentSensor(_FireworksSensor):
    """Wait until a deployment is ready (default), deleted, or scaled to zero.

    Fails at once when waiting for READY and the deployment is FAILED, DELETED or absent (with the
    server's status message), or when waiting for zero replicas and it is FAILED. Returns the
    deployment dict (None once it is gone).

    :param target: ``ready``, ``deleted`` or ``scaled_to_zero``.
    """

    template_fields: Sequence[str] = ("deployment_id", "fireworks_conn_id", "target")

    def __init__(self, *, deployment_id: str, target: str = DeploymentTarget.READY, **kwargs: Any) -> None:
        super().__init__(deployment_id=deployment_id, **kwargs)
        self.target = target
        if is_static(target):
            self._target()

    def _target(self) -> DeploymentTarget:
        return parse_target(DeploymentTarget, self.target)

    def validate_rendered(self) -> None:
        super().validate_rendered()
        self.target = self._target()

    def make_trigger(self, timeout: float) -> BaseTrigger:
        return FireworksDeploymentTrigger(
            self.deployment_id,
            target=self._target(),
            fireworks_conn_id=self.fireworks_conn_id,
            deadline=time.time() + timeout,
            poll_interval=self.poll_interval,
        )

    def look_once(self) -> PokeReturnValue:
        info = self.hook.get_deployment(self.deployment_id)
        check = check_deployment(self._target(), self.deployment_id, info)
        if check.outcome == "probe" and info is not None and info.inference_model:
            if self.hook.get_conn().probe(info.inference_model):
                return PokeReturnValue(is_done=True, xcom_value={**info.to_dict(), "state": "READY"})
            return PokeReturnValue(is_done=False)
        self.log.info("%s", check.message)
        if check.outcome == "error":
            raise AirflowException(check.message)
        done = check.outcome == "success"
        return PokeReturnValue(is_done=done, xcom_value=info.to_dict() if done and info is not None else None)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any] | None:
        deployment = self.checked_event(event, ("deployment",))["deployment"]
        if deployment is not None and not isinstance(deployment, Mapping):
            raise AirflowException(f"trigger event 'deployment' must be a dict or null, got {deployment!r}")
        return dict(deployment) if deployment is not None else None


class FireworksHotloadSensor(_FireworksSensor):
    """Wait until every replica of a deployment is ready and serves ``snapshot_identity``.

    Fails at once when a replica reports stage ``error`` for that identity. Returns the hotload
    status dict.

    :param base_model: the deployment's base model (templated).
    :param snapshot_identity: the identity to wait for (templated).
    """

    template_fields: Sequence[str] = ("deployment_id", "fireworks_conn_id", "base_model", "snapshot_identity")

    def __init__(self, *, deployment_id: str, base_model: str, snapshot_identity: str, **kwargs: Any) -> None:
        kwargs.setdefault("poke_interval", 5.0)
        super().__init__(deployment_id=deployment_id, **kwargs)
        self.base_model = base_model
        self.snapshot_identity = snapshot_identity
        if is_static(base_model) and is_static(snapshot_identity):
            self.validate_rendered()

    def validate_rendered(self) -> None:
        super().validate_rendered()
        self.base_model = validate_base_model(self.base_model)
        if not isinstance(self.snapshot_identity, str) or not self.snapshot_identity.strip():
            raise ValueError(f"snapshot_identity must be a non-empty string, got {self.snapshot_identity!r}")

    def make_trigger(self, timeout: float) -> BaseTrigger:
        return FireworksHotloadTrigger(
            self.deployment_id,
            self.base_model,
            self.snapshot_identity,
            fireworks_conn_id=self.fireworks_conn_id,
            deadline=time.time() + timeout,
            poll_interval=self.poll_interval,
        )

    def look_once(self) -> PokeReturnValue:
        status = self.hook.hotload_status(self.deployment_id, self.base_model)
        progress = status.evaluate(self.snapshot_identity)
        self.log.info("%s", progress.message)
        if progress.outcome == "failed":
            raise AirflowException(progress.message)
        done = progress.outcome == "ready"
        return PokeReturnValue(is_done=done, xcom_value=status.to_dict() if done else None)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        hotload = self.checked_event(event, ("hotload",))["hotload"]
        if not isinstance(hotload, Mapping):
            raise AirflowException(f"trigger event 'hotload' must be a dict, got {hotload!r}")
        return dict(hotload)
