"""TCP gateways (`port: N/tcp`): each accepted connection is tunnelled, byte for byte, to one target.

The route is chosen by weight (the route table's split; TCP gateways carry no conditions), the target
round-robin within it; a target that refuses is backed off and the connection redispatched (another target
of the route, else another route). Flow control is mirrored both ways, and a half-close on one side is
passed on to the other.
"""
from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from gateway.proxy.upstream import MAX_CONNECT_ATTEMPTS

if TYPE_CHECKING:
    from gateway.proxy.host import ProxyHost

class _Pipe(asyncio.Protocol):
    """One side of a tunnel, writing what it reads into its peer's transport."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Pipe | None = None
        self.pending: list[bytes] = []

    # asyncio hands a stream protocol a Transport; typeshed declares the base method with BaseTransport.
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.write(data)
        else:
            self.pending.append(data)

    def eof_received(self) -> bool:
        peer = self.peer
        if peer is not None and peer.transport is not None and peer.transport.can_write_eof():
            peer.transport.write_eof()
            return True
        return False

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        peer = self.peer
        self.transport = None
        if peer is not None and peer.transport is not None:
            peer.transport.close()


class TcpConnection(_Pipe):
    """The client side of a TCP gateway connection."""

    def __init__(self, runtime: "ProxyHost", port: int) -> None:
        super().__init__()
        self.runtime = runtime
        self.port = port

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # (as _Pipe's)
        super().connection_made(transport)
        transport.pause_reading()
        self.runtime.loop.create_task(self._connect())

    async def _connect(self) -> None:
        port_router = self.runtime.table.ports.get(self.port)
        if port_router is None or not port_router.gateways:
            self._close()
            return
        router = port_router.gateways[0]
        decision = router.select(None, time.monotonic())   # tcp: no conditions, no sticky
        if decision is None:
            self._close()
            return
        route, target, _ = decision
        for _ in range(MAX_CONNECT_ATTEMPTS):
            try:
                _, upstream = await asyncio.wait_for(
                    self.runtime.loop.create_connection(_Pipe, target.host, target.port),
                    router.gateway.timeouts.connect)
            except (TimeoutError, OSError):
                target.mark_failed(time.monotonic())
                decision = router.redispatch(route.name, target, time.monotonic())
                if decision is None:
                    break
                route, target, _ = decision
                continue
            target.mark_ok()
            # just connected: connection_made has set it (a pipe's transport is None once the connection is lost)
            upstream_transport: asyncio.Transport = upstream.transport  # type: ignore[assignment]
            if self.transport is None:
                upstream_transport.close()
                return
            upstream.peer, self.peer = self, upstream
            if self.pending:
                upstream_transport.write(b"".join(self.pending))
                self.pending.clear()
            self.transport.resume_reading()
            return
        self._close()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()
