"""The emulator of the benchmarks: ``airflow_fireworks.testing.EmulatorProcess`` with the benchmarks'
key and account, and a READY deployment to sample from."""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from typing import Any

from airflow_fireworks.testing import EmulatorProcess

API_KEY = "fw-bench-key"
ACCOUNT = "bench"
BASE_MODEL = "accounts/fireworks/models/qwen3-8b"


def running_emulator(**settings: Any) -> AbstractContextManager[EmulatorProcess]:
    """``python -m airflow_fireworks.emulator`` on a free loopback port until the block exits."""
    return EmulatorProcess.start(api_key=API_KEY, account_id=ACCOUNT, **settings)


def ready_deployment(emulator: EmulatorProcess, deployment_id: str, replicas: int = 1) -> str:
    """Create a deployment of ``replicas`` replicas, wait until READY, return its inference model name."""
    headers = {"X-Api-Key": emulator.api_key}
    base = f"{emulator.url}/v1/accounts/{emulator.account_id}/deployments"
    response = emulator.session.post(
        base,
        params={"deploymentId": deployment_id},
        json={"baseModel": BASE_MODEL, "minReplicaCount": replicas, "maxReplicaCount": replicas},
        headers=headers,
        timeout=10,
    )
    response.raise_for_status()
    deadline = time.monotonic() + 30
    while response.json().get("state") != "READY":
        if time.monotonic() > deadline:
            raise TimeoutError(f"deployment {deployment_id} did not become READY")
        time.sleep(0.02)
        response = emulator.session.get(f"{base}/{deployment_id}", headers=headers, timeout=10)
    return f"accounts/{emulator.account_id}/deployments/{deployment_id}"
