"""An HTTP/1.1 client for the integration tests, built on h11 (independent of the gateway's httptools).

`HttpClient` keeps one keep-alive connection (reconnecting when the server closes it) and can also send raw
bytes and then read the responses with h11, for pipelining, malformed requests and other framing cases.
"""
from __future__ import annotations

import json
import re
import socket
import time
from dataclasses import dataclass, field

import h11

from .processes import LOOPBACK

RECV_SIZE = 256 * 1024


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]          # names lower case, in the order received
    body: bytes = b""
    informational: list[int] = field(default_factory=list)   # 1xx statuses received before this one

    def header(self, name: str) -> str | None:
        """The first value of a header (case-insensitive), None when absent."""
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def header_values(self, name: str) -> list[str]:
        name = name.lower()
        return [value for key, value in self.headers if key == name]

    def json(self):
        return json.loads(self.body)

    @property
    def version(self) -> str | None:
        """The echo/record backend that answered (its X-Version header)."""
        return self.header("x-version")


class BrokenResponse(Exception):
    """No complete, well-framed response: the connection closed or reset early, or the framing was invalid."""


class HttpClient:
    """A sequential HTTP/1.1 client over one socket at a time, parsing with h11."""

    def __init__(self, port: int, host: str = LOOPBACK, timeout: float = 10.0) -> None:
        self.address = (host, port)
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.conn: h11.Connection | None = None
        self.connections_opened = 0

    # connection management
    def connect(self) -> None:
        self.close()
        self.sock = socket.create_connection(self.address, timeout=self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn = h11.Connection(h11.CLIENT)
        self.connections_opened += 1

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock = None
        self.conn = None

    def __enter__(self) -> "HttpClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _ensure_connected(self) -> None:
        if self.conn is None or self.conn.our_state is not h11.IDLE:
            self.connect()

    # the usual way: h11 frames the request
    def request(self, method: str = "GET", target: str = "/", headers=(), body: bytes = b"",
                host: str = "test.local", on_data=None) -> Response:
        """Sends one request (Content-Length framing when there is a body) and reads its response
        (`on_data` as in `read_response`)."""
        self._ensure_connected()
        all_headers = [("Host", host), *headers]
        if body and not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in headers):
            all_headers.append(("Content-Length", str(len(body))))
        self.send_event(h11.Request(method=method, target=target, headers=all_headers))
        if body:
            self.send_event(h11.Data(data=body))
        self.send_event(h11.EndOfMessage())
        return self.read_response(on_data)

    def send_event(self, event) -> None:
        data = self.conn.send(event)
        if data:
            self.sock.sendall(data)

    # the raw way: the test writes the bytes; h11 is only told what was sent so it can read the answer
    def send_raw(self, data: bytes) -> None:
        if self.sock is None:
            self.connect()
        self.sock.sendall(data)

    def read_response_to_raw(self, method: str = "GET") -> Response:
        """Reads the response to a request sent with `send_raw` (`method` tells h11 whether it was HEAD)."""
        if self.conn.our_state is not h11.IDLE:
            raise RuntimeError("previous exchange not finished")
        self.conn.send(h11.Request(method=method, target="/", headers=[("Host", "raw")]))
        self.conn.send(h11.EndOfMessage())
        return self.read_response()

    # reading
    def next_event(self):
        """The next h11 event, receiving as needed. BrokenResponse when the server resets the connection or
        sends something h11 rejects, including EOF in the middle of a message."""
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise BrokenResponse(str(exc)) from exc
            if event is not h11.NEED_DATA:
                return event
            if time.monotonic() > deadline:
                raise TimeoutError("no complete HTTP event before the deadline")
            try:
                data = self.sock.recv(RECV_SIZE)
            except ConnectionResetError as exc:
                raise BrokenResponse("connection reset") from exc
            self.conn.receive_data(data)

    def read_response(self, on_data=None) -> Response:
        """Reads one complete response (after any 1xx). `on_data(chunk)` streams the body instead of keeping
        it; the connection is then ready for the next request, or closed if the server said so."""
        informational = []
        while True:
            event = self.next_event()
            if isinstance(event, h11.InformationalResponse):
                informational.append(event.status_code)
                continue
            if isinstance(event, h11.Response):
                break
            if isinstance(event, h11.ConnectionClosed):
                raise BrokenResponse("connection closed before a response")
            raise AssertionError(f"unexpected event {event!r}")
        response = Response(event.status_code,
                            [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in event.headers],
                            informational=informational)
        body = bytearray()
        while True:
            event = self.next_event()
            if isinstance(event, h11.Data):
                if on_data is None:
                    body += event.data
                else:
                    on_data(event.data)
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise BrokenResponse("connection closed in the middle of the body")
            else:
                raise AssertionError(f"unexpected event {event!r}")
        response.body = bytes(body)
        self._finish_cycle()
        return response

    def _finish_cycle(self) -> None:
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        else:
            self.close()


def get(port: int, target: str = "/", headers=(), host: str = "test.local") -> Response:
    """One request on a fresh connection."""
    with HttpClient(port) as client:
        return client.request("GET", target, headers, host=host)


def raw_exchange(port: int, data: bytes, method: str = "GET", timeout: float = 10.0) -> Response:
    """Sends raw bytes on a fresh connection and reads one response with h11."""
    with HttpClient(port, timeout=timeout) as client:
        client.send_raw(data)
        return client.read_response_to_raw(method)


STICKY_COOKIE = re.compile(r"^(vamp_[0-9a-f]{8})=([^;]*)")


def sticky_cookie(response: Response) -> tuple[str, str]:
    """(name, value) of the gateway's sticky cookie in a response's Set-Cookie."""
    for value in response.header_values("set-cookie"):
        match = STICKY_COOKIE.match(value)
        if match:
            return match.group(1), match.group(2)
    raise AssertionError(f"no vamp_ sticky cookie in {response.headers}")


def first_response_from(client: HttpClient, version: str, headers=(), attempts: int = 20) -> Response:
    """Sends GETs until one is answered by `version` (bounded)."""
    for _ in range(attempts):
        response = client.request("GET", "/", headers)
        if response.version == version:
            return response
    raise AssertionError(f"no request reached {version} in {attempts} attempts")
