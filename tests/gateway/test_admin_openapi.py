"""The admin API's own description, `GET /api/v1/openapi.json`: a valid OpenAPI 3 document, and a true one.
Every answer of a live gateway must carry a documented status code and Content-Type, a body matching the
documented schema, and never a 5xx — for each row of the API in a fixed set of requests, and for requests
that schemathesis generates (valid and invalid, from the served document).

The schema is built from `gateway.admin.openapi.OPENAPI` at import time (schemathesis' pytest integration needs it
then; its lazy `from_fixture` loader does not work with pytest 9); the first test checks that the live
gateway serves exactly that document.

Generated writes must not make the gateway listen anywhere but on loopback, on ports of our choosing: before
each call, a write whose body is an object gets `bind: 127.0.0.1` (merge patches too, so that none can reset
it to the default 0.0.0.0), and a `port` in it is replaced by one of a few free loopback ports reserved for
this module (keeping a `/tcp` or `/http` suffix), and its `health_check`s (the gateway's and its routes') are
left out, since a health check would contact the targets. Other fields are sent as generated. No request is ever
sent through a generated gateway, so the targets it names are never contacted.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Callable

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from openapi_spec_validator import validate
from schemathesis.checks import (content_type_conformance, not_a_server_error, response_headers_conformance,
                                 response_schema_conformance, status_code_conformance)

from gateway.admin.openapi import OPENAPI
from tests.support import LOOPBACK, config, free_port, gateway, route
from tests.support.admin import GATEWAYS, AdminApi

OPENAPI_PATH = "/api/v1/openapi.json"
ONE_GATEWAY = GATEWAYS + "/{name}"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]
MAX_EXAMPLES = 100                  # per operation (hypothesis' default): the whole file runs in about 10 s
SEED = 20260325                     # generation is reproducible

schema = schemathesis.openapi.from_dict(OPENAPI, config=schemathesis.Config.from_dict({
    "seed": SEED,
    "generation": {"max-examples": MAX_EXAMPLES},
}))


@pytest.fixture(scope="module")
def live(module_procs):
    """A gateway process with one gateway (`seeded`), and a few loopback ports reserved for generated ones."""
    echo = module_procs.backend("echo", "v1")
    gw = module_procs.gateway(config({"seeded": gateway(free_port(), {"r": route(echo.address("v1"))})}))
    ports = [free_port() for _ in range(3)]
    return gw, ports


def test_the_served_document_is_valid_openapi_3_and_describes_every_row(live):
    gw, _ = live
    response = AdminApi(gw.admin_url("")).request("GET", OPENAPI_PATH)
    assert response.status == 200
    assert response.content_type == "application/json"
    document = response.json()
    validate(document)
    assert document["openapi"].startswith("3.")
    assert set(document["paths"][GATEWAYS]) >= {"get", "post"}
    assert set(document["paths"][ONE_GATEWAY]) >= {"get", "put", "patch", "delete"}
    assert document == json.loads(json.dumps(OPENAPI)), "the tests below use another document than served"


# -- every row, in a fixed set of requests ----------------------------------------------------------------
def new_gateway(name: str | None = None) -> Callable[[], dict]:
    """A body: a valid gateway on a fresh loopback port (with `name` in the body when given)."""
    return lambda: {**({"name": name} if name else {}), **gateway(free_port(), {})}


@dataclass
class Row:
    method: str
    name: str | None = None          # the gateway in the path; None: the collection
    body: Any = None                 # a value, or a function making it
    query: dict = field(default_factory=dict)
    media_type: str | None = "application/json"
    existing: bool = False           # create the gateway `name` first
    status: int = 200


VALIDATE_ONLY = {"validate_only": "true"}
ROWS = {
    "list": Row("GET"),
    "get": Row("GET", "seeded"),
    "get missing": Row("GET", "nope/missing", status=404),
    "post": Row("POST", body=new_gateway("rows/post"), status=201),
    "post yaml": Row("POST", body=new_gateway("rows/post-yaml"), media_type="application/x-yaml", status=201),
    "post existing": Row("POST", body=new_gateway("seeded"), status=409),
    "post validate_only": Row("POST", body=new_gateway("rows/post-vo"), query=VALIDATE_ONLY),
    "post invalid": Row("POST", body={"name": "rows/bad", "port": "no"}, status=400),
    "put create": Row("PUT", "rows/put", new_gateway(), status=201),
    "put replace": Row("PUT", "rows/put-again", new_gateway(), existing=True),
    "put validate_only": Row("PUT", "rows/put-vo", new_gateway(), query=VALIDATE_ONLY, existing=True),
    "put invalid": Row("PUT", "rows/put-bad", {"port": 1, "routes": []}, status=400),
    "patch": Row("PATCH", "rows/patch", {"sticky": "route"}, media_type="application/merge-patch+json",
                 existing=True),
    "patch validate_only": Row("PATCH", "rows/patch-vo", {"sticky": "route"}, query=VALIDATE_ONLY, existing=True),
    "patch missing": Row("PATCH", "nope/missing", {"sticky": "route"}, status=404),
    "patch invalid": Row("PATCH", "rows/patch-bad", {"sticky": "always"}, existing=True, status=400),
    "delete": Row("DELETE", "rows/delete", media_type=None, existing=True, status=202),
    "delete validate_only": Row("DELETE", "rows/delete-vo", media_type=None, query=VALIDATE_ONLY, existing=True),
    "delete missing": Row("DELETE", "nope/missing", media_type=None, status=404),
    "delete bad validate_only": Row("DELETE", "rows/delete-bad", media_type=None, query={"validate_only": "maybe"},
                                    existing=True, status=400),
}


@pytest.mark.parametrize("row_id", list(ROWS))
def test_each_row_answers_as_documented(live, row_id):
    gw, _ = live
    row = ROWS[row_id]
    if row.existing:
        assert AdminApi(gw.admin_url("")).put(row.name, gateway(free_port(), {})).status == 201
    body = row.body() if callable(row.body) else row.body
    operation = schema[GATEWAYS if row.name is None else ONE_GATEWAY][row.method]
    case = operation.Case(path_parameters={"name": row.name} if row.name else {}, query=row.query,
                          media_type=row.media_type if body is not None else None,
                          **({} if body is None else {"body": body}))
    response = case.call_and_validate(base_url=gw.admin_url(""), checks=CHECKS)
    assert response.status_code == row.status, response.text


# -- generated requests --------------------------------------------------------------------------------
def confine(body: Any, ports: list[int], *, replace_port: bool) -> Any:
    """A generated write body made to listen only on loopback, on one of `ports` (see the module docstring)."""
    if not isinstance(body, dict):
        return body
    body = {key: value for key, value in body.items() if key != "health_check"}
    body["bind"] = LOOPBACK
    if isinstance(body.get("routes"), dict):
        body["routes"] = {name: ({key: value for key, value in spec.items() if key != "health_check"}
                                 if isinstance(spec, dict) else spec) for name, spec in body["routes"].items()}
    if replace_port or "port" in body:
        port = body.get("port")
        suffix = port[port.index("/"):] if isinstance(port, str) and "/" in port else ""
        body["port"] = f"{ports[len(repr(body)) % len(ports)]}{suffix}"     # spread over the reserved ports
    return body


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_generated_requests_get_documented_answers_and_never_a_server_error(case, live):
    gw, ports = live
    method = case.method.upper()
    if method in ("POST", "PUT", "PATCH"):
        case.body = confine(case.body, ports, replace_port=method != "PATCH")
    case.call_and_validate(base_url=gw.admin_url(""), checks=CHECKS)
