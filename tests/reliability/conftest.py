"""Fixtures of the reliability suite: a fast emulator, a READY deployment, quick retry policies."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_fireworks.api import DeploymentManager, RetryPolicy
from airflow_fireworks.emulator.faults import DEFAULT_MESSAGES
from airflow_fireworks.sampling import load_tokenizer
from tests.emulator_control import EmulatorProcess

BASE_MODEL = "accounts/fireworks/models/qwen3-8b"
#: Emulator settings that keep every wait and every completion short.
FAST_EMULATOR: dict[str, Any] = {
    "create_delay_s": 0.05,
    "update_delay_s": 0.05,
    "delete_delay_s": 0.05,
    "hotload_stage_s": 0.05,
    "decode_step_base_s": 0.0005,
    "decode_step_per_seq_s": 0.00001,
    "stream_chunk_tokens": 2,
}
#: A retry policy with the production shape but millisecond backoffs (a ``Retry-After`` up to
#: ``max_backoff_s`` is still honoured).
QUICK_RETRY = RetryPolicy(max_attempts=4, initial_backoff_s=0.01, max_backoff_s=0.5, max_total_s=20.0)


def control_url(emulator: EmulatorProcess, deployment_id: str | None = None) -> str:
    url = f"{emulator.url}/v1/accounts/{emulator.account_id}/deployments"
    return f"{url}/{deployment_id}" if deployment_id else url


def raw_deployment(emulator: EmulatorProcess, deployment_id: str) -> dict[str, Any] | None:
    """The deployment as the control plane returns it (None when absent), read without our client."""
    response = emulator.session.get(
        control_url(emulator, deployment_id), headers={"X-Api-Key": emulator.api_key}, timeout=10
    )
    if response.status_code == 404:
        return None
    response.raise_for_status()
    return dict(response.json())


def create_ready(emulator: EmulatorProcess, deployment_id: str) -> str:
    """Create a deployment over plain HTTP, wait until READY; return its inference model name."""
    response = requests.post(
        control_url(emulator),
        params={"deploymentId": deployment_id},
        json={"baseModel": BASE_MODEL, "enableHotLoad": True},
        headers={"X-Api-Key": emulator.api_key},
        timeout=10,
    )
    response.raise_for_status()
    deadline = time.monotonic() + 20
    while (raw_deployment(emulator, deployment_id) or {}).get("state") != "READY":
        assert time.monotonic() < deadline, f"deployment {deployment_id} did not become READY"
        time.sleep(0.02)
    return f"accounts/{emulator.account_id}/deployments/{deployment_id}"


def fault_hits(emulator: EmulatorProcess) -> int:
    """How many requests the fault rules hit so far."""
    return sum(int(rule["hits"]) for rule in emulator.admin("GET", "faults"))


def quote_key_in_faults(emulator: EmulatorProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every fault that answers with a message quote the API key (as a careless server might),
    so that every test checking "no key in the error" fails when the redaction does nothing."""
    add_fault = emulator.add_fault

    def add_keyed_fault(**rule: Any) -> str:
        kind = rule.get("kind", "status")
        if DEFAULT_MESSAGES.get(kind):
            rule["message"] = (
                f"{rule.get('message', DEFAULT_MESSAGES[kind])} (request from key {emulator.api_key})"
            )
        return add_fault(**rule)

    monkeypatch.setattr(emulator, "add_fault", add_keyed_fault)


def gaps_after(emulator: EmulatorProcess, route: str, status: int) -> list[float]:
    """Seconds from each ``status`` answer on ``route`` to the end of the next request on that route,
    from the emulator's request log (it stamps each request when its answer is done)."""
    log = emulator.requests(route=route)  # in the order the answers were done
    stamps = [datetime.fromisoformat(entry["time"]).timestamp() for entry in log]
    return [
        # the log's stamps have millisecond precision
        stamps[i + 1] - stamps[i] + 0.001
        for i in range(len(log) - 1)
        if log[i]["status"] == status
    ]


@pytest.fixture
def emu(emulator: EmulatorProcess, monkeypatch: pytest.MonkeyPatch) -> EmulatorProcess:
    """The session emulator, reset and configured fast; its fault messages quote the key."""
    emulator.configure(**FAST_EMULATOR)
    quote_key_in_faults(emulator, monkeypatch)
    return emulator


@pytest.fixture
def manager(emu: EmulatorProcess) -> Iterator[DeploymentManager]:
    with DeploymentManager(emu.api_key, emu.url, retry_policy=QUICK_RETRY, timeout_s=5.0) as client:
        yield client


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir: Path) -> Any:
    return load_tokenizer(tokenizer_dir)
