"""The emulator process helper used by the tests (it lives in the package for DAG authors too)."""

from __future__ import annotations

from airflow_fireworks.testing import EmulatorProcess, free_port

__all__ = ["EmulatorProcess", "free_port"]
