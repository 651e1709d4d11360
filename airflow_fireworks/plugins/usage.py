"""What the operators record for the Fireworks page: who created a deployment, and GPU time.

- **Provenance.** A deployment created by ``FireworksCreateDeploymentOperator`` carries the DAG,
  run and task that created it as annotations (``CREATED_BY_*``). They are added to the config
  only when the task is about to create the deployment, so the next day's reconcile never sees
  them as drift (``api.drift`` compares only the annotations a config asks for).
- **Usage.** A task that used a deployment or a trainer job pushes one XCom under
  ``USAGE_XCOM_KEY``: the resource, the task, and an estimate of the GPU time it spent
  (replicas x accelerators per replica x wall time). The page reads these rows back, which also
  tells which run last touched each resource and gives trainer jobs (no annotations) a creator.

Recording usage never fails a task: a failed look-up is logged and the estimate left out.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow_fireworks.api.errors import FireworksError

if TYPE_CHECKING:
    from airflow_fireworks.api import DeploymentConfig, DeploymentInfo, TrainerJobInfo
    from airflow_fireworks.hooks.fireworks import FireworksHook

log = logging.getLogger(__name__)

USAGE_XCOM_KEY = "fireworks_usage"
USAGE_FORMAT = "airflow-fireworks/usage/v1"
ANNOTATION_PREFIX = "airflow-fireworks/"
CREATED_BY_DAG = f"{ANNOTATION_PREFIX}created-by-dag"
CREATED_BY_RUN = f"{ANNOTATION_PREFIX}created-by-run"
CREATED_BY_TASK = f"{ANNOTATION_PREFIX}created-by-task"
CREATED_AT = f"{ANNOTATION_PREFIX}created-at"
GPU_ESTIMATE = "replicas x accelerators per replica x wall time"


def mapping(value: Any) -> Mapping[str, Any]:
    """``value`` when it is a mapping, else an empty one (for optional objects of a response)."""
    return value if isinstance(value, Mapping) else {}


def _int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isdigit():  # protobuf JSON may quote 64-bit integers
        return int(value)
    return None


def task_provenance(context: Mapping[str, Any]) -> dict[str, Any]:
    """The DAG, run and task of ``context`` (None for what a bare test context lacks)."""
    ti = context.get("ti")
    return {
        "dag_id": getattr(ti, "dag_id", None) or getattr(context.get("dag"), "dag_id", None),
        "run_id": getattr(ti, "run_id", None) or context.get("run_id"),
        "task_id": getattr(ti, "task_id", None),
        "map_index": getattr(ti, "map_index", -1),
        "try_number": getattr(ti, "try_number", None),
    }


def creation_annotations(context: Mapping[str, Any]) -> dict[str, str]:
    """The ``CREATED_BY_*`` annotations of the task in ``context`` (only the known ones)."""
    where = task_provenance(context)
    values = {
        CREATED_BY_DAG: where["dag_id"],
        CREATED_BY_RUN: where["run_id"],
        CREATED_BY_TASK: where["task_id"],
        CREATED_AT: datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return {key: str(value) for key, value in values.items() if value is not None}


def with_creation_annotations(config: DeploymentConfig, context: Mapping[str, Any]) -> DeploymentConfig:
    """``config`` plus the creator's annotations (annotations the DAG author set win)."""
    merged = {**creation_annotations(context), **(config.annotations or {})}
    return dataclasses.replace(config, annotations=merged)


def creator(annotations: Any) -> dict[str, str] | None:
    """The ``CREATED_BY_*`` annotations read back (None when a deployment has none)."""
    if not isinstance(annotations, Mapping) or CREATED_BY_DAG not in annotations:
        return None
    keys = {"dag_id": CREATED_BY_DAG, "run_id": CREATED_BY_RUN, "task_id": CREATED_BY_TASK, "at": CREATED_AT}
    return {name: str(annotations[key]) for name, key in keys.items() if key in annotations}


def gpu_time(
    replicas: int | None, accelerators: int | None, wall_s: float | None, accelerator_type: str | None
) -> dict[str, Any]:
    """The estimate ``replicas x accelerators x wall_s`` (``gpu_s`` None when a factor is unknown)."""
    known = replicas is not None and accelerators is not None and wall_s is not None
    return {
        "replicas": replicas,
        "accelerators_per_replica": accelerators,
        "accelerator_type": accelerator_type,
        "wall_s": round(wall_s, 3) if wall_s is not None else None,
        "gpu_s": round(replicas * accelerators * wall_s, 3) if known else None,  # type: ignore[operator]
        "estimate": GPU_ESTIMATE,
    }


def deployment_gpu_time(info: DeploymentInfo, wall_s: float | None) -> dict[str, Any]:
    """GPU time of ``wall_s`` seconds on ``info``'s current replicas."""
    raw = info.raw
    kind = raw.get("acceleratorType")
    return gpu_time(
        info.replica_count, _int(raw.get("acceleratorCount")), wall_s, kind if isinstance(kind, str) else None
    )


def trainer_gpu_time(info: TrainerJobInfo, wall_s: float | None) -> dict[str, Any]:
    """GPU time of ``wall_s`` seconds on a trainer job (nodes x accelerators per node)."""
    raw = info.raw
    training = mapping(raw.get("trainingConfig"))
    kind = training.get("acceleratorType")
    nodes = _int(raw.get("nodeCount")) or 1
    return gpu_time(
        nodes, _int(training.get("acceleratorCount")), wall_s, kind if isinstance(kind, str) else None
    )


def _aware(value: Any) -> datetime | None:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def task_wall_s(context: Mapping[str, Any], not_before: Any = None) -> float | None:
    """Seconds since the task instance started, or since ``not_before`` (a datetime or an RFC 3339
    time, such as a resource's ``createTime``) when later; None when the context does not say."""
    started = _aware(getattr(context.get("ti"), "start_date", None))
    if started is None:
        return None
    created = _aware(not_before)
    if created is not None and created > started:
        started = created
    return max(0.0, (datetime.now(UTC) - started).total_seconds())


def usage_record(
    context: Mapping[str, Any],
    *,
    conn_id: str,
    kind: str,
    resource_id: str,
    action: str,
    gpu: Mapping[str, Any] | None,
    manifest_uri: str | None = None,
) -> dict[str, Any]:
    """The JSON-safe usage row of one task on one resource."""
    return {
        "format": USAGE_FORMAT,
        "conn_id": conn_id,
        "kind": kind,
        "resource_id": resource_id,
        "action": action,
        **task_provenance(context),
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "gpu_time": dict(gpu) if gpu is not None else None,
        "manifest_uri": manifest_uri,
    }


def push_usage(context: Mapping[str, Any], record: Mapping[str, Any]) -> None:
    """Push ``record`` to the task's XCom under ``USAGE_XCOM_KEY`` (skipped by a context without
    XCom, such as a script calling ``execute`` with a bare task instance)."""
    push = getattr(context.get("ti"), "xcom_push", None)
    if push is not None:
        push(key=USAGE_XCOM_KEY, value=dict(record))


def measure_deployment(
    hook: FireworksHook,
    deployment_id: str,
    wall_s: float | None,
    context: Mapping[str, Any] | None = None,
) -> dict[str, Any] | None:
    """GPU time on the deployment's current replicas (one GET) over ``wall_s``, or with
    ``context`` over the task's run time since the deployment existed; None when unreadable."""
    try:
        info = hook.get_deployment(deployment_id)
    except FireworksError as err:
        log.warning("GPU time of %s not estimated: %s", deployment_id, err)
        return None
    if info is None:
        return None
    if context is not None:
        wall_s = task_wall_s(context, not_before=info.raw.get("createTime"))
    return {"deployment_id": deployment_id, **deployment_gpu_time(info, wall_s)}


def record_deployment_usage(
    hook: FireworksHook,
    context: Mapping[str, Any],
    deployment_id: str,
    *,
    action: str,
    wall_s: float | None = None,
    gpu: Mapping[str, Any] | None = None,
    manifest_uri: str | None = None,
) -> dict[str, Any]:
    """Push the usage row of this task on a deployment; ``gpu`` (else measured now over ``wall_s``,
    else over the task's run time since the deployment was created) is the GPU-time estimate."""
    if gpu is None:
        gpu = measure_deployment(hook, deployment_id, wall_s, None if wall_s is not None else context)
    record = usage_record(
        context,
        conn_id=hook.fireworks_conn_id,
        kind="deployment",
        resource_id=deployment_id,
        action=action,
        gpu=gpu,
        manifest_uri=manifest_uri,
    )
    push_usage(context, record)
    return record


def record_trainer_usage(
    hook: FireworksHook, context: Mapping[str, Any], job_id: str, *, action: str
) -> dict[str, Any]:
    """Push the usage row of this task on a trainer job (GPU time over the task's run time)."""
    gpu = None
    try:
        info = hook.get_trainer_manager().try_get(job_id)
    except FireworksError as err:
        log.warning("GPU time of trainer job %s not estimated: %s", job_id, err)
        info = None
    if info is not None:
        gpu = trainer_gpu_time(info, task_wall_s(context, not_before=info.create_time))
    record = usage_record(
        context, conn_id=hook.fireworks_conn_id, kind="trainer", resource_id=job_id, action=action, gpu=gpu
    )
    push_usage(context, record)
    return record
