"""The control plane's REST API (aiohttp) under `/api/v1`, following Vamp's paths and status codes.

    GET    /{kind}                       a page of stored artifacts                          200
    POST   /{kind}                       store a new one                                     201 · 409
    GET    /{kind}/{name}                one                                                 200 · 404
    PUT    /{kind}/{name}                create or replace (the body's name, if any, is the path's)  201 · 200
    DELETE /{kind}/{name}                remove                                              204 · 404
           kind: breeds, blueprints, slas, scales, escalations, conditions, workflows (stored; workflows also
           run, control.workflows.runner, and their documents show their status, reason and state)
    GET | PUT  /workflows/{name}/status  a workflow's status; suspend, resume, restart, actions   200 · 202
    POST | PUT | DELETE  /api/v1[/]      multi-document YAML or a JSON list, each document with `kind:`  200
    GET    /deployments                  a page of deployments                               200
    POST   /deployments                  deploy a blueprint under a new UUID4 name           202
    GET    /deployments/{name}           one; `?as_blueprint=true`: as a blueprint           200 · 404
    PUT    /deployments/{name}           create, or merge a blueprint into it                202
    DELETE /deployments/{name}           with a blueprint body: remove its services; without: all   202 · 404
    GET | PUT  /deployments/{d}/clusters/{c}/services/{s}/scale                              200 · 202
    GET    /gateways · POST /gateways    a page of gateways · create one                     200 · 202 · 409
    GET | PUT | PATCH | DELETE  /gateways/{name}   (names may contain '/')                   200 · 202 · 404
           the gateway API's own handlers (gateway.admin.gateways), with the engine as their source
    GET    /events?tag=a&tag=b&type=t&gte=T   a page of the events carrying every tag, newest first  200
    GET    /events/stream                the same filters as Server-Sent Events, live; resumes after
                                         `Last-Event-ID` (docs/events.md)                        200
    POST   /events                       record {tags, value, type, timestamp}               201
    GET    /metrics/… · /health/…        a gateway's, route's, cluster port's, service's or instance's figures
           over ?window= (control.metrics.api), from the platform's aggregation       200 · 400 · 404 · 503
    GET    /info · /health · /openapi.json
    GET    /ui/                          the web UI (gateway.ui, docs/ui.md): its files need no token
    GET    /status                       this replica: its store, its role and the leader; a replica on etcd that
                                         does not lead forwards most requests to the leader (control.replicas)

Conventions are the gateway admin API's (gateway.common.httpapi): JSON by default, YAML both ways, nested at most 64
levels; errors `{"error": "...", "field": "/json/pointer" | null}`; with a token set, every request (reads
too) needs `Authorization: Bearer <token>`; `?validate_only=true` on any write answers 200 with what the
write would store or do, and changes nothing. Every name follows `gateway.common.names` (at most 253 characters, no
part `.` or `..`) besides the rules of its kind. Lists take `?page=` (from 1) and `?per_page=` (default 30,
at most 1000) and answer `X-Total-Count` and a `Link` header (rel next, prev, first, last).

Static artifacts are read with control.dsl and stored in Vamp's long form (`control.dsl.to_dict`, with its
`kind:`); each write also records an event `archive:create|update|delete` + `<kind>:<name>` (in the write's
transaction: the event log, control.events.log, delivers it once committed). Deployments and gateways are the
engine's (control.engine). A deployment body is a blueprint or names a stored one
(`{name: BLUEPRINT}` or `{ref: BLUEPRINT}`); its references to stored breeds, scales, SLAs, escalations and
conditions are resolved from the store before the engine sees it.

Multi-document bodies are read whole before anything changes: every document is validated (the engine's
with `validate_only`), and one invalid document answers 400 naming it ("document 2 (blueprint 'x')", field
`/1/...`: a pointer into the list of documents). Then the static documents are stored in one transaction,
and the deployments and gateways are handed to the engine in order (a deployment document that only names
a stored blueprint deploys it under that name). POST and PUT both create or replace. DELETE removes the
artifacts and gateways named, and from each deployment named the services its document lists (all of them
when it only names the deployment); 404 when one does not exist. A DELETE's documents need only their `kind:`
and `name:` (VAMP's recipes send `kind: breed`, `name: runner`), and a deployment's own gateways go with the
services that make them: naming them in the same body is fine, naming one alone is a 409 (as
`DELETE /gateways/{name}`). The answer is the list of documents stored (or removed), in the body's order.
"""
from __future__ import annotations

import asyncio
import datetime
import json
import math
import time
import uuid
from dataclasses import dataclass, replace
from importlib import metadata
from typing import Any
from collections.abc import Callable

from aiohttp import web

from control import dsl
from control.dsl.model import Artifact, Blueprint, Reference, Scale
from control.engine import Engine
from control.events.log import EventLog
from control.events.model import Event, EventFilter
from control.metrics.api import Measured, add_routes as add_metrics_routes
from control.openapi import OPENAPI
from control.store import STATIC_KINDS, ControlStore
from control.replicas.forwarding import Forwarding
from control.replicas.leadership import Leadership
from control.workflows import api as workflow_api
from control.workflows.runner import WorkflowRunner
from gateway import Conflict, GatewayApi, Invalid, NotFound, RequestError, add_ui_routes
from gateway.common.httpapi import Handler, api_middleware, query_flag, read_body, respond, validate_only_requested
from gateway.common.names import RULE as NAME_RULE, breaks_rule
from gateway.common.units import parse_duration, shown

DEFAULT_PER_PAGE = 30
MAX_PER_PAGE = 1000
MAX_PAGE = 2**31 - 1
GREETING = "Hi, I'm Vamp! How are you?"
EVENT_FIELDS = ("tags", "value", "type", "timestamp")
TIME_BOUNDS = ("gt", "gte", "lt", "lte")
DEFAULT_HEARTBEAT = 15.0            # seconds between the event stream's comment lines when nothing happens
MAX_HEARTBEAT = 3600.0
STREAM_WRITE_TIMEOUT = 10.0         # seconds a stream client may take nothing before it is dropped (it may resume)
REFERENCE_KEYS = ("ref", "reference", "name")

try:
    VERSION = metadata.version("vamp")
except metadata.PackageNotFoundError:      # run from a source tree that is not installed
    VERSION = "unknown"


def create_app(store: ControlStore, engine: Engine, token: str | None = None, *, public_metrics: bool = False,
               events: EventLog | None = None, workflows: WorkflowRunner | None = None,
               metrics: Measured | None = None, leadership: Leadership | None = None) -> web.Application:
    """`events`: the platform's event log (the engine publishes to the same one); without one, a log of its
    own over `store`. `workflows`: the platform's workflow runner, told of every workflow written. `metrics`:
    the platform's aggregation, which the metrics and health paths read (None: it is off)."""
    api = ControlApi(store, engine, events or EventLog(store), workflows)
    app = web.Application(middlewares=[api_middleware(token, public_metrics=public_metrics), _domain_errors])
    kind = "{kind:" + "|".join(STATIC_KINDS) + "}"
    scale = "/api/v1/deployments/{deployment}/clusters/{cluster}/services/{service}/scale"
    for method in ("POST", "PUT", "DELETE"):
        for path in ("/api/v1", "/api/v1/"):            # VAMP took both
            app.router.add_route(method, path, api.apply_documents)
    app.router.add_get(f"/api/v1/{kind}", api.list_artifacts)
    app.router.add_post(f"/api/v1/{kind}", api.create_artifact)
    app.router.add_get(f"/api/v1/{kind}/{{name}}", api.get_artifact)
    app.router.add_put(f"/api/v1/{kind}/{{name}}", api.put_artifact)
    app.router.add_delete(f"/api/v1/{kind}/{{name}}", api.delete_artifact)
    app.router.add_get("/api/v1/deployments", api.list_deployments)
    app.router.add_post("/api/v1/deployments", api.create_deployment)
    app.router.add_get("/api/v1/deployments/{name}", api.get_deployment)
    app.router.add_put("/api/v1/deployments/{name}", api.put_deployment)
    app.router.add_delete("/api/v1/deployments/{name}", api.delete_deployment)
    app.router.add_get(scale, api.get_scale)
    app.router.add_put(scale, api.put_scale)
    GatewayApi(engine, accepted=True, answer_list=_page_of).add_routes(app.router)
    app.router.add_get("/api/v1/events", api.list_events)
    app.router.add_get("/api/v1/events/stream", api.stream_events)
    app.router.add_post("/api/v1/events", api.create_event)
    app.router.add_get("/api/v1/info", api.info)
    if leadership is not None:                  # /status: the store and who leads; a follower forwards
        async def replica_status(request: web.Request) -> web.Response:
            return respond(request, leadership.status())
        app.router.add_get("/api/v1/status", replica_status)
        if leadership.forwards:
            forwarding = Forwarding(leadership)
            app.middlewares.append(forwarding)
            app.on_cleanup.append(forwarding.close)
    app.router.add_get("/api/v1/health", api.health)
    app.router.add_get("/api/v1/openapi.json", api.openapi)
    if workflows is not None:
        workflow_api.add_routes(app.router, workflows)
    add_metrics_routes(app.router, metrics, engine)       # /api/v1/metrics/…, /api/v1/health/… (control.metrics.api)
    add_ui_routes(app.router, "platform")                 # /ui/: the web UI (gateway.ui, docs/ui.md)
    return app


@web.middleware
async def _domain_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The DSL's errors as the input at fault."""
    try:
        return await handler(request)
    except dsl.DslError as exc:
        raise Invalid(str(exc), pointer(exc.location)) from exc


def _naming(document: Document, error: RequestError) -> RequestError:
    """`error` of one document of a multi-document body, saying which (its field a pointer into the list)."""
    return type(error)(f"{document.label}: {error.message}", document.field(error.field))


def pointer(location: tuple[str | int, ...]) -> str | None:
    """A path into a document as a JSON pointer (RFC 6901); None for the whole document."""
    if not location:
        return None
    return "/" + "/".join(str(part).replace("~", "~0").replace("/", "~1") for part in location)


# -- pages ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Page:
    number: int
    size: int

    @property
    def offset(self) -> int:
        return (self.number - 1) * self.size


def _page(request: web.Request) -> Page:
    return Page(_whole_number(request, "page", 1, MAX_PAGE),
                _whole_number(request, "per_page", DEFAULT_PER_PAGE, MAX_PER_PAGE))


def _whole_number(request: web.Request, name: str, default: int, maximum: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit() and len(text) <= 10 and 1 <= int(text) <= maximum):
        raise Invalid(f"{name} must be a whole number from 1 to {maximum}", name)
    return int(text)


def _paged(request: web.Request, page: Page, items: list[Any], total: int) -> web.Response:
    """One page of a list, with `X-Total-Count` and `Link` (next, prev, first, last)."""
    last = max(1, math.ceil(total / page.size))
    links = []
    if page.number < last:
        links.append(("next", page.number + 1))
    if page.number > 1:
        links.append(("prev", min(page.number - 1, last)))
    links += [("first", 1), ("last", last)]
    link = ", ".join(f'<{request.rel_url.update_query(page=number, per_page=page.size)}>; rel="{rel}"'
                     for rel, number in links)
    return respond(request, items, headers={"X-Total-Count": str(total), "Link": link})


def _page_of(request: web.Request, items: list[Any]) -> web.Response:
    page = _page(request)
    return _paged(request, page, items[page.offset:page.offset + page.size], len(items))


# -- multi-document bodies -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Document:
    """One document of a multi-document body."""
    index: int                      # from 0, in the body's order
    label: str                      # "document 2 (blueprint 'sava:1.0')"
    kind: str                       # plural: breeds, ..., deployments, gateways
    name: str
    body: dict[str, Any]            # as written, without `kind`
    artifact: Artifact | None       # as the DSL reads it; None for gateways (the engine reads those) and for
                                    # what a DELETE only names

    def field(self, inner: str | None = None) -> str:
        """A JSON pointer into the list of documents: this document, or a field in it."""
        return f"/{self.index}" + (inner if inner and inner.startswith("/") else "")


def read_documents(data: Any, *, naming: bool = False) -> list[Document]:
    """The documents of a multi-document body. `naming` (a DELETE): a document need only name what it removes
    (`kind:` and `name:`); the DSL reads only deployment documents that list services (the services to remove)."""
    documents = data if isinstance(data, list) else [data]
    if not documents:
        raise Invalid("the body holds no documents")
    return [_read_document(index, document, naming) for index, document in enumerate(documents)]


def _read_document(index: int, data: Any, naming: bool = False) -> Document:
    number = index + 1
    if not isinstance(data, dict) or "kind" not in data:
        raise Invalid(f"document {number}: every document needs a 'kind:' (breeds, blueprints, deployments, "
                            "gateways, scales, conditions, slas, escalations or workflows)", f"/{index}")
    try:
        kind = dsl.canonical_kind(data["kind"]) + "s"
    except dsl.DslError as exc:
        raise Invalid(f"document {number}, kind: {exc.expected}", f"/{index}/kind") from exc
    body = {key: value for key, value in data.items() if key != "kind"}
    if kind == "gateways" or (naming and kind != "deployments"):
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise Invalid(f"document {number}: a {kind[:-1]} needs a 'name'", f"/{index}/name")
        return Document(index, f"document {number} ({kind[:-1]} {name!r})", kind, name, body, None)
    try:
        artifact = dsl.read(kind, data)
    except dsl.DslError as exc:
        exc.document = f"document {number}" + (f" ({exc.document})" if exc.document else "")
        raise Invalid(str(exc), pointer((index, *exc.location))) from exc
    # (the reader requires a document's name: artifact.name is set)
    return Document(index, f"document {number} ({kind[:-1]} {artifact.name!r})", kind,
                    artifact.name, body, artifact)  # type: ignore[arg-type]


def _services_named(document: Document) -> Blueprint | None:
    """The services a deployment document of a DELETE removes: those its clusters list; None (all of them)
    when it only names the deployment."""
    return document.artifact if isinstance(document.artifact, Blueprint) else None


# -- events --------------------------------------------------------------------------------------------
def _read_event(body: Any) -> tuple[list[str], Any, str, float]:
    """(tags, value, type, timestamp) of a posted event."""
    if not isinstance(body, dict):
        raise Invalid("an event is an object: {tags: [...], value, type, timestamp}")
    unknown = next((key for key in body if key not in EVENT_FIELDS), None)
    if unknown is not None:
        raise Invalid(f"unknown field {unknown!r}; an event has: {', '.join(EVENT_FIELDS)}", pointer((unknown,)))
    tags = body.get("tags")
    if not isinstance(tags, list) or not tags or not all(isinstance(tag, str) and tag for tag in tags):
        raise Invalid("tags must be a list of at least one non-empty text", "/tags")
    type_ = body.get("type", "event")
    if not isinstance(type_, str) or not type_:
        raise Invalid("type must be a non-empty text", "/type")
    timestamp = body.get("timestamp")
    return tags, body.get("value"), type_, time.time() if timestamp is None else _epoch(timestamp)


def _epoch(text: Any) -> float:
    """An ISO 8601 date-time (UTC unless it says otherwise) as seconds since the epoch."""
    try:
        moment = datetime.datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.UTC)
        seconds = moment.timestamp()
        _iso(seconds)
        return seconds
    except (TypeError, ValueError, OverflowError, OSError):
        raise Invalid(f"timestamp must be an ISO 8601 date-time, like 2026-11-25T15:30:00Z, got {text!r}",
                       "/timestamp") from None


def _iso(seconds: float) -> str:
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _event_document(event: dict[str, Any]) -> dict[str, Any]:
    """An event with its timestamp in ISO 8601."""
    timestamp = event.get("timestamp")
    if isinstance(timestamp, (int, float)):
        return {**event, "timestamp": _iso(timestamp)}
    return event


def _event_filter(request: web.Request) -> EventFilter:
    """The filter of `?tag=…&type=…&gt=…&gte=…&lt=…&lte=…` (times: ISO 8601 or seconds since the epoch)."""
    tags = request.query.getall("tag", [])
    if not all(tags):
        raise Invalid("tag must not be empty", "tag")
    type_ = request.query.get("type")
    if type_ == "":
        raise Invalid("type must not be empty", "type")
    bounds = {name: _moment(request.query[name], name) for name in TIME_BOUNDS if name in request.query}
    return EventFilter(tags=tuple(dict.fromkeys(tags)), type=type_, **bounds)


def _moment(text: str, name: str) -> float:
    """A query parameter's time: seconds since the epoch, or an ISO 8601 date-time (UTC unless it says)."""
    try:
        seconds: float | None = float(text)
    except ValueError:
        seconds = None
    if seconds is not None and math.isfinite(seconds):
        try:
            _iso(seconds)
        except (ValueError, OverflowError, OSError):
            raise Invalid(f"{name} is out of range: {shown(text)}", name) from None
        return seconds
    try:
        return _epoch(text)
    except Invalid:
        raise Invalid(f"{name} must be an ISO 8601 date-time (like 2026-11-25T15:30:00Z) or seconds since the "
                      f"epoch, got {shown(text)}", name) from None


def _heartbeat(request: web.Request) -> float:
    text = request.query.get("heartbeat")
    if text is None:
        return DEFAULT_HEARTBEAT
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise Invalid(f"heartbeat: {exc}", "heartbeat") from None
    if seconds > MAX_HEARTBEAT:
        raise Invalid(f"heartbeat must be at most {MAX_HEARTBEAT:.0f} s, got {shown(text)}", "heartbeat")
    return seconds


def _resume_after(request: web.Request) -> int | None:
    """Where a stream resumes: the `Last-Event-ID` header (what a reconnecting client sends), else the
    `last_event_id` query parameter; None: live only."""
    for name, text in (("Last-Event-ID", request.headers.get("Last-Event-ID")),
                       ("last_event_id", request.query.get("last_event_id"))):
        if text is None:
            continue
        text = text.strip()
        if not (text.isascii() and text.isdigit() and len(text) <= 18):
            raise Invalid(f"{name} must be an event id (a whole number from 0), got {shown(text)}", name)
        return int(text)
    return None


async def _send(request: web.Request, response: web.StreamResponse, data: bytes) -> None:
    """Write to an event stream; a client that takes nothing for STREAM_WRITE_TIMEOUT seconds is cut off (it
    may resume with Last-Event-ID), so that it holds neither memory nor the platform's shutdown."""
    try:
        await asyncio.wait_for(response.write(data), STREAM_WRITE_TIMEOUT)
    except TimeoutError:
        if request.transport is not None:
            request.transport.abort()
        raise ConnectionResetError(f"the client took nothing for {STREAM_WRITE_TIMEOUT:.0f} s") from None


def _server_sent(event: Event) -> bytes:
    """One event of a text/event-stream: its id, its type and its JSON on one line."""
    data = json.dumps(event.as_json(), ensure_ascii=False, separators=(",", ":"))
    return f"id: {event.id}\nevent: {event.type}\ndata: {data}\n\n".encode()


# -- the handlers --------------------------------------------------------------------------------------
class ControlApi:
    def __init__(self, store: ControlStore, engine: Engine, events: EventLog,
                 workflows: WorkflowRunner | None = None) -> None:
        self.store = store
        self.engine = engine
        self.events = events
        self.workflows = workflows
        self.started = time.time()

    # -- static artifacts ------------------------------------------------------------------------------
    async def list_artifacts(self, request: web.Request) -> web.Response:
        page = _page(request)
        kind = request.match_info["kind"]
        items, total = self.store.list(kind, page.offset, page.size)
        return _paged(request, page, [self._shown(kind, item) for item in items], total)

    async def get_artifact(self, request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        return respond(request, self._shown(kind, self._stored(kind, request.match_info["name"])))

    def _shown(self, kind: str, document: dict[str, Any]) -> dict[str, Any]:
        """A stored document as read: a workflow's with its status and state (control.workflows.runner)."""
        if kind == "workflows" and self.workflows is not None:
            return self.workflows.shown(document)
        return document

    async def create_artifact(self, request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        validate_only = validate_only_requested(request)
        document = dsl.to_dict(dsl.read(kind, await read_body(request)))
        name = document["name"]
        if self.store.get(kind, name) is not None:
            raise Conflict(f"{kind[:-1]} {name!r} exists (PUT /api/v1/{kind}/{name} replaces it)", "/name")
        if validate_only:
            return respond(request, document)
        with self.store.transaction():
            self._put(kind, name, document)
        return respond(request, document, 201)

    async def put_artifact(self, request: web.Request) -> web.Response:
        kind, name = request.match_info["kind"], request.match_info["name"]
        validate_only = validate_only_requested(request)
        body = await read_body(request)
        if isinstance(body, dict):
            if body.get("name", name) != name:
                raise Invalid(f"the body names {body['name']!r}, the path {name!r}", "/name")
            body = {**body, "name": name}
        document = dsl.to_dict(dsl.read(kind, body))
        if validate_only:
            return respond(request, document)
        with self.store.transaction():
            created = self._put(kind, name, document)
        return respond(request, document, 201 if created else 200)

    async def delete_artifact(self, request: web.Request) -> web.Response:
        kind, name = request.match_info["kind"], request.match_info["name"]
        validate_only = validate_only_requested(request)
        document = self._stored(kind, name)
        if validate_only:
            return respond(request, document)
        with self.store.transaction():
            self._delete(kind, name)
        return web.Response(status=204)

    def _stored(self, kind: str, name: str) -> dict[str, Any]:
        document = self.store.get(kind, name)
        if document is None:
            raise NotFound(f"no {kind[:-1]} named {name!r}")
        return document

    def _put(self, kind: str, name: str, document: dict[str, Any]) -> bool:
        created = self.store.put(kind, name, document)
        self.events.publish([f"archive:{'create' if created else 'update'}", f"{kind}:{name}"], document)
        self._changed(kind, name)
        return created

    def _delete(self, kind: str, name: str) -> None:
        self.store.delete(kind, name)
        self.events.publish(["archive:delete", f"{kind}:{name}"])
        self._changed(kind, name)

    def _changed(self, kind: str, name: str) -> None:
        """A workflow written or deleted runs as stored from now on (once this write has committed)."""
        if kind == "workflows" and self.workflows is not None:
            self.workflows.changed(name)

    # -- multi-document bodies -------------------------------------------------------------------------
    async def apply_documents(self, request: web.Request) -> web.Response:
        validate_only = validate_only_requested(request)
        documents = read_documents(await read_body(request, all_documents=True), naming=request.method == "DELETE")
        if request.method == "DELETE":
            removed = await self._remove_documents(documents, validate_only)
            return respond(request, removed)
        static = [document for document in documents if document.kind in STATIC_KINDS]
        delegated = [document for document in documents if document.kind not in STATIC_KINDS]
        # (every document but a gateway has its artifact)
        stored = {document.index: dsl.to_dict(document.artifact) for document in static}  # type: ignore[arg-type]
        lookup = self._lookup({(document.kind, document.name): stored[document.index] for document in static})
        blueprints = {document.index: self._resolved(document.artifact,  # type: ignore[arg-type]  # (see above)
                                                     document.body, lookup, (document.index,), document.label)
                      for document in delegated if document.kind == "deployments"}
        results = {document.index: await self._delegate(document, blueprints, validate_only=True)
                   for document in delegated}
        if not validate_only:
            with self.store.transaction():
                for document in static:
                    self._put(document.kind, document.name, stored[document.index])
            for document in delegated:
                results[document.index] = await self._delegate(document, blueprints, validate_only=False)
        results.update(stored)
        return respond(request, [results[document.index] for document in documents])

    async def _delegate(self, document: Document, blueprints: dict[int, Blueprint], *,
                        validate_only: bool) -> dict[str, Any]:
        """A deployment or gateway document handed to the engine; its errors name the document."""
        try:
            if document.kind == "deployments":
                deployment, _ = await self.engine.deploy(document.name, blueprints[document.index],
                                                         validate_only=validate_only)
                return deployment
            gateway, _ = await self.engine.put_gateway(document.name, document.body, validate_only=validate_only)
            return {"kind": "gateways", **gateway}
        except RequestError as exc:
            raise _naming(document, exc) from exc

    async def _remove_documents(self, documents: list[Document], validate_only: bool) -> list[dict[str, Any]]:
        """Remove what the documents name, all or nothing. A gateway of a deployment goes with its services:
        named in the same body as the deployment (or the services) that made it, it needs no removing of its
        own; named alone, it is refused (409) as it is by `DELETE /gateways/{name}`."""
        unique: dict[tuple[str, str], Document] = {}
        for document in documents:
            unique.setdefault((document.kind, document.name), document)
        removed = {}
        for document in unique.values():
            found = self._current(document)
            if found is None:
                raise NotFound(f"{document.label}: no {document.kind[:-1]} named {document.name!r}",
                               document.field("/name"))
            removed[document.index] = found
        static = [document for document in unique.values() if document.kind in STATIC_KINDS]
        deployments = [document for document in unique.values() if document.kind == "deployments"]
        going: set[str] = set()                 # the generated gateways the deployments' documents take away
        for document in deployments:
            await self._remove_delegated(document, validate_only=True)
            going |= self.engine.gateways_removed_with(document.name, _services_named(document))
        gateways = [document for document in unique.values()
                    if document.kind == "gateways" and document.name not in going]
        for document in gateways:
            await self._remove_delegated(document, validate_only=True)
        if not validate_only:
            with self.store.transaction():
                for document in static:
                    self._delete(document.kind, document.name)
            for document in deployments + gateways:
                await self._remove_delegated(document, validate_only=False)
        return [removed[document.index] for document in unique.values()]

    def _current(self, document: Document) -> dict[str, Any] | None:
        if document.kind == "deployments":
            return self.engine.deployment(document.name)
        if document.kind == "gateways":
            gateway = self.engine.gateway(document.name)
            return {"kind": "gateways", **gateway} if gateway is not None else None
        return self.store.get(document.kind, document.name)

    async def _remove_delegated(self, document: Document, *, validate_only: bool) -> None:
        """Undeploy the services a deployment document names (all of them for a bare name), or delete a
        gateway; errors name the document."""
        try:
            if document.kind == "deployments":
                await self.engine.undeploy(document.name, _services_named(document), validate_only=validate_only)
            else:
                await self.engine.delete_gateway(document.name, validate_only=validate_only)
        except RequestError as exc:
            raise _naming(document, exc) from exc

    # -- deployments -----------------------------------------------------------------------------------
    async def list_deployments(self, request: web.Request) -> web.Response:
        return _page_of(request, self.engine.deployments())

    async def get_deployment(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        as_blueprint = query_flag(request, "as_blueprint")
        document = self.engine.as_blueprint(name) if as_blueprint else self.engine.deployment(name)
        if document is None:
            raise NotFound(f"no deployment named {name!r}")
        return respond(request, document)

    async def create_deployment(self, request: web.Request) -> web.Response:
        return await self._deploy(request, str(uuid.uuid4()), await read_body(request))

    async def put_deployment(self, request: web.Request) -> web.Response:
        """A blueprint without a name is named after the deployment."""
        name = request.match_info["name"]
        body = await read_body(request)
        if isinstance(body, dict) and not any(key in body for key in REFERENCE_KEYS):
            body = {**body, "name": name}
        return await self._deploy(request, name, body)

    async def _deploy(self, request: web.Request, name: str, body: Any) -> web.Response:
        """Errors name the deployment (the blueprint may have a name of its own)."""
        if breaks_rule(name):
            raise Invalid(f"invalid deployment name {shown(name)}: {NAME_RULE}", "/name")
        validate_only = validate_only_requested(request)
        label = f"deployment {name!r}"
        try:
            artifact = dsl.read("deployment", body)
        except dsl.DslError as exc:
            exc.document = label
            raise
        blueprint = self._resolved(artifact, body, self._lookup(), label=label)
        document, _ = await self.engine.deploy(name, blueprint, validate_only=validate_only)
        return respond(request, document, 200 if validate_only else 202)

    async def delete_deployment(self, request: web.Request) -> web.Response:
        """Remove the services of the blueprint in the body, or the whole deployment when there is no body;
        answer what remains, or (when nothing does) the deployment as it was."""
        name = request.match_info["name"]
        validate_only = validate_only_requested(request)
        before = self.engine.deployment(name)
        if before is None:
            raise NotFound(f"no deployment named {name!r}")
        body = await read_body(request) if request.body_exists else None
        named = None if body is None else self._named_blueprint(dsl.read("deployment", body), body)
        remaining = await self.engine.undeploy(name, named, validate_only=validate_only)
        return respond(request, before if remaining is None else remaining, 200 if validate_only else 202)

    def _lookup(self, pending: dict[tuple[str, str], dict[str, Any]] | None = None
                ) -> Callable[[Reference], Artifact | None]:
        """Stored artifacts for dsl.resolve_references: `pending` (kind, name) documents first, then the store."""
        def lookup(reference: Reference) -> Artifact | None:
            kind = f"{reference.kind}s"
            document = (pending or {}).get((kind, reference.name)) or self.store.get(kind, reference.name)
            return dsl.read(kind, document) if document is not None else None
        return lookup

    def _resolved(self, artifact: Blueprint | Reference, body: Any, lookup: Callable[[Reference], Artifact | None],
                  at: tuple[int, ...] = (), label: str = "") -> Blueprint:
        """A deployment body read by the DSL (a blueprint, or a reference to a stored one) with every reference
        to a stored artifact resolved; errors point into the body (at `at`) and start with `label`."""
        prefix = f"{label}: " if label else ""
        if isinstance(artifact, Reference):
            key = next(key for key in REFERENCE_KEYS if key in body)
            blueprint = lookup(artifact)
            if blueprint is None:
                raise Invalid(f"{prefix}no blueprint named {artifact.name!r} is stored", pointer((*at, key)))
            try:
                # (a reference to a blueprint finds a Blueprint)
                return dsl.resolve_references(blueprint, lookup)  # type: ignore[return-value]
            except dsl.DslError as exc:
                raise Invalid(f"{prefix}{exc}", pointer((*at, key))) from exc
        try:
            return dsl.resolve_references(artifact, lookup)
        except dsl.DslError as exc:
            raise Invalid(f"{prefix}{exc}", pointer((*at, *exc.location))) from exc

    def _named_blueprint(self, artifact: Blueprint | Reference, body: Any) -> Blueprint:
        """The blueprint whose services a DELETE names: the body, or the stored blueprint it refers to."""
        if not isinstance(artifact, Reference):
            return artifact
        blueprint = self._lookup()(artifact)
        if blueprint is None:
            key = next(key for key in REFERENCE_KEYS if key in body)
            raise Invalid(f"no blueprint named {artifact.name!r} is stored", pointer((key,)))
        return blueprint  # type: ignore[return-value]  # (a reference to a blueprint finds a Blueprint)

    # -- scales ----------------------------------------------------------------------------------------
    async def get_scale(self, request: web.Request) -> web.Response:
        return respond(request, self.engine.scale(*self._service_path(request)))

    async def put_scale(self, request: web.Request) -> web.Response:
        deployment, cluster, service = self._service_path(request)
        validate_only = validate_only_requested(request)
        scale = self._read_scale(await read_body(request))
        document = await self.engine.set_scale(deployment, cluster, service, scale, validate_only=validate_only)
        return respond(request, document, 200 if validate_only else 202)

    @staticmethod
    def _service_path(request: web.Request) -> tuple[str, str, str]:
        return request.match_info["deployment"], request.match_info["cluster"], request.match_info["service"]

    def _read_scale(self, body: Any) -> Scale:
        """A scale: its fields (no name needed), a whole number of instances, or `{ref: NAME}` of a stored one."""
        if isinstance(body, int) and not isinstance(body, bool):
            body = {"instances": body}
        if isinstance(body, dict) and len(body) == 1 and next(iter(body)) in ("ref", "reference"):
            key, name = next(iter(body.items()))
            stored = self.store.get("scales", name) if isinstance(name, str) else None
            if stored is None:
                raise Invalid(f"no scale named {name!r} is stored", pointer((key,)))
            return dsl.read("scales", stored)
        if isinstance(body, dict) and "name" not in body:
            try:
                return replace(dsl.read("scale", {"name": "scale", **body}), name=None)
            except dsl.DslError as exc:
                exc.document = "scale"
                raise
        return dsl.read("scale", body)

    # -- events and the system -------------------------------------------------------------------------
    async def list_events(self, request: web.Request) -> web.Response:
        page = _page(request)
        where = _event_filter(request)
        found = self.events.query(where, page.size, offset=page.offset)
        return _paged(request, page, [event.as_json() for event in found], self.events.count(where))

    async def stream_events(self, request: web.Request) -> web.StreamResponse:
        """Server-Sent Events: the kept events after `Last-Event-ID` (if given), then every new one, as
        published; a comment line every `heartbeat` seconds when there is nothing to send. It ends when the
        client goes away or the platform stops."""
        where, heartbeat, after = _event_filter(request), _heartbeat(request), _resume_after(request)
        subscription = self.events.subscribe(where, after)   # before answering: nothing published later is missed
        response = web.StreamResponse(headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        response.content_type = "text/event-stream"
        try:
            await response.prepare(request)
            await _send(request, response, b": events\n\n")
            while True:
                event = await subscription.next(heartbeat)
                if event is not None:
                    await _send(request, response, _server_sent(event))
                elif subscription.finished:
                    break
                else:
                    await _send(request, response, b": heartbeat\n\n")
            await response.write_eof()
        except ConnectionError:          # the client went away, or took nothing for too long
            pass
        finally:
            subscription.close()
        return response

    async def create_event(self, request: web.Request) -> web.Response:
        validate_only = validate_only_requested(request)
        tags, value, type_, timestamp = _read_event(await read_body(request))
        event = {"tags": sorted(set(tags)), "value": value, "type": type_, "timestamp": timestamp}
        if validate_only:
            return respond(request, _event_document(event))
        published = self.events.publish(tags, value, type_, timestamp=timestamp)
        return respond(request, published.as_json(), 201)

    async def info(self, request: web.Request) -> web.Response:
        return respond(request, {"message": GREETING, "version": VERSION, "running_since": _iso(self.started),
                                 "uptime": round(time.time() - self.started, 3)})

    async def health(self, request: web.Request) -> web.Response:
        return respond(request, {"status": "ok"})

    async def openapi(self, _: web.Request) -> web.Response:
        return web.json_response(OPENAPI)
