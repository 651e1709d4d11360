"""What one look at a trainer job means for a wait: the single rule ``TrainerJobManager``'s loops,
the trainer trigger, the sensor and the operators share (the SDK's ``wait_for_ready`` table).

``check_trainer_job`` never sends anything. Its ``probe`` outcome asks the caller for the health
probe on the service URL: a RUNNING job is ready only when ``/api/v1/healthz`` answers 200.
Budgets live in ``TrainerWaitClock`` (absolute epoch times, so they survive deferral): the
placement (PENDING) budget counts from the start of the wait, the readiness budget from the first
observation that is not PENDING, and stopped states are tolerated for a short grace after the
start (a resume flips the state asynchronously).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from airflow_fireworks.api.errors import (
    FireworksError,
    FireworksTimeoutError,
    TrainerJobDeletedError,
    TrainerJobFailedError,
    TrainerJobNotFoundError,
)
from airflow_fireworks.api.trainer_models import TrainerJobInfo, TrainerJobState
from airflow_fireworks.api.validation import check_seconds

DEFAULT_POLL_INTERVAL_S = 5.0
DEFAULT_READY_TIMEOUT_S = 900.0
DEFAULT_PENDING_TIMEOUT_S = 172800.0
STOPPED_GRACE_S = 30.0


class TrainerTarget(StrEnum):
    """What a trainer wait is waiting for."""

    READY = "ready"
    """RUNNING and the service's health probe answers 200."""
    DELETED = "deleted"
    """The job is gone (404) or a DELETED/ARCHIVED tombstone."""


@dataclass(frozen=True)
class TrainerJobCheck:
    """One look at a trainer job. ``outcome``: ``success``/``error``/``timeout`` (done),
    ``pending`` (keep waiting) or ``probe`` (ready when the health probe answers 200).
    ``reason`` says why an error is one: ``gone``, ``deleted`` (tombstone), ``failed`` or ``stopped``."""

    outcome: Literal["success", "error", "timeout", "pending", "probe"]
    message: str
    reason: Literal["gone", "deleted", "failed", "stopped"] | None = None
    spent: str | None = None
    """For ``probe``: the timeout message to use when the probe fails (the readiness budget is spent)."""

    def after_probe(self, healthy: bool, endpoint_message: str) -> TrainerJobCheck:
        """The outcome of a ``probe`` check once the health probe answered (or not)."""
        if healthy:
            return TrainerJobCheck("success", endpoint_message)
        if self.spent is not None:
            return TrainerJobCheck("timeout", self.spent + "; the health endpoint does not answer 200")
        return TrainerJobCheck("pending", self.message.replace("probing", "waiting for"))

    def error(self, job_id: str, info: TrainerJobInfo | None) -> FireworksError:
        """The exception for an ``error`` or ``timeout`` outcome."""
        if self.outcome == "timeout":
            return FireworksTimeoutError(self.message)
        if self.reason == "gone" or info is None:
            return TrainerJobNotFoundError(job_id, self.message)
        kind = TrainerJobDeletedError if self.reason == "deleted" else TrainerJobFailedError
        return kind(
            job_id, info.state.value, info.status_message, info.status_code, _HINTS[self.reason or ""]
        )


_HINTS = {
    "deleted": "a deleted job keeps its id (for checkpoint recovery); create the trainer with a new job id",
    "stopped": "it stopped before it became ready; resume it (FireworksResumeTrainerJobOperator)",
    "failed": "resume it (FireworksResumeTrainerJobOperator) or create a new one",
    "": "",
}


@dataclass
class TrainerWaitClock:
    """The budgets of one readiness wait, as absolute epoch seconds (``time.time()`` based).

    :param started_at: when the wait began (the placement budget and the stopped grace count from it).
    :param timeout_s: readiness budget, armed at the first observation that is not PENDING.
    :param pending_timeout_s: how long the job may wait for capacity (PENDING) from ``started_at``.
    :param stopped_grace_s: stopped states are tolerated this long after ``started_at`` (a resume
        flips the state asynchronously); 0 for a wait on a job nobody just resumed.
    :param ready_deadline: the armed readiness deadline (kept across deferral), or None.
    """

    started_at: float
    timeout_s: float = DEFAULT_READY_TIMEOUT_S
    pending_timeout_s: float = DEFAULT_PENDING_TIMEOUT_S
    stopped_grace_s: float = STOPPED_GRACE_S
    ready_deadline: float | None = None

    def __post_init__(self) -> None:
        for name in ("started_at", "timeout_s", "pending_timeout_s", "stopped_grace_s"):
            setattr(self, name, check_seconds(getattr(self, name), name))
        if self.ready_deadline is not None:
            self.ready_deadline = check_seconds(self.ready_deadline, "ready_deadline")

    def in_grace(self, now: float) -> bool:
        return now - self.started_at < self.stopped_grace_s

    def hard_deadline(self) -> float:
        """The latest moment this wait can still succeed (for the trigger's own deadline)."""
        pending_end = self.started_at + self.pending_timeout_s
        if self.ready_deadline is None:
            return pending_end + self.timeout_s
        return max(self.ready_deadline, pending_end)

    def next_deadline(self, state: TrainerJobState, now: float) -> float:
        """When the budget that applies to ``state`` runs out (arms the readiness deadline)."""
        if state is TrainerJobState.PENDING:
            return self.started_at + self.pending_timeout_s
        if self.ready_deadline is None:
            self.ready_deadline = now + self.timeout_s
        return self.ready_deadline

    def expired(self, job_id: str, state: TrainerJobState, now: float) -> str | None:
        """A message when the budget for ``state`` is spent, else None."""
        if now < self.next_deadline(state, now):
            return None
        if state is TrainerJobState.PENDING:
            return (
                f"trainer job {job_id!r} still PENDING (waiting for capacity) after "
                f"{self.pending_timeout_s:g}s; raise pending_timeout or use another region or reservation"
            )
        return (
            f"trainer job {job_id!r} not ready {self.timeout_s:g}s after it left PENDING (now {state.short})"
        )


def check_trainer_job(
    target: TrainerTarget | str,
    job_id: str,
    info: TrainerJobInfo | None,
    *,
    clock: TrainerWaitClock | None = None,
    now: float = 0.0,
) -> TrainerJobCheck:
    """Decide what ``info`` (None: the job does not exist) means for a wait on ``target``.

    With a ``clock`` the readiness wait also applies its budgets and the stopped-state grace;
    without one, stopped states are errors at once and only the caller's own timeout applies.
    """
    target = TrainerTarget(target)
    name = repr(job_id)
    if target is TrainerTarget.DELETED:
        if info is None or info.state.is_tombstone():
            return TrainerJobCheck("success", f"trainer job {name} is deleted")
        return TrainerJobCheck("pending", f"trainer job {name} is {info.describe()}")
    if info is None:
        return TrainerJobCheck(
            "error", f"trainer job {name} not found (deleted, or never created); run the create task", "gone"
        )
    state = info.state
    seen = f"trainer job {name} is {info.describe()}"
    if state.is_tombstone():
        return TrainerJobCheck("error", f"{seen}; its id cannot be reused", "deleted")
    if state.is_stopped() and not (clock is not None and clock.in_grace(now)):
        return TrainerJobCheck("error", f"{seen}: stopped before it became ready", "stopped")
    if state is TrainerJobState.FAILED:
        return TrainerJobCheck("error", seen, "failed")
    spent = clock.expired(job_id, state, now) if clock is not None else None
    if state is TrainerJobState.RUNNING:
        return TrainerJobCheck("probe", f"{seen}; probing its health endpoint", spent=spent)
    if spent is not None:
        return TrainerJobCheck("timeout", spent)
    return TrainerJobCheck("pending", seen)
