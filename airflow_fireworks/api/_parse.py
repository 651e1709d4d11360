"""Parsing shared by the typed records of ``models`` and ``trainer_models``: checked strings and
choices, protobuf durations, configs built from rendered templates, and fields read from a
response. Each check raises ``FireworksValidationError`` naming the field (no Airflow)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any, TypeVar

from airflow_fireworks.api.errors import FireworksError, FireworksValidationError

_T = TypeVar("_T")
_INT_TEXT = re.compile(r"[+-]?\d+")
_UNSET_TEXT = ("", "none", "null")


def require_str(value: Any, field: str, what: str = "string") -> str:
    """A non-empty string, stripped."""
    if not isinstance(value, str) or not value.strip():
        raise FireworksValidationError(field, f"must be a non-empty {what}, got {value!r}")
    return value.strip()


def matching(value: Any, field: str, pattern: re.Pattern[str], advice: str, what: str = "string") -> str:
    """A non-empty string (stripped) that ``pattern`` matches whole; else the error quotes the
    value followed by ``advice``."""
    text = require_str(value, field, what)
    if not pattern.fullmatch(text):
        raise FireworksValidationError(field, f"{text!r} {advice}")
    return text


def choice(value: Any, field: str, choices: frozenset[str], advice: str | None = None) -> str:
    """One of ``choices``, compared in upper case; ``advice`` replaces the list in the error."""
    text = require_str(value, field).upper()
    if text not in choices:
        raise FireworksValidationError(
            field, f"{value!r} {advice or 'is not one of ' + ', '.join(sorted(choices))}"
        )
    return text


def proto_duration(seconds: float) -> str:
    """Seconds as a protobuf JSON duration: ``300s``, ``1.5s`` (at most nine decimals)."""
    if float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{seconds:.9f}".rstrip("0") + "s"


def _coerced(annotation: Any, value: str) -> Any:
    """``value`` (a rendered string) as the type ``annotation`` names, when it reads as one."""
    kinds = {part.strip() for part in str(annotation).split("|")}
    if not kinds - {"None"} <= {"bool", "int", "float"}:
        return value  # a text, list or mapping field: strings are its own business
    text = value.strip()
    if "None" in kinds and text.lower() in _UNSET_TEXT:
        return None
    if "bool" in kinds and text.lower() in ("true", "false"):
        return text.lower() == "true"
    if "int" in kinds and _INT_TEXT.fullmatch(text):
        return int(text)
    if "float" in kinds:
        try:
            return float(text)
        except ValueError:
            return value
    return value


def config_from_dict(cls: type[_T], data: Any, what: str) -> _T:
    """Build the config dataclass ``cls`` from a (templated) mapping: unknown keys and missing
    required fields are refused by name, and each string is converted to its field's declared
    type when it reads as one (``"true"``, ``"2"``, ``"0.5"``; ``""``/``"none"`` for optional fields)."""
    if not isinstance(data, Mapping):
        raise FireworksValidationError("config", f"must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in data:
        if key not in fields:
            raise FireworksValidationError(
                str(key), f"unknown {what} key; valid keys: {', '.join(sorted(fields))}"
            )
    for name, spec in fields.items():
        no_default = spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING
        if no_default and data.get(name) is None:
            raise FireworksValidationError(name, "is required")
    return cls(
        **{
            key: _coerced(fields[key].type, value) if isinstance(value, str) else value
            for key, value in data.items()
        }
    )


# --- response fields ----------------------------------------------------------------------------


def pick(body: Mapping[str, Any], snake: str, camel: str) -> Any:
    """A response field by its camelCase name, else its snake_case one."""
    return body[camel] if camel in body else body.get(snake)


def typed_field(body: Mapping[str, Any], snake: str, camel: str, kind: type, what: str) -> Any:
    """An optional field of type ``kind`` (bools are not ints); a wrong type is a ``FireworksError``
    naming the field of ``what`` (e.g. "deployment response")."""
    value = pick(body, snake, camel)
    if value is None:
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise FireworksError(f"{what} field {camel!r} should be {_ARTICLE[kind]}, got {value!r}")
    return value


_ARTICLE = {str: "a string", int: "an integer"}


def text_or_none(value: Any) -> str | None:
    """A non-empty string (stripped), else None: how a lenient reader takes an optional text."""
    return value.strip() or None if isinstance(value, str) else None
