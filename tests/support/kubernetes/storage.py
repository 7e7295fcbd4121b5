"""The fake's etcd: every object of every resource, one global revision that each write bumps (an object's
resourceVersion is the revision that last wrote it, as etcd's mod_revision), the history of changes since the
last compaction (what a watch from an older resourceVersion replays, what a list at an exact resourceVersion
is rebuilt from), and the open watches, each fed every change in revision order.

It is shared between threads: writes take `lock`; watches and change listeners are called on the fake's event
loop, in revision order, through `loop.call_soon_threadsafe`. Stored objects are never changed in place: every
write stores a new dict, so a Change may hand out what it holds without copying.
"""
from __future__ import annotations

import asyncio
import copy
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .selectors import FieldSelector, LabelSelector
from .resources import RESOURCES, field_value

FIRST_REVISION = 1000     # etcd of a cluster that has been up a while: resourceVersions are large numbers


@dataclass(frozen=True)
class Change:
    revision: int
    type: str                       # ADDED, MODIFIED or DELETED
    resource: str
    namespace: str
    name: str
    obj: dict[str, Any]             # after the change; for DELETED the last state, at the deleting revision
    previous: dict[str, Any] | None


class Watcher:
    """One open watch: a queue of encoded event lines on the fake's loop, filtered as the API server's watch
    cache filters them (an object that stops matching the selector is DELETED for this watch, one that starts
    matching is ADDED). `seen` is the revision through which every change has been considered: a bookmark
    carries it."""

    END = b""

    def __init__(self, resource: str, namespace: str | None, labels: LabelSelector, fields: FieldSelector,
                 since: int) -> None:
        self.resource = resource
        self.namespace = namespace
        self.labels = labels
        self.fields = fields
        self.seen = since
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.ended = False

    def matches(self, obj: dict[str, Any] | None) -> bool:
        if obj is None:
            return False
        return self.labels.matches((obj.get("metadata") or {}).get("labels")) and \
            self.fields.matches(lambda field: field_value(obj, field))

    def offer(self, change: Change) -> None:
        if self.ended:
            return
        self.seen = max(self.seen, change.revision)
        if change.resource != self.resource or (self.namespace is not None and change.namespace != self.namespace):
            return
        was, now = self.matches(change.previous), self.matches(change.obj)
        if change.type == "DELETED":
            kind = "DELETED" if was or now else None
        elif change.type == "ADDED":
            kind = "ADDED" if now else None
        else:
            kind = "MODIFIED" if was and now else "ADDED" if now else "DELETED" if was else None
        if kind is not None:
            self.send(kind, change.obj)

    def send(self, kind: str, obj: dict[str, Any]) -> None:
        if not self.ended:
            self.queue.put_nowait(encode_event(kind, with_type(self.resource, obj)))

    def expire(self, status: dict[str, Any]) -> None:
        """Send one ERROR event with `status` and end the stream."""
        if not self.ended:
            self.queue.put_nowait(encode_event("ERROR", status))
            self.end()

    def end(self) -> None:
        if not self.ended:
            self.ended = True
            self.queue.put_nowait(self.END)


def encode_event(kind: str, obj: dict[str, Any]) -> bytes:
    return json.dumps({"type": kind, "object": obj}, separators=(",", ":")).encode() + b"\n"


def with_type(resource: str, obj: dict[str, Any]) -> dict[str, Any]:
    """The object with kind and apiVersion first, as a single object (not a list item) is served."""
    definition = RESOURCES[resource]
    typed = {"kind": definition.kind, "apiVersion": definition.api_version}
    typed.update((key, value) for key, value in obj.items() if key not in ("kind", "apiVersion"))
    return typed


class Storage:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.revision = FIRST_REVISION
        self.objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {name: {} for name in RESOURCES}
        self.history: list[Change] = []
        self.compacted = FIRST_REVISION       # a watch or exact list before this revision is too old
        self.watchers: set[Watcher] = set()
        self.listeners: list[Callable[[str, str, dict[str, Any]], None]] = []
        self.loop: asyncio.AbstractEventLoop | None = None

    def read(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self.lock:
            return self.objects[resource].get((namespace, name))

    def items(self, resource: str, namespace: str | None) -> list[dict[str, Any]]:
        """The stored objects, in etcd's key order (namespace, then name)."""
        with self.lock:
            return [obj for (ns, _), obj in sorted(self.objects[resource].items())
                    if namespace is None or ns == namespace]

    def write(self, resource: str, namespace: str, name: str, obj: dict[str, Any] | None) -> Change:
        """Store `obj` (None: delete) at a new revision, set its resourceVersion, tell every watch."""
        with self.lock:
            previous = self.objects[resource].get((namespace, name))
            self.revision += 1
            if obj is None:
                if previous is None:
                    raise KeyError(name)
                stored = copy.deepcopy(previous)
                del self.objects[resource][(namespace, name)]
                kind = "DELETED"
            else:
                stored = copy.deepcopy(obj)
                self.objects[resource][(namespace, name)] = stored
                kind = "ADDED" if previous is None else "MODIFIED"
            stored.setdefault("metadata", {})["resourceVersion"] = str(self.revision)
            change = Change(self.revision, kind, resource, namespace, name, stored, previous)
            self.history.append(change)
            self._publish(change)
            return change

    def _publish(self, change: Change) -> None:
        if self.loop is None or self.loop.is_closed():
            return
        for watcher in self.watchers:
            self.loop.call_soon_threadsafe(watcher.offer, change)
        for listener in self.listeners:
            self.loop.call_soon_threadsafe(listener, change.type, change.resource, copy.deepcopy(change.obj))

    def watch(self, watcher: Watcher, replay_from: int | None) -> None:
        """Open `watcher` (on the fake's loop): replay the history after `replay_from` (None: send what exists
        as ADDED), then every change. Too old a `replay_from` is the caller's to refuse first."""
        with self.lock:
            if replay_from is None:
                for obj in self.items(watcher.resource, watcher.namespace):
                    if watcher.matches(obj):
                        watcher.send("ADDED", obj)
            else:
                for change in self.history:
                    if change.revision > replay_from:
                        watcher.offer(change)
            watcher.seen = self.revision
            self.watchers.add(watcher)

    def unwatch(self, watcher: Watcher) -> None:
        with self.lock:
            self.watchers.discard(watcher)

    def compact(self) -> list[Watcher]:
        """Forget the history up to now; returns the open watches (the caller ends them)."""
        with self.lock:
            self.history.clear()
            self.compacted = self.revision
            watchers = list(self.watchers)
            self.watchers.clear()
            return watchers

    def state_at(self, resource: str, namespace: str | None, revision: int) -> list[dict[str, Any]] | None:
        """The objects as they were at `revision` (None when that is compacted away), in key order."""
        with self.lock:
            if revision < self.compacted:
                return None
            state = {key: obj for key, obj in self.objects[resource].items()}
            for change in reversed(self.history):
                if change.revision <= revision:
                    break
                if change.resource != resource:
                    continue
                key = (change.namespace, change.name)
                if change.previous is None:
                    state.pop(key, None)
                else:
                    state[key] = change.previous
            return [obj for (ns, _), obj in sorted(state.items()) if namespace is None or ns == namespace]
