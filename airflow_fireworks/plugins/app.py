"""The FastAPI app behind the Fireworks page, mounted by the api-server under ``/fireworks``.

Authorization is Airflow's own: the routes depend on ``requires_access_connection`` from the
api-server's security module (the dependency its ``/api/v2/connections`` routes use), with the
connection id as the ``connection_id`` path parameter. Reading a connection's resources needs
GET on that connection; scaling to zero and deleting need PUT (edit) on it. Usage rows are shown
only for DAGs the user may read. Actions take a JSON body repeating the resource id
(``{"confirm": "<id>"}``): the page's confirmation dialog sends it, and a JSON body cannot be
posted cross-site without a CORS preflight.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib import resources
from typing import Annotated, Any, Literal

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.resource_details import ConnectionDetails
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_connection
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel

from airflow_fireworks.plugins import service

log = logging.getLogger(__name__)

CanRead = Depends(requires_access_connection("GET"))
CanEdit = Depends(requires_access_connection("PUT"))


class Confirmation(BaseModel):
    """The body of an action: the id of the resource it acts on, repeated."""

    confirm: str


def _readable_dags(user: Any) -> set[str]:
    return get_auth_manager().get_authorized_dag_ids(user=user, method="GET")


def _can_edit(user: Any, conn_id: str) -> bool:
    return get_auth_manager().is_authorized_connection(
        method="PUT", details=ConnectionDetails(conn_id=conn_id), user=user
    )


def _confirmed(body: Confirmation, resource_id: str) -> None:
    if body.confirm != resource_id:
        raise HTTPException(
            400, f"confirmation does not match: send {{'confirm': {resource_id!r}}} to act on {resource_id!r}"
        )


async def _call(function: Callable[..., Any], *args: Any) -> Any:
    """Run a blocking service call off the event loop; its errors become HTTP errors."""
    try:
        return await run_in_threadpool(function, *args)
    except service.PageError as err:
        raise HTTPException(err.status, str(err)) from None


def create_app() -> FastAPI:
    """A new app (the plugin builds one, lazily)."""
    app = FastAPI(title="Fireworks", description="Fireworks deployments and trainer jobs of a connection")
    page = resources.files("airflow_fireworks.plugins").joinpath("page.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        """The page (static; every datum comes from the authorized routes below)."""
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    @app.get("/api/connections")
    async def list_connections(user: GetUserDep) -> dict[str, Any]:
        """The ``fireworks`` connections in the metadata database that the user may read."""
        ids = await _call(service.connection_ids)
        manager = get_auth_manager()
        readable = [
            conn_id
            for conn_id in ids
            if manager.is_authorized_connection(
                method="GET", details=ConnectionDetails(conn_id=conn_id), user=user
            )
        ]
        return {"connections": readable}

    @app.get("/api/connections/{connection_id}/resources", dependencies=[CanRead])
    async def list_resources(connection_id: str, user: GetUserDep) -> dict[str, Any]:
        """Deployments and trainer jobs with state, replicas, served snapshots, provenance, GPU time."""
        result = await _call(service.overview, connection_id, _readable_dags(user))
        return {**result, "can_edit": _can_edit(user, connection_id)}

    @app.get("/api/connections/{connection_id}/chart", dependencies=[CanRead])
    async def sampling_chart(
        connection_id: str,
        user: GetUserDep,
        dag_id: Annotated[str, Query()],
        run_id: Annotated[str, Query()],
        task_id: Annotated[str, Query()],
        map_index: Annotated[int, Query()] = -1,
    ) -> dict[str, Any]:
        """The throughput, window and prefill-queue timeline of one sampling task's manifest."""
        return await _call(
            service.chart, connection_id, _readable_dags(user), dag_id, run_id, task_id, map_index
        )

    @app.post(
        "/api/connections/{connection_id}/deployments/{deployment_id}/scale-to-zero", dependencies=[CanEdit]
    )
    async def scale_to_zero(connection_id: str, deployment_id: str, body: Confirmation) -> dict[str, Any]:
        """Set min and max replicas to zero (the page asks for confirmation first)."""
        _confirmed(body, deployment_id)
        return await _call(service.scale_to_zero, connection_id, deployment_id)

    @app.post("/api/connections/{connection_id}/{kind}/{resource_id}/delete", dependencies=[CanEdit])
    async def delete(
        connection_id: str, kind: Literal["deployments", "trainer-jobs"], resource_id: str, body: Confirmation
    ) -> dict[str, Any]:
        """Delete a deployment or a trainer job (the page asks to type its id first)."""
        _confirmed(body, resource_id)
        return await _call(
            service.delete, connection_id, "deployment" if kind == "deployments" else "trainer", resource_id
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        """No traceback or server detail in a response: the error's type only (details in the log)."""
        log.error("Fireworks page: %s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}); see the api-server log"}, 500)

    return app
