"""What every orchestrator driver needs besides its own work: the subscribers of its events (`Subscribers`) and
the background tasks it runs (`BackgroundTasks`)."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from control.orchestrator.base import InstanceEvent, ServiceEvent

log = logging.getLogger("vamp.orchestrator")

EVENT_QUEUE_SIZE = 10_000     # events a subscriber may leave unread; beyond that the oldest are dropped


class Subscribers:
    """Every event goes to every subscriber's queue, logged once; a full queue loses its oldest event."""

    def __init__(self) -> None:
        self._queues: list[asyncio.Queue[InstanceEvent | ServiceEvent]] = []

    def subscribe(self) -> asyncio.Queue[InstanceEvent | ServiceEvent]:
        queue: asyncio.Queue[InstanceEvent | ServiceEvent] = asyncio.Queue(maxsize=EVENT_QUEUE_SIZE)
        self._queues.append(queue)
        return queue

    def publish(self, event: InstanceEvent | ServiceEvent) -> None:
        if isinstance(event, InstanceEvent):
            instance = event.instance
            log.info("instance %s: %s -> %s (%s)", instance.id, event.previous_state, instance.state, event.reason)
        else:
            log.info("service %s: problem %s (%s)", event.service, event.problem, event.reason)
        for queue in self._queues:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(event)


class BackgroundTasks:
    """Tasks a driver starts and forgets: a failure is logged (never lost), `cancel_all` ends what still runs."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._tasks: set[asyncio.Task] = set()

    def start(self, coroutine: Coroutine[Any, Any, None], name: str = "") -> asyncio.Task:
        task = asyncio.create_task(coroutine, name=f"{self.label}: {name}" if name else None)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    async def cancel_all(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    def report(self, task: asyncio.Task) -> None:
        """A done callback that logs the task's failure (for a task the driver keeps and ends itself)."""
        if not task.cancelled() and task.exception() is not None:
            log.error("%s task %s failed", self.label, task.get_name(), exc_info=task.exception())

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        self.report(task)
