"""Browser-suite DAG: what a DAG author opens in the UI after a run.

``create`` makes a deployment (its task carries the "Fireworks deployment" extra link),
``sample`` samples from it with the shipped tokenizer (its rendered fields show which tokenizer a
run used), and ``use_key`` hands the connection's API key to a script through an environment
variable, the way a DAG author would: its rendered ``env`` must show the key masked.
"""

from __future__ import annotations

import datetime
from pathlib import Path

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

import airflow_fireworks
from airflow_fireworks.operators.deployment import FireworksCreateDeploymentOperator
from airflow_fireworks.operators.sampling import FireworksSampleOperator

TOKENIZER = str(Path(airflow_fireworks.__file__).parent / "tokenizer_data")

with DAG(
    "fireworks_ui_showcase",
    schedule=None,
    start_date=datetime.datetime(2025, 1, 1),
    catchup=False,
    params={"deployment_id": "ui-showcase", "tokenizer": TOKENIZER},
    tags=["fireworks", "test"],
) as dag:
    create = FireworksCreateDeploymentOperator(
        task_id="create",
        deployment_id="{{ params.deployment_id }}",
        base_model="accounts/fireworks/models/qwen3-8b",
        min_replica_count=1,
        max_replica_count=1,
        poll_interval=0.1,
        timeout=60,
        deferrable=False,
    )
    sample = FireworksSampleOperator(
        task_id="sample",
        deployment_id="{{ params.deployment_id }}",
        tokenizer="{{ params.tokenizer }}",
        prompts=["What is 3 + 4?", [{"role": "user", "content": "Name a colour."}]],
        n=2,
        max_tokens=8,
        seed=1,
    )
    use_key = BashOperator(
        task_id="use_key",
        bash_command='test -n "$FIREWORKS_API_KEY"',
        env={"FIREWORKS_API_KEY": "{{ conn.fireworks_default.password }}"},
    )
    create >> sample >> use_key
