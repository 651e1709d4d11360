"""The Deployment resource: field table, request validation and camelCase rendering.

Values are kept under their snake_case names (the update-mask paths); the wire uses camelCase.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from airflow_fireworks.emulator.errors import invalid

# The enumerations below deliberately repeat those of ``airflow_fireworks.api.models``: the
# emulator stands for the service and keeps its own copy of the service's accepted values (with
# the *_UNSPECIFIED members the service accepts), so a client-side validation bug cannot be hidden
# by both sides reading one list. Change them when the service's API changes, not with the client.
ACCELERATOR_TYPES = frozenset(
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
DEFAULT_ACCELERATOR_TYPE = "NVIDIA_H100_80GB"
BUCKET_TYPES = frozenset({"BUCKET_TYPE_UNSPECIFIED", "MINIO", "S3", "NEBIUS", "FW_HOSTED"})
TRANSITION_TYPES = frozenset({"HOT_LOAD_TRANSITION_TYPE_UNSPECIFIED", "ASYNC", "SYNC"})
MULTI_REGIONS = frozenset({"MULTI_REGION_UNSPECIFIED", "GLOBAL", "US", "EUROPE", "APAC"})
REGIONS = frozenset(
    [
        "REGION_UNSPECIFIED",
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
    ]
)
PRECISIONS = frozenset(
    [
        "PRECISION_UNSPECIFIED",
        "FP16",
        "FP8",
        "FP8_MM",
        "FP8_AR",
        "FP8_MM_KV_ATTN",
        "FP8_KV",
        "FP8_MM_V2",
        "FP8_V2",
        "FP8_MM_KV_ATTN_V2",
        "NF4",
        "FP4",
        "BF16",
        "FP4_BLOCKSCALED_MM",
        "FP4_MX_MOE",
    ]
)

DEPLOYMENT_ID_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
BASE_MODEL_RE = re.compile(r"^accounts/[^/]+/models/[^/]+$")
TRAINER_JOB_RE = re.compile(r"^accounts/[^/]+/rlorTrainerJobs/[^/]+$")
SHAPE_RE = re.compile(r"^accounts/[^/]+/deploymentShapes/[^/]+(/versions/[^/]+)?$")
DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h)$")
MIN_SCALE_TO_ZERO_S = 300.0

AUTOSCALING_DEFAULTS = {"scale_up_window": 30.0, "scale_down_window": 600.0, "scale_to_zero_window": 3600.0}
AUTOSCALING_WIRE = {
    "scaleUpWindow": "scale_up_window",
    "scaleDownWindow": "scale_down_window",
    "scaleToZeroWindow": "scale_to_zero_window",
    "loadTargets": "load_targets",
}

# Fields the server computes; accepted in a request body and ignored.
OUTPUT_ONLY = frozenset(
    {
        "name",
        "state",
        "status",
        "createTime",
        "updateTime",
        "deleteTime",
        "purgeTime",
        "expireTime",
        "replicaCount",
        "desiredReplicaCount",
        "replicaStats",
        "activeModelVersion",
        "targetModelVersion",
        "createdBy",
        "directRouteHandle",
    }
)


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(part.title() for part in rest)


def snake(path: str) -> str:
    """``hotLoadTrainerJob`` -> ``hot_load_trainer_job`` (snake_case input is returned as is)."""
    return re.sub(r"(?<!^)([A-Z])", r"_\1", path).lower()


Validator = Callable[[str, Any], Any]


def _string(check: re.Pattern[str] | None = None, hint: str = "", max_len: int | None = None) -> Validator:
    def validate(name: str, value: Any) -> Any:
        if not isinstance(value, str):
            raise invalid(f"field '{name}' must be a string, got {value!r}")
        if check is not None and value and not check.match(value):
            raise invalid(f"field '{name}' is malformed: {value!r} (expected {hint})")
        if max_len is not None and len(value) > max_len:
            raise invalid(f"field '{name}' must be at most {max_len} characters")
        return value

    return validate


def _enum(values: frozenset[str]) -> Validator:
    def validate(name: str, value: Any) -> Any:
        if value not in values:
            raise invalid(
                f"field '{name}' has invalid value {value!r}; expected one of {', '.join(sorted(values))}"
            )
        return value

    return validate


def _count(name: str, value: Any) -> Any:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise invalid(f"field '{name}' must be a non-negative integer, got {value!r}")
    return value


def _boolean(name: str, value: Any) -> Any:
    if not isinstance(value, bool):
        raise invalid(f"field '{name}' must be a boolean, got {value!r}")
    return value


def _string_map(name: str, value: Any) -> Any:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise invalid(f"field '{name}' must be an object of string values")
    return dict(value)


def _string_list(name: str, value: Any) -> Any:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise invalid(f"field '{name}' must be a list of strings")
    return list(value)


def _anything(name: str, value: Any) -> Any:
    return value


def parse_duration(name: str, value: Any) -> float:
    """``"30s"`` / ``"10m"`` / ``"1h"`` -> seconds."""
    match = DURATION_RE.match(value) if isinstance(value, str) else None
    if match is None:
        raise invalid(f"field '{name}' must be a duration such as \"30s\", got {value!r}")
    return float(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[match.group(2)]


def format_duration(seconds: float) -> str:
    """Seconds -> protobuf JSON duration text (``"30s"``, ``"1.5s"``)."""
    return f"{int(seconds)}s" if float(seconds).is_integer() else f"{seconds:g}s"


def _autoscaling(name: str, value: Any) -> Any:
    if not isinstance(value, dict):
        raise invalid(f"field '{name}' must be an object")
    policy: dict[str, Any] = {}
    for key, item in value.items():
        inner = AUTOSCALING_WIRE.get(key) or (key if key in AUTOSCALING_WIRE.values() else None)
        if inner is None:
            raise invalid(f"unknown field '{name}.{key}'")
        policy[inner] = _string_map_numbers(f"{name}.{key}", item) if inner == "load_targets" else item
    return validate_autoscaling(name, policy)


def _string_map_numbers(name: str, value: Any) -> dict[str, float]:
    if not isinstance(value, dict) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in value.values()
    ):
        raise invalid(f"field '{name}' must be an object of numbers")
    return dict(value)


def validate_autoscaling(name: str, policy: Mapping[str, Any]) -> dict[str, Any]:
    """Durations parsed to seconds, defaults filled, scale-to-zero window >= 5 minutes."""
    result: dict[str, Any] = dict(AUTOSCALING_DEFAULTS)
    for key, item in policy.items():
        if key == "load_targets":
            result[key] = item
        else:
            result[key] = item if isinstance(item, float) else parse_duration(f"{name}.{_camel(key)}", item)
    if result["scale_to_zero_window"] < MIN_SCALE_TO_ZERO_S:
        raise invalid(
            f"field '{name}.scaleToZeroWindow' must be at least 5m, got {result['scale_to_zero_window']:g}s"
        )
    return result


def _placement(name: str, value: Any) -> Any:
    if not isinstance(value, dict) or len(value) != 1:
        raise invalid(f"field '{name}' must be an object with exactly one of region, multiRegion, regions")
    ((key, item),) = value.items()
    if key == "region":
        _enum(REGIONS)(f"{name}.region", item)
    elif key == "multiRegion":
        _enum(MULTI_REGIONS)(f"{name}.multiRegion", item)
    elif key == "regions":
        if not isinstance(item, list) or not item:
            raise invalid(f"field '{name}.regions' must be a non-empty list")
        for region in item:
            _enum(REGIONS)(f"{name}.regions", region)
    else:
        raise invalid(f"unknown field '{name}.{key}'")
    return dict(value)


@dataclass(frozen=True)
class FieldSpec:
    """One Deployment field: validation, default, and whether PATCH may change it."""

    snake: str
    validate: Validator
    default: Callable[[], Any] = lambda: None
    mutable: bool = True
    serving: bool = True

    @property
    def camel(self) -> str:
        return _camel(self.snake)


FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("display_name", _string(max_len=63), lambda: "", serving=False),
    FieldSpec("description", _string(), lambda: "", serving=False),
    FieldSpec("base_model", _string(BASE_MODEL_RE, "accounts/<account>/models/<model>"), mutable=False),
    FieldSpec(
        "deployment_shape",
        _string(SHAPE_RE, "accounts/<a>/deploymentShapes/<s>[/versions/<v>]"),
        mutable=False,
    ),
    FieldSpec("accelerator_type", _enum(ACCELERATOR_TYPES), mutable=False),
    FieldSpec("accelerator_count", _count, mutable=False),
    FieldSpec("precision", _enum(PRECISIONS)),
    FieldSpec("min_replica_count", _count, lambda: 0),
    FieldSpec("max_replica_count", _count),
    FieldSpec("autoscaling_policy", _autoscaling, lambda: dict(AUTOSCALING_DEFAULTS)),
    FieldSpec("placement", _placement, mutable=False),
    FieldSpec("region", _enum(REGIONS), mutable=False),
    FieldSpec("enable_hot_load", _boolean, lambda: False, mutable=False),
    FieldSpec("for_training", _boolean, lambda: False, mutable=False),
    FieldSpec("hot_load_bucket_type", _enum(BUCKET_TYPES)),
    FieldSpec("hot_load_bucket_url", _string()),
    FieldSpec("hot_load_trainer_job", _string(TRAINER_JOB_RE, "accounts/<account>/rlorTrainerJobs/<job>")),
    FieldSpec("hot_load_transition_type", _enum(TRANSITION_TYPES)),
    FieldSpec("max_context_length", _count),
    FieldSpec("annotations", _string_map, dict, serving=False),
    FieldSpec("extra_args", _string_list),
    FieldSpec("extra_values", _string_map),
    FieldSpec("preemptible", _boolean, lambda: False, mutable=False),
    FieldSpec("enable_session_affinity", _boolean),
    FieldSpec("enable_addons", _boolean),
    FieldSpec("enable_mtp", _boolean),
    FieldSpec("enable_hot_reload_latest_addon", _boolean),
    FieldSpec("draft_model", _string()),
    FieldSpec("draft_token_count", _count),
    FieldSpec("ngram_speculation_length", _count),
    FieldSpec("num_peft_device_cached", _count),
    FieldSpec("max_with_revocable_replica_count", _count),
    FieldSpec("direct_route_type", _string()),
    FieldSpec("direct_route_api_keys", _string_list),
    FieldSpec("disable_deployment_size_validation", _boolean),
    FieldSpec("deployment_template", _string()),
    FieldSpec("pricing_plan_id", _string()),
    FieldSpec("cluster", _string(), mutable=False),
    FieldSpec("auto_tune", _anything),
)
FIELDS_BY_SNAKE = {spec.snake: spec for spec in FIELDS}
FIELDS_BY_CAMEL = {spec.camel: spec for spec in FIELDS}


def parse_body(body: Any) -> dict[str, Any]:
    """Validate a camelCase Deployment body field by field -> ``{snake_name: value}``."""
    if not isinstance(body, dict):
        raise invalid("request body must be a JSON object (a Deployment)")
    values: dict[str, Any] = {}
    for key, value in body.items():
        if key in OUTPUT_ONLY:
            continue
        spec = FIELDS_BY_CAMEL.get(key) or FIELDS_BY_SNAKE.get(key)
        if spec is None:
            raise invalid(f"Invalid JSON payload: unknown field '{key}' in Deployment")
        if value is None:
            continue
        values[spec.snake] = spec.validate(key, value)
    return values


def check_replicas(values: Mapping[str, Any]) -> None:
    """min <= max (max defaults to max(min, 1))."""
    minimum = values.get("min_replica_count") or 0
    maximum = values.get("max_replica_count")
    if maximum is not None and minimum > maximum:
        raise invalid(f"minReplicaCount ({minimum}) must not exceed maxReplicaCount ({maximum})")


def creation_values(body: Any, accept_shapeless_risk: bool) -> dict[str, Any]:
    """Validate a create body and fill defaults."""
    values = parse_body(body)
    if not values.get("base_model"):
        raise invalid("field 'baseModel' is required (e.g. accounts/fireworks/models/qwen3-8b)")
    if values.get("deployment_shape"):
        if values.get("accelerator_type") is not None:
            raise invalid(
                "acceleratorType must not be set together with deploymentShape "
                "(the shape owns the accelerator)"
            )
        if accept_shapeless_risk:
            raise invalid("acceptShapelessRisk and deploymentShape are mutually exclusive")
    elif values.get("accelerator_type") is None:
        values["accelerator_type"] = DEFAULT_ACCELERATOR_TYPE
    check_replicas(values)
    for spec in FIELDS:
        if spec.snake not in values:
            values[spec.snake] = spec.default()
    if values.get("max_replica_count") is None:
        values["max_replica_count"] = max(values["min_replica_count"], 1)
    if values.get("accelerator_count") is None and not values.get("deployment_shape"):
        values["accelerator_count"] = 1
    return values


def parse_mask(raw: str) -> list[str]:
    """``a,b.c`` -> validated snake_case paths; raises 400 for unknown or immutable paths."""
    paths: list[str] = []
    for item in raw.split(","):
        path = item.strip()
        if not path:
            continue
        top, _, sub = snake(path).partition(".")
        spec = FIELDS_BY_SNAKE.get(top)
        if spec is None:
            raise invalid(f"updateMask path '{path}' is not a Deployment field")
        if not spec.mutable:
            raise invalid(f"updateMask path '{path}': field '{spec.camel}' cannot be updated")
        if sub and (top != "autoscaling_policy" or sub not in AUTOSCALING_WIRE.values()):
            raise invalid(f"updateMask path '{path}' is not a Deployment field")
        paths.append(f"{top}.{sub}" if sub else top)
    if not paths:
        raise invalid("updateMask is empty")
    return paths


def rfc3339(epoch_s: float) -> str:
    """Wall-clock seconds -> ``2024-01-02T03:04:05.678Z``."""
    moment = datetime.fromtimestamp(epoch_s, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def render_fields(values: Mapping[str, Any]) -> dict[str, Any]:
    """The stored fields as camelCase JSON (unset fields omitted)."""
    out: dict[str, Any] = {}
    for spec in FIELDS:
        value = values.get(spec.snake)
        if value is None:
            continue
        if spec.snake == "autoscaling_policy":
            value = {
                _camel(key): (item if key == "load_targets" else format_duration(item))
                for key, item in value.items()
            }
        out[spec.camel] = value
    return out
