"""Trainer-job routes: the control plane (jobs, checkpoints, promotion, operations, models,
training shapes), the trainer gateway's health endpoint, and their admin endpoints."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from airflow_fireworks.emulator.admin import ADMIN_PREFIX
from airflow_fireworks.emulator.core import Emulator, emulator_of, page_window, query_bool, read_json
from airflow_fireworks.emulator.errors import ApiError, invalid, json_response
from airflow_fireworks.emulator.trainer_state import (
    FAILED,
    SETTABLE_STATES,
    TRAINING_SHAPES,
    find_shape_version,
)

HEALTH_TAIL = "api/v1/healthz"
MAX_CHECKPOINT_PAGE = 200


async def _job_request(request: web.Request, route: str) -> tuple[Emulator, str]:
    """The emulator and the path's job id, after the route's faults and the account check."""
    emulator = emulator_of(request)
    job_id = request.match_info["job"]
    await emulator.apply_fault(request, route, job_id)
    emulator.check_account(request)
    return emulator, job_id


def _render(request: web.Request, job_id: str) -> web.Response:
    job = emulator_of(request).trainers.get(job_id)
    return json_response(job.render(time.monotonic()))


async def list_jobs(request: web.Request) -> web.StreamResponse:
    emulator = emulator_of(request)
    await emulator.apply_fault(request, "trainer_list", None)
    emulator.check_account(request)
    if request.query.get("filter"):
        raise invalid("filter is not supported for trainer jobs by the emulator; filter on the client")
    offset, size = page_window(request)
    now = time.monotonic()
    jobs = [job.render(now) for job in emulator.trainers.all()]
    body: dict[str, Any] = {"rlorTrainerJobs": jobs[offset : offset + size], "totalSize": len(jobs)}
    if offset + size < len(jobs):
        body["nextPageToken"] = f"o{offset + size}"
    return json_response(body)


async def create_job(request: web.Request) -> web.StreamResponse:
    emulator = emulator_of(request)
    job_id = request.query.get("rlorTrainerJobId") or None
    await emulator.apply_fault(request, "trainer_create", job_id)
    emulator.check_account(request)
    body = await read_json(request)
    query_bool(request, "skipValidations")
    job = emulator.trainers.create(
        job_id,
        body,
        request.query.get("trainingShape") or None,
        lambda deployment_id: emulator.store.find(deployment_id) is not None,
        request.query.get("deploymentId") or None,
    )
    return json_response(job.render(time.monotonic()))


async def get_job(request: web.Request) -> web.StreamResponse:
    _, job_id = await _job_request(request, "trainer_get")
    return _render(request, job_id)


async def delete_job(request: web.Request) -> web.StreamResponse:
    emulator, job_id = await _job_request(request, "trainer_delete")
    emulator.trainers.delete(job_id)
    return json_response({})


async def job_action(request: web.Request) -> web.StreamResponse:
    """``POST .../rlorTrainerJobs/{id}:resume`` (empty or JSON body) and ``:cancel``."""
    emulator = emulator_of(request)
    job_id, _, action = request.match_info["job"].partition(":")
    await emulator.apply_fault(request, "trainer_action", job_id)
    emulator.check_account(request)
    await read_json(request, required=False)
    if action == "resume":
        emulator.trainers.resume(job_id)
    elif action == "cancel":
        emulator.trainers.set_state(job_id, "JOB_STATE_CANCELLED", "CANCELLED", "cancelled by the user")
    else:
        raise ApiError(404, f"no route for POST {request.path}")
    return _render(request, job_id)


async def list_checkpoints(request: web.Request) -> web.StreamResponse:
    emulator, job_id = await _job_request(request, "trainer_checkpoints")
    rows = emulator.trainers.get(job_id).checkpoints
    offset, size = page_window(request, maximum=MAX_CHECKPOINT_PAGE)
    body: dict[str, Any] = {"checkpoints": rows[offset : offset + size]}
    if offset + size < len(rows):
        body["nextPageToken"] = f"o{offset + size}"
    return json_response(body)


async def promote(request: web.Request) -> web.StreamResponse:
    """``POST /v1/accounts/{a}/checkpoints/{checkpoint}:promote`` (account-level, snake_case body)."""
    emulator = emulator_of(request)
    checkpoint, _, action = request.match_info["checkpoint"].partition(":")
    await emulator.apply_fault(request, "trainer_promote", checkpoint)
    emulator.check_account(request)
    if action != "promote":
        raise ApiError(404, f"no route for POST {request.path}")
    model, operation = emulator.trainers.promote(
        emulator.settings.account_id, checkpoint, await read_json(request)
    )
    if operation is None:
        return json_response({"model": model})
    return json_response(
        {"operation": {"name": operation, "done": False, "metadata": {"model": model["name"]}}}
    )


async def get_operation(request: web.Request) -> web.StreamResponse:
    emulator = emulator_of(request)
    await emulator.apply_fault(request, "operations", None)
    emulator.check_account(request)
    name = f"accounts/{request.match_info['account']}/operations/{request.match_info['operation']}"
    return json_response(emulator.trainers.operation(name))


async def get_model(request: web.Request) -> web.StreamResponse:
    emulator = emulator_of(request)
    await emulator.apply_fault(request, "models", None)
    emulator.check_account(request)
    name = f"accounts/{request.match_info['account']}/models/{request.match_info['model']}"
    model = emulator.trainers.models.get(name)
    if model is None:
        raise ApiError(404, f"model '{name}' not found")
    return json_response(model)


async def shape_versions(request: web.Request) -> web.StreamResponse:
    """``GET /v1/accounts/{a}/trainingShapes/{s}/versions[?filter=latest_validated=true&pageSize=1]``."""
    emulator = emulator_of(request)
    await emulator.apply_fault(request, "training_shapes", None)
    shape = f"accounts/{request.match_info['account']}/trainingShapes/{request.match_info['shape']}"
    if shape not in TRAINING_SHAPES:
        raise ApiError(404, f"training shape '{shape}' not found")
    text = request.query.get("filter", "").replace(" ", "")
    if text not in ("", "latest_validated=true"):
        raise invalid("filter must be empty or latest_validated=true")
    versions = TRAINING_SHAPES[shape]
    if text:
        latest = find_shape_version(shape)
        versions = [latest] if latest is not None else []
    offset, size = page_window(request)
    return json_response({"trainingShapeVersions": versions[offset : offset + size]})


async def shape_version(request: web.Request) -> web.StreamResponse:
    emulator = emulator_of(request)
    await emulator.apply_fault(request, "training_shapes", None)
    name = (
        f"accounts/{request.match_info['account']}/trainingShapes/{request.match_info['shape']}"
        f"/versions/{request.match_info['version']}"
    )
    version = find_shape_version(name)
    if version is None:
        raise ApiError(404, f"training shape version '{name}' not found")
    return json_response(version)


async def trainer_gateway(request: web.Request) -> web.StreamResponse:
    """``{gateway}/training/v1/rlorTrainerJobs/{account}/{job}/...``: the prefix is stripped and the
    trainer sees ``/api/v1/healthz`` (200 only while RUNNING and healthy); other trainer routes
    (the Tinker protocol) are not emulated."""
    emulator = emulator_of(request)
    job_id = request.match_info["job"]
    await emulator.apply_fault(request, "trainer_health", job_id)
    if request.match_info["account"] != emulator.settings.account_id:
        raise ApiError(404, f"trainer job '{job_id}' not found in account '{request.match_info['account']}'")
    job = emulator.trainers.get(job_id)
    tail = request.match_info["tail"]
    if tail != HEALTH_TAIL or request.method != "GET":
        raise ApiError(404, f"trainer route '/{tail}' is not emulated (only GET /{HEALTH_TAIL})")
    now = time.monotonic()
    if not job.healthy(now):
        raise ApiError(503, f"trainer '{job_id}' is not serving ({job.state(now)})")
    return json_response({"status": "ok"})


# -- admin -----------------------------------------------------------------------------------


async def admin_add_job(request: web.Request) -> web.StreamResponse:
    """``{"job_id", "base_model"?, "running"?}``: a trainer job that already exists (RUNNING by default)."""
    emulator = emulator_of(request)
    body = await read_json(request)
    if not isinstance(body, dict) or not isinstance(body.get("job_id"), str):
        raise invalid('body must be an object such as {"job_id": "grpo-trainer"}')
    base_model = body.get("base_model", "accounts/fireworks/models/qwen3-8b")
    spec = {"serviceMode": True, "trainingConfig": {"baseModel": base_model}}
    job = emulator.trainers.create(body["job_id"], spec, None, lambda _: False, None)
    if body.get("running", True):
        job.mark_running(time.monotonic())
    return json_response(job.render(time.monotonic()))


async def admin_set_state(request: web.Request) -> web.StreamResponse:
    """``{"state": "JOB_STATE_PAUSED", "code"?, "message"?}``: the platform stops, pauses or fails the job."""
    body = await read_json(request)
    if not isinstance(body, dict):
        raise invalid('body must be an object such as {"state": "JOB_STATE_FAILED", "message": "..."}')
    state = str(body.get("state", ""))
    state = state if state.startswith("JOB_STATE_") else f"JOB_STATE_{state}"
    if state not in SETTABLE_STATES:
        raise invalid(f"field 'state' must be one of {', '.join(sorted(SETTABLE_STATES))}")
    code = str(body.get("code", "INTERNAL" if state == FAILED else "OK"))
    message = str(body.get("message", "set by the emulator admin"))
    emulator_of(request).trainers.set_state(request.match_info["job"], state, code, message)
    return _render(request, request.match_info["job"])


async def admin_preempt(request: web.Request) -> web.StreamResponse:
    """The job's capacity is reclaimed: FAILED (``UNAVAILABLE``), health down, resumable."""
    emulator_of(request).trainers.set_state(
        request.match_info["job"], FAILED, "UNAVAILABLE", "trainer preempted: its capacity was reclaimed"
    )
    return _render(request, request.match_info["job"])


async def admin_save_checkpoint(request: web.Request) -> web.StreamResponse:
    """``{"name", "checkpoint_type"?}``: stands in for the trainer's save-weights call."""
    body = await read_json(request)
    if not isinstance(body, dict):
        raise invalid('body must be an object such as {"name": "step-1"}')
    saved = emulator_of(request).trainers.save_checkpoint(
        request.match_info["job"], body.get("name"), body.get("checkpoint_type")
    )
    return json_response(saved)


async def admin_vanish_job(request: web.Request) -> web.StreamResponse:
    emulator_of(request).trainers.vanish(request.match_info["job"])
    return json_response({"ok": True})


def add_trainer_routes(app: web.Application) -> None:
    """Register the trainer routes (and their admin endpoints) on ``app``."""
    jobs = "/v1/accounts/{account}/rlorTrainerJobs"
    one = jobs + "/{job}"
    shapes = "/v1/accounts/{account}/trainingShapes/{shape}/versions"
    app.router.add_get(jobs, list_jobs, name="trainer_list")
    app.router.add_post(jobs, create_job, name="trainer_create")
    app.router.add_get(one, get_job, name="trainer_get")
    app.router.add_delete(one, delete_job, name="trainer_delete")
    app.router.add_post(one, job_action, name="trainer_action")
    app.router.add_get(one + "/checkpoints", list_checkpoints, name="trainer_checkpoints")
    app.router.add_post("/v1/accounts/{account}/checkpoints/{checkpoint}", promote, name="trainer_promote")
    app.router.add_get("/v1/accounts/{account}/operations/{operation}", get_operation, name="operations")
    app.router.add_get("/v1/accounts/{account}/models/{model}", get_model, name="models")
    app.router.add_get(shapes, shape_versions, name="training_shapes")
    app.router.add_get(shapes + "/{version}", shape_version, name="training_shape")
    app.router.add_route(
        "*", "/training/v1/rlorTrainerJobs/{account}/{job}/{tail:.*}", trainer_gateway, name="trainer_health"
    )
    admin = ADMIN_PREFIX + "/trainers"
    app.router.add_post(admin, admin_add_job)
    app.router.add_post(admin + "/{job}/state", admin_set_state)
    app.router.add_post(admin + "/{job}/preempt", admin_preempt)
    app.router.add_post(admin + "/{job}/checkpoints", admin_save_checkpoint)
    app.router.add_post(admin + "/{job}/vanish", admin_vanish_job)
