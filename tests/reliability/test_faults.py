"""Every injected fault, at every layer, has its expected outcome.

Each table row is one fault kind (emulator fault rule or lifecycle event) at one layer
(``DeploymentManager``, ``AsyncFireworksClient`` and the triggers, ``DeploymentSampler``, the
operators) and says what must happen: retried and succeeded (checked against what a clean run
returns), or a clear error naming what happened. Faults are counted through the emulator's own
hit counters, so a row whose fault never fired fails.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from airflow_fireworks.api import (
    AsyncFireworksClient,
    DeploymentConfig,
    DeploymentFailedError,
    DeploymentManager,
    DeploymentNotFoundError,
    FireworksAPIError,
    FireworksConnectionError,
    FireworksError,
    HotloadFailedError,
    RetryPolicy,
)
from airflow_fireworks.hooks.fireworks import FireworksHook
from airflow_fireworks.operators.deployment import (
    FireworksCreateDeploymentOperator,
    FireworksDeleteDeploymentOperator,
    FireworksHotloadOperator,
    FireworksScaleToZeroOperator,
)
from airflow_fireworks.operators.sampling import FireworksSampleOperator
from airflow_fireworks.sampling import (
    DeploymentNotServingError,
    DeploymentSampler,
    DeploymentSamplerTimeoutError,
    FixedConcurrencyController,
    PromptSpec,
    SampledCompletion,
    SamplingHTTPError,
    SamplingRequestError,
    StreamProtocolError,
    UpstreamStreamError,
    sample_prompts,
)
from airflow_fireworks.triggers.deployment import FireworksDeploymentTrigger, FireworksHotloadTrigger
from tests.airflow_helpers import run_deferred, task_context
from tests.emulator_control import EmulatorProcess
from tests.reliability.conftest import (
    BASE_MODEL,
    FAST_EMULATOR,
    QUICK_RETRY,
    create_ready,
    fault_hits,
    gaps_after,
    raw_deployment,
)

DEP = "fault-dep"
#: The ``Retry-After`` of the 429 rows: far above QUICK_RETRY's own backoff (10 ms), so a retry
#: that ignores the header comes visibly too early.
RETRY_AFTER_S = 0.3
#: The triggers use the production retry policy, whose first backoff is up to 1 s: their
#: ``Retry-After`` is above that.
TRIGGER_RETRY_AFTER_S = 1.5
PROMPT = [1, 42, 17, 99, 3, 250]

# --- fault kinds that must be retried and then succeed --------------------------------------------

#: (name, rule fields, requests the fault adds). Bursts are sized below QUICK_RETRY.max_attempts.
TRANSIENT: list[tuple[str, dict[str, Any], int]] = [
    ("500-burst", {"kind": "status", "status": 500, "times": 2}, 2),
    ("502-burst", {"kind": "status", "status": 502, "times": 2}, 2),
    ("503-burst", {"kind": "status", "status": 503, "times": 3}, 3),
    ("429-retry-after", {"kind": "status", "status": 429, "retry_after_s": RETRY_AFTER_S, "times": 1}, 1),
    ("reset-before-answer", {"kind": "reset", "times": 2}, 2),
    ("slow-answer", {"kind": "delay", "delay_s": 0.15, "times": 1}, 0),
]


def comparable(result: Any) -> Any:
    """A call's result without what differs between two equal calls (timestamps)."""
    if isinstance(result, list):
        return [comparable(item) for item in result]
    raw = getattr(result, "raw", None)
    if isinstance(raw, dict):
        return {key: value for key, value in raw.items() if not key.endswith("Time")}
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        return dataclasses.asdict(result)
    return result


def assert_waited_retry_after(emu: EmulatorProcess, route: str, rule: dict[str, Any]) -> None:
    """The retry after a 429 came no sooner than its ``Retry-After`` (from the emulator's log)."""
    if rule.get("retry_after_s"):
        gaps = gaps_after(emu, route, 429)
        assert gaps and min(gaps) >= rule["retry_after_s"], f"retried {gaps} s after a 429"


@dataclass(frozen=True)
class Outcome:
    """What a faulty call must end in: success, or an error of ``error`` whose text names ``says``."""

    error: type[BaseException] | None = None
    says: tuple[str, ...] = ()
    attempts: int | None = None
    route: str = "get"  # the route whose requests ``attempts`` counts
    extra: Callable[[BaseException], bool] | None = field(default=None, compare=False)


def check_error(caught: BaseException, expected: Outcome, secret: str) -> None:
    assert expected.error is not None
    assert isinstance(caught, expected.error), f"{type(caught).__name__}: {caught}"
    text = str(caught)
    for word in expected.says:
        assert word in text, f"{word!r} not in {text!r}"
    assert secret not in text and secret not in repr(caught)
    if expected.extra is not None:
        assert expected.extra(caught), repr(caught)


# === layer 1: DeploymentManager (requests + tenacity) =================================================

MANAGER_ROUTES: dict[str, Callable[[DeploymentManager, EmulatorProcess], Any]] = {
    "accounts": lambda m, e: DeploymentManager(e.api_key, e.url, retry_policy=QUICK_RETRY).account_id,
    "get": lambda m, e: m.get(DEP),
    "list": lambda m, e: [d.deployment_id for d in m.list_deployments()],
    "create": lambda m, e: m.create_or_get(
        DeploymentConfig(deployment_id="fault-new", base_model=BASE_MODEL)
    ),
    "update": lambda m, e: m.update(DEP, {"minReplicaCount": 1}, "min_replica_count"),
    "delete": lambda m, e: m.delete(DEP),
    "hotload_load": lambda m, e: m.hotload(DEP, BASE_MODEL, "snap-1"),
    "hotload_status": lambda m, e: m.hotload_check_status(DEP, BASE_MODEL),
}


@pytest.fixture
def ready_manager(manager: DeploymentManager, emu: EmulatorProcess) -> DeploymentManager:
    create_ready(emu, DEP)
    assert manager.account_id == emu.account_id
    return manager


#: What each route returns without faults, computed once per route (module-wide cache).
_CLEAN: dict[str, Any] = {}
#: What the fault-free result must be (so that a result wrong with and without faults fails too).
CLEAN_IS: dict[str, Callable[[Any], bool]] = {
    "accounts": lambda r: r == "emulator",
    "get": lambda r: r["state"] == "READY" and r["name"].endswith(f"/{DEP}"),
    "list": lambda r: r == [DEP],
    "create": lambda r: r["state"] == "CREATING" and r["name"].endswith("/fault-new"),
    "update": lambda r: r["minReplicaCount"] == 1,
    "delete": lambda r: r is True,
    "hotload_load": lambda r: r == {"identity": "snap-1", "replicas": 1, "accepted": True},
    "hotload_status": lambda r: r["replicas"][0]["readiness"] is True,
}


def clean_result(route: str, manager: DeploymentManager, emu: EmulatorProcess) -> Any:
    """The route's fault-free result on a fresh emulator state; the state is fresh again after."""
    if route not in _CLEAN:
        _CLEAN[route] = comparable(MANAGER_ROUTES[route](manager, emu))
        assert CLEAN_IS[route](_CLEAN[route]), (route, _CLEAN[route])
        emu.reset()
        emu.configure(**FAST_EMULATOR)
        create_ready(emu, DEP)
    return _CLEAN[route]


@pytest.mark.parametrize("route", sorted(MANAGER_ROUTES))
@pytest.mark.parametrize(("kind", "rule", "extra_requests"), TRANSIENT, ids=[t[0] for t in TRANSIENT])
def test_manager_retries_transient_faults_and_succeeds(
    ready_manager: DeploymentManager,
    emu: EmulatorProcess,
    route: str,
    kind: str,
    rule: dict[str, Any],
    extra_requests: int,
) -> None:
    clean = clean_result(route, ready_manager, emu)
    before = len(emu.requests(route=route))
    emu.add_fault(route=route, **rule)

    result = MANAGER_ROUTES[route](ready_manager, emu)

    assert comparable(result) == clean
    assert fault_hits(emu) == rule["times"]
    assert len(emu.requests(route=route)) - before == 1 + extra_requests
    assert_waited_retry_after(emu, route, rule)
    if route == "create":
        assert sum(emu.stats()["deployments"].values()) == 2
        assert (raw_deployment(emu, "fault-new") or {}).get("name", "").endswith("/fault-new")


def test_manager_create_slower_than_the_client_timeout_creates_exactly_one(emu: EmulatorProcess) -> None:
    """The server creates the deployment at once but answers after the client's timeout: the
    retried POST gets a 409, and the client reads the deployment (409 -> get) instead of creating
    a second one or failing."""
    emu.add_fault(route="create", kind="delay", delay_s=1.0, late=True, times=1)
    with DeploymentManager(emu.api_key, emu.url, retry_policy=QUICK_RETRY, timeout_s=0.3) as client:
        client.account_id  # noqa: B018 (the account lookup is not part of the create)
        gets_before = len(emu.requests(route="get"))
        info = client.create_or_get(DeploymentConfig(deployment_id="slow-create", base_model=BASE_MODEL))
        gets_after_create = len(emu.requests(route="get")) - gets_before
        listed = [d.deployment_id for d in client.list_deployments()]
    deadline = time.monotonic() + 10
    while len(creates := emu.requests(route="create")) < 2:  # the late answer is logged when sent
        assert time.monotonic() < deadline, creates
        time.sleep(0.05)

    assert info.deployment_id == "slow-create" and info.base_model == BASE_MODEL
    assert listed == ["slow-create"]
    assert sorted(str(entry["status"]) for entry in creates) == ["200", "409"]
    assert gets_after_create >= 1  # the 409 was answered by reading the deployment
    assert fault_hits(emu) == 1


def _fail_later(emu: EmulatorProcess, deployment_id: str, delay_s: float, action: str) -> threading.Timer:
    def act() -> None:
        # Under load the task may not have created the deployment yet: wait until it exists.
        url = f"{emu.url}/v1/accounts/{emu.account_id}/deployments/{deployment_id}"
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if emu.session.get(url, headers={"X-Api-Key": emu.api_key}, timeout=5).status_code == 200:
                break
            time.sleep(0.05)
        if action == "fail":
            emu.fail_deployment(deployment_id, "replica crashed: CUDA error 719 (injected)")
        else:
            emu.vanish_deployment(deployment_id)

    timer = threading.Timer(delay_s, act)
    timer.start()
    return timer


MANAGER_ERRORS: list[tuple[str, Callable[[DeploymentManager, EmulatorProcess], Any], Outcome]] = [
    (
        "persistent-503",
        lambda m, e: (e.add_fault(route="get", status=503, times=None), m.get(DEP)),
        Outcome(FireworksAPIError, ("HTTP 503", "injected fault", "GET"), attempts=QUICK_RETRY.max_attempts),
    ),
    (
        "persistent-429",
        lambda m, e: (e.add_fault(route="get", status=429, retry_after_s=0.01, times=None), m.get(DEP)),
        Outcome(
            FireworksAPIError,
            ("HTTP 429", "rate limited"),
            attempts=QUICK_RETRY.max_attempts,
            extra=lambda exc: getattr(exc, "retry_after_s", None) == 0.01,
        ),
    ),
    (
        "persistent-reset",
        lambda m, e: (e.add_fault(route="get", kind="reset", times=None), m.get(DEP)),
        Outcome(
            FireworksConnectionError,
            ("GET", f"/deployments/{DEP}", "failed"),
            attempts=QUICK_RETRY.max_attempts,
        ),
    ),
    (
        "400-not-retried",
        lambda m, e: (
            e.add_fault(route="update", status=400, message="bad field", times=None),
            m.update(DEP, {"minReplicaCount": 1}, "min_replica_count"),
        ),
        Outcome(FireworksAPIError, ("HTTP 400", "bad field", "PATCH"), attempts=1, route="update"),
    ),
    (
        "403-on-create-not-retried",
        lambda m, e: (
            e.add_fault(route="create", status=403, message="no access", times=None),
            m.create_or_get(DeploymentConfig(deployment_id="denied", base_model=BASE_MODEL)),
        ),
        Outcome(FireworksAPIError, ("HTTP 403", "no access", "permission"), attempts=1, route="create"),
    ),
    (
        "hotload-persistent-502",
        lambda m, e: (
            e.add_fault(route="hotload_load", status=502, times=None),
            m.hotload(DEP, BASE_MODEL, "snap-x"),
        ),
        Outcome(
            FireworksAPIError,
            ("HTTP 502", "POST", "hot_load"),
            attempts=QUICK_RETRY.max_attempts,
            route="hotload_load",
        ),
    ),
    (
        "deployment-goes-failed-while-waiting",
        lambda m, e: (
            e.configure(create_delay_s=30),
            m.create_or_get(DeploymentConfig(deployment_id="doomed", base_model=BASE_MODEL)),
            _fail_later(e, "doomed", 0.2, "fail"),
            m.wait_for_ready("doomed", timeout_s=20, poll_interval_s=0.05),
        ),
        Outcome(DeploymentFailedError, ("doomed", "FAILED", "CUDA error 719")),
    ),
    (
        "deployment-deleted-while-waiting-ready",
        lambda m, e: (
            e.configure(create_delay_s=30),
            m.create_or_get(DeploymentConfig(deployment_id="gone", base_model=BASE_MODEL)),
            _fail_later(e, "gone", 0.2, "vanish"),
            m.wait_for_ready("gone", timeout_s=20, poll_interval_s=0.05),
        ),
        Outcome(DeploymentNotFoundError, ("gone", "not found")),
    ),
    (
        "hotload-ends-in-error-stage",
        lambda m, e: (
            e.configure(hotload_fail_identities=["bad-snap"]),
            m.hotload_and_wait(DEP, BASE_MODEL, "bad-snap", timeout_seconds=20, poll_interval=0.05),
        ),
        Outcome(HotloadFailedError, ("bad-snap", "failed", "error")),
    ),
    (
        "deployment-deleted-while-waiting-hotload",
        lambda m, e: (
            m.hotload(DEP, BASE_MODEL, "snap-2"),
            e.vanish_deployment(DEP),
            m.wait_for_hotload(DEP, BASE_MODEL, "snap-2", timeout_seconds=30, poll_interval=0.05),
        ),
        Outcome(DeploymentNotFoundError, ("snap-2", "no longer exists")),
    ),
    (
        "scale-to-zero-of-deleted-deployment",
        lambda m, e: (e.vanish_deployment(DEP), m.scale_to_zero(DEP)),
        Outcome(DeploymentNotFoundError, (DEP,)),
    ),
]


@pytest.mark.parametrize(("name", "act", "expected"), MANAGER_ERRORS, ids=[c[0] for c in MANAGER_ERRORS])
def test_manager_fault_ends_in_a_clear_error(
    ready_manager: DeploymentManager,
    emu: EmulatorProcess,
    name: str,
    act: Callable[[DeploymentManager, EmulatorProcess], Any],
    expected: Outcome,
) -> None:
    before = len(emu.requests(route=expected.route))

    with pytest.raises(Exception) as caught:
        act(ready_manager, emu)

    check_error(caught.value, expected, emu.api_key)
    if expected.attempts is not None:
        assert len(emu.requests(route=expected.route)) - before == expected.attempts
    if expected.route == "create":
        assert raw_deployment(emu, "denied") is None


def test_manager_delete_of_a_deleted_deployment_is_done(
    ready_manager: DeploymentManager, emu: EmulatorProcess
) -> None:
    emu.vanish_deployment(DEP)
    assert ready_manager.delete(DEP) is False
    ready_manager.wait_for_deleted(DEP, timeout_s=5, poll_interval_s=0.05)


# === layer 2: AsyncFireworksClient and the triggers ===================================================


@pytest.mark.parametrize("route", ["get", "hotload_status", "accounts"])
@pytest.mark.parametrize(("kind", "rule", "extra_requests"), TRANSIENT, ids=[t[0] for t in TRANSIENT])
async def test_async_client_retries_transient_faults_and_succeeds(
    emu: EmulatorProcess, route: str, kind: str, rule: dict[str, Any], extra_requests: int
) -> None:
    create_ready(emu, DEP)

    async def call() -> Any:
        async with AsyncFireworksClient(emu.api_key, emu.url, retry_policy=QUICK_RETRY) as client:
            if route == "hotload_status":
                return comparable(await client.hotload_status(DEP, BASE_MODEL))
            return comparable(await client.get_deployment(DEP))

    clean = await call()
    before = len(emu.requests(route=route))
    emu.add_fault(route=route, **rule)

    assert await call() == clean
    assert fault_hits(emu) == rule["times"]
    assert len(emu.requests(route=route)) - before == 1 + extra_requests
    assert_waited_retry_after(emu, route, rule)


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({"status": 503, "times": None}, Outcome(FireworksAPIError, ("HTTP 503", "injected fault"))),
        ({"kind": "reset", "times": None}, Outcome(FireworksConnectionError, ("GET", "failed"))),
        ({"status": 401, "message": "bad key", "times": None}, Outcome(FireworksAPIError, ("HTTP 401",))),
    ],
    ids=["persistent-503", "persistent-reset", "401"],
)
async def test_async_client_fault_ends_in_a_clear_error(
    emu: EmulatorProcess, rule: dict[str, Any], expected: Outcome
) -> None:
    create_ready(emu, DEP)
    async with AsyncFireworksClient(emu.api_key, emu.url, retry_policy=QUICK_RETRY) as client:
        await client.account_id()
        emu.add_fault(route="get", **rule)
        with pytest.raises(Exception) as caught:
            await client.get_deployment(DEP)
    check_error(caught.value, expected, emu.api_key)


@pytest.mark.parametrize("rule", [{"status": 503}, {"kind": "reset"}], ids=["503", "reset"])
async def test_probe_faults_mean_not_serving_yet_and_are_not_retried(
    emu: EmulatorProcess, rule: dict[str, Any]
) -> None:
    model = create_ready(emu, DEP)
    emu.add_fault(route="completions", times=None, **rule)
    async with AsyncFireworksClient(emu.api_key, emu.url, retry_policy=QUICK_RETRY) as client:
        assert await client.probe(model) is False
    assert len(emu.requests(route="completions")) == 1


async def _event(trigger: Any) -> dict[str, Any]:
    """The trigger's first event; the generator is then closed, as the triggerer does."""
    run = trigger.run()
    try:
        event = await run.asend(None)
    finally:
        await run.aclose()
    return dict(event.payload)


def _deployment_trigger(deployment_id: str, target: str = "ready", deadline_s: float = 20) -> Any:
    return FireworksDeploymentTrigger(
        deployment_id, target=target, deadline=time.time() + deadline_s, poll_interval=0.05
    )


TRIGGER_CASES: list[tuple[str, Callable[[EmulatorProcess], Any], str, tuple[str, ...]]] = [
    ("503-burst", lambda e: e.add_fault(route="get", status=503, times=2), "success", ("READY",)),
    ("reset-burst", lambda e: e.add_fault(route="get", kind="reset", times=2), "success", ("READY",)),
    (
        "429-retry-after",
        lambda e: e.add_fault(route="get", status=429, retry_after_s=TRIGGER_RETRY_AFTER_S, times=1),
        "success",
        ("READY",),
    ),
    (
        "slow-answer",
        lambda e: e.add_fault(route="get", kind="delay", delay_s=0.3, times=2),
        "success",
        ("READY",),
    ),
    (
        "persistent-500-until-deadline",
        lambda e: e.add_fault(route="get", status=500, times=None),
        "timeout",
        ("timed out", "trig-dep", "last error: "),
    ),
    (
        "403",
        lambda e: e.add_fault(route="get", status=403, message="key revoked", times=None),
        "error",
        ("HTTP 403", "key revoked"),
    ),
    (
        "deployment-goes-failed",
        lambda e: _fail_later(e, "trig-dep", 0.2, "fail"),
        "error",
        ("FAILED", "CUDA error 719"),
    ),
    (
        "deployment-deleted",
        lambda e: _fail_later(e, "trig-dep", 0.2, "vanish"),
        "error",
        ("not found", "run the create task"),
    ),
]


@pytest.mark.parametrize(
    ("name", "inject", "status", "says"), TRIGGER_CASES, ids=[c[0] for c in TRIGGER_CASES]
)
async def test_deployment_trigger_under_faults(
    emu: EmulatorProcess,
    fireworks_conn_env: str,
    name: str,
    inject: Callable[[EmulatorProcess], Any],
    status: str,
    says: tuple[str, ...],
) -> None:
    if name.startswith("deployment-"):
        emu.configure(create_delay_s=30)
        FireworksHook().create_or_get({"deployment_id": "trig-dep", "base_model": BASE_MODEL})
    else:
        create_ready(emu, "trig-dep")
    inject(emu)

    payload = await _event(_deployment_trigger("trig-dep", deadline_s=1.5 if status == "timeout" else 20))

    assert payload["status"] == status, payload
    for word in says:
        assert word in json.dumps(payload), payload
    assert emu.api_key not in json.dumps(payload)
    assert fault_hits(emu) >= 1 or name.startswith("deployment-")
    if name == "429-retry-after":
        assert_waited_retry_after(emu, "get", {"retry_after_s": TRIGGER_RETRY_AFTER_S})


async def test_delete_wait_on_a_deployment_deleted_from_under_it_succeeds(
    emu: EmulatorProcess, fireworks_conn_env: str
) -> None:
    create_ready(emu, "trig-dep")
    emu.vanish_deployment("trig-dep")
    payload = await _event(_deployment_trigger("trig-dep", target="deleted"))
    assert payload["status"] == "success"
    assert payload["deployment"] is None


@pytest.mark.parametrize(
    ("inject", "status", "says"),
    [
        (lambda e: e.add_fault(route="hotload_status", status=503, times=2), "success", ("serve", "snap-t")),
        (lambda e: e.add_fault(route="hotload_status", kind="reset", times=1), "success", ("serve",)),
        (
            lambda e: e.add_fault(
                route="hotload_status", status=429, retry_after_s=TRIGGER_RETRY_AFTER_S, times=1
            ),
            "success",
            ("serve",),
        ),
        (lambda e: e.configure(hotload_fail_identities=["snap-t"]), "error", ("snap-t", "failed")),
    ],
    ids=["503-burst", "reset", "429-retry-after", "error-stage"],
)
async def test_hotload_trigger_under_faults(
    request: pytest.FixtureRequest,
    emu: EmulatorProcess,
    fireworks_conn_env: str,
    inject: Callable[[EmulatorProcess], Any],
    status: str,
    says: tuple[str, ...],
) -> None:
    create_ready(emu, "trig-dep")
    inject(emu)
    with DeploymentManager(emu.api_key, emu.url, retry_policy=QUICK_RETRY) as client:
        client.hotload("trig-dep", BASE_MODEL, "snap-t")
    trigger = FireworksHotloadTrigger(
        "trig-dep", BASE_MODEL, "snap-t", deadline=time.time() + 20, poll_interval=0.05
    )

    payload = await _event(trigger)

    assert payload["status"] == status, payload
    for word in says:
        assert word in payload["message"], payload
    assert emu.api_key not in json.dumps(payload)
    if "429" in request.node.name:
        assert fault_hits(emu) == 1
        assert_waited_retry_after(emu, "hotload_status", {"retry_after_s": TRIGGER_RETRY_AFTER_S})


# === layer 3: DeploymentSampler ======================================================================

SAMPLER_TRANSIENT: list[tuple[str, dict[str, Any]]] = [
    ("500-burst", {"kind": "status", "status": 500, "times": 2}),
    ("502-burst", {"kind": "status", "status": 502, "times": 2}),
    ("503-burst", {"kind": "status", "status": 503, "times": 3}),
    ("429-retry-after", {"kind": "status", "status": 429, "retry_after_s": RETRY_AFTER_S, "times": 1}),
    ("reset-before-answer", {"kind": "reset", "times": 2}),
    ("reset-mid-stream", {"kind": "reset_mid_stream", "after_chunks": 2, "times": 2}),
    ("stream-cut-without-done", {"kind": "truncate", "after_chunks": 2, "times": 2}),
    ("stream-cut-before-first-chunk", {"kind": "truncate", "after_chunks": 0, "times": 1}),
    ("in-stream-503", {"kind": "stream_error", "status": 503, "after_chunks": 1, "times": 2}),
    ("slow-answer", {"kind": "delay", "delay_s": 0.3, "times": 1}),
    ("slower-than-http-timeout", {"kind": "delay", "delay_s": 3.0, "times": 1}),
    ("425-not-ready", {"kind": "status", "status": 425, "times": 2}),
]

SAMPLE_ARGS: dict[str, Any] = {"n": 1, "max_tokens": 24, "temperature": 1.0, "seed": 11, "logprobs": True}


def make_sampler(emu: EmulatorProcess, model: str, **kwargs: Any) -> DeploymentSampler:
    kwargs.setdefault("retry_policy", QUICK_RETRY)
    kwargs.setdefault("not_ready_retries", 3)
    kwargs.setdefault("not_ready_interval_s", 0.02)
    kwargs.setdefault("http_timeout_s", 1.0)
    return DeploymentSampler(emu.url, model, emu.api_key, None, FixedConcurrencyController(8), **kwargs)


def same_completion(got: SampledCompletion, want: SampledCompletion) -> bool:
    return (got.full_tokens, got.text, got.finish_reason, got.inference_logprobs, got.prompt_len) == (
        want.full_tokens,
        want.text,
        want.finish_reason,
        want.inference_logprobs,
        want.prompt_len,
    )


@pytest.fixture
def sampler_model(emu: EmulatorProcess) -> str:
    return create_ready(emu, "sampler-dep")


@pytest.fixture
async def reference(emu: EmulatorProcess, sampler_model: str) -> SampledCompletion:
    """What a clean run returns for PROMPT (the emulator is deterministic for a given seed)."""
    async with make_sampler(emu, sampler_model) as sampler:
        [completion] = await sampler.sample_with_tokens(prompt_token_ids=PROMPT, **SAMPLE_ARGS)
    assert completion.finish_reason in ("stop", "length") and completion.completion_len > 2
    return completion


@pytest.mark.parametrize(("kind", "rule"), SAMPLER_TRANSIENT, ids=[t[0] for t in SAMPLER_TRANSIENT])
async def test_sampler_retries_transient_faults_whole_and_returns_the_clean_completion(
    emu: EmulatorProcess, sampler_model: str, reference: SampledCompletion, kind: str, rule: dict[str, Any]
) -> None:
    emu.add_fault(route="completions", **rule)
    async with make_sampler(emu, sampler_model) as sampler:
        [completion] = await sampler.sample_with_tokens(prompt_token_ids=PROMPT, **SAMPLE_ARGS)

    assert fault_hits(emu) == rule["times"]
    assert same_completion(completion, reference)
    assert completion.completion_len == len(completion.completion_tokens) == reference.completion_len
    assert_waited_retry_after(emu, "completions", rule)


SAMPLER_ERRORS: list[tuple[str, dict[str, Any] | str, Outcome]] = [
    (
        "malformed-chunk",
        {"kind": "malformed_chunk", "after_chunks": 1},
        Outcome(
            StreamProtocolError,
            ("not", "JSON"),
            attempts=1,
            extra=lambda e: getattr(e, "final_error_kind", None) == "protocol",
        ),
    ),
    (
        "finish-reason-error",
        {"kind": "finish_error", "after_chunks": 1},
        Outcome(
            UpstreamStreamError,
            ("upstream stream error", "finish_reason"),
            attempts=1,
            extra=lambda e: getattr(e, "upstream_finish_reason", None) == "error",
        ),
    ),
    (
        "in-stream-400",
        {"kind": "stream_error", "status": 400, "message": "prompt rejected"},
        Outcome(UpstreamStreamError, ("prompt rejected", "status 400"), attempts=1),
    ),
    (
        "400",
        {"kind": "status", "status": 400, "message": "max_tokens too large"},
        Outcome(SamplingHTTPError, ("HTTP 400", "max_tokens too large"), attempts=1),
    ),
    (
        "persistent-503",
        {"kind": "status", "status": 503},
        Outcome(
            SamplingRequestError,
            ("failed after 4 attempt(s)", "HTTP 503"),
            attempts=4,
            extra=lambda e: getattr(e, "retry_budget_exhausted", False),
        ),
    ),
    (
        "persistent-reset-mid-stream",
        {"kind": "reset_mid_stream", "after_chunks": 1},
        Outcome(
            SamplingRequestError,
            ("failed after 4 attempt(s)",),
            attempts=4,
            extra=lambda e: getattr(e, "final_error_kind", None) == "connection",
        ),
    ),
    (
        "persistent-truncation",
        {"kind": "truncate", "after_chunks": 1},
        Outcome(
            SamplingRequestError,
            ("failed after 4 attempt(s)", "without"),
            attempts=4,
            extra=lambda e: getattr(e, "final_error_kind", None) == "sse_truncation",
        ),
    ),
    (
        "persistent-slowness",
        {"kind": "delay", "delay_s": 3.0},
        Outcome(DeploymentSamplerTimeoutError, ("failed after 4 attempt(s)", "Timeout"), attempts=4),
    ),
    (
        "deployment-goes-failed",
        "fail",
        Outcome(DeploymentNotServingError, ("HTTP 425", "FAILED", "still not serving after"), attempts=1),
    ),
    (
        "deployment-deleted",
        "vanish",
        Outcome(DeploymentNotServingError, ("HTTP 404", "not deployed", "still not serving"), attempts=1),
    ),
]


@pytest.mark.parametrize(("name", "fault", "expected"), SAMPLER_ERRORS, ids=[c[0] for c in SAMPLER_ERRORS])
async def test_sampler_fault_ends_in_a_clear_error_and_no_completion(
    emu: EmulatorProcess, sampler_model: str, name: str, fault: dict[str, Any] | str, expected: Outcome
) -> None:
    if fault == "fail":
        emu.fail_deployment("sampler-dep", "replica crashed (injected)")
    elif fault == "vanish":
        emu.vanish_deployment("sampler-dep")
    else:
        assert isinstance(fault, dict)
        emu.add_fault(route="completions", times=None, **fault)
    policy = RetryPolicy(max_attempts=4, initial_backoff_s=0.01, max_backoff_s=0.02, max_total_s=30)

    with pytest.raises(SamplingRequestError) as caught:
        async with make_sampler(emu, sampler_model, retry_policy=policy, http_timeout_s=0.3) as sampler:
            await sampler.sample_with_tokens(prompt_token_ids=PROMPT, **SAMPLE_ARGS)

    check_error(caught.value, expected, emu.api_key)
    assert caught.value.attempts == expected.attempts
    assert caught.value.logical_request_id
    record = caught.value.as_error_record()
    assert json.dumps(record)  # serialisable, payload-free
    assert "prompt_token_ids" not in record


async def test_deployment_deleted_mid_batch_stops_the_batch_after_whole_groups(
    emu: EmulatorProcess, sampler_model: str
) -> None:
    """When the deployment disappears the batch stops at the first prompt that spent its
    not-ready retries (every other prompt would wait out the same retries); prompts finished
    before it are whole groups, nothing partial is yielded, and no further prompt is sent."""
    emu.configure(decode_step_base_s=0.004)
    prompts = [PromptSpec(i, prompt_token_ids=[1, 5 + i, 9, 3]) for i in range(60)]
    results = []
    with pytest.raises(DeploymentNotServingError, match="HTTP 404"):
        async with make_sampler(emu, sampler_model, not_ready_retries=1) as sampler:
            async for result in sample_prompts(
                sampler, prompts, n=4, max_tokens=16, seed=3, max_prompts_in_flight=4
            ):
                results.append(result)
                if len(results) == 10:
                    emu.vanish_deployment("sampler-dep")

    assert 10 <= len(results) < 60
    for result in results:
        assert result.error is None
        assert sorted(c.sample_index for c in result.completions) == [0, 1, 2, 3]
        assert all(c.finish_reason in ("stop", "length") for c in result.completions)


# === layer 4: operators ==============================================================================

OPERATOR_WAIT = {"poll_interval": 0.05, "timeout": 20}


def _create_op(deployment_id: str, deferrable: bool) -> FireworksCreateDeploymentOperator:
    return FireworksCreateDeploymentOperator(
        task_id="create",
        deployment_id=deployment_id,
        base_model=BASE_MODEL,
        deferrable=deferrable,
        **OPERATOR_WAIT,
    )


def _run(operator: Any, deferrable: bool) -> Any:
    context = task_context()
    if deferrable:
        return asyncio.run(run_deferred(operator, context))
    return operator.execute(context)


@pytest.mark.parametrize("deferrable", [False, True], ids=["worker-wait", "deferred"])
def test_create_operator_survives_control_plane_bursts_and_creates_once(
    emu: EmulatorProcess, fireworks_conn_env: str, deferrable: bool
) -> None:
    emu.add_fault(route="create", status=503, times=1)
    emu.add_fault(route="get", kind="reset", times=1)
    emu.add_fault(route="get", status=429, retry_after_s=0.05, times=1)

    result = _run(_create_op("op-dep", deferrable), deferrable)

    assert result["state"] == "READY"
    assert fault_hits(emu) == 3
    assert len(emu.requests(route="create")) == 2
    assert emu.stats()["deployments"] == {"READY": 1}


OPERATOR_LIFECYCLE: list[tuple[str, str, tuple[str, ...]]] = [
    ("fail", "create", ("op-dep", "FAILED", "CUDA error 719")),
    ("vanish", "create", ("op-dep", "does not exist|not found")),
    ("hotload-error", "hotload", ("bad-snap", "failed")),
]


@pytest.mark.parametrize("deferrable", [False, True], ids=["worker-wait", "deferred"])
@pytest.mark.parametrize(
    ("event", "operator", "says"), OPERATOR_LIFECYCLE, ids=[c[0] for c in OPERATOR_LIFECYCLE]
)
def test_lifecycle_operator_fails_clearly_on_a_lifecycle_fault(
    emu: EmulatorProcess,
    fireworks_conn_env: str,
    event: str,
    operator: str,
    says: tuple[str, ...],
    deferrable: bool,
) -> None:
    if operator == "create":
        emu.configure(create_delay_s=30)
        timer = _fail_later(emu, "op-dep", 0.3, event)
        task: Any = _create_op("op-dep", deferrable)
    else:
        create_ready(emu, "op-dep")
        emu.configure(hotload_fail_identities=["bad-snap"])
        timer = None
        task = FireworksHotloadOperator(
            task_id="hotload",
            deployment_id="op-dep",
            base_model=BASE_MODEL,
            snapshot_identity="bad-snap",
            deferrable=deferrable,
            **OPERATOR_WAIT,
        )

    with pytest.raises((AirflowException, FireworksError)) as caught:
        _run(task, deferrable)
    if timer is not None:
        timer.join()

    for word in says:
        assert any(choice in str(caught.value) for choice in word.split("|")), str(caught.value)
    assert emu.api_key not in str(caught.value)
    assert len(emu.requests(route="create")) <= 1


def test_teardown_operators_treat_a_deleted_deployment_as_done(
    emu: EmulatorProcess, fireworks_conn_env: str
) -> None:
    create_ready(emu, "op-dep")
    emu.vanish_deployment("op-dep")

    scaled = FireworksScaleToZeroOperator(task_id="release", deployment_id="op-dep").execute(task_context())
    deleted = FireworksDeleteDeploymentOperator(task_id="delete", deployment_id="op-dep").execute(
        task_context()
    )

    assert scaled is None
    assert deleted == {"deployment_id": "op-dep", "deleted": False}


def test_hotload_operator_on_a_deleted_deployment_fails_clearly(
    emu: EmulatorProcess, fireworks_conn_env: str
) -> None:
    create_ready(emu, "op-dep")
    emu.vanish_deployment("op-dep")
    task = FireworksHotloadOperator(
        task_id="hotload",
        deployment_id="op-dep",
        base_model=BASE_MODEL,
        snapshot_identity="snap-1",
        deferrable=False,
        **OPERATOR_WAIT,
    )
    with pytest.raises(AirflowFailException, match=r"'op-dep' not found.*run the create task"):
        task.execute(task_context())
    assert emu.requests(route="hotload_load") == []


def _sample_op(output: Path, **kwargs: Any) -> FireworksSampleOperator:
    prompts = [{"prompt_token_ids": [1, 7 + i, 11, 3], "metadata": {"id": i}} for i in range(40)]
    return FireworksSampleOperator(
        task_id="sample",
        deployment_id="op-dep",
        prompts=prompts,
        n=3,
        max_tokens=12,
        seed=5,
        logprobs=True,
        concurrency=16,
        output_path=output.as_uri(),
        **kwargs,
    )


def _records(uri: str) -> list[dict[str, Any]]:
    text = Path(uri.removeprefix("file://")).read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def clean_sample(emu: EmulatorProcess, fireworks_conn_env: str, tmp_path: Path) -> Iterator[bytes]:
    """The completions file a fault-free run writes (byte for byte what every faulty run must end with)."""
    create_ready(emu, "op-dep")
    summary = _sample_op(tmp_path / "clean").execute(task_context())
    yield Path(summary["completions_uri"].removeprefix("file://")).read_bytes()


def test_sample_operator_survives_mixed_retryable_faults(
    emu: EmulatorProcess, clean_sample: bytes, tmp_path: Path
) -> None:
    for rule in (
        {"kind": "status", "status": 503, "retry_after_s": 0.01},
        {"kind": "reset"},
        {"kind": "reset_mid_stream", "after_chunks": 2},
        {"kind": "truncate", "after_chunks": 2},
        {"kind": "stream_error", "status": 502},
        {"kind": "status", "status": 429, "retry_after_s": 0.01},
    ):
        emu.add_fault(route="completions", times=3, **rule)

    summary = _sample_op(tmp_path / "faulty").execute(task_context())

    assert fault_hits(emu) == 18
    assert summary["num_prompts_failed"] == 0 and summary["num_completions"] == 120
    assert Path(summary["completions_uri"].removeprefix("file://")).read_bytes() == clean_sample


def test_sample_operator_terminal_stream_fault_fails_the_try_and_the_retry_completes(
    emu: EmulatorProcess, clean_sample: bytes, tmp_path: Path
) -> None:
    emu.add_fault(route="completions", kind="malformed_chunk", after_chunks=1, times=2)
    out = tmp_path / "retry"

    with pytest.raises(AirflowException) as caught:
        _sample_op(out).execute(task_context())
    message = str(caught.value)
    assert "prompts failed" in message and "max_failed_prompt_fraction" in message
    assert "not JSON" in message or "protocol" in message
    errors = _records((out / "shard-000000" / "errors.jsonl").as_uri())
    assert 1 <= len(errors) <= 2 and all(e["error"]["final_error_kind"] == "protocol" for e in errors)
    manifest = json.loads((out / "shard-000000" / "manifest.json").read_text())
    assert manifest["num_prompts_failed"] == len(errors)

    context = task_context()
    context["ti"].try_number = 2
    summary = _sample_op(out).execute(context)

    assert summary["num_prompts_failed"] == 0
    assert summary["num_prompts_sampled"] == len(errors)
    assert Path(summary["completions_uri"].removeprefix("file://")).read_bytes() == clean_sample
