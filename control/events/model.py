"""An `Event`, the `EventFilter` that the API, the stream and event-scheduled workflows select with, and the
`EventSink` / `EventSource` protocols that the rest of the control plane publishes to and follows.

Tags follow Vamp: `deployments:sava`, `clusters:sava`, `services:sava:1.0.0`, `gateways:sava/9050`,
`synchronization:deployed`, `sla:escalate`, `workflows:NAME`, … A tag `a:b` also counts as `a` when matching.
"""
from __future__ import annotations

import datetime
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Event:
    id: int                       # increasing; the SSE stream's event id (`Last-Event-ID` resumes after it)
    timestamp: float              # seconds since the epoch
    type: str                     # "event" unless the publisher says otherwise
    tags: tuple[str, ...]         # sorted, unique
    value: Any = None             # JSON-like

    def as_json(self) -> dict[str, Any]:
        moment = datetime.datetime.fromtimestamp(self.timestamp, datetime.UTC)
        return {"id": self.id, "tags": list(self.tags), "value": self.value, "type": self.type,
                "timestamp": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")}


def implied_tags(tags: Iterable[str]) -> frozenset[str]:
    """The tags and what they imply: `a:b` also counts as `a`."""
    found = set(tags)
    found.update(tag.split(":", 1)[0] for tag in list(found) if ":" in tag)
    return frozenset(found)


@dataclass(frozen=True, slots=True)
class EventFilter:
    """All of `tags` must be present (a tag `a:b` on the event also counts as `a`); the bounds are timestamps."""
    tags: tuple[str, ...] = ()
    type: str | None = None
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None

    def matches(self, event: Event) -> bool:
        if self.type is not None and event.type != self.type:
            return False
        t = event.timestamp
        if ((self.gt is not None and not t > self.gt) or (self.gte is not None and not t >= self.gte)
                or (self.lt is not None and not t < self.lt) or (self.lte is not None and not t <= self.lte)):
            return False
        return not self.tags or implied_tags(event.tags).issuperset(self.tags)


class EventSink(Protocol):
    def publish(self, tags: Iterable[str], value: Any = None, type: str = "event") -> Event:
        """Record an event and deliver it to every live subscriber it matches."""
        ...


class EventSource(Protocol):
    def query(self, where: EventFilter, limit: int = 1000) -> list[Event]:
        """Kept events that match, newest first."""
        ...

    def follow(self, where: EventFilter, after: int | None = None) -> AsyncIterator[Event]:
        """Matching events as they are published, oldest first; with `after`, first the kept ones with a larger
        id (a resumed stream misses nothing still kept). Ends when the consumer stops iterating, or when the
        source closes (the platform stops)."""
        ...
