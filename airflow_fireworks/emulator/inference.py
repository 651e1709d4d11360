"""``POST /inference/v1/completions``: validation, routing to a replica, SSE or JSON answers."""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from airflow_fireworks.emulator.engine import Engine, EngineClosed, Sequence, prefix_hashes
from airflow_fireworks.emulator.errors import ApiError, extra_field, invalid, json_response
from airflow_fireworks.emulator.faults import FaultRule
from airflow_fireworks.emulator.generation import (
    Completion,
    SamplingParams,
    Vocabulary,
    echo_rows,
    generate,
    seed_for,
)
from airflow_fireworks.emulator.state import Deployment, Replica

if TYPE_CHECKING:
    from airflow_fireworks.emulator.core import Emulator

_BOOL_FIELDS = (
    "stream",
    "echo",
    "raw_output",
    "perf_metrics_in_response",
    "return_token_ids",
    "include_routing_matrix",
    "ignore_eos",
)
_NUMBER_FIELDS = ("presence_penalty", "frequency_penalty", "repetition_penalty", "min_p")
ALLOWED_FIELDS = frozenset(
    {
        "model",
        "prompt",
        "n",
        "max_tokens",
        "temperature",
        "top_p",
        "top_k",
        "logprobs",
        "top_logprobs",
        "echo_last",
        "stop",
        "seed",
        "prompt_cache_key",
        "images",
        "top_sampling_logprobs",
        "top_sampling_format",
        "sampling_mask",
        "routing_matrix_format",
        "context_length_exceeded_behavior",
        "min_tokens",
        "user",
        "logit_bias",
        "stream_options",
        *_BOOL_FIELDS,
        *_NUMBER_FIELDS,
    }
)
DEFAULT_MAX_TOKENS = 16
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


@dataclass(frozen=True)
class CompletionRequest:
    """A validated completions body."""

    model: str
    deployment_id: str
    prompt: list[int]
    n: int
    stream: bool
    echo_count: int
    seed: int | None
    raw_output: bool
    perf_metrics: bool
    prompt_cache_key: str | None
    params: SamplingParams


def deployment_of_model(model: Any, account_id: str) -> str | None:
    """``[x#]accounts/<account>/deployments/<id>`` -> ``<id>`` (None if not of that form)."""
    if not isinstance(model, str):
        return None
    name = model.rsplit("#", 1)[-1]
    prefix = f"accounts/{account_id}/deployments/"
    if not name.startswith(prefix) or "/" in name[len(prefix) :] or len(name) == len(prefix):
        return None
    return name[len(prefix) :]


# The bounds check below deliberately repeats ``airflow_fireworks.api.validation.check_int``: the
# emulator stands for the service and never imports the client, so each side checks on its own.
def _int(body: dict[str, Any], key: str, default: int, low: int, high: int | None = None) -> int:
    value = body.get(key)
    if value is None:
        return default
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < low
        or (high is not None and value > high)
    ):
        bounds = f">= {low}" if high is None else f"between {low} and {high}"
        raise invalid(f"'{key}' must be an integer {bounds}, got {value!r}")
    return value


def _float(body: dict[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise invalid(f"'{key}' must be a number between {low:g} and {high:g}, got {value!r}")
    return float(value)


def parse_request(body: Any, vocab: Vocabulary, emulator: Emulator) -> CompletionRequest:
    """Validate a completions body field by field (400 naming the field)."""
    settings = emulator.settings
    if not isinstance(body, dict):
        raise invalid("request body must be a JSON object")
    for key in body:
        if key not in ALLOWED_FIELDS:
            raise extra_field(key)
    for key in ("top_sampling_format", "sampling_mask", "routing_matrix_format"):
        if body.get(key) not in (None, "base64_inline"):
            raise extra_field(key)
    if body.get("top_sampling_logprobs"):
        raise extra_field("top_sampling_logprobs")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("'model' is required: accounts/<account>/deployments/<deployment_id>")
    deployment_id = deployment_of_model(model, settings.account_id)
    if deployment_id is None:
        raise ApiError(404, f"Model not found, inaccessible, and/or not deployed: {model!r}", "NOT_FOUND")
    for key in _BOOL_FIELDS:
        if key in body and body[key] is not None and not isinstance(body[key], bool):
            raise invalid(f"'{key}' must be a boolean, got {body[key]!r}")
    for key in _NUMBER_FIELDS:
        _float(body, key, 0.0, -2.0, 2.0 if key != "repetition_penalty" else 10.0)
    prompt = _prompt(body.get("prompt"), vocab)
    n = _int(body, "n", 1, 1, 128)
    stream = body.get("stream") is True
    if stream and n > 1:
        raise invalid("'n' > 1 is not supported with 'stream': send one request per sample")
    max_tokens = _int(body, "max_tokens", DEFAULT_MAX_TOKENS, 0)
    context = settings.max_context_length
    if len(prompt) >= context:
        raise invalid(f"prompt is {len(prompt)} tokens, the context length is {context}")
    behavior = body.get("context_length_exceeded_behavior")
    if behavior not in (None, "error", "truncate"):
        raise invalid("'context_length_exceeded_behavior' must be 'error' or 'truncate'")
    if len(prompt) + max_tokens > context:
        if behavior != "truncate":
            raise invalid(
                f"prompt ({len(prompt)} tokens) + max_tokens ({max_tokens}) exceeds the context length "
                f"({context}); lower max_tokens"
            )
        max_tokens = context - len(prompt)
    logprobs_field = body.get("logprobs")
    if logprobs_field is None or isinstance(logprobs_field, bool):
        legacy_top = 0
    elif isinstance(logprobs_field, int) and 0 <= logprobs_field <= 5:
        legacy_top = logprobs_field
    else:
        raise invalid(f"'logprobs' must be a boolean or an integer between 0 and 5, got {logprobs_field!r}")
    top_logprobs = _int(body, "top_logprobs", legacy_top, 0, 5)
    echo_last = body.get("echo_last")
    if echo_last is not None:
        echo_count = min(_int(body, "echo_last", 0, 0), len(prompt))
    else:
        echo_count = len(prompt) if body.get("echo") is True else 0
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise invalid(f"'seed' must be an integer, got {seed!r}")
    cache_key = body.get("prompt_cache_key")
    if cache_key is not None and not isinstance(cache_key, str):
        raise invalid("'prompt_cache_key' must be a string")
    images = body.get("images")
    if images is not None and (not isinstance(images, list) or not all(isinstance(i, str) for i in images)):
        raise invalid("'images' must be a list of strings (data URLs)")
    params = SamplingParams(
        max_tokens=max_tokens,
        temperature=_float(body, "temperature", 1.0, 0.0, 2.0),
        top_p=_float(body, "top_p", 1.0, 0.0, 1.0),
        top_k=_int(body, "top_k", 0, 0, 100),
        stop=_stop(body.get("stop")),
        eos_probability=settings.eos_probability,
        min_tokens=_int(body, "min_tokens", 0, 0),
        ignore_eos=body.get("ignore_eos") is True,
        logprobs=bool(logprobs_field) or top_logprobs > 0,
        top_logprobs=top_logprobs,
        routing_matrix=body.get("include_routing_matrix") is True,
    )
    return CompletionRequest(
        model=model,
        deployment_id=deployment_id,
        prompt=prompt,
        n=n,
        stream=stream,
        echo_count=echo_count,
        seed=seed,
        raw_output=body.get("raw_output") is True,
        perf_metrics=body.get("perf_metrics_in_response") is True,
        prompt_cache_key=cache_key,
        params=params,
    )


def _prompt(value: Any, vocab: Vocabulary) -> list[int]:
    if isinstance(value, str):
        ids = vocab.encode(value)
        if not ids:
            raise invalid("'prompt' must not be empty")
        return ids
    if not isinstance(value, list) or not value:
        raise invalid("'prompt' is required: a non-empty list of token ids (or a string)")
    for token in value:
        if type(token) is not int or token < 0:
            raise invalid(f"'prompt' must contain only non-negative integer token ids, got {token!r}")
    return value


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(s, str) and s for s in value):
        raise invalid("'stop' must be a string or a list of non-empty strings")
    if len(value) > 4:
        raise invalid(f"'stop' accepts at most 4 sequences, got {len(value)}")
    return tuple(value)


def _format(value: float) -> str:
    return f"{value:.6f}"


class Job:
    """One choice of one request: its plan, the engine sequence and the replica serving it."""

    def __init__(self, replica: Replica, completion: Completion, echo_ids: list[int], echo_text: str) -> None:
        self.replica = replica
        self.completion = completion
        self.echo_ids = echo_ids
        self.echo_text = echo_text
        self.sequence: Sequence | None = None


class CompletionsHandler:
    """Serves completions for one emulator."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.vocab = Vocabulary.shipped()

    def _engine(self, replica: Replica) -> Engine:
        if replica.engine is None:
            replica.engine = Engine(lambda: self.emulator.settings, lambda: self.emulator.stats)
        engine: Engine = replica.engine
        return engine

    def _route(self, deployment: Deployment, cache_key: str | None) -> Replica:
        settings = self.emulator.settings
        now = time.monotonic()
        deployment.admit(now, settings)
        replicas = deployment.sync_replicas(now, settings)
        if not replicas:
            state = deployment.state(now)
            raise ApiError(425, f"deployment '{deployment.deployment_id}' is not serving (state {state})")
        for replica in replicas:
            replica.refresh(now)
        if settings.hotload_blocks_inference:
            replicas = [replica for replica in replicas if not replica.hotload.loading(now)]
            if not replicas:
                raise ApiError(425, f"deployment '{deployment.deployment_id}' is hotloading; retry shortly")
        if len(replicas) == 1:
            return replicas[0]
        if cache_key is not None:
            return replicas[hash(cache_key) % len(replicas)]
        deployment.round_robin = (deployment.round_robin + 1) % len(replicas)
        ordered = replicas[deployment.round_robin :] + replicas[: deployment.round_robin]
        return min(ordered, key=lambda replica: self._engine(replica).load)

    def _plan(self, request: CompletionRequest, replica: Replica, choice: int) -> Job:
        identity = replica.hotload.current
        params = request.params
        if params.temperature <= 0:
            seed = seed_for(0, identity, request.prompt, choice)
        elif request.seed is not None:
            seed = seed_for(request.seed, identity, request.prompt, choice)
        else:
            seed = self.emulator.sampling_rng.getrandbits(64)
        echo_ids = request.prompt[len(request.prompt) - request.echo_count :] if request.echo_count else []
        echo_text = "".join(self.vocab.text(token) for token in echo_ids)
        completion = generate(self.vocab, params, seed, text_offset=len(echo_text))
        if echo_ids and params.logprobs:
            full = request.echo_count == len(request.prompt)
            completion.rows[:0] = echo_rows(self.vocab, echo_ids, full, seed, params)
        return Job(replica, completion, echo_ids, echo_text)

    async def handle(self, request: web.Request, body: Any) -> web.StreamResponse:
        """Answer one completions request whose JSON ``body`` was already read."""
        emulator = self.emulator
        streaming = isinstance(body, dict) and body.get("stream") is True
        model_id = deployment_of_model(
            body.get("model") if isinstance(body, dict) else None, emulator.settings.account_id
        )
        rule = await emulator.apply_fault(request, "completions", model_id, streaming)
        parsed = parse_request(body, self.vocab, emulator)
        deployment = emulator.store.find(parsed.deployment_id)
        if deployment is None:
            raise ApiError(
                404, f"Model not found, inaccessible, and/or not deployed: {parsed.model!r}", "NOT_FOUND"
            )
        replica = self._route(deployment, parsed.prompt_cache_key)
        jobs = [self._plan(parsed, replica, choice) for choice in range(parsed.n)]
        blocks = prefix_hashes(parsed.prompt)
        engine = self._engine(replica)
        chunk_tokens = emulator.settings.stream_chunk_tokens
        stats = emulator.stats
        deployment.in_flight += 1
        finished = False
        try:
            for job in jobs:
                job.sequence = Sequence(
                    len(parsed.prompt), blocks, len(job.completion.token_ids), chunk_tokens
                )
                engine.submit(job.sequence)
                stats.completions_started += 1
            if parsed.stream:
                response = await self._stream(request, parsed, jobs[0], deployment, rule)
            else:
                response = await self._whole(request, parsed, jobs, deployment)
            finished = True
            return response
        except EngineClosed:
            raise ApiError(425, f"deployment '{deployment.deployment_id}' replica went away; retry") from None
        finally:
            deployment.in_flight -= 1
            deployment.restart_idle_clock(time.monotonic())
            for job in jobs:
                sequence = job.sequence
                if sequence is not None and not sequence.done:
                    engine.abort(sequence)
            if finished:
                stats.completions_finished += len(jobs)
            else:
                stats.completions_aborted += len(jobs)

    # -- metrics ------------------------------------------------------------------------------

    def metrics(self, job: Job, deployment: Deployment, prompt_tokens: int) -> dict[str, str]:
        """The server metrics (unprefixed names, values as text) of one choice."""
        sequence = job.sequence
        assert sequence is not None
        end = sequence.finished_at if sequence.finished_at is not None else asyncio.get_running_loop().time()
        return {
            "prefill-queue-duration": _format(sequence.queued_until - sequence.arrival),
            "generation-queue-duration": _format(0.0),
            "num-concurrent-requests": str(sequence.concurrent_at_arrival + 1),
            "server-time-to-first-token": _format(sequence.first_token_at - sequence.arrival),
            "cached-prompt-tokens": str(sequence.cached_tokens),
            "prompt-tokens": str(prompt_tokens),
            "server-processing-time": _format(end - sequence.arrival),
            "prefill-duration": _format(sequence.ready_at - sequence.queued_until),
            "generation-duration": _format(max(end - sequence.ready_at, 0.0)),
            "backend-host": job.replica.host,
            "deployment": deployment.name,
        }

    @staticmethod
    def usage(request: CompletionRequest, jobs: list[Job]) -> dict[str, Any]:
        """The ``usage`` object over all choices."""
        completion_tokens = sum(len(job.completion.token_ids) for job in jobs)
        sequence = jobs[0].sequence
        cached = sequence.cached_tokens if sequence is not None else 0
        return {
            "prompt_tokens": len(request.prompt),
            "completion_tokens": completion_tokens,
            "total_tokens": len(request.prompt) + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached},
        }

    @staticmethod
    def raw_output(request: CompletionRequest, job: Job) -> dict[str, Any]:
        """Prompt and completion token ids (the completion starts with the echoed prompt tokens)."""
        return {
            "prompt_token_ids": request.prompt,
            "completion_token_ids": job.echo_ids + job.completion.token_ids,
            "completion": job.echo_text + "".join(job.completion.pieces),
        }

    @staticmethod
    async def _wait(sequence: Sequence, engine: Engine, first_token: bool) -> None:
        """Until the sequence is done (or, with ``first_token``, has produced its first token)."""
        while not (sequence.done or (first_token and sequence.started)):
            if engine.closed and not sequence.started and sequence.ready_at == 0.0:
                raise EngineClosed()
            await sequence.wait()

    # -- non-streaming -------------------------------------------------------------------------

    async def _whole(
        self, request: web.Request, parsed: CompletionRequest, jobs: list[Job], deployment: Deployment
    ) -> web.StreamResponse:
        engine = self._engine(jobs[0].replica)
        for job in jobs:
            sequence = job.sequence
            assert sequence is not None
            await self._wait(sequence, engine, first_token=False)
        choices = []
        for index, job in enumerate(jobs):
            completion = job.completion
            choice: dict[str, Any] = {
                "index": index,
                "text": job.echo_text + "".join(completion.pieces),
                "logprobs": {"content": completion.rows} if parsed.params.logprobs else None,
                "finish_reason": completion.finish_reason,
            }
            if parsed.raw_output:
                choice["raw_output"] = self.raw_output(parsed, job)
            choices.append(choice)
        metrics = self.metrics(jobs[0], deployment, len(parsed.prompt))
        body: dict[str, Any] = {
            "id": f"cmpl-{os.urandom(16).hex()}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": parsed.model,
            "choices": choices,
            "usage": self.usage(parsed, jobs),
        }
        if parsed.perf_metrics:
            body["perf_metrics"] = metrics
        headers = {f"fireworks-{key}": value for key, value in metrics.items()}
        return json_response(body, headers=headers)

    # -- streaming -----------------------------------------------------------------------------

    async def _stream(
        self,
        request: web.Request,
        parsed: CompletionRequest,
        job: Job,
        deployment: Deployment,
        rule: FaultRule | None,
    ) -> web.StreamResponse:
        sequence = job.sequence
        assert sequence is not None
        engine = self._engine(job.replica)
        await self._wait(sequence, engine, first_token=True)
        metrics = self.metrics(job, deployment, len(parsed.prompt))
        headers = dict(SSE_HEADERS)
        for key in (
            "prompt-tokens",
            "cached-prompt-tokens",
            "prefill-queue-duration",
            "server-time-to-first-token",
        ):
            headers[f"fireworks-{key}"] = metrics[key]
        headers["fireworks-backend-host"] = job.replica.host
        response = _EventStreamResponse(headers=headers)
        await response.prepare(request)
        writer = _StreamWriter(request, response, parsed, job, rule, self)
        try:
            await writer.run(sequence, deployment)
        except ConnectionResetError:
            raise asyncio.CancelledError() from None
        return response


class _EventStreamResponse(web.StreamResponse):
    """An SSE answer whose headers leave together with the first chunk (one send, not two)."""

    _send_headers_immediately = False


class _StreamWriter:
    """Writes SSE chunks as tokens become visible, playing a stream fault if one was drawn."""

    def __init__(
        self,
        request: web.Request,
        response: web.StreamResponse,
        parsed: CompletionRequest,
        job: Job,
        rule: FaultRule | None,
        handler: CompletionsHandler,
    ) -> None:
        self.request = request
        self.response = response
        self.parsed = parsed
        self.job = job
        self.rule = rule
        self.handler = handler
        self.chunks = 0
        self.response_id = f"cmpl-{os.urandom(16).hex()}"
        self.created = int(time.time())

    def _chunk(self, text: str, rows: list[dict[str, Any]] | None, finish: str | None) -> dict[str, Any]:
        choice: dict[str, Any] = {
            "index": 0,
            "text": text,
            "logprobs": {"content": rows} if rows is not None else None,
            "finish_reason": finish,
        }
        return {
            "id": self.response_id,
            "object": "text_completion",
            "created": self.created,
            "model": self.parsed.model,
            "choices": [choice],
            "usage": None,
        }

    @staticmethod
    def _frame(payload: dict[str, Any]) -> bytes:
        return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"

    async def _fault_due(self, buffer: list[bytes], final: bool) -> bool:
        """Play the drawn stream fault if its moment came; True when the stream must end now."""
        rule = self.rule
        if rule is None or (self.chunks < rule.after_chunks and not final):
            return False
        self.rule = None
        self.handler.emulator.stats.completions_faulted += 1
        if rule.kind == "malformed_chunk":
            buffer.append(b'data: {"id": "' + self.response_id.encode() + b'", "choices": [\n\n')
            return False
        if rule.kind == "reset_mid_stream":
            if not buffer:
                buffer.append(b": keep-alive\n\n")
            await self._flush(buffer)
            transport = self.request.transport
            if transport is not None:
                transport.abort()
            raise asyncio.CancelledError()
        if rule.kind == "stream_error":
            error = {
                "error": {
                    "status_code": rule.status,
                    "code": rule.status,
                    "type": "upstream_error",
                    "message": rule.message,
                },
                "id": self.response_id,
            }
            buffer.append(b"event: error\ndata: " + json.dumps(error).encode() + b"\n\n")
        elif rule.kind == "finish_error":
            chunk = self._chunk("", None, "error")
            chunk["choices"][0]["error"] = {"message": rule.message}
            buffer.append(self._frame(chunk) + b"data: [DONE]\n\n")
        await self._flush(buffer)
        await self.response.write_eof()
        return True

    async def _flush(self, buffer: list[bytes]) -> None:
        if buffer:
            await self.response.write(b"".join(buffer))
            buffer.clear()

    async def run(self, sequence: Sequence, deployment: Deployment) -> None:
        """Stream until the final chunk and ``[DONE]`` (or until the fault ends it)."""
        completion = self.job.completion
        params = self.parsed.params
        size = sequence.notify_every
        echoed = len(self.job.echo_ids) if params.logprobs else 0
        sent = 0
        prefix = self.job.echo_text
        buffer: list[bytes] = []
        while True:
            visible, done = sequence.visible, sequence.done
            while visible - sent > size or (not done and visible - sent == size):
                if await self._fault_due(buffer, final=False):
                    return
                end = sent + size
                rows = (
                    completion.rows[(echoed + sent if sent else 0) : echoed + end]
                    if params.logprobs
                    else None
                )
                buffer.append(
                    self._frame(self._chunk(prefix + "".join(completion.pieces[sent:end]), rows, None))
                )
                prefix = ""
                self.chunks += 1
                sent = end
            if done:
                break
            await self._flush(buffer)
            await sequence.wait()
        if await self._fault_due(buffer, final=True):
            return
        rows = completion.rows[(echoed + sent if sent else 0) :] if params.logprobs else None
        final = self._chunk(prefix + "".join(completion.pieces[sent:]), rows, completion.finish_reason)
        if self.parsed.raw_output:
            final["choices"][0]["raw_output"] = self.handler.raw_output(self.parsed, self.job)
        final["usage"] = self.handler.usage(self.parsed, [self.job])
        if self.parsed.perf_metrics:
            final["perf_metrics"] = self.handler.metrics(self.job, deployment, len(self.parsed.prompt))
        buffer.append(self._frame(final) + b"data: [DONE]\n\n")
        await self.response.write_eof(b"".join(buffer))
