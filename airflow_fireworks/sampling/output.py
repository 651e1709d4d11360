"""The JSON Lines output format: one record per completion, one error record per failed prompt.

Records of one prompt are written together (a prompt's group of ``n`` completions is what GRPO
needs to compute advantages), so a reader can regroup them with ``group_records``::

    {"type": "completion", "prompt_index": 7, "sample_index": 0, "prompt_len": 31,
     "completion_len": 12, "finish_reason": "stop", "text": "...", "prompt_token_ids": [...],
     "completion_token_ids": [...], "inference_logprobs": [...] | null, "logprobs_echoed": false,
     "metadata": {...}}
    {"type": "error", "prompt_index": 8, "error": {"error_type": "...", "message": "...", ...},
     "metadata": {...}}

Optional completion keys, present only when requested: ``routing_matrices``,
``inference_topk_token_ids``, ``inference_topk_logprobs``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import IO, Any, NamedTuple

from airflow_fireworks.sampling.batch import PromptResult
from airflow_fireworks.sampling.completion import SampledCompletion

COMPLETION = "completion"
ERROR = "error"


def completion_record(
    prompt_index: int, completion: SampledCompletion, metadata: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The record of one completion of prompt ``prompt_index``."""
    record: dict[str, Any] = {
        "type": COMPLETION,
        "prompt_index": prompt_index,
        "sample_index": completion.sample_index,
        "prompt_len": completion.prompt_len,
        "completion_len": completion.completion_len,
        "finish_reason": completion.finish_reason,
        "text": completion.text,
        "prompt_token_ids": completion.prompt_tokens,
        "completion_token_ids": completion.completion_tokens,
        "inference_logprobs": completion.inference_logprobs,
        "logprobs_echoed": completion.logprobs_echoed,
        "metadata": metadata or {},
    }
    if completion.routing_matrices is not None:
        record["routing_matrices"] = completion.routing_matrices
    if completion.inference_topk_token_ids is not None:
        record["inference_topk_token_ids"] = completion.inference_topk_token_ids
        record["inference_topk_logprobs"] = completion.inference_topk_logprobs
    return record


def error_record(
    prompt_index: int, error: dict[str, Any], metadata: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The record of a prompt that failed for good (``error`` as in ``PromptResult.error``)."""
    return {"type": ERROR, "prompt_index": prompt_index, "error": error, "metadata": metadata or {}}


def result_records(result: PromptResult) -> list[dict[str, Any]]:
    """The records of one prompt's result: its completions, or one error record."""
    if result.error is not None:
        return [error_record(result.prompt_index, result.error, result.metadata)]
    return [completion_record(result.prompt_index, c, result.metadata) for c in result.completions]


def dumps_record(record: dict[str, Any]) -> str:
    """One JSON Lines line (with its newline)."""
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n"


def write_result(fp: IO[str], result: PromptResult) -> int:
    """Append one prompt's records to a text file; returns the number of records written."""
    records = result_records(result)
    fp.write("".join(dumps_record(record) for record in records))
    return len(records)


def iter_records(lines: Iterable[str | bytes]) -> Iterator[dict[str, Any]]:
    """Parse JSON Lines records (blank lines skipped); ``ValueError`` names a bad line."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise ValueError(f"line {number}: not a JSON record ({exc})") from None
        if (
            not isinstance(record, dict)
            or record.get("type") not in (COMPLETION, ERROR)
            or not isinstance(record.get("prompt_index"), int)
        ):
            raise ValueError(f"line {number}: not a sampling record (needs 'type' and 'prompt_index')")
        yield record


class PromptRecords(NamedTuple):
    """The records of one prompt, regrouped: its completion records, or its error."""

    prompt_index: int
    completions: list[dict[str, Any]]
    error: dict[str, Any] | None
    metadata: dict[str, Any]


def group_records(records: Iterable[dict[str, Any]]) -> Iterator[PromptRecords]:
    """Regroup consecutive records of the same prompt (as written by ``write_result``)."""
    current: PromptRecords | None = None
    for record in records:
        index = record["prompt_index"]
        if current is None or current.prompt_index != index:
            if current is not None:
                yield current
            current = PromptRecords(index, [], None, record.get("metadata") or {})
        if record["type"] == ERROR:
            current = current._replace(error=record.get("error") or {})
        else:
            current.completions.append(record)
    if current is not None:
        yield current


def sampled_prompt_indices(records: Iterable[dict[str, Any]], *, include_errors: bool = False) -> set[int]:
    """Indices of prompts that already have results (for ``skip_prompt_indices`` when resuming);
    prompts that failed are included only with ``include_errors``."""
    return {record["prompt_index"] for record in records if include_errors or record["type"] == COMPLETION}
