"""RLOR trainer jobs, their checkpoints, promoted models and training shapes (fireworks-trainer-api.md).

States come from timestamps, like deployments: PENDING (waiting for capacity) for
``trainer_placement_s``, CREATING for ``trainer_boot_s``, then RUNNING; the health endpoint answers
200 from ``trainer_health_delay_s`` after RUNNING. An override (FAILED, PAUSED, CANCELLED, ...) set
by the admin endpoints or ``:cancel`` replaces the computed state; ``:resume`` keeps showing it for
``trainer_resume_delay_s`` (the flip is asynchronous; a FAILED job flips at once, as the SDK's
wait gives FAILED no grace) and then boots the job again from PENDING.
DELETE gives DELETING for ``delete_delay_s``, then a ``JOB_STATE_DELETED`` tombstone that stays
readable (checkpoints included) and keeps its id taken.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from airflow_fireworks.emulator.errors import ApiError, invalid
from airflow_fireworks.emulator.resources import (
    ACCELERATOR_TYPES,
    BASE_MODEL_RE,
    DEPLOYMENT_ID_RE,
    REGIONS,
    TRAINER_JOB_RE,
    rfc3339,
    snake,
)
from airflow_fireworks.emulator.settings import Settings

PENDING, CREATING, RUNNING = "JOB_STATE_PENDING", "JOB_STATE_CREATING", "JOB_STATE_RUNNING"
FAILED, CANCELLED, PAUSED, COMPLETED = (
    "JOB_STATE_FAILED",
    "JOB_STATE_CANCELLED",
    "JOB_STATE_PAUSED",
    "JOB_STATE_COMPLETED",
)
DELETING, DELETED, ARCHIVED = "JOB_STATE_DELETING", "JOB_STATE_DELETED", "JOB_STATE_ARCHIVED"
#: States the admin endpoint may set (a job stopped, paused or failed by the platform).
SETTABLE_STATES = frozenset(
    {
        FAILED,
        CANCELLED,
        PAUSED,
        COMPLETED,
        ARCHIVED,
        "JOB_STATE_CANCELLING",
        "JOB_STATE_EARLY_STOPPED",
        "JOB_STATE_EXPIRED",
    }
)
RESUMABLE = frozenset({FAILED, CANCELLED, PAUSED, COMPLETED})
TOMBSTONES = frozenset({DELETED, ARCHIVED})
CHECKPOINT_TYPES = {
    "base": ("CHECKPOINT_TYPE_INFERENCE_BASE", True),
    "merged_base": ("CHECKPOINT_TYPE_INFERENCE_BASE", True),
    "delta": ("CHECKPOINT_TYPE_INFERENCE_ARC_V2", False),
    "lora": ("CHECKPOINT_TYPE_INFERENCE_LORA", True),
}
BUCKET_ROOT = "gs://fireworks-emulator-hot-load"
MAX_INACTIVITY_S = 10800.0
_DURATION_RE = re.compile(r"^(\d+(?:\.\d{1,9})?)s$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_MODEL_ID_RE = re.compile(r"^[a-z0-9-]{1,63}$")
_TOP_FIELDS = frozenset(
    {
        "serviceMode",
        "keepAlive",
        "dataset",
        "trainingConfig",
        "trainerReplicaCount",
        "useReservation",
        "reservationTarget",
        "nodeCount",
        "displayName",
        "hotLoadDeploymentId",
        "extraValues",
        "forwardOnly",
        "purpose",
        "preemptible",
        "managedBy",
        "inactivityTimeout",
        "disableInactivityCleanup",
    }
)
_OUTPUT_ONLY = frozenset(
    {"name", "state", "status", "createTime", "updateTime", "createdBy", "completedTime"}
)
_TRAINING_FIELDS = frozenset(
    {
        "baseModel",
        "loraRank",
        "learningRate",
        "projectionHeadDim",
        "maxContextLength",
        "customImageTag",
        "acceleratorType",
        "acceleratorCount",
        "region",
        "extraArgs",
    }
)
_INFRA_FIELDS = ("acceleratorType", "acceleratorCount", "nodeCount")


def _shape_version(
    shape: str, version: str, context: int, mode: str, validated: bool = True
) -> dict[str, Any]:
    return {
        "name": f"{shape}/versions/{version}",
        "validated": validated,
        "snapshot": {
            "baseModel": "accounts/fireworks/models/qwen3-8b",
            "trainerImageTag": f"trainer-{version}",
            "maxSupportedContextLength": context,
            "nodeCount": 1,
            "deploymentShapeVersion": "accounts/fireworks/deploymentShapes/qwen3-8b-rl/versions/v1",
            "deploymentImageTag": f"serving-{version}",
            "acceleratorType": "NVIDIA_H200_141GB",
            "acceleratorCount": 8,
            "baseModelWeightPrecision": "BF16",
            "trainerShardingScheme": {"pipelineParallelism": 1},
            "trainerMode": mode,
        },
    }


_POLICY = "accounts/fireworks/trainingShapes/qwen3-8b-policy"
_LORA = "accounts/fireworks/trainingShapes/qwen3-8b-lora"
#: The built-in catalogue: shape -> versions, newest first.
TRAINING_SHAPES: dict[str, list[dict[str, Any]]] = {
    _POLICY: [
        _shape_version(_POLICY, "v3", 65536, "POLICY_TRAINER", validated=False),
        _shape_version(_POLICY, "v2", 32768, "POLICY_TRAINER"),
        _shape_version(_POLICY, "v1", 16384, "POLICY_TRAINER"),
    ],
    _LORA: [_shape_version(_LORA, "v1", 32768, "LORA_TRAINER")],
}


def find_shape_version(ref: str) -> dict[str, Any] | None:
    """The catalogue version named by ``ref`` (a version, or a shape: its latest validated version)."""
    shape, _, version = ref.partition("/versions/")
    versions = TRAINING_SHAPES.get(shape, [])
    if version:
        return next((v for v in versions if v["name"] == ref), None)
    return next((v for v in versions if v["validated"]), None)


class TrainerJob:
    """A trainer job's stored fields plus the timestamps its state is derived from."""

    def __init__(self, account_id: str, job_id: str, values: dict[str, Any], settings: Settings) -> None:
        self.job_id = job_id
        self.account_id = account_id
        self.name = f"accounts/{account_id}/rlorTrainerJobs/{job_id}"
        self.values = values
        self.create_wall = self.update_wall = time.time()
        self.override: tuple[str, str, str] | None = None  # (state, code, message)
        self.resume_at: float | None = None
        self.deleting_until: float | None = None
        self.tombstone = DELETED
        self.checkpoints: list[dict[str, Any]] = []
        self.boot(time.monotonic(), settings)

    @property
    def bucket_url(self) -> str:
        """The trainer's hot-load bucket (what a linked deployment reports as ``hotLoadBucketUrl``)."""
        return f"{BUCKET_ROOT}/{self.account_id}/rlorTrainerJobs/{self.job_id}"

    def boot(self, start: float, settings: Settings) -> None:
        """Start (again) from PENDING at monotonic time ``start``."""
        self.pending_until = start + settings.trainer_placement_s
        self.running_at = self.pending_until + settings.trainer_boot_s
        self.healthy_at = self.running_at + settings.trainer_health_delay_s

    def mark_running(self, now: float) -> None:
        """Placement and boot are over: RUNNING and healthy from ``now``."""
        self.pending_until = self.running_at = self.healthy_at = now

    def refresh(self, now: float, settings: Settings) -> None:
        """Apply a resume whose asynchronous flip is due."""
        if self.resume_at is not None and now >= self.resume_at:
            self.override = None
            self.boot(self.resume_at, settings)
            self.resume_at = None

    def state(self, now: float) -> str:
        if self.deleting_until is not None:
            return DELETING if now < self.deleting_until else self.tombstone
        if self.override is not None:
            return self.override[0]
        if now < self.pending_until:
            return PENDING
        return CREATING if now < self.running_at else RUNNING

    def healthy(self, now: float) -> bool:
        return self.state(now) == RUNNING and now >= self.healthy_at

    def render(self, now: float) -> dict[str, Any]:
        """The camelCase RlorTrainerJob resource."""
        state = self.state(now)
        code, message = ("OK", "") if self.override is None else self.override[1:]
        if state in TOMBSTONES:
            code, message = "OK", "deleted; checkpoints are retained"
        body: dict[str, Any] = {"name": self.name, **self.values}
        body.update(
            {
                "state": state,
                "status": {"code": code, "message": message},
                "createTime": rfc3339(self.create_wall),
                "updateTime": rfc3339(self.update_wall),
            }
        )
        return body


class TrainerStore:
    """Every trainer job of the account, the models promoted from their checkpoints, and the
    promotion operations."""

    def __init__(self, settings_source: Callable[[], Settings]) -> None:
        self._settings = settings_source
        self._jobs: dict[str, TrainerJob] = {}
        self.models: dict[str, dict[str, Any]] = {}
        self.operations: dict[str, tuple[float, str]] = {}  # name -> (done at, model name)

    @property
    def settings(self) -> Settings:
        return self._settings()

    def clear(self) -> None:
        self._jobs.clear()
        self.models.clear()
        self.operations.clear()

    def find(self, job_id: str) -> TrainerJob | None:
        job = self._jobs.get(job_id)
        if job is not None:
            job.refresh(time.monotonic(), self.settings)
        return job

    def get(self, job_id: str) -> TrainerJob:
        job = self.find(job_id)
        if job is None:
            raise ApiError(404, f"trainer job '{job_id}' not found")
        return job

    def all(self) -> Iterator[TrainerJob]:
        """Every job (tombstones included), oldest first."""
        for job in sorted(self._jobs.values(), key=lambda j: (j.create_wall, j.job_id)):
            job.refresh(time.monotonic(), self.settings)
            yield job

    def counts_by_state(self) -> dict[str, int]:
        now = time.monotonic()
        counts: dict[str, int] = {}
        for job in self.all():
            state = job.state(now)
            counts[state] = counts.get(state, 0) + 1
        return counts

    # -- create ------------------------------------------------------------------------------

    def create(
        self,
        job_id: str | None,
        body: Any,
        shape: str | None,
        deployment_exists: Callable[[str], bool],
        deployment_id: str | None,
    ) -> TrainerJob:
        """Validate and store a new job (400 bad body or shape, 409 duplicate id or tombstone)."""
        job_id = job_id or str(uuid.uuid4())
        if not DEPLOYMENT_ID_RE.match(job_id):
            raise invalid(
                f"rlorTrainerJobId {job_id!r} is invalid: use 1-63 lower-case letters, digits or '-', "
                "starting and ending with a letter or digit"
            )
        values = self._values(body, shape, deployment_id, deployment_exists)
        if job_id in self._jobs:
            raise ApiError(409, f"trainer job '{job_id}' already exists", "ALREADY_EXISTS")
        job = TrainerJob(self.settings.account_id, job_id, values, self.settings)
        self._jobs[job_id] = job
        return job

    def _values(
        self,
        body: Any,
        shape: str | None,
        deployment_id: str | None,
        deployment_exists: Callable[[str], bool],
    ) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise invalid("request body must be a JSON object (an RlorTrainerJob)")
        unknown = set(body) - _TOP_FIELDS - _OUTPUT_ONLY
        if unknown:
            raise invalid(f"Invalid JSON payload: unknown field '{sorted(unknown)[0]}' in RlorTrainerJob")
        if body.get("serviceMode") is not True:
            raise invalid("field 'serviceMode' must be true: the emulator runs service-mode trainers only")
        training = body.get("trainingConfig")
        if not isinstance(training, dict):
            raise invalid("field 'trainingConfig' is required (an object with baseModel)")
        unknown = set(training) - _TRAINING_FIELDS
        if unknown:
            raise invalid(f"Invalid JSON payload: unknown field 'trainingConfig.{sorted(unknown)[0]}'")
        training = dict(training)
        _check_training(training)
        values = {key: value for key, value in body.items() if key in _TOP_FIELDS}
        values["trainingConfig"] = training
        _check_top(values)
        if shape is not None:
            version = find_shape_version(shape)
            if version is None:
                raise invalid(f"training shape {shape!r} not found (or has no validated version)")
            owned = [k for k in _INFRA_FIELDS if (training if k != "nodeCount" else values).get(k)]
            if owned:
                raise invalid(
                    f"{', '.join(owned)} must not be set with trainingShape (the shape owns the hardware)"
                )
            training["maxContextLength"] = version["snapshot"]["maxSupportedContextLength"]
            values["trainingShape"] = version["name"]
        else:
            training.setdefault("maxContextLength", self.settings.max_context_length)
        if deployment_id is not None:
            if not deployment_exists(deployment_id):
                raise invalid(f"deploymentId {deployment_id!r} not found; create the deployment first")
            if values.setdefault("hotLoadDeploymentId", deployment_id) != deployment_id:
                raise invalid("hotLoadDeploymentId differs from the deploymentId query parameter")
        return values

    # -- lifecycle ---------------------------------------------------------------------------

    def resume(self, job_id: str) -> TrainerJob:
        job = self.get(job_id)
        now = time.monotonic()
        state = job.state(now)
        if job.resume_at is not None:
            return job
        if state not in RESUMABLE:
            raise ApiError(
                400,
                f"trainer job '{job_id}' is {state}; only FAILED, CANCELLED, PAUSED or COMPLETED jobs resume",
                "FAILED_PRECONDITION",
            )
        # The SDK fails a wait on FAILED at once (no grace), so a FAILED job flips synchronously;
        # the others keep their state for ``trainer_resume_delay_s`` (the SDK's 30 s grace covers it).
        job.resume_at = now + (0.0 if state == FAILED else self.settings.trainer_resume_delay_s)
        job.update_wall = time.time()
        return job

    def set_state(self, job_id: str, state: str, code: str, message: str) -> TrainerJob:
        """Admin (and ``:cancel``): the job is stopped, paused or failed by the platform."""
        job = self.get(job_id)
        if job.state(time.monotonic()) in TOMBSTONES | {DELETING}:
            if state != ARCHIVED:
                raise ApiError(400, f"trainer job '{job_id}' is deleted", "FAILED_PRECONDITION")
            job.tombstone = ARCHIVED
            return job
        if state == ARCHIVED:
            raise invalid("only a deleted job can be ARCHIVED; delete it first")
        job.override = (state, code, message)
        job.resume_at = None
        job.update_wall = time.time()
        return job

    def delete(self, job_id: str) -> TrainerJob:
        job = self.get(job_id)
        now = time.monotonic()
        if job.deleting_until is None:
            job.deleting_until = now + self.settings.delete_delay_s
            job.update_wall = time.time()
        return job

    def vanish(self, job_id: str) -> None:
        self.get(job_id)
        del self._jobs[job_id]

    # -- checkpoints and promotion -----------------------------------------------------------

    def save_checkpoint(self, job_id: str, name: Any, checkpoint_type: Any) -> dict[str, Any]:
        """Admin, standing in for the trainer's ``save_weights_for_sampler``: record a snapshot.

        The type follows the SDK's rule when not given: ``base`` first (and always for LoRA jobs),
        ``delta`` afterwards. A delta is relative to the job's previous saved snapshot.
        """
        job = self.get(job_id)
        state = job.state(time.monotonic())
        if state != RUNNING:
            raise ApiError(
                400, f"trainer job '{job_id}' is {state}; only a RUNNING trainer saves", "FAILED_PRECONDITION"
            )
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise invalid("field 'name' must be a snapshot name of letters, digits, '.', '_' or '-'")
        if any(row["name"].endswith(f"/checkpoints/{name}") for row in job.checkpoints):
            raise ApiError(
                409, f"checkpoint '{name}' already exists on trainer job '{job_id}'", "ALREADY_EXISTS"
            )
        lora = bool(job.values["trainingConfig"].get("loraRank"))
        kind = checkpoint_type or ("base" if lora or not job.checkpoints else "delta")
        if kind not in ("base", "delta", "merged_base"):
            raise invalid("field 'checkpoint_type' must be base, delta or merged_base")
        wire, promotable = CHECKPOINT_TYPES["lora" if lora else kind]
        previous = job.checkpoints[-1]["name"].rsplit("/", 1)[-1] if job.checkpoints else None
        stamp = rfc3339(time.time())
        row = {
            "name": f"{job.name}/checkpoints/{name}",
            "checkpointType": wire,
            "promotable": promotable,
            "createTime": stamp,
            "updateTime": stamp,
        }
        job.checkpoints.append(row)
        return {
            "identity": name,
            "checkpoint_type": "base" if lora else kind,
            "previous_identity": previous if kind == "delta" else None,
            "bucket_url": f"{job.bucket_url}/{name}",
            "checkpoint": row,
        }

    def promote(self, account_id: str, checkpoint_id: str, body: Any) -> tuple[dict[str, Any], str | None]:
        """``:promote``: the model (synchronous) or a long-running operation name."""
        if not isinstance(body, dict):
            raise invalid("request body must be a JSON object")
        allowed = {
            "output_model",
            "trainer_job_id",
            "base_model",
            "hot_load_deployment_id",
            "async_promotion",
        }
        unknown = set(body) - allowed
        if unknown:
            raise invalid(
                f"Invalid JSON payload: unknown field '{sorted(unknown)[0]}' (the body is snake_case)"
            )
        prefix = f"accounts/{account_id}/"
        job_name = body.get("trainer_job_id")
        if (
            not isinstance(job_name, str)
            or not TRAINER_JOB_RE.match(job_name)
            or not job_name.startswith(prefix)
        ):
            raise invalid(f"field 'trainer_job_id' must be {prefix}rlorTrainerJobs/<job>")
        job = self.get(job_name.rsplit("/", 1)[-1])
        row = next(
            (r for r in job.checkpoints if r["name"] == f"{job.name}/checkpoints/{checkpoint_id}"), None
        )
        if row is None:
            raise ApiError(404, f"checkpoint '{checkpoint_id}' not found on trainer job '{job.job_id}'")
        if not row["promotable"]:
            raise ApiError(
                400,
                f"checkpoint '{checkpoint_id}' ({row['checkpointType']}) is not promotable",
                "FAILED_PRECONDITION",
            )
        base_model = body.get("base_model")
        trainer_base = job.values["trainingConfig"]["baseModel"]
        if base_model != trainer_base:
            raise invalid(f"field 'base_model' must be the trainer's base model {trainer_base!r}")
        output = body.get("output_model")
        if not isinstance(output, str):
            raise invalid(f"field 'output_model' must be {prefix}models/<id>")
        model_id = output.rsplit("/", 1)[-1] if output.startswith(prefix + "models/") else ""
        if not _MODEL_ID_RE.match(model_id):
            raise invalid(
                f"field 'output_model' must be {prefix}models/<id> with an id of [a-z0-9-], at most 63 chars"
            )
        if output in self.models:
            raise ApiError(409, f"model '{output}' already exists", "ALREADY_EXISTS")
        lora = row["checkpointType"] == CHECKPOINT_TYPES["lora"][0]
        model: dict[str, Any] = {
            "name": output,
            "displayName": model_id,
            "kind": "HF_PEFT_ADDON" if lora else "HF_BASE_MODEL",
            "state": "READY",
            "createTime": rfc3339(time.time()),
            "sourceCheckpoint": row["name"],
        }
        if lora:
            model["peftDetails"] = {
                "baseModel": base_model,
                "r": job.values["trainingConfig"].get("loraRank"),
            }
        self.models[output] = model
        if body.get("async_promotion") is not True:
            return model, None
        operation = f"accounts/{account_id}/operations/promote-{uuid.uuid4().hex[:12]}"
        self.operations[operation] = (time.monotonic() + self.settings.trainer_promote_s, output)
        model["state"] = "CREATING"
        return model, operation

    def operation(self, name: str) -> dict[str, Any]:
        if name not in self.operations:
            raise ApiError(404, f"operation '{name}' not found")
        done_at, model_name = self.operations[name]
        if time.monotonic() < done_at:
            return {"name": name, "done": False, "metadata": {"model": model_name}}
        model = self.models[model_name]
        model["state"] = "READY"
        return {
            "name": name,
            "done": True,
            "metadata": {"model": model_name},
            "response": {"@type": "type.googleapis.com/gateway.Model", **model},
        }

    # -- the deployment link -----------------------------------------------------------------

    def link(self, body: Any, update_mask: str | None) -> tuple[Any, str | None]:
        """A deployment create/PATCH that names ``hotLoadTrainerJob``: the job must exist (and not be
        deleted), and the deployment gets the trainer's bucket as ``hotLoadBucketUrl``; a PATCH
        that re-points (or clears) the link moves (or clears) the bucket URL with it."""
        if not isinstance(body, dict):
            return body, update_mask
        paths = {snake(p.strip()) for p in update_mask.split(",")} if update_mask is not None else None
        key = "hotLoadTrainerJob" if "hotLoadTrainerJob" in body else "hot_load_trainer_job"
        if paths is not None and "hot_load_trainer_job" not in paths:
            return body, update_mask
        linked = body.get(key)
        if linked is None:
            if paths is not None:
                body = {k: v for k, v in body.items() if k not in ("hotLoadBucketUrl", "hot_load_bucket_url")}
                return body, f"{update_mask},hot_load_bucket_url"
            return body, update_mask
        if not isinstance(linked, str) or not TRAINER_JOB_RE.match(linked):
            return body, update_mask  # the Deployment field table reports the malformed value
        job = self._linked_job(linked)
        given = body.get("hotLoadBucketUrl", body.get("hot_load_bucket_url"))
        if given not in (None, "", job.bucket_url):
            raise invalid(
                "hotLoadBucketUrl and hotLoadTrainerJob must not both be set: a deployment linked to a "
                "trainer uses the trainer's bucket (per-trainer scope)"
            )
        body = {k: v for k, v in body.items() if k != "hot_load_bucket_url"}
        body["hotLoadBucketUrl"] = job.bucket_url
        return body, (f"{update_mask},hot_load_bucket_url" if update_mask is not None else None)

    def _linked_job(self, name: str) -> TrainerJob:
        account = self.settings.account_id
        job = self.find(name.rsplit("/", 1)[-1]) if name.startswith(f"accounts/{account}/") else None
        if job is None or job.state(time.monotonic()) in TOMBSTONES | {DELETING}:
            raise invalid(
                f"hotLoadTrainerJob {name!r} not found in account '{account}' (or deleted); create the "
                "trainer job first"
            )
        return job


def _check_training(training: dict[str, Any]) -> None:
    base = training.get("baseModel")
    if not isinstance(base, str) or not BASE_MODEL_RE.match(base):
        raise invalid("field 'trainingConfig.baseModel' is required (accounts/<account>/models/<model>)")
    for key, low in (
        ("loraRank", 0),
        ("projectionHeadDim", 0),
        ("maxContextLength", 1),
        ("acceleratorCount", 0),
    ):
        value = training.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise invalid(f"field 'trainingConfig.{key}' must be an integer >= {low}, got {value!r}")
    rate = training.get("learningRate", 1e-5)
    if isinstance(rate, bool) or not isinstance(rate, int | float) or rate <= 0:
        raise invalid(f"field 'trainingConfig.learningRate' must be a number > 0, got {rate!r}")
    _check_choice(training, "acceleratorType", ACCELERATOR_TYPES, "trainingConfig.")
    _check_choice(training, "region", REGIONS, "trainingConfig.")
    args = training.get("extraArgs")
    if args is not None and (not isinstance(args, list) or not all(isinstance(a, str) for a in args)):
        raise invalid("field 'trainingConfig.extraArgs' must be a list of strings")


def _check_choice(values: Mapping[str, Any], key: str, choices: frozenset[str], prefix: str = "") -> None:
    value = values.get(key)
    if value is not None and value not in choices:
        raise invalid(f"field '{prefix}{key}' has invalid value {value!r}")


def _check_top(values: Mapping[str, Any]) -> None:
    for key in ("trainerReplicaCount", "nodeCount"):
        value = values.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise invalid(f"field '{key}' must be an integer >= 1, got {value!r}")
    display = values.get("displayName")
    if display is not None and (not isinstance(display, str) or len(display) >= 64):
        raise invalid("field 'displayName' must be a string shorter than 64 characters")
    timeout = values.get("inactivityTimeout")
    if timeout is not None:
        match = _DURATION_RE.match(timeout) if isinstance(timeout, str) else None
        if match is None or float(match.group(1)) > MAX_INACTIVITY_S:
            raise invalid(
                f"field 'inactivityTimeout' must be a duration such as \"1800s\", at most 3h, got {timeout!r}"
            )
    extra = values.get("extraValues")
    if extra is not None and (
        not isinstance(extra, dict) or not all(isinstance(v, str) for v in extra.values())
    ):
        raise invalid("field 'extraValues' must be an object of string values")
