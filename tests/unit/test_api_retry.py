"""The shared retry policy: backoff bounds, Retry-After parsing and the tenacity builders."""

from __future__ import annotations

import email.utils
import ssl
import time

import pytest
import requests
import tenacity

from airflow_fireworks.api import (
    RETRYABLE_STATUS,
    FireworksAPIError,
    FireworksTimeoutError,
    FireworksValidationError,
    RetryableHTTPStatus,
    RetryPolicy,
)

FAST = RetryPolicy(max_attempts=4, initial_backoff_s=0.001, max_backoff_s=0.002)


def test_retryable_statuses() -> None:
    assert frozenset({408, 425, 429, 500, 502, 503, 504}) == RETRYABLE_STATUS
    policy = RetryPolicy()
    assert all(policy.is_retryable_status(s) for s in RETRYABLE_STATUS)
    assert not any(policy.is_retryable_status(s) for s in (200, 400, 401, 403, 404, 409, 422, 501))


def test_backoff_full_jitter_bounds() -> None:
    policy = RetryPolicy(initial_backoff_s=1.0, max_backoff_s=30.0)
    for attempt, ceiling in ((1, 1.0), (2, 2.0), (3, 4.0), (6, 30.0), (20, 30.0)):
        samples = [policy.backoff_s(attempt, None) for _ in range(200)]
        assert all(0.0 <= s <= ceiling for s in samples)
        assert max(samples) > ceiling / 2  # really spread over the range, not a constant


def test_backoff_floors_at_retry_after_capped_at_max() -> None:
    policy = RetryPolicy(initial_backoff_s=0.1, max_backoff_s=10.0)
    assert all(policy.backoff_s(1, 5.0) >= 5.0 for _ in range(50))
    assert policy.backoff_s(1, 100.0) == 10.0
    ignoring = RetryPolicy(initial_backoff_s=0.1, max_backoff_s=10.0, honour_retry_after=False)
    assert all(ignoring.backoff_s(1, 5.0) <= 0.1 for _ in range(50))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("3", 3.0),
        (" 1.5 ", 1.5),
        ("0", 0.0),
        (None, None),
        ("", None),
        ("soon", None),
        ("-1", None),
        ("inf", None),
        ("nan", None),
    ],
)
def test_parse_retry_after_seconds(value: str | None, expected: float | None) -> None:
    assert RetryPolicy.parse_retry_after(value) == expected


def test_parse_retry_after_http_date() -> None:
    future = email.utils.formatdate(time.time() + 120, usegmt=True)
    parsed = RetryPolicy.parse_retry_after(future)
    assert parsed is not None and 100 < parsed <= 121
    past = email.utils.formatdate(time.time() - 120, usegmt=True)
    assert RetryPolicy.parse_retry_after(past) == 0.0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"initial_backoff_s": -1}, "initial_backoff_s"),
        ({"max_backoff_s": 0.5, "initial_backoff_s": 1.0}, "max_backoff_s"),
        ({"max_total_s": float("inf")}, "max_total_s"),
    ],
)
def test_policy_validation(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(FireworksValidationError) as info:
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_exception_classification() -> None:
    policy = RetryPolicy()
    assert policy.is_retryable_exception(RetryableHTTPStatus(503))
    assert policy.is_retryable_exception(requests.ConnectionError("reset"))
    assert policy.is_retryable_exception(requests.ReadTimeout("slow"))
    assert policy.is_retryable_exception(ConnectionResetError())
    assert not policy.is_retryable_exception(ValueError("bad"))
    assert not policy.is_retryable_exception(FireworksTimeoutError("deadline"))
    assert not policy.is_retryable_exception(FireworksAPIError(400, "x", method="GET", url="u"))


def test_certificate_failures_are_not_retried() -> None:
    """A certificate that fails verification stays failed: report it at once, not after the budget."""
    policy = RetryPolicy()
    assert not policy.is_retryable_exception(requests.exceptions.SSLError("certificate verify failed"))
    assert not policy.is_retryable_exception(ssl.SSLCertVerificationError("self-signed certificate"))
    assert policy.is_retryable_exception(requests.ConnectionError("reset"))


def _api_error(status: int) -> FireworksAPIError:
    return FireworksAPIError(status, "busy", method="GET", url="http://h/x", retryable=True)


def test_sync_retrying_retries_then_succeeds() -> None:
    calls = 0
    for attempt in FAST.sync_retrying():
        with attempt:
            calls += 1
            if calls < 3:
                raise RetryableHTTPStatus(503, error=_api_error(503))
    assert calls == 3


def test_sync_retrying_bounded_surfaces_carried_error() -> None:
    calls = 0
    with pytest.raises(FireworksAPIError) as info:
        for attempt in FAST.sync_retrying():
            with attempt:
                calls += 1
                raise RetryableHTTPStatus(429, retry_after_s=0.0, error=_api_error(429))
    assert calls == FAST.max_attempts
    assert info.value.status_code == 429


def test_sync_retrying_does_not_retry_other_errors() -> None:
    calls = 0
    with pytest.raises(KeyError):
        for attempt in FAST.sync_retrying():
            with attempt:
                calls += 1
                raise KeyError("x")
    assert calls == 1


def test_sync_retrying_reraises_last_transport_error() -> None:
    calls = 0
    with pytest.raises(requests.ConnectionError):
        for attempt in FAST.sync_retrying():
            with attempt:
                calls += 1
                raise requests.ConnectionError("reset")
    assert calls == FAST.max_attempts


def test_wait_honours_retry_after_and_total_budget() -> None:
    policy = RetryPolicy(max_attempts=3, initial_backoff_s=0.0, max_backoff_s=0.05, max_total_s=10.0)
    retrying = policy.sync_retrying()
    slept: list[float] = []
    retrying.sleep = slept.append
    with pytest.raises(RetryableHTTPStatus):
        for attempt in retrying:
            with attempt:
                raise RetryableHTTPStatus(503, retry_after_s=0.04)
    assert len(slept) == 2
    assert all(s == pytest.approx(0.04) for s in slept)


def test_max_total_stops_early() -> None:
    policy = RetryPolicy(max_attempts=1000, initial_backoff_s=0.0, max_backoff_s=0.0, max_total_s=0.0)
    calls = 0
    with pytest.raises(RetryableHTTPStatus):
        for attempt in policy.sync_retrying():
            with attempt:
                calls += 1
                raise RetryableHTTPStatus(500)
    assert calls == 1


async def test_async_retrying() -> None:
    calls = 0
    async for attempt in FAST.async_retrying():
        with attempt:
            calls += 1
            if calls == 1:
                raise ConnectionResetError()
            if calls == 2:
                raise RetryableHTTPStatus(502)
    assert calls == 3
    calls = 0
    with pytest.raises(FireworksAPIError):
        async for attempt in FAST.async_retrying():
            with attempt:
                calls += 1
                raise RetryableHTTPStatus(504, error=_api_error(504))
    assert calls == FAST.max_attempts


def test_a_budget_bounds_every_sleep_and_the_total() -> None:
    """A caller's shorter deadline (budget_s) caps the sleeps too, not only the stop condition,
    even when the server asks for a longer Retry-After."""
    policy = RetryPolicy(max_attempts=5, initial_backoff_s=10.0, max_backoff_s=30.0, max_total_s=300.0)
    sleeps: list[float] = []
    retrying = policy.sync_retrying(budget_s=0.5, sleep=sleeps.append)

    def always_busy() -> None:
        raise RetryableHTTPStatus(503, retry_after_s=20.0)

    with pytest.raises(RetryableHTTPStatus):
        retrying(always_busy)
    assert sleeps and all(sleep <= 0.5 for sleep in sleeps)
    unbounded: list[float] = []
    with pytest.raises(RetryableHTTPStatus):
        policy.sync_retrying(sleep=unbounded.append, stop=tenacity.stop_after_attempt(2))(always_busy)
    assert unbounded == [20.0]
