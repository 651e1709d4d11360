"""Incremental SSE decoding and assembly of a streamed text completion (fireworks-api.md 6.4, 6.5).

Bytes are fed as they arrive from the socket; a network chunk may split a line, a UTF-8
character or a ``\\r\\n`` pair anywhere. Events are dispatched at blank lines only. The decoder
works on bytes (``json.loads`` takes bytes), so no per-chunk text decoding happens.
"""

from __future__ import annotations

import json
import time
from typing import Any

from airflow_fireworks.sampling.errors import (
    StreamProtocolError,
    StreamTruncatedError,
    UpstreamStreamError,
)

#: Event names whose non-JSON data is a keep-alive, not a protocol error.
PING_EVENTS = frozenset({b"ping", b"heartbeat", b"keepalive"})
#: Finish reasons that end a completion normally; any other non-empty value is an upstream error.
FINISH_REASONS = frozenset({"stop", "length", "tool_calls"})

_MAX_ID_CHARS = 256
_NO_EVENTS: list[tuple[bytes, bytes]] = []


class SSEDecoder:
    """Turns a byte stream into ``(event_name, data)`` pairs, one per dispatched SSE event.

    Lines end at ``\\n``, ``\\r\\n`` or ``\\r``; ``data:`` lines accumulate (joined with ``\\n``),
    ``event:`` names the event, ``:`` lines are comments, other fields are ignored. An event
    without a terminating blank line is never dispatched.
    """

    __slots__ = ("_data", "_event", "_partial", "_pending_cr")

    def __init__(self) -> None:
        self._partial: list[bytes] = []
        self._pending_cr = False
        self._data: list[bytes] = []
        self._event = b""

    def feed(self, chunk: bytes) -> list[tuple[bytes, bytes]]:
        """Consume the next bytes; return the events completed by them (often none or one).

        The returned list must not be modified by the caller.
        """
        if not chunk:
            return _NO_EVENTS
        if self._pending_cr:
            # The previous chunk ended with "\r", already taken as a line end; a "\n" right after
            # it belongs to the same "\r\n".
            self._pending_cr = False
            if chunk[0] == 10:
                chunk = chunk[1:]
        if b"\r" in chunk:
            self._pending_cr = chunk[-1] == 13
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if b"\n" not in chunk:
            if chunk:
                self._partial.append(chunk)
            return _NO_EVENTS
        if self._partial:
            self._partial.append(chunk)
            chunk = b"".join(self._partial)
            self._partial = []
        lines = chunk.split(b"\n")
        tail = lines.pop()
        if tail:
            self._partial.append(tail)
        events: list[tuple[bytes, bytes]] = []
        data = self._data
        for line in lines:
            if not line:
                if data:
                    events.append((self._event, data[0] if len(data) == 1 else b"\n".join(data)))
                    data = self._data = []
                self._event = b""
            elif line.startswith(b"data:"):
                data.append(line[6:] if line[5:6] == b" " else line[5:])
            elif line[0] != 58:  # not a ":" comment
                name, _, value = line.partition(b":")
                if value[:1] == b" ":
                    value = value[1:]
                if name == b"event":
                    self._event = value
                elif name == b"data":
                    data.append(value)
        return events


def _embedded_status(error: Any) -> int | None:
    if not isinstance(error, dict):
        return None
    for key in ("status_code", "status"):
        value = error.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and 400 <= value <= 599:
            return value
    return None


def upstream_error(error: Any, response_id: Any = None) -> UpstreamStreamError:
    """An ``UpstreamStreamError`` from an error object (or text) reported inside a stream."""
    status = _embedded_status(error)
    code = error_type = None
    if isinstance(error, dict):
        message = error.get("message") or error.get("code") or "upstream stream error"
        raw_code = error.get("code")
        code = raw_code if isinstance(raw_code, str | int) and not isinstance(raw_code, bool) else None
        raw_type = error.get("type")
        error_type = raw_type if isinstance(raw_type, str) else None
    else:
        message = str(error)[:200] or "upstream stream error"
    text = f"upstream stream error: {message}"
    if status is not None:
        text += f" (status {status})"
    return UpstreamStreamError(
        text,
        final_status=status,
        upstream_error_code=code,
        upstream_error_type=error_type,
        upstream_response_id=response_id[:_MAX_ID_CHARS] if isinstance(response_id, str) else None,
    )


class StreamAssembler:
    """Accumulates the chunks of one streamed choice (the sampler always sends ``n: 1``).

    ``text`` deltas are concatenated, ``logprobs.content`` lists appended, the last accepted
    ``finish_reason`` and the last truthy ``raw_output`` kept, ``usage`` and ``perf_metrics``
    taken from the last chunk carrying them.
    """

    __slots__ = (
        "done",
        "finish_reason",
        "first_text_at",
        "logprobs_content",
        "perf_metrics",
        "raw_output",
        "response_id",
        "routing_matrix_format",
        "routing_references",
        "text_parts",
        "usage",
    )

    def __init__(self) -> None:
        self.done = False
        self.response_id: str | None = None
        self.text_parts: list[str] = []
        self.logprobs_content: list[Any] = []
        self.finish_reason: str | None = None
        self.raw_output: dict[str, Any] | None = None
        self.usage: dict[str, Any] | None = None
        self.perf_metrics: dict[str, Any] | None = None
        self.first_text_at: float | None = None
        self.routing_matrix_format: Any = None
        self.routing_references: Any = None

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    def add_event(self, event: bytes, data: bytes) -> None:
        """Apply one SSE event. Raises ``UpstreamStreamError`` or ``StreamProtocolError``."""
        if self.done:
            return
        if event == b"error":
            try:
                payload: Any = json.loads(data)
            except ValueError:
                payload = data.decode("utf-8", "replace")
            if isinstance(payload, dict) and "error" in payload:
                raise upstream_error(payload["error"], payload.get("id"))
            raise upstream_error(payload)
        try:
            chunk = json.loads(data)
        except ValueError:
            stripped = data.strip()
            if stripped == b"[DONE]":
                self.done = True
                return
            if not stripped or event in PING_EVENTS:
                return
            raise StreamProtocolError(
                f"stream event {event.decode('utf-8', 'replace') or 'message'!r} carries data that is "
                f"not JSON: {data[:80].decode('utf-8', 'replace')!r}"
            ) from None
        if type(chunk) is not dict:
            raise StreamProtocolError(f"stream chunk is a JSON {type(chunk).__name__}, not an object")
        if chunk.get("error") is not None:
            raise upstream_error(chunk["error"], chunk.get("id"))
        if self.response_id is None:
            response_id = chunk.get("id")
            if isinstance(response_id, str):
                self.response_id = response_id[:_MAX_ID_CHARS]
        choices = chunk.get("choices")
        if choices is not None:
            if type(choices) is not list:
                raise StreamProtocolError("stream chunk 'choices' is not a list")
            for choice in choices:
                self._add_choice(choice)
        if "usage" in chunk:
            usage = chunk["usage"]
            if usage is not None and type(usage) is not dict:
                raise StreamProtocolError("stream chunk 'usage' is not an object")
            self.usage = usage
        if "perf_metrics" in chunk:
            perf_metrics = chunk["perf_metrics"]
            self.perf_metrics = perf_metrics if type(perf_metrics) is dict else None

    def _add_choice(self, choice: Any) -> None:
        if type(choice) is not dict:
            raise StreamProtocolError("stream chunk choice is not an object")
        text = choice.get("text")
        if text:
            if type(text) is not str:
                raise StreamProtocolError("stream chunk choice 'text' is not a string")
            self.text_parts.append(text)
            if self.first_text_at is None:
                self.first_text_at = time.monotonic()
        logprobs = choice.get("logprobs")
        if logprobs:
            content = logprobs.get("content") if type(logprobs) is dict else None
            if content:
                if type(content) is not list:
                    raise StreamProtocolError("stream chunk 'logprobs.content' is not a list")
                self.logprobs_content.extend(content)
        finish_reason = choice.get("finish_reason")
        if finish_reason:
            if finish_reason not in FINISH_REASONS:
                error = upstream_error({"message": f"finish_reason {finish_reason!r}"}, self.response_id)
                error.upstream_finish_reason = str(finish_reason)[:64]
                raise error
            self.finish_reason = finish_reason
        raw_output = choice.get("raw_output")
        if raw_output:
            if type(raw_output) is not dict:
                raise StreamProtocolError("stream chunk 'raw_output' is not an object")
            self.raw_output = raw_output
        if "routing_matrix_format" in choice:
            self.routing_matrix_format = choice["routing_matrix_format"]
        if "routing_references" in choice:
            self.routing_references = choice["routing_references"]

    def check_complete(self) -> None:
        """Raise ``StreamTruncatedError`` unless the stream ended the completion properly.

        Complete means an accepted finish reason, and either ``[DONE]`` or the final
        ``raw_output`` (a cut right after the last chunk loses nothing).
        """
        if self.finish_reason is None:
            raise StreamTruncatedError(
                "stream ended without a finish reason",
                upstream_response_id=self.response_id,
            )
        if not self.done and self.raw_output is None:
            raise StreamTruncatedError(
                "stream ended without [DONE] before the final raw_output",
                upstream_response_id=self.response_id,
                upstream_finish_reason=self.finish_reason,
            )
