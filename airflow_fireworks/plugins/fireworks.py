"""The ``AirflowPlugin`` of the Fireworks page: a FastAPI app and a page in the UI's navigation.

Registered by the package's ``airflow.plugins`` entry point. The app is built on first use, so
processes that load plugins without serving them (scheduler, workers) do not import FastAPI.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from airflow.plugins_manager import AirflowPlugin

URL_PREFIX = "/fireworks"


@cache
def _fastapi_apps() -> list[dict[str, Any]]:
    from airflow_fireworks.plugins.app import create_app

    return [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "Fireworks"}]


class FireworksPlugin(AirflowPlugin):
    """Fireworks deployments and trainer jobs of a connection, in the Airflow UI."""

    name = "fireworks"
    external_views = [
        {
            "name": "Fireworks",
            "href": f"{URL_PREFIX}/",
            "destination": "nav",
            "category": "browse",
            "url_route": "fireworks",
        }
    ]

    @property
    def fastapi_apps(self) -> list[dict[str, Any]]:  # type: ignore[override]
        """The page's app, mounted under ``URL_PREFIX`` (built once, on first use)."""
        return _fastapi_apps()
