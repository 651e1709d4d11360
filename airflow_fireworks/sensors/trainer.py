"""A sensor for trainer jobs created elsewhere (by another DAG, a notebook or the SDK): wait until
one is ready (RUNNING and healthy) or deleted.

It pokes from the worker (``poke``/``reschedule`` modes) or, with ``deferrable=True``, looks once
and, unless already done, hands the wait to the triggerer with an absolute deadline taken from
``timeout``. A job nobody just resumed gets no grace: FAILED, stopped, deleted or absent fails at
once (resume it with ``FireworksResumeTrainerJobOperator``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.exceptions import AirflowException

from airflow_fireworks.api import FireworksError, TrainerTarget, check_trainer_job
from airflow_fireworks.api.trainer_models import job_id_from
from airflow_fireworks.hooks.fireworks import FireworksHook
from airflow_fireworks.links import FireworksTrainerJobLink
from airflow_fireworks.operators._common import (
    DEFERRAL_GRACE_S,
    default_deferrable,
    failing_on_bad_input,
    is_static,
    to_seconds,
    validate_event,
)
from airflow_fireworks.triggers.base import is_transient
from airflow_fireworks.triggers.trainer import FireworksTrainerJobTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context


class FireworksTrainerJobSensor(BaseSensorOperator):
    """Wait until a trainer job is ready (default) or deleted.

    Returns, when ready, ``{"job_name", "job_id", "service_url", "base_url", "max_context_length"}``; when
    waiting for deletion, None.

    :param job_id: the job id or its full ``accounts/<a>/rlorTrainerJobs/<id>`` name (templated).
    :param target: ``ready`` or ``deleted`` (templated).
    :param fireworks_conn_id: the ``fireworks`` connection.
    :param deferrable: wait in the triggerer instead of the worker.
    :param poll_interval: alias of ``poke_interval`` (seconds between checks).
    """

    template_fields: Sequence[str] = ("job_id", "fireworks_conn_id", "target")
    operator_extra_links = (FireworksTrainerJobLink(),)
    ui_color = "#6720ff"
    ui_fgcolor = "#ffffff"

    def __init__(
        self,
        *,
        job_id: str,
        target: str = TrainerTarget.READY,
        fireworks_conn_id: str = FireworksHook.default_conn_name,
        deferrable: bool = default_deferrable(),
        poll_interval: float | timedelta | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("poke_interval", 5.0)
        if poll_interval is not None:
            kwargs["poke_interval"] = to_seconds(poll_interval, "poll_interval")
        super().__init__(**kwargs)
        self.job_id = job_id
        self.target = target
        self.fireworks_conn_id = fireworks_conn_id
        self.deferrable = deferrable
        if is_static(job_id) and is_static(target):
            self.validate_rendered()

    @cached_property
    def hook(self) -> FireworksHook:
        return FireworksHook(fireworks_conn_id=self.fireworks_conn_id)

    def _target(self) -> TrainerTarget:
        try:
            return TrainerTarget(self.target)
        except ValueError:
            choices = ", ".join(t.value for t in TrainerTarget)
            raise ValueError(f"target must be one of {choices}, got {self.target!r}") from None

    def validate_rendered(self) -> None:
        self.job_id = job_id_from(self.job_id)
        self.target = self._target()

    def poke(self, context: Context) -> PokeReturnValue:
        manager = self.hook.get_trainer_manager()
        job_id = str(self.job_id)
        try:
            info = manager.try_get(job_id)
            check = check_trainer_job(self._target(), job_id, info)
            if check.outcome == "probe" and info is not None:
                check = check.after_probe(manager.is_healthy(job_id), f"trainer job {job_id!r} is ready")
                if check.outcome == "success":
                    endpoint = manager.endpoint(info)
                    return PokeReturnValue(is_done=True, xcom_value=endpoint.to_dict())
        except FireworksError as err:
            if is_transient(err):
                self.log.warning("Transient error, checking again later: %s", err)
                return PokeReturnValue(is_done=False)
            raise AirflowException(str(err)) from err
        self.log.info("%s", check.message)
        if check.outcome in ("error", "timeout"):
            raise AirflowException(check.message)
        return PokeReturnValue(is_done=check.outcome == "success")

    def execute(self, context: Context) -> Any:
        with failing_on_bad_input():
            self.validate_rendered()
        link = FireworksTrainerJobLink()
        link.persist(context, link.url_for(self))
        if not self.deferrable:
            return super().execute(context)
        first = self.poke(context)
        if first.is_done:
            return first.xcom_value
        timeout = to_seconds(self.timeout, "timeout")
        ready = self._target() is TrainerTarget.READY
        trigger = FireworksTrainerJobTrigger(
            str(self.job_id),
            target=self._target(),
            service_url=self.hook.get_trainer_manager().service_url(str(self.job_id)) if ready else None,
            fireworks_conn_id=self.fireworks_conn_id,
            started_at=time.time(),
            timeout=timeout,
            pending_timeout=timeout,
            stopped_grace=0.0,
            poll_interval=float(self.poke_interval),
        )
        self.defer(
            trigger=trigger,
            method_name="execute_complete",
            timeout=timedelta(seconds=timeout + DEFERRAL_GRACE_S),
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any] | None:
        checked = validate_event(event, ("job",))
        if checked["status"] != "success":
            raise AirflowException(f"{checked['status']}: {checked['message']}")
        self.log.info("%s", checked["message"])
        endpoint = checked.get("endpoint")
        if self._target() is TrainerTarget.DELETED:
            return None
        if not isinstance(endpoint, Mapping):
            raise AirflowException(f"trigger event 'endpoint' must be a dict, got {endpoint!r}")
        return dict(endpoint)
