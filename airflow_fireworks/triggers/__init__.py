"""Triggers: asynchronous waits for deployment states, hotloads and trainer jobs, run in the triggerer."""

from __future__ import annotations

from airflow_fireworks.triggers.deployment import FireworksDeploymentTrigger, FireworksHotloadTrigger
from airflow_fireworks.triggers.trainer import FireworksTrainerJobTrigger

__all__ = ["FireworksDeploymentTrigger", "FireworksHotloadTrigger", "FireworksTrainerJobTrigger"]
