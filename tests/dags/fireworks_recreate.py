"""Test DAG: force_recreate with a retry; the retry must reuse the recreated deployment."""

from __future__ import annotations

import datetime

from airflow.sdk import DAG

from airflow_fireworks.operators.deployment import FireworksCreateDeploymentOperator

with DAG(
    "fireworks_recreate_retry",
    schedule=None,
    start_date=datetime.datetime(2025, 1, 1),
    catchup=False,
    params={"deployment_id": "recreate-retry"},
    tags=["fireworks", "test"],
) as dag:
    FireworksCreateDeploymentOperator(
        task_id="create",
        deployment_id="{{ params.deployment_id }}",
        base_model="accounts/fireworks/models/qwen3-8b",
        force_recreate=True,
        retries=1,
        retry_delay=datetime.timedelta(seconds=0),
        poll_interval=0.1,
        timeout=1,
    )
