"""What a sampling run's timeline and controller summary say about the prefill queue: the mean
queue time of the requests released between two points, kept right when the timeline thins out,
and the target it is steered to (what the demo chart and the UI draw)."""

from __future__ import annotations

import pytest

from airflow_fireworks.sampling import (
    AdaptiveConcurrencyController,
    DeploymentSampler,
    FixedConcurrencyController,
    PromptResult,
    SamplingParams,
    SamplingRun,
    ServerMetrics,
)
from airflow_fireworks.sampling.run import TIMELINE_MAX_POINTS


def queued(seconds: float) -> ServerMetrics:
    return ServerMetrics(prefill_queue_duration=seconds, http_status_code=200)


def advance(run: SamplingRun, seconds: float) -> None:
    """Move the run's clock (``elapsed_s`` reads the finish time when one is set)."""
    run.finished = (run.finished or run.started) + seconds


@pytest.mark.parametrize(
    "controller",
    [
        AdaptiveConcurrencyController(),
        AdaptiveConcurrencyController(policy="aimd"),
        FixedConcurrencyController(4),
    ],
)
async def test_each_point_has_the_mean_queue_time_released_since_the_previous(controller: object) -> None:
    assert isinstance(controller, AdaptiveConcurrencyController | FixedConcurrencyController)
    run = SamplingRun(n=1, controller=controller)
    run.sample_timeline()
    for seconds in (0.1, 0.3):
        await controller.acquire()
        controller.release(queued(seconds))
    advance(run, 0.5)
    run.sample_timeline()
    advance(run, 0.5)
    run.sample_timeline()  # nothing released in between: no value, rather than a made-up zero
    await controller.acquire()
    controller.release(queued(0.9))
    await controller.acquire()
    controller.release()  # no metrics: not a sample
    advance(run, 0.5)
    run.sample_timeline()
    assert [point.get("prefill_queue_s") for point in run.timeline] == [None, 0.2, None, 0.9]
    assert "prefill_queue_s" not in run.timeline[0]


async def test_queue_times_stay_right_when_the_timeline_thins_out() -> None:
    controller = AdaptiveConcurrencyController()
    run = SamplingRun(n=1, controller=controller)
    for step in range(TIMELINE_MAX_POINTS + 1):
        await controller.acquire()
        controller.release(queued(0.1 if step % 2 else 0.3))  # odd points 0.1, even ones 0.3
        advance(run, 0.5)
        run.sample_timeline()
    assert len(run.timeline) == (TIMELINE_MAX_POINTS + 1) // 2
    # every kept point now covers two released requests: 0.3 and 0.1
    assert {point["prefill_queue_s"] for point in run.timeline[1:]} == {0.2}


async def test_the_summary_names_the_prefill_queue_target_of_an_adaptive_controller() -> None:
    async def sink(result: PromptResult) -> None:
        raise AssertionError(f"no prompt was given: {result}")

    for controller, target in (
        (AdaptiveConcurrencyController(prefill_queue_target=0.25), 0.25),
        (FixedConcurrencyController(4), None),
    ):
        run = SamplingRun(n=1, controller=controller)
        sampler = DeploymentSampler(
            "http://127.0.0.1:9", "accounts/a/deployments/d", "fw-key", None, controller
        )
        await run.sample(sampler, [], SamplingParams(n=1), sink)  # no prompt: no request
        assert run.controller_stats.get("prefill_queue_target") == target
        assert run.controller_stats["final_window"] == controller.window_size
