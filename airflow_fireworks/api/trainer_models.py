"""Typed records of RLOR trainer jobs (service-mode trainers): the validated ``TrainerJobConfig``,
the job as the control plane reports it, its service endpoint, checkpoints and training-shape
profiles, the state enum with its predicates, the trainer errors, and the deployment-link helpers
``reattach_trainer`` uses. Names, parameters and defaults are the official SDK's (1.2.30).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from functools import partial
from typing import Any, Literal

from airflow_fireworks.api._parse import (
    choice,
    config_from_dict,
    matching,
    proto_duration,
    text_or_none,
)
from airflow_fireworks.api.errors import FireworksError, FireworksValidationError
from airflow_fireworks.api.models import (
    ACCELERATOR_TYPES,
    REGIONS,
    DeploymentInfo,
    DeploymentState,
    validate_base_model,
    validate_deployment_id,
)
from airflow_fireworks.api.validation import check_str_map

__all__ = [
    "CreatedTrainerJob",
    "TrainerCheckpoint",
    "TrainerJobConfig",
    "TrainerJobInfo",
    "TrainerJobState",
    "TrainerServiceEndpoint",
    "TrainingShapeProfile",
    "trainer_job_name",
    "validate_trainer_job_id",
]

log = logging.getLogger(__name__)

GENERATED_JOB_ID_PREFIX = "training-api-service-"
MAX_INACTIVITY_TIMEOUT_S = 10800.0
DEFAULT_LEARNING_RATE = 1e-5
_JOB_ID_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_SHAPE_RE = re.compile(r"accounts/[^/]+/trainingShapes/[^/]+(?:/versions/[^/]+)?")
_CHECKPOINT_RE = re.compile(r"accounts/([^/]+)/rlorTrainerJobs/([^/]+)/checkpoints/([^/]+)")
_OUTPUT_MODEL_RE = re.compile(r"[a-z0-9-]{1,63}")
_DURATION_RE = re.compile(r"-?\d+(?:\.\d{1,9})?s")
_GRPC_CODES = (
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
)


class TrainerJobState(StrEnum):
    """Trainer job state: the public enum plus the SDK's two tombstones; strings the client does
    not know map to ``UNKNOWN``, a missing state to ``JOB_STATE_UNSPECIFIED``."""

    UNSPECIFIED = "JOB_STATE_UNSPECIFIED"
    CREATING = "JOB_STATE_CREATING"
    RUNNING = "JOB_STATE_RUNNING"
    COMPLETED = "JOB_STATE_COMPLETED"
    FAILED = "JOB_STATE_FAILED"
    CANCELLED = "JOB_STATE_CANCELLED"
    DELETING = "JOB_STATE_DELETING"
    WRITING_RESULTS = "JOB_STATE_WRITING_RESULTS"
    VALIDATING = "JOB_STATE_VALIDATING"
    DELETING_CLEANING_UP = "JOB_STATE_DELETING_CLEANING_UP"
    PENDING = "JOB_STATE_PENDING"
    EXPIRED = "JOB_STATE_EXPIRED"
    RE_QUEUEING = "JOB_STATE_RE_QUEUEING"
    CREATING_INPUT_DATASET = "JOB_STATE_CREATING_INPUT_DATASET"
    IDLE = "JOB_STATE_IDLE"
    CANCELLING = "JOB_STATE_CANCELLING"
    EARLY_STOPPED = "JOB_STATE_EARLY_STOPPED"
    PAUSED = "JOB_STATE_PAUSED"
    DELETED = "JOB_STATE_DELETED"
    ARCHIVED = "JOB_STATE_ARCHIVED"
    UNKNOWN = "UNKNOWN"

    @classmethod
    def _missing_(cls, value: object) -> TrainerJobState:
        return cls.UNSPECIFIED if value in (None, "") else cls.UNKNOWN

    @property
    def short(self) -> str:
        """``RUNNING`` for ``JOB_STATE_RUNNING`` (for messages)."""
        return self.value.removeprefix("JOB_STATE_")

    def is_tombstone(self) -> bool:
        """DELETED or ARCHIVED: the job is gone (kept for checkpoint recovery); its id cannot be reused."""
        return self in (TrainerJobState.DELETED, TrainerJobState.ARCHIVED)

    def is_stopped(self) -> bool:
        """Stopped before serving: an error once the grace after a resume has passed."""
        return self in (
            TrainerJobState.CANCELLING,
            TrainerJobState.CANCELLED,
            TrainerJobState.COMPLETED,
            TrainerJobState.EARLY_STOPPED,
            TrainerJobState.DELETING,
        )

    def is_resumable(self) -> bool:
        """FAILED, CANCELLED, PAUSED or COMPLETED: what ``reconnect_and_wait`` (and a create that finds
        the job already there) resumes."""
        return self in (
            TrainerJobState.FAILED,
            TrainerJobState.CANCELLED,
            TrainerJobState.PAUSED,
            TrainerJobState.COMPLETED,
        )


# --- validation helpers -----------------------------------------------------------------------


def validate_trainer_job_id(value: Any, field: str = "job_id") -> str:
    """Check a trainer job id: 1-63 lowercase letters, digits or hyphens, starting and ending with
    a letter or digit (it travels unescaped in paths). Returns it stripped."""
    advice = (
        "is not a valid trainer job id; use 1-63 lowercase letters, digits and hyphens, "
        "starting and ending with a letter or digit (e.g. 'grpo-qwen3-trainer')"
    )
    return matching(value, field, _JOB_ID_RE, advice, what="trainer job id")


def validate_training_shape(value: Any, field: str = "training_shape_ref") -> str:
    """Check ``accounts/<a>/trainingShapes/<shape>[/versions/<version>]``."""
    if not isinstance(value, str) or not _SHAPE_RE.fullmatch(value.strip()):
        raise FireworksValidationError(
            field,
            f"{value!r} must look like 'accounts/<account>/trainingShapes/<shape>' optionally followed by "
            "'/versions/<version>'",
        )
    return value.strip()


def validate_output_model_id(value: Any, field: str = "output_model_id") -> str:
    """A model id for promotion: 1-63 lowercase letters, digits or hyphens."""
    if not isinstance(value, str) or not _OUTPUT_MODEL_RE.fullmatch(value.strip()):
        raise FireworksValidationError(
            field, f"{value!r} must be 1-63 lowercase letters, digits or hyphens (e.g. 'grpo-qwen3-final')"
        )
    return value.strip()


def trainer_job_name(account_id: str, job_id: str) -> str:
    """Full resource name ``accounts/<account>/rlorTrainerJobs/<job>`` (what a deployment links to)."""
    return f"accounts/{account_id}/rlorTrainerJobs/{job_id}"


def job_id_from(value: Any, field: str = "job_id") -> str:
    """A job id from an id or a full ``accounts/<a>/rlorTrainerJobs/<id>`` name."""
    if isinstance(value, str) and "/rlorTrainerJobs/" in value:
        return validate_trainer_job_id(value.rsplit("/", 1)[-1], field)
    return validate_trainer_job_id(value, field)


def generated_job_id(seed: str | None = None) -> str:
    """The SDK's id form ``training-api-service-<8 hex>``: random, or derived from ``seed`` (stable)."""
    digest = uuid.uuid5(uuid.NAMESPACE_URL, seed).hex if seed is not None else uuid.uuid4().hex
    return GENERATED_JOB_ID_PREFIX + digest[:8]


def duration_text(value: Any, field: str) -> str:
    """``inactivity_timeout`` as a protobuf duration string (``"1800s"``, ``"90.5s"``), checked:
    a timedelta, a number of seconds or such a string, from 0 to 3 hours."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and _DURATION_RE.fullmatch(value.strip()):
        seconds = float(value.strip()[:-1])
    else:
        raise FireworksValidationError(
            field, f"must be a timedelta, a number of seconds or a duration such as '1800s', got {value!r}"
        )
    if not math.isfinite(seconds) or seconds < 0 or seconds > MAX_INACTIVITY_TIMEOUT_S:
        raise FireworksValidationError(
            field, f"must be between 0 and {MAX_INACTIVITY_TIMEOUT_S:g} seconds (3 hours), got {value!r}"
        )
    return proto_duration(seconds)


# --- TrainerJobConfig -------------------------------------------------------------------------

#: Optional integer fields and their lower bound (0 tolerated where the SDK reads it as unset).
_OPT_INT_FIELDS = {
    "projection_head_dim": 0,
    "max_context_length": 1,
    "gradient_accumulation_steps": 1,
    "node_count": 0,
    "trainer_replica_count": 1,
    "accelerator_count": 0,
}
_BOOL_FIELDS = (
    "auto_select_training_shape",
    "forward_only",
    "disable_inactivity_cleanup",
    "skip_validations",
    "preemptible",
    "use_reservation",
)
_OPT_STR_FIELDS = ("display_name", "custom_image_tag", "purpose", "managed_by", "reservation_target")


@dataclass
class TrainerJobConfig:
    """What to launch, with the SDK's field names and defaults. Validated on construction (every
    problem named by its field, nothing sent); ``requested_job_id`` is filled in by ``create``
    before the POST, so a retried create reuses the id."""

    base_model: str
    lora_rank: int = 0
    projection_head_dim: int | None = None
    max_context_length: int | None = None
    learning_rate: float = DEFAULT_LEARNING_RATE
    gradient_accumulation_steps: int | None = None
    node_count: int | None = None
    trainer_replica_count: int | None = None
    display_name: str | None = None
    hot_load_deployment_id: str | None = None
    region: str | None = None
    custom_image_tag: str | None = None
    extra_args: list[str] | None = None
    extra_values: dict[str, str] | None = None
    accelerator_type: str | None = None
    accelerator_count: int | None = None
    training_shape_ref: str | None = None
    auto_select_training_shape: bool = False
    forward_only: bool = False
    inactivity_timeout: timedelta | str | float | None = None
    disable_inactivity_cleanup: bool = False
    skip_validations: bool = False
    purpose: str | None = None
    managed_by: str | None = None
    preemptible: bool = False
    requested_job_id: str | None = None
    use_reservation: bool = True
    reservation_target: str | None = None

    def __post_init__(self) -> None:
        self.validate()

    @property
    def launch_path(self) -> Literal["shape", "auto", "manual"]:
        """``shape`` (``training_shape_ref``), ``auto`` (server picks a shape) or ``manual``."""
        if self.training_shape_ref:
            return "shape"
        return "auto" if self.auto_select_training_shape else "manual"

    def validate(self) -> None:
        """Check every field; all problems are reported together, each named by its field."""
        checks: list[Callable[[], None]] = [
            self._check_base_model,
            partial(_check_count, self.lora_rank, "lora_rank", 0),
            *(
                partial(_check_count, getattr(self, name), name, low)
                for name, low in _OPT_INT_FIELDS.items()
                if getattr(self, name) is not None
            ),
            self._check_learning_rate,
            *(partial(_check_flag, getattr(self, name), name) for name in _BOOL_FIELDS),
            *(partial(_check_opt_str, getattr(self, name), name) for name in _OPT_STR_FIELDS),
            self._check_display_name,
            self._check_region,
            self._check_accelerator,
            self._check_extra_args,
            self._check_extra_values,
            self._check_inactivity,
            self._check_shape_path,
            self._check_ids,
        ]
        problems: list[FireworksValidationError] = []
        for check in checks:
            try:
                check()
            except FireworksValidationError as err:
                problems.append(err)
        if problems:
            first, *rest = problems
            detail = str(first).split(": ", 1)[1]
            raise FireworksValidationError(first.field, "; ".join([detail, *(str(p) for p in rest)]))

    def _check_base_model(self) -> None:
        self.base_model = validate_base_model(self.base_model)

    def _check_extra_values(self) -> None:
        if self.extra_values is not None:
            self.extra_values = check_str_map(self.extra_values, "extra_values")

    def _check_ids(self) -> None:
        if self.gradient_accumulation_steps not in (None, 1):
            raise FireworksValidationError(
                "gradient_accumulation_steps",
                "is deprecated and only 1 (or None) is accepted; accumulate in your training loop",
            )
        if self.gradient_accumulation_steps == 1:
            log.warning("gradient_accumulation_steps is deprecated and ignored (never sent)")
        if self.hot_load_deployment_id is not None:
            self.hot_load_deployment_id = validate_deployment_id(
                self.hot_load_deployment_id, "hot_load_deployment_id"
            )
            log.warning(
                "hot_load_deployment_id (per-deployment bucket) is deprecated; create the trainer first "
                "and link the deployment to it with hot_load_trainer_job"
            )
        if self.requested_job_id is not None:
            self.requested_job_id = validate_trainer_job_id(self.requested_job_id, "requested_job_id")

    def _check_learning_rate(self) -> None:
        value = self.learning_rate
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value <= 0
        ):
            raise FireworksValidationError("learning_rate", f"must be a finite number > 0, got {value!r}")
        self.learning_rate = float(value)

    def _check_display_name(self) -> None:
        if isinstance(self.display_name, str) and len(self.display_name) >= 64:
            raise FireworksValidationError("display_name", "must be shorter than 64 characters")

    def _check_region(self) -> None:
        self.region = self.region or None
        if self.region is not None:
            self.region = choice(self.region, "region", REGIONS, "is not a Fireworks region (e.g. US_OHIO_1)")

    def _check_accelerator(self) -> None:
        self.accelerator_type = self.accelerator_type or None
        if self.accelerator_type is not None:
            self.accelerator_type = choice(self.accelerator_type, "accelerator_type", ACCELERATOR_TYPES)

    def _check_extra_args(self) -> None:
        if self.extra_args is None:
            return
        if isinstance(self.extra_args, str) or not isinstance(self.extra_args, Sequence):
            raise FireworksValidationError(
                "extra_args", "must be a list of strings, e.g. ['--flag', 'value']"
            )
        if not all(isinstance(arg, str) for arg in self.extra_args):
            raise FireworksValidationError(
                "extra_args", "must be a list of strings, e.g. ['--flag', 'value']"
            )
        self.extra_args = [part for arg in self.extra_args for part in arg.split()]

    def _check_inactivity(self) -> None:
        if self.inactivity_timeout is not None:
            duration_text(self.inactivity_timeout, "inactivity_timeout")

    def _check_shape_path(self) -> None:
        if self.training_shape_ref in (None, ""):
            self.training_shape_ref = None
        else:
            self.training_shape_ref = validate_training_shape(self.training_shape_ref)
        path = self.launch_path
        if self.training_shape_ref and self.auto_select_training_shape:
            raise FireworksValidationError(
                "training_shape_ref",
                "and auto_select_training_shape are mutually exclusive; pick one launch path",
            )
        if path != "manual":
            owned = [n for n in ("accelerator_type", "accelerator_count", "node_count") if getattr(self, n)]
            if owned:
                raise FireworksValidationError(
                    "training_shape_ref",
                    f"the training shape owns the hardware; drop {', '.join(owned)} "
                    f"(or launch without a shape)",
                )
        if path == "auto" and self.skip_validations:
            raise FireworksValidationError(
                "skip_validations",
                "applies to the shape path only (the server ignores it with auto-selected shapes)",
            )

    # --- wire ----------------------------------------------------------------------------------

    def ensure_job_id(self, seed: str | None = None) -> str:
        """``requested_job_id``, generating ``training-api-service-<8 hex>`` first when unset (the
        id is kept in the config, so a retried create sends the same one)."""
        if self.requested_job_id is None:
            self.requested_job_id = generated_job_id(seed)
        return self.requested_job_id

    def to_query_params(self) -> list[tuple[str, str]]:
        """Create query parameters, in the SDK's order (``rlorTrainerJobId`` last)."""
        params: list[tuple[str, str]] = []
        if self.hot_load_deployment_id:
            params.append(("deploymentId", self.hot_load_deployment_id))
        path = self.launch_path
        if path == "shape" and self.training_shape_ref:
            params.append(("trainingShape", self.training_shape_ref))
        if (path == "shape" and self.skip_validations) or path == "manual":
            params.append(("skipValidations", "true"))
        params.append(("rlorTrainerJobId", self.ensure_job_id()))
        return params

    def to_request_body(self) -> dict[str, Any]:
        """The create body, camelCase, keys in the SDK's order."""
        path = self.launch_path
        training: dict[str, Any] = {
            "baseModel": self.base_model,
            "loraRank": self.lora_rank,
            "learningRate": self.learning_rate,
        }
        if self.projection_head_dim:
            training["projectionHeadDim"] = self.projection_head_dim
        if self.max_context_length and path != "shape":
            training["maxContextLength"] = self.max_context_length
        if self.custom_image_tag:
            training["customImageTag"] = self.custom_image_tag
        if path == "manual":
            if self.accelerator_type:
                training["acceleratorType"] = self.accelerator_type
            if self.accelerator_count:
                training["acceleratorCount"] = self.accelerator_count
        if self.region:
            training["region"] = self.region
        if self.extra_args:
            training["extraArgs"] = list(self.extra_args)
        body: dict[str, Any] = {
            "serviceMode": True,
            "keepAlive": False,
            "dataset": "",
            "trainingConfig": training,
        }
        if self.trainer_replica_count is not None:
            body["trainerReplicaCount"] = self.trainer_replica_count
        body["useReservation"] = bool(self.use_reservation and not self.reservation_target)
        if self.reservation_target:
            body["reservationTarget"] = self.reservation_target
        if path == "manual":
            body["nodeCount"] = self.node_count or 1
        if self.display_name:
            body["displayName"] = self.display_name
        if self.hot_load_deployment_id:
            body["hotLoadDeploymentId"] = self.hot_load_deployment_id
        if self.extra_values:
            body["extraValues"] = dict(self.extra_values)
        if self.forward_only:
            body["forwardOnly"] = True
        if self.purpose:
            body["purpose"] = self.purpose
        if self.preemptible:
            body["preemptible"] = True
        if self.managed_by:
            body["managedBy"] = self.managed_by
        if self.inactivity_timeout is not None:
            body["inactivityTimeout"] = duration_text(self.inactivity_timeout, "inactivity_timeout")
        if self.disable_inactivity_cleanup:
            body["disableInactivityCleanup"] = True
        return body

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainerJobConfig:
        """Build from a (templated) mapping; numeric and boolean strings are converted."""
        return config_from_dict(cls, data, "trainer job config")


def _check_count(value: Any, field: str, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise FireworksValidationError(field, f"must be an integer >= {low}, got {value!r}")


def _check_flag(value: Any, field: str) -> None:
    if not isinstance(value, bool):
        raise FireworksValidationError(field, f"must be true or false, got {value!r}")


def _check_opt_str(value: Any, field: str) -> None:
    if value is not None and not isinstance(value, str):
        raise FireworksValidationError(field, f"must be a string, got {value!r}")


# --- records ----------------------------------------------------------------------------------


def _status_detail(body: Mapping[str, Any]) -> str | None:
    """The SDK's human detail: ``statusMessage``, ``message``, then the ``status`` object's
    ``message``/``statusMessage``/``detail``/``details``, or ``status`` itself when a string."""
    status = body.get("status")
    if isinstance(status, str):
        places = [body.get("statusMessage"), body.get("message"), status]
    else:
        nested = _object(status)
        places = [body.get(key) for key in ("statusMessage", "message")]
        places += [nested.get(key) for key in ("message", "statusMessage", "detail", "details")]
    return next((text for text in map(text_or_none, places) if text), None)


def _status_code(body: Mapping[str, Any]) -> str | None:
    status = body.get("status")
    code = status.get("code") if isinstance(status, Mapping) else None
    if isinstance(code, int) and not isinstance(code, bool) and 0 <= code < len(_GRPC_CODES):
        return _GRPC_CODES[code]
    return code if isinstance(code, str) and code else None


def _object(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _positive_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


@dataclass
class TrainerJobInfo:
    """A trainer job as the control plane reports it (``raw`` keeps the full response)."""

    job_id: str
    name: str
    state: TrainerJobState
    status_message: str | None = None
    status_code: str | None = None
    display_name: str | None = None
    base_model: str | None = None
    lora_rank: int | None = None
    max_context_length: int | None = None
    hot_load_deployment_id: str | None = None
    create_time: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_response(cls, body: Any, *, job_id: str | None = None) -> TrainerJobInfo:
        """Parse a trainer job resource. The id is the last segment of ``name`` (the SDK requires a
        name in the create answer); ``job_id`` stands in only when the name is missing."""
        if not isinstance(body, Mapping):
            raise FireworksError(f"trainer job response should be a JSON object, got {type(body).__name__}")
        name = body.get("name")
        if name is not None and not isinstance(name, str):
            raise FireworksError(f"trainer job response field 'name' should be a string, got {name!r}")
        if not name and job_id is None:
            raise FireworksError("trainer job response has no 'name'; cannot tell which job it is")
        state = body.get("state")
        if state is not None and not isinstance(state, str):
            raise FireworksError(f"trainer job response field 'state' should be a string, got {state!r}")
        training = _object(body.get("trainingConfig"))
        base_model = training.get("baseModel")
        lora_rank = training.get("loraRank")
        display = body.get("displayName")
        deployment = body.get("hotLoadDeploymentId")
        created = body.get("createTime")
        return cls(
            job_id=name.rsplit("/", 1)[-1] if name else str(job_id),
            name=name or "",
            state=TrainerJobState(state or ""),
            status_message=_status_detail(body),
            status_code=_status_code(body),
            display_name=display if isinstance(display, str) and display else None,
            base_model=base_model if isinstance(base_model, str) and base_model else None,
            lora_rank=lora_rank if isinstance(lora_rank, int) and not isinstance(lora_rank, bool) else None,
            max_context_length=_positive_int(training.get("maxContextLength")),
            hot_load_deployment_id=deployment if isinstance(deployment, str) and deployment else None,
            create_time=created if isinstance(created, str) else None,
            raw=dict(body),
        )

    def describe(self) -> str:
        """State and status in one line, for logs and messages."""
        detail = f" ({self.status_message})" if self.status_message else ""
        return f"{self.state.short}{detail}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary for XCom and trigger events (no ``raw``)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "raw"}
        data["state"] = self.state.value
        return data


@dataclass(frozen=True)
class CreatedTrainerJob:
    """What ``create`` returns: the SDK's ``job_name``/``job_id``, plus the state seen and whether
    the job already existed (a retried create, or another creator)."""

    job_name: str
    job_id: str
    state: TrainerJobState = TrainerJobState.UNSPECIFIED
    reused: bool = False


@dataclass(frozen=True)
class TrainerServiceEndpoint:
    """A ready trainer: where its service (Tinker protocol) listens."""

    job_name: str
    job_id: str
    base_url: str
    max_context_length: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form, with ``service_url`` as an alias of ``base_url`` for DAG authors."""
        return {**dataclasses.asdict(self), "service_url": self.base_url}


@dataclass(frozen=True)
class TrainerCheckpoint:
    """One row of a trainer job's checkpoint list. ``promotable`` is the server's verdict."""

    name: str
    checkpoint_type: str | None = None
    promotable: bool = False
    create_time: str | None = None
    update_time: str | None = None

    @classmethod
    def from_response(cls, row: Any) -> TrainerCheckpoint:
        if not isinstance(row, Mapping) or not isinstance(row.get("name"), str):
            raise FireworksError(f"checkpoint row should be an object with a 'name', got {row!r}")
        kind = row.get("checkpointType")
        return cls(
            name=row["name"],
            checkpoint_type=kind if isinstance(kind, str) else None,
            promotable=row.get("promotable") is True,
            create_time=row.get("createTime") if isinstance(row.get("createTime"), str) else None,
            update_time=row.get("updateTime") if isinstance(row.get("updateTime"), str) else None,
        )

    @property
    def checkpoint_id(self) -> str:
        return self.name.rsplit("/", 1)[-1]

    @property
    def job_id(self) -> str | None:
        match = _CHECKPOINT_RE.fullmatch(self.name)
        return match.group(2) if match else None

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "checkpoint_id": self.checkpoint_id}


def parse_checkpoint_name(value: Any, field: str = "name") -> tuple[str, str, str]:
    """``accounts/<a>/rlorTrainerJobs/<job>/checkpoints/<id>`` -> (account, job id, checkpoint id)."""
    match = _CHECKPOINT_RE.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise FireworksValidationError(
            field, f"{value!r} must look like 'accounts/<a>/rlorTrainerJobs/<job>/checkpoints/<checkpoint>'"
        )
    return match.group(1), match.group(2), match.group(3)


@dataclass(frozen=True)
class TrainingShapeProfile:
    """A validated training-shape version, as ``resolve_training_profile`` reads it."""

    training_shape_version: str
    trainer_image_tag: str | None = None
    max_supported_context_length: int = 0
    node_count: int = 1
    deployment_shape_version: str | None = None
    deployment_image_tag: str | None = None
    accelerator_type: str | None = None
    accelerator_count: int = 0
    base_model_weight_precision: str | None = None
    pipeline_parallelism: int = 1
    trainer_mode: str = ""

    @classmethod
    def from_version(cls, body: Any) -> TrainingShapeProfile:
        if not isinstance(body, Mapping) or not isinstance(body.get("name"), str):
            raise FireworksError(f"training shape version should be an object with a 'name', got {body!r}")
        snap = _object(body.get("snapshot"))
        sharding = _object(snap.get("trainerShardingScheme"))

        def text(key: str) -> str | None:
            value = snap.get(key)
            return value if isinstance(value, str) and value else None

        def number(value: Any, default: int) -> int:
            return value if isinstance(value, int) and not isinstance(value, bool) else default

        return cls(
            training_shape_version=body["name"],
            trainer_image_tag=text("trainerImageTag"),
            max_supported_context_length=number(snap.get("maxSupportedContextLength"), 0),
            node_count=number(snap.get("nodeCount"), 1),
            deployment_shape_version=text("deploymentShapeVersion"),
            deployment_image_tag=text("deploymentImageTag"),
            accelerator_type=text("acceleratorType"),
            accelerator_count=number(snap.get("acceleratorCount"), 0),
            base_model_weight_precision=text("baseModelWeightPrecision"),
            pipeline_parallelism=number(sharding.get("pipelineParallelism"), 1),
            trainer_mode=text("trainerMode") or "",
        )

    @property
    def training_shape(self) -> str:
        """The shape without its version (``.../trainingShapes/<shape>``)."""
        return self.training_shape_version.split("/versions/", 1)[0]

    @property
    def deployment_shape(self) -> str | None:
        """The versioned deployment shape the trainer's deployments should use, if any."""
        shape = self.deployment_shape_version
        return shape if shape and "/versions/" in shape else None

    @property
    def supports_lora(self) -> bool:
        return self.trainer_mode == "LORA_TRAINER"


# --- the deployment link ----------------------------------------------------------------------


def effective_transition(value: str | None) -> str:
    """The hot-load transition type a deployment uses: unset means ``ASYNC``."""
    return (value or "ASYNC").upper()


def trainer_link_patch(
    info: DeploymentInfo, trainer_job_name: str, hot_load_transition_type: str | None = None
) -> tuple[dict[str, Any], str] | None:
    """The PATCH body and snake_case update mask that point ``info`` at ``trainer_job_name`` (and
    the requested transition type), with only what differs; None when nothing does."""
    body: dict[str, Any] = {}
    mask: list[str] = []
    if info.hot_load_trainer_job != trainer_job_name:
        body["hotLoadTrainerJob"] = trainer_job_name
        mask.append("hot_load_trainer_job")
    if hot_load_transition_type is not None and effective_transition(
        info.hot_load_transition_type
    ) != effective_transition(hot_load_transition_type):
        body["hotLoadTransitionType"] = hot_load_transition_type
        mask.append("hot_load_transition_type")
    return (body, ",".join(mask)) if body else None


def is_attached(
    info: DeploymentInfo, trainer_job_name: str, hot_load_transition_type: str | None = None
) -> bool:
    """True when ``info`` is READY, linked to ``trainer_job_name`` and (if one is requested) uses
    that transition type: what a reattach waits for."""
    return (
        info.state is DeploymentState.READY
        and info.hot_load_trainer_job == trainer_job_name
        and (
            hot_load_transition_type is None
            or effective_transition(info.hot_load_transition_type)
            == effective_transition(hot_load_transition_type)
        )
    )
