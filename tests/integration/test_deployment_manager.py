"""DeploymentManager against the emulator over real HTTP: every lifecycle method, validation
before sending, and the API key kept out of logs, errors and repr."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from airflow_fireworks.api import (
    DeploymentConfig,
    DeploymentFailedError,
    DeploymentManager,
    DeploymentNotFoundError,
    DeploymentState,
    FireworksAPIError,
    FireworksTimeoutError,
    FireworksValidationError,
    RetryPolicy,
)
from tests.emulator_control import EmulatorProcess

BASE_MODEL = "accounts/fireworks/models/qwen3-8b"
TRAINER_JOB = "accounts/emulator/rlorTrainerJobs/job-1"
FAST_RETRY = RetryPolicy(max_attempts=4, initial_backoff_s=0.01, max_backoff_s=0.05, max_total_s=10.0)


@pytest.fixture
def emu(emulator: EmulatorProcess) -> EmulatorProcess:
    emulator.configure(create_delay_s=0.2, update_delay_s=0.1, delete_delay_s=0.1, hotload_stage_s=0.02)
    emulator.add_trainer_job(TRAINER_JOB.rsplit("/", 1)[-1])  # a link to a missing trainer is refused
    return emulator


@pytest.fixture
def manager(emu: EmulatorProcess) -> Iterator[DeploymentManager]:
    with DeploymentManager(emu.api_key, base_url=emu.url, retry_policy=FAST_RETRY, timeout_s=10) as mgr:
        yield mgr


def config(deployment_id: str = "dep-a", **overrides: object) -> DeploymentConfig:
    return DeploymentConfig(deployment_id=deployment_id, base_model=BASE_MODEL, **overrides)  # type: ignore[arg-type]


def test_account_resolved_once(manager: DeploymentManager, emu: EmulatorProcess) -> None:
    assert manager.account_id == emu.account_id
    assert manager.account_id == emu.account_id
    assert manager.inference_model("dep-a") == f"accounts/{emu.account_id}/deployments/dep-a"
    assert len(emu.requests(route="accounts")) == 1


def test_create_sends_the_documented_request(manager: DeploymentManager, emu: EmulatorProcess) -> None:
    info = manager.create_or_get(
        config(
            description="rl run",
            hot_load_trainer_job=TRAINER_JOB,
            disable_speculative_decoding=True,
            max_replica_count=2,
        )
    )
    assert info.deployment_id == "dep-a"
    assert info.name == f"accounts/{emu.account_id}/deployments/dep-a"
    assert info.state is DeploymentState.CREATING
    assert info.base_model == BASE_MODEL
    assert info.hot_load_trainer_job == TRAINER_JOB
    assert info.inference_model == f"accounts/{emu.account_id}/deployments/dep-a"
    [create] = emu.requests(route="create")
    assert create["query"] == {"deploymentId": "dep-a", "disableSpeculativeDecoding": "true"}
    assert create["body"]["baseModel"] == BASE_MODEL
    assert create["body"]["description"] == "rl run"
    assert create["body"]["maxReplicaCount"] == 2
    assert create["body"]["acceleratorType"] == "NVIDIA_H200_141GB"
    assert "x-api-key" in create["headers"]
    assert "authorization" not in create["headers"]


def test_create_sends_the_optional_sdk_flags(manager: DeploymentManager, emu: EmulatorProcess) -> None:
    info = manager.create_or_get(
        config(skip_shape_validation=True, accept_shapeless_risk=True, preemptible=True)
    )

    assert info.state is DeploymentState.CREATING
    [create] = emu.requests(route="create")
    assert create["query"] == {
        "deploymentId": "dep-a",
        "skipShapeValidation": "true",
        "acceptShapelessRisk": "true",
    }
    assert create["body"]["preemptible"] is True


def test_create_or_get_returns_existing_without_second_create(
    manager: DeploymentManager, emu: EmulatorProcess
) -> None:
    first = manager.create_or_get(config())
    second = manager.create_or_get(config(max_replica_count=5))
    assert second.deployment_id == first.deployment_id
    assert second.max_replica_count == 1  # an existing deployment is returned as-is
    assert len(emu.requests(route="create")) == 1
    assert [d.deployment_id for d in manager.list_deployments()] == ["dep-a"]


def test_two_managers_create_once(emu: EmulatorProcess) -> None:
    with (
        DeploymentManager(emu.api_key, base_url=emu.url, retry_policy=FAST_RETRY) as one,
        DeploymentManager(emu.api_key, base_url=emu.url, retry_policy=FAST_RETRY) as two,
    ):
        a = one.create_or_get(config())
        b = two.create_or_get(config())
    assert a.name == b.name
    assert len(emu.requests(route="create")) == 1
    assert emu.stats()["deployments"] == {"CREATING": 1}


def test_conflict_on_create_returns_the_existing_deployment(
    manager: DeploymentManager, emu: EmulatorProcess
) -> None:
    manager.create_or_get(config())
    # The next GET claims "absent" (a racing creator), so the POST meets 409 and must fall back to GET.
    emu.add_fault(route="get", kind="status", status=404, times=1)
    info = manager.create_or_get(config())
    assert info.deployment_id == "dep-a"
    assert [r["status"] for r in emu.requests(route="create")] == [200, 409]
    assert sum(emu.stats()["deployments"].values()) == 1


def test_conflict_on_create_for_a_deployment_that_cannot_be_read_back_is_raised(
    manager: DeploymentManager, emu: EmulatorProcess
) -> None:
    manager.create_or_get(config())
    # Both GETs (before the POST and after its 409) claim "absent": nothing to return, so the 409 stands.
    emu.add_fault(route="get", kind="status", status=404, times=2)
    with pytest.raises(FireworksAPIError) as info:
        manager.create_or_get(config())
    assert info.value.status_code == 409 and info.value.method == "POST"
    assert [r["status"] for r in emu.requests(route="create")] == [200, 409]


def test_force_recreate_deletes_then_creates(manager: DeploymentManager, emu: EmulatorProcess) -> None:
    manager.create_or_get(config())
    manager.wait_for_ready("dep-a", timeout_s=10, poll_interval_s=0.05)
    info = manager.create_or_get(config(max_replica_count=3), force_recreate=True)
    assert info.state is DeploymentState.CREATING
    assert info.max_replica_count == 3
    [delete] = emu.requests(route="delete")
    assert delete["query"] == {"ignoreChecks": "true", "hard": "true"}
    assert len(emu.requests(route="create")) == 2


def test_failed_deployment_is_recreated(manager: DeploymentManager, emu: EmulatorProcess) -> None:
    manager.create_or_get(config())
    emu.fail_deployment("dep-a", "out of capacity")
    assert manager.get("dep-a").state is DeploymentState.FAILED  # type: ignore[union-attr]
    info = manager.create_or_get(config())
    assert info.state is DeploymentState.CREATING
    assert len(emu.requests(route="delete")) == 1
    assert len(emu.requests(route="create")) == 2


def test_get_absent_is_none(manager: DeploymentManager, emu: EmulatorProcess) -> None:
    assert manager.get("no-such-deployment") is None
    assert [r["status"] for r in emu.requests(route="get")] == [404]


def test_wait_for_ready(manager: DeploymentManager) -> None:
    manager.create_or_get(config())
    info = manager.wait_for_ready("dep-a", timeout_s=10, poll_interval_s=0.05)
    assert info.state is DeploymentState.READY
    assert info.replica_count == 1


def test_wait_for_ready_probes_while_creating(manager: DeploymentManager, emu: EmulatorProcess) -> None:
    emu.configure(create_delay_s=60, serve_while_creating=True)
    manager.create_or_get(config())
    info = manager.wait_for_ready("dep-a", timeout_s=10, poll_interval_s=0.05)
    assert info.state is DeploymentState.READY
    assert manager.get("dep-a").state is DeploymentState.CREATING  # type: ignore[union-attr]
    probe = emu.requests(route="completions")[0]
    assert probe["body"] == {
        "model": f"accounts/{emu.account_id}/deployments/dep-a",
        "prompt": [1, 2],
        "max_tokens": 4,
        "temperature": 0.0,
    }
    assert "authorization" in probe["headers"]


def test_wait_for_ready_failed_carries_server_message(
    manager: DeploymentManager, emu: EmulatorProcess
) -> None:
    emu.configure(create_delay_s=60)
    manager.create_or_get(config())
    emu.fail_deployment("dep-a", "no H200 capacity in US_IOWA_1")
    with pytest.raises(DeploymentFailedError) as info:
        manager.wait_for_ready("dep-a", timeout_s=10, poll_interval_s=0.05)
    assert info.value.state == "FAILED"
    assert info.value.status_message == "no H200 capacity in US_IOWA_1"
    assert "no H200 capacity in US_IOWA_1" in str(info.value)


def test_wait_for_ready_vanished(manager: DeploymentManager, emu: EmulatorProcess) -> None:
    emu.configure(create_delay_s=60)
    manager.create_or_get(config())
    emu.vanish_deployment("dep-a")
    with pytest.raises(DeploymentNotFoundError, match="dep-a"):
        manager.wait_for_ready("dep-a", timeout_s=10, poll_interval_s=0.05)


def test_wait_for_ready_timeout(manager: DeploymentManager, emu: EmulatorProcess) -> None:
    emu.configure(create_delay_s=60)
    manager.create_or_get(config())
    with pytest.raises(FireworksTimeoutError, match="CREATING") as info:
        manager.wait_for_ready("dep-a", timeout_s=0.3, poll_interval_s=0.05)
    assert isinstance(info.value, TimeoutError)
    assert len(emu.requests(route="get")) >= 2


def test_update_changes_only_masked_fields(manager: DeploymentManager, emu: EmulatorProcess) -> None:
    manager.create_or_get(config(description="keep me", hot_load_trainer_job=TRAINER_JOB))
    manager.wait_for_ready("dep-a", timeout_s=10, poll_interval_s=0.05)
    info = manager.update(
        "dep-a", {"maxReplicaCount": 4, "minReplicaCount": 1}, ["max_replica_count", "min_replica_count"]
    )
    assert (info.min_replica_count, info.max_replica_count) == (1, 4)
    after = manager.get("dep-a")
    assert after is not None
    assert after.hot_load_trainer_job == TRAINER_JOB
    assert after.raw["description"] == "keep me"
    [patch] = emu.requests(route="update")
    assert patch["query"] == {"updateMask": "max_replica_count,min_replica_count"}
    assert patch["body"] == {"maxReplicaCount": 4, "minReplicaCount": 1}


@pytest.mark.parametrize(
    ("body", "mask"),
    [
        ({"maxReplicaCount": 0}, None),
        ({"maxReplicaCount": 0}, ""),
        ({"maxReplicaCount": 0}, []),
        ({"maxReplicaCount": 0, "description": "x"}, "max_replica_count"),
        ({"maxReplicaCount": 0}, "maxReplicaCount"),
    ],
)
def test_update_refuses_without_a_covering_mask(
    manager: DeploymentManager, emu: EmulatorProcess, body: dict[str, object], mask: object
) -> None:
    manager.create_or_get(config())
    with pytest.raises(FireworksValidationError) as info:
        manager.update("dep-a", body, mask)  # type: ignore[arg-type]
    assert info.value.field == "update_mask"
    assert emu.requests(route="update") == []


def test_update_absent_is_a_404_sent_once(manager: DeploymentManager, emu: EmulatorProcess) -> None:
    with pytest.raises(FireworksAPIError) as info:
        manager.update("no-such", {"maxReplicaCount": 2}, "max_replica_count")
    assert info.value.status_code == 404
    assert info.value.method == "PATCH"
    assert "no-such" in info.value.url
    assert len(emu.requests(route="update")) == 1


def test_scale_to_zero_sends_explicit_mask(manager: DeploymentManager, emu: EmulatorProcess) -> None:
    emu.configure(mask_less_patch="replace")
    manager.create_or_get(
        config(description="keep me", hot_load_trainer_job=TRAINER_JOB, max_replica_count=2)
    )
    manager.wait_for_ready("dep-a", timeout_s=10, poll_interval_s=0.05)
    info = manager.scale_to_zero("dep-a")
    assert (info.min_replica_count, info.max_replica_count) == (0, 0)
    [patch] = emu.requests(route="update")
    assert patch["query"] == {"updateMask": "min_replica_count,max_replica_count"}
    assert patch["body"] == {"minReplicaCount": 0, "maxReplicaCount": 0}
    after = manager.get("dep-a")
    assert after is not None
    assert after.hot_load_trainer_job == TRAINER_JOB
    assert after.raw["description"] == "keep me"


def test_scale_to_zero_absent(manager: DeploymentManager) -> None:
    with pytest.raises(DeploymentNotFoundError):
        manager.scale_to_zero("no-such")


def test_delete_twice(manager: DeploymentManager, emu: EmulatorProcess) -> None:
    manager.create_or_get(config())
    assert manager.delete("dep-a") is True
    manager.wait_for_deleted("dep-a", timeout_s=10, poll_interval_s=0.05)
    assert manager.get("dep-a") is None
    assert manager.delete("dep-a") is False
    assert [r["status"] for r in emu.requests(route="delete")][-1] == 404
    assert all(r["query"] == {"ignoreChecks": "true", "hard": "true"} for r in emu.requests(route="delete"))


def test_delete_other_errors_raise(manager: DeploymentManager, emu: EmulatorProcess) -> None:
    manager.create_or_get(config())
    emu.add_fault(route="delete", kind="status", status=403, times=1, message="not your deployment")
    with pytest.raises(FireworksAPIError, match="not your deployment") as info:
        manager.delete("dep-a")
    assert info.value.status_code == 403


def test_wait_for_deleted_timeout(manager: DeploymentManager, emu: EmulatorProcess) -> None:
    manager.create_or_get(config())
    with pytest.raises(FireworksTimeoutError, match="dep-a"):
        manager.wait_for_deleted("dep-a", timeout_s=0.1, poll_interval_s=0.05)


def test_probe_and_warmup(manager: DeploymentManager, emu: EmulatorProcess) -> None:
    manager.create_or_get(config())
    model = manager.inference_model("dep-a")
    assert manager.probe(model) is False  # still CREATING: not serving
    manager.wait_for_ready("dep-a", timeout_s=10, poll_interval_s=0.05)
    assert manager.probe(model) is True
    assert manager.warmup(model, max_retries=3, retry_interval_s=0.01) is True
    missing = manager.inference_model("no-such")
    before = len(emu.requests(route="completions"))
    assert manager.warmup(missing, max_retries=3, retry_interval_s=0.01) is False
    assert len(emu.requests(route="completions")) - before == 3


def test_list_deployments_pages(manager: DeploymentManager, emu: EmulatorProcess) -> None:
    for name in ("dep-a", "dep-b", "dep-c"):
        manager.create_or_get(config(name))
    ids = sorted(d.deployment_id for d in manager.list_deployments(page_size=2))
    assert ids == ["dep-a", "dep-b", "dep-c"]
    pages = emu.requests(route="list")
    assert len(pages) == 2
    assert "pageToken" in pages[-1]["query"]


def test_bad_input_is_refused_before_any_request(manager: DeploymentManager, emu: EmulatorProcess) -> None:
    cases = [
        (lambda: manager.get("Bad_Id"), "deployment_id"),
        (lambda: manager.create_or_get({"deployment_id": "a"}), "config"),  # type: ignore[arg-type]
        (lambda: manager.wait_for_ready("dep-a", timeout_s=-1), "timeout_s"),
        (lambda: manager.wait_for_ready("dep-a", poll_interval_s=0), "poll_interval_s"),
        (lambda: manager.update("dep-a", {}, "min_replica_count"), "body"),
        (lambda: manager.scale_to_zero("-x"), "deployment_id"),
        (lambda: manager.delete(""), "deployment_id"),
        (lambda: manager.probe(""), "model"),
        (lambda: manager.warmup("m", max_retries=0), "max_retries"),
        (lambda: manager.hotload("dep-a", "qwen3", "s1"), "base_model"),
        (lambda: manager.hotload("dep-a", BASE_MODEL, ""), "snapshot_identity"),
        (
            lambda: manager.hotload("dep-a", BASE_MODEL, "s1", {"compression_format": "arc_v2"}),
            "incremental_snapshot_metadata",
        ),
        (lambda: manager.hotload_check_status("dep-a", BASE_MODEL, timeout=0), "timeout"),
        (lambda: manager.wait_for_hotload("dep-a", BASE_MODEL, "s1", timeout_seconds=-5), "timeout_seconds"),
        (lambda: list(manager.list_deployments(page_size=500)), "page_size"),
    ]
    for call, field in cases:
        with pytest.raises(FireworksValidationError) as info:
            call()
        assert info.value.field == field, field
        assert field in str(info.value)
    assert emu.requests() == []


def test_constructor_validation() -> None:
    with pytest.raises(FireworksValidationError) as info:
        DeploymentManager("", base_url="http://127.0.0.1:1")
    assert info.value.field == "api_key"
    with pytest.raises(FireworksValidationError) as info:
        DeploymentManager("k", base_url="127.0.0.1:8000")
    assert info.value.field == "base_url"


def test_api_key_never_leaks(emu: EmulatorProcess, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    key = emu.api_key
    texts: list[str] = []
    with DeploymentManager(key, base_url=emu.url, retry_policy=FAST_RETRY) as mgr:
        texts.append(repr(mgr))
        mgr.create_or_get(config())
        mgr.wait_for_ready("dep-a", timeout_s=10, poll_interval_s=0.05)
        mgr.hotload_and_wait("dep-a", BASE_MODEL, "snap-1", timeout_seconds=10, poll_interval=0.05)
        mgr.warmup(mgr.inference_model("dep-a"), max_retries=1)
        emu.add_fault(route="get", kind="status", status=503, times=None, message=f"echo {key}")
        with pytest.raises(FireworksAPIError) as err:
            mgr.get("dep-a")
        texts += [str(err.value), repr(err.value), err.value.message]
        assert "***" in err.value.message  # a server echoing the key is scrubbed
        emu.clear_faults()
        with pytest.raises(FireworksAPIError) as err:
            mgr.update("no-such", {"maxReplicaCount": 1}, "max_replica_count")
        texts += [str(err.value), repr(err.value)]
    wrong = "fw-wrong-key-8e1f0c2d4b6a"
    with DeploymentManager(wrong, base_url=emu.url, retry_policy=FAST_RETRY) as bad:
        texts.append(repr(bad))
        with pytest.raises(FireworksAPIError) as err:
            _ = bad.account_id
        assert err.value.status_code == 401
        texts += [str(err.value), repr(err.value)]
    for bad_key in (" leading-space", "has\nnewline"):
        with pytest.raises(FireworksValidationError) as verr:
            DeploymentManager(bad_key, base_url=emu.url)
        assert bad_key not in str(verr.value)
    texts.append(caplog.text)
    assert caplog.records, "expected debug logs to be captured"
    for text in texts:
        assert key not in text
        assert wrong not in text
