"""Per-attempt server metrics: response headers merged with the final chunk's ``perf_metrics``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class ServerMetrics:
    """What one attempt of a logical request observed (server-side timings and client-side facts).

    ``prefill_queue_duration`` is what the adaptive concurrency controller steers on.
    """

    prefill_queue_duration: float | None = None
    generation_queue_duration: float | None = None
    num_concurrent_requests: int | None = None
    server_ttft: float | None = None
    cached_prompt_tokens: int | None = None
    prompt_tokens: int | None = None
    server_processing_time: float | None = None
    tokenizer_queue_duration: float | None = None
    tokenizer_duration: float | None = None
    prefill_duration: float | None = None
    generation_duration: float | None = None
    backend_host: str | None = None
    deployment: str | None = None
    pod_template_hash: str | None = None
    response_request_id: str | None = None
    completion_tokens: int | None = None
    client_ttft: float | None = None
    client_latency: float | None = None
    http_status_code: int | None = None
    transport_error: bool = False
    retry_attempt: int = 1
    error: str | None = None


def _to_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _to_float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _to_str(value: Any) -> str | None:
    return str(value)


#: (ServerMetrics field, bare metric key, header/prefixed key, parser)
_METRIC_FIELDS: tuple[tuple[str, str, str, Callable[[Any], Any]], ...] = tuple(
    (field, key, "fireworks-" + key, parser)
    for field, key, parser in (
        ("prefill_queue_duration", "prefill-queue-duration", _to_float),
        ("generation_queue_duration", "generation-queue-duration", _to_float),
        ("num_concurrent_requests", "num-concurrent-requests", _to_int),
        ("server_ttft", "server-time-to-first-token", _to_float),
        ("cached_prompt_tokens", "cached-prompt-tokens", _to_int),
        ("prompt_tokens", "prompt-tokens", _to_int),
        ("server_processing_time", "server-processing-time", _to_float),
        ("tokenizer_queue_duration", "tokenizer-queue-duration", _to_float),
        ("tokenizer_duration", "tokenizer-duration", _to_float),
        ("prefill_duration", "prefill-duration", _to_float),
        ("generation_duration", "generation-duration", _to_float),
        ("backend_host", "backend-host", _to_str),
        ("deployment", "deployment", _to_str),
        ("pod_template_hash", "pod-template-hash", _to_str),
    )
)

_REQUEST_ID_HEADERS = ("x-request-id", "x-fireworks-request-id", "cf-ray")
_MAX_ID_CHARS = 256


def _lookup(perf: Mapping[str, Any], headers: Mapping[str, str], key: str) -> Any:
    value = perf.get(key)
    if value is None or value == "":
        value = headers.get(key)
    return value


def clean_identifier(value: Any) -> str | None:
    """A server-provided id made safe to log: at most 256 chars, control characters escaped."""
    if not isinstance(value, str) or not value:
        return None
    text = value[:_MAX_ID_CHARS]
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def parse_server_metrics(
    headers: Mapping[str, str],
    perf_metrics: Mapping[str, Any] | None = None,
    **client_fields: Any,
) -> ServerMetrics:
    """Build ``ServerMetrics`` from response headers (``fireworks-`` prefixed names) and the final
    chunk's ``perf_metrics`` (bare names, which win); ``client_fields`` set the client-side facts.

    ``headers`` must look up case-insensitively (aiohttp's ``CIMultiDictProxy`` does).
    """
    perf: Mapping[str, Any] = {k.lower(): v for k, v in perf_metrics.items()} if perf_metrics else {}
    metrics = ServerMetrics(**client_fields)
    for field, bare, prefixed, parser in _METRIC_FIELDS:
        value = _lookup(perf, headers, bare)
        if value is None or value == "":
            value = _lookup(perf, headers, prefixed)
            if value is None or value == "":
                continue
        setattr(metrics, field, parser(value))
    for name in _REQUEST_ID_HEADERS:
        request_id = clean_identifier(headers.get(name))
        if request_id:
            metrics.response_request_id = request_id
            break
    return metrics
