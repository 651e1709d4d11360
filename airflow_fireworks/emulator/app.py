"""The aiohttp application: auth middleware, control plane, hotload and inference routes."""

from __future__ import annotations

import asyncio
import functools
import operator
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from airflow_fireworks.emulator.admin import ADMIN_PREFIX, add_admin_routes
from airflow_fireworks.emulator.core import (
    EMULATOR_KEY,
    ConnectionDropped,
    Emulator,
    emulator_of,
    page_window,
    query_bool,
    read_json,
)
from airflow_fireworks.emulator.errors import ApiError, error_response, invalid, json_response
from airflow_fireworks.emulator.faults import LATE_ANSWER_KEY
from airflow_fireworks.emulator.hotload import parse_load_request
from airflow_fireworks.emulator.inference import CompletionsHandler
from airflow_fireworks.emulator.resources import DEPLOYMENT_ID_RE, rfc3339
from airflow_fireworks.emulator.settings import Settings
from airflow_fireworks.emulator.state import DELETED, Deployment
from airflow_fireworks.emulator.trainers import add_trainer_routes

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
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
    if request.path.startswith(ADMIN_PREFIX + "/"):
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
        if request.get(LATE_ANSWER_KEY):  # a ``late`` delay fault: acted, now answer late
            await asyncio.sleep(request[LATE_ANSWER_KEY])
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
    offset, page_size = page_window(request)
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
    body, _ = emulator.trainers.link(body, None)
    deployment = emulator.store.create(
        deployment_id, body if body is not None else {}, query_bool(request, "acceptShapelessRisk")
    )
    return emulator.render(deployment)


async def get_deployment(request: web.Request) -> web.StreamResponse:
    emulator = emulator_of(request)
    deployment_id = request.match_info["deployment"]
    await emulator.apply_fault(request, "get", deployment_id)
    emulator.check_account(request)
    return emulator.render(emulator.store.get(deployment_id))


async def update_deployment(request: web.Request) -> web.StreamResponse:
    emulator = emulator_of(request)
    deployment_id = request.match_info["deployment"]
    await emulator.apply_fault(request, "update", deployment_id)
    emulator.check_account(request)
    body, mask = emulator.trainers.link(await read_json(request), request.query.get("updateMask"))
    return emulator.render(emulator.store.update(deployment_id, body, mask))


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
        return emulator.render(emulator.store.scale(deployment_id, body or {}))
    if action == "undelete":
        return emulator.render(emulator.store.undelete(deployment_id))
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


COMPLETIONS_KEY: web.AppKey[CompletionsHandler] = web.AppKey("completions", CompletionsHandler)


async def completions(request: web.Request) -> web.StreamResponse:
    return await request.app[COMPLETIONS_KEY].handle(request, await read_json(request))


def build_app(settings: Settings) -> web.Application:
    """The whole emulator as one aiohttp application."""
    app = web.Application(middlewares=[fireworks_middleware], client_max_size=64 * 1024**2)
    emulator = Emulator(settings)
    app[EMULATOR_KEY] = emulator
    app[COMPLETIONS_KEY] = CompletionsHandler(emulator)
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
    add_trainer_routes(app)
    add_admin_routes(app)
    return app
