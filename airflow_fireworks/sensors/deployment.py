"""Sensors: the wait halves of the deployment operators, on their own.

Both poke from the worker (``poke``/``reschedule`` modes) or, with ``deferrable=True``, look once
and, unless already done, hand the wait to the triggerer with an absolute deadline taken from
``timeout``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.exceptions import AirflowException

from airflow_fireworks.api import FireworksError, validate_base_model, validate_deployment_id
from airflow_fireworks.hooks.fireworks import FireworksHook
from airflow_fireworks.links import FireworksDeploymentLink
from airflow_fireworks.operators._common import (
    DEFERRAL_GRACE_S,
    default_deferrable,
    failing_on_bad_input,
    is_static,
    to_seconds,
    validate_event,
)
from airflow_fireworks.triggers.base import is_transient
from airflow_fireworks.triggers.deployment import (
    DeploymentTarget,
    FireworksDeploymentTrigger,
    FireworksHotloadTrigger,
    check_deployment,
)

if TYPE_CHECKING:
    from airflow.sdk import Context
    from airflow.triggers.base import BaseTrigger


class _FireworksSensor(BaseSensorOperator):
    """Shared: connection, deployment id, deferral, console link, event checks.

    :param poll_interval: alias of ``poke_interval`` (seconds between checks).
    """

    template_fields: Sequence[str] = ("deployment_id", "fireworks_conn_id")
    operator_extra_links = (FireworksDeploymentLink(),)
    ui_color = "#6720ff"
    ui_fgcolor = "#ffffff"

    def __init__(
        self,
        *,
        deployment_id: str,
        fireworks_conn_id: str = FireworksHook.default_conn_name,
        deferrable: bool = default_deferrable(),
        poll_interval: float | timedelta | None = None,
        **kwargs: Any,
    ) -> None:
        if poll_interval is not None:
            kwargs["poke_interval"] = to_seconds(poll_interval, "poll_interval")
        super().__init__(**kwargs)
        self.deployment_id = deployment_id
        self.fireworks_conn_id = fireworks_conn_id
        self.deferrable = deferrable
        if is_static(deployment_id):
            validate_deployment_id(deployment_id)

    @property
    def poll_interval(self) -> float:
        return float(self.poke_interval)

    @cached_property
    def hook(self) -> FireworksHook:
        return FireworksHook(fireworks_conn_id=self.fireworks_conn_id)

    def validate_rendered(self) -> None:
        self.deployment_id = validate_deployment_id(self.deployment_id)

    def make_trigger(self, deadline: float) -> BaseTrigger:
        raise NotImplementedError

    def poke(self, context: Context) -> PokeReturnValue:
        raise NotImplementedError

    def execute(self, context: Context) -> Any:
        with failing_on_bad_input():
            self.validate_rendered()
        link = FireworksDeploymentLink()
        link.persist(context, link.url_for(self))
        if not self.deferrable:
            return super().execute(context)
        first = self.poke(context)
        if first.is_done:
            return first.xcom_value
        timeout = to_seconds(self.timeout, "timeout")
        deadline = time.time() + timeout
        self.defer(
            trigger=self.make_trigger(deadline),
            method_name="execute_complete",
            timeout=timedelta(seconds=timeout + DEFERRAL_GRACE_S),
        )

    def checked_event(self, event: Any, required: Sequence[str]) -> dict[str, Any]:
        checked = validate_event(event, required)
        if checked["status"] != "success":
            raise AirflowException(f"{checked['status']}: {checked['message']}")
        self.log.info("%s", checked["message"])
        return checked


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
        try:
            return DeploymentTarget(self.target)
        except ValueError:
            choices = ", ".join(t.value for t in DeploymentTarget)
            raise ValueError(f"target must be one of {choices}, got {self.target!r}") from None

    def validate_rendered(self) -> None:
        super().validate_rendered()
        self.target = self._target()

    def make_trigger(self, deadline: float) -> BaseTrigger:
        return FireworksDeploymentTrigger(
            self.deployment_id,
            target=self._target(),
            fireworks_conn_id=self.fireworks_conn_id,
            deadline=deadline,
            poll_interval=self.poll_interval,
        )

    def poke(self, context: Context) -> PokeReturnValue:
        try:
            info = self.hook.get_deployment(self.deployment_id)
            check = check_deployment(self._target(), self.deployment_id, info)
            if check.outcome == "probe" and info is not None and info.inference_model:
                if self.hook.get_conn().probe(info.inference_model):
                    return PokeReturnValue(is_done=True, xcom_value={**info.to_dict(), "state": "READY"})
                return PokeReturnValue(is_done=False)
        except FireworksError as err:
            if is_transient(err):
                self.log.warning("Transient error, checking again later: %s", err)
                return PokeReturnValue(is_done=False)
            raise AirflowException(str(err)) from err
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

    def make_trigger(self, deadline: float) -> BaseTrigger:
        return FireworksHotloadTrigger(
            self.deployment_id,
            self.base_model,
            self.snapshot_identity,
            fireworks_conn_id=self.fireworks_conn_id,
            deadline=deadline,
            poll_interval=self.poll_interval,
        )

    def poke(self, context: Context) -> PokeReturnValue:
        try:
            status = self.hook.hotload_status(self.deployment_id, self.base_model)
        except FireworksError as err:
            if is_transient(err):
                self.log.warning("Transient error, checking again later: %s", err)
                return PokeReturnValue(is_done=False)
            raise AirflowException(str(err)) from err
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
