"""FireworksHook: an Airflow connection turned into the Fireworks client.

The connection holds the API key in its password, the control-plane URL in its host (with an
optional port), and the optional gateway URLs, console URL, extra headers and TLS setting in its
extras. Errors name a field by the label the connection form shows for it ("Control-plane URL",
"API key"), beside its connection-field name. Task code gets a
``DeploymentManager`` (``get_conn()``) plus the lifecycle operations; triggers get the same
parameters without blocking the event loop (``aget_connection_params``) and build an
``AsyncFireworksClient`` from them; the sampling operator gets a ``DeploymentSampler``
(``sampler()``). Every client is built here: nothing else reads the key.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow.sdk import BaseHook

from airflow_fireworks.api import (
    FireworksAPIError,
    FireworksConnectionError,
    FireworksError,
    FireworksValidationError,
    RetryPolicy,
)
from airflow_fireworks.provider import FIELD_LABELS

if TYPE_CHECKING:
    from airflow.sdk import Connection

    from airflow_fireworks.api import (
        AsyncFireworksClient,
        DeploymentConfig,
        DeploymentInfo,
        DeploymentManager,
        DeploymentTarget,
        HotloadStatus,
        Reconciliation,
        TrainerJobManager,
    )
    from airflow_fireworks.sampling import ConcurrencyController, DeploymentSampler

DEFAULT_BASE_URL = "https://api.fireworks.ai"
DEFAULT_CONSOLE_URL = "https://app.fireworks.ai"
CONN_TYPE = "fireworks"
#: The Test button answers within about this many seconds: one attempt, no retries.
TEST_CONNECTION_TIMEOUT_S = 5.0
_DEFAULT_PORTS = {"http": 80, "https": 443}


class FireworksConnectionConfigError(FireworksValidationError):
    """A field of a ``fireworks`` connection is missing or malformed (never shows the key); part of
    the one error family, so operators fail such a task without retries.

    ``label`` is the field's name in the connection form ("Control-plane URL" for ``host``);
    ``form_message`` says what is wrong in the form's words, without the connection id (the Test
    button runs on a temporary id the user never sees)."""

    def __init__(self, conn_id: str | None, field_name: str, problem: str) -> None:
        self.conn_id = conn_id
        self.field = field_name
        self.label = FIELD_LABELS.get(field_name, field_name)
        self.problem = problem
        FireworksError.__init__(
            self, f"Connection {conn_id!r}, field {field_name!r} ({self.label}): {problem}"
        )

    @property
    def form_message(self) -> str:
        """The problem as the connection form names the field."""
        return f"{self.label}: {self.problem}"


def _extra(extras: Mapping[str, Any], name: str) -> Any:
    """An extra by its plain name, or by the ``extra__fireworks__`` prefixed form older UIs store."""
    value = extras.get(name)
    if value is None:
        value = extras.get(f"extra__{CONN_TYPE}__{name}")
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _port(conn_id: str | None, value: Any) -> int | None:
    """The connection's port; None when empty or 0 (Airflow 3.3.2's form sends 0 for an empty one)."""
    if value is None or value == "" or value == 0:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise FireworksConnectionConfigError(conn_id, "port", f"must be a TCP port 1-65535, got {value!r}")
    return value


def _url(conn_id: str | None, field_name: str, value: Any, *, port: int | None = None) -> str:
    """Normalise a base URL: a bare host gets ``https://``; no trailing slash; only http(s).

    ``port`` (the connection's Port) goes into a URL without one; a URL whose own port differs is
    refused, naming both fields. The scheme's default port is left out of the result."""
    if not isinstance(value, str):
        raise FireworksConnectionConfigError(
            conn_id, field_name, f"must be a URL string, got {type(value).__name__}"
        )
    text = value.strip()
    if "://" not in text:
        text = f"https://{text}"
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FireworksConnectionConfigError(
            conn_id, field_name, f"{value!r} is not an http(s) URL; use e.g. 'https://api.fireworks.ai'"
        )
    if parts.query or parts.fragment:
        raise FireworksConnectionConfigError(
            conn_id, field_name, f"{value!r} must not carry a query string or fragment"
        )
    try:
        url_port = parts.port
    except ValueError:
        raise FireworksConnectionConfigError(
            conn_id, field_name, f"{value!r} has a port that is not a number 1-65535"
        ) from None
    if port is not None and url_port is not None and port != url_port:
        raise FireworksConnectionConfigError(
            conn_id,
            "port",
            f"{port} differs from the port {url_port} in the {FIELD_LABELS.get(field_name, field_name)} "
            f"{value!r}; make them equal or clear one of them",
        )
    if port is not None and url_port is None and port != _DEFAULT_PORTS[parts.scheme]:
        text = f"{parts.scheme}://{parts.netloc}:{port}{parts.path}"
    return text.rstrip("/")


def _headers(conn_id: str | None, value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise FireworksConnectionConfigError(
                conn_id, "additional_headers", 'must be a JSON object such as {"X-Team": "rl"}'
            ) from None
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise FireworksConnectionConfigError(
            conn_id, "additional_headers", "must be an object mapping header names to string values"
        )
    return dict(value)


def _bool(conn_id: str | None, field_name: str, value: Any) -> bool | None:
    """A JSON boolean or the form's "true"/"false" (None: unset, the client's default applies)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise FireworksConnectionConfigError(conn_id, field_name, f"must be true, false or unset, got {value!r}")


@dataclass(frozen=True)
class FireworksConnectionParams:
    """Everything the Fireworks clients need from a connection (the key is kept out of repr)."""

    api_key: str = field(repr=False)
    base_url: str = DEFAULT_BASE_URL
    inference_url: str | None = None
    hotload_api_url: str | None = None
    additional_headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    verify_ssl: bool | None = None
    console_url: str = DEFAULT_CONSOLE_URL
    conn_id: str | None = None

    @classmethod
    def from_connection(cls, conn: Connection) -> FireworksConnectionParams:
        """Read and validate a ``fireworks`` connection; raises FireworksConnectionConfigError."""
        conn_id = conn.conn_id
        api_key = conn.password
        if not isinstance(api_key, str) or not api_key.strip():
            raise FireworksConnectionConfigError(
                conn_id, "password", "is empty; paste your Fireworks API key (the connection's password)"
            )
        extras = conn.extra_dejson
        if not isinstance(extras, Mapping):
            raise FireworksConnectionConfigError(conn_id, "extra", "must be a JSON object")
        host = conn.host.strip() if isinstance(conn.host, str) and conn.host.strip() else None
        port = _port(conn_id, conn.port)
        base_url = _url(conn_id, "host", host or DEFAULT_BASE_URL, port=port)
        inference = _extra(extras, "inference_url")
        hotload = _extra(extras, "hotload_url")
        console = _extra(extras, "console_url")
        return cls(
            api_key=api_key.strip(),
            base_url=base_url,
            inference_url=_url(conn_id, "inference_url", inference) if inference is not None else None,
            hotload_api_url=_url(conn_id, "hotload_url", hotload) if hotload is not None else None,
            additional_headers=MappingProxyType(_headers(conn_id, _extra(extras, "additional_headers"))),
            verify_ssl=_bool(conn_id, "verify_ssl", _extra(extras, "verify_ssl")),
            console_url=_url(conn_id, "console_url", console) if console is not None else DEFAULT_CONSOLE_URL,
            conn_id=conn_id,
        )

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments shared by ``DeploymentManager`` and ``AsyncFireworksClient``."""
        return {
            "api_key": self.api_key,
            "base_url": self.base_url,
            "inference_url": self.inference_url,
            "hotload_api_url": self.hotload_api_url,
            "additional_headers": dict(self.additional_headers) or None,
            "verify_ssl": self.verify_ssl,
        }

    def cache_key(self) -> tuple[Any, ...]:
        """A hashable identity of these parameters (clients may be shared between equal ones)."""
        return (
            self.api_key,
            self.base_url,
            self.inference_url,
            self.hotload_api_url,
            tuple(sorted(self.additional_headers.items())),
            self.verify_ssl,
        )

    def deployment_console_url(self, deployment_id: str) -> str:
        """The deployment's page in the Fireworks console."""
        return f"{self.console_url}/dashboard/deployments/{deployment_id}"

    def manager(
        self, *, retry_policy: RetryPolicy | None = None, timeout_s: float | None = None
    ) -> DeploymentManager:
        """A new synchronous client (``timeout_s``: per request; None for the client's default)."""
        from airflow_fireworks.api import DeploymentManager

        return DeploymentManager(**self.client_kwargs(), retry_policy=retry_policy, timeout_s=timeout_s)

    def async_client(self, *, retry_policy: RetryPolicy | None = None) -> AsyncFireworksClient:
        """A new asyncio client (its HTTP session opens lazily inside the running loop)."""
        from airflow_fireworks.api import AsyncFireworksClient

        return AsyncFireworksClient(**self.client_kwargs(), retry_policy=retry_policy)

    def sampler(
        self,
        model: str,
        tokenizer: Any = None,
        concurrency_controller: ConcurrencyController | None = None,
        *,
        retry_policy: RetryPolicy | None = None,
        **settings: Any,
    ) -> DeploymentSampler:
        """A new ``DeploymentSampler`` of ``model`` on this connection's inference gateway;
        ``settings`` are its other keyword arguments (``not_ready_retries``, ...)."""
        from airflow_fireworks.sampling import DeploymentSampler

        return DeploymentSampler(
            self.inference_url or self.base_url,
            model,
            self.api_key,
            tokenizer,
            concurrency_controller,
            additional_headers=dict(self.additional_headers) or None,
            verify_ssl=self.verify_ssl,
            retry_policy=retry_policy,
            **settings,
        )


class FireworksHook(BaseHook):
    """Interact with Fireworks AI training deployments through a ``fireworks`` connection.

    :param fireworks_conn_id: the connection holding the API key (password), the control-plane
        URL (host) and the optional extras ``inference_url``, ``hotload_url``, ``console_url``,
        ``additional_headers`` and ``verify_ssl``.
    :param retry_policy: overrides the client's default retry policy.
    """

    conn_name_attr = "fireworks_conn_id"
    default_conn_name = "fireworks_default"
    conn_type = CONN_TYPE
    hook_name = "Fireworks AI"

    def __init__(
        self, fireworks_conn_id: str = default_conn_name, *, retry_policy: RetryPolicy | None = None
    ) -> None:
        super().__init__()
        self.fireworks_conn_id = fireworks_conn_id
        self.retry_policy = retry_policy

    def __repr__(self) -> str:
        return f"FireworksHook(fireworks_conn_id={self.fireworks_conn_id!r})"

    @cached_property
    def connection_params(self) -> FireworksConnectionParams:
        """The validated connection (fetched once per hook)."""
        return FireworksConnectionParams.from_connection(self.get_connection(self.fireworks_conn_id))

    @staticmethod
    async def aget_connection_params(conn_id: str) -> FireworksConnectionParams:
        """Fetch and validate a connection from async code without blocking the event loop.

        ``BaseHook.get_connection`` runs in a worker thread: that works in the real triggerer and
        in ``dag.test()`` for connections from environment variables, secrets backends and the
        metadata database alike.
        """
        from asgiref.sync import sync_to_async

        conn = await sync_to_async(BaseHook.get_connection)(conn_id)
        return FireworksConnectionParams.from_connection(conn)

    def get_conn(self) -> DeploymentManager:
        """The synchronous Fireworks client for this connection (one per hook)."""
        return self._manager

    @cached_property
    def _manager(self) -> DeploymentManager:
        return self.connection_params.manager(retry_policy=self.retry_policy)

    def get_async_client(self) -> AsyncFireworksClient:
        """A new asyncio client for this connection; close it with ``await client.close()``."""
        return self.connection_params.async_client(retry_policy=self.retry_policy)

    def sampler(
        self,
        model: str,
        tokenizer: Any = None,
        concurrency_controller: ConcurrencyController | None = None,
        **settings: Any,
    ) -> DeploymentSampler:
        """A new ``DeploymentSampler`` of ``model`` (an inference model name, see
        ``inference_model``) for this connection; ``settings`` are its other keyword arguments
        (``not_ready_retries``, ``not_ready_interval_s``, ``http_timeout_s``). Use it as an async
        context manager."""
        return self.connection_params.sampler(
            model, tokenizer, concurrency_controller, retry_policy=self.retry_policy, **settings
        )

    def close(self) -> None:
        """Close the synchronous client's HTTP session if one was opened."""
        manager = self.__dict__.pop("_manager", None)
        if manager is not None:
            manager.close()
        trainers = self.__dict__.pop("_trainer_manager", None)
        if trainers is not None:
            trainers.close()

    @property
    def account_id(self) -> str:
        """The account the API key belongs to (resolved once)."""
        return self.get_conn().account_id

    def deployment_console_url(self, deployment_id: str) -> str:
        """The deployment's page in the Fireworks console (``console_url`` extra)."""
        return self.connection_params.deployment_console_url(deployment_id)

    # --- lifecycle ------------------------------------------------------------------------

    def create_or_get(
        self, config: DeploymentConfig | Mapping[str, Any], *, force_recreate: bool = False
    ) -> DeploymentInfo:
        """Create the deployment, or return it when it already exists (see DeploymentManager)."""
        from airflow_fireworks.api import DeploymentConfig

        if not isinstance(config, DeploymentConfig):
            config = DeploymentConfig.from_dict(config)
        return self.get_conn().create_or_get(config, force_recreate=force_recreate)

    def reconcile(
        self, config: DeploymentConfig | Mapping[str, Any], *, force_recreate: bool = False
    ) -> Reconciliation:
        """Create the deployment or bring the existing one in line with ``config`` (see
        ``DeploymentManager.reconcile``: mutable drift patched, immutable drift refused)."""
        from airflow_fireworks.api import DeploymentConfig

        if not isinstance(config, DeploymentConfig):
            config = DeploymentConfig.from_dict(config)
        return self.get_conn().reconcile(config, force_recreate=force_recreate)

    def get_deployment(self, deployment_id: str) -> DeploymentInfo | None:
        """The deployment, or None when it does not exist."""
        return self.get_conn().get(deployment_id)

    def list_deployments(self, filter: str | None = None, page_size: int = 50) -> Iterator[DeploymentInfo]:
        """Every deployment of the account (optionally filtered, AIP-160 syntax)."""
        return self.get_conn().list_deployments(filter=filter, page_size=page_size)

    def wait_for_ready(
        self, deployment_id: str, *, timeout_s: float = 600, poll_interval_s: float = 15
    ) -> DeploymentInfo:
        """Block until the deployment serves; raises on FAILED/DELETED, absence or timeout."""
        return self.get_conn().wait_for_ready(
            deployment_id, timeout_s=timeout_s, poll_interval_s=poll_interval_s
        )

    def wait_for(
        self,
        target: DeploymentTarget,
        deployment_id: str,
        *,
        timeout_s: float = 600,
        poll_interval_s: float = 15,
        min_replicas: int = 0,
    ) -> DeploymentInfo | None:
        """Block until ``target`` (ready, serving, deleted, scaled to zero); None once gone."""
        return self.get_conn().wait_for(target, deployment_id, timeout_s, poll_interval_s, min_replicas)

    def probe(self, deployment_id: str) -> bool:
        """Send one small completion (it also wakes a deployment at zero); True on HTTP 200."""
        manager = self.get_conn()
        return manager.probe(manager.inference_model(deployment_id))

    def update_deployment(
        self, deployment_id: str, body: Mapping[str, Any], update_mask: str | Sequence[str]
    ) -> DeploymentInfo:
        """PATCH the deployment; ``update_mask`` (snake_case paths) is required."""
        return self.get_conn().update(deployment_id, dict(body), update_mask)

    def scale_to_zero(self, deployment_id: str) -> DeploymentInfo:
        """Set min and max replicas to zero (explicit update mask)."""
        return self.get_conn().scale_to_zero(deployment_id)

    def delete_deployment(self, deployment_id: str) -> bool:
        """Delete the deployment; False when it was already gone."""
        return self.get_conn().delete(deployment_id)

    def wait_for_deleted(
        self, deployment_id: str, *, timeout_s: float = 60, poll_interval_s: float = 2
    ) -> None:
        """Block until the deployment is gone (or DELETED)."""
        self.get_conn().wait_for_deleted(deployment_id, timeout_s=timeout_s, poll_interval_s=poll_interval_s)

    def inference_model(self, deployment_id: str) -> str:
        """The ``model`` string for inference requests to this deployment."""
        return self.get_conn().inference_model(deployment_id)

    def hotload(
        self,
        deployment_id: str,
        base_model: str,
        snapshot_identity: str,
        *,
        incremental_snapshot_metadata: Mapping[str, Any] | None = None,
        reset_prompt_cache: bool = True,
        source_url: str | None = None,
        check_chain: bool = True,
    ) -> dict[str, Any]:
        """Ask every replica to load a snapshot (returns the server's answer; does not wait).

        A delta is refused (``SnapshotChainError``, nothing sent) unless every replica serves its
        ``previous_snapshot_identity``; ``check_chain=False`` skips that look."""
        return self.get_conn().hotload(
            deployment_id,
            base_model,
            snapshot_identity,
            incremental_snapshot_metadata=dict(incremental_snapshot_metadata)
            if incremental_snapshot_metadata is not None
            else None,
            reset_prompt_cache=reset_prompt_cache,
            source_url=source_url,
            check_chain=check_chain,
        )

    def hotload_status(self, deployment_id: str, base_model: str) -> HotloadStatus:
        """Per-replica hotload status."""
        return self.get_conn().hotload_check_status(deployment_id, base_model)

    def wait_for_hotload(
        self,
        deployment_id: str,
        base_model: str,
        expected_identity: str,
        *,
        timeout_s: float = 400,
        poll_interval_s: float = 5,
    ) -> HotloadStatus:
        """Block until every replica serves ``expected_identity``; raises on error stage or timeout."""
        return self.get_conn().wait_for_hotload(
            deployment_id,
            base_model,
            expected_identity,
            timeout_seconds=timeout_s,
            poll_interval=poll_interval_s,
        )

    def warmup(self, model: str, *, max_retries: int = 30, retry_interval_s: float = 10.0) -> bool:
        """Send small completions until one succeeds; False when all attempts failed."""
        return self.get_conn().warmup(model, max_retries=max_retries, retry_interval_s=retry_interval_s)

    # --- UI ---------------------------------------------------------------------------------

    def test_connection(self) -> tuple[bool, str]:
        """Resolve the account the key belongs to (the UI's Test button).

        One request, no retries, a short timeout: the button answers within about
        ``TEST_CONNECTION_TIMEOUT_S`` seconds even when the host does not. Messages name fields
        as the form labels them and never show the key or the temporary connection id."""
        try:
            params = self.connection_params
        except FireworksConnectionConfigError as err:
            return False, err.form_message
        manager = params.manager(
            retry_policy=RetryPolicy(max_attempts=1), timeout_s=TEST_CONNECTION_TIMEOUT_S
        )
        try:
            account = manager.account_id
        except FireworksAPIError as err:
            return False, _api_error_message(err, params.base_url)
        except FireworksConnectionError as err:
            return False, _unreachable_message(err, params.base_url)
        except FireworksError as err:
            return False, f"{FIELD_LABELS['host']} {params.base_url}: {err}"
        finally:
            manager.close()
        message = f"Connected to Fireworks account {account!r} at {params.base_url}"
        if params.verify_ssl is False:
            message += f"; TLS certificates are NOT verified ({FIELD_LABELS['verify_ssl']} is off)"
        return True, message

    # --- trainer jobs -----------------------------------------------------------------------

    def get_trainer_manager(self) -> TrainerJobManager:
        """The trainer-job client for this connection (one per hook). Its trainer gateway is
        ``$FIREWORKS_TRAINER_GATEWAY_URL`` when set, else the control-plane URL."""
        return self._trainer_manager

    @cached_property
    def _trainer_manager(self) -> TrainerJobManager:
        from airflow_fireworks.api import TrainerJobManager

        params = self.connection_params
        return TrainerJobManager(
            params.api_key,
            params.base_url,
            dict(params.additional_headers) or None,
            params.verify_ssl,
            retry_policy=self.retry_policy,
        )

    def trainer_console_url(self, job_id: str) -> str:
        """The trainer job's page in the Fireworks console (path assumed, like the deployment's)."""
        return f"{self.connection_params.console_url}/dashboard/fine-tuning/reinforcement/{job_id}"

    def reattach_trainer(
        self,
        deployment_id: str,
        *,
        base_model: str,
        trainer_job_name: str,
        timeout_s: float = 600,
        poll_interval_s: float = 5,
        hot_load_transition_type: str | None = None,
    ) -> DeploymentInfo:
        """Point the deployment at a (recreated) trainer (see ``DeploymentManager.reattach_trainer``)."""
        return self.get_conn().reattach_trainer(
            deployment_id,
            base_model=base_model,
            trainer_job_name=trainer_job_name,
            timeout_s=timeout_s,
            poll_interval_s=poll_interval_s,
            hot_load_transition_type=hot_load_transition_type,
        )


def _api_error_message(err: FireworksAPIError, base_url: str) -> str:
    """The Test button's words for an HTTP error answer (the key's field when it was refused)."""
    status = f"HTTP {err.status_code}" + (f", request id {err.request_id}" if err.request_id else "")
    detail = err.message or err.hint or "(no message)"
    if err.status_code == 401:
        return (
            f"{FIELD_LABELS['password']} refused by {base_url} ({status}): {detail}; use a valid, "
            "training-scoped key (inference-only keys are refused too)"
        )
    if err.status_code == 403:
        return f"{FIELD_LABELS['password']} refused by {base_url} ({status}): {detail}"
    return f"{FIELD_LABELS['host']} {base_url} answered {status}: {detail}"


def _unreachable_message(err: FireworksConnectionError, base_url: str) -> str:
    """The Test button's words for a host that could not be reached (one short attempt)."""
    import requests

    cause = err.__cause__
    if isinstance(cause, requests.exceptions.SSLError):
        reason = (
            "its TLS certificate is not trusted (for a test server with a self-signed certificate, "
            f"set {FIELD_LABELS['verify_ssl']} to 'Do not verify')"
        )
    elif isinstance(cause, requests.Timeout):
        reason = f"no answer within {TEST_CONNECTION_TIMEOUT_S:g} s"
    elif "Name or service not known" in err.reason or "NameResolutionError" in err.reason:
        reason = "its host name does not resolve"
    elif "Connection refused" in err.reason or "ConnectionRefusedError" in err.reason:
        reason = "the connection was refused (nothing listens on that host and port)"
    else:
        reason = err.reason
    return f"{FIELD_LABELS['host']} {base_url} cannot be reached: {reason}"
