"""The client side of the hot path: one `ClientConnection` (asyncio Protocol) per accepted HTTP connection.

It parses requests strictly with httptools, rejects anything with ambiguous framing before a byte reaches a
backend, asks the route table where each request goes, and hands the request to an upstream connection
(`gateway.proxy.upstream`). One request is in flight per client connection; pipelined requests are parsed into a
queue, and with MAX_PIPELINED of them waiting reading pauses (back-pressure) until answers go out. Bytes that
follow an Upgrade request are held back, never forwarded, until the backend has answered 101. Parser
callbacks only record; the I/O they imply is done once per read, so each read event costs at most one write
per peer. A connection accepted by an https listener is told so when it is made (`tls`): its backends get
`X-Forwarded-Proto: https`; TLS itself is its transport's. A `redirect_https` gateway is found like any other
(once per Host) and answers every request 308 to https (docs/tls.md, "Redirect to https"). Each request gets
its `X-Request-Id` here (`RequestIds`), and a finished or failed exchange goes to its gateway's access log, when
it has one (docs/access-logs.md).
"""
from __future__ import annotations

import asyncio
import os
import re
from time import monotonic
from collections import deque
from typing import Final, TYPE_CHECKING

import httptools

from gateway.proxy.exchange import (DONE, FAILED, RECEIVED, REQUEST_READ, REQUEST_READING, RESPONDING,
                                    ROUTED, Exchange)
from gateway.proxy.flow import FlowControl
from gateway.proxy.request_head import RequestHead, read_request_head
from gateway.proxy.upstream import dispatch
from gateway.proxy.wire import (CHUNK_END, CONTINUE_100, CRLF, MAX_HEAD_BYTES, PAUSE_BUFFER, PAUSE_PIPELINE,
                                PAUSE_TUNNEL, chunk_prefix, error_response)
from gateway.routing.request import Lookups, RequestView

if TYPE_CHECKING:
    from gateway.proxy.host import ProxyHost
    from gateway.proxy.stats import GatewayStats
    from gateway.proxy.upstream import UpstreamConnection
    from gateway.routing.table import GatewayRouter

BODY_BUFFER_LIMIT: Final = 256 * 1024
MAX_PIPELINED: Final = 32         # requests read ahead of the one in flight: with this many queued, reading pauses
FEED_SLICE: Final = 8 * 1024      # a larger read is parsed this much at a time (a body of known length at once), so
                           # that a read full of tiny pipelined requests queues at most about
                           # MAX_PIPELINED + FEED_SLICE / 18 of them (18 bytes: the shortest request)

PROTO_HTTP: Final = b"X-Forwarded-Proto: http\r\n"
PROTO_HTTPS: Final = b"X-Forwarded-Proto: https\r\n"

# RFC 3986 host (reg-name, IPv4, [IPv6]) with an optional port; empty for HTTP/1.0 without Host.
_VALID_HOST = re.compile(rb"(?:[A-Za-z0-9\-._~!$&'()*+,;=%]*|\[[0-9A-Fa-f:.]+\])(?::[0-9]*)?")


class RequestIds:
    """The request ids this process generates: a random part (12 hex digits, its own, so that ids from several
    worker processes never collide) and a counter in hex, at least 3 digits: `3f9a1c0b7e42-01a`. An id is made
    as the end of a head, b"X-Request-Id: ID\r\n\r\n": `prefix` (all but the counter's last two digits,
    remade every 256 ids) and one of the 256 ends made at import (`_ID_ENDS`): one concatenation per request.
    The access log writes an id it knows the counter of from `stem(count)` and its last two digits."""
    __slots__ = ("process", "prefix", "count")

    def __init__(self) -> None:
        self.process = REQUEST_ID_LINE + b"%s-" % os.urandom(6).hex().encode()
        self.prefix = self.process + b"0"
        self.count = 0

    def next_end(self) -> bytes:
        """A new id as the end of a head (ClientConnection._start does the same inline)."""
        count = self.count = self.count + 1
        low = count & 0xFF
        if low == 0:
            self.prefix = self.prefix_of(count)
        return self.prefix + _ID_ENDS[low]

    def prefix_of(self, count: int) -> bytes:
        """b"X-Request-Id: " and the id of counter `count` but for the counter's last two hex digits."""
        return b"%s%x" % (self.process, count >> 8)

    def stem(self, count: int) -> bytes:
        """The id of counter `count` but for the counter's last two hex digits (`%02x` of count & 0xFF)."""
        return self.prefix_of(count)[len(REQUEST_ID_LINE):]


REQUEST_ID_LINE: Final = b"X-Request-Id: "
_ID_ENDS: Final = tuple(b"%02x\r\n\r\n" % low for low in range(256))
REQUEST_IDS: Final = RequestIds()


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ClientConnection:
    """An asyncio stream protocol (duck-typed: no base class, so that the compiled build makes it a native class,
    gateway/compiled.py)."""
    __slots__ = (
        "runtime", "port", "loop", "transport", "write", "writelines", "parser", "peer", "peer_bytes", "trusted",
        "flow", "current", "queue", "parsing", "closing", "last_active", "idle_timer", "gateway_stats",
        "_pending_error", "_tunnel_upstream", "_host_raw", "_host_name", "_head_started", "_router", "_routed_by",
        "_held", "_deferred", "_advancing", "_timer_due", "_body_left",
        "_src", "_at", "_partial", "_follower", "_follow_from", "_last_reading", "_last_forward",
        "_clock", "_parse", "_view", "_view_of", "_view_lookups", "tls", "_proto_line", "_redirect",
    )
    # None until asyncio calls connection_made, which it does before any other callback.
    transport: asyncio.Transport

    def __init__(self, runtime: "ProxyHost", port: int, tls: bool = False) -> None:
        self.runtime = runtime
        self.port = port
        self.tls = tls                            # accepted by an https listener (TLS is the transport's)
        self._proto_line = PROTO_HTTPS if tls else PROTO_HTTP
        self.loop = runtime.loop
        self._clock = self.loop.time              # bound methods called for every request, looked up once
        self.transport = None  # type: ignore[assignment]  # not connected yet (see above)
        self.parser = httptools.HttpRequestParser(self)
        self._parse = self.parser.feed_data
        self.peer = ""
        self.peer_bytes = b""
        self.trusted = False
        self.current: Exchange | None = None
        self.queue: deque[Exchange] = deque()
        self.parsing: Exchange | None = None     # the exchange whose request body is being parsed
        self.closing = False
        self.last_active = 0.0
        self.idle_timer: asyncio.TimerHandle | None = None
        self.gateway_stats: GatewayStats | None = None
        self._tunnel_upstream: UpstreamConnection | None = None
        self._host_raw: bytes | None = None
        self._router: GatewayRouter | None = None       # the gateway for _host_raw in the table _routed_by
        self._routed_by: object = None
        # A redirect_https gateway for _host_raw: _router is None for it (no cost per request for the others:
        # only the no-gateway branch looks here).
        self._redirect: GatewayRouter | None = None
        self._head_started = 0.0       # when the head being parsed began (0: none in progress)
        self._host_name = ""
        self._held: bytes | None = None           # bytes read but not parsed (reading is paused meanwhile):
                                                  # after an Upgrade request, or beyond MAX_PIPELINED
        self._deferred: BadRequest | None = None  # malformed input behind requests still to be answered
        self._advancing = False                   # `_advance` is running (it loops; it does not recurse)
        self._timer_due = 0.0                     # when idle_timer fires
        self._body_left = 0                       # bytes of a Content-Length body still to come
        self._pending_error: BadRequest | None = None
        # Where the request head being parsed is (the parser makes no call per header; the head is read whole):
        self._src = b""                           # the read being parsed
        self._at = 0                              # where the next request begins in it
        self._partial: bytearray | None = None    # the start of a head that began in an earlier read
        # After a chunked request, whose end the parser does not report, a parser with header callbacks
        # follows the connection until a read begins at a request boundary (see _ChunkFollower).
        self._follower: _ChunkFollower | None = None
        self._follow_from = -1
        self._last_reading: RequestHead | None = None   # this connection's last head read, and the head
        self._last_forward = b""                         # the backend got for it
        self._view: RequestView | None = None             # what routing saw of the last request (see _start)
        self._view_of: RequestHead | None = None
        self._view_lookups: Lookups | None = None

    # -- connection lifecycle ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.write = transport.write            # what the upstream side writes
        self.writelines = transport.writelines  # to the client with
        self.flow = FlowControl(transport, self._reading_resumed)
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if peer else ""
        self.peer_bytes = self.peer.encode()
        self.trusted = self.runtime.is_trusted(self.peer)
        transport.set_write_buffer_limits(high=256 * 1024)
        self.runtime.connections.add(self)
        self.last_active = self.loop.time()
        self._arm(self.last_active + self.runtime.idle_timeout(self.port))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.runtime.connections.discard(self)
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        if self.gateway_stats is not None:
            self.gateway_stats.open_connections -= 1
            self.gateway_stats = None
        if self._tunnel_upstream is not None:
            self._tunnel_upstream.abort()
            self._tunnel_upstream = None
        ex = self.current
        if ex is not None:
            self.current = None
            if ex.upstream is not None:
                ex.upstream.client_gone()
            if ex.log is not None and ex.state != FAILED:
                # the client left before the response was complete: 499 when nothing of it was sent (nginx's code)
                ex.log.write(ex, ex.status if ex.state >= RESPONDING else 499)
            elif ex.log is not None:
                ex.log.write(ex, ex.status)            # the response was cut (gateway.proxy.upstream._fail)
            ex.state = FAILED
        self.queue.clear()
        self._held = None

    def _check_idle(self) -> None:
        """The connection's one timer: close it when idle too long, answer 408 to a request head that takes
        longer than the request-head timeout from its first byte (a client dribbling bytes does not keep a
        connection forever)."""
        self.idle_timer = None
        if self.closing:
            return
        now = self.loop.time()
        runtime = self.runtime
        idle = runtime.idle_timeout(self.port)
        due = now + idle
        if self.current is None and self._tunnel_upstream is None:
            if self._head_started:
                head_due = self._head_started + runtime.request_head_timeout(self.port)
                if now >= head_due:
                    self._reject(BadRequest(408, "the request head took too long"))
                    return
                due = min(due, head_due)
            idle_due = self.last_active + idle
            if now >= idle_due:
                self.closing = True
                self.transport.close()
                return
            due = min(due, idle_due)
        self._arm(due)

    def _arm(self, due: float) -> None:
        if self.idle_timer is not None:
            self.idle_timer.cancel()
        self.idle_timer = self.loop.call_at(due, self._check_idle)
        self._timer_due = due

    def _watch_head(self) -> None:
        """A request head has begun and is not complete: the timer fires by its deadline at the latest."""
        due = self._head_started + self.runtime.request_head_timeout(self.port)
        if due < self._timer_due:
            self._arm(due)

    # -- flow control ------------------------------------------------------------------------------
    def _reading_resumed(self) -> None:
        if self._head_started:         # a head's clock does not run while the gateway is not reading
            self._head_started = self.loop.time()

    def pause_writing(self) -> None:            # our client is slow to read the response
        ex = self.current
        up = ex.upstream if ex is not None else self._tunnel_upstream
        if up is not None:
            up.pause_reading()

    def resume_writing(self) -> None:
        ex = self.current
        up = ex.upstream if ex is not None else self._tunnel_upstream
        if up is not None:
            up.resume_reading()

    # -- reading -----------------------------------------------------------------------------------
    def _use(self, parser: httptools.HttpRequestParser) -> None:
        self.parser = parser
        self._parse = parser.feed_data

    def data_received(self, data: bytes) -> None:
        """Parse what the client sent (also called with bytes held back), then act on what the parser
        recorded: start the first exchange, flush request body upstream, pause when enough are queued."""
        self.last_active = self._clock()
        if self._tunnel_upstream is not None:
            self._tunnel_upstream.transport.write(data)
            return
        if self._held is not None:      # reading is paused; bytes already on their way wait with the rest
            self._held += data
            return
        if self._follower is not None and self.parsing is None and not self._head_started:
            self._follower = None       # at a request boundary: back to the parser without header callbacks
            self._use(httptools.HttpRequestParser(self))
        self._feed(data)
        if self.closing:
            return
        ex = self.current
        if ex is not None:
            if ex.state == RECEIVED:
                self._start(ex)
            elif ex.upstream is not None and ex.body_buffer:
                ex.upstream.send_body(ex)
        if len(self.queue) >= MAX_PIPELINED:
            self.flow.pause(PAUSE_PIPELINE)
        if self._head_started:
            self._watch_head()

    def _feed(self, data: bytes) -> None:
        """Give the parser a read; keep the start of a head it does not complete."""
        self._src = data
        self._at = 0
        try:
            if len(data) <= FEED_SLICE:
                self._parse(data)
                fed = len(data)
            else:
                fed = self._feed_slices(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._upgrade_received(data[upgrade.args[0]:])
            return
        except httptools.HttpParserError as exc:
            if self._follow_from < 0:
                self._bad_input(self._pending_error or BadRequest(400, _parser_message(exc)))
                return
            # A chunked request's head was read: a parser with header callbacks takes over after it.
            rest, self._follow_from = data[self._follow_from:], -1
            self._follower = _ChunkFollower(self)
            self._use(self._follower.parser)
            self._feed(rest)
            return
        if self._head_started and self._follower is None:
            # a head began and is not complete: its bytes so far are kept, to be read whole
            if self._partial is None:
                self._partial = bytearray(data[self._at:fed])
            else:
                self._partial += data[:fed]
            if len(self._partial) > MAX_HEAD_BYTES:
                too_long = b"\r\n" not in self._partial
                self._partial = None
                self._bad_input(BadRequest(414, "request target too long") if too_long
                                else BadRequest(431, "request head too large"))

    def _feed_slices(self, data: bytes) -> int:
        """A large read, parsed FEED_SLICE bytes at a time, or the rest of a body of known length at once (an
        upload costs one parser call per read); once MAX_PIPELINED requests are queued, the rest is held
        until answers go out. Returns how much of `data` was parsed."""
        parser = self.parser
        view = memoryview(data)
        start = 0
        while start < len(data):
            if len(self.queue) >= MAX_PIPELINED:
                self._held = data[start:]
                self.flow.pause(PAUSE_PIPELINE)
                return start
            step = self._body_left if self._body_left > FEED_SLICE else FEED_SLICE
            try:
                parser.feed_data(view[start:start + step])
            except httptools.HttpParserUpgrade as upgrade:
                raise httptools.HttpParserUpgrade(start + upgrade.args[0]) from None
            start += step
        return len(data)

    def _bad_input(self, bad: "BadRequest") -> None:
        """Malformed input. When it is in a request still queued (never sent anywhere), the requests before
        it are answered first (the answers do not depend on how the bytes arrived), then the error; when it
        is in the request in flight, at once."""
        queued = self.parsing
        if queued is not None and queued is not self.current:
            self.queue.pop()                  # the request being parsed is the last one queued: dropped
            self.parsing = None
        if self.parsing is None and self.current is not None:
            self._deferred = bad
            self._held = b""              # whatever else arrives is ignored
            self.flow.pause(PAUSE_PIPELINE)
        else:
            self._reject(bad)

    # httptools callbacks (none per header: the head is read whole, once, by gateway.proxy.request_head) ------
    def on_message_begin(self) -> None:
        self._pending_error = None
        self._head_started = self.last_active    # the read that brought the head's first bytes

    def on_headers_complete(self) -> None:
        partial = self._partial
        if partial is None:
            src, at = self._src, self._at
            end = src.index(b"\r\n\r\n", at) + 4
            raw = src if at == 0 and end == len(src) else src[at:end]     # (a read of one GET: no copy)
            self._at = end
        else:                                     # the head began in an earlier read
            before = len(partial)
            partial += self._src
            end = partial.index(b"\r\n\r\n", max(0, before - 3)) + 4
            raw = bytes(partial[:end])
            self._at = end - before
            self._partial = None
        self._head_read(raw)

    def on_body(self, body: bytes) -> None:
        ex = self.parsing
        assert ex is not None                 # a body follows the head that queued its exchange
        if ex.chunked:
            ex.body_buffer.extend((chunk_prefix(len(body)), body, CRLF))
        else:
            ex.body_buffer.append(body)
            self._at += len(body)             # a body of known length, as received: the next request follows
        ex.body_buffered += len(body)
        self._body_left -= len(body)
        # Too much body before its upstream is ready, or any body of a queued request: stop reading.
        if ex.upstream is None and (ex.body_buffered > BODY_BUFFER_LIMIT or ex is not self.current):
            self.flow.pause(PAUSE_BUFFER)

    def on_message_complete(self) -> None:
        ex = self.parsing
        if ex is None:
            return
        if ex.chunked:
            ex.body_buffer.append(CHUNK_END)
        ex.request = REQUEST_READ
        self.parsing = None

    # -- request head -------------------------------------------------------------------------------
    def _fail(self, status: int, message: str) -> BadRequest:
        self._pending_error = BadRequest(status, message)
        return self._pending_error

    def _head_read(self, raw: bytes) -> None:
        """A request head is complete: read it, and queue its exchange (or refuse it)."""
        reading = read_request_head(raw)
        if reading.error is not None:
            raise self._fail(*reading.error)
        keep_alive = reading.keep_alive
        # llhttp's own verdict, so that the gateway and its parser never disagree on what follows the head
        upgrade = reading.upgrade is not None and self.parser.should_upgrade()
        if upgrade:
            if reading.chunked or reading.content_length:
                raise self._fail(400, "a request body with Upgrade")
            head = self._forward_head(reading, upgrade)
        elif reading is self._last_reading:
            head = self._last_forward
        else:
            head = self._last_forward = self._forward_head(reading, upgrade)
            self._last_reading = reading
        ex = Exchange(self, reading, head, keep_alive, upgrade)
        self._body_left = reading.content_length
        self._head_started = 0.0
        self.parsing = ex
        if self.current is None:
            self.current = ex
        else:
            self.queue.append(ex)
        if reading.chunked and self._follower is None:
            self._follow_from = self._at          # where the chunked body begins
            raise _FollowChunks

    def _forward_head(self, reading: RequestHead, upgrade: bool) -> bytes:
        """The head the backend gets: as read, with this connection's X-Forwarded-* lines."""
        parts = [reading.forward]
        if upgrade:
            parts += (b"Connection: Upgrade\r\nUpgrade: ", reading.upgrade, CRLF)  # type: ignore[arg-type]
        xff = reading.forwarded_for
        parts += (b"X-Forwarded-For: ", (xff + b", " + self.peer_bytes) if xff else self.peer_bytes, CRLF)
        if self.trusted and reading.forwarded_proto:
            parts += (b"X-Forwarded-Proto: ", reading.forwarded_proto, CRLF)
        else:
            parts.append(self._proto_line)
        forwarded_host = reading.forwarded_host if (self.trusted and reading.forwarded_host) else reading.host
        if forwarded_host:
            parts += (b"X-Forwarded-Host: ", forwarded_host, CRLF)
        return b"".join(parts)       # (without the empty line: the exchange's head_end closes it)

    # -- routing and dispatch -----------------------------------------------------------------------
    def _start(self, ex: Exchange) -> None:
        """Choose the route and target for the exchange in flight and hand it to an upstream connection."""
        runtime = self.runtime
        table = runtime.table
        request = ex.request_head
        if request.host != self._host_raw or table is not self._routed_by:
            # keep-alive clients repeat their Host: find its gateway once per Host and route table
            if not _VALID_HOST.fullmatch(request.host):
                self.answer(ex, 400, "invalid Host header")
                return
            self._host_raw = request.host
            self._host_name = _host_name(request.host)
            port_router = table.ports.get(self.port)
            self._router = port_router.for_host(self._host_name) if port_router is not None else None
            self._redirect = None
            if self._router is not None and self._router.redirect_https is not None:
                self._redirect, self._router = self._router, None
            self._routed_by = table
        host = self._host_name
        router = self._router
        if router is None:
            if self._redirect is not None:
                self._redirect_to_https(ex, self._redirect)
                return
            self.answer(ex, 404, f"no gateway for host {host!r} on port {self.port}")
            return
        ex.gateway = router
        if self.gateway_stats is None:
            self.gateway_stats = runtime.stats.gateway(router.name)
            self.gateway_stats.open_connections += 1
        # -- request id and access log (docs/access-logs.md) --
        if router.request_ids:
            end = request.request_id_end if self.trusted else None
            if end is None:                             # a new id (RequestIds.next_end, inline)
                ids = REQUEST_IDS
                count = ids.count = ids.count + 1
                low = count & 0xFF
                if low == 0:
                    ids.prefix = ids.prefix_of(count)
                end = ids.prefix + _ID_ENDS[low]
                ex.id_count = count
            ex.head_end = end
        else:                                           # off: the client's X-Request-Id goes through as it came
            ex.head_end = CRLF
            if request.request_id_lines:
                ex.head += request.request_id_lines
        log = router.access_log
        if log is not None:
            ex.log = log if log.every else log.sampled()
        # --
        view: RequestView | None = None
        if router.reads_request:
            # What routing reads is a function of the head, the peer and the lookups: a keep-alive client
            # repeating its head gets the same view again, with whatever it worked out already.
            view = self._view
            lookups = runtime.lookups
            if view is None or self._view_of is not request or self._view_lookups is not lookups:
                view = self._view = RequestView(request.method, request.url, request.headers, host, self.peer,
                                                lookups, request.forwarded_for, request.user_agent)
                self._view_of = request
                self._view_lookups = lookups
        now = monotonic()
        decision = router.select(view, now)
        if decision is None:
            self.answer(ex, 503, f"no target available for gateway {router.name!r}")
            return
        ex.route, ex.target, ex.set_cookie = decision
        ex.state = ROUTED
        ex.routed_at = now
        if request.host_missing:
            ex.head = _with_host(ex.head, ex.target.address)
        if ex.expect_continue and not ex.http10:
            self.transport.write(CONTINUE_100)
            ex.sent += len(CONTINUE_100)
        dispatch(ex)                                    # a RoutedExchange now: gateway, route and target are set

    # -- answers -----------------------------------------------------------------------------------
    def answer(self, ex: Exchange, status: int, message: str) -> None:
        """Answer the exchange in flight with the gateway's own short response (with its request id)."""
        close = not ex.keep_alive or ex.request == REQUEST_READING
        if not ex.head_end:
            self._unrouted(ex)
        response = error_response(status, message, close=close, extra=ex.head_end[:-2])
        self.transport.write(response)
        ex.sent += len(response)
        ex.status = status
        self.runtime.record_unrouted(ex, status) if ex.route is None else self.runtime.record(ex, status)
        self.finish(ex, close=close)

    def _redirect_to_https(self, ex: Exchange, router: "GatewayRouter") -> None:
        """A redirect_https gateway's answer: 308 to the same host, path and query on https."""
        request = ex.request_head
        host = self._host_name
        if not host:
            self.answer(ex, 400, "a redirect to https needs a Host header")
            return
        ex.gateway = router
        target = request.url if request.url.startswith(b"/") else b"/"
        name = host.encode("latin-1")
        if b":" in name:
            name = b"[%s]" % name                   # an IPv6 literal
        close = not ex.keep_alive or ex.request == REQUEST_READING
        if not ex.head_end:
            self._unrouted(ex)                      # its request id and access log: the port's
        response = b"".join((
            b"HTTP/1.1 308 Permanent Redirect\r\nLocation: https://", name, router.redirect_https or b"", target,
            b"\r\nContent-Length: 0\r\n", b"Connection: close\r\n" if close else b"", ex.head_end))
        self.transport.write(response)
        ex.sent += len(response)
        ex.status = 308
        self.runtime.record_unrouted(ex, 308)
        self.finish(ex, close=close)

    def _unrouted(self, ex: Exchange) -> None:
        """The request id and access log of an exchange answered before a gateway took it (no gateway for its
        Host, an invalid Host): those of its port (`PortRouter`)."""
        port_router = self.runtime.table.ports.get(self.port)
        if port_router is None or not port_router.request_ids:
            ex.head_end = CRLF
        elif self.trusted and ex.request_head.request_id_end is not None:
            ex.head_end = ex.request_head.request_id_end
        else:
            ex.head_end = REQUEST_IDS.next_end()
        log = port_router.access_log if port_router is not None else None
        if log is not None and ex.log is None:
            ex.log = log.sampled()

    def _reject(self, bad: BadRequest) -> None:
        """Malformed input: answer it (unless a response is already under way), with a request id and a line in
        the port's access log (docs/access-logs.md), then close."""
        self.runtime.stats.malformed.record(bad.status, 0.0)
        if self.transport is None or self.closing:
            return
        ex = self.current
        if ex is not None and (ex.state >= RESPONDING or ex.upstream is not None):
            # The bad bytes follow a request already forwarded: cut the connection; the backend's side of
            # it is aborted too so nothing half-sent is ever completed.
            if ex.upstream is not None:
                ex.upstream.abort()
            self.closing = True
            self.transport.abort()
            return
        self.closing = True
        # What could not be read gets an id and a line in the log of its port, as a request for no gateway does
        port_router = self.runtime.table.ports.get(self.port)
        end = REQUEST_IDS.next_end() if port_router is not None and port_router.request_ids else CRLF
        response = error_response(bad.status, bad.message, close=True, extra=end[:-2])
        self.transport.write(response)
        self.transport.close()
        log = port_router.access_log if port_router is not None else None
        if log is not None and log.sampled() is not None:
            began = self._head_started or self.last_active
            log.write_unread(self.peer, bad.status, len(response), self.loop.time() - began,
                             end[len(REQUEST_ID_LINE):-4] if len(end) > 2 else None)

    def finish(self, ex: Exchange, close: bool = False) -> None:
        """The response to `ex` has been written completely: move on to the next request, or close."""
        if ex is not self.current:
            return
        ex.state = DONE
        self.current = None
        if ex.log is not None:
            ex.log.write(ex, ex.status)
        self.last_active = self._clock()
        if self.closing:
            return
        if close or not ex.keep_alive or ex.request == REQUEST_READING:
            self.closing = True
            self.transport.close()
            return
        if self.flow.mask:
            if ex.upgrade and self.flow.mask & PAUSE_TUNNEL:
                # The backend declined the upgrade: the connection stays HTTP/1.1, and what the client sent
                # after the upgrade request is parsed as its next request (by a parser that has not seen one).
                self._use(httptools.HttpRequestParser(self))
                self._follower = None
                self.flow.resume(PAUSE_TUNNEL)
            if self.flow.mask & PAUSE_BUFFER:
                self.flow.resume(PAUSE_BUFFER)
        if self.queue or self._held is not None or self._deferred is not None:
            if not self._advancing:
                self._advance()
        elif self._head_started:
            self._watch_head()

    def _advance(self) -> None:
        """Between responses: start the next queued request, parse bytes held back, answer deferred bad
        input; reading resumes when the queue is below MAX_PIPELINED. A loop, not recursion: the gateway's
        own answers (404, 503...) finish their exchange before `_start` returns."""
        self._advancing = True
        try:
            while not self.closing:
                if self.current is None and self.queue:
                    ex = self.current = self.queue.popleft()
                    self._start(ex)
                elif self.current is None and self._deferred is not None:
                    self._reject(self._deferred)
                elif (self._held is not None and self._deferred is None and len(self.queue) < MAX_PIPELINED
                      and not self.flow.mask & PAUSE_TUNNEL):
                    held, self._held = self._held, None
                    self.data_received(held)                # a head held back starts its clock now
                else:
                    break
            if self._held is None and self._deferred is None and len(self.queue) < MAX_PIPELINED:
                self.flow.resume(PAUSE_PIPELINE)
        finally:
            self._advancing = False

    def drain_on_finish(self) -> None:
        """Shutting down: the response in flight is the last one on this connection."""
        ex = self.current
        if ex is not None:
            ex.keep_alive = False
        for queued in self.queue:
            queued.keep_alive = False

    # -- upgrade (WebSocket) ---------------------------------------------------------------------------
    def _upgrade_received(self, rest: bytes) -> None:
        """The parser stopped after an Upgrade request (the last one read). What follows is held, unparsed and
        unsent, until the backend answers: a 101 makes the connection a tunnel and the bytes go through; any
        other answer leaves it HTTP and they are parsed as the next request (see `finish`)."""
        ex = self.queue[-1] if self.queue else self.current
        if ex is None or not ex.upgrade:
            self._bad_input(BadRequest(400, "unexpected protocol upgrade"))
            return
        self._held = rest
        self.flow.pause(PAUSE_TUNNEL)

    def become_tunnel(self, upstream: "UpstreamConnection") -> None:
        """The backend answered 101: from now on bytes pass through untouched both ways."""
        self._tunnel_upstream = upstream
        ex = self.current
        if ex is not None and ex.log is not None:
            ex.log.write(ex, 101)
        self.current = None
        held, self._held = self._held, None
        if held:
            upstream.transport.write(held)
        self.flow.resume(PAUSE_TUNNEL)

    def abort(self) -> None:
        """The response under way cannot be completed: cut the connection."""
        self.closing = True
        self.transport.abort()

    def write_eof(self) -> bool:
        """The tunnel's backend half-closed: pass it on, when the transport can (TLS cannot: False)."""
        transport = self.transport
        if transport is not None and transport.can_write_eof():
            transport.write_eof()
            return True
        return False

    def tunnel_closed(self) -> None:
        self._tunnel_upstream = None
        if not self.closing:
            self.closing = True
            self.transport.close()

    def eof_received(self) -> bool:
        if self._tunnel_upstream is not None:
            if self._tunnel_upstream.transport.can_write_eof():
                self._tunnel_upstream.transport.write_eof()
            return not self.tls     # TLS has no half-close: the transport closes whatever is answered
        return False


class _FollowChunks(Exception):
    """Raised in `on_headers_complete` after a chunked request's head: the parser stops there, and a
    `_ChunkFollower` parses the rest of the read."""


class _ChunkFollower:
    """The parser of a client connection after a chunked request, until a read begins at a request boundary.

    The connection's own parser makes no call per header and finds each head by where the previous request
    ended; a chunked body's end is not reported, so after one the heads are rebuilt from llhttp's callbacks
    instead (for the same reading, by gateway.proxy.request_head). It starts as if it had just read a chunked
    request's head, and passes everything but the head to the connection."""
    __slots__ = ("connection", "parser", "skipping", "in_body", "url", "lines", "size")

    SKIPPED_HEAD = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.parser = httptools.HttpRequestParser(self)
        self.in_body = False
        self.url = b""
        self.lines: list[bytes] = []
        self.size = 0
        self.skipping = True
        self.parser.feed_data(self.SKIPPED_HEAD)     # the connection has read the real one

    def on_message_begin(self) -> None:
        if not self.skipping:
            self.in_body = False
            self.url = b""
            self.lines = []
            self.size = 0
            self.connection.on_message_begin()

    def on_url(self, url: bytes) -> None:
        if not self.skipping:
            self.url += url
            self.size += len(url)
            if self.size > MAX_HEAD_BYTES:
                raise self.connection._fail(414, "request target too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.skipping or self.in_body:
            return          # (chunked trailers: not forwarded)
        self.size += len(name) + len(value) + 4
        if self.size > MAX_HEAD_BYTES:
            raise self.connection._fail(431, "request head too large")
        self.lines += (name, b": ", value, CRLF)

    def on_headers_complete(self) -> None:
        if self.skipping:
            self.skipping = False
            return
        self.in_body = True
        parser = self.parser
        raw = b"%s %s HTTP/%s\r\n%s\r\n" % (parser.get_method(), self.url, parser.get_http_version().encode(),
                                            b"".join(self.lines))
        self.connection._head_read(raw)

    def on_body(self, body: bytes) -> None:
        self.connection.on_body(body)

    def on_message_complete(self) -> None:
        self.connection.on_message_complete()


def _host_name(host: bytes) -> str:
    """Host header → lower-case name without port ("[::1]:80" → "::1")."""
    h = host.decode("latin-1").strip().lower()
    if h.startswith("["):
        end = h.find("]")
        return h[1:end] if end > 0 else h
    colon = h.rfind(":")
    return h[:colon] if colon >= 0 else h


def _with_host(head: bytes, address: str) -> bytes:
    """A request head with `Host: address` after its request line."""
    line_end = head.index(CRLF) + 2
    return b"%sHost: %s\r\n%s" % (head[:line_end], address.encode("ascii"), head[line_end:])


def _parser_message(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return f"malformed request: {text}"
