"""Errors raised while sampling.

Every failure of a logical request (one completion, all its attempts) surfaces as a
``SamplingRequestError`` or one of its subclasses, carrying the logical request id, the number of
attempts and what the last attempt saw. Messages never contain the API key or the prompt.
"""

from __future__ import annotations

from typing import Any

from airflow_fireworks.api.errors import FireworksError

#: Keys of ``SamplingRequestError.context`` that are kept (anything else is dropped).
CONTEXT_KEYS: tuple[str, ...] = ("session", "run", "checkpoint", "step", "group", "item")


class SamplingError(FireworksError):
    """Base class of every error raised by ``airflow_fireworks.sampling``."""


class SamplingRequestError(SamplingError):
    """A logical sampling request failed for good (retry budget spent or a non-retryable error).

    ``final_error_kind`` is one of ``http_status``, ``sse_truncation``, ``connection``,
    ``timeout``, ``upstream_stream``, ``protocol`` or ``invalid_response``.
    """

    default_kind: str | None = None

    def __init__(
        self,
        message: str,
        *,
        logical_request_id: str | None = None,
        model: str | None = None,
        attempts: int = 0,
        final_status: int | None = None,
        final_error_kind: str | None = None,
        request_id: str | None = None,
        wire_status: int | None = None,
        upstream_response_id: str | None = None,
        upstream_error_code: str | int | None = None,
        upstream_error_type: str | None = None,
        upstream_finish_reason: str | None = None,
        retry_budget_exhausted: bool = False,
        context: dict[str, Any] | None = None,
        server_attempts: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.logical_request_id = logical_request_id
        self.model = model
        self.attempts = attempts
        self.final_status = final_status
        self.final_error_kind = final_error_kind or self.default_kind
        self.request_id = request_id
        self.wire_status = wire_status
        self.upstream_response_id = upstream_response_id
        self.upstream_error_code = upstream_error_code
        self.upstream_error_type = upstream_error_type
        self.upstream_finish_reason = upstream_finish_reason
        self.retry_budget_exhausted = retry_budget_exhausted
        self.context = {k: v for k, v in (context or {}).items() if k in CONTEXT_KEYS}
        self.server_attempts = server_attempts or []

    def __str__(self) -> str:
        text = self.message
        details = []
        if self.logical_request_id:
            details.append(f"request id {self.logical_request_id}")
        if self.attempts:
            details.append(f"{self.attempts} attempt(s)")
        if details:
            text += f" ({', '.join(details)})"
        return text

    def as_error_record(self) -> dict[str, Any]:
        """A JSON-serialisable description without any prompt or completion payload."""
        return {
            "error_type": type(self).__name__,
            "message": self.message,
            "logical_request_id": self.logical_request_id,
            "model": self.model,
            "attempts": self.attempts,
            "final_status": self.final_status,
            "final_error_kind": self.final_error_kind,
            "request_id": self.request_id,
            "wire_status": self.wire_status,
            "upstream_response_id": self.upstream_response_id,
            "upstream_error_code": self.upstream_error_code,
            "upstream_error_type": self.upstream_error_type,
            "upstream_finish_reason": self.upstream_finish_reason,
            "retry_budget_exhausted": self.retry_budget_exhausted,
            "context": dict(self.context),
            "server_attempts": list(self.server_attempts),
        }


class DeploymentSamplerTimeoutError(SamplingRequestError, TimeoutError):
    """The last attempt failed in a timeout-like way (client timeout, HTTP 408 or 504)."""

    default_kind = "timeout"


class SamplingHTTPError(SamplingRequestError):
    """The server answered a status that is not retried (400, 401, 403, 422, ...; 404/425 once the
    not-ready retries are spent)."""

    default_kind = "http_status"


class DeploymentNotServingError(SamplingHTTPError):
    """The deployment still answered 404/425 after the not-ready retries: it is gone, failed,
    scaled to zero or stuck loading. ``sample_prompts`` stops the whole batch on it, since every
    other prompt would wait out the same retries."""

    default_kind = "not_serving"


class StreamTruncatedError(SamplingRequestError):
    """The stream ended without an accepted finish reason. Retried; never counted complete."""

    default_kind = "sse_truncation"


class StreamProtocolError(SamplingRequestError):
    """The stream broke the SSE/chunk format (non-JSON data, an event that is not an object, ...).
    Not retried."""

    default_kind = "protocol"


class UpstreamStreamError(SamplingRequestError):
    """The server reported an error inside the stream (``event: error``, a chunk ``error`` member
    or a finish reason such as ``error``). Retried only when it embeds a retryable status."""

    default_kind = "upstream_stream"


class InvalidCompletionError(SamplingRequestError):
    """A complete stream whose content cannot be turned into a completion (no
    ``raw_output.completion_token_ids``, echo mismatch, unsupported routing format). Not retried."""

    default_kind = "invalid_response"
