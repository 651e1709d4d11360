"""Test DAG: the trainer half of an RL step, against the emulator.

create_trainer -> create_deployment (linked through ``hot_load_trainer_job`` from the trainer
task's XCom) -> save_snapshot (asks the emulator for the trainer's next checkpoint, standing in for
the training client's save-weights call) -> hotload -> promote; teardown deletes the trainer and
scales the deployment to zero. ``fail_hotload`` in the conf makes the hotload fail, to show the
teardown still releases everything.
"""

from __future__ import annotations

import datetime
import hashlib
from typing import Any

import requests
from airflow.sdk import DAG, task

from airflow_fireworks.hooks.fireworks import FireworksHook
from airflow_fireworks.operators.deployment import (
    FireworksCreateDeploymentOperator,
    FireworksHotloadOperator,
    FireworksScaleToZeroOperator,
)
from airflow_fireworks.operators.trainer import (
    FireworksCreateTrainerJobOperator,
    FireworksDeleteTrainerJobOperator,
    FireworksPromoteCheckpointOperator,
)

BASE_MODEL = "accounts/fireworks/models/qwen3-8b"
FAST = {"poll_interval": 0.1, "timeout": 30}
TRAINER = "{{ ti.xcom_pull(task_ids='create_trainer')"


@task
def save_snapshot(trainer: dict[str, Any], **context: Any) -> dict[str, Any]:
    """The emulator's stand-in for ``save_weights_for_sampler``: a full snapshot of this run, and
    the id of the model it will be promoted to."""
    base_url = FireworksHook().connection_params.base_url
    digest = hashlib.sha1(context["run_id"].encode()).hexdigest()[:8]
    name = "broken-step" if context["params"]["fail_hotload"] else f"step-{digest}"
    response = requests.post(
        f"{base_url}/_emulator/trainers/{trainer['job_id']}/checkpoints", json={"name": name}, timeout=10
    )
    response.raise_for_status()
    return {**response.json(), "model_id": f"{context['params']['deployment_id']}-{digest}"}


with DAG(
    "fireworks_trainer_lifecycle",
    schedule=None,
    start_date=datetime.datetime(2025, 1, 1),
    catchup=False,
    params={"deployment_id": "trainer-lifecycle", "fail_hotload": False},
    tags=["fireworks", "test"],
) as dag:
    create_trainer = FireworksCreateTrainerJobOperator(
        task_id="create_trainer", base_model=BASE_MODEL, deferrable=True, delete_on_kill=True, **FAST
    )
    create_deployment = FireworksCreateDeploymentOperator(
        task_id="create_deployment",
        deployment_id="{{ params.deployment_id }}",
        base_model=BASE_MODEL,
        min_replica_count=1,
        hot_load_trainer_job=f"{TRAINER}['job_name'] }}}}",
        deferrable=True,
        **FAST,
    )
    snapshot = save_snapshot(create_trainer.output)
    hotload = FireworksHotloadOperator(
        task_id="hotload",
        deployment_id="{{ params.deployment_id }}",
        base_model=BASE_MODEL,
        snapshot_identity="{{ ti.xcom_pull(task_ids='save_snapshot')['identity'] }}",
        deferrable=True,
        **FAST,
    )
    promote = FireworksPromoteCheckpointOperator(
        task_id="promote",
        job_id=f"{TRAINER}['job_id'] }}}}",
        output_model_id="{{ ti.xcom_pull(task_ids='save_snapshot')['model_id'] }}",
        base_model=BASE_MODEL,
        poll_interval=0.1,
    )
    delete_trainer = FireworksDeleteTrainerJobOperator(
        task_id="delete_trainer", job_id=f"{TRAINER}['job_id'] }}}}", wait_for_completion=True, **FAST
    )
    release = FireworksScaleToZeroOperator(
        task_id="release", deployment_id="{{ params.deployment_id }}", wait_for_completion=True, **FAST
    )
    create_trainer >> create_deployment >> snapshot >> hotload >> promote
    promote >> delete_trainer.as_teardown(setups=create_trainer)
    promote >> release.as_teardown(setups=create_deployment)
