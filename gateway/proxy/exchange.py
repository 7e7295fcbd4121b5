"""One request/response pair (`Exchange`) and the states it goes through, every state and transition in one table.

An exchange's progress is one small int, `ex.state`, that both protocols ask (`ex.state == SENT`) and move on
(`ex.state = SENT`). The request's own reading is one more, `ex.request`: a request body may still be arriving
while the response is under way. A transition is a plain attribute store, `ex.state = SENT`; when the environment
sets VAMP_CHECK_STATES (the tests do), `Exchange.state` becomes a property that checks every store against
`TRANSITIONS` and raises `InvalidTransition` on a move the table does not allow. Unchecked, the hot path pays
nothing for the table.

    RECEIVED ──▶ ROUTED ──▶ SENT ──▶ STREAMING ──▶ RESPONDING ──▶ COMPLETE ──▶ DONE
       │           │  ▲       │  │                  ▲      │          │
       │           │  └───────┘  └──────────────────┘      │          └──▶ TUNNEL (101: bytes pass through)
       └───────────┴──▶ DONE (the gateway's own answer)    └──▶ DONE (body ended by the backend's close)
    any live state ──▶ FAILED (the client is gone, or the connection was cut mid-response)
"""
from __future__ import annotations

import asyncio
import os
from time import monotonic
from typing import Any, Final, Protocol, TYPE_CHECKING

from mypy_extensions import mypyc_attr

from gateway.proxy.wire import IDEMPOTENT

if TYPE_CHECKING:
    from gateway.proxy.flow import FlowControl
    from gateway.proxy.host import ProxyHost
    from gateway.proxy.request_head import RequestHead
    from gateway.proxy.upstream import UpstreamConnection
    from gateway.routing.table import GatewayRouter, RouteState, TargetState

# The exchange (response side), in order: a state >= RESPONDING means part of the response went to the client.
RECEIVED: Final = 0      # the request head is parsed; it waits its turn (pipelined) or is about to be routed
ROUTED: Final = 1        # route and target chosen; waiting for an upstream connection (also between connect attempts)
SENT: Final = 2          # the head went to an upstream connection, no byte of the body yet: it may be replayed
STREAMING: Final = 3     # part of the request body went upstream: never replayed
RESPONDING: Final = 4    # the response head is on its way to the client
COMPLETE: Final = 5      # the backend's response has been read completely
DONE: Final = 6          # the response has been written completely (or the gateway answered itself)
TUNNEL: Final = 7        # the backend answered 101: bytes pass through both ways
FAILED: Final = 8        # the client went away, or the connection was cut mid-response

# The request side: is the client's request read completely?
REQUEST_READING: Final = 0
REQUEST_READ: Final = 1

STATE_NAMES = ("RECEIVED", "ROUTED", "SENT", "STREAMING", "RESPONDING", "COMPLETE", "DONE", "TUNNEL", "FAILED")

TRANSITIONS: dict[int, frozenset[int]] = {
    RECEIVED: frozenset({ROUTED, DONE, FAILED}),
    ROUTED: frozenset({SENT, STREAMING, DONE, FAILED}),
    # ROUTED: replayed on a fresh connection.
    SENT: frozenset({STREAMING, RESPONDING, ROUTED, DONE, FAILED}),
    STREAMING: frozenset({RESPONDING, DONE, FAILED}),
    RESPONDING: frozenset({COMPLETE, DONE, FAILED}),                  # DONE: a body delimited by close
    COMPLETE: frozenset({DONE, TUNNEL, FAILED}),
    DONE: frozenset(),
    TUNNEL: frozenset({FAILED}),
    FAILED: frozenset({FAILED}),
}

CHECKED = bool(os.environ.get("VAMP_CHECK_STATES"))


@mypyc_attr(native_class=False)      # (a compiled class cannot derive from AssertionError)
class InvalidTransition(AssertionError):
    pass


def check(old: int, new: int) -> None:
    """Raise unless the table allows moving from `old` to `new`."""
    if new not in TRANSITIONS[old]:
        raise InvalidTransition(f"exchange state {STATE_NAMES[old]} -> {STATE_NAMES[new]} is not a transition")


class ClientSide(Protocol):
    """What the upstream side may use of the client connection an exchange came from (`ClientConnection`): it
    writes the response through it, hands back pressure to its flow control, and tells it how the exchange
    ended; it never sets the connection's fields."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    @property
    def runtime(self) -> ProxyHost: ...

    @property
    def flow(self) -> FlowControl: ...

    @property
    def closing(self) -> bool:
        """The connection closes after the response in flight."""
        ...

    @property
    def peer(self) -> str:
        """The client's address (the TCP peer)."""
        ...

    def write(self, data: bytes) -> None: ...

    def writelines(self, parts: list[bytes]) -> None: ...

    def write_eof(self) -> bool:
        """Half-close towards the client (a tunnel's backend did); False when its transport cannot (TLS)."""
        ...

    def answer(self, ex: Exchange, status: int, message: str) -> None:
        """Nothing of a response was sent: the gateway answers with its own short response."""
        ...

    def finish(self, ex: Exchange, close: bool = False) -> None:
        """The response has been written completely."""
        ...

    def abort(self) -> None:
        """Part of the response was sent and the rest never will be: cut the connection."""
        ...

    def become_tunnel(self, upstream: UpstreamConnection) -> None: ...

    def tunnel_closed(self) -> None: ...


class AccessLogHook:
    """A gateway's access log as the hot path sees it (gateway.runtime.access_log.AccessLogger is the one there
    is): `sampled()` says whether a request is logged (the log itself, or None) unless `every` request is,
    `write` logs a finished or failed exchange, `write_unread` a request answered before it could be read. A
    class rather than a Protocol, so the compiled build calls the log's methods directly rather than through
    Python's method lookup."""
    every: bool

    def sampled(self) -> AccessLogHook | None:
        raise NotImplementedError

    def write(self, ex: Exchange, status: int) -> None:
        raise NotImplementedError

    def write_unread(self, peer: str, status: int, bytes_out: int, seconds: float, request_id: bytes | None) -> None:
        raise NotImplementedError


class Exchange:
    """One request/response pair, from the request's head to the response's last byte."""
    __slots__ = (
        "client", "request_head", "method", "head", "keep_alive", "http10", "chunked", "request", "state",
        "body_buffer", "body_buffered", "upgrade", "expect_continue", "started", "gateway", "route",
        "target", "set_cookie", "upstream", "attempts", "status", "head_end", "log", "sent", "routed_at",
        "ended_at", "id_count",
    )

    def __init__(self, client: ClientSide, request_head: RequestHead, head: bytes, keep_alive: bool,
                 upgrade: bool) -> None:
        self.client = client
        # What routing reads, as read from the head (a pipelined request may be read before it is routed).
        self.request_head = request_head
        self.method = request_head.method
        self.head = head                      # the re-serialised request head for the upstream, up to its last
                                              # line: `head_end` closes it
        self.keep_alive = keep_alive          # the client wants the connection kept open
        self.http10 = request_head.http10
        self.chunked = request_head.chunked   # request body re-framed as chunked upstream
        self.state = RECEIVED
        self.request = REQUEST_READING
        self.body_buffer: list[bytes] = []    # request bytes not yet written upstream
        self.body_buffered = 0
        self.upgrade = upgrade
        self.expect_continue = request_head.expect_continue
        self.started = monotonic()
        self.gateway: GatewayRouter | None = None
        self.route: RouteState | None = None
        self.target: TargetState | None = None
        self.set_cookie: str | None = None
        self.upstream: UpstreamConnection | None = None
        self.attempts = 0
        self.status = 0
        # The end of both heads, request's and response's: b"X-Request-Id: ID\r\n\r\n", or b"\r\n" with
        # request ids off; b"" until decided (ClientConnection._start).
        self.head_end = b""
        self.log: AccessLogHook | None = None   # the access log that takes this exchange (sampled in)
        self.sent = 0                # bytes of the response written to the client (counted when logged)
        self.routed_at = 0.0         # (monotonic) when the gateway chose its target (0: it did not)
        self.ended_at = 0.0          # (monotonic) when the backend's response ended (0: it did not, or not yet)
        self.id_count = 0            # the counter of its request id when ClientConnection._start made it (else 0)

    @property
    def replayable(self) -> bool:
        """May this request be sent again on another connection (nothing of it is lost)?"""
        return self.method in IDEMPOTENT and self.state == SENT and not self.upgrade

    def __repr__(self) -> str:
        target = self.request_head.url.decode("latin-1")
        return f"Exchange({self.method.decode('latin-1')} {target}, {STATE_NAMES[self.state]})"


# What the upstream side is handed: an exchange the route table has placed (ROUTED and after), its gateway, route
# and target set (`ClientConnection._start` sets them, then calls `dispatch`). The same class: a subclass for the
# type checker alone would make the compiled build (gateway/compiled.py) check every exchange against it.
RoutedExchange = Exchange


def _checked_state(raw: Any) -> property:
    """`Exchange.state` as a property over the slot's own descriptor `raw`: every store is checked against the
    table (the first one, in `__init__`, sets the initial state)."""
    def get(ex: Exchange) -> int:
        return int(raw.__get__(ex, Exchange))

    def set_(ex: Exchange, new: int) -> None:
        try:
            old = raw.__get__(ex, Exchange)
        except AttributeError:          # not set yet: the exchange is being made
            old = None
        if old is not None:
            check(old, new)
        raw.__set__(ex, new)

    return property(get, set_, doc="the exchange's state; every store is checked against TRANSITIONS")


if CHECKED:
    # (never in the compiled build, whose classes are fixed: gateway/compiled.py runs the source when checking)
    setattr(Exchange, "state", _checked_state(vars(Exchange)["state"]))  # noqa: B010 - over the slot, not beside it
