"""Concurrency controllers: how many sampling requests are in flight (fireworks-api.md section 7).

The sampler acquires one slot per HTTP attempt and releases it exactly once (also on failure or
cancellation), passing the attempt's ``ServerMetrics`` when it has them.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
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

    def release(self, metrics: ServerMetrics | None = None) -> None:
        if self._in_flight > 0:
            self._in_flight -= 1
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


class AdaptiveConcurrencyController:
    """AIMD window driven by the server's prefill-queue time (dedicated deployments) or, when
    that metric is absent, by congestion status codes (429/503, transport errors).

    Every ``adjustment_interval`` releases (and in ``step_completed``) the window grows
    proportionally to the headroom below ``prefill_queue_target`` or is multiplied by
    ``multiplicative_decrease`` above it. In status-code mode a congestion record shrinks the
    window at once (at most once per ``shrink_cooldown_s``) and a clean interval adds
    ``additive_increase``. A shrink below the number of requests in flight becomes a debt paid by
    later releases before anyone is admitted again.

    The controller is loop-agnostic: it creates no asyncio primitive up front, and it may be
    shared by event loops in several threads (state is guarded by a lock, waiters are woken on
    their own loop). Parked callers are admitted in FIFO order as soon as a slot is free; new
    callers never overtake parked ones.
    """

    def __init__(
        self,
        initial_window: int = 8,
        min_window: int = 1,
        max_window: int = 256,
        prefill_queue_target: float = 0.5,
        additive_increase: float = 1.0,
        multiplicative_decrease: float = 0.5,
        ema_alpha: float = 0.3,
        adjustment_interval: int = 32,
        shrink_cooldown_s: float = 1.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        check_int(min_window, "min_window", 1)
        check_int(max_window, "max_window", min_window)
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
        self.min_window = min_window
        self.max_window = max_window
        self.prefill_queue_target = float(prefill_queue_target)
        self.additive_increase = float(additive_increase)
        self.multiplicative_decrease = float(multiplicative_decrease)
        self.ema_alpha = float(ema_alpha)
        self.adjustment_interval = adjustment_interval
        self.shrink_cooldown_s = float(shrink_cooldown_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._window = float(min(max(initial_window, min_window), max_window))
        self._in_flight = 0
        self._debt = 0
        self._waiters: deque[_Waiter] = deque()
        self._ema: float | None = None
        self._last_shrink_at: float | None = None
        self._warned_status_mode = False
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
        self._congestion_events = 0
        self._retry_exhaustions = 0

    def __repr__(self) -> str:
        return (
            f"AdaptiveConcurrencyController(window={self.window_size}, in_flight={self._in_flight}, "
            f"min={self.min_window}, max={self.max_window})"
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

    async def acquire(self) -> None:
        with self._lock:
            if not self._waiters and self._in_flight < self.window_size and self._debt == 0:
                self._admit()
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

    def release(self, metrics: ServerMetrics | None = None) -> None:
        with self._lock:
            if self._in_flight > 0:
                self._in_flight -= 1
            if self._debt > 0:
                self._debt -= 1
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
        """Summarise the step, run one adjustment, reset the step counters (fireworks-api.md 7.6)."""
        with self._lock:
            summary: dict[str, float] = {
                "window": float(self.window_size),
                "requests": float(self._step_requests),
            }
            if self._pq_samples:
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
            self._congestion_events = 0
            self._retry_exhaustions = 0
            self._wake()
            return summary

    # -- internals; every method below runs with the lock held --

    def _admit(self) -> None:
        self._in_flight += 1
        if self._in_flight > self._step_max_in_flight:
            self._step_max_in_flight = self._in_flight

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
        if metrics.prefill_queue_duration is not None:
            self._pq_samples.append(metrics.prefill_queue_duration)
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
