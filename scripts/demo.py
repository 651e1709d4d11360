"""``make demo``: run the RL-loop example DAG end to end against the local Fireworks emulator.

Starts the emulator on a free loopback port, points the ``fireworks_default`` connection at it,
runs ``airflow dags test fireworks_rl_loop`` (deferrable waits run in Airflow's in-process
triggerer), then prints a summary, draws a chart of each sampling step and stops the emulator.
Everything lives under ``.demo/`` in the repository; each run starts from a fresh Airflow home.
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
EMULATOR_SETTINGS = {"create_delay_s": 3.0, "hotload_stage_s": 0.4, "decode_slots": 32}


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


def task_states(db_path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute(
            "SELECT task_id, state FROM task_instance WHERE dag_id = ? ORDER BY start_date", (DAG_ID,)
        ).fetchall()
    return [(str(task), str(state)) for task, state in rows]


def read_manifests(output_root: Path) -> list[tuple[str, dict[str, Any]]]:
    """Every sampling manifest of the run, by step directory name, in step order."""
    return [
        (str(path.relative_to(output_root).parts[1]), json.loads(path.read_text()))
        for path in sorted(output_root.glob("*/step-*/shard-*/manifest.json"))
    ]


def draw_chart(manifests: list[tuple[str, dict[str, Any]]], chart_path: Path) -> None:
    """Plot throughput and concurrency window over time, one panel per sampling step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(manifests), 1, figsize=(9, 2.8 * len(manifests)), squeeze=False)
    for axis, (step, manifest) in zip(axes[:, 0], manifests, strict=True):
        timeline = manifest.get("timeline", [])
        times = [point["t_s"] for point in timeline]
        axis.plot(times, [point["tokens_per_s"] for point in timeline], color="tab:blue")
        axis.set_ylabel("tokens/s", color="tab:blue")
        axis.set_title(f"{step}: {manifest['num_completions']} completions")
        window_axis = axis.twinx()
        window_axis.step(times, [point["window"] for point in timeline], where="post", color="tab:orange")
        window_axis.plot(times, [point["in_flight"] for point in timeline], color="tab:green", alpha=0.5)
        window_axis.set_ylabel("window (orange) / in flight (green)")
    axes[-1, 0].set_xlabel("seconds since sampling started")
    fig.tight_layout()
    fig.savefig(chart_path, dpi=110)
    plt.close(fig)


def print_summary(
    states: list[tuple[str, str]],
    manifests: list[tuple[str, dict[str, Any]]],
    output_root: Path,
    chart_path: Path,
    elapsed_s: float,
) -> None:
    print(f"\nDAG {DAG_ID} finished in {elapsed_s:.0f} s against the local emulator.")
    print("\nTasks:")
    for task, state in states:
        print(f"  {task:<28} {state}")
    print("\nSampling steps:")
    header = ("step", "completions", "tokens", "tokens/s", "final window", "errors")
    print("  {:<8} {:>11} {:>8} {:>9} {:>12} {:>6}".format(*header))
    for step, manifest in manifests:
        window = (manifest.get("controller") or {}).get("final_window", "-")
        tokens_per_s = manifest["throughput"]["completion_tokens_per_s"]
        print(
            f"  {step:<8} {manifest['num_completions']:>11} {manifest['completion_tokens']:>8} "
            f"{tokens_per_s:>9.0f} {window!s:>12} {manifest['num_prompts_failed']:>6}"
        )
    print(f"\nCompletions (JSON Lines) and manifests: {output_root}")
    print(f"Chart of throughput and concurrency window per step: {chart_path}")
    print(f"Airflow home (logs, metadata DB): {DEMO_DIR / 'airflow'}")


def main() -> None:
    home, output_root = DEMO_DIR / "airflow", DEMO_DIR / "output"
    for path in (home, output_root):
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
    log_path = DEMO_DIR / "airflow.log"
    log_path.unlink(missing_ok=True)
    started = time.monotonic()
    print("Starting the local Fireworks emulator ...")
    with EmulatorProcess.start(api_key=DEMO_API_KEY, **EMULATOR_SETTINGS) as emulator:
        print(f"Emulator at {emulator.url}; running DAG {DAG_ID} (log: {log_path}) ...")
        env = airflow_env(home, output_root, emulator)
        run_airflow(env, log_path, "db", "migrate")
        run_airflow(env, log_path, "dags", "test", DAG_ID)
    print("Emulator stopped.")
    manifests = read_manifests(output_root)
    chart_path = DEMO_DIR / "sampling.png"
    if manifests:
        draw_chart(manifests, chart_path)
    print_summary(
        task_states(home / "airflow.db"), manifests, output_root, chart_path, time.monotonic() - started
    )


if __name__ == "__main__":
    main()
