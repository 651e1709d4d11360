"""What the Fireworks sensors share: connection and hook, the ``poll_interval`` alias, the
console link, transient errors polled through, and deferral.

A sensor pokes from the worker (``poke``/``reschedule`` modes) or, with ``deferrable=True``, looks
once and, unless already done, hands the wait to the triggerer with an absolute deadline taken
from ``timeout``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.exceptions import AirflowException

from airflow_fireworks.api import FireworksError
from airflow_fireworks.hooks.fireworks import FireworksHook
from airflow_fireworks.links import FireworksDeploymentLink
from airflow_fireworks.operators._common import (
    DEFERRAL_GRACE_S,
    default_deferrable,
    failing_on_bad_input,
    raise_for_airflow,
    to_seconds,
    validate_event,
)
from airflow_fireworks.triggers.base import is_transient

if TYPE_CHECKING:
    from airflow.sdk import Context
    from airflow.triggers.base import BaseTrigger


class FireworksBaseSensor(BaseSensorOperator):
    """Base of the Fireworks sensors; a subclass checks its rendered fields, looks once
    (``look_once``) and builds its trigger.

    :param fireworks_conn_id: the ``fireworks`` connection.
    :param deferrable: wait in the triggerer instead of the worker.
    :param poll_interval: alias of ``poke_interval`` (seconds between checks).
    """

    ui_color = "#6720ff"
    ui_fgcolor = "#ffffff"

    def __init__(
        self,
        *,
        fireworks_conn_id: str = FireworksHook.default_conn_name,
        deferrable: bool = default_deferrable(),
        poll_interval: float | timedelta | None = None,
        **kwargs: Any,
    ) -> None:
        if poll_interval is not None:
            kwargs["poke_interval"] = to_seconds(poll_interval, "poll_interval")
        super().__init__(**kwargs)
        self.fireworks_conn_id = fireworks_conn_id
        self.deferrable = deferrable

    @property
    def poll_interval(self) -> float:
        return float(self.poke_interval)

    @cached_property
    def hook(self) -> FireworksHook:
        return FireworksHook(fireworks_conn_id=self.fireworks_conn_id)

    def validate_rendered(self) -> None:
        """Check (and normalise) the rendered fields; a ``ValueError`` names the field."""
        raise NotImplementedError

    def make_trigger(self, timeout: float) -> BaseTrigger:
        """The trigger that waits ``timeout`` seconds from now."""
        raise NotImplementedError

    def look_once(self) -> PokeReturnValue:
        """One look at the resource (raises ``FireworksError`` when it cannot be read)."""
        raise NotImplementedError

    def poke(self, context: Context) -> PokeReturnValue:
        """``look_once``, with a transient failure read as "not yet" and the others raised for
        Airflow (``raise_for_airflow``)."""
        try:
            return self.look_once()
        except FireworksError as err:
            if is_transient(err):
                self.log.warning("Transient error, checking again later: %s", err)
                return PokeReturnValue(is_done=False)
            raise_for_airflow(err)

    def execute(self, context: Context) -> Any:
        with failing_on_bad_input():
            self.validate_rendered()
        for link in self.operator_extra_links:
            if isinstance(link, FireworksDeploymentLink):
                link.persist(context, link.url_for(self))
        if not self.deferrable:
            return super().execute(context)
        first = self.poke(context)
        if first.is_done:
            return first.xcom_value
        timeout = to_seconds(self.timeout, "timeout")
        self.defer(
            trigger=self.make_trigger(timeout),
            method_name="execute_complete",
            timeout=timedelta(seconds=timeout + DEFERRAL_GRACE_S),
        )

    def checked_event(self, event: Any, required: Sequence[str]) -> dict[str, Any]:
        """The trigger's event, checked; a non-success event fails the task with its message."""
        checked = validate_event(event, required)
        if checked["status"] != "success":
            raise AirflowException(f"{checked['status']}: {checked['message']}")
        self.log.info("%s", checked["message"])
        return checked
