"""End-to-end DAG: create -> hotload -> scale-to-zero teardown, every wait deferred to the triggerer.

Tasks retry once: Airflow 3.3 can fail a deferred task whose trigger fires before the scheduler
has drained the executor's event for the deferral (apache/airflow#72716); the operators are
idempotent, so a retry resumes without creating or loading anything twice.
"""

from __future__ import annotations

import datetime

from airflow.sdk import DAG

from airflow_fireworks.operators.deployment import (
    FireworksCreateDeploymentOperator,
    FireworksHotloadOperator,
    FireworksScaleToZeroOperator,
)

BASE_MODEL = "accounts/fireworks/models/qwen3-8b"

with DAG(
    "fireworks_e2e_lifecycle",
    schedule=None,
    start_date=datetime.datetime(2025, 1, 1),
    catchup=False,
    params={"deployment_id": "e2e-lifecycle", "snapshot": "e2e-step-1"},
    default_args={"retries": 1, "retry_delay": datetime.timedelta(seconds=1)},
    tags=["fireworks", "test"],
):
    create = FireworksCreateDeploymentOperator(
        task_id="create",
        deployment_id="{{ params.deployment_id }}",
        base_model=BASE_MODEL,
        min_replica_count=1,
        max_replica_count=2,
        deferrable=True,
        poll_interval=0.5,
        timeout=120,
    )
    hotload = FireworksHotloadOperator(
        task_id="hotload",
        deployment_id="{{ params.deployment_id }}",
        base_model=BASE_MODEL,
        snapshot_identity="{{ params.snapshot }}",
        deferrable=True,
        poll_interval=0.5,
        timeout=120,
    )
    release = FireworksScaleToZeroOperator(
        task_id="release",
        deployment_id="{{ params.deployment_id }}",
        wait_for_completion=True,
        deferrable=True,
        poll_interval=0.5,
        timeout=120,
    )
    create >> hotload >> release.as_teardown(setups=create)
