"""An RL loop on a trainer job and a dedicated Fireworks deployment, one DAG run per day.

``create_trainer`` starts an RLOR trainer job (a new one each run, its id derived from the run so
retries reuse it) and waits until it serves; ``create_deployment`` creates the deployment linked to
that trainer (``hot_load_trainer_job``: it loads snapshots from the trainer's bucket), or brings the
existing one back to its configured replicas and relinks it (a scheduled run finds it scaled to
zero by the previous run's teardown, changed by hand, or deleted by the platform), and waits until
it serves. Then, for each training step: hotload the step's policy snapshot (a full load first,
incremental deltas afterwards; when the replicas do not serve a delta's base, the step's full
snapshot is loaded instead and ``snapshot_chain`` says so), sample the prompt set with the adaptive
concurrency controller into object storage (each step starting from the window the previous step
ended with), and train on the completions: ``train_step_*`` is your code; it reads the completions,
computes group rewards as GRPO would, and asks the trainer to save the next snapshot (a delta, and
the full snapshot beside it as the chain's fallback). ``promote_final`` turns the last full
snapshot into a model. Teardown tasks run even when a step fails, so no GPU is left running:
``delete_trainer`` deletes the trainer job and ``release_gpus`` scales the deployment to zero.

Settings come from params (override them with the run's conf; the trigger form describes each)
and environment variables: ``FIREWORKS_OUTPUT_ROOT`` (an object-storage URI such as
``s3://aws_default@bucket/rl``), ``FIREWORKS_TOKENIZER`` (a Hugging Face id matching the base model,
or a local directory) and ``FIREWORKS_EXAMPLE_RETRIES`` (each task's retries, default 2; the
operators are idempotent, so a retry resumes without creating or loading anything twice).
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
import requests
from airflow.sdk import DAG, ObjectStoragePath, Param, task

import airflow_fireworks
from airflow_fireworks.hooks.fireworks import FireworksHook
from airflow_fireworks.operators.deployment import (
    FireworksCreateDeploymentOperator,
    FireworksHotloadOperator,
    FireworksScaleToZeroOperator,
)
from airflow_fireworks.operators.sampling import FireworksSampleOperator
from airflow_fireworks.operators.trainer import (
    FireworksCreateTrainerJobOperator,
    FireworksDeleteTrainerJobOperator,
    FireworksPromoteCheckpointOperator,
)

STEPS = 3
BASE_MODEL = "accounts/fireworks/models/qwen3-8b"
BUNDLED_TOKENIZER = str(Path(airflow_fireworks.__file__).parent / "tokenizer_data")
BUNDLED_PROMPTS = Path(__file__).parent / "data" / "arithmetic_prompts.jsonl"
OUTPUT_ROOT = os.environ.get("FIREWORKS_OUTPUT_ROOT", "file:///tmp/airflow-fireworks")
RETRIES = int(os.environ.get("FIREWORKS_EXAMPLE_RETRIES", "2"))
DEPLOYMENT_ID = "{{ params.deployment_id }}"
TRAINER_JOB_ID = "{{ ti.xcom_pull(task_ids='create_trainer', key='job_id') }}"
#: The run's day as YYYYMMDD: its logical date, or when it was triggered (a manual run may have none).
RUN_DAY = "{{ (logical_date or dag_run.run_after).strftime('%Y%m%d') }}"


def snapshot_of(step: int, kind: str = "snapshot_identity") -> str:
    """Template for the snapshot identity the policy serves at ``step`` (``kind`` is
    ``snapshot_identity``, the delta, or ``full_snapshot_identity``, its full fallback)."""
    if step == 0:
        return "{{ params.initial_snapshot }}"
    return f"{{{{ ti.xcom_pull(task_ids='train_step_{step - 1}')['{kind}'] }}}}"


def controller_start(step: int) -> str | dict[str, str]:
    """Adaptive concurrency; from step 1 on, start at the window the previous step ended with."""
    if step == 0:
        return "adaptive"
    previous = f"ti.xcom_pull(task_ids='sample_step_{step - 1}')['controller']['final_window']"
    return {"initial_window": f"{{{{ {previous} }}}}"}


def save_weights_for_sampler(job_id: str, name: str, checkpoint_type: str) -> str:
    """Ask the trainer to save the policy as snapshot ``name`` (``delta`` or ``base``, the full
    weights) and return the identity to hot-load.

    With a real trainer this is the official SDK's training client
    (``save_weights_for_sampler(name, checkpoint_type=...)`` on the job's ``service_url``). The local
    emulator stands in for the trainer: its admin route records the checkpoint the same way.
    """
    base_url = FireworksHook().connection_params.base_url
    response = requests.post(
        f"{base_url}/_emulator/trainers/{job_id}/checkpoints",
        json={"name": name, "checkpoint_type": checkpoint_type},
        timeout=30,
    )
    if response.status_code == 409:  # a retry of this step: the snapshot was saved by an earlier try
        return name
    response.raise_for_status()
    return str(response.json()["identity"])


@task
def train_step(
    sampling: dict[str, Any], trainer: dict[str, Any], step: int, **context: Any
) -> dict[str, Any]:
    """Your training step: read the step's completions, score each prompt group, update the policy
    and save the next snapshot (a delta, plus the full snapshot beside it as the chain's fallback).
    Here the rewards are 1 for a completion that ended on a stop sequence, and the trainer is asked
    only to save; a real step calls ``forward_backward`` and ``optim_step`` first."""
    groups: dict[int, list[float]] = {}
    with ObjectStoragePath(sampling["completions_uri"]).open("r") as completions:
        for line in completions:
            record = json.loads(line)
            reward = 1.0 if record.get("finish_reason") == "stop" else 0.0
            groups.setdefault(record["prompt_index"], []).append(reward)
    group_means = [sum(rewards) / len(rewards) for rewards in groups.values()]
    run_tag = hashlib.sha256(context["run_id"].encode()).hexdigest()[:8]  # unique per run, short
    name = f"{context['params']['deployment_id']}-{run_tag}-step-{step + 1}"
    delta = save_weights_for_sampler(trainer["job_id"], name, "delta")
    full = save_weights_for_sampler(trainer["job_id"], f"{name}-full", "base")
    return {
        "step": step,
        "groups": len(groups),
        "mean_reward": sum(group_means) / len(group_means) if group_means else 0.0,
        "snapshot_identity": delta,
        "full_snapshot_identity": full,
    }


with DAG(
    dag_id="fireworks_rl_loop",
    description="Train with a trainer job, hotload and sample each step on one Fireworks deployment",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": RETRIES, "retry_delay": timedelta(seconds=30)},
    tags=["fireworks", "rl", "example"],
    params={
        "deployment_id": Param(
            "grpo-arith-qwen3-8b",
            type="string",
            description="Stable id of the deployment every run samples from (reused day after day).",
        ),
        "initial_snapshot": Param(
            "grpo-arith-qwen3-8b-base",
            type="string",
            description="Snapshot identity the first step loads in full (the policy before training).",
        ),
        "prompts_path": Param(
            BUNDLED_PROMPTS.as_uri(),
            type="string",
            description="JSONL prompt set, one prompt per line (any object-storage URI).",
        ),
        "tokenizer": Param(
            os.environ.get("FIREWORKS_TOKENIZER", BUNDLED_TOKENIZER),
            type="string",
            description="Tokenizer of the base model: a Hugging Face id or a local directory.",
        ),
        "output_root": Param(
            OUTPUT_ROOT,
            type="string",
            description="Where completions and manifests go: <output_root>/<run_id>/step-<n>.",
        ),
        "samples_per_prompt": Param(
            4, type="integer", minimum=1, description="Completions per prompt (the GRPO group size)."
        ),
        "max_tokens": Param(96, type="integer", minimum=1, description="Completion length limit in tokens."),
        "output_model_prefix": Param(
            "grpo-arith-qwen3-8b",
            type="string",
            description="The last full snapshot becomes the model <prefix>-<YYYYMMDD of the run>.",
        ),
    },
) as dag:
    create_trainer = FireworksCreateTrainerJobOperator(
        task_id="create_trainer",
        base_model=BASE_MODEL,
        display_name="{{ params.deployment_id }}-trainer",  # the cleanup DAG sweeps by this prefix
        poll_interval=5,
    )
    create = FireworksCreateDeploymentOperator(
        task_id="create_deployment",
        deployment_id=DEPLOYMENT_ID,
        base_model=BASE_MODEL,
        hot_load_trainer_job="{{ ti.xcom_pull(task_ids='create_trainer')['job_name'] }}",
        min_replica_count=1,
        max_replica_count=1,
        poll_interval=5,
        timeout=1800,
    )
    create_trainer >> create
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
        train = train_step.override(task_id=f"train_step_{step}")(
            sampling=sample.output, trainer=create_trainer.output, step=step
        )
        previous >> hotload >> sample
        previous = train
    promote = FireworksPromoteCheckpointOperator(
        task_id="promote_final",
        job_id=TRAINER_JOB_ID,
        base_model=BASE_MODEL,
        checkpoint_id=f"{{{{ ti.xcom_pull(task_ids='train_step_{STEPS - 1}')['full_snapshot_identity'] }}}}",
        output_model_id=f"{{{{ params.output_model_prefix }}}}-{RUN_DAY}",
        poll_interval=2,
    )
    previous >> promote
    release = FireworksScaleToZeroOperator(
        task_id="release_gpus", deployment_id=DEPLOYMENT_ID, wait_for_completion=True, poll_interval=2
    )
    delete_trainer = FireworksDeleteTrainerJobOperator(
        task_id="delete_trainer", job_id=TRAINER_JOB_ID, wait_for_completion=True, poll_interval=2
    )
    promote >> [release.as_teardown(setups=create), delete_trainer.as_teardown(setups=create_trainer)]
