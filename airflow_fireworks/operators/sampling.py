"""``FireworksSampleOperator``: sample completions with token ids (and logprobs) from a deployment.

Prompts come from a (templated) list, an upstream task's XCom, or a JSON Lines file at an
``ObjectStoragePath``. With ``output_path`` every completion is written there as one JSON Lines
record (``airflow_fireworks.sampling.output``), grouped by prompt so GRPO groups can be rebuilt,
with a manifest beside it; only a small summary goes to XCom. Without ``output_path`` the records
go to XCom, and a prompt set too large for that is refused before anything is sent.

Large prompt sets are split with dynamic task mapping, one shard per mapped task (prompt ``i``
belongs to shard ``i % num_shards``)::

    FireworksSampleOperator.partial(
        task_id="sample", deployment_id="grpo-qwen3", tokenizer="Qwen/Qwen3-8B",
        prompts_path="s3://aws_default@bucket/prompts.jsonl", n=8, num_shards=4,
        output_path="s3://aws_default@bucket/rollouts/{{ run_id }}",
    ).expand(shard_index=[0, 1, 2, 3])

A retried task resumes: prompts whose whole group of completions is already written are not
sampled again, and nothing is duplicated.

Run after run on the same deployment: before the first prompt one GET says whether a replica
serves. A deployment the platform scaled to zero for idleness is woken and its cold start waited
for (in the worker, or in the triggerer with ``deferrable=True``); one that is gone or scaled to
zero on purpose (``maxReplicaCount`` 0) fails the task at once, naming the state and the fix. With
``base_model`` the snapshot identity the replicas serve is read before and after sampling and kept
in the manifest as on-policy evidence (``served_identity``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, ObjectStoragePath
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from airflow_fireworks.api import (
    DeploymentTarget,
    FireworksError,
    FireworksValidationError,
    validate_base_model,
    validate_deployment_id,
)
from airflow_fireworks.api.validation import check_bool, check_int, check_number, is_inference_model
from airflow_fireworks.hooks.fireworks import FireworksHook
from airflow_fireworks.links import FireworksDeploymentLink
from airflow_fireworks.operators._common import (
    DEFERRAL_GRACE_S,
    airflow_error,
    default_deferrable,
    failing_on_bad_input,
    serving_now,
    to_seconds,
    validate_event,
)
from airflow_fireworks.operators._prompts import PromptSet, ShardPrompts, check_prompt_list
from airflow_fireworks.operators._sample_store import ShardStore, Tally
from airflow_fireworks.sampling import (
    AdaptiveConcurrencyController,
    ConcurrencyController,
    DeploymentNotServingError,
    DeploymentSampler,
    FixedConcurrencyController,
    PromptResult,
    load_tokenizer,
    sample_prompts,
)
from airflow_fireworks.sampling.output import result_records
from airflow_fireworks.triggers.deployment import FireworksDeploymentTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_fireworks.sampling import ServerMetrics

log = logging.getLogger(__name__)

MANIFEST_FORMAT = "airflow-fireworks/sample-shard/v1"
#: Keys of the manifest that are also the task's XCom summary (plus ``reused``).
SUMMARY_KEYS = (
    "model", "tokenizer", "shard_index", "num_shards",
    "num_prompts", "num_prompts_sampled", "num_prompts_resumed", "num_prompts_failed", "num_prompts_skipped",
    "num_completions", "prompt_tokens", "completion_tokens", "finish_reasons",
    "throughput", "controller", "served_identity", "completions_uri", "errors_uri", "manifest_uri",
)  # fmt: skip
#: Error summaries kept in the manifest (every error record is in errors.jsonl).
MANIFEST_ERRORS = 100
#: The timeline keeps at most this many points: its interval doubles when it would grow beyond.
TIMELINE_MAX_POINTS = 600
TIMELINE_FIRST_INTERVAL_S = 0.5
_MAX_STOP = 4
_MAX_N = 128
_PENDING: Any = object()


# -- parameter checks ---------------------------------------------------------------------------


def _is_static(value: Any) -> bool:
    """True when ``value`` is final at parse time (no Jinja template, no XComArg)."""
    if value is None or isinstance(value, bool | int | float):
        return True
    if isinstance(value, str | ObjectStoragePath):
        text = str(value)
        return "{{" not in text and "{%" not in text
    if isinstance(value, Mapping):
        return all(_is_static(v) for v in value.values())
    if isinstance(value, list | tuple):
        return all(_is_static(v) for v in value)
    return False


def _model(value: Any) -> str:
    text = value.strip() if isinstance(value, str) else ""
    if not is_inference_model(text):
        raise FireworksValidationError(
            "model",
            f"{value!r} is not an inference model name; use 'accounts/<account>/deployments/<deployment>' "
            "(or pass deployment_id and let the account be resolved)",
        )
    return text


def _named_deployment(model: str) -> tuple[str, str] | None:
    """``(account, deployment id)`` of an ``accounts/<a>/deployments/<id>`` model name; None for
    the ``<model>#<deployment>`` form."""
    parts = model.split("/")
    if "#" in model or len(parts) != 4 or parts[0] != "accounts" or parts[2] != "deployments":
        return None
    return parts[1], parts[3]


def _served_identity(seen: Sequence[list[str | None]]) -> dict[str, Any] | None:
    """``{"start", "end", "changed"}`` from the identities the replicas served, as read before and
    after sampling (earliest first); None when they were not read. A change of replica count
    serving the same identity is no change; a replica serving anything else is."""
    if not seen:
        return None
    start = seen[0]
    return {"start": start, "end": seen[-1], "changed": any(set(ids) != set(start) for ids in seen)}


def _stop(value: Any) -> str | list[str] | list[int] | None:
    if value is None or (isinstance(value, str) and value):
        return value
    if (
        isinstance(value, list | tuple)
        and 0 < len(value) <= _MAX_STOP
        and (all(isinstance(v, str) and v for v in value) or all(type(v) is int and v >= 0 for v in value))
    ):
        return list(value)
    raise FireworksValidationError(
        "stop",
        f"must be a string or a list of at most {_MAX_STOP} non-empty strings (or token ids), got {value!r}",
    )


def _storage_path(value: Any, name: str) -> ObjectStoragePath:
    """An ``ObjectStoragePath`` from a URI, an absolute local path, or an ``ObjectStoragePath``."""
    if isinstance(value, ObjectStoragePath):
        path = value
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        if "://" not in text:
            if not text.startswith("/"):
                raise FireworksValidationError(
                    name,
                    f"{value!r} is a relative path; use a URI such as 'file:///data/x' or 's3://bucket/x'",
                )
            text = "file://" + text
        path = ObjectStoragePath(text)
    else:
        raise FireworksValidationError(
            name, f"must be an ObjectStoragePath or a URI such as 'file:///data/x', got {value!r}"
        )
    if not path.protocol:
        return ObjectStoragePath("file://" + path.path)
    return path


def _tokenizer_name(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise FireworksValidationError(name, "must be a Hugging Face model id or a local tokenizer directory")
    return value.strip()


def _concurrency(value: Any) -> dict[str, Any]:
    """``{"mode": "adaptive", **params}`` or ``{"mode": "fixed", "max_concurrency": n}``."""
    if value == "adaptive":
        return {"mode": "adaptive"}
    value = _number(value)  # a fixed window rendered from a template, e.g. "16"
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise FireworksValidationError("concurrency", f"a fixed concurrency must be >= 1, got {value}")
        return {"mode": "fixed", "max_concurrency": value}
    if isinstance(value, Mapping):
        value = {name: _number(param) for name, param in value.items()}
        known = [
            name
            for name, param in inspect.signature(AdaptiveConcurrencyController).parameters.items()
            if param.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        ]
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise FireworksValidationError(
                "concurrency", f"unknown AdaptiveConcurrencyController parameter(s) {unknown}; known: {known}"
            )
        try:
            AdaptiveConcurrencyController(**value)
        except FireworksValidationError as err:
            raise FireworksValidationError("concurrency", str(err)) from None
        return {"mode": "adaptive", **value}
    raise FireworksValidationError(
        "concurrency",
        f"must be 'adaptive', an integer (fixed window) or a dict of AdaptiveConcurrencyController "
        f"parameters, got {value!r}",
    )


def _number(value: Any) -> Any:
    """A rendered template's numeric string as a number (``"56"`` -> 56, ``"0.5"`` -> 0.5)."""
    if not isinstance(value, str):
        return value
    try:
        return int(value)
    except ValueError:
        try:
            return float(value)
        except ValueError:
            return value


def _make_controller(spec: Mapping[str, Any]) -> ConcurrencyController:
    params = {k: v for k, v in spec.items() if k != "mode"}
    if spec["mode"] == "fixed":
        return FixedConcurrencyController(params["max_concurrency"])
    return AdaptiveConcurrencyController(**params)


# -- one attempt's sampling ---------------------------------------------------------------------


class _CountingController:
    """Delegates to a concurrency controller and counts the requests in flight (for the timeline)."""

    def __init__(self, inner: ConcurrencyController) -> None:
        self.inner = inner
        self.in_flight = 0

    @property
    def window_size(self) -> int:
        return self.inner.window_size

    async def acquire(self) -> None:
        await self.inner.acquire()
        self.in_flight += 1

    def release(self, metrics: ServerMetrics | None = None) -> None:
        self.in_flight -= 1
        self.inner.release(metrics)

    def step_completed(self) -> dict[str, float]:
        return self.inner.step_completed()

    def note_retry_exhausted(self, metrics: ServerMetrics | None) -> None:
        note = getattr(self.inner, "note_retry_exhausted", None)
        if note is not None:
            note(metrics)


@dataclass
class _Attempt:
    """What this attempt sampled, a timeline of throughput and concurrency, and the snapshot
    identities the replicas served (``served``: per read, earliest first, earlier attempts' too)."""

    n: int
    controller: _CountingController
    started: float = field(default_factory=time.monotonic)
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    finished: float | None = None
    prompts_sampled: int = 0
    prompts_failed: int = 0
    prompts_skipped: int = 0
    tally: Tally = field(init=False)
    timeline: list[dict[str, float]] = field(default_factory=list)
    timeline_interval_s: float = TIMELINE_FIRST_INTERVAL_S
    served: list[list[str | None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.tally = Tally(self.n)

    def add(self, result: PromptResult) -> None:
        self.prompts_sampled += 1
        if result.error is not None:
            self.prompts_failed += 1
        elif not result.completions:
            self.prompts_skipped += 1
        else:
            completions = result.completions
            self.tally.add_group(
                [c.prompt_len for c in completions],
                [c.completion_len for c in completions],
                [c.finish_reason for c in completions],
            )

    @property
    def elapsed_s(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    def sample_timeline(self) -> None:
        """Append a point; past ``TIMELINE_MAX_POINTS`` keep every other one and sample half as often."""
        self.timeline.append(
            {
                "t_s": round(self.elapsed_s, 3),
                "completions": self.tally.completions,
                "completion_tokens": self.tally.completion_tokens,
                "tokens_per_s": 0.0,
                "window": self.controller.window_size,
                "in_flight": self.controller.in_flight,
            }
        )
        if len(self.timeline) > TIMELINE_MAX_POINTS:
            self.timeline = self.timeline[1::2]
            self.timeline_interval_s *= 2
            start = 0
        else:
            start = len(self.timeline) - 1
        for position in range(start, len(self.timeline)):
            point = self.timeline[position]
            before = self.timeline[position - 1] if position else {"t_s": 0.0, "completion_tokens": 0}
            span = point["t_s"] - before["t_s"]
            point["tokens_per_s"] = (
                round((point["completion_tokens"] - before["completion_tokens"]) / span, 1)
                if span > 0
                else 0.0
            )

    async def run_timeline(self) -> None:
        while True:
            await asyncio.sleep(self.timeline_interval_s)
            self.sample_timeline()

    def throughput(self) -> dict[str, float]:
        seconds = max(self.elapsed_s, 1e-9)
        return {
            "sampling_s": round(self.elapsed_s, 3),
            "prompts_per_s": round(self.prompts_sampled / seconds, 3),
            "completions_per_s": round(self.tally.completions / seconds, 3),
            "completion_tokens_per_s": round(self.tally.completion_tokens / seconds, 1),
        }


# -- the operator -------------------------------------------------------------------------------


class FireworksSampleOperator(BaseOperator):
    """Sample ``n`` completions per prompt from a Fireworks deployment, with token ids and logprobs.

    :param fireworks_conn_id: the ``fireworks`` connection (API key, URLs).
    :param deployment_id: the deployment to sample from (its account is resolved through the
        connection); or give ``model`` instead.
    :param model: the inference model name, ``accounts/<account>/deployments/<deployment>``.
    :param tokenizer: Hugging Face model id or local directory of the tokenizer that renders chat
        prompts (loaded once per process); not needed when every prompt has ``prompt_token_ids``.
    :param prompts: a list of prompts, each a string (one user message), a list of chat messages,
        ``{"messages": [...], "metadata": {...}}`` or ``{"prompt_token_ids": [...], "metadata": ...}``;
        may be an upstream task's output (XCom, never Jinja-rendered). Strings in a list written in
        the DAG are rendered like any templated field: wrap it in ``airflow.sdk.literal(...)`` when
        prompts contain ``{{``.
    :param prompts_path: a JSON Lines file of the same records (an ``ObjectStoragePath`` or URI).
    :param shard_index: this task's shard; prompt ``i`` belongs to shard ``i % num_shards``.
    :param num_shards: how many shards the prompt set is split into.
    :param n: completions per prompt (a GRPO group), 1-128.
    :param max_tokens: the most tokens generated per completion (0 only with ``echo``).
    :param temperature: 0-2.
    :param top_p: (0, 1]; None for the server default (1.0).
    :param top_k: 0-100; None for the server default (0, disabled).
    :param stop: a stop string or up to 4 (token ids are decoded with the tokenizer).
    :param seed: sample ``i`` of each prompt uses ``seed + i`` (reproducible groups).
    :param logprobs: return each generated token's logprob (``inference_logprobs``).
    :param top_logprobs: 0-5 alternatives per position (needs ``logprobs``).
    :param echo: also return the prompt's logprobs (training-aligned).
    :param max_seq_len: skip prompts of this many tokens or more, and drop completions whose prompt
        plus completion exceeds it.
    :param concurrency: ``"adaptive"`` (the window follows the server's prefill queue), an integer
        (a fixed number of requests in flight) or a dict of ``AdaptiveConcurrencyController``
        parameters, e.g. ``{"initial_window": 16, "max_window": 128}`` (templated: start a step
        from the window the previous one ended with, its summary's ``controller.final_window``).
    :param output_path: where completions are written (``ObjectStoragePath`` or URI; ``file://``
        works everywhere, other schemes through fsspec): ``shard-00000k/completions.jsonl``,
        ``errors.jsonl`` and ``manifest.json``. Without it the records go to XCom. Tasks sharing
        an ``output_path`` must differ in ``shard_index`` (or put ``{{ ti.map_index }}`` in the path).
    :param overwrite: replace results of *different* inputs found under ``output_path`` (by default
        they are refused); results of the same inputs are always resumed or reused.
    :param max_xcom_completions: without ``output_path``, refuse (before sampling) when prompts x
        ``n`` exceeds this.
    :param max_failed_prompt_fraction: fail the task, after writing everything, when more than
        this fraction of the shard's prompts failed (0.0: any failure); a retry samples only the
        failed prompts.
    :param progress_interval_s: seconds between progress log lines.
    :param not_ready_retries: how often a request answered 404/425 (deployment not serving) is
        retried, every ``not_ready_interval_s`` seconds; past that the task stops at once (every
        other prompt would wait the same) and fails, keeping what was written for a retry.
    :param not_ready_interval_s: seconds between those retries.
    :param base_model: the deployment's base model, e.g. ``accounts/fireworks/models/qwen3-8b``
        (templated). Given, the snapshot identity each replica serves is read from the hotload
        status before sampling starts and after it ends, and recorded in the manifest and the XCom
        summary as ``served_identity``: ``{"start": [...], "end": [...], "changed": bool}`` (one
        entry per replica, None for base weights; a resumed shard's ``start`` is its first
        attempt's). Without it ``served_identity`` is null.
    :param require_stable_identity: fail the task, without retry, when the served identity changed
        while sampling (needs ``base_model``); the output and manifest are written first, and the
        result is pushed to XCom all the same.
    :param deferrable: wait for a deployment waking from zero replicas in the triggerer instead of
        the worker.
    :param wake_timeout: seconds (or ``timedelta``) a wake-up from zero replicas (the cold start)
        may take.
    :param poll_interval: seconds (or ``timedelta``) between polls while it wakes.
    """

    template_fields: Sequence[str] = (
        "deployment_id", "model", "tokenizer", "prompts", "prompts_path", "output_path",
        "shard_index", "num_shards", "n", "max_tokens", "temperature", "top_p", "top_k", "stop", "seed",
        "max_seq_len", "concurrency", "base_model",
    )  # fmt: skip
    template_fields_renderers = {"prompts": "json"}
    operator_extra_links = (FireworksDeploymentLink(),)
    ui_color = "#ece4ff"

    def __init__(
        self,
        *,
        fireworks_conn_id: str = FireworksHook.default_conn_name,
        deployment_id: str | None = None,
        model: str | None = None,
        tokenizer: str | None = None,
        prompts: Sequence[Any] | None = None,
        prompts_path: str | ObjectStoragePath | None = None,
        shard_index: int = 0,
        num_shards: int = 1,
        n: int = 1,
        max_tokens: int = 1024,
        temperature: float = 1.0,
        top_p: float | None = None,
        top_k: int | None = None,
        stop: str | Sequence[str] | Sequence[int] | None = None,
        seed: int | None = None,
        logprobs: bool = False,
        top_logprobs: int | None = None,
        echo: bool = False,
        max_seq_len: int | None = None,
        concurrency: str | int | Mapping[str, Any] = "adaptive",
        output_path: str | ObjectStoragePath | None = None,
        overwrite: bool = False,
        max_xcom_completions: int = 1000,
        max_failed_prompt_fraction: float = 0.0,
        progress_interval_s: float = 10.0,
        not_ready_retries: int = 10,
        not_ready_interval_s: float = 5.0,
        base_model: str | None = None,
        require_stable_identity: bool = False,
        deferrable: bool = default_deferrable(),
        wake_timeout: float | timedelta = 900.0,
        poll_interval: float | timedelta = 15.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.fireworks_conn_id = fireworks_conn_id
        self.deployment_id = deployment_id
        self.model = model
        self.tokenizer = tokenizer
        self.prompts = prompts
        self.prompts_path = prompts_path
        self.shard_index = shard_index
        self.num_shards = num_shards
        self.n = n
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.top_k = top_k
        self.stop = stop
        self.seed = seed
        self.logprobs = logprobs
        self.top_logprobs = top_logprobs
        self.echo = echo
        self.max_seq_len = max_seq_len
        self.concurrency = concurrency
        self.output_path = output_path
        self.overwrite = overwrite
        self.max_xcom_completions = max_xcom_completions
        self.max_failed_prompt_fraction = max_failed_prompt_fraction
        self.progress_interval_s = progress_interval_s
        self.not_ready_retries = not_ready_retries
        self.not_ready_interval_s = not_ready_interval_s
        self.base_model = base_model
        self.require_stable_identity = require_stable_identity
        self.deferrable = check_bool(deferrable, "deferrable")
        self.wake_timeout = to_seconds(wake_timeout, "wake_timeout")
        self.poll_interval = to_seconds(poll_interval, "poll_interval")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[Any] | None = None
        self._killed = False
        self._settings(strict=False)
        if self.prompts is not None and _is_static(self.prompts):
            PromptSet.from_source(self.prompts, None).validate()

    @cached_property
    def hook(self) -> FireworksHook:
        """The hook of ``fireworks_conn_id``."""
        return FireworksHook(fireworks_conn_id=self.fireworks_conn_id)

    # -- validation ----------------------------------------------------------------------------

    def _settings(self, *, strict: bool) -> dict[str, Any]:
        """Every parameter checked and normalised. At parse time (``strict=False``) values still
        to be rendered are skipped; at run time everything is checked before any request."""

        def get(name: str, check: Callable[[Any, str], Any], *, optional: bool = False) -> Any:
            value = getattr(self, name)
            if not strict and not _is_static(value):
                return _PENDING
            if optional and value is None:
                return None
            return check(value, name)

        if not isinstance(self.fireworks_conn_id, str) or not self.fireworks_conn_id:
            raise FireworksValidationError("fireworks_conn_id", "must be a connection id")
        if (self.deployment_id is None) == (self.model is None):
            raise FireworksValidationError(
                "deployment_id", "give exactly one of deployment_id or model ('accounts/<a>/deployments/<d>')"
            )
        if (self.prompts is None) == (self.prompts_path is None):
            raise FireworksValidationError(
                "prompts",
                "give exactly one prompt source: prompts (a list or an XCom) or prompts_path (JSONL)",
            )
        # Numbers may be numeric strings: that is what a rendered template gives.
        s: dict[str, Any] = {
            "deployment_id": get("deployment_id", lambda v, k: validate_deployment_id(v), optional=True),
            "model": get("model", lambda v, k: _model(v), optional=True),
            "tokenizer": get("tokenizer", _tokenizer_name),
            "prompts_path": get("prompts_path", _storage_path, optional=True),
            "output_path": get("output_path", _storage_path, optional=True),
            "shard_index": get("shard_index", lambda v, k: check_int(v, k, 0, parse_str=True)),
            "num_shards": get("num_shards", lambda v, k: check_int(v, k, 1, parse_str=True)),
            "n": get("n", lambda v, k: check_int(v, k, 1, _MAX_N, parse_str=True)),
            "max_tokens": get("max_tokens", lambda v, k: check_int(v, k, 0, parse_str=True)),
            "temperature": get("temperature", lambda v, k: check_number(v, k, 0.0, 2.0, parse_str=True)),
            "top_p": get(
                "top_p",
                lambda v, k: check_number(v, k, 0.0, 1.0, low_open=True, parse_str=True),
                optional=True,
            ),
            "top_k": get("top_k", lambda v, k: check_int(v, k, 0, 100, parse_str=True), optional=True),
            "stop": get("stop", lambda v, k: _stop(v)),
            "seed": get("seed", lambda v, k: check_int(v, k, 0, parse_str=True), optional=True),
            "logprobs": check_bool(self.logprobs, "logprobs"),
            "top_logprobs": None
            if self.top_logprobs is None
            else check_int(self.top_logprobs, "top_logprobs", 0, 5, parse_str=True),
            "echo": check_bool(self.echo, "echo"),
            "max_seq_len": get("max_seq_len", lambda v, k: check_int(v, k, 1, parse_str=True), optional=True),
            "concurrency": get("concurrency", lambda v, k: _concurrency(v)),
            "overwrite": check_bool(self.overwrite, "overwrite"),
            "max_xcom_completions": check_int(
                self.max_xcom_completions, "max_xcom_completions", 0, parse_str=True
            ),
            "max_failed_prompt_fraction": check_number(
                self.max_failed_prompt_fraction, "max_failed_prompt_fraction", 0, 1, parse_str=True
            ),
            "progress_interval_s": check_number(
                self.progress_interval_s, "progress_interval_s", 0, math.inf, low_open=True, parse_str=True
            ),
            "not_ready_retries": check_int(self.not_ready_retries, "not_ready_retries", 0, parse_str=True),
            "not_ready_interval_s": check_number(
                self.not_ready_interval_s, "not_ready_interval_s", 0, math.inf, parse_str=True
            ),
            "base_model": get("base_model", lambda v, k: validate_base_model(v, k), optional=True),
            "require_stable_identity": check_bool(self.require_stable_identity, "require_stable_identity"),
        }
        if s["require_stable_identity"] and s["base_model"] is None:
            raise FireworksValidationError(
                "require_stable_identity",
                "needs base_model (the deployment's base model, e.g. 'accounts/fireworks/models/qwen3-8b'): "
                "the served identity is read from the deployment's hotload status",
            )
        if (
            s["base_model"] is not None
            and s["model"] not in (None, _PENDING)
            and _named_deployment(s["model"]) is None
        ):
            raise FireworksValidationError(
                "base_model",
                "reading the served identity needs the deployment: give deployment_id, or model as "
                "'accounts/<account>/deployments/<deployment>'",
            )
        if s["top_logprobs"] and not s["logprobs"]:
            raise FireworksValidationError("top_logprobs", "needs logprobs=True")
        if s["max_tokens"] == 0 and not s["echo"]:
            raise FireworksValidationError(
                "max_tokens", "must be >= 1 (0 only makes sense with echo=True, to score prompts)"
            )
        if _PENDING not in (s["shard_index"], s["num_shards"]) and s["shard_index"] >= s["num_shards"]:
            raise FireworksValidationError(
                "shard_index", f"must be in [0, num_shards={s['num_shards']}), got {s['shard_index']}"
            )
        if self.prompts is not None and (strict or _is_static(self.prompts)):
            check_prompt_list(self.prompts)
        return s

    # -- execution -----------------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:
        """Sample the shard; return its summary (counts, tokens, finish reasons, throughput,
        controller summary, URIs), plus the records themselves when there is no ``output_path``."""
        with failing_on_bad_input():  # no retry renders a different value
            settings = self._settings(strict=True)
            prompt_set = PromptSet.from_source(self.prompts, settings["prompts_path"])
            prompt_set.validate()
            if (
                prompt_set.needs_tokenizer or (settings["stop"] and not isinstance(settings["stop"][0], str))
            ) and settings["tokenizer"] is None:
                raise FireworksValidationError(
                    "tokenizer",
                    "chat prompts (and integer stop ids) need a tokenizer: give a Hugging Face model "
                    "id or a local directory, or send prompt_token_ids",
                )
            tokenizer = self._load_tokenizer(settings["tokenizer"])
            shard = prompt_set.shard(settings["shard_index"], settings["num_shards"])
            n = settings["n"]
            if settings["output_path"] is None and len(shard) * n > settings["max_xcom_completions"]:
                raise FireworksValidationError(
                    "max_xcom_completions",
                    f"{len(shard)} prompts x n={n} = {len(shard) * n} completions exceed "
                    f"max_xcom_completions="
                    f"{settings['max_xcom_completions']} for XCom; set output_path (e.g. "
                    "'file:///data/rollouts/{{ run_id }}') to write them as JSON Lines, or raise "
                    "max_xcom_completions",
                )
        if not len(shard):
            log.warning(
                "Shard %d of %d has no prompt (%d prompts in all)",
                settings["shard_index"],
                settings["num_shards"],
                prompt_set.total,
            )
        params = self.hook.connection_params
        try:  # one control-plane session for the checks around sampling, closed at the end
            model = settings["model"] or self.hook.inference_model(settings["deployment_id"])
            inputs = {
                "model": model,
                "tokenizer": settings["tokenizer"],
                "shard_index": settings["shard_index"],
                "num_shards": settings["num_shards"],
                "num_prompts_total": prompt_set.total,
                "prompts_sha256": prompt_set.digest,
                "sampling": self._sampling_params(settings),
            }
            ti = context.get("ti")
            attempt = int(getattr(ti, "try_number", None) or 1)
            log.info(
                "Sampling %d prompts x n=%d from %s (shard %d of %d, attempt %d)",
                len(shard),
                n,
                model,
                settings["shard_index"],
                settings["num_shards"],
                attempt,
            )
            controller = _CountingController(_make_controller(settings["concurrency"]))
            sampler = DeploymentSampler(
                params.inference_url or params.base_url,
                model,
                params.api_key,
                tokenizer,
                controller,
                additional_headers=dict(params.additional_headers),
                verify_ssl=params.verify_ssl,
                not_ready_retries=settings["not_ready_retries"],
                not_ready_interval_s=settings["not_ready_interval_s"],
            )
            run = _Attempt(n=n, controller=controller)
            if settings["output_path"] is None:
                result = self._sample_to_xcom(settings, inputs, shard, sampler, run)
            else:
                result = self._sample_to_store(settings, inputs, shard, sampler, run, prompt_set, attempt)
        finally:
            self.hook.close()
        self._check_served_identity(context, result)
        return result

    def execute_after_wake(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Resume after a deferred wake-up from zero replicas: sample as ``execute`` does (it finds
        a replica serving). After an error event ``execute`` looks again and fails naming the
        state (gone, failed, scaled to zero on purpose)."""
        checked = validate_event(event, ("deployment",))
        if checked["status"] == "timeout":
            raise AirflowException(
                f"The deployment did not wake within wake_timeout={self.wake_timeout:g}s: "
                f"{checked['message']}"
            )
        log.info("%s", checked["message"])
        return self.execute(context)

    @staticmethod
    def _load_tokenizer(name: str | None) -> Any:
        if name is None:
            return None
        try:
            return load_tokenizer(name)
        except OSError as err:
            raise FireworksValidationError(
                "tokenizer",
                f"cannot load {name!r} ({err}); give a local directory or a reachable Hub model id",
            ) from None

    @staticmethod
    def _sampling_params(settings: Mapping[str, Any]) -> dict[str, Any]:
        names = (
            "n",
            "max_tokens",
            "temperature",
            "top_p",
            "top_k",
            "stop",
            "seed",
            "logprobs",
            "top_logprobs",
            "echo",
            "max_seq_len",
        )
        return {name: settings[name] for name in names}

    def _sample_to_xcom(
        self,
        settings: dict[str, Any],
        inputs: dict[str, Any],
        shard: ShardPrompts,
        sampler: DeploymentSampler,
        run: _Attempt,
    ) -> dict[str, Any]:
        records: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []

        async def collect(result: PromptResult) -> None:
            (errors if result.error is not None else records).extend(result_records(result))

        controller = self._sample(sampler, run, settings, shard, frozenset(), collect, "nothing is kept")
        records.sort(key=lambda r: (r["prompt_index"], r["sample_index"]))
        errors.sort(key=lambda r: r["prompt_index"])
        summary = self._summary_fields(
            inputs,
            num_prompts=len(shard),
            run=run,
            resumed=0,
            failed=run.prompts_failed,
            skipped=run.prompts_skipped,
            tally=run.tally,
            controller=controller,
            uris=(None, None, None),
        )
        self._check_failures(
            summary,
            [e["error"] | {"prompt_index": e["prompt_index"]} for e in errors[:1]],
            where="no XCom is pushed; a retry samples every prompt again",
        )
        return {**summary, "reused": False, "completions": records, "errors": errors}

    def _sample_to_store(
        self,
        settings: dict[str, Any],
        inputs: dict[str, Any],
        shard: ShardPrompts,
        sampler: DeploymentSampler,
        run: _Attempt,
        prompt_set: PromptSet,
        attempt: int,
    ) -> dict[str, Any]:
        store = ShardStore(settings["output_path"], settings["shard_index"])
        previous = store.prepare(inputs, overwrite=settings["overwrite"])
        if previous is not None:
            if self._failed_fraction(previous) <= settings["max_failed_prompt_fraction"]:
                store.remove_scratch()
                log.info(
                    "%s already holds the complete results of these inputs; returning their summary "
                    "without sampling",
                    store.directory,
                )
                # .get: a manifest written before a key was added lacks it
                summary = {k: previous.get(k) for k in SUMMARY_KEYS}
                return {**summary, "num_prompts_sampled": 0, "reused": True}
            log.info(
                "%s holds %d failed prompts from an earlier attempt; sampling them again",
                store.directory,
                previous["num_prompts_failed"],
            )
            store.reopen(previous)
        n = settings["n"]
        before = store.scan(n)
        done = before.done
        if done:
            log.info(
                "Resuming: %d of %d prompts already have their complete group in %s",
                len(done),
                len(shard),
                store.directory,
            )
        if settings["base_model"] is not None:
            run.served = store.served_identities()  # what earlier attempts sampled from
        writer = store.open_part(attempt)

        async def write(result: PromptResult) -> None:
            await asyncio.to_thread(writer.write, result)

        try:
            controller = self._sample(
                sampler,
                run,
                settings,
                shard,
                done,
                write,
                f"what was written to {store.directory} is kept for a retry",
                remember=store.remember_served_identities,
            )
        finally:
            writer.close()
        consolidating = time.monotonic()
        contents = store.scan(n, clean={writer.path.name})
        store.consolidate(contents)
        skipped = [i for i in shard.indices if i not in contents.groups and i not in contents.errors]
        manifest = self._summary_fields(
            inputs,
            num_prompts=len(shard),
            run=run,
            resumed=len(done),
            failed=len(contents.errors),
            skipped=len(skipped),
            tally=contents.tally(),
            controller=controller,
            uris=(str(store.completions_path), str(store.errors_path), str(store.manifest_path)),
        )
        error_list = [{"prompt_index": i, **contents.errors[i]["error"]} for i in sorted(contents.errors)]
        manifest.update(
            {
                "format": MANIFEST_FORMAT,
                "inputs": inputs,
                "prompts_source": prompt_set.source,
                "sampling": inputs["sampling"],
                "concurrency": settings["concurrency"],
                "completions_dropped_by_max_seq_len": contents.tally().dropped_by_max_seq_len,
                "skipped_prompt_indices": skipped,
                "errors_by_kind": dict(Counter(_error_kind(e) for e in error_list)),
                "errors": [_error_summary(e) for e in error_list[:MANIFEST_ERRORS]],
                "timing": {
                    "started_at": run.started_at,
                    "finished_at": datetime.now(UTC).isoformat(),
                    "sampling_s": round(run.elapsed_s, 3),
                    "consolidation_s": round(time.monotonic() - consolidating, 3),
                },
                "timeline": run.timeline,
                "attempts": [
                    *(previous or {}).get("attempts", []),
                    {
                        "try_number": attempt,
                        "prompts_sampled": run.prompts_sampled,
                        "prompts_failed": run.prompts_failed,
                        "prompts_resumed": len(done),
                        "sampling_s": round(run.elapsed_s, 3),
                    },
                ],
            }
        )
        store.finish(manifest)
        log.info(
            "Wrote %d completions of %d prompts (%d failed, %d skipped) to %s",
            manifest["num_completions"],
            len(shard),
            len(contents.errors),
            len(skipped),
            store.completions_path,
        )
        self._check_failures(
            manifest,
            error_list[:1],
            where=f"their error records are in {store.errors_path}; a retry samples only the failed prompts",
        )
        return {k: manifest[k] for k in SUMMARY_KEYS} | {"reused": False}

    def _sample(
        self,
        sampler: DeploymentSampler,
        run: _Attempt,
        settings: dict[str, Any],
        shard: ShardPrompts,
        done: frozenset[int],
        sink: Callable[[PromptResult], Awaitable[None]],
        on_cancel: str,
        *,
        remember: Callable[[list[list[str | None]]], None] | None = None,
    ) -> dict[str, float]:
        """What both outputs share: make sure the deployment serves (waking it from zero), read
        the identity it serves, run the async sampler in this thread's own event loop
        (``on_kill`` cancels it), read the identity again; return the concurrency controller's
        summary. ``remember`` keeps the identities read before sampling for a later attempt."""
        deployment = None
        if len(done) < len(shard):  # with nothing left to sample there is nothing to wake or read
            try:
                deployment = self._deployment(sampler.model, settings)
                if deployment is not None:
                    self._ensure_serving(deployment)
                    self._read_served_identity(deployment, settings, run, remember)
            finally:
                self.hook.close()  # no idle control-plane connection while sampling
        try:
            asyncio.run(self._sample_async(sampler, shard, done, sink, run, settings))
        except asyncio.CancelledError:
            raise AirflowException(
                f"Sampling was cancelled after {run.prompts_sampled} prompts (the task was killed); "
                f"{on_cancel}"
            ) from None
        except DeploymentNotServingError as exc:
            raise AirflowException(
                f"Sampling stopped after {run.prompts_sampled} prompts: {exc}. Check that the deployment "
                f"exists, is READY and has replicas; {on_cancel}"
            ) from None
        finally:
            self._loop = self._task = None
        if deployment is not None:
            self._read_served_identity(deployment, settings, run)
        # ``final_window`` lets the next step start where this one ended (``initial_window``).
        return {**run.controller.step_completed(), "final_window": run.controller.window_size}

    def _deployment(self, model: str, settings: Mapping[str, Any]) -> str | None:
        """The deployment to check before sampling: the one ``model`` names when it belongs to
        this connection's account; None (not checked) otherwise."""
        named = _named_deployment(model)
        if named is not None:
            try:
                account = self.hook.account_id  # already resolved when deployment_id was given
            except FireworksError as err:
                raise airflow_error(err) from err
            if named[0] == account:
                return named[1]
        if settings["base_model"] is not None:
            raise FireworksValidationError(
                "base_model",
                f"reading the served identity needs a deployment of this connection's account; {model!r} "
                "is not one: give deployment_id",
            )
        log.info(
            "Not checking that %s serves: it does not name a deployment of this connection's account", model
        )
        return None

    def _ensure_serving(self, deployment_id: str) -> None:
        """Make sure a replica serves before any prompt is sent (``serving_now``: one GET when it
        does). A deployment at zero replicas was just sent the request that wakes it: wait through
        its cold start in the worker, or defer (the task resumes in ``execute_after_wake``)."""
        if serving_now(self.hook, deployment_id, log):
            return
        deadline = time.time() + self.wake_timeout
        if self.deferrable:
            self.defer(
                trigger=FireworksDeploymentTrigger(
                    deployment_id,
                    target=DeploymentTarget.SERVING,
                    fireworks_conn_id=self.fireworks_conn_id,
                    deadline=deadline,
                    poll_interval=self.poll_interval,
                ),
                method_name="execute_after_wake",
                timeout=timedelta(seconds=self.wake_timeout + DEFERRAL_GRACE_S),
            )
        try:
            self.hook.wait_for(
                DeploymentTarget.SERVING,
                deployment_id,
                timeout_s=self.wake_timeout,
                poll_interval_s=self.poll_interval,
            )
        except FireworksError as err:
            raise airflow_error(err) from err

    def _read_served_identity(
        self,
        deployment_id: str,
        settings: Mapping[str, Any],
        run: _Attempt,
        remember: Callable[[list[list[str | None]]], None] | None = None,
    ) -> None:
        """Append the snapshot identity each replica serves now to ``run.served`` (with
        ``base_model`` only: the hotload status is routed by it)."""
        if settings["base_model"] is None:
            return
        try:
            status = self.hook.hotload_status(deployment_id, settings["base_model"])
        except FireworksError as err:
            raise airflow_error(err) from err
        run.served.append(status.current_identities)
        if remember is not None:
            remember(run.served)

    async def _sample_async(
        self,
        sampler: DeploymentSampler,
        shard: ShardPrompts,
        done: frozenset[int],
        sink: Callable[[PromptResult], Awaitable[None]],
        run: _Attempt,
        settings: Mapping[str, Any],
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        if self._killed:
            raise asyncio.CancelledError
        ticker = asyncio.create_task(run.run_timeline())
        run.sample_timeline()
        try:
            results = sample_prompts(
                sampler,
                shard,
                **self._sampling_params(settings),
                skip_prompt_indices=done,
                progress_interval_s=settings["progress_interval_s"],
            )
            # closing the generator ends the requests still in flight (on cancel or error)
            async with sampler, aclosing(results):
                async for result in results:
                    run.add(result)
                    await sink(result)
        finally:
            ticker.cancel()
            with suppress(asyncio.CancelledError):
                await ticker
            run.finished = time.monotonic()
            run.sample_timeline()

    def on_kill(self) -> None:
        """Cancel the sampling in flight (from the signal handler or another thread)."""
        self._killed = True
        loop, task = self._loop, self._task
        if loop is not None and task is not None and not loop.is_closed():
            log.info("Cancelling the sampling requests in flight")
            with suppress(RuntimeError):
                loop.call_soon_threadsafe(task.cancel)

    # -- summary -------------------------------------------------------------------------------

    @staticmethod
    def _summary_fields(
        inputs: Mapping[str, Any],
        *,
        num_prompts: int,
        run: _Attempt,
        resumed: int,
        failed: int,
        skipped: int,
        tally: Tally,
        controller: Mapping[str, float],
        uris: tuple[str | None, str | None, str | None],
    ) -> dict[str, Any]:
        return {
            "model": inputs["model"],
            "tokenizer": inputs["tokenizer"],
            "shard_index": inputs["shard_index"],
            "num_shards": inputs["num_shards"],
            "num_prompts": num_prompts,
            "num_prompts_sampled": run.prompts_sampled,
            "num_prompts_resumed": resumed,
            "num_prompts_failed": failed,
            "num_prompts_skipped": skipped,
            "num_completions": tally.completions,
            "prompt_tokens": tally.prompt_tokens,
            "completion_tokens": tally.completion_tokens,
            "finish_reasons": dict(tally.finish_reasons),
            "throughput": run.throughput(),
            "controller": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in controller.items()},
            "served_identity": _served_identity(run.served),
            "completions_uri": uris[0],
            "errors_uri": uris[1],
            "manifest_uri": uris[2],
        }

    def _check_served_identity(self, context: Context, result: dict[str, Any]) -> None:
        """With ``require_stable_identity``, fail without retry when the served identity changed
        while sampling; the output is already written, and ``result`` is pushed to XCom anyway."""
        served = result.get("served_identity")
        if not self.require_stable_identity or not served or not served["changed"]:
            return
        context["ti"].xcom_push(key="return_value", value=result)
        kept = result["manifest_uri"] or "this task's XCom return_value"
        raise AirflowFailException(
            f"The served snapshot identity changed during sampling: {served['start']} at the start, "
            f"{served['end']} at the end, so the completions may mix policies (require_stable_identity="
            f"True). Nothing is lost: the results and their served_identity are in {kept}. To sample "
            "again once one identity serves (hot-load before sampling, not during it), use a new "
            "output_path: a finished one is reused as it is."
        )

    @staticmethod
    def _failed_fraction(summary: Mapping[str, Any]) -> float:
        return summary["num_prompts_failed"] / max(1, summary["num_prompts"])

    def _check_failures(
        self, summary: Mapping[str, Any], first_errors: list[dict[str, Any]], *, where: str
    ) -> None:
        fraction = self._failed_fraction(summary)
        limit = float(self.max_failed_prompt_fraction)
        if fraction <= limit:
            if summary["num_prompts_failed"]:
                log.warning(
                    "%d of %d prompts failed (within max_failed_prompt_fraction=%s)",
                    summary["num_prompts_failed"],
                    summary["num_prompts"],
                    limit,
                )
            return
        first = first_errors[0] if first_errors else {}
        raise AirflowException(
            f"{summary['num_prompts_failed']} of {summary['num_prompts']} prompts failed ({fraction:.1%}), "
            "more "
            f"than max_failed_prompt_fraction={limit}; {where}. First failure, prompt "
            f"{first.get('prompt_index')}: {first.get('message')}"
        )


def _error_summary(error: Mapping[str, Any]) -> dict[str, Any]:
    keys = (
        "prompt_index",
        "error_type",
        "message",
        "final_status",
        "final_error_kind",
        "attempts",
        "logical_request_id",
    )
    return {key: error.get(key) for key in keys}


def _error_kind(error: Mapping[str, Any]) -> str:
    return str(error.get("final_error_kind") or error.get("error_type"))
