"""Deployments and their state machine, computed from timestamps (no background timers)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from airflow_fireworks.emulator.errors import ApiError, invalid
from airflow_fireworks.emulator.hotload import HotloadState
from airflow_fireworks.emulator.resources import (
    AUTOSCALING_DEFAULTS,
    FIELDS,
    FIELDS_BY_SNAKE,
    check_replicas,
    creation_values,
    parse_body,
    parse_mask,
    render_fields,
    rfc3339,
)
from airflow_fireworks.emulator.settings import Settings

CREATING, READY, UPDATING, DELETING, DELETED, FAILED = (
    "CREATING",
    "READY",
    "UPDATING",
    "DELETING",
    "DELETED",
    "FAILED",
)
GONE = "GONE"  # internal: a hard-deleted deployment whose deletion finished


class Replica:
    """One serving replica: hotload status and (attached by the inference layer) a serving engine."""

    def __init__(self, deployment: Deployment, index: int, identity: str | None) -> None:
        self.deployment = deployment
        self.index = index
        self.host = f"{deployment.deployment_id}-replica-{index}"
        self.hotload = HotloadState(identity)
        self.engine: Any = None

    def refresh(self, now: float) -> None:
        """Apply finished hotloads: new weights invalidate the prefix cache."""
        if self.hotload.refresh(now):
            self.deployment.latest_identity = self.hotload.current
            if self.engine is not None:
                self.engine.clear_prefix_cache()

    def close(self) -> None:
        """Called when the replica goes away (scale down, deletion, reset)."""
        if self.engine is not None:
            self.engine.close()


class Deployment:
    """A deployment's stored fields plus the timestamps its state is derived from."""

    def __init__(
        self, account_id: str, deployment_id: str, values: dict[str, Any], settings: Settings
    ) -> None:
        now, wall = time.monotonic(), time.time()
        self.deployment_id = deployment_id
        self.name = f"accounts/{account_id}/deployments/{deployment_id}"
        self.values = values
        self.create_wall = wall
        self.update_wall = wall
        self.delete_wall: float | None = None
        self.ready_at = now + settings.create_delay_s
        self.updating_until: float | None = None
        self.replicas_during_update = 0
        self.deleting_until: float | None = None
        self.hard_delete = False
        self.failure: tuple[str, str] | None = None
        self.scaled_replicas: int | None = None
        self.replicas: list[Replica] = []
        self.latest_identity: str | None = None
        self.in_flight = 0
        self.round_robin = 0
        self.idle_since = self.ready_at  # the idle clock starts when the deployment first serves
        self.waking_until: float | None = None

    # -- state -------------------------------------------------------------------------------

    def state(self, now: float) -> str:
        """The state at monotonic time ``now``."""
        if self.deleting_until is not None:
            if now < self.deleting_until:
                return DELETING
            return GONE if self.hard_delete else DELETED
        if self.failure is not None:
            return FAILED
        if now < self.ready_at:
            return CREATING
        if self.updating_until is not None and now < self.updating_until:
            return UPDATING
        return READY

    def target_replicas(self) -> int:
        """Replicas wanted once READY: max(min, 1) when max > 0 (or the ``:scale`` value), else 0."""
        if self.scaled_replicas is not None:
            return self.scaled_replicas
        maximum = self.values["max_replica_count"]
        return 0 if maximum == 0 else min(max(self.values["min_replica_count"], 1), maximum)

    def serving_count(self, now: float, settings: Settings) -> int:
        """Replicas that exist (can serve and hotload) at ``now``."""
        state = self.state(now)
        if state == READY:
            at_zero = self.waking(now) or self.idled_to_zero(now, settings)
            return 0 if at_zero else self.target_replicas()
        if state == UPDATING:
            return self.replicas_during_update
        if state == CREATING and settings.serve_while_creating:
            return self.target_replicas()
        return 0

    def sync_replicas(self, now: float, settings: Settings) -> list[Replica]:
        """Create or drop replica objects to match :meth:`serving_count`; returns the live ones.

        A replica that boots serves the latest hot-loaded snapshot, or base weights with
        ``boot_identity`` ``base`` (then a deployment booting from zero replicas forgets its snapshot).
        """
        wanted = self.serving_count(now, settings)
        while len(self.replicas) > wanted:
            replica = self.replicas.pop()
            replica.refresh(now)
            replica.close()
        if wanted and not self.replicas and settings.boot_identity == "base":
            self.latest_identity = None
        identity = self.latest_identity if settings.boot_identity == "latest" else None
        while len(self.replicas) < wanted:
            self.replicas.append(Replica(self, len(self.replicas), identity))
        return self.replicas

    def close(self) -> None:
        """Drop every replica."""
        while self.replicas:
            self.replicas.pop().close()

    # -- idleness: the platform's scale-to-zero, cold start and auto-delete ------------------

    def idle_s(self, now: float, settings: Settings) -> float:
        """Platform seconds without inference traffic at ``now`` (none while requests are in flight)."""
        if self.in_flight > 0:
            return 0.0
        return (now - self.idle_since) * settings.time_scale

    def restart_idle_clock(self, at: float) -> None:
        """Traffic, or new replica counts, at ``at`` (never moves a later restart earlier)."""
        self.idle_since = max(self.idle_since, at)

    def waking(self, now: float) -> bool:
        """True during a cold start from zero replicas."""
        return self.waking_until is not None and now < self.waking_until

    def idled_to_zero(self, now: float, settings: Settings) -> bool:
        """A min-0 deployment left without traffic for its scale-to-zero window serves no replica."""
        return (
            self.values["min_replica_count"] == 0
            and self.values["max_replica_count"] > 0
            and not self.waking(now)
            and self.idle_s(now, settings) >= self.values["autoscaling_policy"]["scale_to_zero_window"]
        )

    def expired(self, now: float, settings: Settings) -> bool:
        """A min-0 deployment left without traffic for ``auto_delete_idle_s`` is deleted by the platform."""
        return (
            settings.auto_delete_idle_s > 0
            and self.values["min_replica_count"] == 0
            and self.deleting_until is None
            and self.idle_s(now, settings) >= settings.auto_delete_idle_s
        )

    def admit(self, now: float, settings: Settings) -> None:
        """An inference request arrives: it restarts the idle clock, or wakes a deployment at zero.

        A READY deployment with no serving replica and ``maxReplicaCount`` > 0 starts a cold start
        of ``cold_start_s``; that request and every one during the cold start get 425.
        """
        if self.state(now) != READY:
            self.restart_idle_clock(now)
            return
        if self.waking(now):
            raise self._cold_start_error(now)
        if self.serving_count(now, settings) == 0:
            if self.values["max_replica_count"] == 0:
                raise ApiError(
                    425,
                    f"deployment '{self.deployment_id}' is scaled to zero (maxReplicaCount 0); "
                    "raise the replica counts to serve",
                )
            self.sync_replicas(now, settings)  # the replicas that idled away are gone
            if self.scaled_replicas == 0:
                self.scaled_replicas = None  # the autoscaler takes over from a ``:scale`` to 0
            self.waking_until = now + settings.cold_start_s
            self.idle_since = self.waking_until
            raise self._cold_start_error(now)
        self.restart_idle_clock(now)

    def _cold_start_error(self, now: float) -> ApiError:
        assert self.waking_until is not None
        retry_s = max(1, math.ceil(self.waking_until - now))
        return ApiError(
            425,
            f"deployment '{self.deployment_id}' is scaling up from zero replicas (cold start); "
            f"retry in ~{retry_s}s",
            headers={"Retry-After": str(retry_s)},
        )

    # -- rendering ---------------------------------------------------------------------------

    def render(self, now: float, settings: Settings) -> dict[str, Any]:
        """The full camelCase Deployment resource."""
        state = self.state(now)
        serving = self.serving_count(now, settings)
        at_zero = state in (DELETING, DELETED, FAILED) or self.idled_to_zero(now, settings)
        desired = 0 if at_zero else self.target_replicas()
        booting = max(0, desired - serving) if state in (CREATING, UPDATING) or self.waking(now) else 0
        body: dict[str, Any] = {"name": self.name}
        body.update(render_fields(self.values))
        code, message = self.failure or ("OK", "")
        body.update(
            {
                "state": state,
                "status": {"code": code, "message": message},
                "replicaCount": serving,
                "desiredReplicaCount": desired,
                "replicaStats": {
                    "pendingSchedulingReplicaCount": 0,
                    "downloadingModelReplicaCount": 0,
                    "initializingReplicaCount": booting,
                    "readyReplicaCount": serving,
                },
                "createTime": rfc3339(self.create_wall),
                "updateTime": rfc3339(self.update_wall),
            }
        )
        if self.delete_wall is not None:
            body["deleteTime"] = rfc3339(self.delete_wall)
        if self.latest_identity is not None:
            body["activeModelVersion"] = self.latest_identity
        return body


class Store:
    """All deployments of the one account."""

    def __init__(self, settings_source: Callable[[], Settings]) -> None:
        self._settings = settings_source
        self._deployments: dict[str, Deployment] = {}

    @property
    def settings(self) -> Settings:
        return self._settings()

    def _gone(self, deployment: Deployment, now: float) -> bool:
        """A hard deletion that finished, or a deployment the platform deleted for idleness."""
        return deployment.state(now) == GONE or deployment.expired(now, self.settings)

    def _purge(self, now: float) -> None:
        for deployment_id in [d for d, dep in self._deployments.items() if self._gone(dep, now)]:
            self._deployments.pop(deployment_id).close()

    def find(self, deployment_id: str) -> Deployment | None:
        """The deployment, or None if absent (gone deployments are forgotten here)."""
        deployment = self._deployments.get(deployment_id)
        if deployment is not None and self._gone(deployment, time.monotonic()):
            self._deployments.pop(deployment_id).close()
            return None
        return deployment

    def get(self, deployment_id: str) -> Deployment:
        """The deployment, or a 404."""
        deployment = self.find(deployment_id)
        if deployment is None:
            raise ApiError(404, f"deployment '{deployment_id}' not found")
        return deployment

    def all(self) -> Iterator[Deployment]:
        """Every known deployment, oldest first."""
        self._purge(time.monotonic())
        return iter(sorted(self._deployments.values(), key=lambda dep: (dep.create_wall, dep.deployment_id)))

    def create(self, deployment_id: str, body: Any, accept_shapeless_risk: bool) -> Deployment:
        """Validate and store a new deployment (400 bad body, 409 duplicate)."""
        values = creation_values(body, accept_shapeless_risk)
        if self.find(deployment_id) is not None:
            raise ApiError(409, f"deployment '{deployment_id}' already exists", "ALREADY_EXISTS")
        deployment = Deployment(self.settings.account_id, deployment_id, values, self.settings)
        self._deployments[deployment_id] = deployment
        return deployment

    def update(self, deployment_id: str, body: Any, update_mask: str | None) -> Deployment:
        """PATCH: masked fields, or (no mask) every mutable field per ``mask_less_patch``."""
        deployment = self.get(deployment_id)
        now = time.monotonic()
        state = deployment.state(now)
        if state in (DELETING, DELETED):
            raise ApiError(
                400, f"deployment '{deployment_id}' is {state} and cannot be updated", "FAILED_PRECONDITION"
            )
        given = parse_body(body)
        new = dict(deployment.values)
        if update_mask is not None:
            for path in parse_mask(update_mask):
                top, _, sub = path.partition(".")
                if sub:
                    policy = dict(new["autoscaling_policy"])
                    incoming = given.get("autoscaling_policy", {})
                    policy[sub] = incoming.get(sub, AUTOSCALING_DEFAULTS.get(sub))
                    if policy[sub] is None:
                        policy.pop(sub)
                    new["autoscaling_policy"] = policy
                else:
                    new[top] = given[top] if top in given else FIELDS_BY_SNAKE[top].default()
        else:
            for key, value in given.items():
                if not FIELDS_BY_SNAKE[key].mutable:
                    if value != deployment.values.get(key):
                        raise invalid(f"field '{FIELDS_BY_SNAKE[key].camel}' cannot be updated")
                    continue
                new[key] = value
            if self.settings.mask_less_patch == "replace":
                for spec in FIELDS:
                    if spec.mutable and spec.snake not in given:
                        new[spec.snake] = spec.default()
        if new.get("max_replica_count") is None:
            new["max_replica_count"] = max(new["min_replica_count"] or 0, 1)
        check_replicas(new)
        self._apply(deployment, new, now)
        return deployment

    def _apply(self, deployment: Deployment, new: dict[str, Any], now: float) -> None:
        changed = {key for key in new if new[key] != deployment.values.get(key)}
        serving_before = deployment.serving_count(now, self.settings)
        counts_changed = bool({"min_replica_count", "max_replica_count"} & changed)
        if counts_changed:
            deployment.sync_replicas(now, self.settings)  # drop replicas that idled to zero first
            deployment.scaled_replicas = None
        deployment.values = new
        if changed:
            deployment.update_wall = time.time()
        if any(FIELDS_BY_SNAKE[key].serving for key in changed):
            self._start_update(deployment, now, serving_before)
        if counts_changed:
            self._counts_changed(deployment, now)

    def _start_update(self, deployment: Deployment, now: float, serving_before: int) -> None:
        if deployment.state(now) in (READY, UPDATING):
            deployment.replicas_during_update = serving_before
            deployment.updating_until = now + self.settings.update_delay_s

    @staticmethod
    def _counts_changed(deployment: Deployment, now: float) -> None:
        """New replica counts restart the idle clock once the update they started is over."""
        updating_until = deployment.updating_until
        deployment.restart_idle_clock(now if updating_until is None else max(now, updating_until))

    def scale(self, deployment_id: str, body: Any) -> Deployment:
        """``POST ...:scale`` with ``{"replicaCount": n}`` (0 <= n <= maxReplicaCount)."""
        deployment = self.get(deployment_id)
        count = body.get("replicaCount") if isinstance(body, Mapping) else None
        if isinstance(count, str) and count.isdigit():
            count = int(count)
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise invalid("field 'replicaCount' must be a non-negative integer")
        if count > deployment.values["max_replica_count"]:
            raise invalid(
                f"replicaCount {count} exceeds maxReplicaCount {deployment.values['max_replica_count']}"
            )
        now = time.monotonic()
        serving_before = deployment.serving_count(now, self.settings)
        deployment.sync_replicas(now, self.settings)  # drop replicas that idled to zero first
        deployment.scaled_replicas = count
        deployment.update_wall = time.time()
        self._start_update(deployment, now, serving_before)
        self._counts_changed(deployment, now)
        return deployment

    def undelete(self, deployment_id: str) -> Deployment:
        """``POST ...:undelete``: a soft-deleted deployment boots again."""
        deployment = self.get(deployment_id)
        now = time.monotonic()
        if deployment.state(now) != DELETED:
            raise ApiError(400, f"deployment '{deployment_id}' is not DELETED", "FAILED_PRECONDITION")
        deployment.deleting_until = None
        deployment.delete_wall = None
        deployment.failure = None
        deployment.ready_at = now + self.settings.create_delay_s
        deployment.idle_since = deployment.ready_at
        deployment.waking_until = None
        deployment.update_wall = time.time()
        return deployment

    def delete(self, deployment_id: str, hard: bool, ignore_checks: bool) -> Deployment:
        """Start deletion: DELETING, then gone (hard) or DELETED (soft) after ``delete_delay_s``."""
        deployment = self.get(deployment_id)
        now = time.monotonic()
        state = deployment.state(now)
        if not ignore_checks and deployment.in_flight > 0:
            raise ApiError(
                400,
                f"deployment '{deployment_id}' is serving {deployment.in_flight} requests; "
                "pass ignoreChecks=true to delete it anyway",
                "FAILED_PRECONDITION",
            )
        if state == DELETING:
            deployment.hard_delete = deployment.hard_delete or hard
            return deployment
        if state == DELETED and not hard:
            return deployment
        deployment.hard_delete = hard
        deployment.deleting_until = now + self.settings.delete_delay_s
        deployment.delete_wall = time.time()
        deployment.close()
        return deployment

    def fail(self, deployment_id: str, message: str, code: str) -> Deployment:
        """Admin: the deployment goes FAILED."""
        deployment = self.get(deployment_id)
        deployment.failure = (code, message)
        deployment.update_wall = time.time()
        deployment.close()
        return deployment

    def vanish(self, deployment_id: str) -> None:
        """Admin: the deployment disappears at once."""
        self.get(deployment_id)
        self._deployments.pop(deployment_id).close()

    def advance_clock(self, platform_s: float) -> None:
        """Admin: ``platform_s`` platform seconds without traffic pass for every deployment."""
        for deployment in self._deployments.values():
            deployment.idle_since -= platform_s / self.settings.time_scale

    def clear(self) -> None:
        """Forget every deployment."""
        for deployment in self._deployments.values():
            deployment.close()
        self._deployments.clear()

    def counts_by_state(self) -> dict[str, int]:
        """How many deployments are in each state."""
        now = time.monotonic()
        counts: dict[str, int] = {}
        for deployment in self.all():
            state = deployment.state(now)
            counts[state] = counts.get(state, 0) + 1
        return counts
