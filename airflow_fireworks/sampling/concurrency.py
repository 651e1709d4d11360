"""Concurrency controllers: how many sampling requests are in flight (fireworks-api.md section 7).

The sampler acquires one slot per HTTP attempt and releases it exactly once (also on failure or
cancellation), passing the attempt's ``ServerMetrics`` when it has them.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import threading
import time
from array import array
from collections import deque
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from airflow_fireworks.api.errors import FireworksValidationError
from airflow_fireworks.api.validation import check_int
from airflow_fireworks.sampling.metrics import ServerMetrics

log = logging.getLogger(__name__)

_PROPORTIONAL_INCREASE_CAP = 4.0
_PREFILL_QUEUE_FLOOR_S = 0.001
_DEEP_RETRY_ATTEMPT = 3
_CONGESTION_STATUS = frozenset({429, 503})

POLICIES = ("capacity", "aimd")
DEFAULT_INITIAL_WINDOW = 8
_HOSTS_KEPT = 1024

#: capacity policy: a request "queued" if its prefill-queue time exceeds this share of the target
_QUEUED_FRACTION = 0.05
#: capacity policy: the queue kept in front of the decode slots, in seconds per target second
_QUEUE_AIM = 0.25
#: capacity policy: during the start-up the window runs ahead of the proven load by the requests
#: released in this many target seconds (what it may send beyond capacity waits about as long)
_AHEAD = 2.0
#: capacity policy: span of the release-rate measurement
_RATE_SPAN_S = 1.0
#: capacity policy: starts and releases remembered (at most 1.6 MB; seconds of a busy step)
_EVENTS_KEPT = 32768


@runtime_checkable
class ConcurrencyController(Protocol):
    """What the sampler needs from a concurrency controller."""

    @property
    def window_size(self) -> int:
        """Requests allowed in flight right now."""
        ...

    @property
    def in_flight(self) -> int:
        """Requests holding a slot right now."""
        ...

    async def acquire(self) -> None:
        """Wait for a slot."""
        ...

    def release(self, metrics: ServerMetrics | None = None) -> None:
        """Free the slot taken by ``acquire``; ``metrics`` describe the finished attempt."""
        ...

    def note_retry_exhausted(self, metrics: ServerMetrics | None) -> None:
        """A logical request ran out of retries; ``metrics`` describe its last attempt."""
        ...

    def step_completed(self) -> dict[str, float]:
        """Summarise the RL step that just ended (and adjust the window)."""
        ...


class FixedConcurrencyController:
    """A fixed number of requests in flight (an ``asyncio.Semaphore``; it binds to the event loop
    it is first contended on)."""

    def __init__(self, max_concurrency: int) -> None:
        check_int(max_concurrency, "max_concurrency", 1)
        self._max_concurrency = max_concurrency
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._in_flight = 0
        self._pq_observed = (0.0, 0)

    def __repr__(self) -> str:
        return f"FixedConcurrencyController({self._max_concurrency})"

    @property
    def window_size(self) -> int:
        return self._max_concurrency

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def acquire(self) -> None:
        await self._semaphore.acquire()
        self._in_flight += 1

    @property
    def prefill_queue_observed(self) -> tuple[float, int]:
        """(sum of seconds, count) of the prefill-queue times released so far."""
        return self._pq_observed

    def release(self, metrics: ServerMetrics | None = None) -> None:
        if self._in_flight > 0:
            self._in_flight -= 1
        if metrics is not None and metrics.prefill_queue_duration is not None:
            total, count = self._pq_observed
            self._pq_observed = (total + metrics.prefill_queue_duration, count + 1)
        self._semaphore.release()

    def note_retry_exhausted(self, metrics: ServerMetrics | None) -> None:
        """Nothing to adapt: the window is fixed."""

    def step_completed(self) -> dict[str, float]:
        return {"window": float(self._max_concurrency)}


class _Waiter:
    __slots__ = ("admitted", "future", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.admitted = False


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _Events:
    """The latest starts and releases of requests, by time: how many requests were in flight and
    how many had been released so far just after each (what the capacity policy looks back on).
    At most ``size`` events are kept, in flat arrays."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._times = array("d")
        self._in_flight = array("q")
        self._released = array("q")
        self._head = 0

    def add(self, at: float, in_flight: int, released: int) -> None:
        self._times.append(at)
        self._in_flight.append(in_flight)
        self._released.append(released)
        if len(self._times) - self._head > self._size:
            self._head += 1
            if self._head >= self._size:  # drop the forgotten half at once
                for values in (self._times, self._in_flight, self._released):
                    del values[: self._head]
                self._head = 0

    def at(self, when: float) -> tuple[int, int] | None:
        """(in flight, released so far) as of ``when``; None if that is older than what is kept."""
        index = bisect.bisect_right(self._times, when, self._head) - 1
        if index < self._head:
            return None
        return self._in_flight[index], self._released[index]

    def most_in_flight(self, start: float, end: float) -> int | None:
        """The most requests in flight at any event in [start, end] (None if none is kept)."""
        low = bisect.bisect_left(self._times, start, self._head)
        high = bisect.bisect_right(self._times, end, self._head)
        return max(self._in_flight[low:high]) if high > low else None

    def oldest(self) -> tuple[float, int] | None:
        """(time, released so far) of the oldest event kept."""
        if self._head >= len(self._times):
            return None
        return self._times[self._head], self._released[self._head]


class AdaptiveConcurrencyController:
    """A window of requests in flight that follows the deployment's capacity, read from the
    server's prefill-queue time (dedicated deployments) or, when that metric is absent, from
    congestion status codes (429/503, transport errors).

    Two policies read the prefill queue. ``policy="aimd"`` is the official SDK's exact rule
    (fireworks-api.md section 7): every ``adjustment_interval`` releases, and in
    ``step_completed``, the window grows by up to ``4 x additive_increase`` in proportion to the
    headroom below ``prefill_queue_target``, or is multiplied by ``multiplicative_decrease`` above
    it. On a cold step that is too slow: with completions of a few hundred tokens releases are far
    apart and the step ends while the window still climbs (about half the best fixed window's
    goodput in the README's benchmark).

    ``policy="capacity"`` (default) differs from it there, and only there:

    - **Start-up.** A request that found a free decode slot (prefill queue at most 5 % of the
      target) proves that the deployment serves at once the requests that were in flight when it
      was sent. While the window is in use it is raised to that proven load plus the requests
      released in twice ``prefill_queue_target`` at the measured rate (at least 8 per replica).
      It thus grows in proportion to what it sends, as TCP's slow start does, while the requests
      it sends beyond capacity before the first queued one comes back wait at most about twice
      the target.
    - **Capacity (Little's law).** A request that queued tells how many requests the deployment
      serves at once: those in flight when it was sent minus those released while it waited. The
      first one sent at or above the proven load ends the start-up (below it, a queued request
      shows a momentary wait, e.g. a busy scheduler); each later one moves the estimate by
      ``ema_alpha`` of the difference, as do requests that did not queue at a load above it.
      After every release with a prefill-queue time the window is set to the estimate plus the
      requests released in a quarter of ``prefill_queue_target``: the queue stays short but not
      empty, and a deployment that loses replicas is backed off from its first queued requests
      rather than at an interval's end. While demand is below the window (a step's tail) nothing
      moves.
    - **Starting window.** ``initial_window=None`` (default) starts at 8 and, during the
      start-up, at 8 per replica that has answered (counted by the ``backend-host`` metric); an
      explicit ``initial_window``, e.g. the window the previous step ended with, is taken as is.
    - ``adjustment_interval`` only times the status-code path.

    Both policies share the rest: a congestion status shrinks the window at once (at most once per
    ``shrink_cooldown_s``; the capacity policy lowers its estimate too and ignores the queue times
    of requests sent before the shrink), a clean interval of status codes adds
    ``additive_increase``, and a shrink below the number of requests in flight becomes a debt paid
    by later releases before anyone is admitted again. ``max_window`` (256, as in the SDK) caps
    the window: raise it for deployments that serve more requests at once.

    The controller is loop-agnostic: it creates no asyncio primitive up front, and it may be
    shared by event loops in several threads (state is guarded by a lock, waiters are woken on
    their own loop). Parked callers are admitted in FIFO order as soon as a slot is free; new
    callers never overtake parked ones.
    """

    def __init__(
        self,
        initial_window: int | None = None,
        min_window: int = 1,
        max_window: int = 256,
        prefill_queue_target: float = 0.5,
        additive_increase: float = 1.0,
        multiplicative_decrease: float = 0.5,
        ema_alpha: float = 0.3,
        adjustment_interval: int = 32,
        shrink_cooldown_s: float = 1.0,
        policy: str = "capacity",
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        check_int(min_window, "min_window", 1)
        check_int(max_window, "max_window", min_window)
        if initial_window is not None:
            check_int(initial_window, "initial_window", 1)
        check_int(adjustment_interval, "adjustment_interval", 0)
        for name, value in (
            ("prefill_queue_target", prefill_queue_target),
            ("additive_increase", additive_increase),
            ("multiplicative_decrease", multiplicative_decrease),
            ("ema_alpha", ema_alpha),
            ("shrink_cooldown_s", shrink_cooldown_s),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise FireworksValidationError(name, f"must be a number, got {value!r}")
        if not prefill_queue_target > 0:
            raise FireworksValidationError("prefill_queue_target", "must be > 0 seconds")
        if not additive_increase > 0:
            raise FireworksValidationError("additive_increase", "must be > 0")
        if not 0 < multiplicative_decrease < 1:
            raise FireworksValidationError("multiplicative_decrease", "must be between 0 and 1 (exclusive)")
        if not 0 < ema_alpha <= 1:
            raise FireworksValidationError("ema_alpha", "must be in (0, 1]")
        if not shrink_cooldown_s >= 0:
            raise FireworksValidationError("shrink_cooldown_s", "must be >= 0 seconds")
        if policy not in POLICIES:
            raise FireworksValidationError("policy", f"must be one of {list(POLICIES)}, got {policy!r}")
        self.min_window = min_window
        self.max_window = max_window
        self.prefill_queue_target = float(prefill_queue_target)
        self.additive_increase = float(additive_increase)
        self.multiplicative_decrease = float(multiplicative_decrease)
        self.ema_alpha = float(ema_alpha)
        self.adjustment_interval = adjustment_interval
        self.shrink_cooldown_s = float(shrink_cooldown_s)
        self.policy = policy
        self._queued_s = self.prefill_queue_target * _QUEUED_FRACTION
        self._clock = clock
        self._lock = threading.Lock()
        # None: DEFAULT_INITIAL_WINDOW per replica once the replicas answer (capacity policy)
        self._per_replica = initial_window is None and policy == "capacity"
        start = DEFAULT_INITIAL_WINDOW if initial_window is None else initial_window
        self._window = float(min(max(start, min_window), max_window))
        self._in_flight = 0
        self._debt = 0
        self._waiters: deque[_Waiter] = deque()
        self._ema: float | None = None
        self._pq_observed = (0.0, 0)
        self._last_shrink_at: float | None = None
        self._warned_status_mode = False
        # capacity policy
        self._events = _Events(_EVENTS_KEPT)
        self._released = 0
        self._active = 0
        self._capacity: float | None = None
        self._proven = 0
        self._hosts: set[str] = set()
        # since the last interval adjustment
        self._interval_releases = 0
        self._pq_samples: list[float] = []
        self._status_responses = 0
        self._congestion_responses = 0
        # since the last step_completed
        self._step_requests = 0
        self._step_releases = 0
        self._step_window_sum = 0
        self._step_max_in_flight = 0
        self._step_cached_tokens = 0
        self._step_prompt_tokens = 0
        self._step_pq_sum = 0.0
        self._step_pq_count = 0
        self._congestion_events = 0
        self._retry_exhaustions = 0

    def __repr__(self) -> str:
        return (
            f"AdaptiveConcurrencyController(policy={self.policy!r}, window={self.window_size}, "
            f"in_flight={self._in_flight}, min={self.min_window}, max={self.max_window})"
        )

    @property
    def window_size(self) -> int:
        """Usable window: the float window truncated and clamped into [min_window, max_window]."""
        return min(max(int(self._window), self.min_window), self.max_window)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def pending_decrease(self) -> int:
        """Slots still to be given back after a shrink below the number in flight."""
        return self._debt

    @property
    def capacity_estimate(self) -> float | None:
        """Requests the deployment serves at once, as last estimated (capacity policy; None
        during the start-up and with ``policy="aimd"``)."""
        return self._capacity

    @property
    def prefill_queue_observed(self) -> tuple[float, int]:
        """(sum of seconds, count) of the prefill-queue times released so far: a timeline's
        difference of two readings is the queue time the window was steered on in between."""
        return self._pq_observed

    @property
    def prefill_queue_ema(self) -> float | None:
        """The smoothed prefill-queue time the window is steered on (None before any sample)."""
        return self._ema

    async def acquire(self) -> None:
        with self._lock:
            if not self._waiters and self._in_flight < self.window_size and self._debt == 0:
                self._admit()
                self._started()
                return
            waiter = _Waiter(asyncio.get_running_loop())
            self._waiters.append(waiter)
        try:
            await waiter.future
        except asyncio.CancelledError:
            with self._lock:
                if waiter.admitted:  # admitted just as it was cancelled: hand the slot on
                    self._in_flight -= 1
                elif waiter in self._waiters:
                    self._waiters.remove(waiter)
                self._wake()
            raise
        with self._lock:
            self._started()

    def release(self, metrics: ServerMetrics | None = None) -> None:
        with self._lock:
            if self._in_flight > 0:
                self._in_flight -= 1
            if self._debt > 0:
                self._debt -= 1
            self._released += 1
            self._active = max(0, self._active - 1)
            self._events.add(self._clock(), self._active, self._released)
            self._step_releases += 1
            self._step_window_sum += self.window_size
            if metrics is not None:
                self._observe(metrics)
            if self.adjustment_interval > 0:
                self._interval_releases += 1
                if self._interval_releases >= self.adjustment_interval:
                    self._adjust()
                    self._interval_releases = 0
            self._wake()

    def note_retry_exhausted(self, metrics: ServerMetrics | None) -> None:
        """Count a logical request that ran out of retries on congestion (status-code mode)."""
        if metrics is None or metrics.prefill_queue_duration is not None:
            return
        if _is_congestion(metrics):
            with self._lock:
                self._retry_exhaustions += 1

    def step_completed(self) -> dict[str, float]:
        """Summarise the step, run one adjustment, reset the step counters (fireworks-api.md 7.6).

        With the capacity policy the prefill-queue keys describe the whole step: ``avg_pq`` is
        its mean, ``ema_pq`` the smoothed value after its last sample, ``capacity`` the estimate
        (once known); the window only moves here on the status-code path."""
        with self._lock:
            summary: dict[str, float] = {
                "window": float(self.window_size),
                "requests": float(self._step_requests),
            }
            if self.policy == "capacity" and self._step_pq_count:
                summary["avg_pq"] = self._step_pq_sum / self._step_pq_count
                if self._ema is not None:
                    summary["ema_pq"] = self._ema
                if self._capacity is not None:
                    summary["capacity"] = self._capacity
            elif self._pq_samples:
                summary["avg_pq"] = sum(self._pq_samples) / len(self._pq_samples)
                if self._ema is not None:
                    summary["ema_pq"] = self._ema
            elif self._status_responses > 0:
                summary["status_responses"] = float(self._status_responses)
                summary["congestion_responses"] = float(self._congestion_responses)
                summary["congestion_rate"] = self._congestion_responses / self._status_responses
            if self._congestion_events > 0:
                summary["congestion_events"] = float(self._congestion_events)
            if self._retry_exhaustions > 0:
                summary["retry_exhaustions"] = float(self._retry_exhaustions)
            if self._debt > 0:
                summary["pending_decrease"] = float(self._debt)
            if self._step_releases > 0:
                summary["avg_window"] = self._step_window_sum / self._step_releases
            summary["max_in_flight"] = float(self._step_max_in_flight)
            if self._adjust():
                summary["window_after"] = float(self.window_size)
            if self._step_prompt_tokens > 0:
                summary["cache_hit_rate"] = self._step_cached_tokens / self._step_prompt_tokens
            self._interval_releases = 0
            self._step_requests = 0
            self._step_releases = 0
            self._step_window_sum = 0
            self._step_max_in_flight = self._in_flight
            self._step_cached_tokens = 0
            self._step_prompt_tokens = 0
            self._step_pq_sum = 0.0
            self._step_pq_count = 0
            self._congestion_events = 0
            self._retry_exhaustions = 0
            self._wake()
            return summary

    # -- internals; every method below runs with the lock held --

    def _admit(self) -> None:
        self._in_flight += 1
        if self._in_flight > self._step_max_in_flight:
            self._step_max_in_flight = self._in_flight

    def _started(self) -> None:
        """A caller left ``acquire`` (admitted callers leave in admission order): it is about to
        send its request as the ``_active``-th one in flight."""
        self._active += 1
        self._events.add(self._clock(), self._active, self._released)

    def _wake(self) -> None:
        """Admit parked waiters, oldest first, while a slot is free and no debt is owed."""
        if not self._waiters:
            return
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        while self._waiters and self._debt == 0 and self._in_flight < self.window_size:
            waiter = self._waiters.popleft()
            if waiter.future.cancelled():
                continue
            waiter.admitted = True
            self._admit()
            if running is waiter.loop:
                waiter.future.set_result(None)
            else:
                waiter.loop.call_soon_threadsafe(_resolve, waiter.future)

    def _observe(self, metrics: ServerMetrics) -> None:
        queue = metrics.prefill_queue_duration
        if queue is not None:
            self._pq_observed = (self._pq_observed[0] + queue, self._pq_observed[1] + 1)
            if self.policy == "capacity":
                self._step_pq_sum += queue
                self._step_pq_count += 1
                self._follow_capacity(metrics, queue)
            else:
                self._pq_samples.append(queue)
        else:
            if not self._warned_status_mode:
                self._warned_status_mode = True
                log.warning(
                    "No prefill-queue-duration in the server metrics: adapting the concurrency "
                    "window on congestion status codes instead"
                )
            status = metrics.http_status_code
            congested = _is_congestion(metrics)
            if congested:
                self._status_responses += 1
                self._congestion_responses += 1
                self._shrink_now(metrics.retry_attempt)
            elif status is not None and 200 <= status < 300:
                self._status_responses += 1
        self._step_requests += 1
        if metrics.cached_prompt_tokens is not None:
            self._step_cached_tokens += metrics.cached_prompt_tokens
        if metrics.prompt_tokens is not None:
            self._step_prompt_tokens += metrics.prompt_tokens

    def _follow_capacity(self, metrics: ServerMetrics, queue: float) -> None:
        """Capacity policy: learn from one release with a prefill-queue time, then set the window."""
        now = self._clock()
        self._ema = queue if self._ema is None else self.ema_alpha * queue + (1 - self.ema_alpha) * self._ema
        self._note_host(metrics.backend_host)
        latency = metrics.client_latency
        if latency is None:
            latency = metrics.server_processing_time
        sent_at = now - latency if latency is not None else now
        if self._last_shrink_at is not None and sent_at < self._last_shrink_at:
            return  # sent before a congestion status shrank the window: it would undo the shrink
        at_send = self._events.at(sent_at) if latency is not None else None
        # requests in flight when this one was sent, itself included
        load = at_send[0] if at_send is not None else self._active + 1
        rate = self._release_rate(now)
        # with less demand than window (a step's tail) the deployment is not what limits, and a
        # request may still queue on a busy replica while another idles: that says nothing
        in_use = bool(self._waiters) or self._in_flight + 1 >= self.window_size
        if queue <= self._queued_s:
            if self._capacity is None:
                self._proven = max(self._proven, load)
                if in_use:  # start-up: run ahead of the load proven to be served at once
                    ahead = max(self._replica_floor(), _AHEAD * self.prefill_queue_target * rate)
                    self._resize(max(self._window, self._proven + ahead))
                return
            if load > self._capacity:
                self._capacity += self.ema_alpha * (load - self._capacity)
        else:
            served = self._served_at_once(sent_at, queue, load, at_send, rate)
            if self._capacity is None:
                # below a load already served at once, a queued request shows a momentary wait
                # (a busy scheduler, a long prefill ahead of it), not the capacity
                if not in_use or load < self._proven:
                    return
                self._capacity = served
            elif in_use or served > self._capacity:
                self._capacity += self.ema_alpha * (served - self._capacity)
        if in_use:
            self._resize(self._capacity + self._queue_allowance(now))

    def _served_at_once(
        self, sent_at: float, queue: float, load: int, at_send: tuple[int, int] | None, rate: float
    ) -> float:
        """Little's law for a request that queued: the requests in flight when it was sent minus
        those released while it waited."""
        if at_send is None:  # no history to look back on: the current rate stands for it
            return max(float(self.min_window), load - rate * queue)
        # a burst's requests leave in any order: any sent just after it may have come first
        load = max(load, self._events.most_in_flight(sent_at, sent_at + self._queued_s) or 0)
        at_admission = self._events.at(sent_at + queue)
        passed = at_admission[1] - at_send[1] if at_admission is not None else rate * queue
        return max(float(self.min_window), load - passed)

    def _note_host(self, host: str | None) -> None:
        """Count the replicas that answer; by default the start-up window is per replica."""
        if not host or host in self._hosts or len(self._hosts) >= _HOSTS_KEPT:
            return
        self._hosts.add(host)
        if self._per_replica and self._capacity is None:
            self._resize(max(self._window, self._replica_floor()))

    def _replica_floor(self) -> float:
        return float(DEFAULT_INITIAL_WINDOW * max(1, len(self._hosts)))

    def _queue_allowance(self, now: float) -> float:
        """Requests kept waiting in front of the decode slots: those released in a quarter of the
        target (at least one)."""
        return max(1.0, self._release_rate(now) * self.prefill_queue_target * _QUEUE_AIM)

    def _release_rate(self, now: float) -> float:
        """Releases per second over the last ``_RATE_SPAN_S`` (or what is kept of it)."""
        since = now - _RATE_SPAN_S
        before = self._events.at(since)
        if before is not None:
            return (self._released - before[1]) / _RATE_SPAN_S
        oldest = self._events.oldest()
        if oldest is None or now - oldest[0] <= 0:
            return 0.0
        return (self._released - oldest[1]) / (now - oldest[0])

    def _shrink_now(self, retry_attempt: int) -> None:
        now = self._clock()
        if self._last_shrink_at is not None and now - self._last_shrink_at < self.shrink_cooldown_s:
            return
        self._last_shrink_at = now
        factor = self.multiplicative_decrease
        if retry_attempt >= _DEEP_RETRY_ATTEMPT:
            factor *= self.multiplicative_decrease
        self._congestion_events += 1
        self._resize(self._window * factor)
        if self.policy == "capacity":
            # the start-up is over, and the next prefill-queue sample must not undo the shrink
            shrunk = max(float(self.min_window), self._window - self._queue_allowance(now))
            self._capacity = shrunk if self._capacity is None else min(self._capacity, shrunk)

    def _adjust(self) -> bool:
        """One interval adjustment (fireworks-api.md 7.4). True if either strategy had data."""
        adjusted = False
        if self._pq_samples:
            avg = sum(self._pq_samples) / len(self._pq_samples)
            self._ema = avg if self._ema is None else self.ema_alpha * avg + (1 - self.ema_alpha) * self._ema
            if self._ema > self.prefill_queue_target:
                self._resize(self._window * self.multiplicative_decrease)
            else:
                headroom = self.prefill_queue_target / max(self._ema, _PREFILL_QUEUE_FLOOR_S)
                self._resize(
                    self._window + self.additive_increase * min(headroom, _PROPORTIONAL_INCREASE_CAP)
                )
            adjusted = True
        elif self._status_responses > 0:
            if self._congestion_responses == 0:
                self._resize(self._window + self.additive_increase)
            adjusted = True
        self._pq_samples = []
        self._status_responses = 0
        self._congestion_responses = 0
        return adjusted

    def _resize(self, new_window: float) -> None:
        old_size = self.window_size
        self._window = min(max(new_window, float(self.min_window)), float(self.max_window))
        delta = self.window_size - old_size
        if delta > 0:
            self._debt -= min(delta, self._debt)
        elif delta < 0:
            free = max(0, old_size - self._in_flight)
            self._debt += max(0, -delta - free)
        self._wake()


def _is_congestion(metrics: ServerMetrics) -> bool:
    return metrics.transport_error or metrics.http_status_code in _CONGESTION_STATUS
