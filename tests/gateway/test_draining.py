"""Draining (docs/gateway-config.md) through the admin API: a target or route marked `drain: true` or removed
gets no new non-sticky requests; requests in flight finish; sticky clients keep reaching it while they come
back within `sticky_ttl`, until the gateway's `drain_timeout`; then it disappears from the status. A deleted
gateway drains the same way, then closes its port.

Clients pace their requests with real time here on purpose: how long a client stays away is what is tested.
Everything the gateway does in its own time is polled with a deadline.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, UTC

import pytest

from tests.support import (HttpClient, Response, config, first_response_from, free_port, gateway, port_accepts,
                           route, sticky_cookie)
from tests.support.load import admin_call
from tests.support.waiting import eventually

DELAY = 2.0                # seconds the echo backend holds a request that must be in flight during a change
POLL = 0.02                # seconds between two looks at the admin API while waiting for the gateway


@pytest.fixture(scope="module")
def echo(module_procs):
    return module_procs.backend("echo", "t1", "t2")


class Drains:
    """One gateway named `d` under test and what its admin API says about it."""

    def __init__(self, procs, echo, routes: dict, **fields) -> None:
        self.echo = echo
        self.port = free_port()
        self.process = procs.gateway(config({"d": gateway(self.port, routes, **fields)}))

    def address(self, name: str) -> str:
        return self.echo.address(name)

    def patch(self, body: dict) -> dict:
        status, document = admin_call(self.process, "PATCH", "/api/v1/gateways/d", body)
        assert status == 200, f"PATCH {body} answered {status}: {document}"
        return document

    def document(self) -> dict | None:
        status, document = admin_call(self.process, "GET", "/api/v1/gateways/d")
        assert status in (200, 404), f"GET answered {status}: {document}"
        return document if status == 200 else None

    def target_status(self, route_name: str, target: str) -> dict | None:
        """The status of a target of a route as the admin API shows it; None once it is gone."""
        document = self.document()
        routes = document["status"]["routes"] if document else {}
        return routes.get(route_name, {}).get("targets", {}).get(self.address(target))

    def draining_metric(self, route_name: str, target: str) -> float | None:
        return self.process.metrics().value("vamp_target_draining", gateway="d", route=route_name,
                                            target=self.address(target))

    def wait_for(self, condition, timeout: float, what: str) -> float:
        """Polls `condition()` until true; returns time.monotonic() when it was first seen true."""
        eventually(condition, timeout, what, interval=POLL, context=self.document)
        return time.monotonic()

    def wait_until_in_flight(self, route_name: str, target: str) -> None:
        self.wait_for(lambda: (self.target_status(route_name, target) or {}).get("in_flight") == 1, 5.0,
                      f"1 request in flight on {target}")


def slow_request_to(client: HttpClient, version: str) -> Response:
    """A request the echo backend holds for DELAY seconds; the caller arranged that `version` gets it."""
    response = client.request("GET", "/", [("X-Echo-Delay", str(DELAY))])
    assert response.version == version
    return response


def test_a_target_set_to_drain_gets_no_new_requests_at_once_then_says_it_is_drained(procs, echo):
    gw = Drains(procs, echo, {"r": route(echo.address("t1"), echo.address("t2"))}, drain_timeout="1h")
    with HttpClient(gw.port) as client:
        assert {client.request("GET", "/").version for _ in range(4)} == {"t1", "t2"}
        gw.patch({"routes": {"r": {"targets": [gw.address("t1"), {"address": gw.address("t2"), "drain": True}]}}})
        assert [client.request("GET", "/").version for _ in range(50)] == ["t1"] * 50
    t2 = gw.target_status("r", "t2")
    assert t2["state"] in ("draining", "drained") and t2["drain_ends_at"] is not None, t2
    assert gw.target_status("r", "t1")["state"] == "active"
    assert gw.draining_metric("r", "t1") == 0
    # Nothing in flight and no sticky clients (the gateway is not sticky): drained long before the deadline.
    gw.wait_for(lambda: gw.target_status("r", "t2")["state"] == "drained", 5.0, "t2 drained")
    assert gw.draining_metric("r", "t2") == 0
    assert gw.target_status("r", "t2")["drain_ends_at"] <= datetime.now(UTC).isoformat()


def test_a_request_in_flight_on_a_removed_target_completes_then_the_target_is_gone(procs, echo):
    gw = Drains(procs, echo, {"r": route(echo.address("t1"), echo.address("t2"))})
    with HttpClient(gw.port) as slow_client, HttpClient(gw.port) as client, ThreadPoolExecutor(1) as pool:
        first_response_from(slow_client, "t1")          # the two targets take turns: t2 is next
        slow = pool.submit(slow_request_to, slow_client, "t2")
        gw.wait_until_in_flight("r", "t2")

        document = gw.patch({"routes": {"r": {"targets": [gw.address("t1")]}}})
        assert document["routes"]["r"]["targets"] == [gw.address("t1")]
        t2 = gw.target_status("r", "t2")
        assert t2 is not None, "a removed target with a request in flight must show in the status"
        assert (t2["state"], t2["in_flight"]) == ("draining", 1), t2
        assert datetime.fromisoformat(t2["drain_ends_at"]).tzinfo is not None, t2
        assert gw.draining_metric("r", "t2") == 1
        assert [client.request("GET", "/").version for _ in range(20)] == ["t1"] * 20

        assert slow.result(timeout=DELAY + 10).status == 200
    gw.wait_for(lambda: gw.target_status("r", "t2") is None, 5.0, "t2 gone once its request completed")
    assert gw.draining_metric("r", "t2") is None


# A drain through each path: removing, or marking `drain: true`, a target of a `sticky: instance` route or a
# whole route of a `sticky: route` gateway. The sticky client's cookie names what drains; `patch` starts the
# drain. A removed one is gone from the status when its drain ends; a marked one stays, `drained`.
DRAINS = {
    "removed target": dict(sticky="instance",
                           routes={"r": route("t1", "t2")},
                           patch={"routes": {"r": {"targets": ["t1"]}}},
                           drained=("r", "t2")),
    "removed route": dict(sticky="route",
                          routes={"stable": route("t1", weight="50%"), "canary": route("t2", weight="50%")},
                          patch={"routes": {"canary": None, "stable": {"weight": "100%"}}},
                          drained=("canary", "t2")),
    "target set to drain": dict(sticky="instance",
                                routes={"r": route("t1", "t2")},
                                patch={"routes": {"r": {"targets": ["t1", {"address": "t2", "drain": True}]}}},
                                drained=("r", "t2")),
    "route set to drain": dict(sticky="route",
                               routes={"stable": route("t1", weight="50%"), "canary": route("t2", weight="50%")},
                               patch={"routes": {"canary": {"drain": True}}},
                               drained=("canary", "t2")),
}


def start_drain_case(procs, echo, case: str, **fields) -> tuple[Drains, dict, tuple[str, str]]:
    """The gateway of a DRAINS case with real target addresses; (gateway, patch starting the drain, drained)."""
    spec = DRAINS[case]

    def real(value):
        if isinstance(value, dict):
            return {key: real(item) for key, item in value.items()}
        if isinstance(value, list):
            return [real(item) for item in value]
        return echo.address(value) if value in ("t1", "t2") else value
    gw = Drains(procs, echo, real(spec["routes"]), sticky=spec["sticky"], **fields)
    return gw, real(spec["patch"]), spec["drained"]


def drain_over(gw: Drains, case: str, route_name: str, target: str) -> bool:
    """Has the drain of a DRAINS case ended, as the admin API tells: removed ones are gone, marked ones say
    `drained` (with the time it ended, not a deadline still to come)."""
    status = gw.target_status(route_name, target)
    if case.startswith("removed"):
        return status is None
    return status["state"] == "drained"


@pytest.mark.parametrize("case", DRAINS)
def test_a_sticky_client_keeps_what_drains_while_it_comes_back_within_the_ttl(procs, echo, case):
    ttl = 1.0
    gw, start_drain, (route_name, target) = start_drain_case(procs, echo, case, sticky_ttl="1s",
                                                             drain_timeout="30s")
    with HttpClient(gw.port) as sticky, HttpClient(gw.port) as anonymous:
        name, pinned = sticky_cookie(first_response_from(sticky, "t2"))
        cookie = [("Cookie", f"{name}={pinned}")]
        gw.patch(start_drain)
        assert {anonymous.request("GET", "/").version for _ in range(20)} == {"t1"}

        drain_started = last_visit = time.monotonic()
        while last_visit - drain_started < ttl * 1.5:       # keeps coming back, for longer than the TTL
            last_visit = time.monotonic()
            assert sticky.request("GET", "/", cookie).version == "t2"
            assert gw.target_status(route_name, target)["state"] == "draining"
            time.sleep(ttl / 4)
        assert gw.draining_metric(route_name, target) == 1

        over_at = gw.wait_for(lambda: drain_over(gw, case, route_name, target), ttl + 5.0,
                              f"{target} drained after its sticky client stayed away")
        assert over_at - last_visit >= ttl, "the drain ended before the sticky client had been away for the TTL"
        response = sticky.request("GET", "/", cookie)
        assert response.version == "t1"
        new_name, new_value = sticky_cookie(response)
        assert new_name == name and new_value != pinned
        assert gw.draining_metric(route_name, target) == (None if case.startswith("removed") else 0)


@pytest.mark.parametrize("case", DRAINS)
def test_the_drain_timeout_ends_a_drain_even_for_a_sticky_client_that_keeps_coming_back(procs, echo, case):
    timeout = 2.0
    gw, start_drain, (route_name, target) = start_drain_case(procs, echo, case, sticky_ttl="1h",
                                                             drain_timeout="2s")
    with HttpClient(gw.port) as sticky:
        name, pinned = sticky_cookie(first_response_from(sticky, "t2"))
        cookie = [("Cookie", f"{name}={pinned}")]
        before_drain = time.time()
        gw.patch(start_drain)
        after_drain = time.time()
        ends_at = datetime.fromisoformat(gw.target_status(route_name, target)["drain_ends_at"]).timestamp()
        assert before_drain + timeout - 1 <= ends_at <= after_drain + timeout   # shown to the second

        served_by_drained = 0
        deadline = time.monotonic() + timeout + 5.0
        while time.monotonic() < deadline:
            response = sticky.request("GET", "/", cookie)
            if response.version != "t2":
                break
            served_by_drained += 1
            time.sleep(0.1)
        moved_at = time.time()
    assert response.version == "t1", "the sticky client still reached the drained target after the drain timeout"
    assert sticky_cookie(response)[1] != pinned
    assert served_by_drained >= 10, "the sticky client lost the draining target before the drain timeout"
    assert before_drain + timeout <= moved_at <= after_drain + timeout + 1.5
    gw.wait_for(lambda: drain_over(gw, case, route_name, target), 5.0, f"{target} shown drained")
    assert gw.draining_metric(route_name, target) == (None if case.startswith("removed") else 0)


def test_a_deleted_gateway_finishes_its_request_in_flight_then_closes_its_port(procs, echo):
    gw = Drains(procs, echo, {"r": route(echo.address("t1"))})
    with HttpClient(gw.port) as client, ThreadPoolExecutor(1) as pool:
        slow = pool.submit(slow_request_to, client, "t1")
        gw.wait_until_in_flight("r", "t1")
        status, _ = admin_call(gw.process, "DELETE", "/api/v1/gateways/d")
        assert status == 202
        draining = gw.document()
        assert draining is not None and draining["status"]["state"] == "draining", draining
        assert slow.result(timeout=DELAY + 10).status == 200
    gw.wait_for(lambda: gw.document() is None, 5.0, "the deleted gateway gone once its request completed")
    gw.wait_for(lambda: not port_accepts(gw.port), 5.0, "the deleted gateway's port closed")
    status, listing = admin_call(gw.process, "GET", "/api/v1/gateways")
    assert (status, listing) == (200, [])
