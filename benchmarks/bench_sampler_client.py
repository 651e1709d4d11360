"""Client CPU per 1,000 streamed completions: DeploymentSampler vs minimal hand-written clients.

Every variant sends the same streamed requests (token-id prompts, ``n: 1``, fixed-length
completions) to an emulator subprocess on loopback, at the same concurrency, in the same run.
The figure is ``time.process_time()`` of this (client) process; the emulator's CPU is not counted.
Variants alternate round by round and the median round is reported.

    python benchmarks/bench_sampler_client.py [--quick] [--completions N] [--rounds R]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _emulator import ready_deployment, running_emulator

from airflow_fireworks.sampling import (
    DeploymentSampler,
    FixedConcurrencyController,
    PromptSpec,
    sample_prompts,
)
from airflow_fireworks.testing import EmulatorProcess

N_PER_PROMPT = 4
PROMPT_TOKENS = 40


class Workload:
    """The requests every variant sends: ``prompts`` x ``n`` completions of ``max_tokens`` tokens."""

    def __init__(
        self, emulator: EmulatorProcess, model: str, completions: int, max_tokens: int, concurrency: int
    ) -> None:
        self.emulator = emulator
        self.model = model
        self.max_tokens = max_tokens
        self.concurrency = concurrency
        self.prompts = [
            [1] + [(7 * i + j) % 560 + 3 for j in range(PROMPT_TOKENS - 1)]
            for i in range(completions // N_PER_PROMPT)
        ]
        self.url = f"{emulator.url}/inference/v1/completions"
        self.headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {emulator.api_key}",
        }

    @property
    def completions(self) -> int:
        return len(self.prompts) * N_PER_PROMPT

    def body(self, prompt: list[int]) -> bytes:
        return json.dumps(
            {
                "model": self.model,
                "prompt": prompt,
                "n": 1,
                "max_tokens": self.max_tokens,
                "temperature": 1.0,
                "top_p": 1.0,
                "top_k": 0,
                "stream": True,
                "raw_output": True,
                "perf_metrics_in_response": True,
                "ignore_eos": True,
            }
        ).encode()


def _check(tokens: int, workload: Workload) -> None:
    expected = workload.completions * workload.max_tokens
    if tokens != expected:
        raise RuntimeError(f"received {tokens} completion tokens, expected {expected}")


def _parse_line(line: bytes, state: dict[str, Any]) -> None:
    if not line.startswith(b"data:"):
        return
    data = line[5:].strip()
    if not data or data == b"[DONE]":
        return
    choice = json.loads(data)["choices"][0]
    state["text"].append(choice["text"])
    if choice.get("finish_reason"):
        state["ids"] = choice["raw_output"]["completion_token_ids"]


async def minimal_aiohttp(workload: Workload) -> None:
    """What one would write by hand: a semaphore, ``post``, iterate lines, ``json.loads`` each."""
    semaphore = asyncio.Semaphore(workload.concurrency)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one(prompt: list[int]) -> int:
            async with (
                semaphore,
                session.post(workload.url, data=workload.body(prompt), headers=workload.headers) as r,
            ):
                state: dict[str, Any] = {"text": [], "ids": []}
                async for line in r.content:
                    _parse_line(line, state)
                return len(state["ids"])

        counts = await asyncio.gather(*(one(p) for p in workload.prompts for _ in range(N_PER_PROMPT)))
    _check(sum(counts), workload)


async def minimal_httpx(workload: Workload) -> None:
    """The same minimal client written with httpx (``stream`` + ``aiter_lines``)."""
    semaphore = asyncio.Semaphore(workload.concurrency)
    limits = httpx.Limits(
        max_connections=workload.concurrency, max_keepalive_connections=workload.concurrency
    )
    async with httpx.AsyncClient(limits=limits, timeout=600) as client:

        async def one(prompt: list[int]) -> int:
            async with (
                semaphore,
                client.stream(
                    "POST", workload.url, content=workload.body(prompt), headers=workload.headers
                ) as r,
            ):
                state: dict[str, Any] = {"text": [], "ids": []}
                async for line in r.aiter_lines():
                    _parse_line(line.encode(), state)
                return len(state["ids"])

        counts = await asyncio.gather(*(one(p) for p in workload.prompts for _ in range(N_PER_PROMPT)))
    _check(sum(counts), workload)


def _sampler(workload: Workload) -> DeploymentSampler:
    return DeploymentSampler(
        workload.emulator.url,
        workload.model,
        workload.emulator.api_key,
        concurrency_controller=FixedConcurrencyController(workload.concurrency),
    )


async def sampler_sample_with_tokens(workload: Workload) -> None:
    """``DeploymentSampler.sample_with_tokens(prompt_token_ids=..., n=4)``, all prompts gathered."""
    async with _sampler(workload) as sampler:
        results = await asyncio.gather(
            *(
                sampler.sample_with_tokens(
                    prompt_token_ids=p, n=N_PER_PROMPT, max_tokens=workload.max_tokens, ignore_eos=True
                )
                for p in workload.prompts
            )
        )
    _check(sum(c.completion_len for group in results for c in group), workload)


async def sampler_sample_prompts(workload: Workload) -> None:
    """The batch entry point ``sample_prompts`` (lazy prompts, bounded in flight)."""
    tokens = 0
    async with _sampler(workload) as sampler:
        specs = (PromptSpec(i, prompt_token_ids=p) for i, p in enumerate(workload.prompts))
        async for result in sample_prompts(
            sampler,
            specs,
            n=N_PER_PROMPT,
            max_tokens=workload.max_tokens,
            ignore_eos=True,
            progress_interval_s=3600,
        ):
            tokens += sum(c.completion_len for c in result.completions)
    _check(tokens, workload)


VARIANTS: dict[str, Callable[[Workload], Awaitable[None]]] = {
    "minimal aiohttp client": minimal_aiohttp,
    "DeploymentSampler.sample_with_tokens": sampler_sample_with_tokens,
    "sample_prompts (batch entry)": sampler_sample_prompts,
    "minimal httpx client": minimal_httpx,
}


async def measure(variant: Callable[[Workload], Awaitable[None]], workload: Workload) -> tuple[float, float]:
    """(client CPU seconds, wall seconds) of one run."""
    cpu, wall = time.process_time(), time.perf_counter()
    await variant(workload)
    return time.process_time() - cpu, time.perf_counter() - wall


async def run(args: argparse.Namespace, emulator: EmulatorProcess) -> dict[str, list[tuple[float, float]]]:
    model = ready_deployment(emulator, "bench-client")
    workload = Workload(emulator, model, args.completions, args.max_tokens, args.concurrency)
    warmup = Workload(emulator, model, 4 * N_PER_PROMPT, args.max_tokens, args.concurrency)
    for variant in VARIANTS.values():
        await variant(warmup)
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name, variant in VARIANTS.items():
            runs[name].append(await measure(variant, workload))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="one short round (smoke run)")
    parser.add_argument("--completions", type=int, default=1000, help="completions per variant per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens per completion")
    parser.add_argument("--chunk-tokens", type=int, default=4, help="completion tokens per SSE chunk")
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    if args.quick:
        args.completions, args.rounds = 200, 1
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    settings = {
        "create_delay_s": 0.05,
        "decode_slots": 512,
        "decode_step_base_s": 0.0005,
        "decode_step_per_seq_s": 0.0,
        "stream_chunk_tokens": args.chunk_tokens,
        "request_log_size": 0,
    }
    with running_emulator(**settings) as emulator:
        runs = asyncio.run(run(args, emulator))

    completions = (args.completions // N_PER_PROMPT) * N_PER_PROMPT
    chunks = -(-args.max_tokens // args.chunk_tokens) + 1
    print(
        f"\nClient CPU per 1,000 streamed completions ({completions} completions x {args.rounds} round(s), "
        f"{args.max_tokens} tokens in ~{chunks} SSE chunks each, concurrency {args.concurrency}, "
        f"emulator on loopback; median round)\n"
    )
    baseline = statistics.median(cpu for cpu, _ in runs["minimal aiohttp client"]) * 1000 / completions
    header = f"{'client':<40} {'CPU s / 1k':>11} {'vs minimal aiohttp':>19} {'wall s / round':>15}"
    print(header)
    print("-" * len(header))
    for name, results in runs.items():
        cpu = statistics.median(c for c, _ in results) * 1000 / completions
        wall = statistics.median(w for _, w in results)
        print(f"{name:<40} {cpu:>11.3f} {cpu / baseline:>18.2f}x {wall:>15.2f}")
    sampler_cpu = statistics.median(c for c, _ in runs["DeploymentSampler.sample_with_tokens"])
    httpx_cpu = statistics.median(c for c, _ in runs["minimal httpx client"])
    aiohttp_cpu = statistics.median(c for c, _ in runs["minimal aiohttp client"])
    print(f"\nratio DeploymentSampler / minimal aiohttp client: {sampler_cpu / aiohttp_cpu:.2f}")
    print(f"ratio minimal httpx / minimal aiohttp client:     {httpx_cpu / aiohttp_cpu:.2f}")


if __name__ == "__main__":
    main()
