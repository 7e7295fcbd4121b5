"""Waits between attempts to reach something that failed (a store, an API server): the first wait, doubling up
to a ceiling, each drawn at random between half and all of it, so that many clients do not retry in step."""
from __future__ import annotations

import asyncio
import random

FIRST = 0.1         # seconds: the first wait
MOST = 5.0          # seconds: the wait doubles up to this


class Backoff:
    def __init__(self, first: float = FIRST, most: float = MOST) -> None:
        self.first, self.most = first, most
        self.delay = first

    def reset(self) -> None:
        """After a success: the next failure waits `first` again."""
        self.delay = self.first

    def next(self) -> float:
        """The next wait (the one after it is twice as long, up to `most`)."""
        delay, self.delay = self.delay, min(self.delay * 2, self.most)
        return random.uniform(delay / 2, delay)

    async def wait(self) -> None:
        await asyncio.sleep(self.next())
