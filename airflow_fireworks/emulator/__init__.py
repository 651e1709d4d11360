"""A local Fireworks: control plane, hotload gateway and streaming inference on one port.

Run it with ``python -m airflow_fireworks.emulator`` or ``fireworks-emulator``; see ``docs/emulator.md``.
"""

from __future__ import annotations

from airflow_fireworks.emulator.app import build_app
from airflow_fireworks.emulator.settings import Settings

__all__ = ["Settings", "build_app"]
