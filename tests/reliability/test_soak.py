"""Soak: more than 10,000 sampled completions through ``FireworksSampleOperator`` while the
emulator injects a few percent of faults of every kind, then the exact-set check.

The faulty run must end (after task retries for the prompts that failed for good) with a
``completions.jsonl`` byte-identical to the one a fault-free run writes: nothing lost, nothing
duplicated, nothing truncated and counted as complete, same order. The emulator is deterministic
for a given seed, so the clean run is the reference. Runs in ``make test`` (about 20-40 s on two
cores: short completions, many prompts x n, a fast emulator).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowException

from airflow_fireworks.operators.sampling import FireworksSampleOperator
from tests.airflow_helpers import task_context
from tests.emulator_control import EmulatorProcess
from tests.reliability.conftest import create_ready

pytestmark = pytest.mark.soak

PROMPTS = 1280
N = 8
MAX_TOKENS = 6
MAX_TRIES = 4
#: Fault rules on the completions route, each hitting a fraction of the requests (about 5 % in all).
#: The last two are not retried by the sampler: their prompts fail, and the task's retry samples them.
SOAK_FAULTS: list[dict[str, Any]] = [
    {"kind": "status", "status": 500, "probability": 0.005},
    {"kind": "status", "status": 502, "probability": 0.005},
    {"kind": "status", "status": 503, "probability": 0.005},
    {"kind": "status", "status": 429, "retry_after_s": 0.05, "probability": 0.005},
    {"kind": "reset", "probability": 0.005},
    {"kind": "reset_mid_stream", "after_chunks": 1, "probability": 0.005},
    {"kind": "truncate", "after_chunks": 1, "probability": 0.005},
    {"kind": "stream_error", "status": 503, "after_chunks": 1, "probability": 0.005},
    {"kind": "delay", "delay_s": 0.05, "probability": 0.005},
    {"kind": "malformed_chunk", "after_chunks": 1, "probability": 0.001},
    {"kind": "finish_error", "after_chunks": 1, "probability": 0.001},
]
SOAK_EMULATOR: dict[str, Any] = {
    "decode_slots": 512,
    "decode_step_base_s": 0.0002,
    "decode_step_per_seq_s": 0.000001,
    "stream_chunk_tokens": 2,
    "eos_probability": 0.05,
}


def write_prompts(path: Path) -> Path:
    with path.open("w") as out:
        for i in range(PROMPTS):
            record = {
                "messages": [{"role": "user", "content": f"What is {i} + {i % 13}? Answer briefly."}],
                "metadata": {"id": f"soak-{i:05d}", "answer": str(i + i % 13)},
            }
            out.write(json.dumps(record) + "\n")
    return path


def soak_operator(prompts: Path, output: Path, tokenizer_dir: Path) -> FireworksSampleOperator:
    return FireworksSampleOperator(
        task_id="soak",
        deployment_id="soak-dep",
        tokenizer=str(tokenizer_dir),
        prompts_path=prompts.as_uri(),
        output_path=output.as_uri(),
        n=N,
        max_tokens=MAX_TOKENS,
        temperature=1.0,
        seed=2024,
        logprobs=True,
        concurrency=128,
        progress_interval_s=5.0,
    )


def run_with_retries(
    prompts: Path, output: Path, tokenizer_dir: Path
) -> tuple[dict[str, Any], list[AirflowException]]:
    """Run the task as Airflow would: a failed try is retried (``try_number`` + 1) up to MAX_TRIES."""
    failures: list[AirflowException] = []
    for try_number in range(1, MAX_TRIES + 1):
        context = task_context()
        context["ti"].try_number = try_number
        try:
            return soak_operator(prompts, output, tokenizer_dir).execute(context), failures
        except AirflowException as failure:
            failures.append(failure)
    raise AssertionError(f"still failing after {MAX_TRIES} tries: {failures[-1]}")


def test_soak_exact_completions_under_injected_faults(
    emulator: EmulatorProcess, fireworks_conn_env: str, tokenizer_dir: Path, tmp_path: Path
) -> None:
    emulator.configure(create_delay_s=0.05, **SOAK_EMULATOR)
    create_ready(emulator, "soak-dep")
    prompts = write_prompts(tmp_path / "prompts.jsonl")

    clean = soak_operator(prompts, tmp_path / "clean", tokenizer_dir).execute(task_context())
    clean_requests = sum(emulator.stats()["requests"]["completions"].values())
    for rule in SOAK_FAULTS:
        emulator.add_fault(route="completions", times=None, **rule)
    summary, failed_tries = run_with_retries(prompts, tmp_path / "faulty", tokenizer_dir)
    rules = emulator.admin("GET", "faults")
    emulator.clear_faults()
    faulty_requests = sum(emulator.stats()["requests"]["completions"].values()) - clean_requests

    expected = {(p, s) for p in range(PROMPTS) for s in range(N)}
    faulty_bytes = Path(summary["completions_uri"].removeprefix("file://")).read_bytes()
    records = [json.loads(line) for line in faulty_bytes.splitlines()]
    pairs = Counter((r["prompt_index"], r["sample_index"]) for r in records)
    assert len(records) == PROMPTS * N >= 10_000
    assert set(pairs) == expected and max(pairs.values()) == 1
    for record in records:
        assert record["finish_reason"] in ("stop", "length")
        assert record["completion_len"] == len(record["completion_token_ids"]) >= 1
        assert len(record["inference_logprobs"]) == record["completion_len"]
        assert record["finish_reason"] == "stop" or record["completion_len"] == MAX_TOKENS
    assert faulty_bytes == Path(clean["completions_uri"].removeprefix("file://")).read_bytes()
    assert summary["num_completions"] == clean["num_completions"] == PROMPTS * N
    assert summary["num_prompts_failed"] == 0
    assert Path(summary["errors_uri"].removeprefix("file://")).read_text() == ""

    hits = {f"{r['kind']}{r['status'] if r['kind'] in ('status', 'stream_error') else ''}": r["hits"]
            for r in rules}  # fmt: skip
    total_hits = sum(hits.values())
    assert all(count > 0 for count in hits.values()), hits
    assert total_hits >= 0.02 * clean_requests, hits
    terminal = hits["malformed_chunk"] + hits["finish_error"]
    assert failed_tries, "the terminal stream faults should have failed at least the first try"
    manifest = json.loads(Path(summary["manifest_uri"].removeprefix("file://")).read_text())
    assert len(manifest["attempts"]) == len(failed_tries) + 1
    print(
        f"\nsoak: {len(records)} completions checked ({PROMPTS} prompts x n={N}), "
        f"{total_hits} faults injected in {faulty_requests} requests ({total_hits / faulty_requests:.1%}; "
        f"{terminal} not retryable in-request, survived by "
        f"{len(failed_tries)} task retries), 0 lost, 0 duplicated, 0 truncated; faults by kind: {hits}"
    )
