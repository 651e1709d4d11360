"""FireworksHook against the emulator: connection lookup (env and DB), lifecycle calls, Test button."""

from __future__ import annotations

import json

import pytest

from airflow_fireworks.api import AsyncFireworksClient, DeploymentManager, DeploymentState
from airflow_fireworks.hooks.fireworks import FireworksConnectionConfigError, FireworksHook

BASE_MODEL = "accounts/fireworks/models/qwen3-8b"


def test_get_conn_builds_one_manager_for_the_connection(fireworks_conn_env, emulator):
    hook = FireworksHook()
    manager = hook.get_conn()
    assert isinstance(manager, DeploymentManager)
    assert hook.get_conn() is manager
    assert manager.base_url == emulator.url
    assert hook.account_id == emulator.account_id


def test_test_connection_resolves_the_account(fireworks_conn_env, emulator):
    ok, message = FireworksHook().test_connection()
    assert ok is True
    assert repr(emulator.account_id) in message


def test_test_connection_reports_a_rejected_key_without_showing_it(emulator, monkeypatch):
    wrong_key = "fw-wrong-key-5566778899"
    conn = {"conn_type": "fireworks", "host": emulator.url, "password": wrong_key}
    monkeypatch.setenv("AIRFLOW_CONN_FW_WRONG", json.dumps(conn))
    ok, message = FireworksHook("fw_wrong").test_connection()
    assert ok is False
    assert "401" in message
    assert wrong_key not in message


def test_test_connection_reports_a_malformed_connection(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_FW_BAD", json.dumps({"conn_type": "fireworks", "password": ""}))
    ok, message = FireworksHook("fw_bad").test_connection()
    assert ok is False
    assert "password" in message and "fw_bad" in message


def test_lifecycle_calls_round_trip(fireworks_conn_env, emulator):
    emulator.configure(create_delay_s=0.2, update_delay_s=0.1, delete_delay_s=0.1)
    hook = FireworksHook()
    created = hook.create_or_get(
        {"deployment_id": "hook-dep", "base_model": BASE_MODEL, "max_replica_count": "2"}
    )
    assert created.max_replica_count == 2
    again = hook.create_or_get({"deployment_id": "hook-dep", "base_model": BASE_MODEL})
    assert again.name == created.name
    assert len(emulator.requests(route="create")) == 1
    ready = hook.wait_for_ready("hook-dep", timeout_s=10, poll_interval_s=0.05)
    assert ready.state is DeploymentState.READY
    assert hook.inference_model("hook-dep") == f"accounts/{emulator.account_id}/deployments/hook-dep"
    updated = hook.update_deployment("hook-dep", {"minReplicaCount": 1}, "min_replica_count")
    assert updated.min_replica_count == 1
    assert [d.deployment_id for d in hook.list_deployments()] == ["hook-dep"]
    assert hook.scale_to_zero("hook-dep").max_replica_count == 0
    assert hook.delete_deployment("hook-dep") is True
    hook.wait_for_deleted("hook-dep", timeout_s=10, poll_interval_s=0.05)
    assert hook.get_deployment("hook-dep") is None
    assert hook.delete_deployment("hook-dep") is False


def test_hotload_calls(fireworks_conn_env, emulator):
    emulator.configure(create_delay_s=0.1, hotload_stage_s=0.02)
    hook = FireworksHook()
    hook.create_or_get({"deployment_id": "hook-hot", "base_model": BASE_MODEL})
    hook.wait_for_ready("hook-hot", timeout_s=10, poll_interval_s=0.05)
    hook.hotload("hook-hot", BASE_MODEL, "snap-a")
    status = hook.wait_for_hotload("hook-hot", BASE_MODEL, "snap-a", timeout_s=10, poll_interval_s=0.05)
    assert status.current_identities == ["snap-a"]
    assert hook.hotload_status("hook-hot", BASE_MODEL).evaluate("snap-a").outcome == "ready"


async def test_async_connection_params_and_client(fireworks_conn_env, emulator):
    params = await FireworksHook.aget_connection_params("fireworks_default")
    assert params.base_url == emulator.url
    async with params.async_client() as client:
        assert isinstance(client, AsyncFireworksClient)
        assert await client.account_id() == emulator.account_id
    client = FireworksHook().get_async_client()
    try:
        assert await client.get_deployment("absent-dep") is None
    finally:
        await client.close()


async def test_async_connection_params_raise_for_a_malformed_connection(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_FW_NOHOST", json.dumps({"conn_type": "fireworks", "host": "ftp://x"}))
    with pytest.raises(FireworksConnectionConfigError, match="password"):
        await FireworksHook.aget_connection_params("fw_nohost")
