"""Typed records of the Fireworks control plane: deployment config (validated), deployment info,
hotload status, plus the validation helpers operators reuse before anything is sent."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from airflow_fireworks.api._parse import (
    choice,
    config_from_dict,
    matching,
    proto_duration,
    typed_field,
)
from airflow_fireworks.api.errors import FireworksError, FireworksValidationError
from airflow_fireworks.api.validation import check_bool, check_int, check_seconds, check_str_map

__all__ = [
    "Availability",
    "DeploymentConfig",
    "DeploymentInfo",
    "DeploymentState",
    "HotloadProgress",
    "HotloadStatus",
    "ReplicaHotloadStatus",
    "deployment_name",
    "validate_base_model",
    "validate_deployment_id",
    "validate_deployment_shape",
    "validate_trainer_job",
    "validate_update_mask",
]

ACCELERATOR_TYPES: frozenset[str] = frozenset(
    {
        "NVIDIA_A100_80GB",
        "NVIDIA_H100_80GB",
        "AMD_MI300X_192GB",
        "NVIDIA_A10G_24GB",
        "NVIDIA_A100_40GB",
        "NVIDIA_L4_24GB",
        "NVIDIA_H200_141GB",
        "NVIDIA_B200_180GB",
        "AMD_MI325X_256GB",
        "AMD_MI350X_288GB",
    }
)
DEFAULT_ACCELERATOR_TYPE = "NVIDIA_H200_141GB"
HOT_LOAD_BUCKET_TYPES: frozenset[str] = frozenset(
    {"BUCKET_TYPE_UNSPECIFIED", "MINIO", "S3", "NEBIUS", "FW_HOSTED"}
)
HOT_LOAD_TRANSITION_TYPES: frozenset[str] = frozenset({"ASYNC", "SYNC"})
#: Bucket types of a bring-your-own-trainer bucket: they need ``hot_load_bucket_url``.
EXTERNAL_BUCKET_TYPES: frozenset[str] = frozenset({"S3", "MINIO", "NEBIUS"})
REGIONS: frozenset[str] = frozenset(
    {
        "US_IOWA_1",
        "US_VIRGINIA_1",
        "US_VIRGINIA_2",
        "US_ILLINOIS_1",
        "AP_TOKYO_1",
        "EU_LONDON_1",
        "US_ARIZONA_1",
        "US_TEXAS_1",
        "US_ILLINOIS_2",
        "EU_FRANKFURT_1",
        "US_TEXAS_2",
        "EU_PARIS_1",
        "EU_HELSINKI_1",
        "US_NEVADA_1",
        "EU_ICELAND_1",
        "EU_ICELAND_2",
        "US_WASHINGTON_1",
        "US_WASHINGTON_2",
        "EU_ICELAND_DEV_1",
        "US_WASHINGTON_3",
        "US_ARIZONA_2",
        "AP_TOKYO_2",
        "US_CALIFORNIA_1",
        "US_MISSOURI_1",
        "US_UTAH_1",
        "US_TEXAS_3",
        "US_ARIZONA_3",
        "US_GEORGIA_1",
        "US_GEORGIA_2",
        "US_WASHINGTON_4",
        "US_GEORGIA_3",
        "NA_BRITISHCOLUMBIA_1",
        "US_GEORGIA_4",
        "EU_ICELAND_3",
        "US_OHIO_1",
        "US_NEWYORK_1",
    }
)
MIN_SCALE_TO_ZERO_WINDOW_S = 300.0
DEFAULT_DESCRIPTION = "Fireworks training deployment"

_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
_ID_RE = re.compile(r"[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?")
_BASE_MODEL_RE = re.compile(rf"accounts/{_SEGMENT}/models/{_SEGMENT}")
_SHAPE_RE = re.compile(rf"accounts/{_SEGMENT}/deploymentShapes/{_SEGMENT}(?:/versions/{_SEGMENT})?")
_TRAINER_JOB_RE = re.compile(rf"accounts/{_SEGMENT}/rlorTrainerJobs/{_SEGMENT}")
_BUCKET_URL_RE = re.compile(r"(?:s3|gs|minio|nebius|https?)://[^/\s]+(?:/[^\s]*[^/\s])?")
_SNAKE_PATH_RE = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)*")
_UNSET_TRANSITION = {"", "UNSPECIFIED", "HOT_LOAD_TRANSITION_TYPE_UNSPECIFIED"}


class DeploymentState(StrEnum):
    """Deployment lifecycle state; strings the client does not know map to ``UNKNOWN``."""

    STATE_UNSPECIFIED = "STATE_UNSPECIFIED"
    CREATING = "CREATING"
    READY = "READY"
    UPDATING = "UPDATING"
    DELETING = "DELETING"
    DELETED = "DELETED"
    FAILED = "FAILED"
    UNKNOWN = "UNKNOWN"

    @classmethod
    def _missing_(cls, value: object) -> DeploymentState:
        return cls.UNKNOWN

    def is_failed(self) -> bool:
        """True for states from which the deployment will never serve (FAILED, DELETED, DELETING)."""
        return self in (DeploymentState.FAILED, DeploymentState.DELETED, DeploymentState.DELETING)

    def is_serving(self) -> bool:
        """True when the deployment answers inference (READY, UPDATING)."""
        return self in (DeploymentState.READY, DeploymentState.UPDATING)


# --- validation helpers -----------------------------------------------------------------------


def deployment_name(account_id: str, deployment_id: str) -> str:
    """Full resource name ``accounts/<account>/deployments/<id>`` (also the inference model)."""
    return f"accounts/{account_id}/deployments/{deployment_id}"


def validate_deployment_id(value: Any, field: str = "deployment_id") -> str:
    """Check a deployment id: 1-63 lowercase letters, digits or hyphens, starting with a letter and
    not ending with a hyphen. Returns it stripped."""
    return matching(
        value,
        field,
        _ID_RE,
        "is not a valid deployment id; use 1-63 lowercase letters, digits and hyphens, "
        "starting with a letter and not ending with a hyphen (e.g. 'grpo-qwen3-8b')",
    )


def validate_base_model(value: Any, field: str = "base_model") -> str:
    """Check a model resource name ``accounts/<account>/models/<model>``."""
    advice = "must look like 'accounts/<account>/models/<model>' (e.g. 'accounts/fireworks/models/qwen3-8b')"
    return matching(value, field, _BASE_MODEL_RE, advice)


def validate_deployment_shape(value: Any, field: str = "deployment_shape") -> str:
    """Check ``accounts/<account>/deploymentShapes/<shape>[/versions/<version>]``."""
    advice = (
        "must look like 'accounts/<account>/deploymentShapes/<shape>' "
        "optionally followed by '/versions/<version>'"
    )
    return matching(value, field, _SHAPE_RE, advice)


def validate_trainer_job(value: Any, field: str = "hot_load_trainer_job") -> str:
    """Check a trainer job resource name ``accounts/<account>/rlorTrainerJobs/<job>``."""
    advice = "must look like 'accounts/<account>/rlorTrainerJobs/<job>'"
    return matching(value, field, _TRAINER_JOB_RE, advice)


def camel_to_snake(name: str) -> str:
    """``hotLoadTrainerJob`` -> ``hot_load_trainer_job`` (update-mask paths are snake_case)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def validate_update_mask(body: Mapping[str, Any], update_mask: str | Sequence[str] | None) -> str:
    """Check a PATCH: a non-empty snake_case mask that covers every body key. Returns the mask
    joined with commas. Without a mask the server would reset every field missing from the body."""
    if not isinstance(body, Mapping) or not body:
        raise FireworksValidationError("body", "must be a non-empty mapping of camelCase fields")
    if update_mask is None:
        paths: list[str] = []
    elif isinstance(update_mask, str):
        paths = [p.strip() for p in update_mask.split(",") if p.strip()]
    elif isinstance(update_mask, Sequence) and all(isinstance(p, str) for p in update_mask):
        paths = [p.strip() for p in update_mask if p.strip()]
    else:
        raise FireworksValidationError("update_mask", "must be a comma-separated string or a list of strings")
    if not paths:
        raise FireworksValidationError(
            "update_mask",
            "is required: a PATCH without a mask makes the server reset every field not in the body; "
            "pass the snake_case paths to change, e.g. 'min_replica_count,max_replica_count'",
        )
    for path in paths:
        if not _SNAKE_PATH_RE.fullmatch(path):
            raise FireworksValidationError(
                "update_mask",
                f"path {path!r} must be snake_case (e.g. {camel_to_snake(path)!r})",
            )
    roots = {p.split(".", 1)[0] for p in paths}
    for key in body:
        if not isinstance(key, str) or camel_to_snake(key) not in roots:
            raise FireworksValidationError(
                "update_mask",
                f"body field {key!r} is not covered by the mask; add {camel_to_snake(str(key))!r} "
                "to update_mask or drop the field",
            )
    return ",".join(paths)


# --- DeploymentConfig -------------------------------------------------------------------------

_OPTIONAL_BOOL_FIELDS = {"long_prompt", "enable_addons"}
_BOOL_FIELDS = {
    "disable_speculative_decoding",
    "enable_hot_load",
    "for_training",
    "preemptible",
    "skip_shape_validation",
    "accept_shapeless_risk",
    *_OPTIONAL_BOOL_FIELDS,
}


@dataclass
class DeploymentConfig:
    """What to create. Validated on construction, so a bad value fails before any request."""

    deployment_id: str
    base_model: str
    deployment_shape: str | None = None
    region: str | None = None
    min_replica_count: int = 0
    max_replica_count: int = 1
    hot_load_bucket_type: str | None = "FW_HOSTED"
    hot_load_bucket_url: str | None = None
    hot_load_trainer_job: str | None = None
    hot_load_transition_type: str | None = None
    disable_speculative_decoding: bool = False
    extra_args: list[str] | None = None
    extra_values: dict[str, str] | None = None
    description: str | None = None
    enable_hot_load: bool = True
    for_training: bool = False
    accelerator_type: str | None = None
    accelerator_count: int | None = None
    scale_up_window_s: float | None = None
    scale_down_window_s: float | None = None
    scale_to_zero_window_s: float | None = None
    long_prompt: bool | None = None
    enable_addons: bool | None = None
    annotations: dict[str, str] | None = None
    preemptible: bool = False
    skip_shape_validation: bool = False
    accept_shapeless_risk: bool = False
    expected_deployment_shape: str | None = None

    def __post_init__(self) -> None:
        self.deployment_id = validate_deployment_id(self.deployment_id)
        self.base_model = validate_base_model(self.base_model)
        if self.deployment_shape is not None:
            self.deployment_shape = validate_deployment_shape(self.deployment_shape)
        if self.region is not None:
            self.region = choice(self.region, "region", REGIONS)
        self.min_replica_count = check_int(self.min_replica_count, "min_replica_count", 0)
        self.max_replica_count = check_int(self.max_replica_count, "max_replica_count", 0)
        if self.min_replica_count > self.max_replica_count:
            raise FireworksValidationError(
                "max_replica_count",
                f"must be >= min_replica_count ({self.min_replica_count}), got {self.max_replica_count}",
            )
        if self.hot_load_bucket_type is not None:
            self.hot_load_bucket_type = choice(
                self.hot_load_bucket_type, "hot_load_bucket_type", HOT_LOAD_BUCKET_TYPES
            )
        if self.hot_load_trainer_job is not None:
            self.hot_load_trainer_job = validate_trainer_job(self.hot_load_trainer_job)
        self._validate_bucket()
        if self.hot_load_transition_type is not None:
            self.hot_load_transition_type = choice(
                self.hot_load_transition_type, "hot_load_transition_type", HOT_LOAD_TRANSITION_TYPES
            )
        for name in _BOOL_FIELDS:
            value = getattr(self, name)
            if value is not None or name not in _OPTIONAL_BOOL_FIELDS:
                check_bool(value, name)
        if self.extra_args is not None:
            if (
                isinstance(self.extra_args, str)
                or not isinstance(self.extra_args, Sequence)
                or not all(isinstance(a, str) for a in self.extra_args)
            ):
                raise FireworksValidationError(
                    "extra_args", "must be a list of strings, e.g. ['--flag', 'value']"
                )
            self.extra_args = [part for arg in self.extra_args for part in arg.split()]
        if self.extra_values is not None:
            self.extra_values = check_str_map(self.extra_values, "extra_values")
        if self.annotations is not None:
            self.annotations = check_str_map(self.annotations, "annotations")
        if self.description is not None and not isinstance(self.description, str):
            raise FireworksValidationError("description", f"must be a string, got {self.description!r}")
        self._validate_hardware()
        self._validate_windows()

    def _validate_hardware(self) -> None:
        if self.accept_shapeless_risk and self.deployment_shape is not None:
            raise FireworksValidationError(
                "accept_shapeless_risk",
                "must not be set together with deployment_shape (it is for deployments without a shape)",
            )
        if self.expected_deployment_shape is not None and (
            not isinstance(self.expected_deployment_shape, str)
            or self.expected_deployment_shape.strip() != (self.deployment_shape or "")
        ):
            raise FireworksValidationError(
                "expected_deployment_shape",
                f"is {self.expected_deployment_shape!r} but deployment_shape is {self.deployment_shape!r}; "
                "they must match (a guard against launching on the wrong shape)",
            )
        if self.accelerator_type is not None:
            if self.deployment_shape is not None:
                raise FireworksValidationError(
                    "accelerator_type",
                    "must not be set together with deployment_shape (the shape owns the hardware); "
                    "drop one of them",
                )
            self.accelerator_type = choice(self.accelerator_type, "accelerator_type", ACCELERATOR_TYPES)
        if self.accelerator_count is not None:
            if self.deployment_shape is not None:
                raise FireworksValidationError(
                    "accelerator_count",
                    "must not be set together with deployment_shape (the shape owns the hardware); "
                    "drop one of them",
                )
            self.accelerator_count = check_int(self.accelerator_count, "accelerator_count", 1)

    def _validate_bucket(self) -> None:
        """A bring-your-own bucket (S3, MinIO, Nebius) needs its URL, and only those types take one;
        it is the deployment-owned scope, so it cannot be combined with a trainer's bucket."""
        url, kind = self.hot_load_bucket_url, self.hot_load_bucket_type
        if url is None:
            if kind in EXTERNAL_BUCKET_TYPES:
                raise FireworksValidationError(
                    "hot_load_bucket_url",
                    f"is required with hot_load_bucket_type {kind}, e.g. 's3://bucket/path' "
                    "(no trailing slash)",
                )
            return
        if not isinstance(url, str) or not _BUCKET_URL_RE.fullmatch(url.strip()):
            raise FireworksValidationError(
                "hot_load_bucket_url",
                f"{url!r} must be a bucket URI such as 's3://bucket/path' or 'gs://bucket/path' without a "
                "trailing slash",
            )
        if kind not in EXTERNAL_BUCKET_TYPES:
            raise FireworksValidationError(
                "hot_load_bucket_type",
                f"is {kind!r}, but a hot_load_bucket_url needs one of "
                f"{', '.join(sorted(EXTERNAL_BUCKET_TYPES))} (FW_HOSTED buckets are managed by Fireworks)",
            )
        if self.hot_load_trainer_job is not None:
            raise FireworksValidationError(
                "hot_load_bucket_url",
                "cannot be combined with hot_load_trainer_job: a deployment linked to a trainer uses the "
                "trainer's bucket; drop one of them",
            )
        self.hot_load_bucket_url = url.strip()

    def _validate_windows(self) -> None:
        if self.scale_up_window_s is not None:
            self.scale_up_window_s = check_seconds(self.scale_up_window_s, "scale_up_window_s")
        if self.scale_down_window_s is not None:
            self.scale_down_window_s = check_seconds(self.scale_down_window_s, "scale_down_window_s")
        if self.scale_to_zero_window_s is not None:
            self.scale_to_zero_window_s = check_seconds(
                self.scale_to_zero_window_s, "scale_to_zero_window_s", minimum=MIN_SCALE_TO_ZERO_WINDOW_S
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeploymentConfig:
        """Build from a (templated) mapping; numeric and boolean strings are converted."""
        return config_from_dict(cls, data, "deployment config")

    def to_request_body(self) -> dict[str, Any]:
        """The create body, camelCase, keys in the order the service documents."""
        body: dict[str, Any] = {
            "baseModel": self.base_model,
            "description": self.description or DEFAULT_DESCRIPTION,
            "minReplicaCount": self.min_replica_count,
            "maxReplicaCount": self.max_replica_count,
            "enableHotLoad": self.enable_hot_load,
            "forTraining": self.for_training,
        }
        if self.region:
            body["placement"] = {"region": self.region}
        if self.hot_load_bucket_type:
            body["hotLoadBucketType"] = self.hot_load_bucket_type
        if self.hot_load_bucket_url:
            body["hotLoadBucketUrl"] = self.hot_load_bucket_url
        if self.hot_load_trainer_job:
            body["hotLoadTrainerJob"] = self.hot_load_trainer_job
        if self.hot_load_transition_type:
            body["hotLoadTransitionType"] = self.hot_load_transition_type
        if self.deployment_shape:
            body["deploymentShape"] = self.deployment_shape
        else:
            body["acceleratorType"] = self.accelerator_type or DEFAULT_ACCELERATOR_TYPE
            if self.accelerator_count is not None:
                body["acceleratorCount"] = self.accelerator_count
        if self.extra_args:
            body["extraArgs"] = list(self.extra_args)
        if self.extra_values:
            body["extraValues"] = dict(self.extra_values)
        if self.annotations:
            body["annotations"] = dict(self.annotations)
        autoscaling: dict[str, str] = {}
        for attr, key in (
            ("scale_up_window_s", "scaleUpWindow"),
            ("scale_down_window_s", "scaleDownWindow"),
            ("scale_to_zero_window_s", "scaleToZeroWindow"),
        ):
            value = getattr(self, attr)
            if value is not None:
                autoscaling[key] = proto_duration(value)
        if autoscaling:
            body["autoscalingPolicy"] = autoscaling
        if self.long_prompt is not None:
            body["autoTune"] = {"longPrompt": self.long_prompt}
        if self.enable_addons is not None:
            body["enableAddons"] = self.enable_addons
        if self.preemptible:
            body["preemptible"] = True
        return body

    def to_query_params(self) -> dict[str, str]:
        """Query parameters of the create call."""
        params = {"deploymentId": self.deployment_id}
        for flag, name in (
            (self.skip_shape_validation, "skipShapeValidation"),
            (self.accept_shapeless_risk, "acceptShapelessRisk"),
            (self.disable_speculative_decoding, "disableSpeculativeDecoding"),
        ):
            if flag:
                params[name] = "true"
        return params


# --- DeploymentInfo ---------------------------------------------------------------------------


def _opt_str(body: Mapping[str, Any], snake: str, camel: str) -> str | None:
    """Optional string field, camelCase or snake_case; empty -> None."""
    return typed_field(body, snake, camel, str, "deployment response") or None


def _opt_int(body: Mapping[str, Any], snake: str, camel: str) -> int | None:
    """Optional integer field, camelCase or snake_case."""
    value: int | None = typed_field(body, snake, camel, int, "deployment response")
    return value


def _status_message(body: Mapping[str, Any]) -> str | None:
    status = body.get("status")
    if status is None:
        return None
    message = status.get("message") if isinstance(status, Mapping) else status
    if message is not None and not isinstance(message, str):
        raise FireworksError(
            f"deployment response field 'status.message' should be a string, got {message!r}"
        )
    return message or None


@dataclass
class DeploymentInfo:
    """A deployment as the control plane reports it (``raw`` keeps the full response)."""

    deployment_id: str
    name: str
    state: DeploymentState
    hot_load_bucket_url: str | None = None
    hot_load_trainer_job: str | None = None
    hot_load_transition_type: str | None = None
    deployment_shape_version: str | None = None
    inference_model: str | None = None
    base_model: str | None = None
    replica_count: int | None = None
    min_replica_count: int | None = None
    max_replica_count: int | None = None
    status_message: str | None = None
    desired_replica_count: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_response(
        cls, body: Mapping[str, Any], account_id: str, *, deployment_id: str | None = None
    ) -> DeploymentInfo:
        """Parse a deployment resource (camelCase or snake_case keys).

        ``deployment_id`` is taken from ``name``, or from the argument when the name is missing.
        """
        if not isinstance(body, Mapping):
            raise FireworksError(f"deployment response should be a JSON object, got {type(body).__name__}")
        name = _opt_str(body, "name", "name") or ""
        dep_id = name.rsplit("/", 1)[-1] if name else (deployment_id or "")
        state_value = body.get("state")
        if state_value is not None and not isinstance(state_value, str):
            raise FireworksError(f"deployment response field 'state' should be a string, got {state_value!r}")
        transition = _opt_str(body, "hot_load_transition_type", "hotLoadTransitionType")
        if transition is not None and transition.upper() in _UNSET_TRANSITION:
            transition = None
        return cls(
            deployment_id=dep_id,
            name=name,
            state=DeploymentState(state_value) if state_value else DeploymentState.UNKNOWN,
            hot_load_bucket_url=_opt_str(body, "hot_load_bucket_url", "hotLoadBucketUrl"),
            hot_load_trainer_job=_opt_str(body, "hot_load_trainer_job", "hotLoadTrainerJob"),
            hot_load_transition_type=transition,
            deployment_shape_version=_opt_str(body, "deployment_shape", "deploymentShape"),
            inference_model=deployment_name(account_id, dep_id) if dep_id else None,
            base_model=_opt_str(body, "base_model", "baseModel"),
            replica_count=_opt_int(body, "replica_count", "replicaCount"),
            min_replica_count=_opt_int(body, "min_replica_count", "minReplicaCount"),
            max_replica_count=_opt_int(body, "max_replica_count", "maxReplicaCount"),
            status_message=_status_message(body),
            desired_replica_count=_opt_int(body, "desired_replica_count", "desiredReplicaCount"),
            raw=dict(body),
        )

    def availability(self) -> Availability:
        """Whether the deployment can serve now, and if not, what would make it serve.

        Counts the server leaves out are read as 0, as protobuf JSON omits zero values; an
        unknown replica count on a READY deployment counts as serving.
        """
        if self.state.is_failed():
            return Availability.FAILED
        if self.state is DeploymentState.CREATING:
            return Availability.STARTING
        if not self.max_replica_count:
            return Availability.SCALED_TO_ZERO
        if self.replica_count is None or self.replica_count > 0:
            return Availability.SERVING if self.state.is_serving() else Availability.STARTING
        if self.state is DeploymentState.UPDATING:
            return Availability.STARTING
        return Availability.AT_ZERO

    def describe(self) -> str:
        """State and replica counts in one line, for logs and error messages."""
        return (
            f"{self.state.value}, {self.replica_count if self.replica_count is not None else '?'} "
            f"replica(s) serving (desired {_or_unknown(self.desired_replica_count)}, "
            f"min {self.min_replica_count or 0}, max {self.max_replica_count or 0})"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary for XCom (no ``raw``)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "raw"}
        data["state"] = self.state.value
        return data


def _or_unknown(value: int | None) -> str:
    return "?" if value is None else str(value)


class Availability(StrEnum):
    """Can a deployment serve inference now? The one answer the waits, hotload and sampling use."""

    SERVING = "serving"
    """At least one replica serves (READY or UPDATING)."""
    STARTING = "starting"
    """CREATING, or UPDATING with no replica yet: wait."""
    AT_ZERO = "at_zero"
    """READY with zero replicas while ``maxReplicaCount`` allows more (idle scale-to-zero, or a
    cold start underway): an inference request wakes it."""
    SCALED_TO_ZERO = "scaled_to_zero"
    """``maxReplicaCount`` is 0: scaled to zero on purpose; nothing wakes it but new replica counts."""
    FAILED = "failed"
    """FAILED, DELETING or DELETED: it will not serve again."""


# --- Hotload status ---------------------------------------------------------------------------


@dataclass
class ReplicaHotloadStatus:
    """One replica's hot-load state."""

    current_snapshot_identity: str | None = None
    readiness: bool = False
    stage: str = "unknown"
    target_snapshot_identity: str | None = None
    loaded_adapters: list[dict[str, Any]] = field(default_factory=list)
    stage_message: str | None = None

    def serves(self, identity: str) -> bool:
        """True when this replica is ready and serves ``identity`` (as base or loaded adapter)."""
        if not self.readiness:
            return False
        if self.current_snapshot_identity == identity:
            return True
        return any(
            a.get("identity") == identity and a.get("status") == "loaded" for a in self.loaded_adapters
        )

    def describe(self) -> str:
        return (
            f"stage {self.stage}, current {self.current_snapshot_identity!r}, "
            f"target {self.target_snapshot_identity!r}, readiness {self.readiness}"
        )


@dataclass(frozen=True)
class HotloadProgress:
    """Outcome of comparing a status with the identity being loaded."""

    outcome: Literal["ready", "failed", "pending"]
    message: str


def _replica_from(item: Any, index: int) -> ReplicaHotloadStatus:
    if not isinstance(item, Mapping):
        raise FireworksError(f"hotload status field 'replicas[{index}]' should be an object, got {item!r}")
    current = item.get("current_snapshot_identity")
    if current is not None and not isinstance(current, str):
        raise FireworksError(
            f"hotload status field 'replicas[{index}].current_snapshot_identity' "
            f"should be a string, got {current!r}"
        )
    readiness = item.get("readiness", False)
    if not isinstance(readiness, bool):
        raise FireworksError(
            f"hotload status field 'replicas[{index}].readiness' should be a bool, got {readiness!r}"
        )
    loading = item.get("loading_state") or {}
    if not isinstance(loading, Mapping):
        raise FireworksError(f"hotload status field 'replicas[{index}].loading_state' should be an object")
    stage = loading.get("stage") or "unknown"
    target = loading.get("target_snapshot_identity")
    message = loading.get("message") or loading.get("error")
    adapters = item.get("loaded_adapters") or []
    if not isinstance(adapters, list) or not all(isinstance(a, Mapping) for a in adapters):
        raise FireworksError(
            f"hotload status field 'replicas[{index}].loaded_adapters' should be a list of objects"
        )
    return ReplicaHotloadStatus(
        current_snapshot_identity=current or None,
        readiness=readiness,
        stage=str(stage),
        target_snapshot_identity=str(target) if target is not None else None,
        loaded_adapters=[dict(a) for a in adapters],
        stage_message=str(message) if message is not None else None,
    )


@dataclass
class HotloadStatus:
    """Hot-load status of every replica of a deployment."""

    replicas: list[ReplicaHotloadStatus]
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_response(cls, body: Any) -> HotloadStatus:
        """Parse the status body; a missing or non-list ``replicas`` is an error."""
        if not isinstance(body, Mapping):
            raise FireworksError(f"hotload status should be a JSON object, got {type(body).__name__}")
        replicas = body.get("replicas")
        if not isinstance(replicas, list):
            raise FireworksError(
                "hotload status has no 'replicas' list; is hot load enabled on this deployment?"
            )
        return cls(replicas=[_replica_from(item, i) for i, item in enumerate(replicas)], raw=dict(body))

    @property
    def current_identities(self) -> list[str | None]:
        """The snapshot identity each replica currently serves."""
        return [r.current_snapshot_identity for r in self.replicas]

    def is_loading(self, identity: str) -> bool:
        """True when a load of ``identity`` is underway (queued or in a stage) and not yet served
        everywhere: a retried task waits for it instead of sending it again."""
        underway = any(
            r.target_snapshot_identity == identity and r.stage not in ("error", "unknown", "ready")
            for r in self.replicas
        )
        return underway and self.evaluate(identity).outcome == "pending"

    def chain_break(self, previous_identity: str) -> str | None:
        """Why a delta on ``previous_identity`` cannot be applied, or None when every replica (at
        least one) serves exactly that identity."""
        if not self.replicas:
            return "no replica is running, so the identity it serves cannot be checked"
        others = [
            f"replica {i} serves {r.current_snapshot_identity or 'the base model (no snapshot)'!r}"
            for i, r in enumerate(self.replicas)
            if r.current_snapshot_identity != previous_identity
        ]
        return "; ".join(others) or None

    def evaluate(self, expected_identity: str) -> HotloadProgress:
        """ready: every replica (at least one) is ready and serves ``expected_identity``;
        failed: a replica reports stage ``error`` for that identity; otherwise pending
        (errors for other identities are stale and ignored)."""
        if self.replicas and all(r.serves(expected_identity) for r in self.replicas):
            return HotloadProgress("ready", f"{len(self.replicas)} replica(s) serve {expected_identity!r}")
        for index, replica in enumerate(self.replicas):
            if replica.stage == "error" and replica.target_snapshot_identity == expected_identity:
                detail = f": {replica.stage_message}" if replica.stage_message else ""
                message = f"hotload of {expected_identity!r} failed on replica {index} ({replica.describe()})"
                return HotloadProgress("failed", message + detail)
        if not self.replicas:
            return HotloadProgress("pending", f"waiting for {expected_identity!r}: no replicas reported yet")
        states = "; ".join(f"replica {i}: {r.describe()}" for i, r in enumerate(self.replicas))
        return HotloadProgress("pending", f"waiting for {expected_identity!r}: {states}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary (no ``raw``)."""
        return {"replicas": [dataclasses.asdict(r) for r in self.replicas]}
