"""The Fireworks page's HTTP API, through a real ``airflow api-server`` with the emulator behind a
``fireworks`` connection in the metadata database.

A DAG (trainer job, deployment, hotload, sampling to object storage) runs twice with
``dag.test()`` on the same deployment, writing XComs into the database the api-server reads. The
page's routes are then called as Airflow users of three roles: ``op`` (may edit connections),
``user`` (may read them, not edit: ``test_plugin_roles``) and ``viewer`` (neither). Every response
body is checked for the API key.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.airflow_helpers import ensure_db, run_dag_file, task_states, xcom
from tests.conftest import TEST_API_KEY
from tests.emulator_control import EmulatorProcess, free_port
from tests.integration.test_plugin_roles import CLASS_PATH as ROLES_AUTH_MANAGER

CONN_ID = "fireworks_plugin"
WRONG_KEY = "fw-wrong-key-9d8c7b6a5e4f"
BASE_MODEL = "accounts/fireworks/models/qwen3-8b"
DEPLOYMENT = "plugin-dep"
TRAINER = "plugin-trainer"
FAST_EMULATOR = {
    "create_delay_s": 0.05,
    "hotload_stage_s": 0.02,
    "update_delay_s": 0.05,
    "delete_delay_s": 0.05,
    "decode_step_base_s": 0.002,
    "decode_step_per_seq_s": 0.00001,
}

# The ids in it are CONN_ID, TRAINER, DEPLOYMENT and BASE_MODEL.
DAG_FILE = """
import datetime

from airflow.sdk import DAG

from airflow_fireworks.operators.deployment import FireworksCreateDeploymentOperator, FireworksHotloadOperator
from airflow_fireworks.operators.sampling import FireworksSampleOperator
from airflow_fireworks.operators.trainer import FireworksCreateTrainerJobOperator

MODEL = "accounts/fireworks/models/qwen3-8b"
FAST = {"poll_interval": 0.05, "timeout": 30, "fireworks_conn_id": "fireworks_plugin", "deferrable": False}

with DAG("plugin_pipeline", schedule=None, start_date=datetime.datetime(2025, 1, 1), catchup=False,
         params={"output_path": ""}):
    trainer = FireworksCreateTrainerJobOperator(
        task_id="create_trainer", job_id="plugin-trainer", base_model=MODEL,
        config={"accelerator_type": "NVIDIA_H100_80GB", "accelerator_count": 4, "node_count": 2}, **FAST
    )
    create = FireworksCreateDeploymentOperator(
        task_id="create", deployment_id="plugin-dep", base_model=MODEL,
        min_replica_count=1, max_replica_count=2, **FAST
    )
    hotload = FireworksHotloadOperator(
        task_id="hotload", deployment_id="plugin-dep", base_model=MODEL, snapshot_identity="snap-1", **FAST
    )
    sample = FireworksSampleOperator(
        task_id="sample", deployment_id="plugin-dep", fireworks_conn_id="fireworks_plugin",
        prompts=[{"prompt_token_ids": [1, 20 + i, 9]} for i in range(24)], n=2, max_tokens=24,
        output_path="{{ params.output_path }}/{{ run_id | replace(':', '_') }}", poll_interval=0.05,
        concurrency=4,
    )
    trainer >> create >> hotload >> sample
"""


@dataclass
class ApiServer:
    """A running ``airflow api-server`` and a token per user."""

    url: str
    tokens: dict[str, str] = field(default_factory=dict, repr=False)
    bodies: list[str] = field(default_factory=list, repr=False)

    def call(self, method: str, path: str, user: str | None = "op", **kwargs: Any) -> requests.Response:
        """One request to the page's app; every body is kept for the key check."""
        headers = {"Authorization": f"Bearer {self.tokens[user]}"} if user else {}
        response = requests.request(
            method, f"{self.url}/fireworks{path}", headers=headers, timeout=60, **kwargs
        )
        self.bodies.append(response.text)
        assert TEST_API_KEY not in response.text and WRONG_KEY not in response.text
        return response

    def resources(self, user: str = "op", conn_id: str = CONN_ID) -> dict[str, Any]:
        response = self.call("GET", f"/api/connections/{conn_id}/resources", user)
        assert response.status_code == 200, response.text
        return response.json()


def _add_connections(emulator: EmulatorProcess) -> None:
    from airflow.models.connection import Connection
    from airflow.utils.session import create_session

    with create_session() as session:
        for conn_id, key in (
            (CONN_ID, emulator.api_key),
            ("fireworks_plugin_wrong_key", WRONG_KEY),
            ("fireworks_plugin_no_key", None),
        ):
            session.query(Connection).filter(Connection.conn_id == conn_id).delete()
            session.add(Connection(conn_id=conn_id, conn_type="fireworks", host=emulator.url, password=key))


@pytest.fixture(scope="module")
def api_server(
    emulator_process: EmulatorProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiServer]:
    """``airflow api-server`` on a free port, sharing this session's AIRFLOW_HOME and database."""
    ensure_db()
    _add_connections(emulator_process)
    home = Path(os.environ["AIRFLOW_HOME"])
    log_path = tmp_path_factory.mktemp("api-server") / "api-server.log"
    passwords = home / "plugin_test_passwords.json"
    port = free_port()
    from airflow.configuration import conf

    env = {
        **os.environ,
        # the connections this process encrypted must decrypt there
        "AIRFLOW__CORE__FERNET_KEY": conf.get("core", "fernet_key"),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "viewer:viewer,user:user,op:op",
        "AIRFLOW__CORE__AUTH_MANAGER": ROLES_AUTH_MANAGER,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__API__PORT": str(port),
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "airflow", "api-server", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = ApiServer(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"api-server exited: {log_path.read_text()[-3000:]}")
            try:
                if requests.get(f"{server.url}/api/v2/monitor/health", timeout=5).status_code == 200:
                    break
            except requests.RequestException:  # not listening yet, or busy starting up
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"api-server did not start: {log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        for user, password in json.loads(passwords.read_text()).items():
            answer = requests.post(
                f"{server.url}/auth/token", json={"username": user, "password": password}, timeout=10
            )
            answer.raise_for_status()
            server.tokens[user] = answer.json()["access_token"]
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def pipeline(
    api_server: ApiServer, emulator_process: EmulatorProcess, tmp_path_factory: pytest.TempPathFactory
):
    """The DAG run twice (two "days") on the same deployment and trainer job; returns both runs."""
    emulator_process.reset()
    emulator_process.configure(**FAST_EMULATOR)
    folder = tmp_path_factory.mktemp("plugin-dags")
    (folder / "plugin_pipeline.py").write_text(DAG_FILE)
    out = tmp_path_factory.mktemp("plugin-rollouts")
    runs = []
    for day in (1, 2):
        run = run_dag_file(
            folder / "plugin_pipeline.py",
            "plugin_pipeline",
            conf={"output_path": f"file://{out}"},
            logical_date=_day(day),
        )
        assert set(task_states(run).values()) == {"success"}, task_states(run)
        runs.append(run)
    yield runs
    emulator_process.reset()


def _day(day: int) -> Any:
    import datetime

    return datetime.datetime(2026, 1, day, tzinfo=datetime.UTC)


def _row(rows: list[dict[str, Any]], resource_id: str) -> dict[str, Any]:
    matches = [row for row in rows if row["id"] == resource_id]
    assert matches, f"{resource_id} not listed in {[row['id'] for row in rows]}"
    return matches[0]


def test_list_shows_state_replicas_served_snapshot_and_who_created_and_touched(api_server, pipeline):
    first, second = pipeline
    data = api_server.resources()

    deployment = _row(data["deployments"], DEPLOYMENT)
    assert deployment["state"] == "READY" and deployment["availability"] == "serving"
    assert deployment["replica_count"] == 1 and deployment["max_replica_count"] == 2
    assert [r["identity"] for r in deployment["replicas"]] == ["snap-1"]
    # created by the first run (annotations), last touched by the second (usage rows)
    assert deployment["created_by"]["dag_id"] == "plugin_pipeline"
    assert deployment["created_by"]["run_id"] == first.run_id
    assert deployment["created_by"]["task_id"] == "create"
    assert deployment["created_by_source"] == "annotations"
    assert deployment["last_touched_by"]["run_id"] == second.run_id
    assert deployment["last_touched_by"]["task_id"] == "sample"
    touched = {(t["run_id"], t["task_id"]) for t in deployment["tasks"]}
    assert touched == {(run.run_id, task) for run in (first, second) for task in ("create", "sample")}

    trainer = _row(data["trainer_jobs"], TRAINER)
    assert trainer["state"] == "JOB_STATE_RUNNING"
    assert trainer["created_by"]["run_id"] == first.run_id and trainer["created_by_source"] == "usage"
    assert trainer["last_touched_by"]["run_id"] == second.run_id
    assert data["can_edit"] is True


def test_the_second_day_did_not_patch_for_the_provenance_annotations(pipeline):
    first, second = pipeline
    assert xcom(first, "create", "reconcile")["action"] == "created"
    assert xcom(second, "create", "reconcile")["action"] == "unchanged"


def test_gpu_time_is_replicas_times_accelerators_times_wall_time_in_xcom_manifest_and_page(
    api_server, pipeline
):
    _, second = pipeline
    usage = xcom(second, "sample", "fireworks_usage")
    gpu = usage["gpu_time"]
    assert gpu["replicas"] == 1 and gpu["accelerators_per_replica"] == 1 and gpu["wall_s"] > 0
    assert gpu["gpu_s"] == pytest.approx(
        gpu["replicas"] * gpu["accelerators_per_replica"] * gpu["wall_s"], abs=0.01
    )
    summary = xcom(second, "sample")
    assert gpu["wall_s"] == pytest.approx(summary["throughput"]["sampling_s"], abs=0.01)
    manifest = json.loads(Path(summary["manifest_uri"].removeprefix("file://")).read_text())
    assert manifest["gpu_time"] == gpu

    page = _row(api_server.resources()["deployments"], DEPLOYMENT)
    shown = [t for t in page["tasks"] if t["run_id"] == second.run_id and t["task_id"] == "sample"]
    assert shown[0]["gpu_s"] == gpu["gpu_s"] and shown[0]["has_chart"] is True
    per_task = [t["gpu_s"] for t in page["tasks"]]
    assert all(isinstance(s, float | int) for s in per_task)
    assert page["gpu_s_total"] == pytest.approx(sum(per_task), abs=0.01)

    trainer_usage = xcom(second, "create_trainer", "fireworks_usage")["gpu_time"]
    assert trainer_usage["replicas"] == 2 and trainer_usage["accelerators_per_replica"] == 4
    assert trainer_usage["accelerator_type"] == "NVIDIA_H100_80GB" and trainer_usage["wall_s"] > 0
    assert trainer_usage["gpu_s"] == pytest.approx(2 * 4 * trainer_usage["wall_s"], abs=0.01)


def test_chart_of_a_sampling_run_comes_from_its_manifest(api_server, pipeline):
    _, second = pipeline
    params = {"dag_id": "plugin_pipeline", "run_id": second.run_id, "task_id": "sample", "map_index": -1}
    response = api_server.call("GET", f"/api/connections/{CONN_ID}/chart", params=params)
    assert response.status_code == 200, response.text
    chart = response.json()
    manifest = json.loads(Path(chart["manifest_uri"].removeprefix("file://")).read_text())
    assert len(chart["points"]) == len(manifest["timeline"]) >= 2
    assert [p["tokens_per_s"] for p in chart["points"]] == [p["tokens_per_s"] for p in manifest["timeline"]]
    assert [p["window"] for p in chart["points"]] == [p["window"] for p in manifest["timeline"]]
    assert any(p["tokens_per_s"] > 0 for p in chart["points"])

    create_task = {**params, "task_id": "create"}  # no manifest: a clear 404
    response = api_server.call("GET", f"/api/connections/{CONN_ID}/chart", params=create_task)
    assert response.status_code == 404 and "no sampling manifest" in response.json()["detail"]


def test_a_viewer_can_neither_list_nor_act_and_nothing_changes(api_server, pipeline, emulator_process):
    before = api_server.resources()
    for method, path in (
        ("GET", f"/api/connections/{CONN_ID}/resources"),
        ("POST", f"/api/connections/{CONN_ID}/deployments/{DEPLOYMENT}/scale-to-zero"),
        ("POST", f"/api/connections/{CONN_ID}/deployments/{DEPLOYMENT}/delete"),
        ("POST", f"/api/connections/{CONN_ID}/trainer-jobs/{TRAINER}/delete"),
    ):
        body = {"confirm": DEPLOYMENT if "deployments" in path else TRAINER}
        assert api_server.call(method, path, "viewer", json=body).status_code == 403
        assert api_server.call(method, path, None, json=body).status_code == 401
    assert api_server.call("GET", "/api/connections", "viewer").json() == {"connections": []}
    after = api_server.resources()
    assert _row(after["deployments"], DEPLOYMENT)["max_replica_count"] == 2
    assert _row(after["trainer_jobs"], TRAINER)["state"] == before["trainer_jobs"][0]["state"]


def test_a_user_who_may_read_but_not_edit_the_connection_sees_the_list_without_actions(api_server, pipeline):
    data = api_server.resources("user")
    assert data["can_edit"] is False and _row(data["deployments"], DEPLOYMENT)["state"] == "READY"
    for path, confirm in (
        (f"/api/connections/{CONN_ID}/deployments/{DEPLOYMENT}/scale-to-zero", DEPLOYMENT),
        (f"/api/connections/{CONN_ID}/deployments/{DEPLOYMENT}/delete", DEPLOYMENT),
        (f"/api/connections/{CONN_ID}/trainer-jobs/{TRAINER}/delete", TRAINER),
    ):
        assert api_server.call("POST", path, "user", json={"confirm": confirm}).status_code == 403
    assert _row(api_server.resources()["deployments"], DEPLOYMENT)["max_replica_count"] == 2
    assert CONN_ID in api_server.call("GET", "/api/connections", "user").json()["connections"]


def test_scale_to_zero_needs_the_confirmation_then_releases_the_replicas(
    api_server, pipeline, emulator_process
):
    path = f"/api/connections/{CONN_ID}/deployments/{DEPLOYMENT}/scale-to-zero"
    refused = api_server.call("POST", path, json={"confirm": "another-deployment"})
    assert refused.status_code == 400 and "confirmation does not match" in refused.json()["detail"]
    assert _row(api_server.resources()["deployments"], DEPLOYMENT)["max_replica_count"] == 2

    done = api_server.call("POST", path, json={"confirm": DEPLOYMENT})
    assert done.status_code == 200, done.text
    assert done.json()["max_replica_count"] == 0 and done.json()["min_replica_count"] == 0
    row = _row(api_server.resources()["deployments"], DEPLOYMENT)
    assert row["max_replica_count"] == 0 and row["min_replica_count"] == 0
    patches = [r for r in emulator_process.requests(route="update") if DEPLOYMENT in r.get("path", "")]
    assert patches, "the scale-to-zero PATCH never reached the emulator"


def test_delete_needs_the_confirmation_then_deletes_deployment_and_trainer(
    api_server, pipeline, emulator_process
):
    requests.post(
        f"{emulator_process.url}/v1/accounts/{emulator_process.account_id}/deployments",
        params={"deploymentId": "plugin-extra"},
        json={"baseModel": BASE_MODEL},
        headers={"X-Api-Key": emulator_process.api_key},
        timeout=10,
    ).raise_for_status()
    assert _row(api_server.resources()["deployments"], "plugin-extra")["created_by"] is None  # made by hand
    path = f"/api/connections/{CONN_ID}/deployments/plugin-extra/delete"
    assert api_server.call("POST", path, json={"confirm": DEPLOYMENT}).status_code == 400
    assert api_server.call("POST", path, json={}).status_code == 422

    deleted = api_server.call("POST", path, json={"confirm": "plugin-extra"})
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True
    listed = {row["id"]: row["state"] for row in api_server.resources()["deployments"]}
    assert listed.get("plugin-extra") in (None, "DELETING", "DELETED")

    path = f"/api/connections/{CONN_ID}/trainer-jobs/{TRAINER}/delete"
    deleted = api_server.call("POST", path, json={"confirm": TRAINER})
    assert deleted.status_code == 200 and deleted.json() == {
        "kind": "trainer",
        "id": TRAINER,
        "deleted": True,
    }
    jobs = {row["id"]: row["state"] for row in api_server.resources()["trainer_jobs"]}
    assert jobs.get(TRAINER) in (None, "JOB_STATE_DELETING", "JOB_STATE_DELETED")


def test_the_api_key_reaches_no_response(api_server, pipeline):
    """Every body this module received (the lists above included), the error paths, the page."""
    wrong = api_server.call("GET", "/api/connections/fireworks_plugin_wrong_key/resources")
    assert wrong.status_code == 502 and "Fireworks answered" in wrong.json()["detail"]
    missing = api_server.call("GET", "/api/connections/no_such_connection/resources")
    assert missing.status_code == 404
    no_key = api_server.call("GET", "/api/connections/fireworks_plugin_no_key/resources")
    assert no_key.status_code == 400 and "'password'" in no_key.json()["detail"]  # and the field
    assert "fireworks_plugin_no_key" in no_key.json()["detail"]  # names the connection to fix
    listed = set(api_server.call("GET", "/api/connections").json()["connections"])
    assert {CONN_ID, "fireworks_plugin_wrong_key"} <= listed
    page = api_server.call("GET", "/", None)
    assert page.status_code == 200 and "<title>Fireworks</title>" in page.text
    for user in ("op", "user"):  # successful answers too (call() checks each body as it comes)
        assert api_server.resources(user)["deployments"]
    _, second = pipeline
    params = {"dag_id": "plugin_pipeline", "run_id": second.run_id, "task_id": "sample"}
    assert api_server.call("GET", f"/api/connections/{CONN_ID}/chart", params=params).status_code == 200
    for body in api_server.bodies:
        assert TEST_API_KEY not in body and WRONG_KEY not in body
