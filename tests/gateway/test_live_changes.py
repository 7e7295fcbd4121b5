"""Configuration changes through the admin API while clients keep sending requests: no request fails, no
client connection is reset, and after each change the traffic follows the new configuration.

Smooth round-robin state is shared by every client connection, so a split is measured by a probe client on
a fresh connection while the load is paused. Two routes split any window of requests within one request of
the exact shares (docs/gateway-config.md, "Routing"); three routes within two (gateway/routing/table.py); a 0%
route gets nothing; the targets of a route take turns, so their counts differ by at most one.
"""
from __future__ import annotations

import random
from collections import Counter

import pytest

from tests.support import HttpClient, config, free_port, gateway, route
from tests.support.load import LoadGenerator, admin_call

POOL = tuple(f"e{index}" for index in range(1, 13))     # echo backends, each answering X-Version: its name
PROBE_REQUESTS = 100
LOAD_CONNECTIONS = 6
LOAD_SECONDS = 45.0                # the load stops by itself at the latest after this
RESPONSES_BETWEEN_CHANGES = 10     # every change is made while the load is demonstrably running


@pytest.fixture(scope="module")
def echo(module_procs):
    return module_procs.backend("echo", *POOL)


class LiveGateway:
    """A gateway under test, the configuration it was last given (route → weight %, targets) and a load."""

    def __init__(self, procs, echo, routes: dict[str, tuple[int, list[str]]]) -> None:
        self.echo = echo
        self.port = free_port()
        self.routes = routes
        self.process = procs.gateway(config({"live": gateway(self.port, self.route_specs())}))
        self.path = "/api/v1/gateways/live"

    def route_specs(self) -> dict:
        return {name: route(*(self.echo.address(t) for t in targets), weight=f"{weight}%")
                for name, (weight, targets) in self.routes.items()}

    def patch(self, body: dict) -> None:
        status, document = admin_call(self.process, "PATCH", self.path, body)
        assert status == 200, f"PATCH {body} answered {status}: {document}"

    def set_weights(self, weights: dict[str, int]) -> None:
        self.patch({"routes": {name: {"weight": f"{weight}%"} for name, weight in weights.items()}})
        self.routes = {name: (weights[name], targets) for name, (_, targets) in self.routes.items()}

    def set_targets(self, name: str, targets: list[str]) -> None:
        self.patch({"routes": {name: {"targets": [self.echo.address(t) for t in targets]}}})
        self.routes[name] = (self.routes[name][0], list(targets))

    def replace(self, routes: dict[str, tuple[int, list[str]]]) -> None:
        self.routes = routes
        body = {"name": "live", **gateway(self.port, self.route_specs())}
        status, document = admin_call(self.process, "PUT", self.path, body)
        assert status == 200, f"PUT answered {status}: {document}"

    def probe(self) -> Counter:
        """X-Version counts of PROBE_REQUESTS sequential GETs on one fresh connection; every one a 200."""
        with HttpClient(self.port) as client:
            responses = [client.request("GET", "/") for _ in range(PROBE_REQUESTS)]
        assert [r.status for r in responses] == [200] * PROBE_REQUESTS
        return Counter(r.version for r in responses)

    def assert_split(self, seen: Counter, route_tolerance: int) -> None:
        """Route counts within `route_tolerance` of the weights (0% exactly 0); only configured targets,
        taking turns within their route."""
        owner = {target: name for name, (_, targets) in self.routes.items() for target in targets}
        assert set(seen) <= set(owner), f"requests reached targets no longer configured: {seen} ({self.routes})"
        for name, (weight, targets) in self.routes.items():
            got = sum(seen[t] for t in targets)
            expected = PROBE_REQUESTS * weight // 100
            tolerance = 0 if weight == 0 else route_tolerance
            assert abs(got - expected) <= tolerance, (
                f"route {name} got {got} of {PROBE_REQUESTS}, configured {weight}% ({seen}, {self.routes})")
            if weight:
                per_target = [seen[t] for t in targets]
                assert max(per_target) - min(per_target) <= 1, f"targets of {name} not taking turns: {seen}"


def start_load(live: LiveGateway) -> LoadGenerator:
    return LoadGenerator(live.port, connections=LOAD_CONNECTIONS, seconds=LOAD_SECONDS).start()


def assert_load_unharmed(load: LoadGenerator, live: LiveGateway) -> None:
    """No failed request, no connection lost (each client kept its first connection), answers only from
    the pool."""
    assert load.failures == [], f"{len(load.failures)} failed requests, by kind {load.failure_kinds()}: " \
                                f"{load.failures[:5]}"
    assert load.connections_opened == LOAD_CONNECTIONS, "a load connection was closed and had to be reopened"
    assert set(load.versions()) <= set(POOL)


def random_weights(rng: random.Random, names: list[str]) -> dict[str, int]:
    """Whole percentages summing to 100, zeros included now and then."""
    cuts = sorted(rng.randint(0, 100) for _ in range(len(names) - 1))
    bounds = [0, *cuts, 100]
    return {name: bounds[i + 1] - bounds[i] for i, name in enumerate(names)}


@pytest.mark.timeout(60)
def test_200_weight_changes_under_load(procs, echo):
    live = LiveGateway(procs, echo, {"a": (34, ["e1"]), "b": (33, ["e2"]), "c": (33, ["e3"])})
    rng = random.Random(20240603)
    load = start_load(live)
    try:
        for change in range(1, 201):
            weights = random_weights(rng, ["a", "b", "c"])
            if change % 20:
                live.set_weights(weights)
                load.wait_for_responses(RESPONSES_BETWEEN_CHANGES)
                continue
            load.pause()
            live.set_weights(weights)               # the probe starts on a fresh round-robin
            live.assert_split(live.probe(), route_tolerance=2)
            load.resume()
            load.wait_for_responses(RESPONSES_BETWEEN_CHANGES)
    finally:
        load.stop()
    assert_load_unharmed(load, live)


@pytest.mark.timeout(60)
def test_20_target_additions_and_removals_under_load(procs, echo):
    live = LiveGateway(procs, echo, {"a": (60, ["e1", "e2"]), "b": (40, ["e3"])})
    rng = random.Random(7)
    load = start_load(live)
    try:
        for _ in range(20):
            load.wait_for_responses(RESPONSES_BETWEEN_CHANGES)
            name = rng.choice(["a", "b"])
            targets = list(live.routes[name][1])
            in_use = {t for _, (_, ts) in live.routes.items() for t in ts}
            if len(targets) > 1 and (len(targets) >= 4 or rng.random() < 0.5):
                targets.remove(rng.choice(targets))
            else:
                targets.append(rng.choice([t for t in POOL if t not in in_use]))
            live.set_targets(name, targets)
            load.wait_for_responses(RESPONSES_BETWEEN_CHANGES)
            load.pause()
            live.assert_split(live.probe(), route_tolerance=1)
            load.resume()
    finally:
        load.stop()
    assert_load_unharmed(load, live)


REPLACEMENTS = [
    {"green": (30, ["e4"]), "blue": (70, ["e5", "e6"])},
    {"one": (100, ["e7", "e8", "e9"])},
    {"x": (50, ["e1"]), "y": (50, ["e10"])},
    {"p": (0, ["e11"]), "q": (100, ["e12", "e2"])},
    {"a": (25, ["e3"]), "b": (75, ["e1", "e4"])},       # the first configuration's route names, new targets
]


@pytest.mark.timeout(60)
def test_5_whole_gateway_replacements_under_load(procs, echo):
    live = LiveGateway(procs, echo, {"a": (50, ["e1"]), "b": (50, ["e2"])})
    load = start_load(live)
    try:
        for routes in REPLACEMENTS:
            load.wait_for_responses(RESPONSES_BETWEEN_CHANGES)
            live.replace(routes)
            load.wait_for_responses(RESPONSES_BETWEEN_CHANGES)
            load.pause()
            live.assert_split(live.probe(), route_tolerance=1)
            load.resume()
    finally:
        load.stop()
    assert_load_unharmed(load, live)
