"""An S3-compatible server on loopback (moto's server mode, a real HTTP process) for the tests,
reached the way a user reaches S3: through Airflow's ``aws`` connection with ``endpoint_url``."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import requests

from tests.emulator_control import free_port

#: Credentials moto accepts (any do); never real ones.
ACCESS_KEY = "moto-test-access"
SECRET_KEY = "moto-test-secret"
REGION = "us-east-1"


@dataclass
class S3Server:
    """A running moto server: its URL and a boto3 client on it."""

    url: str
    process: subprocess.Popen[bytes]

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )

    def connection(self) -> str:
        """The ``aws`` connection, as ``AIRFLOW_CONN_<ID>`` JSON, pointing at this server."""
        return json.dumps(
            {
                "conn_type": "aws",
                "login": ACCESS_KEY,
                "password": SECRET_KEY,
                "extra": {"endpoint_url": self.url, "region_name": REGION},
            }
        )

    def reset(self) -> None:
        """Forget every bucket and object."""
        requests.post(f"{self.url}/moto-api/reset", timeout=10).raise_for_status()

    @classmethod
    @contextmanager
    def start(cls) -> Iterator[S3Server]:
        """Start ``moto.server`` on a free loopback port; stop it (by pid) at the end."""
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        server = cls(url=f"http://127.0.0.1:{port}", process=process)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    requests.get(f"{server.url}/moto-api/data.json", timeout=1).raise_for_status()
                    break
                except requests.RequestException:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("the moto S3 server did not start") from None
                    time.sleep(0.1)
            yield server
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
