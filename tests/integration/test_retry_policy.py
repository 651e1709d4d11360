"""The shared retry policy over real HTTP: transient answers are retried then succeed, other 4xx
are sent exactly once, and attempts are bounded."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from airflow_fireworks.api import (
    DeploymentConfig,
    DeploymentManager,
    FireworksAPIError,
    FireworksConnectionError,
    RetryPolicy,
)
from tests.emulator_control import EmulatorProcess

BASE_MODEL = "accounts/fireworks/models/qwen3-8b"
POLICY = RetryPolicy(max_attempts=5, initial_backoff_s=0.01, max_backoff_s=0.05, max_total_s=20.0)


@pytest.fixture
def manager(emulator: EmulatorProcess) -> Iterator[DeploymentManager]:
    emulator.configure(create_delay_s=0.1)
    with DeploymentManager(emulator.api_key, base_url=emulator.url, retry_policy=POLICY) as mgr:
        _ = mgr.account_id  # resolve before faults are armed, so only the call under test is counted
        yield mgr


def fault_hits(emulator: EmulatorProcess) -> int:
    return sum(int(rule["hits"]) for rule in emulator.admin("GET", "faults"))


@pytest.mark.parametrize(
    ("status", "retry_after_s"),
    [(503, 0.01), (503, None), (429, 0.01), (500, None), (502, None), (504, None), (408, None), (425, None)],
)
def test_transient_status_retried_then_succeeds(
    manager: DeploymentManager, emulator: EmulatorProcess, status: int, retry_after_s: float | None
) -> None:
    manager.create_or_get(DeploymentConfig(deployment_id="dep-r", base_model=BASE_MODEL))
    emulator.add_fault(route="get", kind="status", status=status, retry_after_s=retry_after_s, times=2)
    info = manager.get("dep-r")
    assert info is not None and info.deployment_id == "dep-r"
    gets = [r["status"] for r in emulator.requests(route="get")]
    assert gets[-3:] == [status, status, 200]
    assert emulator.stats()["requests"]["get"][str(status)] == 2


def test_connection_reset_retried(manager: DeploymentManager, emulator: EmulatorProcess) -> None:
    emulator.add_fault(route="get", kind="reset", times=2)
    assert manager.get("dep-r") is None
    assert fault_hits(emulator) == 2
    assert emulator.stats()["requests"]["get"]["404"] == 1


def test_create_retried_after_503_creates_once(manager: DeploymentManager, emulator: EmulatorProcess) -> None:
    emulator.add_fault(route="create", kind="status", status=503, retry_after_s=0.01, times=1)
    info = manager.create_or_get(DeploymentConfig(deployment_id="dep-r", base_model=BASE_MODEL))
    assert info.deployment_id == "dep-r"
    assert [r["status"] for r in emulator.requests(route="create")][-1] == 200
    assert sum(emulator.stats()["deployments"].values()) == 1


def test_hotload_trigger_retried(manager: DeploymentManager, emulator: EmulatorProcess) -> None:
    manager.create_or_get(DeploymentConfig(deployment_id="dep-r", base_model=BASE_MODEL))
    manager.wait_for_ready("dep-r", timeout_s=10, poll_interval_s=0.05)
    emulator.add_fault(route="hotload_load", kind="status", status=502, times=2)
    manager.hotload("dep-r", BASE_MODEL, "snap-1")
    assert [r["status"] for r in emulator.requests(route="hotload_load")] == [502, 502, 200]


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
def test_other_4xx_sent_exactly_once(
    manager: DeploymentManager, emulator: EmulatorProcess, status: int
) -> None:
    emulator.add_fault(route="update", kind="status", status=status, times=None, message="refused by server")
    with pytest.raises(FireworksAPIError) as info:
        manager.update("dep-r", {"maxReplicaCount": 2}, "max_replica_count")
    assert info.value.status_code == status
    assert info.value.retryable is False
    assert info.value.message == "refused by server"
    assert len(emulator.requests(route="update")) == 1


def test_attempts_are_bounded(manager: DeploymentManager, emulator: EmulatorProcess) -> None:
    emulator.add_fault(route="get", kind="status", status=503, times=None, message="overloaded")
    with pytest.raises(FireworksAPIError) as info:
        manager.get("dep-r")
    err = info.value
    assert err.status_code == 503
    assert err.retryable is True
    assert err.message == "overloaded"
    assert err.method == "GET"
    assert err.url.endswith("/deployments/dep-r")
    assert err.request_id  # taken from the response's request-id header
    assert f"HTTP 503 GET {err.url}: overloaded" in str(err)
    assert len(emulator.requests(route="get")) == POLICY.max_attempts


def test_resets_are_bounded(manager: DeploymentManager, emulator: EmulatorProcess) -> None:
    emulator.add_fault(route="get", kind="reset", times=None)
    with pytest.raises(FireworksConnectionError) as info:
        manager.get("dep-r")
    assert isinstance(info.value, ConnectionError)
    assert info.value.url.endswith("/deployments/dep-r")
    assert fault_hits(emulator) == POLICY.max_attempts


def test_wrong_key_is_a_single_401(emulator: EmulatorProcess) -> None:
    with (
        DeploymentManager("fw-not-the-key-0000", base_url=emulator.url, retry_policy=POLICY) as mgr,
        pytest.raises(FireworksAPIError) as info,
    ):
        _ = mgr.account_id
    assert info.value.status_code == 401
    assert "training-scoped" in str(info.value)
    assert len(emulator.requests(route="accounts")) == 1


def test_probe_is_not_retried(manager: DeploymentManager, emulator: EmulatorProcess) -> None:
    emulator.add_fault(route="completions", kind="status", status=503, times=None)
    assert manager.probe(manager.inference_model("dep-r")) is False
    assert fault_hits(emulator) == 1
