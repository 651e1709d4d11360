"""Error messages: status, method, URL, server message, request id and a hint per status."""

from __future__ import annotations

import pytest

from airflow_fireworks.api import (
    DeploymentFailedError,
    FireworksAPIError,
    FireworksError,
    FireworksTimeoutError,
    FireworksValidationError,
    HotloadFailedError,
)


def test_api_error_text() -> None:
    err = FireworksAPIError(
        400, "bad shape", method="POST", url="http://h/v1/accounts/a/deployments", request_id="req-1"
    )
    text = str(err)
    assert text.startswith("HTTP 400 POST http://h/v1/accounts/a/deployments: bad shape (request id req-1)")
    assert "deployment shape" in text
    assert err.retryable is False


@pytest.mark.parametrize(
    ("status", "word"),
    [(401, "training-scoped"), (403, "permission"), (404, "not found"), (409, "exists"), (429, "rate")],
)
def test_hints(status: int, word: str) -> None:
    assert word in str(FireworksAPIError(status, "m", method="GET", url="u"))


def test_hierarchy() -> None:
    assert issubclass(FireworksValidationError, ValueError)
    assert issubclass(FireworksTimeoutError, TimeoutError)
    for cls in (FireworksAPIError, DeploymentFailedError, HotloadFailedError, FireworksTimeoutError):
        assert issubclass(cls, FireworksError)


def test_failed_and_hotload_attributes() -> None:
    err = DeploymentFailedError("d", "FAILED", "out of GPUs")
    assert (err.state, err.status_message) == ("FAILED", "out of GPUs")
    assert "out of GPUs" in str(err)
    hot = HotloadFailedError("s1", "error", "hotload of 's1' failed")
    assert (hot.identity, hot.stage) == ("s1", "error")
