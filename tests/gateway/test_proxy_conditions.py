"""Condition routing through the real gateway: user agents, cookies, headers, path, method, country."""
from __future__ import annotations

import pytest

from gateway.proxy.wire import MAX_HEAD_BYTES
from tests.support import HttpClient, config, free_port, gateway, route

CHROME_ANDROID = ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
                  "Chrome/124.0.6367.82 Mobile Safari/537.36")
FIREFOX_DESKTOP = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0"
SAFARI_IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
                 "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1")
CURL = "curl/8.5.0"
GB_ADDRESS = "81.2.69.160"

# Conditional routes in the order written; each test request matches exactly one of them (or none).
CONDITIONS = {
    "chrome": "browser = Chrome",
    "firefox": "browser = Firefox",
    "ios": "os = iOS",
    "curl": "user-agent = curl",
    "beta": "has cookie beta",
    "canary-header": "header X-Canary has yes",
    "api": "path prefix /api",
    "post": "method = POST",
    "uk": "country = GB",
}


def condition_gateway(procs, echo, trusted_proxies: list[str]) -> int:
    port = free_port()
    routes = {name: route(echo.address(name), weight="0%", condition=text) for name, text in CONDITIONS.items()}
    routes["default"] = route(echo.address("default"), weight="100%")
    procs.gateway(config({"conditions": gateway(port, routes)}, geo={"trusted_proxies": trusted_proxies}))
    return port


@pytest.fixture(scope="module")
def echo(module_procs):
    return module_procs.backend("echo", *CONDITIONS, "default", "regex")


@pytest.fixture(scope="module")
def trusting(module_procs, echo):
    """Port of a gateway that believes X-Forwarded-For from 127.0.0.1."""
    return condition_gateway(module_procs, echo, ["127.0.0.1/32"])


@pytest.fixture(scope="module")
def untrusting(module_procs, echo):
    """Port of a gateway with no trusted proxies."""
    return condition_gateway(module_procs, echo, [])


def route_of(port: int, method: str = "GET", target: str = "/", headers=(), body: bytes = b"") -> set[str]:
    """The routes (backend names) that 5 identical requests reached."""
    with HttpClient(port) as client:
        return {client.request(method, target, headers, body).version for _ in range(5)}


@pytest.mark.parametrize("user_agent, expected", [
    (CHROME_ANDROID, "chrome"),
    (FIREFOX_DESKTOP, "firefox"),
    (SAFARI_IPHONE, "ios"),
    (CURL, "curl"),
    ("TestClient/1.0", "default"),
])
def test_user_agent_routes(trusting, user_agent, expected):
    assert route_of(trusting, headers=[("User-Agent", user_agent)]) == {expected}


@pytest.mark.parametrize("headers, expected", [
    ([("Cookie", "beta=1")], "beta"),
    ([("Cookie", "theme=dark; beta=yes; lang=en")], "beta"),
    ([("Cookie", "alpha=1")], "default"),
    ([("Cookie", "notbeta=1")], "default"),
    ([("X-Canary", "yes")], "canary-header"),
    ([("x-canary", "oh yes please")], "canary-header"),
    ([("X-Canary", "no")], "default"),
])
def test_cookie_and_header_routes(trusting, headers, expected):
    assert route_of(trusting, headers=headers) == {expected}


@pytest.mark.parametrize("method, target, expected", [
    ("GET", "/api", "api"),
    ("GET", "/api/v1/users?id=3", "api"),
    ("GET", "/app", "default"),
    ("GET", "/v1/api", "default"),
    ("POST", "/submit", "post"),
    ("PUT", "/submit", "default"),
])
def test_path_and_method_routes(trusting, method, target, expected):
    body = b"payload" if method in ("POST", "PUT") else b""
    assert route_of(trusting, method, target, body=body) == {expected}


def test_country_from_forwarded_for_of_a_trusted_proxy(trusting):
    assert route_of(trusting, headers=[("X-Forwarded-For", GB_ADDRESS)]) == {"uk"}


def test_country_uses_the_rightmost_untrusted_forwarded_for_entry(trusting):
    # the client forged a GB address on the left; the rightmost entry is the one the proxy saw
    assert route_of(trusting, headers=[("X-Forwarded-For", f"{GB_ADDRESS}, 8.8.8.8")]) == {"default"}


def test_forwarded_for_is_ignored_when_the_peer_is_not_trusted(untrusting):
    assert route_of(untrusting, headers=[("X-Forwarded-For", GB_ADDRESS)]) == {"default"}
    # the same gateway still routes by the other conditions
    assert route_of(untrusting, headers=[("User-Agent", FIREFOX_DESKTOP)]) == {"firefox"}


# -- regular expressions run in linear time (RE2) ------------------------------------------------------------
HOSTILE_PATTERN = "user-agent ~ /(a+)+$/"     # 27 a's and a '!' took 8 s with a backtracking engine


@pytest.fixture(scope="module")
def hostile(module_procs, echo):
    """Port of a gateway whose one conditional route has a catastrophic-backtracking pattern."""
    port = free_port()
    routes = {"regex": route(echo.address("regex"), weight="0%", condition=HOSTILE_PATTERN),
              "default": route(echo.address("default"), weight="100%")}
    module_procs.gateway(config({"hostile": gateway(port, routes)}))
    return port


@pytest.mark.parametrize("length", [27, MAX_HEAD_BYTES - 1024])
def test_a_hostile_regex_does_not_hold_up_the_worker(hostile, length):
    """The request that would backtrack forever is answered, and so is the next one on the same worker."""
    with HttpClient(hostile, timeout=5.0) as client:
        answer = client.request("GET", "/", [("User-Agent", "a" * length + "!")])
        assert (answer.status, answer.version) == (200, "default")
        assert client.request("GET", "/", [("User-Agent", "a" * length)]).version == "regex"
        assert client.request("GET", "/", [("User-Agent", CURL)]).version == "default"
