"""The emulator's control plane, auth, admin endpoints and control-plane faults, over raw HTTP."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from tests.emulator_control import EmulatorProcess

BASE_MODEL = "accounts/fireworks/models/qwen3-8b"
TRAINER_JOB = "accounts/emulator/rlorTrainerJobs/job-1"


@pytest.fixture(autouse=True)
def trainer_job(emulator: EmulatorProcess) -> None:
    """Deployments below link to TRAINER_JOB, which must exist (the service refuses a dangling link)."""
    emulator.add_trainer_job(TRAINER_JOB.rsplit("/", 1)[-1])


def call(emulator: EmulatorProcess, method: str, path: str, **kwargs: Any) -> requests.Response:
    headers = {"X-Api-Key": emulator.api_key, **kwargs.pop("headers", {})}
    return requests.request(method, emulator.url + path, headers=headers, timeout=10, **kwargs)


def deployments_path(emulator: EmulatorProcess) -> str:
    return f"/v1/accounts/{emulator.account_id}/deployments"


def create(emulator: EmulatorProcess, deployment_id: str, **body: Any) -> requests.Response:
    payload = {"baseModel": BASE_MODEL, **body}
    return call(
        emulator, "POST", deployments_path(emulator), params={"deploymentId": deployment_id}, json=payload
    )


def get(emulator: EmulatorProcess, deployment_id: str) -> requests.Response:
    return call(emulator, "GET", f"{deployments_path(emulator)}/{deployment_id}")


def wait_for(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def state_of(emulator: EmulatorProcess, deployment_id: str) -> str | None:
    response = get(emulator, deployment_id)
    return None if response.status_code == 404 else str(response.json()["state"])


def ready(emulator: EmulatorProcess, deployment_id: str, **body: Any) -> dict[str, Any]:
    emulator.configure(create_delay_s=0.0, update_delay_s=0.0)
    assert create(emulator, deployment_id, **body).status_code == 200
    wait_for(lambda: state_of(emulator, deployment_id) == "READY")
    return dict(get(emulator, deployment_id).json())


# -- accounts and auth -------------------------------------------------------------------------


def test_accounts_with_x_api_key_and_bearer(emulator: EmulatorProcess) -> None:
    by_key = call(emulator, "GET", "/v1/accounts", params={"pageSize": 2})
    by_bearer = requests.get(
        emulator.url + "/v1/accounts",
        params={"pageSize": 2},
        headers={"Authorization": f"Bearer {emulator.api_key}"},
        timeout=10,
    )
    for response in (by_key, by_bearer):
        assert response.status_code == 200
        accounts = response.json()["accounts"]
        assert len(accounts) == 1
        assert accounts[0]["name"] == f"accounts/{emulator.account_id}"
        assert accounts[0]["email"]


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-Api-Key": "wrong-key-123"}, {"Authorization": "Bearer wrong-key-123"}],
    ids=["missing", "wrong-x-api-key", "wrong-bearer"],
)
def test_bad_key_gets_401_without_the_key(emulator: EmulatorProcess, headers: dict[str, str]) -> None:
    response = requests.get(emulator.url + "/v1/accounts", headers=headers, timeout=10)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "UNAUTHENTICATED"
    assert "wrong-key-123" not in response.text
    assert emulator.api_key not in response.text


def test_request_id_is_echoed_or_generated(emulator: EmulatorProcess) -> None:
    given = call(emulator, "GET", "/v1/accounts", headers={"x-request-id": "abc123"})
    assert given.headers["x-request-id"] == "abc123"
    generated = call(emulator, "GET", "/v1/accounts")
    assert re.fullmatch(r"[0-9a-f]{32}", generated.headers["x-request-id"])
    not_found = call(emulator, "GET", "/v1/nowhere")
    assert not_found.status_code == 404
    assert not_found.json()["error"]["code"] == "NOT_FOUND"


def test_other_account_is_refused(emulator: EmulatorProcess) -> None:
    response = call(emulator, "GET", "/v1/accounts/someone-else/deployments")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "PERMISSION_DENIED"


# -- create / get / state machine ----------------------------------------------------------------


def test_create_then_ready_with_full_resource(emulator: EmulatorProcess) -> None:
    emulator.configure(create_delay_s=0.3)
    response = create(
        emulator,
        "policy-1",
        description="grpo run",
        minReplicaCount=0,
        maxReplicaCount=1,
        enableHotLoad=True,
        hotLoadBucketType="FW_HOSTED",
        hotLoadTrainerJob=TRAINER_JOB,
        hotLoadTransitionType="ASYNC",
        placement={"region": "US_IOWA_1"},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["name"] == f"accounts/{emulator.account_id}/deployments/policy-1"
    assert body["state"] == "CREATING"
    assert body["replicaCount"] == 0
    assert body["desiredReplicaCount"] == 1
    assert body["baseModel"] == BASE_MODEL
    assert body["hotLoadTrainerJob"] == TRAINER_JOB
    assert body["hotLoadTransitionType"] == "ASYNC"
    assert body["autoscalingPolicy"] == {
        "scaleUpWindow": "30s",
        "scaleDownWindow": "600s",
        "scaleToZeroWindow": "3600s",
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", body["createTime"])
    assert body["status"] == {"code": "OK", "message": ""}
    wait_for(lambda: state_of(emulator, "policy-1") == "READY")
    done = get(emulator, "policy-1").json()
    assert done["replicaCount"] == 1
    assert done["replicaStats"]["readyReplicaCount"] == 1


def test_replica_count_follows_min(emulator: EmulatorProcess) -> None:
    body = ready(emulator, "three", minReplicaCount=3, maxReplicaCount=5)
    assert body["replicaCount"] == 3
    assert ready(emulator, "zero", minReplicaCount=0, maxReplicaCount=0)["replicaCount"] == 0


def test_duplicate_create_is_409(emulator: EmulatorProcess) -> None:
    assert create(emulator, "dup").status_code == 200
    again = create(emulator, "dup")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "ALREADY_EXISTS"


@pytest.mark.parametrize(
    ("deployment_id", "body", "needle"),
    [
        ("Bad_Id", {"baseModel": BASE_MODEL}, "deploymentId"),
        ("no-model", {"description": "x"}, "baseModel"),
        (
            "both",
            {
                "baseModel": BASE_MODEL,
                "deploymentShape": "accounts/fireworks/deploymentShapes/s1",
                "acceleratorType": "NVIDIA_H100_80GB",
            },
            "acceleratorType",
        ),
        ("min-max", {"baseModel": BASE_MODEL, "minReplicaCount": 3, "maxReplicaCount": 1}, "minReplicaCount"),
        ("bad-enum", {"baseModel": BASE_MODEL, "acceleratorType": "NVIDIA_TOASTER"}, "acceleratorType"),
        ("bad-type", {"baseModel": BASE_MODEL, "hotLoadTransitionType": "LAZY"}, "hotLoadTransitionType"),
        (
            "short-window",
            {"baseModel": BASE_MODEL, "autoscalingPolicy": {"scaleToZeroWindow": "60s"}},
            "scaleToZeroWindow",
        ),
        ("unknown", {"baseModel": BASE_MODEL, "gpuFlavour": "x"}, "gpuFlavour"),
        ("neg", {"baseModel": BASE_MODEL, "minReplicaCount": -1}, "minReplicaCount"),
    ],
)
def test_invalid_create_bodies_get_400(
    emulator: EmulatorProcess, deployment_id: str, body: dict[str, Any], needle: str
) -> None:
    response = call(
        emulator, "POST", deployments_path(emulator), params={"deploymentId": deployment_id}, json=body
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "INVALID_ARGUMENT"
    assert needle in error["message"]
    assert get(emulator, deployment_id.lower()).status_code == 404


def test_shapeless_risk_with_shape_is_400_and_query_flags_are_tolerated(emulator: EmulatorProcess) -> None:
    shape = {"baseModel": BASE_MODEL, "deploymentShape": "accounts/fireworks/deploymentShapes/s1"}
    path = deployments_path(emulator)
    refused = call(
        emulator, "POST", path, params={"deploymentId": "s1", "acceptShapelessRisk": "true"}, json=shape
    )
    assert refused.status_code == 400
    flags = {"deploymentId": "s2", "skipShapeValidation": "true", "disableSpeculativeDecoding": "true"}
    accepted = call(emulator, "POST", path, params=flags, json=shape)
    assert accepted.status_code == 200
    assert "acceleratorType" not in accepted.json()


# -- update --------------------------------------------------------------------------------------


def test_patch_with_mask_changes_only_masked_fields(emulator: EmulatorProcess) -> None:
    ready(emulator, "masked", description="keep me", hotLoadTrainerJob=TRAINER_JOB, maxReplicaCount=2)
    emulator.configure(update_delay_s=0.3)
    response = call(
        emulator,
        "PATCH",
        f"{deployments_path(emulator)}/masked",
        params={"updateMask": "min_replica_count,hot_load_transition_type"},
        json={"minReplicaCount": 2, "hotLoadTransitionType": "SYNC", "description": "ignored"},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["state"] == "UPDATING"
    assert body["minReplicaCount"] == 2
    assert body["hotLoadTransitionType"] == "SYNC"
    assert body["description"] == "keep me"
    assert body["hotLoadTrainerJob"] == TRAINER_JOB
    assert body["replicaCount"] == 1
    wait_for(lambda: state_of(emulator, "masked") == "READY")
    assert get(emulator, "masked").json()["replicaCount"] == 2


def test_patch_mask_path_missing_from_body_clears_the_field(emulator: EmulatorProcess) -> None:
    ready(emulator, "clear", hotLoadTrainerJob=TRAINER_JOB)
    response = call(
        emulator,
        "PATCH",
        f"{deployments_path(emulator)}/clear",
        params={"updateMask": "hot_load_trainer_job"},
        json={},
    )
    assert response.status_code == 200
    assert "hotLoadTrainerJob" not in response.json()


def test_patch_mask_with_immutable_or_unknown_path_is_400(emulator: EmulatorProcess) -> None:
    ready(emulator, "immutable")
    for mask in ("base_model", "no_such_field"):
        response = call(
            emulator,
            "PATCH",
            f"{deployments_path(emulator)}/immutable",
            params={"updateMask": mask},
            json={"baseModel": "accounts/x/models/y"},
        )
        assert response.status_code == 400
        assert mask in response.json()["error"]["message"]


def test_maskless_patch_replace_resets_other_fields(emulator: EmulatorProcess) -> None:
    ready(emulator, "replace", description="d", hotLoadTrainerJob=TRAINER_JOB, maxReplicaCount=2)
    response = call(
        emulator,
        "PATCH",
        f"{deployments_path(emulator)}/replace",
        json={"maxReplicaCount": 0, "minReplicaCount": 0},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["maxReplicaCount"] == 0
    assert body["description"] == ""
    assert "hotLoadTrainerJob" not in body
    wait_for(lambda: get(emulator, "replace").json()["replicaCount"] == 0)
    assert get(emulator, "replace").json()["state"] == "READY"


def test_maskless_patch_merge_keeps_other_fields(emulator: EmulatorProcess) -> None:
    ready(emulator, "merge", description="d", hotLoadTrainerJob=TRAINER_JOB)
    emulator.configure(mask_less_patch="merge")
    response = call(
        emulator,
        "PATCH",
        f"{deployments_path(emulator)}/merge",
        json={"maxReplicaCount": 0, "minReplicaCount": 0},
    )
    body = response.json()
    assert body["maxReplicaCount"] == 0
    assert body["description"] == "d"
    assert body["hotLoadTrainerJob"] == TRAINER_JOB


def test_scale_action(emulator: EmulatorProcess) -> None:
    ready(emulator, "scaled", maxReplicaCount=4)
    response = call(emulator, "POST", f"{deployments_path(emulator)}/scaled:scale", json={"replicaCount": 3})
    assert response.status_code == 200
    wait_for(lambda: get(emulator, "scaled").json()["replicaCount"] == 3)
    too_many = call(emulator, "POST", f"{deployments_path(emulator)}/scaled:scale", json={"replicaCount": 9})
    assert too_many.status_code == 400


# -- delete / list -------------------------------------------------------------------------------


def test_hard_delete_goes_away(emulator: EmulatorProcess) -> None:
    ready(emulator, "hard")
    emulator.configure(delete_delay_s=0.2)
    response = call(
        emulator,
        "DELETE",
        f"{deployments_path(emulator)}/hard",
        params={"ignoreChecks": "true", "hard": "true"},
    )
    assert response.status_code == 200
    assert state_of(emulator, "hard") == "DELETING"
    wait_for(lambda: state_of(emulator, "hard") is None)
    assert get(emulator, "hard").json()["error"]["code"] == "NOT_FOUND"
    assert call(emulator, "DELETE", f"{deployments_path(emulator)}/hard").status_code == 404


def test_soft_delete_is_listed_only_with_show_deleted(emulator: EmulatorProcess) -> None:
    ready(emulator, "soft")
    ready(emulator, "alive")
    emulator.configure(delete_delay_s=0.0)
    assert call(emulator, "DELETE", f"{deployments_path(emulator)}/soft").status_code == 200
    wait_for(lambda: state_of(emulator, "soft") == "DELETED")
    listed = call(emulator, "GET", deployments_path(emulator)).json()["deployments"]
    assert [item["name"].rsplit("/", 1)[-1] for item in listed] == ["alive"]
    with_deleted = call(emulator, "GET", deployments_path(emulator), params={"showDeleted": "true"}).json()
    assert sorted(item["name"].rsplit("/", 1)[-1] for item in with_deleted["deployments"]) == [
        "alive",
        "soft",
    ]
    assert create(emulator, "soft").status_code == 409
    undeleted = call(emulator, "POST", f"{deployments_path(emulator)}/soft:undelete", json={})
    assert undeleted.status_code == 200
    wait_for(lambda: state_of(emulator, "soft") == "READY")


def test_list_pages_and_filter(emulator: EmulatorProcess) -> None:
    for index in range(5):
        assert create(emulator, f"page-{index}").status_code == 200
    seen: list[str] = []
    token: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"pageSize": 2}
        if token:
            params["pageToken"] = token
        body = call(emulator, "GET", deployments_path(emulator), params=params).json()
        seen += [item["name"].rsplit("/", 1)[-1] for item in body["deployments"]]
        pages += 1
        token = body.get("nextPageToken")
        if not token:
            break
    assert pages == 3
    assert seen == [f"page-{index}" for index in range(5)]
    big = call(emulator, "GET", deployments_path(emulator), params={"pageSize": 5000})
    assert big.status_code == 200
    assert len(big.json()["deployments"]) == 5
    filtered = call(emulator, "GET", deployments_path(emulator), params={"filter": 'name="x"'}).json()
    assert filtered["deployments"] == []
    by_state = call(emulator, "GET", deployments_path(emulator), params={"filter": "state=CREATING"}).json()
    assert len(by_state["deployments"]) == 5
    assert call(emulator, "GET", deployments_path(emulator), params={"pageToken": "bogus"}).status_code == 400


# -- admin ---------------------------------------------------------------------------------------


def test_fail_and_vanish(emulator: EmulatorProcess) -> None:
    ready(emulator, "doomed")
    emulator.fail_deployment("doomed", "GPU fell off")
    body = get(emulator, "doomed").json()
    assert body["state"] == "FAILED"
    assert body["status"]["message"] == "GPU fell off"
    assert body["status"]["code"] != "OK"
    emulator.vanish_deployment("doomed")
    assert get(emulator, "doomed").status_code == 404


def test_config_validation_and_reset(emulator: EmulatorProcess) -> None:
    assert emulator.configure(create_delay_s=0.1)["create_delay_s"] == 0.1
    for bad in ({"create_delay_s": -1}, {"mask_less_patch": "sometimes"}, {"no_such_setting": 1}):
        response = requests.patch(f"{emulator.url}/_emulator/config", json=bad, timeout=10)
        assert response.status_code == 400
        assert next(iter(bad)) in response.json()["error"]["message"]
    create(emulator, "gone-after-reset")
    emulator.reset()
    config = emulator.admin("GET", "config")
    assert config["create_delay_s"] == 2.0
    assert get(emulator, "gone-after-reset").status_code == 404


def test_request_log_and_stats(emulator: EmulatorProcess) -> None:
    create(emulator, "logged", description="hello")
    call(emulator, "GET", "/v1/accounts", headers={"X-Api-Key": "not-the-key-xyz"})
    entries = emulator.requests(route="create")
    assert len(entries) == 1
    entry = entries[0]
    assert entry["method"] == "POST"
    assert entry["query"] == {"deploymentId": "logged"}
    assert entry["body"]["description"] == "hello"
    assert "x-api-key" in entry["headers"]
    everything = str(emulator.requests()) + str(emulator.admin("GET", "config"))
    assert emulator.api_key not in everything
    assert "not-the-key-xyz" not in everything
    stats = emulator.stats()
    assert stats["requests"]["create"]["200"] == 1
    assert stats["requests"]["accounts"]["401"] == 1
    assert stats["deployments"] == {"CREATING": 1}


# -- faults on the control plane -----------------------------------------------------------------


def test_status_fault_with_retry_after_and_times(emulator: EmulatorProcess) -> None:
    emulator.add_fault(route="accounts", kind="status", status=429, retry_after_s=3, times=2)
    first = call(emulator, "GET", "/v1/accounts")
    second = call(emulator, "GET", "/v1/accounts")
    third = call(emulator, "GET", "/v1/accounts")
    assert [first.status_code, second.status_code, third.status_code] == [429, 429, 200]
    assert first.headers["Retry-After"] == "3"
    assert first.json()["error"]["code"] == "RESOURCE_EXHAUSTED"
    assert emulator.admin("GET", "faults")[0]["hits"] == 2


def test_fault_scoped_to_deployment(emulator: EmulatorProcess) -> None:
    create(emulator, "target")
    create(emulator, "bystander")
    emulator.add_fault(route="get", deployment_id="target", status=500, times=None)
    assert get(emulator, "bystander").status_code == 200
    assert get(emulator, "target").status_code == 500
    assert get(emulator, "target").status_code == 500
    emulator.clear_faults()
    assert get(emulator, "target").status_code == 200


def test_fault_probability_is_seeded(emulator: EmulatorProcess) -> None:
    def pattern() -> list[int]:
        emulator.reset()
        emulator.add_fault(route="accounts", status=503, probability=0.5, times=None)
        return [call(emulator, "GET", "/v1/accounts").status_code for _ in range(20)]

    first = pattern()
    assert set(first) == {200, 503}
    assert pattern() == first


def test_delay_fault(emulator: EmulatorProcess) -> None:
    emulator.add_fault(route="accounts", kind="delay", delay_s=0.3)
    started = time.monotonic()
    response = call(emulator, "GET", "/v1/accounts")
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.3


def test_reset_fault_drops_the_connection(emulator: EmulatorProcess) -> None:
    emulator.add_fault(route="create", kind="reset")
    with pytest.raises(requests.ConnectionError):
        create(emulator, "never")
    assert create(emulator, "later").status_code == 200


def test_bad_fault_rule_is_400(emulator: EmulatorProcess) -> None:
    response = requests.post(f"{emulator.url}/_emulator/faults", json={"kind": "explode"}, timeout=10)
    assert response.status_code == 400
    assert "kind" in response.json()["error"]["message"]
