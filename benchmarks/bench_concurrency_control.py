"""Goodput and prefill-queue time: adaptive (AIMD) concurrency vs fixed windows vs no limit.

An emulator subprocess on loopback plays one replica with continuous batching (``decode_slots``
sequences decode at once; more requests wait in the prefill queue). Each controller samples the
same RL-like steps (``sample_prompts``, ``n`` completions per prompt, fixed-length completions,
``step_completed()`` between steps). Goodput = completion tokens received / wall time; the prefill
queue time is the server's ``prefill-queue-duration`` of every completion.

    python benchmarks/bench_concurrency_control.py [--quick] [--steps S] [--prompts P]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _emulator import ready_deployment, running_emulator

from airflow_fireworks.sampling import (
    AdaptiveConcurrencyController,
    ConcurrencyController,
    DeploymentSampler,
    FixedConcurrencyController,
    PromptSpec,
    sample_prompts,
)
from airflow_fireworks.testing import EmulatorProcess

FIXED_WINDOWS = (4, 16, 64, 256)
UNLIMITED = 1_000_000


@dataclass
class Result:
    name: str
    tokens: int
    wall_s: float
    queue_s: list[float]
    final_window: int

    @property
    def goodput(self) -> float:
        return self.tokens / self.wall_s

    @property
    def mean_queue_s(self) -> float:
        return statistics.fmean(self.queue_s) if self.queue_s else 0.0

    @property
    def p90_queue_s(self) -> float:
        return statistics.quantiles(self.queue_s, n=10)[-1] if len(self.queue_s) > 1 else self.mean_queue_s


async def run_controller(
    name: str,
    controller: ConcurrencyController,
    emulator: EmulatorProcess,
    model: str,
    args: argparse.Namespace,
    offset: int,
) -> Result:
    """Sample ``args.steps`` steps with one controller; prompts differ from every other run."""
    tokens = 0
    queue: list[float] = []
    async with DeploymentSampler(
        emulator.url, model, emulator.api_key, concurrency_controller=controller
    ) as sampler:
        started = time.perf_counter()
        for step in range(args.steps):
            base = offset + step * args.prompts
            specs = [
                PromptSpec(i, prompt_token_ids=[1, *((base + i) * 7 % 550 + 3 + j for j in range(24))])
                for i in range(args.prompts)
            ]
            async for result in sample_prompts(
                sampler,
                specs,
                n=args.n,
                max_tokens=args.max_tokens,
                ignore_eos=True,
                progress_interval_s=3600,
            ):
                if result.error is not None:
                    raise RuntimeError(f"{name}: prompt {result.prompt_index} failed: {result.error}")
                for completion in result.completions:
                    tokens += completion.completion_len
                    metrics = completion.server_metrics
                    if metrics is not None and metrics.prefill_queue_duration is not None:
                        queue.append(metrics.prefill_queue_duration)
            controller.step_completed()
        wall = time.perf_counter() - started
    return Result(name, tokens, wall, queue, controller.window_size)


async def run(args: argparse.Namespace, emulator: EmulatorProcess) -> list[Result]:
    model = ready_deployment(emulator, "bench-concurrency")
    controllers: list[tuple[str, ConcurrencyController]] = [
        ("adaptive (AIMD, defaults)", AdaptiveConcurrencyController())
    ]
    controllers += [(f"fixed {window}", FixedConcurrencyController(window)) for window in FIXED_WINDOWS]
    controllers.append(("no limit", FixedConcurrencyController(UNLIMITED)))
    results = []
    for number, (name, controller) in enumerate(controllers):
        result = await run_controller(name, controller, emulator, model, args, offset=number * 100_000)
        print(f"  {name}: {result.goodput:.0f} tokens/s", flush=True)
        results.append(result)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="one short step per controller (smoke run)")
    parser.add_argument("--steps", type=int, default=3, help="RL steps per controller")
    parser.add_argument("--prompts", type=int, default=96, help="prompts per step")
    parser.add_argument("--n", type=int, default=4, help="completions per prompt")
    parser.add_argument("--max-tokens", type=int, default=32, help="tokens per completion")
    parser.add_argument("--decode-slots", type=int, default=32, help="sequences the replica decodes at once")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.prompts = 1, 48
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    settings = {
        "create_delay_s": 0.05,
        "decode_slots": args.decode_slots,
        "decode_step_base_s": 0.002,
        "decode_step_per_seq_s": 0.0001,
        "request_log_size": 0,
    }
    print(
        f"{args.steps} step(s) x {args.prompts} prompts x n={args.n}, {args.max_tokens} tokens each; "
        f"one replica with {args.decode_slots} decode slots",
        flush=True,
    )
    with running_emulator(**settings) as emulator:
        results = asyncio.run(run(args, emulator))

    header = (
        f"{'controller':<28} {'goodput tok/s':>14} {'mean queue s':>13} {'p90 queue s':>12} "
        f"{'final window':>13} {'wall s':>8}"
    )
    print()
    print(header)
    print("-" * len(header))
    for r in results:
        window = "-" if r.final_window >= UNLIMITED else str(r.final_window)
        print(
            f"{r.name:<28} {r.goodput:>14.0f} {r.mean_queue_s:>13.3f} {r.p90_queue_s:>12.3f} "
            f"{window:>13} {r.wall_s:>8.2f}"
        )
    adaptive = results[0]
    fixed = [r for r in results[1:] if r.name.startswith("fixed")]
    best = max(fixed, key=lambda r: r.goodput)
    print(f"\nratio adaptive / best fixed ({best.name}) goodput: {adaptive.goodput / best.goodput:.2f}")
    print(
        f"mean prefill queue: adaptive {adaptive.mean_queue_s:.3f} s, {best.name} "
        f"{best.mean_queue_s:.3f} s, no limit {results[-1].mean_queue_s:.3f} s"
    )


if __name__ == "__main__":
    main()
