"""Upstream failures through the real gateway: refused, hung, dying and stale pooled connections."""
from __future__ import annotations

import time
from collections import Counter

import pytest

from tests.support import BrokenResponse, HttpClient, config, free_port, gateway, get, route

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
