"""Trainer jobs (RLOR service-mode trainers): create, wait, resume, reconnect, delete, checkpoints,
promotion and training shapes, synchronously (``TrainerJobManager``, for tasks) and the read side
asynchronously (``AsyncTrainerJobs``, for triggers).

Both ride on the deployment clients' transport (session, headers, TLS, the one retry policy, the
error family), so a trainer call behaves exactly like a deployment call: retryable failures are
retried with backoff, other 4xx raise ``FireworksAPIError`` with status and server message, and
the API key travels only in headers.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any

import aiohttp
import requests

from airflow_fireworks.api import _http
from airflow_fireworks.api.aio import AsyncFireworksClient
from airflow_fireworks.api.deployments import DeploymentManager
from airflow_fireworks.api.errors import (
    FireworksAPIError,
    FireworksConnectionError,
    FireworksError,
    FireworksTimeoutError,
    FireworksValidationError,
    TrainerJobDeletedError,
    TrainerJobFailedError,
    TrainerJobNotFoundError,
)
from airflow_fireworks.api.models import validate_base_model, validate_deployment_id
from airflow_fireworks.api.retry import RetryPolicy
from airflow_fireworks.api.trainer_models import (
    CreatedTrainerJob,
    TrainerCheckpoint,
    TrainerJobConfig,
    TrainerJobInfo,
    TrainerJobState,
    TrainerServiceEndpoint,
    TrainingShapeProfile,
    job_id_from,
    parse_checkpoint_name,
    trainer_job_name,
    validate_output_model_id,
    validate_trainer_job_id,
    validate_training_shape,
)
from airflow_fireworks.api.trainer_waits import (
    DEFAULT_PENDING_TIMEOUT_S,
    DEFAULT_POLL_INTERVAL_S,
    DEFAULT_READY_TIMEOUT_S,
    TrainerJobCheck,
    TrainerTarget,
    TrainerWaitClock,
    check_trainer_job,
)
from airflow_fireworks.api.transport import normalise_url
from airflow_fireworks.api.validation import check_bool, check_int, check_seconds
from airflow_fireworks.api.waits import sleep_until_next_look

log = logging.getLogger(__name__)

GATEWAY_ENV = "FIREWORKS_TRAINER_GATEWAY_URL"
HEALTH_PATH = "/api/v1/healthz"
GET_TIMEOUT_S = 30.0
CREATE_TIMEOUT_S = 60.0
PROMOTE_TIMEOUT_S = 300.0
HEALTH_TIMEOUT_S = 5.0
RECONNECT_POLL_S = 10.0
RECONNECT_GET_RETRY_S = 5.0
HEARTBEAT_S = 60.0
_ASYNC_PROMOTION_MARKERS = ("async_promotion", "asyncpromotion")


def service_url(gateway: str, account_id: str, job_id: str) -> str:
    """``{gateway}/training/v1/rlorTrainerJobs/{account_id}/{job_id}``: where the trainer serves."""
    return f"{gateway}/training/v1/rlorTrainerJobs/{account_id}/{job_id}"


def needs_delete(info: TrainerJobInfo | None) -> bool:
    """False when there is nothing to delete: absent, a tombstone, or already DELETING."""
    return info is not None and not info.state.is_tombstone() and info.state is not TrainerJobState.DELETING


class TrainerJobManager(_http.ClosingContext):
    """Create, wait for, resume, reconnect, delete and promote RLOR trainer jobs.

    Same constructor as the SDK's (``account_id=`` is not accepted: the account comes from the key).
    The trainer gateway is ``trainer_gateway_url``, else ``$FIREWORKS_TRAINER_GATEWAY_URL``, else the
    control plane. Waits follow the SDK's rules (``check_trainer_job``): the placement (PENDING)
    budget has its own long default (48 h), the readiness budget starts when the job leaves PENDING,
    and a RUNNING job is ready once ``{service URL}/api/v1/healthz`` answers 200.
    """

    def __init__(
        self,
        api_key: str,
        base_url: str = _http.DEFAULT_BASE_URL,
        additional_headers: Mapping[str, str] | None = None,
        verify_ssl: bool | None = None,
        trainer_gateway_url: str | None = None,
        *,
        retry_policy: RetryPolicy | None = None,
        timeout_s: float = CREATE_TIMEOUT_S,
    ) -> None:
        self._client = DeploymentManager(
            api_key,
            base_url,
            additional_headers=additional_headers,
            verify_ssl=verify_ssl,
            retry_policy=retry_policy,
            timeout_s=timeout_s,
        )
        gateway = trainer_gateway_url or os.environ.get(GATEWAY_ENV) or self._client.base_url
        self.trainer_gateway_url = normalise_url(gateway, "trainer_gateway_url")
        self.boot_time_s: float | None = None

    def __repr__(self) -> str:
        return (
            f"TrainerJobManager(base_url={self.base_url!r}, trainer_gateway_url={self.trainer_gateway_url!r})"
        )

    def close(self) -> None:
        """Release pooled connections."""
        self._client.close()

    @property
    def base_url(self) -> str:
        return self._client.base_url

    @property
    def account_id(self) -> str:
        """The account the API key belongs to (looked up once, on first use)."""
        return self._client.account_id

    # --- transport ----------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        timeout: float = GET_TIMEOUT_S,
        expect: tuple[int, ...] = (),
        budget_s: float | None = None,
    ) -> requests.Response:
        return self._client._request(
            method,
            f"{self.base_url}{path}",
            headers=self._client._control_headers,
            params=params,
            body=body,
            timeout=timeout,
            expect=expect,
            budget_s=budget_s,
        )

    def _json(self, response: requests.Response, what: str) -> Any:
        return self._client._json(response, what)

    def _jobs_path(self) -> str:
        return f"/v1/accounts/{self.account_id}/rlorTrainerJobs"

    def _jobs_url(self) -> str:
        return f"{self.base_url}{self._jobs_path()}"

    def job_name(self, job_id: str) -> str:
        """``accounts/<account>/rlorTrainerJobs/<job_id>``: what ``hot_load_trainer_job`` names."""
        return trainer_job_name(self.account_id, validate_trainer_job_id(job_id))

    def service_url(self, job_id: str) -> str:
        """The trainer's service URL (``TrainerServiceEndpoint.base_url``)."""
        return service_url(self.trainer_gateway_url, self.account_id, validate_trainer_job_id(job_id))

    # --- create and read ----------------------------------------------------------------------

    def create(self, config: TrainerJobConfig) -> CreatedTrainerJob:
        """Create the job with a client-chosen id (``requested_job_id``, generated and written back
        into ``config`` before the POST, so a retry sends the same id).

        A 409 means the id exists: the job is returned as if created (``reused=True``) unless it is a
        DELETED/ARCHIVED tombstone (``TrainerJobDeletedError``: the id cannot be reused).
        """
        if not isinstance(config, TrainerJobConfig):
            raise FireworksValidationError(
                "config", "must be a TrainerJobConfig (see TrainerJobConfig.from_dict)"
            )
        config.validate()
        if config.disable_inactivity_cleanup and self.account_id != "fireworks":
            raise FireworksValidationError(
                "disable_inactivity_cleanup", "is only allowed for the 'fireworks' account"
            )
        job_id = config.ensure_job_id()
        response, existing = self._client._post_create(
            self._jobs_url(),
            lambda: self.try_get(job_id),
            params=dict(config.to_query_params()),
            body=config.to_request_body(),
            timeout=CREATE_TIMEOUT_S,
        )
        if existing is not None:
            if existing.state.is_tombstone():
                raise TrainerJobDeletedError(
                    job_id,
                    existing.state.value,
                    existing.status_message,
                    hint="a deleted job keeps its id; create the trainer with a new job id",
                )
            log.info("Trainer job %s already exists (%s)", job_id, existing.describe())
            return CreatedTrainerJob(
                existing.name or self.job_name(job_id), job_id, existing.state, reused=True
            )
        info = TrainerJobInfo.from_response(self._json(response, "create trainer job"))
        if info.status_message and info.status_message.startswith("Warning:"):
            log.warning("Trainer job %s: %s", info.job_id, info.status_message)
        log.info("Created trainer job %s (%s)", info.job_id, info.describe())
        return CreatedTrainerJob(info.name, info.job_id, info.state)

    def try_get(self, job_id: str) -> TrainerJobInfo | None:
        """The job, or None when it does not exist."""
        job_id = job_id_from(job_id)
        response = self._call("GET", f"{self._jobs_path()}/{job_id}", expect=(404,))
        if response.status_code == 404:
            return None
        return TrainerJobInfo.from_response(self._json(response, "get trainer job"), job_id=job_id)

    def get(self, job_id: str) -> TrainerJobInfo:
        """The job; ``TrainerJobNotFoundError`` when it does not exist."""
        info = self.try_get(job_id)
        if info is None:
            raise TrainerJobNotFoundError(job_id_from(job_id))
        return info

    def list_jobs(self, filter: str | None = None, page_size: int = 50) -> Iterator[TrainerJobInfo]:
        """Every trainer job of the account (optionally AIP-160 filtered), page by page."""
        for item in self._client._pages(self._jobs_url, "rlorTrainerJobs", filter, page_size):
            yield TrainerJobInfo.from_response(item)

    # --- health and waits ---------------------------------------------------------------------

    def is_healthy(self, job_id: str) -> bool:
        """One health probe of the trainer service: True on HTTP 200. Not retried and never raises
        (any other answer or failure means "not ready yet")."""
        url = f"{self.service_url(job_id)}{HEALTH_PATH}"
        try:
            response = self._client._session.get(
                url, headers=self._client._gateway_headers, timeout=HEALTH_TIMEOUT_S
            )
        except requests.RequestException as exc:
            log.debug("Health probe of trainer %s failed: %s", job_id, type(exc).__name__)
            return False
        log.debug("Health probe of trainer %s -> HTTP %d", job_id, response.status_code)
        return response.status_code == 200

    def endpoint(self, info: TrainerJobInfo, job_name: str | None = None) -> TrainerServiceEndpoint:
        """The service endpoint of a ready job."""
        return TrainerServiceEndpoint(
            job_name or info.name or self.job_name(info.job_id),
            info.job_id,
            self.service_url(info.job_id),
            info.max_context_length,
        )

    def check_ready(
        self, job_id: str, clock: TrainerWaitClock, job_name: str | None = None
    ) -> tuple[TrainerServiceEndpoint | None, TrainerJobCheck]:
        """One look (GET, then the health probe when RUNNING): the endpoint when ready, else None
        with what was seen. Raises what ``check_trainer_job`` calls an error or a timeout."""
        job_id = validate_trainer_job_id(job_id)
        info = self.try_get(job_id)
        check = check_trainer_job(TrainerTarget.READY, job_id, info, clock=clock, now=time.time())
        if check.outcome == "probe" and info is not None:
            check = check.after_probe(self.is_healthy(job_id), f"trainer job {job_id!r} is ready")
        if check.outcome in ("error", "timeout"):
            raise check.error(job_id, info)
        if check.outcome == "success" and info is not None:
            return self.endpoint(info, job_name), check
        return None, check

    def wait_for_ready(
        self,
        job_id: str,
        job_name: str | None = None,
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
        timeout_s: float = DEFAULT_READY_TIMEOUT_S,
        pending_timeout_s: float = DEFAULT_PENDING_TIMEOUT_S,
    ) -> TrainerServiceEndpoint:
        """Poll until RUNNING and healthy; the endpoint.

        Raises ``TrainerJobNotFoundError`` (absent, no grace), ``TrainerJobFailedError`` (FAILED, or a
        stopped state 30 s into the wait), ``TrainerJobDeletedError`` (tombstone), or
        ``FireworksTimeoutError`` (PENDING past ``pending_timeout_s`` from the start; not ready
        ``timeout_s`` after it left PENDING).
        """
        clock = TrainerWaitClock(
            time.time(),
            check_seconds(timeout_s, "timeout_s"),
            check_seconds(pending_timeout_s, "pending_timeout_s"),
        )
        return self.wait_with(
            job_id, clock, check_seconds(poll_interval_s, "poll_interval_s", positive=True), job_name
        )

    def wait_with(
        self, job_id: str, clock: TrainerWaitClock, poll_interval_s: float, job_name: str | None = None
    ) -> TrainerServiceEndpoint:
        """``wait_for_ready`` with a given clock (e.g. one carried over from a deferred task)."""
        started = time.monotonic()
        last_message, last_logged = "", 0.0
        while True:
            endpoint, check = self.check_ready(job_id, clock, job_name)
            if endpoint is not None:
                self.boot_time_s = time.monotonic() - started
                log.info("Trainer job %s is ready at %s", job_id, endpoint.base_url)
                return endpoint
            now = time.monotonic()
            if check.message != last_message or now - last_logged >= HEARTBEAT_S:
                log.info("%s", check.message)
                last_message, last_logged = check.message, now
            time.sleep(poll_interval_s)

    def wait_for_existing(
        self,
        job_id: str,
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
        timeout_s: float = DEFAULT_READY_TIMEOUT_S,
        pending_timeout_s: float = DEFAULT_PENDING_TIMEOUT_S,
    ) -> TrainerServiceEndpoint:
        """``wait_for_ready`` for a job created elsewhere."""
        return self.wait_for_ready(job_id, None, poll_interval_s, timeout_s, pending_timeout_s)

    def create_and_wait(
        self,
        config: TrainerJobConfig,
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
        timeout_s: float = DEFAULT_READY_TIMEOUT_S,
        pending_timeout_s: float = DEFAULT_PENDING_TIMEOUT_S,
    ) -> TrainerServiceEndpoint:
        """``create`` then ``wait_for_ready``."""
        created = self.create(config)
        return self.wait_for_ready(
            created.job_id, created.job_name, poll_interval_s, timeout_s, pending_timeout_s
        )

    def resume(self, job_id: str) -> None:
        """Send ``:resume`` (empty body); the state flips asynchronously. Does not wait."""
        job_id = job_id_from(job_id)
        response = self._call(
            "POST", f"{self._jobs_path()}/{job_id}:resume", timeout=CREATE_TIMEOUT_S, expect=(404,)
        )
        if response.status_code == 404:
            raise TrainerJobNotFoundError(job_id)
        log.info("Resume of trainer job %s requested", job_id)

    def resume_and_wait(
        self,
        job_id: str,
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
        timeout_s: float = DEFAULT_READY_TIMEOUT_S,
        pending_timeout_s: float = DEFAULT_PENDING_TIMEOUT_S,
    ) -> TrainerServiceEndpoint:
        """``resume`` then ``wait_for_existing`` (stopped states are tolerated for the first 30 s)."""
        self.resume(job_id)
        return self.wait_for_existing(job_id, poll_interval_s, timeout_s, pending_timeout_s)

    def reconnect(self, job_id: str, max_wait_for_resumable_s: float = 120.0) -> tuple[TrainerJobInfo, bool]:
        """Get a preempted or crashed trainer going again, without waiting for it to be ready.

        FAILED, CANCELLED, PAUSED or COMPLETED: ``:resume`` is sent (returns ``resumed=True``).
        RUNNING, PENDING, CREATING and other starting states: nothing to do (the readiness wait,
        with its own placement budget, follows; the SDK instead gives up on PENDING after 120 s).
        CANCELLING, EARLY_STOPPED, DELETING: polled every 10 s until resumable, at most
        ``max_wait_for_resumable_s``. A failing GET (including "not found") is retried every 5 s for
        that long too; a tombstone raises ``TrainerJobDeletedError`` at once.
        """
        job_id = job_id_from(job_id)
        limit = check_seconds(max_wait_for_resumable_s, "max_wait_for_resumable_s")
        started = time.monotonic()
        while True:
            elapsed = time.monotonic() - started
            try:
                info = self.get(job_id)
            except FireworksError as err:
                if elapsed >= limit:
                    raise
                log.info("Trainer job %s not readable yet (%s); retrying", job_id, err)
                time.sleep(min(RECONNECT_GET_RETRY_S, limit - elapsed))
                continue
            state = info.state
            if state.is_tombstone():
                raise TrainerJobDeletedError(
                    job_id, state.value, info.status_message, hint="its id cannot be reused"
                )
            if state.is_resumable():
                log.info("Trainer job %s is %s; resuming it", job_id, info.describe())
                self.resume(job_id)
                return info, True
            if not state.is_stopped():
                log.info("Trainer job %s is %s; waiting for it", job_id, info.describe())
                return info, False
            if elapsed >= limit:
                raise TrainerJobFailedError(
                    job_id,
                    state.value,
                    info.status_message,
                    hint=f"stuck in {state.short} for {limit:g}s; it cannot be resumed from there",
                )
            time.sleep(min(RECONNECT_POLL_S, limit - elapsed))

    def reconnect_and_wait(
        self,
        job_id: str,
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
        timeout_s: float = 600.0,
        max_wait_for_resumable_s: float = 120.0,
        pending_timeout_s: float = DEFAULT_PENDING_TIMEOUT_S,
    ) -> TrainerServiceEndpoint:
        """``reconnect`` (resume when needed), then wait until ready (see ``wait_for_ready``)."""
        self.reconnect(job_id, max_wait_for_resumable_s)
        return self.wait_for_existing(job_id, poll_interval_s, timeout_s, pending_timeout_s)

    # --- delete -------------------------------------------------------------------------------

    def delete(self, job_id: str) -> bool:
        """Delete the job (no ``ignoreChecks``/``hard``: trainer deletes take none). Does not wait.

        True when this call started the deletion; False when there was nothing to delete (absent,
        already DELETING, or a DELETED/ARCHIVED tombstone), so a teardown can always call it.
        Unlike the SDK, which only logs a failed delete (and so can leave a trainer holding GPUs
        unnoticed), any other failure raises ``FireworksAPIError``/``FireworksConnectionError``.
        """
        job_id = job_id_from(job_id)
        info = self.try_get(job_id)
        if not needs_delete(info):
            log.info("Trainer job %s: nothing to delete (%s)", job_id, info.describe() if info else "absent")
            return False
        response = self._call("DELETE", f"{self._jobs_path()}/{job_id}", expect=(404,))
        return _http.deleted(response.status_code, f"trainer job {job_id}")

    def wait_for_deleted(self, job_id: str, timeout_s: float = 60.0, poll_interval_s: float = 2.0) -> None:
        """Poll until the job is gone (404) or a tombstone; ``FireworksTimeoutError`` past the deadline."""
        job_id = job_id_from(job_id)
        deadline = time.monotonic() + check_seconds(timeout_s, "timeout_s")
        poll_interval_s = check_seconds(poll_interval_s, "poll_interval_s", positive=True)
        while True:
            check = check_trainer_job(TrainerTarget.DELETED, job_id, self.try_get(job_id))
            if check.outcome == "success":
                log.info("%s", check.message)
                return
            sleep_until_next_look(
                deadline, poll_interval_s, f"{check.message}; not deleted after {timeout_s:g}s"
            )

    # --- checkpoints and promotion ------------------------------------------------------------

    def list_checkpoints(self, job_id: str, page_size: int = 200) -> list[TrainerCheckpoint]:
        """The job's checkpoints, oldest first (also for a deleted job still retained)."""
        job_id = job_id_from(job_id)
        check_int(page_size, "page_size", 1, 200)
        params = {"pageSize": str(page_size)}
        rows: list[TrainerCheckpoint] = []
        while True:
            response = self._call(
                "GET", f"{self._jobs_path()}/{job_id}/checkpoints", params=params, expect=(404,)
            )
            if response.status_code == 404:
                raise TrainerJobNotFoundError(job_id)
            data = self._json(response, "list checkpoints")
            if not isinstance(data, Mapping):
                raise FireworksError("list checkpoints did not return a JSON object")
            items = data.get("checkpoints", data.get("rlorTrainerJobCheckpoints")) or []
            if not isinstance(items, list):
                raise FireworksError("list checkpoints: field 'checkpoints' should be a list")
            rows.extend(TrainerCheckpoint.from_response(item) for item in items)
            token = data.get("nextPageToken") or data.get("next_page_token")
            if not token:
                return rows
            params["pageToken"] = str(token)

    def latest_promotable_checkpoint(self, job_id: str) -> TrainerCheckpoint:
        """The newest checkpoint the server marks promotable (``FireworksValidationError`` if none)."""
        rows = self.list_checkpoints(job_id)
        for row in reversed(rows):
            if row.promotable:
                return row
        raise FireworksValidationError(
            "checkpoint",
            f"trainer job {job_id_from(job_id)!r} has no promotable checkpoint among its {len(rows)} "
            "(delta checkpoints cannot be promoted; save a base or merged_base checkpoint)",
        )

    def promote_checkpoint(
        self,
        job_id: str | None = None,
        checkpoint_id: str | None = None,
        output_model_id: str | None = None,
        base_model: str | None = None,
        *,
        name: str | None = None,
        hot_load_deployment_id: str | None = None,
        check_promotable: bool = True,
        timeout_s: float = 7200.0,
        poll_interval_s: float = 10.0,
    ) -> dict[str, Any]:
        """Turn a trainer checkpoint into a model ``accounts/<a>/models/<output_model_id>``; the model.

        Name the checkpoint with ``name`` (``accounts/<a>/rlorTrainerJobs/<job>/checkpoints/<id>``,
        preferred) or ``job_id`` + ``checkpoint_id``. ``output_model_id`` and ``base_model`` are
        required. With ``check_promotable`` (default) the job's checkpoint list is read first and a
        checkpoint that is missing or not ``promotable`` (a delta) is refused with nothing sent.
        A long-running operation is polled until done; an output model that already exists (a
        retried task) is returned instead of failing.
        """
        if name is not None:
            account, job, checkpoint = parse_checkpoint_name(name)
        else:
            job = job_id_from(job_id)
            if not isinstance(checkpoint_id, str) or not checkpoint_id.strip():
                raise FireworksValidationError("checkpoint_id", "is required with job_id (or pass name=)")
            account, checkpoint = self.account_id, checkpoint_id.strip()
        output_model_id = validate_output_model_id(output_model_id)
        base_model = validate_base_model(base_model)
        check_bool(check_promotable, "check_promotable")
        deadline = time.monotonic() + check_seconds(timeout_s, "timeout_s")
        poll_interval_s = check_seconds(poll_interval_s, "poll_interval_s", positive=True)
        if check_promotable:
            self._check_promotable(job, checkpoint)
        body: dict[str, Any] = {
            "output_model": f"accounts/{account}/models/{output_model_id}",
            "trainer_job_id": trainer_job_name(account, job),
            "base_model": base_model,
        }
        if hot_load_deployment_id is not None:
            dep = validate_deployment_id(hot_load_deployment_id, "hot_load_deployment_id")
            body["hot_load_deployment_id"] = f"accounts/{account}/deployments/{dep}"
        path = f"/v1/accounts/{account}/checkpoints/{checkpoint}:promote"
        try:
            response = self._promote(path, {**body, "async_promotion": True})
        except FireworksAPIError as err:
            if err.status_code != 400 or not any(m in err.message.lower() for m in _ASYNC_PROMOTION_MARKERS):
                raise
            log.info("Promotion endpoint rejects async_promotion; sending without it")
            response = self._promote(path, body)
        if response.status_code == 409:
            log.info("Model %s already exists; returning it", body["output_model"])
            return self._model(body["output_model"])
        data = self._json(response, "promote checkpoint")
        return self._promotion_result(data, deadline, poll_interval_s)

    def _promote(self, path: str, body: dict[str, Any]) -> requests.Response:
        return self._call("POST", path, body=body, timeout=PROMOTE_TIMEOUT_S, expect=(409,))

    def _check_promotable(self, job_id: str, checkpoint_id: str) -> None:
        rows = self.list_checkpoints(job_id)
        row = next((r for r in rows if r.checkpoint_id == checkpoint_id), None)
        if row is None:
            raise FireworksValidationError(
                "checkpoint",
                f"{checkpoint_id!r} is not among trainer job {job_id!r}'s {len(rows)} checkpoints",
            )
        if not row.promotable:
            raise FireworksValidationError(
                "checkpoint",
                f"{checkpoint_id!r} ({row.checkpoint_type or 'unknown type'}) is not promotable: delta "
                "checkpoints are differences against an earlier snapshot; promote a base or merged_base "
                "checkpoint (LoRA checkpoints are always promotable). Nothing was sent",
            )

    def _model(self, model_name: str) -> dict[str, Any]:
        data = self._json(self._call("GET", f"/v1/{model_name}"), "get model")
        if not isinstance(data, dict):
            raise FireworksError("get model did not return a JSON object")
        return data

    def _promotion_result(self, data: Any, deadline: float, poll_interval_s: float) -> dict[str, Any]:
        if not isinstance(data, Mapping):
            raise FireworksError("promote checkpoint did not return a JSON object")
        if isinstance(data.get("model"), Mapping):
            return dict(data["model"])
        operation = data.get("operation")
        if not isinstance(operation, Mapping):
            return dict(data)
        while not operation.get("done"):
            op_name = operation.get("name")
            if not isinstance(op_name, str) or not op_name:
                raise FireworksError("promotion returned an unfinished operation without a name")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FireworksTimeoutError(f"promotion operation {op_name!r} not done in time")
            time.sleep(min(poll_interval_s, remaining))
            try:
                polled = self._json(self._call("GET", f"/v1/{op_name}", budget_s=remaining), "get operation")
            except (FireworksAPIError, FireworksConnectionError) as err:
                if isinstance(err, FireworksAPIError) and not err.retryable:
                    raise
                log.info("Promotion operation %s unavailable (%s); polling again", op_name, err)
                continue
            if not isinstance(polled, Mapping):
                raise FireworksError("get operation did not return a JSON object")
            operation = polled
        error = operation.get("error")
        if error:
            message = error.get("message") if isinstance(error, Mapping) else error
            raise FireworksError(f"promotion failed: {message}")
        model = operation.get("response")
        if not isinstance(model, Mapping):
            raise FireworksError("promotion finished without a model in its response")
        return {k: v for k, v in model.items() if k != "@type"}

    # --- training shapes ----------------------------------------------------------------------

    def resolve_training_profile(self, shape: str) -> TrainingShapeProfile:
        """The training-shape version to launch with: a versioned name as given, else the shape's
        latest validated version."""
        shape = validate_training_shape(shape, "shape")
        if "/versions/" in shape:
            return TrainingShapeProfile.from_version(
                self._json(self._call("GET", f"/v1/{shape}"), "get shape")
            )
        data = self._json(
            self._call(
                "GET",
                f"/v1/{shape}/versions",
                params={"filter": "latest_validated=true", "pageSize": "1"},
            ),
            "list shape versions",
        )
        versions = data.get("trainingShapeVersions") if isinstance(data, Mapping) else None
        if not isinstance(versions, list) or not versions:
            raise FireworksError(f"training shape {shape!r} has no validated version")
        return TrainingShapeProfile.from_version(versions[0])


class AsyncTrainerJobs:
    """The trainer calls triggers poll with, on an ``AsyncFireworksClient``'s session, headers and
    retry policy (so trainer waits share the triggerer's connection pool)."""

    def __init__(self, client: AsyncFireworksClient) -> None:
        self._client = client

    async def _job_url(self, job_id: str) -> str:
        account = await self._client.account_id()
        return f"{self._client.base_url}/v1/accounts/{account}/rlorTrainerJobs/{job_id_from(job_id)}"

    async def get(self, job_id: str) -> TrainerJobInfo | None:
        """The job, or None when it does not exist."""
        status, content = await self._client._request(
            "GET", await self._job_url(job_id), headers=self._client._control_headers, expect=(404,)
        )
        if status == 404:
            return None
        data = _http.parse_json(content, "get trainer job", self._client._api_key)
        return TrainerJobInfo.from_response(data, job_id=job_id_from(job_id))

    async def is_healthy(self, service_url: str) -> bool:
        """One health probe (``{service_url}/api/v1/healthz``); True on 200, never raises."""
        url = f"{normalise_url(service_url, 'service_url')}{HEALTH_PATH}"
        try:
            async with self._client._sessions.get().get(
                url,
                headers=self._client._gateway_headers,
                timeout=aiohttp.ClientTimeout(total=HEALTH_TIMEOUT_S),
            ) as response:
                await response.read()
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.debug("Health probe of %s failed: %s", service_url, type(exc).__name__)
            return False

    async def delete(self, job_id: str) -> bool:
        """Delete unless there is nothing to delete (see ``TrainerJobManager.delete``)."""
        if not needs_delete(await self.get(job_id)):
            return False
        status, _ = await self._client._request(
            "DELETE", await self._job_url(job_id), headers=self._client._control_headers, expect=(404,)
        )
        return _http.deleted(status, f"trainer job {job_id_from(job_id)}")
