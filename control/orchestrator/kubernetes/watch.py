"""One resilient list-then-watch of one kind of object: what the API holds, kept current in memory.

`ListWatch.run` lists the objects (in pages), then watches from the list's resourceVersion with bookmarks,
keeping the resourceVersion of every event and bookmark, and watches again from it whenever the stream ends
(the server ends each after `timeout_seconds`). It lists afresh after 410 Gone (the version is too old: an
answer or an ERROR event with code 410); the fresh list replaces the map whole, so objects deleted meanwhile
are gone from it. Lost connections and 5xx are retried with back-off (`gateway.common.backoff`); an answer that refuses
the list or the watch (403 Forbidden: a missing permission) is handed to `on_problem` and retried with back-off
too, and `on_problem(None)` follows once it works again. After each change `on_change` gets the map
name -> object (the API's JSON), consistent with one resourceVersion; `synced` is set after the first list.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from control.orchestrator.kubernetes import api
from gateway.common.backoff import Backoff

log = logging.getLogger("vamp.orchestrator.kubernetes")

WATCH_SECONDS = 240           # the server ends each watch after this; the next starts from the last version
LIST_PAGE = 500               # objects per list call
QUICK_END = 1.0               # a watch that ends this soon without an event is waited on (back-off)

Objects = dict[str, dict[str, Any]]


class Gone(Exception):
    """The resourceVersion watched from is too old (410): list afresh."""


class ListWatch:
    """The objects `list_method(*args, **query)` returns, kept current (see the module docstring)."""

    def __init__(self, what: str, list_method: api.ApiCall, *args: Any, on_change: Callable[[Objects], None],
                 on_problem: Callable[[str | None], None] | None = None, timeout_seconds: int = WATCH_SECONDS,
                 **query: Any) -> None:
        self.what = what
        self.list_method = list_method
        self.args = args
        self.query = query
        self.on_change = on_change
        self.on_problem = on_problem
        self.timeout_seconds = timeout_seconds
        self.objects: Objects = {}
        self.resource_version: str | None = None
        self.synced = asyncio.Event()
        self.problem: str | None = None
        self._failing = False
        self._backoff = Backoff()

    async def run(self) -> None:
        """List and watch until cancelled; every error is logged and retried."""
        while True:
            try:
                if self.resource_version is None:
                    await self._list()
                await self._watch()
            except Gone:
                log.info("the watch of %s is too old (410 Gone): listing them afresh", self.what)
                self.resource_version = None
            except ApiException as exc:
                if exc.status == 410:
                    log.info("the list of %s expired (410 Gone): listing them afresh", self.what)
                    self.resource_version = None
                    continue
                await self._failed(exc, report=not api.transient(exc))
            except api.TRANSPORT_ERRORS as exc:
                await self._failed(exc, report=False)
            except Exception:  # noqa: BLE001 - an answer unlike the API's must not end the watch
                log.exception("unexpected trouble watching %s: listing them afresh", self.what)
                self.resource_version = None
                await self._backoff.wait()

    async def _failed(self, exc: BaseException, *, report: bool) -> None:
        text = api.describe(exc)
        if not self._failing:
            log.warning("cannot watch %s: %s; trying again", self.what, text)
        self._failing = True
        if report:
            self._report(text)
        await self._backoff.wait()

    def _recovered(self) -> None:
        if self._failing:
            log.info("watching %s again", self.what)
        self._failing = False
        self._backoff.reset()
        self._report(None)

    def _report(self, problem: str | None) -> None:
        if problem == self.problem:
            return
        self.problem = problem
        if self.on_problem is not None:
            try:
                self.on_problem(problem)
            except Exception:  # noqa: BLE001 - the owner's trouble must not end the watch
                log.exception("reporting a problem watching %s failed", self.what)

    async def _list(self) -> None:
        items: Objects = {}
        page: str | None = None
        while True:
            query = dict(self.query, limit=LIST_PAGE, **({"_continue": page} if page else {}))
            body = await api.call(self.list_method, *self.args, **query)
            for item in body.get("items") or ():
                items[item["metadata"]["name"]] = item
            metadata = body.get("metadata") or {}
            page = metadata.get("continue")
            if not page:
                break
        self.objects = items
        self.resource_version = metadata.get("resourceVersion") or None
        self._recovered()
        self.synced.set()
        self._changed()

    async def _watch(self) -> None:
        started = time.monotonic()
        events = 0
        response = await api.stream(self.list_method, *self.args, resource_version=self.resource_version,
                                    allow_watch_bookmarks=True, timeout_seconds=self.timeout_seconds, **self.query)
        try:
            while line := await response.content.readline():
                if not line.strip():
                    continue
                events += 1
                self._apply(json.loads(line))
        finally:
            response.close()
        if events == 0 and time.monotonic() - started < QUICK_END:
            await self._backoff.wait()          # a server that ends each watch at once is not asked in a loop

    def _apply(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise Gone()
            raise api.error(int(obj.get("code") or 500), obj.get("reason"), json.dumps(obj))
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if kind == "BOOKMARK":
            self.resource_version = version or self.resource_version
            self._recovered()
            return
        name = obj["metadata"]["name"]
        if kind in ("ADDED", "MODIFIED"):
            self.objects[name] = obj
        elif kind == "DELETED":
            self.objects.pop(name, None)
        else:
            raise ValueError(f"a watch event of type {kind!r}")
        self.resource_version = version or self.resource_version
        self._recovered()
        self._changed()

    def _changed(self) -> None:
        try:
            self.on_change(self.objects)
        except Exception:  # noqa: BLE001 - the owner's trouble must not end the watch
            log.exception("handling a change of %s failed", self.what)
