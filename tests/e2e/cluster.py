"""Run real Airflow components (api-server, scheduler, dag-processor, triggerer) for end-to-end tests.

Each component is its own process sharing one AIRFLOW_HOME and a SQLite metadata database, with
the LocalExecutor, as ``airflow-3.3-notes.md`` describes. Components are stopped by PID.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class AirflowCluster:
    """A running set of Airflow components and the means to drive and inspect them."""

    home: Path
    env: dict[str, str]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def db_path(self) -> Path:
        return self.home / "airflow.db"

    def cli(self, *args: str, timeout: float = 120) -> str:
        """Run an ``airflow`` CLI command against this cluster and return its stdout."""
        result = subprocess.run(
            [sys.executable, "-m", "airflow", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def query(self, sql: str, *params: object) -> list[tuple[object, ...]]:
        """Read the metadata database directly (read-only)."""
        with sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=30) as conn:
            return list(conn.execute(sql, params).fetchall())

    def wait_for_dag(self, dag_id: str, timeout_s: float = 120) -> None:
        """Wait until the dag-processor has serialized ``dag_id``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            if self.query("SELECT 1 FROM serialized_dag WHERE dag_id = ?", dag_id):
                return
            time.sleep(1)
        raise TimeoutError(f"DAG {dag_id} was not parsed in {timeout_s}s; see {self.home}/logs")

    def trigger(
        self, dag_id: str, conf: dict[str, object] | None = None, logical_date: str | None = None
    ) -> str:
        """Unpause and trigger ``dag_id``; return the new run id.

        ``logical_date`` (ISO 8601, e.g. ``2026-01-02T00:00:00+00:00``) runs a given day of a
        scheduled DAG; without it the run's logical date is now.
        """
        self.cli("dags", "unpause", dag_id)
        run_id = f"e2e__{int(time.time() * 1000)}"
        args = ["dags", "trigger", dag_id, "--run-id", run_id, "--conf", json.dumps(conf or {})]
        if logical_date is not None:
            args += ["--logical-date", logical_date]
        self.cli(*args)
        return run_id

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        rows = self.query(
            "SELECT task_id, map_index, state FROM task_instance WHERE dag_id = ? AND run_id = ?",
            dag_id,
            run_id,
        )
        return {
            str(task_id) if map_index == -1 else f"{task_id}[{map_index}]": state  # type: ignore[misc]
            for task_id, map_index, state in rows
        }

    def try_numbers(self, dag_id: str, run_id: str) -> dict[str, int]:
        """``{task: try_number}`` of every task instance of the run (1 = succeeded on its first try)."""
        rows = self.query(
            "SELECT task_id, map_index, try_number FROM task_instance WHERE dag_id = ? AND run_id = ?",
            dag_id,
            run_id,
        )
        return {
            str(task_id) if map_index == -1 else f"{task_id}[{map_index}]": int(tries)  # type: ignore[call-overload]
            for task_id, map_index, tries in rows
        }

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> object:
        """The JSON value a task of the run pushed under ``key``, read from the ``xcom`` table."""
        rows = self.query(
            "SELECT value FROM xcom WHERE dag_id = ? AND run_id = ? AND task_id = ? AND key = ? "
            "AND map_index = -1",
            dag_id,
            run_id,
            task_id,
            key,
        )
        if not rows:
            raise KeyError(f"no XCom {key!r} of {dag_id}.{task_id} in run {run_id}")
        value = rows[0][0]
        return json.loads(value) if isinstance(value, str | bytes) else value

    def wait_for_run(
        self, dag_id: str, run_id: str, timeout_s: float = 300
    ) -> tuple[str, dict[str, set[str]]]:
        """Poll until the run ends; return its state and every state each task was seen in."""
        seen: dict[str, set[str]] = {}
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            for task, state in self.task_states(dag_id, run_id).items():
                seen.setdefault(task, set()).add(str(state))
            rows = self.query("SELECT state FROM dag_run WHERE dag_id = ? AND run_id = ?", dag_id, run_id)
            if rows and rows[0][0] in ("success", "failed"):
                for task, state in self.task_states(dag_id, run_id).items():
                    seen.setdefault(task, set()).add(str(state))
                return str(rows[0][0]), seen
            time.sleep(0.5)
        raise TimeoutError(f"run {run_id} of {dag_id} did not finish in {timeout_s}s; seen {seen}")

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(
                    f"airflow {name} exited with {process.returncode}; see {self.home}/{name}.log"
                )

    def logs(self, pattern: str = "**/*.log") -> dict[str, str]:
        """Every log file under the cluster's home matching ``pattern``, by relative path."""
        return {
            str(p.relative_to(self.home)): p.read_text(errors="replace")
            for p in self.home.glob(pattern)
            if p.is_file()
        }

    def start_component(self, name: str, *args: str, env: Mapping[str, str] | None = None) -> None:
        """Start ``airflow <args>`` (``airflow <name>`` without args) in its own session, logging to
        ``<home>/<name>.log``; ``env`` adds to the cluster's environment for this component only."""
        log = open(self.home / f"{name}.log", "wb")  # noqa: SIM115 - closed when the process ends
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "airflow", *(args or (name,))],
            env={**self.env, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def cluster_env(home: Path, dags_folder: Path, extra_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of every component of a cluster in ``home`` (SQLite, LocalExecutor, a free
    api-server port); ``extra_env`` overrides any of it (e.g. the executor and the database)."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "2",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "TRANSFORMERS_VERBOSITY": "error",
            "HF_HUB_OFFLINE": "1",
        }
    )
    env.update(extra_env or {})
    return env


@contextmanager
def airflow_cluster(
    home: Path, dags_folder: Path, extra_env: dict[str, str] | None = None
) -> Iterator[AirflowCluster]:
    """Migrate a fresh database in ``home`` and run the four components until the context exits."""
    env = cluster_env(home, dags_folder, extra_env)
    home.mkdir(parents=True, exist_ok=True)
    cluster = AirflowCluster(home=home, env=env)
    cluster.cli("db", "migrate", timeout=300)
    try:
        for name in COMPONENTS:
            cluster.start_component(name)
        yield cluster
    finally:
        cluster.stop()
