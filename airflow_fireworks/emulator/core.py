"""What every route shares: settings, deployments, faults, stats, the request log, helpers."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import deque
from typing import Any

from aiohttp import web

from airflow_fireworks.emulator.errors import ApiError, invalid, json_response
from airflow_fireworks.emulator.faults import LATE_ANSWER_KEY, CannedAnswer, FaultRule, Faults
from airflow_fireworks.emulator.settings import Settings
from airflow_fireworks.emulator.state import Deployment, Store
from airflow_fireworks.emulator.trainer_state import TrainerStore

MAX_PAGE_SIZE = 200
DEFAULT_PAGE_SIZE = 50


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
        """Count one answer of ``route``."""
        per_route = self.requests.setdefault(route, {})
        key = str(status)
        per_route[key] = per_route.get(key, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        """The counters as JSON."""
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
        self.trainers = TrainerStore(lambda: self.settings)
        self.faults = Faults(settings.seed)
        self.stats = Stats()
        self.request_log: deque[dict[str, Any]] = deque(maxlen=settings.request_log_size)
        self.sampling_rng = random.Random(settings.seed)

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
        self.trainers.clear()
        self.settings = self.initial_settings
        self.faults = Faults(self.settings.seed)
        self.stats = Stats()
        self.request_log = deque(maxlen=self.settings.request_log_size)
        self.sampling_rng = random.Random(self.settings.seed)

    # -- helpers for handlers ---------------------------------------------------------------

    def render(self, deployment: Deployment) -> web.Response:
        """The deployment resource as a JSON answer."""
        return json_response(deployment.render(time.monotonic(), self.settings))

    def check_account(self, request: web.Request) -> None:
        """403 unless the path's account is the emulator's."""
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
            if rule.late:  # carry the request out now, answer late (the middleware waits)
                request[LATE_ANSWER_KEY] = rule.delay_s
            else:
                await asyncio.sleep(rule.delay_s)
            return None
        if rule.kind == "reset":
            drop_connection(request)
        if rule.kind == "body":
            raise CannedAnswer(rule.status, rule.body)
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


def page_window(request: web.Request, maximum: int = MAX_PAGE_SIZE) -> tuple[int, int]:
    """``(offset, size)`` from ``pageToken`` and ``pageSize`` (default 50, capped at ``maximum``)."""
    raw = request.query.get("pageSize")
    try:
        size = int(raw) if raw else 0
    except ValueError:
        raise invalid(f"pageSize must be an integer, got {raw!r}") from None
    if size < 0:
        raise invalid(f"pageSize must not be negative, got {size}")
    token = request.query.get("pageToken")
    if token and (token[0] != "o" or not token[1:].isdigit()):
        raise invalid("pageToken is invalid; pass the nextPageToken of the previous page")
    return (int(token[1:]) if token else 0), (min(size, maximum) if size else DEFAULT_PAGE_SIZE)


EMULATOR_KEY: web.AppKey[Emulator] = web.AppKey("emulator", Emulator)


def emulator_of(request: web.Request) -> Emulator:
    """The emulator serving this request."""
    return request.app[EMULATOR_KEY]
