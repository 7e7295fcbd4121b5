"""The routes of a gateway document (as `WorkflowContext.gateway` gives it) that built-in workflows act on: finding
a route by the name a user wrote, and the weights the gateway actually applies (docs/gateway-config.md, "Weights":
routes without a weight share what the weighted ones leave)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.common.units import parse_percent


def routes_of(document: Mapping[str, Any]) -> Mapping[str, Mapping[str, Any]]:
    routes = document.get("routes") or {}
    return routes if isinstance(routes, Mapping) else {}


def find_route(document: Mapping[str, Any], gateway: str, name: str) -> str | None:
    """The route `name` of the gateway: its full name as the gateway has it (`sava/sava/sava:1.1.0/webport`), or
    for a cluster's internal gateway `DEPLOYMENT/CLUSTER/PORT` the service alone (`sava:1.1.0`)."""
    routes = routes_of(document)
    if name in routes:
        return name
    parts = gateway.split("/")
    if len(parts) == 3 and "/" not in name:
        full = f"{parts[0]}/{parts[1]}/{name}/{parts[2]}"
        if full in routes:
            return full
    return None


def weights_of(document: Mapping[str, Any]) -> dict[str, int]:
    """Each route's weight in basis points (10000 = 100%), unweighted routes given their share of the rest."""
    routes = routes_of(document)
    weights: dict[str, int] = {}
    unweighted: list[str] = []
    for name, route in routes.items():
        weight = route.get("weight") if isinstance(route, Mapping) else None
        if weight is None:
            unweighted.append(name)
        else:
            weights[name] = parse_percent(weight)
    if unweighted:
        rest = max(0, 10_000 - sum(weights.values()))
        share, leftover = divmod(rest, len(unweighted))
        for index, name in enumerate(unweighted):
            weights[name] = share + (1 if index < leftover else 0)
    return {name: weights[name] for name in routes}


def condition_of(document: Mapping[str, Any], route: str) -> str | None:
    spec = routes_of(document).get(route)
    return spec.get("condition") if isinstance(spec, Mapping) else None



def strength_of(document: Mapping[str, Any], route: str) -> int | None:
    """The condition strength of a conditional route in basis points (100% when unset); None without a condition."""
    spec = routes_of(document).get(route)
    if not isinstance(spec, Mapping) or not spec.get("condition"):
        return None
    return parse_percent(spec.get("condition_strength") or "100%")
