"""The default capacity policy of ``AdaptiveConcurrencyController``, on a fake clock: start-up
growth, the Little's-law capacity estimate, back-off on the prefill queue and on status codes,
shrinking below the requests in flight. No timing decides a result: the clock is a number."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from airflow_fireworks.sampling import AdaptiveConcurrencyController, ServerMetrics
from airflow_fireworks.sampling.concurrency import _Events


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def done(queue: float, latency: float, host: str | None = None, **extra: object) -> ServerMetrics:
    """A finished request: its prefill-queue time and how long it was in flight."""
    return ServerMetrics(  # type: ignore[arg-type]
        prefill_queue_duration=queue, client_latency=latency, http_status_code=200, backend_host=host, **extra
    )


async def start(ctrl: AdaptiveConcurrencyController, count: int) -> None:
    for _ in range(count):
        await ctrl.acquire()


@asynccontextmanager
async def waiting(ctrl: AdaptiveConcurrencyController, count: int) -> AsyncIterator[list[asyncio.Task[None]]]:
    """``count`` more callers parked on the controller: the window is in use (more demand than
    window), as during a step; cancelled at the end."""
    tasks = [asyncio.create_task(ctrl.acquire()) for _ in range(count)]
    await asyncio.sleep(0)
    try:
        yield tasks
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_start_up_runs_ahead_of_the_largest_load_served_without_queueing() -> None:
    clock = FakeClock()
    ctrl = AdaptiveConcurrencyController(clock=clock)
    assert ctrl.window_size == 8 and ctrl.capacity_estimate is None
    await start(ctrl, 8)
    clock.now += 0.5
    # sent with 8 in flight, no queue: 8 are served at once; the window runs ahead by at least the
    # initial 8, or by what is released in twice prefill_queue_target (here 2 x 0.5 s x 2/s = 2)
    ctrl.release(done(0.0, latency=0.5))
    assert ctrl.window_size == 16
    await start(ctrl, 9)  # 16 in flight again
    clock.now += 0.5
    ctrl.release(done(0.004, latency=1.0))  # sent with 8 in flight: proves nothing new
    assert ctrl.window_size == 16
    await start(ctrl, 1)
    ctrl.release(done(0.02, latency=0.5))  # sent with 16 in flight; below 5 % of the target: no queue
    assert ctrl.window_size == 24
    assert ctrl.capacity_estimate is None  # still starting up: nothing has queued


async def test_start_up_takes_a_queued_request_below_the_proven_load_for_a_momentary_wait() -> None:
    clock = FakeClock()
    ctrl = AdaptiveConcurrencyController(clock=clock)
    await start(ctrl, 8)  # t=0: 8 in flight
    clock.now += 0.5
    ctrl.release(done(0.0, latency=0.5))  # 8 served at once
    assert ctrl.window_size == 16
    await start(ctrl, 9)  # t=0.5: 16 in flight
    async with waiting(ctrl, 50):
        clock.now += 0.5
        ctrl.release(done(0.0, latency=0.5))  # sent at t=0.5: 16 served at once
        assert ctrl.window_size >= 24 and ctrl.capacity_estimate is None
        ctrl.release(done(0.1, latency=1.0))  # sent at t=0 with 8 in flight, yet it waited
        assert ctrl.capacity_estimate is None and ctrl.window_size >= 24  # still starting up
        clock.now += 0.1
        ctrl.release(done(0.3, latency=0.6))  # sent at t=0.5 with 16 in flight and queued
        assert ctrl.capacity_estimate is not None and ctrl.capacity_estimate <= 16


async def test_start_up_does_not_grow_a_window_nobody_uses() -> None:
    clock = FakeClock()
    ctrl = AdaptiveConcurrencyController(initial_window=16, clock=clock)
    await start(ctrl, 4)  # the end of a step: less demand than window
    clock.now += 1.0
    ctrl.release(done(0.0, latency=1.0))
    assert ctrl.window_size == 16


async def test_start_up_window_is_per_replica_by_default() -> None:
    clock = FakeClock()
    ctrl = AdaptiveConcurrencyController(clock=clock)
    await start(ctrl, 3)
    clock.now += 0.1
    for host in ("replica-0", "replica-1", "replica-2"):
        ctrl.release(done(0.0, latency=0.1, host=host))
    assert ctrl.window_size == 24  # 8 per replica that answered
    explicit = AdaptiveConcurrencyController(initial_window=8, clock=clock)  # an explicit total
    await start(explicit, 3)
    clock.now += 0.1
    for host in ("replica-0", "replica-1", "replica-2"):
        explicit.release(done(0.0, latency=0.1, host=host))
    assert explicit.window_size == 8


async def test_a_queued_request_gives_the_capacity_by_littles_law() -> None:
    clock = FakeClock()
    ctrl = AdaptiveConcurrencyController(initial_window=20, clock=clock)
    await start(ctrl, 20)  # at t=0, 20 in flight
    async with waiting(ctrl, 50):
        clock.now += 1.0
        for _ in range(5):
            ctrl.release(done(0.0, latency=1.0))
        clock.now += 1.0
        # sent with 20 in flight, queued 1.5 s; 5 requests were released meanwhile: 15 served at once
        ctrl.release(done(1.5, latency=2.0))
        assert ctrl.capacity_estimate == 15
        # window = capacity + the requests released in a quarter of the target (at least 1)
        assert ctrl.window_size == 16
        assert ctrl.in_flight - ctrl.pending_decrease == 16  # the excess in flight is a debt
        summary = ctrl.step_completed()
    assert summary["capacity"] == 15
    assert summary["avg_pq"] == pytest.approx(1.5 / 6)
    assert "window_after" not in summary  # the capacity policy adjusts on every release, not here


async def test_a_queued_request_of_a_burst_counts_the_whole_burst() -> None:
    clock = FakeClock()
    ctrl = AdaptiveConcurrencyController(initial_window=30, clock=clock)
    for _ in range(30):  # a burst: 30 requests start within 7 ms and reach the server in any order
        await ctrl.acquire()
        clock.now += 1 / 4096
    async with waiting(ctrl, 10):
        clock.now += 1.0
        # started 10th, yet it queued 0.2 s while nothing was released: it arrived after the
        # others, and 30 (not 10) are served at once
        ctrl.release(done(0.2, latency=clock.now - (1000.0 + 9 / 4096)))
        assert ctrl.capacity_estimate == 30


async def test_the_queue_allowance_follows_the_release_rate() -> None:
    clock = FakeClock()
    ctrl = AdaptiveConcurrencyController(initial_window=100, clock=clock)
    await start(ctrl, 100)
    async with waiting(ctrl, 200):
        clock.now += 2.0
        for _ in range(32):  # 32 releases in the last second (sent 1 s ago with 100 in flight)
            clock.now += 1 / 32
            ctrl.release(done(0.0, latency=1.0))
        ctrl.release(done(0.25, latency=3.0))  # sent at t=0 with 100 in flight, none released within 0.25 s
        assert ctrl.capacity_estimate == 100
        # 33 releases/s x 0.5 s target x 0.25
        assert ctrl.window_size == int(100 + 33 * 0.5 * 0.25)


async def test_the_tail_of_a_step_does_not_move_the_window() -> None:
    clock = FakeClock()
    ctrl = AdaptiveConcurrencyController(initial_window=40, clock=clock)
    await start(ctrl, 40)
    async with waiting(ctrl, 10):
        clock.now += 1.0
        ctrl.release(done(0.5, latency=1.0))
    assert ctrl.capacity_estimate == 40 and ctrl.window_size == 41
    # no more demand: the last requests come back, some queued on a replica while another idled
    for _ in range(20):
        clock.now += 0.1
        ctrl.release(done(0.3, latency=1.0))
    assert ctrl.capacity_estimate == 40 and ctrl.window_size == 41  # the next step starts here


async def test_a_shrinking_deployment_is_backed_off_from_its_first_queued_requests() -> None:
    clock = FakeClock()
    ctrl = AdaptiveConcurrencyController(initial_window=64, clock=clock)
    await start(ctrl, 64)
    async with waiting(ctrl, 500):
        clock.now += 1.0
        ctrl.release(done(0.1, latency=1.0))  # 64 sent at once, none released while it queued
        assert ctrl.capacity_estimate == 64 and ctrl.window_size == 65
        await asyncio.sleep(0)  # the window is refilled: 65 requests in flight from t=1
        for i in range(40):  # requests sent before report the old capacity
            clock.now += 0.05
            ctrl.release(done(0.0, latency=1.05 + 0.05 * i))
        assert ctrl.window_size >= 64
        windows = []
        for _ in range(6):
            # replicas went away: requests sent at t=1 with 65 in flight waited while 40-45 were
            # released: 20-25 are served at once
            clock.now += 0.01
            ctrl.release(done(clock.now - 1001.01, latency=clock.now - 1001.0))
            windows.append(ctrl.window_size)
        assert windows[0] < 60  # at once, not at an interval's end
        assert windows == sorted(windows, reverse=True) and windows[-1] < 40
        assert ctrl.capacity_estimate is not None and ctrl.capacity_estimate < 38
        in_flight, debt = ctrl.in_flight, ctrl.pending_decrease
        assert debt > 0 and in_flight - debt == ctrl.window_size  # shrunk below the requests in flight
        for _ in range(debt):
            ctrl.release()
        assert ctrl.pending_decrease == 0 and ctrl.in_flight == in_flight - debt  # nobody admitted meanwhile
        ctrl.release()
        assert ctrl.in_flight == in_flight - debt  # now a parked caller takes the freed slot


async def test_requests_that_did_not_queue_raise_the_estimate() -> None:
    clock = FakeClock()
    ctrl = AdaptiveConcurrencyController(initial_window=40, clock=clock)
    await start(ctrl, 40)
    async with waiting(ctrl, 100):
        clock.now += 1.0
        ctrl.release(done(0.5, latency=1.0))
        assert ctrl.capacity_estimate == 40 and ctrl.window_size == 41
        await asyncio.sleep(0)  # 41 in flight
        clock.now += 1.0
        ctrl.release(done(0.0, latency=0.5))  # a replica was added: 41 served without queueing
        assert ctrl.capacity_estimate == pytest.approx(40.3)  # moved by ema_alpha (0.3) of the gap


async def test_a_congestion_status_shrinks_at_once_and_the_next_queue_sample_keeps_it() -> None:
    clock = FakeClock()
    ctrl = AdaptiveConcurrencyController(initial_window=64, clock=clock)
    await start(ctrl, 64)
    clock.now += 1.0
    ctrl.release(done(0.1, latency=1.0))
    assert ctrl.window_size == 65
    ctrl.release(ServerMetrics(http_status_code=503, retry_attempt=1))
    assert ctrl.window_size == 32 and ctrl.capacity_estimate == 31.5  # 32.5 minus the queue of 1
    clock.now += 0.5
    ctrl.release(done(0.1, latency=1.5))  # sent before the shrink: ignored
    assert ctrl.window_size == 32
    while ctrl.pending_decrease or ctrl.in_flight >= ctrl.window_size:
        ctrl.release()  # the shrink's debt is paid
    await start(ctrl, 1)
    clock.now += 0.5
    ctrl.release(done(0.0, latency=0.2))  # sent after it, served at once with 32 in flight
    assert ctrl.capacity_estimate is not None and 31.5 < ctrl.capacity_estimate < 32
    assert ctrl.step_completed()["congestion_events"] == 1


async def test_a_429_shrinks_below_the_requests_in_flight_and_admits_nobody_until_that_is_paid() -> None:
    clock = FakeClock()
    ctrl = AdaptiveConcurrencyController(initial_window=64, clock=clock)
    await start(ctrl, 64)
    async with waiting(ctrl, 4) as parked:
        ctrl.release(ServerMetrics(http_status_code=429, retry_attempt=1))
        # 63 in flight at a window of 32: the 31 too many are a debt
        assert (ctrl.window_size, ctrl.in_flight, ctrl.pending_decrease) == (32, 63, 31)
        for _ in range(31):
            ctrl.release()
        await asyncio.sleep(0)
        assert ctrl.pending_decrease == 0 and ctrl.in_flight == 32
        assert not any(task.done() for task in parked)  # the window is full: nobody was admitted
        ctrl.release()
        await asyncio.sleep(0)
        assert [task.done() for task in parked] == [True, False, False, False]
        assert ctrl.in_flight == 32


async def test_without_latency_the_load_is_the_one_at_release() -> None:
    clock = FakeClock()
    ctrl = AdaptiveConcurrencyController(initial_window=10, clock=clock)
    await start(ctrl, 10)
    async with waiting(ctrl, 20):
        clock.now += 1.0
        ctrl.release(ServerMetrics(prefill_queue_duration=0.0))  # no client latency nor processing time
        assert ctrl.window_size == 10 + 8  # load 9 + 1 proven, ahead by the initial 8
        ctrl.release(ServerMetrics(prefill_queue_duration=0.2, server_processing_time=0.5))
        assert ctrl.capacity_estimate == 10  # sent with 10 in flight (looked up by processing time)


def test_events_keep_a_bounded_history() -> None:
    events = _Events(4)
    for t in range(10):
        events.add(float(t), t, t // 2)
    assert events.at(9.5) == (9, 4)
    assert events.at(6.0) == (6, 3)
    assert events.at(4.0) is None  # forgotten
    assert events.most_in_flight(6.5, 8.0) == 8
    assert events.most_in_flight(9.5, 20.0) is None
    oldest = events.oldest()
    assert oldest is not None and oldest[0] >= 5.0
