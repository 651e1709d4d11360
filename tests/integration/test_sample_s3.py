"""Completions on S3 (moto's server on loopback, through Airflow's ``aws`` connection, as a user
would): plain runs, mapped shards and the mapped example are byte-identical to a local-file run;
a task SIGKILLed half way loses at most a few groups on S3 as on a local disk, and the retry
cleans up the incomplete multipart uploads a killed try left."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_fireworks.operators._sample_store import OBJECT_PART_GROUPS
from tests.airflow_helpers import run_dag_file, task_states, xcom
from tests.emulator_control import EmulatorProcess
from tests.integration.test_example_dags import EXAMPLE_DAGS
from tests.integration.test_example_dags import FAST_EMULATOR as EXAMPLE_EMULATOR
from tests.reliability.conftest import create_ready
from tests.reliability.task_process import run, spawn
from tests.reliability.test_crash_resume import FAST_DECODE, SLOW_DECODE, kill_when
from tests.s3_server import S3Server

BUNDLED_PROMPTS = EXAMPLE_DAGS / "data" / "arithmetic_prompts.jsonl"
BUCKET = "rollouts"
CONN_ID = "aws_default"
PROMPTS = 200
N = 2


@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3Server]:
    with S3Server.start() as server:
        yield server


@pytest.fixture
def s3(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    """An empty bucket on the server and the ``aws_default`` connection pointing at it."""
    s3_server.reset()
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", s3_server.connection())
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    s3_server.client().create_bucket(Bucket=BUCKET)
    yield s3_server
    s3_server.reset()


def s3_uri(key: str) -> str:
    return f"s3://{CONN_ID}@{BUCKET}/{key}"


def read_uri(uri: str, s3: S3Server) -> bytes:
    """Bytes of a ``file://`` or plain ``s3://bucket/key`` URI, read without Airflow."""
    if uri.startswith("file://"):
        return Path(uri.removeprefix("file://")).read_bytes()
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bytes(s3.client().get_object(Bucket=bucket, Key=key)["Body"].read())


def keys(s3: S3Server, prefix: str) -> list[str]:
    listing = s3.client().list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return sorted(item["Key"] for item in listing.get("Contents", []))


def prompts(count: int) -> list[dict[str, Any]]:
    return [
        {"prompt_token_ids": [1, 40 + i % 200, 7 + i // 200, 9], "metadata": {"id": i}} for i in range(count)
    ]


def sample_kwargs(output_path: str, count: int = PROMPTS) -> dict[str, Any]:
    return {
        "deployment_id": "s3-dep",
        "prompts": prompts(count),
        "output_path": output_path,
        "n": N,
        "max_tokens": 16,
        "seed": 7,
        "logprobs": True,
        "concurrency": 8,
    }


# -- plain runs ---------------------------------------------------------------------------------


def test_a_run_on_s3_writes_the_bytes_of_a_local_run_and_hands_over_plain_uris(
    emulator: EmulatorProcess, fireworks_conn_env: str, s3: S3Server, tmp_path: Path
) -> None:
    emulator.configure(**FAST_DECODE)
    create_ready(emulator, "s3-dep")
    local = run({"operator": "sample", "kwargs": sample_kwargs((tmp_path / "local").as_uri(), 40)})

    for attempt in range(2):  # the second run finds the finished shard and reuses it
        remote = run({"operator": "sample", "kwargs": sample_kwargs(s3_uri("plain"), 40)})
        assert remote["reused"] is (attempt == 1)
        assert remote["completions_uri"] == s3_uri("plain/shard-000000/completions.jsonl")
        assert remote["storage"] == {
            "conn_id": CONN_ID,
            "completions_uri": f"s3://{BUCKET}/plain/shard-000000/completions.jsonl",
            "errors_uri": f"s3://{BUCKET}/plain/shard-000000/errors.jsonl",
            "manifest_uri": f"s3://{BUCKET}/plain/shard-000000/manifest.json",
        }
        assert read_uri(remote["storage"]["completions_uri"], s3) == read_uri(local["completions_uri"], s3)
        manifest = json.loads(read_uri(remote["storage"]["manifest_uri"], s3))
        assert manifest["storage"] == remote["storage"]
        assert keys(s3, "plain/") == [
            f"plain/shard-000000/{name}" for name in ("completions.jsonl", "errors.jsonl", "manifest.json")
        ]
    assert len(emulator.requests(route="completions", limit=1000)) == 2 * 40 * N  # local + first S3 run


def test_the_mapped_example_reads_and_writes_s3_as_it_does_local_files(
    emulator: EmulatorProcess, fireworks_conn_env: str, s3: S3Server, tmp_path: Path
) -> None:
    emulator.configure(**EXAMPLE_EMULATOR)
    s3.client().upload_file(str(BUNDLED_PROMPTS), BUCKET, "in/prompts.jsonl")
    written = {}
    for label, conf in [
        ("local", {"prompts_path": BUNDLED_PROMPTS.as_uri(), "output_root": tmp_path.as_uri()}),
        ("s3", {"prompts_path": s3_uri("in/prompts.jsonl"), "output_root": s3_uri("eval")}),
    ]:
        dag_run = run_dag_file(EXAMPLE_DAGS / "fireworks_mapped_eval.py", "fireworks_mapped_eval", conf=conf)
        assert set(task_states(dag_run).values()) == {"success"}, (label, task_states(dag_run))
        assert xcom(dag_run, "summarize")["completions"] == 96 * 2, label
        summaries = [xcom(dag_run, "sample_shard", map_index=shard) for shard in range(4)]
        written[label] = [read_uri(summary["storage"]["completions_uri"], s3) for summary in summaries]
    assert written["s3"] == written["local"]  # the second run on the same deployment
    assert all(written["local"])
    assert len(keys(s3, "eval/")) == 4 * 3  # completions, errors and manifest per shard: no part left


# -- a SIGKILL half way -------------------------------------------------------------------------


def requested_prompts(emulator: EmulatorProcess) -> Counter[tuple[int, ...]]:
    """How many completion requests each prompt (by its token ids) received."""
    log = emulator.requests(route="completions", limit=100_000)
    return Counter(tuple(entry["body"]["prompt"]) for entry in log)


def kill_half_way_and_retry(
    emulator: EmulatorProcess, output_path: str, reference: bytes, s3: S3Server
) -> dict[str, int]:
    """SIGKILL the sampling task once half the completions are served, retry it, check that the
    output is exact; return how many prompts the retry resumed and how many were sampled twice."""
    emulator.reset()
    emulator.configure(**SLOW_DECODE, request_log_size=100_000)
    create_ready(emulator, "s3-dep")
    kwargs = sample_kwargs(output_path)
    process = spawn({"operator": "sample", "kwargs": kwargs, "try_number": 1})
    kill_when(process, lambda: emulator.stats()["completions"]["finished"] >= PROMPTS * N // 2)
    emulator.configure(**FAST_DECODE)
    summary = run({"operator": "sample", "kwargs": kwargs, "try_number": 2})

    written = read_uri(summary["storage"]["completions_uri"], s3)
    pairs = [(r["prompt_index"], r["sample_index"]) for r in map(json.loads, written.splitlines())]
    assert pairs == [(p, s) for p in range(PROMPTS) for s in range(N)]  # none lost or duplicated
    assert written == reference
    assert summary["num_prompts_sampled"] == PROMPTS - summary["num_prompts_resumed"]
    requested = requested_prompts(emulator)
    assert len(requested) == PROMPTS
    assert sum(requested.values()) >= PROMPTS * N
    resampled = sum(1 for count in requested.values() if count > N)
    return {
        "resumed": summary["num_prompts_resumed"],
        "sampled": summary["num_prompts_sampled"],
        "resampled": resampled,
    }


@pytest.mark.parametrize("store", ["local", "s3"])
def test_a_task_killed_half_way_loses_only_a_few_groups(
    emulator: EmulatorProcess, fireworks_conn_env: str, s3: S3Server, tmp_path: Path, store: str
) -> None:
    emulator.configure(**FAST_DECODE)
    create_ready(emulator, "s3-dep")
    reference = read_uri(
        run({"operator": "sample", "kwargs": sample_kwargs(tmp_path.as_uri())})["completions_uri"], s3
    )
    client = s3.client()
    if store == "s3":  # what a killed consolidation leaves: a multipart upload nobody completes
        key = "killed/shard-000000/completions.jsonl.tmp"
        upload = client.create_multipart_upload(Bucket=BUCKET, Key=key)
        client.upload_part(
            Bucket=BUCKET, Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=b"x" * 1024
        )

    output = (tmp_path / "killed").as_uri() if store == "local" else s3_uri("killed")
    figures = kill_half_way_and_retry(emulator, output, reference, s3)
    print(  # the README's figures
        f"\n{store}: the retry resumed {figures['resumed']} and sampled {figures['sampled']} of {PROMPTS} "
        f"prompts; {figures['resampled']} were sampled twice"
    )

    # what was sampled before the kill is kept, but for the requests in flight (concurrency 8)
    # and, on S3, the groups not yet in a part object (fewer than OBJECT_PART_GROUPS)
    lost_at_most = 8 + (OBJECT_PART_GROUPS if store == "s3" else 0)
    assert figures["resampled"] <= lost_at_most
    assert figures["resumed"] >= PROMPTS // 2 - lost_at_most
    if store == "s3":
        assert client.list_multipart_uploads(Bucket=BUCKET, Prefix="killed/").get("Uploads", []) == []
        assert keys(s3, "killed/") == [
            f"killed/shard-000000/{name}" for name in ("completions.jsonl", "errors.jsonl", "manifest.json")
        ]


# -- the part objects -------------------------------------------------------------------------


def test_part_objects_are_written_every_few_groups_or_seconds(s3: S3Server) -> None:
    from airflow.sdk import ObjectStoragePath

    from airflow_fireworks.operators._sample_store import ObjectPartWriter
    from airflow_fireworks.sampling import PromptResult

    def error(index: int) -> PromptResult:
        return PromptResult(index, [], {"error_type": "x", "message": "m"}, {})

    by_count = ObjectPartWriter(
        ObjectStoragePath(s3_uri("w/part-1-0000000a.jsonl")), max_groups=2, max_age_s=60
    )
    for index in range(5):
        by_count.write(error(index))
    assert keys(s3, "w/") == ["w/part-1-0000000a-000000.jsonl", "w/part-1-0000000a-000001.jsonl"]
    by_count.close()  # the fifth group
    assert len(keys(s3, "w/")) == 3
    lines = [read_uri(f"s3://{BUCKET}/{key}", s3).splitlines() for key in keys(s3, "w/")]
    assert [[json.loads(line)["prompt_index"] for line in part] for part in lines] == [[0, 1], [2, 3], [4]]

    by_age = ObjectPartWriter(
        ObjectStoragePath(s3_uri("a/part-1-0000000b.jsonl")), max_groups=32, max_age_s=0
    )
    for index in range(3):
        by_age.write(error(index))
    assert len(keys(s3, "a/")) == 3  # each group was already due when written
