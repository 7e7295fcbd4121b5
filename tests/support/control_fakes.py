"""Fakes of the control plane's surfaces for tests of what reads metrics and events: a virtual clock, a
`MetricsReader` whose figures the test sets, and an event log (`EventSink` + `EventSource`) in memory.

    clock = FakeClock(1000.0)
    metrics = FakeMetrics()
    metrics.set("sava/sava/webport", requests=100, mean_ms=500)     # what the scope answered over any window
    events = FakeEventLog(clock)
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from control.events.model import Event, EventFilter
from control.metrics.model import Scope, Summary


class FakeClock:
    """Time stands still until the test (or `sleep`) moves it."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.time = now

    def now(self) -> float:
        return self.time

    def advance(self, seconds: float) -> None:
        self.time += seconds

    async def sleep(self, seconds: float) -> None:
        self.time += seconds
        await asyncio.sleep(0)


@dataclass
class Figures:
    requests: int = 0
    mean_ms: float | None = None
    errors: int = 0


class FakeMetrics:
    """Each scope's figures as the test set them (a scope set on its gateway alone covers all its routes);
    `asked` records every (scopes, window) asked for."""

    def __init__(self) -> None:
        self.figures: dict[str, Figures] = {}
        self.asked: list[tuple[tuple[Scope, ...], float]] = []

    def set(self, gateway: str, *, requests: int, mean_ms: float | None = None, errors: int = 0) -> None:
        self.figures[gateway] = Figures(requests, mean_ms, errors)

    def summary(self, scopes: Sequence[Scope], window: float) -> Summary:
        self.asked.append((tuple(scopes), window))
        found = [self.figures[scope.gateway] for scope in scopes if scope.gateway in self.figures]
        requests = sum(f.requests for f in found)
        errors = sum(f.errors for f in found)
        timed = [(f.requests, f.mean_ms) for f in found if f.requests and f.mean_ms is not None]
        mean = sum(n * ms for n, ms in timed) / sum(n for n, _ in timed) if timed else None
        return Summary(window=window, requests=requests, classes=(0, requests - errors, 0, 0, errors),
                       upstream_errors=0, in_flight=0, mean_ms=mean, p50_ms=mean, p95_ms=mean, p99_ms=mean)


class FakeEventLog:
    """Events in memory, stamped by `clock`; followers get what is published from then on."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.events: list[Event] = []
        self.followers: list[tuple[EventFilter, asyncio.Queue[Event]]] = []

    def publish(self, tags: Iterable[str], value: Any = None, type: str = "event") -> Event:
        event = Event(len(self.events) + 1, self.clock.now(), type, tuple(sorted(set(tags))), value)
        self.events.append(event)
        for where, queue in self.followers:
            if where.matches(event):
                queue.put_nowait(event)
        return event

    def query(self, where: EventFilter, limit: int = 1000) -> list[Event]:
        return [event for event in reversed(self.events) if where.matches(event)][:limit]

    async def follow(self, where: EventFilter, after: int | None = None) -> AsyncIterator[Event]:
        queue: asyncio.Queue[Event] = asyncio.Queue()
        for event in self.events:
            if after is not None and event.id > after and where.matches(event):
                queue.put_nowait(event)
        self.followers.append((where, queue))
        try:
            while True:
                yield await queue.get()
        finally:
            self.followers.remove((where, queue))

    def tagged(self, *tags: str) -> list[Event]:
        """The events carrying all `tags`, oldest first."""
        return [event for event in self.events if EventFilter(tags=tags).matches(event)]
