"""Weighted splits and condition strength through the real gateway: exact, deterministic counts."""
from __future__ import annotations

from collections import Counter

import pytest

from tests.support import HttpClient, config, free_port, gateway, route


@pytest.fixture(scope="module")
def echo(module_procs):
    return module_procs.backend("echo", "v1", "v2")


def start_split(procs, routes: dict) -> int:
    port = free_port()
    procs.gateway(config({"split": gateway(port, routes)}))
    return port


def versions(port: int, count: int, headers=()) -> list[str]:
    """X-Version of `count` sequential GETs over one keep-alive connection."""
    with HttpClient(port) as client:
        seen = [client.request("GET", "/", headers).version for _ in range(count)]
        assert client.connections_opened == 1, "the gateway did not keep the client connection alive"
    return seen


def assert_within_one(counts: Counter, expected: dict[str, int]) -> None:
    assert sum(counts.values()) == sum(expected.values()), counts
    for name, exact in expected.items():
        assert abs(counts[name] - exact) <= 1, f"{name}: got {counts[name]}, expected {exact} ±1 ({counts})"


def test_90_10_split_over_1000_requests_is_exact(procs, echo):
    port = start_split(procs, {"v1": route(echo.address("v1"), weight="90%"),
                                     "v2": route(echo.address("v2"), weight="10%")})
    seen = versions(port, 1000)
    assert_within_one(Counter(seen), {"v1": 900, "v2": 100})
    # smooth: every prefix of the sequence is within one request of its exact share
    canaries = 0
    for index, version in enumerate(seen, start=1):
        canaries += version == "v2"
        assert abs(canaries - index / 10) <= 1, f"after {index} requests {canaries} went to v2"


def test_97_5_2_5_split_over_4000_requests_is_exact(procs, echo):
    port = start_split(procs, {"v1": route(echo.address("v1"), weight="97.5%"),
                                     "v2": route(echo.address("v2"), weight="2.5%")})
    assert_within_one(Counter(versions(port, 4000)), {"v1": 3900, "v2": 100})


def test_condition_strength_50_takes_half_of_the_matching_requests_only(procs, echo):
    port = start_split(procs, {
        "stable": route(echo.address("v1"), weight="100%"),
        "canary": route(echo.address("v2"), weight="0%", condition="header X-Canary has yes", strength="50%"),
    })
    matching, other = Counter(), Counter()
    with HttpClient(port) as client:
        for _ in range(200):
            matching[client.request("GET", "/", [("X-Canary", "yes")]).version] += 1
            other[client.request("GET", "/", [("X-Canary", "no")]).version] += 1
            other[client.request("GET", "/").version] += 1
    assert_within_one(matching, {"v2": 100, "v1": 100})
    assert other == Counter({"v1": 400})
