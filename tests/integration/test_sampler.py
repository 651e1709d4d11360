"""DeploymentSampler against the emulator over real HTTP: request bodies, fan-out, logprobs, echo,
max_seq_len filters, seeds, retries on injected faults, not-ready handling, slot accounting."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_fireworks.api import AsyncFireworksClient
from airflow_fireworks.api.retry import RetryPolicy
from airflow_fireworks.sampling import (
    AdaptiveConcurrencyController,
    DeploymentNotServingError,
    DeploymentSampler,
    SamplingHTTPError,
    SamplingRequestError,
    StreamProtocolError,
    UpstreamStreamError,
    load_tokenizer,
)
from tests.emulator_control import EmulatorProcess

BASE_MODEL = "accounts/fireworks/models/qwen3-8b"
FAST_RETRY = RetryPolicy(max_attempts=4, initial_backoff_s=0.01, max_backoff_s=0.05, max_total_s=10.0)
MESSAGES = [{"role": "user", "content": "What is two plus two?"}]


def create_deployment(emulator: EmulatorProcess, deployment_id: str, wait: bool = True) -> str:
    """Create a deployment over the control plane; return its inference model name."""
    response = requests.post(
        f"{emulator.url}/v1/accounts/{emulator.account_id}/deployments",
        params={"deploymentId": deployment_id},
        json={"baseModel": BASE_MODEL},
        headers={"X-Api-Key": emulator.api_key},
        timeout=10,
    )
    response.raise_for_status()
    deadline = time.monotonic() + 10
    while wait and response.json().get("state") != "READY":
        assert time.monotonic() < deadline, "deployment did not become READY"
        time.sleep(0.02)
        response = requests.get(
            f"{emulator.url}/v1/accounts/{emulator.account_id}/deployments/{deployment_id}",
            headers={"X-Api-Key": emulator.api_key},
            timeout=10,
        )
    return f"accounts/{emulator.account_id}/deployments/{deployment_id}"


@pytest.fixture
def emu(emulator: EmulatorProcess) -> EmulatorProcess:
    emulator.configure(create_delay_s=0.05, decode_step_base_s=0.0005, decode_step_per_seq_s=0.00001)
    return emulator


@pytest.fixture
def model(emu: EmulatorProcess) -> str:
    return create_deployment(emu, "sampler-dep")


@pytest.fixture
def controller() -> AdaptiveConcurrencyController:
    return AdaptiveConcurrencyController()


@pytest.fixture
async def sampler(
    emu: EmulatorProcess, model: str, tokenizer_dir: Path, controller: AdaptiveConcurrencyController
) -> AsyncIterator[DeploymentSampler]:
    async with DeploymentSampler(
        emu.url,
        model,
        emu.api_key,
        load_tokenizer(tokenizer_dir),
        controller,
        retry_policy=FAST_RETRY,
        not_ready_interval_s=0.02,
    ) as instance:
        yield instance
    assert controller.in_flight == 0  # every attempt released its slot


def completion_calls(emu: EmulatorProcess, expected: int | None = None) -> list[dict[str, Any]]:
    """The emulator's log of completion requests; with ``expected``, wait until that many are
    logged (the server logs a request when its handler ends, which may be just after the client
    has read the stream or dropped the connection)."""
    calls = emu.requests(route="completions")
    for _ in range(500):
        if expected is None or len(calls) >= expected:
            break
        time.sleep(0.01)
        calls = emu.requests(route="completions")
    return calls


async def test_messages_fan_out_into_n_streamed_requests_with_logprobs(
    sampler: DeploymentSampler, emu: EmulatorProcess, model: str
) -> None:
    prompt = sampler.render_prompt(MESSAGES)
    completions = await sampler.sample_with_tokens(
        MESSAGES, n=4, max_tokens=12, logprobs=True, top_logprobs=2
    )
    assert [c.sample_index for c in completions] == [0, 1, 2, 3]
    for c in completions:
        assert c.full_tokens[: c.prompt_len] == prompt
        assert 0 < c.completion_len <= 12 and c.completion_len == len(c.completion_tokens)
        assert c.finish_reason in ("stop", "length")
        assert c.inference_logprobs is not None and len(c.inference_logprobs) == c.completion_len
        assert all(lp <= 0 for lp in c.inference_logprobs)
        assert c.inference_topk_token_ids is not None and all(len(k) == 2 for k in c.inference_topk_token_ids)
        assert c.text
        metrics = c.server_metrics
        assert metrics is not None and metrics.prefill_queue_duration is not None
        assert metrics.prompt_tokens == len(prompt) and metrics.completion_tokens == c.completion_len
    calls = completion_calls(emu, 4)
    assert len(calls) == 4
    assert len({call["request_id"] for call in calls}) == 4  # one logical id per sample
    for call in calls:
        body = call["body"]
        assert body["prompt"] == prompt and body["model"] == model
        assert (body["n"], body["stream"], body["raw_output"], body["perf_metrics_in_response"]) == (
            1,
            True,
            True,
            True,
        )
        assert (body["top_p"], body["top_k"], body["logprobs"], body["top_logprobs"]) == (1.0, 0, True, 2)
        assert {"authorization", "x-api-key", "x-request-id"} <= set(call["headers"])


async def test_prompt_token_ids_and_full_echo(sampler: DeploymentSampler, emu: EmulatorProcess) -> None:
    prompt = [1, 301, 268, 201, 57, 74, 316, 2, 201, 1, 320, 85, 201]
    completions = await sampler.sample_with_tokens(
        prompt_token_ids=prompt, n=2, max_tokens=8, logprobs=True, echo=True
    )
    assert len(completions) == 2
    for c in completions:
        assert c.full_tokens[: c.prompt_len] == prompt and c.prompt_len == len(prompt)
        assert c.logprobs_echoed
        # training-aligned: one logprob per token after the first
        assert c.inference_logprobs is not None
        assert len(c.inference_logprobs) == c.prompt_len + c.completion_len - 1
    assert completion_calls(emu, 1)[0]["body"]["echo"] is True


async def test_max_seq_len_pre_filter_sends_nothing_and_post_filter_drops_long_completions(
    sampler: DeploymentSampler, emu: EmulatorProcess
) -> None:
    prompt_len = len(sampler.render_prompt(MESSAGES))
    assert await sampler.sample_with_tokens(MESSAGES, n=3, max_seq_len=prompt_len) == []
    assert completion_calls(emu) == []
    long = await sampler.sample_with_tokens(
        MESSAGES, n=3, max_tokens=10, ignore_eos=True, max_seq_len=prompt_len + 9
    )
    assert long == []  # every completion has 10 tokens: one too many
    assert len(completion_calls(emu, 3)) == 3
    kept = await sampler.sample_with_tokens(
        MESSAGES, n=3, max_tokens=10, ignore_eos=True, max_seq_len=prompt_len + 10
    )
    assert [len(c.full_tokens) for c in kept] == [prompt_len + 10] * 3


async def test_seed_makes_samples_reproducible_and_distinct(sampler: DeploymentSampler) -> None:
    first = await sampler.sample_with_tokens(MESSAGES, n=2, max_tokens=16, seed=11, ignore_eos=True)
    again = await sampler.sample_with_tokens(MESSAGES, n=2, max_tokens=16, seed=11, ignore_eos=True)
    assert [c.full_tokens for c in first] == [c.full_tokens for c in again]
    assert first[0].completion_tokens != first[1].completion_tokens  # seed + sample index


async def test_503_with_retry_after_is_retried_and_shrinks_the_window(
    sampler: DeploymentSampler, emu: EmulatorProcess, controller: AdaptiveConcurrencyController
) -> None:
    emu.add_fault(route="completions", kind="status", status=503, retry_after_s=0.05)
    completions = await sampler.sample_with_tokens(MESSAGES, max_tokens=4)
    assert len(completions) == 1
    calls = completion_calls(emu, 2)
    assert [call["status"] for call in calls] == [503, 200]
    assert calls[0]["request_id"] == calls[1]["request_id"]  # same logical id on the retry
    assert completions[0].server_metrics is not None
    assert completions[0].server_metrics.retry_attempt == 2
    # the 503 record (no prefill metric) is congestion: an immediate multiplicative shrink
    assert controller.window_size == 4


async def test_the_retry_budget_clamps_the_last_sleep_like_every_client(
    emu: EmulatorProcess, model: str
) -> None:
    """The shared policy's stop rule: a sleep longer than the budget left is cut to it and one more
    attempt is made (not "give up because the next sleep would pass the budget")."""
    emu.add_fault(route="completions", kind="status", status=503, retry_after_s=5, times=None)
    policy = RetryPolicy(max_attempts=5, initial_backoff_s=1.0, max_backoff_s=1.0, max_total_s=0.3)
    started = time.monotonic()
    async with DeploymentSampler(emu.url, model, emu.api_key, retry_policy=policy) as sampler:
        with pytest.raises(SamplingRequestError) as info:
            await sampler.sample_with_tokens(prompt_token_ids=[1, 2, 3], max_tokens=4)
    assert time.monotonic() - started < 1.0  # one sleep of ~0.3 s, not of the 1 s backoff
    assert info.value.retry_budget_exhausted and info.value.attempts == 2
    assert [a["status_code"] for a in info.value.server_attempts] == [503, 503]


async def test_completions_carry_the_headers_of_every_fireworks_client(
    emu: EmulatorProcess, model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    session_id = str(uuid.uuid4())
    monkeypatch.setenv("FIREWORKS_CLIENT_SOURCE", "fireworks-training-skill/airflow-test")
    monkeypatch.setenv("FIREWORKS_SESSION_ID", session_id)
    async with DeploymentSampler(
        emu.url, model, emu.api_key, retry_policy=FAST_RETRY, additional_headers={"X-Team": "rl"}
    ) as sampler:
        await sampler.sample_with_tokens(prompt_token_ids=[1, 2, 3], max_tokens=4)
    async with AsyncFireworksClient(emu.api_key, emu.url, additional_headers={"X-Team": "rl"}) as client:
        assert await client.get_deployment("sampler-dep") is not None

    [completion] = completion_calls(emu, 1)
    [control] = [call for call in emu.requests() if call["route"] == "get"][-1:]
    identifying = {"x-fireworks-client-source", "x-fireworks-session-id", "x-api-key", "x-team"}
    assert identifying | {"authorization", "x-request-id", "content-type"} <= set(completion["headers"])
    assert identifying <= set(control["headers"])


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "reset"},
        {"kind": "reset_mid_stream", "after_chunks": 1},
        {"kind": "truncate", "after_chunks": 1},
        {"kind": "stream_error", "status": 503, "after_chunks": 1},
        {"kind": "status", "status": 429},
        {"kind": "status", "status": 504},
    ],
)
async def test_transient_faults_are_retried_whole(
    sampler: DeploymentSampler, emu: EmulatorProcess, fault: dict[str, Any]
) -> None:
    emu.add_fault(route="completions", times=2, **fault)
    completions = await sampler.sample_with_tokens(MESSAGES, max_tokens=12, ignore_eos=True, logprobs=True)
    assert len(completions) == 1
    c = completions[0]
    # never half-counted: the completion is the full retried one, its logprobs aligned with its tokens
    assert c.completion_len == 12 and len(c.inference_logprobs or []) == 12
    assert c.server_metrics is not None and c.server_metrics.retry_attempt == 3
    calls = completion_calls(emu, 3)
    assert len(calls) == 3 and len({call["request_id"] for call in calls}) == 1


async def test_persistent_truncation_exhausts_the_budget(
    sampler: DeploymentSampler, emu: EmulatorProcess
) -> None:
    emu.add_fault(route="completions", kind="truncate", after_chunks=1, times=None)
    with pytest.raises(SamplingRequestError) as info:
        await sampler.sample_with_tokens(MESSAGES, max_tokens=12, ignore_eos=True)
    error = info.value
    assert error.final_error_kind == "sse_truncation"
    assert error.retry_budget_exhausted and error.attempts == FAST_RETRY.max_attempts
    assert [a["outcome"] for a in error.server_attempts] == ["retryable_error"] * FAST_RETRY.max_attempts
    assert error.logical_request_id == completion_calls(emu, 1)[0]["request_id"]


@pytest.mark.parametrize(
    ("fault", "error_type"),
    [
        ({"kind": "malformed_chunk", "after_chunks": 1}, StreamProtocolError),
        ({"kind": "finish_error"}, UpstreamStreamError),
        ({"kind": "stream_error", "status": 400, "after_chunks": 1}, UpstreamStreamError),
        ({"kind": "status", "status": 403}, SamplingHTTPError),
    ],
)
async def test_non_retryable_failures_are_raised_after_one_attempt(
    sampler: DeploymentSampler, emu: EmulatorProcess, fault: dict[str, Any], error_type: type[Exception]
) -> None:
    emu.add_fault(route="completions", times=None, **fault)
    with pytest.raises(error_type) as info:
        await sampler.sample_with_tokens(MESSAGES, max_tokens=12, ignore_eos=True)
    assert isinstance(info.value, SamplingRequestError)
    assert info.value.attempts == 1 and not info.value.retry_budget_exhausted
    assert len(completion_calls(emu, 1)) == 1


async def test_server_validation_error_carries_status_message_and_request_id(
    sampler: DeploymentSampler, emu: EmulatorProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(SamplingHTTPError) as info:
        await sampler.sample_with_tokens(MESSAGES, max_tokens=4, not_a_field=1)
    error = info.value
    assert error.final_status == 400
    assert "Extra inputs are not permitted" in str(error) and "not_a_field" in str(error)
    assert error.request_id == error.logical_request_id == completion_calls(emu, 1)[0]["request_id"]
    for text in (str(error), repr(error), str(error.as_error_record()), caplog.text):
        assert emu.api_key not in text


async def test_one_failed_sample_cancels_its_siblings_and_frees_their_slots(
    sampler: DeploymentSampler, emu: EmulatorProcess, controller: AdaptiveConcurrencyController
) -> None:
    emu.configure(decode_step_base_s=0.01)
    emu.add_fault(route="completions", kind="status", status=403, times=1)
    with pytest.raises(SamplingHTTPError):
        await sampler.sample_with_tokens(MESSAGES, n=4, max_tokens=200, ignore_eos=True)
    assert controller.in_flight == 0


async def test_cancellation_releases_the_slot(
    sampler: DeploymentSampler, emu: EmulatorProcess, controller: AdaptiveConcurrencyController
) -> None:
    emu.configure(decode_step_base_s=0.02)
    task = asyncio.create_task(sampler.sample_with_tokens(MESSAGES, n=3, max_tokens=200, ignore_eos=True))
    for _ in range(1000):  # until the three requests hold their slots
        if controller.in_flight == 3:
            break
        await asyncio.sleep(0.01)
    assert controller.in_flight == 3
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert controller.in_flight == 0


async def test_not_ready_425_is_retried_inside_the_attempt(emu: EmulatorProcess, tokenizer_dir: Path) -> None:
    emu.configure(create_delay_s=0.3)
    model = create_deployment(emu, "booting", wait=False)
    controller = AdaptiveConcurrencyController()
    async with DeploymentSampler(
        emu.url,
        model,
        emu.api_key,
        load_tokenizer(tokenizer_dir),
        controller,
        retry_policy=FAST_RETRY,
        not_ready_retries=100,
        not_ready_interval_s=0.02,
    ) as sampler:
        completions = await sampler.sample_with_tokens(MESSAGES, max_tokens=4)
    assert len(completions) == 1
    statuses = Counter(call["status"] for call in completion_calls(emu))
    assert statuses[425] >= 1
    assert completions[0].server_metrics is not None and completions[0].server_metrics.retry_attempt == 1
    assert controller.step_completed()["requests"] == 1  # not-ready answers record no metrics


async def test_not_ready_after_the_retries_is_a_clear_error(emu: EmulatorProcess) -> None:
    emu.configure(create_delay_s=30)
    model = create_deployment(emu, "slow-boot", wait=False)
    async with DeploymentSampler(
        emu.url, model, emu.api_key, retry_policy=FAST_RETRY, not_ready_retries=2, not_ready_interval_s=0.01
    ) as sampler:
        with pytest.raises(DeploymentNotServingError, match="not serving after 2 not-ready retries") as info:
            await sampler.sample_with_tokens(prompt_token_ids=[1, 2, 3], max_tokens=4)
    assert info.value.final_status == 425 and info.value.attempts == 1
    assert len(completion_calls(emu, 3)) == 3


def test_a_sampler_works_across_successive_event_loops(emu: EmulatorProcess, model: str) -> None:
    sampler = DeploymentSampler(emu.url, model, emu.api_key, retry_policy=FAST_RETRY)

    async def once() -> int:
        async with sampler:  # closes this loop's session on exit
            return len(await sampler.sample_with_tokens(prompt_token_ids=[1, 2, 3], max_tokens=4))

    assert asyncio.run(once()) == 1
    assert asyncio.run(once()) == 1  # a new loop gets a new session


async def test_protocol_errors_quoting_server_data_never_carry_the_key(unused_tcp_port: int) -> None:
    """A server that echoes the key into a malformed stream: the error quotes the data, key scrubbed.

    The emulator's malformed chunk carries no request data, so a small loopback server plays a
    gateway that echoes what it was sent."""
    from aiohttp import web

    key = "fw-echoed-secret-9c1d"

    async def echo_key_in_garbage(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(f"data: not json {request.headers['X-Api-Key']}\n\n".encode())
        return response

    app = web.Application()
    app.router.add_post("/inference/v1/completions", echo_key_in_garbage)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", unused_tcp_port).start()
    try:
        async with DeploymentSampler(
            f"http://127.0.0.1:{unused_tcp_port}", "accounts/a/deployments/d", key, retry_policy=FAST_RETRY
        ) as sampler:
            with pytest.raises(StreamProtocolError, match="not JSON") as info:
                await sampler.sample_with_tokens(prompt_token_ids=[1, 2, 3], max_tokens=4)
    finally:
        await runner.cleanup()
    assert key not in str(info.value)
    assert key not in repr(info.value.as_error_record())
    assert "***" in str(info.value)
