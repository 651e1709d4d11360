"""The trigger that waits, in the triggerer, for a trainer job to be ready (through capacity
placement, boot and the health probe) or deleted.

Events are dictionaries ``{"status": "success" | "error" | "timeout", "message", "job_id", "target",
"job", "ready_deadline", ...}``: ``job`` is the last ``TrainerJobInfo.to_dict()`` seen (None when the
job does not exist); a successful readiness wait adds ``endpoint`` (``TrainerServiceEndpoint``
as a dict); an error adds ``reason`` (``gone``, ``deleted``, ``failed`` or ``stopped``). Events never
carry the API key: only the connection id travels, and the key is fetched inside the triggerer.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from airflow_fireworks.api import (
    AsyncTrainerJobs,
    TrainerServiceEndpoint,
    TrainerTarget,
    TrainerWaitClock,
    check_trainer_job,
    validate_trainer_job_id,
)
from airflow_fireworks.api.trainer_waits import (
    DEFAULT_PENDING_TIMEOUT_S,
    DEFAULT_READY_TIMEOUT_S,
    STOPPED_GRACE_S,
)
from airflow_fireworks.api.transport import normalise_url
from airflow_fireworks.hooks.fireworks import FireworksHook
from airflow_fireworks.triggers.base import FireworksPollingTrigger, Outcome, parse_target

if TYPE_CHECKING:
    from airflow_fireworks.api import AsyncFireworksClient, TrainerJobInfo


class FireworksTrainerJobTrigger(FireworksPollingTrigger):
    """Wait for a trainer job to be ready (RUNNING and its health endpoint answers 200) or deleted.

    A readiness wait keeps the SDK's budgets as absolute times, so they hold across deferral: the
    job may wait for capacity (PENDING) ``pending_timeout`` seconds from ``started_at``, and must be
    ready ``timeout`` seconds after it first shows another state (``ready_deadline`` once armed).
    It fails fast on FAILED, a tombstone, absence, and stopped states once ``stopped_grace`` has
    passed since ``started_at`` (a resume flips the state asynchronously).

    :param job_id: the trainer job.
    :param target: ``ready`` or ``deleted``.
    :param service_url: the job's service URL (``TrainerJobManager.service_url``); required for ``ready``.
    :param fireworks_conn_id: the ``fireworks`` connection.
    :param started_at: epoch seconds when the wait began (default now).
    :param timeout: readiness budget (``ready``) or the whole wait (``deleted``), seconds.
    :param pending_timeout: capacity-placement budget from ``started_at``, seconds.
    :param stopped_grace: seconds after ``started_at`` during which stopped states are tolerated.
    :param ready_deadline: the readiness deadline already armed by the task, epoch seconds.
    :param poll_interval: seconds between polls.
    :param delete_on_kill: when the task is killed while this trigger waits, delete the job so it
        stops holding (or waiting for) GPUs.
    """

    def __init__(
        self,
        job_id: str,
        *,
        target: str = TrainerTarget.READY,
        service_url: str | None = None,
        fireworks_conn_id: str = FireworksHook.default_conn_name,
        started_at: float | None = None,
        timeout: float = DEFAULT_READY_TIMEOUT_S,
        pending_timeout: float = DEFAULT_PENDING_TIMEOUT_S,
        stopped_grace: float = STOPPED_GRACE_S,
        ready_deadline: float | None = None,
        poll_interval: float = 5.0,
        delete_on_kill: bool = False,
    ) -> None:
        self.job_id = validate_trainer_job_id(job_id)
        self.target = parse_target(TrainerTarget, target)
        self.service_url = normalise_url(service_url, "service_url") if service_url is not None else None
        if self.target is TrainerTarget.READY and self.service_url is None:
            raise ValueError("service_url is required to wait for a trainer job to be ready")
        self.clock = TrainerWaitClock(
            time.time() if started_at is None else started_at,
            timeout,
            pending_timeout,
            stopped_grace,
            ready_deadline,
        )
        deadline = (
            self.clock.hard_deadline()
            if self.target is TrainerTarget.READY
            else self.clock.started_at + self.clock.timeout_s
        )
        super().__init__(fireworks_conn_id=fireworks_conn_id, deadline=deadline, poll_interval=poll_interval)
        self.delete_on_kill = bool(delete_on_kill)
        self._last: TrainerJobInfo | None = None

    def serialized_kwargs(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "target": self.target.value,
            "service_url": self.service_url,
            "fireworks_conn_id": self.fireworks_conn_id,
            "started_at": self.clock.started_at,
            "timeout": self.clock.timeout_s,
            "pending_timeout": self.clock.pending_timeout_s,
            "stopped_grace": self.clock.stopped_grace_s,
            "ready_deadline": self.clock.ready_deadline,
            "poll_interval": self.poll_interval,
            "delete_on_kill": self.delete_on_kill,
        }

    def describe(self) -> str:
        return f"trainer job {self.job_id!r} to be {self.target.value}"

    def base_payload(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "target": self.target.value}

    def last_seen(self) -> dict[str, Any]:
        return {
            "job": self._last.to_dict() if self._last is not None else None,
            "ready_deadline": self.clock.ready_deadline,
        }

    async def poll_once(self, client: AsyncFireworksClient) -> Outcome | None:
        jobs = AsyncTrainerJobs(client)
        info = await jobs.get(self.job_id)
        self._last = info
        ready = self.target is TrainerTarget.READY
        check = check_trainer_job(
            self.target, self.job_id, info, clock=self.clock if ready else None, now=time.time()
        )
        if check.outcome == "probe" and info is not None and self.service_url is not None:
            self.log_change(check.message)
            check = check.after_probe(
                await jobs.is_healthy(self.service_url), f"trainer job {self.job_id!r} is ready"
            )
            if check.outcome == "success":
                endpoint = TrainerServiceEndpoint(
                    info.name, info.job_id, self.service_url, info.max_context_length
                )
                return "success", check.message, {**self.last_seen(), "endpoint": endpoint.to_dict()}
        return self.conclude(check)

    async def on_kill(self) -> None:
        """Delete the job when ``delete_on_kill`` is set (the task was killed by a user)."""
        if self.delete_on_kill:
            await self.delete_on_kill_with(
                f"trainer job {self.job_id}", lambda client: AsyncTrainerJobs(client).delete(self.job_id)
            )
