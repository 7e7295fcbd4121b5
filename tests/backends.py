"""Backend servers the integration tests put behind the gateway, each run as a real process on loopback.

    python -m tests.backends KIND --port N [--name NAME] [--port M --name NAME2 ...] [options]

`--port`/`--name` may repeat: the k-th name labels the k-th listener (one process, several backends).

Kinds:
  echo     200 with `X-Version: NAME` and a JSON body {name, method, path, query, headers, body_length,
           body_sha256}; keep-alive and pipelining honoured. Request headers steer it: `X-Echo-Status: 204`,
           `X-Echo-Delay: 2.5` (seconds), `X-Echo-Size: N` (answer N bytes of `pattern()` streamed in chunks
           instead of JSON; `X-Echo-Chunked: 1` frames it chunked instead of with Content-Length).
           `--status N` answers N instead of 200 when the request has no `X-Echo-Status` (a failing backend).
           `--health-file FILE`: `GET /healthz` answers the status written in FILE (200 while it is missing or
           empty), so a test turns a backend's health check red and green by writing a file.
           `--max-requests-per-connection N` closes a connection right after its Nth response, without saying
           `Connection: close`; with `--close-on-next-request` it instead keeps the connection open and closes
           it, unanswered, when request N+1 arrives (a pooled connection that died just as it was reused).
  head304  like echo, but GET answers the fixed HEAD304_RESOURCE, with an `ETag: "v1"` on every answer, 304
           (with ETag and Content-Length) when `If-None-Match: "v1"`, and 204 for the path `/204`. Both echo and
           head304 answer HEAD with the Content-Length of the GET body and no body, and `Expect: 100-continue` with
           `100 Continue`.
  record   an h11 server (an HTTP/1.1 implementation independent of the gateway's) that appends every request
           as h11 parsed it — {name, method, target, http_version, headers, body, body_length} — as a JSON
           line to `--record FILE` before answering 200 with `X-Version: NAME` and `X-Target: TARGET`; a
           request h11 rejects is recorded as {name, error} and answered 400.
  hang     accepts connections and reads, never answers.
  die      answers every request head with `Content-Length: 1000000` and a few bytes, then closes
           (`--die-mode close`) or resets (`--die-mode reset`) the connection.
  ws       a WebSocket echo server (the `websockets` library).
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import signal
import socket
import struct
from http import HTTPStatus
from urllib.parse import parse_qsl, urlsplit

import h11
import httptools

CHUNK_SIZE = 64 * 1024
_PATTERN_BLOCK = bytes(range(256)) * (CHUNK_SIZE // 256)
ETAG = '"v1"'
HEAD304_RESOURCE = b"the head304 resource, version 1\n"   # what head304 answers to GET (and HEAD describes)


def pattern(size: int):
    """The bytes `X-Echo-Size: size` answers, as blocks of at most CHUNK_SIZE (tests hash them to compare)."""
    remaining = size
    while remaining > 0:
        block = _PATTERN_BLOCK if remaining >= CHUNK_SIZE else _PATTERN_BLOCK[:remaining]
        remaining -= len(block)
        yield block


# -- echo and head304: asyncio Protocol + httptools ------------------------------------------------------

class Exchange:
    """One request as the echo server received it (the body is hashed as it streams, never kept)."""
    __slots__ = ("method", "url", "headers", "keep_alive", "body_length", "body_hash")

    def __init__(self) -> None:
        self.method = "GET"
        self.url = b""
        self.headers: list[tuple[str, str]] = []
        self.keep_alive = True
        self.body_length = 0
        self.body_hash = hashlib.sha256()

    def header(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


class EchoProtocol(asyncio.Protocol):
    """Serves one connection: parses requests with httptools and answers them strictly in order."""

    def __init__(self, name: str, kind: str, options: argparse.Namespace) -> None:
        self.name = name
        self.kind = kind
        self.options = options
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.current: Exchange | None = None
        self.queue: asyncio.Queue[Exchange] = asyncio.Queue()
        self.writable = asyncio.Event()
        self.writable.set()
        self.answered = 0
        self.worker: asyncio.Task | None = None

    # transport callbacks
    def connection_made(self, transport) -> None:
        self.transport = transport
        self.worker = asyncio.get_running_loop().create_task(self.serve())

    def connection_lost(self, exc) -> None:
        if self.worker is not None:
            self.worker.cancel()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            self.transport.close()

    # parser callbacks
    def on_message_begin(self) -> None:
        self.current = Exchange()

    def on_url(self, url: bytes) -> None:
        self.current.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.current.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        ex = self.current
        ex.method = self.parser.get_method().decode()
        ex.keep_alive = self.parser.should_keep_alive()
        if (ex.header("expect") or "").lower() == "100-continue":
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self.current.body_length += len(body)
        self.current.body_hash.update(body)

    def on_message_complete(self) -> None:
        self.queue.put_nowait(self.current)

    # answering
    async def serve(self) -> None:
        limit = self.options.max_requests_per_connection
        while True:
            ex = await self.queue.get()
            if limit and self.answered >= limit:      # only with --close-on-next-request
                self.transport.close()
                return
            await self.answer(ex)
            self.answered += 1
            if not ex.keep_alive or (limit and self.answered >= limit and not self.options.close_on_next_request):
                self.transport.close()
                return

    async def answer(self, ex: Exchange) -> None:
        delay = float(ex.header("x-echo-delay") or 0)
        if delay:
            await asyncio.sleep(delay)
        status = int(ex.header("x-echo-status") or self.options.status)
        if self.options.health_file and urlsplit(ex.url.decode("latin-1")).path == "/healthz":
            status = health_status(self.options.health_file)
        headers = [("X-Version", self.name)]
        if self.kind == "head304":
            headers.append(("ETag", ETAG))
            if ex.header("if-none-match") == ETAG:
                status = 304
            elif urlsplit(ex.url.decode("latin-1")).path == "/204":
                status = 204
        if not ex.keep_alive:
            headers.append(("Connection", "close"))
        size = ex.header("x-echo-size")
        if size is not None and status not in (204, 304):
            await self.stream(ex, status, headers, int(size), ex.header("x-echo-chunked") == "1")
            return
        if status == 204:
            self.write_head(status, headers)
            return
        if self.kind == "head304" and ex.method in ("GET", "HEAD"):
            body, content_type = HEAD304_RESOURCE, "text/plain"
        else:
            body, content_type = self.describe(ex), "application/json"
        headers += [("Content-Type", content_type), ("Content-Length", str(len(body)))]
        send_body = ex.method != "HEAD" and status != 304
        self.transport.write(self.head(status, headers) + (body if send_body else b""))

    def describe(self, ex: Exchange) -> bytes:
        parts = urlsplit(ex.url.decode("latin-1"))
        return json.dumps({
            "name": self.name,
            "method": ex.method,
            "path": parts.path,
            "query": parse_qsl(parts.query, keep_blank_values=True),
            "headers": ex.headers,
            "body_length": ex.body_length,
            "body_sha256": ex.body_hash.hexdigest(),
        }).encode()

    async def stream(self, ex: Exchange, status: int, headers, size: int, chunked: bool) -> None:
        headers = headers + [("Content-Type", "application/octet-stream")]
        headers.append(("Transfer-Encoding", "chunked") if chunked else ("Content-Length", str(size)))
        self.write_head(status, headers)
        if ex.method == "HEAD":
            return
        for block in pattern(size):
            await self.writable.wait()
            if self.transport.is_closing():
                return
            if chunked:
                self.transport.write(b"%x\r\n%s\r\n" % (len(block), block))
            else:
                self.transport.write(block)
        if chunked:
            self.transport.write(b"0\r\n\r\n")

    def write_head(self, status: int, headers) -> None:
        self.transport.write(self.head(status, headers))

    @staticmethod
    def head(status: int, headers) -> bytes:
        lines = [f"HTTP/1.1 {status} {reason(status)}"] + [f"{k}: {v}" for k, v in headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Status"


# -- record: an independent HTTP/1.1 implementation (h11) -------------------------------------------------

class RecordProtocol(asyncio.Protocol):
    """Appends each request, exactly as h11 understood it, to the record file, then answers 200."""

    def __init__(self, name: str, record_file) -> None:
        self.name = name
        self.record_file = record_file
        self.conn = h11.Connection(h11.SERVER)
        self.transport = None
        self.request: h11.Request | None = None
        self.body = bytearray()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.conn.receive_data(data)
        self.process()

    def eof_received(self):
        self.conn.receive_data(b"")
        self.process()

    def process(self) -> None:
        while not self.transport.is_closing():
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError as exc:
                self.record_file.append({"name": self.name, "error": str(exc)})
                self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                self.transport.close()
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.ConnectionClosed):
                self.transport.close()
                return
            if isinstance(event, h11.Request):
                self.request, self.body = event, bytearray()
                if self.conn.they_are_waiting_for_100_continue:
                    self.transport.write(self.conn.send(h11.InformationalResponse(status_code=100, headers=[])))
            elif isinstance(event, h11.Data):
                self.body += event.data
            elif isinstance(event, h11.EndOfMessage):
                self.finish()

    def finish(self) -> None:
        req = self.request
        count = self.record_file.append({
            "name": self.name,
            "method": req.method.decode(),
            "target": req.target.decode("latin-1"),
            "http_version": req.http_version.decode(),
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in req.headers.raw_items()],
            "body": self.body.decode("latin-1"),
            "body_length": len(self.body),
        })
        body = json.dumps({"name": self.name, "recorded": count}).encode()
        out = self.conn.send(h11.Response(status_code=200, headers=[
            ("X-Version", self.name), ("X-Target", req.target), ("Content-Type", "application/json"),
            ("Content-Length", str(len(body)))]))
        if req.method != b"HEAD":
            out += self.conn.send(h11.Data(data=body))
        out += self.conn.send(h11.EndOfMessage())
        self.transport.write(out)
        if self.conn.our_state is h11.MUST_CLOSE:
            self.transport.close()
        elif self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()


class RecordFile:
    """The record file of a record process, shared by all its listeners; each entry is flushed at once."""

    def __init__(self, path: str) -> None:
        self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - open for the process's life
        self.count = 0

    def append(self, entry: dict) -> int:
        """Writes one JSON line and returns how many entries this process has recorded."""
        self.file.write(json.dumps(entry) + "\n")
        self.file.flush()
        self.count += 1
        return self.count


# -- hang, die -----------------------------------------------------------------------------------------

class HangProtocol(asyncio.Protocol):
    """Reads everything, answers nothing, closes only when the peer does."""

    def data_received(self, data: bytes) -> None:
        pass


class DieProtocol(asyncio.Protocol):
    """Starts a 1,000,000-byte response, sends a few bytes of it, then closes or resets the connection."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.received = b""
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received += data
        if b"\r\n\r\n" not in self.received:
            return
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\nX-Version: die\r\n\r\npartial body")
        if self.mode == "reset":
            sock = self.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.transport.abort()
        else:
            self.transport.close()


# -- ws --------------------------------------------------------------------------------------------------

async def serve_ws(port: int, name: str):
    from websockets.asyncio.server import serve

    async def echo(websocket):
        async for message in websocket:
            await websocket.send(message)

    return await serve(echo, "127.0.0.1", port)


# -- main ------------------------------------------------------------------------------------------------

def health_status(path: str) -> int:
    """The status `--health-file` says `/healthz` answers."""
    try:
        with open(path, encoding="ascii") as file:
            return int(file.read().strip() or 200)
    except FileNotFoundError:
        return 200


def protocol_factory(kind: str, name: str, options: argparse.Namespace, record_file: RecordFile | None):
    if kind in ("echo", "head304"):
        return lambda: EchoProtocol(name, kind, options)
    if kind == "record":
        return lambda: RecordProtocol(name, record_file)
    if kind == "hang":
        return HangProtocol
    if kind == "die":
        return lambda: DieProtocol(options.die_mode)
    raise ValueError(kind)


async def run(options: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    names = options.name or []
    record_file = RecordFile(options.record) if options.kind == "record" else None
    servers = []
    for index, port in enumerate(options.port):
        name = names[index] if index < len(names) else f"{options.kind}-{port}"
        if options.kind == "ws":
            servers.append(await serve_ws(port, name))
        else:
            servers.append(await loop.create_server(
                protocol_factory(options.kind, name, options, record_file), options.host, port, reuse_address=True))
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for server in servers:
        server.close()


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.backends", description=__doc__.split("\n")[0])
    parser.add_argument("kind", choices=["echo", "head304", "record", "hang", "die", "ws"])
    parser.add_argument("--port", type=int, action="append", required=True, help="listen port (repeatable)")
    parser.add_argument("--name", action="append", help="the name of the k-th listener (repeatable)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--record", help="record: the JSON-lines file to append requests to")
    parser.add_argument("--max-requests-per-connection", type=int, default=0)
    parser.add_argument("--close-on-next-request", action="store_true")
    parser.add_argument("--die-mode", choices=["close", "reset"], default="close")
    parser.add_argument("--status", type=int, default=200, help="echo: the status answered without X-Echo-Status")
    parser.add_argument("--health-file", help="echo: the file holding the status GET /healthz answers")
    options = parser.parse_args(argv)
    if options.kind == "record" and not options.record:
        parser.error("record needs --record FILE")
    return options


def main(argv=None) -> None:
    options = parse_args(argv)
    import uvloop
    uvloop.run(run(options))


if __name__ == "__main__":
    main()
