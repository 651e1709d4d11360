"""One Airflow cluster (api-server, scheduler, dag-processor, triggerer) for every e2e test.

Starting a cluster costs about 30 s, so the e2e modules share one: its DAGs folder is a temporary
copy holding the e2e lifecycle DAG and the RL-loop example with its ``data/`` folder.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.e2e.cluster import AirflowCluster, airflow_cluster
from tests.emulator_control import EmulatorProcess

E2E_DAGS = Path(__file__).resolve().parent / "dags"
EXAMPLE_DAGS = REPO_ROOT / "example_dags"
CLUSTER_DAG_IDS = ("fireworks_e2e_lifecycle", "fireworks_rl_loop")


@pytest.fixture(scope="package")
def cluster(
    emulator_process: EmulatorProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AirflowCluster]:
    dags_folder = tmp_path_factory.mktemp("e2e-dags")
    shutil.copy(E2E_DAGS / "fireworks_e2e_lifecycle.py", dags_folder)
    shutil.copy(EXAMPLE_DAGS / "fireworks_rl_loop.py", dags_folder)
    shutil.copytree(EXAMPLE_DAGS / "data", dags_folder / "data")
    connection = {
        "conn_type": "fireworks",
        "host": emulator_process.url,
        "password": emulator_process.api_key,
    }
    extra_env = {
        "AIRFLOW_CONN_FIREWORKS_DEFAULT": json.dumps(connection),
        # Every wait of the example DAGs (which leave ``deferrable`` at its default) runs in the triggerer.
        "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": "True",
        # Only the runs a test triggers: no automatic run of the @daily RL loop when it is unpaused.
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        # The README's advice for deferrable tasks (retries >= 1, for apache/airflow#72716). The tests
        # still require a first-try success of every task the race did not hit.
        "AIRFLOW__CORE__DEFAULT_TASK_RETRIES": "1",
        "AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY": "1",
    }
    with airflow_cluster(tmp_path_factory.mktemp("airflow-e2e"), dags_folder, extra_env=extra_env) as running:
        for dag_id in CLUSTER_DAG_IDS:
            running.wait_for_dag(dag_id)
        yield running
