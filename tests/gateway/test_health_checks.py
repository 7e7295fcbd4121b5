"""Active health checks (docs/health-checks.md): a target failing its check is taken out — no request reaches it,
the admin API and `vamp_target_up` say so — and put back once it passes again; the thresholds, timeouts, a
route's check replacing its gateway's, a route whose targets are all unhealthy giving its traffic to the other
routes, configuration changes (a kept target keeps its health and its probe loop, a removed one's loop stops),
tcp gateways (a TCP connect), two worker processes, and the configuration's validation.

Two kinds of tests: a real gateway process in front of echo backends whose `/healthz` answers the status a file
holds (tests/backends.py `--health-file`), and a `Runtime` in the test's event loop in front of small asyncio
backends, where the probe loops themselves can be looked at. Checks run every 200 ms; every wait is a poll with a
deadline.
"""
from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from pathlib import Path

import pytest

from gateway.admin.client import gateway_table
from gateway.config.load import ConfigError, from_dict, parse_document, to_dict
from gateway.config.model import HealthCheck
from gateway.routing.table import RouteTable
from gateway.runtime import snapshot as snapshots
from gateway.runtime.health import HEALTHY, UNHEALTHY, UNKNOWN, USER_AGENT, Probe, next_state, probe, request_of
from gateway.runtime.runtime import Runtime
from tests.support import HttpClient, config, free_port, gateway, route
from tests.support.load import admin_call
from tests.support.waiting import eventually, eventually_async

TIMEOUT = 10.0
FAST = {"path": "/healthz", "interval": "200ms", "timeout": "200ms", "healthy": 2, "unhealthy": 3}


# -- the state machine -------------------------------------------------------------------------------------
def test_a_target_turns_unhealthy_after_exactly_unhealthy_failures_and_back_after_healthy_successes(caplog):
    caplog.set_level(logging.DEBUG, logger="vamp.health")
    check = HealthCheck(path="/healthz", healthy=2, unhealthy=3)
    table = RouteTable(from_dict(config({"g": gateway(8080, {"r": route("127.0.0.1:8081", "127.0.0.1:8082")})})))
    target, other = table.gateways["g"].routes[0].targets
    watcher = Probe(target.host, target.port, target.address, check)
    watcher.targets = [target]
    states = []
    for passed in (False, False, True, False, False, False, False, True, False, True, True, True):
        watcher.record(passed, "status 200" if passed else "status 500")
        states.append(watcher.state)
        assert target.unhealthy == (watcher.state == UNHEALTHY)
    assert states == [UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN, UNHEALTHY, UNHEALTHY, UNHEALTHY, UNHEALTHY,
                      UNHEALTHY, HEALTHY, HEALTHY]
    lines = [(record.levelname, record.getMessage()) for record in caplog.records]
    assert lines == [
        ("WARNING", "health check GET /healthz: 127.0.0.1:8081 is unhealthy after 3 failed checks (status 500)"),
        ("INFO", "health check GET /healthz: 127.0.0.1:8081 is healthy again after 2 passed checks (status 200)"),
    ]
    # unknown counts as up; healthy: 1, unhealthy: 1 flip on every probe
    assert next_state(UNKNOWN, 1, 0, HealthCheck(healthy=1, unhealthy=1)) == HEALTHY
    assert next_state(HEALTHY, 0, 1, HealthCheck(healthy=1, unhealthy=1)) == UNHEALTHY
    assert not other.unhealthy


def test_an_unhealthy_target_is_skipped_like_a_backed_off_one_and_its_route_is_not_live():
    table = RouteTable(from_dict(config({"g": gateway(8080, {
        "a": route("127.0.0.1:8081", "127.0.0.1:8082", weight="50%"), "b": route("127.0.0.1:8083", weight="50%")})})))
    router = table.gateways["g"]
    a, b = router.routes
    first, second = a.targets
    first.set_unhealthy(True)
    picks = Counter(router.select(None, 100.0)[1].address for _ in range(40))      # type: ignore[index]
    assert picks == {"127.0.0.1:8082": 20, "127.0.0.1:8083": 20}
    first.mark_ok()                            # a connection made meanwhile does not bring it back
    assert first.down_until > 1e300
    second.set_unhealthy(True)
    assert not a.is_live(1e9)                 # no back-off to wait out: not live until a check passes
    picks = Counter(router.select(None, 100.0)[1].address for _ in range(10))      # type: ignore[index]
    assert picks == {"127.0.0.1:8083": 10}
    second.mark_failed(100.0)                  # (a connection picked before it turned unhealthy, failing now)
    second.set_unhealthy(False)
    assert a.is_live(100.0) and second.down_until == 0.0 and second.failures == 0


# -- the probe, against small asyncio backends ----------------------------------------------------------------
class Backend:
    """An HTTP/1.1 server on loopback: `/healthz` answers `health` (or never, with `hang`), other paths 200 with
    `X-Version: name`. It keeps the heads of the health checks it received."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = free_port()
        self.health = 200
        self.hang = False
        self.checks: list[bytes] = []
        self.server: asyncio.AbstractServer | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> "Backend":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if head.split(b" ", 2)[1] == b"/healthz":
                    self.checks.append(head)
                    if self.hang:
                        await asyncio.sleep(TIMEOUT)
                    writer.write(b"HTTP/1.1 %d Health\r\nContent-Length: 0\r\n\r\n" % self.health)
                else:
                    writer.write(b"HTTP/1.1 200 OK\r\nX-Version: " + self.name.encode() + b"\r\nContent-Length: 0"
                                 b"\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()


@pytest.fixture
async def backends():
    started = [await Backend(name).start() for name in ("one", "two")]
    yield started
    for backend in started:
        await backend.stop()


def checked(port: int, routes: dict, check: dict | None = FAST, **fields) -> object:
    return from_dict(config({"shop": gateway(port, routes, **({"health_check": check} if check else {}), **fields)}))


def health_of(runtime: Runtime, route: str, address: str) -> dict:
    return snapshots.take(runtime)["gateways"]["shop"]["routes"][route]["targets"][address]


def probe_tasks() -> set[asyncio.Task]:
    return {task for task in asyncio.all_tasks() if task.get_name().startswith("health check of")}


async def version_of(port: int) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: shop\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        return next(line.split(b": ")[1].decode() for line in head.split(b"\r\n") if line.startswith(b"X-Version"))
    finally:
        writer.close()


async def test_the_probe_is_a_get_with_host_user_agent_and_connection_close(runtime, backends):
    one, _ = backends
    check = HealthCheck(path="/healthz")
    assert await probe("127.0.0.1", one.port, check, request_of(check, one.address)) == (True, "status 200")
    head = one.checks[-1].decode()
    assert head.startswith("GET /healthz HTTP/1.1\r\n")
    assert f"\r\nHost: {one.address}\r\n" in head
    assert f"\r\nUser-Agent: {USER_AGENT}\r\n" in head and "\r\nConnection: close\r\n" in head
    await runtime.apply(checked(free_port(), {"r": route(one.address)}, {**FAST, "host": "shop.example:8080"}))
    await eventually_async(lambda: health_of(runtime, "r", one.address)["health"] == HEALTHY, TIMEOUT, "healthy")
    assert "\r\nHost: shop.example:8080\r\n" in one.checks[-1].decode()
    one.health = 503
    wanted = HealthCheck(path="/healthz", expect=(200, 299))
    assert await probe("127.0.0.1", one.port, wanted, request_of(wanted, one.address)) == (False, "status 503")
    one.health = 302
    assert await probe("127.0.0.1", one.port, wanted, request_of(wanted, one.address)) == (False, "status 302")
    assert await probe("127.0.0.1", free_port(), wanted, request_of(wanted, "x")) == (False, "refused")


async def test_a_timeout_is_a_failure(runtime, backends):
    one, two = backends
    two.hang = True
    port = free_port()
    await runtime.apply(checked(port, {"r": route(one.address, two.address)}, {**FAST, "unhealthy": 1}))
    await eventually_async(lambda: health_of(runtime, "r", two.address)["health"] == UNHEALTHY, TIMEOUT,
                           "the hanging target unhealthy")
    assert health_of(runtime, "r", two.address)["check_result"] == "timeout"
    assert [await version_of(port) for _ in range(6)] == ["one"] * 6


async def test_a_kept_target_keeps_its_health_and_probe_and_a_removed_targets_probe_stops(runtime, backends):
    one, two = backends
    two.health = 500
    port = free_port()
    await runtime.apply(checked(port, {"r": route(one.address, two.address)}))
    assert len(probe_tasks()) == 2
    await eventually_async(lambda: health_of(runtime, "r", two.address)["health"] == UNHEALTHY, TIMEOUT,
                           "two unhealthy")
    probes = dict(runtime.health.probes)

    # Weights change and a route comes: the same two probes, two still out, from the first request on.
    await runtime.apply(checked(port, {"r": route(one.address, two.address, weight="100%"),
                                       "s": route(one.address, weight="0%")}))
    assert runtime.health.probes == probes and probe_tasks() == {p.task for p in probes.values()}
    assert health_of(runtime, "r", two.address)["health"] == UNHEALTHY
    assert health_of(runtime, "s", one.address)["health"] != UNHEALTHY
    assert [await version_of(port) for _ in range(6)] == ["one"] * 6

    # two leaves: its probe loop ends; one's goes on.
    await runtime.apply(checked(port, {"r": route(one.address)}))
    [(key, kept)] = runtime.health.probes.items()
    assert key[0] == one.address and kept is probes[key]
    await eventually_async(lambda: probe_tasks() == {kept.task}, TIMEOUT, "two's probe loop stopped")

    # A changed check starts afresh: a new probe, the target up until it has a verdict.
    two.health = 200
    await runtime.apply(checked(port, {"r": route(one.address)}, {**FAST, "path": "/healthz?v=2"}))
    [fresh] = runtime.health.probes.values()
    assert fresh is not kept
    await eventually_async(lambda: probe_tasks() == {fresh.task}, TIMEOUT, "the old check's loop stopped")

    # No health check any more: no loop; and none is left after close.
    await runtime.apply(checked(port, {"r": route(one.address, two.address)}, None))
    assert runtime.health.probes == {}
    assert health_of(runtime, "r", one.address)["health"] == "unchecked"
    await eventually_async(lambda: not probe_tasks(), TIMEOUT, "every probe loop stopped")


async def test_a_route_can_switch_its_gateways_check_off(runtime, backends):
    """`health_check: off` on a route: its targets are not probed (a service without a health endpoint) and take
    their share, while the gateway's other routes stay checked."""
    one, two = backends
    one.health = two.health = 500
    port = free_port()
    await runtime.apply(checked(port, {"checked": route(one.address, weight="0%"),
                                       "unchecked": route(two.address, weight="100%", health_check=False)},
                                {**FAST, "unhealthy": 1}))
    assert [key[0] for key in runtime.health.probes] == [one.address]
    await eventually_async(lambda: health_of(runtime, "checked", one.address)["health"] == UNHEALTHY, TIMEOUT,
                           "the checked route's target unhealthy")
    assert health_of(runtime, "unchecked", two.address)["health"] == "unchecked"
    assert two.checks == []
    assert [await version_of(port) for _ in range(4)] == ["two"] * 4


async def test_first_probes_are_spread_over_the_interval(runtime):
    """Many targets checked at once are not all probed at the same moment: each loop's first check comes at a
    random point of its interval."""
    started = [await Backend(f"b{i}").start() for i in range(12)]
    try:
        arrivals: dict[str, float] = {}
        loop = asyncio.get_running_loop()
        for backend in started:
            backend.checks = _Stamped(backend.name, arrivals, loop)
        applied = loop.time()
        await runtime.apply(checked(free_port(), {"r": route(*(b.address for b in started))},
                                    {**FAST, "interval": "1s", "timeout": "500ms"}))
        await eventually_async(lambda: len(arrivals) == len(started), TIMEOUT, "every target probed")
        offsets = sorted(arrivals[b.name] - applied for b in started)
        assert offsets[-1] < 1.0 + 1.0, offsets          # within the interval (and a busy loop's lag)
        assert offsets[-1] - offsets[0] > 0.2, f"all first probes came together: {offsets}"
    finally:
        for backend in started:
            await backend.stop()


class _Stamped(list):
    """A backend's list of the health checks it received, noting when the first one came."""

    def __init__(self, name: str, arrivals: dict[str, float], loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.name, self.arrivals, self.loop = name, arrivals, loop

    def append(self, head: bytes) -> None:
        self.arrivals.setdefault(self.name, self.loop.time())
        super().append(head)


async def test_close_stops_every_probe_loop(backends):
    one, two = backends
    served = Runtime(asyncio.get_running_loop())
    await served.apply(checked(free_port(), {"r": route(one.address, two.address)}))
    tasks = probe_tasks()
    assert len(tasks) == 2
    await served.close()
    assert all(task.done() for task in tasks) and not probe_tasks()


async def test_a_tcp_gateways_check_is_a_tcp_connect(runtime, backends):
    one, _ = backends
    dead = f"127.0.0.1:{free_port()}"
    port = free_port()
    await runtime.apply(from_dict(config({"shop": {"port": f"{port}/tcp", "bind": "127.0.0.1", "health_check": {
        "interval": "100ms", "unhealthy": 1, "healthy": 1}, "routes": {"r": route(one.address, dead)}}})))
    await eventually_async(lambda: health_of(runtime, "r", dead)["health"] == UNHEALTHY, TIMEOUT, "dead unhealthy")
    assert health_of(runtime, "r", dead)["check_result"] == "refused"
    await eventually_async(lambda: health_of(runtime, "r", one.address)["health"] == HEALTHY, TIMEOUT, "one healthy")
    assert health_of(runtime, "r", one.address)["check_result"] == "connected"
    assert not one.checks                       # no HTTP request: a connection, closed at once
    assert [await version_of(port) for _ in range(4)] == ["one"] * 4


# -- a real gateway process -------------------------------------------------------------------------------
def set_health(path: Path, status: int) -> None:
    """What the backend's /healthz answers from now on (written whole, so it never reads half a file)."""
    scratch = path.with_suffix(".new")
    scratch.write_text(str(status))
    os.replace(scratch, path)


def target_status(process, route_name: str, address: str) -> dict:
    status, document = admin_call(process, "GET", "/api/v1/gateways/shop")
    assert status == 200, document
    return document["status"]["routes"][route_name]["targets"][address]


def gauge(process, name: str, address: str, route_name: str | None = None) -> list[float]:
    labels = {"gateway": "shop", "target": address, **({"route": route_name} if route_name else {})}
    return [sample.value for sample in process.metrics().find(name, **labels)]


def versions(port: int, count: int) -> Counter:
    """Who answered `count` requests, each on a new connection (so with workers, any worker may serve it)."""
    answers: Counter = Counter()
    for _ in range(count):
        with HttpClient(port) as client:
            response = client.request("GET", "/")
            answers[(response.status, response.version)] += 1
    return answers


@pytest.fixture
def flaky(procs, tmp_path):
    """An echo backend `flaky` whose /healthz answers what its file says, and a healthy one, `steady`."""
    health = tmp_path / "flaky-health"
    return (procs.backend("echo", "flaky", extra_args=("--health-file", str(health))),
            procs.backend("echo", "steady"), health)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_target_failing_its_check_is_taken_out_and_put_back(procs, flaky, workers):
    flaky_backend, steady, health = flaky
    port = free_port()
    gw = procs.gateway(config({"shop": gateway(port, {"r": route(flaky_backend.address(), steady.address())},
                                               health_check=FAST)}),
                       extra_args=("--workers", str(workers)) if workers > 1 else ())
    address = flaky_backend.address()
    eventually(lambda: target_status(gw, "r", address)["health"] == HEALTHY, TIMEOUT, "healthy at first")
    assert target_status(gw, "r", address)["state"] == "active"

    set_health(health, 500)
    eventually(lambda: target_status(gw, "r", address)["health"] == UNHEALTHY, TIMEOUT, "unhealthy",
               context=lambda: target_status(gw, "r", address))
    shown = target_status(gw, "r", address)
    assert shown["state"] == "down" and shown["check_result"] == "status 500" and shown["checked_at"], shown
    assert gauge(gw, "vamp_target_up", address) == [0] and gauge(gw, "vamp_target_healthy", address) == [0]
    assert gauge(gw, "vamp_target_healthy", steady.address()) == [1]
    # With two workers, the admin API says unhealthy as soon as one worker does: the other follows within a check.
    eventually(lambda: versions(port, 10) == {(200, "steady"): 10}, TIMEOUT, "no request reaching flaky")

    set_health(health, 200)
    eventually(lambda: target_status(gw, "r", address)["health"] == HEALTHY, TIMEOUT, "healthy again")
    assert target_status(gw, "r", address)["state"] == "active"
    assert gauge(gw, "vamp_target_up", address) == [1] and gauge(gw, "vamp_target_healthy", address) == [1]
    eventually(lambda: versions(port, 10)[(200, "flaky")] >= 4, TIMEOUT, "flaky serving again")
    log = gw.stderr_text()
    assert log.count(f"{address} is unhealthy after 3 failed checks (status 500)") == workers, log
    assert log.count(f"{address} is healthy again after 2 passed checks") == workers, log


def test_a_routes_check_replaces_its_gateways_and_a_route_with_no_healthy_target_gives_its_share_away(procs):
    echo = procs.backend("echo", "one", "two")
    hang = procs.backend("hang")
    port = free_port()
    gw = procs.gateway(config({"shop": gateway(port, {
        "r1": route(echo.address("one"), echo.address("two"), hang.address(), weight="50%"),
        "r2": route(echo.address("two"), weight="50%", health_check={**FAST, "expect": 204}),
    }, health_check=FAST)}))
    eventually(lambda: target_status(gw, "r2", echo.address("two"))["health"] == UNHEALTHY, TIMEOUT,
               "two unhealthy in r2 (it answers 200, not 204)")
    assert target_status(gw, "r2", echo.address("two"))["check_result"] == "status 200"
    eventually(lambda: target_status(gw, "r1", hang.address())["health"] == UNHEALTHY, TIMEOUT,
               "the hanging target unhealthy in r1")
    assert target_status(gw, "r1", hang.address())["check_result"] == "timeout"
    assert target_status(gw, "r1", echo.address("two"))["health"] == HEALTHY     # the gateway's check: 2xx, 3xx
    assert versions(port, 20) == {(200, "one"): 10, (200, "two"): 10}
    assert gw.metrics().value("vamp_requests_total", gateway="shop", route="r2", code="2xx") is None
    assert gw.metrics().value("vamp_requests_total", gateway="shop", route="r1", code="2xx") == 20

    # The admin API refuses an invalid check, naming the field.
    status, body = admin_call(gw, "PATCH", "/api/v1/gateways/shop", {"health_check": {"interval": "10ms"}})
    assert status == 400 and body["field"] == "/health_check/interval", body


# -- configuration -----------------------------------------------------------------------------------------
def test_a_health_check_round_trips_and_defaults():
    document = config({"shop": gateway(8080, {"r": route("127.0.0.1:8081", health_check={"path": "/ping",
                                                                                        "host": "shop.local"})},
                                       health_check={"path": "/healthz", "interval": "500ms", "expect": "200-299"})})
    loaded = from_dict(document)
    shop = loaded.gateways[0]
    assert shop.health_check == HealthCheck(path="/healthz", interval=0.5, timeout=0.5, expect=(200, 299))
    assert shop.routes[0].health_check == HealthCheck(path="/ping", host="shop.local")
    assert shop.health_check_of(shop.routes[0]) == shop.routes[0].health_check
    assert from_dict(to_dict(loaded)) == loaded
    assert to_dict(loaded)["gateways"]["shop"]["health_check"] == {
        "path": "/healthz", "interval": "500ms", "timeout": "500ms", "healthy": 2, "unhealthy": 3, "expect": "200-299"}
    plain = from_dict(config({"shop": gateway(8080, {"r": route("127.0.0.1:8081")})}))
    assert "health_check" not in to_dict(plain)["gateways"]["shop"]
    assert "health_check" not in to_dict(plain)["gateways"]["shop"]["routes"]["r"]
    off = from_dict(parse_document("gateways:\n  shop:\n    port: 8080\n    health_check: {path: /healthz}\n"
                                   "    routes:\n      r: {targets: ['127.0.0.1:8081'], health_check: off}\n"))
    assert off.gateways[0].routes[0].health_check is False
    assert off.gateways[0].health_check_of(off.gateways[0].routes[0]) is None
    assert to_dict(off)["gateways"]["shop"]["routes"]["r"]["health_check"] is False
    assert from_dict(to_dict(off)) == off
    with pytest.raises(ConfigError) as error:
        from_dict(config({"shop": gateway(8080, {"r": route("127.0.0.1:8081", health_check=True)})}))
    assert error.value.location == ("gateways", "shop", "routes", "r", "health_check")
    assert "false (off) for none" in error.value.message
    tcp = from_dict(config({"t": {"port": "9000/tcp", "health_check": {}}}))
    assert tcp.gateways[0].health_check == HealthCheck(path=None)
    assert from_dict(to_dict(tcp)) == tcp


@pytest.mark.parametrize("check, field, message", [
    ({"path": "healthz"}, "path", "starting with '/'"),
    ({"path": "/a b"}, "path", "without spaces"),
    ({"interval": "50ms"}, "interval", "at least 100ms"),
    ({"interval": "1s", "timeout": "2s"}, "timeout", "longer than the interval"),
    ({"timeout": 0}, "timeout", "greater than zero"),
    ({"healthy": 0}, "healthy", "from 1 to 100"),
    ({"unhealthy": 101}, "unhealthy", "from 1 to 100"),
    ({"unhealthy": True}, "unhealthy", "from 1 to 100"),
    ({"expect": "399-200"}, "expect", "range of statuses"),
    ({"expect": 600}, "expect", "range of statuses"),
    ({"host": "a b"}, "host", "Host header"),
    ({"every": "5s"}, "every", "unknown field"),
])
def test_an_invalid_health_check_is_refused_naming_the_field(check, field, message):
    for where, document in (
            (("gateways", "shop", "health_check", field),
             config({"shop": gateway(8080, {"r": route("127.0.0.1:8081")}, health_check=check)})),
            (("gateways", "shop", "routes", "r", "health_check", field),
             config({"shop": gateway(8080, {"r": route("127.0.0.1:8081", health_check=check)})}))):
        with pytest.raises(ConfigError) as error:
            from_dict(document)
        assert error.value.location == where and message in error.value.message, str(error.value)


def test_a_tcp_gateways_check_takes_no_path():
    with pytest.raises(ConfigError) as error:
        from_dict(config({"t": {"port": "9000/tcp", "health_check": {"path": "/healthz"}}}))
    assert error.value.location == ("gateways", "t", "health_check", "path")
    assert "TCP connect" in error.value.message


def test_vamp_gateways_get_says_when_a_down_target_is_unhealthy():
    table = gateway_table({"name": "shop", "port": "8080/http", "routes": {"r": {"targets": ["10.0.0.1:80",
                                                                                            "10.0.0.2:80"]}},
                           "status": {"state": "active", "routes": {"r": {"state": "active", "targets": {
                               "10.0.0.1:80": {"state": "down", "health": "unhealthy", "in_flight": 0},
                               "10.0.0.2:80": {"state": "down", "health": "healthy", "in_flight": 0}}}}}})
    assert "10.0.0.1:80  down (unhealthy)  0" in table and "10.0.0.2:80  down              0" in table, table
