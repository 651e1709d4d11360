"""sample_prompts against the emulator: bounded in-flight prompts, per-prompt error records,
resume by skipping prompts, progress reports, early exit; the adaptive window reacting to load."""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from pathlib import Path

import pytest

from airflow_fireworks.api.retry import RetryPolicy
from airflow_fireworks.sampling import (
    AdaptiveConcurrencyController,
    DeploymentSampler,
    PromptResult,
    PromptSpec,
    SamplingProgress,
    ServerMetrics,
    load_tokenizer,
    sample_prompts,
)
from airflow_fireworks.sampling.output import group_records, iter_records, write_result
from tests.emulator_control import EmulatorProcess
from tests.integration.test_sampler import create_deployment

FAST_RETRY = RetryPolicy(max_attempts=3, initial_backoff_s=0.01, max_backoff_s=0.05, max_total_s=10.0)
TOO_LONG = 300  # its prompt exceeds the emulator's context: a 400, so a permanent failure
INVALID = 301  # its messages are malformed: rejected on the client


def prompt_specs(count: int) -> list[PromptSpec]:
    specs = []
    for index in range(count):
        if index == TOO_LONG:
            specs.append(PromptSpec(index, prompt_token_ids=[5] * 9000))
        elif index == INVALID:
            specs.append(PromptSpec(index, messages=[{"content": "no role"}]))
        elif index % 2:
            specs.append(
                PromptSpec(index, prompt_token_ids=[1, 320, 85, 201, index % 500], metadata={"i": index})
            )
        else:
            messages = [{"role": "user", "content": f"Question {index}: what is {index} squared?"}]
            specs.append(PromptSpec(index, messages=messages, metadata={"i": index}))
    return specs


def completion_statuses(emu: EmulatorProcess, at_least: int) -> dict[str, int]:
    """Completion answers counted by the emulator per status, once ``at_least`` are counted (the
    server counts a request when its handler ends, possibly just after the client has read it)."""
    for _ in range(500):
        statuses: dict[str, int] = emu.stats()["requests"].get("completions", {})
        if sum(statuses.values()) >= at_least:
            break
        time.sleep(0.01)
    return statuses


@pytest.fixture
def emu(emulator: EmulatorProcess) -> EmulatorProcess:
    emulator.configure(create_delay_s=0.05, decode_step_base_s=0.0005, decode_step_per_seq_s=0.00001)
    return emulator


@pytest.fixture
async def sampler(emu: EmulatorProcess, tokenizer_dir: Path) -> AsyncIterator[DeploymentSampler]:
    model = create_deployment(emu, "batch-dep")
    async with DeploymentSampler(
        emu.url,
        model,
        emu.api_key,
        load_tokenizer(tokenizer_dir),
        AdaptiveConcurrencyController(initial_window=32),
        retry_policy=FAST_RETRY,
    ) as instance:
        yield instance


async def test_hundreds_of_prompts_with_lazy_input_bounded_in_flight_and_error_records(
    sampler: DeploymentSampler, emu: EmulatorProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="airflow_fireworks.sampling")
    specs = prompt_specs(320)
    pulled = 0
    yielded = 0
    max_outstanding = 0

    def lazy() -> Iterator[PromptSpec]:
        nonlocal pulled
        for spec in specs:
            pulled += 1
            yield spec

    progress: list[SamplingProgress] = []
    buffer = io.StringIO()
    async for result in sample_prompts(
        sampler,
        lazy(),
        n=2,
        max_tokens=8,
        max_prompts_in_flight=16,
        progress_interval_s=0.05,
        on_progress=progress.append,
    ):
        yielded += 1
        max_outstanding = max(max_outstanding, pulled - yielded)
        write_result(buffer, result)
    assert yielded == 320
    # at most 16 prompts sampled at once, plus one tokenization batch read ahead
    assert max_outstanding <= 16 + 32
    buffer.seek(0)
    groups = {group.prompt_index: group for group in group_records(iter_records(buffer))}
    assert sorted(groups) == list(range(320))
    too_long_error, invalid_error = groups[TOO_LONG].error, groups[INVALID].error
    assert too_long_error is not None and too_long_error["final_status"] == 400
    assert invalid_error is not None and "role" in invalid_error["message"]
    good = [g for i, g in groups.items() if i not in (TOO_LONG, INVALID)]
    assert all(g.error is None and len(g.completions) == 2 for g in good)
    assert all(g.metadata == {"i": g.prompt_index} for g in good)
    assert sorted(c["sample_index"] for c in groups[7].completions) == [0, 1]
    final = progress[-1]
    assert (final.prompts_done, final.prompts_failed, final.completions) == (320, 2, 636)
    assert final.completion_tokens == sum(c["completion_len"] for g in good for c in g.completions)
    assert "Sampling finished: 320/? prompts done (2 failed, 0 skipped), 636 completions" in caplog.text
    # the invalid prompt never reached the server; each sample of the too-long one was sent at most
    # once (a 400 is not retried; the first failure cancels the sibling)
    statuses = completion_statuses(emu, 637)
    assert statuses.keys() == {"200", "400"} and statuses["200"] == 636 and statuses["400"] <= 2


async def test_skip_prompt_indices_resumes_without_resampling(
    sampler: DeploymentSampler, emu: EmulatorProcess
) -> None:
    specs = prompt_specs(40)
    done = set(range(0, 40, 3))
    results = [
        result async for result in sample_prompts(sampler, specs, n=1, max_tokens=4, skip_prompt_indices=done)
    ]
    assert sorted(r.prompt_index for r in results) == sorted(set(range(40)) - done)
    assert completion_statuses(emu, 40 - len(done)) == {"200": 40 - len(done)}


async def test_leaving_the_loop_early_cancels_in_flight_prompts(
    sampler: DeploymentSampler, emu: EmulatorProcess
) -> None:
    emu.configure(decode_step_base_s=0.005)
    stream = sample_prompts(sampler, prompt_specs(200), n=2, max_tokens=50, max_prompts_in_flight=8)
    async for _ in stream:
        break
    await stream.aclose()
    controller = sampler.concurrency_controller
    assert isinstance(controller, AdaptiveConcurrencyController)
    assert controller.in_flight == 0
    started = emu.stats()["completions"]["started"]
    assert started < 200  # far from all prompts were sent


async def test_bad_sampling_parameters_fail_before_any_prompt_is_sent(
    sampler: DeploymentSampler, emu: EmulatorProcess
) -> None:
    with pytest.raises(ValueError, match="temperature"):
        async for _ in sample_prompts(sampler, prompt_specs(3), temperature=9.0):
            pass
    assert emu.stats()["requests"].get("completions") is None


@pytest.mark.parametrize(("decode_slots", "initial", "grows"), [(2, 32, False), (64, 4, True)])
async def test_adaptive_window_follows_the_prefill_queue(
    emu: EmulatorProcess, tokenizer_dir: Path, decode_slots: int, initial: int, grows: bool
) -> None:
    emu.configure(decode_slots=decode_slots, decode_step_base_s=0.002, decode_step_per_seq_s=0.0)
    model = create_deployment(emu, "load-dep")
    controller = AdaptiveConcurrencyController(
        initial_window=initial, adjustment_interval=8, prefill_queue_target=0.05
    )
    async with DeploymentSampler(
        emu.url, model, emu.api_key, load_tokenizer(tokenizer_dir), controller, retry_policy=FAST_RETRY
    ) as sampler:
        specs = [PromptSpec(i, prompt_token_ids=[1, 2, 3, i % 400]) for i in range(96)]
        async for result in sample_prompts(
            sampler, specs, n=1, max_tokens=16, ignore_eos=True, max_prompts_in_flight=64
        ):
            assert result.error is None
    summary = controller.step_completed()
    if grows:
        assert controller.window_size > initial, summary
    else:
        assert controller.window_size < initial, summary
        assert emu.stats()["prefill_queue"]["peak_length"] > 0


class ManualController:
    """A concurrency controller whose window the test sets (FIFO admission, as the real ones)."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.in_flight = 0
        self.peak_in_flight = 0
        self._parked: deque[asyncio.Future[None]] = deque()
        self._watch: tuple[int, asyncio.Event] | None = None

    async def reached(self, count: int) -> None:
        """Return once ``count`` requests are in flight."""
        event = asyncio.Event()
        self._watch = (count, event)
        if self.in_flight >= count:
            event.set()
        await event.wait()

    @property
    def window_size(self) -> int:
        return self.window

    def set_window(self, window: int) -> None:
        self.window = window
        self._wake()

    async def acquire(self) -> None:
        if self._parked or self.in_flight >= self.window:
            future = asyncio.get_running_loop().create_future()
            self._parked.append(future)
            try:
                await future
            except asyncio.CancelledError:
                if future in self._parked:
                    self._parked.remove(future)
                elif not future.cancelled():
                    self.release()  # admitted as it was cancelled: pass the slot on
                raise
        else:
            self._admit()

    def release(self, metrics: ServerMetrics | None = None) -> None:
        self.in_flight -= 1
        self._wake()

    def note_retry_exhausted(self, metrics: ServerMetrics | None) -> None:
        """Nothing to adapt."""

    def step_completed(self) -> dict[str, float]:
        return {"window": float(self.window)}

    def _admit(self) -> None:
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        if self._watch is not None and self.in_flight >= self._watch[0]:
            self._watch[1].set()

    def _wake(self) -> None:
        while self._parked and self.in_flight < self.window:
            future = self._parked.popleft()
            if not future.done():
                self._admit()
                future.set_result(None)


async def test_a_growing_window_admits_new_prompts_before_any_prompt_is_done(emu: EmulatorProcess) -> None:
    # completions of 20 s: no prompt finishes while the test looks (it stops them all at the end)
    emu.configure(decode_step_base_s=0.01, decode_step_per_seq_s=0.0)
    model = create_deployment(emu, "grow-dep")
    controller = ManualController(window=1)
    pulled = 0

    def lazy() -> Iterator[PromptSpec]:
        nonlocal pulled
        for index in range(1000):
            pulled += 1
            yield PromptSpec(index, prompt_token_ids=[1, 2, 3, index % 400])

    results: list[PromptResult] = []

    async def consume(sampler: DeploymentSampler) -> None:
        stream = sample_prompts(
            sampler, lazy(), n=2, max_tokens=2000, ignore_eos=True, progress_interval_s=3600
        )
        async with aclosing(stream):
            async for result in stream:
                results.append(result)

    async with DeploymentSampler(emu.url, model, emu.api_key, concurrency_controller=controller) as sampler:
        consumer = asyncio.create_task(consume(sampler))
        try:
            await asyncio.wait_for(controller.reached(1), timeout=10)
            await asyncio.sleep(0.1)
            # window 1, n=2: the default prompt window is 4 prompts (8 requests), 1 in flight
            assert controller.in_flight == 1 and pulled <= 4 + 32
            controller.set_window(40)
            try:  # a bound on a hang, not a measurement: it takes milliseconds
                await asyncio.wait_for(controller.reached(40), timeout=10)
            except TimeoutError:
                pytest.fail(f"only {controller.in_flight} requests in flight at window 40")
            assert results == []  # filled while every prompt was still running
            await asyncio.sleep(0.1)
            # the prompt window follows: twice the window's requests, n=2 each (+ a tokenizer batch)
            assert controller.peak_in_flight == 40 and pulled <= 40 + 32
            controller.set_window(3)  # a shrink admits nobody, and pulls no prompt
            before = pulled
            await asyncio.sleep(0.1)
            assert pulled == before and controller.in_flight == 40
        finally:
            consumer.cancel()
            await asyncio.gather(consumer, return_exceptions=True)
    assert controller.in_flight == 0
