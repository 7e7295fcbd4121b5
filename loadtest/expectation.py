"""`--from-gateway NAME`: the split a running gateway should give this traffic, per route and per group.

`gateway_route_shares` is what the command calls before the run: it reads the gateway (`fetch_gateway`), works
out each route's share, and refuses, before any request is sent, a split that no run could judge: no gateway of
that name, no route that serves this traffic, routes that lead on to other gateways (Vamp's external gateway
`sava/9050` routes to the internal gateway `sava/sava/webport`, whose routes decide the split), or `--by status`
when no route's name holds a status code. `route_shares` applies the gateway's own
routing semantics (gateway/routing/table.py) to the traffic's profiles: the gateway's config parser, its condition
compiler, and a `RequestView` of the very request the load tester sends, with the client address taken from
its X-Forwarded-For as if the gateway trusted the tester. `groups_for_routes` turns route names into the
group labels the responses carry.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from gateway import (FULL, AdminClient, ClientLookups, ConfigError, Gateway, RequestView, Route, TrustedProxies,
                     compile_condition, gateway_from_dict)
from gateway.common.cli import CommandError

from .plan import UNLABELLED, Plan
from .traffic import Traffic

TESTER_ADDRESS = "127.0.0.1"                     # the peer the gateway sees: the load tester on loopback
TRUSTED_TESTER = ("127.0.0.0/8", "::1/128")      # so the tester's X-Forwarded-For names the client
_NAME_PARTS = re.compile(r"[/:]")
_STATUS_CODE = re.compile(r"[1-5][0-9][0-9]")


class ExpectationError(Exception):
    """The expected split cannot be worked out from the gateway (bad input: the command exits 2)."""


class GatewayUnreachable(ExpectationError):
    """The admin API cannot be reached, or failed (the command exits 1)."""
READ_ONLY_FIELDS = ("status", "generated")   # what the gateway's and the platform's APIs add to a gateway


def fetch_gateway(admin_url: str, name: str, token: str | None, timeout: float = 5.0) -> dict:
    """GET {admin}/api/v1/gateways/{name} as JSON (names may contain '/'), with the bearer token if given."""
    try:
        return AdminClient(admin_url, token, timeout).get_gateway(name)
    except CommandError as exc:
        failure = GatewayUnreachable if exc.exit_code == 1 else ExpectationError
        raise failure(f"--from-gateway {name}: {exc}") from None


def gateway_route_shares(plan: Plan, traffic: Traffic, timeout: float = 5.0) -> dict[str, float]:
    """The expected share per route of gateway `plan.from_gateway` for this traffic, read from the API at
    `plan.admin`; ExpectationError when no run could judge that split, GatewayUnreachable when the API fails."""
    name = plan.from_gateway or ""
    document = fetch_gateway(plan.admin or "", name, plan.admin_token, timeout)
    shares = route_shares(document, name, traffic)
    serving = [route for route in _gateway(document, name).routes if shares[route.name] > 0]
    if not serving:
        raise ExpectationError(
            f"--from-gateway {name}: the gateway has no routes" if not shares else
            f"--from-gateway {name}: none of its routes ({', '.join(shares)}) would serve this traffic (no target "
            "that takes traffic, or no weight and no condition that matches)")
    onward = [route.name for route in serving if _leads_to_gateway(route, plan, timeout)]
    if onward:
        raise ExpectationError(
            f"--from-gateway {name}: its route{'s' if len(onward) > 1 else ''} {', '.join(onward)} lead"
            f"{'' if len(onward) > 1 else 's'} on to the gateway{'s' if len(onward) > 1 else ''} of that name, "
            f"whose routes decide the split: use --from-gateway {onward[0]}")
    if plan.by.kind == "status" and not any(_STATUS_CODE.fullmatch(part) for route in serving
                                            for part in _NAME_PARTS.split(route.name)):
        raise ExpectationError(
            f"--from-gateway {name}: --by status groups the answers by status code, and no route name "
            f"({', '.join(route.name for route in serving)}) holds one: group by what tells the versions apart "
            "(e.g. --by header:X-Version), or give the split with --expect")
    return shares


def _leads_to_gateway(route: Route, plan: Plan, timeout: float) -> bool:
    """Whether the route is named after a gateway and sends its traffic to that gateway's port."""
    try:
        document = fetch_gateway(plan.admin or "", route.name, plan.admin_token, timeout)
        port = _gateway(document, route.name).port
    except GatewayUnreachable:
        raise
    except ExpectationError:            # no gateway of that name
        return False
    return any(target.port == port for target in route.targets)


def _gateway(document: dict, name: str) -> Gateway:
    gateway_fields = {key: value for key, value in document.items() if key not in READ_ONLY_FIELDS}
    try:
        return gateway_from_dict(name, gateway_fields)
    except ConfigError as exc:
        raise ExpectationError(f"--from-gateway {name}: {exc}") from None


def route_shares(document: dict, name: str, traffic: Traffic) -> dict[str, float]:
    """Expected share of requests per route name (every route of the gateway) for this traffic.

    Per profile, the first non-draining route whose condition matches owns the request and takes
    `condition_strength` of it (when it has a target to serve it); the rest is split by weight across the
    non-draining routes that have a target to serve. Requests nothing can serve (the gateway answers 503)
    count for no route, so the shares then add up to less than 1."""
    gateway = _gateway(document, name)
    lookups = ClientLookups(trusted_proxies=TrustedProxies(TRUSTED_TESTER))
    conditional = [(route, compile_condition(route.condition).matches) for route in gateway.routes
                   if route.condition is not None and not route.drain]
    weighted = [route for route in gateway.routes if route.weight > 0 and not route.drain and _serves(route)]
    weighted_total = sum(route.weight for route in weighted)
    shares = {route.name: 0.0 for route in gateway.routes}
    for identity, share in traffic.profiles():
        request = _request_view(traffic.render(identity), lookups)
        owner = next((route for route, matches in conditional if matches(request)), None)
        if owner is not None and _serves(owner):
            taken = share * owner.condition_strength / FULL
            shares[owner.name] += taken
            share -= taken
        for route in weighted:
            shares[route.name] += share * route.weight / weighted_total
    return shares


def groups_for_routes(route_shares: dict[str, float], observed: Iterable[str]) -> dict[str, float]:
    """Expected share per group label. A route maps to the observed label equal to its name; else to the one
    observed label equal to a part of its name split at '/' and ':' (Vamp's route `sava/sava/sava:1.1.0/web`
    -> label `1.1.0`); else to its own name (a group that was expected and never seen; left out when the
    route was expected to take nothing). Routes mapping to one label add up. ExpectationError when a route's
    name parts match several observed labels, or when labels were seen and no route maps to any of them."""
    labels = set(observed) - set(UNLABELLED)
    expected: dict[str, float] = {}
    for route, share in route_shares.items():
        label = _label_of(route, labels)
        if label in labels or share > 0:
            expected[label] = expected.get(label, 0.0) + share
    if labels and not labels & expected.keys():
        raise ExpectationError(
            f"--from-gateway: no route of the gateway ({', '.join(sorted(route_shares))}) names a group that "
            f"was seen ({', '.join(sorted(labels))}): group by a value the route names contain, or give the "
            "split with --expect")
    return expected


def _label_of(route: str, labels: set[str]) -> str:
    if route in labels:
        return route
    matching = sorted(set(_NAME_PARTS.split(route)) & labels)
    if len(matching) > 1:
        raise ExpectationError(f"--from-gateway: route {route!r} could be any of the groups "
                               f"{', '.join(matching)}; give the split with --expect instead")
    return matching[0] if matching else route


def _serves(route: Route) -> bool:
    """Whether a route has a target that takes traffic (weight above 0, not draining)."""
    return any(target.weight > 0 and not target.drain for target in route.targets)


def _request_view(request: bytes, lookups: ClientLookups) -> RequestView:
    """What the gateway's conditions see of a request the load tester sends (rendered by Traffic)."""
    head = request.split(b"\r\n\r\n", 1)[0]
    request_line, *header_lines = head.split(b"\r\n")
    method, target, _ = request_line.split(b" ", 2)
    headers = []
    for line in header_lines:
        name, _, value = line.partition(b":")
        headers.append((name.strip(), value.strip()))
    host = next((value for name, value in headers if name.lower() == b"host"), b"")
    return RequestView(method, target, headers, _host_name(host.decode("latin-1")), TESTER_ADDRESS, lookups)


def _host_name(host: str) -> str:
    """The Host header as the gateway compares it: lower case, without port or IPv6 brackets."""
    try:
        return urlsplit("//" + host).hostname or ""
    except ValueError:
        return host.lower()
