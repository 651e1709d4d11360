"""Checks of caller input shared by the client, the sampler and the operators (no Airflow).

Each check returns the value (normalised) or raises ``FireworksValidationError`` naming the field,
so that bad input fails before any request is sent. ``parse_str=True`` also accepts numeric
strings, which is what a rendered template gives.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from contextlib import suppress
from typing import Any

from airflow_fireworks.api.errors import FireworksValidationError


def check_int(value: Any, field: str, low: int, high: int | None = None, *, parse_str: bool = False) -> int:
    """An integer in ``[low, high]`` (no upper bound when ``high`` is None); bools are refused."""
    if parse_str and isinstance(value, str):
        with suppress(ValueError):
            value = int(value.strip())
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < low
        or (high is not None and value > high)
    ):
        bounds = f">= {low}" if high is None else f"between {low} and {high}"
        raise FireworksValidationError(field, f"must be an integer {bounds}, got {value!r}")
    return value


def check_number(
    value: Any, field: str, low: float, high: float, *, low_open: bool = False, parse_str: bool = False
) -> float:
    """A number in ``[low, high]`` (``(low, high]`` with ``low_open``), as a float; NaN is refused."""
    if parse_str and isinstance(value, str):
        with suppress(ValueError):
            value = float(value)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not low <= value <= high
        or (low_open and value == low)
    ):
        bounds = f"{'(' if low_open else '['}{low}, {high}]"
        raise FireworksValidationError(field, f"must be a number in {bounds}, got {value!r}")
    return float(value)


def check_seconds(value: Any, field: str, *, minimum: float = 0.0, positive: bool = False) -> float:
    """A finite duration in seconds, ``>= minimum`` (and ``> 0`` with ``positive``), as a float."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < minimum
        or (positive and value == 0)
    ):
        bound = "> 0" if positive else f">= {minimum:g}"
        raise FireworksValidationError(field, f"must be a number of seconds {bound}, got {value!r}")
    return float(value)


def check_bool(value: Any, field: str) -> bool:
    """``True`` or ``False`` (no truthy stand-ins such as 1 or "yes")."""
    if not isinstance(value, bool):
        raise FireworksValidationError(field, f"must be true or false, got {value!r}")
    return value


def check_str_map(value: Any, field: str) -> dict[str, str]:
    """A mapping of strings to strings, copied."""
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise FireworksValidationError(field, "must be a mapping of strings to strings")
    return dict(value)


def is_inference_model(name: str) -> bool:
    """True for an inference model name: ``accounts/<a>/deployments/<d>`` or ``<model>#<deployment>``."""
    if "#" in name:
        base, _, deployment = name.partition("#")
        return bool(base.strip()) and bool(deployment.strip())
    parts = name.split("/")
    return len(parts) == 4 and parts[0] == "accounts" and parts[2] == "deployments" and all(parts)
