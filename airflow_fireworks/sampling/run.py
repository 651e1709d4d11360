"""A sampling run of one shard of prompts, without Airflow: its concurrency controller, what it
sampled (prompts, completions, tokens, finish reasons), a bounded timeline of throughput and
concurrency, the snapshot identities the replicas served, and the summary and manifest built
from them.

``FireworksSampleOperator`` drives one ``SamplingRun`` per task try (it adds templating, XCom,
object storage and cancellation); a script can drive one the same way.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from contextlib import aclosing, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from airflow_fireworks.api.errors import FireworksValidationError
from airflow_fireworks.sampling.batch import PromptResult, PromptSpec, sample_prompts
from airflow_fireworks.sampling.concurrency import (
    AdaptiveConcurrencyController,
    ConcurrencyController,
    FixedConcurrencyController,
)
from airflow_fireworks.sampling.params import SamplingParams, parse_number
from airflow_fireworks.sampling.sampler import DeploymentSampler

MANIFEST_FORMAT = "airflow-fireworks/sample-shard/v1"
#: Keys of the manifest that are also the task's XCom summary (plus ``reused``).
SUMMARY_KEYS = (
    "model", "tokenizer", "shard_index", "num_shards",
    "num_prompts", "num_prompts_sampled", "num_prompts_resumed", "num_prompts_failed", "num_prompts_skipped",
    "num_completions", "prompt_tokens", "completion_tokens", "finish_reasons",
    "throughput", "controller", "served_identity", "completions_uri", "errors_uri", "manifest_uri",
)  # fmt: skip
#: Error summaries kept in the manifest (every error record is in errors.jsonl).
MANIFEST_ERRORS = 100
#: The timeline keeps at most this many points: its interval doubles when it would grow beyond.
TIMELINE_MAX_POINTS = 600
TIMELINE_FIRST_INTERVAL_S = 0.5
_ERROR_SUMMARY_KEYS = (
    "prompt_index", "error_type", "message", "final_status", "final_error_kind", "attempts",
    "logical_request_id",
)  # fmt: skip


# -- the concurrency controller ---------------------------------------------------------------


def concurrency_spec(value: Any) -> dict[str, Any]:
    """``{"mode": "adaptive", **params}`` or ``{"mode": "fixed", "max_concurrency": n}`` from
    ``"adaptive"``, an integer (a fixed window) or a dict of ``AdaptiveConcurrencyController``
    parameters; numbers may be numeric strings (a rendered template)."""
    if value == "adaptive":
        return {"mode": "adaptive"}
    value = parse_number(value)
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise FireworksValidationError("concurrency", f"a fixed concurrency must be >= 1, got {value}")
        return {"mode": "fixed", "max_concurrency": value}
    if isinstance(value, Mapping):
        value = {name: parse_number(param) for name, param in value.items()}
        known = [
            name
            for name, param in inspect.signature(AdaptiveConcurrencyController).parameters.items()
            if param.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        ]
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise FireworksValidationError(
                "concurrency", f"unknown AdaptiveConcurrencyController parameter(s) {unknown}; known: {known}"
            )
        try:
            AdaptiveConcurrencyController(**value)
        except FireworksValidationError as err:
            raise FireworksValidationError("concurrency", str(err)) from None
        return {"mode": "adaptive", **value}
    raise FireworksValidationError(
        "concurrency",
        f"must be 'adaptive', an integer (fixed window) or a dict of AdaptiveConcurrencyController "
        f"parameters, got {value!r}",
    )


def make_controller(spec: Mapping[str, Any]) -> ConcurrencyController:
    """A new controller from a ``concurrency_spec``."""
    params = {k: v for k, v in spec.items() if k != "mode"}
    if spec["mode"] == "fixed":
        return FixedConcurrencyController(params["max_concurrency"])
    return AdaptiveConcurrencyController(**params)


# -- counting -----------------------------------------------------------------------------------


@dataclass
class Tally:
    """Counts over completion groups: completions, tokens, finish reasons, max_seq_len drops."""

    n: int
    completions: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reasons: Counter[str] = field(default_factory=Counter)
    dropped_by_max_seq_len: int = 0

    def add_group(
        self, prompt_lens: Iterable[int], completion_lens: Iterable[int], finish_reasons: Iterable[str]
    ) -> None:
        """Count one prompt's group (fewer than ``n`` records: the rest fell to ``max_seq_len``)."""
        before = self.completions
        for prompt_len, completion_len, reason in zip(
            prompt_lens, completion_lens, finish_reasons, strict=True
        ):
            self.completions += 1
            self.prompt_tokens += prompt_len
            self.completion_tokens += completion_len
            self.finish_reasons[reason] += 1
        self.dropped_by_max_seq_len += max(0, self.n - (self.completions - before))


def served_identity(seen: Sequence[list[str | None]]) -> dict[str, Any] | None:
    """``{"start", "end", "changed"}`` from the identities the replicas served, as read before and
    after sampling (earliest first); None when they were not read. A change of replica count
    serving the same identity is no change; a replica serving anything else is."""
    if not seen:
        return None
    start = seen[0]
    return {"start": start, "end": seen[-1], "changed": any(set(ids) != set(start) for ids in seen)}


def failed_fraction(summary: Mapping[str, Any]) -> float:
    """The share of a summary's prompts that failed."""
    return float(summary["num_prompts_failed"]) / max(1, summary["num_prompts"])


# -- the run ------------------------------------------------------------------------------------


@dataclass
class SamplingRun:
    """What one run sampled, a timeline of throughput and concurrency, and the snapshot identities
    the replicas served (``served``: one list per read, earliest first, earlier runs' included)."""

    n: int
    controller: ConcurrencyController
    started: float = field(default_factory=time.monotonic)
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    finished: float | None = None
    prompts_sampled: int = 0
    prompts_failed: int = 0
    prompts_skipped: int = 0
    tally: Tally = field(init=False)
    timeline: list[dict[str, float]] = field(default_factory=list)
    timeline_interval_s: float = TIMELINE_FIRST_INTERVAL_S
    served: list[list[str | None]] = field(default_factory=list)
    #: The controller's step summary once the run ended (``final_window`` included).
    controller_stats: dict[str, float] = field(default_factory=dict)
    #: GPU time the run spent on its deployment (replicas x accelerators x wall time), when known.
    gpu_time: dict[str, Any] | None = None

    #: the controller's (sum, count) of prefill-queue times at the start and at each timeline point
    _pq_start: tuple[float, int] = field(init=False, repr=False)
    _pq_marks: list[tuple[float, int]] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        self.tally = Tally(self.n)
        self._pq_start = self._prefill_queue_observed()

    def _prefill_queue_observed(self) -> tuple[float, int]:
        """The controller's running (sum, count) of prefill-queue times ((0, 0) if it keeps none)."""
        observed = getattr(self.controller, "prefill_queue_observed", None)
        return observed if isinstance(observed, tuple) else (0.0, 0)

    def add(self, result: PromptResult) -> None:
        """Count one prompt's outcome."""
        self.prompts_sampled += 1
        if result.error is not None:
            self.prompts_failed += 1
        elif not result.completions:
            self.prompts_skipped += 1
        else:
            completions = result.completions
            self.tally.add_group(
                [c.prompt_len for c in completions],
                [c.completion_len for c in completions],
                [c.finish_reason for c in completions],
            )

    @property
    def elapsed_s(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    def sample_timeline(self) -> None:
        """Append a point; past ``TIMELINE_MAX_POINTS`` keep every other one and sample half as often.

        ``prefill_queue_s`` (present when any request finished since the previous point) is the
        mean prefill-queue time of the requests that finished in between: what an adaptive
        controller steered its window on."""
        self._pq_marks.append(self._prefill_queue_observed())
        self.timeline.append(
            {
                "t_s": round(self.elapsed_s, 3),
                "completions": self.tally.completions,
                "completion_tokens": self.tally.completion_tokens,
                "tokens_per_s": 0.0,
                "window": self.controller.window_size,
                "in_flight": self.controller.in_flight,
            }
        )
        if len(self.timeline) > TIMELINE_MAX_POINTS:
            self.timeline = self.timeline[1::2]
            self._pq_marks = self._pq_marks[1::2]
            self.timeline_interval_s *= 2
            start = 0
        else:
            start = len(self.timeline) - 1
        for position in range(start, len(self.timeline)):
            point = self.timeline[position]
            before = self.timeline[position - 1] if position else {"t_s": 0.0, "completion_tokens": 0}
            span = point["t_s"] - before["t_s"]
            point["tokens_per_s"] = (
                round((point["completion_tokens"] - before["completion_tokens"]) / span, 1)
                if span > 0
                else 0.0
            )
            queue_sum, queue_count = self._pq_marks[position]
            before_sum, before_count = self._pq_marks[position - 1] if position else self._pq_start
            point.pop("prefill_queue_s", None)
            if queue_count > before_count:
                point["prefill_queue_s"] = round((queue_sum - before_sum) / (queue_count - before_count), 4)

    async def _run_timeline(self) -> None:
        while True:
            await asyncio.sleep(self.timeline_interval_s)
            self.sample_timeline()

    def throughput(self) -> dict[str, float]:
        seconds = max(self.elapsed_s, 1e-9)
        return {
            "sampling_s": round(self.elapsed_s, 3),
            "prompts_per_s": round(self.prompts_sampled / seconds, 3),
            "completions_per_s": round(self.tally.completions / seconds, 3),
            "completion_tokens_per_s": round(self.tally.completion_tokens / seconds, 1),
        }

    async def sample(
        self,
        sampler: DeploymentSampler,
        prompts: Iterable[PromptSpec],
        params: SamplingParams,
        sink: Callable[[PromptResult], Awaitable[None]],
        *,
        skip: Collection[int] = (),
        progress_interval_s: float = 10.0,
    ) -> None:
        """Sample every prompt not in ``skip``, counting each result and handing it to ``sink``;
        the sampler is closed at the end. Closing the results ends the requests still in flight
        (on cancellation or error). ``controller_stats`` is set when the run completes."""
        ticker = asyncio.create_task(self._run_timeline())
        self.sample_timeline()
        try:
            results = sample_prompts(
                sampler,
                prompts,
                params=params,
                skip_prompt_indices=skip,
                progress_interval_s=progress_interval_s,
            )
            async with sampler, aclosing(results):
                async for result in results:
                    self.add(result)
                    await sink(result)
        finally:
            ticker.cancel()
            with suppress(asyncio.CancelledError):
                await ticker
            self.finished = time.monotonic()
            self.sample_timeline()
        # ``final_window`` lets the next step start where this one ended (``initial_window``);
        # ``prefill_queue_target`` is what the timeline's ``prefill_queue_s`` is steered to.
        self.controller_stats = {
            **self.controller.step_completed(),
            "final_window": self.controller.window_size,
        }
        target = getattr(self.controller, "prefill_queue_target", None)
        if isinstance(target, float):
            self.controller_stats["prefill_queue_target"] = target

    # -- summary and manifest ------------------------------------------------------------------

    def summary(
        self,
        inputs: Mapping[str, Any],
        *,
        num_prompts: int,
        resumed: int,
        failed: int,
        skipped: int,
        tally: Tally,
        uris: tuple[str | None, str | None, str | None] = (None, None, None),
    ) -> dict[str, Any]:
        """The ``SUMMARY_KEYS`` of a shard: ``inputs`` names it, the counts cover ``num_prompts``
        (``tally`` may include earlier runs'), ``uris`` are its completions, errors and manifest."""
        return {
            "model": inputs["model"],
            "tokenizer": inputs["tokenizer"],
            "shard_index": inputs["shard_index"],
            "num_shards": inputs["num_shards"],
            "num_prompts": num_prompts,
            "num_prompts_sampled": self.prompts_sampled,
            "num_prompts_resumed": resumed,
            "num_prompts_failed": failed,
            "num_prompts_skipped": skipped,
            "num_completions": tally.completions,
            "prompt_tokens": tally.prompt_tokens,
            "completion_tokens": tally.completion_tokens,
            "finish_reasons": dict(tally.finish_reasons),
            "throughput": self.throughput(),
            "controller": {
                k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.controller_stats.items()
            },
            "served_identity": served_identity(self.served),
            "completions_uri": uris[0],
            "errors_uri": uris[1],
            "manifest_uri": uris[2],
        }

    def manifest(
        self,
        inputs: Mapping[str, Any],
        *,
        num_prompts: int,
        resumed: int,
        tally: Tally,
        errors: Sequence[Mapping[str, Any]],
        skipped: list[int],
        uris: tuple[str, str, str],
        prompts_source: str,
        concurrency: Mapping[str, Any],
        consolidation_s: float,
        try_number: int,
        earlier_tries: Sequence[Mapping[str, Any]] = (),
    ) -> dict[str, Any]:
        """The manifest of a finished shard: its summary, inputs, errors (``errors``: one record
        per failed prompt, with ``prompt_index``), timing, timeline, and one entry per task try."""
        summary = self.summary(
            inputs,
            num_prompts=num_prompts,
            resumed=resumed,
            failed=len(errors),
            skipped=len(skipped),
            tally=tally,
            uris=uris,
        )
        return {
            **summary,
            "format": MANIFEST_FORMAT,
            "inputs": inputs,
            "prompts_source": prompts_source,
            "sampling": inputs["sampling"],
            "concurrency": concurrency,
            "completions_dropped_by_max_seq_len": tally.dropped_by_max_seq_len,
            "skipped_prompt_indices": skipped,
            "errors_by_kind": dict(Counter(_error_kind(e) for e in errors)),
            "errors": [{key: e.get(key) for key in _ERROR_SUMMARY_KEYS} for e in errors[:MANIFEST_ERRORS]],
            "timing": {
                "started_at": self.started_at,
                "finished_at": datetime.now(UTC).isoformat(),
                "sampling_s": round(self.elapsed_s, 3),
                "consolidation_s": round(consolidation_s, 3),
            },
            "timeline": self.timeline,
            **({"gpu_time": self.gpu_time} if self.gpu_time is not None else {}),
            "attempts": [  # one per task try (the name is the manifest format's)
                *earlier_tries,
                {
                    "try_number": try_number,
                    "prompts_sampled": self.prompts_sampled,
                    "prompts_failed": self.prompts_failed,
                    "prompts_resumed": resumed,
                    "sampling_s": round(self.elapsed_s, 3),
                },
            ],
        }


def _error_kind(error: Mapping[str, Any]) -> str:
    return str(error.get("final_error_kind") or error.get("error_type"))
