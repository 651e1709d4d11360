"""The example DAGs: they parse without network I/O, and each runs end to end with dag.test(),
several times in a row against the same deployment, as a scheduled pipeline does.

The day-two sequence for the DAGs that own a deployment (``fireworks_rl_loop``,
``fireworks_mapped_eval``), one ``dag.test()`` per scheduled day on the same deployment id:

1. fresh: no deployment yet, the run creates it;
2. after its own teardown: the previous run scaled it to zero (min 0 / max 0);
3. after a hand change: someone set min 0 / max 3 between runs;
4. after the platform deleted it: the deployment vanished.

Every run must succeed with complete outputs, say in the ``reconcile`` XCom what creating did
(``created``, ``updated``, ``updated``, ``created``) and leave the deployment scaled to zero.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pendulum
import pytest

from tests.airflow_helpers import run_dag_file, task_states, try_numbers, xcom
from tests.conftest import REPO_ROOT, TEST_API_KEY
from tests.emulator_control import EmulatorProcess

EXAMPLE_DAGS = REPO_ROOT / "example_dags"
FAST_EMULATOR = {"create_delay_s": 0.2, "hotload_stage_s": 0.05, "update_delay_s": 0.1, "delete_delay_s": 0.1}
LONG_REQUEST_LOG = {"request_log_size": 20000}  # four runs' writes stay in the log
WRITES = ("create", "update", "hotload_load")
RL_DEPLOYMENT = "grpo-arith-qwen3-8b"
EVAL_DEPLOYMENT = "eval-arith-qwen3-8b"
HAND_MIN, HAND_MAX = 0, 3
PROMPTS = 96


def test_example_dags_parse_without_network_io(monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    def no_network(*args, **kwargs):
        raise AssertionError("a DAG file opened a network connection while being parsed")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    bag = DagBag(dag_folder=str(EXAMPLE_DAGS))

    assert bag.import_errors == {}
    assert set(bag.dag_ids) == {"fireworks_rl_loop", "fireworks_mapped_eval", "fireworks_cleanup"}
    for dag in bag.dags.values():
        assert "example" in dag.tags
        assert dag.description


def read_jsonl(uri: str) -> list[dict]:
    path = Path(uri.removeprefix("file://"))
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def deployment_url(emulator: EmulatorProcess, deployment_id: str) -> str:
    return f"{emulator.url}/v1/accounts/{emulator.account_id}/deployments/{deployment_id}"


def get_deployment(emulator: EmulatorProcess, deployment_id: str) -> dict[str, Any] | None:
    """The deployment resource as the API returns it, or None when it does not exist."""
    response = emulator.session.get(
        deployment_url(emulator, deployment_id), headers={"X-Api-Key": emulator.api_key}, timeout=5
    )
    if response.status_code == 404:
        return None
    response.raise_for_status()
    return dict(response.json())


def change_replicas_by_hand(emulator: EmulatorProcess, deployment_id: str) -> None:
    """What a person does in the console between two runs: set min/max replica counts."""
    response = emulator.session.patch(
        deployment_url(emulator, deployment_id),
        params={"updateMask": "min_replica_count,max_replica_count"},
        json={"minReplicaCount": HAND_MIN, "maxReplicaCount": HAND_MAX},
        headers={"X-Api-Key": emulator.api_key},
        timeout=5,
    )
    response.raise_for_status()
    assert (response.json()["minReplicaCount"], response.json()["maxReplicaCount"]) == (HAND_MIN, HAND_MAX)


def vanish(emulator: EmulatorProcess, deployment_id: str) -> None:
    """What the platform does to a deployment idle for 7 days: it is gone."""
    emulator.vanish_deployment(deployment_id)
    assert get_deployment(emulator, deployment_id) is None


def day_two_scenarios(deployment_id: str, max_replicas: int) -> list[tuple[str, Callable | None, dict]]:
    """(label, what happens before the run, expected ``reconcile`` XCom) for runs 1 to 4."""

    def changes(current_min: int, current_max: int) -> list[dict[str, Any]]:
        return [
            {"field": "min_replica_count", "current": current_min, "requested": 1},
            {"field": "max_replica_count", "current": current_max, "requested": max_replicas},
        ]

    return [
        ("fresh", None, {"action": "created", "changes": []}),
        ("after its own teardown", None, {"action": "updated", "changes": changes(0, 0)}),
        (
            "after a hand change",
            lambda emulator: change_replicas_by_hand(emulator, deployment_id),
            {"action": "updated", "changes": changes(HAND_MIN, HAND_MAX)},
        ),
        (
            "after the deployment vanished",
            lambda emulator: vanish(emulator, deployment_id),
            {"action": "created", "changes": []},
        ),
    ]


def control_writes(emulator: EmulatorProcess) -> list[dict[str, Any]]:
    """Every create, update (PATCH) and hotload request logged so far, oldest first."""
    writes = [
        entry
        for route in WRITES
        for entry in emulator.requests(route=route, limit=LONG_REQUEST_LOG["request_log_size"])
    ]
    return sorted(writes, key=lambda entry: entry["time"])


def check_deployment_writes(
    requests: list[dict[str, Any]], expected: dict[str, Any], max_replicas: int, trainer: str | None = None
) -> None:
    """A run's deployment writes match its reconcile outcome: one create, or one PATCH masked to
    exactly the drifted fields (with the link to this run's ``trainer`` when it has one); then the
    teardown's scale to zero, and nothing else."""
    writes = [r for r in requests if r["route"] in ("create", "update")]
    assert [r["status"] for r in writes] == [200, 200], writes
    first, teardown = writes
    if expected["action"] == "created":
        assert first["route"] == "create"
        assert (first["body"]["minReplicaCount"], first["body"]["maxReplicaCount"]) == (1, max_replicas)
        assert first["body"].get("hotLoadTrainerJob") == trainer
    else:
        assert first["route"] == "update"
        body = {"minReplicaCount": 1, "maxReplicaCount": max_replicas}
        mask = {"min_replica_count", "max_replica_count"}
        if trainer is not None:
            body["hotLoadTrainerJob"] = trainer
            mask.add("hot_load_trainer_job")
        assert set(first["query"]["updateMask"].split(",")) == mask
        assert first["body"] == body
    assert teardown["route"] == "update"
    assert teardown["body"] == {"minReplicaCount": 0, "maxReplicaCount": 0}


def hotloads_sent(requests: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    """(identity, base of the delta or None for a full load) of each hotload request sent."""
    return [
        (
            r["body"]["identity"],
            (r["body"].get("incremental_snapshot_metadata") or {}).get("previous_snapshot_identity"),
        )
        for r in requests
        if r["route"] == "hotload_load"
    ]


def check_scaled_to_zero(emulator: EmulatorProcess, deployment_id: str) -> dict[str, Any]:
    deployment = get_deployment(emulator, deployment_id)
    assert deployment is not None
    assert deployment["replicaCount"] == 0
    assert (deployment["minReplicaCount"], deployment["maxReplicaCount"]) == (0, 0)
    return deployment


def check_rl_run(run, emulator: EmulatorProcess, label: str) -> None:
    """One RL-loop run: every task succeeded, a full load then two deltas, complete outputs."""
    states = task_states(run)
    assert run.state == "success", (label, states)
    assert set(states.values()) == {"success"}, (label, states)
    hotloads = [xcom(run, f"hotload_step_{step}") for step in range(3)]
    assert [h["chain"] for h in hotloads] == ["full", "continued", "continued"], label
    assert [xcom(run, f"hotload_step_{step}", key="snapshot_chain")["chain"] for step in range(3)] == [
        "full",
        "continued",
        "continued",
    ], label
    identities = [h["identity"] for h in hotloads]
    assert identities == [h["requested_identity"] for h in hotloads], label  # no fallback needed
    assert identities[0] == "grpo-arith-qwen3-8b-base"
    assert [h["incremental"] for h in hotloads] == [False, True, True]
    for step in range(3):
        summary = xcom(run, f"sample_step_{step}")
        records = read_jsonl(summary["completions_uri"])
        assert len(records) == PROMPTS * 2
        assert {(r["prompt_index"], r["sample_index"]) for r in records} == {
            (p, s) for p in range(PROMPTS) for s in range(2)
        }
        if step > 0:
            manifest = json.loads(Path(summary["manifest_uri"].removeprefix("file://")).read_text())
            previous_window = xcom(run, f"sample_step_{step - 1}")["controller"]["final_window"]
            assert manifest["concurrency"] == {"mode": "adaptive", "initial_window": previous_window}
        trained = xcom(run, f"train_step_{step}")
        assert trained["groups"] == PROMPTS
        assert trained["full_snapshot_identity"] == f"{trained['snapshot_identity']}-full"
        if step < 2:
            assert xcom(run, f"hotload_step_{step + 1}")["identity"] == trained["snapshot_identity"]
    deployment = check_scaled_to_zero(emulator, RL_DEPLOYMENT)
    assert deployment["activeModelVersion"] == identities[-1]
    check_trainer_lifecycle(run, emulator, deployment, label)


def check_trainer_lifecycle(run, emulator: EmulatorProcess, deployment: dict[str, Any], label: str) -> None:
    """The run's trainer: linked to the deployment, saved each step's delta and full snapshot (the
    last full one promoted to a model), and deleted by the teardown."""
    trainer = xcom(run, "create_trainer")
    assert xcom(run, "create_trainer", key="job_id") == trainer["job_id"]
    assert deployment["hotLoadTrainerJob"] == trainer["job_name"], label
    last_full = xcom(run, "train_step_2")["full_snapshot_identity"]
    promoted = xcom(run, "promote_final")
    assert promoted["checkpoint"].endswith(f"/checkpoints/{last_full}"), (label, promoted)
    model_id = f"grpo-arith-qwen3-8b-{run.logical_date:%Y%m%d}"
    assert promoted["name"] == f"accounts/{emulator.account_id}/models/{model_id}", label
    assert xcom(run, "delete_trainer") == {"job_id": trainer["job_id"], "deleted": True}, label
    response = emulator.session.get(
        f"{emulator.url}/v1/accounts/{emulator.account_id}/rlorTrainerJobs/{trainer['job_id']}",
        headers={"X-Api-Key": emulator.api_key},
        timeout=5,
    )
    gone = response.status_code == 404 or response.json()["state"] in (
        "JOB_STATE_DELETED",
        "JOB_STATE_ARCHIVED",
    )
    assert gone, (label, response.text)


def test_rl_loop_runs_day_after_day_on_the_same_deployment(emulator, fireworks_conn_env, tmp_path):
    emulator.configure(**FAST_EMULATOR, **LONG_REQUEST_LOG)
    conf = {"output_root": tmp_path.as_uri(), "samples_per_prompt": 2, "max_tokens": 24}
    outputs: set[str] = set()
    snapshots: set[str] = set()
    trainers: list[str] = []

    for day, (label, before_run, expected) in enumerate(day_two_scenarios(RL_DEPLOYMENT, max_replicas=1)):
        if before_run is not None:
            before_run(emulator)
        written = len(control_writes(emulator))

        run = run_dag_file(
            EXAMPLE_DAGS / "fireworks_rl_loop.py",
            "fireworks_rl_loop",
            conf=conf,
            logical_date=pendulum.datetime(2026, 1, 1 + day, tz="UTC"),
        )

        assert run.logical_date == pendulum.datetime(2026, 1, 1 + day, tz="UTC")

        check_rl_run(run, emulator, label)
        trainer = xcom(run, "create_trainer")["job_name"]
        if expected["action"] == "updated":  # relinked from the previous run's (deleted) trainer
            link = {"field": "hot_load_trainer_job", "current": trainers[-1], "requested": trainer}
            expected = {**expected, "changes": sorted([*expected["changes"], link], key=str)}
        reconciled = xcom(run, "create_deployment", key="reconcile")
        assert {**reconciled, "changes": sorted(reconciled["changes"], key=str)} == expected, label
        trainers.append(trainer)
        requests = control_writes(emulator)[written:]
        check_deployment_writes(requests, expected, max_replicas=1, trainer=trainer)
        snapshot = [xcom(run, f"train_step_{step}")["snapshot_identity"] for step in range(2)]
        assert hotloads_sent(requests) == [
            ("grpo-arith-qwen3-8b-base", None),
            (snapshot[0], "grpo-arith-qwen3-8b-base"),
            (snapshot[1], snapshot[0]),
        ], label
        outputs |= {xcom(run, f"sample_step_{step}")["completions_uri"] for step in range(3)}
        snapshots |= {xcom(run, f"hotload_step_{step}")["identity"] for step in (1, 2)}

    assert len(set(trainers)) == 4  # a trainer job of its own each run
    assert len(outputs) == 4 * 3  # each run wrote its own files, none overwrote another's
    assert len(snapshots) == 4 * 2  # each run trained its own deltas


def check_eval_run(run, emulator: EmulatorProcess, label: str) -> None:
    states = task_states(run)
    assert run.state == "success", (label, states)
    assert set(states.values()) == {"success"}, (label, states)
    assert {f"sample_shard[{i}]" for i in range(4)} <= set(states)
    loaded = xcom(run, "load_snapshot")
    assert (loaded["identity"], loaded["chain"]) == ("grpo-arith-qwen3-8b-candidate", "full"), label
    summary = xcom(run, "summarize")
    assert summary["shards"] == 4
    assert summary["completions"] == PROMPTS * 2
    prompts_seen = set()
    for uri in summary["completions_uris"]:
        prompts_seen |= {r["prompt_index"] for r in read_jsonl(uri)}
    assert prompts_seen == set(range(PROMPTS))
    check_scaled_to_zero(emulator, EVAL_DEPLOYMENT)


def test_mapped_eval_runs_again_and_again_on_the_same_deployment(emulator, fireworks_conn_env, tmp_path):
    emulator.configure(**FAST_EMULATOR, **LONG_REQUEST_LOG)
    outputs: set[str] = set()

    for day, (label, before_run, expected) in enumerate(day_two_scenarios(EVAL_DEPLOYMENT, max_replicas=2)):
        if before_run is not None:
            before_run(emulator)
        written = len(control_writes(emulator))

        run = run_dag_file(
            EXAMPLE_DAGS / "fireworks_mapped_eval.py",
            "fireworks_mapped_eval",
            conf={"output_root": tmp_path.as_uri()},
            logical_date=pendulum.datetime(2026, 2, 1 + day, tz="UTC"),
        )

        assert run.logical_date == pendulum.datetime(2026, 2, 1 + day, tz="UTC")

        check_eval_run(run, emulator, label)
        assert xcom(run, "create_deployment", key="reconcile") == expected, label
        check_deployment_writes(control_writes(emulator)[written:], expected, max_replicas=2)
        outputs |= set(xcom(run, "summarize")["completions_uris"])

    assert len(outputs) == 4 * 4


def test_cleanup_deletes_only_the_family_and_finds_nothing_the_next_time(emulator, fireworks_conn_env):
    emulator.configure(**FAST_EMULATOR)
    from airflow_fireworks.api import DeploymentConfig, DeploymentManager

    with DeploymentManager(api_key=TEST_API_KEY, base_url=emulator.url) as manager:
        for deployment_id in ("grpo-arith-a", "grpo-arith-b", "other-experiment"):
            manager.create_or_get(
                DeploymentConfig(deployment_id=deployment_id, base_model="accounts/fireworks/models/qwen3-8b")
            )
        first = run_dag_file(
            EXAMPLE_DAGS / "fireworks_cleanup.py",
            "fireworks_cleanup",
            logical_date=pendulum.datetime(2026, 1, 5, tz="UTC"),
        )
        remaining = {info.deployment_id for info in manager.list_deployments()}
        deletes_after_first = len(emulator.requests(route="delete", limit=1000))

        second = run_dag_file(
            EXAMPLE_DAGS / "fireworks_cleanup.py",
            "fireworks_cleanup",
            logical_date=pendulum.datetime(2026, 1, 12, tz="UTC"),
        )
        remaining_after_second = {info.deployment_id for info in manager.list_deployments()}

    assert first.state == "success", task_states(first)
    assert xcom(first, "find_family") == ["grpo-arith-a", "grpo-arith-b"]
    assert task_states(first) == {
        "find_family": "success",
        "delete[0]": "success",
        "delete[1]": "success",
        "find_trainers": "success",
        "delete_trainer": "skipped",  # no trainer job of the family exists
    }
    assert remaining == {"other-experiment"}
    assert deletes_after_first == 2

    assert second.state == "success", task_states(second)
    assert xcom(second, "find_family") == []
    assert task_states(second)["find_family"] == "success"
    assert len(emulator.requests(route="delete", limit=1000)) == deletes_after_first  # nothing to delete
    assert remaining_after_second == {"other-experiment"}


def test_cleanup_refuses_an_empty_prefix_before_the_run_starts(emulator, fireworks_conn_env):
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError, match="prefix"):
        run_dag_file(EXAMPLE_DAGS / "fireworks_cleanup.py", "fireworks_cleanup", conf={"prefix": ""})
    assert emulator.requests(route="delete") == []


def test_cleanup_refuses_a_blank_prefix_without_retrying(emulator, fireworks_conn_env):
    run = run_dag_file(EXAMPLE_DAGS / "fireworks_cleanup.py", "fireworks_cleanup", conf={"prefix": "   "})

    assert run.state == "failed"
    assert task_states(run)["find_family"] == "failed"
    assert try_numbers(run)["find_family"] == 1  # a bad param is not retried
    assert emulator.requests(route="delete") == []
