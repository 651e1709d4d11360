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

import math
import time
from collections.abc import Mapping, Sequence
from contextlib import suppress
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.sdk import BaseOperator, conf
from airflow.sdk.exceptions import AirflowException

from airflow_fireworks.api import (
    DeploymentConfig,
    DeploymentNotFoundError,
    DeploymentState,
    FireworksError,
    validate_base_model,
    validate_deployment_id,
    validate_update_mask,
)
from airflow_fireworks.api.validation import check_bool
from airflow_fireworks.hooks.fireworks import FireworksHook
from airflow_fireworks.links import FireworksDeploymentLink
from airflow_fireworks.triggers.deployment import (
    DeploymentTarget,
    FireworksDeploymentTrigger,
    FireworksHotloadTrigger,
    check_deployment,
)

if TYPE_CHECKING:
    from airflow.sdk import Context
    from airflow.triggers.base import BaseTrigger

#: Grace the framework adds to a trigger's own deadline before it fails the task by itself.
DEFERRAL_GRACE_S = 60.0
EVENT_STATUSES = ("success", "error", "timeout")
#: XCom key of the deployment's inference ``model`` string (pushed by the create operator).
INFERENCE_MODEL_XCOM_KEY = "inference_model"
#: Task-state-store key marking that ``force_recreate`` already recreated the deployment.
RECREATED_STATE_KEY = "fireworks_recreated_deployment"


def is_static(value: Any) -> bool:
    """True when ``value`` is known at parse time (no Jinja template, no XComArg inside)."""
    if value is None or isinstance(value, bool | int | float):
        return True
    if isinstance(value, str):
        return "{{" not in value and "{%" not in value
    if isinstance(value, Mapping):
        return all(is_static(k) and is_static(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(is_static(v) for v in value)
    return False


def to_seconds(value: Any, field: str) -> float:
    """A duration > 0 in seconds from a number, numeric string or ``timedelta``."""
    if isinstance(value, timedelta):
        value = value.total_seconds()
    elif isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"{field} must be a number of seconds, got {value!r}") from None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{field} must be a number of seconds > 0, got {value!r}")
    return float(value)


def validate_event(event: Any, required: Sequence[str]) -> dict[str, Any]:
    """Check a trigger event: a dict with a known ``status``, a ``message`` string and, on
    success, the ``required`` keys. Raises AirflowException otherwise."""
    if not isinstance(event, Mapping):
        raise AirflowException(f"trigger event must be a dict with 'status' and 'message', got {event!r}")
    status = event.get("status")
    if status not in EVENT_STATUSES:
        raise AirflowException(
            f"trigger event has status {status!r}; expected one of {', '.join(EVENT_STATUSES)}"
        )
    if not isinstance(event.get("message"), str):
        raise AirflowException("trigger event has no 'message' string")
    missing = [key for key in required if key not in event]
    if status == "success" and missing:
        raise AirflowException(f"trigger success event lacks {', '.join(missing)}")
    return dict(event)


def default_deferrable() -> bool:
    """``[operators] default_deferrable`` (False when unset)."""
    return conf.getboolean("operators", "default_deferrable", fallback=False)


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
        self, trigger: BaseTrigger, deadline: float, kwargs: dict[str, Any] | None = None
    ) -> NoReturn:
        """Hand the wait to the triggerer; the task resumes in ``execute_complete``."""
        remaining = max(0.0, deadline - time.time())
        self.defer(
            trigger=trigger,
            method_name="execute_complete",
            kwargs=kwargs,
            timeout=timedelta(seconds=remaining + DEFERRAL_GRACE_S),
        )

    def deployment_trigger(
        self, target: DeploymentTarget, deadline: float, *, delete_on_kill: bool = False
    ) -> FireworksDeploymentTrigger:
        return FireworksDeploymentTrigger(
            self.deployment_id,
            target=target,
            fireworks_conn_id=self.fireworks_conn_id,
            deadline=deadline,
            poll_interval=self.poll_interval,
            delete_on_kill=delete_on_kill,
        )

    def wait_in_worker(self, target: DeploymentTarget, deadline: float) -> dict[str, Any] | None:
        """Poll from the worker until ``target``; the deployment dict (None when it is gone)."""
        try:
            if target is DeploymentTarget.READY:
                info = self.hook.wait_for_ready(
                    self.deployment_id,
                    timeout_s=max(0.0, deadline - time.time()),
                    poll_interval_s=self.poll_interval,
                )
                return info.to_dict()
            while True:
                current = self.hook.get_deployment(self.deployment_id)
                check = check_deployment(target, self.deployment_id, current)
                if check.outcome == "success":
                    self.log.info("%s", check.message)
                    return current.to_dict() if current is not None else None
                if check.outcome == "error":
                    raise AirflowException(check.message)
                remaining = deadline - time.time()
                if remaining <= 0:
                    raise AirflowException(
                        f"timed out after {self.timeout:g}s waiting for deployment {self.deployment_id!r} "
                        f"to be {target.value.replace('_', ' ')}; last seen: {check.message}"
                    )
                self.log.info("%s; polling again in %gs", check.message, self.poll_interval)
                time.sleep(min(self.poll_interval, remaining))
        except FireworksError as err:
            raise AirflowException(str(err)) from err

    def deployment_from_event(self, event: Any) -> dict[str, Any] | None:
        """The deployment dict of a successful deployment-wait event; raises on error/timeout."""
        checked = validate_event(event, ("deployment",))
        if checked["status"] != "success":
            raise AirflowException(f"{checked['status']}: {checked['message']}")
        deployment = checked.get("deployment")
        if deployment is not None and not isinstance(deployment, Mapping):
            raise AirflowException(f"trigger event 'deployment' must be a dict or null, got {deployment!r}")
        self.log.info("%s", checked["message"])
        return dict(deployment) if deployment is not None else None

    def wait(self, target: DeploymentTarget, *, delete_on_kill: bool = False) -> dict[str, Any] | None:
        """Wait for ``target`` in the worker, or defer (never returns when deferring)."""
        deadline = time.time() + self.timeout
        if self.deferrable:
            self.defer_wait(
                self.deployment_trigger(target, deadline, delete_on_kill=delete_on_kill), deadline
            )
        return self.wait_in_worker(target, deadline)


class FireworksCreateDeploymentOperator(FireworksBaseDeploymentOperator):
    """Create a deployment, or reuse the existing one with the same id, and wait until it serves.

    Returns ``DeploymentInfo.to_dict()`` and pushes the inference ``model`` string to XCom under
    ``inference_model``. A retried task reuses the deployment (the id is the key): it is never
    created twice.

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
        **kwargs: Any,
    ) -> None:
        super().__init__(deployment_id=deployment_id, **kwargs)
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
        config = self.deployment_config()
        self.deployment_id = config.deployment_id
        self.publish_link(context)
        force = self.force_recreate and not self._already_recreated(context)
        try:
            info = self.hook.create_or_get(config, force_recreate=force)
        except FireworksError as err:
            raise AirflowException(str(err)) from err
        if force:
            self._remember_recreated(context, info.name or self.deployment_id)
        self.log.info("Deployment %s is %s", info.name or self.deployment_id, info.state.value)
        if info.state is DeploymentState.READY or not self.wait_for_completion:
            return self._finish(context, info.to_dict())
        result = self.wait(DeploymentTarget.READY, delete_on_kill=self.delete_on_kill)
        return self._finish(context, result)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        return self._finish(context, self.deployment_from_event(event))

    def _finish(self, context: Context, deployment: dict[str, Any] | None) -> dict[str, Any]:
        if deployment is None:
            raise AirflowException(f"deployment {self.deployment_id!r} does not exist")
        model = deployment.get("inference_model")
        if model:
            context["ti"].xcom_push(key=INFERENCE_MODEL_XCOM_KEY, value=model)
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


def _duration(value: Any, field: str) -> str:
    return f"{to_seconds(value, field):g}s"


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
        """The PATCH body and mask from ``body``/``update_mask`` and the convenience parameters."""
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
        for attr, key, path in (
            ("min_replica_count", "minReplicaCount", "min_replica_count"),
            ("max_replica_count", "maxReplicaCount", "max_replica_count"),
        ):
            value = getattr(self, attr)
            if value is None:
                continue
            if isinstance(value, str):
                with suppress(ValueError):
                    value = int(value.strip())
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{attr} must be an integer >= 0, got {value!r}")
            self._add(body, paths, key, value, path)
        windows: dict[str, str] = {}
        for attr, key in (
            ("scale_up_window_s", "scaleUpWindow"),
            ("scale_down_window_s", "scaleDownWindow"),
            ("scale_to_zero_window_s", "scaleToZeroWindow"),
        ):
            value = getattr(self, attr)
            if value is None:
                continue
            if attr == "scale_to_zero_window_s" and to_seconds(value, attr) < 300:
                raise ValueError(f"scale_to_zero_window_s must be >= 300 seconds, got {value!r}")
            windows[key] = _duration(value, attr)
        if windows:
            if "autoscalingPolicy" in body:
                raise ValueError(
                    "body already sets autoscalingPolicy; drop it or the scale_*_window_s parameters"
                )
            body["autoscalingPolicy"] = windows
            paths.extend(f"autoscaling_policy.{_snake(key)}" for key in windows)
        low, high = body.get("minReplicaCount"), body.get("maxReplicaCount")
        if isinstance(low, int) and isinstance(high, int) and low > high:
            raise ValueError(f"min_replica_count ({low}) must be <= max_replica_count ({high})")
        if not body:
            raise ValueError(
                "nothing to update: pass body and update_mask, or min_replica_count, max_replica_count or "
                "a scale_*_window_s parameter"
            )
        try:
            return body, validate_update_mask(body, paths)
        except FireworksError as err:
            raise ValueError(str(err)) from err

    @staticmethod
    def _add(body: dict[str, Any], paths: list[str], key: str, value: Any, path: str) -> None:
        if key in body:
            raise ValueError(f"body already sets {key}; drop it or the matching parameter")
        body[key] = value
        paths.append(path)

    def execute(self, context: Context) -> dict[str, Any] | None:
        self.validate_rendered()
        body, mask = self.request()
        self.publish_link(context)
        self.log.info("Updating deployment %s (update mask %s)", self.deployment_id, mask)
        try:
            info = self.hook.update_deployment(self.deployment_id, body, mask)
        except FireworksError as err:
            raise AirflowException(str(err)) from err
        if not self.wait_for_completion:
            return info.to_dict()
        return self.wait(DeploymentTarget.READY)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any] | None:
        return self.deployment_from_event(event)


def _snake(camel: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in camel).lstrip("_")


class FireworksHotloadOperator(FireworksBaseDeploymentOperator):
    """Hot-load a snapshot into a deployment and wait until every replica serves it.

    Full load by default; give ``previous_snapshot_identity`` for an incremental (delta) load on
    top of the snapshot the deployment serves. A retried task does not send the hotload again
    when every replica already serves the identity, or a load of it is in progress: it only waits.
    Returns ``{"deployment_id", "identity", "previous_identity", "incremental", "sent",
    "started_at", "load_s", "replicas", "warmup_ok", "warmup_s"}``.

    :param base_model: the deployment's base model (templated).
    :param snapshot_identity: the snapshot to load (templated).
    :param previous_snapshot_identity: base of an incremental snapshot (templated).
    :param compression_format: incremental snapshot compression.
    :param checksum_format: incremental snapshot checksum (the wire spelling ``alder32``).
    :param reset_prompt_cache: drop the prompt cache built on the old weights.
    :param source_url: object-store URI some backends fetch the snapshot from (templated).
    :param warmup: after the load, send small completions until one succeeds.
    :param warmup_max_retries: warmup attempts.
    :param warmup_retry_interval: seconds between warmup attempts.
    """

    template_fields: Sequence[str] = (
        "deployment_id",
        "fireworks_conn_id",
        "base_model",
        "snapshot_identity",
        "previous_snapshot_identity",
        "source_url",
    )

    def __init__(
        self,
        *,
        deployment_id: str,
        base_model: str,
        snapshot_identity: str,
        previous_snapshot_identity: str | None = None,
        compression_format: str = "arc_v2",
        checksum_format: str = "alder32",
        reset_prompt_cache: bool = True,
        source_url: str | None = None,
        warmup: bool = False,
        warmup_max_retries: int = 10,
        warmup_retry_interval: float = 10.0,
        poll_interval: float | timedelta = 5.0,
        timeout: float | timedelta = 400.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(deployment_id=deployment_id, poll_interval=poll_interval, timeout=timeout, **kwargs)
        self.base_model = base_model
        self.snapshot_identity = snapshot_identity
        self.previous_snapshot_identity = previous_snapshot_identity
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
        for name in ("snapshot_identity", "previous_snapshot_identity"):
            value = getattr(self, name)
            if name == "previous_snapshot_identity" and value in (None, ""):
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

    def incremental_metadata(self) -> dict[str, str] | None:
        if self.previous_snapshot_identity is None:
            return None
        return {
            "previous_snapshot_identity": self.previous_snapshot_identity,
            "compression_format": self.compression_format,
            "checksum_format": self.checksum_format,
        }

    def execute(self, context: Context) -> dict[str, Any]:
        self.validate_rendered()
        self.publish_link(context)
        started_at = time.time()
        sent = self._send_unless_underway()
        deadline = started_at + self.timeout
        if self.deferrable:
            self.defer_wait(
                FireworksHotloadTrigger(
                    self.deployment_id,
                    self.base_model,
                    self.snapshot_identity,
                    fireworks_conn_id=self.fireworks_conn_id,
                    deadline=deadline,
                    poll_interval=self.poll_interval,
                    started_at=started_at,
                ),
                deadline,
                kwargs={"sent": sent},
            )
        try:
            status = self.hook.wait_for_hotload(
                self.deployment_id,
                self.base_model,
                self.snapshot_identity,
                timeout_s=max(0.0, deadline - time.time()),
                poll_interval_s=self.poll_interval,
            )
        except FireworksError as err:
            raise AirflowException(str(err)) from err
        return self._finish(started_at, time.time() - started_at, len(status.replicas), sent)

    def _send_unless_underway(self) -> bool:
        """Send the hotload unless the deployment already serves or loads this identity."""
        try:
            status = self.hook.hotload_status(self.deployment_id, self.base_model)
        except FireworksError as err:
            self.log.info("Hotload status unavailable before loading (%s); sending the hotload", err)
            status = None
        if status is not None:
            progress = status.evaluate(self.snapshot_identity)
            if progress.outcome == "ready":
                self.log.info("Already served, not sending again: %s", progress.message)
                return False
            if (
                any(
                    r.target_snapshot_identity == self.snapshot_identity
                    and r.stage not in ("error", "unknown")
                    for r in status.replicas
                )
                and progress.outcome == "pending"
            ):
                self.log.info("A load of %s is already in progress; waiting for it", self.snapshot_identity)
                return False
        self.log.info(
            "Hot-loading %s into %s (%s)",
            self.snapshot_identity,
            self.deployment_id,
            f"incremental on {self.previous_snapshot_identity}"
            if self.previous_snapshot_identity
            else "full",
        )
        try:
            self.hook.hotload(
                self.deployment_id,
                self.base_model,
                self.snapshot_identity,
                incremental_snapshot_metadata=self.incremental_metadata(),
                reset_prompt_cache=self.reset_prompt_cache,
                source_url=self.source_url,
            )
        except FireworksError as err:
            raise AirflowException(str(err)) from err
        return True

    def execute_complete(
        self, context: Context, event: dict[str, Any], sent: bool | None = None
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
        return self._finish(float(started_at), float(elapsed), len(replicas), sent)

    def _finish(self, started_at: float, load_s: float, replicas: int, sent: bool | None) -> dict[str, Any]:
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
                raise AirflowException(str(err)) from err
            warmup_s = round(time.time() - begin, 3)
            if not warmup_ok:
                self.log.warning(
                    "Warmup of %s did not succeed after %d attempts", model, self.warmup_max_retries
                )
        return {
            "deployment_id": self.deployment_id,
            "identity": self.snapshot_identity,
            "previous_identity": self.previous_snapshot_identity,
            "incremental": self.previous_snapshot_identity is not None,
            "sent": sent,
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
        self.validate_rendered()
        self.publish_link(context)
        try:
            info = self.hook.scale_to_zero(self.deployment_id)
        except DeploymentNotFoundError:
            self.log.info("Deployment %s does not exist; nothing to scale down", self.deployment_id)
            return None
        except FireworksError as err:
            raise AirflowException(str(err)) from err
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
        self.validate_rendered()
        self.publish_link(context)
        try:
            deleted = self.hook.delete_deployment(self.deployment_id)
        except FireworksError as err:
            raise AirflowException(str(err)) from err
        self.log.info("Deployment %s %s", self.deployment_id, "deleted" if deleted else "was already gone")
        if deleted and self.wait_for_completion:
            self.wait(DeploymentTarget.DELETED)
        return {"deployment_id": self.deployment_id, "deleted": deleted}

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        self.deployment_from_event(event)
        return {"deployment_id": self.deployment_id, "deleted": True}
