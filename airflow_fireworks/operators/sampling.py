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
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import suppress
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, ObjectStoragePath
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from airflow_fireworks.api import DeploymentTarget, FireworksError, FireworksValidationError
from airflow_fireworks.api.validation import check_bool
from airflow_fireworks.hooks.fireworks import FireworksHook
from airflow_fireworks.links import FireworksDeploymentLink
from airflow_fireworks.operators._common import (
    DEFERRAL_GRACE_S,
    default_deferrable,
    failing_on_bad_input,
    is_static,
    raise_for_airflow,
    serving_now,
    to_seconds,
    validate_event,
)
from airflow_fireworks.operators._prompts import PromptSet, ShardPrompts, check_prompt_list
from airflow_fireworks.operators._sample_settings import (
    PARAMETERS,
    SampleSettings,
    check_parameters,
    named_deployment,
)
from airflow_fireworks.operators._sample_store import ShardStore
from airflow_fireworks.plugins.usage import measure_deployment, record_deployment_usage
from airflow_fireworks.sampling import (
    DeploymentNotServingError,
    DeploymentSampler,
    PromptResult,
    load_tokenizer,
)
from airflow_fireworks.sampling.output import result_records
from airflow_fireworks.sampling.params import SamplingParams
from airflow_fireworks.sampling.run import (
    SUMMARY_KEYS,
    SamplingRun,
    failed_fraction,
    make_controller,
)
from airflow_fireworks.triggers.deployment import FireworksDeploymentTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context

log = logging.getLogger(__name__)

#: Parameters kept (and templated, and shown in the UI's rendered fields) under another attribute:
#: Airflow masks every rendered field whose name contains "token", taking it for a secret.
_RENDERED_AS = {"tokenizer": "vocab", "max_tokens": "max_toks"}


class _RenderedAs:
    """A parameter stored in the template field ``field`` (reads and writes go there)."""

    def __init__(self, field: str) -> None:
        self.field = field

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        return self if obj is None else getattr(obj, self.field)

    def __set__(self, obj: Any, value: Any) -> None:
        setattr(obj, self.field, value)


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
        The summary's ``storage`` gives the URIs without the connection id (``s3://bucket/...``,
        for readers outside Airflow) and ``conn_id``.
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
        try's). Without it ``served_identity`` is null.
    :param require_stable_identity: fail the task, without retry, when the served identity changed
        while sampling (needs ``base_model``); the output and manifest are written first, and the
        result is pushed to XCom all the same.
    :param deferrable: wait for a deployment waking from zero replicas in the triggerer instead of
        the worker.
    :param wake_timeout: seconds (or ``timedelta``) a wake-up from zero replicas (the cold start)
        may take.
    :param poll_interval: seconds (or ``timedelta``) between polls while it wakes.

    ``tokenizer`` and ``max_tokens`` are templated and shown among the rendered fields as ``vocab``
    and ``max_toks``: Airflow hides every rendered field whose name contains "token".
    """

    template_fields: Sequence[str] = (
        "deployment_id", "model", "vocab", "prompts", "prompts_path", "output_path",
        "shard_index", "num_shards", "n", "max_toks", "temperature", "top_p", "top_k", "stop", "seed",
        "max_seq_len", "concurrency", "base_model",
    )  # fmt: skip
    template_fields_renderers = {"prompts": "json"}
    operator_extra_links = (FireworksDeploymentLink(),)
    ui_color = "#ece4ff"
    tokenizer = _RenderedAs(_RENDERED_AS["tokenizer"])
    max_tokens = _RenderedAs(_RENDERED_AS["max_tokens"])

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
        n: int = SamplingParams.n,
        max_tokens: int = SamplingParams.max_tokens,
        temperature: float = SamplingParams.temperature,
        top_p: float | None = SamplingParams.top_p,
        top_k: int | None = SamplingParams.top_k,
        stop: str | Sequence[str] | Sequence[int] | None = SamplingParams.stop,
        seed: int | None = SamplingParams.seed,
        logprobs: bool | int = SamplingParams.logprobs,
        top_logprobs: int | None = SamplingParams.top_logprobs,
        echo: bool = SamplingParams.echo,
        max_seq_len: int | None = SamplingParams.max_seq_len,
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
        self._check(rendered=False)
        if self.prompts is not None and is_static(self.prompts):
            PromptSet.from_source(self.prompts, None).validate()

    @cached_property
    def hook(self) -> FireworksHook:
        """The hook of ``fireworks_conn_id``."""
        return FireworksHook(fireworks_conn_id=self.fireworks_conn_id)

    # -- validation ----------------------------------------------------------------------------

    def _check(self, *, rendered: bool) -> dict[str, Any]:
        """Every parameter checked and normalised (``check_parameters``). Before rendering (at DAG
        parse time) template fields still to be rendered are left out, with the checks that need
        them; after rendering everything is checked, before any request."""
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
        known = {
            name: getattr(self, name)
            for name in PARAMETERS
            if rendered
            or _RENDERED_AS.get(name, name) not in self.template_fields
            or is_static(getattr(self, name))
        }
        checked = check_parameters(known)
        if self.prompts is not None and (rendered or is_static(self.prompts)):
            check_prompt_list(self.prompts)
        return checked

    def _settings(self) -> SampleSettings:
        """The rendered parameters, checked (``FireworksValidationError`` names the field)."""
        return SampleSettings(**self._check(rendered=True))

    # -- execution -----------------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:
        """Sample the shard; return its summary (counts, tokens, finish reasons, throughput,
        controller summary, URIs), plus the records themselves when there is no ``output_path``."""
        with failing_on_bad_input():  # no retry renders a different value
            settings = self._settings()
            prompt_set = PromptSet.from_source(self.prompts, settings.prompts_path)
            prompt_set.validate()
            if (
                prompt_set.needs_tokenizer or settings.sampling.has_stop_token_ids
            ) and settings.tokenizer is None:
                raise FireworksValidationError(
                    "tokenizer",
                    "chat prompts (and integer stop ids) need a tokenizer: give a Hugging Face model "
                    "id or a local directory, or send prompt_token_ids",
                )
            tokenizer = self._load_tokenizer(settings.tokenizer)
            shard = prompt_set.shard(settings.shard_index, settings.num_shards)
            n = settings.sampling.n
            if settings.output_path is None and len(shard) * n > settings.max_xcom_completions:
                raise FireworksValidationError(
                    "max_xcom_completions",
                    f"{len(shard)} prompts x n={n} = {len(shard) * n} completions exceed "
                    f"max_xcom_completions={settings.max_xcom_completions} for XCom; set output_path "
                    "(e.g. 'file:///data/rollouts/{{ run_id }}') to write them as JSON Lines, or raise "
                    "max_xcom_completions",
                )
        if not len(shard):
            log.warning(
                "Shard %d of %d has no prompt (%d prompts in all)",
                settings.shard_index,
                settings.num_shards,
                prompt_set.total,
            )
        try:  # one control-plane session for the checks around sampling, closed at the end
            model = settings.model
            if model is None:  # then deployment_id is given (_check: exactly one of the two)
                model = self.hook.inference_model(str(settings.deployment_id))
            inputs = {
                "model": model,
                "tokenizer": settings.tokenizer,
                "shard_index": settings.shard_index,
                "num_shards": settings.num_shards,
                "num_prompts_total": prompt_set.total,
                "prompts_sha256": prompt_set.digest,
                "sampling": settings.sampling.as_record(),
            }
            try_number = int(getattr(context.get("ti"), "try_number", None) or 1)
            log.info(
                "Sampling %d prompts x n=%d from %s (shard %d of %d, try %d)",
                len(shard),
                n,
                model,
                settings.shard_index,
                settings.num_shards,
                try_number,
            )
            controller = make_controller(settings.concurrency)
            sampler = self.hook.sampler(
                model,
                tokenizer,
                controller,
                not_ready_retries=settings.not_ready_retries,
                not_ready_interval_s=settings.not_ready_interval_s,
            )
            run = SamplingRun(n=n, controller=controller)
            if settings.output_path is None:
                result = self._sample_to_xcom(settings, inputs, shard, sampler, run)
            else:
                store = ShardStore(settings.output_path, settings.shard_index)
                result = self._sample_to_store(
                    store, settings, inputs, shard, sampler, run, prompt_set, try_number
                )
        finally:
            self.hook.close()
        if run.gpu_time is not None:  # GPU time: the task's usage row for the Fireworks page
            gpu = run.gpu_time
            uri = result.get("manifest_uri")
            record_deployment_usage(
                self.hook, context, gpu["deployment_id"], action=self.task_type, gpu=gpu, manifest_uri=uri
            )
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

    def _sample_to_xcom(
        self,
        settings: SampleSettings,
        inputs: dict[str, Any],
        shard: ShardPrompts,
        sampler: DeploymentSampler,
        run: SamplingRun,
    ) -> dict[str, Any]:
        records: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []

        async def collect(result: PromptResult) -> None:
            (errors if result.error is not None else records).extend(result_records(result))

        self._sample(sampler, run, settings, shard, frozenset(), collect, "nothing is kept")
        records.sort(key=lambda r: (r["prompt_index"], r["sample_index"]))
        errors.sort(key=lambda r: r["prompt_index"])
        summary = run.summary(
            inputs,
            num_prompts=len(shard),
            resumed=0,
            failed=run.prompts_failed,
            skipped=run.prompts_skipped,
            tally=run.tally,
        )
        self._check_failures(
            summary,
            [e["error"] | {"prompt_index": e["prompt_index"]} for e in errors[:1]],
            where="no XCom is pushed; a retry samples every prompt again",
        )
        return {**summary, "reused": False, "completions": records, "errors": errors}

    def _sample_to_store(
        self,
        store: ShardStore,
        settings: SampleSettings,
        inputs: dict[str, Any],
        shard: ShardPrompts,
        sampler: DeploymentSampler,
        run: SamplingRun,
        prompt_set: PromptSet,
        try_number: int,
    ) -> dict[str, Any]:
        previous = store.prepare(inputs, overwrite=settings.overwrite)
        if previous is not None:
            if failed_fraction(previous) <= settings.max_failed_prompt_fraction:
                store.remove_scratch()
                log.info(
                    "%s already holds the complete results of these inputs; returning their summary "
                    "without sampling",
                    store.directory,
                )
                # .get: a manifest written before a key was added lacks it
                summary = {k: previous.get(k) for k in SUMMARY_KEYS}
                return {**summary, "num_prompts_sampled": 0, "reused": True, "storage": store.locations()}
            log.info(
                "%s holds %d failed prompts from an earlier try; sampling them again",
                store.directory,
                previous["num_prompts_failed"],
            )
            store.reopen(previous)
        n = settings.sampling.n
        done = store.scan(n).done
        if done:
            log.info(
                "Resuming: %d of %d prompts already have their complete group in %s",
                len(done),
                len(shard),
                store.directory,
            )
        if settings.base_model is not None:
            run.served = store.served_identities()  # what earlier tries sampled from
        writer = store.open_part(try_number)

        async def write(result: PromptResult) -> None:
            await asyncio.to_thread(writer.write, result)

        try:
            self._sample(
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
        errors = [{"prompt_index": i, **contents.errors[i]["error"]} for i in sorted(contents.errors)]
        manifest = run.manifest(
            inputs,
            num_prompts=len(shard),
            resumed=len(done),
            tally=contents.tally(),
            errors=errors,
            skipped=[i for i in shard.indices if i not in contents.groups and i not in contents.errors],
            uris=(str(store.completions_path), str(store.errors_path), str(store.manifest_path)),
            prompts_source=prompt_set.source,
            concurrency=settings.concurrency,
            consolidation_s=time.monotonic() - consolidating,
            try_number=try_number,
            earlier_tries=(previous or {}).get("attempts", []),
        )
        manifest["storage"] = store.locations()  # plain URIs and the connection id, for any reader
        store.finish(manifest)
        log.info(
            "Wrote %d completions of %d prompts (%d failed, %d skipped) to %s",
            manifest["num_completions"],
            len(shard),
            manifest["num_prompts_failed"],
            manifest["num_prompts_skipped"],
            store.completions_path,
        )
        self._check_failures(
            manifest,
            errors[:1],
            where=f"their error records are in {store.errors_path}; a retry samples only the failed prompts",
        )
        return {k: manifest[k] for k in SUMMARY_KEYS} | {"reused": False, "storage": manifest["storage"]}

    def _sample(
        self,
        sampler: DeploymentSampler,
        run: SamplingRun,
        settings: SampleSettings,
        shard: ShardPrompts,
        done: frozenset[int],
        sink: Callable[[PromptResult], Awaitable[None]],
        on_cancel: str,
        *,
        remember: Callable[[list[list[str | None]]], None] | None = None,
    ) -> None:
        """What both outputs share: make sure the deployment serves (waking it from zero), read
        the identity it serves, run the sampling in this thread's own event loop (``on_kill``
        cancels it), read the identity again. ``remember`` keeps the identities read before
        sampling for a later try."""
        deployment = None
        if len(done) < len(shard):  # with nothing left to sample there is nothing to wake or read
            try:
                deployment = self._deployment(sampler.model, settings)
                if deployment is not None:
                    self._ensure_serving(deployment)
                    self._read_served_identity(deployment, settings, run, remember)
            finally:
                self.hook.close()  # no idle control-plane connection while sampling

        async def sample() -> None:
            await run.sample(
                sampler,
                shard,
                settings.sampling,
                sink,
                skip=done,
                progress_interval_s=settings.progress_interval_s,
            )

        try:
            asyncio.run(self._cancellable(sample))
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
            run.gpu_time = measure_deployment(self.hook, deployment, run.elapsed_s)

    async def _cancellable(self, work: Callable[[], Awaitable[None]]) -> None:
        """Run ``work`` where ``on_kill`` (another thread) can cancel it."""
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        if self._killed:
            raise asyncio.CancelledError
        await work()

    def on_kill(self) -> None:
        """Cancel the sampling in flight (from the signal handler or another thread)."""
        self._killed = True
        loop, task = self._loop, self._task
        if loop is not None and task is not None and not loop.is_closed():
            log.info("Cancelling the sampling requests in flight")
            with suppress(RuntimeError):
                loop.call_soon_threadsafe(task.cancel)

    def _deployment(self, model: str, settings: SampleSettings) -> str | None:
        """The deployment to check before sampling: the one ``model`` names when it belongs to
        this connection's account; None (not checked) otherwise."""
        named = named_deployment(model)
        if named is not None:
            try:
                account = self.hook.account_id  # already resolved when deployment_id was given
            except FireworksError as err:
                raise_for_airflow(err)
            if named[0] == account:
                return named[1]
        if settings.base_model is not None:
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
            raise_for_airflow(err)

    def _read_served_identity(
        self,
        deployment_id: str,
        settings: SampleSettings,
        run: SamplingRun,
        remember: Callable[[list[list[str | None]]], None] | None = None,
    ) -> None:
        """Append the snapshot identity each replica serves now to ``run.served`` (with
        ``base_model`` only: the hotload status is routed by it)."""
        if settings.base_model is None:
            return
        try:
            status = self.hook.hotload_status(deployment_id, settings.base_model)
        except FireworksError as err:
            raise_for_airflow(err)
        run.served.append(status.current_identities)
        if remember is not None:
            remember(run.served)

    # -- outcome -------------------------------------------------------------------------------

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

    def _check_failures(
        self, summary: Mapping[str, Any], first_errors: list[dict[str, Any]], *, where: str
    ) -> None:
        fraction = failed_fraction(summary)
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
            f"more than max_failed_prompt_fraction={limit}; {where}. First failure, prompt "
            f"{first.get('prompt_index')}: {first.get('message')}"
        )
