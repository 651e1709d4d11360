"""The JSON Lines record format: writing a prompt's results, reading and regrouping them."""

from __future__ import annotations

import io

import pytest

from airflow_fireworks.sampling import PromptResult, SampledCompletion
from airflow_fireworks.sampling.output import (
    group_records,
    iter_records,
    result_records,
    sampled_prompt_indices,
    write_result,
)


def completion(sample_index: int, logprobs: list[float] | None = None) -> SampledCompletion:
    return SampledCompletion(
        text=f"answer {sample_index}",
        full_tokens=[1, 2, 3, 40 + sample_index, 2],
        prompt_len=3,
        completion_len=2,
        finish_reason="stop",
        inference_logprobs=logprobs,
        sample_index=sample_index,
    )


def test_completion_records_carry_ids_lengths_logprobs_and_metadata() -> None:
    result = PromptResult(7, [completion(0, [-0.1, -0.2]), completion(1)], None, {"answer": "4"})
    records = result_records(result)
    assert [r["sample_index"] for r in records] == [0, 1]
    first = records[0]
    assert first["type"] == "completion" and first["prompt_index"] == 7
    assert first["prompt_token_ids"] == [1, 2, 3]
    assert first["completion_token_ids"] == [40, 2]
    assert (first["prompt_len"], first["completion_len"], first["finish_reason"]) == (3, 2, "stop")
    assert first["inference_logprobs"] == [-0.1, -0.2]
    assert first["metadata"] == {"answer": "4"}
    assert "routing_matrices" not in first


def test_write_read_and_regroup_round_trip() -> None:
    buffer = io.StringIO()
    written = write_result(buffer, PromptResult(3, [completion(0), completion(1)], None, {"q": "ü"}))
    written += write_result(buffer, PromptResult(5, [], {"error_type": "SamplingRequestError"}, None))
    written += write_result(buffer, PromptResult(4, [], None, None))  # filtered out by max_seq_len
    assert written == 3
    buffer.seek(0)
    records = list(iter_records(buffer))
    groups = list(group_records(records))
    assert [(g.prompt_index, len(g.completions), g.error) for g in groups] == [
        (3, 2, None),
        (5, 0, {"error_type": "SamplingRequestError"}),
    ]
    assert groups[0].metadata == {"q": "ü"}
    assert sampled_prompt_indices(records) == {3}
    assert sampled_prompt_indices(records, include_errors=True) == {3, 5}


@pytest.mark.parametrize("line", ["{not json", '{"type": "completion"}', '["x"]'])
def test_reader_names_the_bad_line(line: str) -> None:
    with pytest.raises(ValueError, match="line 2"):
        list(iter_records(['{"type": "error", "prompt_index": 1}', line]))
