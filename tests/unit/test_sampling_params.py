"""Sampler construction and parameter validation: bad input fails before any request is sent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_fireworks.api.errors import FireworksValidationError
from airflow_fireworks.api.retry import RetryPolicy
from airflow_fireworks.sampling import (
    AdaptiveConcurrencyController,
    DeploymentSampler,
    SamplingParams,
    SamplingRequestError,
    load_tokenizer,
    render_chat_prompts,
    sample_prompts,
)
from airflow_fireworks.sampling.errors import SamplingHTTPError
from airflow_fireworks.sampling.params import PARAMETER_NAMES

API_KEY = "fw-secret-key-abcdef123456"
MODEL = "accounts/acme/deployments/dep-1"
# Nothing listens here: a request would fail with a connection error, not a validation error.
DEAD_URL = "http://127.0.0.1:9"


def make_sampler(**kwargs: Any) -> DeploymentSampler:
    return DeploymentSampler(DEAD_URL, MODEL, API_KEY, **kwargs)


def test_repr_and_attributes_never_show_the_key() -> None:
    sampler = make_sampler(additional_headers={"X-Trace": "1"})
    assert API_KEY not in repr(sampler)
    assert API_KEY not in str(vars(sampler).get("model"))
    assert isinstance(sampler.concurrency_controller, AdaptiveConcurrencyController)


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (("ftp://host", MODEL, API_KEY), "inference_url"),
        (("http://h", "dep-1", API_KEY), "model"),
        (("http://h", "accounts/a/models/m", API_KEY), "model"),
        (("http://h", MODEL, " "), "api_key"),
    ],
)
def test_bad_constructor_arguments_name_the_field(args: tuple[str, str, str], field: str) -> None:
    with pytest.raises(FireworksValidationError, match=field):
        DeploymentSampler(*args)


def test_model_may_be_a_base_model_with_a_deployment() -> None:
    sampler = DeploymentSampler("https://api.fireworks.ai/", "accounts/f/models/qwen3-8b#" + MODEL, API_KEY)
    assert sampler.inference_url == "https://api.fireworks.ai"
    assert sampler.verify_ssl
    # Verified like the control-plane clients, also for an IP host; only verify_ssl=False turns it off.
    assert DeploymentSampler("https://10.0.0.1", MODEL, API_KEY).verify_ssl
    assert not DeploymentSampler("https://10.0.0.1", MODEL, API_KEY, verify_ssl=False).verify_ssl


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"n": 0}, "n"),
        ({"n": 129}, "n"),
        ({"temperature": 2.5}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_k": 101}, "top_k"),
        ({"top_logprobs": 6}, "top_logprobs"),
        ({"max_tokens": -1}, "max_tokens"),
        ({"max_seq_len": 0}, "max_seq_len"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stop": ["a", 3]}, "stop"),
        ({"stop": [3]}, "stop"),  # integer stop ids need a tokenizer
        ({"stream": False}, "stream"),
        ({"hotload_max_retries": 1}, "not_ready_retries"),
        ({"echo": "yes"}, "echo"),
        ({"echo_last": -1}, "echo_last"),
    ],
)
async def test_bad_sampling_arguments_fail_before_any_request(kwargs: dict[str, Any], field: str) -> None:
    async with make_sampler() as sampler:
        with pytest.raises(FireworksValidationError, match=field):
            await sampler.sample_with_tokens(prompt_token_ids=[1, 2, 3], **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({}, "messages"),
        ({"messages": [{"role": "user", "content": "x"}], "prompt_token_ids": [1]}, "messages"),
        ({"prompt_token_ids": []}, "prompt_token_ids"),
        ({"prompt_token_ids": [1, -2]}, "prompt_token_ids"),
        ({"prompt_token_ids": [1, "2"]}, "prompt_token_ids"),
        ({"messages": [{"role": "user", "content": "x"}]}, "tokenizer"),
    ],
)
async def test_bad_prompts_fail_before_any_request(kwargs: dict[str, Any], field: str) -> None:
    async with make_sampler() as sampler:
        with pytest.raises(FireworksValidationError, match=field):
            await sampler.sample_with_tokens(**kwargs)


async def test_prompt_at_max_seq_len_returns_nothing_without_a_request() -> None:
    async with make_sampler(retry_policy=RetryPolicy(max_attempts=1)) as sampler:
        assert await sampler.sample_with_tokens(prompt_token_ids=[1, 2, 3], max_seq_len=3) == []
        with pytest.raises(SamplingRequestError) as info:  # one token shorter: it is sent (and fails)
            await sampler.sample_with_tokens(prompt_token_ids=[1, 2], max_seq_len=3)
        assert info.value.final_error_kind == "connection"
        assert info.value.retry_budget_exhausted


def test_request_body_fields_and_per_sample_seed(tokenizer_dir: Path) -> None:
    sampler = make_sampler(tokenizer=load_tokenizer(tokenizer_dir))
    params = sampler.sampling_params(
        n=3, max_tokens=16, seed=7, logprobs=True, top_logprobs=2, stop=[2], echo=True, prompt_cache_key="k"
    )
    bodies = [json.loads(params.request_body(json.dumps([5, 6]), i)) for i in range(3)]
    assert [b["seed"] for b in bodies] == [7, 8, 9]
    body = bodies[0]
    assert body["prompt"] == [5, 6]
    assert body["model"] == MODEL
    assert (body["n"], body["stream"], body["raw_output"], body["perf_metrics_in_response"]) == (
        1,
        True,
        True,
        True,
    )
    assert (body["top_p"], body["top_k"], body["temperature"], body["max_tokens"]) == (1.0, 0, 1.0, 16)
    assert body["stop"] == ["<|im_end|>"]  # integer stop ids are decoded with the tokenizer
    assert (body["logprobs"], body["top_logprobs"], body["echo"], body["prompt_cache_key"]) == (
        True,
        2,
        True,
        "k",
    )
    unseeded = sampler.sampling_params()
    assert "seed" not in json.loads(unseeded.request_body("[1]", 4))


def test_sampling_params_are_checked_once_with_a_lenient_parse_for_rendered_templates() -> None:
    rendered = SamplingParams.parse({"n": "8", "temperature": "0.5", "top_k": "40", "stop": ["a", "b"]})
    assert rendered == SamplingParams(n=8, temperature=0.5, top_k=40, stop=("a", "b"))
    assert SamplingParams.parse({}) == SamplingParams()
    for values, field in (
        ({"n": "eight"}, "n"),
        ({"top_logprobs": 2}, "top_logprobs"),  # needs logprobs
        ({"max_tokens": 0}, "max_tokens"),  # only with echo (or echo_last): scoring prompts
        ({"stop": ""}, "stop"),
        ({"logprobs": "yes"}, "logprobs"),
        ({"extra": {"n": 2}}, "n"),  # set by the sampler
    ):
        with pytest.raises(FireworksValidationError) as info:
            SamplingParams.parse(values)
        assert info.value.field == field
    assert SamplingParams(max_tokens=0, echo=True).max_tokens == 0
    assert SamplingParams(max_tokens=0, extra={"echo_last": 3}).options.echo_last == 3


def test_sampling_params_record_and_sdk_keyword_arguments() -> None:
    params = SamplingParams.from_kwargs(n=2, stop=["x"], seed=1, prompt_cache_key="k")
    assert params.extra == {"prompt_cache_key": "k"}
    record = params.as_record()
    assert tuple(record) == (*PARAMETER_NAMES, "extra")
    assert record["stop"] == ["x"] and record["extra"] == {"prompt_cache_key": "k"}
    assert tuple(SamplingParams().as_record()) == PARAMETER_NAMES  # what a manifest records
    body = SamplingParams(top_p=0.9, logprobs=True, stop="x").body_fields()
    assert body == {"max_tokens": 1024, "temperature": 1.0, "top_p": 0.9, "top_k": 0, "logprobs": True,
                    "stop": ["x"]}  # fmt: skip


async def test_sample_prompts_takes_sampling_params_or_keyword_arguments_not_both() -> None:
    async with make_sampler() as sampler:
        with pytest.raises(FireworksValidationError, match="not both"):
            async for _ in sample_prompts(sampler, [], params=SamplingParams(n=2), n=2):
                pass
        assert [r async for r in sample_prompts(sampler, [], params=SamplingParams(n=2))] == []


def test_render_chat_prompts_batches_like_one_at_a_time(tokenizer_dir: Path) -> None:
    tokenizer = load_tokenizer(tokenizer_dir)
    assert load_tokenizer(str(tokenizer_dir)) is tokenizer  # cached per process
    conversations = [[{"role": "user", "content": f"What is {i} + {i}?"}] for i in range(5)]
    batch = render_chat_prompts(tokenizer, conversations)
    single = [
        tokenizer.apply_chat_template(c, tokenize=True, add_generation_prompt=True, return_dict=False)
        for c in conversations
    ]
    assert batch == single
    assert batch[0][0] == 1 and batch[0][-1] != 2  # <|im_start|> first; generation prompt appended
    with pytest.raises(FireworksValidationError, match="prompt 1"):
        render_chat_prompts(tokenizer, [conversations[0], [{"content": "no role"}]])


def test_http_error_record_is_payload_free() -> None:
    error = SamplingHTTPError("HTTP 400: bad", final_status=400, wire_status=400, request_id="r")
    record = error.as_error_record()
    assert record["error_type"] == "SamplingHTTPError"
    assert record["final_error_kind"] == "http_status"
    assert record["final_status"] == 400
    json.dumps(record)
