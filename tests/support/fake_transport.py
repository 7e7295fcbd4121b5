"""The proxy's two protocols without sockets: a client connection and its upstream connections driven over fake
transports, in the test's own event loop.

`FakeGateway(config_dict)` compiles a real route table and serves it through a small stand-in for the runtime;
`gateway.client()` accepts a client connection; every upstream connection the proxy opens is a `FakeBackend`
(in `gateway.backends`, in the order opened) whose transport records what the proxy sent and whose protocol is
fed the backend's answer with `respond`. Tests see the protocols only at their boundary: what they write to,
and call on, the transports, and the asyncio callbacks these objects deliver. How the protocols are built and
wired (runtime, pools, timeouts) is known here and nowhere else.

`parse_responses` and `parse_requests` read recorded bytes with h11, independent of the proxy's httptools.
"""
from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import h11

from gateway.config.load import from_dict
from gateway.proxy.client import ClientConnection
from gateway.proxy.stats import Registry, TargetStats
from gateway.proxy.upstream import sweep_timeouts
from gateway.routing.lookups import ClientLookups
from gateway.routing.table import RouteTable

from .http import BrokenResponse, Response

CLIENT_PEER = ("127.0.0.1", 40000)
_REQUEST_ID_LINE = re.compile(rb"X-Request-Id: [^\r]*\r\n")
SETTLE_TURNS = 20        # event-loop turns `settle` gives connects and scheduled callbacks (a fixed count: no clock)


class FakeTransport:
    """An asyncio transport that records: the bytes written (as the peer would receive them: nothing after
    close or abort), every pause/resume of reading, close, abort and write_eof. Closing it delivers
    `connection_lost` to its protocol on the next loop turn, as asyncio does."""

    def __init__(self, peer: tuple[str, int]) -> None:
        self.peer = peer
        self.chunks: list[bytes] = []
        self.calls: list[str] = []         # "pause_reading", "resume_reading", "close", "abort", "write_eof"
        self.reading = True
        self.closed = False                # closed or aborted by the proxy
        self.aborted = False
        self.eof_written = False
        self.lost = False                  # connection_lost delivered
        self._taken = 0
        self._protocol: asyncio.BaseProtocol | None = None

    def attach(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    # -- what the proxy calls --------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self.eof_written:
            raise RuntimeError("write() after write_eof()")
        if not self.closed:
            self.chunks.append(bytes(data))

    def writelines(self, parts: Any) -> None:
        self.write(b"".join(parts))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def pause_reading(self) -> None:
        self.calls.append("pause_reading")
        self.reading = False

    def resume_reading(self) -> None:
        self.calls.append("resume_reading")
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def is_closing(self) -> bool:
        return self.closed

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.calls.append("write_eof")
        self.eof_written = True

    def close(self) -> None:
        self.calls.append("close")
        self._shut()

    def abort(self) -> None:
        self.calls.append("abort")
        self.aborted = True
        self._shut()

    def _shut(self) -> None:
        if not self.closed:
            self.closed = True
            asyncio.get_running_loop().call_soon(self.lose, None)

    # -- what the peer does ----------------------------------------------------------------------------
    def lose(self, exc: Exception | None) -> None:
        """The connection is gone (closed by either side, or reset): `connection_lost`, once."""
        if not self.lost:
            self.lost = True
            self.closed = True
            assert self._protocol is not None
            self._protocol.connection_lost(exc)

    # -- for assertions ----------------------------------------------------------------------------------
    @property
    def data(self) -> bytes:
        """Everything written so far."""
        return b"".join(self.chunks)

    def take(self) -> bytes:
        """What was written since the last `take`."""
        data = self.data
        new, self._taken = data[self._taken:], len(data)
        return new


class _Peer:
    """One end the test plays: a protocol, the fake transport it writes to, and the callbacks to drive it."""

    def __init__(self, protocol: asyncio.Protocol, transport: FakeTransport) -> None:
        self._protocol = protocol
        self.transport = transport

    @property
    def received(self) -> bytes:
        """Everything the proxy has written to this peer."""
        return self.transport.data

    def take(self) -> bytes:
        """What the proxy has written to this peer since the last `take`."""
        return self.transport.take()

    @property
    def reading(self) -> bool:
        """Whether the proxy is reading from this peer (not paused)."""
        return self.transport.reading

    @property
    def closed(self) -> bool:
        return self.transport.closed

    @property
    def aborted(self) -> bool:
        return self.transport.aborted

    def send(self, data: bytes) -> None:
        self._protocol.data_received(data)

    def eof(self) -> bool | None:
        """The peer shut down its writing side: `eof_received` (its answer: keep the transport open?)."""
        return self._protocol.eof_received()

    def pause_writing(self) -> None:
        """The proxy's writes to this peer fill the transport's buffer."""
        self._protocol.pause_writing()

    def resume_writing(self) -> None:
        self._protocol.resume_writing()

    def close(self) -> None:
        """The peer closed the connection cleanly (EOF, then the connection is gone)."""
        self._protocol.eof_received()
        self.transport.lose(None)

    def reset(self) -> None:
        """The connection was reset by the peer."""
        self.transport.lose(ConnectionResetError(104, "Connection reset by peer"))


class FakeClient(_Peer):
    """A client connected to the gateway."""


class FakeBackend(_Peer):
    """One connection the proxy opened to a target: `received` is what the proxy sent, `send` feeds the
    backend's bytes to the proxy."""

    def __init__(self, address: str, protocol: asyncio.Protocol, transport: FakeTransport) -> None:
        super().__init__(protocol, transport)
        self.address = address

    def respond(self, data: bytes) -> None:
        self.send(data)


class _Host:
    """What the protocols need of the process serving them (gateway.proxy.host.ProxyHost), over a real
    route table; connections to targets are made by `gateway`'s fake `create_connection`."""

    def __init__(self, gateway: FakeGateway, table: RouteTable, trusted: set[str]) -> None:
        self.loop = _Loop(asyncio.get_running_loop(), gateway)
        self.table = table
        self.lookups = ClientLookups.from_settings(table.config.geo)
        self.stats = Registry()
        self.connections: set[ClientConnection] = set()
        self.recorded: list[int] = []
        self._trusted = trusted

    def is_trusted(self, peer: str) -> bool:
        return peer in self._trusted

    def idle_timeout(self, port: int) -> float:
        return max(g.gateway.timeouts.idle for g in self.table.ports[port].gateways)

    def request_head_timeout(self, port: int) -> float:
        return max(min(g.gateway.timeouts.request_head, g.gateway.timeouts.idle)
                   for g in self.table.ports[port].gateways)

    def record(self, ex: Any, status: int) -> None:
        self.recorded.append(status)

    def record_unrouted(self, ex: Any, status: int) -> None:
        self.recorded.append(status)


class _Loop:
    """The running loop, except that connections to targets are fake (or refused)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, gateway: FakeGateway) -> None:
        self._loop = loop
        self._gateway = gateway

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loop, name)

    async def create_connection(self, factory: Callable[[], asyncio.Protocol], host: str, port: int,
                                **_: Any) -> tuple[FakeTransport, asyncio.Protocol]:
        return self._gateway._connect(factory, host, port)


class FakeGateway:
    """A gateway serving `config` (a configuration dict, docs/gateway-config.md) to fake clients, through fake
    backends. Construct it inside the test's event loop (an async test)."""

    def __init__(self, config: dict, *, trusted: tuple[str, ...] = ()) -> None:
        table = RouteTable(from_dict(config))
        for _, route, target in table.targets():      # the counters the runtime hangs on a new table
            if route.remainder is None:
                route.remainder = TargetStats()
            if target.stats is None:
                target.stats = TargetStats()
        self._host = _Host(self, table, set(trusted))
        self.backends: list[FakeBackend] = []
        self.refusing: set[str] = set()      # target addresses whose connections are refused
        self.connects: list[str] = []        # every connection attempt, by target address

    @property
    def port(self) -> int:
        """The port of the (first) gateway in the configuration."""
        return next(iter(self._host.table.ports))

    @property
    def recorded(self) -> list[int]:
        """The status of every finished exchange, as the proxy reported it to its runtime."""
        return self._host.recorded

    def client(self, port: int | None = None, peer: tuple[str, int] = CLIENT_PEER) -> FakeClient:
        """A client connection accepted on `port` (the first gateway's by default)."""
        protocol = ClientConnection(self._host, self.port if port is None else port)  # type: ignore[arg-type]
        transport = FakeTransport(peer)
        transport.attach(protocol)
        protocol.connection_made(transport)  # type: ignore[arg-type]
        return FakeClient(protocol, transport)

    def backend(self, index: int = -1) -> FakeBackend:
        """An upstream connection the proxy opened (the latest by default)."""
        assert self.backends, "the proxy opened no upstream connection"
        return self.backends[index]

    async def settle(self) -> None:
        """Let the loop run what the proxy scheduled: connects to targets, connection_lost after a close."""
        for _ in range(SETTLE_TURNS):
            await asyncio.sleep(0)

    def expire_responses(self, after: float) -> None:
        """The runtime's response-timeout sweep, as if `after` seconds had passed since the last backend I/O."""
        now = self._host.loop.time() + after
        sweep_timeouts(self._host.connections, now)

    def _connect(self, factory: Callable[[], asyncio.Protocol], host: str, port: int,
                 ) -> tuple[FakeTransport, asyncio.Protocol]:
        address = f"{host}:{port}"
        self.connects.append(address)
        if address in self.refusing:
            raise ConnectionRefusedError(111, "Connection refused")
        protocol = factory()
        transport = FakeTransport((host, port))
        transport.attach(protocol)
        protocol.connection_made(transport)  # type: ignore[arg-type]
        self.backends.append(FakeBackend(address, protocol, transport))
        return transport, protocol


# -- reading what was written, with h11 ------------------------------------------------------------------

def without_request_ids(data: bytes) -> bytes:
    """`data` without its X-Request-Id lines: every request gets an id of its own, so tests that compare the
    bytes of different runs leave them out (tests/gateway/test_request_id.py checks them)."""
    return _REQUEST_ID_LINE.sub(b"", data)


@dataclass
class Request:
    method: str
    target: str
    headers: list[tuple[str, str]]          # names lower case, in the order received
    body: bytes = b""
    version: str = "1.1"
    raw_head: bytes = field(default=b"", repr=False)

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key == name.lower()), None)

    def header_values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name.lower()]


def parse_requests(data: bytes) -> list[Request]:
    """The complete requests in `data` (what a backend received), in order."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    requests: list[Request] = []
    current: Request | None = None
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA or event is h11.PAUSED:
            if event is h11.PAUSED and conn.our_state is h11.SEND_RESPONSE:
                conn.send(h11.Response(status_code=200, headers=[("content-length", "0")]))
                conn.send(h11.EndOfMessage())
                conn.start_next_cycle()
                continue
            return requests
        if isinstance(event, h11.Request):
            current = Request(event.method.decode(), event.target.decode(),
                              [(k.decode(), v.decode("latin-1")) for k, v in event.headers],
                              version=event.http_version.decode())
        elif isinstance(event, h11.Data):
            assert current is not None
            current.body += event.data
        elif isinstance(event, h11.EndOfMessage):
            assert current is not None
            requests.append(current)
            current = None


def parse_responses(data: bytes, methods: tuple[str, ...] = ("GET",), *, closed: bool = False) -> list[Response]:
    """One response per request method in `methods` (what a client received); `closed`: the connection has
    ended after `data` (a response delimited by the close is complete). Raises BrokenResponse when `data`
    does not hold them all, well framed."""
    conn = h11.Connection(h11.CLIENT)
    conn.receive_data(data)
    if closed:
        conn.receive_data(b"")
    responses: list[Response] = []
    for method in methods:
        conn.send(h11.Request(method=method, target="/", headers=[("host", "gateway")]))
        conn.send(h11.EndOfMessage())
        informational: list[int] = []
        response: Response | None = None
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise BrokenResponse(f"invalid framing: {exc}") from exc
            if event is h11.NEED_DATA or event is h11.PAUSED:
                raise BrokenResponse(f"incomplete: {len(responses)} of {len(methods)} responses in {data!r}")
            if isinstance(event, h11.InformationalResponse):
                informational.append(event.status_code)
            elif isinstance(event, h11.Response):
                response = Response(event.status_code,
                                    [(k.decode(), v.decode("latin-1")) for k, v in event.headers],
                                    informational=informational)
            elif isinstance(event, h11.Data):
                assert response is not None
                response.body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert response is not None
                responses.append(response)
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise BrokenResponse(f"closed after {len(responses)} of {len(methods)} responses")
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        else:
            break
    if len(responses) != len(methods):
        raise BrokenResponse(f"{len(responses)} of {len(methods)} responses, then the connection closed")
    return responses
