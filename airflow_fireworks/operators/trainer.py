"""Operators for RLOR trainer jobs: create (and wait through capacity placement and boot), delete,
resume or reconnect, promote a checkpoint, and re-point a deployment at a recreated trainer.

An RL pipeline creates the trainer first, then the deployment linked to it, and releases both in
teardown tasks, so a failed run never leaves a trainer holding GPUs::

    trainer = FireworksCreateTrainerJobOperator(task_id="create_trainer", base_model=BASE_MODEL)
    deployment = FireworksCreateDeploymentOperator(
        task_id="create_deployment",
        deployment_id="grpo-qwen3",
        base_model=BASE_MODEL,
        hot_load_trainer_job="{{ ti.xcom_pull(task_ids='create_trainer')['job_name'] }}",
    )
    delete_trainer = FireworksDeleteTrainerJobOperator(
        task_id="delete_trainer", job_id="{{ ti.xcom_pull(task_ids='create_trainer')['job_id'] }}"
    )
    trainer >> deployment >> steps >> delete_trainer.as_teardown(setups=trainer)

Waits run in the worker or, with ``deferrable=True``, in the triggerer; their budgets become
absolute times before deferring (``pending_timeout``, default 48 h, for the capacity placement;
``timeout`` for the boot after it), so they hold across deferral and triggerer restarts.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from airflow_fireworks.api import (
    DeploymentInfo,
    DeploymentState,
    DeploymentTarget,
    FireworksError,
    TrainerJobConfig,
    TrainerJobDeletedError,
    TrainerJobManager,
    TrainerServiceEndpoint,
    TrainerTarget,
    TrainerWaitClock,
    validate_base_model,
    validate_trainer_job,
)
from airflow_fireworks.api.models import HOT_LOAD_TRANSITION_TYPES
from airflow_fireworks.api.trainer_models import (
    generated_job_id,
    is_attached,
    job_id_from,
    trainer_link_patch,
    validate_output_model_id,
)
from airflow_fireworks.api.trainer_waits import DEFAULT_PENDING_TIMEOUT_S, STOPPED_GRACE_S
from airflow_fireworks.api.validation import check_bool
from airflow_fireworks.hooks.fireworks import FireworksHook
from airflow_fireworks.links import FireworksDeploymentLink, FireworksTrainerJobLink
from airflow_fireworks.operators._common import (
    DEFERRAL_GRACE_S,
    default_deferrable,
    failing_on_bad_input,
    is_static,
    raise_for_airflow,
    to_seconds,
    validate_event,
)
from airflow_fireworks.operators.deployment import FireworksBaseDeploymentOperator
from airflow_fireworks.plugins.usage import record_trainer_usage
from airflow_fireworks.triggers.trainer import FireworksTrainerJobTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context

#: XCom key of the trainer job's resource name (pushed by the create operator).
JOB_NAME_XCOM_KEY = "job_name"
#: XCom key of the job id, pushed as soon as the job exists (before any wait), so a teardown
#: task can delete it even when the create task fails while waiting.
JOB_ID_XCOM_KEY = "job_id"
#: XCom key: whether the resume operator sent ``:resume``.
RESUMED_XCOM_KEY = "resumed"
#: Event ``reason`` values of a trainer wait that no retry can fix.
FINAL_TRAINER_REASONS = ("gone", "deleted")
#: How many derived ids a create tries when earlier ones belong to deleted jobs.
_MAX_ID_GENERATIONS = 20


class FireworksBaseTrainerJobOperator(BaseOperator):
    """What the trainer-job operators share: connection, job id, waits, console link.

    :param job_id: the trainer job id, or its full ``accounts/<a>/rlorTrainerJobs/<id>`` name (templated).
    :param fireworks_conn_id: the ``fireworks`` connection.
    :param wait_for_completion: wait until the operation took effect.
    :param deferrable: wait in the triggerer instead of the worker.
    :param poll_interval: seconds between polls while waiting.
    :param timeout: seconds (or ``timedelta``) the job may take to be ready once it left PENDING
        (the whole wait when deleting).
    :param pending_timeout: seconds the job may wait for capacity (PENDING); default 48 hours.
    """

    template_fields: Sequence[str] = ("job_id", "fireworks_conn_id")
    operator_extra_links = (FireworksTrainerJobLink(),)
    ui_color = "#6720ff"
    ui_fgcolor = "#ffffff"

    def __init__(
        self,
        *,
        job_id: str | None,
        fireworks_conn_id: str = FireworksHook.default_conn_name,
        wait_for_completion: bool = True,
        deferrable: bool = default_deferrable(),
        poll_interval: float | timedelta = 5.0,
        timeout: float | timedelta = 900.0,
        pending_timeout: float | timedelta = DEFAULT_PENDING_TIMEOUT_S,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.job_id = job_id
        self.fireworks_conn_id = fireworks_conn_id
        self.wait_for_completion = check_bool(wait_for_completion, "wait_for_completion")
        self.deferrable = deferrable
        self.poll_interval = to_seconds(poll_interval, "poll_interval")
        self.timeout = to_seconds(timeout, "timeout")
        self.pending_timeout = to_seconds(pending_timeout, "pending_timeout")
        if job_id is not None and is_static(job_id):
            job_id_from(job_id)

    @cached_property
    def hook(self) -> FireworksHook:
        return FireworksHook(fireworks_conn_id=self.fireworks_conn_id)

    @property
    def trainers(self) -> TrainerJobManager:
        return self.hook.get_trainer_manager()

    def validate_rendered(self) -> None:
        """Check the rendered job id before any request (raises naming the field)."""
        self.job_id = job_id_from(self.job_id)

    def prepare(self, context: Context) -> str:
        """Check the rendered input (no retry fixes bad input) and publish the link; the job id."""
        with failing_on_bad_input():
            self.validate_rendered()
        self.publish_link(context)
        return str(self.job_id)

    def publish_link(self, context: Context) -> None:
        """Store the console link as soon as the job id is known (visible while waiting)."""
        link = FireworksTrainerJobLink()
        link.persist(context, link.url_for(self))

    def wait_ready(
        self, started_at: float, *, stopped_grace: float = STOPPED_GRACE_S, delete_on_kill: bool = False
    ) -> dict[str, Any]:
        """Wait until the job is RUNNING and healthy, in the worker or deferred (then the task
        resumes in ``execute_complete``); the result dict."""
        job_id = str(self.job_id)
        clock = TrainerWaitClock(started_at, self.timeout, self.pending_timeout, stopped_grace)
        try:
            endpoint, _ = self.trainers.check_ready(job_id, clock)
            if endpoint is not None:
                return endpoint.to_dict()
            if self.deferrable:
                self.defer_wait(
                    FireworksTrainerJobTrigger(
                        job_id,
                        service_url=self.trainers.service_url(job_id),
                        fireworks_conn_id=self.fireworks_conn_id,
                        started_at=clock.started_at,
                        timeout=clock.timeout_s,
                        pending_timeout=clock.pending_timeout_s,
                        stopped_grace=clock.stopped_grace_s,
                        ready_deadline=clock.ready_deadline,
                        poll_interval=self.poll_interval,
                        delete_on_kill=delete_on_kill,
                    ),
                    clock.hard_deadline(),
                )
            endpoint = self.trainers.wait_with(job_id, clock, self.poll_interval)
        except FireworksError as err:
            raise_for_airflow(err)
        return endpoint.to_dict()

    def defer_wait(self, trigger: FireworksTrainerJobTrigger, deadline: float) -> NoReturn:
        """Hand the wait to the triggerer; the framework's own timeout is the deadline plus a grace."""
        remaining = max(0.0, deadline - time.time())
        self.defer(
            trigger=trigger,
            method_name="execute_complete",
            timeout=timedelta(seconds=remaining + DEFERRAL_GRACE_S),
        )

    def checked_event(self, event: Any, required: Sequence[str]) -> dict[str, Any]:
        """A successful trainer-wait event; raises on error/timeout (``AirflowFailException`` when
        the job is gone or deleted)."""
        checked = validate_event(event, required)
        if checked["status"] != "success":
            final = checked.get("reason") in FINAL_TRAINER_REASONS
            raise (AirflowFailException if final else AirflowException)(
                f"{checked['status']}: {checked['message']}"
            )
        self.log.info("%s", checked["message"])
        return checked

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        endpoint = self.checked_event(event, ("endpoint",))["endpoint"]
        if not isinstance(endpoint, Mapping) or not endpoint.get("base_url"):
            raise AirflowException(f"trigger event 'endpoint' must be a dict with base_url, got {endpoint!r}")
        return self.finish(context, dict(endpoint))

    def finish(self, context: Context, result: dict[str, Any]) -> dict[str, Any]:
        """Push the job name (for ``hot_load_trainer_job``) and return ``result``."""
        if result.get("job_name"):
            context["ti"].xcom_push(key=JOB_NAME_XCOM_KEY, value=result["job_name"])
        if result.get("job_id"):  # who used it, and the GPU time, for the Fireworks page
            record_trainer_usage(self.hook, context, str(result["job_id"]), action=self.task_type)
        return result


class FireworksCreateTrainerJobOperator(FireworksBaseTrainerJobOperator):
    """Create a trainer job (service-mode RLOR trainer) and wait until it serves.

    Idempotent: the job id is stable across the task's retries (``job_id``, or one derived from the
    DAG run, task and map index), and creating an id that exists returns that job; one left FAILED,
    CANCELLED, PAUSED or COMPLETED by a previous try is resumed (``resume_if_stopped``). With a
    derived id, a job deleted earlier (its id cannot be reused) is skipped for the next derived id.
    The wait goes through capacity placement (PENDING, ``pending_timeout``) and boot (``timeout``)
    until the service's health endpoint answers.

    Returns ``{"job_name", "job_id", "service_url", "base_url" (the same URL, the SDK's name),
    "max_context_length"}`` and pushes ``job_name`` to XCom under ``job_name`` (for the
    deployment's ``hot_load_trainer_job``). The job id is pushed under ``job_id`` as soon as the job
    exists, before any wait: point the teardown's ``FireworksDeleteTrainerJobOperator`` at it
    (``ti.xcom_pull(task_ids=..., key='job_id')``) so a job whose wait failed is deleted too.

    :param base_model: e.g. ``accounts/fireworks/models/qwen3-8b`` (templated).
    :param job_id: a stable job id (templated); default: derived from the DAG run and task.
    :param training_shape_ref: ``accounts/<a>/trainingShapes/<s>[/versions/<v>]`` (templated).
    :param lora_rank: 0 = full-parameter training (templated).
    :param display_name: shown in the console (templated).
    :param config: any other ``TrainerJobConfig`` field, e.g. ``{"learning_rate": 1e-5,
        "region": "US_OHIO_1"}`` (templated; a key given both here and as a parameter is an error).
    :param resume_if_stopped: resume a job this task finds FAILED, CANCELLED, PAUSED or COMPLETED.
    :param delete_on_kill: delete the job when the task is killed while waiting.
    """

    template_fields: Sequence[str] = (
        "job_id",
        "fireworks_conn_id",
        "base_model",
        "training_shape_ref",
        "lora_rank",
        "display_name",
        "config",
    )
    template_fields_renderers = {"config": "json"}

    def __init__(
        self,
        *,
        base_model: str,
        job_id: str | None = None,
        training_shape_ref: str | None = None,
        lora_rank: int | str = 0,
        display_name: str | None = None,
        config: Mapping[str, Any] | None = None,
        resume_if_stopped: bool = True,
        delete_on_kill: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(job_id=job_id, **kwargs)
        self.base_model = base_model
        self.training_shape_ref = training_shape_ref
        self.lora_rank = lora_rank
        self.display_name = display_name
        self.config = dict(config) if isinstance(config, Mapping) else config
        self.resume_if_stopped = check_bool(resume_if_stopped, "resume_if_stopped")
        self.delete_on_kill = check_bool(delete_on_kill, "delete_on_kill")
        if all(is_static(getattr(self, name)) for name in self.template_fields):
            self.trainer_config(None)

    def trainer_config(self, job_id: str | None) -> TrainerJobConfig:
        """The validated ``TrainerJobConfig`` from the (rendered) parameters."""
        fields: dict[str, Any] = {"base_model": self.base_model, "lora_rank": self.lora_rank}
        for name in ("training_shape_ref", "display_name"):
            if getattr(self, name) is not None:
                fields[name] = getattr(self, name)
        if job_id is not None:
            fields["requested_job_id"] = job_id
        extra = self.config or {}
        if not isinstance(extra, Mapping):
            raise ValueError(f"config must be a dict of TrainerJobConfig fields, got {type(extra).__name__}")
        clash = sorted(set(extra) & {*fields, "requested_job_id"})
        if clash:
            raise ValueError(f"config repeats {', '.join(clash)}; pass each field once (parameter or config)")
        return TrainerJobConfig.from_dict({**fields, **extra})

    def execute(self, context: Context) -> dict[str, Any]:
        explicit = self.job_id is not None
        with failing_on_bad_input():
            if explicit:
                self.validate_rendered()
            config = self.trainer_config(self.job_id)
        seed = None if explicit else _run_seed(context)
        started_at = time.time()
        for generation in range(_MAX_ID_GENERATIONS):
            if not explicit:
                config.requested_job_id = generated_job_id(
                    seed if generation == 0 else f"{seed}#{generation}"
                )
            self.job_id = config.ensure_job_id()
            try:
                created = self.trainers.create(config)
            except TrainerJobDeletedError as err:
                if explicit:
                    raise_for_airflow(err)
                self.log.info("Derived job id %s belongs to a deleted job; trying the next one", self.job_id)
                continue
            except FireworksError as err:
                raise_for_airflow(err)
            break
        else:
            raise AirflowFailException(
                f"the first {_MAX_ID_GENERATIONS} derived job ids all belong to deleted jobs"
            )
        self.publish_link(context)
        context["ti"].xcom_push(key=JOB_ID_XCOM_KEY, value=created.job_id)
        self.log.info(
            "Trainer job %s is %s%s",
            created.job_name,
            created.state.short,
            " (reused)" if created.reused else "",
        )
        if created.reused and created.state.is_resumable() and self.resume_if_stopped:
            try:
                self.trainers.resume(created.job_id)
            except FireworksError as err:
                raise_for_airflow(err)
        if not self.wait_for_completion:
            url = self.trainers.service_url(created.job_id)
            return self.finish(
                context, TrainerServiceEndpoint(created.job_name, created.job_id, url).to_dict()
            )
        return self.finish(context, self.wait_ready(started_at, delete_on_kill=self.delete_on_kill))

    def on_kill(self) -> None:
        if self.delete_on_kill and self.job_id is not None:
            self.log.info("Task killed: deleting trainer job %s", self.job_id)
            self.trainers.delete(str(self.job_id))


def _run_seed(context: Context) -> str:
    """The identity of this task instance in its DAG run (the same on every retry)."""
    ti = context["ti"]
    parts = (getattr(ti, name, None) for name in ("dag_id", "run_id", "task_id", "map_index"))
    return "/".join(str(part) for part in parts)


class FireworksResumeTrainerJobOperator(FireworksBaseTrainerJobOperator):
    """Get a preempted, crashed, paused or stopped trainer serving again, and wait until it does.

    ``mode="reconnect"`` (default) looks first: a RUNNING or starting job is only waited for; a
    FAILED, CANCELLED, PAUSED or COMPLETED one is resumed; one still CANCELLING/DELETING/
    EARLY_STOPPED is polled (in the worker) for at most ``max_wait_for_resumable`` seconds.
    ``mode="resume"`` sends ``:resume`` unconditionally. Returns what the create operator returns;
    whether a resume was sent is pushed to XCom under ``resumed``.

    :param mode: ``reconnect`` or ``resume``.
    :param max_wait_for_resumable: seconds a reconnect waits for a resumable state.
    """

    template_fields: Sequence[str] = ("job_id", "fireworks_conn_id", "mode")

    def __init__(
        self,
        *,
        job_id: str,
        mode: str = "reconnect",
        max_wait_for_resumable: float | timedelta = 120.0,
        timeout: float | timedelta = 600.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(job_id=job_id, timeout=timeout, **kwargs)
        self.mode = mode
        self.max_wait_for_resumable = to_seconds(max_wait_for_resumable, "max_wait_for_resumable")
        if is_static(mode):
            self._check_mode()

    def _check_mode(self) -> None:
        if self.mode not in ("reconnect", "resume"):
            raise ValueError(f"mode must be 'reconnect' or 'resume', got {self.mode!r}")

    def validate_rendered(self) -> None:
        super().validate_rendered()
        self._check_mode()

    def execute(self, context: Context) -> dict[str, Any]:
        job_id = self.prepare(context)
        started_at = time.time()
        try:
            if self.mode == "resume":
                self.trainers.resume(job_id)
                resumed = True
            else:
                _, resumed = self.trainers.reconnect(job_id, self.max_wait_for_resumable)
        except FireworksError as err:
            raise_for_airflow(err)
        context["ti"].xcom_push(key=RESUMED_XCOM_KEY, value=resumed)
        return self.finish(context, self.wait_ready(started_at))


class FireworksDeleteTrainerJobOperator(FireworksBaseTrainerJobOperator):
    """Delete a trainer job; a job already gone (absent, deleting, or a deleted tombstone) counts as
    done, so it suits a teardown task (``.as_teardown(setups=create_trainer)``), which runs even when
    the DAG fails. Unlike the SDK's delete, a failure fails the task (and is retried) instead of
    being logged and forgotten with the trainer still holding GPUs.

    Returns ``{"job_id", "deleted"}`` where ``deleted`` is False when there was nothing to delete.
    """

    def __init__(
        self,
        *,
        job_id: str,
        wait_for_completion: bool = False,
        timeout: float | timedelta = 300.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(job_id=job_id, wait_for_completion=wait_for_completion, timeout=timeout, **kwargs)

    def execute(self, context: Context) -> dict[str, Any]:
        job_id = self.prepare(context)
        try:
            deleted = self.trainers.delete(job_id)
            if deleted and self.wait_for_completion:
                if self.deferrable:
                    self.defer_wait(
                        FireworksTrainerJobTrigger(
                            job_id,
                            target=TrainerTarget.DELETED,
                            fireworks_conn_id=self.fireworks_conn_id,
                            timeout=self.timeout,
                            poll_interval=self.poll_interval,
                        ),
                        time.time() + self.timeout,
                    )
                self.trainers.wait_for_deleted(job_id, self.timeout, self.poll_interval)
        except FireworksError as err:
            raise_for_airflow(err)
        self.log.info("Trainer job %s %s", job_id, "deleted" if deleted else "was already gone")
        return {"job_id": job_id, "deleted": deleted}

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        self.checked_event(event, ())
        return {"job_id": self.job_id, "deleted": True}


class FireworksPromoteCheckpointOperator(FireworksBaseTrainerJobOperator):
    """Turn a trainer checkpoint into a model ``accounts/<a>/models/<output_model_id>``, typically the
    final checkpoint at the end of a pipeline.

    The checkpoint is ``checkpoint_id`` of ``job_id``, or by default the job's newest checkpoint the
    server marks promotable. Before anything is sent, a checkpoint that is missing or not promotable
    (a delta) fails the task, naming it. A retry finds the model already promoted and returns it.
    The promotion operation is polled in the worker (up to ``timeout``). Returns the model dict
    plus ``checkpoint`` (the promoted checkpoint's name).

    :param output_model_id: the new model's id, lowercase letters, digits and hyphens (templated).
    :param base_model: the trainer's base model (templated).
    :param checkpoint_id: the checkpoint to promote (templated); default the newest promotable one.
    :param hot_load_deployment_id: deprecated per-deployment scope: the deployment whose bucket holds it.
    """

    template_fields: Sequence[str] = (
        "job_id",
        "fireworks_conn_id",
        "checkpoint_id",
        "output_model_id",
        "base_model",
        "hot_load_deployment_id",
    )

    def __init__(
        self,
        *,
        job_id: str,
        output_model_id: str,
        base_model: str,
        checkpoint_id: str | None = None,
        hot_load_deployment_id: str | None = None,
        timeout: float | timedelta = 7200.0,
        poll_interval: float | timedelta = 10.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(job_id=job_id, timeout=timeout, poll_interval=poll_interval, **kwargs)
        self.output_model_id = output_model_id
        self.base_model = base_model
        self.checkpoint_id = checkpoint_id
        self.hot_load_deployment_id = hot_load_deployment_id
        if all(is_static(getattr(self, name)) for name in self.template_fields):
            self.validate_rendered()

    def validate_rendered(self) -> None:
        super().validate_rendered()
        self.output_model_id = validate_output_model_id(self.output_model_id)
        self.base_model = validate_base_model(self.base_model)
        if self.checkpoint_id in ("", None):
            self.checkpoint_id = None
        elif not isinstance(self.checkpoint_id, str):
            raise ValueError(f"checkpoint_id must be a checkpoint id string, got {self.checkpoint_id!r}")

    def execute(self, context: Context) -> dict[str, Any]:
        job_id = self.prepare(context)
        try:
            checkpoint = (
                self.checkpoint_id or self.trainers.latest_promotable_checkpoint(job_id).checkpoint_id
            )
            self.log.info(
                "Promoting checkpoint %s of trainer job %s to %s", checkpoint, job_id, self.output_model_id
            )
            model = self.trainers.promote_checkpoint(
                job_id,
                checkpoint,
                self.output_model_id,
                self.base_model,
                hot_load_deployment_id=self.hot_load_deployment_id,
                timeout_s=self.timeout,
                poll_interval_s=self.poll_interval,
            )
        except FireworksError as err:
            raise_for_airflow(err)
        return {**model, "checkpoint": f"{self.trainers.job_name(job_id)}/checkpoints/{checkpoint}"}


class FireworksReattachTrainerOperator(FireworksBaseDeploymentOperator):
    """Point a deployment at a (recreated) trainer job's bucket, and optionally set its hot-load
    transition type, then wait until it is READY on the new link.

    Sends nothing when the deployment is already linked (a retried task only waits). The PATCH
    names exactly what differs (update mask ``hot_load_trainer_job``, ``hot_load_transition_type``).
    A deployment of another base model is refused before anything is written. After a reattach,
    snapshots saved by the old trainer mean nothing to the new one: hot-load a full snapshot next.
    Returns the deployment dict.

    :param base_model: the deployment's (and trainer's) base model (templated).
    :param trainer_job: the trainer's ``accounts/<a>/rlorTrainerJobs/<id>`` name (templated), e.g.
        ``"{{ ti.xcom_pull(task_ids='create_trainer')['job_name'] }}"``.
    :param hot_load_transition_type: ``ASYNC`` or ``SYNC`` (templated); None keeps the current one.
    """

    template_fields: Sequence[str] = (
        "deployment_id",
        "fireworks_conn_id",
        "base_model",
        "trainer_job",
        "hot_load_transition_type",
    )
    operator_extra_links = (FireworksDeploymentLink(), FireworksTrainerJobLink())  # type: ignore[assignment]

    def __init__(
        self,
        *,
        deployment_id: str,
        base_model: str,
        trainer_job: str,
        hot_load_transition_type: str | None = None,
        poll_interval: float | timedelta = 5.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(deployment_id=deployment_id, poll_interval=poll_interval, **kwargs)
        self.base_model = base_model
        self.trainer_job = trainer_job
        self.hot_load_transition_type = hot_load_transition_type
        if all(is_static(getattr(self, name)) for name in self.template_fields):
            self.validate_rendered()

    @property
    def job_id(self) -> str | None:
        """The trainer job id (for the trainer console link)."""
        return self.trainer_job.rsplit("/", 1)[-1] if isinstance(self.trainer_job, str) else None

    def validate_rendered(self) -> None:
        super().validate_rendered()
        self.base_model = validate_base_model(self.base_model)
        self.trainer_job = validate_trainer_job(self.trainer_job, "trainer_job")
        if self.hot_load_transition_type in ("", None):
            self.hot_load_transition_type = None
        elif str(self.hot_load_transition_type).strip().upper() not in HOT_LOAD_TRANSITION_TYPES:
            raise ValueError(
                f"hot_load_transition_type must be ASYNC or SYNC, got {self.hot_load_transition_type!r}"
            )
        else:
            self.hot_load_transition_type = str(self.hot_load_transition_type).strip().upper()

    def execute(self, context: Context) -> dict[str, Any] | None:
        with failing_on_bad_input():
            self.validate_rendered()
        self.publish_link(context)
        FireworksTrainerJobLink().persist(context, FireworksTrainerJobLink.url_for(self))
        if not self.deferrable:
            try:
                attached = self.hook.reattach_trainer(
                    self.deployment_id,
                    base_model=self.base_model,
                    trainer_job_name=self.trainer_job,
                    timeout_s=self.timeout,
                    poll_interval_s=self.poll_interval,
                    hot_load_transition_type=self.hot_load_transition_type,
                )
            except FireworksError as err:
                raise_for_airflow(err)
            return attached.to_dict()
        try:
            info = self.hook.get_deployment(self.deployment_id)
        except FireworksError as err:
            raise_for_airflow(err)
        if info is not None and info.state is DeploymentState.READY:
            return self.attach(info)
        deadline = time.time() + self.timeout
        trigger = self.deployment_trigger(DeploymentTarget.READY, deadline)
        self.defer_wait(trigger, deadline, method_name="execute_when_ready")

    def execute_when_ready(self, context: Context, event: dict[str, Any]) -> dict[str, Any] | None:
        """Resume once the deployment is READY: attach it."""
        self.deployment_from_event(event)
        try:
            info = self.hook.get_deployment(self.deployment_id)
        except FireworksError as err:
            raise_for_airflow(err)
        if info is None:
            raise AirflowFailException(f"deployment {self.deployment_id!r} does not exist")
        return self.attach(info)

    def attach(self, info: DeploymentInfo) -> dict[str, Any] | None:
        """PATCH what differs from the requested link, then wait (deferred) for READY again."""
        if info.base_model and info.base_model != self.base_model:
            raise AirflowFailException(
                f"deployment {self.deployment_id!r} serves {info.base_model!r}, not {self.base_model!r}; "
                "a trainer can only be attached to a deployment of its own base model"
            )
        patch = trainer_link_patch(info, str(self.trainer_job), self.hot_load_transition_type)
        if patch is None:
            self.log.info("Deployment %s is already attached to %s", self.deployment_id, self.trainer_job)
            return info.to_dict()
        body, mask = patch
        self.log.info("Attaching deployment %s to %s (%s)", self.deployment_id, self.trainer_job, mask)
        try:
            self.hook.update_deployment(self.deployment_id, body, mask)
        except FireworksError as err:
            raise_for_airflow(err)
        return self.wait(DeploymentTarget.READY)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any] | None:
        deployment = self.deployment_from_event(event)
        info = self.hook.get_deployment(self.deployment_id)
        if info is None or not is_attached(info, str(self.trainer_job), self.hot_load_transition_type):
            raise AirflowException(
                f"deployment {self.deployment_id!r} is not attached to {self.trainer_job!r}"
            )
        return deployment
