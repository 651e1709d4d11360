"""Admin endpoints under ``/_emulator/`` (no key): health, config, reset, stats, log, faults, clock."""

from __future__ import annotations

import math

from aiohttp import web

from airflow_fireworks.emulator.core import emulator_of, read_json
from airflow_fireworks.emulator.errors import invalid, json_response
from airflow_fireworks.emulator.resources import rfc3339

ADMIN_PREFIX = "/_emulator"


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
    body["trainer_jobs"] = emulator.trainers.counts_by_state()
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
    return emulator_of(request).render(deployment)


async def admin_vanish(request: web.Request) -> web.StreamResponse:
    emulator_of(request).store.vanish(request.match_info["deployment"])
    return json_response({"ok": True})


async def admin_clock(request: web.Request) -> web.StreamResponse:
    """``{"advance_s": N}``: N platform seconds without traffic pass for every deployment."""
    body = await read_json(request)
    if not isinstance(body, dict):
        raise invalid('clock body must be a JSON object such as {"advance_s": 3600}')
    for key in body:
        if key != "advance_s":
            raise invalid(f"unknown field '{key}' (known: advance_s)")
    advance = body.get("advance_s")
    if (
        isinstance(advance, bool)
        or not isinstance(advance, int | float)
        or not math.isfinite(advance)
        or advance < 0
    ):
        raise invalid(f"field 'advance_s' must be a finite number of platform seconds >= 0, got {advance!r}")
    emulator_of(request).store.advance_clock(float(advance))
    return json_response({"ok": True, "advanced_s": advance})


def add_admin_routes(app: web.Application) -> None:
    """Register every admin route on ``app``."""
    app.router.add_get(ADMIN_PREFIX + "/health", admin_health)
    app.router.add_get(ADMIN_PREFIX + "/config", admin_get_config)
    app.router.add_patch(ADMIN_PREFIX + "/config", admin_patch_config)
    app.router.add_post(ADMIN_PREFIX + "/reset", admin_reset)
    app.router.add_get(ADMIN_PREFIX + "/stats", admin_stats)
    app.router.add_get(ADMIN_PREFIX + "/requests", admin_requests)
    app.router.add_post(ADMIN_PREFIX + "/faults", admin_add_fault)
    app.router.add_get(ADMIN_PREFIX + "/faults", admin_list_faults)
    app.router.add_delete(ADMIN_PREFIX + "/faults", admin_clear_faults)
    app.router.add_post(ADMIN_PREFIX + "/deployments/{deployment}/fail", admin_fail)
    app.router.add_post(ADMIN_PREFIX + "/deployments/{deployment}/vanish", admin_vanish)
    app.router.add_post(ADMIN_PREFIX + "/clock", admin_clock)
