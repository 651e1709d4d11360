"""Pieces shared by the sync and async clients: their configuration (``BaseClient``: URLs, headers,
TLS choice, retry policy, timeout), hotload headers, error parsing."""

from __future__ import annotations

import json
import logging
import os
import re
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from airflow_fireworks.api.errors import (
    FireworksAPIError,
    FireworksConnectionError,
    FireworksError,
    FireworksValidationError,
)
from airflow_fireworks.api.models import deployment_name
from airflow_fireworks.api.retry import RETRYABLE_STATUS, RetryPolicy
from airflow_fireworks.api.validation import check_seconds, check_str_map

DEFAULT_BASE_URL = "https://api.fireworks.ai"
ACCOUNTS_PATH = "/v1/accounts"
COMPLETIONS_PATH = "/inference/v1/completions"
HOTLOAD_PATH = "/hot_load/v1/models/hot_load"
REDACTED = "***"

_CLIENT_SOURCE_RE = re.compile(r"fireworks-training-skill(?:/[0-9A-Za-z][0-9A-Za-z._+-]{0,63})?")
_REQUEST_ID_HEADERS = ("x-request-id", "x-fireworks-request-id")


def normalise_url(value: Any, field: str) -> str:
    """An ``http(s)://host[:port][/prefix]`` URL without trailing slash."""
    if not isinstance(value, str) or not value.strip():
        raise FireworksValidationError(
            field, "must be a non-empty http(s) URL, e.g. 'https://api.fireworks.ai'"
        )
    url = value.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise FireworksValidationError(
            field,
            f"{url!r} must start with http:// or https:// and name a host, e.g. 'https://api.fireworks.ai'",
        )
    if parts.query or parts.fragment:
        raise FireworksValidationError(field, f"{url!r} must not carry a query string or fragment")
    return url


def validate_api_key(api_key: Any) -> str:
    """Non-empty, single token; the error never echoes the value."""
    if not isinstance(api_key, str) or not api_key.strip():
        raise FireworksValidationError("api_key", "must be a non-empty string (the Fireworks API key)")
    if any(ch.isspace() or not ch.isprintable() for ch in api_key):
        raise FireworksValidationError(
            "api_key", "contains whitespace or control characters; copy the key again without them"
        )
    return api_key


def resolve_verify(verify_ssl: bool | None, logger: logging.Logger) -> bool:
    """TLS verification is on unless explicitly disabled, and disabling it is logged once."""
    if verify_ssl is None:
        return True
    if not isinstance(verify_ssl, bool):
        raise FireworksValidationError("verify_ssl", "must be true, false or None")
    if not verify_ssl:
        logger.warning("TLS certificate verification is disabled (verify_ssl=False) for Fireworks calls")
    return verify_ssl


def base_headers(api_key: str, additional_headers: Mapping[str, str] | None) -> dict[str, str]:
    """Headers of every request: JSON content type, ``X-Api-Key``, optional client source and session
    id from the environment, then the caller's headers (which win, compared case-insensitively)."""
    headers = {"Content-Type": "application/json", "X-Api-Key": api_key}
    source = os.environ.get("FIREWORKS_CLIENT_SOURCE")
    if source and len(source) <= 128 and _CLIENT_SOURCE_RE.fullmatch(source):
        headers["X-Fireworks-Client-Source"] = source
    session_id = os.environ.get("FIREWORKS_SESSION_ID")
    if session_id and _is_canonical_uuid(session_id):
        headers["X-Fireworks-Session-Id"] = session_id
    if additional_headers is not None:
        headers = merge_headers(headers, check_str_map(additional_headers, "additional_headers"))
    return headers


def merge_headers(headers: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """``headers`` updated with ``extra``; a name in ``extra`` replaces any case variant."""
    lowered = {k.lower() for k in extra}
    merged = {k: v for k, v in headers.items() if k.lower() not in lowered}
    merged.update(extra)
    return merged


def _is_canonical_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


def gateway_headers(base: Mapping[str, str], api_key: str) -> dict[str, str]:
    """Inference and hotload traffic also carries ``Authorization: Bearer``."""
    return merge_headers(base, {"Authorization": f"Bearer {api_key}"})


class BaseClient:
    """The configuration ``DeploymentManager`` and ``AsyncFireworksClient`` share, validated before
    any request: the API key, the control-plane, inference and hotload URLs, the control-plane and
    gateway headers, TLS verification, the retry policy and the per-request timeout."""

    def __init__(
        self,
        api_key: str,
        base_url: str,
        inference_url: str | None,
        hotload_api_url: str | None,
        additional_headers: Mapping[str, str] | None,
        verify_ssl: bool | None,
        *,
        retry_policy: RetryPolicy | None,
        timeout_s: float,
    ) -> None:
        self._api_key = validate_api_key(api_key)
        self.base_url = normalise_url(base_url, "base_url")
        self.inference_url = normalise_url(inference_url or self.base_url, "inference_url")
        self.hotload_api_url = normalise_url(hotload_api_url or self.base_url, "hotload_api_url")
        if retry_policy is not None and not isinstance(retry_policy, RetryPolicy):
            raise FireworksValidationError("retry_policy", "must be a RetryPolicy or None")
        self.retry_policy = retry_policy or RetryPolicy()
        self.timeout_s = check_seconds(timeout_s, "timeout_s", positive=True)
        self._control_headers = base_headers(self._api_key, additional_headers)
        self._gateway_headers = gateway_headers(self._control_headers, self._api_key)
        self._verify_ssl = resolve_verify(verify_ssl, logging.getLogger(type(self).__module__))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(base_url={self.base_url!r}, inference_url={self.inference_url!r}, "
            f"hotload_api_url={self.hotload_api_url!r})"
        )


def hotload_headers(
    gateway: Mapping[str, str],
    base_model: str,
    account_id: str,
    deployment_id: str,
    source_url: str | None = None,
) -> dict[str, str]:
    """The hotload route is fixed; the target is named by these headers."""
    extra = {
        "fireworks-model": base_model,
        "fireworks-deployment": deployment_name(account_id, deployment_id),
    }
    if source_url:
        extra["x-fireworks-hot-load-source-url"] = source_url
    return merge_headers(gateway, extra)


def probe_body(model: str) -> dict[str, Any]:
    """The tiny non-streaming completion used for warmup and the readiness probe."""
    return {"model": model, "prompt": [1, 2], "max_tokens": 4, "temperature": 0.0}


def redact(text: str, secret: str) -> str:
    """``text`` with every occurrence of ``secret`` replaced."""
    return text.replace(secret, REDACTED) if secret else text


def error_message(body: bytes) -> str:
    """The server's message: ``error.message`` / ``message`` of a JSON body, else its text."""
    text = body.decode("utf-8", errors="replace")
    try:
        data = json.loads(text)
    except ValueError:
        return text.strip()[:200]
    if isinstance(data, Mapping) and "error" in data:
        data = data["error"]
    if isinstance(data, Mapping):
        message = data.get("message")
        return message if isinstance(message, str) and message else json.dumps(data)[:500]
    return str(data)[:500]


def api_error(
    status: int,
    body: bytes,
    headers: Mapping[str, str],
    method: str,
    url: str,
    secret: str,
) -> FireworksAPIError:
    """A ``FireworksAPIError`` for a non-2xx answer, with the key scrubbed from every text."""
    request_id = next((headers[h] for h in _REQUEST_ID_HEADERS if headers.get(h)), None)
    return FireworksAPIError(
        status,
        redact(error_message(body), secret),
        method=method,
        url=redact(url, secret),
        request_id=request_id,
        retryable=status in RETRYABLE_STATUS,
        retry_after_s=RetryPolicy.parse_retry_after(headers.get("Retry-After")),
    )


def connection_error(exc: BaseException, method: str, url: str, secret: str) -> FireworksConnectionError:
    """A ``FireworksConnectionError`` for a transport failure, with the key scrubbed."""
    reason = redact(f"{type(exc).__name__}: {exc}", secret)
    return FireworksConnectionError(method, redact(url, secret), reason)


def parse_json(body: bytes, what: str, secret: str = "") -> Any:
    """Decode a JSON answer or raise a ``FireworksError`` saying which call returned garbage
    (quoting its start, with ``secret`` scrubbed)."""
    try:
        return json.loads(body)
    except ValueError:
        quoted = redact(repr(body[:100]), secret)
        raise FireworksError(f"{what} returned a body that is not JSON: {quoted}") from None


def account_from_response(data: Any) -> str:
    """The account id from ``GET /v1/accounts`` (exactly one account expected)."""
    accounts = data.get("accounts") if isinstance(data, Mapping) else None
    if not accounts or not isinstance(accounts, list):
        raise FireworksError("the API key is not associated with any account")
    if len(accounts) > 1:
        raise FireworksError("the API key gives access to several accounts; this is not supported")
    name = accounts[0].get("name") if isinstance(accounts[0], Mapping) else None
    if not isinstance(name, str):
        raise FireworksError("the account lookup returned an account without a name")
    account_id = name.removeprefix("accounts/")
    if not account_id:
        raise FireworksError("the account lookup returned an empty account name")
    return account_id
