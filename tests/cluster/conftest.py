"""One distributed Airflow for the ``cluster`` tests: PostgreSQL, Redis, the CeleryExecutor with two
Celery workers, and the emulator behind the ``fireworks_default`` connection.

Everything runs on this machine as separate processes: the PostgreSQL and Redis servers from the
OS packages (``tests.cluster.services``), the api-server, scheduler, dag-processor and triggerer,
and workers ``w1`` and ``w2`` (``airflow celery worker``), both consuming the default queue. The
object store both workers reach is a shared local directory (``file://``), as an NFS mount would
be. Every process is stopped by PID (its process group) when the package's tests end, whatever
failed, and the teardown checks that none of them, nor any child, is left.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import ExitStack, closing, suppress
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.conftest import REPO_ROOT
from tests.e2e.cluster import AirflowCluster, cluster_env
from tests.emulator_control import EmulatorProcess

from .services import postgres_server, redis_server

EXAMPLE_DAGS = REPO_ROOT / "example_dags"
DAG_FILES = ("fireworks_mapped_eval.py", "fireworks_rl_loop.py")
WORKERS = ("w1", "w2")
SCHEDULING = ("api-server", "scheduler", "dag-processor", "triggerer")
#: Figures the tests measure, printed at the end of the session (README "Scaling out").
FIGURES: dict[str, object] = {}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("cluster figures")
        for name, value in FIGURES.items():
            terminalreporter.write_line(f"{name}: {value}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under ``tests/cluster`` carries the ``cluster`` marker."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.cluster)


@dataclass
class CeleryCluster(AirflowCluster):
    """An ``AirflowCluster`` whose metadata database is PostgreSQL."""

    database_url: str = ""
    output_root: Path = Path()

    def query(self, sql: str, *params: object) -> list[tuple[object, ...]]:
        """Read the metadata database (``?`` placeholders, as for SQLite)."""
        import psycopg2  # the ``cluster`` extra; ``make test`` collects this package without it

        with closing(psycopg2.connect(self.database_url)) as conn, conn.cursor() as cursor:
            cursor.execute(sql.replace("?", "%s"), params)
            return [tuple(row) for row in cursor.fetchall()]

    def worker_pid(self, name: str) -> int:
        return self.processes[name].pid


def _process_tree(pids: list[int]) -> list[psutil.Process]:
    found = []
    for pid in pids:
        try:
            process = psutil.Process(pid)
            found += [process, *process.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
    return found


def _alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for process in processes:
        with suppress(psutil.NoSuchProcess):
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
    return alive


@pytest.fixture(scope="package")
def celery_cluster(
    emulator_process: EmulatorProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CeleryCluster]:
    """PostgreSQL, Redis, the four Airflow components and two Celery workers, until the tests end."""
    dags_folder = tmp_path_factory.mktemp("cluster-dags")
    for name in DAG_FILES:
        shutil.copy(EXAMPLE_DAGS / name, dags_folder)
    shutil.copytree(EXAMPLE_DAGS / "data", dags_folder / "data")
    output_root = tmp_path_factory.mktemp("cluster-shared-storage")
    home = tmp_path_factory.mktemp("airflow-cluster")
    started = time.monotonic()
    with ExitStack() as stack:
        database_url = stack.enter_context(postgres_server())
        broker_url = stack.enter_context(redis_server())
        connection = {
            "conn_type": "fireworks",
            "host": emulator_process.url,
            "password": emulator_process.api_key,
        }
        env = cluster_env(
            home,
            dags_folder,
            {
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database_url.replace(
                    "postgresql://", "postgresql+psycopg2://"
                ),
                "AIRFLOW__CELERY__BROKER_URL": broker_url,
                "AIRFLOW__CELERY__RESULT_BACKEND": database_url.replace(
                    "postgresql://", "db+postgresql+psycopg2://"
                ),
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
                "AIRFLOW__CORE__PARALLELISM": "8",
                "AIRFLOW_CONN_FIREWORKS_DEFAULT": json.dumps(connection),
                # Every wait of the example DAGs runs in the triggerer.
                "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": "True",
                # Only the runs a test triggers.
                "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
                # A killed shard is retried; retries also absorb apache/airflow#72716 (see the README).
                "AIRFLOW__CORE__DEFAULT_TASK_RETRIES": "2",
                "AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY": "1",
                "FIREWORKS_OUTPUT_ROOT": output_root.as_uri(),
                "PYTHONPATH": os.pathsep.join(
                    [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
                ),
            },
        )
        cluster = CeleryCluster(home=home, env=env, database_url=database_url, output_root=output_root)

        def stop_everything() -> None:
            # A task's supervisor starts its own session, out of reach of the worker's process group:
            # stop the groups, then every process of the trees seen before, by PID.
            tree = _process_tree([p.pid for p in cluster.processes.values()])
            cluster.stop()
            left = _alive(tree)
            for process in left:
                with suppress(psutil.NoSuchProcess):
                    process.terminate()
            for process in psutil.wait_procs(left, timeout=10)[1]:
                with suppress(psutil.NoSuchProcess):
                    process.kill()
            psutil.wait_procs(left, timeout=10)
            assert not _alive(tree), f"processes left after stopping the cluster: {_alive(tree)}"

        stack.callback(stop_everything)
        cluster.cli("db", "migrate", timeout=300)
        for name in SCHEDULING:
            cluster.start_component(name)
        for worker in WORKERS:
            cluster.start_component(
                worker,
                *("celery", "worker", "--celery-hostname", f"{worker}@%h", "--queues", "default"),
                *("--concurrency", "2", "--skip-serve-logs", "--pid", str(home / f"{worker}.pid")),
                env={
                    "FIREWORKS_CLUSTER_WORKER": worker,
                    "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.cluster.worker_hostname.worker_hostname",
                },
            )
        for name in DAG_FILES:
            cluster.wait_for_dag(name.removesuffix(".py"))
        _wait_for_workers(cluster)
        FIGURES["cluster start-up s (PostgreSQL, Redis, db migrate, 6 components)"] = round(
            time.monotonic() - started, 1
        )
        yield cluster


def _wait_for_workers(cluster: CeleryCluster, timeout_s: float = 120) -> None:
    """Block until both Celery workers say they are ready (connected to the broker)."""

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        cluster.check_alive()
        logs = "".join((cluster.home / f"{worker}.log").read_text(errors="replace") for worker in WORKERS)
        if logs.count(" ready.") >= len(WORKERS):
            return
        time.sleep(1)
    raise TimeoutError(f"the Celery workers did not become ready in {timeout_s}s; see {cluster.home}/w*.log")
