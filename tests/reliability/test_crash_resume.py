"""Crash and resume: a task process killed with SIGKILL (no Python exception, no cleanup) and
retried must end with the complete output and no duplicates (sampling), and must not create or
send anything twice (lifecycle waits, worker-side and deferred).
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.emulator_control import EmulatorProcess
from tests.reliability.conftest import BASE_MODEL, create_ready, raw_deployment
from tests.reliability.task_process import run, spawn

PROMPTS = 100
N = 4
SLOW_DECODE = {"decode_step_base_s": 0.004, "decode_step_per_seq_s": 0.0001, "stream_chunk_tokens": 2}
FAST_DECODE = {"decode_step_base_s": 0.0003, "decode_step_per_seq_s": 0.00001}


def kill_when(process: subprocess.Popen[bytes], ready: Callable[[], bool], timeout_s: float = 60) -> None:
    """SIGKILL ``process`` as soon as ``ready()`` holds; fail if it ends or hangs first."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if process.poll() is not None:
            output = process.stdout.read().decode(errors="replace") if process.stdout else ""
            pytest.fail(
                f"the task process ended (code {process.returncode}) before the kill point:\n{output}"
            )
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("the kill point was not reached in time")
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=10) == -signal.SIGKILL
    if process.stdout is not None:
        process.stdout.close()


# --- sampling ------------------------------------------------------------------------------------


def sample_kwargs(output: Path, tokenizer_dir: Path) -> dict[str, Any]:
    prompts = [
        {"messages": [{"role": "user", "content": f"Count to {i}."}], "metadata": {"id": i}}
        for i in range(PROMPTS)
    ]
    return {
        "deployment_id": "crash-dep",
        "tokenizer": str(tokenizer_dir),
        "prompts": prompts,
        "output_path": output.as_uri(),
        "n": N,
        "max_tokens": 24,
        "seed": 99,
        "logprobs": True,
        "concurrency": 8,
    }


def part_lines(shard: Path) -> list[bytes]:
    """Every line (whole or torn) of the part files an attempt is writing."""
    return [
        line for part in sorted(shard.glob("part-*.jsonl")) for line in part.read_bytes().splitlines(True)
    ]


def complete_groups(shard: Path) -> set[int]:
    """Prompts whose whole group of ``N`` records is in the part files (whole lines only)."""
    samples: dict[int, set[int]] = {}
    for line in part_lines(shard):
        if not line.endswith(b"\n"):
            continue
        record = json.loads(line)
        samples.setdefault(record["prompt_index"], set()).add(record["sample_index"])
    return {index for index, seen in samples.items() if seen == set(range(N))}


@pytest.mark.parametrize(
    ("kills", "torn_tail"),
    [(1, False), (1, True), (2, False)],
    ids=["killed-once", "killed-mid-write", "killed-twice"],
)
def test_sampling_task_killed_mid_run_resumes_to_the_exact_output(
    emulator: EmulatorProcess,
    fireworks_conn_env: str,
    tokenizer_dir: Path,
    tmp_path: Path,
    kills: int,
    torn_tail: bool,
) -> None:
    emulator.configure(create_delay_s=0.05, **SLOW_DECODE)
    create_ready(emulator, "crash-dep")
    output = tmp_path / "out"
    shard = output / "shard-000000"
    kwargs = sample_kwargs(output, tokenizer_dir)

    for try_number in range(1, kills + 1):
        threshold = 15 * N * try_number
        process = spawn({"operator": "sample", "kwargs": kwargs, "try_number": try_number})
        kill_when(process, lambda threshold=threshold: len(part_lines(shard)) >= threshold)
    done_before = complete_groups(shard)
    if torn_tail:  # the kill landed in the middle of writing the next prompt's group
        last = sorted(shard.glob("part-*.jsonl"))[-1]
        record = json.loads(last.read_bytes().splitlines()[-1])
        record["prompt_index"] = min(set(range(PROMPTS)) - done_before)
        lines = [json.dumps({**record, "sample_index": s}, separators=(",", ":")) + "\n" for s in range(N)]
        with last.open("ab") as part:
            part.write("".join(lines).encode()[: len(lines[0]) + len(lines[1]) // 2])
    assert not (shard / "manifest.json").exists()
    assert 15 <= len(done_before) < PROMPTS

    emulator.configure(**FAST_DECODE)
    served_before = emulator.stats()["completions"]["finished"]
    summary = run({"operator": "sample", "kwargs": kwargs, "try_number": kills + 1})
    served = emulator.stats()["completions"]["finished"] - served_before
    reference = run({"operator": "sample", "kwargs": sample_kwargs(tmp_path / "clean", tokenizer_dir)})

    assert summary["num_prompts_resumed"] == len(done_before)
    assert summary["num_prompts_sampled"] == PROMPTS - len(done_before)
    assert served == (PROMPTS - len(done_before)) * N  # nothing sampled twice
    assert summary["num_completions"] == PROMPTS * N
    written = Path(summary["completions_uri"].removeprefix("file://")).read_bytes()
    pairs = [(r["prompt_index"], r["sample_index"]) for r in map(json.loads, written.splitlines())]
    assert pairs == [(p, s) for p in range(PROMPTS) for s in range(N)]
    assert written == Path(reference["completions_uri"].removeprefix("file://")).read_bytes()
    assert sorted(path.name for path in shard.iterdir()) == [
        "completions.jsonl",
        "errors.jsonl",
        "manifest.json",
    ]


# --- lifecycle waits -----------------------------------------------------------------------------

WAIT = {"poll_interval": 0.1, "timeout": 60}


def polls_after(
    emulator: EmulatorProcess, sent_route: str, poll_route: str, polls: int
) -> Callable[[], bool]:
    """True once ``sent_route`` was requested and ``poll_route`` polled ``polls`` times after it."""

    def ready() -> bool:
        log = emulator.requests(limit=1000)
        sent = [i for i, entry in enumerate(log) if entry["route"] == sent_route]
        return bool(sent) and sum(1 for entry in log[sent[0] :] if entry["route"] == poll_route) >= polls

    return ready


@pytest.mark.parametrize("deferred", [False, True], ids=["worker-wait", "deferred-wait"])
def test_create_task_killed_while_waiting_resumes_without_a_second_deployment(
    emulator: EmulatorProcess, fireworks_conn_env: str, deferred: bool
) -> None:
    emulator.configure(create_delay_s=4.0)  # the retry must still find it CREATING under load
    spec = {
        "operator": "create",
        "kwargs": {"deployment_id": "crash-create", "base_model": BASE_MODEL, "deferrable": deferred, **WAIT},
        "deferred": deferred,
    }

    kill_when(spawn(spec), polls_after(emulator, "create", "get", 3))
    assert (raw_deployment(emulator, "crash-create") or {}).get("state") == "CREATING"
    result = run({**spec, "try_number": 2})

    assert result["state"] == "READY"
    assert len(emulator.requests(route="create")) == 1
    assert emulator.stats()["deployments"] == {"READY": 1}


@pytest.mark.parametrize("deferred", [False, True], ids=["worker-wait", "deferred-wait"])
def test_hotload_task_killed_while_waiting_does_not_send_the_load_again(
    emulator: EmulatorProcess, fireworks_conn_env: str, deferred: bool
) -> None:
    emulator.configure(create_delay_s=0.05, hotload_stage_s=0.5)
    create_ready(emulator, "crash-hot")
    spec = {
        "operator": "hotload",
        "kwargs": {
            "deployment_id": "crash-hot",
            "base_model": BASE_MODEL,
            "snapshot_identity": "step-7",
            "deferrable": deferred,
            **WAIT,
        },
        "deferred": deferred,
    }

    kill_when(spawn(spec), polls_after(emulator, "hotload_load", "hotload_status", 2))
    result = run({**spec, "try_number": 2})

    assert result["sent"] is False
    assert len(emulator.requests(route="hotload_load")) == 1
    assert (raw_deployment(emulator, "crash-hot") or {}).get("activeModelVersion") == "step-7"
