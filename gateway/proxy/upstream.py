"""The backend side of the hot path: keep-alive pools of `UpstreamConnection`s, one pool per target.

`dispatch(exchange)` sends a routed request on an idle pooled connection (LIFO) or a fresh one. The response
is parsed strictly with httptools, hop-by-hop headers are stripped, the body is re-framed for the client
(Content-Length kept, chunked re-chunked, close-delimited turned into chunked for HTTP/1.1 clients) and
streamed with flow control both ways. The parser makes no Python call per header: the raw head is read once
(`gateway.proxy.response_head`). A connection keeps its parser from one response to the next while the parser
itself ended the last one; after a HEAD/204/304 answer whose headers announce a body, a fresh parser reads the
next response, so such an answer never confuses it. A pooled connection that turns out to be dead before any
response byte arrives is replaced once for replayable requests.

A target that refuses a connection (or does not accept it within the connect timeout) is backed off and the
request redispatched: to another target of its route, else to another route by weight (`GatewayRouter.
redispatch`), whatever its method: a connection that was never made carried no byte of the request, whose
body waits in the exchange until a connection is ready. Up to MAX_CONNECT_ATTEMPTS connections are tried;
the gateway answers 502 (504 for a timeout) only when no other target can take the request. Connect failures
are logged at most once per target every CONNECT_LOG_INTERVAL seconds, with the count of those not logged.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Final, TYPE_CHECKING

import httptools

from gateway.proxy.exchange import (COMPLETE, FAILED, REQUEST_READ, REQUEST_READING, RESPONDING, ROUTED, SENT,
                                    STREAMING, TUNNEL)
from gateway.proxy.response_head import read_head
from gateway.proxy.wire import CHUNK_END, CRLF, MAX_HEAD_BYTES, PAUSE_BUFFER, PAUSE_UPSTREAM, chunk_prefix

if TYPE_CHECKING:
    from gateway.proxy.client import ClientConnection
    from gateway.proxy.exchange import Exchange, RoutedExchange
    from gateway.routing.table import TargetState

log = logging.getLogger("vamp.upstream")

MAX_IDLE_PER_TARGET: Final = 256
MAX_CONNECT_ATTEMPTS: Final = 4       # connections tried for one request (each failure backs its target off)
CONNECT_LOG_INTERVAL: Final = 10.0    # seconds: at most one log line per target about its connect failures

# How the response body is framed towards the client (BODY_NONE: the response is its head only; BODY_UNSET:
# no final response head yet).
BODY_NONE: Final = 0
BODY_LENGTH: Final = 1
BODY_CHUNKED: Final = 2
BODY_CLOSE: Final = 3
BODY_UNSET: Final = 4

_monotonic: Final = time.monotonic        # (Final: the compiled build reads it without a dictionary lookup)


class UpstreamPool:
    """Idle keep-alive connections to one target, most recently used first."""
    __slots__ = ("target", "idle", "closed")

    def __init__(self, target: "TargetState") -> None:
        self.target = target
        self.idle: list[UpstreamConnection] = []
        self.closed = False      # the target left the configuration: connections coming back are closed

    def release(self, conn: "UpstreamConnection") -> None:
        if not self.closed and len(self.idle) < MAX_IDLE_PER_TARGET:
            self.idle.append(conn)
        else:
            conn.close()

    def close_all(self) -> None:
        self.closed = True
        idle, self.idle = self.idle, []
        for conn in idle:
            conn.close()


def pool_of(target: "TargetState") -> UpstreamPool:
    pool = target.pool
    if pool is None:
        pool = target.pool = UpstreamPool(target)
    return pool


def dispatch(ex: "RoutedExchange") -> None:
    """Send the exchange's request to its target, on the most recently used idle pooled connection (the one
    place a pooled connection is taken), else on a new one."""
    target = ex.target
    assert target is not None                               # routed
    pool = target.pool
    if pool is not None:                                    # no pool yet: `_connect` makes it
        idle = pool.idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                conn.start(ex, True)                        # reused
                return
    connect(ex)


def connect(ex: "RoutedExchange") -> None:
    ex.attempts += 1
    target = ex.target
    assert target is not None                               # routed
    ex.client.loop.create_task(_connect(ex, target))


async def _connect(ex: "RoutedExchange", target: "TargetState") -> None:
    client = ex.client
    loop = client.loop
    pool = pool_of(target)
    assert ex.gateway is not None                          # a connecting exchange is routed
    timeout = ex.gateway.gateway.timeouts.connect
    try:
        _, conn = await asyncio.wait_for(
            loop.create_connection(lambda: UpstreamConnection(pool),  # type: ignore[type-var]
                                   target.host, target.port,  # (a protocol by its methods, see the class)
                                   ssl=target.ssl_context, server_hostname=target.server_hostname), timeout)
    except (TimeoutError, OSError) as exc:
        timed_out = isinstance(exc, asyncio.TimeoutError)
        now = time.monotonic()
        target.mark_failed(now)
        stats = target.stats
        if stats is not None:
            stats.failures += 1
            stats.upstream_errors["timeout" if timed_out else "connect"] += 1
        log_connect_failure(target, ex, f"timed out after {timeout:g}s" if timed_out else _reason(exc), now)
        if ex.state != ROUTED:
            return                                   # the client went away meanwhile
        decision = None
        if ex.attempts < MAX_CONNECT_ATTEMPTS and ex.gateway is not None and ex.route is not None:
            # routed afresh by the table in force now (the request may predate a configuration change)
            router = client.runtime.table.gateways.get(ex.gateway.name)
            if router is not None:
                decision = router.redispatch(ex.route.name, target, now)
        if decision is not None:
            ex.route, ex.target, ex.set_cookie = decision
            dispatch(ex)
        elif timed_out:
            client.answer(ex, 504, f"timed out connecting to {target.address}")
        else:
            client.answer(ex, 502, f"cannot connect to {target.address}")
        return
    if target.failures:
        log_recovery(target, ex)
    target.mark_ok()
    if ex.state != ROUTED:                           # answered, or the client went away meanwhile
        pool.release(conn)                           # still useful to the next request
        return
    conn.start(ex, reused=False)


def sweep_timeouts(clients: Iterable[ClientConnection], now: float) -> None:
    """Response timeouts without a timer or any bookkeeping per request: the exchange in flight of each client
    connection, when it waits on a backend (only the one in flight is ever sent), is timed out if its backend
    has been silent too long. The runtime calls this every SWEEP_INTERVAL."""
    for client in list(clients):
        ex = client.current
        if ex is not None and ex.upstream is not None:
            ex.upstream.check_timeout(now)


def log_connect_failure(target: "TargetState", ex: "Exchange", reason: str, now: float) -> None:
    """One warning per target per CONNECT_LOG_INTERVAL; failures in between are counted, reported in the next."""
    if now < target.log_quiet_until:
        target.log_suppressed += 1
        return
    suppressed, target.log_suppressed = target.log_suppressed, 0
    target.log_quiet_until = now + CONNECT_LOG_INTERVAL
    log.warning("gateway %s route %s: cannot connect to %s: %s; backed off for %.3gs%s",
                _gateway_name(ex), _route_name(ex), target.address, reason, target.down_until - now,
                f" ({suppressed} more failures since the last report)" if suppressed else "")


def log_recovery(target: "TargetState", ex: "Exchange") -> None:
    suppressed, target.log_suppressed = target.log_suppressed, 0
    target.log_quiet_until = 0.0
    log.info("gateway %s route %s: %s accepts connections again%s", _gateway_name(ex), _route_name(ex),
             target.address, f" ({suppressed} more failures since the last report)" if suppressed else "")


def _gateway_name(ex: "Exchange") -> str:
    return ex.gateway.name if ex.gateway is not None else "?"


def _route_name(ex: "Exchange") -> str:
    return ex.route.name if ex.route is not None else "?"


def _address(ex: "Exchange") -> str:
    return ex.target.address if ex.target is not None else "?"


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


class UpstreamConnection:
    """An asyncio stream protocol (duck-typed: no base class, so that the compiled build makes it a native class,
    gateway/compiled.py)."""
    __slots__ = (
        "pool", "loop", "transport", "parser", "ex", "closed", "reused", "got_bytes",
        "last_io", "out", "mode", "violation", "keep_alive", "close_client", "informational",
        "reading_paused", "parser_clean", "head_src", "head_at", "clock", "send", "parse",
    )
    # None until asyncio calls connection_made, which it does before any other callback (and before
    # create_connection returns the connection to a pool).
    transport: asyncio.Transport
    # None until the first `start`; a response is parsed only for a started exchange.
    parser: httptools.HttpResponseParser

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.loop = asyncio.get_running_loop()
        self.clock = self.loop.time               # bound methods called for every request, looked up once
        self.transport = None  # type: ignore[assignment]  # not connected yet (see above)
        self.parser = None  # type: ignore[assignment]  # not started yet (see above)
        self.ex: RoutedExchange | None = None
        self.closed = False
        self.reused = False
        self.got_bytes = False
        self.last_io = 0.0
        self.out: list[bytes] = []
        self.reading_paused = False
        self.parser_clean = False     # the parser ended the last response itself: it can parse the next one
        self.head_src = b""           # bytes holding the response head awaited, from offset head_at
        self.head_at = 0

    # -- lifecycle ---------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.send = transport.write
        transport.set_write_buffer_limits(high=256 * 1024)

    def start(self, ex: "RoutedExchange", reused: bool) -> None:
        """Send `ex`'s request head and whatever of its body has arrived."""
        self.ex = ex
        ex.upstream = self
        self.reused = reused
        self.got_bytes = False
        if not self.parser_clean:     # (a response it could not end itself: HEAD's, say. See docs/hot-path.md)
            self.parser = httptools.HttpResponseParser(self)
            self.parse = self.parser.feed_data
        self.parser_clean = False
        self.head_src = b""
        self.informational = False
        self.violation = False
        self.mode = BODY_UNSET
        if self.reading_paused:
            self.resume_reading()
        head = ex.head
        rules = ex.route.request_rules  # type: ignore[union-attr]  # (a started exchange is routed)
        if rules is not None:           # the route's rewrites and header rules, for the route it has now
            head = rules.head(head)
        if ex.body_buffer:
            self.send(b"".join((head, ex.head_end, *ex.body_buffer)))
            ex.body_buffer.clear()
            ex.state = STREAMING
            ex.client.flow.resume(PAUSE_BUFFER)
        else:
            self.send(head + ex.head_end)
            ex.state = SENT
        self.last_io = self.clock()
        target = ex.target
        assert target is not None                           # routed
        target.in_flight += 1
        if target.stats is not None:
            target.stats.requests += 1

    def send_body(self, ex: "Exchange") -> None:
        self.transport.write(b"".join(ex.body_buffer))
        ex.body_buffer.clear()
        if ex.state == SENT:
            ex.state = STREAMING
        self.last_io = self.loop.time()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def client_gone(self) -> None:
        """The client disconnected mid-exchange: this connection's state is unknown; drop it."""
        ex = self.ex
        if ex is not None:
            self._detach(ex)
        self.abort()

    def _detach(self, ex: "RoutedExchange") -> None:
        self.ex = None
        ex.upstream = None
        target = ex.target
        assert target is not None                           # routed
        target.in_flight -= 1
        client = ex.client
        flow = client.flow
        if flow.mask & PAUSE_UPSTREAM:
            flow.resume(PAUSE_UPSTREAM)

    def pause_reading(self) -> None:
        if not self.reading_paused and not self.closed:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused and not self.closed:
            self.reading_paused = False
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        ex = self.ex
        if ex is None:
            return
        if ex.state == TUNNEL:
            self.ex = None
            target = ex.target
            assert target is not None                       # routed
            target.in_flight -= 1
            ex.client.tunnel_closed()
            return
        self._detach(ex)
        client = ex.client
        if ex.state == COMPLETE:
            return
        if ex.state >= RESPONDING:
            if self.mode == BODY_CLOSE and not self.parser_in_error():
                # The backend's body ended with its connection: for the client that is a complete body.
                if not ex.http10:
                    client.write(CHUNK_END)
                    ex.sent += len(CHUNK_END)
                client.runtime.record(ex, ex.status)
                client.finish(ex, close=ex.http10)
            else:
                _count_error(ex, "reset")
                _fail(ex)
            return
        if not self.got_bytes and self.reused and ex.replayable:
            # A pooled connection the backend had closed: replay once on a fresh connection.
            ex.state = ROUTED
            connect(ex)
            return
        _count_error(ex, "reset")
        client.answer(ex, 502, f"connection to {_address(ex)} closed before a response")

    def parser_in_error(self) -> bool:
        return self.violation

    def eof_received(self) -> bool:
        ex = self.ex
        if ex is not None and ex.state == TUNNEL:
            # Half-closed both ways when both can be; with TLS on either side, the tunnel closes instead.
            return ex.client.write_eof() and self.transport.can_write_eof()
        return False

    # -- flow control (request body, tunnel) -------------------------------------------------------
    def pause_writing(self) -> None:
        if self.ex is not None:
            self.ex.client.flow.pause(PAUSE_UPSTREAM)

    def resume_writing(self) -> None:
        if self.ex is not None:
            self.ex.client.flow.resume(PAUSE_UPSTREAM)

    # -- timeouts ----------------------------------------------------------------------------------
    def check_timeout(self, now: float) -> None:
        """Called by the periodic sweep (`sweep_timeouts`): give up on a backend that has been
        silent for the gateway's response timeout."""
        ex = self.ex
        if ex is None or ex.state == TUNNEL:
            return
        assert ex.gateway is not None                      # a started exchange is routed
        timeout = ex.gateway.gateway.timeouts.response
        if now - self.last_io < timeout:
            return
        _count_error(ex, "timeout")
        self._detach(ex)
        self.abort()
        if ex.state >= RESPONDING:
            _fail(ex)
        else:
            ex.client.answer(ex, 504, f"no response from {_address(ex)} within {timeout:g}s")

    # -- reading -----------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        ex = self.ex
        if ex is None:
            self.abort()              # bytes nobody asked for: this connection is out of step
            return
        state = ex.state
        if state == TUNNEL:
            ex.client.write(data)
            return
        if state == COMPLETE:
            self.abort()
            return
        self.last_io = self.clock()
        self.got_bytes = True
        out = self.out = []
        awaiting_head = self.mode == BODY_UNSET
        if awaiting_head:             # the raw head is read in on_headers_complete (response_head.py)
            if self.head_src:         # the start of the head came in an earlier read
                self.head_src = self.head_src[self.head_at:] + data
            else:
                self.head_src = data
            self.head_at = 0
        try:
            self.parse(data)
        except httptools.HttpParserUpgrade as upgrade:
            if ex.status == 101 and not self.violation:    # a 101 refused in on_headers_complete is no tunnel
                rest = data[upgrade.args[0]:]
                if rest:
                    out.append(rest)
                response = b"".join(out)
                ex.sent += len(response)
                ex.client.write(response)
                self._become_tunnel(ex)
                return
            self.violation = True
        except httptools.HttpParserError:
            self.violation = True
        if awaiting_head:
            if self.mode != BODY_UNSET:
                self.head_src = b""
            elif len(self.head_src) - self.head_at > MAX_HEAD_BYTES:
                self.violation = True     # a head without end
        if self.violation and ex.state != COMPLETE:
            self._protocol_error(ex, out)
            return
        if out:
            ex.client.writelines(out)
            if ex.log is not None:
                sent = ex.sent
                for part in out:
                    sent += len(part)
                ex.sent = sent
        if ex.state == COMPLETE:
            self._finish(ex)      # a violation after a complete response only costs this connection

    def _protocol_error(self, ex: "RoutedExchange", out: list[bytes]) -> None:
        _count_error(ex, "reset")
        self._detach(ex)
        self.abort()
        if ex.state >= RESPONDING:
            if out:
                response = b"".join(out)
                ex.sent += len(response)
                ex.client.write(response)
            _fail(ex)
        else:
            ex.client.answer(ex, 502, f"invalid response from {_address(ex)}")

    def _finish(self, ex: "RoutedExchange") -> None:
        reusable = self.keep_alive and ex.request == REQUEST_READ and not self.violation and not ex.upgrade
        self._detach(ex)
        if reusable:
            self.pool.release(self)
        else:
            self.close()
        # a served table's targets all have stats (Runtime.apply gives them before the table is swapped in)
        ended = ex.ended_at = _monotonic()
        ex.target.stats.record(ex.status, ended - ex.started)  # type: ignore[union-attr]
        ex.client.finish(ex, close=self.close_client)

    def _become_tunnel(self, ex: "RoutedExchange") -> None:
        ex.state = TUNNEL
        client = ex.client
        client.runtime.record(ex, 101)
        if ex.body_buffer:                     # bytes the client sent after its upgrade request
            self.transport.write(b"".join(ex.body_buffer))
            ex.body_buffer.clear()
        client.become_tunnel(self)

    # httptools callbacks (no per-header ones: the head is read whole, once, from its raw bytes) ----------
    def on_headers_complete(self) -> None:
        ex: RoutedExchange = self.ex  # type: ignore[assignment]  # a response is parsed only for a started exchange
        parser = self.parser
        if ex.state == COMPLETE:
            # A second response in the read that completed the first: nobody asked for it. Raising stops the
            # parser (a violation after a complete response): nothing of it is forwarded, the connection closes.
            raise _OutOfStep
        src = self.head_src
        end = src.index(b"\r\n\r\n", self.head_at) + 4
        raw = src[self.head_at:end]
        head = read_head(raw)
        self.head_at = end                       # a final response may follow a 1xx one in the same read
        status = head.status
        if 100 <= status < 200 and status != 101:
            self.informational = True
            if not ex.http10 and not (status == 100 and ex.expect_continue):
                self.out.append(head.prefix + CRLF)
            return
        rules = ex.route.response_rules  # type: ignore[union-attr]  # (a response is parsed for a routed exchange)
        if rules is not None:            # the route's header rules
            head = rules.head(raw, head)
        if head.bad_coding:
            self.violation = True
            return
        ex.status = status
        self.keep_alive = parser.should_keep_alive()
        http10 = ex.http10
        # (a declined upgrade leaves the client's connection HTTP: it stays open like any other)
        close_client = self.close_client = (not ex.keep_alive or ex.request == REQUEST_READING
                                            or ex.client.closing)
        plain = head.plain
        if (plain is not None and not close_client and not http10 and ex.set_cookie is None
                and ex.method != b"HEAD"):
            self.out += (plain, ex.head_end)      # the common case, its head made once per head read (and the
                                                  # exchange's X-Request-Id line and empty line)
            self.mode = BODY_LENGTH
            ex.state = RESPONDING
            return
        extra: list[bytes] = []
        if status == 101:
            if not ex.upgrade or head.upgrade is None:
                self.violation = True
                return
            extra += (b"Connection: Upgrade\r\nUpgrade: ", head.upgrade, CRLF)
            self.mode = BODY_NONE
        elif ex.method == b"HEAD" or status in (204, 304):
            if head.content_length is not None and status != 204:
                extra += (b"Content-Length: ", head.content_length, CRLF)
            self.mode = BODY_NONE
        elif head.content_length is not None:
            extra += (b"Content-Length: ", head.content_length, CRLF)
            self.mode = BODY_LENGTH
        else:
            chunked = head.chunked
            if not chunked:
                self.keep_alive = False          # the body ends when the backend closes
            if http10:
                close_client = True
                self.mode = BODY_CLOSE if not chunked else BODY_LENGTH
            else:
                extra.append(b"Transfer-Encoding: chunked\r\n")
                self.mode = BODY_CHUNKED if chunked else BODY_CLOSE
        if ex.set_cookie is not None:
            extra += (b"Set-Cookie: ", ex.set_cookie.encode("latin-1"), CRLF)
        if status != 101:
            if close_client:
                extra.append(b"Connection: close\r\n")
            elif http10:
                extra.append(b"Connection: keep-alive\r\n")
        self.close_client = close_client
        self.out += (head.prefix, b"".join(extra), ex.head_end)
        ex.state = RESPONDING
        if self.mode == BODY_NONE:
            ex.state = COMPLETE

    def on_body(self, body: bytes) -> None:
        if self.mode == BODY_NONE:
            self.violation = True     # a body where none may be: the connection is out of step
            return
        # a body is parsed only for a started exchange: self.ex is set
        if self.mode == BODY_LENGTH or (self.mode == BODY_CLOSE and self.ex.http10):  # type: ignore[union-attr]
            self.out.append(body)
        else:
            self.out += (chunk_prefix(len(body)), body, CRLF)

    def on_message_complete(self) -> None:
        if self.informational:
            self.informational = False        # the final response follows
            return
        if self.mode == BODY_UNSET:   # a head refused in on_headers_complete (a 101 nobody asked for, ...): the
            return                    # violation ends the exchange, never a completion
        self.parser_clean = True      # at a message boundary by its own reckoning
        if self.mode == BODY_NONE:
            return
        ex: RoutedExchange = self.ex  # type: ignore[assignment]  # a response is parsed only for a started exchange
        if self.mode == BODY_CHUNKED or (self.mode == BODY_CLOSE and not ex.http10):
            self.out.append(CHUNK_END)
        ex.state = COMPLETE


def _fail(ex: "Exchange") -> None:
    """Part of the response went to the client and the rest never will: the client's connection is cut."""
    ex.state = FAILED
    ex.client.abort()


class _OutOfStep(Exception):
    """Raised in a parser callback when the backend sends a response nobody asked for."""


def _count_error(ex: "Exchange", kind: str) -> None:
    """An upstream error of the exchange's target (a started exchange always has one)."""
    target = ex.target
    if target is not None and target.stats is not None:
        target.stats.upstream_errors[kind] += 1
