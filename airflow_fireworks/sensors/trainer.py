"""A sensor for trainer jobs created elsewhere (by another DAG, a notebook or the SDK): wait until
one is ready (RUNNING and healthy) or deleted (see ``sensors.base`` for poking and deferral).

A job nobody just resumed gets no grace: FAILED, stopped, deleted or absent fails at once (resume
it with ``FireworksResumeTrainerJobOperator``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import PokeReturnValue
from airflow.sdk.exceptions import AirflowException

from airflow_fireworks.api import TrainerTarget, check_trainer_job
from airflow_fireworks.api.trainer_models import job_id_from
from airflow_fireworks.links import FireworksTrainerJobLink
from airflow_fireworks.operators._common import is_static
from airflow_fireworks.sensors.base import FireworksBaseSensor
from airflow_fireworks.triggers.base import parse_target
from airflow_fireworks.triggers.trainer import FireworksTrainerJobTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context
    from airflow.triggers.base import BaseTrigger


class FireworksTrainerJobSensor(FireworksBaseSensor):
    """Wait until a trainer job is ready (default) or deleted.

    Returns, when ready, ``{"job_name", "job_id", "service_url", "base_url", "max_context_length"}``; when
    waiting for deletion, None.

    :param job_id: the job id or its full ``accounts/<a>/rlorTrainerJobs/<id>`` name (templated).
    :param target: ``ready`` or ``deleted`` (templated).
    """

    template_fields: Sequence[str] = ("job_id", "fireworks_conn_id", "target")
    operator_extra_links = (FireworksTrainerJobLink(),)

    def __init__(self, *, job_id: str, target: str = TrainerTarget.READY, **kwargs: Any) -> None:
        kwargs.setdefault("poke_interval", 5.0)
        super().__init__(**kwargs)
        self.job_id = job_id
        self.target = target
        if is_static(job_id) and is_static(target):
            self.validate_rendered()

    def _target(self) -> TrainerTarget:
        return parse_target(TrainerTarget, self.target)

    def validate_rendered(self) -> None:
        self.job_id = job_id_from(self.job_id)
        self.target = self._target()

    def look_once(self) -> PokeReturnValue:
        manager = self.hook.get_trainer_manager()
        job_id = str(self.job_id)
        info = manager.try_get(job_id)
        check = check_trainer_job(self._target(), job_id, info)
        if check.outcome == "probe" and info is not None:
            check = check.after_probe(manager.is_healthy(job_id), f"trainer job {job_id!r} is ready")
            if check.outcome == "success":
                return PokeReturnValue(is_done=True, xcom_value=manager.endpoint(info).to_dict())
        self.log.info("%s", check.message)
        if check.outcome in ("error", "timeout"):
            raise AirflowException(check.message)
        return PokeReturnValue(is_done=check.outcome == "success")

    def make_trigger(self, timeout: float) -> BaseTrigger:
        ready = self._target() is TrainerTarget.READY
        return FireworksTrainerJobTrigger(
            str(self.job_id),
            target=self._target(),
            service_url=self.hook.get_trainer_manager().service_url(str(self.job_id)) if ready else None,
            fireworks_conn_id=self.fireworks_conn_id,
            started_at=time.time(),
            timeout=timeout,
            pending_timeout=timeout,
            stopped_grace=0.0,
            poll_interval=self.poll_interval,
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any] | None:
        endpoint = self.checked_event(event, ("job",)).get("endpoint")
        if self._target() is TrainerTarget.DELETED:
            return None
        if not isinstance(endpoint, Mapping):
            raise AirflowException(f"trigger event 'endpoint' must be a dict, got {endpoint!r}")
        return dict(endpoint)
