"""Per-target figures: every exchange is counted once, on the target that answered it, with the full figures a
route has (status classes, latency histogram, upstream errors) and its requests in flight; a route's figures
are its targets' sum plus what targets that left it had counted, so a route's counters never go back; the
snapshot carries all of it, and merging worker snapshots sums it.

The gateway runs in the test's event loop (a real `Runtime` on loopback ports) in front of small asyncio
backends that answer by path: `/ok` 200, `/fail` 500, `/hold` only once the test releases it.
"""
from __future__ import annotations

import asyncio

import pytest

from gateway.config.load import from_dict
from gateway.runtime import snapshot as snapshots
from tests.support import free_port
from tests.support.waiting import eventually_async

TIMEOUT = 10.0


class Backend:
    """An HTTP/1.1 keep-alive server on loopback answering by path; `/hold` waits for `release()`."""

    def __init__(self) -> None:
        self.port = free_port()
        self.server: asyncio.AbstractServer | None = None
        self.holding = 0
        self._release = asyncio.Event()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> "Backend":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    def release(self) -> None:
        self._release.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1]
                if path == b"/hold":
                    self.holding += 1
                    await self._release.wait()
                status = b"500 Internal Server Error" if path == b"/fail" else b"200 OK"
                writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        self._release.set()
        if self.server is not None:
            self.server.close()


async def get(port: int, path: str) -> int:
    """The status of one GET on a fresh connection to the gateway."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: shop\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length"))
        await reader.readexactly(length)
        return int(head.split(b" ")[1])
    finally:
        writer.close()


def config(port: int, routes: dict[str, list[str]]) -> object:
    """Gateway `shop` on `port`, its routes sharing the traffic equally."""
    return from_dict({"gateways": {"shop": {"port": port, "bind": "127.0.0.1", "routes": {
        name: {"targets": targets} for name, targets in routes.items()}}}})


@pytest.fixture
async def backends():
    started = [await Backend().start() for _ in range(3)]
    yield started
    for backend in started:
        await backend.stop()


def route_of(snap: dict, route: str) -> dict:
    return snap["gateways"]["shop"]["routes"][route]


async def test_each_target_counts_what_it_answered_and_its_route_is_their_sum(runtime, backends):
    port = free_port()
    one, two, three = backends
    await runtime.apply(config(port, {"a": [one.address, two.address], "b": [three.address]}))
    statuses = [await get(port, "/ok") for _ in range(6)] + [await get(port, "/fail") for _ in range(4)]
    assert sorted(statuses) == [200] * 6 + [500] * 4
    snap = snapshots.take(runtime)
    targets = {address: target["stats"] for route in ("a", "b")
               for address, target in route_of(snap, route)["targets"].items()}
    assert sum(stats["count"] for stats in targets.values()) == 10
    assert sum(stats["classes"][2] for stats in targets.values()) == 6
    assert sum(stats["classes"][5] for stats in targets.values()) == 4
    for route in ("a", "b"):
        route_stats = route_of(snap, route)["stats"]
        members = [targets[address] for address in route_of(snap, route)["targets"]]
        assert route_stats["count"] == sum(stats["count"] for stats in members) > 0
        assert route_stats["classes"] == [sum(column) for column in zip(*(s["classes"] for s in members))]
        assert route_stats["buckets"] == [sum(column) for column in zip(*(s["buckets"] for s in members))]
        assert route_stats["sum"] == pytest.approx(sum(stats["sum"] for stats in members))
    for target in route_of(snap, "a")["targets"].values():     # round-robin: both targets of a answered
        assert target["stats"]["count"] == target["requests"] > 0


async def test_requests_in_flight_are_counted_on_the_target_its_route_and_its_gateway(runtime, backends):
    port = free_port()
    one = backends[0]
    await runtime.apply(config(port, {"a": [one.address]}))
    held = asyncio.ensure_future(get(port, "/hold"))
    await eventually_async(lambda: one.holding == 1, TIMEOUT, "the request held by the backend")
    snap = snapshots.take(runtime)
    assert snap["gateways"]["shop"]["in_flight"] == 1
    assert route_of(snap, "a")["in_flight"] == 1
    assert route_of(snap, "a")["targets"][one.address]["in_flight"] == 1
    one.release()
    assert await held == 200
    snap = snapshots.take(runtime)
    assert (snap["gateways"]["shop"]["in_flight"], route_of(snap, "a")["in_flight"]) == (0, 0)
    assert route_of(snap, "a")["targets"][one.address]["stats"]["count"] == 1


async def test_a_target_that_leaves_its_route_leaves_its_counts_in_the_route(runtime, backends):
    port = free_port()
    one, two, _ = backends
    await runtime.apply(config(port, {"a": [one.address, two.address]}))
    for _ in range(4):
        assert await get(port, "/ok") == 200
    held = asyncio.ensure_future(get(port, "/hold"))        # under way on one of them when it leaves
    await eventually_async(lambda: one.holding + two.holding == 1, TIMEOUT, "the request held by a backend")
    leaving = one if one.holding else two
    staying = two if leaving is one else one
    before = route_of(snapshots.take(runtime), "a")["stats"]
    await runtime.apply(config(port, {"a": [staying.address]}))
    after = route_of(snapshots.take(runtime), "a")
    assert set(after["targets"]) == {staying.address}
    assert after["stats"] == before                           # nothing lost, nothing counted twice
    leaving.release()
    assert await held == 200                                  # finishes on the target that left ...
    assert await get(port, "/ok") == 200
    final = route_of(snapshots.take(runtime), "a")
    assert final["stats"]["count"] == before["count"] + 2     # ... and is counted on the route
    assert final["targets"][staying.address]["stats"]["count"] == 3


async def test_a_refused_connection_is_an_upstream_error_of_its_target_and_its_route(runtime, backends):
    port = free_port()
    closed = f"127.0.0.1:{free_port()}"                        # nothing listens there
    await runtime.apply(config(port, {"a": [closed, backends[0].address]}))
    for _ in range(3):
        assert await get(port, "/ok") == 200                  # redispatched to the live target
    route = route_of(snapshots.take(runtime), "a")
    refused = route["targets"][closed]
    assert refused["stats"]["errors"]["connect"] == refused["failures"] >= 1
    assert refused["stats"]["count"] == 0
    assert route["stats"]["errors"]["connect"] == refused["stats"]["errors"]["connect"]
    assert route["stats"]["count"] == route["targets"][backends[0].address]["stats"]["count"] == 3


async def test_merging_worker_snapshots_sums_targets_and_requests_in_flight(runtime, backends):
    port = free_port()
    one = backends[0]
    await runtime.apply(config(port, {"a": [one.address]}))
    assert await get(port, "/fail") == 500
    held = asyncio.ensure_future(get(port, "/hold"))
    await eventually_async(lambda: one.holding == 1, TIMEOUT, "the request held by the backend")
    snap = snapshots.take(runtime)
    merged = snapshots.merge([snap, snapshots.take(runtime)])
    gateway, route = merged["gateways"]["shop"], route_of(merged, "a")
    target = route["targets"][one.address]
    assert (gateway["in_flight"], route["in_flight"], target["in_flight"]) == (2, 2, 2)
    assert target["stats"]["count"] == route["stats"]["count"] == 2
    assert target["stats"]["classes"][5] == 2 and target["requests"] == 4
    assert snapshots.merge([snap]) is snap
    one.release()
    assert await held == 200
