"""One replica's serving engine: FIFO prefill queue, continuous-batching decode, prefix cache.

A single task per replica ticks decode steps for every active sequence (no task per request or
per token). Each sequence's output is planned up front; the engine only decides *when* tokens
become visible, and wakes the waiting handler once per ``stream_chunk_tokens`` tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from airflow_fireworks.emulator.settings import Settings

if TYPE_CHECKING:
    from airflow_fireworks.emulator.core import Stats

BLOCK_TOKENS = 16
PREFIX_CACHE_BLOCKS = 200_000
MIN_SLEEP_S = 0.0005


def prefix_hashes(prompt: list[int]) -> list[int]:
    """Chained hashes of the prompt's complete 16-token blocks (the prefix cache's keys)."""
    hashes: list[int] = []
    previous = 0
    for start in range(0, len(prompt) - BLOCK_TOKENS + 1, BLOCK_TOKENS):
        previous = hash((previous, *prompt[start : start + BLOCK_TOKENS]))
        hashes.append(previous)
    return hashes


class Sequence:
    """One request inside an engine, with the timestamps its metrics are computed from."""

    __slots__ = (
        "arrival",
        "blocks",
        "cached_tokens",
        "concurrent_at_arrival",
        "finished_at",
        "first_token_at",
        "notify_every",
        "progress",
        "prompt_tokens",
        "queued_until",
        "ready_at",
        "started",
        "total",
        "visible",
        "waiter",
    )

    def __init__(self, prompt_tokens: int, blocks: list[int], total: int, notify_every: int) -> None:
        self.prompt_tokens = prompt_tokens
        self.blocks = blocks
        self.total = total
        self.notify_every = notify_every
        self.arrival = 0.0
        self.queued_until = 0.0
        self.ready_at = 0.0
        self.first_token_at = 0.0
        self.finished_at: float | None = None
        self.cached_tokens = 0
        self.concurrent_at_arrival = 0
        self.progress = 0.0
        self.started = False
        self.visible = 0
        self.waiter: asyncio.Future[None] | None = None

    @property
    def done(self) -> bool:
        return self.finished_at is not None

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        """Until more tokens are visible or the sequence finished (or the engine closed)."""
        self.waiter = asyncio.get_running_loop().create_future()
        await self.waiter


class EngineClosed(Exception):
    """The replica went away before the request was admitted."""


class Engine:
    """The continuous-batching loop of one replica."""

    def __init__(self, settings: Callable[[], Settings], stats: Callable[[], Stats]) -> None:
        self._settings = settings
        self._stats = stats
        self.queue: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.prefix_cache: dict[int, None] = {}
        self._prefill_free_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self.closed = False

    @property
    def load(self) -> int:
        """Requests queued or running (for least-loaded routing)."""
        return len(self.queue) + len(self.running)

    def submit(self, sequence: Sequence) -> None:
        """Queue a sequence; the loop starts if it was idle."""
        if self.closed:
            raise EngineClosed()
        loop = asyncio.get_running_loop()
        sequence.arrival = loop.time()
        sequence.concurrent_at_arrival = len(self.queue) + len(self.running)
        self.queue.append(sequence)
        stats = self._stats()
        stats.peak_prefill_queue_length = max(stats.peak_prefill_queue_length, len(self.queue))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run())

    def abort(self, sequence: Sequence) -> None:
        """Forget a sequence whose client went away."""
        if sequence in self.running:
            self.running.remove(sequence)
        else:
            with contextlib.suppress(ValueError):
                self.queue.remove(sequence)

    def clear_prefix_cache(self) -> None:
        self.prefix_cache.clear()

    def close(self) -> None:
        """Stop admitting; queued requests are woken and see the engine closed."""
        self.closed = True
        for sequence in self.queue:
            sequence._wake()
        self.queue.clear()

    def _admit(self, sequence: Sequence, now: float, settings: Settings) -> None:
        cache = self.prefix_cache
        hits = 0
        for block in sequence.blocks:
            if block not in cache:
                break
            hits += 1
        cached = min(hits * BLOCK_TOKENS, max(sequence.prompt_tokens - 1, 0))
        for block in sequence.blocks:
            cache.pop(block, None)
            cache[block] = None
        while len(cache) > PREFIX_CACHE_BLOCKS:
            del cache[next(iter(cache))]
        start = max(now, self._prefill_free_at)
        sequence.cached_tokens = cached
        sequence.queued_until = start
        sequence.ready_at = start + (sequence.prompt_tokens - cached) / settings.prefill_tokens_per_s
        self._prefill_free_at = sequence.ready_at
        stats = self._stats()
        waited = start - sequence.arrival
        if waited > stats.peak_prefill_queue_duration_s:
            stats.peak_prefill_queue_duration_s = waited
        self.running.append(sequence)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        decoding = 0
        while self.queue or self.running:
            now = loop.time()
            settings = self._settings()
            step = settings.decode_step_base_s + settings.decode_step_per_seq_s * max(decoding, 1)
            finished: list[Sequence] = []
            decoding = 0
            for sequence in self.running:
                if sequence.ready_at > now:
                    continue
                first = not sequence.started
                if first:
                    sequence.started = True
                    sequence.first_token_at = sequence.ready_at
                    sequence.progress = 1.0 + (now - sequence.ready_at) / step if step > 0 else sequence.total
                else:
                    sequence.progress += (now - last) / step if step > 0 else sequence.total
                visible = min(sequence.total, int(sequence.progress))
                if first:
                    sequence.visible = visible
                    sequence._wake()
                if visible >= sequence.total:
                    sequence.visible = sequence.total
                    sequence.finished_at = now
                    finished.append(sequence)
                    sequence._wake()
                    continue
                decoding += 1
                if visible // sequence.notify_every > sequence.visible // sequence.notify_every:
                    sequence.visible = visible
                    sequence._wake()
            for sequence in finished:
                self.running.remove(sequence)
            last = now
            slots = settings.decode_slots
            while self.queue and len(self.running) < slots:
                self._admit(self.queue.popleft(), now, settings)
            pending = [s.ready_at for s in self.running if s.ready_at > now]
            if decoding:
                delay = settings.decode_step_base_s + settings.decode_step_per_seq_s * decoding
            elif pending:
                delay = min(pending) - now
            else:
                delay = 0.0
            await asyncio.sleep(max(delay, MIN_SLEEP_S))
        self._task = None
