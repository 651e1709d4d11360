"""Hotload through DeploymentManager against the emulator: full and incremental loads, waiting,
failures, timeouts, the reset_prompt_cache fallback and transient status errors."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from airflow_fireworks.api import (
    DeploymentConfig,
    DeploymentManager,
    DeploymentNotFoundError,
    FireworksAPIError,
    FireworksTimeoutError,
    HotloadFailedError,
    RetryPolicy,
    SnapshotChainError,
)
from tests.emulator_control import EmulatorProcess

BASE_MODEL = "accounts/fireworks/models/qwen3-8b"
FAST_RETRY = RetryPolicy(max_attempts=4, initial_backoff_s=0.01, max_backoff_s=0.05, max_total_s=10.0)


@pytest.fixture
def emu(emulator: EmulatorProcess) -> EmulatorProcess:
    emulator.configure(create_delay_s=0.1, update_delay_s=0.1, delete_delay_s=0.1, hotload_stage_s=0.02)
    return emulator


def ready_manager(
    emu: EmulatorProcess, replicas: int = 1, policy: RetryPolicy = FAST_RETRY
) -> DeploymentManager:
    mgr = DeploymentManager(emu.api_key, base_url=emu.url, retry_policy=policy)
    mgr.create_or_get(
        DeploymentConfig(
            deployment_id="dep-h",
            base_model=BASE_MODEL,
            min_replica_count=replicas,
            max_replica_count=replicas,
        )
    )
    mgr.wait_for_ready("dep-h", timeout_s=10, poll_interval_s=0.05)
    return mgr


@pytest.fixture
def manager(emu: EmulatorProcess) -> Iterator[DeploymentManager]:
    with ready_manager(emu) as mgr:
        yield mgr


def test_check_status_before_any_load(manager: DeploymentManager, emu: EmulatorProcess) -> None:
    status = manager.hotload_check_status("dep-h", BASE_MODEL)
    assert len(status.replicas) == 1
    assert status.evaluate("snap-1").outcome == "pending"
    [call] = emu.requests(route="hotload_status")
    for header in ("authorization", "x-api-key", "fireworks-model", "fireworks-deployment"):
        assert header in call["headers"]


def test_full_hotload_and_wait(manager: DeploymentManager, emu: EmulatorProcess) -> None:
    answer = manager.hotload("dep-h", BASE_MODEL, "snap-1")
    assert isinstance(answer, dict)
    [load] = emu.requests(route="hotload_load")
    assert load["body"] == {"identity": "snap-1", "reset_prompt_cache": True}
    status = manager.wait_for_hotload("dep-h", BASE_MODEL, "snap-1", timeout_seconds=10, poll_interval=0.02)
    assert status.current_identities == ["snap-1"]
    assert all(r.readiness for r in status.replicas)


def test_incremental_hotload(manager: DeploymentManager, emu: EmulatorProcess) -> None:
    manager.hotload_and_wait("dep-h", BASE_MODEL, "snap-1", timeout_seconds=10, poll_interval=0.02)
    status = manager.hotload_and_wait(
        "dep-h",
        BASE_MODEL,
        "snap-2",
        {"previous_snapshot_identity": "snap-1"},
        timeout_seconds=10,
        poll_interval=0.02,
    )
    assert status.current_identities == ["snap-2"]
    delta = emu.requests(route="hotload_load")[-1]["body"]
    assert delta["incremental_snapshot_metadata"] == {
        "previous_snapshot_identity": "snap-1",
        "compression_format": "arc_v2",
        "checksum_format": "alder32",
    }


def test_waits_for_every_replica(emu: EmulatorProcess) -> None:
    with ready_manager(emu, replicas=2) as mgr:
        status = mgr.hotload_and_wait("dep-h", BASE_MODEL, "snap-1", timeout_seconds=10, poll_interval=0.02)
    assert status.current_identities == ["snap-1", "snap-1"]


def test_delta_on_wrong_base_is_refused_before_sending(
    manager: DeploymentManager, emu: EmulatorProcess
) -> None:
    manager.hotload_and_wait("dep-h", BASE_MODEL, "snap-1", timeout_seconds=10, poll_interval=0.02)
    loads_before = len(emu.requests(route="hotload_load"))
    with pytest.raises(SnapshotChainError) as info:
        manager.hotload_and_wait(
            "dep-h",
            BASE_MODEL,
            "snap-3",
            {"previous_snapshot_identity": "snap-2"},
            timeout_seconds=10,
            poll_interval=0.02,
        )
    assert (info.value.identity, info.value.previous_identity) == ("snap-3", "snap-2")
    assert "replica 0 serves 'snap-1'" in str(info.value)
    assert len(emu.requests(route="hotload_load")) == loads_before


def test_delta_on_wrong_base_fails_on_the_server_without_the_check(manager: DeploymentManager) -> None:
    manager.hotload_and_wait("dep-h", BASE_MODEL, "snap-1", timeout_seconds=10, poll_interval=0.02)
    manager.hotload(
        "dep-h", BASE_MODEL, "snap-3", {"previous_snapshot_identity": "snap-2"}, check_chain=False
    )
    with pytest.raises(HotloadFailedError) as info:
        manager.wait_for_hotload("dep-h", BASE_MODEL, "snap-3", timeout_seconds=10, poll_interval=0.02)
    assert info.value.identity == "snap-3"
    assert info.value.stage == "error"
    assert "snap-2" in str(info.value)


def test_server_side_load_error(manager: DeploymentManager, emu: EmulatorProcess) -> None:
    emu.configure(hotload_fail_identities=["snap-bad"])
    manager.hotload("dep-h", BASE_MODEL, "snap-bad")
    with pytest.raises(HotloadFailedError, match="snap-bad"):
        manager.wait_for_hotload("dep-h", BASE_MODEL, "snap-bad", timeout_seconds=10, poll_interval=0.02)


def test_stale_error_for_another_identity_is_ignored(
    manager: DeploymentManager, emu: EmulatorProcess
) -> None:
    emu.configure(hotload_fail_identities=["snap-bad"])
    manager.hotload("dep-h", BASE_MODEL, "snap-bad")
    with pytest.raises(HotloadFailedError):
        manager.wait_for_hotload("dep-h", BASE_MODEL, "snap-bad", timeout_seconds=10, poll_interval=0.02)
    status = manager.hotload_and_wait("dep-h", BASE_MODEL, "snap-1", timeout_seconds=10, poll_interval=0.02)
    assert status.current_identities == ["snap-1"]


def test_wait_timeout(manager: DeploymentManager, emu: EmulatorProcess) -> None:
    emu.configure(hotload_stage_s=30)
    manager.hotload("dep-h", BASE_MODEL, "snap-1")
    with pytest.raises(FireworksTimeoutError, match="snap-1") as info:
        manager.wait_for_hotload("dep-h", BASE_MODEL, "snap-1", timeout_seconds=0.2, poll_interval=0.05)
    assert isinstance(info.value, TimeoutError)


def test_transient_status_errors_keep_polling(emu: EmulatorProcess) -> None:
    # With one attempt per call, only the waiter's own polling can get past the injected 503s.
    with ready_manager(emu, policy=RetryPolicy(max_attempts=1)) as mgr:
        mgr.hotload("dep-h", BASE_MODEL, "snap-1")
        emu.add_fault(route="hotload_status", kind="status", status=503, times=3)
        status = mgr.wait_for_hotload("dep-h", BASE_MODEL, "snap-1", timeout_seconds=10, poll_interval=0.02)
    assert status.current_identities == ["snap-1"]
    assert [r["status"] for r in emu.requests(route="hotload_status")][:3] == [503, 503, 503]


def test_permanent_status_error_raises_at_once(manager: DeploymentManager, emu: EmulatorProcess) -> None:
    manager.hotload("dep-h", BASE_MODEL, "snap-1")
    emu.add_fault(route="hotload_status", kind="status", status=403, times=None, message="forbidden here")
    with pytest.raises(FireworksAPIError, match="forbidden here") as info:
        manager.wait_for_hotload("dep-h", BASE_MODEL, "snap-1", timeout_seconds=10, poll_interval=0.02)
    assert info.value.status_code == 403
    assert len(emu.requests(route="hotload_status")) == 1


def test_reset_prompt_cache_fallback(manager: DeploymentManager, emu: EmulatorProcess) -> None:
    emu.add_fault(
        route="hotload_load",
        kind="status",
        status=400,
        times=1,
        message="Extra inputs are not permitted, field: 'reset_prompt_cache'",
    )
    manager.hotload("dep-h", BASE_MODEL, "snap-1")
    manager.hotload("dep-h", BASE_MODEL, "snap-2")
    calls = emu.requests(route="hotload_load")
    assert [r["status"] for r in calls] == [400, 200, 200]
    assert [r["body"] for r in calls[1:]] == [{"identity": "snap-1"}, {"identity": "snap-2"}]


def test_other_400_is_not_swallowed(manager: DeploymentManager, emu: EmulatorProcess) -> None:
    emu.add_fault(route="hotload_load", kind="status", status=400, times=1, message="identity is malformed")
    with pytest.raises(FireworksAPIError, match="identity is malformed"):
        manager.hotload("dep-h", BASE_MODEL, "snap-1")
    assert len(emu.requests(route="hotload_load")) == 1


def test_hotload_before_replicas_is_retried_as_not_ready(emu: EmulatorProcess) -> None:
    emu.configure(create_delay_s=60)
    with DeploymentManager(
        emu.api_key,
        base_url=emu.url,
        retry_policy=RetryPolicy(max_attempts=2, initial_backoff_s=0.01, max_backoff_s=0.02),
    ) as mgr:
        mgr.create_or_get(DeploymentConfig(deployment_id="dep-h", base_model=BASE_MODEL))
        with pytest.raises(FireworksAPIError) as info:
            mgr.hotload("dep-h", BASE_MODEL, "snap-1")
    assert info.value.status_code == 425
    assert info.value.retryable is True
    assert len(emu.requests(route="hotload_load")) == 2


def test_status_of_deployment_without_hot_load(manager: DeploymentManager) -> None:
    manager.create_or_get(
        DeploymentConfig(deployment_id="dep-plain", base_model=BASE_MODEL, enable_hot_load=False)
    )
    with pytest.raises(FireworksAPIError, match="hot load") as info:
        manager.hotload_check_status("dep-plain", BASE_MODEL)
    assert info.value.status_code == 400


def test_deployment_deleted_while_waiting_names_it(manager: DeploymentManager, emu: EmulatorProcess) -> None:
    manager.hotload("dep-h", BASE_MODEL, "snap-1")
    emu.vanish_deployment("dep-h")
    with pytest.raises(DeploymentNotFoundError) as info:
        manager.wait_for_hotload("dep-h", BASE_MODEL, "snap-1", timeout_seconds=10, poll_interval=0.02)
    assert info.value.deployment_id == "dep-h"
    assert str(info.value) == "deployment 'dep-h' no longer exists; hotload of 'snap-1' cannot complete"
