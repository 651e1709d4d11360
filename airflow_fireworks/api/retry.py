"""The one retry policy of the project, shared by the sync client, the async client, the
triggers and the sampler.

Retried: connection and read errors, and the statuses in ``RETRYABLE_STATUS``, with exponential
backoff and full jitter, never less than the server's ``Retry-After``. Everything else (other
4xx) is raised at once. The policy is a small frozen dataclass; ``sync_retrying()`` and
``async_retrying()`` turn it into composable tenacity objects::

    for attempt in policy.sync_retrying():
        with attempt:
            response = session.get(url)
            if policy.is_retryable_status(response.status_code):
                raise RetryableHTTPStatus(response.status_code, policy.parse_retry_after(
                    response.headers.get("Retry-After")), error=build_error(response))
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import random
import ssl
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import requests
import tenacity
from tenacity.wait import wait_base

from airflow_fireworks.api.errors import FireworksError, FireworksValidationError

log = logging.getLogger(__name__)

RETRYABLE_STATUS: frozenset[int] = frozenset({408, 425, 429, 500, 502, 503, 504})

#: Transport failures worth another attempt (connect refused/reset, read timeout, cut body).
#: ``FireworksConnectionError`` (what the clients raise once attempts run out) is not retried again.
RETRYABLE_EXCEPTIONS: tuple[type[BaseException], ...] = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    aiohttp.ClientConnectionError,
    aiohttp.ClientPayloadError,
    asyncio.TimeoutError,
    ConnectionError,
)


#: A server certificate that fails verification: permanent, reported at once.
CERTIFICATE_ERRORS: tuple[type[BaseException], ...] = (
    requests.exceptions.SSLError,
    aiohttp.ClientConnectorCertificateError,
    ssl.SSLCertVerificationError,
)


class RetryableHTTPStatus(Exception):
    """Marker raised inside an attempt for a retryable HTTP answer.

    ``error`` is what the caller sees when the attempts run out (typically a
    ``FireworksAPIError``); without it the marker itself is raised.
    """

    def __init__(
        self, status_code: int, retry_after_s: float | None = None, error: BaseException | None = None
    ) -> None:
        self.status_code = status_code
        self.retry_after_s = retry_after_s
        self.error = error
        super().__init__(f"retryable HTTP status {status_code}")


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff, full jitter and ``Retry-After`` support."""

    max_attempts: int = 8
    initial_backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    max_total_s: float = 300.0
    honour_retry_after: bool = True

    def __post_init__(self) -> None:
        if (
            isinstance(self.max_attempts, bool)
            or not isinstance(self.max_attempts, int)
            or self.max_attempts < 1
        ):
            raise FireworksValidationError("max_attempts", "must be an integer >= 1")
        for name in ("initial_backoff_s", "max_backoff_s", "max_total_s"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value < 0
            ):
                raise FireworksValidationError(name, "must be a finite number >= 0")
        if self.max_backoff_s < self.initial_backoff_s:
            raise FireworksValidationError("max_backoff_s", "must be >= initial_backoff_s")

    def is_retryable_status(self, status: int) -> bool:
        """True for the statuses worth another attempt (408, 425, 429, 5xx gateway errors)."""
        return status in RETRYABLE_STATUS

    def is_retryable_exception(self, exc: BaseException) -> bool:
        """True for a retryable status marker or a transport failure; never for our own errors,
        nor for a TLS certificate that fails verification (retrying cannot fix it)."""
        if isinstance(exc, RetryableHTTPStatus):
            return True
        if isinstance(exc, (FireworksError, *CERTIFICATE_ERRORS)):
            return False
        return isinstance(exc, RETRYABLE_EXCEPTIONS)

    def backoff_s(self, attempt: int, retry_after_s: float | None = None) -> float:
        """Sleep after failed attempt ``attempt`` (1-based).

        Full jitter: uniform(0, min(max_backoff_s, initial_backoff_s * 2**(attempt-1))), raised to
        ``Retry-After`` when given (and honoured), never above ``max_backoff_s``.
        """
        ceiling = min(self.max_backoff_s, self.initial_backoff_s * 2.0 ** max(attempt - 1, 0))
        delay = random.uniform(0.0, ceiling)
        if self.honour_retry_after and retry_after_s is not None:
            delay = max(delay, retry_after_s)
        return min(delay, self.max_backoff_s)

    @staticmethod
    def parse_retry_after(value: str | None) -> float | None:
        """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date); None if absent/bad."""
        if value is None:
            return None
        text = value.strip()
        if not text:
            return None
        try:
            seconds = float(text)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(text)
            except (TypeError, ValueError, IndexError):
                return None
            if when.tzinfo is None:
                return None
            return max(0.0, when.timestamp() - time.time())
        if not math.isfinite(seconds) or seconds < 0:
            return None
        return seconds

    def sync_retrying(self, *, budget_s: float | None = None, **overrides: Any) -> tenacity.Retrying:
        """A ``tenacity.Retrying`` for blocking code (requests). ``budget_s`` shortens the total
        time (stops and sleeps both respect it), e.g. to a caller's deadline."""
        return tenacity.Retrying(**self._tenacity_kwargs(budget_s, overrides))

    def async_retrying(self, *, budget_s: float | None = None, **overrides: Any) -> tenacity.AsyncRetrying:
        """A ``tenacity.AsyncRetrying`` for asyncio code (aiohttp); sleeps without blocking."""
        return tenacity.AsyncRetrying(**self._tenacity_kwargs(budget_s, overrides))

    def _tenacity_kwargs(self, budget_s: float | None, overrides: dict[str, Any]) -> dict[str, Any]:
        total_s = self.max_total_s if budget_s is None else min(self.max_total_s, max(budget_s, 0.0))
        kwargs: dict[str, Any] = {
            "retry": tenacity.retry_if_exception(self.is_retryable_exception),
            "stop": tenacity.stop_after_attempt(self.max_attempts) | tenacity.stop_after_delay(total_s),
            "wait": PolicyWait(self, total_s),
            "before_sleep": _log_before_sleep,
            "retry_error_callback": _raise_final_error,
        }
        kwargs.update(overrides)
        return kwargs


class PolicyWait(wait_base):
    """tenacity wait strategy: the policy's jittered backoff, floored at ``Retry-After`` and
    never sleeping past the total budget (``total_s``, default the policy's ``max_total_s``)."""

    def __init__(self, policy: RetryPolicy, total_s: float | None = None) -> None:
        self.policy = policy
        self.total_s = policy.max_total_s if total_s is None else total_s

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        retry_after: float | None = None
        if retry_state.outcome is not None and retry_state.outcome.failed:
            retry_after = getattr(retry_state.outcome.exception(), "retry_after_s", None)
        delay = self.policy.backoff_s(retry_state.attempt_number, retry_after)
        remaining = self.total_s - (retry_state.seconds_since_start or 0.0)
        return max(0.0, min(delay, remaining))


def _describe(exc: BaseException | None) -> str:
    if isinstance(exc, RetryableHTTPStatus):
        return f"HTTP {exc.status_code}"
    return type(exc).__name__ if exc is not None else "unknown failure"


def _log_before_sleep(retry_state: tenacity.RetryCallState) -> None:
    exc = retry_state.outcome.exception() if retry_state.outcome is not None else None
    log.info(
        "Retrying after %s (attempt %d), sleeping %.2fs",
        _describe(exc),
        retry_state.attempt_number,
        retry_state.upcoming_sleep,
    )


def _raise_final_error(retry_state: tenacity.RetryCallState) -> Any:
    """When attempts run out, raise the error the caller should see, not a tenacity wrapper."""
    assert retry_state.outcome is not None
    exc = retry_state.outcome.exception()
    if isinstance(exc, RetryableHTTPStatus) and exc.error is not None:
        raise exc.error from None
    if exc is not None:
        raise exc
    return retry_state.outcome.result()
