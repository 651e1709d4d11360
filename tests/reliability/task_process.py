"""Run one operator's ``execute`` in its own process, so that a test can kill it with SIGKILL.

``python -m tests.reliability.task_process '<json spec>'`` with the spec
``{"operator": "sample" | "create" | "hotload", "kwargs": {...}, "try_number": 1, "deferred": false}``.
The connection comes from the environment (``AIRFLOW_CONN_FIREWORKS_DEFAULT``), as in a worker.
The result is printed as one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]

OPERATORS = {
    "sample": "airflow_fireworks.operators.sampling.FireworksSampleOperator",
    "create": "airflow_fireworks.operators.deployment.FireworksCreateDeploymentOperator",
    "hotload": "airflow_fireworks.operators.deployment.FireworksHotloadOperator",
}


def spawn(spec: dict[str, Any]) -> subprocess.Popen[bytes]:
    """Start the task process (environment inherited from the test process)."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.reliability.task_process", json.dumps(spec)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def build(spec: dict[str, Any]) -> Any:
    """The operator named by ``spec``."""
    import importlib

    module, _, name = OPERATORS[spec["operator"]].rpartition(".")
    return getattr(importlib.import_module(module), name)(task_id=spec["operator"], **spec["kwargs"])


def run(spec: dict[str, Any]) -> Any:
    """Execute the operator as a worker would (deferring to an inline trigger when asked)."""
    from tests.airflow_helpers import run_deferred, task_context

    operator = build(spec)
    context = task_context()
    context["ti"].try_number = spec.get("try_number", 1)
    if spec.get("deferred"):
        return asyncio.run(run_deferred(operator, context))
    return operator.execute(context)


def main() -> None:
    print(json.dumps(run(json.loads(sys.argv[1]))), flush=True)


if __name__ == "__main__":
    main()
