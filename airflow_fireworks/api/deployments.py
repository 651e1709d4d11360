"""Synchronous Fireworks client: deployment lifecycle, hotload and warmup (requests + tenacity)."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import cached_property
from typing import Any, Literal, TypeVar, Unpack

import requests

from airflow_fireworks.api import _http
from airflow_fireworks.api._parse import choice
from airflow_fireworks.api.drift import FieldDrift, config_drift
from airflow_fireworks.api.errors import (
    DeploymentDriftError,
    DeploymentNotFoundError,
    FireworksAPIError,
    FireworksConnectionError,
    FireworksError,
    FireworksTimeoutError,
    FireworksValidationError,
    HotloadFailedError,
    SnapshotChainError,
)
from airflow_fireworks.api.models import (
    HOT_LOAD_TRANSITION_TYPES,
    DeploymentConfig,
    DeploymentInfo,
    HotloadStatus,
    deployment_name,
    validate_base_model,
    validate_deployment_id,
    validate_trainer_job,
    validate_update_mask,
)
from airflow_fireworks.api.retry import RETRYABLE_EXCEPTIONS
from airflow_fireworks.api.trainer_models import is_attached, trainer_link_patch
from airflow_fireworks.api.validation import check_bool, check_int, check_seconds
from airflow_fireworks.api.waits import DeploymentTarget, check_deployment, served, sleep_until_next_look

log = logging.getLogger(__name__)
_Resource = TypeVar("_Resource")

PROBE_TIMEOUT_S = 10.0
WARMUP_TIMEOUT_S = 30.0
HOTLOAD_TRIGGER_TIMEOUT_S = 60.0
SCALE_TO_ZERO_MASK = "min_replica_count,max_replica_count"
_RESET_PROMPT_CACHE_REJECTED = ("reset_prompt_cache", "extra inputs are not permitted")


def _check_model(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise FireworksValidationError(
            "model", f"must be the deployment name 'accounts/<account>/deployments/<id>', got {value!r}"
        )
    return value


def _check_identity(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise FireworksValidationError(field, f"must be a non-empty snapshot identity string, got {value!r}")
    return value


class DeploymentManager(_http.BaseClient, _http.ClosingContext):
    """Create, wait for, update, scale, delete and hotload Fireworks deployments.

    Every call goes through the shared ``RetryPolicy`` (connection errors, 408/425/429/5xx) and
    raises ``FireworksAPIError`` for other non-2xx answers. The API key is sent only in headers.
    Takes the ``BaseClient`` arguments (default per-request timeout 60 s); ``with`` closes it.
    """

    _account_id: str | None = None
    _send_reset_prompt_cache = True

    @cached_property
    def _session(self) -> requests.Session:
        session = requests.Session()
        session.verify = self._verify_ssl
        return session

    def close(self) -> None:
        """Release pooled connections."""
        self._session.close()

    # --- transport ----------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        timeout: float | None = None,
        budget_s: float | None = None,
        **options: Unpack[_http.RequestOptions],
    ) -> requests.Response:
        """Send with the retry policy; statuses in ``expect`` are returned instead of raised."""
        retrying = self.retry_policy.sync_retrying(budget_s=budget_s)
        try:
            response: requests.Response = retrying(
                self._send, method, url, headers, timeout or self.timeout_s, options
            )
        except RETRYABLE_EXCEPTIONS as exc:
            raise _http.connection_error(exc, method, url, self._api_key) from exc
        return response

    def _send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        timeout: float,
        options: _http.RequestOptions,
    ) -> requests.Response:
        response = self._session.request(
            method,
            url,
            headers=dict(headers),
            params=options.get("params"),
            json=options.get("body"),
            timeout=timeout,
        )
        self._check(response.status_code, response.content, response.headers, method, url, options)
        return response

    def _post_create(
        self,
        url: str,
        read_back: Callable[[], _Resource | None],
        *,
        timeout: float | None = None,
        **options: Unpack[_http.RequestOptions],
    ) -> tuple[requests.Response, _Resource | None]:
        """POST a create. A 409 means the resource exists: it is read back and returned with the
        answer (create is create-or-get); a 409 for something that cannot be read back is raised."""
        options["expect"] = (409,)
        response = self._request("POST", url, headers=self._control_headers, timeout=timeout, **options)
        if response.status_code != 409:
            return response, None
        existing = read_back()
        if existing is None:
            raise _http.api_error(409, response.content, response.headers, "POST", url, self._api_key)
        return response, existing

    def _json(self, response: requests.Response, what: str) -> Any:
        return _http.parse_json(response.content, what, self._api_key)

    def _deployments_url(self) -> str:
        return f"{self.base_url}/v1/accounts/{self.account_id}/deployments"

    def _deployment_url(self, deployment_id: str) -> str:
        return f"{self._deployments_url()}/{deployment_id}"

    def _info(self, data: Any, deployment_id: str, what: str) -> DeploymentInfo:
        if not isinstance(data, Mapping):
            raise FireworksError(f"{what} of deployment {deployment_id!r} did not return a JSON object")
        return DeploymentInfo.from_response(data, self.account_id, deployment_id=deployment_id)

    # --- account ------------------------------------------------------------------------------

    @property
    def account_id(self) -> str:
        """The account the API key belongs to (looked up once, on first use)."""
        if self._account_id is None:
            response = self._request(
                "GET",
                f"{self.base_url}{_http.ACCOUNTS_PATH}",
                headers=self._control_headers,
                params={"pageSize": "2"},
            )
            self._account_id = _http.account_from_response(self._json(response, "account lookup"))
        return self._account_id

    def inference_model(self, deployment_id: str) -> str:
        """The ``model`` string for completions: ``accounts/<account>/deployments/<id>``."""
        return deployment_name(self.account_id, validate_deployment_id(deployment_id))

    # --- deployments --------------------------------------------------------------------------

    def get(self, deployment_id: str) -> DeploymentInfo | None:
        """The deployment, or None when it does not exist."""
        deployment_id = validate_deployment_id(deployment_id)
        response = self._request(
            "GET", self._deployment_url(deployment_id), headers=self._control_headers, expect=(404,)
        )
        if response.status_code == 404:
            return None
        data = self._json(response, "get deployment")
        if isinstance(data, Mapping) and not data:
            return None
        return self._info(data, deployment_id, "get")

    def create_or_get(self, config: DeploymentConfig, force_recreate: bool = False) -> DeploymentInfo:
        """Create the deployment, or return the existing one unchanged (the SDK's semantics).

        A FAILED/DELETED/DELETING deployment, or any with ``force_recreate``, is deleted first and
        created again. A 409 from create (a concurrent creator) returns the existing deployment.
        Differences between an existing deployment and ``config`` are logged, not applied; use
        :meth:`reconcile` to apply them.
        """
        config = _check_config(config, force_recreate)
        existing = self.get(config.deployment_id)
        if existing is not None and not (force_recreate or existing.state.is_failed()):
            drift = config_drift(config, existing)
            log.info("Deployment %s already exists (%s)", config.deployment_id, existing.describe())
            for change in drift.changes:
                log.info(
                    "Deployment %s differs from the config (not applied): %s",
                    config.deployment_id,
                    change.describe(),
                )
            return existing
        return self._create(config, existing, force_recreate)

    def reconcile(self, config: DeploymentConfig, force_recreate: bool = False) -> Reconciliation:
        """Make the deployment match ``config``: create it, or bring an existing one in line.

        - absent: created; FAILED/DELETED/DELETING, or ``force_recreate``: deleted and created again;
        - mutable differences (replica counts, autoscaling windows, description, annotations,
          trainer link, ...): one PATCH whose update mask names exactly those paths, each logged
          as ``field: old -> new``;
        - immutable differences (base model, shape, accelerator, region, ...):
          ``DeploymentDriftError`` naming each field, before anything is written.

        Does not wait: the returned deployment may be UPDATING or CREATING.
        """
        config = _check_config(config, force_recreate)
        deployment_id = config.deployment_id
        existing = self.get(deployment_id)
        if existing is None or force_recreate or existing.state.is_failed():
            info = self._create(config, existing, force_recreate)
            return Reconciliation(info, "created" if existing is None else "recreated", ())
        drift = config_drift(config, existing)
        if drift.immutable:
            raise DeploymentDriftError(drift)
        if not drift.changes:
            log.info("Deployment %s matches the config (%s)", deployment_id, existing.describe())
            return Reconciliation(existing, "unchanged", ())
        for change in drift.changes:
            log.info("Deployment %s drifted: %s", deployment_id, change.describe())
        info = self.update(deployment_id, drift.patch_body(), drift.update_mask())
        return Reconciliation(info, "updated", drift.changes)

    def _create(
        self, config: DeploymentConfig, existing: DeploymentInfo | None, force_recreate: bool
    ) -> DeploymentInfo:
        deployment_id = config.deployment_id
        if existing is not None:
            log.info(
                "Recreating deployment %s (state %s, force_recreate=%s)",
                deployment_id,
                existing.state.value,
                force_recreate,
            )
            self.delete(deployment_id)
            self.wait_for_deleted(deployment_id)
        response, current = self._post_create(
            self._deployments_url(),
            lambda: self.get(deployment_id),
            params=config.to_query_params(),
            body=config.to_request_body(),
        )
        if current is not None:
            log.info("Deployment %s was created concurrently (state %s)", deployment_id, current.state.value)
            return current
        info = self._info(self._json(response, "create deployment"), deployment_id, "create")
        log.info("Created deployment %s (state %s)", deployment_id, info.state.value)
        return info

    def wait_for_ready(
        self, deployment_id: str, timeout_s: float = 600, poll_interval_s: float = 15, min_replicas: int = 0
    ) -> DeploymentInfo:
        """Poll until READY with at least ``min_replicas`` replicas (or serving while CREATING,
        checked with an inference probe).

        Raises ``DeploymentFailedError`` (FAILED/DELETED/DELETING, with the server's status message),
        ``DeploymentNotFoundError`` (absent) or ``FireworksTimeoutError``.
        """
        info = self.wait_for(DeploymentTarget.READY, deployment_id, timeout_s, poll_interval_s, min_replicas)
        assert info is not None  # a READY wait succeeds only on a deployment that exists
        return info

    def wait_until_serving(
        self, deployment_id: str, timeout_s: float = 600, poll_interval_s: float = 10
    ) -> DeploymentInfo:
        """Poll until at least one replica serves, waking a deployment the platform scaled to zero.

        A deployment at zero replicas whose ``maxReplicaCount`` allows more is sent one small
        inference request per poll (the request that brings it back), through its cold start.
        Raises ``DeploymentScaledToZeroError`` at once when ``maxReplicaCount`` is 0,
        ``DeploymentNotFoundError`` when it is absent, ``DeploymentFailedError`` when it failed.
        """
        info = self.wait_for(DeploymentTarget.SERVING, deployment_id, timeout_s, poll_interval_s)
        assert info is not None  # a SERVING wait succeeds only on a deployment that exists
        return info

    def wait_for(
        self,
        target: DeploymentTarget,
        deployment_id: str,
        timeout_s: float = 600,
        poll_interval_s: float = 15,
        min_replicas: int = 0,
    ) -> DeploymentInfo | None:
        """Poll until ``target`` (see ``check_deployment``); the deployment, None once it is gone.

        Logs each change of what it sees at INFO, not every poll.
        """
        deployment_id = validate_deployment_id(deployment_id)
        timeout_s = check_seconds(timeout_s, "timeout_s")
        poll_interval_s = check_seconds(poll_interval_s, "poll_interval_s", positive=True)
        min_replicas = check_int(min_replicas, "min_replicas", 0)
        deadline = time.monotonic() + timeout_s
        last_message = ""
        while True:
            info = self.get(deployment_id)
            check = check_deployment(target, deployment_id, info, min_replicas=min_replicas)
            if check.outcome == "probe" and info is not None:
                if self.probe(self.inference_model(deployment_id)):
                    log.info("Deployment %s answers inference", deployment_id)
                    return served(info)
            elif check.outcome == "success":
                log.info("%s", check.message)
                return info
            elif check.outcome == "error":
                raise check.error(deployment_id, info)
            if check.message != last_message:
                log.info("%s", check.message)
                last_message = check.message
            sleep_until_next_look(
                deadline,
                poll_interval_s,
                f"deployment {deployment_id!r} not {target.value.replace('_', ' ')} after "
                f"{timeout_s:g}s; last seen: {check.message}",
            )

    def update(
        self, deployment_id: str, body: Mapping[str, Any], update_mask: str | Sequence[str] | None
    ) -> DeploymentInfo:
        """PATCH only the fields named in ``update_mask`` (snake_case paths; required)."""
        deployment_id = validate_deployment_id(deployment_id)
        mask = validate_update_mask(body, update_mask)
        response = self._request(
            "PATCH",
            self._deployment_url(deployment_id),
            headers=self._control_headers,
            params={"updateMask": mask},
            body=dict(body),
        )
        log.info("Updated deployment %s (%s)", deployment_id, mask)
        return self._info(self._json(response, "update deployment"), deployment_id, "update")

    def scale_to_zero(self, deployment_id: str) -> DeploymentInfo:
        """Set min and max replicas to 0 (with an explicit mask, so nothing else is reset)."""
        deployment_id = validate_deployment_id(deployment_id)
        response = self._request(
            "PATCH",
            self._deployment_url(deployment_id),
            headers=self._control_headers,
            params={"updateMask": SCALE_TO_ZERO_MASK},
            body={"minReplicaCount": 0, "maxReplicaCount": 0},
            expect=(404,),
        )
        if response.status_code == 404:
            raise DeploymentNotFoundError(deployment_id)
        log.info("Scaled deployment %s to zero replicas", deployment_id)
        return self._info(self._json(response, "scale to zero"), deployment_id, "scale to zero")

    def delete(self, deployment_id: str) -> bool:
        """Hard-delete; True if deleted, False if it was already absent. Does not wait."""
        deployment_id = validate_deployment_id(deployment_id)
        response = self._request(
            "DELETE",
            self._deployment_url(deployment_id),
            headers=self._control_headers,
            params={"ignoreChecks": "true", "hard": "true"},
            expect=(404,),
        )
        return _http.deleted(response.status_code, f"deployment {deployment_id}")

    def wait_for_deleted(self, deployment_id: str, timeout_s: float = 60, poll_interval_s: float = 2) -> None:
        """Poll until the deployment is gone (404) or DELETED; ``FireworksTimeoutError`` past the deadline."""
        self.wait_for(DeploymentTarget.DELETED, deployment_id, timeout_s, poll_interval_s)

    def list_deployments(self, filter: str | None = None, page_size: int = 50) -> Iterator[DeploymentInfo]:
        """Every deployment of the account (optionally AIP-160 filtered), page by page."""
        for item in self._pages(self._deployments_url, "deployments", filter, page_size):
            yield self._info(item, "", "list")

    def _pages(self, url: Callable[[], str], field: str, filter: str | None, page_size: int) -> Iterator[Any]:
        """The items of a paginated control-plane list (``field`` of each page), page by page;
        ``url()`` is asked for only once the arguments are checked (it may look up the account)."""
        check_int(page_size, "page_size", 1, 200)
        if filter is not None and not isinstance(filter, str):
            raise FireworksValidationError("filter", "must be an AIP-160 filter string or None")
        params = {"pageSize": str(page_size)}
        if filter:
            params["filter"] = filter
        while True:
            response = self._request("GET", url(), headers=self._control_headers, params=params)
            data = self._json(response, f"list {field}")
            if not isinstance(data, Mapping):
                raise FireworksError(f"list {field} did not return a JSON object")
            items = data.get(field) or []
            if not isinstance(items, list):
                raise FireworksError(f"list {field}: field {field!r} should be a list")
            yield from items
            token = data.get("nextPageToken")
            if not token:
                return
            params["pageToken"] = str(token)

    # --- inference gateway --------------------------------------------------------------------

    def _completion(self, model: str, timeout: float) -> int:
        response = self._session.post(
            f"{self.inference_url}{_http.COMPLETIONS_PATH}",
            headers=self._gateway_headers,
            json=_http.probe_body(model),
            timeout=timeout,
        )
        return response.status_code

    def probe(self, model: str, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
        """One tiny completion; True on HTTP 200. Never raises for HTTP or connection failures and
        is not retried (a failed probe just means "not serving yet")."""
        model = _check_model(model)
        timeout_s = check_seconds(timeout_s, "timeout_s", positive=True)
        try:
            status = self._completion(model, timeout_s)
        except requests.RequestException as exc:
            log.debug("Probe of %s failed: %s", model, type(exc).__name__)
            return False
        log.debug("Probe of %s -> HTTP %d", model, status)
        return status == 200

    def warmup(self, model: str, max_retries: int = 30, retry_interval_s: float = 10.0) -> bool:
        """Send warmup completions until one answers 200 (True) or ``max_retries`` failed (False)."""
        model = _check_model(model)
        check_int(max_retries, "max_retries", 1)
        retry_interval_s = check_seconds(retry_interval_s, "retry_interval_s")
        for attempt in range(1, max_retries + 1):
            try:
                status = self._completion(model, WARMUP_TIMEOUT_S)
                outcome = f"HTTP {status}"
            except requests.RequestException as exc:
                status, outcome = 0, type(exc).__name__
            if status == 200:
                log.info("Warmup of %s succeeded (attempt %d)", model, attempt)
                return True
            log.info("Warmup of %s attempt %d/%d failed (%s)", model, attempt, max_retries, outcome)
            if attempt < max_retries:
                time.sleep(retry_interval_s)
        log.warning("Warmup of %s failed after %d attempts", model, max_retries)
        return False

    # --- hotload ------------------------------------------------------------------------------

    def _hotload_headers(
        self, deployment_id: str, base_model: str, source_url: str | None = None
    ) -> dict[str, str]:
        return _http.hotload_headers(
            self._gateway_headers, base_model, self.account_id, deployment_id, source_url
        )

    def hotload(
        self,
        deployment_id: str,
        base_model: str,
        snapshot_identity: str,
        incremental_snapshot_metadata: Mapping[str, Any] | None = None,
        reset_prompt_cache: bool = True,
        source_url: str | None = None,
        check_chain: bool = True,
    ) -> dict[str, Any]:
        """Ask the deployment to load a snapshot (full, or a delta when metadata is given).

        A delta is only valid on top of the identity it was computed against: with
        ``check_chain`` (the default) the replicas' served identities are read first, and
        ``SnapshotChainError`` is raised, with nothing sent, unless every replica serves exactly
        ``previous_snapshot_identity``.

        If the server rejects ``reset_prompt_cache`` as an unknown field, the request is sent again
        without it, and it is left out for the rest of this manager's life.
        """
        deployment_id = validate_deployment_id(deployment_id)
        base_model = validate_base_model(base_model)
        snapshot_identity = _check_identity(snapshot_identity, "snapshot_identity")
        check_bool(reset_prompt_cache, "reset_prompt_cache")
        check_bool(check_chain, "check_chain")
        if source_url is not None and (not isinstance(source_url, str) or not source_url.strip()):
            raise FireworksValidationError(
                "source_url", "must be an object-store URI such as 'gs://bucket/prefix/'"
            )
        body: dict[str, Any] = {"identity": snapshot_identity}
        if incremental_snapshot_metadata is not None:
            delta = _incremental_metadata(incremental_snapshot_metadata)
            body["incremental_snapshot_metadata"] = delta
            if check_chain:
                self.check_snapshot_chain(
                    deployment_id, base_model, snapshot_identity, delta["previous_snapshot_identity"]
                )
        headers = self._hotload_headers(deployment_id, base_model, source_url)
        url = f"{self.hotload_api_url}{_http.HOTLOAD_PATH}"
        payload = (
            {**body, "reset_prompt_cache": reset_prompt_cache} if self._send_reset_prompt_cache else body
        )
        timeout = HOTLOAD_TRIGGER_TIMEOUT_S
        try:
            response = self._request("POST", url, headers=headers, body=payload, timeout=timeout)
        except FireworksAPIError as exc:
            text = exc.message.lower()
            if not (
                exc.status_code == 400
                and payload is not body
                and all(marker in text for marker in _RESET_PROMPT_CACHE_REJECTED)
            ):
                raise
            log.info("Hotload endpoint rejects reset_prompt_cache; sending without it from now on")
            self._send_reset_prompt_cache = False
            response = self._request("POST", url, headers=headers, body=body, timeout=timeout)
        data = self._json(response, "hotload")
        if not isinstance(data, dict):
            raise FireworksError("hotload did not return a JSON object")
        log.info(
            "Hotload of %s requested on deployment %s (%s)",
            snapshot_identity,
            deployment_id,
            "incremental" if incremental_snapshot_metadata is not None else "full",
        )
        return data

    def check_snapshot_chain(
        self, deployment_id: str, base_model: str, identity: str, previous_identity: str
    ) -> HotloadStatus:
        """Read the hotload status; ``SnapshotChainError`` unless every replica serves
        ``previous_identity`` (the base of the delta ``identity``)."""
        status = self.hotload_check_status(deployment_id, base_model)
        broken = status.chain_break(previous_identity)
        if broken is not None:
            raise SnapshotChainError(deployment_id, identity, previous_identity, broken)
        return status

    def hotload_check_status(self, deployment_id: str, base_model: str, timeout: float = 30) -> HotloadStatus:
        """Per-replica hotload status (identity served, readiness, loading stage)."""
        return self._hotload_status(
            validate_deployment_id(deployment_id),
            validate_base_model(base_model),
            check_seconds(timeout, "timeout", positive=True),
            None,
        )

    def _hotload_status(
        self, deployment_id: str, base_model: str, timeout: float, budget_s: float | None
    ) -> HotloadStatus:
        response = self._request(
            "GET",
            f"{self.hotload_api_url}{_http.HOTLOAD_PATH}",
            headers=self._hotload_headers(deployment_id, base_model),
            timeout=timeout,
            budget_s=budget_s,
        )
        return HotloadStatus.from_response(self._json(response, "hotload status"))

    def wait_for_hotload(
        self,
        deployment_id: str,
        base_model: str,
        expected_identity: str,
        timeout_seconds: float = 400,
        poll_interval: float = 5,
    ) -> HotloadStatus:
        """Poll until every replica is ready on ``expected_identity``.

        Raises ``HotloadFailedError`` when a replica reports stage ``error`` for that identity and
        ``FireworksTimeoutError`` at the deadline. Transient failures (retryable statuses,
        connection errors) keep polling; a 404 keeps polling only while the deployment exists
        (its hotload manager may still be starting), otherwise ``DeploymentNotFoundError``.
        """
        deployment_id = validate_deployment_id(deployment_id)
        base_model = validate_base_model(base_model)
        expected_identity = _check_identity(expected_identity, "expected_identity")
        timeout_seconds = check_seconds(timeout_seconds, "timeout_seconds")
        poll_interval = check_seconds(poll_interval, "poll_interval", positive=True)
        deadline = time.monotonic() + timeout_seconds
        last = "no status received"
        while True:
            remaining = deadline - time.monotonic()
            try:
                status = self._hotload_status(deployment_id, base_model, 30.0, max(remaining, 0.0))
            except (FireworksAPIError, FireworksConnectionError) as exc:
                if isinstance(exc, FireworksAPIError) and not (exc.retryable or exc.status_code == 404):
                    raise
                gone = isinstance(exc, FireworksAPIError) and exc.status_code == 404
                if gone and self.get(deployment_id) is None:
                    raise DeploymentNotFoundError(
                        deployment_id,
                        f"deployment {deployment_id!r} no longer exists; hotload of {expected_identity!r} "
                        "cannot complete",
                    ) from None
                last = f"status call failed: {exc}"
                log.info("Hotload status of %s unavailable (%s); still waiting", deployment_id, last)
            else:
                progress = status.evaluate(expected_identity)
                if progress.outcome == "ready":
                    log.info(
                        "Hotload of %s on %s is ready: %s", expected_identity, deployment_id, progress.message
                    )
                    return status
                if progress.outcome == "failed":
                    raise HotloadFailedError(expected_identity, "error", progress.message)
                last = progress.message
            sleep_until_next_look(
                deadline,
                poll_interval,
                f"hotload of {expected_identity!r} on {deployment_id!r} not ready after "
                f"{timeout_seconds:g}s; last: {last}",
            )

    def hotload_and_wait(
        self,
        deployment_id: str,
        base_model: str,
        snapshot_identity: str,
        incremental_snapshot_metadata: Mapping[str, Any] | None = None,
        timeout_seconds: float = 400,
        poll_interval: float = 5,
    ) -> HotloadStatus:
        """``hotload`` then ``wait_for_hotload`` for the same identity."""
        self.hotload(deployment_id, base_model, snapshot_identity, incremental_snapshot_metadata)
        return self.wait_for_hotload(
            deployment_id, base_model, snapshot_identity, timeout_seconds, poll_interval
        )

    # --- trainer link -------------------------------------------------------------------------

    def reattach_trainer(
        self,
        deployment: DeploymentInfo | str,
        *,
        base_model: str,
        trainer_job_name: str,
        timeout_s: float = 600,
        poll_interval_s: float = 5,
        hot_load_transition_type: str | None = None,
    ) -> DeploymentInfo:
        """Point a deployment (id or ``DeploymentInfo``) at a (recreated) trainer job's bucket, and
        optionally change its hot-load transition type (``ASYNC``/``SYNC``; unset counts as ``ASYNC``).

        Waits for READY, PATCHes only what differs (update mask ``hot_load_trainer_job`` and/or
        ``hot_load_transition_type``), then waits until it is READY on the new link. Nothing is sent
        when it is already linked. A deployment whose base model is not ``base_model`` is refused
        before anything is written. Snapshots of the old trainer mean nothing to the new one: load
        a full snapshot next. Raises ``DeploymentNotFoundError``/``DeploymentFailedError`` or
        ``FireworksTimeoutError`` (``timeout_s`` covers the whole call).
        """
        deployment_id = validate_deployment_id(
            deployment.deployment_id if isinstance(deployment, DeploymentInfo) else deployment
        )
        base_model = validate_base_model(base_model)
        trainer_job_name = validate_trainer_job(trainer_job_name, "trainer_job_name")
        if hot_load_transition_type is not None:
            hot_load_transition_type = choice(
                hot_load_transition_type, "hot_load_transition_type", HOT_LOAD_TRANSITION_TYPES
            )
        timeout_s = check_seconds(timeout_s, "timeout_s")
        poll_interval_s = check_seconds(poll_interval_s, "poll_interval_s", positive=True)
        deadline = time.monotonic() + timeout_s
        info = self.wait_for_ready(deployment_id, timeout_s, poll_interval_s)
        if info.base_model and info.base_model != base_model:
            raise FireworksValidationError(
                "base_model",
                f"deployment {deployment_id!r} serves {info.base_model!r}, not {base_model!r}; "
                "a trainer can only be attached to a deployment of its own base model",
            )
        patch = trainer_link_patch(info, trainer_job_name, hot_load_transition_type)
        if patch is None:
            log.info("Deployment %s is already attached to %s", deployment_id, trainer_job_name)
            return info
        body, mask = patch
        log.info("Attaching deployment %s to %s (%s)", deployment_id, trainer_job_name, mask)
        self.update(deployment_id, body, mask)
        while True:
            info = self.wait_for_ready(deployment_id, max(0.0, deadline - time.monotonic()), poll_interval_s)
            if is_attached(info, trainer_job_name, hot_load_transition_type):
                return info
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FireworksTimeoutError(
                    f"deployment {deployment_id!r} is READY but not yet attached to {trainer_job_name!r} "
                    f"after {timeout_s:g}s"
                )
            time.sleep(min(poll_interval_s, remaining))


@dataclasses.dataclass(frozen=True)
class Reconciliation:
    """What :meth:`DeploymentManager.reconcile` did."""

    deployment: DeploymentInfo
    action: Literal["created", "recreated", "updated", "unchanged"]
    changes: tuple[FieldDrift, ...]
    """The fields patched (empty unless ``action`` is ``updated``)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary for XCom."""
        return {
            "action": self.action,
            "changes": [
                {"field": c.field, "current": c.current, "requested": c.requested} for c in self.changes
            ],
        }


def _check_config(config: Any, force_recreate: Any) -> DeploymentConfig:
    if not isinstance(config, DeploymentConfig):
        raise FireworksValidationError(
            "config", "must be a DeploymentConfig (build one with DeploymentConfig.from_dict)"
        )
    check_bool(force_recreate, "force_recreate")
    return config


def _incremental_metadata(value: Any) -> dict[str, Any]:
    """Validate a delta's metadata; fill the documented format defaults."""
    field = "incremental_snapshot_metadata"
    if not isinstance(value, Mapping):
        raise FireworksValidationError(field, "must be a mapping with 'previous_snapshot_identity'")
    previous = value.get("previous_snapshot_identity")
    if not isinstance(previous, str) or not previous.strip():
        raise FireworksValidationError(
            field, "needs 'previous_snapshot_identity': the identity the delta was computed against"
        )
    return {"compression_format": "arc_v2", "checksum_format": "alder32", **value}
