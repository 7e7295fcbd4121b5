"""The control plane's store: SQLite (stdlib `sqlite3`, WAL) in the state directory.

Artifacts of every kind (breeds, blueprints, scales, conditions, gateways, deployments, …) are JSON
documents keyed by (kind, name); events are an append-only table whose ids only ever grow (AUTOINCREMENT: an
id is never reused, even after its event was pruned), selected with `control.events.model.EventFilter` in SQL
and pruned by age and count (control.events.log keeps them bounded). Each API write is one transaction, so a
process killed between two writes loses neither, and a restart resumes from exactly what was committed;
`on_commit` runs an action only once the transaction it belongs to has committed.

`ControlStore` is what the control plane (engine, API, event log, workflow runner) asks of a store; `Store`
(SQLite, the default) and `control.replicas.store.EtcdStore` (`vamp run --store etcd://…`, shared by replicas)
both are one.
"""
from __future__ import annotations

import builtins
import contextlib
import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol
from collections.abc import Callable, Iterable, Iterator

from control.events.model import Event, EventFilter

# The kinds kept as written, read and written through the API's artifact paths (deployments and gateways are the
# engine's). Of these, workflows run: the API tells control.workflows.runner of each change.
STATIC_KINDS = ("breeds", "blueprints", "slas", "scales", "escalations", "conditions", "workflows")

SCHEMA = """
CREATE TABLE IF NOT EXISTS artifacts (
    kind     TEXT NOT NULL,
    name     TEXT NOT NULL,
    body     TEXT NOT NULL,
    created  REAL NOT NULL,
    updated  REAL NOT NULL,
    PRIMARY KEY (kind, name)
);
CREATE TABLE IF NOT EXISTS events (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    timestamp REAL NOT NULL,
    type      TEXT NOT NULL,
    tags      TEXT NOT NULL,
    value     TEXT
);
CREATE INDEX IF NOT EXISTS events_time ON events (timestamp);
"""


class ControlStore(Protocol):
    """The control plane's store: artifacts by (kind, name) and the event log's events. Calls are synchronous,
    made from the event loop (or a thread); writes outside `transaction()` are each a transaction of their own."""

    def close(self) -> None: ...

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        """Everything inside commits together or not at all (nested uses join the outer one)."""
        ...

    def on_commit(self, action: Callable[[], None]) -> None:
        """Run `action` once the transaction in progress commits (at once outside one); never if it rolls back."""
        ...

    def get(self, kind: str, name: str) -> dict[str, Any] | None: ...

    def list(self, kind: str, offset: int = 0, limit: int | None = None) -> tuple[builtins.list[dict[str, Any]], int]:
        """A page of one kind's artifacts in name order, and how many there are in all."""
        ...

    def put(self, kind: str, name: str, body: dict[str, Any]) -> bool:
        """Create or replace; True when it was created."""
        ...

    def delete(self, kind: str, name: str) -> bool: ...

    def add_event(self, tags: Iterable[str], value: Any = None, type: str = "event",
                  timestamp: float | None = None) -> int:
        """Store an event; its id, larger than any given before."""
        ...

    def events(self, tags: Iterable[str] | None = None, type: str | None = None, since: float | None = None,
               limit: int = 1000) -> builtins.list[dict[str, Any]]: ...

    def query_events(self, where: EventFilter, *, limit: int | None = None, offset: int = 0,
                     after: int | None = None, oldest_first: bool = False) -> builtins.list[Event]: ...

    def count_events(self, where: EventFilter) -> int: ...

    def last_event_id(self) -> int: ...

    def prune_events(self, *, older_than: float | None = None, keep: int | None = None) -> int: ...


class NestedTransactions:
    """What every store's transactions share: a transaction used inside another joins it, so only the outermost
    one begins, commits or rolls back (a store's `_begin`, `_commit`, `_rollback`), and the actions given to
    `on_commit` run once it committed, never when it did not. One thread at a time (`_lock`)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._depth = 0
        self._after_commit: list[Callable[[], None]] = []

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Everything inside commits together or not at all (nested uses join the outer one)."""
        with self._lock:
            outer = self._depth == 0
            if outer:
                self._begin()
            self._depth += 1
            try:
                yield
            except BaseException:
                self._depth -= 1
                if outer:
                    self._after_commit.clear()
                    self._rollback()
                raise
            self._depth -= 1
            if outer:
                try:
                    self._commit()
                except BaseException:
                    self._after_commit.clear()
                    raise
                actions, self._after_commit = self._after_commit, []
                for action in actions:
                    action()

    def on_commit(self, action: Callable[[], None]) -> None:
        """Run `action` once the transaction in progress commits (at once outside a transaction); never if it
        rolls back."""
        with self._lock:
            if self._depth:
                self._after_commit.append(action)
                return
        action()

    def _begin(self) -> None:
        raise NotImplementedError

    def _commit(self) -> None:
        """Make the outermost transaction's writes durable, all or none (raise: none)."""
        raise NotImplementedError

    def _rollback(self) -> None:
        raise NotImplementedError


class EventDocuments:
    """A store's events as plain documents, over its own `query_events`: the same for every store."""

    def query_events(self, where: EventFilter, *, limit: int | None = None, offset: int = 0,
                     after: int | None = None, oldest_first: bool = False) -> list[Event]:
        raise NotImplementedError

    def events(self, tags: Iterable[str] | None = None, type: str | None = None, since: float | None = None,
               limit: int = 1000) -> list[dict[str, Any]]:
        """Newest first, as plain documents; every tag in `tags` must be present (a tag `a:b` also counts as `a`)."""
        where = EventFilter(tags=tuple(tags or ()), type=type, gte=since)
        return [{"id": event.id, "timestamp": event.timestamp, "type": event.type, "tags": list(event.tags),
                 "value": event.value} for event in self.query_events(where, limit=limit)]


class Store(NestedTransactions, EventDocuments):
    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def _begin(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def _commit(self) -> None:
        try:
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def _rollback(self) -> None:
        self._db.execute("ROLLBACK")

    # -- artifacts ------------------------------------------------------------------------------------
    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT body FROM artifacts WHERE kind = ? AND name = ?",
                                   (kind, name)).fetchone()
        return json.loads(row[0]) if row else None

    def list(self, kind: str, offset: int = 0, limit: int | None = None) -> tuple[list[dict[str, Any]], int]:
        """A page of one kind's artifacts in name order, and how many there are in all."""
        with self._lock:
            total = self._db.execute("SELECT COUNT(*) FROM artifacts WHERE kind = ?", (kind,)).fetchone()[0]
            rows = self._db.execute("SELECT body FROM artifacts WHERE kind = ? ORDER BY name LIMIT ? OFFSET ?",
                                    (kind, -1 if limit is None else limit, offset)).fetchall()
        return [json.loads(row[0]) for row in rows], total

    def put(self, kind: str, name: str, body: dict[str, Any]) -> bool:
        """Create or replace; True when it was created."""
        now = time.time()
        text = json.dumps(body, sort_keys=False)
        with self.transaction():
            exists = self._db.execute("SELECT 1 FROM artifacts WHERE kind = ? AND name = ?",
                                      (kind, name)).fetchone() is not None
            if exists:
                self._db.execute("UPDATE artifacts SET body = ?, updated = ? WHERE kind = ? AND name = ?",
                                 (text, now, kind, name))
            else:
                self._db.execute("INSERT INTO artifacts (kind, name, body, created, updated) VALUES (?, ?, ?, ?, ?)",
                                 (kind, name, text, now, now))
        return not exists

    def delete(self, kind: str, name: str) -> bool:
        with self.transaction():
            cursor = self._db.execute("DELETE FROM artifacts WHERE kind = ? AND name = ?", (kind, name))
        return cursor.rowcount > 0

    # -- events ---------------------------------------------------------------------------------------
    def add_event(self, tags: Iterable[str], value: Any = None, type: str = "event",
                  timestamp: float | None = None) -> int:
        stamp = time.time() if timestamp is None else timestamp
        with self.transaction():
            cursor = self._db.execute("INSERT INTO events (timestamp, type, tags, value) VALUES (?, ?, ?, ?)",
                                      (stamp, type, json.dumps(sorted(set(tags))), json.dumps(value)))
        return int(cursor.lastrowid)  # type: ignore[arg-type]  # set by the INSERT

    def query_events(self, where: EventFilter, *, limit: int | None = None, offset: int = 0,
                     after: int | None = None, oldest_first: bool = False) -> builtins.list[Event]:
        """The events `where` matches (with an id above `after`, if given), newest first unless `oldest_first`."""
        clauses, args = _event_clauses(where)
        if after is not None:
            clauses.append("id > ?")
            args.append(after)
        query = "SELECT id, timestamp, type, tags, value FROM events"
        if clauses:
            query += " WHERE " + " AND ".join(clauses)
        query += f" ORDER BY id {'ASC' if oldest_first else 'DESC'} LIMIT ? OFFSET ?"
        args += [-1 if limit is None else limit, offset]
        with self._lock:
            rows = self._db.execute(query, args).fetchall()
        return [Event(id=row[0], timestamp=row[1], type=row[2], tags=tuple(json.loads(row[3])),
                      value=json.loads(row[4]) if row[4] is not None else None) for row in rows]

    def count_events(self, where: EventFilter) -> int:
        clauses, args = _event_clauses(where)
        query = "SELECT COUNT(*) FROM events" + (" WHERE " + " AND ".join(clauses) if clauses else "")
        with self._lock:
            return int(self._db.execute(query, args).fetchone()[0])

    def last_event_id(self) -> int:
        """The largest id ever given to an event (0 before the first), whether or not it is still kept."""
        with self._lock:
            row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        return int(row[0]) if row else 0

    def prune_events(self, *, older_than: float | None = None, keep: int | None = None) -> int:
        """Remove the events stamped before `older_than` and all but the `keep` newest; how many went."""
        removed = 0
        with self.transaction():
            if older_than is not None:
                removed += self._db.execute("DELETE FROM events WHERE timestamp < ?", (older_than,)).rowcount
            if keep is not None:
                removed += self._db.execute(
                    "DELETE FROM events WHERE id <= (SELECT id FROM events ORDER BY id DESC LIMIT 1 OFFSET ?)",
                    (keep,)).rowcount
        return removed


def _event_clauses(where: EventFilter) -> tuple[list[str], list[Any]]:
    """SQL conditions (and their arguments) selecting what `where` matches: EventFilter.matches in SQL."""
    clauses: list[str] = []
    args: list[Any] = []
    if where.type is not None:
        clauses.append("type = ?")
        args.append(where.type)
    for operator, bound in ((">", where.gt), (">=", where.gte), ("<", where.lt), ("<=", where.lte)):
        if bound is not None:
            clauses.append(f"timestamp {operator} ?")
            args.append(bound)
    for tag in where.tags:
        if ":" in tag:           # only an event tag equal to it
            clauses.append("EXISTS (SELECT 1 FROM json_each(events.tags) WHERE value = ?)")
            args.append(tag)
        else:                    # it, or any `tag:…` (which implies it)
            clauses.append("EXISTS (SELECT 1 FROM json_each(events.tags) WHERE value = ? OR substr(value, 1, ?) = ?)")
            args += [tag, len(tag) + 1, tag + ":"]
    return clauses, args
