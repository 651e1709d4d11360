"""Run the local Fireworks emulator as a real process and drive its admin endpoints.

For DAG authors' own tests and scripts, like moto for AWS: start an emulator on a free loopback
port, point a ``fireworks`` connection at ``EmulatorProcess.url`` with ``EmulatorProcess.api_key``, and
script scenarios (delays, faults, failed deployments) through the admin endpoints.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import requests


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class EmulatorProcess:
    """A running emulator: its URL, key and account, plus helpers for the admin endpoints."""

    url: str
    api_key: str = field(repr=False)
    account_id: str
    process: subprocess.Popen[bytes] | None = None
    session: requests.Session = field(default_factory=requests.Session)

    @classmethod
    @contextmanager
    def start(cls, api_key: str, account_id: str = "emulator", **settings: Any) -> Iterator[EmulatorProcess]:
        """Run ``python -m airflow_fireworks.emulator`` until the context exits."""
        port = free_port()
        args = [
            sys.executable,
            "-m",
            "airflow_fireworks.emulator",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--api-key",
            api_key,
            "--account-id",
            account_id,
        ]
        for key, value in settings.items():
            args += [f"--{key.replace('_', '-')}", str(value)]
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        emulator = cls(
            url=f"http://127.0.0.1:{port}", api_key=api_key, account_id=account_id, process=process
        )
        try:
            emulator.wait_healthy()
            yield emulator
        finally:
            emulator.session.close()
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def wait_healthy(self, timeout_s: float = 30.0) -> None:
        """Block until ``/_emulator/health`` answers, or fail if the process died."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"emulator exited with code {self.process.returncode}")
            try:
                if self.session.get(f"{self.url}/_emulator/health", timeout=1).ok:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        raise TimeoutError("emulator did not become healthy")

    def admin(self, method: str, path: str, json: Any = None, **params: Any) -> Any:
        """Call an admin endpoint and return its JSON answer."""
        response = self.session.request(
            method, f"{self.url}/_emulator/{path}", json=json, params=params or None, timeout=10
        )
        response.raise_for_status()
        return response.json() if response.content else None

    def reset(self) -> None:
        """Forget deployments, faults and stats; restore start-up settings."""
        self.admin("POST", "reset")

    def configure(self, **settings: Any) -> dict[str, Any]:
        """Change emulator settings (see docs/emulator.md); returns the new settings."""
        return dict(self.admin("PATCH", "config", json=settings))

    def add_fault(self, **rule: Any) -> str:
        """Add a fault rule (see docs/emulator.md); returns its id."""
        return str(self.admin("POST", "faults", json=rule)["id"])

    def clear_faults(self) -> None:
        """Remove every fault rule."""
        self.admin("DELETE", "faults")

    def stats(self) -> dict[str, Any]:
        """Counts of requests per route and status, completions, prefill queue peaks and deployments."""
        return dict(self.admin("GET", "stats"))

    def requests(self, route: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """The most recent requests (at most ``limit``, optionally of one route), without key values."""
        params: dict[str, Any] = {"limit": limit}
        if route:
            params["route"] = route
        return list(self.admin("GET", "requests", **params))

    def fail_deployment(self, deployment_id: str, message: str = "injected failure") -> None:
        """Put a deployment in state FAILED with ``message`` as its status message."""
        self.admin("POST", f"deployments/{deployment_id}/fail", json={"message": message})

    def vanish_deployment(self, deployment_id: str) -> None:
        """Make a deployment disappear at once (as if deleted from under a running DAG)."""
        self.admin("POST", f"deployments/{deployment_id}/vanish")

    def advance_clock(self, seconds: float) -> None:
        """Let ``seconds`` platform seconds pass without traffic on every deployment's idle clock.

        Drives idle scale-to-zero and the 7-day auto-delete deterministically (``advance_clock(86400)``
        is a day without inference traffic); cold starts and other delays still take real time.
        """
        self.admin("POST", "clock", json={"advance_s": seconds})

    # -- trainer jobs ------------------------------------------------------------------------

    def add_trainer_job(
        self, job_id: str, base_model: str = "accounts/fireworks/models/qwen3-8b", running: bool = True
    ) -> dict[str, Any]:
        """A trainer job that already exists (RUNNING and healthy at once unless ``running=False``)."""
        body = {"job_id": job_id, "base_model": base_model, "running": running}
        return dict(self.admin("POST", "trainers", json=body))

    def save_checkpoint(self, job_id: str, name: str, checkpoint_type: str | None = None) -> dict[str, Any]:
        """What the trainer's save-weights call does: record snapshot ``name`` (``base``, ``delta`` or
        ``merged_base``; by default base first, delta afterwards). Returns ``identity`` (what to
        hot-load), ``checkpoint_type``, ``previous_identity`` (a delta's base), ``bucket_url`` and the
        ``checkpoint`` row."""
        body = {"name": name, "checkpoint_type": checkpoint_type}
        return dict(self.admin("POST", f"trainers/{job_id}/checkpoints", json=body))

    def set_trainer_state(
        self, job_id: str, state: str, message: str = "set by a test", code: str | None = None
    ) -> dict[str, Any]:
        """Put a trainer job in ``state`` (FAILED, PAUSED, CANCELLED, ...; ARCHIVED once deleted)."""
        body = {"state": state, "message": message, **({"code": code} if code else {})}
        return dict(self.admin("POST", f"trainers/{job_id}/state", json=body))

    def preempt_trainer(self, job_id: str) -> dict[str, Any]:
        """The trainer's capacity is reclaimed: FAILED (``UNAVAILABLE``), health down, resumable."""
        return dict(self.admin("POST", f"trainers/{job_id}/preempt"))

    def vanish_trainer(self, job_id: str) -> None:
        """The trainer job disappears at once, tombstone included (GET answers 404)."""
        self.admin("POST", f"trainers/{job_id}/vanish")
