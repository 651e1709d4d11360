"""Delete every deployment and trainer job of an experiment family (ids starting with a prefix).

Run it when an experiment is over, or on a schedule, so no forgotten deployment or trainer keeps
GPUs (a trainer may even sit waiting for capacity for up to 48 hours). ``find_family`` lists the
account's deployments and ``find_trainers`` its trainer jobs (by id or display name); ``delete``
and ``delete_trainer`` are mapped over what they found and wait until each one is gone; one
already gone counts as deleted. Every task has ``retries`` (``FIREWORKS_EXAMPLE_RETRIES``, default 2).
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.sdk import DAG, Param, task
from airflow.sdk.exceptions import AirflowFailException

from airflow_fireworks.api.trainers import needs_delete
from airflow_fireworks.hooks.fireworks import FireworksHook
from airflow_fireworks.operators.deployment import FireworksDeleteDeploymentOperator
from airflow_fireworks.operators.trainer import FireworksDeleteTrainerJobOperator

RETRIES = int(os.environ.get("FIREWORKS_EXAMPLE_RETRIES", "2"))


def family_prefix(prefix: str) -> str:
    """The prefix, refusing an empty one (it would match every resource of the account)."""
    if not prefix or not prefix.strip():
        # a bad param: fail without retries, nothing was deleted
        raise AirflowFailException("params.prefix must name an experiment family, e.g. 'grpo-arith-'")
    return prefix.strip()


@task
def find_family(prefix: str) -> list[str]:
    """Ids of the deployments whose id starts with ``prefix`` (deleted ones excluded)."""
    prefix = family_prefix(prefix)
    manager = FireworksHook().get_conn()
    return sorted(
        info.deployment_id
        for info in manager.list_deployments()
        if info.deployment_id.startswith(prefix) and info.state.value != "DELETED"
    )


@task
def find_trainers(prefix: str) -> list[str]:
    """Ids of the trainer jobs whose id or display name starts with ``prefix`` (deleted ones and
    ones already being deleted excluded)."""
    prefix = family_prefix(prefix)
    manager = FireworksHook().get_trainer_manager()
    return sorted(
        job.job_id
        for job in manager.list_jobs()
        if (job.job_id.startswith(prefix) or (job.display_name or "").startswith(prefix))
        and needs_delete(job)
    )


with DAG(
    dag_id="fireworks_cleanup",
    description="Delete the deployments and trainer jobs of an experiment family",
    schedule="@weekly",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    default_args={"retries": RETRIES, "retry_delay": timedelta(seconds=30)},
    tags=["fireworks", "cleanup", "example"],
    params={
        "prefix": Param(
            "grpo-arith-",
            type="string",
            minLength=1,
            description="Experiment family: every deployment and trainer job whose id (or trainer "
            "display name) starts with it is deleted. Never empty.",
        )
    },
) as dag:
    family = find_family("{{ params.prefix }}")
    FireworksDeleteDeploymentOperator.partial(
        task_id="delete", wait_for_completion=True, poll_interval=2, timeout=600
    ).expand(deployment_id=family)
    trainers = find_trainers("{{ params.prefix }}")
    FireworksDeleteTrainerJobOperator.partial(
        task_id="delete_trainer", wait_for_completion=True, poll_interval=2, timeout=600
    ).expand(job_id=trainers)
