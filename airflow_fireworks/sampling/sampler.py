"""``DeploymentSampler``: tokenized, streamed sampling from a Fireworks deployment
(fireworks-api.md section 6).

Every completion is one streamed ``POST /inference/v1/completions`` with ``n: 1`` (``n`` fans out
client side). Each such logical request keeps one ``x-request-id`` across its attempts, takes one
concurrency slot per attempt, and is retried only as a whole: a completion is never half-counted.
Headers, TLS and the per-loop session come from ``api.transport``; retries follow the shared
``RetryPolicy`` (its stop rule and backoff, through tenacity).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NoReturn

import aiohttp
import tenacity

from airflow_fireworks.api.errors import FireworksValidationError
from airflow_fireworks.api.retry import RETRYABLE_STATUS, RetryPolicy
from airflow_fireworks.api.transport import ClientConfig, LoopSession, error_message
from airflow_fireworks.api.validation import check_int, check_number, check_seconds, is_inference_model
from airflow_fireworks.sampling.completion import SampledCompletion, build_completion
from airflow_fireworks.sampling.concurrency import AdaptiveConcurrencyController, ConcurrencyController
from airflow_fireworks.sampling.errors import (
    DeploymentNotServingError,
    DeploymentSamplerTimeoutError,
    SamplingHTTPError,
    SamplingRequestError,
    StreamProtocolError,
    StreamTruncatedError,
    UpstreamStreamError,
)
from airflow_fireworks.sampling.metrics import ServerMetrics, clean_identifier, parse_server_metrics
from airflow_fireworks.sampling.params import SamplingParams
from airflow_fireworks.sampling.stream import SSEDecoder, StreamAssembler
from airflow_fireworks.sampling.tokenization import render_chat_prompts

log = logging.getLogger(__name__)

#: Statuses meaning "deployment not ready (booting or hot-loading)", retried inside one attempt.
NOT_READY_STATUS = frozenset({404, 425})
_RETRYABLE_ATTEMPT_STATUS = RETRYABLE_STATUS - NOT_READY_STATUS
_TIMEOUT_STATUS = frozenset({408, 504})
_TRANSPORT_ERRORS = (aiohttp.ClientError, TimeoutError)
#: What every request body sets: one streamed completion with token ids and server metrics.
_STREAMED_ONE = {"n": 1, "stream": True, "perf_metrics_in_response": True, "raw_output": True}


def default_sampler_retry_policy() -> RetryPolicy:
    """The sampler's retry budget: 7 attempts, backoff from 2 s doubling to 30 s."""
    return RetryPolicy(max_attempts=7, initial_backoff_s=2.0, max_backoff_s=30.0, max_total_s=1800.0)


@dataclass(frozen=True)
class SamplingRequest:
    """``SamplingParams`` made ready for one sampler's requests (``DeploymentSampler.prepare``):
    the JSON body every sample of every prompt shares."""

    params: SamplingParams
    body: Mapping[str, Any]
    _body_json: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_body_json", json.dumps(self.body, separators=(",", ":")))

    def request_body(self, prompt_json: str, sample_index: int) -> bytes:
        """The JSON request body for one sample of a prompt (``prompt_json`` is the encoded ids).

        With a seed, sample ``i`` of a prompt uses ``seed + i`` so that the ``n`` samples differ
        yet stay reproducible.
        """
        seed = self.params.seed
        if seed is None:
            rest = self._body_json
        else:
            rest = json.dumps({**self.body, "seed": seed + sample_index}, separators=(",", ":"))
        return ('{"prompt":' + prompt_json + "," + rest[1:]).encode()


class _RetryableFailure(Exception):
    """One attempt failed in a way worth another attempt."""

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        status: int | None = None,
        metrics: ServerMetrics | None = None,
        retry_after_s: float | None = None,
        request_id: str | None = None,
        upstream: SamplingRequestError | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.metrics = metrics
        self.retry_after_s = retry_after_s  # read by the retry policy's wait
        self.request_id = request_id
        self.upstream = upstream

    @property
    def timeout_like(self) -> bool:
        return self.kind == "timeout" or self.status in _TIMEOUT_STATUS

    def record(self, attempt: int) -> dict[str, Any]:
        """This failure as an entry of ``SamplingRequestError.server_attempts``."""
        return {
            "index": attempt,
            "outcome": "retryable_error",
            "status_code": self.status,
            "error_kind": self.kind,
            "response_request_id": self.request_id,
            "upstream_response_id": self.upstream.upstream_response_id if self.upstream else None,
        }


_RETRY_FAILURES = tenacity.retry_if_exception_type(_RetryableFailure)


def _log_retry(logical_id: str, retry_state: tenacity.RetryCallState) -> None:
    failure = retry_state.outcome.exception() if retry_state.outcome is not None else None
    log.debug(
        "Sampling request %s: %s on attempt %d, retrying in %.2fs",
        logical_id,
        failure,
        retry_state.attempt_number,
        retry_state.upcoming_sleep,
    )


def check_prompt_ids(ids: Any, field_name: str = "prompt_token_ids") -> list[int]:
    """``ids`` if it is a non-empty list of non-negative ints, else ``FireworksValidationError``."""
    if not isinstance(ids, list) or not ids:
        raise FireworksValidationError(field_name, "must be a non-empty list of token ids (ints)")
    for token in ids:
        if type(token) is not int or token < 0:
            raise FireworksValidationError(field_name, f"contains {token!r}; token ids are ints >= 0")
    return ids


class DeploymentSampler:
    """Samples completions with token ids and logprobs from a Fireworks deployment.

    ``model`` is the deployment's inference name (``accounts/<a>/deployments/<d>``, or
    ``<model>#<deployment>``). Chat messages are tokenized on the client with ``tokenizer``
    (once per prompt, however large ``n`` is). One aiohttp session is kept per event loop; use the
    sampler as an async context manager or call ``close()``. Requests carry the headers of every
    Fireworks client (``api.transport``), plus ``Authorization`` and a per-request ``x-request-id``.

    The concurrency controller defaults to ``AdaptiveConcurrencyController()``; it is the only
    limit on connections in flight. Retries follow ``retry_policy`` (default: 7 attempts, 2 s
    doubling to 30 s, honouring ``Retry-After``, at most 30 minutes); a 404/425 "not ready" answer
    is retried ``not_ready_retries`` times every ``not_ready_interval_s`` inside one attempt.
    """

    def __init__(
        self,
        inference_url: str,
        model: str,
        api_key: str,
        tokenizer: Any = None,
        concurrency_controller: ConcurrencyController | None = None,
        *,
        additional_headers: Mapping[str, str] | None = None,
        verify_ssl: bool | None = None,
        retry_policy: RetryPolicy | None = None,
        http_timeout_s: float = 600.0,
        not_ready_retries: int = 10,
        not_ready_interval_s: float = 5.0,
    ) -> None:
        check_seconds(http_timeout_s, "http_timeout_s", positive=True)
        self.config = ClientConfig.create(
            api_key,
            inference_url=inference_url,
            additional_headers=additional_headers,
            verify_ssl=verify_ssl,
            timeout_s=http_timeout_s,
        )
        if not isinstance(model, str) or not is_inference_model(model):
            raise FireworksValidationError(
                "model", "must be 'accounts/<account>/deployments/<deployment>' or '<model>#<deployment>'"
            )
        check_int(not_ready_retries, "not_ready_retries", 0)
        check_number(not_ready_interval_s, "not_ready_interval_s", 0.0, float("inf"))
        self.model = model
        self.tokenizer = tokenizer
        self.concurrency_controller: ConcurrencyController = (
            concurrency_controller if concurrency_controller is not None else AdaptiveConcurrencyController()
        )
        self.retry_policy = retry_policy or default_sampler_retry_policy()
        self.not_ready_retries = not_ready_retries
        self.not_ready_interval_s = float(not_ready_interval_s)
        timeout = self.config.timeout_s
        self._sessions = LoopSession(
            self.config.verify_ssl,
            limit=0,
            timeout=aiohttp.ClientTimeout(total=None, connect=timeout, sock_read=timeout),
        )

    def __repr__(self) -> str:
        return f"DeploymentSampler(inference_url={self.inference_url!r}, model={self.model!r})"

    @property
    def inference_url(self) -> str:
        return self.config.inference_url

    @property
    def verify_ssl(self) -> bool:
        return self.config.verify_ssl

    @property
    def http_timeout_s(self) -> float:
        return self.config.timeout_s

    async def __aenter__(self) -> DeploymentSampler:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session of the running event loop."""
        await self._sessions.close()

    # -- parameters ---------------------------------------------------------------------------

    def prepare(self, params: SamplingParams) -> SamplingRequest:
        """``params`` ready for this sampler's requests. Integer ``stop`` ids are decoded to strings
        with the tokenizer (the API takes strings)."""
        fields = params.body_fields()
        if params.has_stop_token_ids:
            if self.tokenizer is None:
                raise FireworksValidationError(
                    "stop", "integer stop ids need a tokenizer to decode them; pass strings or a tokenizer"
                )
            fields["stop"] = [
                self.tokenizer.decode([item], skip_special_tokens=False) for item in fields["stop"]
            ]
        return SamplingRequest(params, {"model": self.model, **fields, **_STREAMED_ONE})

    def sampling_params(self, **kwargs: Any) -> SamplingRequest:
        """``prepare(SamplingParams.from_kwargs(**kwargs))``: the keyword arguments of
        ``sample_with_tokens``, checked once, before any request."""
        return self.prepare(SamplingParams.from_kwargs(**kwargs))

    def render_prompt(self, messages: Any) -> list[int]:
        """Token ids of one chat prompt (the tokenizer's chat template, generation prompt added)."""
        return render_chat_prompts(self.tokenizer, [messages])[0]

    # -- sampling -----------------------------------------------------------------------------

    async def sample_with_tokens(
        self,
        messages: list[dict[str, Any]] | None = None,
        *,
        prompt_token_ids: list[int] | None = None,
        n: int = SamplingParams.n,
        max_tokens: int = SamplingParams.max_tokens,
        temperature: float = SamplingParams.temperature,
        max_seq_len: int | None = SamplingParams.max_seq_len,
        **kwargs: Any,
    ) -> list[SampledCompletion]:
        """Sample ``n`` completions of one prompt (chat ``messages`` or ``prompt_token_ids``).

        The signature of the Fireworks SDK's ``sample_with_tokens``: the other sampling parameters
        (``top_p``, ``top_k``, ``stop``, ``seed``, ``logprobs``, ``top_logprobs``, ``echo``,
        ``include_routing_matrix``) are keyword arguments of ``SamplingParams``, which checks them
        all; any other keyword argument (``echo_last``, ``prompt_cache_key``, ...) goes into the
        request body. Returns the completions in sample order. A prompt of ``max_seq_len`` tokens or
        more returns ``[]`` without any request; a completion whose prompt plus completion exceeds
        ``max_seq_len`` is dropped. With ``seed``, sample ``i`` uses ``seed + i``. Raises
        ``SamplingRequestError`` (or a subclass) when a completion fails for good; its siblings are
        then cancelled.
        """
        params = SamplingParams.from_kwargs(
            n=n, max_tokens=max_tokens, temperature=temperature, max_seq_len=max_seq_len, **kwargs
        )
        request = self.prepare(params)
        if (messages is None) == (prompt_token_ids is None):
            raise FireworksValidationError("messages", "give exactly one of messages or prompt_token_ids")
        prompt = self.render_prompt(messages) if messages is not None else check_prompt_ids(prompt_token_ids)
        return await self.sample_prompt_ids(prompt, request)

    async def sample_prompt_ids(
        self, prompt: list[int], params: SamplingRequest | SamplingParams
    ) -> list[SampledCompletion]:
        """Sample ``params.n`` completions of already tokenized (and validated) prompt ids."""
        request = params if isinstance(params, SamplingRequest) else self.prepare(params)
        n, max_seq_len = request.params.n, request.params.max_seq_len
        if max_seq_len is not None and len(prompt) >= max_seq_len:
            return []
        prompt_json = json.dumps(prompt, separators=(",", ":"))
        if n == 1:
            completions = [await self._sample_one(prompt, prompt_json, request, 0)]
        else:
            loop = asyncio.get_running_loop()
            tasks = [
                loop.create_task(self._sample_one(prompt, prompt_json, request, index)) for index in range(n)
            ]
            try:
                completions = list(await asyncio.gather(*tasks))
            except BaseException:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
        if max_seq_len is not None:
            completions = [c for c in completions if c.prompt_len + c.completion_len <= max_seq_len]
        return completions

    async def _sample_one(
        self, prompt: list[int], prompt_json: str, request: SamplingRequest, sample_index: int
    ) -> SampledCompletion:
        """One logical request: HTTP attempts, under the retry policy, until a complete stream, a
        terminal error or the policy stops (attempts or time spent)."""
        logical_id = uuid.uuid4().hex
        headers = {**self.config.gateway_headers, "x-request-id": logical_id}
        body = request.request_body(prompt_json, sample_index)
        tried: list[dict[str, Any]] = []  # one entry per failed HTTP attempt

        async def attempt() -> SampledCompletion:
            number = len(tried) + 1
            try:
                assembled, metrics = await self._attempt(headers, body, number)
            except _RetryableFailure as failure:
                tried.append(failure.record(number))
                raise
            return build_completion(
                assembled, prompt, request.params.options, sample_index=sample_index, server_metrics=metrics
            )

        retrying = self.retry_policy.async_retrying(
            retry=_RETRY_FAILURES, before_sleep=partial(_log_retry, logical_id)
        )
        try:
            completion: SampledCompletion = await retrying(attempt)
        except _RetryableFailure as failure:  # the policy stopped retrying
            raise self._exhausted(failure, logical_id, tried) from failure
        except SamplingRequestError as error:
            error.logical_request_id = logical_id
            error.model = self.model
            error.attempts = len(tried) + 1
            tried.append(
                {
                    "index": error.attempts,
                    "outcome": "failed",
                    "status_code": error.wire_status,
                    "error_kind": error.final_error_kind,
                    "response_request_id": error.request_id,
                    "upstream_response_id": error.upstream_response_id,
                }
            )
            error.server_attempts = tried
            raise
        return completion

    def _exhausted(
        self, failure: _RetryableFailure, logical_id: str, tried: list[dict[str, Any]]
    ) -> SamplingRequestError:
        self.concurrency_controller.note_retry_exhausted(failure.metrics)
        upstream = failure.upstream
        cls = DeploymentSamplerTimeoutError if failure.timeout_like else SamplingRequestError
        return cls(
            f"sampling request failed after {len(tried)} attempt(s): {failure.message}",
            logical_request_id=logical_id,
            model=self.model,
            attempts=len(tried),
            final_status=failure.status,
            final_error_kind=failure.kind,
            request_id=failure.request_id,
            wire_status=failure.status if failure.kind == "http_status" else None,
            upstream_response_id=upstream.upstream_response_id if upstream else None,
            upstream_error_code=upstream.upstream_error_code if upstream else None,
            upstream_error_type=upstream.upstream_error_type if upstream else None,
            upstream_finish_reason=upstream.upstream_finish_reason if upstream else None,
            retry_budget_exhausted=True,
            server_attempts=tried,
        )

    async def _attempt(
        self, headers: dict[str, str], body: bytes, attempt: int
    ) -> tuple[StreamAssembler, ServerMetrics]:
        """One HTTP attempt holding exactly one concurrency slot, released once whatever happens
        (with the metrics the controller should see, per fireworks-api.md 6.9)."""
        controller = self.concurrency_controller
        session = self._sessions.get()
        await controller.acquire()
        release_metrics: ServerMetrics | None = None
        sent_at = time.monotonic()
        try:
            not_ready_left = self.not_ready_retries
            while True:
                async with session.post(self.config.completions_url, data=body, headers=headers) as response:
                    status = response.status
                    if status >= 300 and (status not in NOT_READY_STATUS or not_ready_left == 0):
                        await self._raise_for_status(response, attempt, sent_at)
                    if status < 300:
                        assembled = StreamAssembler()
                        release_metrics = await self._read_stream(response, attempt, sent_at, assembled)
                        return assembled, release_metrics
                    await response.read()
                not_ready_left -= 1
                await asyncio.sleep(self.not_ready_interval_s)
        except _RetryableFailure as failure:
            release_metrics = failure.metrics
            raise
        except _TRANSPORT_ERRORS as exc:
            release_metrics = ServerMetrics(
                transport_error=True,
                retry_attempt=attempt,
                error=type(exc).__name__,
                client_latency=time.monotonic() - sent_at,
            )
            raise _RetryableFailure(
                "timeout" if isinstance(exc, TimeoutError) else "connection",
                f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
                metrics=release_metrics,
            ) from exc
        except StreamProtocolError as exc:
            self._redact(exc)  # it quotes the start of the offending data
            raise
        except UpstreamStreamError as exc:
            self._redact(exc)
            embedded = exc.final_status
            release_metrics = ServerMetrics(
                http_status_code=embedded,
                retry_attempt=attempt,
                error="upstream stream error",
                client_latency=time.monotonic() - sent_at,
            )
            if embedded in _RETRYABLE_ATTEMPT_STATUS:
                raise _RetryableFailure(
                    "upstream_stream", exc.message, status=embedded, metrics=release_metrics, upstream=exc
                ) from exc
            raise
        finally:
            controller.release(release_metrics)

    def _redact(self, error: SamplingRequestError) -> None:
        """Remove the API key from server text an error carries (a server may echo it)."""
        redact = self.config.redact
        error.message = redact(error.message)
        error.args = (error.message,)
        for name in ("upstream_error_code", "upstream_error_type", "upstream_finish_reason"):
            value = getattr(error, name)
            if isinstance(value, str):
                setattr(error, name, redact(value))

    async def _raise_for_status(
        self, response: aiohttp.ClientResponse, attempt: int, sent_at: float
    ) -> NoReturn:
        """Raise ``_RetryableFailure`` for a retryable status, else a terminal ``SamplingHTTPError``."""
        status = response.status
        message = self.config.redact(error_message(await response.read()))
        request_id = clean_identifier(response.headers.get("x-request-id"))
        if status in _RETRYABLE_ATTEMPT_STATUS:
            raise _RetryableFailure(
                "http_status",
                f"HTTP {status}: {message}",
                status=status,
                metrics=parse_server_metrics(
                    response.headers,
                    None,
                    http_status_code=status,
                    retry_attempt=attempt,
                    error=f"HTTP {status}",
                    client_latency=time.monotonic() - sent_at,
                ),
                retry_after_s=self.retry_policy.parse_retry_after(response.headers.get("Retry-After")),
                request_id=request_id,
            )
        if status in NOT_READY_STATUS:
            raise DeploymentNotServingError(
                f"HTTP {status} from {self.config.completions_url}: {message} (deployment {self.model} "
                f"still not serving after {self.not_ready_retries} not-ready retries every "
                f"{self.not_ready_interval_s:g} s)",
                final_status=status,
                wire_status=status,
                request_id=request_id,
            )
        raise SamplingHTTPError(
            f"HTTP {status} from {self.config.completions_url}: {message}",
            final_status=status,
            wire_status=status,
            request_id=request_id,
        )

    @staticmethod
    async def _read_stream(
        response: aiohttp.ClientResponse, attempt: int, sent_at: float, assembled: StreamAssembler
    ) -> ServerMetrics:
        """Feed the body into ``assembled`` as it arrives; metrics of the complete stream.

        A stream without an accepted finish reason is a retryable truncation.
        """
        feed = SSEDecoder().feed
        add_event = assembled.add_event
        content = response.content
        while True:
            chunk = await content.readany()
            if not chunk:
                break
            if assembled.done:
                continue  # drain to the end so that the connection can be reused
            for event, data in feed(chunk):
                add_event(event, data)
        try:
            assembled.check_complete()
        except StreamTruncatedError as exc:
            raise _RetryableFailure("sse_truncation", exc.message, status=response.status) from exc
        now = time.monotonic()
        usage = assembled.usage
        return parse_server_metrics(
            response.headers,
            assembled.perf_metrics,
            http_status_code=response.status,
            retry_attempt=attempt,
            client_latency=now - sent_at,
            client_ttft=assembled.first_text_at - sent_at if assembled.first_text_at is not None else None,
            completion_tokens=usage.get("completion_tokens") if usage else None,
        )
