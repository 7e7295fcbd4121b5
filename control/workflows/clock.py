"""The clock workflows run by: the wall clock for the platform (`SystemClock`), a virtual one under test. Time
schedules and built-ins read and wait through it only, so a test can move time on instead of waiting for it."""
from __future__ import annotations

import asyncio
import time
from typing import Protocol

LONGEST_NAP = 60.0      # seconds: a long wait looks at the wall clock again this often (it may have been set)


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch."""
        ...

    async def sleep(self, seconds: float) -> None:
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


async def sleep_until(clock: Clock, moment: float) -> None:
    """Wait until `clock` says `moment` (epoch seconds) has come, in naps of at most LONGEST_NAP."""
    while (remaining := moment - clock.now()) > 0:
        await clock.sleep(min(remaining, LONGEST_NAP))
