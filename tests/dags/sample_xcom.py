"""Test DAG: prompts built by an upstream task reach the sampler through XCom; the completions
come back through XCom and a downstream task regroups them per prompt (as GRPO would)."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, task

import airflow_fireworks
from airflow_fireworks.operators.sampling import FireworksSampleOperator

TOKENIZER = str(Path(airflow_fireworks.__file__).parent / "tokenizer_data")

with DAG(
    "sample_xcom_prompts",
    schedule=None,
    start_date=datetime.datetime(2025, 1, 1),
    catchup=False,
    params={"deployment_id": "sample-dag", "n": 2},
    tags=["fireworks", "test"],
) as dag:

    @task
    def make_prompts() -> list[Any]:
        return [
            "What is 3 + 4?",
            {"messages": [{"role": "user", "content": "Name a colour."}], "metadata": {"answer": "red"}},
            {"prompt_token_ids": [1, 320, 85, 201, 17]},
            "Expand {{ a + b }}^2.",  # from XCom: passed as is, never Jinja-rendered
        ]

    sample = FireworksSampleOperator(
        task_id="sample",
        deployment_id="{{ params.deployment_id }}",
        tokenizer=TOKENIZER,
        prompts=make_prompts(),
        n="{{ params.n }}",
        max_tokens=8,
        seed=1,
    )

    @task
    def group_sizes(result: dict[str, Any]) -> dict[str, int]:
        sizes: dict[str, int] = {}
        for record in result["completions"]:
            key = str(record["prompt_index"])
            sizes[key] = sizes.get(key, 0) + 1
        return sizes

    group_sizes(sample.output)
