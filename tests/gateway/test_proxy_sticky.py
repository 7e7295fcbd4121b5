"""Sticky sessions through the real gateway: the `vamp_<8 hex>` cookie keeps a client on its route/target."""
from __future__ import annotations

from collections import Counter

import pytest

from tests.support import HttpClient, config, first_response_from, free_port, gateway, route, sticky_cookie


@pytest.fixture(scope="module")
def echo(module_procs):
    return module_procs.backend("echo", "v1", "v2", "t1", "t2")


def test_sticky_route_keeps_its_client_while_others_are_split_by_weight(procs, echo):
    port = free_port()
    procs.gateway(config({"shop": gateway(port, {
        "v1": route(echo.address("v1"), weight="90%"),
        "v2": route(echo.address("v2"), weight="10%"),
    }, sticky="route")}))
    with HttpClient(port) as sticky_client, HttpClient(port) as anonymous:
        name, value = sticky_cookie(first_response_from(sticky_client, "v2"))
        sticky_seen, anonymous_seen = Counter(), Counter()
        for _ in range(100):
            response = sticky_client.request("GET", "/", [("Cookie", f"{name}={value}")])
            sticky_seen[response.version] += 1
            assert sticky_cookie(response)[0] == name, "the sticky cookie is refreshed on every response"
            anonymous_seen[anonymous.request("GET", "/").version] += 1
    assert sticky_seen == Counter({"v2": 100})
    assert abs(anonymous_seen["v1"] - 90) <= 1 and abs(anonymous_seen["v2"] - 10) <= 1, anonymous_seen


def test_sticky_instance_keeps_the_target(procs, echo):
    port = free_port()
    procs.gateway(config({"shop": gateway(port, {
        "both": route(echo.address("t1"), echo.address("t2"), weight="100%"),
    }, sticky="instance")}))
    with HttpClient(port) as client:
        anonymous = Counter(client.request("GET", "/").version for _ in range(10))
        assert anonymous == Counter({"t1": 5, "t2": 5}), "cookie-less requests are spread round-robin"
        name, value = sticky_cookie(first_response_from(client, "t2"))
        pinned = Counter(client.request("GET", "/", [("Cookie", f"other=1; {name}={value}")]).version
                         for _ in range(50))
    assert pinned == Counter({"t2": 50})


def test_cookie_for_a_removed_route_is_replaced(procs, echo):
    def start(routes: dict):
        port = free_port()
        return procs.gateway(config({"shop": gateway(port, routes, sticky="route")})), port

    old_gateway, old_port = start({"v1": route(echo.address("v1"), weight="50%"),
                                   "v2": route(echo.address("v2"), weight="50%")})
    with HttpClient(old_port) as client:
        name, old_value = sticky_cookie(first_response_from(client, "v2"))
    assert old_gateway.stop() == 0

    _, new_port = start({"v1": route(echo.address("v1"), weight="100%")})
    with HttpClient(new_port) as client:
        response = client.request("GET", "/", [("Cookie", f"{name}={old_value}")])
        assert response.status == 200
        assert response.version == "v1"
        new_name, new_value = sticky_cookie(response)
        assert new_name == name
        assert new_value != old_value
        follow_up = client.request("GET", "/", [("Cookie", f"{new_name}={new_value}")])
        assert follow_up.version == "v1"


@pytest.mark.parametrize("configured, attributes", [
    (None, ["Path=/", "Max-Age=1800", "HttpOnly", "SameSite=Lax"]),
    ({"same_site": "strict"}, ["Path=/", "Max-Age=1800", "HttpOnly", "SameSite=Strict"]),
    ({"same_site": "none", "secure": True}, ["Path=/", "Max-Age=1800", "HttpOnly", "Secure", "SameSite=None"]),
    ({"secure": True}, ["Path=/", "Max-Age=1800", "HttpOnly", "Secure", "SameSite=Lax"]),
])
def test_the_sticky_cookie_carries_the_configured_attributes(procs, echo, configured, attributes):
    port = free_port()
    fields = {"sticky": "route"} if configured is None else {"sticky": "route", "sticky_cookie": configured}
    procs.gateway(config({"shop": gateway(port, {"v1": route(echo.address("v1"), weight="100%")}, **fields)}))
    with HttpClient(port) as client:
        response = client.request("GET", "/")
    name, value = sticky_cookie(response)
    [set_cookie] = [v for v in response.header_values("set-cookie") if v.startswith(f"{name}=")]
    assert [part.strip() for part in set_cookie.split(";")] == [f"{name}={value}", *attributes]
