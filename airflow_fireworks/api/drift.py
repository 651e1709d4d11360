"""Config drift: how an existing deployment differs from the ``DeploymentConfig`` a task asks for.

A scheduled pipeline creates "the same" deployment every run. Between runs its own teardown, a
person or the platform may have changed it. ``config_drift`` compares field by field and sorts
each difference into mutable (one PATCH with an exact update mask fixes it) or immutable (only a
recreation or a new deployment id does). Fields the config leaves unset are not compared (the
task has no opinion on them), nor are fields the server does not report.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from airflow_fireworks.api._parse import proto_duration
from airflow_fireworks.api.errors import FireworksValidationError
from airflow_fireworks.api.models import DeploymentConfig, DeploymentInfo, camel_to_snake

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(s|m|h)")
_DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class FieldDrift:
    """One field whose current value differs from the requested one."""

    field: str
    """The ``DeploymentConfig`` field name (also the operator parameter)."""
    wire_path: tuple[str, ...]
    """Where it lives in the camelCase resource, e.g. ``("autoscalingPolicy", "scaleUpWindow")``."""
    current: Any
    requested: Any
    mutable: bool
    patch_value: Any = None
    """The value to send (differs from ``requested`` for merged maps and durations)."""

    @property
    def mask_path(self) -> str:
        """The snake_case update-mask path."""
        return ".".join(camel_to_snake(part) for part in self.wire_path)

    def describe(self) -> str:
        """``field: old -> new``."""
        return f"{self.field}: {self.current!r} -> {self.requested!r}"


@dataclass(frozen=True)
class DeploymentDrift:
    """Every difference between a deployment and a config."""

    deployment_id: str
    changes: tuple[FieldDrift, ...]

    @property
    def mutable(self) -> tuple[FieldDrift, ...]:
        return tuple(c for c in self.changes if c.mutable)

    @property
    def immutable(self) -> tuple[FieldDrift, ...]:
        return tuple(c for c in self.changes if not c.mutable)

    def patch_body(self) -> dict[str, Any]:
        """The camelCase PATCH body of the mutable changes (nested where the resource nests)."""
        body: dict[str, Any] = {}
        for change in self.mutable:
            node = body
            for part in change.wire_path[:-1]:
                node = node.setdefault(part, {})
            node[change.wire_path[-1]] = change.patch_value
        return body

    def update_mask(self) -> str:
        """The update mask naming exactly the mutable changes."""
        return ",".join(change.mask_path for change in self.mutable)


def parse_duration_s(value: Any) -> float | None:
    """A protobuf JSON duration (``"3600s"``, also ``"10m"``/``"1h"``) in seconds; None if unreadable."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    match = _DURATION_RE.fullmatch(value.strip()) if isinstance(value, str) else None
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)] if match else None


def _same_shape(current: Any, requested: Any) -> bool:
    """A shape requested without a version matches any version of it."""
    if not isinstance(current, str):
        return False
    return current == requested or (
        "/versions/" not in requested and current.split("/versions/")[0] == requested
    )


@dataclass(frozen=True)
class _Rule:
    field: str
    wire_path: tuple[str, ...]
    mutable: bool
    always: bool = False
    """Compare even when the server omits the field (read as ``missing``; protobuf JSON omits
    zero values, so an absent replica count is 0)."""
    missing: Any = None
    same: Callable[[Any, Any], bool] = lambda current, requested: current == requested


_RULES: tuple[_Rule, ...] = (
    _Rule("base_model", ("baseModel",), mutable=False),
    _Rule("deployment_shape", ("deploymentShape",), mutable=False, same=_same_shape),
    _Rule("accelerator_type", ("acceleratorType",), mutable=False),
    _Rule("accelerator_count", ("acceleratorCount",), mutable=False),
    _Rule("region", ("placement", "region"), mutable=False),
    _Rule("enable_hot_load", ("enableHotLoad",), mutable=False),
    _Rule("preemptible", ("preemptible",), mutable=False),
    _Rule("min_replica_count", ("minReplicaCount",), mutable=True, always=True, missing=0),
    _Rule("max_replica_count", ("maxReplicaCount",), mutable=True, always=True, missing=0),
    _Rule("description", ("description",), mutable=True),
    _Rule("hot_load_trainer_job", ("hotLoadTrainerJob",), mutable=True, always=True),
    _Rule("hot_load_bucket_type", ("hotLoadBucketType",), mutable=True),
    # Whether the service patches a bucket URL in place is not documented: a changed bring-your-own
    # bucket fails before any write (with the force_recreate hint) instead of a PATCH it may refuse.
    _Rule("hot_load_bucket_url", ("hotLoadBucketUrl",), mutable=False),
    _Rule("hot_load_transition_type", ("hotLoadTransitionType",), mutable=True),
    # Fields the public resource type may not echo (fireworks-api.md): compared only when reported,
    # so an unreported field never causes a PATCH (and a replica restart) on every run.
    _Rule("extra_args", ("extraArgs",), mutable=True),
    _Rule("extra_values", ("extraValues",), mutable=True),
    _Rule("enable_addons", ("enableAddons",), mutable=True),
    _Rule("long_prompt", ("autoTune", "longPrompt"), mutable=True),
)
_WINDOWS = (
    ("scale_up_window_s", "scaleUpWindow"),
    ("scale_down_window_s", "scaleDownWindow"),
    ("scale_to_zero_window_s", "scaleToZeroWindow"),
)
_ABSENT = object()


def _lookup(raw: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = raw
    for part in path:
        if not isinstance(node, Mapping) or part not in node:
            return _ABSENT
        node = node[part]
    return node


_WIRE_PATHS: dict[str, tuple[str, ...]] = {
    **{rule.field: rule.wire_path for rule in _RULES if rule.mutable},
    **{field: ("autoscalingPolicy", key) for field, key in _WINDOWS},
    "annotations": ("annotations",),
}


def patch_request(deployment_id: str, fields: Mapping[str, Any]) -> DeploymentDrift:
    """The PATCH that sets ``fields`` (mutable ``DeploymentConfig`` fields, validated by the
    caller) with nothing else: ``.patch_body()`` and ``.update_mask()`` give body and mask."""
    changes: list[FieldDrift] = []
    for field, value in fields.items():
        path = _WIRE_PATHS.get(field)
        if path is None:
            raise FireworksValidationError(
                field, f"cannot be updated in place; mutable fields are {', '.join(sorted(_WIRE_PATHS))}"
            )
        wire_value = proto_duration(value) if path[0] == "autoscalingPolicy" else value
        changes.append(FieldDrift(field, path, None, value, True, wire_value))
    return DeploymentDrift(deployment_id, tuple(changes))


def config_drift(config: DeploymentConfig, info: DeploymentInfo) -> DeploymentDrift:
    """Compare ``info`` (the deployment as the server reports it) with ``config``."""
    raw = info.raw
    changes: list[FieldDrift] = []
    for rule in _RULES:
        requested = getattr(config, rule.field)
        if requested is None:
            continue
        current = _lookup(raw, rule.wire_path)
        if current is _ABSENT:
            if not rule.always:
                continue
            current = rule.missing
        if not rule.same(current, requested):
            changes.append(
                FieldDrift(rule.field, rule.wire_path, current, requested, rule.mutable, requested)
            )
    for field, key in _WINDOWS:
        requested = getattr(config, field)
        if requested is None:
            continue
        current_text = _lookup(raw, ("autoscalingPolicy", key))
        current = parse_duration_s(current_text) if current_text is not _ABSENT else None
        if current != requested:
            changes.append(
                FieldDrift(
                    field, ("autoscalingPolicy", key), current, requested, True, proto_duration(requested)
                )
            )
    reported_annotations = _lookup(raw, ("annotations",))
    if config.annotations and reported_annotations is not _ABSENT:
        current_map = dict(reported_annotations) if isinstance(reported_annotations, Mapping) else {}
        if any(current_map.get(k) != v for k, v in config.annotations.items()):
            merged = {**current_map, **config.annotations}
            changes.append(
                FieldDrift("annotations", ("annotations",), current_map, config.annotations, True, merged)
            )
    return DeploymentDrift(info.deployment_id or config.deployment_id, tuple(changes))
