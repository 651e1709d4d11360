"""Apache Airflow provider for Fireworks AI training deployments."""

from __future__ import annotations

__version__ = "0.1.0"
