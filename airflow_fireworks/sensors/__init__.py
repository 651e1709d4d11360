"""Sensors: waits for a deployment state or a finished hotload."""
