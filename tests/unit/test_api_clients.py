"""Client construction without any network: URLs, headers, TLS choice, repr and key handling."""

from __future__ import annotations

import logging

import pytest

from airflow_fireworks.api import (
    AsyncFireworksClient,
    DeploymentManager,
    FireworksValidationError,
    _http,
    transport,
)

KEY = "fw-unit-key-7c6b5a4d3e2f"


def test_urls_default_and_normalise() -> None:
    with DeploymentManager(KEY) as mgr:
        assert mgr.base_url == mgr.inference_url == mgr.hotload_api_url == "https://api.fireworks.ai"
    with DeploymentManager(
        KEY, base_url="http://localhost:8765/", inference_url="http://gw:1/", hotload_api_url="http://hl:2/"
    ) as mgr:
        assert (mgr.base_url, mgr.inference_url, mgr.hotload_api_url) == (
            "http://localhost:8765",
            "http://gw:1",
            "http://hl:2",
        )


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"base_url": "ftp://x"}, "base_url"),
        ({"base_url": "localhost:80"}, "base_url"),
        ({"inference_url": "http://h/?q=1"}, "inference_url"),
        ({"hotload_api_url": "nohost"}, "hotload_api_url"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"verify_ssl": "no"}, "verify_ssl"),
        ({"additional_headers": {"X-A": 1}}, "additional_headers"),
        ({"retry_policy": 3}, "retry_policy"),
    ],
)
def test_constructor_rejects_bad_input(kwargs: dict[str, object], field: str) -> None:
    for cls in (DeploymentManager, AsyncFireworksClient):
        with pytest.raises(FireworksValidationError) as info:
            cls(KEY, **kwargs)  # type: ignore[arg-type]
        assert info.value.field == field


@pytest.mark.parametrize("key", ["", "   ", "fw key with spaces", "fw-key\r\n", None])
def test_bad_key_rejected_without_echo(key: object) -> None:
    with pytest.raises(FireworksValidationError) as info:
        DeploymentManager(key)  # type: ignore[arg-type]
    assert info.value.field == "api_key"
    if isinstance(key, str) and key.strip():
        assert key.strip() not in str(info.value)


def test_repr_has_no_key() -> None:
    with DeploymentManager(KEY, base_url="http://h:1") as mgr:
        assert KEY not in repr(mgr)
        assert "http://h:1" in repr(mgr)
    assert KEY not in repr(AsyncFireworksClient(KEY, "http://h:1"))


def test_headers_per_traffic_kind() -> None:
    base = transport.base_headers(KEY, {"x-api-key": "override", "X-Team": "rl"})
    assert base["x-api-key"] == "override" and "X-Api-Key" not in base
    assert base["Content-Type"] == "application/json"
    assert base["X-Team"] == "rl"
    gateway = transport.gateway_headers(transport.base_headers(KEY, None), KEY)
    assert gateway["Authorization"] == f"Bearer {KEY}"
    hot = _http.hotload_headers(gateway, "accounts/f/models/m", "acct", "dep", "gs://b/p/")
    assert hot["fireworks-model"] == "accounts/f/models/m"
    assert hot["fireworks-deployment"] == "accounts/acct/deployments/dep"
    assert hot["x-fireworks-hot-load-source-url"] == "gs://b/p/"
    assert "Authorization" not in transport.base_headers(KEY, None)


def test_environment_headers_only_when_well_formed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIREWORKS_CLIENT_SOURCE", "fireworks-training-skill/airflow-1.0")
    monkeypatch.setenv("FIREWORKS_SESSION_ID", "6f1c2b7e-3d4a-4e5f-8a9b-0c1d2e3f4a5b")
    headers = transport.base_headers(KEY, None)
    assert headers["X-Fireworks-Client-Source"] == "fireworks-training-skill/airflow-1.0"
    assert headers["X-Fireworks-Session-Id"] == "6f1c2b7e-3d4a-4e5f-8a9b-0c1d2e3f4a5b"
    monkeypatch.setenv("FIREWORKS_CLIENT_SOURCE", "something-else")
    monkeypatch.setenv("FIREWORKS_SESSION_ID", "6F1C2B7E-3D4A-4E5F-8A9B-0C1D2E3F4A5B")
    headers = transport.base_headers(KEY, None)
    assert "X-Fireworks-Client-Source" not in headers
    assert "X-Fireworks-Session-Id" not in headers


def test_tls_verified_unless_disabled_and_disabling_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    with DeploymentManager(KEY, base_url="https://10.0.0.1") as mgr:
        assert mgr._session.verify is True
    assert not caplog.records
    with DeploymentManager(KEY, verify_ssl=False) as mgr:
        assert mgr._session.verify is False
    assert len(caplog.records) == 1
    assert "verify" in caplog.records[0].getMessage()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"error": {"code": "INVALID_ARGUMENT", "message": "bad shape"}}', "bad shape"),
        (b'{"code": 3, "message": "rpc style", "details": []}', "rpc style"),
        (
            b'{"detail": [{"msg": "Extra inputs are not permitted"}]}',
            '{"detail": [{"msg": "Extra inputs are not permitted"}]}',
        ),
        (b"<html>502 Bad Gateway</html>", "<html>502 Bad Gateway</html>"),
        (b"", ""),
    ],
)
def test_error_message_parsing(body: bytes, expected: str) -> None:
    assert transport.error_message(body) == expected


def test_api_error_scrubs_key_and_reads_request_id() -> None:
    err = _http.api_error(
        503,
        f'{{"error": {{"message": "bad key {KEY}"}}}}'.encode(),
        {"x-fireworks-request-id": "r-9", "Retry-After": "2"},
        "GET",
        "http://h/x",
        KEY,
    )
    assert KEY not in str(err)
    assert err.request_id == "r-9"
    assert err.retry_after_s == 2.0
    assert err.retryable is True
