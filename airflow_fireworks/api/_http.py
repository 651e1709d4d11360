"""What the control-plane clients (``DeploymentManager``, ``AsyncFireworksClient``, and the trainer
clients on top of them) share on top of the transport: ``BaseClient`` (a ``ClientConfig``, the
retry policy, and which answers raise), the options of a request, routes, hotload headers, what a
DELETE's answer means, and the errors built from an answer or a transport failure (key scrubbed)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Self, TypedDict

from airflow_fireworks.api.errors import (
    FireworksAPIError,
    FireworksConnectionError,
    FireworksError,
    FireworksValidationError,
)
from airflow_fireworks.api.models import deployment_name
from airflow_fireworks.api.retry import RETRYABLE_STATUS, RetryableHTTPStatus, RetryPolicy
from airflow_fireworks.api.transport import COMPLETIONS_PATH as COMPLETIONS_PATH  # warmup, probe
from airflow_fireworks.api.transport import (
    DEFAULT_BASE_URL,
    ClientConfig,
    error_message,
    merge_headers,
    redact,
)

log = logging.getLogger(__name__)

ACCOUNTS_PATH = "/v1/accounts"
HOTLOAD_PATH = "/hot_load/v1/models/hot_load"

_REQUEST_ID_HEADERS = ("x-request-id", "x-fireworks-request-id")


class BaseClient:
    """A client's ``ClientConfig`` (key, URLs, headers, TLS, timeout; see ``api.transport``) and its
    retry policy, validated before any request. ``default_timeout_s`` is the per-request timeout
    when none is given."""

    default_timeout_s = 60.0

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        inference_url: str | None = None,
        hotload_api_url: str | None = None,
        additional_headers: Mapping[str, str] | None = None,
        verify_ssl: bool | None = None,
        *,
        retry_policy: RetryPolicy | None = None,
        timeout_s: float | None = None,
    ) -> None:
        self.config = ClientConfig.create(
            api_key,
            base_url=base_url,
            inference_url=inference_url,
            hotload_api_url=hotload_api_url,
            additional_headers=additional_headers,
            verify_ssl=verify_ssl,
            timeout_s=self.default_timeout_s if timeout_s is None else timeout_s,
        )
        if retry_policy is not None and not isinstance(retry_policy, RetryPolicy):
            raise FireworksValidationError("retry_policy", "must be a RetryPolicy or None")
        self.retry_policy = retry_policy or RetryPolicy()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(base_url={self.base_url!r}, inference_url={self.inference_url!r}, "
            f"hotload_api_url={self.hotload_api_url!r})"
        )

    def _check(
        self,
        status: int,
        body: bytes,
        headers: Mapping[str, str],
        method: str,
        url: str,
        options: RequestOptions,
    ) -> None:
        """Return for a 2xx/3xx answer or a status the request ``expect``s; else raise the
        ``FireworksAPIError`` (key scrubbed), wrapped in ``RetryableHTTPStatus`` when retried."""
        log.debug("Fireworks %s %s -> HTTP %d", method, url, status)
        if status < 400 or status in options.get("expect", ()):
            return
        error = api_error(status, body, headers, method, url, self._api_key)
        if error.retryable:
            raise RetryableHTTPStatus(status, error.retry_after_s, error=error)
        raise error

    # The settings by the names the clients read them (``config`` is their one source).

    @property
    def base_url(self) -> str:
        return self.config.base_url

    @property
    def inference_url(self) -> str:
        return self.config.inference_url

    @property
    def hotload_api_url(self) -> str:
        return self.config.hotload_api_url

    @property
    def timeout_s(self) -> float:
        return self.config.timeout_s

    @property
    def _api_key(self) -> str:
        return self.config.api_key

    @property
    def _control_headers(self) -> Mapping[str, str]:
        return self.config.control_headers

    @property
    def _gateway_headers(self) -> Mapping[str, str]:
        return self.config.gateway_headers

    @property
    def _verify_ssl(self) -> bool:
        return self.config.verify_ssl


class RequestOptions(TypedDict, total=False):
    """What a control-plane request carries besides method, URL and headers (sync and async)."""

    params: Mapping[str, str] | None
    body: Any
    expect: Sequence[int]
    """Statuses returned to the caller instead of raised (e.g. 404 for "absent")."""


class ClosingContext:
    """``with client:`` closes the client (its pooled connections) on the way out."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def deleted(status: int, what: str) -> bool:
    """The answer to a DELETE sent with ``expect=(404,)``: True when it deleted ``what``, False
    when ``what`` was already absent (a delete of something gone is done, not an error)."""
    if status == 404:
        log.info("The %s was already absent", what)
        return False
    log.info("Deleting the %s", what)
    return True


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
