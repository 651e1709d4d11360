"""Operators for the lifecycle of a Fireworks deployment: create, update, hotload, scale to zero,
delete.

Every wait runs either in the worker (``deferrable=False``) or in the triggerer
(``deferrable=True``; the default comes from ``[operators] default_deferrable``). A wait's
``timeout`` becomes an absolute deadline before deferring, so it holds across deferral and
triggerer restarts. Retried tasks never duplicate anything: the deployment id is stable and create
is create-or-get, a hotload already served (or loading) is not sent again, and scale-to-zero and
delete treat a missing deployment as done, which also makes them safe teardown tasks::

    create = FireworksCreateDeploymentOperator(task_id="create", deployment_id="grpo-qwen3", ...)
    release = FireworksScaleToZeroOperator(task_id="release", deployment_id="grpo-qwen3")
    create >> train_steps >> release.as_teardown(setups=create)
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
    DeploymentConfig,
    DeploymentNotFoundError,
    DeploymentTarget,
    FireworksError,
    HotloadStatus,
    SnapshotChainError,
    check_deployment,
    validate_base_model,
    validate_deployment_id,
    validate_update_mask,
)
from airflow_fireworks.api.drift import patch_request
from airflow_fireworks.api.models import MIN_SCALE_TO_ZERO_WINDOW_S
from airflow_fireworks.api.validation import check_bool, check_int, check_seconds
from airflow_fireworks.hooks.fireworks import FireworksHook
from airflow_fireworks.links import FireworksDeploymentLink
from airflow_fireworks.operators._common import (
    DEFERRAL_GRACE_S,
    FINAL_EVENT_REASONS,
    default_deferrable,
    failing_on_bad_input,
    is_static,
    raise_for_airflow,
    serving_now,
    to_seconds,
    validate_event,
)
from airflow_fireworks.plugins.usage import record_deployment_usage, with_creation_annotations
from airflow_fireworks.triggers.deployment import FireworksDeploymentTrigger, FireworksHotloadTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context
    from airflow.triggers.base import BaseTrigger

#: XCom key of the deployment's inference ``model`` string (pushed by the create operator).
INFERENCE_MODEL_XCOM_KEY = "inference_model"
#: XCom key of what reconciling the deployment did (pushed by the create operator).
RECONCILE_XCOM_KEY = "reconcile"
#: XCom key of the snapshot chain outcome (pushed by the hotload operator, also when it fails).
SNAPSHOT_CHAIN_XCOM_KEY = "snapshot_chain"
#: Task-state-store key marking that ``force_recreate`` already recreated the deployment.
RECREATED_STATE_KEY = "fireworks_recreated_deployment"


class FireworksBaseDeploymentOperator(BaseOperator):
    """What every deployment operator shares: connection, deployment id, waits, console link.

    :param deployment_id: the deployment (templated).
    :param fireworks_conn_id: the ``fireworks`` connection.
    :param wait_for_completion: wait until the operation took effect.
    :param deferrable: wait in the triggerer instead of the worker.
    :param poll_interval: seconds between polls while waiting.
    :param timeout: seconds (or ``timedelta``) a wait may last before the task fails.
    """

    template_fields: Sequence[str] = ("deployment_id", "fireworks_conn_id")
    operator_extra_links = (FireworksDeploymentLink(),)
    ui_color = "#6720ff"
    ui_fgcolor = "#ffffff"

    def __init__(
        self,
        *,
        deployment_id: str,
        fireworks_conn_id: str = FireworksHook.default_conn_name,
        wait_for_completion: bool = True,
        deferrable: bool = default_deferrable(),
        poll_interval: float | timedelta = 15.0,
        timeout: float | timedelta = 600.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.deployment_id = deployment_id
        self.fireworks_conn_id = fireworks_conn_id
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.poll_interval = to_seconds(poll_interval, "poll_interval")
        self.timeout = to_seconds(timeout, "timeout")
        if is_static(deployment_id):
            validate_deployment_id(deployment_id)

    @cached_property
    def hook(self) -> FireworksHook:
        return FireworksHook(fireworks_conn_id=self.fireworks_conn_id)

    def validate_rendered(self) -> None:
        """Check the rendered templated fields before any request (raises naming the field)."""
        self.deployment_id = validate_deployment_id(self.deployment_id)

    def publish_link(self, context: Context) -> None:
        """Store the console link as soon as the deployment id is known (visible while waiting)."""
        link = FireworksDeploymentLink()
        link.persist(context, link.url_for(self))

    def defer_wait(
        self,
        trigger: BaseTrigger,
        deadline: float,
        kwargs: dict[str, Any] | None = None,
        method_name: str = "execute_complete",
    ) -> NoReturn:
        """Hand the wait to the triggerer; the task resumes in ``method_name``."""
        remaining = max(0.0, deadline - time.time())
        self.defer(
            trigger=trigger,
            method_name=method_name,
            kwargs=kwargs,
            timeout=timedelta(seconds=remaining + DEFERRAL_GRACE_S),
        )

    def deployment_trigger(
        self,
        target: DeploymentTarget,
        deadline: float,
        *,
        delete_on_kill: bool = False,
        min_replicas: int = 0,
    ) -> FireworksDeploymentTrigger:
        return FireworksDeploymentTrigger(
            self.deployment_id,
            target=target,
            fireworks_conn_id=self.fireworks_conn_id,
            deadline=deadline,
            poll_interval=self.poll_interval,
            delete_on_kill=delete_on_kill,
            min_replicas=min_replicas,
        )

    def wait_in_worker(
        self, target: DeploymentTarget, deadline: float, min_replicas: int = 0
    ) -> dict[str, Any] | None:
        """Poll from the worker until ``target``; the deployment dict (None when it is gone)."""
        try:
            info = self.hook.wait_for(
                target,
                self.deployment_id,
                timeout_s=max(0.0, deadline - time.time()),
                poll_interval_s=self.poll_interval,
                min_replicas=min_replicas,
            )
        except FireworksError as err:
            raise_for_airflow(err)
        return info.to_dict() if info is not None else None

    def deployment_from_event(self, event: Any) -> dict[str, Any] | None:
        """The deployment dict of a successful deployment-wait event; raises on error/timeout
        (``AirflowFailException`` when the deployment is gone or scaled to zero on purpose)."""
        checked = validate_event(event, ("deployment",))
        if checked["status"] != "success":
            final = checked.get("reason") in FINAL_EVENT_REASONS
            raise (AirflowFailException if final else AirflowException)(
                f"{checked['status']}: {checked['message']}"
            )
        deployment = checked.get("deployment")
        if deployment is not None and not isinstance(deployment, Mapping):
            raise AirflowException(f"trigger event 'deployment' must be a dict or null, got {deployment!r}")
        self.log.info("%s", checked["message"])
        return dict(deployment) if deployment is not None else None

    def wait(
        self, target: DeploymentTarget, *, delete_on_kill: bool = False, min_replicas: int = 0
    ) -> dict[str, Any] | None:
        """Wait for ``target`` in the worker, or defer (never returns when deferring)."""
        deadline = time.time() + self.timeout
        if self.deferrable:
            self.defer_wait(
                self.deployment_trigger(
                    target, deadline, delete_on_kill=delete_on_kill, min_replicas=min_replicas
                ),
                deadline,
            )
        return self.wait_in_worker(target, deadline, min_replicas)

    def ensure_serving(self, wake_timeout: float, resume_method: str) -> None:
        """Make sure a replica serves before sending work (see ``serving_now``); when the
        deployment is waking, wait through its cold start in the worker or defer (the task then
        resumes in ``resume_method``)."""
        if serving_now(self.hook, self.deployment_id, self.log):
            return
        deadline = time.time() + wake_timeout
        if self.deferrable:
            self.defer_wait(
                self.deployment_trigger(DeploymentTarget.SERVING, deadline),
                deadline,
                method_name=resume_method,
            )
        self.wait_in_worker(DeploymentTarget.SERVING, deadline)


class FireworksCreateDeploymentOperator(FireworksBaseDeploymentOperator):
    """Create a deployment, or bring the existing one with the same id in line with this task's
    config, and wait until it serves with the requested replicas.

    Made for scheduled pipelines that use one stable deployment id run after run. With
    ``reconcile=True`` (the default) an existing deployment is compared with the config: mutable
    differences (replica counts, autoscaling windows, description, annotations, trainer link, ...)
    are sent as one PATCH whose update mask names exactly those fields, each logged as
    ``field: old -> new``, so the run after a scale-to-zero teardown or a hand change brings the
    configured replicas back by itself; immutable differences (base model, shape, accelerator,
    region, ...) fail the task before anything is written, naming each field and the two ways out
    (``force_recreate=True`` or a new deployment id). ``reconcile=False`` keeps the SDK's
    ``create_or_get``: an existing deployment is used as it is.

    Returns ``DeploymentInfo.to_dict()``, pushes the inference ``model`` string to XCom under
    ``inference_model`` and what reconciling did under ``reconcile`` (``{"action": "created" |
    "recreated" | "updated" | "unchanged", "changes": [...]}``). A retried task reuses the
    deployment (the id is the key): it is never created twice.

    :param deployment_id: the deployment id, stable across runs and retries (templated).
    :param base_model: e.g. ``accounts/fireworks/models/qwen3-8b`` (templated).
    :param deployment_shape: ``accounts/<a>/deploymentShapes/<s>[/versions/<v>]`` (templated).
    :param min_replica_count: minimum replicas (templated).
    :param max_replica_count: maximum replicas (templated).
    :param accelerator_type: without a shape, e.g. ``NVIDIA_H100_80GB`` (templated).
    :param region: e.g. ``US_IOWA_1`` (templated).
    :param hot_load_trainer_job: ``accounts/<a>/rlorTrainerJobs/<j>`` (templated).
    :param config: any other ``DeploymentConfig`` field, e.g. ``{"scale_to_zero_window_s": 600}``
        (templated; a key given both here and as a parameter is an error).
    :param force_recreate: delete and recreate the deployment if it exists (once per task
        instance: a retry after the recreation reuses the new deployment).
    :param delete_on_kill: delete the deployment when the task is killed while waiting.
    :param reconcile: apply mutable config drift to an existing deployment and refuse immutable
        drift (default); False uses an existing deployment unchanged.
    """

    template_fields: Sequence[str] = (
        "deployment_id",
        "fireworks_conn_id",
        "base_model",
        "deployment_shape",
        "min_replica_count",
        "max_replica_count",
        "accelerator_type",
        "region",
        "hot_load_trainer_job",
        "config",
    )
    template_fields_renderers = {"config": "json"}

    def __init__(
        self,
        *,
        deployment_id: str,
        base_model: str,
        deployment_shape: str | None = None,
        min_replica_count: int | str = 0,
        max_replica_count: int | str = 1,
        accelerator_type: str | None = None,
        region: str | None = None,
        hot_load_trainer_job: str | None = None,
        config: Mapping[str, Any] | None = None,
        force_recreate: bool = False,
        delete_on_kill: bool = False,
        reconcile: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(deployment_id=deployment_id, **kwargs)
        self.reconcile = check_bool(reconcile, "reconcile")
        self.base_model = base_model
        self.deployment_shape = deployment_shape
        self.min_replica_count = min_replica_count
        self.max_replica_count = max_replica_count
        self.accelerator_type = accelerator_type
        self.region = region
        self.hot_load_trainer_job = hot_load_trainer_job
        self.config = dict(config) if isinstance(config, Mapping) else config
        self.force_recreate = force_recreate
        self.delete_on_kill = delete_on_kill
        if all(is_static(getattr(self, name)) for name in self.template_fields):
            self.deployment_config()

    def deployment_config(self) -> DeploymentConfig:
        """The validated ``DeploymentConfig`` from the (rendered) parameters."""
        fields: dict[str, Any] = {
            "deployment_id": self.deployment_id,
            "base_model": self.base_model,
            "min_replica_count": self.min_replica_count,
            "max_replica_count": self.max_replica_count,
        }
        for name in ("deployment_shape", "accelerator_type", "region", "hot_load_trainer_job"):
            if getattr(self, name) is not None:
                fields[name] = getattr(self, name)
        extra = self.config or {}
        if not isinstance(extra, Mapping):
            raise ValueError(f"config must be a dict of DeploymentConfig fields, got {type(extra).__name__}")
        clash = sorted(set(extra) & {"deployment_id", "base_model", *fields})
        if clash:
            raise ValueError(f"config repeats {', '.join(clash)}; pass each field once (parameter or config)")
        return DeploymentConfig.from_dict({**fields, **extra})

    def execute(self, context: Context) -> dict[str, Any]:
        with failing_on_bad_input():
            config = self.deployment_config()
        self.deployment_id = config.deployment_id
        self.publish_link(context)
        force = self.force_recreate and not self._already_recreated(context)
        try:
            existing = None if force else self.hook.get_deployment(config.deployment_id)
            if existing is None or existing.state.is_failed():  # about to be created: say by whom
                config = with_creation_annotations(config, context)
            if self.reconcile:
                outcome = self.hook.reconcile(config, force_recreate=force)
                info = outcome.deployment
                context["ti"].xcom_push(key=RECONCILE_XCOM_KEY, value=outcome.to_dict())
            else:
                info = self.hook.create_or_get(config, force_recreate=force)
        except FireworksError as err:
            raise_for_airflow(err)
        if force:
            self._remember_recreated(context, info.name or self.deployment_id)
        self.log.info("Deployment %s is %s", info.name or self.deployment_id, info.describe())
        wanted = config.min_replica_count if self.reconcile else 0
        done = check_deployment(DeploymentTarget.READY, self.deployment_id, info, min_replicas=wanted)
        if not self.wait_for_completion or (
            done.outcome == "success" and not (self.reconcile and outcome.changes)
        ):
            return self._finish(context, info.to_dict())
        result = self.wait(DeploymentTarget.READY, delete_on_kill=self.delete_on_kill, min_replicas=wanted)
        return self._finish(context, result)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        return self._finish(context, self.deployment_from_event(event))

    def _finish(self, context: Context, deployment: dict[str, Any] | None) -> dict[str, Any]:
        if deployment is None:
            raise AirflowException(f"deployment {self.deployment_id!r} does not exist")
        model = deployment.get("inference_model")
        if model:
            context["ti"].xcom_push(key=INFERENCE_MODEL_XCOM_KEY, value=model)
        record_deployment_usage(self.hook, context, self.deployment_id, action=self.task_type)
        return deployment

    @staticmethod
    def _already_recreated(context: Context) -> bool:
        store = context.get("task_state_store")
        return store is not None and store.get(RECREATED_STATE_KEY) is not None

    @staticmethod
    def _remember_recreated(context: Context, name: str) -> None:
        store = context.get("task_state_store")
        if store is not None:
            store.set(RECREATED_STATE_KEY, name)

    def on_kill(self) -> None:
        if self.delete_on_kill:
            self.log.info("Task killed: deleting deployment %s", self.deployment_id)
            self.hook.delete_deployment(self.deployment_id)


class FireworksUpdateDeploymentOperator(FireworksBaseDeploymentOperator):
    """PATCH a deployment with an explicit update mask, then optionally wait until it is READY.

    Either give ``body`` (camelCase fields) and ``update_mask`` (snake_case paths; required, as a
    PATCH without a mask makes the server reset every field not in the body), or use the
    convenience parameters, which build both; the two can be combined when they do not overlap.

    :param body: camelCase fields to change (templated).
    :param update_mask: snake_case paths, comma-separated or a list (templated).
    :param min_replica_count: new minimum replicas (templated).
    :param max_replica_count: new maximum replicas (templated).
    :param scale_up_window_s: autoscaling scale-up window, seconds (templated).
    :param scale_down_window_s: autoscaling scale-down window, seconds (templated).
    :param scale_to_zero_window_s: autoscaling scale-to-zero window, seconds >= 300 (templated).
    """

    template_fields: Sequence[str] = (
        "deployment_id",
        "fireworks_conn_id",
        "body",
        "update_mask",
        "min_replica_count",
        "max_replica_count",
        "scale_up_window_s",
        "scale_down_window_s",
        "scale_to_zero_window_s",
    )
    template_fields_renderers = {"body": "json"}

    def __init__(
        self,
        *,
        deployment_id: str,
        body: Mapping[str, Any] | None = None,
        update_mask: str | Sequence[str] | None = None,
        min_replica_count: int | str | None = None,
        max_replica_count: int | str | None = None,
        scale_up_window_s: float | str | None = None,
        scale_down_window_s: float | str | None = None,
        scale_to_zero_window_s: float | str | None = None,
        wait_for_completion: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(deployment_id=deployment_id, wait_for_completion=wait_for_completion, **kwargs)
        self.body = dict(body) if isinstance(body, Mapping) else body
        self.update_mask = update_mask
        self.min_replica_count = min_replica_count
        self.max_replica_count = max_replica_count
        self.scale_up_window_s = scale_up_window_s
        self.scale_down_window_s = scale_down_window_s
        self.scale_to_zero_window_s = scale_to_zero_window_s
        if all(is_static(getattr(self, name)) for name in self.template_fields):
            self.request()

    def request(self) -> tuple[dict[str, Any], str]:
        """The PATCH body and mask from ``body``/``update_mask`` and the convenience parameters
        (encoded by ``api.drift.patch_request``, the same table create's reconcile uses)."""
        body: dict[str, Any] = {}
        paths: list[str] = []
        if self.body is not None:
            if not isinstance(self.body, Mapping):
                raise ValueError(f"body must be a dict of camelCase fields, got {type(self.body).__name__}")
            if not self.update_mask:
                raise ValueError(
                    "update_mask is required with body: without it the server resets every field not in "
                    "the body; pass the snake_case paths, e.g. 'min_replica_count,max_replica_count'"
                )
            body.update(self.body)
            mask = self.update_mask
            paths.extend(p.strip() for p in (mask.split(",") if isinstance(mask, str) else mask) if p.strip())
        elif self.update_mask:
            raise ValueError("update_mask was given without body; pass the fields to change in body")
        patch = patch_request(self.deployment_id, self._convenience_fields())
        for key, value in patch.patch_body().items():
            if key in body:
                raise ValueError(f"body already sets {key}; drop it or the matching parameter")
            body[key] = value
        paths.extend(change.mask_path for change in patch.changes)
        if not body:
            raise ValueError(
                "nothing to update: pass body and update_mask, or min_replica_count, max_replica_count or "
                "a scale_*_window_s parameter"
            )
        try:
            return body, validate_update_mask(body, paths)
        except FireworksError as err:
            raise ValueError(str(err)) from err

    def _convenience_fields(self) -> dict[str, Any]:
        """The replica counts and autoscaling windows given as parameters, validated."""
        fields: dict[str, Any] = {}
        for name in ("min_replica_count", "max_replica_count"):
            if getattr(self, name) is not None:
                fields[name] = check_int(getattr(self, name), name, 0, parse_str=True)
        for name in ("scale_up_window_s", "scale_down_window_s", "scale_to_zero_window_s"):
            if getattr(self, name) is not None:
                minimum = MIN_SCALE_TO_ZERO_WINDOW_S if name == "scale_to_zero_window_s" else 0.0
                fields[name] = check_seconds(to_seconds(getattr(self, name), name), name, minimum=minimum)
        low, high = fields.get("min_replica_count"), fields.get("max_replica_count")
        if low is not None and high is not None and low > high:
            raise ValueError(f"min_replica_count ({low}) must be <= max_replica_count ({high})")
        return fields

    def execute(self, context: Context) -> dict[str, Any] | None:
        with failing_on_bad_input():
            self.validate_rendered()
            body, mask = self.request()
        self.publish_link(context)
        self.log.info("Updating deployment %s (update mask %s)", self.deployment_id, mask)
        try:
            info = self.hook.update_deployment(self.deployment_id, body, mask)
        except FireworksError as err:
            raise_for_airflow(err)
        if not self.wait_for_completion:
            return info.to_dict()
        return self.wait(DeploymentTarget.READY)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any] | None:
        return self.deployment_from_event(event)


class FireworksHotloadOperator(FireworksBaseDeploymentOperator):
    """Hot-load a snapshot into a deployment and wait until every replica serves it.

    Full load by default; give ``previous_snapshot_identity`` for an incremental (delta) load on
    top of the snapshot the deployment serves. A retried task does not send the hotload again
    when every replica already serves the identity, or a load of it is in progress: it only waits.

    Before loading, a deployment the platform scaled to zero is woken (one inference request,
    then a deferrable wait through the cold start); one that is gone, failed or scaled to zero on
    purpose (``maxReplicaCount`` 0) fails the task at once, naming the state and the fix.

    The snapshot chain is kept honest: a delta is sent only when every replica serves exactly
    ``previous_snapshot_identity``. Otherwise (deployment recreated or auto-deleted, a new
    replica, an earlier failed load) the full ``fallback_snapshot_identity`` is loaded instead when
    given, else the task fails without sending anything, naming the served and expected
    identities. The outcome is in the result and in XCom under ``snapshot_chain``: ``full``,
    ``continued``, ``restarted`` (fallback loaded) or ``broken``, so a trainer task can decide to
    save a full snapshot next.

    Returns ``{"deployment_id", "identity" (the snapshot now served), "requested_identity",
    "previous_identity", "incremental", "chain", "served_before", "sent", "started_at", "load_s",
    "replicas", "warmup_ok", "warmup_s"}``.

    :param base_model: the deployment's base model (templated).
    :param snapshot_identity: the snapshot to load (templated).
    :param previous_snapshot_identity: base of an incremental snapshot (templated).
    :param fallback_snapshot_identity: a full snapshot to load when the delta's base is not what
        the replicas serve (templated).
    :param compression_format: incremental snapshot compression.
    :param checksum_format: incremental snapshot checksum (the wire spelling ``alder32``).
    :param reset_prompt_cache: drop the prompt cache built on the old weights.
    :param source_url: object-store URI some backends fetch the snapshot from (templated).
    :param warmup: after the load, send small completions until one succeeds.
    :param warmup_max_retries: warmup attempts.
    :param warmup_retry_interval: seconds between warmup attempts.
    :param wake_timeout: seconds a wake-up from zero replicas (cold start) may take.
    """

    template_fields: Sequence[str] = (
        "deployment_id",
        "fireworks_conn_id",
        "base_model",
        "snapshot_identity",
        "previous_snapshot_identity",
        "fallback_snapshot_identity",
        "source_url",
    )

    def __init__(
        self,
        *,
        deployment_id: str,
        base_model: str,
        snapshot_identity: str,
        previous_snapshot_identity: str | None = None,
        fallback_snapshot_identity: str | None = None,
        compression_format: str = "arc_v2",
        checksum_format: str = "alder32",
        reset_prompt_cache: bool = True,
        source_url: str | None = None,
        warmup: bool = False,
        warmup_max_retries: int = 10,
        warmup_retry_interval: float = 10.0,
        poll_interval: float | timedelta = 5.0,
        timeout: float | timedelta = 400.0,
        wake_timeout: float | timedelta = 900.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(deployment_id=deployment_id, poll_interval=poll_interval, timeout=timeout, **kwargs)
        self.base_model = base_model
        self.snapshot_identity = snapshot_identity
        self.previous_snapshot_identity = previous_snapshot_identity
        self.fallback_snapshot_identity = fallback_snapshot_identity
        self.wake_timeout = to_seconds(wake_timeout, "wake_timeout")
        self.compression_format = compression_format
        self.checksum_format = checksum_format
        self.reset_prompt_cache = check_bool(reset_prompt_cache, "reset_prompt_cache")
        self.source_url = source_url
        self.warmup = check_bool(warmup, "warmup")
        if (
            isinstance(warmup_max_retries, bool)
            or not isinstance(warmup_max_retries, int)
            or warmup_max_retries < 1
        ):
            raise ValueError(f"warmup_max_retries must be an integer >= 1, got {warmup_max_retries!r}")
        self.warmup_max_retries = warmup_max_retries
        self.warmup_retry_interval = to_seconds(warmup_retry_interval, "warmup_retry_interval")
        if all(is_static(getattr(self, name)) for name in self.template_fields):
            self.validate_rendered()

    def validate_rendered(self) -> None:
        super().validate_rendered()
        self.base_model = validate_base_model(self.base_model)
        for name in ("snapshot_identity", "previous_snapshot_identity", "fallback_snapshot_identity"):
            value = getattr(self, name)
            if name != "snapshot_identity" and value in (None, ""):
                setattr(self, name, None)
                continue
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{name} must be a non-empty string, got {value!r}")
            setattr(self, name, value.strip())
        if self.previous_snapshot_identity == self.snapshot_identity:
            raise ValueError(
                "previous_snapshot_identity equals snapshot_identity; an incremental load needs the identity "
                "the deployment serves now as its base"
            )
        if self.fallback_snapshot_identity is not None and self.previous_snapshot_identity is None:
            raise ValueError(
                "fallback_snapshot_identity is only used with previous_snapshot_identity (an incremental "
                "load); for a full load pass the full snapshot as snapshot_identity"
            )

    def incremental_metadata(self) -> dict[str, str] | None:
        if self.previous_snapshot_identity is None:
            return None
        return {
            "previous_snapshot_identity": self.previous_snapshot_identity,
            "compression_format": self.compression_format,
            "checksum_format": self.checksum_format,
        }

    def execute(self, context: Context) -> dict[str, Any]:
        with failing_on_bad_input():
            self.validate_rendered()
        self.publish_link(context)
        self.ensure_serving(self.wake_timeout, "execute_after_wake")
        return self.load(context)

    def execute_after_wake(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Resume after a deferred wake-up from zero replicas: load the snapshot."""
        self.deployment_from_event(event)
        return self.load(context)

    def load(self, context: Context) -> dict[str, Any]:
        """Send the load (unless already served or underway) and wait until every replica serves it."""
        started_at = time.time()
        plan = self._plan(context)
        deadline = started_at + self.timeout
        if self.deferrable:
            self.defer_wait(
                FireworksHotloadTrigger(
                    self.deployment_id,
                    self.base_model,
                    plan["identity"],
                    fireworks_conn_id=self.fireworks_conn_id,
                    deadline=deadline,
                    poll_interval=self.poll_interval,
                    started_at=started_at,
                ),
                deadline,
                kwargs={"plan": plan},
            )
        try:
            status = self.hook.wait_for_hotload(
                self.deployment_id,
                self.base_model,
                plan["identity"],
                timeout_s=max(0.0, deadline - time.time()),
                poll_interval_s=self.poll_interval,
            )
        except FireworksError as err:
            raise_for_airflow(err)
        return self._finish(plan, started_at, time.time() - started_at, len(status.replicas))

    def _plan(self, context: Context) -> dict[str, Any]:
        """Decide what to load (the delta, the fallback, or nothing when already served or
        underway), check the snapshot chain, send, and say so in XCom."""
        try:
            status = self.hook.hotload_status(self.deployment_id, self.base_model)
        except FireworksError as err:
            raise_for_airflow(err)
        served_before = status.current_identities
        plan: dict[str, Any] = {"identity": self.snapshot_identity, "served_before": served_before}
        incremental = self.previous_snapshot_identity is not None
        plan["chain"] = "continued" if incremental else "full"
        fallback = self.fallback_snapshot_identity
        if fallback is not None and self._served_or_underway(status, fallback):
            plan.update(identity=fallback, chain="restarted", sent=False)
        elif self._served_or_underway(status, self.snapshot_identity):
            plan["sent"] = False
        else:
            delta: dict[str, str] | None = None
            if self.previous_snapshot_identity is not None:
                broken = status.chain_break(self.previous_snapshot_identity)
                if broken is None:
                    delta = self.incremental_metadata()
                elif fallback is not None:
                    self.log.warning(
                        "Snapshot chain broken (%s, expected %r); loading the full fallback %s instead",
                        broken,
                        self.previous_snapshot_identity,
                        fallback,
                    )
                    plan.update(identity=fallback, chain="restarted")
                else:
                    plan["chain"] = "broken"
                    context["ti"].xcom_push(key=SNAPSHOT_CHAIN_XCOM_KEY, value=plan)
                    error = SnapshotChainError(
                        self.deployment_id, self.snapshot_identity, self.previous_snapshot_identity, broken
                    )
                    raise_for_airflow(error)
            self._send(plan["identity"], delta)
            plan["sent"] = True
        context["ti"].xcom_push(key=SNAPSHOT_CHAIN_XCOM_KEY, value=plan)
        return plan

    def _served_or_underway(self, status: HotloadStatus, identity: str) -> bool:
        if status.evaluate(identity).outcome == "ready":
            self.log.info("Every replica already serves %s; not sending it again", identity)
            return True
        if status.is_loading(identity):
            self.log.info("A load of %s is already in progress; waiting for it", identity)
            return True
        return False

    def _send(self, identity: str, delta: dict[str, str] | None) -> None:
        self.log.info(
            "Hot-loading %s into %s (%s)",
            identity,
            self.deployment_id,
            f"incremental on {self.previous_snapshot_identity}" if delta else "full",
        )
        try:
            self.hook.hotload(
                self.deployment_id,
                self.base_model,
                identity,
                incremental_snapshot_metadata=delta,
                reset_prompt_cache=self.reset_prompt_cache,
                source_url=self.source_url,
                check_chain=False,  # checked just before, on the same status
            )
        except FireworksError as err:
            raise_for_airflow(err)

    def execute_complete(
        self, context: Context, event: dict[str, Any], plan: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        checked = validate_event(event, ("hotload", "started_at", "elapsed_s"))
        if checked["status"] != "success":
            raise AirflowException(f"hotload {checked['status']}: {checked['message']}")
        self.log.info("%s", checked["message"])
        hotload = checked["hotload"]
        replicas = hotload.get("replicas") if isinstance(hotload, Mapping) else None
        if not isinstance(replicas, list):
            raise AirflowException(
                f"trigger event 'hotload' must be a dict with a replicas list, got {hotload!r}"
            )
        started_at, elapsed = checked["started_at"], checked["elapsed_s"]
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (started_at, elapsed)):
            raise AirflowException("trigger event 'started_at' and 'elapsed_s' must be numbers")
        return self._finish(
            self._resumed_plan(checked, plan), float(started_at), float(elapsed), len(replicas)
        )

    def _resumed_plan(self, event: Mapping[str, Any], plan: Any) -> dict[str, Any]:
        """The load plan after deferral: from the deferral kwargs, else (``dag.test()`` in Airflow
        3.3 drops them) rebuilt from the identity the trigger waited for."""
        if isinstance(plan, Mapping) and isinstance(plan.get("identity"), str):
            return dict(plan)
        identity = event.get("identity")
        if not isinstance(identity, str):
            raise AirflowException(f"trigger event has no snapshot 'identity', got {identity!r}")
        if identity == self.fallback_snapshot_identity:
            chain = "restarted"
        else:
            chain = "continued" if self.previous_snapshot_identity is not None else "full"
        return {"identity": identity, "chain": chain}

    def _finish(
        self, plan: dict[str, Any], started_at: float, load_s: float, replicas: int
    ) -> dict[str, Any]:
        warmup_ok: bool | None = None
        warmup_s: float | None = None
        if self.warmup:
            begin = time.time()
            try:
                model = self.hook.inference_model(self.deployment_id)
                warmup_ok = self.hook.warmup(
                    model, max_retries=self.warmup_max_retries, retry_interval_s=self.warmup_retry_interval
                )
            except FireworksError as err:
                raise_for_airflow(err)
            warmup_s = round(time.time() - begin, 3)
            if not warmup_ok:
                self.log.warning(
                    "Warmup of %s did not succeed after %d attempts", model, self.warmup_max_retries
                )
        return {
            "deployment_id": self.deployment_id,
            "identity": plan["identity"],
            "requested_identity": self.snapshot_identity,
            "previous_identity": self.previous_snapshot_identity,
            "incremental": plan["chain"] == "continued",
            "chain": plan["chain"],
            "served_before": plan.get("served_before"),
            "sent": plan.get("sent"),
            "started_at": started_at,
            "load_s": round(load_s, 3),
            "replicas": replicas,
            "warmup_ok": warmup_ok,
            "warmup_s": warmup_s,
        }


class FireworksScaleToZeroOperator(FireworksBaseDeploymentOperator):
    """Scale a deployment to zero replicas (explicit update mask), releasing its GPUs.

    Idempotent: a missing deployment counts as done. Suited to a teardown task
    (``.as_teardown(setups=create)``), which runs even when the DAG fails. Returns the deployment
    dict, or None when it does not exist.
    """

    def __init__(self, *, deployment_id: str, wait_for_completion: bool = False, **kwargs: Any) -> None:
        super().__init__(deployment_id=deployment_id, wait_for_completion=wait_for_completion, **kwargs)

    def execute(self, context: Context) -> dict[str, Any] | None:
        with failing_on_bad_input():
            self.validate_rendered()
        self.publish_link(context)
        try:
            info = self.hook.scale_to_zero(self.deployment_id)
        except DeploymentNotFoundError:
            self.log.info("Deployment %s does not exist; nothing to scale down", self.deployment_id)
            return None
        except FireworksError as err:
            raise_for_airflow(err)
        self.log.info("Deployment %s scaled to zero replicas (%s)", self.deployment_id, info.state.value)
        if not self.wait_for_completion:
            return info.to_dict()
        return self.wait(DeploymentTarget.SCALED_TO_ZERO)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any] | None:
        return self.deployment_from_event(event)


class FireworksDeleteDeploymentOperator(FireworksBaseDeploymentOperator):
    """Delete a deployment (hard delete); a missing one counts as done.

    Suited to a teardown task. Returns ``{"deployment_id", "deleted"}`` where ``deleted`` is False
    when the deployment was already gone.
    """

    def __init__(self, *, deployment_id: str, wait_for_completion: bool = False, **kwargs: Any) -> None:
        super().__init__(deployment_id=deployment_id, wait_for_completion=wait_for_completion, **kwargs)

    def execute(self, context: Context) -> dict[str, Any]:
        with failing_on_bad_input():
            self.validate_rendered()
        self.publish_link(context)
        try:
            deleted = self.hook.delete_deployment(self.deployment_id)
        except FireworksError as err:
            raise_for_airflow(err)
        self.log.info("Deployment %s %s", self.deployment_id, "deleted" if deleted else "was already gone")
        if deleted and self.wait_for_completion:
            self.wait(DeploymentTarget.DELETED)
        return {"deployment_id": self.deployment_id, "deleted": deleted}

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        self.deployment_from_event(event)
        return {"deployment_id": self.deployment_id, "deleted": True}
