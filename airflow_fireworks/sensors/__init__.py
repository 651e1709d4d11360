"""Sensors: waits for a deployment state, a finished hotload, or a trainer job."""

from __future__ import annotations

from airflow_fireworks.sensors.deployment import FireworksDeploymentSensor, FireworksHotloadSensor
from airflow_fireworks.sensors.trainer import FireworksTrainerJobSensor

__all__ = ["FireworksDeploymentSensor", "FireworksHotloadSensor", "FireworksTrainerJobSensor"]
