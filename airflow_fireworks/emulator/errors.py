"""Fireworks-style error bodies: ``{"error": {"code": ..., "message": ...}}``."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

GRPC_CODE_BY_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "UNIMPLEMENTED",
    408: "DEADLINE_EXCEEDED",
    409: "ALREADY_EXISTS",
    412: "FAILED_PRECONDITION",
    425: "UNAVAILABLE",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


class ApiError(Exception):
    """An error answer: HTTP status, gRPC-style code name and a message for the body."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers
        self.message = message
        self.code = code or GRPC_CODE_BY_STATUS.get(status, "UNKNOWN")
        self.extra = extra

    def body(self) -> dict[str, Any]:
        """The JSON body of the answer."""
        return {"error": {"code": self.code, "message": self.message, **self.extra}}


def invalid(message: str) -> ApiError:
    """A 400 ``INVALID_ARGUMENT`` error."""
    return ApiError(400, message, "INVALID_ARGUMENT")


def extra_field(name: str) -> ApiError:
    """The 400 the inference and hotload gateways give for an unknown request field."""
    return ApiError(
        400,
        f"Extra inputs are not permitted, field: '{name}'",
        "INVALID_ARGUMENT",
        type="invalid_request_error",
    )


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A compact JSON answer."""
    return web.Response(
        body=json.dumps(body, separators=(",", ":")).encode(),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def error_response(error: ApiError, headers: dict[str, str] | None = None) -> web.Response:
    """The JSON answer for ``error``."""
    return json_response(error.body(), status=error.status, headers=headers)
