"""Delete every deployment of an experiment family (ids starting with a prefix).

Run it when an experiment is over, or on a schedule, so no forgotten deployment keeps GPUs.
``find_family`` lists the account's deployments; ``delete`` is mapped over the ids found and
waits until each one is gone; a deployment already gone counts as deleted.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, task

from airflow_fireworks.hooks.fireworks import FireworksHook
from airflow_fireworks.operators.deployment import FireworksDeleteDeploymentOperator


@task
def find_family(prefix: str) -> list[str]:
    """Ids of the deployments whose id starts with ``prefix`` (deleted ones excluded)."""
    if not prefix or not prefix.strip():
        raise ValueError("params.prefix must name an experiment family, e.g. 'grpo-arith-'")
    manager = FireworksHook().get_conn()
    return sorted(
        info.deployment_id
        for info in manager.list_deployments()
        if info.deployment_id.startswith(prefix.strip()) and info.state.value != "DELETED"
    )


with DAG(
    dag_id="fireworks_cleanup",
    description="Delete the deployments of an experiment family",
    schedule="@weekly",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["fireworks", "cleanup", "example"],
    params={"prefix": "grpo-arith-"},
) as dag:
    family = find_family("{{ params.prefix }}")
    FireworksDeleteDeploymentOperator.partial(
        task_id="delete", wait_for_completion=True, poll_interval=2, timeout=600
    ).expand(deployment_id=family)
