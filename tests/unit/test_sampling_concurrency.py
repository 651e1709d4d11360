"""Concurrency controllers: the rules shared by both adaptive policies, and the SDK's AIMD
(``policy="aimd"``) with the worked examples of fireworks-api.md section 7. The default
capacity policy is pinned in ``test_sampling_concurrency_capacity.py``."""

from __future__ import annotations

import asyncio
import threading

import pytest

from airflow_fireworks.api.errors import FireworksValidationError
from airflow_fireworks.sampling import (
    AdaptiveConcurrencyController,
    ConcurrencyController,
    FixedConcurrencyController,
    ServerMetrics,
)

POLICIES = ["capacity", "aimd"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pq(seconds: float, **extra: object) -> ServerMetrics:
    return ServerMetrics(prefill_queue_duration=seconds, http_status_code=200, **extra)  # type: ignore[arg-type]


def status(code: int, attempt: int = 1) -> ServerMetrics:
    return ServerMetrics(http_status_code=code, retry_attempt=attempt)


async def run_requests(ctrl: AdaptiveConcurrencyController, count: int, metrics: ServerMetrics) -> None:
    for _ in range(count):
        await ctrl.acquire()
        ctrl.release(metrics)


async def test_worked_example_prefill_mode_grows_proportionally_then_halves() -> None:
    ctrl = AdaptiveConcurrencyController(policy="aimd")
    assert ctrl.window_size == 8
    await run_requests(ctrl, 31, pq(0.1))
    assert ctrl.window_size == 8  # no adjustment before the 32nd release
    await run_requests(ctrl, 1, pq(0.1))
    assert ctrl.window_size == 12  # headroom 0.5 / 0.1 = 5, capped at 4
    await run_requests(ctrl, 32, pq(2.0))
    # EMA = 0.3 * 2.0 + 0.7 * 0.1 = 0.67 > 0.5 target
    assert ctrl.window_size == 6


@pytest.mark.parametrize("policy", POLICIES)
async def test_worked_example_status_mode_shrinks_immediately_and_does_not_grow_after_congestion(
    policy: str,
) -> None:
    clock = FakeClock()
    ctrl = AdaptiveConcurrencyController(policy=policy, clock=clock)
    await ctrl.acquire()
    ctrl.release(status(503, attempt=1))
    assert ctrl.window_size == 4
    clock.now += 1.5
    await ctrl.acquire()
    ctrl.release(status(503, attempt=2))
    assert ctrl.window_size == 2
    await ctrl.acquire()
    ctrl.release(status(200))
    summary = ctrl.step_completed()
    assert summary["window"] == 2
    assert summary["window_after"] == 2  # the interval saw congestion: no growth
    assert summary["status_responses"] == 3
    assert summary["congestion_responses"] == 2
    assert summary["congestion_rate"] == pytest.approx(2 / 3)
    assert summary["congestion_events"] == 2
    assert "avg_pq" not in summary
    # a clean step grows by the plain additive step
    await ctrl.acquire()
    ctrl.release(status(200))
    assert ctrl.step_completed()["window_after"] == 3


@pytest.mark.parametrize("policy", POLICIES)
async def test_shrink_cooldown_and_deep_retry_shrink(policy: str) -> None:
    clock = FakeClock()
    ctrl = AdaptiveConcurrencyController(initial_window=64, policy=policy, clock=clock)
    ctrl.release(status(429))
    ctrl.release(status(503))  # within the 1 s cooldown: counted, no shrink
    assert ctrl.window_size == 32
    clock.now += 1.0
    ctrl.release(status(503, attempt=3))  # a deep retry shrinks by 0.25
    assert ctrl.window_size == 8
    clock.now += 1.0
    ctrl.release(ServerMetrics(transport_error=True))  # transport errors are congestion too
    assert ctrl.window_size == 4
    summary = ctrl.step_completed()
    assert summary["congestion_events"] == 3
    assert summary["congestion_responses"] == 4


@pytest.mark.parametrize("policy", POLICIES)
async def test_non_congestion_errors_are_neither_congestion_nor_headroom(policy: str) -> None:
    ctrl = AdaptiveConcurrencyController(policy=policy)
    ctrl.release(status(500))
    ctrl.release(ServerMetrics(http_status_code=None))
    summary = ctrl.step_completed()
    assert summary["requests"] == 2
    assert "status_responses" not in summary and "window_after" not in summary
    assert ctrl.window_size == 8


async def test_shrink_below_in_flight_becomes_debt_paid_by_releases() -> None:
    ctrl = AdaptiveConcurrencyController(multiplicative_decrease=0.25, adjustment_interval=0, policy="aimd")
    for _ in range(8):
        await ctrl.acquire()
    ctrl.release(pq(5.0))
    await ctrl.acquire()  # 8 in flight again
    summary = ctrl.step_completed()
    assert summary["window_after"] == 2
    assert ctrl.pending_decrease == 6
    waiter = asyncio.create_task(ctrl.acquire())
    for expected_debt in (5, 4, 3, 2, 1, 0):
        ctrl.release()
        assert ctrl.pending_decrease == expected_debt
        await asyncio.sleep(0)
        assert not waiter.done()  # 8 - 6 = 2 in flight = window: still full
    ctrl.release()
    await asyncio.sleep(0)
    assert waiter.done() and ctrl.in_flight == 2


async def test_step_summary_keys_and_resets() -> None:
    ctrl = AdaptiveConcurrencyController(policy="aimd")
    for _ in range(8):
        await ctrl.acquire()
    for _ in range(8):
        ctrl.release(pq(0.1, cached_prompt_tokens=30, prompt_tokens=100))
    await run_requests(ctrl, 2, pq(0.1, cached_prompt_tokens=30, prompt_tokens=100))
    summary = ctrl.step_completed()
    assert summary == {
        "window": 8.0,
        "requests": 10.0,
        "avg_pq": pytest.approx(0.1),
        "avg_window": 8.0,
        "max_in_flight": 8.0,
        "window_after": 12.0,
        "cache_hit_rate": pytest.approx(0.3),
    }
    assert ctrl.step_completed() == {"window": 12.0, "requests": 0.0, "max_in_flight": 0.0}


async def test_a_step_of_exactly_one_interval_has_no_prefill_keys() -> None:
    ctrl = AdaptiveConcurrencyController(policy="aimd")
    await run_requests(ctrl, 32, pq(0.1))
    summary = ctrl.step_completed()
    assert summary["requests"] == 32 and summary["window"] == 12
    assert not {"avg_pq", "ema_pq", "window_after"} & summary.keys()
    await run_requests(ctrl, 5, pq(0.2))
    summary = ctrl.step_completed()
    assert summary["ema_pq"] == pytest.approx(0.1)  # EMA before this call's update
    assert summary["avg_pq"] == pytest.approx(0.2)


@pytest.mark.parametrize("policy", POLICIES)
async def test_retry_exhaustions_are_counted_in_status_mode(policy: str) -> None:
    ctrl = AdaptiveConcurrencyController(policy=policy)
    ctrl.note_retry_exhausted(status(503, attempt=7))
    ctrl.note_retry_exhausted(pq(3.0))
    ctrl.note_retry_exhausted(status(400))
    assert ctrl.step_completed()["retry_exhaustions"] == 1


async def test_parked_callers_are_admitted_fifo_and_new_callers_do_not_overtake() -> None:
    ctrl = AdaptiveConcurrencyController(initial_window=1)
    order: list[str] = []

    async def worker(name: str) -> None:
        await ctrl.acquire()
        order.append(name)

    await ctrl.acquire()
    first = asyncio.create_task(worker("first"))
    second = asyncio.create_task(worker("second"))
    await asyncio.sleep(0)
    late = asyncio.create_task(worker("late"))
    await asyncio.sleep(0)
    assert order == []
    for _ in range(3):
        ctrl.release()
        await asyncio.sleep(0)
    assert order == ["first", "second", "late"]
    await asyncio.gather(first, second, late)


async def test_window_growth_admits_every_parked_caller_that_fits() -> None:
    ctrl = AdaptiveConcurrencyController(initial_window=2, adjustment_interval=0, policy="aimd")
    await ctrl.acquire()
    await ctrl.acquire()
    ctrl.release(pq(0.01))
    await ctrl.acquire()
    parked = [asyncio.create_task(ctrl.acquire()) for _ in range(4)]
    await asyncio.sleep(0)
    assert not any(task.done() for task in parked)
    assert ctrl.step_completed()["window_after"] == 6
    await asyncio.sleep(0)
    assert all(task.done() for task in parked)
    assert ctrl.in_flight == 6


async def test_cancelled_waiter_gives_its_turn_to_the_next() -> None:
    ctrl = AdaptiveConcurrencyController(initial_window=1)
    await ctrl.acquire()
    cancelled = asyncio.create_task(ctrl.acquire())
    waiting = asyncio.create_task(ctrl.acquire())
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    ctrl.release()
    await asyncio.wait_for(waiting, timeout=5)
    assert ctrl.in_flight == 1


def test_adaptive_controller_wakes_a_waiter_on_another_event_loop() -> None:
    ctrl = AdaptiveConcurrencyController(initial_window=1)
    admitted = threading.Event()
    parked = threading.Event()

    async def other_loop() -> None:
        task = asyncio.create_task(ctrl.acquire())
        await asyncio.sleep(0)
        parked.set()
        await task
        admitted.set()

    asyncio.run(ctrl.acquire())  # held by a first loop, now gone
    thread = threading.Thread(target=asyncio.run, args=(other_loop(),))
    thread.start()
    assert parked.wait(5)
    assert not admitted.is_set()
    ctrl.release()  # from this (loop-less) thread
    thread.join(5)
    assert admitted.is_set()


async def test_fixed_controller_is_a_semaphore_with_a_constant_summary() -> None:
    ctrl = FixedConcurrencyController(2)
    await ctrl.acquire()
    await ctrl.acquire()
    assert ctrl.in_flight == 2
    third = asyncio.create_task(ctrl.acquire())
    await asyncio.sleep(0)
    assert not third.done()
    ctrl.release(status(503))
    await asyncio.wait_for(third, timeout=5)
    assert ctrl.window_size == 2 and ctrl.in_flight == 2
    ctrl.note_retry_exhausted(status(503, attempt=7))  # nothing to adapt
    ctrl.release()
    ctrl.release()
    assert ctrl.in_flight == 0
    assert ctrl.step_completed() == {"window": 2.0}


@pytest.mark.parametrize(
    "ctrl", [FixedConcurrencyController(4), *(AdaptiveConcurrencyController(policy=p) for p in POLICIES)]
)
async def test_both_controllers_offer_what_a_sampling_run_needs(ctrl: ConcurrencyController) -> None:
    assert isinstance(ctrl, ConcurrencyController)
    await ctrl.acquire()
    assert ctrl.in_flight == 1
    ctrl.release(pq(0.0))
    ctrl.note_retry_exhausted(status(429))
    assert ctrl.in_flight == 0
    window = ctrl.window_size
    assert ctrl.step_completed()["window"] == window


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"adjustment_interval": -1}, "adjustment_interval"),
        ({"min_window": 4, "max_window": 2}, "max_window"),
        ({"multiplicative_decrease": 1.5}, "multiplicative_decrease"),
        ({"prefill_queue_target": 0}, "prefill_queue_target"),
        ({"initial_window": 0}, "initial_window"),
        ({"policy": "sdk"}, "policy"),
    ],
)
def test_bad_controller_settings_name_the_field(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(FireworksValidationError, match=field):
        AdaptiveConcurrencyController(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(FireworksValidationError, match="max_concurrency"):
        FixedConcurrencyController(0)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"prefill_queue_target": "fast"}, "prefill_queue_target"),
        ({"ema_alpha": None}, "ema_alpha"),
        ({"shrink_cooldown_s": [1]}, "shrink_cooldown_s"),
        ({"additive_increase": True}, "additive_increase"),
    ],
)
def test_non_numeric_controller_settings_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(FireworksValidationError, match=f"{field}: must be a number"):
        AdaptiveConcurrencyController(**kwargs)  # type: ignore[arg-type]
