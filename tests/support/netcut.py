"""`NetCut`: a TCP forwarder on loopback that a test can cut, as a network partition would, and restore.

In-process tests put it between a client and a server they share with other tests (the module's etcd): the
client's connections are reset and new ones refused while it is cut, without stopping the server.

    cut = await NetCut(etcd_server.members[0].client_port).start()
    ... url with cut.port ...
    cut.cut()
    await cut.restore()
"""
from __future__ import annotations

import asyncio

from .processes import LOOPBACK

CHUNK = 64 * 1024


class NetCut:
    def __init__(self, target_port: int, target_host: str = LOOPBACK) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.WriteTransport] = set()
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> "NetCut":
        self._server = await asyncio.start_server(self._serve, LOOPBACK, self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def cut(self) -> None:
        """Reset every connection through it and refuse new ones until `restore`."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for transport in list(self._transports):
            transport.abort()
        self._transports.clear()

    async def restore(self) -> None:
        if self._server is None:
            await self.start()

    async def close(self) -> None:
        """Cut, and wait for the pipes to end (an aborted transport ends them)."""
        self.cut()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            try:
                server_reader, server_writer = await asyncio.open_connection(*self.target)
            except OSError:
                client_writer.transport.abort()
                return
            self._transports |= {client_writer.transport, server_writer.transport}
            await asyncio.gather(self._pipe(client_reader, server_writer), self._pipe(server_reader, client_writer))
        finally:
            self._tasks.discard(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(CHUNK):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._transports.discard(writer.transport)
            writer.transport.abort()
