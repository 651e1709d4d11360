"""Sensors: waits for a deployment state or a finished hotload."""

from __future__ import annotations

from airflow_fireworks.sensors.deployment import FireworksDeploymentSensor, FireworksHotloadSensor

__all__ = ["FireworksDeploymentSensor", "FireworksHotloadSensor"]
