"""``make demo``: run the RL-loop example DAG for two scheduled days against the local emulator.

Starts the emulator on a free loopback port, points the ``fireworks_default`` connection at it,
and runs ``airflow dags test fireworks_rl_loop <day>`` for two consecutive logical dates on the
same deployment (deferrable waits run in Airflow's in-process triggerer): each day starts a
trainer job, day 1 creates the deployment linked to it, the teardown deletes the trainer and
scales the deployment to zero, and day 2 finds it at zero and reconciles it back to the DAG's
replica counts, relinked to that day's trainer. After each day it prints the day's summary
(tasks, what reconciling did, each step's snapshot chain and saved snapshot, the sampling table,
the replicas and trainer jobs left running); at the end it draws a chart of each day's sampling
steps and stops the emulator. Everything lives under ``.demo/`` in the repository; each run
starts from a fresh Airflow home and a fresh emulator.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from airflow_fireworks.testing import EmulatorProcess  # noqa: E402

DAG_ID = "fireworks_rl_loop"
DEMO_DIR = REPO_ROOT / ".demo"
DEMO_API_KEY = "fw-demo-key-not-a-secret"
EMULATOR_SETTINGS: dict[str, Any] = {"create_delay_s": 3.0, "hotload_stage_s": 0.4, "decode_slots": 32}
#: Two consecutive scheduled days of the ``@daily`` DAG, run one after the other.
DAYS = ("2026-01-01", "2026-01-02")
DEPLOYMENT_ID = "grpo-arith-qwen3-8b"  # the DAG's default params.deployment_id


def airflow_env(home: Path, output_root: Path, emulator: EmulatorProcess) -> dict[str, str]:
    """Environment for an isolated Airflow home whose default Fireworks connection is the emulator."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    connection = {"conn_type": "fireworks", "host": emulator.url, "password": emulator.api_key}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "example_dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
            "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": "True",
            "AIRFLOW_CONN_FIREWORKS_DEFAULT": json.dumps(connection),
            "FIREWORKS_OUTPUT_ROOT": output_root.as_uri(),
            "TRANSFORMERS_VERBOSITY": "error",
            "HF_HUB_OFFLINE": "1",
        }
    )
    return env


def run_airflow(env: dict[str, str], log_path: Path, *args: str) -> None:
    """Run one ``airflow`` CLI command, its output going to ``log_path``; exit on failure."""
    with log_path.open("ab") as log:
        result = subprocess.run(
            [sys.executable, "-m", "airflow", *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if result.returncode != 0:
        tail = log_path.read_text(errors="replace").splitlines()[-40:]
        sys.exit(
            f"airflow {' '.join(args)} failed (exit {result.returncode}); last lines of {log_path}:\n"
            + "\n".join(tail)
        )


def query(db_path: Path, sql: str, *params: object) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db_path) as conn:
        return list(conn.execute(sql, params).fetchall())


def run_of_day(db_path: Path, day: str) -> tuple[str, str]:
    """The run id and state of the DAG run whose logical date is ``day``."""
    rows = query(
        db_path,
        "SELECT run_id, state FROM dag_run WHERE dag_id = ? AND logical_date LIKE ?",
        DAG_ID,
        f"{day}%",
    )
    if len(rows) != 1:
        sys.exit(f"expected one run of {DAG_ID} on {day}, found {rows}")
    return str(rows[0][0]), str(rows[0][1])


def task_states(db_path: Path, run_id: str) -> list[tuple[str, str]]:
    rows = query(
        db_path,
        "SELECT task_id, state FROM task_instance WHERE dag_id = ? AND run_id = ? ORDER BY start_date",
        DAG_ID,
        run_id,
    )
    return [(str(task), str(state)) for task, state in rows]


def xcoms(db_path: Path, run_id: str) -> dict[tuple[str, str], Any]:
    """``{(task_id, key): value}`` of the run's XComs (JSON in the metadata DB)."""
    rows = query(
        db_path,
        "SELECT task_id, key, value FROM xcom WHERE dag_id = ? AND run_id = ? AND map_index = -1",
        DAG_ID,
        run_id,
    )
    return {
        (str(task), str(key)): json.loads(value) if isinstance(value, str | bytes) else value
        for task, key, value in rows
    }


def read_manifests(output_root: Path, run_id: str) -> list[tuple[str, dict[str, Any]]]:
    """Every sampling manifest of the run, by step directory name, in step order."""
    run_dir = output_root / run_id.replace(":", "_")
    return [
        (str(path.relative_to(run_dir).parts[0]), json.loads(path.read_text()))
        for path in sorted(run_dir.glob("step-*/shard-*/manifest.json"))
    ]


def describe_reconcile(outcome: dict[str, Any] | None) -> str:
    """``updated (min_replica_count 0 -> 1, ...)`` from the ``reconcile`` XCom."""
    if not outcome:
        return ""
    changes = ", ".join(f"{c['field']} {c['current']} -> {c['requested']}" for c in outcome["changes"])
    return f"{outcome['action']} ({changes})" if changes else str(outcome["action"])


def describe_task(task: str, values: dict[tuple[str, str], Any]) -> str:
    """A short note on what the task did, read from its XComs."""
    result = values.get((task, "return_value"))
    if task == "create_deployment":
        return describe_reconcile(values.get((task, "reconcile")))
    if task == "create_trainer" and isinstance(result, dict):
        return f"trainer job {result['job_id']} serving"
    if task == "promote_final" and isinstance(result, dict):
        return f"promoted {result.get('checkpoint', '').rsplit('/', 1)[-1]} to {result.get('name')}"
    if task == "delete_trainer" and isinstance(result, dict):
        return "trainer job deleted" if result.get("deleted") else "trainer job already gone"
    if task.startswith("hotload_step_") and isinstance(result, dict):
        # ``snapshot_chain`` is pushed before the wait: it knows whether the load was sent.
        chain = values.get((task, "snapshot_chain")) or {}
        load = {"full": "full load", "continued": "delta", "restarted": "full fallback"}.get(
            result["chain"], ""
        )
        sent = "sent" if chain.get("sent") else "already served"
        return f"chain {result['chain']} ({load} {sent})"
    if task.startswith("sample_step_") and isinstance(result, dict):
        return f"{result['num_completions']} completions"
    if task.startswith("train_step_") and isinstance(result, dict):
        return (
            f"{result['groups']} groups, mean reward {result['mean_reward']:.2f}, "
            f"saved {result['snapshot_identity']} (+ full)"
        )
    if task == "release_gpus" and isinstance(result, dict):
        counts = (
            result.get("replica_count"),
            result.get("min_replica_count"),
            result.get("max_replica_count"),
        )
        return "scaled to zero: {} replicas, min {}, max {}".format(*counts)
    return ""


def draw_chart(days: list[tuple[str, list[tuple[str, dict[str, Any]]]]], chart_path: Path) -> None:
    """Plot throughput, concurrency window and prefill-queue time against its target over time:
    one column per day, one row per step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = max(len(manifests) for _, manifests in days)
    fig, axes = plt.subplots(rows, len(days), figsize=(8 * len(days), 2.8 * rows), squeeze=False)
    for column, (day, manifests) in enumerate(days):
        for axis, (step, manifest) in zip(axes[:, column], manifests, strict=False):
            timeline = manifest.get("timeline", [])
            times = [point["t_s"] for point in timeline]
            axis.plot(times, [point["tokens_per_s"] for point in timeline], color="tab:blue")
            axis.set_ylabel("tokens/s", color="tab:blue")
            axis.set_title(f"{day} {step}: {manifest['num_completions']} completions")
            window_axis = axis.twinx()
            window_axis.step(times, [point["window"] for point in timeline], where="post", color="tab:orange")
            window_axis.plot(times, [point["in_flight"] for point in timeline], color="tab:green", alpha=0.5)
            window_axis.set_ylabel("window (orange) / in flight (green)")
            # the prefill-queue time the window is steered on, on a third axis right of the window's
            queued = [
                (point["t_s"], point["prefill_queue_s"]) for point in timeline if "prefill_queue_s" in point
            ]
            target = (manifest.get("controller") or {}).get("prefill_queue_target")
            if queued or target is not None:
                queue_axis = axis.twinx()
                queue_axis.spines["right"].set_position(("axes", 1.12))
                if queued:
                    queue_axis.plot(*zip(*queued, strict=True), color="tab:red", marker=".", markersize=3)
                if target is not None:
                    queue_axis.axhline(target, color="tab:red", linestyle="--", linewidth=1)
                queue_axis.set_ylim(bottom=0, top=max([target or 0.0, *(q for _, q in queued)]) * 1.15 or 1.0)
                queue_axis.set_ylabel("prefill queue s (red; dashed: target)", color="tab:red")
        axes[-1, column].set_xlabel("seconds since sampling started")
    fig.tight_layout()
    fig.savefig(chart_path, dpi=100)
    plt.close(fig)


def print_day(
    day: str,
    run: tuple[str, str],
    states: list[tuple[str, str]],
    values: dict[tuple[str, str], Any],
    manifests: list[tuple[str, dict[str, Any]]],
    elapsed_s: float,
) -> None:
    run_id, state = run
    print(f"  Run {run_id} (logical date {day}): {state} in {elapsed_s:.0f} s")
    print("  Tasks:")
    for task, task_state in states:
        print(f"    {task:<26} {task_state:<8} {describe_task(task, values)}".rstrip())
    print("  Sampling steps:")
    header = ("step", "completions", "tokens", "tokens/s", "final window", "errors")
    print("    {:<8} {:>11} {:>8} {:>9} {:>12} {:>6}".format(*header))
    for step, manifest in manifests:
        window = (manifest.get("controller") or {}).get("final_window", "-")
        tokens_per_s = manifest["throughput"]["completion_tokens_per_s"]
        print(
            f"    {step:<8} {manifest['num_completions']:>11} {manifest['completion_tokens']:>8} "
            f"{tokens_per_s:>9.0f} {window!s:>12} {manifest['num_prompts_failed']:>6}"
        )


def deployment_replicas(emulator: EmulatorProcess) -> str:
    """The deployment's replica counts as the control plane reports them now."""
    response = emulator.session.get(
        f"{emulator.url}/v1/accounts/{emulator.account_id}/deployments/{DEPLOYMENT_ID}",
        headers={"X-Api-Key": emulator.api_key},
        timeout=10,
    )
    if response.status_code == 404:
        return "does not exist"
    info = response.json()
    counts = (info.get(key, 0) for key in ("replicaCount", "minReplicaCount", "maxReplicaCount"))
    return "{} replicas running (min_replica_count {}, max_replica_count {})".format(*counts)


def trainers_holding_gpus(emulator: EmulatorProcess) -> str:
    """The account's trainer jobs that are not deleted (each would hold GPUs)."""
    response = emulator.session.get(
        f"{emulator.url}/v1/accounts/{emulator.account_id}/rlorTrainerJobs",
        headers={"X-Api-Key": emulator.api_key},
        timeout=10,
    )
    response.raise_for_status()
    gone = ("JOB_STATE_DELETING", "JOB_STATE_DELETED", "JOB_STATE_ARCHIVED")
    live = [job["name"].rsplit("/", 1)[-1] for job in response.json().get("rlorTrainerJobs", [])
            if job.get("state") not in gone]  # fmt: skip
    return ", ".join(live) if live else "none"


def main() -> None:
    home, output_root = DEMO_DIR / "airflow", DEMO_DIR / "output"
    for path in (home, output_root):
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
    log_path = DEMO_DIR / "airflow.log"
    log_path.unlink(missing_ok=True)
    db_path = home / "airflow.db"
    started = time.monotonic()
    days: list[tuple[str, list[tuple[str, dict[str, Any]]]]] = []
    failed: list[str] = []
    print("Starting the local Fireworks emulator ...")
    with EmulatorProcess.start(api_key=DEMO_API_KEY, **EMULATOR_SETTINGS) as emulator:
        print(f"Emulator at {emulator.url}; Airflow log: {log_path}")
        env = airflow_env(home, output_root, emulator)
        run_airflow(env, log_path, "db", "migrate")
        for index, day in enumerate(DAYS, start=1):
            print(f"\nDay {index}: airflow dags test {DAG_ID} {day} ...")
            began = time.monotonic()
            run_airflow(env, log_path, "dags", "test", DAG_ID, day)
            run = run_of_day(db_path, day)
            manifests = read_manifests(output_root, run[0])
            states, values = task_states(db_path, run[0]), xcoms(db_path, run[0])
            print_day(day, run, states, values, manifests, time.monotonic() - began)
            print(f"  Deployment {DEPLOYMENT_ID} after the run: {deployment_replicas(emulator)}")
            print(f"  Trainer jobs left holding GPUs: {trainers_holding_gpus(emulator)}")
            days.append((day, manifests))
            if run[1] != "success":
                failed.append(day)
    print("\nEmulator stopped.")
    chart_path = DEMO_DIR / "sampling.png"
    if all(manifests for _, manifests in days):
        draw_chart(days, chart_path)
    print(f"Both days took {time.monotonic() - started:.0f} s against the local emulator.")
    print(f"Completions (JSON Lines) and manifests: {output_root}")
    print(f"Chart of throughput and concurrency window per day and step: {chart_path}")
    print(f"Airflow home (logs, metadata DB): {home}")
    if failed:
        sys.exit(f"the run of {', '.join(failed)} did not succeed; see {log_path}")


if __name__ == "__main__":
    main()
