"""Operator extra link to a deployment's page in the Fireworks console.

The URL is ``{console_url}/dashboard/deployments/{deployment_id}``, where ``console_url`` comes
from the connection (extra ``console_url``, default ``https://app.fireworks.ai``). As every
Airflow 3 link, it is stored in XCom under ``_link_FireworksDeploymentLink``: the operators push it
as soon as the deployment id is known (so it is there while a wait is deferred), and the task
runner stores ``get_link()``'s answer again when the task finishes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperatorLink
from airflow.sdk.exceptions import AirflowNotFoundException

from airflow_fireworks.api import FireworksError, validate_deployment_id
from airflow_fireworks.api.trainer_models import job_id_from
from airflow_fireworks.hooks.fireworks import FireworksConnectionConfigError, FireworksHook

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator, Context
    from airflow.sdk.types import TaskInstanceKey


class FireworksDeploymentLink(BaseOperatorLink):
    """Link from a task to the deployment it manages, in the Fireworks console."""

    name = "Fireworks deployment"

    @staticmethod
    def url_for(operator: Any) -> str:
        """Console URL of ``operator.deployment_id`` via ``operator.fireworks_conn_id``; "" if unknown."""
        deployment_id = getattr(operator, "deployment_id", None)
        conn_id = getattr(operator, "fireworks_conn_id", FireworksHook.default_conn_name)
        try:
            deployment_id = validate_deployment_id(deployment_id)
            return FireworksHook(conn_id).deployment_console_url(deployment_id)
        except (FireworksError, FireworksConnectionConfigError, AirflowNotFoundException):
            return ""

    def persist(self, context: Context, url: str) -> None:
        """Store the link now, where the UI reads it, so it works while the task waits."""
        if url:
            context["ti"].xcom_push(key=self.xcom_key, value=url)

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        return self.url_for(operator)


class FireworksTrainerJobLink(FireworksDeploymentLink):
    """Link from a task to the trainer job it manages (``{console_url}/dashboard/fine-tuning/
    reinforcement/{job_id}``; the console path is assumed), stored the same way."""

    name = "Fireworks trainer job"

    @staticmethod
    def url_for(operator: Any) -> str:
        """Console URL of ``operator.job_id`` via ``operator.fireworks_conn_id``; "" if unknown."""
        conn_id = getattr(operator, "fireworks_conn_id", FireworksHook.default_conn_name)
        try:
            job_id = job_id_from(getattr(operator, "job_id", None))
            return FireworksHook(conn_id).trainer_console_url(job_id)
        except (FireworksError, FireworksConnectionConfigError, AirflowNotFoundException):
            return ""
