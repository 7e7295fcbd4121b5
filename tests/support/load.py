"""Traffic and control for the tests of live changes: a bounded load generator and an admin API call.

`LoadGenerator` runs K client threads against a gateway port (on 127.0.0.1 unless `host` says), each on its
own keep-alive connection (reopened only after a failure), sending GETs until `stop()` or its deadline,
whichever comes first. It records every response (when, on which local port, status, X-Version) and every
failure by kind, and can be paused — `pause()` returns once no request is in flight — and resumed, so that a
probe can measure a split while nothing else is routed.

    with LoadGenerator(port, connections=6, seconds=40) as load:
        ...                        # change the configuration under load
    assert load.failures == []

`admin_call(gateway, "PATCH", "/api/v1/gateways/g", {...})` sends one JSON request to a gateway's admin API.
`BackgroundTraffic` is a plain client for tests that live in an event loop (the engine's, the platform's).
"""
from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from .http import BrokenResponse, HttpClient
from .processes import LOOPBACK, GatewayProcess

FAILURE_KINDS = ("status", "reset", "refused", "timeout", "broken")
WAIT_SLICE = 0.05          # seconds a paused or waiting thread sleeps on its condition before looking again


@dataclass(frozen=True)
class Outcome:
    """A complete response: when it arrived (time.monotonic), the client's local port, status, X-Version."""
    at: float
    local_port: int | None       # None when the connection was closed right after the response
    status: int
    version: str | None


@dataclass(frozen=True)
class Failure:
    """A request without a 2xx response. `kind` is one of FAILURE_KINDS: a non-2xx `status`, a connection
    `reset` (or broken pipe), `refused` on connect, a `timeout`, or a `broken` response (closed early,
    invalid framing)."""
    at: float
    local_port: int | None
    kind: str
    detail: str


class LoadGenerator:
    """K client threads sending GETs to 127.0.0.1:port until stopped or `seconds` have passed."""

    def __init__(self, port: int, *, connections: int = 6, seconds: float = 30.0, path: str = "/",
                 headers: tuple[tuple[str, str], ...] = (), request_timeout: float = 5.0, host: str = LOOPBACK
                 ) -> None:
        self.port = port
        self.host = host
        self.connections = connections
        self.seconds = seconds
        self.path = path
        self.headers = list(headers)
        self.request_timeout = request_timeout
        self.outcomes: list[Outcome] = []
        self.failures: list[Failure] = []
        self.connections_opened = 0
        self._local_ports: list[int | None] = [None] * connections
        self._state = threading.Condition()
        self._paused = False
        self._stopped = False
        self._busy = 0
        self._deadline = 0.0
        self._threads: list[threading.Thread] = []

    # -- control ---------------------------------------------------------------------------------------
    def start(self) -> "LoadGenerator":
        self._deadline = time.monotonic() + self.seconds
        self._threads = [threading.Thread(target=self._run, args=(index,), name=f"load-{index}", daemon=True)
                         for index in range(self.connections)]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Ends the run and waits for every client thread (each finishes its request in flight first)."""
        with self._state:
            self._stopped = True
            self._state.notify_all()
        for thread in self._threads:
            thread.join(self.request_timeout + 5.0)
            if thread.is_alive():
                raise AssertionError(f"{thread.name} did not stop within {self.request_timeout + 5.0} s")

    def pause(self, timeout: float = 10.0) -> None:
        """No new requests; returns once none is in flight."""
        with self._state:
            self._paused = True
            if not self._state.wait_for(lambda: self._busy == 0, timeout):
                raise AssertionError(f"{self._busy} load requests still in flight {timeout} s after pausing")

    def resume(self) -> None:
        with self._state:
            self._paused = False
            self._state.notify_all()

    def with_window(self, probe: Callable[[], Counter]) -> Counter:
        """The versions `probe()` saw plus every load response routed meanwhile: the load is paused (nothing in
        flight) at both ends, so the window holds every request the gateway routed in it and no other."""
        self.pause()
        before = self.versions()
        self.resume()
        seen = probe()
        self.pause()
        seen += self.versions() - before
        self.resume()
        return seen

    def wait_for_responses(self, count: int, timeout: float = 10.0) -> None:
        """Blocks until `count` more responses or failures have been recorded than when called."""
        with self._state:
            target = len(self.outcomes) + len(self.failures) + count
            if not self._state.wait_for(lambda: len(self.outcomes) + len(self.failures) >= target, timeout):
                raise AssertionError(f"the load recorded fewer than {count} responses in {timeout} s "
                                     f"(running: {self.running})")

    @property
    def running(self) -> bool:
        return not self._stopped and time.monotonic() < self._deadline

    def local_ports(self) -> set[int]:
        """The local ports of the clients' current connections (to find which process holds them)."""
        with self._state:
            return {port for port in self._local_ports if port is not None}

    def __enter__(self) -> "LoadGenerator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- results ---------------------------------------------------------------------------------------
    def versions(self) -> Counter:
        """X-Version of every response recorded."""
        with self._state:
            return Counter(outcome.version for outcome in self.outcomes)

    def failure_kinds(self) -> Counter:
        with self._state:
            return Counter(failure.kind for failure in self.failures)

    # -- one client ------------------------------------------------------------------------------------
    def _may_send(self) -> bool:
        """Waits while paused; True when a request may be sent now (and counts it as in flight)."""
        with self._state:
            while self._paused and self.running:
                self._state.wait(WAIT_SLICE)
            if not self.running:
                return False
            self._busy += 1
            return True

    def _run(self, index: int) -> None:
        client = HttpClient(self.port, self.host, timeout=self.request_timeout)
        try:
            while self._may_send():
                outcome = self._exchange(client)
                with self._state:
                    self._busy -= 1
                    self._local_ports[index] = outcome.local_port if client.sock is not None else None
                    if isinstance(outcome, Outcome):
                        self.outcomes.append(outcome)
                    else:
                        self.failures.append(outcome)
                    self._state.notify_all()
        finally:
            client.close()

    def _exchange(self, client: HttpClient) -> Outcome | Failure:
        opened = client.connections_opened
        try:
            response = client.request("GET", self.path, self.headers)
        except (ConnectionResetError, BrokenPipeError) as exc:
            return self._failed(client, opened, "reset", exc)
        except ConnectionRefusedError as exc:
            return self._failed(client, opened, "refused", exc)
        except TimeoutError as exc:
            return self._failed(client, opened, "timeout", exc)
        except BrokenResponse as exc:
            return self._failed(client, opened, "reset" if "reset" in str(exc) else "broken", exc)
        except Exception as exc:  # noqa: BLE001 - anything else the client chokes on is a broken response
            return self._failed(client, opened, "broken", exc)
        local_port = self._count_connections(client, opened)
        if not 200 <= response.status < 300:
            return Failure(time.monotonic(), local_port, "status",
                           f"HTTP {response.status}: {response.body[:200]!r}")
        return Outcome(time.monotonic(), local_port, response.status, response.version)

    def _failed(self, client: HttpClient, opened: int, kind: str, exc: BaseException) -> Failure:
        local_port = self._count_connections(client, opened)
        client.close()          # the next request opens a fresh connection
        return Failure(time.monotonic(), local_port, kind, f"{type(exc).__name__}: {exc}")

    def _count_connections(self, client: HttpClient, opened: int) -> int | None:
        """Counts the connections this exchange opened; returns the local port of the client's socket."""
        with self._state:
            self.connections_opened += client.connections_opened - opened
        try:
            return client.sock.getsockname()[1] if client.sock is not None else None
        except OSError:
            return None


def admin_call(gateway: GatewayProcess, method: str, path: str, body: Any = None,
               timeout: float = 10.0) -> tuple[int, Any]:
    """(status, decoded JSON body or None) of one admin API request; HTTP errors are returned, not raised."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(gateway.admin_url(path), data=data, method=method,
                                     headers={"Content-Type": "application/json", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, payload = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, payload = exc.code, exc.read()
    return status, json.loads(payload) if payload else None


class BackgroundTraffic:
    """Requests through a gateway from the test's own event loop, one after the other, until `stop` is set or
    the deadline passes: how many were answered, by which version (X-Version), and every failure.

        traffic = BackgroundTraffic(url)
        task = asyncio.get_running_loop().create_task(traffic.run(time.monotonic() + 60))
        ...
        traffic.stop.set(); await task
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.answered = 0
        self.versions: Counter = Counter()
        self.failures: list[str] = []
        self.stop = asyncio.Event()

    async def run(self, deadline: float) -> None:
        async with aiohttp.ClientSession() as session:
            while not self.stop.is_set() and time.monotonic() < deadline:
                try:
                    async with session.get(self.url) as response:
                        await response.read()
                        if response.status != 200:
                            self.failures.append(f"status {response.status}")
                        self.answered += 1
                        self.versions[response.headers.get("X-Version")] += 1
                except aiohttp.ClientError as exc:
                    self.failures.append(repr(exc))
