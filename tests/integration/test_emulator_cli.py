"""The emulator as a program: start-up line, flag validation, clean shutdown on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading

import requests

from tests.emulator_control import EmulatorProcess, free_port

KEY = "fw-cli-test-key"


def test_bad_flag_value_is_an_argparse_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "airflow_fireworks.emulator", "--decode-slots", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--decode-slots" in result.stderr


def test_prints_its_address_and_stops_cleanly_on_sigterm() -> None:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_fireworks.emulator",
            "--port",
            str(port),
            "--api-key",
            KEY,
            "--create-delay-s",
            "0",
            "--decode-step-base-s",
            "0.05",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == f"Fireworks emulator listening on http://127.0.0.1:{port}"
        emulator = EmulatorProcess(url=f"http://127.0.0.1:{port}", api_key=KEY, account_id="emulator")
        emulator.wait_healthy()
        created = requests.post(
            f"{emulator.url}/v1/accounts/emulator/deployments",
            params={"deploymentId": "busy"},
            json={"baseModel": "accounts/fireworks/models/qwen3-8b"},
            headers={"X-Api-Key": KEY},
            timeout=10,
        )
        assert created.status_code == 200
        started = threading.Event()

        def stream_forever() -> None:
            body = {
                "model": "accounts/emulator/deployments/busy",
                "prompt": [1, 2, 3],
                "max_tokens": 5000,
                "stream": True,
                "ignore_eos": True,
            }
            try:
                with requests.post(
                    f"{emulator.url}/inference/v1/completions",
                    json=body,
                    headers={"Authorization": f"Bearer {KEY}"},
                    stream=True,
                    timeout=30,
                ) as response:
                    started.set()
                    for _ in response.iter_lines():
                        pass
            except requests.RequestException:
                pass

        client = threading.Thread(target=stream_forever, daemon=True)
        client.start()
        assert started.wait(10)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
        client.join(timeout=20)
        assert not client.is_alive()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_start_closes_its_admin_session_on_exit() -> None:
    with EmulatorProcess.start(api_key=KEY) as emulator:
        emulator.stats()
        pools = emulator.session.get_adapter(emulator.url).poolmanager.pools
        assert len(pools) == 1
    assert len(pools) == 0
    assert emulator.process is not None and emulator.process.poll() is not None
