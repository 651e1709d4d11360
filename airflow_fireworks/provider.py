"""Provider metadata read by Airflow through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

from airflow_fireworks import __version__


def get_provider_info() -> dict[str, Any]:
    """Return the provider description Airflow's ProvidersManager expects."""
    return {
        "package-name": "airflow-fireworks",
        "name": "Fireworks AI",
        "description": "Fireworks AI training deployments: lifecycle, hotload and tokenized sampling.",
        "versions": [__version__],
    }
