"""How many deployment waits one triggerer event loop holds, and what each poll costs.

Starts the emulator on a free loopback port, creates N deployments that become READY after a
window of W seconds, then waits for all of them from a fresh child process, four ways:

- ``triggers xN/10`` and ``triggers xN``: ``FireworksDeploymentTrigger`` waits in one event loop
  sharing one HTTP client, as in the triggerer (the cost per poll should not grow with N);
- ``triggers xN, own clients``: the same, but every trigger opens its own client;
- ``threads xN``: the naive alternative and the baseline of the ratio column, one thread per wait
  polling with the sync client (``DeploymentManager.wait_for_ready``). A real sync wait costs more
  than a thread: a whole worker slot.

A poll is one GET of the deployment plus one readiness probe while it is CREATING. CPU is the
child's user+system time while waiting (imports excluded), peak RSS is above the child's RSS
after imports, loop lag is how late a 50 ms ticker wakes up (the event loop, or a ticker thread).

    python benchmarks/bench_triggers.py            # 1,000 waits, ~2 minutes
    python benchmarks/bench_triggers.py --quick    # 200 waits, ~30 seconds
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
API_KEY = "fw-bench-key-7f3c9a1e"
BASE_MODEL = "accounts/fireworks/models/qwen3-8b"
TICK_S = 0.05


# --- child: one scenario, measured ----------------------------------------------------------------


class Sampler:
    """Peak RSS, peak open TCP sockets and ticker lag of this process."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.rss_base = self.process.memory_info().rss
        self.rss_peak = self.rss_base
        self.sockets_peak = 0
        self.threads_peak = self.process.num_threads()
        self.lags: list[float] = []
        self._last_socket_check = 0.0

    def sample(self, lag_s: float) -> None:
        self.lags.append(max(0.0, lag_s))
        self.rss_peak = max(self.rss_peak, self.process.memory_info().rss)
        now = time.monotonic()
        if now - self._last_socket_check >= 0.5:
            self._last_socket_check = now
            self.sockets_peak = max(self.sockets_peak, len(self.process.net_connections(kind="tcp")))
            self.threads_peak = max(self.threads_peak, self.process.num_threads())

    def report(self) -> dict[str, Any]:
        lags = sorted(self.lags) or [0.0]
        return {
            "rss_delta_mb": (self.rss_peak - self.rss_base) / 2**20,
            "sockets_peak": self.sockets_peak,
            "threads_peak": self.threads_peak,
            "lag_p99_ms": lags[min(len(lags) - 1, int(len(lags) * 0.99))] * 1000,
            "lag_max_ms": lags[-1] * 1000,
        }


def cpu_seconds() -> float:
    times = psutil.Process().cpu_times()
    return float(times.user + times.system)


def run_triggers(waits: int, poll_interval: float, hard_deadline: float, own_clients: bool) -> dict[str, Any]:
    from airflow_fireworks.triggers import base as trigger_base
    from airflow_fireworks.triggers.deployment import FireworksDeploymentTrigger

    if own_clients:

        @asynccontextmanager
        async def own_client(params: Any) -> AsyncIterator[Any]:
            client = params.async_client()
            try:
                yield client
            finally:
                await client.close()

        trigger_base.shared_async_client = own_client  # type: ignore[assignment]

    sampler = Sampler()

    async def ticker(stop: asyncio.Event) -> None:
        while not stop.is_set():
            start = time.monotonic()
            await asyncio.sleep(TICK_S)
            sampler.sample(time.monotonic() - start - TICK_S)

    async def first(trigger: FireworksDeploymentTrigger) -> str:
        async for event in trigger.run():
            return str(event.payload["status"])
        return "none"

    async def main() -> list[str]:
        stop = asyncio.Event()
        tick = asyncio.create_task(ticker(stop))
        triggers = [
            FireworksDeploymentTrigger(f"bench-{i}", deadline=hard_deadline, poll_interval=poll_interval)
            for i in range(waits)
        ]
        statuses = await asyncio.gather(*(first(t) for t in triggers))
        stop.set()
        await tick
        return list(statuses)

    cpu0, wall0 = cpu_seconds(), time.monotonic()
    statuses = asyncio.run(main())
    return {
        "cpu_s": cpu_seconds() - cpu0,
        "wall_s": time.monotonic() - wall0,
        "succeeded": statuses.count("success"),
        **sampler.report(),
    }


def run_threads(waits: int, poll_interval: float, hard_deadline: float) -> dict[str, Any]:
    from airflow_fireworks.hooks.fireworks import FireworksHook

    params = FireworksHook().connection_params
    sampler = Sampler()
    succeeded: list[bool] = []
    lock = threading.Lock()

    def wait(index: int) -> None:
        with params.manager() as manager:
            try:
                manager.wait_for_ready(
                    f"bench-{index}", timeout_s=hard_deadline - time.time(), poll_interval_s=poll_interval
                )
                ok = True
            except Exception:
                ok = False
        with lock:
            succeeded.append(ok)

    stop = threading.Event()

    def ticker() -> None:
        while not stop.is_set():
            start = time.monotonic()
            time.sleep(TICK_S)
            sampler.sample(time.monotonic() - start - TICK_S)

    cpu0, wall0 = cpu_seconds(), time.monotonic()
    tick = threading.Thread(target=ticker)
    tick.start()
    workers = [threading.Thread(target=wait, args=(i,)) for i in range(waits)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    stop.set()
    tick.join()
    return {
        "cpu_s": cpu_seconds() - cpu0,
        "wall_s": time.monotonic() - wall0,
        "succeeded": sum(succeeded),
        **sampler.report(),
    }


def child(args: argparse.Namespace) -> None:
    import airflow_fireworks.hooks.fireworks
    import airflow_fireworks.triggers.deployment  # noqa: F401

    hard_deadline = time.time() + args.window + 60
    if args.child == "threads":
        result = run_threads(args.waits, args.poll_interval, hard_deadline)
    else:
        result = run_triggers(args.waits, args.poll_interval, hard_deadline, own_clients=args.child == "own")
    print(json.dumps(result), flush=True)


# --- parent: emulator, deployments, table ---------------------------------------------------------


def create_deployments(url: str, count: int) -> None:
    from airflow_fireworks.api import DeploymentConfig, DeploymentManager

    def create(indexes: range) -> None:
        with DeploymentManager(API_KEY, base_url=url) as manager:
            for index in indexes:
                manager.create_or_get(DeploymentConfig(deployment_id=f"bench-{index}", base_model=BASE_MODEL))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, [range(start, count, 8) for start in range(8)]))


def request_count(stats: dict[str, Any], route: str) -> int:
    return sum(stats.get("requests", {}).get(route, {}).values())


def run_scenario(emulator: Any, kind: str, waits: int, args: argparse.Namespace) -> dict[str, Any]:
    emulator.reset()
    emulator.configure(create_delay_s=args.window)
    create_deployments(emulator.url, waits)
    before = emulator.stats()
    home = tempfile.mkdtemp(prefix="bench-triggers-")
    env = {
        **os.environ,
        "AIRFLOW_HOME": home,
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "AIRFLOW_CONN_FIREWORKS_DEFAULT": json.dumps(
            {"conn_type": "fireworks", "host": emulator.url, "password": API_KEY}
        ),
    }
    command = [
        sys.executable,
        __file__,
        "--child",
        kind,
        "--waits",
        str(waits),
        "--poll-interval",
        str(args.poll_interval),
        "--window",
        str(args.window),
    ]
    done = subprocess.run(
        command, env=env, cwd=REPO, capture_output=True, text=True, timeout=args.window + 180, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"scenario {kind} x{waits} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    after = emulator.stats()
    polls = request_count(after, "get") - request_count(before, "get")
    return {"kind": kind, "waits": waits, "polls": polls, **result}


LABELS = {"triggers": "triggers", "own": "triggers, own clients", "threads": "threads (sync client)"}


def print_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    threads = next(r for r in rows if r["kind"] == "threads")
    base_cpu_per_poll = threads["cpu_s"] / max(threads["polls"], 1)
    print()
    print(
        f"Deployment waits against the emulator: poll every {args.poll_interval:g}s (+-10% jitter), "
        f"deployments READY after {args.window:g}s; one child process per row."
    )
    header = (
        f"{'scenario':<24}{'waits':>6}{'done':>6}{'polls':>7}{'wall s':>8}{'CPU s':>7}{'CPU ms/poll':>12}"
        f"{'vs thr':>7}{'peak RSS +MB':>13}{'sockets':>8}{'threads':>8}{'lag p99 ms':>11}{'lag max ms':>11}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        per_poll = row["cpu_s"] / max(row["polls"], 1)
        print(
            f"{LABELS[row['kind']]:<24}{row['waits']:>6}{row['succeeded']:>6}{row['polls']:>7}"
            f"{row['wall_s']:>8.1f}{row['cpu_s']:>7.2f}{per_poll * 1000:>12.3f}"
            f"{per_poll / base_cpu_per_poll:>7.2f}{row['rss_delta_mb']:>13.1f}{row['sockets_peak']:>8}"
            f"{row['threads_peak']:>8}{row['lag_p99_ms']:>11.1f}{row['lag_max_ms']:>11.1f}"
        )
    shared = max((r for r in rows if r["kind"] == "triggers"), key=lambda r: r["waits"])
    if shared["polls"]:
        shared_per_poll = shared["cpu_s"] / max(shared["polls"], 1)
        threads_per_poll = threads["cpu_s"] / max(threads["polls"], 1)
        print()
        print(
            f"{shared['waits']} waits in one event loop vs one thread each: "
            f"CPU per poll x{threads_per_poll / shared_per_poll:.2f} lower, "
            f"peak RSS {shared['rss_delta_mb']:.0f} MB vs {threads['rss_delta_mb']:.0f} MB, "
            f"sockets {shared['sockets_peak']} vs {threads['sockets_peak']}."
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="200 waits, shorter window (about 30 s)")
    parser.add_argument("--waits", type=int, default=None, help="concurrent waits (default 1000; quick 200)")
    parser.add_argument("--poll-interval", type=float, default=None, help="seconds (default 4; quick 1)")
    parser.add_argument(
        "--window", type=float, default=None, help="seconds until READY (default 16; quick 4)"
    )
    parser.add_argument("--child", choices=["triggers", "own", "threads"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.waits = args.waits or (200 if args.quick else 1000)
    args.poll_interval = args.poll_interval or (1.0 if args.quick else 4.0)
    args.window = args.window or (4.0 if args.quick else 16.0)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        child(args)
        return
    from airflow_fireworks.testing import EmulatorProcess

    plan: list[tuple[str, int]] = [
        ("triggers", max(1, args.waits // 10)),
        ("triggers", args.waits),
        ("own", args.waits),
        ("threads", args.waits),
    ]
    rows: list[dict[str, Any]] = []
    started = time.monotonic()
    with EmulatorProcess.start(api_key=API_KEY) as emulator:
        for kind, waits in plan:
            print(f"running {LABELS[kind]} x{waits} ...", flush=True)
            rows.append(run_scenario(emulator, kind, waits, args))
    print_table(rows, args)
    print(f"\ntotal {time.monotonic() - started:.0f}s")


if __name__ == "__main__":
    main()
