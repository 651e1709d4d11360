"""Hooks: a Fireworks connection turned into the Fireworks client."""

from __future__ import annotations

from airflow_fireworks.hooks.fireworks import FireworksConnectionParams, FireworksHook

__all__ = ["FireworksConnectionParams", "FireworksHook"]
