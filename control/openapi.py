"""The control plane's API (control.api) described as an OpenAPI 3.0 document, served at `/api/v1/openapi.json`."""
from __future__ import annotations

from typing import Any

from control.metrics.api import METRICS
from control.store import STATIC_KINDS

_JSON_AND_YAML = ("application/json", "application/x-yaml")
_SECURITY: list[dict[str, list[str]]] = [{"bearer": []}, {}]      # the bearer token when one is set, on every operation


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _content(schema: dict[str, Any]) -> dict[str, Any]:
    return {kind: {"schema": schema} for kind in _JSON_AND_YAML}


def _answer(description: str, schema: dict[str, Any], headers: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "content": _content(schema), **({"headers": headers} if headers else {})}


def _errors(*statuses: int) -> dict[str, Any]:
    descriptions = {400: "invalid input; nothing changed", 401: "missing or wrong bearer token (when a token is set)",
                    404: "not found", 409: "conflicts with what exists; nothing changed",
                    415: "unsupported Content-Type", 503: "the metrics aggregation is off (--metrics-window 0)"}
    return {str(status): _answer(descriptions[status], _ref("Error")) for status in statuses}


def _parameter(name: str, where: str, schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "in": where, "required": where == "path", "description": description, "schema": schema,
            **extra}


_NAME = _parameter("name", "path", {"type": "string", "minLength": 1}, "the artifact's name, e.g. sava:1.0.0")
_GATEWAY_NAME = _parameter("name", "path", {"type": "string", "minLength": 1},
                           "the gateway's name; may contain '/' (e.g. sava/9050)")
_VALIDATE_ONLY = _parameter("validate_only", "query", {"type": "boolean"},
                            "check the write and change nothing (the answer is 200 with what it would do)")
_PAGE = [_parameter("page", "query", {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}, "from 1"),
         _parameter("per_page", "query", {"type": "integer", "minimum": 1, "maximum": 1000}, "default 30")]
_PAGE_HEADERS = {"X-Total-Count": {"description": "how many there are in all", "required": True,
                                   "schema": {"type": "integer", "minimum": 0}},
                 "Link": {"description": 'the pages: rel="next", "prev", "first", "last"', "required": True,
                          "schema": {"type": "string"}}}


def _list(description: str, item: str, *parameters: dict[str, Any]) -> dict[str, Any]:
    return {"summary": description, "parameters": [*_PAGE, *parameters],
            "responses": {"200": _answer(description, {"type": "array", "items": _ref(item)}, _PAGE_HEADERS),
                          **_errors(400)}}


def _write(summary: str, body: dict[str, Any] | None, answers: dict[str, tuple[str, str]], errors: tuple[int, ...],
           *, content_types: tuple[str, ...] = _JSON_AND_YAML) -> dict[str, Any]:
    """A write: `answers` maps a status to (description, schema name or '' for no body)."""
    responses = {status: _answer(description, _ref(schema)) if schema else {"description": description}
                 for status, (description, schema) in answers.items()}
    operation: dict[str, Any] = {"summary": summary, "parameters": [_VALIDATE_ONLY],
                                 "responses": {**responses, **_errors(401, *errors)}, "security": _SECURITY}
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {kind: {"schema": body} for kind in content_types}}
    return operation


def _static_paths(kind: str) -> dict[str, Any]:
    one = kind[:-1]
    return {
        f"/api/v1/{kind}": {
            "get": _list(f"a page of the stored {kind}, by name", "Artifact"),
            "post": _write(f"store a new {one}", _ref("ArtifactInput"),
                           {"201": (f"the {one} as stored (Vamp's long form)", "Artifact"),
                            "200": ("validate_only: what would be stored", "Artifact")}, (400, 409, 415)),
        },
        f"/api/v1/{kind}/{{name}}": {
            "parameters": [_NAME],
            "get": {"summary": f"one {one}", "responses": {"200": _answer(f"the {one}", _ref("Artifact")),
                                                          **_errors(404)}},
            "put": _write(f"create or replace a {one}", _ref("ArtifactInput"),
                          {"200": (f"the {one} as stored (replaced, or validate_only)", "Artifact"),
                           "201": (f"the {one} as stored (created)", "Artifact")}, (400, 415)),
            "delete": _write(f"remove a {one}", None,
                             {"204": ("removed", ""), "200": ("validate_only: what would be removed", "Artifact")},
                             (400, 404)),
        },
    }


_ENGINE_ERRORS = (400, 404, 409, 415)
_DEPLOYMENT_ANSWERS = {"202": ("the deployment (its instances start in the background)", "Deployment"),
                       "200": ("validate_only: what the deployment would be", "Deployment")}
_GATEWAY_ANSWERS = {"202": ("the gateway", "Gateway"), "200": ("validate_only: what the gateway would be", "Gateway")}
_DOCUMENTS = {"type": "array", "items": {"type": "object", "required": ["kind"], "properties": {
    "kind": {"type": "string", "example": "breeds"}, "name": {"type": "string"}}}}
_MULTI_DOCUMENT = {
    "requestBody": {"required": True, "content": {kind: {"schema": _DOCUMENTS} for kind in _JSON_AND_YAML}},
    "parameters": [_VALIDATE_ONLY],
    "responses": {"200": _answer("the documents stored (or removed), in the body's order",
                                 {"type": "array", "items": {"type": "object"}}),
                  **_errors(400, 401, 404, 409, 415)},
    "security": _SECURITY,
}
_SCALE_PATH = "/api/v1/deployments/{deployment}/clusters/{cluster}/services/{service}/scale"
_EVENT_FILTERS = [
    _parameter("tag", "query", {"type": "array", "items": {"type": "string", "minLength": 1}},
               "a tag the events must carry (a tag a:b on an event also counts as a); repeat for more",
               style="form", explode=True),
    _parameter("type", "query", {"type": "string", "minLength": 1}, "only events of this type"),
    *(_parameter(bound, "query", {"type": "string"},
                 f"only events stamped {words} this time: ISO 8601 (2026-11-25T15:30:00Z; UTC unless it says) or "
                 "seconds since the epoch")
      for bound, words in (("gt", "after"), ("gte", "at or after"), ("lt", "before"), ("lte", "at or before"))),
]
_STREAM_PARAMETERS = [
    *_EVENT_FILTERS,
    _parameter("heartbeat", "query", {"type": "string", "example": "15s"},
               "seconds (or a duration: 500ms, 1m; at most 1h) between comment lines sent when there is no event; "
               "default 15"),
    _parameter("last_event_id", "query", {"type": "integer", "minimum": 0},
               "resume after this event id (for clients that cannot set Last-Event-ID; the header wins)"),
    _parameter("Last-Event-ID", "header", {"type": "integer", "minimum": 0},
               "resume after this event id: first every kept matching event with a larger id, then live ones"),
]


# -- metrics and health (control.metrics.api) ------------------------------------------------------------
def _measured(name: str, description: str) -> dict[str, Any]:
    return _parameter(name, "path", {"type": "string", "minLength": 1}, description)


_MEASURED = {
    "gateway": _measured("gateway", "the gateway; may contain '/' (e.g. sava/9050, sava/sava/webport), also "
                                    "%2F-encoded"),
    "route": _measured("route", "a route of the gateway; may contain '/' (e.g. sava/sava/sava:1.0.0/webport)"),
    "deployment": _measured("deployment", "the deployment"),
    "cluster": _measured("cluster", "a cluster of the deployment"),
    "port": _measured("port", "a port of the cluster (its internal gateway)"),
    "service": _measured("service", "a service of the cluster (its breed's name, e.g. sava:1.0.0)"),
    "instance": _measured("instance", "an instance of the service: its id (sava/sava/sava:1.0.0#0, '#' sent as "
                                      "%23) or its number (0)"),
    "metric": _parameter("metric", "path", {"type": "string", "enum": list(METRICS)},
                         "rate (requests/s), requests, response_time (= responseTime, mean ms), p50, p95, p99 (ms), "
                         "errors (5xx), error_rate, health (share of non-5xx), in_flight, upstream_errors; all: the "
                         "whole summary"),
}
_WINDOW = _parameter("window", "query", {"type": "string", "example": "60s"},
                     "how far back: 30s, 5m, 1h (default 60s, at most the platform's --metrics-window); past a "
                     "minute the window starts on a 15 s (past 10 minutes: 2 min) boundary, and the answer's "
                     "`window` says what it covers")


def _measurement(summary: str, schema: str, *names: str) -> dict[str, Any]:
    return {"parameters": [_MEASURED[name] for name in names],
            "get": {"summary": summary, "parameters": [_WINDOW],
                    "responses": {"200": _answer(summary, _ref(schema)), **_errors(400, 404, 503)}}}


_CLUSTER_PORT = "/deployments/{deployment}/clusters/{cluster}/ports/{port}"
_MEASUREMENTS = {
    "/api/v1/metrics/gateways/{gateway}/{metric}": _measurement(
        "a metric of a gateway", "Metric", "gateway", "metric"),
    "/api/v1/metrics/gateways/{gateway}/routes/{route}/{metric}": _measurement(
        "a metric of a route of a gateway", "Metric", "gateway", "route", "metric"),
    f"/api/v1/metrics{_CLUSTER_PORT}/{{metric}}": _measurement(
        "a metric of a cluster port (its internal gateway)", "Metric", "deployment", "cluster", "port", "metric"),
    f"/api/v1/metrics{_CLUSTER_PORT}/services/{{service}}/{{metric}}": _measurement(
        "a metric of a service on a cluster port (its route)", "Metric", "deployment", "cluster", "port",
        "service", "metric"),
    f"/api/v1/metrics{_CLUSTER_PORT}/services/{{service}}/instances/{{instance}}/{{metric}}": _measurement(
        "a metric of an instance on a cluster port (its target)", "Metric", "deployment", "cluster", "port",
        "service", "instance", "metric"),
    "/api/v1/health/gateways/{gateway}": _measurement("the health of a gateway", "HealthShare", "gateway"),
    "/api/v1/health/gateways/{gateway}/routes/{route}": _measurement(
        "the health of a route of a gateway", "HealthShare", "gateway", "route"),
    "/api/v1/health/deployments/{deployment}": _measurement(
        "the health of a deployment (all its clusters' ports)", "HealthShare", "deployment"),
    "/api/v1/health/deployments/{deployment}/clusters/{cluster}": _measurement(
        "the health of a cluster (all its ports)", "HealthShare", "deployment", "cluster"),
    "/api/v1/health/deployments/{deployment}/clusters/{cluster}/services/{service}": _measurement(
        "the health of a service (its routes on every port)", "HealthShare", "deployment", "cluster", "service"),
    "/api/v1/health/deployments/{deployment}/clusters/{cluster}/services/{service}/instances/{instance}":
        _measurement("the health of an instance (its targets on every port)", "HealthShare", "deployment", "cluster",
                     "service", "instance"),
}
_NUMBER_OR_NULL = {"type": "number", "nullable": True}
_MEASUREMENT_SCHEMAS = {
    "Metric": {"type": "object", "required": ["metric", "value", "window", "scope"], "properties": {
        "metric": {"type": "string"},
        "value": {"description": "a number; null when it needs requests and there were none (response_time, "
                                 "p50, p95, p99, error_rate, health); for `all`, a Summary"},
        "window": {"type": "number", "minimum": 0, "description": "the seconds covered (less than asked while "
                                                                   "the platform has not run that long)"},
        "scope": {"type": "object", "required": ["gateway", "route", "target"], "properties": {
            "gateway": {"type": "string"}, "route": {"type": "string", "nullable": True},
            "target": {"type": "string", "nullable": True, "description": "an instance's address"}}}}},
    "Summary": {"type": "object", "properties": {
        "window": {"type": "number"}, "requests": {"type": "integer", "minimum": 0}, "rate": {"type": "number"},
        "response_time": _NUMBER_OR_NULL, "p50": _NUMBER_OR_NULL, "p95": _NUMBER_OR_NULL, "p99": _NUMBER_OR_NULL,
        "classes": {"type": "object", "additionalProperties": {"type": "integer"}},
        "errors": {"type": "integer"}, "error_rate": _NUMBER_OR_NULL, "health": _NUMBER_OR_NULL,
        "upstream_errors": {"type": "integer"}, "in_flight": {"type": "integer"}}},
    "HealthShare": {"type": "object", "required": ["value", "window", "requests", "errors"], "properties": {
        "value": {"type": "number", "minimum": 0, "maximum": 1, "nullable": True,
                  "description": "the share of non-5xx responses; null without requests (no data is no health)"},
        "window": {"type": "number", "minimum": 0}, "requests": {"type": "integer", "minimum": 0},
        "errors": {"type": "integer", "minimum": 0, "description": "5xx responses"}}},
}

OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "Vamp control plane API", "version": "1",
             "description": "Vamp's artifacts, deployments, gateways and events, following VAMP's paths and status "
                            "codes. JSON by default, YAML with application/x-yaml both ways. When a token is set, "
                            "every request (reads too; not /health and /ready) needs it as a bearer token; an "
                            "invalid write is rejected whole and changes nothing."},
    "paths": {
        **{path: {
            "post": {"summary": "store (create or replace) every document of a multi-document body",
                     **_MULTI_DOCUMENT},
            "put": {"summary": "store (create or replace) every document of a multi-document body",
                    **_MULTI_DOCUMENT},
            "delete": {"summary": "remove every artifact, deployment and gateway a multi-document body names "
                                  "(each document needs only its kind and name)",
                       **_MULTI_DOCUMENT},
        } for path in ("/api/v1", "/api/v1/")},
        **{path: item for kind in STATIC_KINDS for path, item in _static_paths(kind).items()},
        "/api/v1/deployments": {
            "get": _list("a page of the deployments, by name", "Deployment"),
            "post": _write("deploy a blueprint (or {name: BLUEPRINT} of a stored one) under a new UUID name",
                           _ref("ArtifactInput"), _DEPLOYMENT_ANSWERS, _ENGINE_ERRORS),
        },
        "/api/v1/deployments/{name}": {
            "parameters": [_parameter("name", "path", {"type": "string", "minLength": 1}, "the deployment")],
            "get": {"summary": "one deployment",
                    "parameters": [_parameter("as_blueprint", "query", {"type": "boolean"},
                                              "answer the deployment as a blueprint")],
                    "responses": {"200": _answer("the deployment", _ref("Deployment")), **_errors(400, 404)}},
            "put": _write("create the deployment, or merge a blueprint (or {name: BLUEPRINT}) into it",
                          _ref("ArtifactInput"), _DEPLOYMENT_ANSWERS, _ENGINE_ERRORS),
            "delete": {**_write("remove the services of the blueprint in the body, or without a body the whole "
                                "deployment; the answer is what remains, or what was removed",
                                None, _DEPLOYMENT_ANSWERS, _ENGINE_ERRORS),
                       "requestBody": {"required": False, "content": {
                           kind: {"schema": _ref("ArtifactInput")} for kind in _JSON_AND_YAML}}},
        },
        _SCALE_PATH: {
            "parameters": [_parameter("deployment", "path", {"type": "string", "minLength": 1}, "the deployment"),
                           _parameter("cluster", "path", {"type": "string", "minLength": 1}, "the cluster"),
                           _parameter("service", "path", {"type": "string", "minLength": 1},
                                      "the service (its breed's name, e.g. sava:1.0.0)")],
            "get": {"summary": "a service's scale", "responses": {"200": _answer("the scale", _ref("Scale")),
                                                                  **_errors(404)}},
            "put": _write("set a service's scale", _ref("ScaleInput"),
                          {"202": ("the new scale (instances start or drain in the background)", "Scale"),
                           "200": ("validate_only: what the scale would be", "Scale")}, _ENGINE_ERRORS),
        },
        "/api/v1/gateways": {
            "get": _list("a page of the gateways (made by deployments, and by users), by name", "Gateway"),
            "post": _write("create a gateway", _ref("GatewayInput"), _GATEWAY_ANSWERS, _ENGINE_ERRORS),
        },
        "/api/v1/gateways/{name}": {
            "parameters": [_GATEWAY_NAME],
            "get": {"summary": "one gateway", "responses": {"200": _answer("the gateway", _ref("Gateway")),
                                                            **_errors(404)}},
            "put": _write("create or replace a gateway", _ref("GatewayInput"), _GATEWAY_ANSWERS, _ENGINE_ERRORS),
            "patch": _write("change a gateway with a JSON merge patch (RFC 7396)", {"type": "object"},
                            _GATEWAY_ANSWERS, _ENGINE_ERRORS,
                            content_types=("application/merge-patch+json", *_JSON_AND_YAML)),
            "delete": _write("remove a gateway (it drains first)", None,
                             {"202": ("the gateway as it was", "Gateway"),
                              "200": ("validate_only: the gateway that would be removed", "Gateway")},
                             (400, 404, 409)),
        },
        "/api/v1/events": {
            "get": _list("a page of the kept events that match every filter, newest first", "Event",
                         *_EVENT_FILTERS),
            "post": _write("record an event", _ref("EventInput"),
                           {"201": ("the event as recorded", "Event"),
                            "200": ("validate_only: the event that would be recorded", "Event")}, (400, 415)),
        },
        "/api/v1/events/stream": {
            "get": {"summary": "the matching events as Server-Sent Events, live; resumes after Last-Event-ID",
                    "parameters": _STREAM_PARAMETERS,
                    "responses": {"200": {"description": "an endless text/event-stream: each event as `id: N`, "
                                                         "`event: TYPE`, `data: JSON` (an Event); a comment line "
                                                         "every heartbeat; it ends when the platform stops",
                                          "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                                  **_errors(400)}},
        },
        "/api/v1/workflows/{name}/status": {
            "parameters": [_parameter("name", "path", {"type": "string", "minLength": 1}, "the workflow")],
            "get": {"summary": "a workflow's status, its runs and how the last one went",
                    "responses": {"200": _answer("the status", _ref("WorkflowStatus")), **_errors(404)}},
            "put": _write("suspend, resume or restart a workflow (running, suspended, restarting), or hand an "
                          "action (promote, abort, …) to its built-in's run in progress",
                          _ref("WorkflowStatusInput"),
                          {"202": ("the status as the change begins (stopping on the way to suspended, …)",
                                   "WorkflowStatus"),
                           "200": ("validate_only: the status now; nothing changed", "WorkflowStatus")},
                          (400, 404, 409, 415)),
        },
        "/api/v1/info": {"get": {"summary": "about this Vamp",
                                 "responses": {"200": _answer("version and uptime", _ref("Info"))}}},
        "/api/v1/status": {"get": {"summary": "this replica: its store, its role and the leader (a replica that "
                                              "does not lead answers this itself, and forwards most other "
                                              "requests to the leader, or answers 503 with Retry-After)",
                                   "responses": {"200": _answer("the replica's status", _ref("ReplicaStatus"))}}},
        "/api/v1/health": {"get": {"summary": "liveness",
                                   "responses": {"200": _answer("the API answers", _ref("Health"))}}},
        "/api/v1/openapi.json": {"get": {"summary": "this document",
                                         "responses": {"200": {"description": "OpenAPI 3.0",
                                                               "content": {"application/json": {"schema": {
                                                                   "type": "object"}}}}}}},
        **_MEASUREMENTS,
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": {"type": "object", "required": ["error", "field"],
                      "properties": {"error": {"type": "string"},
                                     "field": {"type": "string", "nullable": True,
                                               "description": "a JSON pointer to the field at fault, or the "
                                                              "query parameter"}}},
            "ArtifactInput": {"type": "object", "description": "a document of Vamp's DSL",
                              "properties": {"name": {"type": "string"}}},
            "Artifact": {"type": "object", "required": ["kind", "name"],
                         "description": "an artifact in Vamp's long form; a workflow also shows its `status`, "
                                        "`reason` and `state` (what its built-in keeps)",
                         "properties": {"kind": {"type": "string", "enum": list(STATIC_KINDS)},
                                        "name": {"type": "string"}}},
            "Deployment": {"type": "object", "required": ["name"],
                           "description": "a running blueprint; each service of each cluster also shows its "
                                          "`instances`, its `state` (deploying, deployed: its instances are ready "
                                          "and routed, or failed) and the `reason` when it is not deployed",
                           "properties": {"name": {"type": "string"}, "clusters": {"type": "object"},
                                          "gateways": {"type": "object"}}},
            "Scale": {"type": "object", "required": ["cpu", "memory", "instances"],
                      "properties": {"cpu": {"type": "number"}, "memory": {"type": "string", "example": "64MB"},
                                     "instances": {"type": "integer", "minimum": 0}}},
            "ScaleInput": {"oneOf": [
                {"type": "object", "description": "scale fields, or {ref: NAME} of a stored scale",
                 "properties": {"cpu": {"type": "number"}, "memory": {"type": "string"},
                                "instances": {"type": "integer", "minimum": 0}, "ref": {"type": "string"}}},
                {"type": "integer", "minimum": 0, "description": "a number of instances"}]},
            "GatewayInput": {"type": "object", "properties": {"name": {"type": "string"}}},
            "Gateway": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}},
            "EventInput": {"type": "object", "additionalProperties": False, "required": ["tags"],
                           "properties": {"tags": {"type": "array", "minItems": 1,
                                                   "items": {"type": "string", "minLength": 1}},
                                          "value": {"description": "any JSON value"},
                                          "type": {"type": "string", "minLength": 1, "default": "event"},
                                          "timestamp": {"type": "string", "format": "date-time"}}},
            "Event": {"type": "object", "required": ["tags", "type", "timestamp"],
                      "properties": {"id": {"type": "integer"},
                                     "tags": {"type": "array", "items": {"type": "string"}},
                                     "value": {"description": "any JSON value"},
                                     "type": {"type": "string"},
                                     "timestamp": {"type": "string", "format": "date-time"}}},
            "WorkflowStatusInput": {"oneOf": [
                {"type": "string", "example": "suspended",
                 "description": "running, suspended or restarting; any other word is an action for the built-in"},
                {"type": "object", "additionalProperties": False, "required": ["status"],
                 "properties": {"status": {"type": "string", "enum": ["running", "suspended", "restarting"]}}},
                {"type": "object", "additionalProperties": False, "required": ["action"],
                 "properties": {"action": {"type": "string", "minLength": 1, "example": "promote"}}}]},
            "WorkflowStatus": {
                "type": "object", "required": ["name", "status", "reason", "runs", "last_run"],
                "properties": {
                    "name": {"type": "string"},
                    "status": {"type": "string", "enum": ["starting", "running", "stopping", "suspended",
                                                          "restarting", "finished", "failed"]},
                    "reason": {"type": "string", "nullable": True,
                               "description": "why it failed, or what went wrong with its last run"},
                    "runs": {"type": "integer", "minimum": 0,
                             "description": "runs started (a daemon script: each start of its process)"},
                    "last_run": {"type": "object", "nullable": True, "required": ["started", "ended", "outcome"],
                                 "properties": {
                                     "started": {"type": "string", "format": "date-time"},
                                     "ended": {"type": "string", "format": "date-time", "nullable": True},
                                     "outcome": {"type": "string", "nullable": True,
                                                 "example": "exited with exit code 0"},
                                     "event": {"type": "integer",
                                               "description": "the id of the event the run was for"}}}}},
            "Info": {"type": "object", "required": ["message", "version", "running_since", "uptime"],
                     "properties": {"message": {"type": "string"}, "version": {"type": "string"},
                                    "running_since": {"type": "string", "format": "date-time"},
                                    "uptime": {"type": "number", "description": "seconds"}}},
            "Health": {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}},
            "ReplicaStatus": {
                "type": "object", "required": ["store", "id", "role", "ready", "leader"],
                "properties": {
                    "store": {"type": "string", "description": "sqlite:PATH, or the etcd store's URL"},
                    "id": {"type": "string", "description": "this replica's id (new at each start)"},
                    "role": {"type": "string", "enum": ["leader", "follower", "candidate", "lost", "stopped"]},
                    "ready": {"type": "boolean", "description": "it leads and has resumed the deployments"},
                    "reason": {"type": "string", "description": "with role lost: why"},
                    "leader": {"type": "object", "nullable": True,
                               "required": ["id", "pid", "host", "api_url", "since"],
                               "properties": {"id": {"type": "string"}, "pid": {"type": "integer"},
                                              "host": {"type": "string"}, "api_url": {"type": "string"},
                                              "since": {"type": "number", "description": "epoch seconds"}}}}},
            **_MEASUREMENT_SCHEMAS,
        },
    },
}

for _item in OPENAPI["paths"].values():        # reads need the token too
    for _method, _operation in _item.items():
        if _method != "parameters":
            _operation.setdefault("security", _SECURITY)
            _operation["responses"].setdefault("401", _errors(401)["401"])
