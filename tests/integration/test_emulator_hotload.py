"""The emulator's hotload gateway over raw HTTP: validation, stages, deltas, failures, replicas."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from tests.emulator_control import EmulatorProcess

BASE_MODEL = "accounts/fireworks/models/qwen3-8b"
HOTLOAD_PATH = "/hot_load/v1/models/hot_load"


def create_ready(emulator: EmulatorProcess, deployment_id: str, **body: Any) -> None:
    emulator.configure(create_delay_s=0.0)
    response = requests.post(
        f"{emulator.url}/v1/accounts/{emulator.account_id}/deployments",
        params={"deploymentId": deployment_id},
        json={"baseModel": BASE_MODEL, "enableHotLoad": True, **body},
        headers={"X-Api-Key": emulator.api_key},
        timeout=10,
    )
    assert response.status_code == 200


def headers(emulator: EmulatorProcess, deployment_id: str) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {emulator.api_key}",
        "fireworks-model": BASE_MODEL,
        "fireworks-deployment": f"accounts/{emulator.account_id}/deployments/{deployment_id}",
    }


def load(emulator: EmulatorProcess, deployment_id: str, body: Any) -> requests.Response:
    return requests.post(
        emulator.url + HOTLOAD_PATH, json=body, headers=headers(emulator, deployment_id), timeout=10
    )


def status(emulator: EmulatorProcess, deployment_id: str) -> list[dict[str, Any]]:
    response = requests.get(emulator.url + HOTLOAD_PATH, headers=headers(emulator, deployment_id), timeout=10)
    assert response.status_code == 200
    return list(response.json()["replicas"])


def wait_for(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def settled(emulator: EmulatorProcess, deployment_id: str) -> list[dict[str, Any]]:
    """Wait until no replica is in a loading stage, then return the replicas."""

    def done() -> bool:
        return all(
            replica["loading_state"]["stage"] in ("ready", "error", "idle")
            for replica in status(emulator, deployment_id)
        )

    wait_for(done)
    return status(emulator, deployment_id)


def test_status_is_empty_until_replicas_run(emulator: EmulatorProcess) -> None:
    emulator.configure(create_delay_s=0.3)
    response = requests.post(
        f"{emulator.url}/v1/accounts/{emulator.account_id}/deployments",
        params={"deploymentId": "booting"},
        json={"baseModel": BASE_MODEL, "enableHotLoad": True},
        headers={"X-Api-Key": emulator.api_key},
        timeout=10,
    )
    assert response.status_code == 200
    assert status(emulator, "booting") == []
    assert load(emulator, "booting", {"identity": "s1"}).status_code == 425
    wait_for(lambda: len(status(emulator, "booting")) == 1)
    replica = status(emulator, "booting")[0]
    assert replica["current_snapshot_identity"] is None
    assert replica["readiness"] is True
    assert replica["loaded_adapters"] == []


def test_serve_while_creating_exposes_replicas(emulator: EmulatorProcess) -> None:
    emulator.configure(create_delay_s=30.0, serve_while_creating=True)
    requests.post(
        f"{emulator.url}/v1/accounts/{emulator.account_id}/deployments",
        params={"deploymentId": "early"},
        json={"baseModel": BASE_MODEL, "enableHotLoad": True},
        headers={"X-Api-Key": emulator.api_key},
        timeout=10,
    )
    assert len(status(emulator, "early")) == 1


def test_full_then_incremental_load(emulator: EmulatorProcess) -> None:
    create_ready(emulator, "policy")
    emulator.configure(hotload_stage_s=0.05)
    response = load(emulator, "policy", {"identity": "step-1", "reset_prompt_cache": True})
    assert response.status_code == 200
    assert isinstance(response.json(), dict)
    stages: set[str] = set()

    def loaded() -> bool:
        replica = status(emulator, "policy")[0]
        stages.add(replica["loading_state"]["stage"])
        return bool(replica["readiness"] and replica["current_snapshot_identity"] == "step-1")

    wait_for(loaded)
    assert stages & {"downloading", "loading", "warming"}
    delta = {
        "identity": "step-2",
        "reset_prompt_cache": True,
        "incremental_snapshot_metadata": {
            "previous_snapshot_identity": "step-1",
            "compression_format": "arc_v2",
            "checksum_format": "alder32",
        },
    }
    assert load(emulator, "policy", delta).status_code == 200
    replica = settled(emulator, "policy")[0]
    assert replica["current_snapshot_identity"] == "step-2"
    assert replica["loading_state"] == {"stage": "ready", "target_snapshot_identity": "step-2"}


def test_incremental_load_on_the_wrong_base_ends_in_error(emulator: EmulatorProcess) -> None:
    create_ready(emulator, "mismatch")
    emulator.configure(hotload_stage_s=0.02)
    load(emulator, "mismatch", {"identity": "base"})
    settled(emulator, "mismatch")
    delta = {"identity": "d2", "incremental_snapshot_metadata": {"previous_snapshot_identity": "other"}}
    assert load(emulator, "mismatch", delta).status_code == 200
    replica = settled(emulator, "mismatch")[0]
    assert replica["loading_state"]["stage"] == "error"
    assert replica["loading_state"]["target_snapshot_identity"] == "d2"
    assert replica["current_snapshot_identity"] == "base"


def test_fail_identity_ends_in_error(emulator: EmulatorProcess) -> None:
    create_ready(emulator, "failing")
    emulator.configure(hotload_stage_s=0.02, hotload_fail_identities=["broken"])
    assert load(emulator, "failing", {"identity": "broken"}).status_code == 200
    replica = settled(emulator, "failing")[0]
    assert replica["loading_state"]["stage"] == "error"
    assert replica["loading_state"]["target_snapshot_identity"] == "broken"
    assert replica["current_snapshot_identity"] is None


def test_replicas_load_staggered(emulator: EmulatorProcess) -> None:
    create_ready(emulator, "fleet", minReplicaCount=2, maxReplicaCount=2)
    emulator.configure(hotload_stage_s=5.0)
    assert load(emulator, "fleet", {"identity": "s1"}).status_code == 200
    first, second = status(emulator, "fleet")
    assert first["loading_state"] == {"stage": "downloading", "target_snapshot_identity": "s1"}
    assert first["readiness"] is False
    assert second["loading_state"] == {"stage": "pending", "target_snapshot_identity": "s1"}
    assert second["replica_id"] != first["replica_id"]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"identity": "s1", "surprise": 1}, "Extra inputs are not permitted, field: 'surprise'"),
        ({"reset_prompt_cache": True}, "identity"),
        (
            {"identity": "s1", "incremental_snapshot_metadata": {"previous_snapshot_identity": "a", "x": 1}},
            "Extra inputs are not permitted",
        ),
        ({"identity": "s1", "incremental_snapshot_metadata": {}}, "previous_snapshot_identity"),
    ],
)
def test_invalid_load_bodies_get_400(emulator: EmulatorProcess, body: dict[str, Any], needle: str) -> None:
    create_ready(emulator, "strict")
    response = load(emulator, "strict", body)
    assert response.status_code == 400
    assert needle in response.json()["error"]["message"]


def test_routing_headers_are_checked(emulator: EmulatorProcess) -> None:
    create_ready(emulator, "routed")
    create_ready(emulator, "cold", enableHotLoad=False)
    no_header = requests.post(
        emulator.url + HOTLOAD_PATH,
        json={"identity": "s"},
        headers={"Authorization": f"Bearer {emulator.api_key}"},
        timeout=10,
    )
    assert no_header.status_code == 400
    assert "fireworks-deployment" in no_header.json()["error"]["message"]
    assert load(emulator, "missing", {"identity": "s"}).status_code == 404
    assert load(emulator, "cold", {"identity": "s"}).status_code == 400
    wrong_model = requests.get(
        emulator.url + HOTLOAD_PATH,
        headers={**headers(emulator, "routed"), "fireworks-model": "accounts/x/models/other"},
        timeout=10,
    )
    assert wrong_model.status_code == 400
