"""SSE decoding and chunk assembly, fed byte streams split at every possible position."""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_fireworks.sampling.errors import StreamProtocolError, StreamTruncatedError, UpstreamStreamError
from airflow_fireworks.sampling.stream import SSEDecoder, StreamAssembler


def chunk(text: str = "", finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "text": text, "finish_reason": finish}
    choice.update(extra)
    return {"id": "cmpl-1", "object": "text_completion", "choices": [choice]}


def sse(*events: dict[str, Any] | str, newline: str = "\n") -> bytes:
    parts = []
    for event in events:
        data = event if isinstance(event, str) else json.dumps(event, ensure_ascii=False)
        parts.append(f"data: {data}{newline}{newline}")
    return "".join(parts).encode()


STREAM_EVENTS: list[dict[str, Any] | str] = [
    chunk("Héllo"),
    chunk(" wörld ✓", logprobs={"content": [{"token_id": 5, "logprob": -0.5}]}),
    chunk(
        "!",
        finish="stop",
        raw_output={"completion_token_ids": [5, 6, 7]},
        logprobs={"content": [{"token_id": 6, "logprob": -0.25}, {"token_id": 7, "logprob": -1.0}]},
    )
    | {"usage": {"completion_tokens": 3}, "perf_metrics": {"prefill-queue-duration": 0.01}},
    "[DONE]",
]


def decode_all(pieces: list[bytes]) -> list[tuple[bytes, bytes]]:
    decoder = SSEDecoder()
    events = []
    for piece in pieces:
        events.extend(decoder.feed(piece))
    return events


def assemble(pieces: list[bytes]) -> StreamAssembler:
    assembler = StreamAssembler()
    for event, data in decode_all(pieces):
        assembler.add_event(event, data)
    return assembler


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_every_two_way_split_gives_the_same_events(newline: str) -> None:
    body = sse(*STREAM_EVENTS, newline=newline)
    expected = decode_all([body])
    assert len(expected) == 4
    assert expected[-1] == (b"", b"[DONE]")
    for cut in range(1, len(body)):
        assert decode_all([body[:cut], body[cut:]]) == expected, cut


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_byte_by_byte_feeding_assembles_the_completion(newline: str) -> None:
    body = sse(*STREAM_EVENTS, newline=newline)
    assembler = assemble([body[i : i + 1] for i in range(len(body))])
    assembler.check_complete()
    assert assembler.text == "Héllo wörld ✓!"
    assert assembler.finish_reason == "stop"
    assert assembler.raw_output == {"completion_token_ids": [5, 6, 7]}
    assert [e["logprob"] for e in assembler.logprobs_content] == [-0.5, -0.25, -1.0]
    assert assembler.usage == {"completion_tokens": 3}
    assert assembler.perf_metrics == {"prefill-queue-duration": 0.01}
    assert assembler.response_id == "cmpl-1"
    assert assembler.done


def test_cr_and_lf_split_across_chunks_is_one_line_end() -> None:
    # "\r" at the end of one chunk and "\n" at the start of the next must not make a blank line
    # (which would dispatch the first data line as its own event).
    pieces = [b"data: a\r", b"\ndata: b\r\n\r", b"\n"]
    assert decode_all(pieces) == [(b"", b"a\nb")]


def test_comments_fields_event_names_and_multiline_data() -> None:
    body = (
        b": keep-alive comment\n\n"
        b"id: 7\nretry: 1000\nevent: ping\ndata: not json\n\n"
        b"data:first\ndata: second\n\n"
        b"data\n\n"
        b'event: error\ndata: {"error": {"status_code": 503}}\n\n'
    )
    assert decode_all([body]) == [
        (b"ping", b"not json"),
        (b"", b"first\nsecond"),
        (b"", b""),
        (b"error", b'{"error": {"status_code": 503}}'),
    ]


def test_event_without_terminating_blank_line_is_not_dispatched() -> None:
    assert decode_all([b"data: {}\n\ndata: [DONE]\n"]) == [(b"", b"{}")]


def test_keepalives_and_pings_are_skipped_and_empty_data_ignored() -> None:
    body = (
        b": ping\n\n"
        b"event: ping\ndata: ping\n\n"
        b"event: heartbeat\ndata: -\n\n"
        b"event: keepalive\ndata: .\n\n"
        b"data: \n\n" + sse(chunk("x", finish="length", raw_output={"completion_token_ids": [1]}), "[DONE]")
    )
    assembler = assemble([body])
    assembler.check_complete()
    assert assembler.text == "x" and assembler.finish_reason == "length"


def test_non_json_data_outside_ping_events_is_a_protocol_error() -> None:
    with pytest.raises(StreamProtocolError, match="not JSON"):
        assemble([b"data: {broken\n\n"])


@pytest.mark.parametrize(
    "payload",
    [b"[1, 2]", b'{"choices": {}}', b'{"choices": [1]}', b'{"usage": 3}', b'{"choices": [{"text": 5}]}'],
)
def test_malformed_chunk_shapes_are_protocol_errors(payload: bytes) -> None:
    with pytest.raises(StreamProtocolError):
        assemble([b"data: " + payload + b"\n\n"])


def test_error_event_carries_the_embedded_status() -> None:
    body = b'event: error\ndata: {"error": {"status_code": 503, "code": "overloaded", "type": "server"}}\n\n'
    with pytest.raises(UpstreamStreamError) as info:
        assemble([body])
    assert info.value.final_status == 503
    assert info.value.upstream_error_code == "overloaded"
    assert info.value.upstream_error_type == "server"


def test_error_member_in_chunk_and_non_json_error_event() -> None:
    with pytest.raises(UpstreamStreamError) as info:
        assemble([sse({"id": "r1", "error": {"status": 429, "message": "slow down"}})])
    assert info.value.final_status == 429 and info.value.upstream_response_id == "r1"
    with pytest.raises(UpstreamStreamError) as info:
        assemble([b"event: error\ndata: upstream exploded\n\n"])
    assert info.value.final_status is None and "upstream exploded" in str(info.value)


def test_unknown_finish_reason_is_an_upstream_error_without_status() -> None:
    with pytest.raises(UpstreamStreamError) as info:
        assemble([sse(chunk("a", finish="error"))])
    assert info.value.final_status is None
    assert info.value.upstream_finish_reason == "error"


def test_raw_output_is_replaced_usage_null_erases_perf_metrics_last_wins() -> None:
    assembler = assemble(
        [
            sse(
                chunk("a", raw_output={"completion_token_ids": [1]})
                | {"usage": {"completion_tokens": 1}, "perf_metrics": {"a": 1}},
                chunk("b", finish="stop", raw_output={"completion_token_ids": [1, 2]})
                | {"usage": None, "perf_metrics": {"b": 2}},
                "[DONE]",
            )
        ]
    )
    assert assembler.raw_output == {"completion_token_ids": [1, 2]}
    assert assembler.usage is None
    assert assembler.perf_metrics == {"b": 2}


def test_stream_without_finish_reason_is_truncated() -> None:
    assembler = assemble([sse(chunk("a"), chunk("b"))])
    with pytest.raises(StreamTruncatedError):
        assembler.check_complete()


def test_finish_reason_without_done_or_raw_output_is_truncated_but_with_raw_output_complete() -> None:
    cut = assemble([sse(chunk("a", finish="stop"))])
    with pytest.raises(StreamTruncatedError):
        cut.check_complete()
    whole = assemble([sse(chunk("a", finish="stop", raw_output={"completion_token_ids": [3]}))])
    whole.check_complete()


def test_events_after_done_are_ignored() -> None:
    assembler = assemble(
        [sse(chunk("a", finish="stop", raw_output={"completion_token_ids": [1]}), "[DONE]", chunk("zzz"))]
    )
    assert assembler.text == "a"
