"""The gateway API's handlers, written once (gateway.admin.gateways.GatewayApi), over any ConfigSource: the
statuses of the standalone gateway and of the platform (`accepted`), and the errors as types — Invalid,
NotFound, Conflict answered 400, 404, 409 with their field, whatever their message says. Also: the control
plane's OpenAPI document no longer needs its API module (the import cycle is gone)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

import gateway
from gateway import Conflict, ConfigSource, GatewayApi, Invalid, NotFound
from gateway.common.httpapi import api_middleware

ROOT = Path(__file__).resolve().parents[2]      # the repository: `gateway` there is the product, not tests/gateway


class MemorySource:
    """A ConfigSource in a dict: what the API sees of any source."""

    def __init__(self) -> None:
        self.gateways: dict[str, dict[str, Any]] = {}

    async def list_gateways(self) -> list[dict[str, Any]]:
        return [{"name": name, **body} for name, body in sorted(self.gateways.items())]

    async def get_gateway(self, name: str) -> dict[str, Any]:
        if name not in self.gateways:
            raise NotFound(f"nothing called {name!r}")
        return {"name": name, **self.gateways[name]}

    async def create_gateway(self, name: str, body: dict[str, Any], *, validate_only: bool = False
                             ) -> dict[str, Any]:
        if name in self.gateways:
            raise Conflict("a port is taken, says the message, but this is about a name", "/name")
        return (await self.put_gateway(name, body, validate_only=validate_only))[0]

    async def put_gateway(self, name: str, body: dict[str, Any], *, validate_only: bool = False
                          ) -> tuple[dict[str, Any], bool]:
        if not isinstance(body.get("port"), int):
            raise Invalid("port: expected a port, like 8080", "/port")
        created = name not in self.gateways
        if not validate_only:
            self.gateways[name] = {key: value for key, value in body.items() if key != "name"}
        return {"name": name, "port": body["port"]}, created

    async def patch_gateway(self, name: str, patch: dict[str, Any], *, validate_only: bool = False
                            ) -> dict[str, Any]:
        current = await self.get_gateway(name)
        document, _ = await self.put_gateway(name, {**current, **patch}, validate_only=validate_only)
        return document

    async def delete_gateway(self, name: str, *, validate_only: bool = False) -> dict[str, Any]:
        document = await self.get_gateway(name)
        if not validate_only:
            del self.gateways[name]
        return document


def _source() -> ConfigSource:
    return MemorySource()


@pytest.fixture
async def client_for():
    clients: list[TestClient] = []

    async def start(**options: Any) -> TestClient:
        app = web.Application(middlewares=[api_middleware(None)])
        GatewayApi(_source(), **options).add_routes(app.router)
        client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return client
    yield start
    for client in clients:
        await client.close()


async def test_the_standalone_statuses_created_replaced_patched_deleted(client_for):
    api = await client_for()
    assert (await api.post("/api/v1/gateways", json={"name": "a/b", "port": 1})).status == 201
    assert (await api.put("/api/v1/gateways/a/b", json={"port": 2})).status == 200
    assert (await api.put("/api/v1/gateways/c", json={"port": 3})).status == 201
    assert (await api.patch("/api/v1/gateways/a/b", json={"port": 4})).status == 200
    assert (await api.delete("/api/v1/gateways/c")).status == 202
    assert [doc["name"] for doc in await (await api.get("/api/v1/gateways")).json()] == ["a/b"]
    assert (await (await api.get("/api/v1/gateways/a/b")).json())["port"] == 4


async def test_the_platform_accepts_every_write_and_validate_only_answers_200(client_for):
    api = await client_for(accepted=True)
    assert (await api.post("/api/v1/gateways?validate_only=true", json={"name": "g", "port": 1})).status == 200
    assert (await api.get("/api/v1/gateways/g")).status == 404
    for method, path, body in (("POST", "/api/v1/gateways", {"name": "g", "port": 1}),
                               ("PUT", "/api/v1/gateways/g", {"port": 2}),
                               ("PATCH", "/api/v1/gateways/g", {"port": 3}),
                               ("DELETE", "/api/v1/gateways/g", None)):
        answer = await api.request(method, path, json=body)
        assert answer.status == 202, await answer.text()


async def test_errors_are_answered_by_their_type_with_their_field(client_for):
    api = await client_for()
    await api.post("/api/v1/gateways", json={"name": "g", "port": 1})
    clash = await api.post("/api/v1/gateways", json={"name": "g", "port": 1})
    assert (clash.status, (await clash.json())["field"]) == (409, "/name")
    missing = await api.patch("/api/v1/gateways/nope", json={"port": 1})
    assert (missing.status, await missing.json()) == (404, {"error": "nothing called 'nope'", "field": None})
    invalid = await api.put("/api/v1/gateways/g", json={"port": "port is taken"})
    assert (invalid.status, (await invalid.json())["field"]) == (400, "/port")
    not_an_object = await api.patch("/api/v1/gateways/g", json=[1])
    assert not_an_object.status == 400


def test_both_sources_implement_the_protocol():
    """The ConfigManager and the Engine offer every method of ConfigSource."""
    from control.engine import Engine
    wanted = {name for name in vars(ConfigSource) if not name.startswith("_")}
    assert wanted == {"list_gateways", "get_gateway", "create_gateway", "put_gateway", "patch_gateway",
                      "delete_gateway"}
    for source in (gateway.ConfigManager, Engine):
        assert wanted <= set(dir(source)), source


def test_the_control_planes_openapi_document_does_not_import_its_api():
    code = "import sys, control.openapi; sys.exit('control.api' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0
