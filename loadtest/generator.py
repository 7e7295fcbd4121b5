"""The load generator of one process: keep-alive connections that send requests and time the responses.

One `Connection` (an asyncio Protocol with an httptools response parser) per socket, one request in flight on
each, like uvicorn's protocol classes; the `LoadGenerator` decides what each connection sends next and when:

- closed model (no rate): a connection sends its next request as soon as the previous response is complete,
  and latency is measured from the moment the request is written;
- open model (`--rate`): request k of this process is due at `start + (k * processes + index) / rate`; a free
  connection takes the next due request and sends it when it is due. When every connection is busy the due
  requests wait, and their latency is measured from when they were due, not from when they could be sent, so
  a stalling server cannot hide behind the tester slowing down (coordinated omission).

With virtual users (`--clients`), each request is sent on behalf of an idle user, who has at most one request
in flight and keeps a cookie jar with `--sticky`. Without them, requests cycle through the traffic's anonymous
variants (user agents and addresses of the mixes). Everything per request is prepared bytes: the hot path
writes them, feeds the parser, and records one line in the `Recorder`.
"""
from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from time import perf_counter
import httptools

from .plan import Plan
from .recorder import Recorder
from .traffic import Identity, Traffic, store_set_cookie

BODY_LIMIT = 64 * 1024          # bytes of a response body kept for `--by body:` (the match must be in them)
EARLY_SEND = 0.001              # open model: a request due within this many seconds is sent at once
CONNECT_BACKOFF = 0.1           # seconds before a connection that could not connect tries again
SWEEP_INTERVAL = 0.05           # seconds between two checks of request timeouts
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})


@dataclass(frozen=True)
class Share:
    """This process's part of the plan: process `index` of `count`."""
    index: int = 0
    count: int = 1

    def part(self, total: int) -> int:
        """This process's part of `total` (connections, requests): the first `total % count` get one more."""
        return total // self.count + (1 if self.index < total % self.count else 0)

    def first(self, total: int) -> int:
        """Index of this process's first item when `total` items are split with `part`."""
        return sum(Share(i, self.count).part(total) for i in range(self.index))


class User:
    """A virtual user: its identity, its cookie jar and the request bytes rendered from both."""
    __slots__ = ("identity", "position", "jar", "request")

    def __init__(self, identity: Identity, position: int, request: bytes) -> None:
        self.identity = identity
        self.position = position        # index into the generator's identities (for mix counts)
        self.jar: dict[str, str] = {}
        self.request = request


class Connection(asyncio.Protocol):
    """One keep-alive client connection. The base class groups by status and reads no header."""

    def __init__(self, generator: LoadGenerator) -> None:
        self.generator = generator
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.busy = False               # a request is in flight
        self.received = False           # a byte of its answer has arrived
        self.answered = 0               # responses completed on this connection
        self.started = 0.0              # when the request in flight was due (open) or sent (closed)
        self.user: User | None = None
        self.label: bytes | None = None
        self.cookies: list[bytes] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport      # type: ignore[assignment]
        self.generator.connected(self)

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.generator.failed(self, "protocol")

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        if status >= 200:               # a 1xx is interim: the final response follows
            self.generator.completed(self, status, self.parser.should_keep_alive())

    def connection_lost(self, exc: Exception | None) -> None:
        self.generator.lost(self)

    def reset(self) -> None:
        """Ready for the next response (after a HEAD, whose Content-Length announces no body here)."""
        self.parser = httptools.HttpResponseParser(self)


class ReadsHeaders:
    """Mixin: picks out the grouping header and, for sticky users, Set-Cookie."""
    generator: LoadGenerator
    label: bytes | None
    cookies: list[bytes] | None

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == self.generator.group_header:
            self.label = value
        elif name == b"set-cookie" and self.generator.keeps_cookies:
            if self.cookies is None:
                self.cookies = [value]
            else:
                self.cookies.append(value)


class ReadsBody:
    """Mixin: keeps the first BODY_LIMIT bytes of the body and labels the response with the regex match."""
    generator: LoadGenerator
    label: bytes | None
    body: bytearray

    def on_message_begin(self) -> None:
        self.body = bytearray()

    def on_body(self, data: bytes) -> None:
        if len(self.body) < BODY_LIMIT:
            self.body += data[:BODY_LIMIT - len(self.body)]

    def on_message_complete(self) -> None:
        # (mixed in only when the responses are told apart by their body: the pattern is set)
        match = self.generator.body_pattern.search(self.body)  # type: ignore[union-attr]
        if match is not None:
            self.label = match.group(1) if match.re.groups else match.group(0)
        super().on_message_complete()   # type: ignore[misc]


class HeadResponses:
    """Mixin for HEAD requests: a response is complete at the end of its head (httptools cannot be told)."""
    generator: LoadGenerator
    parser: httptools.HttpResponseParser

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status >= 200:
            keep_alive = self.parser.should_keep_alive()
            self.reset()               # type: ignore[attr-defined]
            self.generator.completed(self, status, keep_alive)   # type: ignore[arg-type]

    def on_message_complete(self) -> None:
        pass                            # 1xx: interim; otherwise already handled at the end of the head


def connection_class(plan: Plan) -> type[Connection]:
    """The protocol class with only the callbacks this plan needs (httptools skips absent ones)."""
    mixins: list[type] = []
    if plan.method == "HEAD":
        mixins.append(HeadResponses)
    if plan.by.kind == "body":
        mixins.append(ReadsBody)
    if plan.by.kind == "header" or plan.sticky:
        mixins.append(ReadsHeaders)
    if not mixins:
        return Connection
    return type("Connection", (*mixins, Connection), {})


class LoadGenerator:
    """Runs this process's share of a plan until its duration is over or its requests are done."""

    def __init__(self, plan: Plan, traffic: Traffic, recorder: Recorder, share: Share = Share()) -> None:
        self.plan = plan
        self.recorder = recorder
        self.loop = asyncio.get_running_loop()
        self.protocol = connection_class(plan)
        self.group_header = plan.by.header if plan.by.kind == "header" else None
        self.body_pattern = plan.by.pattern
        self.keeps_cookies = plan.sticky
        self.by_status = plan.by.kind == "status"
        self.retries = plan.method in IDEMPOTENT_METHODS
        self.concurrency = share.part(plan.concurrency)
        self.limit = None if plan.requests is None else share.part(plan.requests)
        self.start = 0.0                # set by run(): the time origin of the schedule and the recorder
        self.end: float | None = None
        # what is sent: virtual users, or anonymous variants taken in turn
        if plan.clients is not None:
            first = share.first(plan.clients)
            self.identities = traffic.identities(first, share.part(plan.clients))
            self.users = [User(identity, position, traffic.render(identity))
                          for position, identity in enumerate(self.identities)]
            self.variants: list[bytes] = []
        else:
            cycle = traffic.cycle
            offset = share.index * cycle // share.count
            self.identities = traffic.identities(0, cycle)
            self.identities = self.identities[offset:] + self.identities[:offset]
            self.users = []
            self.variants = [traffic.render(identity) for identity in self.identities]
        self.traffic = traffic
        self.sent = [0] * len(self.identities)          # requests sent per identity (mix counts)
        self.next_variant = 0
        self.idle_users: deque[User] = deque(self.users)
        self.waiting: deque[tuple[Connection, float]] = deque()   # due requests waiting for an idle user
        self.backlog: deque[float] = deque()            # due requests whose connection went away
        # progress
        self.issued = 0
        self.scheduled = 0              # requests handed out with a due time (open model, retries), not yet sent
        self.in_flight = 0
        self.stopping = False
        self.connections: set[Connection] = set()
        self.open_interval = None if plan.rate is None else share.count / plan.rate
        self.open_offset = 0.0 if plan.rate is None else share.index / plan.rate
        self.finished: asyncio.Future[None] = self.loop.create_future()

    # -- running ----------------------------------------------------------------------------------------------
    async def run(self) -> None:
        self.start = self.recorder.start = perf_counter()
        if self.plan.duration is not None:
            self.end = self.start + self.plan.duration
        timers = [self.loop.call_later(SWEEP_INTERVAL, self._sweep)]
        if self.end is not None:
            timers.append(self.loop.call_later(max(0.0, self.end - perf_counter()), self.stop))
        for _ in range(self.concurrency):
            self._connect()
        try:
            await self.finished
        finally:
            for timer in timers:
                timer.cancel()
            self.stopping = True
            for connection in list(self.connections):
                if connection.transport is not None:
                    connection.transport.abort()

    def stop(self) -> None:
        """No new request from now on; the run ends when those in flight, and in the open model those that
        fell due before the end, are done (or time out)."""
        self.stopping = True
        if self.open_interval is not None and not self.connections:
            self._fail_due(perf_counter(), every=True)
        self._check_finished()

    def interrupt(self) -> None:
        """Ctrl-C: the first stops the run like its end would; the next ends it at once, dropping what is
        in flight."""
        if not self.stopping:
            self.stop()
        elif not self.finished.done():
            self.finished.set_result(None)

    def _connect(self, delay: float = 0.0) -> None:
        if self._exhausted() and not self.backlog:
            self._check_finished()
            return
        if delay:
            self.loop.call_later(delay, self._connect)
            return
        self.loop.create_task(self._open())

    async def _open(self) -> None:
        connection = self.protocol(self)
        began = perf_counter()
        try:
            await self.loop.create_connection(lambda: connection, self.plan.host, self.plan.port)
        except OSError:
            now = perf_counter()
            if self.backlog:                # the request waiting for this connection fails with it
                due = self.backlog.popleft()
                if due:
                    self.scheduled -= 1
                self.recorder.failure("connect", now - (due or began), now)
            elif self._exhausted():
                self._check_finished()
                return
            elif self.open_interval is None:
                self.issued += 1
                self.recorder.failure("connect", now - began, now)
            else:                           # open model
                self._fail_due(now, every=not self.connections)
            self._check_finished()
            self._connect(CONNECT_BACKOFF)

    def _exhausted(self) -> bool:
        return self.stopping or (self.limit is not None and self.issued >= self.limit)

    # -- callbacks from connections ------------------------------------------------------------------------
    def connected(self, connection: Connection) -> None:
        self.connections.add(connection)
        self.dispatch(connection)

    def dispatch(self, connection: Connection) -> None:
        """Give a free connection its next request, now (closed model) or when it is due (open model)."""
        if self.backlog:
            self._take_user(connection, self.backlog.popleft())
            return
        if self._exhausted():
            self._check_finished()
            return
        if self.open_interval is None:
            self.issued += 1
            self._take_user(connection, 0.0)
            return
        due = self._next_due()
        if due is None:
            return                      # the last due request of the run has been handed out
        self.issued += 1
        self.scheduled += 1
        delay = due - perf_counter()
        if delay > EARLY_SEND:
            self.loop.call_later(delay, self._take_user, connection, due)
        else:
            self._take_user(connection, due)

    def _next_due(self) -> float | None:
        """Open model: when the next request falls due; None when that is past the end of the run."""
        due = self.start + self.open_offset + self.issued * self.open_interval    # type: ignore[operator]
        return None if self.end is not None and due >= self.end else due

    def _fail_due(self, now: float, every: bool) -> None:
        """Open model, a connect failed: the request that fell due fails with it, and when no connection is
        up (`every`), so does every other one due by now: nothing could send it."""
        due = self._next_due()
        while due is not None and due <= now and (self.limit is None or self.issued < self.limit):
            self.issued += 1
            self.recorder.failure("connect", now - due, now)
            due = self._next_due() if every else None

    def _take_user(self, connection: Connection, due: float) -> None:
        if self.users:
            if not self.idle_users:
                self.waiting.append((connection, due))
                return
            self._send(connection, self.idle_users.popleft(), due)
        else:
            self._send(connection, None, due)

    def _send(self, connection: Connection, user: User | None, due: float) -> None:
        """Write the request; `due` is when it fell due (open model, retries), 0.0 for "now"."""
        if due:
            self.scheduled -= 1
        transport = connection.transport
        if (self.stopping and not due) or transport is None or transport.is_closing():
            if user is not None:
                self.idle_users.append(user)
            if not (self.stopping and not due):
                self._hold(due)         # its connection went away: the next one sends it
            return
        if user is not None:
            data = user.request
            self.sent[user.position] += 1
        else:
            position = self.next_variant
            data = self.variants[position]
            self.sent[position] += 1
            self.next_variant = position + 1 if position + 1 < len(self.variants) else 0
        now = perf_counter()
        connection.user = user
        connection.started = now if due == 0.0 or due > now else due
        connection.label = None
        connection.received = False
        connection.busy = True
        self.in_flight += 1
        transport.write(data)

    def completed(self, connection: Connection, status: int, keep_alive: bool) -> None:
        if not connection.busy:         # a response nobody asked for: the server is confused
            self.failed(connection, "protocol")
            return
        now = perf_counter()
        user = connection.user
        connection.answered += 1
        self.recorder.response(status if self.by_status else connection.label, status,
                               now - connection.started, now, -1 if user is None else user.identity.index)
        if connection.cookies is not None:
            if user is not None:
                self._store_cookies(user, connection.cookies)
            connection.cookies = None
        self._finish(connection)
        if keep_alive:
            self.dispatch(connection)
        else:
            connection.transport.close()    # type: ignore[union-attr]  # connection_lost reconnects
        self._check_finished()

    def failed(self, connection: Connection, kind: str) -> None:
        """The request in flight on `connection` failed; the connection is dropped (and replaced)."""
        if connection.busy:
            now = perf_counter()
            self.recorder.failure(kind, now - connection.started, now)
            self._finish(connection)
        if connection.transport is not None:
            connection.transport.abort()
        self._check_finished()

    def lost(self, connection: Connection) -> None:
        self.connections.discard(connection)
        if connection.busy:
            if self.retries and connection.answered and not connection.received and not self.stopping:
                # A reused keep-alive connection closed before any byte of the answer: the server closed it
                # as the request went out. Like browsers, send an idempotent request again, once, on a new
                # connection; its latency still counts from the first attempt.
                self._hold(connection.started)
            else:
                now = perf_counter()
                self.recorder.failure("reset", now - connection.started, now)
            self._finish(connection)
        if not self._exhausted() or self.backlog:
            self._connect()
        self._check_finished()

    # -- bookkeeping ---------------------------------------------------------------------------------------
    def _hold(self, due: float) -> None:
        """Keep a request for the next free connection."""
        self.backlog.append(due)
        if due:
            self.scheduled += 1

    def _finish(self, connection: Connection) -> None:
        connection.busy = False
        self.in_flight -= 1
        user = connection.user
        if user is not None:
            connection.user = None
            if self.waiting:
                waiting, due = self.waiting.popleft()
                self._send(waiting, user, due)
            else:
                self.idle_users.append(user)

    def _store_cookies(self, user: User, values: list[bytes]) -> None:
        changed = False
        for value in values:
            changed |= store_set_cookie(user.jar, value)
        if changed:
            user.request = self.traffic.render(user.identity, user.jar)

    def _sweep(self) -> None:
        """Fails requests in flight for longer than the plan's timeout."""
        deadline = perf_counter() - self.plan.timeout
        for connection in [c for c in self.connections if c.busy and c.started < deadline]:
            self.failed(connection, "timeout")
        if not self.finished.done():
            self.loop.call_later(SWEEP_INTERVAL, self._sweep)

    def _check_finished(self) -> None:
        if self.finished.done():
            return
        done = self.limit is not None and self.recorder.requests >= self.limit
        if self.stopping and self.in_flight == 0 and self.scheduled == 0:
            done = True
        if done:
            self.finished.set_result(None)

    # -- what was sent -------------------------------------------------------------------------------------
    def mix_counts(self) -> dict[str, dict[str, int]]:
        """Requests sent per user-agent label and per country."""
        user_agents: dict[str, int] = {}
        countries: dict[str, int] = {}
        for identity, count in zip(self.identities, self.sent):
            if not count:
                continue
            if identity.ua_label is not None:
                user_agents[identity.ua_label] = user_agents.get(identity.ua_label, 0) + count
            if identity.country is not None:
                countries[identity.country] = countries.get(identity.country, 0) + count
        return {"user_agents": user_agents, "countries": countries}
