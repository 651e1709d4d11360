"""What the Fireworks page shows and does, without the web layer.

The remote state comes from the project's own clients (``FireworksHook``: its
``DeploymentManager`` and ``TrainerJobManager``); who created or used each resource and the GPU
time of each task come from the usage rows the operators pushed to XCom (``usage``). Every answer
is built field by field from typed records: the API key, the connection's extras and the raw
server responses never appear in it.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from functools import cached_property
from typing import Any

from airflow_fireworks.api import DeploymentInfo, FireworksError, FireworksValidationError, TrainerJobInfo
from airflow_fireworks.hooks.fireworks import CONN_TYPE, FireworksConnectionParams, FireworksHook
from airflow_fireworks.plugins import usage
from airflow_fireworks.plugins.usage import mapping
from airflow_fireworks.sampling.run import MANIFEST_FORMAT

#: Usage rows read per request (newest first): enough for weeks of daily runs, bounded work.
MAX_USAGE_ROWS = 2000
#: Timeline keys the chart draws, when a manifest has them.
CHART_KEYS = ("t_s", "tokens_per_s", "window", "in_flight", "prefill_queue_s")


class PageError(Exception):
    """A request the page cannot answer: ``status`` is the HTTP status, the message is safe to show."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ServerFireworksHook(FireworksHook):
    """``FireworksHook`` reading its connection as the api-server reads connections (secrets
    backends, then the metadata database); everything else is the hook's own."""

    @cached_property
    def connection_params(self) -> FireworksConnectionParams:
        from airflow.exceptions import AirflowNotFoundException
        from airflow.models.connection import Connection

        try:
            conn = Connection.get_connection_from_secrets(self.fireworks_conn_id)
        except AirflowNotFoundException:
            raise PageError(404, f"connection {self.fireworks_conn_id!r} does not exist") from None
        if conn.conn_type != CONN_TYPE:
            raise PageError(400, f"connection {self.fireworks_conn_id!r} is not of type {CONN_TYPE!r}")
        return FireworksConnectionParams.from_connection(conn)


def safe_message(err: BaseException, hook: FireworksHook) -> str:
    """``err``'s message with the connection's key blanked out (errors never carry it; belt and braces)."""
    text = str(err)
    key = hook.__dict__.get("connection_params")
    if isinstance(key, FireworksConnectionParams) and key.api_key and key.api_key in text:
        text = text.replace(key.api_key, "***")
    return text


@contextmanager
def _remote(hook: FireworksHook) -> Iterator[None]:
    """Fireworks errors as page errors (400 for a malformed connection, 502 for the service's
    answer); the hook's session closed in every case."""
    try:
        yield
    except FireworksValidationError as err:
        raise PageError(400, safe_message(err, hook)) from None
    except FireworksError as err:
        raise PageError(502, f"Fireworks answered: {safe_message(err, hook)}") from None
    finally:
        hook.close()


def connection_ids() -> list[str]:
    """The ``fireworks`` connections in the metadata database (environment ones are not listable)."""
    from airflow.models.connection import Connection
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return sorted(
            session.scalars(select(Connection.conn_id).where(Connection.conn_type == CONN_TYPE)).all()
        )


def usage_rows(conn_id: str, dag_ids: Collection[str] | None) -> list[dict[str, Any]]:
    """The usage rows of ``conn_id``, newest first, from DAGs in ``dag_ids`` (None: any DAG)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    query = select(XComModel).where(XComModel.key == usage.USAGE_XCOM_KEY)
    if dag_ids is not None:
        if not dag_ids:
            return []
        query = query.where(XComModel.dag_id.in_(list(dag_ids)))
    query = query.order_by(XComModel.timestamp.desc()).limit(MAX_USAGE_ROWS)
    rows: list[dict[str, Any]] = []
    with create_session() as session:
        for row in session.scalars(query):
            value = XComModel.deserialize_value(row)
            if isinstance(value, str):
                value = json.loads(value)
            if not isinstance(value, Mapping) or value.get("format") != usage.USAGE_FORMAT:
                continue
            if value.get("conn_id") != conn_id:
                continue
            rows.append(
                {
                    **value,
                    # where the row lives is authoritative over what it says
                    "dag_id": row.dag_id,
                    "run_id": row.run_id,
                    "task_id": row.task_id,
                    "map_index": row.map_index,
                }
            )
    return rows


def _task(row: Mapping[str, Any]) -> dict[str, Any]:
    gpu = mapping(row.get("gpu_time"))
    return {
        "dag_id": row["dag_id"],
        "run_id": row["run_id"],
        "task_id": row["task_id"],
        "map_index": row["map_index"],
        "try_number": row.get("try_number"),
        "operator": row.get("action"),
        "recorded_at": row.get("recorded_at"),
        "replicas": gpu.get("replicas"),
        "accelerators_per_replica": gpu.get("accelerators_per_replica"),
        "accelerator_type": gpu.get("accelerator_type"),
        "wall_s": gpu.get("wall_s"),
        "gpu_s": gpu.get("gpu_s"),
        "has_chart": bool(row.get("manifest_uri")),
    }


def _who(row: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {k: row.get(k) for k in ("dag_id", "run_id", "task_id", "recorded_at")}


def _touches(rows: Iterable[Mapping[str, Any]], kind: str, resource_id: str) -> dict[str, Any]:
    mine = [r for r in rows if r.get("kind") == kind and r.get("resource_id") == resource_id]
    tasks = [_task(r) for r in mine]
    known = [t["gpu_s"] for t in tasks if isinstance(t["gpu_s"], int | float)]
    return {
        "last_touched_by": _who(mine[0] if mine else None),
        "first_seen_by": _who(mine[-1] if mine else None),
        "tasks": tasks,
        "gpu_s_total": round(sum(known), 3) if known else None,
    }


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def deployment_row(hook: FireworksHook, info: DeploymentInfo, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One deployment: state, replicas, served snapshot per replica, provenance, GPU time."""
    raw = info.raw
    hot_load = raw.get("enableHotLoad") is True
    replicas: list[dict[str, Any]] = []
    hotload_error = None
    if hot_load and info.base_model and info.replica_count:
        try:
            status = hook.hotload_status(info.deployment_id, info.base_model)
            replicas = [
                {
                    "identity": r.current_snapshot_identity,
                    "stage": r.stage,
                    "ready": r.readiness,
                    "target": r.target_snapshot_identity,
                }
                for r in status.replicas
            ]
        except FireworksError as err:
            hotload_error = safe_message(err, hook)
    touches = _touches(rows, "deployment", info.deployment_id)
    created = usage.creator(raw.get("annotations"))
    return {
        "kind": "deployment",
        "id": info.deployment_id,
        "state": info.state.value,
        "availability": info.availability().value,
        "status_message": info.status_message,
        "base_model": info.base_model,
        "replica_count": info.replica_count,
        "desired_replica_count": info.desired_replica_count,
        "min_replica_count": info.min_replica_count,
        "max_replica_count": info.max_replica_count,
        "accelerator_type": raw.get("acceleratorType")
        if isinstance(raw.get("acceleratorType"), str)
        else None,
        "accelerator_count": _int_or_none(raw.get("acceleratorCount")),
        "hot_load": hot_load,
        "hot_load_trainer_job": info.hot_load_trainer_job,
        "replicas": replicas,
        "hotload_error": hotload_error,
        "created_by": created,
        "created_by_source": "annotations" if created else None,
        **touches,
        "console_url": hook.deployment_console_url(info.deployment_id),
    }


def trainer_row(hook: FireworksHook, info: TrainerJobInfo, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One trainer job: state, size, provenance (from the usage rows: trainer jobs carry no
    annotations), GPU time."""
    raw = info.raw
    training = mapping(raw.get("trainingConfig"))
    touches = _touches(rows, "trainer", info.job_id)
    return {
        "kind": "trainer",
        "id": info.job_id,
        "state": info.state.value,
        "status_message": info.status_message,
        "display_name": info.display_name,
        "base_model": info.base_model,
        "node_count": _int_or_none(raw.get("nodeCount")),
        "accelerator_type": training.get("acceleratorType")
        if isinstance(training.get("acceleratorType"), str)
        else None,
        "accelerator_count": _int_or_none(training.get("acceleratorCount")),
        "create_time": info.create_time,
        "hot_load_deployment_id": info.hot_load_deployment_id,
        "created_by": touches["first_seen_by"],
        "created_by_source": "usage" if touches["first_seen_by"] else None,
        **touches,
        "console_url": hook.trainer_console_url(info.job_id),
    }


def overview(conn_id: str, dag_ids: Collection[str] | None) -> dict[str, Any]:
    """Every deployment and trainer job of the connection's account, with provenance and GPU time."""
    hook = ServerFireworksHook(conn_id)
    rows = usage_rows(conn_id, dag_ids)
    with _remote(hook):
        deployments = [deployment_row(hook, info, rows) for info in hook.list_deployments()]
        trainer_error = None
        try:
            trainers = [trainer_row(hook, info, rows) for info in hook.get_trainer_manager().list_jobs()]
        except FireworksError as err:  # a gateway without trainer jobs still shows deployments
            trainers, trainer_error = [], safe_message(err, hook)
    return {
        "connection_id": conn_id,
        "base_url": hook.connection_params.base_url,
        "deployments": deployments,
        "trainer_jobs": trainers,
        "trainer_error": trainer_error,
        "gpu_estimate": usage.GPU_ESTIMATE,
    }


def scale_to_zero(conn_id: str, deployment_id: str) -> dict[str, Any]:
    """Scale the deployment to zero replicas; its new state."""
    hook = ServerFireworksHook(conn_id)
    with _remote(hook):
        if hook.get_deployment(deployment_id) is None:
            raise PageError(404, f"deployment {deployment_id!r} does not exist")
        info = hook.scale_to_zero(deployment_id)
    return {
        "deployment_id": deployment_id,
        "state": info.state.value,
        "min_replica_count": info.min_replica_count or 0,
        "max_replica_count": info.max_replica_count or 0,
    }


def delete(conn_id: str, kind: str, resource_id: str) -> dict[str, Any]:
    """Delete a deployment or a trainer job; ``deleted`` is False when it was already gone."""
    hook = ServerFireworksHook(conn_id)
    with _remote(hook):
        if kind == "deployment":
            deleted = hook.delete_deployment(resource_id)
        else:
            deleted = hook.get_trainer_manager().delete(resource_id)
    return {"kind": kind, "id": resource_id, "deleted": deleted}


def chart(
    conn_id: str, dag_ids: Collection[str] | None, dag_id: str, run_id: str, task_id: str, map_index: int
) -> dict[str, Any]:
    """The sampling timeline of one task, from the manifest its usage row points at."""
    from airflow.sdk import ObjectStoragePath

    matches = [
        r
        for r in usage_rows(conn_id, dag_ids)
        if (r["dag_id"], r["run_id"], r["task_id"], r["map_index"]) == (dag_id, run_id, task_id, map_index)
        and r.get("manifest_uri")
    ]
    if not matches:
        raise PageError(404, f"no sampling manifest recorded for {dag_id}/{run_id}/{task_id}[{map_index}]")
    uri = str(matches[0]["manifest_uri"])
    try:
        manifest = json.loads(ObjectStoragePath(uri).read_text())
    except (OSError, ValueError) as err:
        raise PageError(404, f"cannot read the manifest {uri}: {err}") from None
    if not isinstance(manifest, Mapping) or manifest.get("format") != MANIFEST_FORMAT:
        raise PageError(422, f"{uri} is not a sampling manifest ({MANIFEST_FORMAT})")
    timeline = manifest["timeline"] if isinstance(manifest.get("timeline"), list) else []
    points = [
        {k: p[k] for k in CHART_KEYS if isinstance(p.get(k), int | float)}
        for p in timeline
        if isinstance(p, Mapping)
    ]
    return {
        "dag_id": dag_id,
        "run_id": run_id,
        "task_id": task_id,
        "map_index": map_index,
        "manifest_uri": uri,
        "model": manifest.get("model"),
        "throughput": manifest.get("throughput"),
        "gpu_time": manifest.get("gpu_time"),
        "points": points,
        "has_prefill_queue": any("prefill_queue_s" in p for p in points),
    }
