"""The one transport of every Fireworks client (fireworks-api.md section 1): the client
configuration (key, URLs, headers, TLS, timeout), the per-loop aiohttp session, and how server
error text is read and scrubbed of the key.

``DeploymentManager``, ``AsyncFireworksClient`` and ``DeploymentSampler`` all build their
``ClientConfig`` here, so control-plane, hotload and inference requests carry the same headers
(``X-Fireworks-Client-Source`` / ``X-Fireworks-Session-Id`` from the environment included).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from airflow_fireworks.api.errors import FireworksValidationError
from airflow_fireworks.api.validation import check_seconds, check_str_map

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.fireworks.ai"
COMPLETIONS_PATH = "/inference/v1/completions"
REDACTED = "***"

_CLIENT_SOURCE_RE = re.compile(r"fireworks-training-skill(?:/[0-9A-Za-z][0-9A-Za-z._+-]{0,63})?")


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


def resolve_verify(verify_ssl: bool | None) -> bool:
    """TLS verification is on unless explicitly disabled, and disabling it is logged once."""
    if verify_ssl is None:
        return True
    if not isinstance(verify_ssl, bool):
        raise FireworksValidationError("verify_ssl", "must be true, false or None")
    if not verify_ssl:
        log.warning("TLS certificate verification is disabled (verify_ssl=False) for Fireworks calls")
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


def gateway_headers(base: Mapping[str, str], api_key: str) -> dict[str, str]:
    """Inference and hotload traffic also carries ``Authorization: Bearer``."""
    return merge_headers(base, {"Authorization": f"Bearer {api_key}"})


def _is_canonical_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


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


@dataclass(frozen=True)
class ClientConfig:
    """Everything a client needs to reach Fireworks, validated before any request (build it with
    ``ClientConfig.create``). The key, and the headers that carry it, stay out of ``repr``."""

    api_key: str = field(repr=False)
    base_url: str
    inference_url: str
    hotload_api_url: str
    control_headers: Mapping[str, str] = field(repr=False)
    gateway_headers: Mapping[str, str] = field(repr=False)
    verify_ssl: bool
    timeout_s: float

    @classmethod
    def create(
        cls,
        api_key: str,
        *,
        timeout_s: float,
        base_url: str = DEFAULT_BASE_URL,
        inference_url: str | None = None,
        hotload_api_url: str | None = None,
        additional_headers: Mapping[str, str] | None = None,
        verify_ssl: bool | None = None,
    ) -> ClientConfig:
        """Check and normalise the settings (keywords, as the clients' constructors name them); the
        gateway URLs default to ``base_url``."""
        api_key = validate_api_key(api_key)
        base = normalise_url(base_url, "base_url")
        control = base_headers(api_key, additional_headers)
        return cls(
            api_key=api_key,
            base_url=base,
            inference_url=normalise_url(inference_url or base, "inference_url"),
            hotload_api_url=normalise_url(hotload_api_url or base, "hotload_api_url"),
            control_headers=MappingProxyType(control),
            gateway_headers=MappingProxyType(gateway_headers(control, api_key)),
            verify_ssl=resolve_verify(verify_ssl),
            timeout_s=check_seconds(timeout_s, "timeout_s", positive=True),
        )

    @property
    def completions_url(self) -> str:
        """Where completions are sent (sampling, warmup, the readiness probe)."""
        return self.inference_url + COMPLETIONS_PATH

    def redact(self, text: str) -> str:
        """``text`` with the API key scrubbed (server text may echo it)."""
        return redact(text, self.api_key)


class LoopSession:
    """One ``aiohttp.ClientSession`` per event loop: opened lazily inside the running loop and
    replaced when the loop changes (a session cannot outlive or change its loop).

    ``limit`` caps the connections (0: none, when a concurrency controller is the limit);
    ``timeout`` is the session's default, which a request may override.
    """

    def __init__(
        self, verify_ssl: bool, *, limit: int = 100, timeout: aiohttp.ClientTimeout | None = None
    ) -> None:
        self._verify_ssl = verify_ssl
        self._limit = limit
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def get(self) -> aiohttp.ClientSession:
        """The session of the running loop."""
        loop = asyncio.get_running_loop()
        session = self._session
        if session is not None and not session.closed:
            if self._loop is loop:
                return session
            if self._loop is not None and self._loop.is_closed():
                session.detach()  # the loop that owned it is gone, and its connections with it
        options: dict[str, Any] = {} if self._timeout is None else {"timeout": self._timeout}
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._limit, ssl=self._verify_ssl), **options
        )
        self._loop = loop
        return self._session

    async def close(self) -> None:
        """Close the session (a later ``get`` opens a new one)."""
        session, self._session, self._loop = self._session, None, None
        if session is not None and not session.closed:
            await session.close()
