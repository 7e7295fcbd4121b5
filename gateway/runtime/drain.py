"""Draining (docs/gateway-config.md, "Draining"): what a change removes or marks `drain: true` keeps serving its
requests in flight and its sticky clients until it is idle or its deadline passes; then its drain is over.

The user's configuration (the *desired* one) is what they wrote. What the gateway serves (the *effective*
configuration) is the desired one plus ghosts: routes, targets and gateways that a change removed, put back
with `drain: true`, so they get no new non-sticky requests while their requests in flight finish and their
sticky clients are still served.

Both ways of draining share one `Drain` and one ending: a drain is over when what drains has nothing in flight
and (for sticky gateways) no client has reached it for `sticky_ttl`, or when its gateway's `drain_timeout` has
passed since the drain began. Then a ghost disappears; a route or target the user marked `drain: true` stays
in the configuration, served as `drained`: no request reaches it any more, not even a sticky client's (that
client is routed afresh and given a new cookie), until the user removes it or sets `drain: false`.

Everything here works on `gateway.config.model` values and wall-clock seconds; what is in flight is asked of the
runtime (or of every worker) through a `usage` function.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from collections.abc import Callable

from gateway.config.model import Config, Gateway, Route, Target

Key = tuple[str, ...]      # (gateway,) | (gateway, route) | (gateway, route, target address)
Usage = Callable[[Key], "tuple[int, float]"]   # -> (requests in flight, seconds since last picked)


@dataclass(frozen=True, slots=True)
class Drain:
    key: Key
    started: float              # wall-clock time the drain began
    deadline: float             # wall-clock time it ends at the latest
    removed: bool               # a ghost (removed from the configuration) or marked `drain: true`
    snapshot: Gateway | Route | Target | None = None   # what a ghost looked like when it was removed
    ended: float | None = None  # wall-clock time a marked drain ended (it is `drained` since)

    @property
    def over(self) -> bool:
        return self.ended is not None


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
        if current is not None and current.over:
            self._forget_under(key)                 # drained already: nothing left to drain
            return
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
                keys: list[Key] = [(gw.name, route.name)] if route.drain else []
                keys += [(gw.name, route.name, t.address) for t in route.targets if t.drain]
                for key in keys:
                    marked.add(key)
                    if key not in self.drains:
                        self.drains[key] = Drain(key, now, now + gw.drain_timeout, False)
        for key in [k for k, d in self.drains.items() if not d.removed and k not in marked]:
            del self.drains[key]

    # -- what is served ------------------------------------------------------------------------------------
    def effective(self, desired: Config) -> Config:
        """The desired configuration with the ghosts put back, draining, and the marks whose drain is over
        served as drained."""
        # the ghosts, by what they are (the length of their key tells the same), in the order they were removed
        ghost_gateways = [d.snapshot for d in self.drains.values() if d.removed and isinstance(d.snapshot, Gateway)]
        ghost_routes = {key: d.snapshot for key, d in self.drains.items()
                        if d.removed and isinstance(d.snapshot, Route)}
        ghost_targets = {key: d.snapshot for key, d in self.drains.items()
                         if d.removed and isinstance(d.snapshot, Target)}
        drained = {key for key, d in self.drains.items() if d.over}
        if not ghost_gateways and not ghost_routes and not ghost_targets and not drained:
            return desired
        gateways = []
        for gw in desired.gateways:
            routes = []
            for route in gw.routes:
                extra = tuple(_draining_target(t) for key, t in ghost_targets.items()
                              if key[:2] == (gw.name, route.name))
                if extra:
                    route = dataclasses.replace(route, targets=route.targets + extra)
                routes.append(_with_drained(route, gw.name, drained) if drained else route)
            routes += [_draining_route(r) for key, r in ghost_routes.items() if key[0] == gw.name]
            gateways.append(dataclasses.replace(gw, routes=tuple(routes)))
        for ghost in ghost_gateways:
            gateways.append(dataclasses.replace(ghost, routes=tuple(_draining_route(r) for r in ghost.routes)))
        return dataclasses.replace(desired, gateways=tuple(gateways))

    # -- ending drains -----------------------------------------------------------------------------------
    def expire(self, effective: Config, usage: Usage, now: float) -> bool:
        """End the drains that are over (idle, or past their deadline): ghosts disappear, marked routes and
        targets become drained. True when the effective configuration changed."""
        sticky = {gw.name: (gw.sticky != "none", gw.sticky_ttl) for gw in effective.gateways}
        done = []
        for key, drain in self.drains.items():
            if drain.over:
                continue
            if now >= drain.deadline:
                done.append(key)
                continue
            in_flight, idle_for = usage(key)
            is_sticky, ttl = sticky.get(key[0], (False, 0.0))
            if in_flight == 0 and (not is_sticky or idle_for >= ttl):
                done.append(key)
        for key in done:
            ending = self.drains.get(key)
            if ending is None:
                continue                            # went with a ghost that contained it
            if ending.removed:
                self._forget_under(key)
            else:
                self.drains[key] = dataclasses.replace(ending, ended=now)
        return bool(done)

    def next_deadline(self) -> float | None:
        """The earliest deadline of a drain still going on; None when nothing drains."""
        return min((d.deadline for d in self.drains.values() if not d.over), default=None)

    def containing(self, key: Key) -> list[Drain]:
        """The drains of this key and of what contains it (a route of a ghost gateway drains with it)."""
        return [drain for length in range(len(key), 0, -1)
                if (drain := self.drains.get(key[:length])) is not None]


def _draining_target(target: Target) -> Target:
    return target if target.drain else dataclasses.replace(target, drain=True)


def _draining_route(route: Route) -> Route:
    return dataclasses.replace(route, weight=0, drain=True)


def _with_drained(route: Route, gateway: str, drained: set[Key]) -> Route:
    """`route` with `drained` set on itself and on its targets whose marked drain is over."""
    if (gateway, route.name) in drained:
        return dataclasses.replace(route, drained=True, targets=tuple(
            dataclasses.replace(t, drained=True) for t in route.targets))
    if not any((gateway, route.name, t.address) in drained for t in route.targets):
        return route
    return dataclasses.replace(route, targets=tuple(
        dataclasses.replace(t, drained=True) if (gateway, route.name, t.address) in drained else t
        for t in route.targets))
