"""Builders for gateway configuration dicts (docs/gateway-config.md), always bound to 127.0.0.1."""
from __future__ import annotations

from .processes import LOOPBACK


def route(*targets: str, weight: str | None = None, condition: str | None = None,
          strength: str | None = None, **fields) -> dict:
    """One route: `route(backend.address(), weight="90%")`."""
    spec: dict = {}
    if weight is not None:
        spec["weight"] = weight
    spec["targets"] = list(targets)
    if condition is not None:
        spec["condition"] = condition
    if strength is not None:
        spec["condition_strength"] = strength
    spec.update(fields)
    return spec


def gateway(port: int, routes: dict, **fields) -> dict:
    """One HTTP gateway listening on 127.0.0.1:port."""
    return {"port": port, "bind": LOOPBACK, **fields, "routes": routes}


def config(gateways: dict, geo: dict | None = None) -> dict:
    """The whole document: `config({"demo": gateway(port, {...})})`."""
    document: dict = {"gateways": gateways}
    if geo is not None:
        document["geo"] = geo
    return document


def shop_config(port: int, echo, stable: str = "100%", canary: str = "0%") -> dict:
    """Gateway `shop` on `port`: route `stable` to echo backend v1, `canary` to v2 (all to stable by default).
    `echo` is a BackendProcess serving the names v1 and v2."""
    return config({"shop": gateway(port, {
        "stable": route(echo.address("v1"), weight=stable),
        "canary": route(echo.address("v2"), weight=canary),
    })})
