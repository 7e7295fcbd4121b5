"""The gateway runtime: the current route table, the listeners, and the shared per-process state.

`Runtime.apply(config)` compiles a new `RouteTable` off the hot path (carrying over target state, pools and
counters of what still exists), opens listeners for new ports or bind addresses, swaps the table in with one
assignment, then closes listeners no gateway uses any more. Connections read `runtime.table` per request, so
a request is routed by the table current when it arrived and finishes on the objects it picked. The active
health checks' probe loops (gateway.runtime.health) follow each table: started, kept or stopped just before
it is swapped in, all stopped by `close`.

An https port's listener is opened with its `TlsListener`'s context (gateway.tls.listener), kept while the port
stays https with the same client verification; every apply reads its certificate files again, and a task polls
them every `POLL_INTERVAL` seconds, so new certificates are served without a new listener.
"""
from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
import time
from typing import TYPE_CHECKING

from gateway.config.model import Config, Tls
from gateway.proxy.client import ClientConnection
from gateway.proxy.stats import Registry, TargetStats
from gateway.proxy.tunnel import TcpConnection
from gateway.proxy.upstream import sweep_timeouts
from gateway.routing.lookups import ClientLookups
from gateway.routing.table import PortRouter, RouteTable
from gateway.runtime.health import HealthChecks
from gateway.tls.certificates import CertificateError
from gateway.tls.listener import POLL_INTERVAL, TlsListener
from gateway.runtime.access_log import AccessLogger, LogWriter

if TYPE_CHECKING:
    from collections.abc import Callable

    from gateway.proxy.exchange import Exchange

log = logging.getLogger("vamp.gateway")

SWEEP_INTERVAL = 0.1    # seconds: the resolution of response timeouts
BACKLOG = 1024


class Runtime:
    def __init__(self, loop: asyncio.AbstractEventLoop, reuse_port: bool = False) -> None:
        self.loop = loop
        self.reuse_port = reuse_port        # worker processes share each port (SO_REUSEPORT)
        self.stats = Registry()
        self.connections: set[ClientConnection] = set()
        self.table: RouteTable = RouteTable(Config())
        self.lookups = ClientLookups.from_settings(self.table.config.geo)
        self.listeners: dict[tuple[str, int], asyncio.AbstractServer] = {}
        self._kinds: dict[tuple[str, int], object] = {}      # what each listener was opened as (`_kind`)
        self.tls: dict[int, TlsListener] = {}                # the https ports' TLS state
        self._tls_poller: asyncio.Task[None] | None = None
        self._idle: dict[int, float] = {}
        self._request_head: dict[int, float] = {}
        self._trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
        self.ready = False
        self._sweeper: asyncio.Task[None] | None = None
        self.health = HealthChecks(loop)
        self._log_writers: dict[str, LogWriter] = {}      # by gateway name: its access log's file
        self._log_dropped: dict[str, int] = {}             # lines dropped by writers closed since

    # -- configuration -----------------------------------------------------------------------------
    async def apply(self, config: Config) -> None:
        """Compile `config`, swap it in, and bring the listeners in line with it."""
        table = RouteTable(config, previous=self.table)
        for router in table.gateways.values():
            for route in router.routes:
                if route.remainder is None:
                    route.remainder = TargetStats()
                for target in route.targets:
                    if target.stats is None:
                        target.stats = TargetStats()
        lookups = ClientLookups.from_settings(config.geo)
        lookups.warm(user_agents=table.needs_user_agent, geo=table.needs_country)
        self._trusted = tuple(ipaddress.ip_network(c, strict=False) for c in config.geo.trusted_proxies)
        self._idle = {port: max(g.gateway.timeouts.idle for g in pr.gateways) for port, pr in table.ports.items()}
        self._request_head = {port: max(min(g.gateway.timeouts.request_head, g.gateway.timeouts.idle)
                                        for g in pr.gateways) for port, pr in table.ports.items()}
        tls = self._tls_listeners(table)
        await self._open_listeners(table, tls)
        self.tls = tls
        stale_writers = self._attach_access_logs(table, lookups)
        self.health.update(table)                     # with no await until the swap
        previous = self.table
        self.lookups = lookups
        self.table = table
        _fold_departed_targets(previous, table)      # with no await since the swap: snapshots see either table
        self.stats.forget_except(set(table.gateways))
        await self._close_listeners(table)
        self._close_stale_pools(previous, table)
        for writer in stale_writers:
            writer.close()
        if self._sweeper is None:
            self._sweeper = self.loop.create_task(self._sweep_timeouts())
        if self.tls and self._tls_poller is None:
            self._tls_poller = self.loop.create_task(self._poll_certificates())
        self.ready = True

    def _tls_listeners(self, table: RouteTable) -> dict[int, TlsListener]:
        """The TLS state of every https port of `table`, its certificate files read now: the state in use when
        the port stays https with the same client verification (its listener is kept), else a new one. A
        certificate that cannot be loaded (and was not being served) fails the apply, as a port taken does."""
        states: dict[int, TlsListener] = {}
        for port, pr in table.ports.items():
            if pr.protocol != "https":
                continue
            gateways = [(g.name, g.gateway.tls) for g in pr.gateways if g.gateway.tls is not None]
            first: Tls = gateways[0][1]
            state = self.tls.get(port)
            try:
                if state is None or state.verification != (first.client_ca, first.client_certificate):
                    state = TlsListener(port, first)
                state.configure(gateways)
            except CertificateError as exc:
                raise OSError(errno.EINVAL, f"port {port}: {exc}") from None
            states[port] = state
        return states

    async def _poll_certificates(self) -> None:
        """Certificates replaced on disk are served to new connections within POLL_INTERVAL seconds."""
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            for state in list(self.tls.values()):
                state.poll()

    def _attach_access_logs(self, table: RouteTable, lookups: ClientLookups) -> list[LogWriter]:
        """Give each gateway of `table` that logs its `AccessLogger` (a gateway keeps its writer while its path
        stays), and each port the log of its first gateway that has one; returns the writers no longer used."""
        writers: dict[str, LogWriter] = {}
        for name, router in table.gateways.items():
            settings = router.gateway.access_log
            if settings is None:
                continue
            writer = self._log_writers.get(name)
            if writer is None or writer.path != settings.path:
                writer = LogWriter(settings.path, self.loop)
            writers[name] = writer
            router.access_log = AccessLogger(name, settings, writer, lookups)
        for port_router in table.ports.values():
            port_router.access_log = next((router.access_log for router in port_router.gateways
                                           if router.access_log is not None), None)
        stale = [writer for name, writer in self._log_writers.items() if writers.get(name) is not writer]
        for name, writer in self._log_writers.items():
            if writers.get(name) is not writer:
                self._log_dropped[name] = self._log_dropped.get(name, 0) + writer.dropped
        self._log_writers = writers
        return stale

    def reopen_access_logs(self) -> None:
        """SIGUSR1: every access log file is reopened at its path (after logrotate moved it)."""
        for writer in self._log_writers.values():
            writer.reopen()

    def access_log_dropped(self, gateway: str) -> int:
        """Access log lines of `gateway` dropped in this process (the writer could not keep up, or write)."""
        writer = self._log_writers.get(gateway)
        return self._log_dropped.get(gateway, 0) + (writer.dropped if writer is not None else 0)

    async def _close_access_logs(self) -> None:
        """Write what the access logs hold, and wait (in a thread: never on the loop) for it to be written."""
        writers = list(self._log_writers.values())
        for name, writer in self._log_writers.items():
            self._log_dropped[name] = self._log_dropped.get(name, 0) + writer.dropped
        self._log_writers = {}
        for writer in writers:
            writer.close()
        for writer in writers:
            await asyncio.to_thread(writer.join, 5.0)

    async def _sweep_timeouts(self) -> None:
        """Response timeouts without a timer per request: every SWEEP_INTERVAL (`sweep_timeouts`)."""
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            now = self.loop.time()
            sweep_timeouts(self.connections, now)

    async def _open_listeners(self, table: RouteTable, tls: dict[int, TlsListener]) -> None:
        """A listener for every (bind, port) of `table` that has none yet; all or nothing: on failure the
        listeners are as they were (closed ones reopened) and the old configuration stays in force.

        A listener moving to another address of the same port (`bind` 0.0.0.0 -> 127.0.0.1, or back) is
        opened before the old one is closed whenever the kernel lets both exist at once (worker processes,
        whose sockets all have SO_REUSEPORT), so the port is served throughout. When it does not (EADDRINUSE:
        one address is the wildcard of the other's family), opening first is impossible, so the old listener
        is closed and the new one bound and listening right after, in one synchronous step with no await in
        between: the port goes unserved only for those few system calls, never for a turn of the event loop.
        Connections already accepted carry on; one still in the old listener's accept queue is reset. A port
        that changes what it serves (http, https with other client verification, tcp) gets a new listener
        the same way."""
        opened: list[tuple[str, int]] = []
        displaced: dict[tuple[str, int], asyncio.AbstractServer] = {}
        try:
            for port, pr in table.ports.items():
                key = (pr.bind, port)
                kind = _kind(pr, tls)
                if key in self.listeners:
                    if self._kinds.get(key) == kind:
                        continue
                    displaced[key] = self.listeners.pop(key)
                    displaced[key].close()
                try:
                    sock = self._bound_socket(key)
                except OSError as exc:
                    stale = [old for old in self.listeners
                             if old[1] == port and old not in opened and old not in _keys(table)]
                    if exc.errno != errno.EADDRINUSE or not stale:
                        raise
                    for old in stale:
                        displaced[old] = self.listeners.pop(old)
                        displaced[old].close()
                    sock = self._bound_socket(key)
                self.listeners[key] = await self._serve(sock, port, pr, tls)
                self._kinds[key] = kind
                opened.append(key)
                log.info("listening on %s:%d (%s)", pr.bind, port, ", ".join(g.name for g in pr.gateways))
        except OSError:
            for key in opened:
                self.listeners.pop(key).close()
            for old in displaced:
                if old in self.listeners:        # its replacement was closed just above
                    self.listeners.pop(old).close()
                await self._reopen(old)
            raise
        for old in displaced:
            if old not in opened:
                log.info("closed listener %s:%d", *old)

    async def _reopen(self, key: tuple[str, int]) -> None:
        """The listener of the configuration in force again, after a change that closed it failed."""
        try:
            sock = self._bound_socket(key)
        except OSError as exc:
            log.error("could not listen on %s:%d again: %s", *key, exc.strerror or exc)
            return
        pr = self.table.ports[key[1]]
        self.listeners[key] = await self._serve(sock, key[1], pr, self.tls)
        self._kinds[key] = _kind(pr, self.tls)

    async def _serve(self, sock: socket.socket, port: int, pr: PortRouter, tls: dict[int, TlsListener]
                     ) -> asyncio.AbstractServer:
        if pr.protocol == "https":
            return await self.loop.create_server(self._factory(port, pr.protocol), sock=sock, backlog=BACKLOG,
                                                 ssl=tls[port].context, ssl_handshake_timeout=_handshake_timeout(pr))
        return await self.loop.create_server(self._factory(port, pr.protocol), sock=sock, backlog=BACKLOG)

    def _bound_socket(self, key: tuple[str, int]) -> socket.socket:
        """A socket bound to (bind, port) and listening, made without yielding to the event loop."""
        bind, port = key
        family = socket.AF_INET6 if ipaddress.ip_address(bind).version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self.reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:           # `::` serves IPv6 only, as 0.0.0.0 serves IPv4 only
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(key)
            sock.listen(BACKLOG)
        except OSError as exc:
            sock.close()
            raise OSError(exc.errno, f"{bind}:{port}: {(exc.strerror or str(exc)).lower()}") from None
        return sock

    def _factory(self, port: int, protocol: str) -> Callable[[], asyncio.Protocol]:
        if protocol == "tcp":
            return lambda: TcpConnection(self, port)
        if protocol == "https":
            return lambda: ClientConnection(self, port, True)  # type: ignore[return-value]  # (as below)
        return lambda: ClientConnection(self, port)  # type: ignore[return-value]  # a protocol by its methods

    async def _close_listeners(self, table: RouteTable) -> None:
        wanted = _keys(table)
        for key in [k for k in self.listeners if k not in wanted]:
            self._kinds.pop(key, None)
            server = self.listeners.pop(key)
            server.close()
            log.info("closed listener %s:%d", *key)

    @staticmethod
    def _close_stale_pools(previous: RouteTable, table: RouteTable) -> None:
        kept = {id(t) for _, _, t in table.targets()}
        for _, _, target in previous.targets():
            if id(target) not in kept and target.pool is not None:
                target.pool.close_all()

    async def shutdown(self, grace: float) -> None:
        """Stop accepting; let requests in flight finish (answered with `Connection: close`) for up to `grace`
        seconds; close idle connections at once; then close everything."""
        self.ready = False
        for server in self.listeners.values():
            server.close()
        self.listeners.clear()
        deadline = self.loop.time() + grace
        while True:
            busy = False
            for conn in list(self.connections):
                if conn.current is None and not conn.queue and conn.transport is not None:
                    conn.closing = True
                    conn.transport.close()
                else:
                    conn.drain_on_finish()
                    busy = True
            if not busy or self.loop.time() >= deadline:
                break
            await asyncio.sleep(0.05)   # a poll with a deadline: connections finish on their own schedule
        await self.close()

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._tls_poller is not None:
            self._tls_poller.cancel()
            self._tls_poller = None
        await self.health.close()
        for server in self.listeners.values():
            server.close()
        self.listeners.clear()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()
        for _, _, target in self.table.targets():
            if target.pool is not None:
                target.pool.close_all()
        await self._close_access_logs()

    # -- per-connection helpers --------------------------------------------------------------------
    def is_trusted(self, peer: str) -> bool:
        if not self._trusted or not peer:
            return False
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in net for net in self._trusted)

    def idle_timeout(self, port: int) -> float:
        return self._idle.get(port, 60.0)

    def request_head_timeout(self, port: int) -> float:
        """How long a request head may take from its first byte (the gateway's `request_head`, at most its
        `idle`; the most lenient gateway on the port, since the Host is not known before the head is in)."""
        return self._request_head.get(port, 30.0)

    # -- accounting ----------------------------------------------------------------------------------
    def record(self, ex: "Exchange", status: int) -> None:
        """On the exchange's target (a routed exchange has one), else on its route's remainder."""
        target = ex.target
        stats = target.stats if target is not None else ex.route.remainder if ex.route is not None else None
        if stats is not None:
            stats.record(status, time.monotonic() - ex.started)

    def record_unrouted(self, ex: "Exchange", status: int) -> None:
        seconds = time.monotonic() - ex.started
        if ex.gateway is not None:
            self.stats.gateway(ex.gateway.name).unrouted.record(status, seconds)
        else:
            self.stats.malformed.record(status, seconds)


def _fold_departed_targets(previous: RouteTable, table: RouteTable) -> None:
    """Every target of `previous` that is not in `table` while its route is: its counts join the route's
    remainder, and what still finishes on it is counted there too, so the route's figures never go back."""
    kept = {id(target) for _, _, target in table.targets()}
    remainders = {(router.name, route.name): route.remainder for router in table.gateways.values()
                  for route in router.routes}
    for router, route, target in previous.targets():
        remainder = remainders.get((router.name, route.name))
        if id(target) in kept or remainder is None or target.stats is None or target.stats is remainder:
            continue
        target.stats.fold_into(remainder)
        target.stats = remainder


def _kind(pr: PortRouter, tls: dict[int, TlsListener]) -> object:
    """What a port's listener serves: a listener is kept only while this stays the same."""
    if pr.protocol == "https":
        return ("https", _handshake_timeout(pr)) + tls[pr.port].verification
    return pr.protocol


def _handshake_timeout(pr: PortRouter) -> float:
    """The seconds an https port's connections get to finish their handshake: its gateways' longest (the
    handshake comes before the Host header that tells them apart)."""
    return max(g.gateway.tls.handshake_timeout for g in pr.gateways if g.gateway.tls is not None)


def _keys(table: RouteTable) -> set[tuple[str, int]]:
    """The (bind, port) of every listener `table` needs."""
    return {(pr.bind, port) for port, pr in table.ports.items()}
