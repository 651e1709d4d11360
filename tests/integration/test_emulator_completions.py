"""The emulator's inference gateway over raw HTTP: SSE format, sampling semantics, metrics, faults."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from tests.emulator_control import EmulatorProcess

BASE_MODEL = "accounts/fireworks/models/qwen3-8b"
COMPLETIONS_PATH = "/inference/v1/completions"
PERF_KEYS = {
    "prefill-queue-duration",
    "generation-queue-duration",
    "num-concurrent-requests",
    "server-time-to-first-token",
    "cached-prompt-tokens",
    "prompt-tokens",
    "server-processing-time",
    "prefill-duration",
    "generation-duration",
    "backend-host",
    "deployment",
}
INT_KEYS = {"num-concurrent-requests", "cached-prompt-tokens", "prompt-tokens"}
PROMPT = list(range(40, 72))


@dataclass
class Stream:
    """A parsed SSE body."""

    events: list[tuple[str | None, str]]
    chunks: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False

    @property
    def final(self) -> dict[str, Any]:
        return self.chunks[-1]

    @property
    def choice(self) -> dict[str, Any]:
        return dict(self.final["choices"][0])

    @property
    def text(self) -> str:
        return "".join(chunk["choices"][0]["text"] for chunk in self.chunks)

    @property
    def logprobs(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for chunk in self.chunks:
            logprobs = chunk["choices"][0]["logprobs"]
            if logprobs is not None:
                rows += logprobs["content"]
        return rows

    @property
    def completion_ids(self) -> list[int]:
        return list(self.choice["raw_output"]["completion_token_ids"])


def parse_sse(body: str) -> Stream:
    """Split a complete SSE body into events (blank-line separated) and decode the JSON ones."""
    stream = Stream(events=[])
    for block in body.split("\n\n"):
        if not block.strip():
            continue
        name: str | None = None
        data: list[str] = []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
        payload = "\n".join(data)
        stream.events.append((name, payload))
        if payload.strip() == "[DONE]":
            stream.done = True
        elif name is None:
            try:
                stream.chunks.append(json.loads(payload))
            except ValueError:
                continue
    return stream


def create_ready(emulator: EmulatorProcess, deployment_id: str = "policy", **body: Any) -> str:
    emulator.configure(create_delay_s=0.0, decode_step_base_s=0.0005, decode_step_per_seq_s=0.0)
    response = requests.post(
        f"{emulator.url}/v1/accounts/{emulator.account_id}/deployments",
        params={"deploymentId": deployment_id},
        json={"baseModel": BASE_MODEL, "enableHotLoad": True, **body},
        headers={"X-Api-Key": emulator.api_key},
        timeout=10,
    )
    assert response.status_code == 200
    return f"accounts/{emulator.account_id}/deployments/{deployment_id}"


def post(emulator: EmulatorProcess, body: dict[str, Any], **kwargs: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {emulator.api_key}", **kwargs.pop("headers", {})}
    return requests.post(emulator.url + COMPLETIONS_PATH, json=body, headers=headers, timeout=30, **kwargs)


def sample(emulator: EmulatorProcess, model: str, **fields: Any) -> Stream:
    body = {
        "model": model,
        "prompt": PROMPT,
        "n": 1,
        "max_tokens": 24,
        "temperature": 1.0,
        "stream": True,
        "perf_metrics_in_response": True,
        "raw_output": True,
        "top_p": 1.0,
        "top_k": 0,
        **fields,
    }
    response = post(emulator, body)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/event-stream")
    return parse_sse(response.text)


def wait_for(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


# -- format ---------------------------------------------------------------------------------------


def test_warmup_probe_gets_json_with_metric_headers(emulator: EmulatorProcess) -> None:
    model = create_ready(emulator)
    response = post(
        emulator,
        {"model": model, "prompt": [1, 2], "max_tokens": 4, "temperature": 0.0},
        headers={"x-request-id": "f" * 32},
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "f" * 32
    body = response.json()
    assert body["object"] == "text_completion"
    assert body["choices"][0]["finish_reason"] in ("stop", "length")
    assert 1 <= body["usage"]["completion_tokens"] <= 4
    assert response.headers["fireworks-prompt-tokens"] == "2"
    for key in PERF_KEYS:
        assert f"fireworks-{key}" in response.headers
    assert "perf_metrics" not in body


def test_stream_format(emulator: EmulatorProcess) -> None:
    model = create_ready(emulator)
    emulator.configure(stream_chunk_tokens=4)
    stream = sample(emulator, model, max_tokens=24, logprobs=True, top_logprobs=3, ignore_eos=True)
    assert stream.done
    assert stream.events[-1] == (None, "[DONE]")
    assert all(name is None for name, _ in stream.events)
    assert len(stream.chunks) == 6
    for chunk in stream.chunks:
        assert chunk["object"] == "text_completion"
        assert chunk["id"] == stream.chunks[0]["id"]
        assert chunk["model"] == model
    assert all(chunk["choices"][0]["finish_reason"] is None for chunk in stream.chunks[:-1])
    final = stream.final
    assert stream.choice["finish_reason"] == "length"
    ids = stream.completion_ids
    assert len(ids) == 24 == final["usage"]["completion_tokens"]
    assert stream.choice["raw_output"]["prompt_token_ids"] == PROMPT
    assert final["usage"]["prompt_tokens"] == len(PROMPT)
    assert stream.text == stream.choice["raw_output"]["completion"]
    rows = stream.logprobs
    assert [row["token_id"] for row in rows] == ids
    offset = 0
    for row in rows:
        assert row["logprob"] < 0
        assert row["sampling_logprob"] <= 0
        assert row["text_offset"] == offset
        assert bytes(row["bytes"]).decode() == row["token"]
        offset += len(row["token"])
        top = row["top_logprobs"]
        assert len(top) == 3
        assert row["token_id"] in [item["token_id"] for item in top]
        assert [item["logprob"] for item in top] == sorted((item["logprob"] for item in top), reverse=True)
        chosen = next(item for item in top if item["token_id"] == row["token_id"])
        assert chosen["logprob"] == row["logprob"]
    metrics = final["perf_metrics"]
    assert set(metrics) >= PERF_KEYS
    assert all(isinstance(value, str) for value in metrics.values())
    for key in INT_KEYS:
        int(metrics[key])
    for key in PERF_KEYS - INT_KEYS - {"backend-host", "deployment"}:
        assert float(metrics[key]) >= 0
    assert metrics["prompt-tokens"] == str(len(PROMPT))
    assert metrics["deployment"] == model


def test_logprobs_absent_unless_requested(emulator: EmulatorProcess) -> None:
    model = create_ready(emulator)
    stream = sample(emulator, model)
    assert all(chunk["choices"][0]["logprobs"] is None for chunk in stream.chunks)


def test_string_prompt_is_tokenized(emulator: EmulatorProcess) -> None:
    model = create_ready(emulator)
    stream = sample(emulator, model, prompt="Hello world, this is a test.")
    assert stream.final["usage"]["prompt_tokens"] == len(stream.choice["raw_output"]["prompt_token_ids"]) > 3


def test_model_with_hash_prefix_routes_to_the_deployment(emulator: EmulatorProcess) -> None:
    model = create_ready(emulator)
    stream = sample(emulator, f"accounts/fireworks/models/qwen3-8b#{model}")
    assert stream.done


# -- sampling semantics ----------------------------------------------------------------------------


def test_same_seed_same_tokens(emulator: EmulatorProcess) -> None:
    model = create_ready(emulator)
    first = sample(emulator, model, seed=7, max_tokens=32, ignore_eos=True).completion_ids
    assert sample(emulator, model, seed=7, max_tokens=32, ignore_eos=True).completion_ids == first
    assert sample(emulator, model, seed=8, max_tokens=32, ignore_eos=True).completion_ids != first
    unseeded = [sample(emulator, model, max_tokens=32, ignore_eos=True).completion_ids for _ in range(2)]
    assert unseeded[0] != unseeded[1]
    greedy = [
        sample(emulator, model, temperature=0.0, seed=seed, max_tokens=32).completion_ids for seed in (1, 2)
    ]
    assert greedy[0] == greedy[1]


def test_loaded_snapshot_changes_outputs(emulator: EmulatorProcess) -> None:
    model = create_ready(emulator)
    before = sample(emulator, model, seed=3, max_tokens=32, ignore_eos=True).completion_ids
    emulator.configure(hotload_stage_s=0.0)
    hotload_headers = {
        "Authorization": f"Bearer {emulator.api_key}",
        "fireworks-model": BASE_MODEL,
        "fireworks-deployment": model,
    }
    response = requests.post(
        emulator.url + "/hot_load/v1/models/hot_load",
        json={"identity": "step-1"},
        headers=hotload_headers,
        timeout=10,
    )
    assert response.status_code == 200
    after = sample(emulator, model, seed=3, max_tokens=32, ignore_eos=True).completion_ids
    assert after != before
    assert sample(emulator, model, seed=3, max_tokens=32, ignore_eos=True).completion_ids == after


def test_full_echo(emulator: EmulatorProcess) -> None:
    model = create_ready(emulator)
    stream = sample(emulator, model, echo=True, logprobs=True, top_logprobs=2, max_tokens=8, ignore_eos=True)
    ids = stream.completion_ids
    assert ids[: len(PROMPT)] == PROMPT
    assert len(ids) == len(PROMPT) + 8
    rows = stream.logprobs
    assert len(rows) == len(ids)
    assert [row["token_id"] for row in rows] == ids
    assert rows[0]["logprob"] is None
    assert all(isinstance(row["logprob"], float) for row in rows[1:])
    assert stream.final["usage"]["completion_tokens"] == 8


def test_echo_last(emulator: EmulatorProcess) -> None:
    model = create_ready(emulator)
    stream = sample(emulator, model, echo_last=3, logprobs=True, max_tokens=5, ignore_eos=True)
    ids = stream.completion_ids
    assert ids[:3] == PROMPT[-3:]
    assert len(ids) == 3 + 5 == len(stream.logprobs)
    assert all(isinstance(row["logprob"], float) for row in stream.logprobs)


def test_routing_matrix_per_token(emulator: EmulatorProcess) -> None:
    model = create_ready(emulator)
    stream = sample(
        emulator, model, logprobs=True, include_routing_matrix=True, max_tokens=6, ignore_eos=True
    )
    matrices = [row["routing_matrix"] for row in stream.logprobs]
    assert len(matrices) == 6
    assert all(base64.b64decode(matrix) for matrix in matrices)


def test_context_overflow_can_truncate(emulator: EmulatorProcess) -> None:
    model = create_ready(emulator)
    emulator.configure(max_context_length=40)
    stream = sample(
        emulator, model, max_tokens=100, ignore_eos=True, context_length_exceeded_behavior="truncate"
    )
    assert len(stream.completion_ids) == 40 - len(PROMPT)
    assert stream.choice["finish_reason"] == "length"


def test_max_tokens_gives_length(emulator: EmulatorProcess) -> None:
    model = create_ready(emulator)
    stream = sample(emulator, model, max_tokens=5, ignore_eos=True)
    assert stream.choice["finish_reason"] == "length"
    assert len(stream.completion_ids) == 5


def test_eos_token_gives_stop(emulator: EmulatorProcess) -> None:
    model = create_ready(emulator)
    emulator.configure(eos_probability=1.0)
    stream = sample(emulator, model, temperature=0.0, min_tokens=3, max_tokens=50)
    assert stream.choice["finish_reason"] == "stop"
    assert stream.completion_ids[-1] == 2
    assert len(stream.completion_ids) == 4
    assert "<|im_end|>" not in stream.text


def test_stop_string_cuts_the_text(emulator: EmulatorProcess) -> None:
    model = create_ready(emulator)
    fields = {"seed": 11, "max_tokens": 40, "ignore_eos": True}
    full = sample(emulator, model, **fields)
    text = full.text
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    cut = sample(emulator, model, stop=[stop], **fields)
    assert cut.choice["finish_reason"] == "stop"
    assert cut.text == text[: text.index(stop)]
    assert len(cut.completion_ids) < 40
    assert cut.completion_ids == full.completion_ids[: len(cut.completion_ids)]


def test_n_choices_without_streaming(emulator: EmulatorProcess) -> None:
    model = create_ready(emulator)
    body = {
        "model": model,
        "prompt": PROMPT,
        "n": 3,
        "max_tokens": 16,
        "ignore_eos": True,
        "raw_output": True,
    }
    response = post(emulator, body)
    assert response.status_code == 200
    choices = response.json()["choices"]
    assert [choice["index"] for choice in choices] == [0, 1, 2]
    assert len({tuple(choice["raw_output"]["completion_token_ids"]) for choice in choices}) == 3
    assert response.json()["usage"]["completion_tokens"] == 48


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"bogus": 1}, "Extra inputs are not permitted, field: 'bogus'"),
        (
            {"routing_matrix_format": "parquet_v1"},
            "Extra inputs are not permitted, field: 'routing_matrix_format'",
        ),
        ({"temperature": 2.5}, "temperature"),
        ({"top_k": 101}, "top_k"),
        ({"top_logprobs": 6}, "top_logprobs"),
        ({"n": 0}, "'n'"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"prompt": []}, "prompt"),
        ({"prompt": [1, "two"]}, "prompt"),
        ({"max_tokens": 100_000}, "context length"),
        ({"stream": "yes"}, "stream"),
    ],
)
def test_invalid_bodies_get_400(emulator: EmulatorProcess, fields: dict[str, Any], needle: str) -> None:
    model = create_ready(emulator)
    response = post(emulator, {"model": model, "prompt": PROMPT, "max_tokens": 4, **fields})
    assert response.status_code == 400
    assert needle in response.json()["error"]["message"]


def test_unknown_model_is_404(emulator: EmulatorProcess) -> None:
    create_ready(emulator)
    for model in ("accounts/emulator/deployments/nope", "accounts/other/deployments/policy", "qwen3"):
        response = post(emulator, {"model": model, "prompt": [1, 2], "max_tokens": 4})
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "NOT_FOUND"


# -- readiness -----------------------------------------------------------------------------------


def test_not_serving_is_425_never_5xx(emulator: EmulatorProcess) -> None:
    emulator.configure(create_delay_s=30.0)
    requests.post(
        f"{emulator.url}/v1/accounts/{emulator.account_id}/deployments",
        params={"deploymentId": "slow"},
        json={"baseModel": BASE_MODEL, "enableHotLoad": True},
        headers={"X-Api-Key": emulator.api_key},
        timeout=10,
    )
    model = f"accounts/{emulator.account_id}/deployments/slow"
    probe = {"model": model, "prompt": [1, 2], "max_tokens": 4, "temperature": 0.0}
    creating = post(emulator, probe)
    assert creating.status_code == 425
    assert "CREATING" in creating.json()["error"]["message"]
    emulator.configure(serve_while_creating=True)
    assert post(emulator, probe).status_code == 200


def test_hotload_in_progress_is_425_when_blocking(emulator: EmulatorProcess) -> None:
    model = create_ready(emulator)
    emulator.configure(hotload_stage_s=5.0)
    requests.post(
        emulator.url + "/hot_load/v1/models/hot_load",
        json={"identity": "s1"},
        headers={"Authorization": f"Bearer {emulator.api_key}", "fireworks-deployment": model},
        timeout=10,
    )
    probe = {"model": model, "prompt": [1, 2], "max_tokens": 4}
    assert post(emulator, probe).status_code == 425
    emulator.configure(hotload_blocks_inference=False)
    assert post(emulator, probe).status_code == 200


def test_scaled_to_zero_is_425(emulator: EmulatorProcess) -> None:
    model = create_ready(emulator, "idle", minReplicaCount=0, maxReplicaCount=0)
    assert post(emulator, {"model": model, "prompt": [1, 2], "max_tokens": 4}).status_code == 425


# -- engine: cache, queueing, replicas ------------------------------------------------------------


def test_prefix_cache_hits_and_hotload_clears_them(emulator: EmulatorProcess) -> None:
    model = create_ready(emulator)
    prompt = list(range(100, 164))
    first = sample(emulator, model, prompt=prompt, max_tokens=2)
    assert first.final["perf_metrics"]["cached-prompt-tokens"] == "0"
    second = sample(emulator, model, prompt=prompt, max_tokens=2)
    assert int(second.final["perf_metrics"]["cached-prompt-tokens"]) >= 48
    assert second.final["usage"]["prompt_tokens_details"]["cached_tokens"] >= 48
    emulator.configure(hotload_stage_s=0.0)
    requests.post(
        emulator.url + "/hot_load/v1/models/hot_load",
        json={"identity": "fresh"},
        headers={"Authorization": f"Bearer {emulator.api_key}", "fireworks-deployment": model},
        timeout=10,
    )
    third = sample(emulator, model, prompt=prompt, max_tokens=2)
    assert third.final["perf_metrics"]["cached-prompt-tokens"] == "0"


def test_overload_makes_the_prefill_queue_grow(emulator: EmulatorProcess) -> None:
    model = create_ready(emulator)
    emulator.configure(decode_slots=1, decode_step_base_s=0.01)
    results: list[Stream] = []
    lock = threading.Lock()

    def one() -> None:
        stream = sample(emulator, model, max_tokens=10, ignore_eos=True)
        with lock:
            results.append(stream)

    threads = [threading.Thread(target=one) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    queued = sorted(float(stream.final["perf_metrics"]["prefill-queue-duration"]) for stream in results)
    assert len(queued) == 5
    assert queued[-1] >= 0.09 * 2
    assert emulator.stats()["prefill_queue"]["peak_length"] >= 2


def test_replicas_share_the_load(emulator: EmulatorProcess) -> None:
    model = create_ready(emulator, "fleet", minReplicaCount=2, maxReplicaCount=2)
    hosts = {
        post(emulator, {"model": model, "prompt": [1, 2], "max_tokens": 2}).headers["fireworks-backend-host"]
        for _ in range(4)
    }
    assert len(hosts) == 2


def test_client_disconnect_aborts_the_request(emulator: EmulatorProcess) -> None:
    model = create_ready(emulator)
    emulator.configure(decode_step_base_s=0.05, stream_chunk_tokens=1)
    body = {"model": model, "prompt": PROMPT, "max_tokens": 500, "stream": True, "ignore_eos": True}
    with post(emulator, body, stream=True) as response:
        assert response.status_code == 200
        next(response.iter_lines())
    wait_for(lambda: emulator.stats()["completions"]["aborted"] == 1)
    stats = emulator.stats()["completions"]
    assert stats["in_flight"] == 0
    assert stats["finished"] == 0


# -- stream faults -------------------------------------------------------------------------------


def test_status_fault_on_completions(emulator: EmulatorProcess) -> None:
    model = create_ready(emulator)
    emulator.add_fault(route="completions", deployment_id="policy", status=503, retry_after_s=1)
    response = post(emulator, {"model": model, "prompt": [1, 2], "max_tokens": 2, "stream": True})
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.json()["error"]["code"] == "UNAVAILABLE"
    assert sample(emulator, model).done


def test_reset_mid_stream(emulator: EmulatorProcess) -> None:
    model = create_ready(emulator)
    emulator.add_fault(route="completions", kind="reset_mid_stream", after_chunks=2)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        post(
            emulator, {"model": model, "prompt": PROMPT, "max_tokens": 40, "stream": True, "ignore_eos": True}
        )
    assert sample(emulator, model).done


def test_truncated_stream(emulator: EmulatorProcess) -> None:
    model = create_ready(emulator)
    emulator.add_fault(route="completions", kind="truncate", after_chunks=2)
    stream = sample(emulator, model, max_tokens=40, ignore_eos=True)
    assert not stream.done
    assert len(stream.chunks) == 2
    assert all(chunk["choices"][0]["finish_reason"] is None for chunk in stream.chunks)


def test_malformed_chunk(emulator: EmulatorProcess) -> None:
    model = create_ready(emulator)
    emulator.add_fault(route="completions", kind="malformed_chunk", after_chunks=1)
    stream = sample(emulator, model, max_tokens=16, ignore_eos=True)
    bad = [data for name, data in stream.events if data != "[DONE]" and not _is_json(data)]
    assert len(bad) == 1


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def test_stream_error_event(emulator: EmulatorProcess) -> None:
    model = create_ready(emulator)
    emulator.add_fault(route="completions", kind="stream_error", status=503, after_chunks=1)
    stream = sample(emulator, model, max_tokens=16, ignore_eos=True)
    errors = [json.loads(data) for name, data in stream.events if name == "error"]
    assert len(errors) == 1
    assert errors[0]["error"]["status_code"] == 503
    assert not stream.done


def test_finish_error(emulator: EmulatorProcess) -> None:
    model = create_ready(emulator)
    emulator.add_fault(route="completions", kind="finish_error", after_chunks=1)
    stream = sample(emulator, model, max_tokens=16, ignore_eos=True)
    assert stream.choice["finish_reason"] == "error"
    assert stream.done
    assert emulator.stats()["completions"]["faulted"] == 1


def test_stream_faults_skip_non_streaming_requests(emulator: EmulatorProcess) -> None:
    model = create_ready(emulator)
    emulator.add_fault(route="completions", kind="truncate")
    assert post(emulator, {"model": model, "prompt": [1, 2], "max_tokens": 4}).status_code == 200
    assert not sample(emulator, model, max_tokens=16, ignore_eos=True).done
