"""FakeKubernetes: a Kubernetes API server for tests, over real HTTP on 127.0.0.1, in a thread of its own.

It serves what a controller uses of apps/v1 deployments (and their scale and status subresources), v1 services,
pods and events, and discovery.k8s.io/v1 endpointslices, as kube-apiserver does: the same paths and query
parameters (labelSelector, fieldSelector, watch, resourceVersion, resourceVersionMatch, allowWatchBookmarks,
timeoutSeconds, limit, continue, dryRun, gracePeriodSeconds, propagationPolicy), the same JSON bodies, Status
objects on errors, watches as chunked streams of `{"type", "object"}` lines with bookmarks and `410 Expired` for
a resourceVersion older than the history kept, bearer-token authentication (401 without it), and discovery
(/version, /api, /apis). Faults a real cluster cannot be asked for are switches: forbid a verb (403 with RBAC's
words), make the next writes conflict (409), compact the history (410), restart (every connection drops).
"""
from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from . import errors
from .errors import ApiError
from .registry import PATCH_TYPES, Registry
from .resources import RESOURCES, SUBRESOURCES, Resource, resource_at
from .selectors import parse_field_selector, parse_label_selector
from .storage import FIRST_REVISION, Storage, Watcher, encode_event, with_type

SERVICE_ACCOUNT = "vamp"
VERSION = {"major": "1", "minor": "31", "gitVersion": "v1.31.0-vamp-fake", "gitCommit": "0" * 40,
           "gitTreeState": "clean", "buildDate": "2024-08-13T00:00:00Z", "goVersion": "go1.22.5", "compiler": "gc",
           "platform": "linux/amd64"}
VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]
_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")


def _parse_bool(name: str, text: str | None) -> bool:
    """Go's strconv.ParseBool, as the API server decodes boolean query parameters."""
    if text is None or text == "":
        return False
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise errors.bad_request(f'strconv.ParseBool: parsing "{text}": invalid syntax ({name})')


def _parse_int(name: str, text: str | None) -> int | None:
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise errors.bad_request(f'strconv.ParseInt: parsing "{text}": invalid syntax ({name})') from None


def _json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=json.dumps(body, separators=(",", ":")).encode(),
                        content_type="application/json")


def _error_response(error: ApiError) -> web.Response:
    return _json_response(error.status, error.code)


class FakeKubernetes:
    """A Kubernetes API server for tests on 127.0.0.1, running in a thread of its own with its own event loop:
    every method may be called from any thread (and from async tests: they do not block long)."""

    def __init__(self, *, bookmark_interval: float = 1.0, token: str = "vamp-test-token") -> None:
        self.bookmark_interval = bookmark_interval
        self.token = token
        self.storage = Storage()
        self.registry = Registry(self.storage)
        self._faults = threading.Lock()
        self._forbidden: set[tuple[str, str]] = set()
        self._conflicts: dict[tuple[str, str], int] = {}
        self._requests: list[tuple[str, str, str]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._watches: dict[Watcher, tuple[web.Request, asyncio.Task[Any] | None]] = {}

    # lifecycle

    def start(self) -> None:
        """Serve on a free port of 127.0.0.1."""
        if self._thread is not None:
            raise RuntimeError("the fake API server is already running")
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._loop = loop
        self.storage.loop = loop
        self._thread = threading.Thread(target=serve, name="fake-kubernetes", daemon=True)
        self._thread.start()
        ready.wait()
        self.run(self._serve())

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        self.run(self._shutdown())
        loop, thread = self._loop, self._thread
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._thread = None
        self.storage.loop = None

    def restart(self) -> None:
        """Stop serving (every connection and open watch drops at once) and serve again on the same port, with
        the same objects and resourceVersions, as an API server restarted over etcd."""
        self.run(self._shutdown())
        self.run(self._serve())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        """A kubeconfig with one context, using `namespace`, that reaches this server with its token."""
        config = {
            "apiVersion": "v1", "kind": "Config", "preferences": {},
            "clusters": [{"name": "vamp-fake", "cluster": {"server": self.url}}],
            "users": [{"name": SERVICE_ACCOUNT, "user": {"token": self.token}}],
            "contexts": [{"name": "vamp-fake", "context": {"cluster": "vamp-fake", "user": SERVICE_ACCOUNT,
                                                           "namespace": namespace}}],
            "current-context": "vamp-fake",
        }
        path = Path(path)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run a coroutine on the fake's loop and wait for its result (not from the fake's own thread)."""
        if self._loop is None:
            coro.close()
            raise RuntimeError("the fake API server is not running")
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("FakeKubernetes.run() called from the fake's own thread: await the coroutine")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("the fake API server is not running")
        return self._loop

    # what controllers and tests read and write directly

    def get(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            if resource == "deployments/scale":
                return self.registry.get_scale(namespace, name)
            return self.registry.get(self._resource(resource), namespace, name)
        except ApiError as error:
            if error.code == 404:
                return None
            raise

    def list(self, resource: str, namespace: str, selector: str | None = None) -> list[dict[str, Any]]:
        listed = self.registry.list(self._resource(resource), namespace, parse_label_selector(selector),
                                    parse_field_selector(None, ()))
        return [with_type(resource, item) for item in listed["items"]]

    def create(self, resource: str, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
        return self.registry.create(self._resource(resource), namespace, obj)

    def update(self, resource: str, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Replace the whole object (status too), ignoring obj's resourceVersion."""
        name = (obj.get("metadata") or {}).get("name", "")
        return self.registry.update(self._resource(resource), namespace, name, obj, check_version=False,
                                    keep_status=False)

    def delete(self, resource: str, namespace: str, name: str, *, grace_period_seconds: int | None = None) -> None:
        """Delete as a client's DELETE does: at once, except a pod bound to a node (its kubelet finishes it);
        `grace_period_seconds=0` deletes even that at once."""
        options = {} if grace_period_seconds is None else {"gracePeriodSeconds": grace_period_seconds}
        try:
            self.registry.delete(self._resource(resource), namespace, name, options)
        except ApiError as error:
            if error.code != 404:
                raise

    def on_change(self, callback: Callable[[str, str, dict[str, Any]], None]) -> None:
        """(event type, resource, object) after every change, called in the fake's thread."""
        with self.storage.lock:
            self.storage.listeners.append(callback)

    @staticmethod
    def _resource(name: str) -> Resource:
        try:
            return RESOURCES[name.split("/", 1)[0]]
        except KeyError:
            raise ValueError(f"unknown resource {name!r}: one of {', '.join(RESOURCES)}") from None

    # faults

    def compact(self) -> None:
        """Forget the history: a watch from any resourceVersion before now gets 410, and every open watch is
        sent ERROR 410 and ended."""
        watchers = self.storage.compact()
        compacted = self.storage.compacted
        for watcher in watchers:
            status = errors.expired(f"too old resource version: {watcher.seen} ({compacted})").status
            self.loop.call_soon_threadsafe(watcher.expire, status)

    def forbid(self, verb: str, resource: str) -> None:
        """Answer 403 Forbidden for that verb on that resource, as an RBAC denial does."""
        self._check_fault(verb, resource)
        with self._faults:
            self._forbidden.add((verb, resource))

    def allow(self, verb: str, resource: str) -> None:
        with self._faults:
            self._forbidden.discard((verb, resource))

    def conflict_next(self, verb: str, resource: str, count: int = 1) -> None:
        """The next `count` such writes answer 409 Conflict, as when someone else wrote first (the object's
        resourceVersion is bumped too, as that other write would)."""
        self._check_fault(verb, resource)
        with self._faults:
            self._conflicts[(verb, resource)] = self._conflicts.get((verb, resource), 0) + count

    def requests(self) -> list[tuple[str, str, str]]:
        """(method, path, query string) of every request served so far, in order."""
        with self._faults:
            return list(self._requests)

    @staticmethod
    def _check_fault(verb: str, resource: str) -> None:
        if verb not in VERBS:
            raise ValueError(f"unknown verb {verb!r}: one of {', '.join(VERBS)}")
        plural, _, sub = resource.partition("/")
        if plural not in RESOURCES or (sub and sub not in SUBRESOURCES.get(plural, ())):
            raise ValueError(f"unknown resource {resource!r}")

    # serving

    async def _serve(self) -> None:
        app = web.Application(client_max_size=3 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, shutdown_timeout=0.5, handler_cancellation=True, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self._port, reuse_address=True)
        for attempt in range(50):
            try:
                await site.start()
                break
            except OSError:         # the port of a restarted server may take a moment to free
                if attempt == 49 or not self._port:
                    raise
                await asyncio.sleep(0.05)
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        self._port = server.sockets[0].getsockname()[1]
        self._runner = runner

    async def _shutdown(self) -> None:
        for watcher, (request, task) in list(self._watches.items()):
            self.storage.unwatch(watcher)
            watcher.end()
            transport = request.transport
            if transport is not None:
                transport.abort()
            if task is not None:
                task.cancel()
        self._watches.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        with self._faults:
            self._requests.append((request.method, request.path, request.query_string))
        try:
            return await self._route(request)
        except ApiError as error:
            return _error_response(error)

    async def _route(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        if path == "/version":
            return _json_response(VERSION)
        if path in ("/healthz", "/livez", "/readyz"):
            return web.Response(text="ok")
        if request.headers.get("Authorization", "") != f"Bearer {self.token}":
            raise errors.unauthorized()
        discovery = self._discovery(path)
        if discovery is not None:
            return _json_response(discovery)
        if path.startswith("/api/v1/namespaces") and path.count("/") <= 4:
            return await self._namespace_request(request, path.split("/")[4] if path.count("/") == 4 else None)
        if path == "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews" and request.method == "POST":
            return _json_response(self._access_review(await self._read_json(request)), 201)
        parts = path.strip("/").split("/")
        if parts[0] == "api" and len(parts) >= 3:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis" and len(parts) >= 4:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise errors.no_such_path()
        watch_path = bool(rest) and rest[0] == "watch"
        if watch_path:
            rest = rest[1:]
        namespace: str | None = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        if not 1 <= len(rest) <= 3:
            raise errors.no_such_path()
        resource = resource_at(group, version, rest[0])
        if resource is None:
            raise errors.no_such_path()
        name = rest[1] if len(rest) >= 2 else None
        sub = rest[2] if len(rest) == 3 else None
        if sub is not None and sub not in SUBRESOURCES.get(resource.name, ()):
            raise errors.no_such_path()
        query = request.query
        watching = watch_path or _parse_bool("watch", query.get("watch"))
        verb = self._verb(request.method, name, watching)
        if namespace is None and (name is not None or verb not in ("list", "watch")):
            raise errors.no_such_path()
        self._authorize(verb, resource, sub, name, namespace)
        if verb == "watch":
            return await self._watch(request, resource, namespace, name)
        if verb == "list":
            return self._list(request, resource, namespace)
        assert namespace is not None
        dry_run = query.get("dryRun") == "All"
        if verb == "create":
            body = await self._read_json(request)
            self._conflict(verb, resource, sub, namespace, None)
            return _json_response(self.registry.create(resource, namespace, body, dry_run=dry_run), 201)
        assert name is not None
        if verb == "get":
            if sub == "scale":
                return _json_response(self.registry.get_scale(namespace, name))
            return _json_response(self.registry.get(resource, namespace, name))
        if verb == "update":
            body = await self._read_json(request)
            self._conflict(verb, resource, sub, namespace, name)
            if sub == "scale":
                return _json_response(self.registry.update_scale(namespace, name, body, dry_run=dry_run))
            if sub == "status":
                return _json_response(self.registry.update_status(resource, namespace, name, body, dry_run=dry_run))
            return _json_response(self.registry.update(resource, namespace, name, body, dry_run=dry_run))
        if verb == "patch":
            return await self._patch(request, resource, sub, namespace, name, dry_run)
        body = await self._read_json(request, optional=True)
        options = dict(body) if isinstance(body, dict) else {}
        grace = _parse_int("gracePeriodSeconds", query.get("gracePeriodSeconds"))
        if grace is not None:
            options["gracePeriodSeconds"] = grace
        if query.get("propagationPolicy"):
            options["propagationPolicy"] = query["propagationPolicy"]
        if query.get("orphanDependents"):
            options["orphanDependents"] = _parse_bool("orphanDependents", query["orphanDependents"])
        self._conflict(verb, resource, sub, namespace, name)
        return _json_response(self.registry.delete(resource, namespace, name, options, dry_run=dry_run))

    @staticmethod
    def _verb(method: str, name: str | None, watching: bool) -> str:
        if method == "GET":
            return "watch" if watching else "get" if name is not None else "list"
        if watching:
            raise errors.method_not_allowed(method)
        verbs = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
        if method not in verbs or (method == "POST") != (name is None):
            raise errors.method_not_allowed(method)
        return verbs[method]

    def _authorize(self, verb: str, resource: Resource, sub: str | None, name: str | None,
                   namespace: str | None) -> None:
        key = f"{resource.name}/{sub}" if sub else resource.name
        with self._faults:
            denied = (verb, key) in self._forbidden
        if denied:
            raise errors.forbidden(verb, key, resource.group, name, namespace,
                                   f"system:serviceaccount:{namespace or 'default'}:{SERVICE_ACCOUNT}")

    def _conflict(self, verb: str, resource: Resource, sub: str | None, namespace: str, name: str | None) -> None:
        key = (verb, f"{resource.name}/{sub}" if sub else resource.name)
        with self._faults:
            left = self._conflicts.get(key, 0)
            if left <= 0:
                return
            self._conflicts[key] = left - 1
        if name is not None:
            with self.storage.lock:
                stored = self.storage.read(resource.name, namespace, name)
                if stored is not None:      # someone else's write: the object moves on
                    self.storage.write(resource.name, namespace, name, copy.deepcopy(stored))
        raise errors.conflict(resource.name, resource.group, name or "")

    @staticmethod
    async def _read_json(request: web.Request, optional: bool = False) -> Any:
        raw = await request.read()
        if not raw.strip():
            if optional:
                return None
            raise errors.bad_request("the body of the request was empty")
        try:
            return json.loads(raw)
        except ValueError as error:
            raise errors.bad_request(f"couldn't get version/kind; json parse error: {error}") from None

    async def _patch(self, request: web.Request, resource: Resource, sub: str | None, namespace: str, name: str,
                     dry_run: bool) -> web.StreamResponse:
        content_type = request.headers.get("Content-Type", "").split(";", 1)[0].strip()
        if content_type not in PATCH_TYPES:
            raise errors.unsupported_media_type(content_type, PATCH_TYPES)
        raw = await request.read()
        if content_type == "application/apply-patch+yaml":
            if sub is not None:
                raise errors.unsupported_media_type(content_type, PATCH_TYPES[:3])
            return self._apply(request, resource, namespace, name, raw, dry_run)
        try:
            patch = json.loads(raw)
        except ValueError as error:
            raise errors.bad_request(f"error decoding patch: {error}") from None
        self._conflict("patch", resource, sub, namespace, name)
        if sub == "scale":
            return _json_response(self.registry.patch_scale(namespace, name, content_type, patch, dry_run=dry_run))
        if sub == "status":
            return _json_response(self.registry.patch_status(resource, namespace, name, content_type, patch,
                                                             dry_run=dry_run))
        return _json_response(self.registry.patch(resource, namespace, name, content_type, patch, dry_run=dry_run))

    def _apply(self, request: web.Request, resource: Resource, namespace: str, name: str, raw: bytes,
               dry_run: bool) -> web.StreamResponse:
        """Server-side apply, simplified: create when missing, else a strategic merge of the applied
        configuration (fields it no longer sets are not removed, unlike the real field ownership)."""
        if not request.query.get("fieldManager"):
            raise errors.invalid("PatchOptions", "meta.k8s.io", "", [(
                "fieldManager", "FieldValueRequired", "Required value: is required for apply patch")])
        try:
            config = yaml.safe_load(raw)
        except yaml.YAMLError as error:
            raise errors.bad_request(f"error decoding YAML: {error}") from None
        if not isinstance(config, dict):
            raise errors.bad_request("error decoding YAML: the applied configuration must be an object")
        self._conflict("patch", resource, None, namespace, name)
        if self.storage.read(resource.name, namespace, name) is None:
            config.setdefault("metadata", {}).setdefault("name", name)
            return _json_response(self.registry.create(resource, namespace, config, dry_run=dry_run), 201)
        return _json_response(self.registry.patch(resource, namespace, name,
                                                  "application/strategic-merge-patch+json", config, dry_run=dry_run))

    def _list(self, request: web.Request, resource: Resource, namespace: str | None) -> web.StreamResponse:
        query = request.query
        labels = parse_label_selector(query.get("labelSelector"))
        fields = parse_field_selector(query.get("fieldSelector"), resource.field_labels)
        limit = _parse_int("limit", query.get("limit"))
        return _json_response(self.registry.list(
            resource, namespace, labels, fields, resource_version=query.get("resourceVersion"),
            match=query.get("resourceVersionMatch"), limit=limit if limit and limit > 0 else None,
            continue_token=query.get("continue")))

    async def _watch(self, request: web.Request, resource: Resource, namespace: str | None,
                     name: str | None) -> web.StreamResponse:
        query = request.query
        labels = parse_label_selector(query.get("labelSelector"))
        field_text = query.get("fieldSelector")
        if name is not None:        # the legacy /watch/.../NAME path
            field_text = f"metadata.name={name}" + (f",{field_text}" if field_text else "")
        fields = parse_field_selector(field_text, resource.field_labels)
        bookmarks = _parse_bool("allowWatchBookmarks", query.get("allowWatchBookmarks"))
        timeout = _parse_int("timeoutSeconds", query.get("timeoutSeconds"))
        version = query.get("resourceVersion") or ""
        initial_events = _parse_bool("sendInitialEvents", query.get("sendInitialEvents"))
        match = query.get("resourceVersionMatch")
        if initial_events and (match != "NotOlderThan" or not bookmarks):
            raise errors.invalid("ListOptions", "meta.k8s.io", "", [(
                "sendInitialEvents", "FieldValueForbidden", "Forbidden: sendInitialEvents is forbidden for watch "
                "unless the WatchList feature gate is enabled and resourceVersionMatch is NotOlderThan with "
                "allowWatchBookmarks")])
        if match and not initial_events:
            raise errors.invalid("ListOptions", "meta.k8s.io", "", [(
                "resourceVersionMatch", "FieldValueForbidden", "Forbidden: resourceVersionMatch is forbidden for "
                                                               "watch unless sendInitialEvents is provided")])
        since = None if version in ("", "0") or initial_events else _parse_int("resourceVersion", version)
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        watcher = Watcher(resource.name, namespace, labels, fields, 0)
        with self.storage.lock:
            too_old = since is not None and since < self.storage.compacted
            if not too_old:
                self.storage.watch(watcher, since)
                self._watches[watcher] = (request, asyncio.current_task())
                if initial_events:      # the end of the initial state, as a watch-list stream marks it
                    watcher.queue.put_nowait(encode_event("BOOKMARK", {
                        "kind": resource.kind, "apiVersion": resource.api_version, "metadata": {
                            "resourceVersion": str(watcher.seen),
                            "annotations": {"k8s.io/initial-events-end": "true"}}}))
        if too_old:
            status = errors.expired(f"too old resource version: {since} ({self.storage.compacted})").status
            await response.write(encode_event("ERROR", status))
            await response.write_eof()
            return response
        try:
            await self._stream(response, watcher, resource, bookmarks, timeout)
        except ConnectionResetError:            # the client went away: its watch just ends, as on a real server
            pass
        finally:
            self.storage.unwatch(watcher)
            self._watches.pop(watcher, None)
        return response

    async def _stream(self, response: web.StreamResponse, watcher: Watcher, resource: Resource, bookmarks: bool,
                      timeout: int | None) -> None:
        clock = time.monotonic
        deadline = clock() + timeout if timeout else None
        next_bookmark = clock() + self.bookmark_interval if bookmarks else None

        def bookmark() -> bytes:
            return encode_event("BOOKMARK", {"kind": resource.kind, "apiVersion": resource.api_version,
                                             "metadata": {"resourceVersion": str(watcher.seen)}})

        while True:
            waits = [moment - clock() for moment in (deadline, next_bookmark) if moment is not None]
            try:
                line = await asyncio.wait_for(watcher.queue.get(), max(0.0, min(waits)) if waits else None)
            except TimeoutError:
                if not watcher.queue.empty():
                    continue
                if deadline is not None and clock() >= deadline:
                    if bookmarks:
                        await response.write(bookmark())
                    break
                if next_bookmark is not None and clock() >= next_bookmark:
                    await response.write(bookmark())
                    next_bookmark = clock() + self.bookmark_interval
                continue
            if line == Watcher.END:
                break
            await response.write(line)
        await response.write_eof()

    async def _namespace_request(self, request: web.Request, name: str | None) -> web.StreamResponse:
        """Namespaces are implicit here: every name exists (Active) and the list names those in use. Creating
        one answers it; deleting one deletes everything in it, as the namespace controller would."""
        def namespace(name: str, phase: str = "Active") -> dict[str, Any]:
            return {"kind": "Namespace", "apiVersion": "v1", "metadata": {
                "name": name, "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{name}.namespace.vamp-fake")),
                "resourceVersion": str(FIRST_REVISION), "creationTimestamp": "2024-01-01T00:00:00Z",
                "labels": {"kubernetes.io/metadata.name": name}},
                "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": phase}}
        if request.method == "GET" and name is not None:
            return _json_response(namespace(name))
        if request.method == "GET":
            with self.storage.lock:
                names = {"default", "kube-system"} | {ns for objects in self.storage.objects.values()
                                                      for ns, _ in objects}
                revision = self.storage.revision
            return _json_response({"kind": "NamespaceList", "apiVersion": "v1", "metadata": {
                "resourceVersion": str(revision)}, "items": [
                    {k: v for k, v in namespace(n).items() if k not in ("kind", "apiVersion")}
                    for n in sorted(names)]})
        if request.method == "POST" and name is None:
            body = await self._read_json(request)
            created = (body.get("metadata") or {}).get("name") if isinstance(body, dict) else None
            if not created:
                raise errors.invalid("Namespace", "", "", [("metadata.name", "FieldValueRequired",
                                                            "Required value: name or generateName is required")])
            return _json_response(namespace(created), 201)
        if request.method == "DELETE" and name is not None:
            for resource in RESOURCES.values():
                for obj in self.storage.items(resource.name, name):
                    with contextlib.suppress(ApiError):
                        self.registry.delete(resource, name, obj["metadata"]["name"])
            return _json_response(namespace(name, "Terminating"))
        raise errors.method_not_allowed(request.method)

    def _access_review(self, body: Any) -> dict[str, Any]:
        """A SelfSubjectAccessReview answered from the faults: allowed unless forbidden."""
        attributes = ((body or {}).get("spec") or {}).get("resourceAttributes") or {}
        resource = attributes.get("resource", "")
        key = f"{resource}/{attributes['subresource']}" if attributes.get("subresource") else resource
        with self._faults:
            denied = (attributes.get("verb", ""), key) in self._forbidden
        review = dict(body) if isinstance(body, dict) else {}
        review.update({"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
                       "metadata": {"creationTimestamp": None}})
        where = attributes.get("namespace", "")
        review["status"] = {"allowed": False, "reason": ""} if denied else {
            "allowed": True, "reason": f'RBAC: allowed by RoleBinding "{SERVICE_ACCOUNT}/{where}" of Role '
                                       f'"{SERVICE_ACCOUNT}" to ServiceAccount "{SERVICE_ACCOUNT}/{where}"'}
        return review

    def _discovery(self, path: str) -> dict[str, Any] | None:
        groups: dict[str, list[Resource]] = {}
        for resource in RESOURCES.values():
            groups.setdefault(resource.group, []).append(resource)
        if path == "/api":
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{self._port}"}]}
        if path == "/apis":
            return {"kind": "APIGroupList", "apiVersion": "v1",
                    "groups": [_group(group) for group in sorted([*groups, "authorization.k8s.io"]) if group]}
        for group, resources in groups.items():
            if group and path == f"/apis/{group}":
                return {"kind": "APIGroup", "apiVersion": "v1", **_group(group)}
            if path == resources[0].group_version_path:
                return _resource_list(resources)
        return None


def _group(group: str) -> dict[str, Any]:
    version = {"groupVersion": f"{group}/v1", "version": "v1"}
    return {"name": group, "versions": [version], "preferredVersion": version}


def _resource_list(resources: list[Resource]) -> dict[str, Any]:
    entries: list[dict[str, Any]] = []
    for resource in resources:
        entry = {"name": resource.name, "singularName": resource.kind.lower(), "namespaced": True,
                 "kind": resource.kind, "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}
        if resource.short_names:
            entry["shortNames"] = list(resource.short_names)
        entries.append(entry)
        for sub in SUBRESOURCES.get(resource.name, ()):
            if sub == "scale":
                entries.append({"name": f"{resource.name}/scale", "singularName": "", "namespaced": True,
                                "group": "autoscaling", "version": "v1", "kind": "Scale",
                                "verbs": ["get", "patch", "update"]})
            else:
                entries.append({"name": f"{resource.name}/{sub}", "singularName": "", "namespaced": True,
                                "kind": resource.kind, "verbs": ["get", "patch", "update"]})
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": resources[0].api_version,
            "resources": entries}

