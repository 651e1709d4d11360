"""Asynchronous Fireworks client on aiohttp, for triggers (and anything else on an event loop).

Same headers, errors and retry policy as ``DeploymentManager``; sleeps never block the loop.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import cached_property
from types import TracebackType
from typing import Unpack

import aiohttp

from airflow_fireworks.api import _http
from airflow_fireworks.api.errors import FireworksError, FireworksValidationError
from airflow_fireworks.api.models import (
    DeploymentInfo,
    HotloadStatus,
    deployment_name,
    validate_base_model,
    validate_deployment_id,
)
from airflow_fireworks.api.retry import RETRYABLE_EXCEPTIONS
from airflow_fireworks.api.transport import LoopSession

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 10.0


class AsyncFireworksClient(_http.BaseClient):
    """Read-side calls the triggers poll with: deployment state, readiness probe, hotload status.

    Takes the arguments of ``DeploymentManager`` (default per-request timeout 30 s). One
    ``aiohttp.ClientSession`` is kept per event loop (``transport.LoopSession``); close it with
    ``await client.close()`` or ``async with``.
    """

    default_timeout_s = 30.0
    _account_id: str | None = None

    @cached_property
    def _sessions(self) -> LoopSession:
        return LoopSession(self.config.verify_ssl)

    async def __aenter__(self) -> AsyncFireworksClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session (a later call opens a new one)."""
        await self._sessions.close()

    # --- transport ----------------------------------------------------------------------------

    async def _request(
        self, method: str, url: str, *, headers: Mapping[str, str], **options: Unpack[_http.RequestOptions]
    ) -> tuple[int, bytes]:
        """Send with the retry policy; returns (status, body). Statuses in ``expect`` are returned."""
        try:
            result: tuple[int, bytes] = await self.retry_policy.async_retrying()(
                self._send, method, url, headers, options
            )
        except RETRYABLE_EXCEPTIONS as exc:
            raise _http.connection_error(exc, method, url, self._api_key) from exc
        return result

    async def _send(
        self, method: str, url: str, headers: Mapping[str, str], options: _http.RequestOptions
    ) -> tuple[int, bytes]:
        async with self._sessions.get().request(
            method,
            url,
            headers=dict(headers),
            params=options.get("params"),
            json=options.get("body"),
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
        ) as response:
            content = await response.read()
            self._check(response.status, content, response.headers, method, url, options)
            return response.status, content

    # --- calls --------------------------------------------------------------------------------

    async def account_id(self) -> str:
        """The account the API key belongs to (looked up once)."""
        if self._account_id is None:
            _, content = await self._request(
                "GET",
                f"{self.base_url}{_http.ACCOUNTS_PATH}",
                headers=self._control_headers,
                params={"pageSize": "2"},
            )
            self._account_id = _http.account_from_response(
                _http.parse_json(content, "account lookup", self._api_key)
            )
        return self._account_id

    async def get_deployment(self, deployment_id: str) -> DeploymentInfo | None:
        """The deployment, or None when it does not exist."""
        deployment_id = validate_deployment_id(deployment_id)
        account = await self.account_id()
        status, content = await self._request(
            "GET",
            f"{self.base_url}/v1/accounts/{account}/deployments/{deployment_id}",
            headers=self._control_headers,
            expect=(404,),
        )
        if status == 404:
            return None
        data = _http.parse_json(content, "get deployment", self._api_key)
        if not isinstance(data, Mapping):
            raise FireworksError(f"get of deployment {deployment_id!r} did not return a JSON object")
        if not data:
            return None
        return DeploymentInfo.from_response(data, account, deployment_id=deployment_id)

    async def probe(self, model: str) -> bool:
        """One tiny completion; True on HTTP 200, False on any other answer or connection failure
        (not retried: a failed probe means "not serving yet")."""
        if not isinstance(model, str) or not model.strip():
            raise FireworksValidationError(
                "model", "must be the deployment name, e.g. accounts/a/deployments/d"
            )
        try:
            async with self._sessions.get().post(
                self.config.completions_url,
                headers=self._gateway_headers,
                json=_http.probe_body(model),
                timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S),
            ) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.debug("Probe of %s failed: %s", model, type(exc).__name__)
            return False
        log.debug("Probe of %s -> HTTP %d", model, status)
        return status == 200

    async def hotload_status(self, deployment_id: str, base_model: str) -> HotloadStatus:
        """Per-replica hotload status of the deployment."""
        deployment_id = validate_deployment_id(deployment_id)
        base_model = validate_base_model(base_model)
        account = await self.account_id()
        headers = _http.hotload_headers(self._gateway_headers, base_model, account, deployment_id)
        url = f"{self.hotload_api_url}{_http.HOTLOAD_PATH}"
        _, content = await self._request("GET", url, headers=headers)
        return HotloadStatus.from_response(_http.parse_json(content, "hotload status", self._api_key))

    async def delete_deployment(self, deployment_id: str) -> bool:
        """Hard-delete; True if deleted, False if it was already absent. Does not wait."""
        deployment_id = validate_deployment_id(deployment_id)
        account = await self.account_id()
        status, _ = await self._request(
            "DELETE",
            f"{self.base_url}/v1/accounts/{account}/deployments/{deployment_id}",
            headers=self._control_headers,
            params={"ignoreChecks": "true", "hard": "true"},
            expect=(404,),
        )
        return _http.deleted(status, f"deployment {deployment_id}")

    async def inference_model(self, deployment_id: str) -> str:
        """The ``model`` string for completions: ``accounts/<account>/deployments/<id>``."""
        return deployment_name(await self.account_id(), validate_deployment_id(deployment_id))
