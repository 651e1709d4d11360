"""The example DAGs: they parse without network I/O, and each runs end to end with dag.test()."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from tests.airflow_helpers import run_dag_file, task_states, xcom
from tests.conftest import REPO_ROOT, TEST_API_KEY

EXAMPLE_DAGS = REPO_ROOT / "example_dags"
FAST_EMULATOR = {"create_delay_s": 0.2, "hotload_stage_s": 0.05, "update_delay_s": 0.1, "delete_delay_s": 0.1}


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


def test_rl_loop_runs_every_step_and_releases_the_gpus(emulator, fireworks_conn_env, tmp_path):
    emulator.configure(**FAST_EMULATOR)

    run = run_dag_file(
        EXAMPLE_DAGS / "fireworks_rl_loop.py",
        "fireworks_rl_loop",
        conf={"output_root": tmp_path.as_uri(), "samples_per_prompt": 2, "max_tokens": 24},
    )

    states = task_states(run)
    assert run.state == "success", states
    assert set(states.values()) == {"success"}
    identities = [xcom(run, f"hotload_step_{step}")["identity"] for step in range(3)]
    assert identities[0] == "grpo-arith-qwen3-8b-base"
    assert [xcom(run, f"hotload_step_{step}")["incremental"] for step in range(3)] == [False, True, True]
    for step in range(3):
        summary = xcom(run, f"sample_step_{step}")
        records = read_jsonl(summary["completions_uri"])
        assert len(records) == 96 * 2
        assert {(r["prompt_index"], r["sample_index"]) for r in records} == {
            (p, s) for p in range(96) for s in range(2)
        }
        if step > 0:
            manifest = json.loads(Path(summary["manifest_uri"].removeprefix("file://")).read_text())
            previous_window = xcom(run, f"sample_step_{step - 1}")["controller"]["final_window"]
            assert manifest["concurrency"] == {"mode": "adaptive", "initial_window": previous_window}
        trained = xcom(run, f"train_step_placeholder_{step}")
        assert trained["groups"] == 96
        if step < 2:
            assert xcom(run, f"hotload_step_{step + 1}")["identity"] == trained["snapshot_identity"]
    deployment = emulator.session.get(
        f"{emulator.url}/v1/accounts/{emulator.account_id}/deployments/grpo-arith-qwen3-8b",
        headers={"X-Api-Key": emulator.api_key},
        timeout=5,
    ).json()
    assert deployment["replicaCount"] == 0
    assert deployment["activeModelVersion"] == identities[-1]


def test_mapped_eval_samples_every_shard_and_summarizes(emulator, fireworks_conn_env, tmp_path):
    emulator.configure(**FAST_EMULATOR)

    run = run_dag_file(
        EXAMPLE_DAGS / "fireworks_mapped_eval.py",
        "fireworks_mapped_eval",
        conf={"output_root": tmp_path.as_uri()},
    )

    states = task_states(run)
    assert run.state == "success", states
    assert {f"sample_shard[{i}]" for i in range(4)} <= set(states)
    summary = xcom(run, "summarize")
    assert summary["shards"] == 4
    assert summary["completions"] == 96 * 2
    prompts_seen = set()
    for uri in summary["completions_uris"]:
        prompts_seen |= {r["prompt_index"] for r in read_jsonl(uri)}
    assert prompts_seen == set(range(96))


def test_cleanup_deletes_only_the_family(emulator, fireworks_conn_env):
    emulator.configure(**FAST_EMULATOR)
    from airflow_fireworks.api import DeploymentConfig, DeploymentManager

    with DeploymentManager(api_key=TEST_API_KEY, base_url=emulator.url) as manager:
        for deployment_id in ("grpo-arith-a", "grpo-arith-b", "other-experiment"):
            manager.create_or_get(
                DeploymentConfig(deployment_id=deployment_id, base_model="accounts/fireworks/models/qwen3-8b")
            )
        run = run_dag_file(EXAMPLE_DAGS / "fireworks_cleanup.py", "fireworks_cleanup")
        remaining = {info.deployment_id for info in manager.list_deployments()}

    assert run.state == "success", task_states(run)
    assert xcom(run, "find_family") == ["grpo-arith-a", "grpo-arith-b"]
    assert remaining == {"other-experiment"}


@pytest.mark.parametrize("prefix", [""])
def test_cleanup_refuses_an_empty_prefix(emulator, fireworks_conn_env, prefix):
    run = run_dag_file(EXAMPLE_DAGS / "fireworks_cleanup.py", "fireworks_cleanup", conf={"prefix": prefix})

    assert run.state == "failed"
    assert task_states(run)["find_family"] == "failed"
