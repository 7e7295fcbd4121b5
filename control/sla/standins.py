"""STAND-INS, to be removed when issue 11's metrics aggregator and event log join the platform: `vamp run` hands
the SLA monitor and the workflow runner these until then (control/platform.py), and the real objects replace
them there.

- `NoMetrics` answers "no requests" for every scope: measured SLAs (response time, error rate) never act.
- `StoreEventLog` publishes to the store's event table (`Store.add_event`, what `POST /api/v1/events` writes
  too), reads it back, and follows it by polling, so `escalation_only` SLAs and event-scheduled workflows act on
  posted events.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

from control.events.model import Event, EventFilter
from control.metrics.model import Scope, Summary
from control.store import Store

POLL = 0.5                       # seconds between two looks at the event table


class NoMetrics:
    def summary(self, scopes: Sequence[Scope], window: float) -> Summary:
        return Summary(window=window, requests=0, classes=(0, 0, 0, 0, 0), upstream_errors=0, in_flight=0,
                       mean_ms=None, p50_ms=None, p95_ms=None, p99_ms=None)


class StoreEventLog:
    def __init__(self, store: Store) -> None:
        self.store = store

    def publish(self, tags: Iterable[str], value: Any = None, type: str = "event") -> Event:
        tags = sorted(set(tags))
        event_id = self.store.add_event(tags, value, type)
        found = self.store.events(tags, type, limit=1)
        timestamp = found[0]["timestamp"] if found and found[0]["id"] == event_id else 0.0
        return Event(event_id, timestamp, type, tuple(tags), value)

    def query(self, where: EventFilter, limit: int = 1000) -> list[Event]:
        rows = self.store.events(list(where.tags), where.type, since=where.gte, limit=limit)
        return [event for event in map(_event, rows) if where.matches(event)]

    async def follow(self, where: EventFilter, after: int | None = None) -> AsyncIterator[Event]:
        """Polls the events recorded since the newest one seen (an event posted with an older `timestamp` than
        that is missed: a stand-in's limit)."""
        newest = self.store.events(limit=1)
        last = after if after is not None else (newest[0]["id"] if newest else 0)
        since = newest[0]["timestamp"] if newest and after is None else None
        while True:
            rows = self.store.events(list(where.tags), where.type, since=since, limit=10_000)
            for event in sorted((_event(row) for row in rows if row["id"] > last), key=lambda e: e.id):
                last = event.id
                since = max(since or 0.0, event.timestamp)
                if where.matches(event):
                    yield event
            await asyncio.sleep(POLL)


def _event(row: dict[str, Any]) -> Event:
    return Event(row["id"], row["timestamp"], row["type"], tuple(row["tags"]), row["value"])
