"""The admin HTTP API (aiohttp): live configuration of the gateways, health, readiness and metrics.

    GET    /api/v1/gateways                  every gateway (configured, and removed ones still draining)
    POST   /api/v1/gateways                  create (body with `name`)             201 · 409 when it exists
    GET    /api/v1/gateways/{name}           one gateway, with a read-only `status`       200 · 404
    PUT    /api/v1/gateways/{name}           create or replace                     201 · 200
    PATCH  /api/v1/gateways/{name}           JSON merge patch (RFC 7396)           200 · 404
    DELETE /api/v1/gateways/{name}           drain, then remove                    202 · 404
    GET    /api/v1/openapi.json              this API as an OpenAPI 3 document
    GET    /metrics · /health · /ready

Names may contain `/`. JSON by default, YAML both ways (`Accept` / `Content-Type: application/x-yaml`).
`?validate_only=true` checks a write and changes nothing. When a token is set, every request but `/health`
and `/ready` needs `Authorization: Bearer <token>` (`/metrics` too, unless `--public-metrics`), and the API
refuses to start on a non-loopback address without one. Errors are
`{"error": "...", "field": "/json/pointer" | null}`; an invalid write changes nothing.
"""
from __future__ import annotations

import ipaddress
from typing import Awaitable, Callable

from aiohttp import web

from gateway.admin.openapi import OPENAPI
from gateway.common.httpapi import ApiError, api_middleware, read_body, respond, validate_only_requested
from gateway.config.load import ConfigError, gateway_to_dict
from gateway.config.model import Gateway
from gateway.runtime.manager import ConfigManager, Conflict, NotFound
from gateway.runtime.metrics import render

CONTROLLER = web.AppKey("controller", ConfigManager)
READY = web.AppKey("ready", list)


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


def check_admin_binding(host: str, token: str | None, what: str = "the admin API") -> None:
    if not token and not is_loopback(host):
        raise AdminBindingError(f"refusing to serve {what} on non-loopback address {host} without a token: set "
                                "--token, --token-file or VAMP_TOKEN")


# -- the application -----------------------------------------------------------------------------------
def build_app(controller: ConfigManager, token: str | None = None, *, public_metrics: bool = False
              ) -> web.Application:
    app = web.Application(middlewares=[api_middleware(token, public_metrics=public_metrics)])
    app[CONTROLLER] = controller
    app[READY] = [False]

    async def list_gateways(request: web.Request) -> web.Response:
        snap = await controller.snapshot()
        return respond(request, [controller.document(name, snap) for name in controller.names()])

    async def get_gateway(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        try:
            return respond(request, controller.document(name, await controller.snapshot()))
        except NotFound as exc:
            raise ApiError(404, str(exc)) from exc

    async def write(request: web.Request, name: str, action: Callable[[bool], Awaitable[Gateway | None]],
                    status: int | Callable[[], int]) -> web.Response:
        """Run a write; answer the resulting gateway (for ?validate_only=true, what it would be) with
        `status` (a callable is asked after the write, when the answer depends on what it did)."""
        validate_only = validate_only_requested(request)
        try:
            result = await action(validate_only)
        except ConfigError as exc:
            raise ApiError(400, str(exc), exc.pointer(name)) from exc
        except NotFound as exc:
            raise ApiError(404, str(exc)) from exc
        except Conflict as exc:
            raise ApiError(409, str(exc)) from exc
        if validate_only:
            return respond(request, {"name": name, **gateway_to_dict(result)} if result else {"name": name})
        try:
            document = controller.document(name, await controller.snapshot())
        except NotFound:
            document = {"name": name, "status": {"state": "removed"}}
        return respond(request, document, status() if callable(status) else status)

    async def create_gateway(request: web.Request) -> web.Response:
        body = await read_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("name"), str) or not body["name"]:
            raise ApiError(400, "the body must be a gateway object with a 'name'", "/name")
        name = body["name"]

        async def action(validate_only: bool) -> Gateway:
            _, gateway = await controller.put_gateway(name, body, create_only=True, validate_only=validate_only)
            return gateway
        return await write(request, name, action, 201)

    async def put_gateway(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = await read_body(request)
        if not isinstance(body, dict):
            raise ApiError(400, "the body must be a gateway object")
        created = False

        async def action(validate_only: bool) -> Gateway:
            nonlocal created
            created, gateway = await controller.put_gateway(name, body, validate_only=validate_only)
            return gateway
        return await write(request, name, action, lambda: 201 if created else 200)

    async def patch_gateway(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        patch = await read_body(request)
        return await write(request, name,
                           lambda validate_only: controller.patch_gateway(name, patch, validate_only=validate_only),
                           200)

    async def delete_gateway(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        return await write(request, name,
                           lambda validate_only: controller.delete_gateway(name, validate_only=validate_only),
                           202)

    async def openapi(_: web.Request) -> web.Response:
        return web.json_response(OPENAPI)

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def ready(_: web.Request) -> web.Response:
        if app[READY][0]:
            return web.json_response({"status": "ready", "gateways": controller.names()})
        return web.json_response({"status": "starting"}, status=503)

    async def metrics(_: web.Request) -> web.Response:
        body = render(await controller.snapshot(), controller.effective)
        return web.Response(body=body, content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})

    app.router.add_get("/api/v1/gateways", list_gateways)
    app.router.add_post("/api/v1/gateways", create_gateway)
    app.router.add_get("/api/v1/gateways/{name:.+}", get_gateway)
    app.router.add_put("/api/v1/gateways/{name:.+}", put_gateway)
    app.router.add_patch("/api/v1/gateways/{name:.+}", patch_gateway)
    app.router.add_delete("/api/v1/gateways/{name:.+}", delete_gateway)
    app.router.add_get("/api/v1/openapi.json", openapi)
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics)
    return app
