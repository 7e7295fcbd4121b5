"""The admin HTTP API (aiohttp): health, readiness and Prometheus metrics of the running gateway.

The API refuses to start on a non-loopback address without a token (`check_admin_binding`), since the live
configuration endpoints it will carry must never be open to the network unauthenticated.
"""
from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .metrics import registry_for

if TYPE_CHECKING:
    from .server import Runtime

RUNTIME = web.AppKey("runtime", object)


class AdminBindingError(ValueError):
    pass


def parse_admin_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise AdminBindingError(f"--admin expects HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_admin_binding(host: str, token: str | None) -> None:
    if not token and not is_loopback(host):
        raise AdminBindingError(f"refusing to serve the admin API on non-loopback address {host} without a "
                                "token: set --admin-token or VAMP_ADMIN_TOKEN")


def build_app(runtime: "Runtime", token: str | None = None) -> web.Application:
    app = web.Application()
    app[RUNTIME] = runtime
    registry = registry_for(runtime)

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def ready(_: web.Request) -> web.Response:
        if runtime.ready:
            return web.json_response({"status": "ready", "gateways": sorted(runtime.table.gateways)})
        return web.json_response({"status": "starting"}, status=503)

    async def metrics(_: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(registry))
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        response.charset = "utf-8"
        return response

    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics)
    return app
