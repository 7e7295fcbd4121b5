"""The control plane API's own description, `GET /api/v1/openapi.json`: a valid OpenAPI 3 document that
names every route the application has, and a true one: every answer carries a documented status code and
Content-Type and a body matching the documented schema, never a 5xx — for a fixed set of requests covering
each operation's successful answers, and for requests schemathesis generates from the document.

The API runs with a temporary store and the fake engine of tests/control/test_control_api.py, served by aiohttp on a
loopback port in a thread of its own (schemathesis calls it over HTTP). The schema is built from
`control.openapi.OPENAPI` at import time (schemathesis' pytest integration needs it then); the first test
checks that the API serves exactly that document.
"""
from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Coroutine

import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, settings
from openapi_spec_validator import validate
from schemathesis.checks import (content_type_conformance, not_a_server_error, response_headers_conformance,
                                 response_schema_conformance, status_code_conformance)

from control.api import STATIC_KINDS, create_app
from control.metrics.aggregator import Aggregator
from control.openapi import OPENAPI
from control.orchestrator.local import LocalOrchestrator
from control.orchestrator.base import Instance
from control.replicas.leadership import Replica, Solo
from control.store import Store
from control.events.log import EventLog
from control.metrics.model import NoMetrics
from control.workflows.runner import WorkflowRunner
from tests.control.test_control_api import BREED, FakeEngine
from tests.support.metrics import FakeGateways

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]
MAX_EXAMPLES = 25                   # per operation: the whole file runs in well under a minute
SEED = 20261125                     # generation is reproducible
START_TIMEOUT = 10.0                # seconds

schema = schemathesis.openapi.from_dict(OPENAPI, config=schemathesis.Config.from_dict({
    "seed": SEED,
    "generation": {"max-examples": MAX_EXAMPLES},
}))
# The event stream never ends by itself: tests/control/test_events_api.py checks its answers.
generated = schema.exclude(path="/api/v1/events/stream")


class ServedApp:
    """An aiohttp application served on a free loopback port by an event loop in a thread of its own."""

    def __init__(self, app: web.Application) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="control-api", daemon=True)
        self.runner = web.AppRunner(app)

    def run(self, coroutine: Coroutine) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=START_TIMEOUT)

    def start(self) -> str:
        self.thread.start()
        self.run(self.runner.setup())
        self.run(web.TCPSite(self.runner, "127.0.0.1", 0).start())
        host, port = self.runner.addresses[0][:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        self.run(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=START_TIMEOUT)
        self.loop.close()


SAVA_PORT, SAVA_ROUTE, SAVA_TARGET = "sava/sava/webport", "sava/sava/sava:1.0.0/webport", "127.0.0.1:40001"


def measured() -> Aggregator:
    """Metrics of the cluster port sava/sava/webport: a second of traffic to its one instance."""
    gateways = FakeGateways()
    aggregator = Aggregator([gateways.source], clock=lambda: 0.0)
    gateways.add_target(SAVA_PORT, SAVA_ROUTE, SAVA_TARGET)
    aggregator.ingest([gateways.snapshot()], 1000.0)
    gateways.answer(SAVA_PORT, SAVA_ROUTE, SAVA_TARGET, times=9)
    gateways.answer(SAVA_PORT, SAVA_ROUTE, SAVA_TARGET, status=502)
    aggregator.ingest([gateways.snapshot()], 1001.0)
    return aggregator


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """The API's base URL, with a stored breed, a deployment `sava` running it (one instance, measured), a
    gateway `seeded` and a workflow `alive` (a built-in: the runner runs it)."""
    directory = tmp_path_factory.mktemp("control-openapi")
    store = Store(directory / "vamp.db")
    engine = FakeEngine(store)
    engine.orchestrator.running.append(Instance("sava/sava/sava:1.0.0#0", "sava/sava/sava:1.0.0", "127.0.0.1",
                                                {"webport": 40001}, "ready", None, 0, 0.0))
    orchestrator = LocalOrchestrator(directory / "logs")
    workflows = WorkflowRunner(store, orchestrator, engine, NoMetrics(), EventLog(store),
                               api_url="http://127.0.0.1:1", token=None)
    app = create_app(store, engine, workflows=workflows, metrics=measured(),
                     leadership=Solo(Replica.this_process("http://127.0.0.1:1"), f"sqlite:{directory / 'vamp.db'}"))
    served = ServedApp(app)
    base_url = served.start()
    served.run(workflows.start())
    for method, path, body in (("PUT", "/api/v1/breeds/sava:1.0.0", BREED),
                               ("PUT", "/api/v1/deployments/sava", {"clusters": {"sava": BREED}}),
                               ("PUT", "/api/v1/gateways/seeded", {"port": 9050}),
                               ("PUT", "/api/v1/workflows/alive", ALIVE)):
        assert requests.request(method, base_url + path, json=body, timeout=START_TIMEOUT).ok
    yield base_url, app
    served.run(workflows.close())
    served.run(orchestrator.close())
    served.stop()
    store.close()


def test_the_served_document_is_valid_openapi_3_and_names_every_route(live):
    base_url, app = live
    response = requests.get(base_url + "/api/v1/openapi.json", timeout=START_TIMEOUT)
    assert (response.status_code, response.headers["Content-Type"].split(";")[0]) == (200, "application/json")
    document = response.json()
    validate(document)
    assert document == json.loads(json.dumps(OPENAPI)), "the tests below use another document than served"
    documented = {(path, method.upper()) for path, item in document["paths"].items() for method in item
                  if method != "parameters"}
    served = set()
    for route in app.router.routes():
        path = route.resource.canonical         # without the patterns: /api/v1/{kind}, /api/v1/gateways/{name}
        if route.method != "HEAD" and not path.startswith("/ui"):       # the web UI's files are not the API
            served |= {(path.replace("{kind}", kind), route.method) for kind in STATIC_KINDS} if "{kind}" in path \
                else {(path, route.method)}
    assert served == documented


# -- each operation's successful answers, in a fixed set of requests -----------------------------------
@dataclass
class Row:
    method: str
    path: str
    path_parameters: dict = field(default_factory=dict)
    body: Any = None
    query: dict = field(default_factory=dict)
    media_type: str = "application/json"
    status: int = 200


SCALE = "/api/v1/deployments/{deployment}/clusters/{cluster}/services/{service}/scale"
STATUS = "/api/v1/workflows/{name}/status"
ALIVE = {"schedule": "daemon", "workflow": "heartbeat", "parameters": {"interval": "1h"}}
GATEWAY_METRIC = "/api/v1/metrics/gateways/{gateway}/{metric}"
ROUTE_METRIC = "/api/v1/metrics/gateways/{gateway}/routes/{route}/{metric}"
PORT_METRIC = "/api/v1/metrics/deployments/{deployment}/clusters/{cluster}/ports/{port}"
SAVA_CLUSTER = {"deployment": "sava", "cluster": "sava"}
SAVA_SERVICE = {"deployment": "sava", "cluster": "sava", "service": "sava:1.0.0"}
ROWS = {
    "list breeds": Row("GET", "/api/v1/breeds", query={"page": 1, "per_page": 10}),
    "post breed": Row("POST", "/api/v1/breeds", body={**BREED, "name": "rows:1"}, status=201),
    "post breed yaml": Row("POST", "/api/v1/breeds", body={**BREED, "name": "rows:2"},
                           media_type="application/x-yaml", status=201),
    "post existing breed": Row("POST", "/api/v1/breeds", body=BREED, status=409),
    "get breed": Row("GET", "/api/v1/breeds/{name}", {"name": "sava:1.0.0"}),
    "get missing breed": Row("GET", "/api/v1/breeds/{name}", {"name": "nothing"}, status=404),
    "put breed": Row("PUT", "/api/v1/breeds/{name}", {"name": "rows:3"}, body=BREED | {"name": "rows:3"},
                     status=201),
    "put invalid breed": Row("PUT", "/api/v1/breeds/{name}", {"name": "rows:4"}, body={"ports": 1}, status=400),
    "delete breed validate_only": Row("DELETE", "/api/v1/breeds/{name}", {"name": "sava:1.0.0"},
                                      query={"validate_only": "true"}),
    "delete breed": Row("DELETE", "/api/v1/breeds/{name}", {"name": "rows:1"}, status=204),
    "multi-document": Row("POST", "/api/v1", body=[{"kind": "breeds", **BREED, "name": "rows:5"},
                                                  {"kind": "gateways", "name": "rows/g", "port": 9051}]),
    "list deployments": Row("GET", "/api/v1/deployments"),
    "post deployment": Row("POST", "/api/v1/deployments", body={"name": "rows", "clusters": {"rows": BREED}},
                           status=202),
    "put deployment": Row("PUT", "/api/v1/deployments/{name}", {"name": "rows"},
                          body={"clusters": {"rows": BREED}}, status=202),
    "get deployment": Row("GET", "/api/v1/deployments/{name}", {"name": "sava"}),
    "get deployment as blueprint": Row("GET", "/api/v1/deployments/{name}", {"name": "sava"},
                                       query={"as_blueprint": "true"}),
    "delete deployment": Row("DELETE", "/api/v1/deployments/{name}", {"name": "rows"}, status=202),
    "get scale": Row("GET", SCALE, SAVA_SERVICE),
    "put scale": Row("PUT", SCALE, SAVA_SERVICE, body={"instances": 2}, status=202),
    "list gateways": Row("GET", "/api/v1/gateways"),
    "post gateway": Row("POST", "/api/v1/gateways", body={"name": "rows/post", "port": 9052}, status=202),
    "get gateway": Row("GET", "/api/v1/gateways/{name}", {"name": "seeded"}),
    "put gateway": Row("PUT", "/api/v1/gateways/{name}", {"name": "rows/put"}, body={"port": 9053}, status=202),
    "patch gateway": Row("PATCH", "/api/v1/gateways/{name}", {"name": "seeded"}, body={"sticky": "route"},
                         media_type="application/merge-patch+json", status=202),
    "delete gateway": Row("DELETE", "/api/v1/gateways/{name}", {"name": "rows/post"}, status=202),
    "post event": Row("POST", "/api/v1/events", body={"tags": ["rows"], "value": 1}, status=201),
    "list events": Row("GET", "/api/v1/events", query={"tag": ["rows"], "type": "event"}),
    "list events in a time range": Row("GET", "/api/v1/events", query={"gte": "2026-11-25T15:30:00Z",
                                                                       "lt": "1900000000"}),
    "list events from a bad time": Row("GET", "/api/v1/events", query={"gt": "yesterday"}, status=400),
    "get workflow status": Row("GET", STATUS, {"name": "alive"}),
    "get missing workflow status": Row("GET", STATUS, {"name": "nothing"}, status=404),
    "suspend workflow": Row("PUT", STATUS, {"name": "alive"}, body="suspended", status=202),
    "resume workflow": Row("PUT", STATUS, {"name": "alive"}, body={"status": "running"},
                           media_type="application/x-yaml", status=202),
    "an action the built-in does not take": Row("PUT", STATUS, {"name": "alive"}, body={"action": "promote"},
                                                status=400),
    "info": Row("GET", "/api/v1/info"),
    "status": Row("GET", "/api/v1/status"),
    "health": Row("GET", "/api/v1/health"),
    "gateway metric": Row("GET", GATEWAY_METRIC, {"gateway": SAVA_PORT, "metric": "requests"}),
    "gateway summary": Row("GET", GATEWAY_METRIC, {"gateway": SAVA_PORT, "metric": "all"}, query={"window": "5m"}),
    "route metric": Row("GET", ROUTE_METRIC, {"gateway": SAVA_PORT, "route": SAVA_ROUTE, "metric": "p99"}),
    "unknown gateway metric": Row("GET", GATEWAY_METRIC, {"gateway": "nothing", "metric": "rate"}, status=404),
    "bad window": Row("GET", GATEWAY_METRIC, {"gateway": SAVA_PORT, "metric": "rate"}, query={"window": "soon"},
                      status=400),
    "cluster port metric": Row("GET", PORT_METRIC + "/{metric}", SAVA_CLUSTER | {"port": "webport", "metric": "rate"}),
    "service metric": Row("GET", PORT_METRIC + "/services/{service}/{metric}",
                          SAVA_CLUSTER | {"port": "webport", "service": "sava:1.0.0", "metric": "responseTime"}),
    "instance metric": Row("GET", PORT_METRIC + "/services/{service}/instances/{instance}/{metric}",
                           SAVA_CLUSTER | {"port": "webport", "service": "sava:1.0.0", "instance": "0",
                                           "metric": "health"}),
    "gateway health": Row("GET", "/api/v1/health/gateways/{gateway}", {"gateway": SAVA_PORT}),
    "route health": Row("GET", "/api/v1/health/gateways/{gateway}/routes/{route}",
                        {"gateway": SAVA_PORT, "route": SAVA_ROUTE}),
    "deployment health": Row("GET", "/api/v1/health/deployments/{deployment}", {"deployment": "sava"}),
    "cluster health": Row("GET", "/api/v1/health/deployments/{deployment}/clusters/{cluster}", SAVA_CLUSTER),
    "service health": Row("GET", "/api/v1/health/deployments/{deployment}/clusters/{cluster}/services/{service}",
                          SAVA_CLUSTER | {"service": "sava:1.0.0"}),
    "missing instance health": Row(
        "GET", "/api/v1/health/deployments/{deployment}/clusters/{cluster}/services/{service}/instances/{instance}",
        SAVA_CLUSTER | {"service": "sava:1.0.0", "instance": "7"}, status=404),
}


def test_each_row_answers_as_documented(live):
    base_url, _ = live
    for row_id, row in ROWS.items():           # in order: some rows use what earlier ones made
        case = schema[row.path][row.method].Case(
            path_parameters=row.path_parameters, query=row.query,
            media_type=row.media_type if row.body is not None else None,
            **({} if row.body is None else {"body": row.body}))
        response = case.call_and_validate(base_url=base_url, checks=CHECKS)
        assert response.status_code == row.status, f"{row_id}: {response.text}"


# -- generated requests --------------------------------------------------------------------------------
@generated.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_generated_requests_get_documented_answers_and_never_a_server_error(case, live):
    base_url, _ = live
    case.call_and_validate(base_url=base_url, checks=CHECKS)
