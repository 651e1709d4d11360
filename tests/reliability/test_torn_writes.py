"""Torn writes by real kills: a process writing a shard's part files is killed with SIGKILL at
dozens of random moments, each time followed by a retry that resumes from what was written.

The writer is the operator's own path (``ShardStore.scan`` -> skip the done prompts ->
``open_part`` -> ``PartWriter.write``, one write per prompt group) in a forked child, with groups
of 128 KiB. Most of a try's time goes to encoding JSON, not to the write itself, and a kill sent
from the test process arrives a millisecond or more late; so the child starts a killer thread
that waits for its first group's write and then sends SIGKILL to the process after a random
delay of up to a few write durations: many kills land inside the write and leave a torn tail
(a partial line). After every kill, what a retry would resume from must be whole groups only,
each byte-identical to the group a clean run writes; a retry writes only prompts without a
whole group; and the consolidated output equals a clean run's byte for byte.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

from airflow.sdk import ObjectStoragePath

from airflow_fireworks.operators._sample_store import ShardStore
from airflow_fireworks.sampling import PromptResult, SampledCompletion

PROMPTS = 40
N = 4
TEXT_BYTES = 32 * 1024  # one record; a group (one write) is about N times this
KILLS = 40
#: More kills (up to KILLS_MAX, within TIME_BUDGET_S) while fewer writes than MIN_TORN were torn.
KILLS_MAX = 160
TIME_BUDGET_S = 40.0
#: Fewer torn writes than this would leave the torn-tail handling barely exercised.
MIN_TORN = 3
#: A kill lands at a random moment up to this long after a try's first write starts (writing a
#: 128 KiB group takes about 0.05-0.1 ms here).
WRITE_WINDOW_S = 0.0002
SEED = 20261130
INPUTS = {"prompts": PROMPTS, "n": N}


def result(prompt_index: int) -> PromptResult:
    """The deterministic result of one prompt (what the emulator would answer for a seed)."""
    completions = []
    for sample in range(N):
        filler = f"p{prompt_index}s{sample}-".encode().hex()
        text = (filler * (TEXT_BYTES // len(filler) + 1))[:TEXT_BYTES]
        tokens = [1, 2, prompt_index, sample, 7, 9]
        completions.append(
            SampledCompletion(
                text=text,
                full_tokens=tokens,
                prompt_len=3,
                completion_len=3,
                finish_reason="stop",
                inference_logprobs=[-0.5, -0.25, -0.125],
                sample_index=sample,
            )
        )
    return PromptResult(prompt_index, completions, None, {"id": prompt_index})


class KilledDuringFirstWrite:
    """The part's file object; its first write starts a SIGKILL of this process ``delay_s`` later
    (a thread started beforehand waits for the write, then spins to the moment, which a sleep
    would overshoot)."""

    def __init__(self, fp: Any, delay_s: float) -> None:
        self.fp, self.delay_s = fp, delay_s
        self.writing = threading.Event()
        threading.Thread(target=self._kill, daemon=True).start()

    def write(self, text: str) -> int:
        self.writing.set()
        return int(self.fp.write(text))

    def _kill(self) -> None:
        self.writing.wait()
        moment = time.perf_counter() + self.delay_s
        while time.perf_counter() < moment:
            time.sleep(0)
        os.kill(os.getpid(), signal.SIGKILL)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fp, name)


def one_try(root: str, try_number: int, *, finish: bool, kill_after_s: float | None = None) -> None:
    """One task try, as ``FireworksSampleOperator`` runs it: resume, write the missing groups;
    with ``finish``, close the part and consolidate. ``kill_after_s``: SIGKILL that long after
    the first write starts."""
    store = ShardStore(ObjectStoragePath(root), 0)
    store.prepare(INPUTS, overwrite=False)
    done = store.scan(N).done
    writer = store.open_part(try_number)
    if kill_after_s is not None:
        writer._fp = KilledDuringFirstWrite(writer._fp, kill_after_s)  # type: ignore[assignment]
    for index in range(PROMPTS):
        if index not in done:
            writer.write(result(index))
    writer.close()
    if finish:
        store.consolidate(store.scan(N, clean={writer.path.name}))


def _child(root: str, try_number: int, kill_after_s: float) -> None:
    try:
        one_try(root, try_number, finish=False, kill_after_s=kill_after_s)
    except BaseException as exc:  # report it to the test (a forked child has no pytest)
        Path(root.removeprefix("file://"), f"error-{try_number}.txt").write_text(
            f"{type(exc).__name__}: {exc}"
        )
        os._exit(1)
    os._exit(0)


def written_prompts(part: Path) -> set[int]:
    """The prompts a part file holds any record (or torn record head) of."""
    found = set()
    for line in part.read_bytes().splitlines():
        head = line[: line.find(b',"sample_index"')] if b',"sample_index"' in line else b""
        if head.startswith(b'{"type":"completion","prompt_index":'):
            found.add(int(head.rsplit(b":", 1)[1]))
    return found


def torn_tail(part: Path) -> str | None:
    """How the kill left the end of a part: ``"partial line"``, ``"partial group"`` or None."""
    data = part.read_bytes()
    if data and not data.endswith(b"\n"):
        return "partial line"
    lines = data.splitlines()
    if lines:
        last = json.loads(lines[-1])["prompt_index"]
        same = sum(1 for line in lines if json.loads(line)["prompt_index"] == last)
        if same % N:
            return "partial group"
    return None


def kill_one_try(root: Path, try_number: int, delay_s: float) -> tuple[Path | None, int | None]:
    """Run one try in a forked child that SIGKILLs itself ``delay_s`` into its first write;
    return the part it wrote (None if it was killed before) and its exit code."""
    shard = root / "shard-000000"
    parts_before = set(shard.glob("part-*.jsonl")) if shard.exists() else set()
    child = multiprocessing.get_context("fork").Process(
        target=_child, args=(root.as_uri(), try_number, delay_s)
    )
    child.start()
    child.join(30)
    errors = [path.read_text() for path in root.glob("error-*.txt")]
    assert child.exitcode in (0, -signal.SIGKILL), errors or f"the writer did not end ({child.exitcode})"
    new = set(shard.glob("part-*.jsonl")) - parts_before
    return (new.pop() if new else None), child.exitcode


def test_dozens_of_random_sigkills_leave_whole_groups_only(tmp_path: Path) -> None:
    clean_root = tmp_path / "clean"
    one_try(clean_root.as_uri(), 1, finish=True)
    clean = (clean_root / "shard-000000" / "completions.jsonl").read_bytes()
    clean_groups = {
        index: b"".join(line for line in clean.splitlines(True) if json.loads(line)["prompt_index"] == index)
        for index in range(PROMPTS)
    }
    rng = random.Random(SEED)
    tails: dict[str | None, int] = {}
    kills = rewritten = runs = 0
    deadline = time.monotonic() + TIME_BUDGET_S

    # Runs (a fresh output directory each) of killed tries, until KILLS kills and MIN_TORN torn
    # writes (more kills while too few writes were torn, within TIME_BUDGET_S).
    while kills < KILLS or (torn_writes(tails) < MIN_TORN and time.monotonic() < deadline):
        root = tmp_path / f"run-{runs}"
        store = ShardStore(ObjectStoragePath(root.as_uri()), 0)
        done: frozenset[int] = frozenset()
        try_number = 0
        while len(done) < PROMPTS - 1 and kills < KILLS_MAX:
            try_number += 1
            part, exit_code = kill_one_try(root, try_number, rng.uniform(0.0, WRITE_WINDOW_S))
            kills += exit_code == -signal.SIGKILL
            if part is None:
                continue
            tail = torn_tail(part)
            tails[tail] = tails.get(tail, 0) + 1
            assert not written_prompts(part) & done, "a retry wrote a prompt that was done"

            # What a retry resumes from: whole groups only, each exactly as a clean run writes it.
            contents = store.scan(N)
            assert done <= contents.done
            rewritten += len(written_prompts(part) - contents.done)  # torn: to be written again
            files = [source.read_bytes() for source in contents.sources]
            for index, group in contents.groups.items():
                data = files[group.source][group.start : group.end]
                assert sorted(group.sample_indices) == list(range(N))
                assert data == clean_groups[index], f"prompt {index}: the group resumed from is not whole"
            done = contents.done

        one_try(root.as_uri(), try_number + 1, finish=True)  # the retry that is not killed
        assert (root / "shard-000000" / "completions.jsonl").read_bytes() == clean
        runs += 1

    print(  # the figures for docs/reliability.md (pytest -s)
        f"{kills} kills in {runs} runs: part tails {tails}; groups written again after a torn write "
        f"{rewritten}; {time.monotonic() - deadline + TIME_BUDGET_S:.1f} s"
    )
    assert rewritten == torn_writes(tails)
    assert torn_writes(tails) >= MIN_TORN, f"too few kills tore a write ({tails}): nothing was proven"


def torn_writes(tails: dict[str | None, int]) -> int:
    return tails.get("partial line", 0) + tails.get("partial group", 0)


def test_a_try_killed_while_it_records_its_inputs_does_not_block_the_retry(tmp_path: Path) -> None:
    """Found by killing whole tries at random moments: a try used to rewrite ``inputs.json`` in place
    at its start (truncate, then write); killed in between, it left the file empty and every retry
    refused the directory ("already holds results of different inputs"). Now the record is written
    to a temporary file and renamed, and a retry whose inputs are recorded does not write it at all:
    the window a kill can tear leaves only the temporary file, which the retry ignores."""
    clean_root = tmp_path / "clean"
    one_try(clean_root.as_uri(), 1, finish=True)
    root = tmp_path / "out"
    part, exit_code = kill_one_try(root, 1, 0.0)
    assert part is not None and exit_code == -signal.SIGKILL
    recorded = root / "shard-000000" / "inputs.json"
    before = (recorded.stat().st_ino, recorded.read_bytes())
    (root / "shard-000000" / "inputs.json.tmp").write_bytes(b'{"n": ')  # what a kill mid-record leaves

    one_try(root.as_uri(), 2, finish=True)

    assert before[1] and (recorded.stat().st_ino, recorded.read_bytes()) == before  # not rewritten

    completions = (root / "shard-000000" / "completions.jsonl").read_bytes()
    assert completions == (clean_root / "shard-000000" / "completions.jsonl").read_bytes()
