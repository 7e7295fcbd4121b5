"""The control plane API over the real engine (local processes, the in-process gateway): what users get wrong
is refused with a clear status and changes nothing; stored breeds are found by reference; generated
gateways keep their targets while users set their weights; a user-made gateway is served."""
from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from control.api import create_app
from tests.support import free_port
from tests.control.test_engine_quickstart import platform  # noqa: F401 - the fixture

BREED = {"name": "sava:1.0.0",
         "deployable": {"type": "cmd", "definition": "python -m control.demo.sava --version 1.0.0"},
         "ports": {"webport": "8080/http"}}


def blueprint(port: int, breed: object = "sava:1.0.0") -> dict:
    return {"name": "sava:1.0", "gateways": {str(port): "sava/webport"},
            "clusters": {"sava": {"services": {"breed": breed, "scale": {"instances": 1}}}}}


@pytest.fixture
async def api(platform):  # noqa: F811
    client = TestClient(TestServer(create_app(platform.store, platform)))
    await client.start_server()
    yield client
    await client.close()


async def version_at(port: int, deadline: float = 20.0) -> str:
    end = time.monotonic() + deadline
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(f"http://127.0.0.1:{port}/") as response:
                    if response.status == 200:
                        return response.headers["X-Version"]
            except aiohttp.ClientError:
                pass
            assert time.monotonic() < end, f"nothing served on port {port}"
            await asyncio.sleep(0.05)


@pytest.mark.timeout(60)
async def test_a_blueprint_made_of_a_stored_breed_deploys_and_serves(api):
    assert (await api.post("/api/v1/breeds", json=BREED)).status == 201
    port = free_port()
    response = await api.put("/api/v1/deployments/sava", json=blueprint(port))
    assert response.status == 202, await response.text()
    assert await version_at(port) == "1.0.0"
    as_blueprint = await (await api.get("/api/v1/deployments/sava?as_blueprint=true")).json()
    assert as_blueprint["clusters"]["sava"]["services"][0]["breed"]["name"] == "sava:1.0.0"


@pytest.mark.timeout(60)
async def test_what_cannot_run_or_clashes_is_refused_and_changes_nothing(api):
    docker = {**BREED, "name": "sava:9.9.9", "deployable": "magneticio/sava:1.0.0"}
    response = await api.put("/api/v1/deployments/broken", json=blueprint(free_port(), docker))
    assert response.status == 400
    assert "docker" in (await response.json())["error"]
    assert (await api.get("/api/v1/deployments/broken")).status == 404

    port = free_port()
    assert (await api.put("/api/v1/deployments/sava", json=blueprint(port, BREED))).status == 202
    assert await version_at(port) == "1.0.0"
    clash = await api.put("/api/v1/deployments/other", json=blueprint(port, BREED))
    assert clash.status == 409, await clash.text()
    assert (await api.get("/api/v1/deployments/other")).status == 404
    assert await version_at(port) == "1.0.0"


# VAMP's own tutorial blueprints, as its documentation gives them: docker images
VAMP_SAVA_1_0 = """
name: sava:1.0
gateways:
  9050: sava/webport
clusters:
  sava:
    services:
      breed:
        name: sava:1.0.0
        deployable: magneticio/sava:1.0.0
        ports:
          webport: 8080/http
      scale:
        cpu: 0.2
        memory: 64MB
        instances: 1
"""
VAMP_SAVA_1_2 = """
name: sava:1.2
gateways:
  9060: sava/webport
clusters:
  sava:
    services:
      breed:
        name: sava-frontend:1.2.0
        deployable: magneticio/sava-frontend:1.2.0
        ports:
          webport: 8080/http
        environment_variables:
          BACKEND_1: http://$backend1.host:$backend1.ports.webport/api/message
          BACKEND_2: http://$backend2.host:$backend2.ports.webport/api/message
        dependencies:
          backend1: sava-backend1:1.2.0
          backend2: sava-backend2:1.2.0
  backend1:
    breed:
      name: sava-backend1:1.2.0
      deployable: magneticio/sava-backend1:1.2.0
      ports:
        webport: 8080/http
  backend2:
    breed:
      name: sava-backend2:1.2.0
      deployable: magneticio/sava-backend2:1.2.0
      ports:
        webport: 8080/http
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("text, image", [(VAMP_SAVA_1_0, "magneticio/sava:1.0.0"),
                                         (VAMP_SAVA_1_2, "magneticio/sava-frontend:1.2.0")])
async def test_vamps_tutorial_blueprints_are_read_and_refused_saying_docker_needs_kubernetes(api, text, image):
    port = free_port()
    body = text.replace("9050:", f"{port}:").replace("9060:", f"{port}:")
    response = await api.put("/api/v1/deployments/sava", data=body, headers={"Content-Type": "application/x-yaml"})
    assert response.status == 400, await response.text()
    error = await response.json()
    assert error["field"] == "clusters.sava.services[0].breed.deployable"
    assert f"deployable {image} is a docker image" in error["error"]
    assert "runs processes, not containers" in error["error"]
    assert "`vamp run --orchestrator kubernetes` (see docs/kubernetes.md)" in error["error"]
    assert (await api.get("/api/v1/deployments/sava")).status == 404


@pytest.mark.timeout(60)
async def test_generated_gateways_take_weights_but_keep_their_routes_and_targets(api):
    port = free_port()
    assert (await api.put("/api/v1/deployments/sava", json=blueprint(port, BREED))).status == 202
    await version_at(port)
    name = "sava/sava/webport"
    before = await (await api.get(f"/api/v1/gateways/{name}")).json()
    route = "sava/sava/sava:1.0.0/webport"

    unknown = await api.patch(f"/api/v1/gateways/{name}", json={"routes": {"nope": {"weight": "100%"}}})
    assert unknown.status == 400
    too_much = await api.patch(f"/api/v1/gateways/{name}", json={"routes": {route: {"weight": "120%"}}})
    pointer = f"/routes/{route.replace('/', '~1')}"            # the route's name holds '/'
    assert (too_much.status, (await too_much.json())["field"]) == (400, f"{pointer}/weight")
    condition = await api.patch(f"/api/v1/gateways/{name}", json={"routes": {route: {"condition": "os = = x"}}})
    assert (condition.status, (await condition.json())["field"]) == (400, f"{pointer}/condition")
    assert (await api.delete(f"/api/v1/gateways/{name}")).status == 409
    after = await (await api.get(f"/api/v1/gateways/{name}")).json()
    assert after["routes"] == before["routes"]

    unknown_field = await api.patch(f"/api/v1/gateways/{name}", json={"sticky": "route", "targets": ["x:1"]})
    assert unknown_field.status == 400
    assert (await (await api.get(f"/api/v1/gateways/{name}")).json())["sticky"] == "none"

    own_targets = await api.patch(f"/api/v1/gateways/{name}",
                                  json={"sticky": "route", "routes": {route: {"targets": ["127.0.0.1:1"]}}})
    assert own_targets.status == 202, await own_targets.text()
    now = await (await api.get(f"/api/v1/gateways/{name}")).json()
    assert now["sticky"] == "route"
    assert now["routes"][route]["targets"] == before["routes"][route]["targets"]   # the sync's, not the body's


@pytest.mark.timeout(60)
async def test_a_generated_gateway_refuses_settings_its_deployment_cannot_keep(api):
    """A write the deployment would silently drop (drain, timeouts, ...) is refused, naming the field, and
    changes nothing: `vamp gateways drain` must never say "draining" while nothing drains."""
    port = free_port()
    assert (await api.put("/api/v1/deployments/sava", json=blueprint(port, BREED))).status == 202
    await version_at(port)
    route = "sava/sava/sava:1.0.0/webport"
    pointer = f"/routes/{route.replace('/', '~1')}"
    for name, patch, field in [
            ("sava/sava/webport", {"routes": {route: {"drain": True}}}, f"{pointer}/drain"),
            ("sava/sava/webport", {"timeouts": {"connect": "1s"}}, "/timeouts"),
            ("sava/sava/webport", {"drain_timeout": "1s"}, "/drain_timeout"),
            ("sava/sava/webport", {"sticky_ttl": "1m"}, "/sticky_ttl"),
            ("sava/sava/webport", {"sticky_cookie": {"same_site": "strict"}}, "/sticky_cookie"),
            ("sava/sava/webport", {"virtual_hosts": ["a.example"]}, "/virtual_hosts"),
            ("sava/sava/webport", {"health_check": {"path": "/healthz"}}, "/health_check"),
            ("sava/sava/webport", {"routes": {route: {"health_check": {"path": "/healthz"}}}},
             f"{pointer}/health_check"),
            (f"sava/{port}", {"timeouts": {"idle": "5s"}}, "/timeouts")]:
        before = await (await api.get(f"/api/v1/gateways/{name}")).json()
        refused = await api.patch(f"/api/v1/gateways/{name}", json=patch)
        body = await refused.json()
        assert (refused.status, body["field"]) == (400, field), (patch, body)
        assert "deployment" in body["error"]
        assert await (await api.get(f"/api/v1/gateways/{name}")).json() == before
    kept = await api.patch(f"/api/v1/gateways/sava/{port}", json={"virtual_hosts": ["a.example"]})
    assert kept.status == 202, await kept.text()      # an external gateway's virtual hosts are the DSL's own


@pytest.mark.timeout(60)
async def test_a_user_made_gateway_is_served_and_removed(api):
    backend_port = free_port()
    assert (await api.put("/api/v1/deployments/sava", json=blueprint(backend_port, BREED))).status == 202
    await version_at(backend_port)
    mine = free_port()
    body = {"port": str(mine), "bind": "127.0.0.1",
            "routes": {"all": {"weight": "100%", "targets": [f"127.0.0.1:{backend_port}"]}}}
    response = await api.put("/api/v1/gateways/mine", json=body)
    assert response.status in (201, 202), await response.text()
    assert await version_at(mine) == "1.0.0"
    assert (await api.delete("/api/v1/gateways/mine")).status == 202
    assert (await api.get("/api/v1/gateways/mine")).status == 404


@pytest.mark.timeout(60)
async def test_removing_a_condition_by_merge_patch_removes_its_strength(api):
    body = {"port": str(free_port()), "bind": "127.0.0.1",
            "routes": {"all": {"weight": "100%", "targets": ["127.0.0.1:1"]},
                       "beta": {"weight": "0%", "targets": ["127.0.0.1:2"], "condition": "has cookie beta",
                                "condition_strength": "50%"}}}
    response = await api.put("/api/v1/gateways/mine", json=body)
    assert response.status in (201, 202), await response.text()
    removed = await api.patch("/api/v1/gateways/mine", json={"routes": {"beta": {"condition": None}}})
    assert removed.status == 202, await removed.text()
    beta = (await (await api.get("/api/v1/gateways/mine")).json())["routes"]["beta"]
    assert "condition" not in beta and "condition_strength" not in beta
    still_wrong = await api.patch("/api/v1/gateways/mine", json={"routes": {"all": {"condition_strength": "5%"}}})
    assert still_wrong.status == 400
    assert "condition_strength needs a condition" in (await still_wrong.json())["error"]


@pytest.mark.timeout(60)
async def test_a_deployment_and_its_own_gateway_go_in_one_multi_document_delete(api):
    """VAMP's recipe `http-deployment/undeploy.yml`: the deployment, its external gateway and its breed (by
    name alone) in one body. A deployment's gateway named without its deployment is still refused."""
    runner = {**BREED, "name": "runner"}
    assert (await api.post("/api/v1/breeds", json=runner)).status == 201
    port = free_port()
    assert (await api.put("/api/v1/deployments/sava", json=blueprint(port, "runner"))).status == 202
    assert await version_at(port) == "1.0.0"
    yaml_body = {"Content-Type": "application/x-yaml"}

    alone = await api.delete("/api/v1", data=f"kind: gateway\nname: sava/{port}\n", headers=yaml_body)
    assert alone.status == 409 and "belongs to a deployment" in (await alone.json())["error"]
    assert (await api.get(f"/api/v1/gateways/sava/{port}")).status == 200

    recipe = f"""---
kind: deployment
name: sava
clusters:
  sava:
    services:
      breed:
        name: runner
        cmd: python -m control.demo.sava --version 1.0.0
        ports:
          webport: 8080/http
---
kind: gateway
name: sava/{port}
---
kind: breed
name: runner
"""
    removed = await api.delete("/api/v1/", data=recipe, headers=yaml_body)
    assert removed.status == 200, await removed.text()
    assert [(item["kind"], item["name"]) for item in await removed.json()] == [
        ("deployments", "sava"), ("gateways", f"sava/{port}"), ("breeds", "runner")]
    for path in ("/api/v1/deployments/sava", f"/api/v1/gateways/sava/{port}", "/api/v1/gateways/sava/sava/webport",
                 "/api/v1/breeds/runner"):
        assert (await api.get(path)).status == 404, path
