"""Goodput and prefill-queue time of the concurrency controllers on cold and warm RL steps.

An emulator subprocess on loopback serves deployments of one and of three replicas with its
default serving model (continuous batching, 64 decode slots per replica, decode step 4 ms +
0.15 ms per active sequence; more requests wait in the prefill queue). Completions end on EOS, as
a policy's do: "short" ones average about 50 tokens, "long" ones about 230. Every controller of a
case samples the same step (the same prompts and seed, so exactly the same completions):

- ``adaptive``: ``AdaptiveConcurrencyController()``, a cold step (new controller) then a warm one
  (the same controller after ``step_completed()``);
- ``adaptive restart``: a warm step as the RL-loop example runs it (a new controller per step,
  ``initial_window`` = the window the cold step ended with);
- ``adaptive, operator``: the cold step as ``FireworksSampleOperator`` samples it (a
  ``SamplingRun``: ``sample_prompts``' default prompt window instead of every prompt at once);
- ``adaptive sdk-aimd``: ``policy="aimd"``, the official SDK's rule (this package's default
  before), cold and warm;
- fixed windows of 1/2, 1 and 2 x the decode slots, and no limit;
- ``SDK adaptive``: the official SDK's ``AdaptiveConcurrencyController`` with its own sampler
  (fireworks-ai 1.2.30 in a virtualenv under ``.bench/``, a subprocess against the same
  emulator), cold.

Goodput = completion tokens / step wall time. The physical limit is decode slots / decode-step
time at full batch x replicas; every goodput is shown as a fraction of it and of the best fixed
window of the same case. The prefill queue (pq) is the server's ``prefill-queue-duration`` of
every completion. A last scenario removes two of three replicas in the middle of a step and
reports how fast each controller backs off.

    python benchmarks/bench_concurrency_control.py [--quick] [--no-sdk] [--cases short-1,long-3] [--rounds 2]

About 7 minutes on 2 cores per round (``--quick``: one replica, half-size steps, no shrink, about
2). With ``--rounds`` every controller's step is taken at its best of the rounds: on a shared
machine other work only slows a step down. The
summary's last line says whether the goals of the adaptive controller hold in this run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from contextlib import aclosing
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _emulator import ready_deployment, running_emulator
from _sdk_peer import SDK, run_sdk, sdk_python

from airflow_fireworks.sampling import (
    AdaptiveConcurrencyController,
    ConcurrencyController,
    DeploymentSampler,
    FixedConcurrencyController,
    PromptResult,
    PromptSpec,
    SamplingParams,
    SamplingRun,
    sample_prompts,
)
from airflow_fireworks.testing import EmulatorProcess

UNLIMITED = 1_000_000
PROMPT_TOKENS = 24
N = 4
SEED = 7
SERVING = {"decode_slots": 64, "decode_step_base_s": 0.004, "decode_step_per_seq_s": 0.00015}
#: completion kind -> (EOS probability per token, max_tokens, prompts per step per replica)
COMPLETIONS = {"short": (0.027, 256, 80), "long": (0.006, 768, 40)}
TARGET_S = AdaptiveConcurrencyController().prefill_queue_target
#: the shrink scenario: 3 replicas, short completions, 2 replicas removed after SHRINK_AT_S
SHRINK_PROMPTS, SHRINK_AT_S, SHRINK_WATCH_S, SHRINK_START_WINDOW = 600, 1.5, 4.0, 224


@dataclass(frozen=True)
class Case:
    kind: str
    replicas: int
    prompts: int

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.replicas}"

    @property
    def capacity(self) -> int:
        return int(SERVING["decode_slots"]) * self.replicas

    @property
    def limit(self) -> float:
        """Tokens/s with every decode slot of every replica busy."""
        slots = SERVING["decode_slots"]
        step = SERVING["decode_step_base_s"] + SERVING["decode_step_per_seq_s"] * slots
        return slots / step * self.replicas

    @property
    def eos_probability(self) -> float:
        return COMPLETIONS[self.kind][0]

    @property
    def max_tokens(self) -> int:
        return COMPLETIONS[self.kind][1]


@dataclass
class Step:
    controller: str
    temperature: str  # "cold" or "warm"
    tokens: int
    completions: int
    wall_s: float
    queue_s: list[float]
    window: int
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def goodput(self) -> float:
        return self.tokens / self.wall_s

    @property
    def mean_queue_s(self) -> float:
        return statistics.fmean(self.queue_s) if self.queue_s else 0.0

    @property
    def p90_queue_s(self) -> float:
        return statistics.quantiles(self.queue_s, n=10)[-1] if len(self.queue_s) > 1 else self.mean_queue_s


def step_prompts(count: int) -> list[list[int]]:
    """The prompts of every step of a case: with the same ``SEED`` every controller samples
    exactly the same completions (the emulator's output depends on seed, prompt and weights)."""
    return [[1, *((i * 7919 + j * 31) % 550 + 3 for j in range(PROMPT_TOKENS - 1))] for i in range(count)]


async def collect(into: list[PromptResult], result: PromptResult) -> None:
    """A ``SamplingRun`` sink that keeps the results."""
    into.append(result)


async def sample_steps(
    name: str,
    controller: ConcurrencyController,
    emulator: EmulatorProcess,
    model: str,
    case: Case,
    steps: int,
    *,
    operator_path: bool = False,
    temperature: str | None = None,
) -> list[Step]:
    """Sample ``steps`` steps with one controller (``step_completed()`` after each). Every prompt
    of a step is handed to ``sample_prompts`` at once, so that the controller alone decides what
    is sent (as with the SDK peer); with ``operator_path`` a ``SamplingRun`` samples the step
    instead, as ``FireworksSampleOperator`` does (``sample_prompts``' default prompt window, the
    timeline ticking)."""
    results = []
    async with DeploymentSampler(
        emulator.url, model, emulator.api_key, concurrency_controller=controller
    ) as s:
        for number in range(steps):
            specs = [PromptSpec(i, prompt_token_ids=ids) for i, ids in enumerate(step_prompts(case.prompts))]
            sampled: list[PromptResult] = []
            started = time.perf_counter()
            if operator_path:
                run = SamplingRun(N, controller)
                params = SamplingParams(n=N, max_tokens=case.max_tokens, seed=SEED)
                await run.sample(s, specs, params, partial(collect, sampled), progress_interval_s=3600)
                wall = time.perf_counter() - started
                summary: dict[str, Any] = dict(run.controller_stats)
            else:
                async for result in sample_prompts(
                    s,
                    specs,
                    n=N,
                    max_tokens=case.max_tokens,
                    seed=SEED,
                    max_prompts_in_flight=len(specs),
                    progress_interval_s=3600,
                ):
                    sampled.append(result)
                wall = time.perf_counter() - started
                summary = controller.step_completed()
            tokens = completions = 0
            queue: list[float] = []
            for result in sampled:
                if result.error is not None:
                    raise RuntimeError(f"{name}: prompt {result.prompt_index} failed: {result.error}")
                for completion in result.completions:
                    tokens += completion.completion_len
                    completions += 1
                    metrics = completion.server_metrics
                    if metrics is not None and metrics.prefill_queue_duration is not None:
                        queue.append(metrics.prefill_queue_duration)
            label = temperature or ("cold" if number == 0 else "warm")
            results.append(
                Step(name, label, tokens, completions, wall, queue, controller.window_size, summary)
            )
    return results


def sdk_steps(python: Path, emulator: EmulatorProcess, model: str, case: Case) -> list[Step]:
    """A cold step with the official SDK's adaptive controller and sampler."""
    job = {
        "url": emulator.url,
        "api_key": emulator.api_key,
        "model": model,
        "controller": {"kind": "adaptive"},
        "steps": [
            {"prompts": step_prompts(case.prompts), "n": N, "max_tokens": case.max_tokens, "seed": SEED}
        ],
    }
    return [
        Step("SDK adaptive", "cold", r["tokens"], r["completions"], r["wall_s"], r["queue_s"], r["window"])
        for r in run_sdk(python, job)
    ]


async def run_case(case: Case, emulator: EmulatorProcess, model: str, sdk: Path | None) -> list[Step]:
    """Every controller on the case's step, one after another on the same deployment."""
    emulator.configure(eos_probability=case.eos_probability)
    results = await sample_steps("adaptive", AdaptiveConcurrencyController(), emulator, model, case, 2)
    restart = AdaptiveConcurrencyController(initial_window=results[0].window)
    results += await sample_steps("adaptive restart", restart, emulator, model, case, 1, temperature="warm")
    operator = AdaptiveConcurrencyController()
    results += await sample_steps(
        "adaptive, operator", operator, emulator, model, case, 1, operator_path=True
    )
    aimd = AdaptiveConcurrencyController(policy="aimd")
    results += await sample_steps("adaptive sdk-aimd", aimd, emulator, model, case, 2)
    for window in (case.capacity // 2, case.capacity, 2 * case.capacity):
        fixed = FixedConcurrencyController(window)
        results += await sample_steps(f"fixed {window}", fixed, emulator, model, case, 1)
    unlimited = FixedConcurrencyController(UNLIMITED)
    results += await sample_steps("no limit", unlimited, emulator, model, case, 1)
    if sdk is not None:
        results += await asyncio.to_thread(sdk_steps, sdk, emulator, model, case)
    return results


def best_of(rounds: list[list[Step]]) -> list[Step]:
    """Each controller's step (by name and temperature) with the highest goodput of the rounds."""
    best: dict[tuple[str, str], Step] = {}
    for step in (step for steps in rounds for step in steps):
        key = (step.controller, step.temperature)
        if key not in best or step.goodput > best[key].goodput:
            best[key] = step
    return list(best.values())


def find(results: list[Step], controller: str, temperature: str = "cold") -> Step | None:
    return next((r for r in results if r.controller == controller and r.temperature == temperature), None)


def best_fixed(results: list[Step]) -> Step:
    return max((r for r in results if r.controller.startswith("fixed")), key=lambda r: r.goodput)


def print_case(case: Case, results: list[Step], rounds: int, load: tuple[float, float]) -> None:
    best = best_fixed(results)
    print(
        f"\n{case.name}: {case.prompts} prompts x n={N} per step, EOS p={case.eos_probability}, "
        f"max_tokens {case.max_tokens}, {case.replicas} replica(s) x {SERVING['decode_slots']} slots, "
        f"limit {case.limit:.0f} tokens/s; best of {rounds} round(s), load average {load[0]:.1f} "
        f"before, {load[1]:.1f} after"
    )
    header = (
        f"  {'controller':<24} {'step':<5} {'tok/s':>7} {'/limit':>7} {'/best':>6} {'mean pq':>8} "
        f"{'p90 pq':>7} {'window':>7} {'tok/compl':>9} {'wall s':>7}"
    )
    print(header)
    for r in results:
        window = "-" if r.window >= UNLIMITED else str(r.window)
        print(
            f"  {r.controller:<24} {r.temperature:<5} {r.goodput:>7.0f} {r.goodput / case.limit:>7.2f} "
            f"{r.goodput / best.goodput:>6.2f} {r.mean_queue_s:>8.3f} {r.p90_queue_s:>7.3f} {window:>7} "
            f"{r.tokens / max(r.completions, 1):>9.0f} {r.wall_s:>7.2f}"
        )
    print(f"  best fixed window: {best.controller}")


def print_summary(cases: list[tuple[Case, list[Step]]], full_size: bool) -> bool:
    """The ratios the goals are stated in; True if every goal holds (checked on full-size steps)."""
    print(f"\nSummary (goodput ratios; pq target {TARGET_S} s)")
    header = (
        f"  {'case':<8} {'cold /best':>10} {'cold /limit':>11} {'cold pq':>8} {'operator':>8} "
        f"{'warm /best':>10} {'restart /best':>13} {'aimd cold':>9} {'aimd warm':>9} {'SDK cold':>8} "
        f"{'cold /SDK':>9}"
    )
    print(header)
    ok = True
    for case, results in cases:
        best = best_fixed(results)
        cold, warm = find(results, "adaptive"), find(results, "adaptive", "warm")
        restart = find(results, "adaptive restart", "warm")
        operator = find(results, "adaptive, operator")
        aimd_cold, aimd_warm = find(results, "adaptive sdk-aimd"), find(results, "adaptive sdk-aimd", "warm")
        sdk = find(results, "SDK adaptive")
        assert cold and warm and restart and operator and aimd_cold and aimd_warm

        def ratio(step: Step | None, to: Step | None = best) -> str:
            return "-" if step is None or to is None else f"{step.goodput / to.goodput:.2f}"

        print(
            f"  {case.name:<8} {ratio(cold):>10} {cold.goodput / case.limit:>11.2f} "
            f"{cold.mean_queue_s:>8.3f} {ratio(operator):>8} {ratio(warm):>10} {ratio(restart):>13} "
            f"{ratio(aimd_cold):>9} {ratio(aimd_warm):>9} {ratio(sdk):>8} {ratio(cold, sdk):>9}"
        )
        ok &= cold.goodput >= 0.95 * best.goodput and cold.mean_queue_s <= TARGET_S
        ok &= operator.goodput >= 0.95 * best.goodput and operator.mean_queue_s <= TARGET_S
        ok &= warm.goodput >= 0.98 * aimd_warm.goodput and restart.goodput >= 0.98 * aimd_warm.goodput
        if case.kind == "long" and sdk is not None:
            ok &= cold.goodput >= 1.3 * sdk.goodput
    verdict = ("met" if ok else "NOT met") if full_size else "checked on full-size steps only (not --quick)"
    print(
        "  goals: cold and operator >= 0.95 x best fixed with mean pq <= target; "
        "warm and restart >= 0.98 x aimd warm; "
        f"long cold >= 1.3 x SDK ({SDK}): {verdict}"
    )
    return ok


@dataclass
class Shrink:
    controller: str
    window_before: int
    backoff_s: float | None  # from the shrink until the window is <= 1.5 x the remaining capacity
    window_1s: int  # one second after the shrink
    queue_after_s: list[float]  # completions that finished after the shrink
    tokens_after: int


async def shrink_run(name: str, controller: ConcurrencyController, emulator: EmulatorProcess) -> Shrink:
    """A long step on 3 replicas, scaled to 1 replica after ``SHRINK_AT_S``; watched for
    ``SHRINK_WATCH_S`` more (then the rest of the step is cancelled)."""
    deployment = f"bench-shrink-{name.replace(' ', '-')}"
    model = await asyncio.to_thread(ready_deployment, emulator, deployment, 3)
    case = Case("short", 3, SHRINK_PROMPTS)
    specs = [PromptSpec(i, prompt_token_ids=ids) for i, ids in enumerate(step_prompts(case.prompts))]
    windows: list[tuple[float, int]] = []
    shrunk_at: float | None = None
    queue_after: list[float] = []
    tokens_after = 0
    window_before = 0

    async def shrink() -> None:
        nonlocal shrunk_at, window_before
        await asyncio.sleep(SHRINK_AT_S)
        url = f"{emulator.url}/v1/accounts/{emulator.account_id}/deployments/{deployment}:scale"
        response = await asyncio.to_thread(
            emulator.session.post,
            url,
            json={"replicaCount": 1},
            headers={"X-Api-Key": emulator.api_key},
            timeout=10,
        )
        response.raise_for_status()
        shrunk_at, window_before = time.perf_counter(), controller.window_size
        while True:
            windows.append((time.perf_counter() - shrunk_at, controller.window_size))
            await asyncio.sleep(0.02)

    async with DeploymentSampler(
        emulator.url, model, emulator.api_key, concurrency_controller=controller, not_ready_interval_s=0.05
    ) as sampler:
        shrinker = asyncio.create_task(shrink())
        results = sample_prompts(
            sampler, specs, n=N, max_tokens=case.max_tokens, seed=SEED, max_prompts_in_flight=len(specs)
        )
        async with aclosing(results):
            async for result in results:
                if shrunk_at is None:
                    continue
                if time.perf_counter() - shrunk_at > SHRINK_WATCH_S:
                    break
                for completion in result.completions:
                    metrics = completion.server_metrics
                    if metrics is not None and metrics.prefill_queue_duration is not None:
                        queue_after.append(metrics.prefill_queue_duration)
                        tokens_after += completion.completion_len
        shrinker.cancel()
    remaining = SERVING["decode_slots"]
    backoff = next((t for t, w in windows if w <= 1.5 * remaining), None)
    window_1s = next((w for t, w in windows if t >= 1.0), windows[-1][1])
    return Shrink(name, window_before, backoff, window_1s, queue_after, tokens_after)


def print_shrink(results: list[Shrink]) -> None:
    print(
        f"\nShrink: short completions on 3 replicas; {SHRINK_AT_S} s into the step two replicas are removed "
        f"(:scale to 1, capacity 192 -> 64), then {SHRINK_WATCH_S} s are watched"
    )
    print(
        f"  {'controller':<20} {'window before':>13} {'back-off s':>10} {'window +1 s':>11} "
        f"{'mean pq after':>13} {'p90 pq after':>12} {'tok/s after':>11}"
    )
    for r in results:
        mean = statistics.fmean(r.queue_after_s) if r.queue_after_s else 0.0
        p90 = statistics.quantiles(r.queue_after_s, n=10)[-1] if len(r.queue_after_s) > 1 else mean
        backoff = "never" if r.backoff_s is None else f"{r.backoff_s:.2f}"
        print(
            f"  {r.controller:<20} {r.window_before:>13} {backoff:>10} {r.window_1s:>11} {mean:>13.3f} "
            f"{p90:>12.3f} {r.tokens_after / SHRINK_WATCH_S:>11.0f}"
        )
    print(
        "  back-off s: from the shrink until the window is <= 1.5 x the remaining 64 decode slots; "
        "after: completions that finished in the watched seconds (tok/s includes the removed "
        "replicas' running sequences, which finish)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="one replica, half-size steps, no shrink scenario"
    )
    parser.add_argument("--no-sdk", action="store_true", help="skip the official SDK peer")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="sample every case this many times and keep each controller's best step (a shared, "
        "busy machine only ever slows a step down)",
    )
    parser.add_argument(
        "--cases", default="short-1,long-1,short-3,long-3", help="comma list of KIND-REPLICAS"
    )
    args = parser.parse_args()
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    names = ["short-1", "long-1"] if args.quick else args.cases.split(",")
    cases = []
    for name in names:
        kind, replicas = name.split("-")
        prompts = COMPLETIONS[kind][2] * int(replicas)
        cases.append(Case(kind, int(replicas), prompts // 2 if args.quick else prompts))
    sdk: Path | None = None
    if not args.no_sdk:
        try:
            sdk = sdk_python()
        except RuntimeError as err:
            print(f"official SDK peer unavailable, skipped: {err}")
    settings = {"create_delay_s": 0.05, "update_delay_s": 0.05, "request_log_size": 0, **SERVING}
    measured: list[tuple[Case, list[Step]]] = []
    with running_emulator(**settings) as emulator:
        replicas = sorted({case.replicas for case in cases})
        models = {r: ready_deployment(emulator, f"bench-{r}r", replicas=r) for r in replicas}
        for case in cases:
            load = os.getloadavg()[0]
            rounds = [
                asyncio.run(run_case(case, emulator, models[case.replicas], sdk)) for _ in range(args.rounds)
            ]
            results = best_of(rounds)
            print_case(case, results, len(rounds), (load, os.getloadavg()[0]))
            measured.append((case, results))
        if not args.quick:
            emulator.configure(eos_probability=COMPLETIONS["short"][0])
            # both start above the 3 replicas' capacity and settle before the shrink
            start = SHRINK_START_WINDOW
            shrinks = [
                asyncio.run(shrink_run("adaptive", AdaptiveConcurrencyController(start), emulator)),
                asyncio.run(
                    shrink_run(
                        "adaptive sdk-aimd", AdaptiveConcurrencyController(start, policy="aimd"), emulator
                    )
                ),
            ]
            print_shrink(shrinks)
    print_summary(measured, full_size=not args.quick)


if __name__ == "__main__":
    main()
