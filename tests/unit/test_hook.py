"""FireworksConnectionParams: reading and validating a ``fireworks`` connection (no HTTP)."""

from __future__ import annotations

import json

import pytest
from airflow.sdk import Connection

from airflow_fireworks.hooks.fireworks import (
    FireworksConnectionConfigError,
    FireworksConnectionParams,
    FireworksHook,
)

KEY = "fw-secret-key-0123456789"


def params(**fields) -> FireworksConnectionParams:
    extra = fields.pop("extra", None)
    conn = Connection(
        conn_id="fw",
        conn_type="fireworks",
        password=fields.pop("password", KEY),
        extra=json.dumps(extra) if isinstance(extra, dict) else extra,
        **fields,
    )
    return FireworksConnectionParams.from_connection(conn)


def test_defaults_for_a_connection_with_only_a_key():
    p = params()
    assert p.api_key == KEY
    assert p.base_url == "https://api.fireworks.ai"
    assert (p.inference_url, p.hotload_api_url, p.verify_ssl) == (None, None, None)
    assert dict(p.additional_headers) == {}
    assert p.console_url == "https://app.fireworks.ai"
    assert p.deployment_console_url("my-dep") == "https://app.fireworks.ai/dashboard/deployments/my-dep"


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        ("api.fireworks.ai", None, "https://api.fireworks.ai"),
        ("http://127.0.0.1:8765/", None, "http://127.0.0.1:8765"),
        ("127.0.0.1", 9000, "https://127.0.0.1:9000"),
        ("https://gateway.example.com/fw", None, "https://gateway.example.com/fw"),
        # Port and URL agree: 0 is what Airflow 3.3.2's form sends for an empty Port.
        ("https://api.fireworks.ai", 0, "https://api.fireworks.ai"),
        ("https://api.fireworks.ai", 443, "https://api.fireworks.ai"),
        (None, 443, "https://api.fireworks.ai"),
        ("http://127.0.0.1:8765", 8765, "http://127.0.0.1:8765"),
        ("http://127.0.0.1/base", 8765, "http://127.0.0.1:8765/base"),
    ],
)
def test_host_and_port_become_the_control_plane_url(host, port, expected):
    assert params(host=host, port=port).base_url == expected


@pytest.mark.parametrize(
    ("host", "port", "problem"),
    [
        ("http://127.0.0.1:8765", 9000, "9000 differs from the port 8765 in the Control-plane URL"),
        ("https://api.fireworks.ai:8443", 443, "443 differs from the port 8443"),
        ("https://api.fireworks.ai", 70000, "must be a TCP port 1-65535"),
        ("https://api.fireworks.ai", -1, "must be a TCP port 1-65535"),
    ],
)
def test_a_port_the_url_contradicts_is_refused_naming_both_fields(host, port, problem):
    with pytest.raises(FireworksConnectionConfigError) as err:
        params(host=host, port=port)
    assert err.value.field == "port" and err.value.label == "Port"
    assert problem in str(err.value) and err.value.form_message.startswith(f"Port: {problem}")


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("", None), (True, True), (False, False), ("true", True), ("false", False)],
)
def test_verify_tls_reads_the_forms_choices_and_json_booleans(value, expected):
    assert params(extra={"verify_ssl": value}).verify_ssl is expected


def test_extras_are_read_with_plain_and_prefixed_names():
    p = params(
        extra={
            "inference_url": "https://inference.example.com/",
            "extra__fireworks__hotload_url": "hotload.example.com",
            "console_url": "https://console.example.com",
            "additional_headers": '{"X-Team": "rl"}',
            "verify_ssl": "false",
        }
    )
    assert p.inference_url == "https://inference.example.com"
    assert p.hotload_api_url == "https://hotload.example.com"
    assert p.deployment_console_url("d") == "https://console.example.com/dashboard/deployments/d"
    assert dict(p.additional_headers) == {"X-Team": "rl"}
    assert p.verify_ssl is False
    kwargs = p.client_kwargs()
    assert kwargs["additional_headers"] == {"X-Team": "rl"}
    assert kwargs["hotload_api_url"] == "https://hotload.example.com"


@pytest.mark.parametrize(
    ("fields", "field_name"),
    [
        ({"password": ""}, "password"),
        ({"password": None}, "password"),
        ({"host": "ftp://files.example.com"}, "host"),
        ({"extra": {"inference_url": "https://x.example.com/?a=1"}}, "inference_url"),
        ({"extra": {"additional_headers": "not json"}}, "additional_headers"),
        ({"extra": {"additional_headers": {"X-Count": 3}}}, "additional_headers"),
        ({"extra": {"verify_ssl": "maybe"}}, "verify_ssl"),
        ({"extra": {"console_url": 42}}, "console_url"),
    ],
)
def test_bad_fields_raise_naming_connection_and_field_without_the_key(fields, field_name):
    with pytest.raises(FireworksConnectionConfigError) as err:
        params(**fields)
    assert err.value.field == field_name
    assert err.value.conn_id == "fw"
    assert f"'{field_name}'" in str(err.value) and "'fw'" in str(err.value)
    assert err.value.label in str(err.value)  # the form's name for it, e.g. "Control-plane URL"
    assert KEY not in str(err.value)


def test_repr_and_cache_key_never_show_the_key_in_text():
    p = params(extra={"additional_headers": {"B": "2", "A": "1"}})
    assert KEY not in repr(p)
    assert KEY not in repr(FireworksHook("fw"))
    assert p.cache_key() == params(extra={"additional_headers": {"A": "1", "B": "2"}}).cache_key()
    assert p.cache_key() != params(password="another-key-987654321").cache_key()


def test_hook_metadata_matches_the_provider_registration():
    assert FireworksHook.conn_type == "fireworks"
    assert FireworksHook.default_conn_name == "fireworks_default"
    assert FireworksHook.conn_name_attr == "fireworks_conn_id"
    assert FireworksHook().fireworks_conn_id == "fireworks_default"


def test_the_sampler_is_built_from_the_connection_like_every_client():
    p = params(host="http://control:1", extra={"additional_headers": {"X-Team": "rl"}, "verify_ssl": False})
    sampler = p.sampler("accounts/a/deployments/d", None, None, not_ready_retries=2)
    assert sampler.inference_url == "http://control:1"  # the gateway defaults to the control plane
    assert sampler.verify_ssl is False and sampler.not_ready_retries == 2
    assert sampler.config.gateway_headers["X-Team"] == "rl"
    assert sampler.config.gateway_headers == p.async_client().config.gateway_headers
    assert KEY not in repr(sampler) and KEY not in repr(sampler.config)

    gateway = params(extra={"inference_url": "https://gw.example.com/"}).sampler("accounts/a/deployments/d")
    assert gateway.inference_url == "https://gw.example.com"
