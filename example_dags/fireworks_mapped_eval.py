"""Evaluate one policy snapshot on a prompt set split into shards sampled by mapped tasks.

One deployment serves the snapshot; ``sample_shard`` is mapped over shard indices, so any
executor (Local, Celery, Kubernetes) runs the shards in parallel, each writing its own JSON Lines
file and manifest; ``summarize`` reads the manifests; ``release_gpus`` scales the deployment to
zero as a teardown task. Every task has ``retries`` (``FIREWORKS_EXAMPLE_RETRIES``, default 2): a
retried shard resumes from the groups it already wrote.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import DAG, ObjectStoragePath, Param, task

import airflow_fireworks
from airflow_fireworks.operators.deployment import (
    FireworksCreateDeploymentOperator,
    FireworksHotloadOperator,
    FireworksScaleToZeroOperator,
)
from airflow_fireworks.operators.sampling import FireworksSampleOperator

NUM_SHARDS = 4
BASE_MODEL = "accounts/fireworks/models/qwen3-8b"
BUNDLED_TOKENIZER = str(Path(airflow_fireworks.__file__).parent / "tokenizer_data")
BUNDLED_PROMPTS = Path(__file__).parent / "data" / "arithmetic_prompts.jsonl"
RETRIES = int(os.environ.get("FIREWORKS_EXAMPLE_RETRIES", "2"))
DEPLOYMENT_ID = "{{ params.deployment_id }}"


@task
def summarize(shards: list[dict[str, Any]]) -> dict[str, Any]:
    """Combine the shards' manifests into one evaluation summary."""
    manifests = []
    for shard in shards:
        with ObjectStoragePath(shard["manifest_uri"]).open("r") as manifest:
            manifests.append(json.load(manifest))
    finish_reasons: dict[str, int] = {}
    for manifest in manifests:
        for reason, count in manifest["finish_reasons"].items():
            finish_reasons[reason] = finish_reasons.get(reason, 0) + count
    return {
        "shards": len(manifests),
        "prompts": sum(m["num_prompts"] for m in manifests),
        "completions": sum(m["num_completions"] for m in manifests),
        "completion_tokens": sum(m["completion_tokens"] for m in manifests),
        "failed_prompts": sum(m["num_prompts_failed"] for m in manifests),
        "finish_reasons": finish_reasons,
        "completions_uris": [shard["completions_uri"] for shard in shards],
    }


with DAG(
    dag_id="fireworks_mapped_eval",
    description="Sample a prompt set in mapped shards on one deployment and summarize",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    default_args={"retries": RETRIES, "retry_delay": timedelta(seconds=30)},
    tags=["fireworks", "evaluation", "example"],
    params={
        "deployment_id": Param(
            "eval-arith-qwen3-8b", type="string", description="Stable id of the evaluation deployment."
        ),
        "snapshot": Param(
            "grpo-arith-qwen3-8b-candidate",
            type="string",
            description="Snapshot identity to evaluate (loaded in full before sampling).",
        ),
        "prompts_path": Param(
            BUNDLED_PROMPTS.as_uri(),
            type="string",
            description="JSONL prompt set, one prompt per line (any object-storage URI).",
        ),
        "tokenizer": Param(
            os.environ.get("FIREWORKS_TOKENIZER", BUNDLED_TOKENIZER),
            type="string",
            description="Tokenizer of the base model: a Hugging Face id or a local directory.",
        ),
        "output_root": Param(
            os.environ.get("FIREWORKS_OUTPUT_ROOT", "file:///tmp/airflow-fireworks"),
            type="string",
            description="Where each shard's completions and manifest go: <output_root>/<run_id>/eval.",
        ),
    },
) as dag:
    create = FireworksCreateDeploymentOperator(
        task_id="create_deployment",
        deployment_id=DEPLOYMENT_ID,
        base_model=BASE_MODEL,
        min_replica_count=1,
        max_replica_count=2,
        poll_interval=5,
        timeout=1800,
    )
    load = FireworksHotloadOperator(
        task_id="load_snapshot",
        deployment_id=DEPLOYMENT_ID,
        base_model=BASE_MODEL,
        snapshot_identity="{{ params.snapshot }}",
        poll_interval=2,
    )
    shards = FireworksSampleOperator.partial(
        task_id="sample_shard",
        deployment_id=DEPLOYMENT_ID,
        base_model=BASE_MODEL,
        tokenizer="{{ params.tokenizer }}",
        prompts_path="{{ params.prompts_path }}",
        output_path="{{ params.output_root }}/{{ run_id | replace(':', '_') }}/eval",
        num_shards=NUM_SHARDS,
        n=2,
        max_tokens=64,
        temperature=0.7,
        seed=1234,
    ).expand(shard_index=list(range(NUM_SHARDS)))
    summary = summarize(shards.output)
    release = FireworksScaleToZeroOperator(
        task_id="release_gpus", deployment_id=DEPLOYMENT_ID, wait_for_completion=True, poll_interval=2
    )
    create >> load >> shards
    summary >> release.as_teardown(setups=create)
