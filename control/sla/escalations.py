"""Applying an SLA's escalations to a deployment: which services to scale, by how much, in which order.

An SLA's `escalations` are a list handled as `to_one`. Each kind, escalating (`up`) or de-escalating (down):

    scale_instances   every service of the cluster (or of the `target` cluster) gets `scale_by` more (fewer)
    scale_cpu         instances, CPU cores or memory, never leaving [minimum, maximum]: a service already at (or
    scale_memory      beyond) the bound it moves towards is left as it is
    to_all            every escalation in order; it changed something if any of them did
    to_one            escalating head to tail, de-escalating tail to head; stops at the first that changes
                      something

Scaling goes through the engine's scale path (`set_scale`), so an instance that goes is drained first. An
escalation of another kind, or a reference left unresolved, changes nothing (and is logged once).
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from control.dsl.model import Deployment, Escalation, Reference, Scale
from control.dsl.units import format_memory
from gateway.common.errors import RequestError

log = logging.getLogger("vamp.sla")

ESCALATE = "escalate"
DEESCALATE = "deescalate"
SCALED_FIELDS = {"scale_instances": "instances", "scale_cpu": "cpu", "scale_memory": "memory"}
CPU_DECIMALS = 6                  # CPU steps add up without float noise (0.1 + 0.2 -> 0.3)


class Scaler(Protocol):
    """What escalating needs of the engine."""

    @property
    def running(self) -> Mapping[str, Deployment]:
        ...

    async def set_scale(self, deployment: str, cluster: str, service: str, scale: Scale) -> Any:
        ...


@dataclass(frozen=True, slots=True)
class ScaleChange:
    """One service scaled by one escalation."""
    cluster: str
    service: str
    escalation: str               # scale_instances, scale_cpu or scale_memory
    before: Scale
    after: Scale

    def as_json(self) -> dict[str, Any]:
        field = SCALED_FIELDS[self.escalation]
        shown = format_memory if field == "memory" else (lambda value: value)
        return {"cluster": self.cluster, "service": self.service, "escalation": self.escalation,
                "from": shown(getattr(self.before, field)), "to": shown(getattr(self.after, field)),
                "scale": {"cpu": self.after.cpu, "memory": format_memory(self.after.memory),
                          "instances": self.after.instances}}


def step(current: float, minimum: float, maximum: float, by: float, direction: str) -> float:
    """The value one step `by` in `direction`, within [minimum, maximum]; `current` if it is already at or beyond
    the bound it would move towards."""
    if direction == ESCALATE:
        return current if current >= maximum else min(maximum, current + by)
    return current if current <= minimum else max(minimum, current - by)


class Escalator:
    """Applies escalations through a `Scaler`; remembers what it already warned about."""

    def __init__(self, engine: Scaler) -> None:
        self.engine = engine
        self.warned: set[str] = set()

    async def apply(self, deployment: str, cluster: str, escalations: Sequence[Escalation | Reference],
                    direction: str) -> list[ScaleChange]:
        """Apply an SLA's escalations (a plain list: `to_one`) for cluster `cluster`; what changed."""
        return await self._one(deployment, cluster, Escalation("to_one", escalations=tuple(escalations)),
                               direction)

    async def _one(self, deployment: str, cluster: str, escalation: Escalation | Reference,
                   direction: str) -> list[ScaleChange]:
        if isinstance(escalation, Reference):
            self._warn(f"escalation {escalation.name!r} of {deployment}/{cluster} is an unresolved reference: "
                       "skipped")
            return []
        if escalation.type == "to_all":
            changes: list[ScaleChange] = []
            for inner in escalation.escalations:
                changes += await self._one(deployment, cluster, inner, direction)
            return changes
        if escalation.type == "to_one":
            order = escalation.escalations if direction == ESCALATE else tuple(reversed(escalation.escalations))
            for inner in order:
                changes = await self._one(deployment, cluster, inner, direction)
                if changes:
                    return changes
            return []
        if escalation.type in SCALED_FIELDS:
            return await self._scale(deployment, cluster, escalation, direction)
        self._warn(f"escalation type {escalation.type!r} of {deployment}/{cluster} is not one the platform "
                   f"applies ({', '.join([*SCALED_FIELDS, 'to_all', 'to_one'])}): skipped")
        return []

    async def _scale(self, deployment: str, cluster: str, escalation: Escalation,
                     direction: str) -> list[ScaleChange]:
        parameters = escalation.parameters
        target = parameters.get("target") or cluster
        dep = self.engine.running.get(deployment)
        found = dep.cluster(target) if dep is not None else None
        if found is None:
            self._warn(f"escalation of {deployment}/{cluster} targets cluster {target!r}, which the deployment "
                       "does not have: skipped")
            return []
        field = SCALED_FIELDS[escalation.type]
        changes = []
        for service in found.services:
            scale = service.scale
            if isinstance(scale, Reference):
                self._warn(f"the scale of {deployment}/{target}/{service.name} is an unresolved reference: skipped")
                continue
            current = getattr(scale, field)
            new = step(current, parameters["minimum"], parameters["maximum"], parameters["scale_by"], direction)
            if field == "cpu":
                new = round(new, CPU_DECIMALS)
            if new == current:
                continue
            after = (dataclasses.replace(scale, instances=int(new)) if field == "instances" else
                     dataclasses.replace(scale, memory=int(new)) if field == "memory" else
                     dataclasses.replace(scale, cpu=new))
            try:
                await self.engine.set_scale(deployment, target, service.name, after)
            except RequestError as exc:         # the service went away meanwhile
                log.warning("escalation of %s/%s could not scale %s: %s", deployment, cluster, service.name,
                            exc.message)
                continue
            changes.append(ScaleChange(target, service.name, escalation.type, scale, after))
        return changes

    def _warn(self, message: str) -> None:
        if message not in self.warned:
            self.warned.add(message)
            log.warning("%s", message)
