"""Provider metadata read by Airflow's ProvidersManager (entry point ``apache_airflow_provider``)."""

from __future__ import annotations

from typing import Any

from airflow_fireworks import __version__

_INTEGRATION = "Fireworks AI"

#: The extra fields of the connection form (JSON schema per field, as Airflow 3.3 reads them).
_CONN_FIELDS: dict[str, dict[str, Any]] = {
    "inference_url": {
        "label": "Inference URL",
        "description": "Inference gateway base URL (warmup, probe, sampling). Empty: the control-plane URL.",
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
    # A select, not a switch: a switch shows unset and off alike and stores false once toggled, which
    # would switch verification off without anyone choosing it. Here off is an option of its own.
    "verify_ssl": {
        "label": "Verify TLS",
        "description": "TLS certificate checks on every Fireworks call. Unset: certificates are verified. "
        "Choose 'Do not verify' only for a test server with a self-signed certificate.",
        "schema": {
            "type": ["string", "null"],
            "enum": [None, "true", "false"],
            "values_display": {
                "null": "Verify certificates (default)",
                "true": "Verify certificates",
                "false": "Do not verify certificates (insecure)",
            },
            "default": None,
        },
    },
}

#: How the form labels the standard fields it shows (schema and login are hidden).
_RELABELING = {"host": "Control-plane URL", "password": "API key"}

#: The label the connection form shows for each connection field, for messages a user reads there.
FIELD_LABELS: dict[str, str] = {
    "port": "Port",
    **_RELABELING,
    **{name: spec["label"] for name, spec in _CONN_FIELDS.items()},
}


def get_provider_info() -> dict[str, Any]:
    """Describe the provider: connection type and form, hooks, operators, sensors, triggers, links."""
    return {
        "package-name": "airflow-fireworks",
        "name": "Fireworks AI",
        # Plain text: the providers page strips RST characters and glues a URL to the next word.
        "description": "Fireworks AI training deployments: create, hotload, sample with token ids "
        "and logprobs, scale to zero, delete.",
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
                "conn-fields": _CONN_FIELDS,
                "ui-field-behaviour": {
                    # Port stays visible: Airflow 3.3.2's Test button sends port 0 for an empty one,
                    # which its server takes for another endpoint; a stored port makes both agree.
                    "hidden-fields": ["schema", "login"],
                    "relabeling": _RELABELING,
                    "placeholders": {
                        "host": "https://api.fireworks.ai",
                        "password": "Fireworks API key (training-scoped)",
                        "port": "443 (empty: the URL's port)",
                    },
                },
            }
        ],
    }
