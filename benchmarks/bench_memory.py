"""Memory under load: many concurrent trigger waits, and a long sampling run, against the emulator.

Each phase runs in a fresh child process (so one phase's heap does not colour the other's) and
samples its own resident set size (RSS) every 100 ms:

- ``triggers``: W waves of N concurrent ``FireworksDeploymentTrigger`` waits in one event loop, as
  in the triggerer (N deployments created per wave, READY after a window; each poll is a GET and a
  readiness probe). Warm-up is the end of the first wave.
- ``sampling``: ``sample_prompts`` over a lazy stream of prompts (n completions each, with
  logprobs), every result written to a JSON Lines file as the operator does. Warm-up is the moment
  10 % of the completions are done.

Printed per phase: RSS at the start (imports done), peak RSS, RSS after warm-up, RSS at the end,
and the flat-memory ratio
``RSS at end / RSS after warm-up`` (1.00 = flat). A ratio above ``--max-ratio`` is reported as a
leak and makes the exit status 1.

    python benchmarks/bench_memory.py            # 5 waves x 1,000 waits; 100,000 completions (~2-3 min)
    python benchmarks/bench_memory.py --quick    # 3 waves x 200 waits; 12,000 completions (~30 s)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import aiohttp
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _emulator import BASE_MODEL, ready_deployment, running_emulator

from airflow_fireworks.testing import EmulatorProcess

EMULATOR_SETTINGS: dict[str, Any] = {
    "create_delay_s": 0.05,
    "decode_slots": 512,
    "decode_step_base_s": 0.0003,
    "decode_step_per_seq_s": 0.000002,
    "stream_chunk_tokens": 4,
    "request_log_size": 100,
}
SAMPLE_INTERVAL_S = 0.1


class RssMonitor:
    """Samples this process's RSS in the background; remembers the peak and marked points."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self.peak = self.now()
        self.marks: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    def now(self) -> int:
        return int(self._process.memory_info().rss)

    def mark(self, name: str) -> None:
        rss = self.now()
        self.peak = max(self.peak, rss)
        self.marks[name] = rss

    async def _run(self) -> None:
        while True:
            self.peak = max(self.peak, self.now())
            await asyncio.sleep(SAMPLE_INTERVAL_S)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.peak = max(self.peak, self.now())


# --- child: triggers ----------------------------------------------------------------------------


async def create_deployments(emulator: EmulatorProcess, ids: list[str]) -> None:
    url = f"{emulator.url}/v1/accounts/{emulator.account_id}/deployments"
    headers = {"X-Api-Key": emulator.api_key}
    limit = asyncio.Semaphore(64)
    async with aiohttp.ClientSession() as session:

        async def create(deployment_id: str) -> None:
            async with (
                limit,
                session.post(
                    url,
                    params={"deploymentId": deployment_id},
                    json={"baseModel": BASE_MODEL},
                    headers=headers,
                ) as response,
            ):
                response.raise_for_status()

        await asyncio.gather(*(create(deployment_id) for deployment_id in ids))


async def triggers_phase(emulator: EmulatorProcess, args: argparse.Namespace) -> dict[str, Any]:
    from airflow_fireworks.triggers.deployment import FireworksDeploymentTrigger

    monitor = RssMonitor()
    monitor.mark("start")
    monitor.start()
    started = time.monotonic()
    for wave in range(args.waves):
        emulator.reset()
        emulator.configure(**{**EMULATOR_SETTINGS, "create_delay_s": args.window})
        ids = [f"mem-w{wave}-{i}" for i in range(args.waits)]
        await create_deployments(emulator, ids)
        deadline = time.time() + args.window * 4 + 60
        triggers = [
            FireworksDeploymentTrigger(deployment_id, deadline=deadline, poll_interval=args.poll_interval)
            for deployment_id in ids
        ]
        events = await asyncio.gather(*(trigger.run().asend(None) for trigger in triggers))
        statuses = {event.payload["status"] for event in events}
        if statuses != {"success"}:
            raise RuntimeError(f"wave {wave}: unexpected trigger outcomes {statuses}")
        del triggers, events
        monitor.mark("warmup" if wave == 0 else "end")
    await monitor.stop()
    return {
        "phase": "concurrent triggers",
        "work": f"{args.waves} waves x {args.waits:,} waits",
        "seconds": time.monotonic() - started,
        "rate": f"{args.waves * args.waits / (time.monotonic() - started):,.0f} waits/s",
        "start": monitor.marks["start"],
        "peak": monitor.peak,
        "warmup": monitor.marks["warmup"],
        "end": monitor.marks["end"],
    }


# --- child: sampling ----------------------------------------------------------------------------


def prompt_stream(count: int) -> Iterator[Any]:
    """Prompts produced lazily (never all in memory), each a different token-id prompt."""
    from airflow_fireworks.sampling import PromptSpec

    for i in range(count):
        ids = [1] + [(13 * i + 7 * j) % 560 + 3 for j in range(24 + i % 17)]
        yield PromptSpec(i, prompt_token_ids=ids, metadata={"id": f"p{i:07d}"})


async def sampling_phase(emulator: EmulatorProcess, args: argparse.Namespace, out: IO[str]) -> dict[str, Any]:
    from airflow_fireworks.sampling import AdaptiveConcurrencyController, DeploymentSampler, sample_prompts
    from airflow_fireworks.sampling.output import write_result

    emulator.configure(**EMULATOR_SETTINGS)
    model = ready_deployment(emulator, "mem-sampling")
    total = args.prompts * args.n
    warmup_at = total // 10
    done = 0
    monitor = RssMonitor()
    monitor.mark("start")
    monitor.start()
    started = time.monotonic()
    sampler = DeploymentSampler(
        emulator.url, model, emulator.api_key, None, AdaptiveConcurrencyController(max_window=256)
    )
    async with sampler:
        results = sample_prompts(
            sampler, prompt_stream(args.prompts), n=args.n, max_tokens=args.max_tokens,
            temperature=1.0, seed=7, logprobs=True, progress_interval_s=3600,
        )  # fmt: skip
        async for result in results:
            if result.error is not None:
                raise RuntimeError(f"prompt {result.prompt_index} failed: {result.error}")
            await asyncio.to_thread(write_result, out, result)  # as the operator writes its parts
            before, done = done, done + len(result.completions)
            if before < warmup_at <= done:
                monitor.mark("warmup")
    monitor.mark("end")
    await monitor.stop()
    if done != total:
        raise RuntimeError(f"{done} completions instead of {total}")
    seconds = time.monotonic() - started
    return {
        "phase": "long sampling run",
        "work": f"{total:,} completions",
        "seconds": seconds,
        "rate": f"{total / seconds:,.0f} completions/s",
        "start": monitor.marks["start"],
        "peak": monitor.peak,
        "warmup": monitor.marks["warmup"],
        "end": monitor.marks["end"],
    }


def child(args: argparse.Namespace) -> None:
    emulator = EmulatorProcess(args.url, args.api_key, args.account)
    if args.phase == "triggers":
        result = asyncio.run(triggers_phase(emulator, args))
    else:
        with tempfile.NamedTemporaryFile(
            "w", prefix="bench-memory-", suffix=".jsonl", encoding="utf-8"
        ) as out:
            result = asyncio.run(sampling_phase(emulator, args, out))
    print(json.dumps(result), flush=True)


# --- parent -------------------------------------------------------------------------------------


def run_phase(phase: str, emulator: EmulatorProcess, args: argparse.Namespace, home: str) -> dict[str, Any]:
    connection = {"conn_type": "fireworks", "host": emulator.url, "password": emulator.api_key}
    env = {
        **os.environ,
        "AIRFLOW_HOME": home,
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "AIRFLOW_CONN_FIREWORKS_DEFAULT": json.dumps(connection),
        "TRANSFORMERS_VERBOSITY": "error",
    }
    command = [
        sys.executable, __file__, "--child", phase, "--url", emulator.url, "--api-key", emulator.api_key,
        "--account", emulator.account_id, "--waves", str(args.waves), "--waits", str(args.waits),
        "--window", str(args.window), "--poll-interval", str(args.poll_interval),
        "--prompts", str(args.prompts), "--n", str(args.n), "--max-tokens", str(args.max_tokens),
    ]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"phase {phase} failed:\n{result.stdout}\n{result.stderr}")
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small run (about 30 s)")
    parser.add_argument("--waves", type=int, default=5, help="waves of concurrent trigger waits")
    parser.add_argument("--waits", type=int, default=1000, help="concurrent trigger waits per wave")
    parser.add_argument("--window", type=float, default=3.0, help="seconds until the deployments are READY")
    parser.add_argument("--poll-interval", type=float, default=0.5)
    parser.add_argument("--prompts", type=int, default=25_000)
    parser.add_argument("--n", type=int, default=4, help="completions per prompt")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--max-ratio", type=float, default=1.25, help="end/warm-up RSS above this is a leak")
    parser.add_argument("--child", choices=("triggers", "sampling"), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--api-key", help=argparse.SUPPRESS)
    parser.add_argument("--account", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.phase = args.child
        child(args)
        return
    if args.quick:
        args.waves, args.waits, args.window, args.prompts = 3, 200, 1.5, 3000
    rows = []
    with running_emulator(**EMULATOR_SETTINGS) as emulator, tempfile.TemporaryDirectory() as home:
        for phase in ("triggers", "sampling"):
            rows.append(run_phase(phase, emulator, args, home))
    mb = 2**20
    header = ("phase", "work", "start", "peak RSS", "warm-up", "end", "end/warm-up")
    print(
        f"{header[0]:<20} {header[1]:<24} {header[2]:>9} {header[3]:>9} {header[4]:>9} {header[5]:>9} "
        f"{header[6]:>12}  rate"
    )
    leaks = []
    for row in rows:
        ratio = row["end"] / row["warmup"]
        if ratio > args.max_ratio:
            leaks.append(row["phase"])
        print(
            f"{row['phase']:<20} {row['work']:<24} {row['start'] / mb:>6.0f} MB {row['peak'] / mb:>6.0f} MB "
            f"{row['warmup'] / mb:>6.0f} MB "
            f"{row['end'] / mb:>6.0f} MB {ratio:>12.2f}  {row['rate']} ({row['seconds']:.0f} s)"
        )
    verdict = "FAILED: " + ", ".join(leaks) if leaks else "ok"
    print(f"flat-memory check (end/warm-up <= {args.max_ratio}): {verdict}")
    if leaks:
        sys.exit(1)


if __name__ == "__main__":
    main()
