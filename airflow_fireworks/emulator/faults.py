"""Scriptable faults: rules matched per route and deployment, with seeded probabilities."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any

from airflow_fireworks.emulator.errors import ApiError, invalid

ROUTES = frozenset(
    {
        "accounts",
        "list",
        "get",
        "create",
        "update",
        "delete",
        "hotload_load",
        "hotload_status",
        "completions",
        "trainer_list",
        "trainer_create",
        "trainer_get",
        "trainer_delete",
        "trainer_action",
        "trainer_health",
        "trainer_checkpoints",
        "trainer_promote",
        "operations",
        "models",
        "training_shapes",
        "*",
    }
)
STREAM_KINDS = frozenset({"reset_mid_stream", "truncate", "malformed_chunk", "stream_error", "finish_error"})
KINDS = frozenset({"status", "delay", "reset", "body"}) | STREAM_KINDS
#: Where a ``late`` delay rule leaves its delay on the request, for the middleware to wait it out
#: after the handler has acted.
LATE_ANSWER_KEY = "late_answer_s"
DEFAULT_MESSAGES = {
    "status": "injected fault",
    "delay": "",
    "reset": "",
    "reset_mid_stream": "",
    "truncate": "",
    "malformed_chunk": "",
    "stream_error": "injected upstream stream error",
    "finish_error": "injected finish error",
    "body": "",
}


@dataclass
class FaultRule:
    """One rule of ``POST /_emulator/faults`` (fields documented in ``docs/emulator.md``)."""

    id: str
    route: str = "*"
    deployment_id: str | None = None
    kind: str = "status"
    status: int = 503
    retry_after_s: float | None = None
    delay_s: float = 0.0
    late: bool = False
    times: int | None = 1
    probability: float = 1.0
    after_chunks: int = 1
    message: str = ""
    body: Any = None
    hits: int = 0

    def exhausted(self) -> bool:
        return self.times is not None and self.hits >= self.times


class CannedAnswer(ApiError):
    """The answer of a ``body`` fault: its status with its JSON body exactly as given."""

    def __init__(self, status: int, canned: Any) -> None:
        super().__init__(status, "canned answer")
        self.canned = canned

    def body(self) -> Any:
        return self.canned


def _number(body: dict[str, Any], key: str, default: Any, minimum: float, integer: bool = False) -> Any:
    value: Any = body.get(key, default)
    if value is None and default is None:
        return None
    wrong_type = isinstance(value, bool) or not isinstance(value, int | float)
    if wrong_type or (integer and not isinstance(value, int)) or value < minimum:
        kind = "an integer" if integer else "a number"
        raise invalid(f"fault field '{key}' must be {kind} >= {minimum}, got {value!r}")
    return value


class Faults:
    """The rule list and its seeded random source."""

    def __init__(self, seed: int) -> None:
        self.rules: list[FaultRule] = []
        self._rng = random.Random(seed)
        self._next_id = 1

    def reseed(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def add(self, body: Any) -> FaultRule:
        """Validate and append a rule (400 on a bad field)."""
        if not isinstance(body, dict):
            raise invalid("fault rule must be a JSON object")
        unknown = set(body) - {name for name in FaultRule.__dataclass_fields__ if name not in ("id", "hits")}
        if unknown:
            raise invalid(f"unknown fault field(s): {', '.join(sorted(unknown))}")
        route = body.get("route", "*")
        if route not in ROUTES:
            raise invalid(f"fault field 'route' must be one of {', '.join(sorted(ROUTES))}, got {route!r}")
        kind = body.get("kind", "status")
        if kind not in KINDS:
            raise invalid(f"fault field 'kind' must be one of {', '.join(sorted(KINDS))}, got {kind!r}")
        deployment_id = body.get("deployment_id")
        if deployment_id is not None and (not isinstance(deployment_id, str) or not deployment_id):
            raise invalid("fault field 'deployment_id' must be a non-empty string or null")
        message = body.get("message", DEFAULT_MESSAGES[kind])
        if not isinstance(message, str):
            raise invalid("fault field 'message' must be a string")
        if kind == "body" and "body" not in body:
            raise invalid("fault kind 'body' needs a 'body' field: the JSON value to answer with")
        status = _number(body, "status", 200 if kind == "body" else 503, 100, integer=True)
        if status > 599:
            raise invalid(f"fault field 'status' must be an HTTP status (100-599), got {status}")
        late = body.get("late", False)
        if not isinstance(late, bool) or (late and kind != "delay"):
            raise invalid("fault field 'late' must be true or false, and true only with kind 'delay'")
        probability = _number(body, "probability", 1.0, 0.0)
        if probability > 1:
            raise invalid(f"fault field 'probability' must be between 0 and 1, got {probability}")
        rule = FaultRule(
            id=f"fault-{self._next_id}",
            route=route,
            deployment_id=deployment_id,
            kind=kind,
            status=status,
            retry_after_s=_number(body, "retry_after_s", None, 0.0),
            delay_s=float(_number(body, "delay_s", 0.0, 0.0)),
            late=late,
            times=None
            if "times" in body and body["times"] is None
            else _number(body, "times", 1, 1, integer=True),
            probability=float(probability),
            after_chunks=_number(body, "after_chunks", 1, 0, integer=True),
            message=message,
            body=body.get("body"),
        )
        self._next_id += 1
        self.rules.append(rule)
        return rule

    def take(self, route: str, deployment_id: str | None, streaming: bool) -> FaultRule | None:
        """The first rule that hits this request (its hit count is taken), or None."""
        for rule in self.rules:
            if rule.exhausted() or rule.route not in ("*", route):
                continue
            if rule.deployment_id is not None and rule.deployment_id != deployment_id:
                continue
            if rule.kind in STREAM_KINDS and not streaming:
                continue
            if rule.probability < 1.0 and self._rng.random() >= rule.probability:
                continue
            rule.hits += 1
            return rule
        return None

    def describe(self) -> list[dict[str, Any]]:
        """The rules with their hit counts."""
        return [asdict(rule) for rule in self.rules]

    def clear(self) -> None:
        self.rules.clear()
