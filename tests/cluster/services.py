"""PostgreSQL and Redis servers from the OS packages, each run as a private process on a free
loopback port (data in a temporary directory), stopped by PID when the context exits.

``scripts/cluster/install.sh`` (called by ``make test-cluster``) installs them with apt-get.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from airflow_fireworks.testing import free_port

POSTGRES_ROOT = Path("/usr/lib/postgresql")
#: A throw-away test database: loopback only, no durability, room for every Airflow process's pool.
SERVER_OPTIONS = [
    *("-c", "listen_addresses=127.0.0.1", "-c", "max_connections=300", "-c", "fsync=off"),
    *("-c", "synchronous_commit=off", "-c", "full_page_writes=off"),
]


def _stop(process: subprocess.Popen[bytes], signum: int, timeout_s: float = 20) -> None:
    """Send ``signum`` to the process group of ``process``; SIGKILL it if it outlives ``timeout_s``."""
    if process.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signum)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def postgres_bin() -> Path:
    """The ``bin`` directory of the newest PostgreSQL server installed from the OS packages."""
    found = sorted(POSTGRES_ROOT.glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name))
    if not found:
        raise RuntimeError(
            "no PostgreSQL server under /usr/lib/postgresql: run scripts/cluster/install.sh "
            "(or `make test-cluster`) as root to apt-get install it"
        )
    return found[-1].parent


@contextmanager
def postgres_server(database: str = "airflow") -> Iterator[str]:
    """A fresh PostgreSQL cluster with database ``database``; yields its ``postgresql://`` URL.

    As root the server runs as the ``postgres`` OS user (it refuses to run as root).
    """
    import psycopg2  # the ``cluster`` extra; ``make test`` collects this package without it

    bindir = postgres_bin()
    root = Path(tempfile.mkdtemp(prefix="fireworks-cluster-pg-"))
    user = "postgres" if os.geteuid() == 0 else None
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    port = free_port()
    process: subprocess.Popen[bytes] | None = None
    try:
        subprocess.run(
            [str(bindir / "initdb"), "-D", str(root / "data"), "-U", "airflow", "--auth=trust", "--no-sync"],
            user=user,
            check=True,
            capture_output=True,
            cwd=root,
        )
        log = open(root / "postgres.log", "wb")  # noqa: SIM115 - closed when the process ends
        process = subprocess.Popen(
            [
                str(bindir / "postgres"),
                "-D",
                str(root / "data"),
                "-p",
                str(port),
                "-k",
                str(root),
                *SERVER_OPTIONS,
            ],
            user=user,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=root,
        )
        admin_url = f"postgresql://airflow@127.0.0.1:{port}/postgres"
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"postgres exited with {process.returncode}; see {root}/postgres.log")
            try:
                conn = psycopg2.connect(admin_url, connect_timeout=2)
                break
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{database}"')
        conn.close()
        yield f"postgresql://airflow@127.0.0.1:{port}/{database}"
    finally:
        if process is not None:
            _stop(process, signal.SIGINT)  # SIGINT: fast shutdown, without waiting for clients
        shutil.rmtree(root, ignore_errors=True)


def pg_dump(url: str) -> str:
    """Every row of every table of the database at ``url`` as SQL text (``pg_dump --data-only``)."""
    result = subprocess.run(
        [str(postgres_bin() / "pg_dump"), "--data-only", "--no-owner", url],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return result.stdout


@contextmanager
def redis_server() -> Iterator[str]:
    """A Redis server without persistence on a free loopback port; yields its ``redis://`` URL."""
    executable = shutil.which("redis-server")
    if executable is None:
        raise RuntimeError(
            "redis-server not found: run scripts/cluster/install.sh (or `make test-cluster`) as root"
        )
    root = Path(tempfile.mkdtemp(prefix="fireworks-cluster-redis-"))
    port = free_port()
    log = open(root / "redis.log", "wb")  # noqa: SIM115 - closed when the process ends
    process = subprocess.Popen(
        [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=root,
    )
    try:
        deadline = time.monotonic() + 30
        while b"Ready to accept connections" not in (root / "redis.log").read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start; see {root}/redis.log")
            time.sleep(0.1)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        _stop(process, signal.SIGTERM)
        shutil.rmtree(root, ignore_errors=True)
