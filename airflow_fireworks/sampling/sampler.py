"""``DeploymentSampler``: tokenized, streamed sampling from a Fireworks deployment
(fireworks-api.md section 6).

Every completion is one streamed ``POST /inference/v1/completions`` with ``n: 1`` (``n`` fans out
client side). Each such logical request keeps one ``x-request-id`` across its attempts, takes one
concurrency slot per attempt, and is retried only as a whole: a completion is never half-counted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn
from urllib.parse import urlsplit

import aiohttp

from airflow_fireworks.api._http import resolve_verify
from airflow_fireworks.api.errors import FireworksValidationError
from airflow_fireworks.api.retry import RETRYABLE_STATUS, RetryPolicy
from airflow_fireworks.api.validation import check_int, check_number, is_inference_model
from airflow_fireworks.sampling.completion import CompletionOptions, SampledCompletion, build_completion
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
from airflow_fireworks.sampling.stream import SSEDecoder, StreamAssembler
from airflow_fireworks.sampling.tokenization import render_chat_prompts

log = logging.getLogger(__name__)

COMPLETIONS_PATH = "/inference/v1/completions"
#: Statuses meaning "deployment not ready (booting or hot-loading)", retried inside one attempt.
NOT_READY_STATUS = frozenset({404, 425})
_RETRYABLE_ATTEMPT_STATUS = RETRYABLE_STATUS - NOT_READY_STATUS
_TIMEOUT_STATUS = frozenset({408, 504})
#: Body fields the sampler always sets itself.
_RESERVED_FIELDS = frozenset({"model", "prompt", "n", "stream", "perf_metrics_in_response", "raw_output"})
#: Keyword arguments of the Fireworks SDK that are constructor settings here.
_RENAMED_KWARGS = {
    "http_timeout": "http_timeout_s",
    "hotload_max_retries": "not_ready_retries",
    "hotload_retry_interval": "not_ready_interval_s",
}
_TRANSPORT_ERRORS = (aiohttp.ClientError, TimeoutError)
_MAX_STOP_SEQUENCES = 4


def default_sampler_retry_policy() -> RetryPolicy:
    """The sampler's retry budget: 7 attempts, backoff from 2 s doubling to 30 s."""
    return RetryPolicy(max_attempts=7, initial_backoff_s=2.0, max_backoff_s=30.0, max_total_s=1800.0)


@dataclass(frozen=True)
class SamplingParams:
    """Validated sampling parameters, ready to be combined with any prompt.

    Built by ``DeploymentSampler.sampling_params`` (validation happens once, before any request).
    """

    n: int
    body: Mapping[str, Any]
    options: CompletionOptions
    seed: int | None = None
    max_seq_len: int | None = None
    _body_json: str = field(default="", repr=False)

    def request_body(self, prompt_json: str, sample_index: int) -> bytes:
        """The JSON request body for one sample of a prompt (``prompt_json`` is the encoded ids).

        With a seed, sample ``i`` of a prompt uses ``seed + i`` so that the ``n`` samples differ
        yet stay reproducible.
        """
        if self.seed is None:
            rest = self._body_json
        else:
            rest = json.dumps({**self.body, "seed": self.seed + sample_index}, separators=(",", ":"))
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
        self.retry_after_s = retry_after_s
        self.request_id = request_id
        self.upstream = upstream

    @property
    def timeout_like(self) -> bool:
        return self.kind == "timeout" or self.status in _TIMEOUT_STATUS


def check_prompt_ids(ids: Any, field_name: str = "prompt_token_ids") -> list[int]:
    """``ids`` if it is a non-empty list of non-negative ints, else ``FireworksValidationError``."""
    if not isinstance(ids, list) or not ids:
        raise FireworksValidationError(field_name, "must be a non-empty list of token ids (ints)")
    for token in ids:
        if type(token) is not int or token < 0:
            raise FireworksValidationError(field_name, f"contains {token!r}; token ids are ints >= 0")
    return ids


def _error_message(body: bytes) -> str:
    try:
        payload = json.loads(body)
    except ValueError:
        return body[:200].decode("utf-8", "replace").strip()
    if isinstance(payload, dict):
        error = payload.get("error", payload)
        if isinstance(error, dict):
            return str(error.get("message") or error)[:500]
        return str(error)[:500]
    return str(payload)[:500]


class DeploymentSampler:
    """Samples completions with token ids and logprobs from a Fireworks deployment.

    ``model`` is the deployment's inference name (``accounts/<a>/deployments/<d>``, or
    ``<model>#<deployment>``). Chat messages are tokenized on the client with ``tokenizer``
    (once per prompt, however large ``n`` is). One aiohttp session is kept per event loop; use the
    sampler as an async context manager or call ``close()``.

    The concurrency controller defaults to ``AdaptiveConcurrencyController()``; it is the only
    limit on connections in flight. Retries follow ``retry_policy`` (default: 7 attempts, 2 s
    doubling to 30 s, honouring ``Retry-After``); a 404/425 "not ready" answer is retried
    ``not_ready_retries`` times every ``not_ready_interval_s`` inside one attempt.
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
        if (
            not isinstance(inference_url, str)
            or urlsplit(inference_url).scheme not in ("http", "https")
            or not urlsplit(inference_url).hostname
        ):
            raise FireworksValidationError(
                "inference_url", "must be an http(s) URL such as https://api.fireworks.ai"
            )
        if not isinstance(model, str) or not is_inference_model(model):
            raise FireworksValidationError(
                "model", "must be 'accounts/<account>/deployments/<deployment>' or '<model>#<deployment>'"
            )
        if not isinstance(api_key, str) or not api_key.strip():
            raise FireworksValidationError("api_key", "must be a non-empty string")
        check_number(http_timeout_s, "http_timeout_s", 0.0, float("inf"), low_open=True)
        check_int(not_ready_retries, "not_ready_retries", 0)
        check_number(not_ready_interval_s, "not_ready_interval_s", 0.0, float("inf"))
        self.inference_url = inference_url.rstrip("/")
        self.model = model
        self.tokenizer = tokenizer
        self.concurrency_controller: ConcurrencyController = (
            concurrency_controller if concurrency_controller is not None else AdaptiveConcurrencyController()
        )
        self.retry_policy = retry_policy or default_sampler_retry_policy()
        self.http_timeout_s = float(http_timeout_s)
        self.not_ready_retries = not_ready_retries
        self.not_ready_interval_s = float(not_ready_interval_s)
        self.verify_ssl = resolve_verify(verify_ssl, log)
        self._api_key = api_key
        self._url = self.inference_url + COMPLETIONS_PATH
        headers = {"Content-Type": "application/json", "X-Api-Key": api_key}
        for name, value in (additional_headers or {}).items():
            for existing in [key for key in headers if key.lower() == name.lower()]:
                del headers[existing]
            headers[name] = value
        headers["Authorization"] = f"Bearer {api_key}"
        self._headers = headers
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"DeploymentSampler(inference_url={self.inference_url!r}, model={self.model!r})"

    async def __aenter__(self) -> DeploymentSampler:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session of the running event loop."""
        session, self._session, self._session_loop = self._session, None, None
        if session is not None and not session.closed:
            await session.close()

    def _get_session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        session = self._session
        if session is not None and self._session_loop is loop and not session.closed:
            return session
        if (
            session is not None
            and not session.closed
            and self._session_loop is not None
            and self._session_loop.is_closed()
        ):
            # The loop that owned it is gone, and its connections with it.
            session.detach()
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ssl=self.verify_ssl),
            timeout=aiohttp.ClientTimeout(
                total=None, connect=self.http_timeout_s, sock_read=self.http_timeout_s
            ),
        )
        self._session_loop = loop
        return self._session

    # -- parameters ---------------------------------------------------------------------------

    def sampling_params(
        self,
        *,
        n: int = 1,
        max_tokens: int = 1024,
        temperature: float = 1.0,
        top_p: float | None = None,
        top_k: int | None = None,
        stop: str | list[str] | list[int] | None = None,
        seed: int | None = None,
        logprobs: bool | int = False,
        top_logprobs: int | None = None,
        echo: bool = False,
        max_seq_len: int | None = None,
        include_routing_matrix: bool = False,
        **extra: Any,
    ) -> SamplingParams:
        """Validate sampling parameters once; raises ``FireworksValidationError`` naming the field.

        Integer ``stop`` ids are decoded to strings with the tokenizer (the API takes strings).
        Other keyword arguments (``echo_last``, ``prompt_cache_key``, ...) go into the body as is.
        """
        check_int(n, "n", 1, 128)
        check_int(max_tokens, "max_tokens", 0)
        body: dict[str, Any] = {
            "model": self.model,
            "n": 1,
            "max_tokens": max_tokens,
            "temperature": check_number(temperature, "temperature", 0.0, 2.0),
            "stream": True,
            "perf_metrics_in_response": True,
            "raw_output": True,
            "top_p": 1.0 if top_p is None else check_number(top_p, "top_p", 0.0, 1.0, low_open=True),
            "top_k": 0 if top_k is None else check_int(top_k, "top_k", 0, 100),
        }
        if not isinstance(logprobs, bool) and not (isinstance(logprobs, int) and 0 <= logprobs <= 5):
            raise FireworksValidationError("logprobs", "must be a bool (or a legacy int 0-5)")
        if logprobs:
            body["logprobs"] = logprobs
        if top_logprobs is not None:
            body["top_logprobs"] = check_int(top_logprobs, "top_logprobs", 0, 5)
        if not isinstance(echo, bool):
            raise FireworksValidationError("echo", "must be a bool")
        if echo:
            body["echo"] = True
        if stop is not None:
            body["stop"] = self._stop_strings(stop)
        if seed is not None:
            check_int(seed, "seed", 0)
        if max_seq_len is not None:
            check_int(max_seq_len, "max_seq_len", 1)
        if not isinstance(include_routing_matrix, bool):
            raise FireworksValidationError("include_routing_matrix", "must be a bool")
        if include_routing_matrix:
            body["include_routing_matrix"] = True
        echo_last = extra.get("echo_last")
        if echo_last is not None:
            check_int(echo_last, "echo_last", 0)
        for name, value in extra.items():
            if name in _RESERVED_FIELDS:
                raise FireworksValidationError(name, "is set by the sampler; remove it")
            if name in _RENAMED_KWARGS:
                raise FireworksValidationError(
                    name, f"is a DeploymentSampler setting: pass {_RENAMED_KWARGS[name]}= to the constructor"
                )
            body[name] = value
        options = CompletionOptions(
            logprobs=bool(logprobs),
            echo=echo,
            echo_last=echo_last,
            include_routing_matrix=include_routing_matrix,
        )
        try:
            body_json = json.dumps(body, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise FireworksValidationError("extra", f"arguments must be JSON-serialisable ({exc})") from None
        return SamplingParams(
            n=n, body=body, options=options, seed=seed, max_seq_len=max_seq_len, _body_json=body_json
        )

    def _stop_strings(self, stop: Any) -> list[str]:
        items = [stop] if isinstance(stop, str) else stop
        if not isinstance(items, list | tuple) or len(items) > _MAX_STOP_SEQUENCES:
            raise FireworksValidationError(
                "stop", "must be a string or a list of up to 4 strings (or token ids)"
            )
        if all(isinstance(item, str) for item in items):
            return list(items)
        if all(type(item) is int for item in items):
            if self.tokenizer is None:
                raise FireworksValidationError(
                    "stop", "integer stop ids need a tokenizer to decode them; pass strings or a tokenizer"
                )
            return [self.tokenizer.decode([item], skip_special_tokens=False) for item in items]
        raise FireworksValidationError("stop", "mixes strings and token ids; use one kind")

    def render_prompt(self, messages: Any) -> list[int]:
        """Token ids of one chat prompt (the tokenizer's chat template, generation prompt added)."""
        return render_chat_prompts(self.tokenizer, [messages])[0]

    # -- sampling -----------------------------------------------------------------------------

    async def sample_with_tokens(
        self,
        messages: list[dict[str, Any]] | None = None,
        *,
        prompt_token_ids: list[int] | None = None,
        n: int = 1,
        max_tokens: int = 1024,
        temperature: float = 1.0,
        top_p: float | None = None,
        top_k: int | None = None,
        stop: str | list[str] | list[int] | None = None,
        seed: int | None = None,
        logprobs: bool | int = False,
        top_logprobs: int | None = None,
        echo: bool = False,
        max_seq_len: int | None = None,
        include_routing_matrix: bool = False,
        **extra: Any,
    ) -> list[SampledCompletion]:
        """Sample ``n`` completions of one prompt (chat ``messages`` or ``prompt_token_ids``).

        The sampling parameters are those of the Fireworks SDK's ``sample_with_tokens`` (checked by
        ``sampling_params``; other keyword arguments such as ``echo_last`` or ``prompt_cache_key``
        go into the request body). Returns the completions in sample order. A prompt of ``max_seq_len``
        tokens or more returns ``[]`` without any request; a completion whose prompt plus completion
        exceeds ``max_seq_len`` is dropped. With ``seed``, sample ``i`` uses ``seed + i``. Raises
        ``SamplingRequestError`` (or a subclass) when a completion fails for good; its siblings are
        then cancelled.
        """
        params = self.sampling_params(
            n=n,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            stop=stop,
            seed=seed,
            logprobs=logprobs,
            top_logprobs=top_logprobs,
            echo=echo,
            max_seq_len=max_seq_len,
            include_routing_matrix=include_routing_matrix,
            **extra,
        )
        if (messages is None) == (prompt_token_ids is None):
            raise FireworksValidationError("messages", "give exactly one of messages or prompt_token_ids")
        prompt = self.render_prompt(messages) if messages is not None else check_prompt_ids(prompt_token_ids)
        return await self.sample_prompt_ids(prompt, params)

    async def sample_prompt_ids(self, prompt: list[int], params: SamplingParams) -> list[SampledCompletion]:
        """Sample ``params.n`` completions of already tokenized (and validated) prompt ids."""
        max_seq_len = params.max_seq_len
        if max_seq_len is not None and len(prompt) >= max_seq_len:
            return []
        prompt_json = json.dumps(prompt, separators=(",", ":"))
        if params.n == 1:
            completions = [await self._sample_one(prompt, prompt_json, params, 0)]
        else:
            loop = asyncio.get_running_loop()
            tasks = [
                loop.create_task(self._sample_one(prompt, prompt_json, params, index))
                for index in range(params.n)
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
        self, prompt: list[int], prompt_json: str, params: SamplingParams, sample_index: int
    ) -> SampledCompletion:
        """One logical request: attempts until a complete stream, a terminal error or the budget."""
        logical_id = uuid.uuid4().hex
        headers = {**self._headers, "x-request-id": logical_id}
        body = params.request_body(prompt_json, sample_index)
        policy = self.retry_policy
        started = time.monotonic()
        failures: list[dict[str, Any]] = []
        attempt = 0
        while True:
            attempt += 1
            try:
                assembled, metrics = await self._attempt(headers, body, attempt)
                return build_completion(
                    assembled, prompt, params.options, sample_index=sample_index, server_metrics=metrics
                )
            except _RetryableFailure as failure:
                failures.append(_attempt_record(attempt, failure))
                delay = policy.backoff_s(attempt, failure.retry_after_s)
                if attempt >= policy.max_attempts or time.monotonic() - started + delay > policy.max_total_s:
                    raise self._exhausted(failure, logical_id, attempt, failures) from failure
                log.debug(
                    "Sampling request %s: %s on attempt %d, retrying in %.2fs",
                    logical_id,
                    failure.message,
                    attempt,
                    delay,
                )
                await asyncio.sleep(delay)
            except SamplingRequestError as error:
                error.logical_request_id = logical_id
                error.model = self.model
                error.attempts = attempt
                failures.append(
                    {
                        "index": attempt,
                        "outcome": "failed",
                        "status_code": error.wire_status,
                        "error_kind": error.final_error_kind,
                        "response_request_id": error.request_id,
                        "upstream_response_id": error.upstream_response_id,
                    }
                )
                error.server_attempts = failures
                raise

    def _exhausted(
        self, failure: _RetryableFailure, logical_id: str, attempts: int, failures: list[dict[str, Any]]
    ) -> SamplingRequestError:
        note = getattr(self.concurrency_controller, "note_retry_exhausted", None)
        if note is not None:
            note(failure.metrics)
        upstream = failure.upstream
        cls = DeploymentSamplerTimeoutError if failure.timeout_like else SamplingRequestError
        return cls(
            f"sampling request failed after {attempts} attempt(s): {failure.message}",
            logical_request_id=logical_id,
            model=self.model,
            attempts=attempts,
            final_status=failure.status,
            final_error_kind=failure.kind,
            request_id=failure.request_id,
            wire_status=failure.status if failure.kind == "http_status" else None,
            upstream_response_id=upstream.upstream_response_id if upstream else None,
            upstream_error_code=upstream.upstream_error_code if upstream else None,
            upstream_error_type=upstream.upstream_error_type if upstream else None,
            upstream_finish_reason=upstream.upstream_finish_reason if upstream else None,
            retry_budget_exhausted=True,
            server_attempts=failures,
        )

    async def _attempt(
        self, headers: dict[str, str], body: bytes, attempt: int
    ) -> tuple[StreamAssembler, ServerMetrics]:
        """One HTTP attempt holding exactly one concurrency slot, released once whatever happens
        (with the metrics the controller should see, per fireworks-api.md 6.9)."""
        controller = self.concurrency_controller
        session = self._get_session()
        await controller.acquire()
        release_metrics: ServerMetrics | None = None
        sent_at = time.monotonic()
        try:
            not_ready_left = self.not_ready_retries
            while True:
                async with session.post(self._url, data=body, headers=headers) as response:
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
        key = self._api_key
        error.message = error.message.replace(key, "***")
        error.args = (error.message,)
        for name in ("upstream_error_code", "upstream_error_type", "upstream_finish_reason"):
            value = getattr(error, name)
            if isinstance(value, str):
                setattr(error, name, value.replace(key, "***"))

    async def _raise_for_status(
        self, response: aiohttp.ClientResponse, attempt: int, sent_at: float
    ) -> NoReturn:
        """Raise ``_RetryableFailure`` for a retryable status, else a terminal ``SamplingHTTPError``."""
        status = response.status
        message = _error_message(await response.read()).replace(self._api_key, "***")
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
                f"HTTP {status} from {self._url}: {message} (deployment {self.model} still not serving after "
                f"{self.not_ready_retries} not-ready retries every {self.not_ready_interval_s:g} s)",
                final_status=status,
                wire_status=status,
                request_id=request_id,
            )
        raise SamplingHTTPError(
            f"HTTP {status} from {self._url}: {message}",
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


def _attempt_record(attempt: int, failure: _RetryableFailure) -> dict[str, Any]:
    return {
        "index": attempt,
        "outcome": "retryable_error",
        "status_code": failure.status,
        "error_kind": failure.kind,
        "response_request_id": failure.request_id,
        "upstream_response_id": failure.upstream.upstream_response_id if failure.upstream else None,
    }
