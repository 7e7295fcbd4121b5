"""The floor of this stack: the smallest uvloop + httptools reverse proxy, for `benchmarks/proxy.py --only floor`.

It does only what no proxy on this event loop and parser can skip: llhttp frames each request and response (no
Python call per header), the bytes pass through unchanged, one request in flight per client connection, one
pooled keep-alive connection per client connection to one backend. No routing, no header rewriting, no
metrics, no timeouts, no error handling worth the name: it is not a proxy to use, it is the measure of what
the gateway's own work costs on top of the machinery (the gateway's CPU per request minus this one's).

    .venv/bin/python benchmarks/floor_proxy.py --port 8000 --backend 127.0.0.1:8001
"""
from __future__ import annotations

import argparse
import asyncio

import httptools
import uvloop


class Upstream(asyncio.Protocol):
    def __init__(self, client: Client) -> None:
        self.client = client
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.client.transport.write(data)
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        self.client.response_done()

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.transport.close()


class Client(asyncio.Protocol):
    def __init__(self, backend: tuple[str, int]) -> None:
        self.backend = backend
        self.parser = httptools.HttpRequestParser(self)
        self.upstream: Upstream | None = None
        self.pending: list[bytes] = []
        self.transport: asyncio.Transport = None  # type: ignore[assignment]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        loop = asyncio.get_running_loop()
        loop.create_task(loop.create_connection(lambda: Upstream(self), *self.backend)).add_done_callback(
            self._connected)

    def _connected(self, task: asyncio.Task) -> None:
        self.upstream = task.result()[1]
        if self.pending:
            self.upstream.transport.write(b"".join(self.pending))  # type: ignore[union-attr]
            self.pending = []

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)
        if self.upstream is None:
            self.pending.append(data)
        else:
            self.upstream.transport.write(data)  # type: ignore[union-attr]

    def on_message_complete(self) -> None:
        pass

    def response_done(self) -> None:
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.close()


async def serve(port: int, backend: tuple[str, int]) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Client(backend), "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backend", required=True, help="HOST:PORT")
    args = parser.parse_args()
    host, _, port = args.backend.rpartition(":")
    uvloop.run(serve(args.port, (host, int(port))))


if __name__ == "__main__":
    main()
