"""The lifecycle DAG file run with dag.test(): create -> hotload -> scale-to-zero teardown."""

from __future__ import annotations

import pytest

from tests.airflow_helpers import TESTS_DAGS, ensure_db, run_dag_file, task_states, xcom
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


def test_deferred_waits_find_a_connection_stored_in_the_metadata_database(emulator):
    """Workers and the inline trigger both resolve a DB-only connection (no AIRFLOW_CONN_ variable)."""
    from airflow.models.connection import Connection
    from airflow.utils.session import create_session

    emulator.configure(**FAST_EMULATOR)
    ensure_db()
    with create_session() as session:
        session.query(Connection).filter(Connection.conn_id == "fireworks_in_db").delete()
        session.add(
            Connection(
                conn_id="fireworks_in_db", conn_type="fireworks", host=emulator.url, password=emulator.api_key
            )
        )
    try:
        run = run_dag_file(
            DAG_FILE,
            "fireworks_lifecycle_deferrable",
            conf={"deployment_id": "db-connection", "snapshot": "step-1", "conn_id": "fireworks_in_db"},
        )
    finally:
        with create_session() as session:
            session.query(Connection).filter(Connection.conn_id == "fireworks_in_db").delete()

    assert task_states(run) == {"create": "success", "hotload": "success", "release": "success"}
    assert deployment(emulator, "db-connection")["replicaCount"] == 0


def test_force_recreate_is_not_repeated_by_a_retry(emulator, fireworks_conn_env):
    """The task state store keeps "already recreated" across tries of the same task instance."""
    from airflow_fireworks.hooks.fireworks import FireworksHook

    emulator.configure(create_delay_s=60, delete_delay_s=0.1)
    FireworksHook().create_or_get(
        {"deployment_id": "recreate-retry", "base_model": "accounts/fireworks/models/qwen3-8b"}
    )

    run = run_dag_file(TESTS_DAGS / "fireworks_recreate.py", "fireworks_recreate_retry")

    (ti,) = run.get_task_instances()
    assert ti.try_number == 2  # both tries timed out waiting (the deployment takes 60 s to boot)
    assert str(ti.state) == "failed"
    assert len(emulator.requests(route="delete")) == 1
    assert len(emulator.requests(route="create")) == 2  # the original and one recreation, not two
