"""Provider metadata read by Airflow's ProvidersManager (entry point ``apache_airflow_provider``)."""

from __future__ import annotations

from typing import Any

from airflow_fireworks import __version__

_INTEGRATION = "Fireworks AI"


def get_provider_info() -> dict[str, Any]:
    """Describe the provider: connection type and form, hooks, operators, sensors, triggers, links."""
    return {
        "package-name": "airflow-fireworks",
        "name": "Fireworks AI",
        "description": (
            "`Fireworks AI <https://fireworks.ai/>`__ training deployments: create, hotload, "
            "sample with token ids and logprobs, scale to zero, delete."
        ),
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": _INTEGRATION,
                "external-doc-url": "https://docs.fireworks.ai/",
                "tags": ["ai", "ml"],
            }
        ],
        "hooks": [
            {"integration-name": _INTEGRATION, "python-modules": ["airflow_fireworks.hooks.fireworks"]}
        ],
        "operators": [
            {
                "integration-name": _INTEGRATION,
                "python-modules": [
                    "airflow_fireworks.operators.deployment",
                    "airflow_fireworks.operators.sampling",
                    "airflow_fireworks.operators.trainer",
                ],
            }
        ],
        "sensors": [
            {
                "integration-name": _INTEGRATION,
                "python-modules": [
                    "airflow_fireworks.sensors.deployment",
                    "airflow_fireworks.sensors.trainer",
                ],
            }
        ],
        "triggers": [
            {
                "integration-name": _INTEGRATION,
                "python-modules": [
                    "airflow_fireworks.triggers.deployment",
                    "airflow_fireworks.triggers.trainer",
                ],
            }
        ],
        "extra-links": [
            "airflow_fireworks.links.FireworksDeploymentLink",
            "airflow_fireworks.links.FireworksTrainerJobLink",
        ],
        "connection-types": [
            {
                "connection-type": "fireworks",
                "hook-class-name": "airflow_fireworks.hooks.fireworks.FireworksHook",
                "hook-name": "Fireworks AI",
                "conn-fields": {
                    "inference_url": {
                        "label": "Inference URL",
                        "description": "Inference gateway base URL (warmup, probe, sampling). "
                        "Empty: the control-plane URL.",
                        "schema": {"type": ["string", "null"]},
                    },
                    "hotload_url": {
                        "label": "Hotload URL",
                        "description": "Hotload gateway base URL. Empty: the control-plane URL.",
                        "schema": {"type": ["string", "null"]},
                    },
                    "console_url": {
                        "label": "Console URL",
                        "description": "Fireworks console base URL used by the deployment link.",
                        "schema": {"type": ["string", "null"], "default": "https://app.fireworks.ai"},
                    },
                    "additional_headers": {
                        "label": "Additional headers",
                        "description": 'JSON object of extra HTTP headers, e.g. {"X-Team": "rl"}.',
                        "schema": {"type": ["object", "null"]},
                    },
                    "verify_ssl": {
                        "label": "Verify TLS",
                        "description": "Verify TLS certificates. Empty: verify https URLs whose host is a "
                        "name.",
                        "schema": {"type": ["boolean", "null"]},
                    },
                },
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port", "login"],
                    "relabeling": {"host": "Control-plane URL", "password": "API key"},
                    "placeholders": {
                        "host": "https://api.fireworks.ai",
                        "password": "Fireworks API key (training-scoped)",
                    },
                },
            }
        ],
    }
