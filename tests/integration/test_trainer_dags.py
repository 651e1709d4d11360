"""DAG files with trainer tasks, run with dag.test(): the trainer half of an RL step (twice in a
row, and with a failing step whose teardown still releases everything), and the cleanup example
sweeping a family's trainer jobs."""

from __future__ import annotations

import json

import pendulum

from airflow_fireworks.api import DeploymentConfig, DeploymentManager, TrainerJobConfig, TrainerJobManager
from tests.airflow_helpers import TESTS_DAGS, run_dag_file, task_states, xcom
from tests.conftest import REPO_ROOT, TEST_API_KEY
from tests.emulator_control import EmulatorProcess

DAG_FILE = TESTS_DAGS / "fireworks_trainer_lifecycle.py"
CLEANUP = REPO_ROOT / "example_dags" / "fireworks_cleanup.py"
BASE_MODEL = "accounts/fireworks/models/qwen3-8b"
FAST_EMULATOR = {
    "trainer_placement_s": 0.2,
    "trainer_boot_s": 0.2,
    "trainer_promote_s": 0.1,
    "create_delay_s": 0.2,
    "hotload_stage_s": 0.05,
    "update_delay_s": 0.1,
    "delete_delay_s": 0.1,
}
ALL_TASKS = (
    "create_trainer",
    "create_deployment",
    "save_snapshot",
    "hotload",
    "promote",
    "delete_trainer",
    "release",
)


def control(emulator: EmulatorProcess, path: str) -> dict:
    response = emulator.session.get(
        f"{emulator.url}/v1/accounts/{emulator.account_id}/{path}",
        headers={"X-Api-Key": emulator.api_key},
        timeout=5,
    )
    return dict(response.json())


def test_trainer_step_runs_twice_in_a_row_and_releases_everything(emulator, fireworks_conn_env) -> None:
    emulator.configure(**FAST_EMULATOR)
    runs = [run_dag_file(DAG_FILE, "fireworks_trainer_lifecycle") for _ in range(2)]

    jobs = []
    for run in runs:
        assert run.state == "success", task_states(run)
        assert task_states(run) == dict.fromkeys(ALL_TASKS, "success")
        trainer = xcom(run, "create_trainer")
        assert xcom(run, "create_trainer", "job_name") == trainer["job_name"]
        assert xcom(run, "create_deployment")["hot_load_trainer_job"] == trainer["job_name"]
        assert xcom(run, "hotload")["identity"] == xcom(run, "save_snapshot")["identity"]
        assert xcom(run, "promote")["checkpoint"].endswith(xcom(run, "save_snapshot")["identity"])
        assert xcom(run, "delete_trainer") == {"job_id": trainer["job_id"], "deleted": True}
        assert control(emulator, f"rlorTrainerJobs/{trainer['job_id']}")["state"] == "JOB_STATE_DELETED"
        jobs.append(trainer["job_id"])
    assert jobs[0] != jobs[1]  # one trainer per run, each deleted by its teardown
    deployment = control(emulator, "deployments/trainer-lifecycle")
    assert (deployment["maxReplicaCount"], deployment["replicaCount"]) == (0, 0)
    # the second run re-pointed the same deployment at its own trainer (a mutable field, patched)
    assert deployment["hotLoadTrainerJob"].endswith(jobs[1])


def test_a_failing_step_still_deletes_the_trainer(emulator, fireworks_conn_env) -> None:
    emulator.configure(**FAST_EMULATOR, hotload_fail_identities=["broken-step"])
    run = run_dag_file(DAG_FILE, "fireworks_trainer_lifecycle", conf={"fail_hotload": True})

    states = task_states(run)
    assert run.state == "failed"
    assert (states["hotload"], states["delete_trainer"], states["release"]) == (
        "failed",
        "success",
        "success",
    )
    job_id = xcom(run, "create_trainer")["job_id"]
    assert control(emulator, f"rlorTrainerJobs/{job_id}")["state"] == "JOB_STATE_DELETED"
    assert TEST_API_KEY not in json.dumps([xcom(run, task) for task in ALL_TASKS], default=str)


def test_cleanup_sweeps_the_trainers_of_the_family_too(emulator, fireworks_conn_env) -> None:
    emulator.configure(**FAST_EMULATOR)
    with (
        DeploymentManager(api_key=TEST_API_KEY, base_url=emulator.url) as deployments,
        TrainerJobManager(api_key=TEST_API_KEY, base_url=emulator.url) as trainers,
    ):
        deployments.create_or_get(DeploymentConfig(deployment_id="grpo-arith-a", base_model=BASE_MODEL))
        for job_id, display in (
            ("grpo-arith-t1", None),
            ("other-t2", "grpo-arith-named"),
            ("other-t3", None),
        ):
            trainers.create(
                TrainerJobConfig(base_model=BASE_MODEL, requested_job_id=job_id, display_name=display)
            )
        emulator.add_trainer_job("grpo-arith-gone")
        trainers.delete("grpo-arith-gone")
        first = run_dag_file(
            CLEANUP, "fireworks_cleanup", logical_date=pendulum.datetime(2026, 2, 2, tz="UTC")
        )
        states = {job.job_id: job.state.short for job in trainers.list_jobs()}
        second = run_dag_file(
            CLEANUP, "fireworks_cleanup", logical_date=pendulum.datetime(2026, 2, 9, tz="UTC")
        )

    assert first.state == "success", task_states(first)
    assert xcom(first, "find_trainers") == ["grpo-arith-t1", "other-t2"]
    assert xcom(first, "find_family") == ["grpo-arith-a"]
    assert states.pop("other-t3") != "DELETED"  # not of the family
    assert states == {"grpo-arith-t1": "DELETED", "other-t2": "DELETED", "grpo-arith-gone": "DELETED"}
    assert second.state == "success" and xcom(second, "find_trainers") == []
    assert len(emulator.requests(route="trainer_delete", limit=1000)) == 3
