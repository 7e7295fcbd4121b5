"""A write to one gateway, read and checked in one place for every source of configuration (the gateway's
ConfigManager, the platform's Engine): the body of a PUT as a gateway, a JSON merge patch (RFC 7396) applied
to a gateway, and the configuration with one gateway replaced or removed, validated whole."""
from __future__ import annotations

from typing import Any

from gateway.config.load import ConfigError, from_dict, gateway_from_dict, gateway_to_dict, to_dict
from gateway.config.model import Config, Gateway

SHOWN_ONLY = ("name", "status")     # what a gateway's document shows besides its fields: a write may send it back


def gateway_fields(name: str, body: dict[str, Any]) -> dict[str, Any]:
    """A written gateway's fields: without what its document only shows; a `name` must be the path's."""
    if body.get("name") not in (None, name):
        raise ConfigError(f"the name in the body ({body['name']!r}) differs from the name in the path "
                          f"({name!r})", ("gateways", name, "name"))
    return {key: value for key, value in body.items() if key not in SHOWN_ONLY}


def read_gateway(name: str, body: dict[str, Any]) -> Gateway:
    """A written gateway, validated on its own."""
    return gateway_from_dict(name, gateway_fields(name, body))


def patched(current: Gateway, patch: dict[str, Any]) -> dict[str, Any]:
    """The body of gateway `current` with a merge patch applied, to be written as a PUT's."""
    body = patch_gateway_body(current, patch)
    if not isinstance(body, dict):
        raise ConfigError("the patched gateway must be an object")
    return body


def with_gateway(config: Config, name: str, body: dict[str, Any] | None) -> Config:
    """`config` with gateway `name`'s fields replaced by `body` (None: removed), validated whole."""
    document = to_dict(config)
    if body is None:
        document["gateways"].pop(name, None)
    else:
        document["gateways"][name] = gateway_fields(name, body)
    return from_dict(document)


def patch_gateway_body(current: Gateway, patch: dict[str, Any]) -> Any:
    """The gateway's documented fields with a merge patch applied. Removing a route's condition (`condition:
    null`) removes its strength too, unless the same patch sets one (which is then an error, as always)."""
    body = merge_patch(gateway_to_dict(current), patch)
    routes_patch = patch.get("routes")
    if isinstance(body, dict) and isinstance(body.get("routes"), dict) and isinstance(routes_patch, dict):
        for name, route_patch in routes_patch.items():
            route = body["routes"].get(name)
            if (isinstance(route_patch, dict) and "condition" in route_patch and route_patch["condition"] is None
                    and "condition_strength" not in route_patch and isinstance(route, dict)):
                route.pop("condition_strength", None)
    return body


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result
