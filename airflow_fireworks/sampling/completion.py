"""``SampledCompletion`` and how an assembled stream becomes one (fireworks-api.md 6.6)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from airflow_fireworks.sampling.errors import InvalidCompletionError
from airflow_fireworks.sampling.metrics import ServerMetrics
from airflow_fireworks.sampling.stream import StreamAssembler


@dataclass(slots=True)
class SampledCompletion:
    """One sampled completion with token ids (prompt + completion) and optional logprobs.

    ``full_tokens[:prompt_len]`` is the prompt as the server saw it, ``full_tokens[prompt_len:]``
    the generated tokens. With ``echo``, ``inference_logprobs`` is training-aligned: one entry per
    token of ``full_tokens`` after the first (``prompt_len + completion_len - 1`` entries), and
    ``text`` (the server's text, never decoded on the client) starts with the echoed prompt text.
    """

    text: str
    full_tokens: list[int]
    prompt_len: int
    completion_len: int
    finish_reason: str
    inference_logprobs: list[float] | None = None
    logprobs_echoed: bool = False
    routing_matrices: list[str] | None = None
    server_metrics: ServerMetrics | None = None
    sample_index: int = 0
    inference_topk_token_ids: list[list[int]] | None = None
    inference_topk_logprobs: list[list[float]] | None = None
    echoed_prompt_logprob_count: int = 0

    @property
    def completion_tokens(self) -> list[int]:
        """The generated token ids (``full_tokens`` after the prompt)."""
        return self.full_tokens[self.prompt_len :]

    @property
    def prompt_tokens(self) -> list[int]:
        """The prompt token ids (``full_tokens`` up to ``prompt_len``)."""
        return self.full_tokens[: self.prompt_len]


@dataclass(frozen=True, slots=True)
class CompletionOptions:
    """The request options that shape how a stream is read back."""

    logprobs: bool = False
    echo: bool = False
    echo_last: int | None = None
    include_routing_matrix: bool = False


def _int_list(value: Any, name: str) -> list[int]:
    if type(value) is not list:
        raise InvalidCompletionError(f"raw_output.{name} is not a list of token ids")
    return value


def _topk(content: list[Any]) -> tuple[list[list[int]] | None, list[list[float]] | None]:
    ids: list[list[int]] = []
    logprobs: list[list[float]] = []
    for entry in content:
        top = entry.get("top_logprobs")
        if not top:
            return None, None
        ids.append([item["token_id"] for item in top])
        logprobs.append([item["logprob"] for item in top])
    return ids, logprobs


def _routing(assembled: StreamAssembler, content: list[Any]) -> list[str] | None:
    fmt = assembled.routing_matrix_format
    if fmt not in (None, "base64_inline") or (fmt == "base64_inline" and assembled.routing_references):
        raise InvalidCompletionError(
            f"routing_matrix_format {fmt!r} is not supported (only inline base64 routing matrices)"
        )
    matrices = [entry.get("routing_matrix") for entry in content]
    return matrices if any(matrices) else None


def build_completion(
    assembled: StreamAssembler,
    sent_prompt: list[int],
    options: CompletionOptions,
    *,
    sample_index: int = 0,
    server_metrics: ServerMetrics | None = None,
) -> SampledCompletion:
    """Turn a complete stream into a ``SampledCompletion``; ``InvalidCompletionError`` if the
    stream lacks ``raw_output.completion_token_ids`` or its echo does not match the prompt."""
    raw = assembled.raw_output or {}
    if "completion_token_ids" not in raw:
        raise InvalidCompletionError(
            "the stream has no raw_output.completion_token_ids (the server must send "
            "raw_output with the completion's token ids)",
            upstream_response_id=assembled.response_id,
        )
    completion_ids = _int_list(raw["completion_token_ids"], "completion_token_ids")
    prompt = (
        _int_list(raw["prompt_token_ids"], "prompt_token_ids") if raw.get("prompt_token_ids") else sent_prompt
    )
    prompt_len = len(prompt)
    content = assembled.logprobs_content

    echo_count = 0
    if options.echo_last is not None:
        echo_count = min(options.echo_last, prompt_len)
    elif options.echo:
        echo_count = prompt_len
    full_echo = echo_count > 0 and echo_count == prompt_len
    if echo_count:
        if completion_ids[:echo_count] != prompt[prompt_len - echo_count :]:
            raise InvalidCompletionError(
                f"echo mismatch: the completion does not start with the last {echo_count} prompt ids",
                upstream_response_id=assembled.response_id,
            )
        if content and len(content) != len(completion_ids):
            raise InvalidCompletionError(
                f"echo mismatch: {len(content)} logprob rows for {len(completion_ids)} echoed+generated ids",
                upstream_response_id=assembled.response_id,
            )
        completion_ids = completion_ids[echo_count:]
        if full_echo:
            content = content[1:]

    inference_logprobs: list[float] | None = None
    topk_ids = topk_logprobs = None
    routing_matrices = None
    try:
        if options.logprobs and content:
            values = [entry.get("logprob") for entry in content]
            inference_logprobs = None if None in values else values
            topk_ids, topk_logprobs = _topk(content)
        if options.include_routing_matrix and content:
            routing_matrices = _routing(assembled, content)
    except (AttributeError, KeyError, TypeError):
        raise InvalidCompletionError(
            "logprobs.content entries are not objects with logprob/top_logprobs fields",
            upstream_response_id=assembled.response_id,
        ) from None

    return SampledCompletion(
        text=assembled.text,
        full_tokens=prompt + completion_ids,
        prompt_len=prompt_len,
        completion_len=len(completion_ids),
        finish_reason=assembled.finish_reason or "",
        inference_logprobs=inference_logprobs,
        logprobs_echoed=echo_count > 0,
        routing_matrices=routing_matrices,
        server_metrics=server_metrics,
        sample_index=sample_index,
        inference_topk_token_ids=topk_ids,
        inference_topk_logprobs=topk_logprobs,
        echoed_prompt_logprob_count=echo_count - 1 if full_echo else echo_count,
    )
