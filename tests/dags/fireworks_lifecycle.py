"""Test DAGs: create -> hotload -> scale-to-zero teardown, waiting in the worker or the triggerer.

The deployment id and snapshot come from params (overridable with the run's conf); waits poll
fast because the tests run against the emulator with small delays.
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
FAST = {"poll_interval": 0.1, "timeout": 30, "fireworks_conn_id": "{{ params.conn_id }}"}


def lifecycle_dag(dag_id: str, *, deferrable: bool) -> DAG:
    with DAG(
        dag_id,
        schedule=None,
        start_date=datetime.datetime(2025, 1, 1),
        catchup=False,
        params={"deployment_id": "lifecycle", "snapshot": "snap-1", "conn_id": "fireworks_default"},
        tags=["fireworks", "test"],
    ) as dag:
        create = FireworksCreateDeploymentOperator(
            task_id="create",
            deployment_id="{{ params.deployment_id }}",
            base_model=BASE_MODEL,
            max_replica_count=2,
            min_replica_count=1,
            deferrable=deferrable,
            **FAST,
        )
        hotload = FireworksHotloadOperator(
            task_id="hotload",
            deployment_id="{{ params.deployment_id }}",
            base_model=BASE_MODEL,
            snapshot_identity="{{ params.snapshot }}",
            warmup=True,
            warmup_max_retries=5,
            warmup_retry_interval=0.1,
            deferrable=deferrable,
            **FAST,
        )
        release = FireworksScaleToZeroOperator(
            task_id="release",
            deployment_id="{{ params.deployment_id }}",
            wait_for_completion=True,
            deferrable=deferrable,
            **FAST,
        )
        create >> hotload >> release.as_teardown(setups=create)
    return dag


lifecycle_sync = lifecycle_dag("fireworks_lifecycle_sync", deferrable=False)
lifecycle_deferrable = lifecycle_dag("fireworks_lifecycle_deferrable", deferrable=True)
