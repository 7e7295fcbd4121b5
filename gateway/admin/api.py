"""The admin HTTP API (aiohttp): live configuration of the gateways, health, readiness and metrics. The
gateways' handlers are gateway.admin.gateways', over the `ConfigManager` as their source — or, in a fleet
(`vamp gateway --config-store`), over `FleetGateways` (gateway.store.fleet), which also says how the
configuration store is (`config_store` in /api/v1/status and /ready, two gauges in /metrics).

    GET    /api/v1/gateways                  every gateway (configured, and removed ones still draining)
    POST   /api/v1/gateways                  create (body with `name`)             201 · 409 when it exists
    GET    /api/v1/gateways/{name}           one gateway, with a read-only `status`       200 · 404
    PUT    /api/v1/gateways/{name}           create or replace                     201 · 200
    PATCH  /api/v1/gateways/{name}           JSON merge patch (RFC 7396)           200 · 404
    DELETE /api/v1/gateways/{name}           drain, then remove                    202 · 404
    GET    /api/v1/status                    readiness, gateways served, the configuration store (or null)
    GET    /api/v1/openapi.json              this API as an OpenAPI 3 document
    GET    /metrics · /health · /ready
    GET    /ui/                              the web UI, its gateways only (gateway.ui, docs/ui.md)

Names may contain `/`. JSON by default, YAML both ways (`Accept` / `Content-Type: application/x-yaml`).
`?validate_only=true` checks a write and changes nothing. When a token is set, every request but `/health`
and `/ready` needs `Authorization: Bearer <token>` (`/metrics` too, unless `--public-metrics`), and the API
refuses to start on a non-loopback address without one. Errors are
`{"error": "...", "field": "/json/pointer" | null}`; an invalid write changes nothing.
"""
from __future__ import annotations

import ipaddress
from typing import Any, Protocol

from aiohttp import web

from gateway.admin.gateways import GatewayApi
from gateway.admin.openapi import OPENAPI
from gateway.common.httpapi import api_middleware
from gateway.config.source import ConfigSource
from gateway.runtime.manager import ConfigManager
from gateway.runtime.metrics import render
from gateway.ui import add_routes as add_ui_routes

CONTROLLER = web.AppKey("controller", ConfigManager)
READY = web.AppKey("ready", list)


class AdminBindingError(ValueError):
    pass


class StoreStatus(Protocol):
    """A configuration store as a gateway sees it (gateway.store.fleet.FleetGateways.status)."""

    def status(self) -> dict[str, Any]:
        ...


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


def check_admin_binding(host: str, token: str | None, what: str = "the admin API") -> None:
    if not token and not is_loopback(host):
        raise AdminBindingError(f"refusing to serve {what} on non-loopback address {host} without a token: set "
                                "--token, --token-file or VAMP_TOKEN")


# -- the application -----------------------------------------------------------------------------------
def build_app(controller: ConfigManager, token: str | None = None, *, public_metrics: bool = False,
              source: ConfigSource | None = None, store: StoreStatus | None = None) -> web.Application:
    """The admin API over `controller`; its gateway handlers over `source` (default: the controller), and the
    status of `store` (a fleet's configuration store) when there is one."""
    app = web.Application(middlewares=[api_middleware(token, public_metrics=public_metrics)])
    app[CONTROLLER] = controller
    app[READY] = [False]

    async def openapi(_: web.Request) -> web.Response:
        return web.json_response(OPENAPI)

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def ready(_: web.Request) -> web.Response:
        store_fields = {"config_store": store.status()} if store is not None else {}
        if app[READY][0]:
            return web.json_response({"status": "ready", "gateways": controller.names(), **store_fields})
        return web.json_response({"status": "starting", **store_fields}, status=503)

    async def status(_: web.Request) -> web.Response:
        return web.json_response({"ready": app[READY][0], "gateways": len(controller.names()),
                                  "workers": len(controller.workers),
                                  "config_store": store.status() if store is not None else None})

    async def metrics(_: web.Request) -> web.Response:
        body = render(await controller.snapshot(), controller.effective,
                      store.status() if store is not None else None)
        return web.Response(body=body, content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})

    GatewayApi(source if source is not None else controller).add_routes(app.router)
    app.router.add_get("/api/v1/status", status)
    app.router.add_get("/api/v1/openapi.json", openapi)
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics)
    add_ui_routes(app.router, "gateway")           # the web UI, its gateways only (docs/ui.md)
    return app
