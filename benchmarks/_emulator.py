"""Run the emulator as a subprocess on 127.0.0.1 for a benchmark, with a READY deployment."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import requests

API_KEY = "fw-bench-key"
ACCOUNT = "bench"
BASE_MODEL = "accounts/fireworks/models/qwen3-8b"


@dataclass
class Emulator:
    url: str
    api_key: str
    account_id: str

    def configure(self, **settings: Any) -> None:
        requests.patch(f"{self.url}/_emulator/config", json=settings, timeout=10).raise_for_status()

    def reset(self) -> None:
        requests.post(f"{self.url}/_emulator/reset", timeout=10).raise_for_status()

    def stats(self) -> dict[str, Any]:
        response = requests.get(f"{self.url}/_emulator/stats", timeout=10)
        response.raise_for_status()
        return dict(response.json())

    def ready_deployment(self, deployment_id: str) -> str:
        """Create a deployment, wait until READY, return its inference model name."""
        headers = {"X-Api-Key": self.api_key}
        base = f"{self.url}/v1/accounts/{self.account_id}/deployments"
        response = requests.post(
            base,
            params={"deploymentId": deployment_id},
            json={"baseModel": BASE_MODEL},
            headers=headers,
            timeout=10,
        )
        response.raise_for_status()
        deadline = time.monotonic() + 30
        while response.json().get("state") != "READY":
            if time.monotonic() > deadline:
                raise TimeoutError(f"deployment {deployment_id} did not become READY")
            time.sleep(0.02)
            response = requests.get(f"{base}/{deployment_id}", headers=headers, timeout=10)
        return f"accounts/{self.account_id}/deployments/{deployment_id}"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_emulator(**settings: Any) -> Iterator[Emulator]:
    """``python -m airflow_fireworks.emulator`` on a free loopback port until the block exits."""
    port = _free_port()
    args = [
        sys.executable,
        "-m",
        "airflow_fireworks.emulator",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--api-key",
        API_KEY,
        "--account-id",
        ACCOUNT,
    ]
    for key, value in settings.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    emulator = Emulator(f"http://127.0.0.1:{port}", API_KEY, ACCOUNT)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"emulator exited with code {process.returncode}")
            try:
                if requests.get(f"{emulator.url}/_emulator/health", timeout=1).ok:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("emulator did not start")
            time.sleep(0.05)
        yield emulator
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
