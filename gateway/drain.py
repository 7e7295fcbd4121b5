"""Draining (docs/gateway-config.md, "Draining"): what a change removes keeps serving, as a ghost, until it is idle.

The user's configuration (the *desired* one) is what they wrote. What the gateway serves (the *effective*
configuration) is the desired one plus ghosts: routes, targets and gateways that a change removed, put back
with `drain: true`, so they get no new non-sticky requests while their requests in flight finish and their
sticky clients are still served. A ghost disappears when it has nothing in flight and (for sticky gateways)
no client has reached it for `sticky_ttl`, or when its gateway's `drain_timeout` has passed since removal.

Routes and targets a user marks `drain: true` are tracked too, so the admin API can say since when they
drain and when their drain will be over; they stay in the configuration until the user removes them.

Everything here works on `gateway.model` values and wall-clock seconds; what is in flight is asked of the
runtime (or of every worker) through a `usage` function.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

from .model import Config, Gateway, Route, Target

Key = tuple[str, ...]      # (gateway,) | (gateway, route) | (gateway, route, target address)
Usage = Callable[[Key], "tuple[int, float]"]   # -> (requests in flight, seconds since last picked)


@dataclass(frozen=True, slots=True)
class Drain:
    key: Key
    started: float              # wall-clock time the drain began
    deadline: float             # wall-clock time it ends at the latest
    removed: bool               # a ghost (removed from the configuration) or marked `drain: true`
    snapshot: Gateway | Route | Target | None = None   # what a ghost looked like when it was removed


class Drainer:
    def __init__(self) -> None:
        self.drains: dict[Key, Drain] = {}

    # -- following configuration changes ---------------------------------------------------------------
    def plan(self, effective: Config, desired: Config, now: float) -> None:
        """`desired` replaces what `effective` served: turn what it removes into ghosts, forget ghosts it
        brings back, and note explicit `drain: true` marks."""
        taken_ports = {gw.port for gw in desired.gateways}
        for gw in effective.gateways:
            new_gw = desired.gateway(gw.name)
            if new_gw is None:
                if gw.port in taken_ports:
                    self._forget_under((gw.name,))     # its port now belongs to another gateway
                else:
                    self._ghost((gw.name,), gw, gw.drain_timeout, now)
                continue
            self._revive((gw.name,))
            new_routes = {route.name: route for route in new_gw.routes}
            for route in gw.routes:
                new_route = new_routes.get(route.name)
                if new_route is None:
                    self._ghost((gw.name, route.name), route, new_gw.drain_timeout, now)
                    continue
                self._revive((gw.name, route.name))
                addresses = {target.address for target in new_route.targets}
                for target in route.targets:
                    key = (gw.name, route.name, target.address)
                    if target.address in addresses:
                        self._revive(key)
                    else:
                        self._ghost(key, target, new_gw.drain_timeout, now)
        self._note_marks(desired, now)

    def _ghost(self, key: Key, snapshot: Gateway | Route | Target, timeout: float, now: float) -> None:
        current = self.drains.get(key)
        if current is not None and current.removed:
            return                                  # already draining: its deadline stands
        started = current.started if current is not None else now
        self.drains[key] = Drain(key, started, started + timeout, True, snapshot)

    def _revive(self, key: Key) -> None:
        drain = self.drains.get(key)
        if drain is not None and drain.removed:
            del self.drains[key]

    def _forget_under(self, prefix: Key) -> None:
        for key in [k for k in self.drains if k[:len(prefix)] == prefix]:
            del self.drains[key]

    def _note_marks(self, desired: Config, now: float) -> None:
        """Track `drain: true` marks of the desired configuration (start time, end of drain)."""
        marked: set[Key] = set()
        for gw in desired.gateways:
            for route in gw.routes:
                keys = [(gw.name, route.name)] if route.drain else []
                keys += [(gw.name, route.name, t.address) for t in route.targets if t.drain]
                for key in keys:
                    marked.add(key)
                    if key not in self.drains:
                        self.drains[key] = Drain(key, now, now + gw.drain_timeout, False)
        for key in [k for k, d in self.drains.items() if not d.removed and k not in marked]:
            del self.drains[key]

    # -- what is served ------------------------------------------------------------------------------------
    def effective(self, desired: Config) -> Config:
        """The desired configuration with the ghosts put back, draining."""
        ghosts = {key: d.snapshot for key, d in self.drains.items() if d.removed}
        if not ghosts:
            return desired
        gateways = []
        for gw in desired.gateways:
            routes = []
            for route in gw.routes:
                extra = tuple(_drained_target(t) for key, t in ghosts.items()   # type: ignore[arg-type]
                              if len(key) == 3 and key[:2] == (gw.name, route.name))
                routes.append(dataclasses.replace(route, targets=route.targets + extra) if extra else route)
            routes += [_drained_route(r) for key, r in ghosts.items()          # type: ignore[arg-type]
                       if len(key) == 2 and key[0] == gw.name]
            gateways.append(dataclasses.replace(gw, routes=tuple(routes)))
        for key, gw in ghosts.items():
            if len(key) == 1:
                gateways.append(dataclasses.replace(                           # type: ignore[arg-type]
                    gw, routes=tuple(_drained_route(r) for r in gw.routes)))  # type: ignore[union-attr]
        return dataclasses.replace(desired, gateways=tuple(gateways))

    # -- ending drains -----------------------------------------------------------------------------------
    def expire(self, effective: Config, usage: Usage, now: float) -> bool:
        """Drop the ghosts that are done; True when the effective configuration changed."""
        sticky = {gw.name: (gw.sticky != "none", gw.sticky_ttl) for gw in effective.gateways}
        done = []
        for key, drain in self.drains.items():
            if not drain.removed:
                continue
            if now >= drain.deadline:
                done.append(key)
                continue
            in_flight, idle_for = usage(key)
            is_sticky, ttl = sticky.get(key[0], (False, 0.0))
            if in_flight == 0 and (not is_sticky or idle_for >= ttl):
                done.append(key)
        for key in done:
            self._forget_under(key)
        return bool(done)

    def next_deadline(self) -> float | None:
        return min((d.deadline for d in self.drains.values() if d.removed), default=None)

    def ghosts_of(self, gateway: str) -> list[Drain]:
        return [d for key, d in self.drains.items() if key[0] == gateway and d.removed]

    def find(self, key: Key) -> Drain | None:
        """The drain of this key or of what contains it (a route of a ghost gateway drains with it)."""
        for length in range(len(key), 0, -1):
            drain = self.drains.get(key[:length])
            if drain is not None:
                return drain
        return None


def _drained_target(target: Target) -> Target:
    return target if target.drain else dataclasses.replace(target, drain=True)


def _drained_route(route: Route) -> Route:
    return dataclasses.replace(route, weight=0, drain=True)
