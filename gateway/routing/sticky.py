"""Sticky sessions: a sticky gateway's cookie, its Set-Cookie values and the lookup of a cookie back to what it
names (docs/gateway-config.md, "Routing", rule 3; gateway.routing.table applies it).

The cookie `vamp_<id of the gateway name>` names a route (`sticky: route`, value `<route id>`) or a route and
target (`sticky: instance`, `<route id>.<target id>`). An id is the first 8 hex digits of sha1 of the name or
address, so cookies survive restarts and rebuilds. Everything here is computed when a table is built; per
request the proxy does one dictionary lookup of the cookie's value.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import TYPE_CHECKING

from gateway.config import model

if TYPE_CHECKING:
    from gateway.routing.table import RouteState, TargetState


def short_id(text: str) -> str:
    """The 8-hex-digit id used in cookies: stable for a given name or address."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]


class StickyCookie:
    """The cookie of one sticky gateway: its name, and its Set-Cookie value for a route or route and target."""

    __slots__ = ("name", "names_target", "_attributes")

    def __init__(self, gateway: model.Gateway) -> None:
        self.name = "vamp_" + short_id(gateway.name)
        self.names_target = gateway.sticky == "instance"
        cookie = gateway.sticky_cookie
        self._attributes = (f"; Path=/; Max-Age={max(1, round(gateway.sticky_ttl))}; HttpOnly"
                            f"{'; Secure' if cookie.secure else ''}; SameSite={cookie.same_site.capitalize()}")

    @staticmethod
    def value(route_id: str, target_id: str | None = None) -> str:
        """The cookie's value naming a route (route mode) or a route and target (instance mode)."""
        return route_id if target_id is None else f"{route_id}.{target_id}"

    def set_cookie(self, value: str) -> str:
        """The Set-Cookie header value giving the client this cookie value (sliding `sticky_ttl`)."""
        return f"{self.name}={value}{self._attributes}"


class StickyLookup:
    """A cookie value → the route (route mode) or (route, target) (instance mode) it names.

    Only what a sticky client may still reach is listed: a drained route or target (its drain is over) is
    left out, so a cookie naming it counts as no cookie. The first of two routes with the same id wins.
    """

    __slots__ = ("routes", "targets")

    def __init__(self, cookie: StickyCookie, routes: Iterable[RouteState]) -> None:
        self.routes: dict[str, RouteState] = {}
        self.targets: dict[str, tuple[RouteState, TargetState]] = {}
        for route in routes:
            if route.route.drained:
                continue
            if not cookie.names_target:
                self.routes.setdefault(cookie.value(route.cookie_id), route)
                continue
            for target in route.targets:
                if not target.target.drained:
                    self.targets.setdefault(cookie.value(route.cookie_id, target.cookie_id), (route, target))
