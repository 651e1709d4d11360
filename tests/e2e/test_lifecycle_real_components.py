"""The lifecycle DAG on real Airflow components: waits are deferred to the real triggerer.

api-server, scheduler, dag-processor and triggerer run as separate processes with the
LocalExecutor on SQLite (the ``cluster`` fixture of ``conftest.py``, shared with the other e2e
tests); the emulator is slow enough that each wait is visibly deferred.
"""

from __future__ import annotations

import pytest

from tests.e2e.cluster import AirflowCluster
from tests.emulator_control import EmulatorProcess

pytestmark = pytest.mark.e2e
DAG_ID = "fireworks_e2e_lifecycle"


def test_waits_are_deferred_and_resumed_by_the_triggerer(cluster: AirflowCluster, emulator: EmulatorProcess):
    emulator.configure(create_delay_s=6.0, hotload_stage_s=1.0)

    run_id = cluster.trigger(DAG_ID, conf={"deployment_id": "e2e-lifecycle", "snapshot": "e2e-step-1"})
    state, seen = cluster.wait_for_run(DAG_ID, run_id, timeout_s=240)

    assert state == "success", (seen, cluster.home)
    assert cluster.task_states(DAG_ID, run_id) == {
        "create": "success",
        "hotload": "success",
        "release": "success",
    }
    assert "deferred" in seen["create"], seen
    assert "deferred" in seen["hotload"], seen
    trigger_logs = cluster.logs(f"logs/dag_id={DAG_ID}/run_id={run_id}/**/*trigger*")
    assert any("task_id=create" in path for path in trigger_logs), sorted(trigger_logs)
    assert len(emulator.requests(route="create")) == 1
    assert len(emulator.requests(route="hotload_load")) == 1
    deployment = emulator.session.get(
        f"{emulator.url}/v1/accounts/{emulator.account_id}/deployments/e2e-lifecycle",
        headers={"X-Api-Key": emulator.api_key},
        timeout=5,
    ).json()
    assert deployment["replicaCount"] == 0
    assert deployment["activeModelVersion"] == "e2e-step-1"
    all_logs = "\n".join(cluster.logs("logs/**/*").values())
    assert emulator.api_key not in all_logs
