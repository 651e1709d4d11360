"""AsyncFireworksClient against the emulator: deployment reads, probe, hotload status, the shared
retry policy, and the API key kept out of logs, errors and repr."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator

import pytest

from airflow_fireworks.api import (
    AsyncFireworksClient,
    DeploymentConfig,
    DeploymentManager,
    DeploymentState,
    FireworksAPIError,
    FireworksConnectionError,
    FireworksValidationError,
    RetryPolicy,
)
from tests.emulator_control import EmulatorProcess

BASE_MODEL = "accounts/fireworks/models/qwen3-8b"
POLICY = RetryPolicy(max_attempts=4, initial_backoff_s=0.01, max_backoff_s=0.05, max_total_s=10.0)


@pytest.fixture
def emu(emulator: EmulatorProcess) -> EmulatorProcess:
    emulator.configure(create_delay_s=0.1, update_delay_s=0.1, delete_delay_s=0.1, hotload_stage_s=0.02)
    return emulator


@pytest.fixture
def sync(emu: EmulatorProcess) -> Iterator[DeploymentManager]:
    with DeploymentManager(emu.api_key, base_url=emu.url, retry_policy=POLICY) as mgr:
        yield mgr


@pytest.fixture
async def client(emu: EmulatorProcess) -> AsyncIterator[AsyncFireworksClient]:
    async with AsyncFireworksClient(emu.api_key, emu.url, retry_policy=POLICY) as aclient:
        assert await aclient.account_id() == emu.account_id
        yield aclient


def ready(sync: DeploymentManager, deployment_id: str = "dep-x") -> None:
    sync.create_or_get(DeploymentConfig(deployment_id=deployment_id, base_model=BASE_MODEL))
    sync.wait_for_ready(deployment_id, timeout_s=10, poll_interval_s=0.05)


async def test_get_deployment(
    client: AsyncFireworksClient, sync: DeploymentManager, emu: EmulatorProcess
) -> None:
    assert await client.get_deployment("dep-x") is None
    sync.create_or_get(DeploymentConfig(deployment_id="dep-x", base_model=BASE_MODEL))
    info = await client.get_deployment("dep-x")
    assert info is not None
    assert info.state is DeploymentState.CREATING
    assert info.inference_model == f"accounts/{emu.account_id}/deployments/dep-x"
    assert await client.inference_model("dep-x") == info.inference_model
    call = emu.requests(route="get")[-1]
    assert "x-api-key" in call["headers"]
    assert "authorization" not in call["headers"]


async def test_get_deployment_failed_state_and_message(
    client: AsyncFireworksClient, sync: DeploymentManager, emu: EmulatorProcess
) -> None:
    sync.create_or_get(DeploymentConfig(deployment_id="dep-x", base_model=BASE_MODEL))
    emu.fail_deployment("dep-x", "image pull failed")
    info = await client.get_deployment("dep-x")
    assert info is not None and info.state is DeploymentState.FAILED
    assert info.status_message == "image pull failed"


async def test_probe(client: AsyncFireworksClient, sync: DeploymentManager, emu: EmulatorProcess) -> None:
    model = await client.inference_model("dep-x")
    assert await client.probe(model) is False
    ready(sync)
    assert await client.probe(model) is True
    call = emu.requests(route="completions")[-1]
    assert call["body"]["prompt"] == [1, 2]
    assert "authorization" in call["headers"]


async def test_probe_not_retried(
    client: AsyncFireworksClient, sync: DeploymentManager, emu: EmulatorProcess
) -> None:
    ready(sync)
    before = len(emu.requests(route="completions"))
    emu.add_fault(route="completions", kind="status", status=503, times=None)
    assert await client.probe(await client.inference_model("dep-x")) is False
    assert len(emu.requests(route="completions")) - before == 1


async def test_hotload_status(
    client: AsyncFireworksClient, sync: DeploymentManager, emu: EmulatorProcess
) -> None:
    ready(sync)
    status = await client.hotload_status("dep-x", BASE_MODEL)
    assert status.evaluate("snap-1").outcome == "pending"
    sync.hotload("dep-x", BASE_MODEL, "snap-1")
    for _ in range(200):
        status = await client.hotload_status("dep-x", BASE_MODEL)
        if status.evaluate("snap-1").outcome == "ready":
            break
        await asyncio.sleep(0.02)
    assert status.current_identities == ["snap-1"]
    call = emu.requests(route="hotload_status")[-1]
    for header in ("authorization", "fireworks-model", "fireworks-deployment"):
        assert header in call["headers"]


@pytest.mark.parametrize(
    ("status", "route"),
    [
        (503, "get"),
        (429, "get"),
        (500, "get"),
        (502, "get"),
        (504, "get"),
        (408, "get"),
        (503, "hotload_status"),
    ],
)
async def test_transient_answers_retried(
    client: AsyncFireworksClient, sync: DeploymentManager, emu: EmulatorProcess, status: int, route: str
) -> None:
    ready(sync)
    emu.add_fault(route=route, kind="status", status=status, retry_after_s=0.01, times=2)
    if route == "get":
        assert await client.get_deployment("dep-x") is not None
    else:
        assert (await client.hotload_status("dep-x", BASE_MODEL)).replicas
    assert [r["status"] for r in emu.requests(route=route)][-3:] == [status, status, 200]


async def test_connection_reset_retried(client: AsyncFireworksClient, emu: EmulatorProcess) -> None:
    emu.add_fault(route="get", kind="reset", times=2)
    assert await client.get_deployment("dep-x") is None
    assert sum(rule["hits"] for rule in emu.admin("GET", "faults")) == 2


async def test_bounded_attempts(client: AsyncFireworksClient, emu: EmulatorProcess) -> None:
    emu.add_fault(route="get", kind="status", status=503, times=None, message="overloaded")
    with pytest.raises(FireworksAPIError) as info:
        await client.get_deployment("dep-x")
    assert info.value.status_code == 503 and info.value.message == "overloaded"
    assert info.value.request_id
    assert len(emu.requests(route="get")) == POLICY.max_attempts
    emu.clear_faults()
    emu.add_fault(route="get", kind="reset", times=None)
    with pytest.raises(FireworksConnectionError):
        await client.get_deployment("dep-x")


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409])
async def test_other_4xx_not_retried(
    client: AsyncFireworksClient, sync: DeploymentManager, emu: EmulatorProcess, status: int
) -> None:
    ready(sync)
    emu.add_fault(route="hotload_status", kind="status", status=status, times=None, message="nope")
    with pytest.raises(FireworksAPIError) as info:
        await client.hotload_status("dep-x", BASE_MODEL)
    assert info.value.status_code == status
    assert len(emu.requests(route="hotload_status")) == 1


async def test_bad_input_sends_nothing(client: AsyncFireworksClient, emu: EmulatorProcess) -> None:
    before = len(emu.requests())
    for call, field in [
        (client.get_deployment("Not Valid"), "deployment_id"),
        (client.hotload_status("dep-x", "qwen3-8b"), "base_model"),
        (client.probe(""), "model"),
    ]:
        with pytest.raises(FireworksValidationError) as info:
            await call
        assert info.value.field == field
    assert len(emu.requests()) == before


async def test_close_and_reopen(emu: EmulatorProcess) -> None:
    client = AsyncFireworksClient(emu.api_key, emu.url, retry_policy=POLICY)
    assert await client.get_deployment("dep-x") is None
    await client.close()
    assert await client.get_deployment("dep-x") is None
    await client.close()
    assert len(emu.requests(route="accounts")) == 1


async def test_api_key_never_leaks(
    emu: EmulatorProcess, sync: DeploymentManager, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    key = emu.api_key
    wrong = "fw-wrong-async-key-5a4b3c2d1e"
    texts: list[str] = []
    ready(sync)
    async with AsyncFireworksClient(key, emu.url, retry_policy=POLICY) as client:
        texts.append(repr(client))
        await client.get_deployment("dep-x")
        await client.probe(await client.inference_model("dep-x"))
        await client.hotload_status("dep-x", BASE_MODEL)
        emu.add_fault(route="get", kind="status", status=500, times=None, message=f"leaked {key}")
        with pytest.raises(FireworksAPIError) as err:
            await client.get_deployment("dep-x")
        texts += [str(err.value), repr(err.value)]
    async with AsyncFireworksClient(wrong, emu.url, retry_policy=POLICY) as bad:
        texts.append(repr(bad))
        with pytest.raises(FireworksAPIError) as err:
            await bad.account_id()
        assert err.value.status_code == 401
        texts += [str(err.value), repr(err.value)]
    texts.append(caplog.text)
    assert caplog.records
    for text in texts:
        assert key not in text
        assert wrong not in text


async def test_delete_deployment_is_idempotent(
    client: AsyncFireworksClient, sync: DeploymentManager, emu: EmulatorProcess
) -> None:
    sync.create_or_get(DeploymentConfig(deployment_id="dep-del", base_model=BASE_MODEL))

    assert await client.delete_deployment("dep-del") is True
    sync.wait_for_deleted("dep-del", timeout_s=10, poll_interval_s=0.05)
    assert sync.get("dep-del") is None
    assert await client.delete_deployment("dep-del") is False
    deletes = emu.requests(route="delete")
    assert len(deletes) == 2
    assert all(r["query"].get("hard") == "true" and r["query"].get("ignoreChecks") == "true" for r in deletes)
