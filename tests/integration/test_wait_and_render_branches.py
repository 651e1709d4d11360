"""Branches no other test ran: a sensor polling through transient errors (and failing at once on
a permanent one), the polling trigger's unexpected-exception and single-poll-timeout branches,
and the re-rendering of a chat batch one prompt at a time when one prompt cannot be rendered.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_fireworks.api import RetryPolicy
from airflow_fireworks.hooks.fireworks import FireworksHook
from airflow_fireworks.sampling import (
    DeploymentSampler,
    FixedConcurrencyController,
    PromptSpec,
    load_tokenizer,
    sample_prompts,
)
from airflow_fireworks.sensors.deployment import FireworksDeploymentSensor
from airflow_fireworks.triggers.base import FireworksPollingTrigger
from tests.airflow_helpers import task_context
from tests.emulator_control import EmulatorProcess
from tests.reliability.conftest import FAST_EMULATOR, QUICK_RETRY, create_ready

DEP = "branch-dep"
ONE_ATTEMPT = RetryPolicy(max_attempts=1)


# --- sensors: transient errors are "not yet", permanent ones fail the task ----------------------------


def _sensor(**kwargs: Any) -> FireworksDeploymentSensor:
    sensor = FireworksDeploymentSensor(
        task_id="wait", deployment_id=DEP, poke_interval=0.05, timeout=20, mode="poke", deferrable=False
    )
    # One attempt per poke: each injected error reaches the sensor instead of the client's retries.
    sensor.hook = FireworksHook(sensor.fireworks_conn_id, retry_policy=ONE_ATTEMPT)
    return sensor


@pytest.mark.parametrize(
    "rule",
    [{"status": 503, "times": 3}, {"status": 429, "times": 2}, {"kind": "reset", "times": 3}],
    ids=["503", "429", "reset"],
)
def test_sensor_polls_through_transient_errors(
    emulator: EmulatorProcess, fireworks_conn_env: str, rule: dict[str, Any]
) -> None:
    emulator.configure(**FAST_EMULATOR)
    create_ready(emulator, DEP)
    before = len(emulator.requests(route="get"))
    emulator.add_fault(route="get", **rule)

    result = _sensor().execute(task_context())

    assert result is not None and result["state"] == "READY"
    assert len(emulator.requests(route="get")) - before == rule["times"] + 1  # a poke after each error
    assert sum(int(r["hits"]) for r in emulator.admin("GET", "faults")) == rule["times"]


def test_sensor_fails_at_once_on_a_permanent_error(
    emulator: EmulatorProcess, fireworks_conn_env: str
) -> None:
    emulator.configure(**FAST_EMULATOR)
    create_ready(emulator, DEP)
    before = len(emulator.requests(route="get"))
    emulator.add_fault(route="get", status=403, message="key revoked", times=None)

    with pytest.raises(AirflowFailException, match="HTTP 403"):
        _sensor().execute(task_context())

    assert len(emulator.requests(route="get")) - before == 1


# --- the polling trigger's loop: unexpected exceptions and a poll that times out ---------------------


class ScriptedTrigger(FireworksPollingTrigger):
    """A polling trigger whose polls read the deployment for real, then play a script: an
    exception to raise, or None for "the deployment is READY" (success)."""

    def __init__(self, script: list[BaseException | None], deadline: float) -> None:
        super().__init__(fireworks_conn_id="fireworks_default", deadline=deadline, poll_interval=0.02)
        self.script = script
        self.polls = 0

    def serialized_kwargs(self) -> dict[str, Any]:
        return {"script": self.script, "deadline": self.deadline}

    def describe(self) -> str:
        return f"deployment {DEP!r}"

    async def poll_once(self, client: Any) -> tuple[Any, str, dict[str, Any]] | None:
        self.polls += 1
        info = await client.get_deployment(DEP)
        step = self.script.pop(0) if self.script else None
        if step is not None:
            raise step
        return "success", f"{DEP} is {info.state.value}", {}


async def _first_event(trigger: FireworksPollingTrigger) -> dict[str, Any]:
    run: AsyncIterator[Any] = trigger.run()
    try:
        return dict((await run.__anext__()).payload)
    finally:
        await run.aclose()  # type: ignore[attr-defined]


@pytest.fixture
def ready(emulator: EmulatorProcess, fireworks_conn_env: str) -> EmulatorProcess:
    emulator.configure(**FAST_EMULATOR)
    create_ready(emulator, DEP)
    return emulator


def test_trigger_unexpected_exception_ends_the_wait_with_an_error_event(ready: EmulatorProcess) -> None:
    trigger = ScriptedTrigger([KeyError("replicas")], deadline=time.time() + 20)

    event = asyncio.run(_first_event(trigger))

    assert event["status"] == "error"
    assert event["message"] == "unexpected KeyError while waiting for deployment 'branch-dep': 'replicas'"
    assert trigger.polls == 1


def test_trigger_polls_through_an_unexpected_transient_exception(ready: EmulatorProcess) -> None:
    trigger = ScriptedTrigger([aiohttp.ServerDisconnectedError(), None], deadline=time.time() + 20)

    event = asyncio.run(_first_event(trigger))

    assert event["status"] == "success", event
    assert trigger.polls == 2


def test_trigger_polls_again_after_a_single_poll_timed_out(ready: EmulatorProcess) -> None:
    trigger = ScriptedTrigger([TimeoutError(), TimeoutError(), None], deadline=time.time() + 20)

    event = asyncio.run(_first_event(trigger))

    assert event["status"] == "success", event
    assert trigger.polls == 3
    assert len(ready.requests(route="get")) >= 3  # each poll read the deployment for real


def test_trigger_whose_every_poll_times_out_says_so_at_the_deadline(ready: EmulatorProcess) -> None:
    trigger = ScriptedTrigger([TimeoutError()] * 1000, deadline=time.time() + 0.5)

    event = asyncio.run(_first_event(trigger))

    assert event["status"] == "timeout"
    assert event["message"] == "timed out waiting for deployment 'branch-dep'; last error: request timed out"
    assert trigger.polls >= 2


# --- one chat prompt that cannot be rendered in a tokenized batch --------------------------------------


def _chat(i: int) -> list[dict[str, Any]]:
    return [{"role": "user", "content": f"Question {i}: what is {i} + {i}?"}]


async def _sample(
    emulator: EmulatorProcess, model: str, tokenizer: Any, prompts: list[PromptSpec]
) -> dict[int, Any]:
    sampler = DeploymentSampler(
        emulator.url,
        model,
        emulator.api_key,
        tokenizer,
        FixedConcurrencyController(4),
        retry_policy=QUICK_RETRY,
    )
    async with sampler:
        return {r.prompt_index: r async for r in sample_prompts(sampler, prompts, n=2, max_tokens=8, seed=4)}


def test_one_unrenderable_chat_prompt_fails_alone_and_the_batch_is_sampled(
    emulator: EmulatorProcess, tokenizer_dir: Path
) -> None:
    """Content that is not a string passes the message check but breaks the chat template: the
    batched rendering fails, every prompt of the batch is rendered again on its own, and only that
    prompt gets an error; the others are sampled exactly as without it."""
    emulator.configure(**FAST_EMULATOR)
    model = create_ready(emulator, DEP)
    tokenizer = load_tokenizer(tokenizer_dir)
    good = [PromptSpec(i, messages=_chat(i)) for i in range(6) if i != 3]
    bad = PromptSpec(3, messages=[{"role": "user", "content": 42}])

    results = asyncio.run(_sample(emulator, model, tokenizer, [*good[:3], bad, *good[3:]]))
    reference = asyncio.run(_sample(emulator, model, tokenizer, good))

    assert sorted(results) == [0, 1, 2, 3, 4, 5]
    assert results[3].completions == [] and results[3].error is not None
    assert results[3].error["error_type"] == "TypeError"
    for index, result in reference.items():
        assert result.error is None and len(result.completions) == 2
        assert [c.full_tokens for c in results[index].completions] == [
            c.full_tokens for c in result.completions
        ]
    assert len(emulator.requests(route="completions")) == 2 * 5 * 2  # the bad prompt was never sent
