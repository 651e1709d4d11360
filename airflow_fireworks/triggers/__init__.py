"""Triggers: asynchronous waits for deployment states and hotloads, run in the triggerer."""

from __future__ import annotations

from airflow_fireworks.triggers.deployment import FireworksDeploymentTrigger, FireworksHotloadTrigger

__all__ = ["FireworksDeploymentTrigger", "FireworksHotloadTrigger"]
