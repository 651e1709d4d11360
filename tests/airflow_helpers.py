"""Run a DAG file with ``dag.test()`` on Airflow 3.3 and read back task states and XComs.

``dag.test()`` in Airflow 3.3 only runs DAGs whose serialized form is in the metadata database
(it fails with "dag is not serialized" otherwise), and it only syncs the configured DAGs folder.
``run_dag_file`` therefore parses the file into a DagBag, writes it to the database under the
``dags-folder`` bundle (the one ``dag.test()`` looks in), then runs it. Deferred tasks run their
trigger inline in the same process, so connections come from ``AIRFLOW_CONN_*`` variables (the
``fireworks_conn_env`` fixture).

This uses Airflow internals (``sync_bag_to_db``, ``DagBundlesManager``); it is pinned to 3.3.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.models.dagrun import DagRun

BUNDLE_NAME = "dags-folder"
TESTS_DAGS = Path(__file__).resolve().parent / "dags"


def ensure_db() -> None:
    """Create the metadata tables once per database (about 1.5 s the first time)."""
    from airflow import settings
    from airflow.utils import db
    from sqlalchemy import inspect

    if settings.engine is None or not inspect(settings.engine).has_table("dag_version"):
        db.resetdb()


def load_dag_file(path: str | Path, dag_id: str) -> Any:
    """Parse ``path``, serialize its DAGs into the metadata DB, and return the DAG ``dag_id``."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"DAG file {path} does not exist")
    ensure_db()
    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(dag_folder=str(path), bundle_path=path.parent, bundle_name=BUNDLE_NAME)
    if bag.import_errors:
        raise RuntimeError(f"DAG file {path} failed to import: {bag.import_errors}")
    if dag_id not in bag.dags:
        raise KeyError(f"DAG {dag_id!r} not found in {path}; found {sorted(bag.dags)}")
    sync_bag_to_db(bag, BUNDLE_NAME, None)
    return bag.dags[dag_id]


def run_dag_file(
    path: str | Path, dag_id: str, conf: dict[str, Any] | None = None, logical_date: Any = None
) -> DagRun:
    """Parse, serialize and run ``dag_id`` from ``path`` with ``dag.test()``; return the DagRun.

    Read the outcome with ``dag_run.state``, ``task_states(dag_run)`` and ``xcom(dag_run, ...)``.
    Give ``logical_date`` (a datetime) to run a given scheduled day.
    """
    dag = load_dag_file(path, dag_id)
    if logical_date is None:
        return dag.test(run_conf=conf)
    return dag.test(run_conf=conf, logical_date=logical_date)


def task_states(dag_run: DagRun) -> dict[str, str | None]:
    """``{task_id: state}`` for every task instance of the run (mapped ones as ``task_id[i]``)."""
    states: dict[str, str | None] = {}
    for ti in dag_run.get_task_instances():
        name = ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"
        states[name] = str(ti.state) if ti.state is not None else None
    return states


def try_numbers(dag_run: DagRun) -> dict[str, int]:
    """``{task_id: try_number}`` for every task instance of the run (mapped ones as ``task_id[i]``)."""
    return {
        (ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"): ti.try_number
        for ti in dag_run.get_task_instances()
    }


def xcom(dag_run: DagRun, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
    """The XCom value a task of the run pushed under ``key`` (None when absent)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        row = session.scalars(
            select(XComModel).where(
                XComModel.dag_id == dag_run.dag_id,
                XComModel.run_id == dag_run.run_id,
                XComModel.task_id == task_id,
                XComModel.key == key,
                XComModel.map_index == map_index,
            )
        ).first()
        return XComModel.deserialize_value(row) if row is not None else None


class RecordingTaskInstance:
    """The part of a task instance operators use in ``execute``: XCom pushes, recorded in ``xcoms``."""

    def __init__(self, task_id: str = "task", try_number: int = 1) -> None:
        self.task_id = task_id
        self.try_number = try_number
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = value


class MemoryTaskStateStore:
    """In-memory stand-in for ``context["task_state_store"]`` (kept across a task's retries)."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def set(self, key: str, value: Any, *, retention: Any = None) -> None:
        self.values[key] = value

    def delete(self, key: str) -> None:
        self.values.pop(key, None)


def task_context(**extra: Any) -> dict[str, Any]:
    """A minimal context for calling ``operator.execute`` directly in a test."""
    return {
        "ti": RecordingTaskInstance(),
        "task_state_store": MemoryTaskStateStore(),
        "params": {},
        **extra,
    }


async def run_deferred(operator: Any, context: dict[str, Any]) -> Any:
    """Call ``execute``; it must defer. Run the trigger for real, as the triggerer would (rebuilt
    from ``serialize()``), and resume the operator with the event, as often as it defers again
    (a wake-up from zero, then a hotload wait). Returns what it returns in the end."""
    from airflow.sdk.exceptions import TaskDeferred
    from airflow.serialization.serialized_objects import BaseSerialization

    try:
        operator.execute(context)
    except TaskDeferred as first:
        deferred: TaskDeferred | None = first
        while deferred is not None:
            classpath, kwargs = deferred.trigger.serialize()
            stored = BaseSerialization.serialize(kwargs)
            module, _, name = classpath.rpartition(".")
            trigger = getattr(importlib.import_module(module), name)(**BaseSerialization.deserialize(stored))
            event = await trigger.run().asend(None)
            resume = getattr(operator, deferred.method_name)
            try:
                return resume(context, event=event.payload, **(deferred.kwargs or {}))
            except TaskDeferred as again:
                deferred = again
    raise AssertionError(f"{type(operator).__name__}.execute() returned without deferring")
