"""End-to-end DAGs: a deployment's whole life, every wait deferred to the triggerer
(``fireworks_e2e_lifecycle``), and a create that waits in the worker, for a test that kills its
task process (``fireworks_e2e_kill``).

Lifecycle: create -> wait_ready (sensor) -> hotload -> wait_hotload (sensor) -> sample -> release (scale to
zero) -> delete (teardown) -> wait_deleted (sensor). The operators wait for what their own request
started (creation, load, scale-down, deletion), so each of them defers; each sensor confirms the
state the operator before it reached. Run after run on one deployment id: each run creates it and
deletes it again.

Tasks retry once: Airflow 3.3 can fail a deferred task whose trigger fires before the scheduler
has drained the executor's event for the deferral (apache/airflow#72716); the operators are
idempotent, so a retry resumes without creating, loading or deleting anything twice.
"""

from __future__ import annotations

import datetime
from pathlib import Path

from airflow.sdk import DAG

import airflow_fireworks
from airflow_fireworks.operators.deployment import (
    FireworksCreateDeploymentOperator,
    FireworksDeleteDeploymentOperator,
    FireworksHotloadOperator,
    FireworksScaleToZeroOperator,
)
from airflow_fireworks.operators.sampling import FireworksSampleOperator
from airflow_fireworks.sensors.deployment import FireworksDeploymentSensor, FireworksHotloadSensor

BASE_MODEL = "accounts/fireworks/models/qwen3-8b"
TOKENIZER = str(Path(airflow_fireworks.__file__).parent / "tokenizer_data")
PROMPTS = ["What is 2 + 3?", "What is 7 * 6?", "What is 10 - 4?", "What is 9 / 3?"]
SAMPLES_PER_PROMPT = 2
DEPLOYMENT_ID = "{{ params.deployment_id }}"
WAIT = {"deferrable": True, "poll_interval": 0.5, "timeout": 60}

with DAG(
    "fireworks_e2e_lifecycle",
    schedule=None,
    start_date=datetime.datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=1,
    params={"deployment_id": "e2e-lifecycle", "snapshot": "e2e-step-1"},
    default_args={"retries": 1, "retry_delay": datetime.timedelta(seconds=1)},
    tags=["fireworks", "test"],
):
    create = FireworksCreateDeploymentOperator(
        task_id="create",
        deployment_id=DEPLOYMENT_ID,
        base_model=BASE_MODEL,
        min_replica_count=1,
        max_replica_count=2,
        **WAIT,
    )
    wait_ready = FireworksDeploymentSensor(task_id="wait_ready", deployment_id=DEPLOYMENT_ID, **WAIT)
    hotload = FireworksHotloadOperator(
        task_id="hotload",
        deployment_id=DEPLOYMENT_ID,
        base_model=BASE_MODEL,
        snapshot_identity="{{ params.snapshot }}",
        **WAIT,
    )
    wait_hotload = FireworksHotloadSensor(
        task_id="wait_hotload",
        deployment_id=DEPLOYMENT_ID,
        base_model=BASE_MODEL,
        snapshot_identity="{{ params.snapshot }}",
        **WAIT,
    )
    sample = FireworksSampleOperator(
        task_id="sample",
        deployment_id=DEPLOYMENT_ID,
        base_model=BASE_MODEL,
        require_stable_identity=True,
        tokenizer=TOKENIZER,
        prompts=PROMPTS,
        n=SAMPLES_PER_PROMPT,
        max_tokens=8,
        seed=7,
    )
    release = FireworksScaleToZeroOperator(
        task_id="release", deployment_id=DEPLOYMENT_ID, wait_for_completion=True, **WAIT
    )
    delete = FireworksDeleteDeploymentOperator(
        task_id="delete", deployment_id=DEPLOYMENT_ID, wait_for_completion=True, **WAIT
    )
    wait_deleted = FireworksDeploymentSensor(
        task_id="wait_deleted", deployment_id=DEPLOYMENT_ID, target="deleted", **WAIT
    )
    (
        create
        >> wait_ready
        >> hotload
        >> wait_hotload
        >> sample
        >> release
        >> delete.as_teardown(setups=create)
        >> wait_deleted
    )

with DAG(
    "fireworks_e2e_kill",
    schedule=None,
    start_date=datetime.datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=1,
    params={"deployment_id": "e2e-kill"},
    default_args={"retries": 1, "retry_delay": datetime.timedelta(seconds=1)},
    tags=["fireworks", "test"],
    doc_md="A create that waits in the worker, for a test that SIGKILLs its task process.",
):
    # force_recreate: the first try deletes and recreates (creates, when absent) the deployment; a
    # retry after the task process is killed must find that done (task_state_store), not redo it.
    kill_create = FireworksCreateDeploymentOperator(
        task_id="create",
        deployment_id=DEPLOYMENT_ID,
        base_model=BASE_MODEL,
        min_replica_count=1,
        max_replica_count=1,
        force_recreate=True,
        deferrable=False,
        poll_interval=0.5,
        timeout=60,
    )
    kill_delete = FireworksDeleteDeploymentOperator(
        task_id="delete", deployment_id=DEPLOYMENT_ID, wait_for_completion=True, **WAIT
    )
    kill_create >> kill_delete.as_teardown(setups=kill_create)
