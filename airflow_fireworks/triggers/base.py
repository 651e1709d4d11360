"""The polling loop shared by the Fireworks triggers.

A trigger here only *observes* (GET requests): running the same trigger twice at once, as two
triggerers briefly may, is harmless. Every wait has an absolute deadline (epoch seconds) so a
timeout survives deferral, triggerer restarts and redistribution. Transient failures (connection
errors, 408/425/429/5xx after the client's own retries) are logged and polled through until the
deadline; permanent ones (401, 403, 404 on a route that must exist, malformed answers) end the wait
with an ``error`` event carrying the server's message.

Triggers in one event loop that use equal connection parameters share one
``AsyncFireworksClient`` (one HTTP connection pool), so a triggerer holding a thousand waits keeps
a handful of sockets open rather than a thousand.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
import weakref
from abc import abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_fireworks.api import FireworksAPIError, FireworksConnectionError, FireworksError, RetryPolicy
from airflow_fireworks.hooks.fireworks import FireworksConnectionParams, FireworksHook

if TYPE_CHECKING:
    from airflow_fireworks.api import AsyncFireworksClient

EventStatus = Literal["success", "error", "timeout"]
Outcome = tuple[EventStatus, str, dict[str, Any]]
_POLL_JITTER = 0.1
_ON_KILL_TIMEOUT_S = 30.0
_Target = TypeVar("_Target", bound=StrEnum)


class Check(Protocol):
    """One look at a resource against a wait target (``DeploymentCheck``, ``TrainerJobCheck``)."""

    @property
    def outcome(self) -> str: ...

    @property
    def message(self) -> str: ...

    @property
    def reason(self) -> str | None: ...


def parse_target(targets: type[_Target], value: Any) -> _Target:
    """``value`` as one of the wait ``targets``; a ``ValueError`` listing them otherwise."""
    try:
        return targets(value)
    except ValueError:
        choices = ", ".join(t.value for t in targets)
        raise ValueError(f"target must be one of {choices}, got {value!r}") from None


@dataclass
class _SharedClient:
    client: AsyncFireworksClient
    users: int = 0


_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[Any, ...], _SharedClient]] = (
    weakref.WeakKeyDictionary()
)


@asynccontextmanager
async def shared_async_client(params: FireworksConnectionParams) -> AsyncIterator[AsyncFireworksClient]:
    """An ``AsyncFireworksClient`` shared by every user in this event loop with equal parameters.

    The client is closed when its last user leaves.
    """
    loop = asyncio.get_running_loop()
    per_loop = _clients.setdefault(loop, {})
    key = params.cache_key()
    entry = per_loop.get(key)
    if entry is None:
        entry = per_loop[key] = _SharedClient(params.async_client())
    entry.users += 1
    try:
        yield entry.client
    finally:
        entry.users -= 1
        if entry.users == 0 and per_loop.get(key) is entry:
            del per_loop[key]
            await entry.client.close()


def is_transient(error: BaseException) -> bool:
    """True for failures worth polling through: transport errors and retryable HTTP statuses."""
    if isinstance(error, FireworksAPIError):
        return error.retryable
    if isinstance(error, FireworksConnectionError):
        return True
    return RetryPolicy().is_retryable_exception(error)


def validate_wait_args(deadline: Any, poll_interval: Any) -> tuple[float, float]:
    """Check a trigger's deadline (epoch seconds) and poll interval (seconds > 0)."""
    if isinstance(deadline, bool) or not isinstance(deadline, int | float) or not math.isfinite(deadline):
        raise ValueError(f"deadline must be a finite number of epoch seconds, got {deadline!r}")
    if (
        isinstance(poll_interval, bool)
        or not isinstance(poll_interval, int | float)
        or not math.isfinite(poll_interval)
        or poll_interval <= 0
    ):
        raise ValueError(f"poll_interval must be a number of seconds > 0, got {poll_interval!r}")
    return float(deadline), float(poll_interval)


class FireworksPollingTrigger(BaseTrigger):
    """Poll Fireworks until ``poll_once`` reports an outcome or the deadline passes.

    :param fireworks_conn_id: the ``fireworks`` connection (fetched inside the triggerer).
    :param deadline: absolute deadline, epoch seconds (``time.time()`` based).
    :param poll_interval: seconds between polls (each sleep is jittered by +-10 %; the first poll
        comes at a random point of the first interval).
    """

    def __init__(self, *, fireworks_conn_id: str, deadline: float, poll_interval: float) -> None:
        super().__init__()
        self.fireworks_conn_id = fireworks_conn_id
        self.deadline, self.poll_interval = validate_wait_args(deadline, poll_interval)
        self._last_logged: str | None = None

    def log_change(self, message: str) -> None:
        """Log what a poll saw at INFO when it differs from the last poll's (the task log shows
        each state change of a long wait, not every poll)."""
        if message != self._last_logged:
            self._last_logged = message
            self.log.info("%s", message)

    @abstractmethod
    def serialized_kwargs(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this trigger in the triggerer."""

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return f"{type(self).__module__}.{type(self).__qualname__}", self.serialized_kwargs()

    @abstractmethod
    def describe(self) -> str:
        """What is being waited for, for messages."""

    @abstractmethod
    async def poll_once(self, client: AsyncFireworksClient) -> Outcome | None:
        """One observation: an outcome ``(status, message, payload)``, or None to keep waiting.

        Raise for failures; transient ones are polled through, others end the wait.
        """

    def base_payload(self) -> dict[str, Any]:
        """Fields every event of this trigger carries besides status and message."""
        return {}

    def last_seen(self) -> dict[str, Any]:
        """Payload describing the last observation, used for timeout and error events."""
        return {}

    def conclude(self, check: Check) -> Outcome | None:
        """The outcome of a look that needs no probe: done (success, timeout, or error with its
        ``reason``) or None to keep waiting (what was seen is logged when it changed)."""
        if check.outcome in ("success", "timeout"):
            status: EventStatus = "success" if check.outcome == "success" else "timeout"
            return status, check.message, self.last_seen()
        if check.outcome == "error":
            return "error", check.message, {**self.last_seen(), "reason": check.reason}
        self.log_change(check.message)
        return None

    async def delete_on_kill_with(
        self, what: str, delete: Callable[[AsyncFireworksClient], Awaitable[bool]]
    ) -> None:
        """Delete ``what`` with ``delete``, on a client of its own (a task killed by a user must not
        leave it holding GPUs)."""
        params = await FireworksHook.aget_connection_params(self.fireworks_conn_id)
        async with params.async_client() as client:
            deleted = await asyncio.wait_for(delete(client), _ON_KILL_TIMEOUT_S)
        self.log.info("Task killed: %s %s", what, "deleted" if deleted else "already gone")

    def event(self, status: EventStatus, message: str, payload: dict[str, Any] | None = None) -> TriggerEvent:
        """Build an event: ``{"status", "message", **base_payload, **payload}``."""
        body: dict[str, Any] = {"status": status, "message": message, **self.base_payload()}
        body.update(payload if payload is not None else self.last_seen())
        return TriggerEvent(body)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            params = await FireworksHook.aget_connection_params(self.fireworks_conn_id)
        except Exception as err:
            yield self.event("error", f"cannot use connection {self.fireworks_conn_id!r}: {err}")
            return
        async with shared_async_client(params) as client:
            yield await self._wait(client)

    async def _wait(self, client: AsyncFireworksClient) -> TriggerEvent:
        last_error: str | None = None
        # Spread the first poll over one interval: a triggerer (re)starting with many waits must not
        # send them all at once. The deferring task has just looked, so nothing is lost.
        first_delay = random.uniform(0.0, self.poll_interval)
        await asyncio.sleep(max(0.0, min(first_delay, self.deadline - time.time())))
        while True:
            remaining = self.deadline - time.time()
            if remaining <= 0:
                suffix = f"; last error: {last_error}" if last_error else ""
                return self.event("timeout", f"timed out waiting for {self.describe()}{suffix}")
            try:
                async with asyncio.timeout(remaining) as scope:
                    outcome = await self.poll_once(client)
            except TimeoutError:
                if scope.expired():
                    last_error = last_error or (
                        "the last status request was still being retried at the deadline "
                        "(server errors, rate limits or connection failures)"
                    )
                    continue
                last_error = "request timed out"
                self.log.warning("Polling %s timed out; polling again", self.describe())
                outcome = None
            except FireworksError as err:
                if not is_transient(err):
                    return self.event("error", f"error while waiting for {self.describe()}: {err}")
                last_error = str(err)
                self.log.warning("Transient error while waiting for %s: %s", self.describe(), err)
                outcome = None
            except Exception as err:
                if not is_transient(err):
                    return self.event(
                        "error", f"unexpected {type(err).__name__} while waiting for {self.describe()}: {err}"
                    )
                last_error = f"{type(err).__name__}: {err}"
                self.log.warning("Transient error while waiting for %s: %s", self.describe(), last_error)
                outcome = None
            if outcome is not None:
                status, message, payload = outcome
                return self.event(status, message, payload)
            sleep_s = self.poll_interval * random.uniform(1 - _POLL_JITTER, 1 + _POLL_JITTER)
            await asyncio.sleep(max(0.0, min(sleep_s, self.deadline - time.time())))
