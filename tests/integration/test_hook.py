"""FireworksHook against the emulator: connection lookup (env and DB), lifecycle calls, Test button."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator

import pytest

from airflow_fireworks.api import AsyncFireworksClient, DeploymentManager, DeploymentState
from airflow_fireworks.hooks import fireworks as fireworks_hook
from airflow_fireworks.hooks.fireworks import FireworksConnectionConfigError, FireworksHook
from tests.emulator_control import free_port

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
    assert repr(emulator.account_id) in message and emulator.url in message
    assert "NOT verified" not in message


def test_test_connection_says_when_tls_is_not_verified(emulator, monkeypatch):
    conn = {"conn_type": "fireworks", "host": emulator.url, "password": emulator.api_key}
    monkeypatch.setenv("AIRFLOW_CONN_FW_NOVERIFY", json.dumps({**conn, "extra": {"verify_ssl": "false"}}))
    ok, message = FireworksHook("fw_noverify").test_connection()
    assert ok is True
    assert "TLS certificates are NOT verified (Verify TLS is off)" in message


def test_test_connection_reports_a_rejected_key_in_the_forms_words(emulator, monkeypatch):
    wrong_key = "fw-wrong-key-5566778899"
    conn = {"conn_type": "fireworks", "host": emulator.url, "password": wrong_key}
    monkeypatch.setenv("AIRFLOW_CONN_FW_WRONG", json.dumps(conn))
    ok, message = FireworksHook("fw_wrong").test_connection()
    assert ok is False
    assert message.startswith(f"API key refused by {emulator.url} (HTTP 401")
    assert wrong_key not in message and "fw_wrong" not in message


@pytest.mark.parametrize(
    ("conn", "expected"),
    [
        ({"password": ""}, "API key: is empty; paste your Fireworks API key"),
        ({"password": "k" * 20, "host": "ftp://files.example.com"}, "Control-plane URL: 'ftp://files"),
        ({"password": "k" * 20, "host": "http://h.example.com:8080", "port": 9090}, "Port: 9090 differs"),
        (
            {"password": "k" * 20, "extra": {"verify_ssl": "maybe"}},
            "Verify TLS: must be true, false or unset",
        ),
        ({"password": "k" * 20, "extra": {"inference_url": "x://y"}}, "Inference URL: 'x://y' is not"),
    ],
)
def test_test_connection_names_a_malformed_field_by_its_form_label(monkeypatch, conn, expected):
    monkeypatch.setenv("AIRFLOW_CONN_FW_BAD", json.dumps({"conn_type": "fireworks", **conn}))
    ok, message = FireworksHook("fw_bad").test_connection()
    assert ok is False
    assert message.startswith(expected), message
    assert "fw_bad" not in message and "field '" not in message


def test_test_connection_sends_one_request_without_retrying(emulator, monkeypatch):
    emulator.add_fault(route="accounts", kind="status", status=503)
    conn = {"conn_type": "fireworks", "host": emulator.url, "password": emulator.api_key}
    monkeypatch.setenv("AIRFLOW_CONN_FW_FLAKY", json.dumps(conn))
    ok, message = FireworksHook("fw_flaky").test_connection()
    assert ok is False
    assert message.startswith(f"Control-plane URL {emulator.url} answered HTTP 503")
    assert len(emulator.requests(route="accounts")) == 1  # the task path would retry 503 up to 8 times


@pytest.fixture
def silent_server() -> Iterator[tuple[str, list[socket.socket]]]:
    """A loopback TCP server that accepts connections and never answers (a hung host)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}", accepted
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


def test_test_connection_gives_up_on_a_silent_host_after_one_short_attempt(silent_server, monkeypatch):
    url, accepted = silent_server
    monkeypatch.setattr(fireworks_hook, "TEST_CONNECTION_TIMEOUT_S", 0.5)
    built: list[DeploymentManager] = []
    build = fireworks_hook.FireworksConnectionParams.manager

    def recording_manager(self: object, **kwargs: object) -> DeploymentManager:
        built.append(build(self, **kwargs))  # type: ignore[arg-type]
        return built[-1]

    monkeypatch.setattr(fireworks_hook.FireworksConnectionParams, "manager", recording_manager)
    monkeypatch.setenv(
        "AIRFLOW_CONN_FW_HUNG", json.dumps({"conn_type": "fireworks", "host": url, "password": "k" * 20})
    )
    ok, message = FireworksHook("fw_hung").test_connection()
    assert ok is False
    assert message == f"Control-plane URL {url} cannot be reached: no answer within 0.5 s"
    assert len(accepted) == 1  # one attempt: no retry, no backoff
    assert [m.timeout_s for m in built] == [0.5]  # the short timeout, not the task path's 60 s


def test_test_connection_reports_a_refused_connection(monkeypatch):
    port = free_port()  # nothing listens there
    conn = {"conn_type": "fireworks", "host": f"http://127.0.0.1:{port}", "password": "k" * 20}
    monkeypatch.setenv("AIRFLOW_CONN_FW_DOWN", json.dumps(conn))
    ok, message = FireworksHook("fw_down").test_connection()
    assert ok is False
    assert message == (
        f"Control-plane URL http://127.0.0.1:{port} cannot be reached: the connection was refused "
        "(nothing listens on that host and port)"
    )


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
