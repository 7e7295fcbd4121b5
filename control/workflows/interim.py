"""Stand-ins for two parts of the platform that the workflow runner uses and that are built beside it (issue 11):
`StoreEvents`, an `EventSink` and `EventSource` (control/events/model.py) over the store's event table, until the
platform's event log takes its place; and `NoMetrics`, a `MetricsReader` (control/metrics/model.py) that has seen
no request, until the metrics aggregator does.

`StoreEvents.publish` records an event and wakes the followers; `follow` reads the table for events newer than
the last one it gave, when woken and at least every POLL seconds, so events that other writers (the API, the
engine) record reach it too.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

from control.events.model import Event, EventFilter
from control.metrics.model import Scope, Summary
from control.store import Store

POLL = 0.5          # seconds between looks at the table when nothing woke a follower
BATCH = 1000        # events read per look


class StoreEvents:
    def __init__(self, store: Store, poll: float = POLL) -> None:
        self.store = store
        self.poll = poll
        self._published = asyncio.Event()

    def publish(self, tags: Iterable[str], value: Any = None, type: str = "event") -> Event:
        unique = sorted(set(tags))
        timestamp = time.time()
        event_id = self.store.add_event(unique, value, type, timestamp)
        self._published.set()
        self._published = asyncio.Event()
        return Event(event_id, timestamp, type, tuple(unique), value)

    def query(self, where: EventFilter, limit: int = 1000) -> list[Event]:
        bounded = any(bound is not None for bound in (where.gt, where.gte, where.lt, where.lte))
        found = []
        for event in map(_event, self.store.events(list(where.tags), where.type,
                                                   limit=10**9 if bounded else limit)):
            if where.matches(event):
                found.append(event)
                if len(found) >= limit:
                    break
        return found

    async def follow(self, where: EventFilter, after: int | None = None) -> AsyncIterator[Event]:
        last = self._latest() if after is None else after
        while True:
            woken = self._published
            newer = sorted((event for event in map(_event, self.store.events(limit=BATCH)) if event.id > last),
                           key=lambda event: event.id)
            for event in newer:
                last = event.id
                if where.matches(event):
                    yield event
            if not newer:
                try:
                    await asyncio.wait_for(woken.wait(), self.poll)
                except TimeoutError:
                    pass

    def _latest(self) -> int:
        newest = self.store.events(limit=1)
        return newest[0]["id"] if newest else 0


def _event(row: dict[str, Any]) -> Event:
    return Event(row["id"], row["timestamp"], row["type"], tuple(row["tags"]), row["value"])


class NoMetrics:
    def summary(self, scopes: Sequence[Scope], window: float) -> Summary:
        return Summary(window=window, requests=0, classes=(0, 0, 0, 0, 0), upstream_errors=0, in_flight=0,
                       mean_ms=None, p50_ms=None, p95_ms=None, p99_ms=None)
