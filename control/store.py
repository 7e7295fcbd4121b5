"""The control plane's store: SQLite (stdlib `sqlite3`, WAL) in the state directory.

Artifacts of every kind (breeds, blueprints, scales, conditions, gateways, deployments, …) are JSON
documents keyed by (kind, name); events are an append-only table. Each API write is one transaction, so a
process killed between two writes loses neither, and a restart resumes from exactly what was committed.
"""
from __future__ import annotations

import builtins
import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from collections.abc import Iterable, Iterator

# The kinds the store only keeps, as written: nothing runs them (deployments and gateways are the engine's).
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


class Store:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self._lock = threading.RLock()
        self._depth = 0

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Everything inside commits together or not at all (nested uses join the outer one)."""
        with self._lock:
            outer = self._depth == 0
            if outer:
                self._db.execute("BEGIN IMMEDIATE")
            self._depth += 1
            try:
                yield
            except BaseException:
                self._depth -= 1
                if outer:
                    self._db.execute("ROLLBACK")
                raise
            self._depth -= 1
            if outer:
                self._db.execute("COMMIT")

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
        with self.transaction():
            cursor = self._db.execute("INSERT INTO events (timestamp, type, tags, value) VALUES (?, ?, ?, ?)",
                                      (timestamp or time.time(), type, json.dumps(sorted(set(tags))),
                                       json.dumps(value)))
        return int(cursor.lastrowid)  # type: ignore[arg-type]  # set by the INSERT

    # (`builtins.list`: in this class `list` is the method above)
    def events(self, tags: Iterable[str] | None = None, type: str | None = None, since: float | None = None,
               limit: int = 1000) -> builtins.list[dict[str, Any]]:
        """Newest first; every tag in `tags` must be present (a tag `a:b` also counts as `a`)."""
        query = "SELECT id, timestamp, type, tags, value FROM events"
        args: builtins.list[object] = []
        clauses = []
        if type is not None:
            clauses.append("type = ?")
            args.append(type)
        if since is not None:
            clauses.append("timestamp >= ?")
            args.append(since)
        if clauses:
            query += " WHERE " + " AND ".join(clauses)
        query += " ORDER BY id DESC"
        wanted = set(tags or ())
        found = []
        with self._lock:
            for row in self._db.execute(query, args):
                event_tags = json.loads(row[3])
                implied = set(event_tags) | {tag.split(":", 1)[0] for tag in event_tags}
                if wanted <= implied:
                    found.append({"id": row[0], "timestamp": row[1], "type": row[2], "tags": event_tags,
                                  "value": json.loads(row[4])})
                    if len(found) >= limit:
                        break
        return found
