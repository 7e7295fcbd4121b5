"""A gateway written to `/api/v1/gateways` in VAMP's forms, as the gateway's own configuration
(docs/gateway-config.md) plus what VAMP writes that the gateway has no field for (`vamp_gateway`).

VAMP's forms read here: one virtual host as text; routes as one path or a list of paths (`routes: [sava/web]`);
a route's condition as
`{condition: TEXT}` (empty: none) or `{reference: NAME}` / `{ref: NAME}` of a stored condition (resolved now
through `lookup`); and, read, checked and kept, but not applied by the gateway: a gateway's `selector`,
`service` ({host, port}) and `metadata`, and a route's `balance`, `rewrites` and `selector`
(control.dsl.reader checks them; `KEPT` names them). `with_kept` puts the kept fields back into a gateway's
document, so they are stored and shown with it; `without_kept` takes them out again for the gateway.
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from control.dsl.errors import DslError
from control.dsl.model import Condition, Reference
from control.dsl.reader import KEPT_ROUTE_FIELDS, check_kept_gateway_fields

KEPT = ("selector", "service", "metadata")          # a gateway's; a route's are KEPT_ROUTE_FIELDS

Lookup = Callable[[Reference], Any]


def vamp_gateway(name: str, body: dict[str, Any], lookup: Lookup) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the body as the gateway's configuration, the kept fields: {selector, service, metadata, routes: {route:
    {balance, rewrites, selector}}}); DslError (document "gateway NAME") for what VAMP's forms do not allow."""
    document = f"gateway {name!r}"
    try:
        check_kept_gateway_fields(body)
        config = {key: value for key, value in body.items() if key not in KEPT}
        kept: dict[str, Any] = {key: copy.deepcopy(body[key]) for key in KEPT if body.get(key) is not None}
        if isinstance(body.get("virtual_hosts"), str):       # VAMP: one host as text
            config["virtual_hosts"] = [body["virtual_hosts"]]
        routes = body.get("routes")
        if isinstance(routes, str):
            routes = {routes: None}
        elif isinstance(routes, list) and all(isinstance(item, str) for item in routes):
            routes = dict.fromkeys(routes)
        if isinstance(routes, dict):
            config["routes"], kept_routes = _routes(routes, lookup)
            if kept_routes:
                kept["routes"] = kept_routes
        return config, kept
    except DslError as error:
        error.document = document
        raise


def _routes(routes: dict[str, Any], lookup: Lookup) -> tuple[dict[str, Any], dict[str, Any]]:
    config: dict[str, Any] = {}
    kept: dict[str, Any] = {}
    for route_name, route in routes.items():
        if not isinstance(route, dict):
            config[route_name] = {} if route is None else route
            continue
        config[route_name] = {key: value for key, value in route.items() if key not in KEPT_ROUTE_FIELDS}
        own = {key: copy.deepcopy(route[key]) for key in KEPT_ROUTE_FIELDS if route.get(key) is not None}
        if own:
            kept[route_name] = own
        condition = route.get("condition")
        if isinstance(condition, dict):
            config[route_name]["condition"] = _condition(condition, lookup, ("routes", route_name, "condition"))
    return config, kept


def _condition(body: dict[str, Any], lookup: Lookup, at: tuple[str, ...]) -> str | None:
    keys = [key for key in ("ref", "reference") if key in body]
    if keys:
        if len(body) != 1 or not isinstance(body[keys[0]], str):
            raise DslError("expected {reference: NAME} of a stored condition", at)
        found = lookup(Reference("condition", body[keys[0]]))
        if not isinstance(found, Condition):
            raise DslError(f"no condition named {body[keys[0]]!r} is stored", at + (keys[0],))
        return found.condition
    if set(body) != {"condition"}:
        raise DslError("expected a condition: its text, {condition: TEXT} or {reference: NAME}", at)
    text = body["condition"]
    return text if isinstance(text, str) and text.strip() else None


def with_kept(document: dict[str, Any], kept: dict[str, Any]) -> dict[str, Any]:
    """A gateway's document (name, port, routes …) with the kept VAMP fields back in it."""
    merged = {**document, **{key: value for key, value in kept.items() if key != "routes"}}
    routes = merged.get("routes")
    if isinstance(routes, dict) and kept.get("routes"):
        merged["routes"] = {route: {**body, **kept["routes"].get(route, {})} if isinstance(body, dict) else body
                            for route, body in routes.items()}
    return merged


def without_kept(document: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the document without the kept VAMP fields, those fields): the inverse of `with_kept`."""
    plain = {key: value for key, value in document.items() if key not in KEPT}
    kept: dict[str, Any] = {key: document[key] for key in KEPT if key in document}
    routes = document.get("routes")
    if isinstance(routes, dict):
        plain["routes"] = {}
        for route, body in routes.items():
            if isinstance(body, dict):
                plain["routes"][route] = {k: v for k, v in body.items() if k not in KEPT_ROUTE_FIELDS}
                own = {k: v for k, v in body.items() if k in KEPT_ROUTE_FIELDS}
                if own:
                    kept.setdefault("routes", {})[route] = own
            else:
                plain["routes"][route] = body
    return plain, kept
