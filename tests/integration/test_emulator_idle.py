"""What the platform does between pipeline runs, over raw HTTP: idle scale-to-zero, cold start
(wake from zero) and the auto-delete of idle min-0 deployments, with the admin clock."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from tests.emulator_control import EmulatorProcess
from tests.integration.test_emulator_control_plane import call, create, deployments_path, get, wait_for
from tests.integration.test_emulator_hotload import load, settled, status

HOUR = 3600.0
DAY = 86400.0
WEEK = 7 * DAY


@pytest.fixture
def idle(emulator: EmulatorProcess) -> EmulatorProcess:
    """The emulator with instant create/update, fast hotloads and cold starts of 0.5 s."""
    emulator.configure(create_delay_s=0.0, update_delay_s=0.0, hotload_stage_s=0.01, cold_start_s=0.5)
    return emulator


def ready(emulator: EmulatorProcess, deployment_id: str, **body: Any) -> None:
    """Create a hot-load deployment (min 0, max 2 unless given) and wait until it is READY."""
    body = {"enableHotLoad": True, "minReplicaCount": 0, "maxReplicaCount": 2, **body}
    assert create(emulator, deployment_id, **body).status_code == 200
    wait_for(lambda: get(emulator, deployment_id).json()["state"] == "READY")


def complete(emulator: EmulatorProcess, deployment_id: str) -> requests.Response:
    """One small non-streaming completion."""
    body = {
        "model": f"accounts/{emulator.account_id}/deployments/{deployment_id}",
        "prompt": [1, 2, 3],
        "max_tokens": 1,
    }
    return call(emulator, "POST", "/inference/v1/completions", json=body)


def replicas(emulator: EmulatorProcess, deployment_id: str) -> tuple[str, int, int]:
    """(state, replicaCount, desiredReplicaCount) as GET renders them."""
    body = get(emulator, deployment_id).json()
    return body["state"], body["replicaCount"], body["desiredReplicaCount"]


def error_message(response: requests.Response) -> str:
    return str(response.json()["error"]["message"])


# -- idle scale-to-zero ------------------------------------------------------------------------


def test_idle_min_zero_deployment_scales_to_zero_after_its_window(idle: EmulatorProcess) -> None:
    ready(idle, "nightly")
    assert replicas(idle, "nightly") == ("READY", 1, 1)
    idle.advance_clock(HOUR - 60)
    assert replicas(idle, "nightly") == ("READY", 1, 1)
    assert len(status(idle, "nightly")) == 1
    idle.advance_clock(60)
    body = get(idle, "nightly").json()
    assert (body["state"], body["replicaCount"], body["desiredReplicaCount"]) == ("READY", 0, 0)
    assert body["replicaStats"]["readyReplicaCount"] == 0
    assert body["replicaStats"]["initializingReplicaCount"] == 0
    assert status(idle, "nightly") == []
    refused = load(idle, "nightly", {"identity": "s1"})
    assert refused.status_code == 425
    assert replicas(idle, "nightly") == ("READY", 0, 0)  # a hotload does not wake it


def test_time_scale_runs_the_scale_to_zero_window_in_real_time(idle: EmulatorProcess) -> None:
    idle.configure(time_scale=600.0)  # the 5-minute window passes in half a real second
    ready(idle, "quick", autoscalingPolicy={"scaleToZeroWindow": "5m"})
    started = time.monotonic()
    assert replicas(idle, "quick") == ("READY", 1, 1)
    wait_for(lambda: replicas(idle, "quick")[1] == 0, timeout_s=5.0)
    assert time.monotonic() - started > 0.3


def test_min_one_deployment_never_idles_away(idle: EmulatorProcess) -> None:
    ready(idle, "always-on", minReplicaCount=1)
    idle.advance_clock(30 * DAY)
    assert replicas(idle, "always-on") == ("READY", 1, 1)
    assert complete(idle, "always-on").status_code == 200


def test_inference_traffic_restarts_the_idle_clock_and_hotload_or_get_do_not(idle: EmulatorProcess) -> None:
    ready(idle, "busy")
    idle.advance_clock(HOUR - 600)
    assert complete(idle, "busy").status_code == 200
    idle.advance_clock(HOUR - 600)
    assert replicas(idle, "busy") == ("READY", 1, 1)  # only 50 min since the completion
    assert load(idle, "busy", {"identity": "s1"}).status_code == 200
    settled(idle, "busy")
    idle.advance_clock(600)
    assert replicas(idle, "busy") == ("READY", 0, 0)


def test_a_completion_refused_while_hotloading_is_traffic_too(idle: EmulatorProcess) -> None:
    ready(idle, "loading")
    idle.configure(hotload_stage_s=5.0)
    assert load(idle, "loading", {"identity": "s1"}).status_code == 200
    idle.advance_clock(HOUR - 600)
    refused = complete(idle, "loading")
    assert refused.status_code == 425
    assert "hotloading" in error_message(refused)
    idle.advance_clock(HOUR - 600)
    assert replicas(idle, "loading") == ("READY", 1, 1)


def test_a_request_in_flight_is_traffic(idle: EmulatorProcess) -> None:
    idle.configure(decode_step_base_s=0.01)
    ready(idle, "streaming")
    body = {
        "model": f"accounts/{idle.account_id}/deployments/streaming",
        "prompt": [1, 2, 3],
        "max_tokens": 2000,
        "ignore_eos": True,
        "stream": True,
    }
    with call(idle, "POST", "/inference/v1/completions", json=body, stream=True) as response:
        assert response.status_code == 200
        lines = response.iter_lines()  # kept: a dropped iterator closes the connection
        next(lines)
        assert idle.stats()["completions"]["in_flight"] == 1
        idle.advance_clock(2 * HOUR)
        assert replicas(idle, "streaming") == ("READY", 1, 1)
    wait_for(lambda: idle.stats()["completions"]["in_flight"] == 0)
    assert replicas(idle, "streaming") == ("READY", 1, 1)  # the request's end restarted the clock
    idle.advance_clock(HOUR)
    assert replicas(idle, "streaming") == ("READY", 0, 0)


@pytest.mark.parametrize("action", ["patch", "scale"])
def test_new_replica_counts_bring_an_idle_deployment_back(idle: EmulatorProcess, action: str) -> None:
    idle.configure(boot_identity="base")
    ready(idle, "resized")
    assert load(idle, "resized", {"identity": "step-1"}).status_code == 200
    settled(idle, "resized")
    idle.advance_clock(HOUR)
    assert replicas(idle, "resized") == ("READY", 0, 0)
    one = f"{deployments_path(idle)}/resized"
    if action == "patch":
        params = {"updateMask": "max_replica_count"}
        changed = call(idle, "PATCH", one, params=params, json={"maxReplicaCount": 3})
    else:
        changed = call(idle, "POST", f"{one}:scale", json={"replicaCount": 1})
    assert changed.status_code == 200
    assert replicas(idle, "resized") == ("READY", 1, 1)
    # the replica that idled away lost its snapshot: the one that boots serves base weights
    assert [replica["current_snapshot_identity"] for replica in status(idle, "resized")] == [None]


# -- wake (cold start) -------------------------------------------------------------------------


def test_a_completion_wakes_a_deployment_at_zero_after_a_cold_start(idle: EmulatorProcess) -> None:
    idle.configure(cold_start_s=1.5)
    ready(idle, "sleepy")
    idle.advance_clock(HOUR)
    started = time.monotonic()
    first = complete(idle, "sleepy")
    assert first.status_code == 425
    assert "scaling up from zero replicas (cold start)" in error_message(first)
    assert first.headers["Retry-After"] == "2"
    body = get(idle, "sleepy").json()
    assert (body["state"], body["replicaCount"], body["desiredReplicaCount"]) == ("READY", 0, 1)
    assert body["replicaStats"]["initializingReplicaCount"] == 1
    assert body["replicaStats"]["readyReplicaCount"] == 0
    assert status(idle, "sleepy") == []
    assert load(idle, "sleepy", {"identity": "s1"}).status_code == 425
    during = complete(idle, "sleepy")
    assert during.status_code == 425
    assert int(during.headers["Retry-After"]) >= 1
    wait_for(lambda: complete(idle, "sleepy").status_code == 200, timeout_s=5.0)
    assert time.monotonic() - started >= 1.4
    body = get(idle, "sleepy").json()
    assert (body["replicaCount"], body["desiredReplicaCount"]) == (1, 1)
    assert body["replicaStats"]["initializingReplicaCount"] == 0
    assert len(status(idle, "sleepy")) == 1


def test_zero_cold_start_wakes_on_the_first_request_and_serves_the_next(idle: EmulatorProcess) -> None:
    idle.configure(cold_start_s=0.0)
    ready(idle, "instant")
    idle.advance_clock(HOUR)
    first = complete(idle, "instant")
    assert first.status_code == 425
    assert first.headers["Retry-After"] == "1"
    assert complete(idle, "instant").status_code == 200


def test_scale_action_to_zero_replicas_is_woken_by_traffic(idle: EmulatorProcess) -> None:
    idle.configure(cold_start_s=0.0)
    ready(idle, "scaled-down")
    scaled = call(idle, "POST", f"{deployments_path(idle)}/scaled-down:scale", json={"replicaCount": 0})
    assert scaled.status_code == 200
    assert replicas(idle, "scaled-down") == ("READY", 0, 0)
    assert complete(idle, "scaled-down").status_code == 425
    assert complete(idle, "scaled-down").status_code == 200
    assert replicas(idle, "scaled-down") == ("READY", 1, 1)


def test_scaled_to_zero_on_purpose_never_wakes(idle: EmulatorProcess) -> None:
    idle.configure(cold_start_s=0.0)
    ready(idle, "parked")
    patched = call(
        idle,
        "PATCH",
        f"{deployments_path(idle)}/parked",
        params={"updateMask": "min_replica_count,max_replica_count"},
        json={"minReplicaCount": 0, "maxReplicaCount": 0},
    )
    assert patched.status_code == 200
    for _ in range(3):
        refused = complete(idle, "parked")
        assert refused.status_code == 425
        assert "maxReplicaCount 0" in error_message(refused)
    assert replicas(idle, "parked") == ("READY", 0, 0)


# -- auto-delete -------------------------------------------------------------------------------


def test_an_idle_min_zero_deployment_is_deleted_after_seven_days(idle: EmulatorProcess) -> None:
    ready(idle, "weekly")
    ready(idle, "pinned", minReplicaCount=1)
    assert load(idle, "weekly", {"identity": "step-9"}).status_code == 200
    settled(idle, "weekly")
    assert get(idle, "weekly").json()["activeModelVersion"] == "step-9"
    idle.advance_clock(WEEK - HOUR)
    assert replicas(idle, "weekly") == ("READY", 0, 0)
    idle.advance_clock(HOUR)
    assert get(idle, "weekly").status_code == 404
    one = f"{deployments_path(idle)}/weekly"
    assert call(idle, "PATCH", one, params={"updateMask": "description"}, json={}).status_code == 404
    assert call(idle, "DELETE", one).status_code == 404
    assert complete(idle, "weekly").status_code == 404
    listed = call(idle, "GET", deployments_path(idle)).json()["deployments"]
    assert [item["name"].rsplit("/", 1)[-1] for item in listed] == ["pinned"]
    assert replicas(idle, "pinned") == ("READY", 1, 1)
    ready(idle, "weekly")
    fresh = get(idle, "weekly").json()
    assert "activeModelVersion" not in fresh
    assert fresh["replicaCount"] == 1
    assert [replica["current_snapshot_identity"] for replica in status(idle, "weekly")] == [None]


def test_auto_delete_can_be_disabled(idle: EmulatorProcess) -> None:
    idle.configure(auto_delete_idle_s=0)
    ready(idle, "kept")
    idle.advance_clock(30 * DAY)
    assert replicas(idle, "kept") == ("READY", 0, 0)


# -- what a replica that boots serves ------------------------------------------------------------


@pytest.mark.parametrize(("boot_identity", "served"), [("latest", "step-3"), ("base", None)])
def test_boot_identity_after_a_wake(idle: EmulatorProcess, boot_identity: str, served: str | None) -> None:
    idle.configure(cold_start_s=0.0, boot_identity=boot_identity)
    ready(idle, "policy")
    assert load(idle, "policy", {"identity": "step-3"}).status_code == 200
    assert [replica["current_snapshot_identity"] for replica in settled(idle, "policy")] == ["step-3"]
    idle.advance_clock(HOUR)
    assert replicas(idle, "policy") == ("READY", 0, 0)  # no hotload GET: the wake drops the replicas
    assert complete(idle, "policy").status_code == 425
    assert complete(idle, "policy").status_code == 200
    assert [replica["current_snapshot_identity"] for replica in status(idle, "policy")] == [served]
    assert get(idle, "policy").json().get("activeModelVersion") == served


@pytest.mark.parametrize(("boot_identity", "served"), [("latest", "step-3"), ("base", None)])
def test_boot_identity_on_scale_up(idle: EmulatorProcess, boot_identity: str, served: str | None) -> None:
    idle.configure(boot_identity=boot_identity)
    ready(idle, "growing")
    assert load(idle, "growing", {"identity": "step-3"}).status_code == 200
    settled(idle, "growing")
    scaled = call(idle, "POST", f"{deployments_path(idle)}/growing:scale", json={"replicaCount": 2})
    assert scaled.status_code == 200
    identities = [replica["current_snapshot_identity"] for replica in status(idle, "growing")]
    assert identities == ["step-3", served]


# -- settings and the admin clock --------------------------------------------------------------


def test_idle_settings_are_flags_and_config_keys() -> None:
    with EmulatorProcess.start(
        api_key="fw-idle-flags-key", time_scale=3600, cold_start_s=0.25, boot_identity="base"
    ) as process:
        config = process.admin("GET", "config")
        assert config["time_scale"] == 3600.0
        assert config["cold_start_s"] == 0.25
        assert config["boot_identity"] == "base"
        assert config["auto_delete_idle_s"] == WEEK
        assert process.configure(auto_delete_idle_s=60)["auto_delete_idle_s"] == 60.0


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("time_scale", 0),
        ("time_scale", -2),
        ("time_scale", "fast"),
        ("time_scale", "inf"),
        ("cold_start_s", -1),
        ("auto_delete_idle_s", -5),
        ("boot_identity", "weights"),
    ],
)
def test_bad_idle_settings_are_400_naming_the_setting(
    emulator: EmulatorProcess, setting: str, value: Any
) -> None:
    response = requests.patch(f"{emulator.url}/_emulator/config", json={setting: value}, timeout=10)
    assert response.status_code == 400
    assert f"'{setting}'" in error_message(response)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({}, "advance_s"),
        ({"advance_s": -1}, "advance_s"),
        ({"advance_s": "a day"}, "advance_s"),
        ({"advance_s": True}, "advance_s"),
        ({"advance_s": 5, "extra": 1}, "extra"),
        ([86400], "JSON object"),
    ],
)
def test_bad_clock_bodies_are_400(emulator: EmulatorProcess, body: Any, needle: str) -> None:
    response = requests.post(f"{emulator.url}/_emulator/clock", json=body, timeout=10)
    assert response.status_code == 400
    assert needle in error_message(response)


def test_clock_answer(emulator: EmulatorProcess) -> None:
    response = requests.post(f"{emulator.url}/_emulator/clock", json={"advance_s": 90}, timeout=10)
    assert response.status_code == 200
    assert response.json() == {"ok": True, "advanced_s": 90}
