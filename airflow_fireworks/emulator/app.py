"""The aiohttp application: control plane, hotload gateway, inference gateway and admin routes."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import operator
import os
import random
import re
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from airflow_fireworks.emulator.errors import ApiError, error_response, invalid, json_response
from airflow_fireworks.emulator.faults import FaultRule, Faults
from airflow_fireworks.emulator.hotload import parse_load_request
from airflow_fireworks.emulator.inference import CompletionsHandler
from airflow_fireworks.emulator.resources import DEPLOYMENT_ID_RE, rfc3339
from airflow_fireworks.emulator.settings import Settings
from airflow_fireworks.emulator.state import DELETED, Deployment, Store

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ADMIN_PREFIX = "/_emulator/"
MAX_PAGE_SIZE = 200
DEFAULT_PAGE_SIZE = 50
_FILTER_CLAUSE = re.compile(r'^\s*([A-Za-z_]+)\s*(!=|=)\s*(?:"([^"]*)"|(\S+))\s*$')
_FILTER_FIELDS = {
    "state": "state",
    "name": "name",
    "base_model": "baseModel",
    "baseModel": "baseModel",
    "display_name": "displayName",
    "displayName": "displayName",
    "deployment_shape": "deploymentShape",
    "deploymentShape": "deploymentShape",
    "hot_load_trainer_job": "hotLoadTrainerJob",
    "hotLoadTrainerJob": "hotLoadTrainerJob",
}
_ORDER_FIELDS = {"create_time": "createTime", "createTime": "createTime", "name": "name"}
DEPLOYMENT_HEADER = "fireworks-deployment"
MODEL_HEADER = "fireworks-model"


class ConnectionDropped(Exception):
    """The handler closed the connection on purpose (a ``reset`` fault)."""


class Stats:
    """Counters behind ``GET /_emulator/stats``."""

    def __init__(self) -> None:
        self.requests: dict[str, dict[str, int]] = {}
        self.completions_started = 0
        self.completions_finished = 0
        self.completions_aborted = 0
        self.completions_faulted = 0
        self.peak_prefill_queue_length = 0
        self.peak_prefill_queue_duration_s = 0.0

    def count(self, route: str, status: int | str) -> None:
        per_route = self.requests.setdefault(route, {})
        key = str(status)
        per_route[key] = per_route.get(key, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "completions": {
                "started": self.completions_started,
                "finished": self.completions_finished,
                "aborted": self.completions_aborted,
                "faulted": self.completions_faulted,
            },
            "prefill_queue": {
                "peak_length": self.peak_prefill_queue_length,
                "peak_duration_s": self.peak_prefill_queue_duration_s,
            },
        }


class Emulator:
    """Everything the routes share: settings, deployments, faults, stats and the request log."""

    def __init__(self, settings: Settings) -> None:
        self.initial_settings = settings
        self.settings = settings
        self.store = Store(lambda: self.settings)
        self.faults = Faults(settings.seed)
        self.stats = Stats()
        self.request_log: deque[dict[str, Any]] = deque(maxlen=settings.request_log_size)
        self.sampling_rng = random.Random(settings.seed)
        self.completions = CompletionsHandler(self)

    def configure(self, settings: Settings) -> None:
        """Switch to new settings (the account and key apply to the next request)."""
        seed_changed = settings.seed != self.settings.seed
        self.settings = settings
        if seed_changed:
            self.faults.reseed(settings.seed)
            self.sampling_rng = random.Random(settings.seed)
        if self.request_log.maxlen != settings.request_log_size:
            self.request_log = deque(self.request_log, maxlen=settings.request_log_size)

    def reset(self) -> None:
        """Back to the start-up state."""
        self.store.clear()
        self.settings = self.initial_settings
        self.faults = Faults(self.settings.seed)
        self.stats = Stats()
        self.request_log = deque(maxlen=self.settings.request_log_size)
        self.sampling_rng = random.Random(self.settings.seed)

    # -- helpers for handlers ---------------------------------------------------------------

    def check_account(self, request: web.Request) -> None:
        account = request.match_info["account"]
        if account != self.settings.account_id:
            raise ApiError(403, f"the API key has no access to account '{account}'")

    async def apply_fault(
        self, request: web.Request, route: str, deployment_id: str | None, streaming: bool = False
    ) -> FaultRule | None:
        """Run a matching non-stream fault now; return a stream fault for the caller to play."""
        rule = self.faults.take(route, deployment_id, streaming)
        if rule is None:
            return None
        if rule.kind == "status":
            headers = {"Retry-After": f"{rule.retry_after_s:g}"} if rule.retry_after_s is not None else None
            raise ApiError(rule.status, rule.message or "injected fault", headers=headers)
        if rule.kind == "delay":
            await asyncio.sleep(rule.delay_s)
            return None
        if rule.kind == "reset":
            drop_connection(request)
        return rule


def drop_connection(request: web.Request) -> None:
    """Close the TCP connection without an answer."""
    transport = request.transport
    if transport is not None:
        transport.abort()
    raise ConnectionDropped()


async def read_json(request: web.Request, required: bool = True) -> Any:
    """The request's JSON body (stored for the request log); 400 when it is not JSON."""
    raw = await request.read()
    if not raw:
        if required:
            raise invalid("request body is empty; a JSON object is required")
        return None
    try:
        body = json.loads(raw)
    except ValueError:
        raise invalid("request body is not valid JSON") from None
    request["json"] = body
    return body


def query_bool(request: web.Request, name: str) -> bool:
    """A boolean query parameter (``true``/``false``/``1``/``0``); 400 otherwise."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return False
    lowered = raw.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise invalid(f"query parameter '{name}' must be true or false, got {raw!r}")


def emulator_of(request: web.Request) -> Emulator:
    return request.app[EMULATOR_KEY]


EMULATOR_KEY: web.AppKey[Emulator] = web.AppKey("emulator", Emulator)


# -- middleware ------------------------------------------------------------------------------


def _authorized(request: web.Request, key: str) -> bool:
    given = request.headers.get("X-Api-Key")
    if given is None:
        auth = request.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            given = auth[7:].strip()
    return given == key


@web.middleware
async def fireworks_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Auth, request ids, error bodies, stats and the request log for every Fireworks route."""
    if request.path.startswith(ADMIN_PREFIX):
        try:
            return await handler(request)
        except ApiError as exc:
            return error_response(exc)
    emulator = emulator_of(request)
    request["request_id"] = request.headers.get("x-request-id") or os.urandom(16).hex()
    route = request.match_info.route.name or "unknown"
    response: web.StreamResponse | None = None
    status: int | str = "dropped"
    try:
        if not _authorized(request, emulator.settings.api_key):
            raise ApiError(401, "invalid or missing API key (send X-Api-Key or Authorization: Bearer)")
        response = await handler(request)
        status = response.status
        return response
    except ApiError as exc:
        status = exc.status
        return error_response(exc, headers=exc.headers)
    except web.HTTPException as exc:
        status = exc.status
        return error_response(ApiError(exc.status, f"{exc.reason}: {request.method} {request.path}"))
    except ConnectionDropped:
        raise asyncio.CancelledError() from None
    finally:
        emulator.stats.count(route, status)
        if emulator.request_log.maxlen:
            emulator.request_log.append(
                {
                    "time": time.time(),
                    "route": route,
                    "method": request.method,
                    "path": request.path,
                    "query": dict(request.query),
                    "body": request.get("json"),
                    "headers": sorted({name.lower() for name in request.headers}),
                    "status": status,
                    "request_id": request["request_id"],
                }
            )


async def _on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    request_id = request.get("request_id")
    if request_id is not None:
        response.headers["x-request-id"] = request_id


async def _on_cleanup(app: web.Application) -> None:
    app[EMULATOR_KEY].store.clear()


# -- control plane ---------------------------------------------------------------------------


async def get_accounts(request: web.Request) -> web.StreamResponse:
    emulator = emulator_of(request)
    await emulator.apply_fault(request, "accounts", None)
    return json_response({"accounts": [_account(emulator)], "nextPageToken": ""})


async def get_account(request: web.Request) -> web.StreamResponse:
    emulator = emulator_of(request)
    await emulator.apply_fault(request, "accounts", None)
    emulator.check_account(request)
    return json_response(_account(emulator))


def _account(emulator: Emulator) -> dict[str, Any]:
    account_id = emulator.settings.account_id
    return {
        "name": f"accounts/{account_id}",
        "displayName": account_id,
        "email": f"{account_id}@emulator.invalid",
        "accountType": "ENTERPRISE",
        "state": "READY",
        "createTime": rfc3339(0.0),
    }


async def list_deployments(request: web.Request) -> web.StreamResponse:
    emulator = emulator_of(request)
    await emulator.apply_fault(request, "list", None)
    emulator.check_account(request)
    page_size = _page_size(request.query.get("pageSize"))
    offset = _page_offset(request.query.get("pageToken"))
    show_deleted = query_bool(request, "showDeleted")
    predicates = _parse_filter(request.query.get("filter", ""))
    now = time.monotonic()
    rendered = [
        dep.render(now, emulator.settings)
        for dep in emulator.store.all()
        if show_deleted or dep.state(now) != DELETED
    ]
    rendered = [item for item in rendered if all(predicate(item) for predicate in predicates)]
    _order(rendered, request.query.get("orderBy", ""))
    page = rendered[offset : offset + page_size]
    body: dict[str, Any] = {"deployments": page, "totalSize": len(rendered)}
    if offset + page_size < len(rendered):
        body["nextPageToken"] = f"o{offset + page_size}"
    return json_response(body)


def _page_size(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_PAGE_SIZE
    try:
        size = int(raw)
    except ValueError:
        raise invalid(f"pageSize must be an integer, got {raw!r}") from None
    if size < 0:
        raise invalid(f"pageSize must not be negative, got {size}")
    return min(size, MAX_PAGE_SIZE) if size else DEFAULT_PAGE_SIZE


def _page_offset(token: str | None) -> int:
    if not token:
        return 0
    if token[0] != "o" or not token[1:].isdigit():
        raise invalid("pageToken is invalid; pass the nextPageToken of the previous page")
    return int(token[1:])


def _parse_filter(text: str) -> list[Callable[[dict[str, Any]], bool]]:
    predicates: list[Callable[[dict[str, Any]], bool]] = []
    if not text.strip():
        return predicates
    for clause in re.split(r"\s+AND\s+", text.strip()):
        match = _FILTER_CLAUSE.match(clause)
        if match is None or match.group(1) not in _FILTER_FIELDS:
            raise invalid(
                f'unsupported filter clause {clause!r}; use field="value" or field!="value" joined by AND, '
                f"fields: {', '.join(sorted(_FILTER_FIELDS))}"
            )
        key = _FILTER_FIELDS[match.group(1)]
        value = match.group(3) if match.group(3) is not None else match.group(4)
        negate = match.group(2) == "!="
        predicates.append(functools.partial(_matches, key, value, negate))
    return predicates


def _matches(key: str, value: str, negate: bool, item: dict[str, Any]) -> bool:
    return (item.get(key) == value) != negate


def _order(items: list[dict[str, Any]], text: str) -> None:
    for part in reversed([p.strip() for p in text.split(",") if p.strip()]):
        field, _, direction = part.partition(" ")
        direction = direction.strip().lower()
        if field not in _ORDER_FIELDS or direction not in ("", "asc", "desc"):
            raise invalid(f"unsupported orderBy {part!r}; use create_time or name, optionally with ' desc'")
        items.sort(key=operator.itemgetter(_ORDER_FIELDS[field]), reverse=direction == "desc")


async def create_deployment(request: web.Request) -> web.StreamResponse:
    emulator = emulator_of(request)
    deployment_id = request.query.get("deploymentId") or f"deployment-{uuid.uuid4().hex[:12]}"
    await emulator.apply_fault(request, "create", deployment_id)
    emulator.check_account(request)
    body = await read_json(request, required=False)
    if not DEPLOYMENT_ID_RE.match(deployment_id):
        raise invalid(
            f"deploymentId {deployment_id!r} is invalid: use 1-63 lower-case letters, digits or '-', "
            "starting and ending with a letter or digit"
        )
    for flag in ("skipShapeValidation", "disableSpeculativeDecoding", "validateOnly"):
        query_bool(request, flag)
    deployment = emulator.store.create(
        deployment_id, body if body is not None else {}, query_bool(request, "acceptShapelessRisk")
    )
    return _render(emulator, deployment)


def _render(emulator: Emulator, deployment: Deployment) -> web.Response:
    return json_response(deployment.render(time.monotonic(), emulator.settings))


async def get_deployment(request: web.Request) -> web.StreamResponse:
    emulator = emulator_of(request)
    deployment_id = request.match_info["deployment"]
    await emulator.apply_fault(request, "get", deployment_id)
    emulator.check_account(request)
    return _render(emulator, emulator.store.get(deployment_id))


async def update_deployment(request: web.Request) -> web.StreamResponse:
    emulator = emulator_of(request)
    deployment_id = request.match_info["deployment"]
    await emulator.apply_fault(request, "update", deployment_id)
    emulator.check_account(request)
    body = await read_json(request)
    mask = request.query.get("updateMask")
    return _render(emulator, emulator.store.update(deployment_id, body, mask))


async def delete_deployment(request: web.Request) -> web.StreamResponse:
    emulator = emulator_of(request)
    deployment_id = request.match_info["deployment"]
    await emulator.apply_fault(request, "delete", deployment_id)
    emulator.check_account(request)
    hard = query_bool(request, "hard")
    emulator.store.delete(deployment_id, hard=hard, ignore_checks=query_bool(request, "ignoreChecks"))
    return json_response({})


async def deployment_action(request: web.Request) -> web.StreamResponse:
    """``POST .../deployments/{id}:scale`` and ``:undelete``."""
    emulator = emulator_of(request)
    deployment_id, _, action = request.match_info["deployment"].partition(":")
    await emulator.apply_fault(request, "update", deployment_id)
    emulator.check_account(request)
    body = await read_json(request, required=False)
    if action == "scale":
        return _render(emulator, emulator.store.scale(deployment_id, body or {}))
    if action == "undelete":
        return _render(emulator, emulator.store.undelete(deployment_id))
    raise ApiError(404, f"no route for POST {request.path}")


# -- hotload ---------------------------------------------------------------------------------


def _hotload_target(request: web.Request, emulator: Emulator) -> Deployment:
    header = request.headers.get(DEPLOYMENT_HEADER)
    prefix = f"accounts/{emulator.settings.account_id}/deployments/"
    if not header:
        raise invalid(f"header '{DEPLOYMENT_HEADER}' is required ({prefix}<deployment_id>)")
    if not header.startswith(prefix):
        raise ApiError(404, f"deployment {header!r} not found in account '{emulator.settings.account_id}'")
    deployment = emulator.store.get(header[len(prefix) :])
    model = request.headers.get(MODEL_HEADER)
    if model and model != deployment.values["base_model"]:
        raise invalid(f"header '{MODEL_HEADER}' {model!r} does not match the deployment's base model")
    if not deployment.values.get("enable_hot_load"):
        raise ApiError(
            400,
            f"deployment '{deployment.deployment_id}' does not have hot load enabled",
            "FAILED_PRECONDITION",
        )
    return deployment


def _hotload_deployment_id(request: web.Request) -> str | None:
    header = request.headers.get(DEPLOYMENT_HEADER, "")
    return header.rsplit("/", 1)[-1] or None


async def hotload_load(request: web.Request) -> web.StreamResponse:
    emulator = emulator_of(request)
    await emulator.apply_fault(request, "hotload_load", _hotload_deployment_id(request))
    body = await read_json(request)
    load = parse_load_request(body)
    deployment = _hotload_target(request, emulator)
    settings = emulator.settings
    now = time.monotonic()
    replicas = deployment.sync_replicas(now, settings)
    if not replicas:
        raise ApiError(425, f"deployment '{deployment.deployment_id}' has no running replica to hot load yet")
    fail = load.identity in settings.hotload_fail_identities
    for replica in replicas:
        replica.refresh(now)
        delay = replica.index * settings.hotload_stage_s
        replica.hotload.schedule(load, now, delay, settings.hotload_stage_s, fail)
    return json_response({"identity": load.identity, "replicas": len(replicas), "accepted": True})


async def hotload_status(request: web.Request) -> web.StreamResponse:
    emulator = emulator_of(request)
    await emulator.apply_fault(request, "hotload_status", _hotload_deployment_id(request))
    deployment = _hotload_target(request, emulator)
    settings = emulator.settings
    now = time.monotonic()
    entries = []
    for replica in deployment.sync_replicas(now, settings):
        replica.refresh(now)
        entry = {"replica_id": replica.host}
        entry.update(replica.hotload.status(now, settings.hotload_stage_s))
        entries.append(entry)
    return json_response({"replicas": entries})


# -- inference ---------------------------------------------------------------------------------


async def completions(request: web.Request) -> web.StreamResponse:
    emulator = emulator_of(request)
    return await emulator.completions.handle(request, await read_json(request))


# -- admin -----------------------------------------------------------------------------------


async def admin_health(request: web.Request) -> web.StreamResponse:
    return json_response({"ok": True})


async def admin_get_config(request: web.Request) -> web.StreamResponse:
    return json_response(emulator_of(request).settings.public())


async def admin_patch_config(request: web.Request) -> web.StreamResponse:
    emulator = emulator_of(request)
    body = await read_json(request)
    if not isinstance(body, dict):
        raise invalid("config must be a JSON object of settings")
    try:
        settings = emulator.settings.updated(body)
    except ValueError as exc:
        raise invalid(str(exc)) from None
    emulator.configure(settings)
    return json_response(settings.public())


async def admin_reset(request: web.Request) -> web.StreamResponse:
    emulator_of(request).reset()
    return json_response({"ok": True})


async def admin_stats(request: web.Request) -> web.StreamResponse:
    emulator = emulator_of(request)
    body = emulator.stats.as_dict()
    body["deployments"] = emulator.store.counts_by_state()
    body["completions"]["in_flight"] = sum(deployment.in_flight for deployment in emulator.store.all())
    return json_response(body)


async def admin_requests(request: web.Request) -> web.StreamResponse:
    emulator = emulator_of(request)
    route = request.query.get("route")
    try:
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        raise invalid("limit must be an integer") from None
    entries = [entry for entry in emulator.request_log if route is None or entry["route"] == route]
    entries = entries[-limit:] if limit > 0 else []
    return json_response([{**entry, "time": rfc3339(entry["time"])} for entry in entries])


async def admin_add_fault(request: web.Request) -> web.StreamResponse:
    rule = emulator_of(request).faults.add(await read_json(request))
    return json_response({"id": rule.id})


async def admin_list_faults(request: web.Request) -> web.StreamResponse:
    return json_response(emulator_of(request).faults.describe())


async def admin_clear_faults(request: web.Request) -> web.StreamResponse:
    emulator_of(request).faults.clear()
    return json_response({"ok": True})


async def admin_fail(request: web.Request) -> web.StreamResponse:
    body = await read_json(request, required=False) or {}
    message = body.get("message", "injected failure") if isinstance(body, dict) else "injected failure"
    code = body.get("code", "INTERNAL") if isinstance(body, dict) else "INTERNAL"
    deployment = emulator_of(request).store.fail(request.match_info["deployment"], str(message), str(code))
    return _render(emulator_of(request), deployment)


async def admin_vanish(request: web.Request) -> web.StreamResponse:
    emulator_of(request).store.vanish(request.match_info["deployment"])
    return json_response({"ok": True})


def build_app(settings: Settings) -> web.Application:
    """The whole emulator as one aiohttp application."""
    app = web.Application(middlewares=[fireworks_middleware], client_max_size=64 * 1024**2)
    emulator = Emulator(settings)
    app[EMULATOR_KEY] = emulator
    app.on_response_prepare.append(_on_prepare)
    app.on_cleanup.append(_on_cleanup)
    deployments = "/v1/accounts/{account}/deployments"
    one = deployments + "/{deployment}"
    app.router.add_get("/v1/accounts", get_accounts, name="accounts")
    app.router.add_get("/v1/accounts/{account}", get_account, name="account")
    app.router.add_get(deployments, list_deployments, name="list")
    app.router.add_post(deployments, create_deployment, name="create")
    app.router.add_get(one, get_deployment, name="get")
    app.router.add_patch(one, update_deployment, name="update")
    app.router.add_delete(one, delete_deployment, name="delete")
    app.router.add_post(one, deployment_action, name="action")
    app.router.add_post("/hot_load/v1/models/hot_load", hotload_load, name="hotload_load")
    app.router.add_get("/hot_load/v1/models/hot_load", hotload_status, name="hotload_status")
    app.router.add_post("/inference/v1/completions", completions, name="completions")
    admin = ADMIN_PREFIX.rstrip("/")
    app.router.add_get(admin + "/health", admin_health)
    app.router.add_get(admin + "/config", admin_get_config)
    app.router.add_patch(admin + "/config", admin_patch_config)
    app.router.add_post(admin + "/reset", admin_reset)
    app.router.add_get(admin + "/stats", admin_stats)
    app.router.add_get(admin + "/requests", admin_requests)
    app.router.add_post(admin + "/faults", admin_add_fault)
    app.router.add_get(admin + "/faults", admin_list_faults)
    app.router.add_delete(admin + "/faults", admin_clear_faults)
    app.router.add_post(admin + "/deployments/{deployment}/fail", admin_fail)
    app.router.add_post(admin + "/deployments/{deployment}/vanish", admin_vanish)
    return app
