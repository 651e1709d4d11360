"""Turning an assembled stream into a SampledCompletion: token ids, logprobs, echo rules."""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_fireworks.sampling.completion import CompletionOptions, build_completion
from airflow_fireworks.sampling.errors import InvalidCompletionError
from airflow_fireworks.sampling.metrics import parse_server_metrics
from airflow_fireworks.sampling.stream import SSEDecoder, StreamAssembler

PROMPT = [10, 11, 12, 13]


def entry(token_id: int, logprob: float, **extra: Any) -> dict[str, Any]:
    return {"token_id": token_id, "logprob": logprob, **extra}


def assembled(
    completion_ids: list[int], content: list[dict[str, Any]] | None = None, **raw: Any
) -> StreamAssembler:
    choice: dict[str, Any] = {
        "text": "out",
        "finish_reason": "stop",
        "raw_output": {"completion_token_ids": completion_ids, **raw},
    }
    if content is not None:
        choice["logprobs"] = {"content": content}
    body = f"data: {json.dumps({'choices': [choice]})}\n\ndata: [DONE]\n\n".encode()
    assembler = StreamAssembler()
    for event, data in SSEDecoder().feed(body):
        assembler.add_event(event, data)
    assembler.check_complete()
    return assembler


def test_plain_completion_prompt_plus_completion_tokens() -> None:
    completion = build_completion(assembled([1, 2, 3]), PROMPT, CompletionOptions(), sample_index=2)
    assert completion.full_tokens == [*PROMPT, 1, 2, 3]
    assert (completion.prompt_len, completion.completion_len) == (4, 3)
    assert completion.completion_tokens == [1, 2, 3]
    assert completion.prompt_tokens == PROMPT
    assert completion.text == "out" and completion.finish_reason == "stop"
    assert completion.sample_index == 2
    assert completion.inference_logprobs is None and not completion.logprobs_echoed


def test_logprobs_only_when_requested_and_none_if_any_entry_lacks_one() -> None:
    content = [entry(1, -0.1), entry(2, -0.2)]
    assert (
        build_completion(assembled([1, 2], content), PROMPT, CompletionOptions()).inference_logprobs is None
    )
    requested = build_completion(assembled([1, 2], content), PROMPT, CompletionOptions(logprobs=True))
    assert requested.inference_logprobs == [-0.1, -0.2]
    partial = build_completion(
        assembled([1, 2], [entry(1, -0.1), {"token_id": 2}]), PROMPT, CompletionOptions(logprobs=True)
    )
    assert partial.inference_logprobs is None


def test_top_logprobs_become_topk_lists() -> None:
    content = [
        entry(1, -0.1, top_logprobs=[{"token_id": 1, "logprob": -0.1}, {"token_id": 9, "logprob": -3.0}]),
        entry(2, -0.2, top_logprobs=[{"token_id": 2, "logprob": -0.2}, {"token_id": 8, "logprob": -2.0}]),
    ]
    completion = build_completion(assembled([1, 2], content), PROMPT, CompletionOptions(logprobs=True))
    assert completion.inference_topk_token_ids == [[1, 9], [2, 8]]
    assert completion.inference_topk_logprobs == [[-0.1, -3.0], [-0.2, -2.0]]


def test_full_echo_strips_prompt_ids_and_drops_the_first_logprob_row() -> None:
    ids = [*PROMPT, 1, 2]
    content = [entry(t, -float(i)) for i, t in enumerate(ids)]
    completion = build_completion(
        assembled(ids, content), PROMPT, CompletionOptions(logprobs=True, echo=True)
    )
    assert completion.full_tokens == [*PROMPT, 1, 2]
    assert completion.completion_len == 2
    # P + C - 1 training-aligned rows: the first prompt token has no conditional logprob.
    assert completion.inference_logprobs == [-1.0, -2.0, -3.0, -4.0, -5.0]
    assert completion.logprobs_echoed
    assert completion.echoed_prompt_logprob_count == 3


def test_echo_last_keeps_all_rows_of_the_echoed_tail() -> None:
    ids = [*PROMPT[-2:], 1]
    content = [entry(t, -0.5) for t in ids]
    completion = build_completion(
        assembled(ids, content), PROMPT, CompletionOptions(logprobs=True, echo_last=2)
    )
    assert completion.completion_tokens == [1]
    assert len(completion.inference_logprobs or []) == 3
    assert completion.echoed_prompt_logprob_count == 2


@pytest.mark.parametrize(
    ("ids", "content"),
    [
        ([99, 11, 12, 13, 1], None),  # completion does not start with the prompt
        ([*PROMPT, 1], [entry(1, -0.1)]),  # per-token rows do not cover echoed + generated ids
    ],
)
def test_echo_mismatch_is_an_invalid_completion(ids: list[int], content: list[dict[str, Any]] | None) -> None:
    with pytest.raises(InvalidCompletionError, match="echo mismatch"):
        build_completion(assembled(ids, content), PROMPT, CompletionOptions(logprobs=True, echo=True))


def test_missing_completion_token_ids_is_an_invalid_completion() -> None:
    assembler = StreamAssembler()
    for event, data in SSEDecoder().feed(b'data: {"choices": [{"text": "x", "finish_reason": "stop"}]}\n\n'):
        assembler.add_event(event, data)
    with pytest.raises(InvalidCompletionError, match="completion_token_ids"):
        build_completion(assembler, PROMPT, CompletionOptions())


def test_server_prompt_ids_replace_the_sent_prompt() -> None:
    completion = build_completion(
        assembled([7], prompt_token_ids=[10, 0, 0, 11]), [10, 11], CompletionOptions()
    )
    assert completion.full_tokens == [10, 0, 0, 11, 7]
    assert completion.prompt_len == 4


def test_routing_matrices_only_when_requested() -> None:
    content = [entry(1, -0.1, routing_matrix="AAE="), entry(2, -0.2, routing_matrix="AQI=")]
    without = build_completion(assembled([1, 2], content), PROMPT, CompletionOptions())
    assert without.routing_matrices is None
    completion = build_completion(
        assembled([1, 2], content), PROMPT, CompletionOptions(include_routing_matrix=True)
    )
    assert completion.routing_matrices == ["AAE=", "AQI="]


def test_server_metrics_merge_perf_metrics_over_prefixed_headers() -> None:
    headers = {
        "fireworks-prefill-queue-duration": "9.0",
        "fireworks-prompt-tokens": "40",
        "fireworks-cached-prompt-tokens": "3.0",
        "x-request-id": "abc\x01",
    }
    metrics = parse_server_metrics(
        headers, {"prefill-queue-duration": 0.25, "Backend-Host": "h1"}, retry_attempt=2, http_status_code=200
    )
    assert metrics.prefill_queue_duration == 0.25  # body wins over the header
    assert metrics.prompt_tokens == 40  # header fallback with the fireworks- prefix
    assert metrics.cached_prompt_tokens is None  # ints are parsed with int(): "3.0" is not one
    assert metrics.backend_host == "h1"
    assert metrics.response_request_id == "abc\\x01"
    assert (metrics.retry_attempt, metrics.http_status_code) == (2, 200)
