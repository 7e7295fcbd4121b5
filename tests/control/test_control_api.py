"""The control plane's REST API (control.api) served by aiohttp's test server on loopback, with a temporary
SQLite store and a fake engine that records what it is asked: CRUD of every stored kind with Vamp's status
codes, JSON and YAML both ways, pages, `?validate_only=true`, 400 with the path of the field at fault,
404/405/409/415, the bearer token, multi-document bodies all-or-nothing, and the deployments, scale,
gateways, events and system routes handing the engine the right arguments (references resolved from the
store)."""
from __future__ import annotations

import datetime
import json
import re
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from control import dsl
from control.api import create_app
from control.dsl.model import Blueprint, Deployment, Scale
from control.orchestrator.base import Instance
from control.store import Store
from gateway.common.errors import Conflict, Invalid, NotFound, RequestError
from gateway.common.httpapi import TOKEN_REQUIRED
from gateway.common.names import RULE as NAME_RULE

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
YAML = "application/x-yaml"

SAMPLES = {
    "breeds": {"name": "sava:1.0.0", "deployable": "magneticio/sava:1.0.0", "ports": {"webport": "8080/http"}},
    "blueprints": {"name": "sava:1.0", "gateways": {"9050": "sava/webport"},
                   "clusters": {"sava": {"services": {"breed": "sava:1.0.0", "scale": "small"}}}},
    "slas": {"name": "fast", "type": "response_time_sliding_window", "threshold": {"upper": 1000, "lower": 100},
             "window": {"interval": 600, "cooldown": 600},
             "escalations": [{"type": "scale_instances", "minimum": 1, "maximum": 3, "scale_by": 1}]},
    "scales": {"name": "small", "cpu": 0.2, "memory": "64MB", "instances": 2},
    "escalations": {"name": "more.instances", "type": "scale_instances", "minimum": 1, "maximum": 3, "scale_by": 1},
    "conditions": {"name": "chrome", "condition": "browser = Chrome"},
    "workflows": {"name": "health", "breed": "health:1.0", "schedule": "daemon"},
}
BREED = {"name": "sava:1.0.0", "cmd": "python -m control.demo.sava --version 1.0.0", "ports": {"webport": "8080/http"}}
BREED_1_1 = {**BREED, "name": "sava:1.1.0", "cmd": "python -m control.demo.sava --version 1.1.0"}


def long_form(kind: str, document: dict) -> dict:
    return dsl.to_dict(dsl.read(kind, document))


# -- a fake engine -------------------------------------------------------------------------------------
class FakeOrchestrator:
    """The instances the metrics paths look up (control.orchestrator.base.Orchestrator.instances)."""

    def __init__(self) -> None:
        self.running: list[Instance] = []

    def instances(self, service_id: str | None = None) -> list[Instance]:
        return [i for i in self.running if service_id is None or i.service == service_id]


class FakeEngine:
    """control.engine.Engine's interface, in memory: deployments are merged blueprints, gateways the bodies
    given; `calls` records every write as (method, arguments..., validate_only); `failure`, when set, is
    raised by the next write."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.running: dict[str, Deployment] = {}
        self.user_gateways: dict[str, dict] = {}
        self.calls: list[tuple] = []
        self.failure: RequestError | None = None
        self.orchestrator = FakeOrchestrator()

    def _write(self, *call: Any) -> None:
        self.calls.append(call)
        failure, self.failure = self.failure, None
        if failure is not None:
            raise failure

    async def deploy(self, name: str, blueprint: Blueprint, *, validate_only: bool = False) -> tuple[dict, bool]:
        self._write("deploy", name, blueprint, validate_only)
        try:
            dsl.validate_complete(blueprint)
        except dsl.DslError as exc:
            raise Invalid(str(exc)) from exc
        current = self.running.get(name)
        clusters = {cluster.name: cluster for cluster in current.clusters} if current else {}
        for cluster in blueprint.clusters:
            services = {service.name: service for service in clusters[cluster.name].services} \
                if cluster.name in clusters else {}
            services.update({service.name: service for service in cluster.services})
            clusters[cluster.name] = replace(cluster, services=tuple(services.values()))
        merged = Deployment(name=name, clusters=tuple(clusters.values()), gateways=blueprint.gateways)
        if not validate_only:
            self.running[name] = merged
        return dsl.to_dict(merged), current is None

    async def undeploy(self, name: str, blueprint: Blueprint | None, *, validate_only: bool = False) -> dict | None:
        self._write("undeploy", name, blueprint, validate_only)
        current = self.running.get(name)
        if current is None:
            raise NotFound(f"no deployment {name!r}")
        removed = {service.name for cluster in blueprint.clusters for service in cluster.services} \
            if blueprint is not None else None
        clusters = tuple(replace(cluster, services=tuple(s for s in cluster.services if s.name not in removed))
                         for cluster in current.clusters) if removed is not None else ()
        clusters = tuple(cluster for cluster in clusters if cluster.services)
        remaining = replace(current, clusters=clusters) if clusters else None
        if not validate_only:
            if remaining is None:
                del self.running[name]
            else:
                self.running[name] = remaining
        return dsl.to_dict(remaining) if remaining is not None else None

    def gateways_removed_with(self, name: str, blueprint: Blueprint | None) -> set[str]:
        return set()            # this engine makes no gateways of its own

    def deployments(self) -> list[dict]:
        return [dsl.to_dict(self.running[name]) for name in sorted(self.running)]

    def deployment(self, name: str) -> dict | None:
        return dsl.to_dict(self.running[name]) if name in self.running else None

    def as_blueprint(self, name: str) -> dict | None:
        deployment = self.running.get(name)
        if deployment is None:
            return None
        return dsl.to_dict(Blueprint(name=name, clusters=deployment.clusters, gateways=deployment.gateways))

    def _service(self, deployment: str, cluster: str, service: str):
        found = self.running.get(deployment)
        found = found.cluster(cluster) if found else None
        return found.service(service) if found else None

    def scale(self, deployment: str, cluster: str, service: str) -> dict:
        found = self._service(deployment, cluster, service)
        if found is None:
            raise NotFound(f"no service {service!r}")
        return dsl.to_dict(found.scale)

    async def set_scale(self, deployment: str, cluster: str, service: str, scale: Scale, *,
                        validate_only: bool = False) -> dict:
        self._write("set_scale", deployment, cluster, service, scale, validate_only)
        found = self._service(deployment, cluster, service)
        if found is None:
            raise NotFound(f"no service {service!r}")
        if not validate_only:
            current = self.running[deployment]
            self.running[deployment] = replace(current, clusters=tuple(
                replace(c, services=tuple(replace(s, scale=scale) if s.name == service else s for s in c.services))
                if c.name == cluster else c for c in current.clusters))
        return dsl.to_dict(scale)

    async def gateway_snapshot(self) -> dict:
        return {}

    def gateways(self, snapshot: dict | None = None) -> list[dict]:
        return [self.gateway(name) for name in sorted(self.user_gateways)]

    def gateway(self, name: str, snapshot: dict | None = None) -> dict | None:
        body = self.user_gateways.get(name)
        return {"name": name, **body, "status": {"state": "active"}} if body is not None else None

    async def list_gateways(self) -> list[dict]:
        return self.gateways()

    async def get_gateway(self, name: str) -> dict:
        return self._existing(name)

    def _existing(self, name: str) -> dict:
        if name not in self.user_gateways:
            raise NotFound(f"no gateway named {name!r}")
        return self.gateway(name)

    async def create_gateway(self, name: str, body: dict, *, validate_only: bool = False) -> dict:
        if name in self.user_gateways:
            raise Conflict(f"gateway {name!r} exists", "/name")
        return (await self.put_gateway(name, body, validate_only=validate_only))[0]

    async def put_gateway(self, name: str, body: dict, *, validate_only: bool = False) -> tuple[dict, bool]:
        if body.get("name", name) != name:
            raise Invalid(f"the body names {body['name']!r}, the path {name!r}", "/name")
        self._write("put_gateway", name, body, validate_only)
        if "port" not in body:
            raise Invalid("a gateway needs a port", "/port")
        created = name not in self.user_gateways
        document = {key: value for key, value in body.items() if key not in ("name", "status")}
        if validate_only:
            return {"name": name, **document}, created
        self.user_gateways[name] = document
        return self.gateway(name), created

    async def patch_gateway(self, name: str, patch: dict, *, validate_only: bool = False) -> dict:
        self._write("patch_gateway", name, patch, validate_only)
        if name not in self.user_gateways:
            raise NotFound(f"no gateway {name!r}")
        document = {**self.user_gateways[name], **patch}
        if not validate_only:
            self.user_gateways[name] = document
        return {"name": name, **document}

    async def delete_gateway(self, name: str, *, validate_only: bool = False) -> dict:
        self._write("delete_gateway", name, validate_only)
        document = self._existing(name)
        if not validate_only:
            del self.user_gateways[name]
        return document


# -- the API under test --------------------------------------------------------------------------------
@dataclass
class Answer:
    status: int
    headers: Any
    text: str
    content_type: str

    @property
    def data(self) -> Any:
        return yaml.safe_load(self.text) if self.content_type == YAML else json.loads(self.text) if self.text else None

    def error(self, status: int, field: str | None = None) -> str:
        """The answer is an error of the API's shape, with this status and field; its message."""
        assert self.status == status, self.text
        assert set(self.data) == {"error", "field"}, self.data
        assert self.data["field"] == field, self.data
        assert self.data["error"] and "\n" not in self.data["error"]
        return self.data["error"]


@dataclass
class Api:
    client: TestClient
    store: Store
    engine: FakeEngine

    async def call(self, method: str, path: str, body: Any = None, *, send_yaml: bool = False,
                   accept_yaml: bool = False, text: str | None = None, headers: dict | None = None,
                   **query: Any) -> Answer:
        headers = dict(headers or {})
        if accept_yaml:
            headers["Accept"] = YAML
        if text is None and body is not None:
            text = yaml.safe_dump(body, sort_keys=False) if send_yaml else json.dumps(body)
        if text is not None:
            headers.setdefault("Content-Type", YAML if send_yaml else "application/json")
        params = [(key, str(item).lower() if isinstance(item, bool) else str(item))
                  for key, value in query.items() for item in (value if isinstance(value, list) else [value])]
        async with self.client.request(method, "/api/v1" + path, data=text, headers=headers,
                                       params=params) as response:
            return Answer(response.status, response.headers, await response.text(), response.content_type)

    def snapshot(self) -> tuple:
        """Everything a write could change: every stored kind, the events, the engine's state."""
        kinds = ("breeds", "blueprints", "slas", "scales", "escalations", "conditions", "workflows")
        return (tuple(self.store.list(kind) for kind in kinds), self.store.events(),
                dict(self.engine.running), json.dumps(self.engine.user_gateways, sort_keys=True))


async def start_api(tmp_path: Path, token: str | None = None) -> Api:
    store = Store(tmp_path / "vamp.db")
    engine = FakeEngine(store)
    client = TestClient(TestServer(create_app(store, engine, token=token), host="127.0.0.1"))
    await client.start_server()
    return Api(client, store, engine)


@pytest.fixture
async def api(tmp_path):
    started = await start_api(tmp_path)
    yield started
    await started.client.close()
    started.store.close()


# -- stored artifacts ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(SAMPLES))
async def test_every_stored_kind_has_vamps_crud_and_status_codes(api, kind):
    sample = SAMPLES[kind]
    name = sample["name"]
    stored = long_form(kind, sample)

    created = await api.call("POST", f"/{kind}", sample)
    assert created.status == 201, created.text
    assert created.data == stored
    assert (await api.call("GET", f"/{kind}/{name}")).data == stored
    assert "exists" in (await api.call("POST", f"/{kind}", sample)).error(409, "/name")

    replaced = await api.call("PUT", f"/{kind}/{name}", sample)
    assert (replaced.status, replaced.data) == (200, stored)
    other = await api.call("PUT", f"/{kind}/{name}-2", {key: value for key, value in sample.items() if key != "name"})
    assert (other.status, other.data) == (201, {**stored, "name": f"{name}-2"})
    listing = await api.call("GET", f"/{kind}")
    assert (listing.status, [item["name"] for item in listing.data]) == (200, [name, f"{name}-2"])

    deleted = await api.call("DELETE", f"/{kind}/{name}")
    assert (deleted.status, deleted.text) == (204, "")
    assert "no " in (await api.call("GET", f"/{kind}/{name}")).error(404)
    (await api.call("DELETE", f"/{kind}/{name}")).error(404)
    assert [item["name"] for item in (await api.call("GET", f"/{kind}")).data] == [f"{name}-2"]


async def test_every_write_of_a_stored_kind_is_an_archive_event(api):
    await api.call("POST", "/breeds", BREED)
    await api.call("PUT", "/breeds/sava:1.0.0", BREED)
    await api.call("DELETE", "/breeds/sava:1.0.0")
    events = (await api.call("GET", "/events", tag="breeds:sava:1.0.0")).data
    assert [next(tag for tag in event["tags"] if tag.startswith("archive:")) for event in events] == \
        ["archive:delete", "archive:update", "archive:create"]
    assert events[2]["value"] == long_form("breeds", BREED)


async def test_yaml_both_ways(api):
    text = (EXAMPLES / "sava-1.0.yaml").read_text()
    created = await api.call("POST", "/blueprints", text=text, send_yaml=True, accept_yaml=True)
    assert (created.status, created.content_type) == (201, YAML)
    expected = long_form("blueprints", yaml.safe_load(text))
    assert created.data == expected
    as_json = await api.call("GET", "/blueprints/sava:1.0")
    assert (as_json.content_type, as_json.data) == ("application/json", expected)
    for media_type in ("text/yaml", "application/yaml"):
        replaced = await api.call("PUT", "/blueprints/sava:1.0", text=text, headers={"Content-Type": media_type})
        assert (replaced.status, replaced.data) == (200, expected)
    listing = await api.call("GET", "/blueprints", accept_yaml=True)
    assert (listing.content_type, listing.data) == (YAML, [expected])


async def test_lists_come_in_pages_with_total_count_and_links(api):
    for number in range(5):
        assert (await api.call("PUT", f"/scales/s{number}", {"instances": number})).status == 201
    page = await api.call("GET", "/scales", page=2, per_page=2)
    assert [item["name"] for item in page.data] == ["s2", "s3"]
    assert page.headers["X-Total-Count"] == "5"
    links = dict((rel, url) for url, rel in re.findall(r'<([^>]+)>; rel="(\w+)"', page.headers["Link"]))
    assert links == {"next": "/api/v1/scales?page=3&per_page=2", "prev": "/api/v1/scales?page=1&per_page=2",
                     "first": "/api/v1/scales?page=1&per_page=2", "last": "/api/v1/scales?page=3&per_page=2"}
    last = await api.call("GET", "/scales", page=3, per_page=2)
    assert [item["name"] for item in last.data] == ["s4"]
    assert 'rel="next"' not in last.headers["Link"] and 'rel="prev"' in last.headers["Link"]
    whole = await api.call("GET", "/scales")
    assert len(whole.data) == 5 and whole.headers["X-Total-Count"] == "5"
    assert 'rel="next"' not in whole.headers["Link"] and "per_page=30" in whole.headers["Link"]
    beyond = await api.call("GET", "/scales", page=9)
    assert (beyond.status, beyond.data, beyond.headers["X-Total-Count"]) == (200, [], "5")
    for query, field in (({"page": 0}, "page"), ({"per_page": 1001}, "per_page"), ({"page": "x"}, "page")):
        (await api.call("GET", "/scales", **query)).error(400, field)


async def test_validate_only_answers_what_would_be_stored_and_changes_nothing(api):
    await api.call("POST", "/breeds", BREED)
    before = api.snapshot()
    blueprint = SAMPLES["blueprints"]
    would = await api.call("POST", "/blueprints", blueprint, validate_only=True)
    assert (would.status, would.data) == (200, long_form("blueprints", blueprint))
    would = await api.call("PUT", "/breeds/sava:1.0.0", {**BREED, "ports": {"web": 80}}, validate_only=True)
    assert (would.status, would.data["ports"]) == (200, {"web": "80/http"})
    would = await api.call("DELETE", "/breeds/sava:1.0.0", validate_only=True)
    assert (would.status, would.data) == (200, long_form("breeds", BREED))
    would = await api.call("POST", "", text=f"kind: breeds\n{yaml.safe_dump(BREED_1_1)}", send_yaml=True,
                           validate_only=True)
    assert (would.status, would.data) == (200, [long_form("breeds", BREED_1_1)])
    would = await api.call("POST", "/events", {"tags": ["a"]}, validate_only=True)
    assert would.status == 200
    assert api.snapshot() == before
    (await api.call("POST", "/breeds", BREED, validate_only="maybe")).error(400, "validate_only")


async def test_an_invalid_document_is_refused_with_the_path_to_the_field_and_nothing_changes(api):
    before = api.snapshot()
    bad = yaml.safe_load((EXAMPLES / "sava-1.0.yaml").read_text())
    bad["clusters"]["sava"]["services"]["scale"]["instances"] = "many"
    message = (await api.call("POST", "/blueprints", bad)).error(400, "/clusters/sava/services/scale/instances")
    assert "clusters.sava.services.scale.instances" in message and "many" in message
    (await api.call("PUT", "/breeds/sava:1.0.0", {**BREED, "ports": {"web": "eighty"}})).error(400, "/ports/web")
    (await api.call("POST", "/breeds", {"deployable": "x"})).error(400, "/name")
    assert "names" in (await api.call("PUT", "/breeds/other", BREED)).error(400, "/name")
    (await api.call("POST", "/breeds", {**BREED, "kind": "blueprints"})).error(400, "/kind")
    (await api.call("POST", "/breeds", text="{not json")).error(400)
    (await api.call("POST", "/breeds", text="a: [", send_yaml=True)).error(400)
    (await api.call("POST", "/breeds", ["a list"])).error(400)
    assert api.snapshot() == before


async def test_unknown_paths_methods_and_media_types(api):
    (await api.call("GET", "/breeds/nothing")).error(404)
    (await api.call("GET", "/nothing")).error(404)
    (await api.call("PATCH", "/breeds/sava:1.0.0", {})).error(405)
    (await api.call("GET", "")).error(405)
    (await api.call("POST", "/breeds", text="name: x", headers={"Content-Type": "text/plain"})).error(415)


READS = ["/breeds", "/breeds/sava:1.0.0", "/blueprints", "/deployments", "/deployments/sava",
         "/deployments/sava/clusters/sava/services/sava:1.0.0/scale", "/gateways", "/gateways/sava/9050",
         "/events", "/info", "/health", "/openapi.json", "/nothing"]


async def test_with_a_token_every_request_needs_it_reads_included(tmp_path):
    api = await start_api(tmp_path, token="s3cret")
    try:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}):
            assert (await api.call("POST", "/breeds", BREED, headers=headers)).error(401) == TOKEN_REQUIRED
            (await api.call("DELETE", "/deployments/x", headers=headers)).error(401)
            (await api.call("PUT", "", text="kind: breeds", headers=headers)).error(401)
            for path in READS:
                refused = await api.call("GET", path, headers=headers)
                assert refused.error(401) == TOKEN_REQUIRED, path
                assert refused.headers["WWW-Authenticate"] == "Bearer"
        assert api.snapshot()[0][0] == ([], 0)
        good = {"Authorization": "Bearer s3cret"}
        assert (await api.call("POST", "/breeds", BREED, headers=good)).status == 201
        assert (await api.call("POST", "/events", {"tags": ["x"]}, headers=good)).status == 201
        for path in READS:
            assert (await api.call("GET", path, headers=good)).status in (200, 404), path
        assert (await api.call("GET", "/breeds/sava:1.0.0", headers=good)).data["name"] == "sava:1.0.0"
    finally:
        await api.client.close()
        api.store.close()


# -- names ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["..", ".", "a" * 254, "b" * 5000])
async def test_names_breaking_the_rule_are_400_naming_it_and_store_nothing(api, name):
    before = api.snapshot()
    answers = [await api.call("POST", f"/{kind}", {**SAMPLES[kind], "name": name}) for kind in SAMPLES]
    answers.append(await api.call("POST", "", text=documents({"kind": "breeds", **BREED, "name": name}),
                                  send_yaml=True))
    answers.append(await api.call("POST", "", [{"kind": "breeds", **BREED}, {**DEPLOYMENT, "name": name}]))
    if "." not in name:                  # the client would resolve '..' in a path; the body says it all
        answers += [await api.call("PUT", f"/{kind}/{name}", {k: v for k, v in SAMPLES[kind].items() if k != "name"})
                    for kind in SAMPLES]
        answers.append(await api.call("PUT", f"/deployments/{name}", {"name": "sava:1.0"}))
    for answer in answers:
        message = answer.error(400, answer.data["field"])
        assert answer.data["field"] in ("/name", "/0/name", "/1/name"), answer.data
        assert NAME_RULE in message and len(message) < 300, message
    assert api.snapshot() == before and api.engine.calls == []


# -- nesting -------------------------------------------------------------------------------------------
def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("send_yaml", [False, True])
async def test_bodies_nested_more_than_64_levels_are_400_and_change_nothing(api, send_yaml):
    before = api.snapshot()
    for text in (nested(100_000), '{"tags": ["x"], "value": ' + nested(64) + "}"):
        for method, path in (("POST", "/events"), ("POST", "/breeds"), ("PUT", "/deployments/sava"), ("PUT", ""),
                             ("PUT", "/gateways/sava/9050"), ("PUT", "/deployments/s/clusters/c/services/x/scale")):
            answer = await api.call(method, path, text=text, send_yaml=send_yaml)
            assert "nested too deeply" in answer.error(400), (method, path)
    assert api.snapshot() == before and api.engine.calls == []
    just_deep_enough = '{"tags": ["x"], "value": ' + nested(63) + "}"
    assert (await api.call("POST", "/events", text=just_deep_enough, send_yaml=send_yaml)).status == 201


async def test_yaml_aliases_cannot_blow_up_a_body(api):
    laughs = ["tags: [x]", "a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    laughs += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    answer = await api.call("POST", "/events", text="\n".join(laughs) + "\n", send_yaml=True)
    assert "aliases" in answer.error(400)
    answer = await api.call("POST", "", text="- &loop {kind: breeds, name: x, more: *loop}\n", send_yaml=True)
    assert "contains it" in answer.error(400)


# -- multi-document bodies -----------------------------------------------------------------------------
def documents(*docs: dict) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False)


DEPLOYMENT = {"kind": "deployments", "name": "sava", "clusters": {"sava": {"services": {"breed": "sava:1.0.0"}}}}


async def test_multi_document_yaml_is_stored_in_order_and_deployments_go_to_the_engine(api):
    body = documents({"kind": "breeds", **BREED}, {"kind": "scales", **SAMPLES["scales"]},
                     {"kind": "blueprints", **SAMPLES["blueprints"]}, DEPLOYMENT,
                     {"kind": "gateways", "name": "sava/edge", "port": 9060})
    answer = await api.call("POST", "", text=body, send_yaml=True)
    assert answer.status == 200, answer.text
    assert [(item["kind"], item["name"]) for item in answer.data] == [
        ("breeds", "sava:1.0.0"), ("scales", "small"), ("blueprints", "sava:1.0"), ("deployments", "sava"),
        ("gateways", "sava/edge")]
    assert api.store.get("blueprints", "sava:1.0") == long_form("blueprints", SAMPLES["blueprints"])
    assert api.store.get("breeds", "sava:1.0.0") == long_form("breeds", BREED)
    assert [call[0] for call in api.engine.calls] == ["deploy", "put_gateway", "deploy", "put_gateway"]
    assert [call[-1] for call in api.engine.calls] == [True, True, False, False]
    deployed = api.engine.calls[2][2]
    assert deployed.clusters[0].services[0].breed == dsl.read("breed", BREED)     # resolved from the body
    assert api.engine.calls[3][1:3] == ("sava/edge", {"name": "sava/edge", "port": 9060})

    again = await api.call("PUT", "", [{"kind": "breeds", **BREED, "ports": {"web": 81}}])   # a JSON list
    assert (again.status, again.data[0]["ports"]) == (200, {"web": "81/http"})


async def test_one_invalid_document_refuses_the_whole_body(api):
    before = api.snapshot()
    broken = {"kind": "blueprints", "name": "broken", "clusters": {"c": {"services": {"breed": "b", "scale": -1}}}}
    message = (await api.call("POST", "", text=documents({"kind": "breeds", **BREED}, DEPLOYMENT, broken),
                              send_yaml=True)).error(400, "/2/clusters/c/services/scale")
    assert message.startswith("document 3 (blueprint 'broken')")
    (await api.call("POST", "", text=documents({"kind": "breeds", **BREED}, {"name": "x"}),
                    send_yaml=True)).error(400, "/1")
    (await api.call("POST", "", [{"kind": "nothing", "name": "x"}])).error(400, "/0/kind")
    (await api.call("POST", "", [])).error(400)
    message = (await api.call("POST", "", [{"kind": "breeds", **BREED}, {"kind": "deployments", "name": "none:1"}])
               ).error(400, "/1/name")
    assert message == "document 2 (deployment 'none:1'): no blueprint named 'none:1' is stored"
    assert api.snapshot() == before
    assert api.engine.calls == []

    api.engine.failure = Conflict("port 9060 is taken", "/port")
    message = (await api.call("PUT", "", text=documents({"kind": "breeds", **BREED},
                                                        {"kind": "gateways", "name": "g", "port": 9060}),
                              send_yaml=True)).error(409, "/1/port")
    assert message == "document 2 (gateway 'g'): port 9060 is taken"
    assert api.snapshot() == before


async def test_multi_document_delete_removes_what_it_names_or_nothing(api):
    body = documents({"kind": "breeds", **BREED}, DEPLOYMENT, {"kind": "gateways", "name": "g", "port": 1})
    assert (await api.call("PUT", "", text=body, send_yaml=True)).status == 200
    with_missing = documents({"kind": "breeds", **BREED}, {"kind": "conditions", **SAMPLES["conditions"]})
    message = (await api.call("DELETE", "", text=with_missing, send_yaml=True)).error(404, "/1/name")
    assert "document 2 (condition 'chrome')" in message
    assert api.store.get("breeds", "sava:1.0.0") is not None

    removed = await api.call("DELETE", "", text=body, send_yaml=True)
    assert removed.status == 200, removed.text
    assert [(item["kind"], item["name"]) for item in removed.data] == \
        [("breeds", "sava:1.0.0"), ("deployments", "sava"), ("gateways", "g")]
    assert api.store.get("breeds", "sava:1.0.0") is None
    assert api.engine.running == {} and api.engine.user_gateways == {}
    assert api.engine.calls[-2][:2] == ("undeploy", "sava") and api.engine.calls[-1][:2] == ("delete_gateway", "g")


async def test_a_multi_document_delete_needs_only_the_kind_and_name_of_each_document(api):
    """VAMP's recipes remove what they made with documents that only name it (`kind: breed`, `name: runner`)."""
    written = [{"kind": kind, **SAMPLES[kind]} for kind in SAMPLES] + [DEPLOYMENT]
    assert (await api.call("PUT", "", text=documents(*written), send_yaml=True)).status == 200
    named = [{"kind": kind[:-1], "name": SAMPLES[kind]["name"]} for kind in SAMPLES]
    named.append({"kind": "deployment", "name": "sava"})
    body = documents(*named)

    checked = await api.call("DELETE", "/", text=body, send_yaml=True, validate_only=True)
    assert checked.status == 200, checked.text
    assert api.store.get("breeds", "sava:1.0.0") is not None and "sava" in api.engine.running

    removed = await api.call("DELETE", "/", text=body, send_yaml=True)
    assert removed.status == 200, removed.text
    assert [(item["kind"], item["name"]) for item in removed.data] == \
        [(kind, SAMPLES[kind]["name"]) for kind in SAMPLES] + [("deployments", "sava")]
    assert removed.data[0] == long_form("breeds", SAMPLES["breeds"])           # each as it was
    assert all(api.store.get(kind, SAMPLES[kind]["name"]) is None for kind in SAMPLES)
    assert api.engine.running == {} and api.engine.calls[-1] == ("undeploy", "sava", None, False)

    (await api.call("DELETE", "", text=documents({"kind": "breed"}), send_yaml=True)).error(400, "/0/name")
    (await api.call("DELETE", "", text=documents({"kind": "breed", "name": 5}), send_yaml=True)).error(400, "/0/name")
    message = (await api.call("DELETE", "", text=documents({"kind": "breed", "name": "runner"}), send_yaml=True)
               ).error(404, "/0/name")
    assert message == "document 1 (breed 'runner'): no breed named 'runner'"


# -- deployments ---------------------------------------------------------------------------------------
async def test_put_deployment_hands_the_engine_the_blueprint_and_merges(api):
    text = (EXAMPLES / "sava-1.0.yaml").read_text()
    answer = await api.call("PUT", "/deployments/sava", text=text, send_yaml=True)
    assert answer.status == 202, answer.text
    method, name, blueprint, validate_only = api.engine.calls[-1]
    assert (method, name, validate_only) == ("deploy", "sava", False)
    assert blueprint == dsl.read("deployment", yaml.safe_load(text))
    assert answer.data["name"] == "sava"

    await api.call("PUT", "/blueprints/sava:1.1", {"clusters": {"sava": {"services": {"breed": BREED_1_1}}}})
    merged = await api.call("PUT", "/deployments/sava", {"name": "sava:1.1"})     # Vamp's merge body
    assert merged.status == 202, merged.text
    assert api.engine.calls[-1][2].name == "sava:1.1"
    services = [service["breed"]["name"] for service in merged.data["clusters"]["sava"]["services"]]
    assert services == ["sava:1.0.0", "sava:1.1.0"]
    fetched = await api.call("GET", "/deployments/sava")
    assert (fetched.status, fetched.data) == (200, merged.data)
    as_blueprint = await api.call("GET", "/deployments/sava", as_blueprint=True)
    assert (as_blueprint.status, as_blueprint.data["kind"]) == (200, "blueprints")


async def test_post_deployment_resolves_references_from_the_store_under_a_new_uuid(api):
    for kind, document in (("breeds", BREED), ("scales", SAMPLES["scales"]), ("blueprints", SAMPLES["blueprints"])):
        assert (await api.call("POST", f"/{kind}", document)).status == 201
    for body in ({"name": "sava:1.0"}, {"ref": "sava:1.0"}):
        answer = await api.call("POST", "/deployments", body)
        assert answer.status == 202, answer.text
        method, name, blueprint, _ = api.engine.calls[-1]
        assert method == "deploy" and uuid.UUID(name).version == 4 and answer.data["name"] == name
        service = blueprint.clusters[0].services[0]
        assert service.breed == dsl.read("breed", BREED)
        assert service.scale == replace(dsl.read("scale", SAMPLES["scales"]), name=None)
    listing = await api.call("GET", "/deployments", per_page=1)
    assert (len(listing.data), listing.headers["X-Total-Count"]) == (1, "2")

    (await api.call("POST", "/deployments", {"name": "nothing:1.0"})).error(400, "/name")
    inline = {"name": "x", "clusters": {"x": {"services": [{"breed": "missing:1.0"}]}}}
    assert "missing:1.0" in (await api.call("POST", "/deployments", inline)).error(
        400, "/clusters/x/services/0/breed")
    (await api.call("POST", "/deployments", {"name": "x", "clusters": 5})).error(400, "/clusters")
    assert len(api.engine.running) == 2


async def test_delete_deployment_removes_the_services_of_a_blueprint_or_everything(api):
    await api.call("PUT", "/deployments/sava", {"clusters": {"sava": {"services": [{"breed": BREED},
                                                                                   {"breed": BREED_1_1}]}}})
    await api.call("PUT", "/blueprints/old", {"clusters": {"sava": {"services": {"breed": BREED}}}})
    partial = await api.call("DELETE", "/deployments/sava", {"name": "old"})
    assert partial.status == 202, partial.text
    _, name, blueprint, validate_only = api.engine.calls[-1]
    assert (name, blueprint.name, validate_only) == ("sava", "old", False)
    assert [s["breed"]["name"] for s in partial.data["clusters"]["sava"]["services"]] == ["sava:1.1.0"]

    whole = await api.call("DELETE", "/deployments/sava")
    assert whole.status == 202 and whole.data["name"] == "sava"
    assert api.engine.calls[-1] == ("undeploy", "sava", None, False)
    (await api.call("GET", "/deployments/sava")).error(404)
    (await api.call("DELETE", "/deployments/sava")).error(404)


async def test_engine_errors_keep_their_status_message_and_field(api):
    api.engine.failure = Conflict("port 9050 is taken", "/gateways/9050")
    answer = await api.call("PUT", "/deployments/sava", {"clusters": {"sava": BREED}})
    assert answer.error(409, "/gateways/9050") == "port 9050 is taken"
    assert api.engine.running == {}


async def test_scale_of_a_service(api):
    await api.call("PUT", "/deployments/sava", {"clusters": {"sava": BREED}})
    path = "/deployments/sava/clusters/sava/services/sava:1.0.0/scale"
    assert (await api.call("GET", path)).data == dsl.to_dict(Scale())
    await api.call("PUT", "/scales/large", {"cpu": 2, "memory": "2GB", "instances": 5})
    for body, expected in (({"instances": 3}, Scale(instances=3)), (4, Scale(instances=4)),
                           ({"ref": "large"}, Scale(name="large", cpu=2, memory=2 * 1000**3, instances=5))):
        answer = await api.call("PUT", path, body)
        assert answer.status == 202, answer.text
        assert api.engine.calls[-1] == ("set_scale", "sava", "sava", "sava:1.0.0", expected, False)
        assert (await api.call("GET", path)).data == dsl.to_dict(expected)
    assert (await api.call("PUT", path, {"instances": 9}, validate_only=True)).status == 200
    assert (await api.call("GET", path)).data["instances"] == 5
    (await api.call("PUT", path, {"instances": "x"})).error(400, "/instances")
    (await api.call("PUT", path, {"ref": "none"})).error(400, "/ref")
    (await api.call("GET", "/deployments/sava/clusters/sava/services/sava:9/scale")).error(404)


# -- gateways ------------------------------------------------------------------------------------------
async def test_gateways_go_through_the_engine(api):
    created = await api.call("POST", "/gateways", {"name": "sava/9050", "port": 9050})
    assert created.status == 202 and api.engine.calls[-1] == ("put_gateway", "sava/9050",
                                                             {"name": "sava/9050", "port": 9050}, False)
    (await api.call("POST", "/gateways", {"name": "sava/9050", "port": 9050})).error(409, "/name")
    (await api.call("POST", "/gateways", {"port": 9050})).error(400, "/name")
    assert (await api.call("GET", "/gateways/sava/9050")).data["port"] == 9050
    assert (await api.call("PUT", "/gateways/sava/9050", {"port": 9051, "sticky": "route"})).status == 202
    (await api.call("PUT", "/gateways/sava/9050", {"name": "other", "port": 1})).error(400, "/name")
    (await api.call("PUT", "/gateways/sava/9050", {"sticky": "route"})).error(400, "/port")
    patched = await api.call("PATCH", "/gateways/sava/9050", {"sticky": "none"},
                             headers={"Content-Type": "application/merge-patch+json"})
    assert (patched.status, patched.data["sticky"], patched.data["port"]) == (202, "none", 9051)
    (await api.call("PATCH", "/gateways/none", {"sticky": "none"})).error(404)
    listing = await api.call("GET", "/gateways")
    assert [g["name"] for g in listing.data] == ["sava/9050"] and listing.headers["X-Total-Count"] == "1"
    assert (await api.call("DELETE", "/gateways/sava/9050", validate_only=True)).status == 200
    deleted = await api.call("DELETE", "/gateways/sava/9050")
    assert (deleted.status, deleted.data["name"]) == (202, "sava/9050")
    (await api.call("GET", "/gateways/sava/9050")).error(404)
    (await api.call("DELETE", "/gateways/sava/9050")).error(404)


# -- events and the system -----------------------------------------------------------------------------
async def test_events_are_recorded_and_found_by_every_tag_and_type(api):
    first = await api.call("POST", "/events", {"tags": ["deployments:sava", "canary"], "value": {"weight": 10}})
    assert first.status == 201, first.text
    assert first.data["tags"] == ["canary", "deployments:sava"] and first.data["type"] == "event"
    assert datetime.datetime.fromisoformat(first.data["timestamp"]).tzinfo is not None
    await api.call("POST", "/events", {"tags": ["deployments:other", "canary"], "type": "metrics",
                                       "timestamp": "2026-11-25T15:00:00Z"})
    found = await api.call("GET", "/events", tag=["deployments", "canary"])
    assert [event["id"] for event in found.data] == [2, 1] and found.headers["X-Total-Count"] == "2"
    assert [e["id"] for e in (await api.call("GET", "/events", tag=["deployments:sava", "canary"])).data] == [1]
    only = (await api.call("GET", "/events", type="metrics")).data
    assert [(e["id"], e["timestamp"]) for e in only] == [(2, "2026-11-25T15:00:00.000Z")]
    (await api.call("POST", "/events", {"tags": []})).error(400, "/tags")
    (await api.call("POST", "/events", {"tags": ["a"], "when": 1})).error(400, "/when")
    (await api.call("POST", "/events", {"tags": ["a"], "timestamp": "yesterday"})).error(400, "/timestamp")


async def test_info_and_health(api):
    info = await api.call("GET", "/info")
    assert info.status == 200
    assert info.data["message"] == "Hi, I'm Vamp! How are you?"
    assert info.data["version"] and info.data["uptime"] >= 0
    assert (await api.call("GET", "/health")).data == {"status": "ok"}
    assert (await api.call("GET", "/openapi.json")).data["openapi"].startswith("3.")
