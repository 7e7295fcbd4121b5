"""What the proxy's connections need from the process that serves them (gateway.runtime's `Runtime`), as a
Protocol: the hot path depends on this description, never on the runtime itself."""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from gateway.proxy.client import ClientConnection
    from gateway.proxy.exchange import Exchange
    from gateway.proxy.stats import Registry
    from gateway.routing.request import Lookups
    from gateway.routing.table import RouteTable


class ProxyHost(Protocol):
    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    @property
    def table(self) -> RouteTable:
        """The route table current now; a connection reads it once per request."""
        ...

    @property
    def lookups(self) -> Lookups: ...

    @property
    def stats(self) -> Registry: ...

    @property
    def connections(self) -> set[ClientConnection]:
        """The open client connections (each adds and removes itself)."""
        ...

    def is_trusted(self, peer: str) -> bool:
        """Whether a peer address is a trusted proxy (its X-Forwarded-* headers are kept)."""
        ...

    def idle_timeout(self, port: int) -> float: ...

    def request_head_timeout(self, port: int) -> float: ...

    def record(self, ex: Exchange, status: int) -> None:
        """Count a finished exchange that was routed."""
        ...

    def record_unrouted(self, ex: Exchange, status: int) -> None:
        """Count a finished exchange that no route took (404, 503 with no route)."""
        ...
