"""The SLA monitor: checks every deployment cluster that has an SLA against the platform's metrics, and applies
the SLA's escalations (`control.sla.escalations`) when it breaks or has room to spare.

Measured SLAs, checked every `period` seconds (1 s):

    response_time_sliding_window   the cluster's mean response time over the last `interval` s, in ms
    error_rate                     the cluster's share of 5xx responses over the last `interval` s, in per cent

A value above `upper` escalates, below `lower` de-escalates, anything else does nothing. The cluster's traffic
is what its internal gateways (`deployment/cluster/port`, its HTTP ports) answered, summed. A check is skipped:
- within `interval + cooldown` of the cluster's last SLA event (so one step per cooldown at most, and the
  next window measures the deployment as the step left it);
- while its deployment is changing (`Engine.changing`: a change being applied, instances starting, draining
  or not yet routed), and until a whole `interval` has passed since the last check that saw it changing, or
  (for a cluster the monitor sees first) since its last `synchronization` event (no window measures a change);
- when the window holds no request: no data is neither good nor bad.

An escalation publishes `sla:escalate` even when nothing is left to scale (the SLA is broken and stays so: that
is news); a de-escalation publishes `sla:deescalate` only when it scaled something. Tags: `sla:…`,
`deployments:D`, `clusters:C`, and `clusters:T`, `services:S` of what it scaled. Value: the measured value, its
unit, the threshold and window, the requests counted and what was scaled (`scaled`: from, to, the new scale).

`escalation_only` SLAs are not measured: events tagged `sla:escalate` or `sla:deescalate` with
`deployments:D` and `clusters:C`, posted by anyone (a workflow, an operator, an alerting system), apply their
escalations at once; the monitor publishes what it scaled (and ignores the events it publishes itself).

The monitor sees deployments through the engine only (`SlaEngine`), so it works with any orchestrator driver.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from control.dsl.model import Cluster, Sla
from control.engine import cluster_ports
from control.events.model import Event, EventFilter, EventSink, EventSource
from control.metrics.model import MetricsReader, Scope, Summary
from control.sla.escalations import DEESCALATE, ESCALATE, Escalator, ScaleChange, Scaler
from gateway.common.errors import NotFound

log = logging.getLogger("vamp.sla")

CHECK_PERIOD = 1.0                # seconds between two rounds of checks
MEASURED = {"response_time_sliding_window": "ms", "error_rate": "%"}     # SLA type -> unit of its thresholds
EVENT_DRIVEN = "escalation_only"
OWN_EVENTS_KEPT = 1000            # ids of its own events the monitor remembers, to not act on them


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch."""
        ...

    async def sleep(self, seconds: float) -> None:
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class SlaEngine(Scaler, Protocol):
    """What the monitor needs of the engine: the deployments, whether one is changing, and scaling."""

    def changing(self, deployment: str) -> str | None:
        ...


class SlaEvents(EventSink, EventSource, Protocol):
    """The event log: the monitor publishes to it, follows it (escalation_only) and reads it back (the last SLA
    event of a cluster, after a restart)."""


@dataclass(slots=True)
class ClusterState:
    last_event: float | None = None       # when the cluster's last SLA event was published
    changing_seen: float | None = None    # the last check that found its deployment changing
    restored: bool = False                # last_event was looked up in the event log


class SlaMonitor:
    def __init__(self, engine: SlaEngine, metrics: MetricsReader, events: SlaEvents, clock: Clock | None = None,
                 *, period: float = CHECK_PERIOD) -> None:
        self.engine = engine
        self.metrics = metrics
        self.events = events
        self.clock = clock or SystemClock()
        self.period = period
        self.escalator = Escalator(engine)
        self.states: dict[tuple[str, str], ClusterState] = {}
        self.own_events: dict[int, None] = {}         # insertion-ordered: the oldest are dropped first
        self.following = False

    async def run(self) -> None:
        """Check every `period` seconds and follow escalation_only events, until cancelled."""
        follower = asyncio.get_running_loop().create_task(self.follow(), name="vamp SLA events")
        follower.add_done_callback(_report_failure)
        try:
            while True:
                await self.check()
                await self.clock.sleep(self.period)
        finally:
            follower.cancel()

    # -- measured SLAs ----------------------------------------------------------------------------------
    async def check(self) -> None:
        """One round: every cluster with a measured SLA, once."""
        seen = set()
        for name, deployment in list(self.engine.running.items()):
            for cluster in deployment.clusters:
                sla = cluster.sla
                if not isinstance(sla, Sla) or sla.type not in MEASURED:
                    continue
                seen.add((name, cluster.name))
                try:
                    await self.check_cluster(name, cluster, sla)
                except NotFound:                # undeployed meanwhile
                    break
                except Exception:  # noqa: BLE001 - one cluster's failure must not stop the others' checks
                    log.exception("SLA check of %s/%s failed", name, cluster.name)
        for key in set(self.states) - seen:
            del self.states[key]

    async def check_cluster(self, deployment: str, cluster: Cluster, sla: Sla) -> None:
        state = self._state(deployment, cluster.name)
        now = self.clock.now()
        interval, cooldown = sla.parameters["window"]["interval"], sla.parameters["window"]["cooldown"]
        if self.engine.changing(deployment) is not None:
            state.changing_seen = now
            return
        if state.last_event is not None and now < state.last_event + interval + cooldown:
            return
        if state.changing_seen is not None and now < state.changing_seen + interval:
            return
        scopes = [Scope(f"{deployment}/{cluster.name}/{port.name}") for port in cluster_ports(cluster)
                  if port.protocol == "http"]
        summary = self.metrics.summary(scopes, interval)
        measured = _measure(sla.type, summary)
        if measured is None:
            return
        upper, lower = _thresholds(sla)
        direction = ESCALATE if measured > upper else DEESCALATE if measured < lower else None
        if direction is None:
            return
        changes = await self.escalator.apply(deployment, cluster.name, sla.escalations, direction)
        if direction == DEESCALATE and not changes:
            return
        value = {"sla": sla.type, "measured": round(measured, 3), "unit": MEASURED[sla.type],
                 "threshold": {"upper": upper, "lower": lower}, "window": {"interval": interval, "cooldown": cooldown},
                 "requests": summary.requests}
        self._publish(direction, deployment, cluster.name, changes, value)
        state.last_event = now

    def _state(self, deployment: str, cluster: str) -> ClusterState:
        state = self.states.setdefault((deployment, cluster), ClusterState())
        if not state.restored:
            state.restored = True
            found = self.events.query(EventFilter(tags=("sla", f"deployments:{deployment}", f"clusters:{cluster}")),
                                      limit=1)
            if found:
                state.last_event = found[0].timestamp
            # A deployment changed a moment ago, between two checks (a deploy that took less than a period), was
            # never seen changing: its last synchronization event stands for that.
            changed = self.events.query(EventFilter(tags=("synchronization", f"deployments:{deployment}",
                                                          f"clusters:{cluster}")), limit=1)
            if changed:
                state.changing_seen = changed[0].timestamp
        return state

    # -- escalation_only ----------------------------------------------------------------------------------
    async def follow(self) -> None:
        """Act on the SLA events others post, until cancelled."""
        self.following = True
        try:
            async for event in self.events.follow(EventFilter(tags=("sla",))):
                if event.id in self.own_events:
                    del self.own_events[event.id]
                    continue
                try:
                    await self.on_event(event)
                except Exception:  # noqa: BLE001 - one bad event must not stop the following
                    log.exception("SLA event %d could not be applied", event.id)
        finally:
            self.following = False

    async def on_event(self, event: Event) -> None:
        """Apply the escalations of every escalation_only SLA that an `sla:escalate` / `sla:deescalate` event
        names (`deployments:D` and `clusters:C`)."""
        tags = set(event.tags)
        if ("sla:escalate" in tags) == ("sla:deescalate" in tags):
            return
        direction = ESCALATE if "sla:escalate" in tags else DEESCALATE
        deployments = _values(tags, "deployments")
        clusters = _values(tags, "clusters")
        for name in sorted(deployments):
            deployment = self.engine.running.get(name)
            for cluster in (deployment.clusters if deployment is not None else ()):
                sla = cluster.sla
                if cluster.name not in clusters or not isinstance(sla, Sla) or sla.type != EVENT_DRIVEN:
                    continue
                changes = await self.escalator.apply(name, cluster.name, sla.escalations, direction)
                if changes:
                    self._publish(direction, name, cluster.name, changes, {"sla": sla.type, "trigger": event.id})

    # -- events ---------------------------------------------------------------------------------------
    def _publish(self, direction: str, deployment: str, cluster: str, changes: list[ScaleChange],
                 value: dict[str, Any]) -> None:
        tags = {f"sla:{direction}", f"deployments:{deployment}", f"clusters:{cluster}"}
        for change in changes:
            tags.update((f"clusters:{change.cluster}", f"services:{change.service}"))
        event = self.events.publish(sorted(tags), {**value, "scaled": [change.as_json() for change in changes]})
        log.info("SLA of %s/%s: %s, scaled %s", deployment, cluster, direction,
                 [change.as_json() for change in changes] or "nothing")
        if self.following:
            self.own_events[event.id] = None
            while len(self.own_events) > OWN_EVENTS_KEPT:
                del self.own_events[next(iter(self.own_events))]


def _report_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("following SLA events stopped: escalation_only SLAs no longer act", exc_info=task.exception())


def _measure(sla_type: str, summary: Summary) -> float | None:
    """The measured value in the unit of the SLA's thresholds; None without requests."""
    if not summary.requests:
        return None
    if sla_type == "error_rate":
        return summary.error_rate * 100 if summary.error_rate is not None else None
    return summary.mean_ms


def _thresholds(sla: Sla) -> tuple[float, float]:
    """(upper, lower) in the unit the monitor measures: ms, or per cent (the model keeps basis points)."""
    threshold = sla.parameters["threshold"]
    if sla.type == "error_rate":
        return threshold["upper"] / 100, threshold["lower"] / 100
    return threshold["upper"], threshold["lower"]


def _values(tags: Iterable[str], group: str) -> set[str]:
    prefix = f"{group}:"
    return {tag[len(prefix):] for tag in tags if tag.startswith(prefix)}
