"""The lifecycle DAG file run with dag.test(): create -> hotload -> scale-to-zero teardown."""

from __future__ import annotations

import pytest

from tests.airflow_helpers import TESTS_DAGS, run_dag_file, task_states, xcom
from tests.emulator_control import EmulatorProcess

DAG_FILE = TESTS_DAGS / "fireworks_lifecycle.py"
FAST_EMULATOR = {"create_delay_s": 0.3, "hotload_stage_s": 0.05, "update_delay_s": 0.1, "delete_delay_s": 0.1}


def deployment(emulator: EmulatorProcess, deployment_id: str) -> dict:
    return dict(
        emulator.session.get(
            f"{emulator.url}/v1/accounts/{emulator.account_id}/deployments/{deployment_id}",
            headers={"X-Api-Key": emulator.api_key},
            timeout=5,
        ).json()
    )


@pytest.mark.parametrize("dag_id", ["fireworks_lifecycle_sync", "fireworks_lifecycle_deferrable"])
def test_lifecycle_dag_creates_hotloads_and_releases(emulator, fireworks_conn_env, dag_id):
    emulator.configure(**FAST_EMULATOR)
    deployment_id = dag_id.replace("_", "-")

    run = run_dag_file(DAG_FILE, dag_id, conf={"deployment_id": deployment_id, "snapshot": "step-1"})

    assert task_states(run) == {"create": "success", "hotload": "success", "release": "success"}
    assert run.state == "success"
    assert xcom(run, "create", "inference_model") == f"accounts/emulator/deployments/{deployment_id}"
    assert xcom(run, "create")["state"] == "READY"
    loaded = xcom(run, "hotload")
    assert loaded["identity"] == "step-1" and loaded["replicas"] == 1 and loaded["warmup_ok"] is True
    assert xcom(run, "release", "_link_FireworksDeploymentLink") == (
        f"https://app.fireworks.ai/dashboard/deployments/{deployment_id}"
    )
    final = deployment(emulator, deployment_id)
    assert (final["minReplicaCount"], final["maxReplicaCount"], final["replicaCount"]) == (0, 0, 0)
    assert final["activeModelVersion"] == "step-1"
    creates = [r for r in emulator.requests(route="create")]
    assert len(creates) == 1


def test_teardown_releases_gpus_when_the_hotload_fails(emulator, fireworks_conn_env):
    emulator.configure(**FAST_EMULATOR, hotload_fail_identities=["broken-step"])

    run = run_dag_file(
        DAG_FILE,
        "fireworks_lifecycle_deferrable",
        conf={"deployment_id": "teardown-on-failure", "snapshot": "broken-step"},
    )

    assert task_states(run) == {"create": "success", "hotload": "failed", "release": "success"}
    assert run.state == "failed"
    final = deployment(emulator, "teardown-on-failure")
    assert (final["maxReplicaCount"], final["replicaCount"]) == (0, 0)
