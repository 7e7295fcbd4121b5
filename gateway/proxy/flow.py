"""Read-side flow control of one client connection: why it stopped reading, as bits of PAUSE_* reasons
(`gateway.proxy.wire`); reading resumes when no reason is left. Both sides of the proxy pause and resume a
client's reading only through its `FlowControl` (the upstream side hands back pressure from a full backend
write buffer as PAUSE_UPSTREAM, in a tunnel too)."""
from __future__ import annotations

import asyncio
from collections.abc import Callable


class FlowControl:
    __slots__ = ("mask", "on_resumed", "transport")

    def __init__(self, transport: asyncio.Transport, on_resumed: Callable[[], None]) -> None:
        self.transport = transport
        self.mask = 0                       # the PAUSE_* reasons in force
        self.on_resumed = on_resumed        # called when reading starts again

    def pause(self, reason: int) -> None:
        if not self.mask and not self.transport.is_closing():
            self.transport.pause_reading()
        self.mask |= reason

    def resume(self, reason: int) -> None:
        if self.mask & reason:
            self.mask &= ~reason
            if not self.mask and not self.transport.is_closing():
                self.transport.resume_reading()
                self.on_resumed()
