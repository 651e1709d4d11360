"""Hotload: request validation and each replica's loading timeline (derived from timestamps)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from airflow_fireworks.emulator.errors import extra_field, invalid

STAGES = ("downloading", "loading", "warming")
_BODY_FIELDS = frozenset({"identity", "reset_prompt_cache", "incremental_snapshot_metadata"})
_DELTA_FIELDS = frozenset({"previous_snapshot_identity", "compression_format", "checksum_format"})


@dataclass(frozen=True)
class LoadRequest:
    """A validated hotload trigger body."""

    identity: str
    previous_identity: str | None
    reset_prompt_cache: bool


def parse_load_request(body: Any) -> LoadRequest:
    """Validate a ``POST /hot_load/v1/models/hot_load`` body (400 on any problem)."""
    if not isinstance(body, dict):
        raise invalid("request body must be a JSON object")
    for key in body:
        if key not in _BODY_FIELDS:
            raise extra_field(key)
    identity = body.get("identity")
    if not isinstance(identity, str) or not identity:
        raise invalid("field 'identity' is required and must be a non-empty string (the snapshot identity)")
    reset = body.get("reset_prompt_cache", True)
    if not isinstance(reset, bool):
        raise invalid("field 'reset_prompt_cache' must be a boolean")
    previous: str | None = None
    delta = body.get("incremental_snapshot_metadata")
    if delta is not None:
        if not isinstance(delta, dict):
            raise invalid("field 'incremental_snapshot_metadata' must be an object")
        for key in delta:
            if key not in _DELTA_FIELDS:
                raise extra_field(f"incremental_snapshot_metadata.{key}")
        previous = delta.get("previous_snapshot_identity")
        if not isinstance(previous, str) or not previous:
            raise invalid("field 'incremental_snapshot_metadata.previous_snapshot_identity' is required")
        for key in ("compression_format", "checksum_format"):
            if key in delta and not isinstance(delta[key], str):
                raise invalid(f"field 'incremental_snapshot_metadata.{key}' must be a string")
    return LoadRequest(identity, previous, reset)


@dataclass
class Load:
    """One scheduled load on one replica: ``start``..``end`` on the monotonic clock."""

    target: str
    start: float
    end: float
    ok: bool
    message: str = ""


class HotloadState:
    """What one replica serves and the loads queued for it."""

    def __init__(self, identity: str | None) -> None:
        self.current = identity
        self.pending: list[Load] = []
        self.last: Load | None = None

    def refresh(self, now: float) -> bool:
        """Apply finished loads; True when the served identity changed."""
        changed = False
        while self.pending and self.pending[0].end <= now:
            load = self.pending.pop(0)
            self.last = load
            if load.ok:
                changed = changed or load.target != self.current
                self.current = load.target
        return changed

    def expected_identity(self) -> str | None:
        """The identity served once every queued load has run."""
        for load in reversed(self.pending):
            if load.ok:
                return load.target
        return self.current

    def schedule(self, request: LoadRequest, now: float, delay_s: float, stage_s: float, fail: bool) -> None:
        """Queue a load starting ``delay_s`` from now (after any load already queued)."""
        start = now + delay_s
        if self.pending:
            start = max(start, self.pending[-1].end)
        expected = self.expected_identity()
        if request.previous_identity is not None and request.previous_identity != expected:
            message = (
                f"incremental snapshot '{request.identity}' is based on '{request.previous_identity}' "
                f"but the replica serves '{expected}'"
            )
            self.pending.append(Load(request.identity, start, start, ok=False, message=message))
        elif fail:
            end = start + stage_s * len(STAGES)
            message = f"loading snapshot '{request.identity}' failed"
            self.pending.append(Load(request.identity, start, end, ok=False, message=message))
        else:
            self.pending.append(Load(request.identity, start, start + stage_s * len(STAGES), ok=True))

    def loading(self, now: float) -> bool:
        """True while a load is in one of its stages."""
        return any(load.start <= now < load.end for load in self.pending)

    def status(self, now: float, stage_s: float) -> dict[str, Any]:
        """The replica's entry of the hotload status answer."""
        state: dict[str, Any]
        active = next((load for load in self.pending if load.start <= now < load.end), None)
        if active is not None:
            index = min(int((now - active.start) / stage_s), len(STAGES) - 1) if stage_s > 0 else 0
            state = {"stage": STAGES[index], "target_snapshot_identity": active.target}
        elif self.pending:
            state = {"stage": "pending", "target_snapshot_identity": self.pending[0].target}
        elif self.last is None:
            state = {"stage": "idle"}
        elif self.last.ok:
            state = {"stage": "ready", "target_snapshot_identity": self.last.target}
        else:
            state = {
                "stage": "error",
                "target_snapshot_identity": self.last.target,
                "message": self.last.message,
            }
        return {
            "current_snapshot_identity": self.current,
            "readiness": active is None,
            "loading_state": state,
            "loaded_adapters": [],
        }
