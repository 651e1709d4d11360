"""``sample_prompts``: sample many prompts with bounded memory, yielding each prompt's group of
completions as soon as it is complete.

Prompts are pulled lazily from the iterable, chat-templated in small batches, and at most a
bounded number of them are in flight; a prompt that fails for good yields an error result instead
of stopping the batch, except when the deployment is not serving at all
(``DeploymentNotServingError``): then every other prompt would wait out the same not-ready
retries, so the batch stops and raises it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from airflow_fireworks.api.errors import FireworksValidationError
from airflow_fireworks.sampling.completion import SampledCompletion
from airflow_fireworks.sampling.errors import DeploymentNotServingError, SamplingError, SamplingRequestError
from airflow_fireworks.sampling.params import SamplingParams
from airflow_fireworks.sampling.sampler import DeploymentSampler, check_prompt_ids
from airflow_fireworks.sampling.tokenization import render_chat_prompts, validate_messages

log = logging.getLogger(__name__)

#: Prompts chat-templated together in one tokenizer call.
TOKENIZE_BATCH = 32
#: Upper bound of the default number of prompts in flight.
MAX_DEFAULT_PROMPTS_IN_FLIGHT = 1024
#: How often the default prompt window follows the concurrency window between finished prompts.
WINDOW_CHECK_S = 0.02


@dataclass(frozen=True, slots=True)
class PromptSpec:
    """One prompt of a batch: chat ``messages`` or ``prompt_token_ids`` (exactly one), with the
    caller's ``metadata`` carried through to the result (e.g. the reference answer)."""

    index: int
    messages: list[dict[str, Any]] | None = None
    prompt_token_ids: list[int] | None = None
    metadata: dict[str, Any] | None = None


class PromptResult(NamedTuple):
    """The outcome of one prompt: its completions (possibly fewer than ``n`` after the
    ``max_seq_len`` filters), or ``error`` (a payload-free dict) when it failed for good."""

    prompt_index: int
    completions: list[SampledCompletion]
    error: dict[str, Any] | None
    metadata: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class SamplingProgress:
    """A progress snapshot of ``sample_prompts`` (passed to ``on_progress``)."""

    prompts_done: int  # sampled or failed, not counting skipped prompts
    prompts_total: int | None
    prompts_failed: int
    prompts_skipped: int
    completions: int
    completion_tokens: int
    elapsed_s: float
    tokens_per_s: float
    window: int


def error_info(exc: BaseException) -> dict[str, Any]:
    """A payload-free description of why a prompt failed."""
    if isinstance(exc, SamplingRequestError):
        return exc.as_error_record()
    return {"error_type": type(exc).__name__, "message": str(exc)}


class _PromptFeed:
    """Pulls prompt specs lazily and tokenizes them a small batch at a time."""

    def __init__(self, prompts: Iterable[PromptSpec], tokenizer: Any, skip: Collection[int]) -> None:
        self._iterator: Iterator[PromptSpec] = iter(prompts)
        self._tokenizer = tokenizer
        self._skip = skip
        self._ready: deque[tuple[PromptSpec, list[int] | Exception]] = deque()
        self.exhausted = False
        self.skipped = 0

    def has_ready(self) -> bool:
        """True when ``next`` can answer without reading or tokenizing anything."""
        return bool(self._ready) or self.exhausted

    @property
    def drained(self) -> bool:
        """True once every prompt has been handed out."""
        return self.exhausted and not self._ready

    def next(self) -> tuple[PromptSpec, list[int] | Exception] | None:
        """The next prompt with its ids (or the error that rules it out); None after the last one."""
        if not self._ready and not self.exhausted:
            self._fill()
        return self._ready.popleft() if self._ready else None

    def _fill(self) -> None:
        specs: list[PromptSpec] = []
        for spec in self._iterator:
            if not isinstance(spec, PromptSpec):
                raise FireworksValidationError(
                    "prompts",
                    f"items must be PromptSpec(index, messages | prompt_token_ids), got {spec!r:.80}",
                )
            if spec.index in self._skip:
                self.skipped += 1
                continue
            specs.append(spec)
            if len(specs) >= TOKENIZE_BATCH:
                break
        else:
            self.exhausted = True
        results: dict[int, list[int] | Exception] = {}
        to_render: list[int] = []
        for position, spec in enumerate(specs):
            try:
                if (spec.messages is None) == (spec.prompt_token_ids is None):
                    raise FireworksValidationError(
                        f"prompt {spec.index}", "give exactly one of messages or prompt_token_ids"
                    )
                if spec.messages is not None:
                    validate_messages(spec.messages, f"messages of prompt {spec.index}")
                    to_render.append(position)
                else:
                    results[position] = check_prompt_ids(
                        spec.prompt_token_ids, f"prompt_token_ids of prompt {spec.index}"
                    )
            except FireworksValidationError as exc:
                results[position] = exc
        if to_render:
            self._render(specs, to_render, results)
        self._ready.extend((spec, results[position]) for position, spec in enumerate(specs))

    def _render(
        self,
        specs: list[PromptSpec],
        positions: list[int],
        results: dict[int, list[int] | Exception],
    ) -> None:
        try:
            rendered = render_chat_prompts(self._tokenizer, [specs[p].messages or [] for p in positions])
        except FireworksValidationError:
            raise  # no tokenizer: a setup error, not a bad prompt
        except Exception:  # one bad prompt in the batch: find it by rendering one at a time
            for position in positions:
                try:
                    results[position] = render_chat_prompts(
                        self._tokenizer, [specs[position].messages or []]
                    )[0]
                except Exception as exc:
                    results[position] = exc
            return
        for position, ids in zip(positions, rendered, strict=True):
            results[position] = ids


async def sample_prompts(
    sampler: DeploymentSampler,
    prompts: Iterable[PromptSpec],
    *,
    skip_prompt_indices: Collection[int] = (),
    max_prompts_in_flight: int | None = None,
    progress_interval_s: float = 10.0,
    on_progress: Callable[[SamplingProgress], None] | None = None,
    params: SamplingParams | None = None,
    **sampling: Any,
) -> AsyncGenerator[PromptResult, None]:
    """Sample ``n`` completions for every prompt; yield one ``PromptResult`` per prompt as it
    finishes (not in input order).

    The sampling parameters are ``params``, or the keyword arguments of ``sample_with_tokens``
    (``n``, ``max_tokens``, ``temperature``, ...); they are checked before the first request
    (``FireworksValidationError``). Prompts whose index is in ``skip_prompt_indices`` (e.g. already
    written by an interrupted run) are skipped. At most ``max_prompts_in_flight`` prompts are
    sampled at once (default: enough prompts for twice the concurrency window's requests, at most
    1024, following the window within ``WINDOW_CHECK_S`` as it grows rather than only when a
    prompt's last completion ends: a window that grows fast on a cold step is filled at once).
    Progress is logged every ``progress_interval_s`` seconds and passed to ``on_progress``.
    Raises ``DeploymentNotServingError`` (after yielding what finished before it, and cancelling
    the rest) when the deployment does not serve: no other prompt could succeed either.
    """
    if params is None:
        params = SamplingParams.from_kwargs(**sampling)
    elif sampling:
        raise FireworksValidationError(
            "params", f"give SamplingParams or keyword arguments, not both: {sorted(sampling)}"
        )
    request = sampler.prepare(params)
    if max_prompts_in_flight is not None and (
        isinstance(max_prompts_in_flight, bool)
        or not isinstance(max_prompts_in_flight, int)
        or max_prompts_in_flight < 1
    ):
        raise FireworksValidationError("max_prompts_in_flight", "must be an integer >= 1 (or None)")
    if not isinstance(progress_interval_s, int | float) or not progress_interval_s > 0:
        raise FireworksValidationError("progress_interval_s", "must be a number of seconds > 0")
    skip = (
        skip_prompt_indices
        if isinstance(skip_prompt_indices, set | frozenset)
        else frozenset(skip_prompt_indices)
    )
    total = len(prompts) if isinstance(prompts, Collection) else None
    tracker = _Progress(sampler, total, progress_interval_s, on_progress)
    feed = _PromptFeed(prompts, sampler.tokenizer, skip)
    loop = asyncio.get_running_loop()
    in_flight: dict[asyncio.Task[list[SampledCompletion]], PromptSpec] = {}
    finished = _Finished()

    def capacity() -> int:
        if max_prompts_in_flight is not None:
            return max_prompts_in_flight
        window = sampler.concurrency_controller.window_size
        return min(MAX_DEFAULT_PROMPTS_IN_FLIGHT, max(4, math.ceil(2 * window / params.n)))

    try:
        while True:
            while len(in_flight) < capacity():
                # Refills read the prompt source and chat-template a batch: keep that blocking work
                # off the event loop, where it would stall every stream in flight.
                item = feed.next() if feed.has_ready() else await asyncio.to_thread(feed.next)
                if item is None:
                    break
                spec, ids = item
                if isinstance(ids, Exception):
                    tracker.failed(spec.index, ids)
                    yield PromptResult(spec.index, [], error_info(ids), spec.metadata)
                    continue
                task = loop.create_task(sampler.sample_prompt_ids(ids, request))
                task.add_done_callback(finished.add)
                in_flight[task] = spec
            tracker.skipped = feed.skipped
            if not in_flight:
                break
            timeout = tracker.seconds_to_report()
            if max_prompts_in_flight is None and not feed.drained:
                # the window may grow long before a whole group is done: follow it meanwhile
                timeout = min(timeout, WINDOW_CHECK_S)
            done = await finished.wait(timeout)
            not_serving: DeploymentNotServingError | None = None
            for task in sorted(done, key=lambda t: in_flight[t].index):
                spec = in_flight.pop(task)
                try:
                    completions = task.result()
                except DeploymentNotServingError as exc:
                    not_serving = not_serving or exc  # yield the rest of this round first
                    continue
                except SamplingError as exc:
                    tracker.failed(spec.index, exc)
                    yield PromptResult(spec.index, [], error_info(exc), spec.metadata)
                    continue
                tracker.succeeded(completions)
                yield PromptResult(spec.index, completions, None, spec.metadata)
            if not_serving is not None:
                tracker.report(final=True)
                raise not_serving
            tracker.maybe_report()
        tracker.report(final=True)
    finally:
        for task in in_flight:
            task.cancel()
        if in_flight:
            await asyncio.gather(*in_flight, return_exceptions=True)


class _Finished:
    """The prompt tasks that finished since the last ``wait``; a wait costs the same however many
    tasks are in flight (it is also woken by a timer to follow the window)."""

    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[list[SampledCompletion]]] = []
        self._event = asyncio.Event()

    def add(self, task: asyncio.Task[list[SampledCompletion]]) -> None:
        """A task's done callback."""
        self._tasks.append(task)
        self._event.set()

    async def wait(self, within_s: float) -> list[asyncio.Task[list[SampledCompletion]]]:
        """The tasks finished since the last call; waits up to ``within_s`` seconds for one."""
        if not self._tasks:
            timer = asyncio.get_running_loop().call_later(within_s, self._event.set)
            try:
                await self._event.wait()
            finally:
                timer.cancel()
        self._event.clear()
        done, self._tasks = self._tasks, []
        return done


class _Progress:
    """Counts results and reports them at a steady cadence."""

    def __init__(
        self,
        sampler: DeploymentSampler,
        total: int | None,
        interval_s: float,
        on_progress: Callable[[SamplingProgress], None] | None,
    ) -> None:
        self._sampler = sampler
        self._total = total
        self._interval_s = float(interval_s)
        self._on_progress = on_progress
        self._started = time.monotonic()
        self._next_report = self._started + self._interval_s
        self._last_report = self._started
        self._last_tokens = 0
        self.done = 0
        self.failed_count = 0
        self.skipped = 0
        self.completions = 0
        self.tokens = 0

    def seconds_to_report(self) -> float:
        return max(0.0, self._next_report - time.monotonic())

    def succeeded(self, completions: list[SampledCompletion]) -> None:
        self.done += 1
        self.completions += len(completions)
        self.tokens += sum(c.completion_len for c in completions)

    def failed(self, prompt_index: int, exc: BaseException | None) -> None:
        self.done += 1
        self.failed_count += 1
        log.warning("Prompt %d failed and is recorded as an error: %s", prompt_index, exc)

    def maybe_report(self) -> None:
        if time.monotonic() >= self._next_report:
            self.report()

    def report(self, final: bool = False) -> None:
        now = time.monotonic()
        if final:
            rate = self.tokens / max(now - self._started, 1e-9)
        else:
            rate = (self.tokens - self._last_tokens) / max(now - self._last_report, 1e-9)
        self._last_report, self._last_tokens = now, self.tokens
        self._next_report = now + self._interval_s
        window = self._sampler.concurrency_controller.window_size
        log.info(
            "%s: %d/%s prompts done (%d failed, %d skipped), %d completions, %.0f completion tokens/s, "
            "window %d",
            "Sampling finished" if final else "Sampling progress",
            self.done + self.skipped,
            "?" if self._total is None else self._total,
            self.failed_count,
            self.skipped,
            self.completions,
            rate,
            window,
        )
        if self._on_progress is not None:
            self._on_progress(
                SamplingProgress(
                    prompts_done=self.done,
                    prompts_total=self._total,
                    prompts_failed=self.failed_count,
                    prompts_skipped=self.skipped,
                    completions=self.completions,
                    completion_tokens=self.tokens,
                    elapsed_s=now - self._started,
                    tokens_per_s=rate,
                    window=window,
                )
            )
