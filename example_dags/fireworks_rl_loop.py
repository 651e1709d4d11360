"""An RL sampling loop on a dedicated Fireworks deployment, one DAG run per training iteration.

create the deployment, or bring the existing one back to its configured replicas (a scheduled
run finds it scaled to zero by the previous run's teardown, changed by hand, or deleted by the
platform), and wait until it serves; then, for each training step: hotload the step's policy
snapshot (a full load first, incremental deltas afterwards; when the replicas do not serve a
delta's base, the step's full snapshot is loaded instead and ``snapshot_chain`` says so), sample the prompt
set with the adaptive concurrency controller into object storage (each step starting from
the window the previous step ended with), and hand the completions' URI
to the training step. ``train_step_placeholder_*`` stands in for your trainer: it reads the
completions, computes group rewards as GRPO would, and returns the next snapshot identity.
``release_gpus`` scales the deployment to zero as a teardown task, so it runs even when a step
fails and no GPU is left running.

Settings come from params (override them with the run's conf) and environment variables:
``FIREWORKS_OUTPUT_ROOT`` (an object-storage URI such as ``s3://aws_default@bucket/rl``) and
``FIREWORKS_TOKENIZER`` (a Hugging Face id matching the base model, or a local directory).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import DAG, ObjectStoragePath, task

import airflow_fireworks
from airflow_fireworks.operators.deployment import (
    FireworksCreateDeploymentOperator,
    FireworksHotloadOperator,
    FireworksScaleToZeroOperator,
)
from airflow_fireworks.operators.sampling import FireworksSampleOperator

STEPS = 3
BASE_MODEL = "accounts/fireworks/models/qwen3-8b"
BUNDLED_TOKENIZER = str(Path(airflow_fireworks.__file__).parent / "tokenizer_data")
BUNDLED_PROMPTS = Path(__file__).parent / "data" / "arithmetic_prompts.jsonl"
OUTPUT_ROOT = os.environ.get("FIREWORKS_OUTPUT_ROOT", "file:///tmp/airflow-fireworks")
DEPLOYMENT_ID = "{{ params.deployment_id }}"


def snapshot_of(step: int, kind: str = "snapshot_identity") -> str:
    """Template for the snapshot identity the policy serves at ``step`` (``kind`` is
    ``snapshot_identity``, the delta, or ``full_snapshot_identity``, its full fallback)."""
    if step == 0:
        return "{{ params.initial_snapshot }}"
    return f"{{{{ ti.xcom_pull(task_ids='train_step_placeholder_{step - 1}')['{kind}'] }}}}"


def controller_start(step: int) -> str | dict[str, str]:
    """Adaptive concurrency; from step 1 on, start at the window the previous step ended with."""
    if step == 0:
        return "adaptive"
    previous = f"ti.xcom_pull(task_ids='sample_step_{step - 1}')['controller']['final_window']"
    return {"initial_window": f"{{{{ {previous} }}}}"}


@task
def placeholder_train_step(sampling: dict[str, Any], step: int, **context: Any) -> dict[str, Any]:
    """Stand-in for a trainer: read the step's completions, score each prompt group, name the
    next snapshot (a delta, plus the full snapshot saved beside it as the chain's fallback).
    Replace it with your training task (it gets the same completions URI)."""
    groups: dict[int, list[float]] = {}
    with ObjectStoragePath(sampling["completions_uri"]).open("r") as completions:
        for line in completions:
            record = json.loads(line)
            reward = 1.0 if record.get("finish_reason") == "stop" else 0.0
            groups.setdefault(record["prompt_index"], []).append(reward)
    group_means = [sum(rewards) / len(rewards) for rewards in groups.values()]
    run_slug = "".join(c if c.isalnum() else "-" for c in context["run_id"]).strip("-")[-40:]
    snapshot = f"{context['params']['deployment_id']}-{run_slug}-step-{step + 1}"
    return {
        "step": step,
        "groups": len(groups),
        "mean_reward": sum(group_means) / len(group_means) if group_means else 0.0,
        "snapshot_identity": snapshot,
        "full_snapshot_identity": f"{snapshot}-full",
    }


with DAG(
    dag_id="fireworks_rl_loop",
    description="Hotload, sample and train for a few steps on one Fireworks deployment",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["fireworks", "rl", "example"],
    params={
        "deployment_id": "grpo-arith-qwen3-8b",
        "initial_snapshot": "grpo-arith-qwen3-8b-base",
        "prompts_path": BUNDLED_PROMPTS.as_uri(),
        "tokenizer": os.environ.get("FIREWORKS_TOKENIZER", BUNDLED_TOKENIZER),
        "output_root": OUTPUT_ROOT,
        "samples_per_prompt": 4,
        "max_tokens": 96,
    },
) as dag:
    create = FireworksCreateDeploymentOperator(
        task_id="create_deployment",
        deployment_id=DEPLOYMENT_ID,
        base_model=BASE_MODEL,
        min_replica_count=1,
        max_replica_count=1,
        poll_interval=5,
        timeout=1800,
    )
    previous = create
    for step in range(STEPS):
        hotload = FireworksHotloadOperator(
            task_id=f"hotload_step_{step}",
            deployment_id=DEPLOYMENT_ID,
            base_model=BASE_MODEL,
            snapshot_identity=snapshot_of(step),
            previous_snapshot_identity=snapshot_of(step - 1) if step > 0 else None,
            fallback_snapshot_identity=snapshot_of(step, "full_snapshot_identity") if step > 0 else None,
            warmup=True,
            poll_interval=2,
        )
        sample = FireworksSampleOperator(
            task_id=f"sample_step_{step}",
            deployment_id=DEPLOYMENT_ID,
            base_model=BASE_MODEL,  # record the snapshot served at start and end (on-policy evidence)
            require_stable_identity=True,
            tokenizer="{{ params.tokenizer }}",
            prompts_path="{{ params.prompts_path }}",
            output_path=f"{{{{ params.output_root }}}}/{{{{ run_id | replace(':', '_') }}}}/step-{step}",
            n="{{ params.samples_per_prompt }}",
            max_tokens="{{ params.max_tokens }}",
            temperature=1.0,
            logprobs=True,
            concurrency=controller_start(step),
        )
        train = placeholder_train_step.override(task_id=f"train_step_placeholder_{step}")(
            sampling=sample.output, step=step
        )
        previous >> hotload >> sample
        previous = train
    release = FireworksScaleToZeroOperator(
        task_id="release_gpus", deployment_id=DEPLOYMENT_ID, wait_for_completion=True, poll_interval=2
    )
    previous >> release.as_teardown(setups=create)
