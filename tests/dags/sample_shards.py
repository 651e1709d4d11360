"""Test DAG: one JSONL prompt set sampled by three mapped shards (``.expand``), each writing its
own shard directory under ``output_path``; a downstream task adds up the shard summaries."""

from __future__ import annotations

import datetime
from typing import Any

from airflow.sdk import DAG, task

from airflow_fireworks.operators.sampling import FireworksSampleOperator

with DAG(
    "sample_shards",
    schedule=None,
    start_date=datetime.datetime(2025, 1, 1),
    catchup=False,
    params={"deployment_id": "sample-dag", "prompts_path": "", "output_path": ""},
    tags=["fireworks", "test"],
) as dag:
    shards = FireworksSampleOperator.partial(
        task_id="sample",
        deployment_id="{{ params.deployment_id }}",
        prompts_path="{{ params.prompts_path }}",
        output_path="{{ params.output_path }}",
        num_shards=3,
        n=2,
        max_tokens=8,
        concurrency={"initial_window": 4, "max_window": 16},
    ).expand(shard_index=[0, 1, 2])

    @task
    def totals(summaries: list[dict[str, Any]]) -> dict[str, int]:
        return {
            "prompts": sum(s["num_prompts"] for s in summaries),
            "completions": sum(s["num_completions"] for s in summaries),
            "completion_tokens": sum(s["completion_tokens"] for s in summaries),
        }

    totals(shards.output)
