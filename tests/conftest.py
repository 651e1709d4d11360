"""Shared fixtures: an isolated Airflow home and a real emulator process on loopback.

Airflow reads its configuration when first imported, so the environment is set here, at the top
of the root conftest, before any test module imports ``airflow``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="airflow-fireworks-tests-"))
REPO_ROOT = Path(__file__).resolve().parent.parent
os.environ["AIRFLOW_HOME"] = str(_AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_AIRFLOW_HOME}/airflow.db"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO_ROOT / "example_dags")
os.environ["TRANSFORMERS_VERBOSITY"] = "error"
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402

from tests.emulator_control import EmulatorProcess  # noqa: E402

TEST_API_KEY = "fw-test-key-3f9a1c7e5b2d"


@pytest.fixture(scope="session")
def emulator_process() -> Iterator[EmulatorProcess]:
    """One emulator for the whole session; tests reset it through the ``emulator`` fixture."""
    with EmulatorProcess.start(api_key=TEST_API_KEY) as process:
        yield process


@pytest.fixture
def emulator(emulator_process: EmulatorProcess) -> Iterator[EmulatorProcess]:
    """The session emulator, reset to its start-up settings with no deployments or faults."""
    emulator_process.reset()
    yield emulator_process
    emulator_process.reset()


@pytest.fixture
def fireworks_conn_env(emulator: EmulatorProcess, monkeypatch: pytest.MonkeyPatch) -> str:
    """Define ``fireworks_default`` as an env-var connection pointing at the emulator."""
    conn = {
        "conn_type": "fireworks",
        "host": emulator.url,
        "password": emulator.api_key,
    }
    monkeypatch.setenv("AIRFLOW_CONN_FIREWORKS_DEFAULT", json.dumps(conn))
    return "fireworks_default"


@pytest.fixture(scope="session")
def tokenizer_dir() -> Path:
    """The small ChatML tokenizer shipped with the package."""
    return REPO_ROOT / "airflow_fireworks" / "tokenizer_data"
