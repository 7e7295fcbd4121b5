"""Upstream failures through the real gateway: refused, hung, dying and stale pooled connections, and
redispatch: a route whose backend is gone hands its visitors, sticky ones included, to the other routes."""
from __future__ import annotations

import hashlib
import logging
import re
import time
from collections import Counter

import pytest

from gateway.config.load import from_dict
from gateway.proxy.exchange import Exchange
from gateway.proxy.request_head import read_request_head
from gateway.proxy.upstream import CONNECT_LOG_INTERVAL, log_connect_failure, log_recovery
from gateway.routing.table import RouteTable
from tests.support import (BrokenResponse, HttpClient, config, first_response_from, free_port, gateway, get, route,
                           sticky_cookie)
from tests.support.load import LoadGenerator
from tests.support.waiting import eventually

DEAD = "127.0.0.1:{port}"        # an address nothing listens on: connections are refused


def target_up(process, gateway_name: str, port: int) -> list[float]:
    """vamp_target_up of the target listening (or not) on `port`."""
    samples = process.metrics().find("vamp_target_up", gateway=gateway_name)
    return [s.value for s in samples if s.labels.get("target", "").endswith(f":{port}")]


@pytest.fixture(scope="module")
def echo(module_procs):
    return module_procs.backend("echo", "alive")


def test_refused_target_answers_502_or_503_and_is_marked_down(procs):
    dead, port = free_port(), free_port()
    gw = procs.gateway(config({"fail": gateway(port, {"only": route(DEAD.format(port=dead), weight="100%")})}))
    assert get(port).status in (502, 503)
    assert target_up(gw, "fail", dead) == [0]
    assert get(port).status in (502, 503)


def test_a_refusing_target_is_skipped_for_the_other_target_of_its_route(procs, echo):
    dead, port = free_port(), free_port()
    gw = procs.gateway(config({"fail": gateway(port, {
        "both": route(DEAD.format(port=dead), echo.address("alive"), weight="100%")})}))
    with HttpClient(port) as client:
        answers = Counter((r.status, r.version) for r in (client.request("GET", "/") for _ in range(20)))
    assert answers == Counter({(200, "alive"): 20})
    assert target_up(gw, "fail", dead) == [0]
    assert target_up(gw, "fail", echo.port("alive")) == [1]


def test_another_route_keeps_serving_when_one_route_has_no_live_target(procs, echo):
    dead, port = free_port(), free_port()
    procs.gateway(config({"fail": gateway(port, {
        "broken": route(DEAD.format(port=dead), weight="50%"),
        "working": route(echo.address("alive"), weight="50%")})}))
    with HttpClient(port) as client:
        first = client.request("GET", "/")          # may be the one that discovers the refusal
        assert first.status in (200, 502, 503)
        answers = Counter((r.status, r.version) for r in (client.request("GET", "/") for _ in range(20)))
    assert answers == Counter({(200, "alive"): 20})


def connect_errors(process, gateway_name: str, route_name: str) -> float:
    return process.metrics().value("vamp_upstream_errors_total", gateway=gateway_name, route=route_name,
                                   kind="connect") or 0


def wait_until(condition, timeout: float, what: str) -> None:
    eventually(condition, timeout, what, interval=0.05)


def test_visitors_of_a_route_whose_backend_stops_are_redispatched_to_the_other_route(procs):
    v1, v2 = procs.backend("echo", "v1"), procs.backend("echo", "v2")
    port = free_port()
    gw = procs.gateway(config({"shop": gateway(port, {"v1": route(v1.address(), weight="50%"),
                                                      "v2": route(v2.address(), weight="50%")}, sticky="route")}))
    with HttpClient(port) as sticky, HttpClient(port) as fresh:
        name, pinned = sticky_cookie(first_response_from(sticky, "v1"))
        assert v1.stop() is not None

        # The sticky visitor of v1 is the first to find its backend gone. Its POST is redispatched (a connection
        # that failed carried nothing of it) to v2, body intact, with v2's cookie.
        body = b"x" * 100_000
        cookie = [("Cookie", f"{name}={pinned}")]
        posted = sticky.request("POST", "/upload", cookie, body=body)
        assert (posted.status, posted.version) == (200, "v2")
        assert posted.json()["body_sha256"] == hashlib.sha256(body).hexdigest()
        new_name, new_value = sticky_cookie(posted)
        assert new_name == name and new_value != pinned
        assert target_up(gw, "shop", v1.port()) == [0]
        response = sticky.request("GET", "/", cookie)              # the old cookie again, while v1 is down
        assert (response.status, response.version, sticky_cookie(response)) == (200, "v2", (name, new_value))

        # Fresh visitors: v1 has no live target, so it takes no share; nothing is answered 502.
        answers = Counter((r.status, r.version) for r in (fresh.request("GET", "/") for _ in range(200)))
        assert answers == Counter({(200, "v2"): 200})

        # The back-off expires: a request may probe v1 again; it fails to connect and goes to v2.
        failed_before = connect_errors(gw, "shop", "v1")
        wait_until(lambda: target_up(gw, "shop", v1.port()) == [1], 10.0, "v1's back-off over")
        answers = Counter((r.status, r.version) for r in (fresh.request("GET", "/") for _ in range(200)))
        assert answers == Counter({(200, "v2"): 200})
        assert connect_errors(gw, "shop", "v1") > failed_before, "no request probed v1 after its back-off"

        # Six clients at once as the next back-off ends: every probe that fails is redispatched as well.
        failed_before = connect_errors(gw, "shop", "v1")
        wait_until(lambda: target_up(gw, "shop", v1.port()) == [1], 10.0, "v1's back-off over")
        with LoadGenerator(port, connections=6, seconds=1.5) as load:
            wait_until(lambda: not load.running, 10.0, "the load run over")
        assert load.failures == [] and set(load.versions()) == {"v2"}, load.failure_kinds()
        assert connect_errors(gw, "shop", "v1") > failed_before, "no request probed v1 under load"

        # v1 comes back: once a probe succeeds, traffic returns to the configured split.
        v1.start()
        wait_until(lambda: Counter(fresh.request("GET", "/").version for _ in range(20)) == {"v1": 10, "v2": 10},
                   40.0, "back to the 50/50 split")
    log = gw.stderr_text()
    assert re.search(rf"cannot connect to {re.escape(v1.address())}", log), log


def test_connect_failures_are_logged_once_per_target_per_interval_with_the_count_of_the_others(caplog):
    caplog.set_level(logging.INFO, logger="vamp.upstream")
    router = RouteTable(from_dict(config({"shop": gateway(8080, {"v1": route("127.0.0.1:8081", weight="100%")})})
                                  )).gateways["shop"]
    [v1] = router.routes
    [target] = v1.targets
    ex = Exchange(None, read_request_head(b"GET / HTTP/1.1\r\nHost: shop\r\n\r\n"), b"", True, False)  # type: ignore[arg-type]
    ex.gateway, ex.route = router, v1
    now = 1000.0
    for step in range(50):                                  # 50 failures, 0.5 s apart: 25 s
        target.mark_failed(now + step * 0.5)
        log_connect_failure(target, ex, "Connection refused", now + step * 0.5)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3 == 1 + int(25 // CONNECT_LOG_INTERVAL)
    assert lines[0].startswith("gateway shop route v1: cannot connect to 127.0.0.1:8081: Connection refused")
    assert lines[1].endswith("(19 more failures since the last report)")
    log_recovery(target, ex)
    assert caplog.records[-1].getMessage() == ("gateway shop route v1: 127.0.0.1:8081 accepts connections again "
                                               "(9 more failures since the last report)")


def test_a_gateway_whose_every_route_is_down_still_answers_502_or_503(procs):
    dead_a, dead_b, port = free_port(), free_port(), free_port()
    gw = procs.gateway(config({"down": gateway(port, {"a": route(DEAD.format(port=dead_a), weight="50%"),
                                                      "b": route(DEAD.format(port=dead_b), weight="50%")},
                                               sticky="route")}))
    with HttpClient(port) as client:
        statuses = Counter(client.request("GET", "/").status for _ in range(20))
    assert set(statuses) <= {502, 503} and statuses[502] >= 1, statuses
    assert target_up(gw, "down", dead_a) == [0] and target_up(gw, "down", dead_b) == [0]


def test_hung_backend_gets_504_after_the_response_timeout(procs):
    hang = procs.backend("hang")
    port = free_port()
    gw = procs.gateway(config({"slow": gateway(port, {"only": route(hang.address(), weight="100%")},
                                               timeouts={"response": "1s"})}))
    started = time.monotonic()
    with HttpClient(port, timeout=15) as client:
        response = client.request("GET", "/")
    elapsed = time.monotonic() - started
    assert response.status == 504
    assert 0.9 <= elapsed < 10, f"504 after {elapsed:.2f} s with a 1 s response timeout"
    timeouts = gw.metrics().find("vamp_upstream_errors_total", gateway="slow", kind="timeout")
    assert sum(s.value for s in timeouts) >= 1


@pytest.mark.parametrize("mode", ["close", "reset"])
def test_backend_dying_mid_response_never_yields_a_complete_200(procs, mode):
    die = procs.backend("die", extra_args=("--die-mode", mode))
    port = free_port()
    procs.gateway(config({"dying": gateway(port, {"only": route(die.address(), weight="100%")})}))
    with HttpClient(port, timeout=15) as client:
        try:
            response = client.request("GET", "/")
        except BrokenResponse:
            return                     # the client saw the connection end before the body was complete
        assert response.status != 200, f"a complete 200 with a {len(response.body)}-byte body"
        assert response.status >= 500


@pytest.mark.parametrize("when", ["right after the response", "when the next request arrives"])
def test_pooled_connection_closed_by_the_backend_is_retried_for_get(procs, when):
    args = ("--max-requests-per-connection", "1")
    if when == "when the next request arrives":
        args += ("--close-on-next-request",)
    backend = procs.backend("echo", "one-shot", extra_args=args)
    port = free_port()
    procs.gateway(config({"pool": gateway(port, {"only": route(backend.address(), weight="100%")})}))
    with HttpClient(port) as client:
        statuses = Counter(client.request("GET", f"/{index}").status for index in range(20))
    assert statuses == Counter({200: 20})
