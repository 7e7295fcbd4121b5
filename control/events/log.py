"""The event log: `EventSink` and `EventSource` (control.events.model) over the store's events table, with live
fan-out to subscribers and bounded retention.

- **Publishing** stores the event and, once its transaction has committed (`Store.on_commit`: an event of a
  write that rolls back is never seen), hands it to every subscriber whose filter it matches.
- **Subscribers** (`subscribe`, or `follow` on top of it) each hold a bounded queue. One that falls behind
  does not make memory grow: when its queue is full, newer events are dropped from it and the subscriber
  reads them back from the store by id once it catches up, so it misses no event that is still kept, and
  gets none twice. A subscription that resumes (`after`) reads the store first, then goes live the same way.
- **Retention**: events older than `max_age` seconds and all but the `max_count` newest are pruned when the
  log starts and then every `prune_interval` seconds. Ids keep increasing across restarts (the store never
  reuses one).
- **Closing** (the platform stopping) ends every subscription once it has taken what is already queued.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable
from typing import Any

from control.events.model import Event, EventFilter
from control.store import ControlStore
from gateway.common.errors import Invalid

log = logging.getLogger("vamp.events")

DEFAULT_MAX_COUNT = 100_000
DEFAULT_MAX_AGE = 7 * 86400.0            # seconds
DEFAULT_PRUNE_INTERVAL = 60.0            # seconds
DEFAULT_QUEUE_LIMIT = 1000               # events a subscriber may have waiting before it reads from the store
CATCH_UP_BATCH = 500                     # events read from the store at a time when catching up


class EventLog:
    def __init__(self, store: ControlStore, *, max_count: int = DEFAULT_MAX_COUNT, max_age: float = DEFAULT_MAX_AGE,
                 prune_interval: float = DEFAULT_PRUNE_INTERVAL, queue_limit: int = DEFAULT_QUEUE_LIMIT) -> None:
        if max_count < 1 or max_age <= 0 or prune_interval <= 0 or queue_limit < 1:
            raise ValueError("max_count, max_age, prune_interval and queue_limit must be positive")
        self.store = store
        self.max_count = max_count
        self.max_age = max_age
        self.prune_interval = prune_interval
        self.queue_limit = queue_limit
        self.closed = False
        self._subscriptions: set[Subscription] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pruner: asyncio.Task | None = None

    # -- EventSink ---------------------------------------------------------------------------------------
    def publish(self, tags: Iterable[str], value: Any = None, type: str = "event", *,
                timestamp: float | None = None) -> Event:
        """Record an event (stamped now unless `timestamp` says otherwise) and deliver it to every live
        subscriber it matches once it is committed. `value` must be JSON; it is delivered as stored."""
        given = list(tags) if not isinstance(tags, str) else [tags]
        if not given or not all(isinstance(tag, str) and tag for tag in given):
            raise Invalid("tags must be a list of at least one non-empty text", "/tags")
        unique = tuple(sorted(set(given)))
        if not isinstance(type, str) or not type:
            raise Invalid("type must be a non-empty text", "/type")
        stamp = time.time() if timestamp is None else timestamp
        stored = json.loads(json.dumps(value))      # what a reader of the store gets, never a live object
        event_id = self.store.add_event(list(unique), stored, type, stamp)
        event = Event(id=event_id, timestamp=stamp, type=type, tags=unique, value=stored)
        self.store.on_commit(lambda: self._deliver(event))
        return event

    def _deliver(self, event: Event) -> None:
        loop = self._loop
        if loop is None or not self._subscriptions:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not loop:                 # published from another thread: deliver on the log's loop
            if not loop.is_closed():
                loop.call_soon_threadsafe(self._deliver_here, event)
            return
        self._deliver_here(event)

    def _deliver_here(self, event: Event) -> None:
        for subscription in list(self._subscriptions):
            subscription.offer(event)

    # -- EventSource -------------------------------------------------------------------------------------
    def query(self, where: EventFilter, limit: int = 1000, *, offset: int = 0) -> list[Event]:
        """Kept events that match, newest first (skipping the `offset` newest)."""
        return self.store.query_events(where, limit=limit, offset=offset)

    def count(self, where: EventFilter) -> int:
        """How many kept events match."""
        return self.store.count_events(where)

    async def follow(self, where: EventFilter, after: int | None = None) -> AsyncIterator[Event]:
        """Matching events as they are published, oldest first; with `after`, first the kept ones with a larger
        id. Ends when the consumer stops iterating, or when the log closes."""
        subscription = self.subscribe(where, after)
        try:
            while True:
                event = await subscription.next()
                if event is None:
                    return
                yield event
        finally:
            subscription.close()

    def subscribe(self, where: EventFilter, after: int | None = None) -> Subscription:
        """A subscription, live from now on (with `after`: from the first kept event with a larger id). It is
        registered before this returns: anything published later reaches it. `close()` it when done."""
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError("an EventLog delivers on one event loop")
        subscription = Subscription(self, where, after)
        if not self.closed:
            self._subscriptions.add(subscription)
        return subscription

    def _forget(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    @property
    def subscribers(self) -> int:
        return len(self._subscriptions)

    # -- retention and lifecycle -------------------------------------------------------------------------
    def prune(self, now: float | None = None) -> int:
        """Remove what retention no longer keeps; how many events went."""
        moment = time.time() if now is None else now
        removed = self.store.prune_events(older_than=moment - self.max_age, keep=self.max_count)
        if removed:
            log.info("pruned %d events (kept: at most %d, none older than %.0f s)", removed, self.max_count,
                     self.max_age)
        return removed

    def start(self) -> None:
        """Prune now, and from now on every `prune_interval` seconds (in the running event loop)."""
        self._loop = self._loop or asyncio.get_running_loop()
        self.prune()
        self._pruner = asyncio.get_running_loop().create_task(self._prune_periodically(), name="vamp events prune")

    async def _prune_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.prune_interval)
            try:
                self.prune()
            except Exception:  # noqa: BLE001 - pruning must outlive one failed round (a busy disk)
                log.exception("pruning events failed")

    async def close(self) -> None:
        """Stop pruning and end every subscription (after what it has queued). Publishing still records."""
        self.closed = True
        if self._pruner is not None:
            self._pruner.cancel()
            try:
                await self._pruner
            except asyncio.CancelledError:
                pass
            self._pruner = None
        for subscription in list(self._subscriptions):
            subscription.end()
        self._subscriptions.clear()


class Subscription:
    """One subscriber's view of the log: `await next(timeout)` gives the next matching event in id order."""

    def __init__(self, events: EventLog, where: EventFilter, after: int | None) -> None:
        self._log = events
        self.where = where
        self.last = events.store.last_event_id() if after is None else after   # the id delivered last
        self._catching_up = after is not None        # read the store (from `last`) before the live queue
        self._backlog: deque[Event] = deque()         # read from the store, not yet delivered
        self._live: deque[Event] = deque()            # delivered by publish, not yet taken
        self._overflowed = False                      # `_live` dropped events (it was full, or one came late)
        self._newest_offered = 0
        self._wake = asyncio.Event()
        self._ended = events.closed
        self.finished = False                         # next() answered the end (the log closed)

    @property
    def queued(self) -> int:
        """Events held in memory for this subscriber (at most the log's queue limit, plus one batch)."""
        return len(self._live) + len(self._backlog)

    def offer(self, event: Event) -> None:
        if self._ended or not self.where.matches(event):
            return
        if len(self._live) >= self._log.queue_limit or event.id < self._newest_offered:
            self._overflowed = True                   # (out of order: published from another thread)
        else:
            self._live.append(event)
        self._newest_offered = max(self._newest_offered, event.id)
        self._wake.set()

    async def next(self, timeout: float | None = None) -> Event | None:
        """The next event; None when `timeout` seconds pass without one, or at the end (then `finished`)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            if self._backlog:
                return self._take(self._backlog.popleft())
            if self._overflowed and not self._ended:
                self._overflowed = False
                self._live.clear()                     # all of it is in the store: read it from there
                self._catching_up = True
            if self._catching_up and not self._ended:
                batch = self._log.store.query_events(self.where, after=self.last, limit=CATCH_UP_BATCH,
                                                     oldest_first=True)
                self._catching_up = len(batch) == CATCH_UP_BATCH
                self._backlog.extend(batch)
                if batch:
                    continue
            while self._live:
                event = self._live.popleft()
                if event.id > self.last:              # not already read from the store
                    return self._take(event)
            if self._ended:
                self.finished = True
                return None
            self._wake.clear()
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return None
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except TimeoutError:
                return None

    def _take(self, event: Event) -> Event:
        self.last = event.id
        return event

    def end(self) -> None:
        """No more events after those queued (the log closes)."""
        self._ended = True
        self._wake.set()

    def close(self) -> None:
        """The subscriber is done: stop delivering to it."""
        self._ended = True
        self._live.clear()
        self._backlog.clear()
        self._log._forget(self)
