"""Emulator settings: one typed table shared by the command line and ``PATCH /_emulator/config``."""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

MASK_LESS_PATCH_MODES = ("replace", "merge")
BOOT_IDENTITIES = ("latest", "base")


@dataclass
class Settings:
    """Every knob of the emulator; names and defaults are documented in ``docs/emulator.md``."""

    api_key: str = field(default="fw-emulator-key", repr=False)
    account_id: str = "emulator"
    seed: int = 0
    create_delay_s: float = 2.0
    update_delay_s: float = 0.5
    delete_delay_s: float = 0.5
    serve_while_creating: bool = False
    mask_less_patch: str = "replace"
    hotload_stage_s: float = 0.3
    hotload_fail_identities: list[str] = field(default_factory=list)
    hotload_blocks_inference: bool = True
    decode_slots: int = 64
    prefill_tokens_per_s: float = 400000.0
    decode_step_base_s: float = 0.004
    decode_step_per_seq_s: float = 0.00015
    max_context_length: int = 8192
    stream_chunk_tokens: int = 4
    eos_probability: float = 0.01
    request_log_size: int = 1000
    time_scale: float = 1.0
    cold_start_s: float = 2.0
    auto_delete_idle_s: float = 604800.0
    boot_identity: str = "latest"
    trainer_placement_s: float = 1.0
    trainer_boot_s: float = 1.0
    trainer_health_delay_s: float = 0.0
    trainer_resume_delay_s: float = 0.5
    trainer_promote_s: float = 0.5

    def as_dict(self) -> dict[str, Any]:
        """The settings as a dict."""
        return dataclasses.asdict(self)

    def public(self) -> dict[str, Any]:
        """The settings for display: the API key is masked."""
        return {**self.as_dict(), "api_key": "***"}

    def updated(self, changes: Mapping[str, Any]) -> Settings:
        """A copy with ``changes`` applied; raises ``ValueError`` naming the first bad key or value."""
        values = self.as_dict()
        for key, raw in changes.items():
            if key not in _PARSERS:
                raise ValueError(f"unknown setting '{key}' (known: {', '.join(sorted(_PARSERS))})")
            values[key] = _PARSERS[key](key, raw)
        return Settings(**values)


def _text(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"setting '{key}' must be a non-empty string, got {value!r}")
    return value


def _int(minimum: int) -> Callable[[str, Any], int]:
    def parse(key: str, value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError(f"setting '{key}' must be an integer, got {value!r}")
        if isinstance(value, str):
            try:
                value = int(value)
            except ValueError:
                raise ValueError(f"setting '{key}' must be an integer, got {value!r}") from None
        if not isinstance(value, int) or value < minimum:
            raise ValueError(f"setting '{key}' must be an integer >= {minimum}, got {value!r}")
        return value

    return parse


def _float(
    minimum: float, maximum: float | None = None, positive: bool = False, finite: bool = False
) -> Callable[[str, Any], float]:
    def parse(key: str, value: Any) -> float:
        if isinstance(value, bool):
            raise ValueError(f"setting '{key}' must be a number, got {value!r}")
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ValueError(f"setting '{key}' must be a number, got {value!r}") from None
        if not isinstance(value, int | float):
            raise ValueError(f"setting '{key}' must be a number, got {value!r}")
        number = float(value)
        too_high = maximum is not None and number > maximum
        infinite = finite and math.isinf(number)
        if number < minimum or too_high or (positive and number <= 0) or number != number or infinite:
            bounds = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
            if positive:
                bounds = "> 0"
            if finite:
                bounds = f"finite and {bounds}"
            raise ValueError(f"setting '{key}' must be a number {bounds}, got {value!r}")
        return number

    return parse


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
        return value.lower() in ("true", "1", "yes", "on")
    raise ValueError(f"setting '{key}' must be a boolean (true/false), got {value!r}")


def _choice(choices: tuple[str, ...]) -> Callable[[str, Any], str]:
    def parse(key: str, value: Any) -> str:
        if value not in choices:
            raise ValueError(f"setting '{key}' must be one of {', '.join(choices)}, got {value!r}")
        return str(value)

    return parse


def _identities(key: str, value: Any) -> list[str]:
    if isinstance(value, str):
        value = [item.strip() for item in value.split(",") if item.strip()]
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise ValueError(f"setting '{key}' must be a list of non-empty strings, got {value!r}")
    return list(value)


_PARSERS: dict[str, Callable[[str, Any], Any]] = {
    "api_key": _text,
    "account_id": _text,
    "seed": _int(0),
    "create_delay_s": _float(0.0),
    "update_delay_s": _float(0.0),
    "delete_delay_s": _float(0.0),
    "serve_while_creating": _bool,
    "mask_less_patch": _choice(MASK_LESS_PATCH_MODES),
    "hotload_stage_s": _float(0.0),
    "hotload_fail_identities": _identities,
    "hotload_blocks_inference": _bool,
    "decode_slots": _int(1),
    "prefill_tokens_per_s": _float(0.0, positive=True),
    "decode_step_base_s": _float(0.0),
    "decode_step_per_seq_s": _float(0.0),
    "max_context_length": _int(1),
    "stream_chunk_tokens": _int(1),
    "eos_probability": _float(0.0, 1.0),
    "request_log_size": _int(0),
    "time_scale": _float(0.0, positive=True, finite=True),
    "cold_start_s": _float(0.0),
    "auto_delete_idle_s": _float(0.0),
    "boot_identity": _choice(BOOT_IDENTITIES),
    "trainer_placement_s": _float(0.0),
    "trainer_boot_s": _float(0.0),
    "trainer_health_delay_s": _float(0.0),
    "trainer_resume_delay_s": _float(0.0),
    "trainer_promote_s": _float(0.0),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one ``--dashed-name`` flag per setting (values are parsed by :func:`settings_from_args`)."""
    defaults = Settings()
    for item in dataclasses.fields(Settings):
        default = getattr(defaults, item.name)
        shown = ",".join(default) if isinstance(default, list) else default
        parser.add_argument(
            "--" + item.name.replace("_", "-"),
            dest=item.name,
            default=None,
            metavar="VALUE",
            help=f"default: {shown!s}" if item.name != "api_key" else "the one accepted API key",
        )


def settings_from_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Settings:
    """Build settings from parsed flags; a bad value ends the program with an argparse error."""
    settings = Settings()
    for item in dataclasses.fields(Settings):
        value = getattr(args, item.name)
        if value is None:
            continue
        try:
            settings = settings.updated({item.name: value})
        except ValueError as exc:
            parser.error(f"--{item.name.replace('_', '-')}: {exc}")
    return settings
