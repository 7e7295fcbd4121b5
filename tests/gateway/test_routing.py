"""Routing: exact weight splits, conditions with strength, sticky cookies, draining, back-off, virtual hosts
and carrying runtime state over a rebuild (gateway/routing/table.py; docs/gateway-config.md, "Routing")."""
from __future__ import annotations

import hashlib
from collections import Counter
from fractions import Fraction

import pytest
from hypothesis import given, settings, strategies as st

from gateway.config.model import Config, Gateway, Route, StickyCookie, Target
from gateway.proxy.stats import TargetStats
from gateway.proxy.upstream import UpstreamPool
from gateway.routing.request import RequestView
from gateway.routing.table import RouteTable

NOW = 1000.0


class StubLookups:
    """Families from a fixed table, the peer as client address, countries from a fixed table."""

    def ua_families(self, user_agent: str) -> tuple[str, str, str]:
        return ("Chrome Mobile", "Android", "Generic Smartphone") if "Android" in user_agent else \
            ("Firefox", "Linux", "Other")

    def client_address(self, peer: str, forwarded_for: str | None) -> str:
        return peer

    def country(self, address: str) -> str | None:
        return {"81.2.69.142": "GB", "8.8.8.8": "US"}.get(address)


LOOKUPS = StubLookups()


def request(path: str = "/", headers: dict[str, str] | None = None, cookie: str | None = None,
            host: str = "", peer: str = "127.0.0.1") -> RequestView:
    raw = [(name.encode(), value.encode()) for name, value in (headers or {}).items()]
    if cookie is not None:
        raw.append((b"Cookie", cookie.encode()))
    return RequestView("GET", path, raw, host, peer, LOOKUPS)


def target(port: int, weight: int = 100, drain: bool = False) -> Target:
    return Target("127.0.0.1", port, weight=weight, drain=drain)


def route(name: str, weight: int, *ports: int, condition: str | None = None, strength: int = 10_000,
          drain: bool = False, targets: tuple[Target, ...] | None = None) -> Route:
    return Route(name, weight, targets if targets is not None else tuple(target(p) for p in ports),
                 condition=condition, condition_strength=strength, drain=drain)


def table(*routes: Route, sticky: str = "none", name: str = "sava", **gateway_fields) -> RouteTable:
    return RouteTable(Config(gateways=(Gateway(name, 9050, sticky=sticky, routes=routes, **gateway_fields),)))


def route_names(router, requests) -> list[str]:
    names = []
    for req in requests:
        chosen = router.select(req, NOW)
        names.append(chosen[0].name if chosen else None)
    return names


def counts(router, n: int, req: RequestView | None = None) -> Counter:
    return Counter(route_names(router, [req or request()] * n))


# -- weight split ------------------------------------------------------------------------------------

def test_90_10_split_is_exact():
    router = table(route("a", 9000, 8081), route("b", 1000, 8082)).gateways["sava"]
    assert counts(router, 1000) == {"a": 900, "b": 100}


def test_97_5_2_5_split_is_exact():
    router = table(route("a", 9750, 8081), route("b", 250, 8082)).gateways["sava"]
    assert counts(router, 4000) == {"a": 3900, "b": 100}


def split_sequence(weights: tuple[int, ...], n: int) -> list[str]:
    router = table(*(route(f"r{i}", w, 8081 + i) for i, w in enumerate(weights))).gateways["sava"]
    return route_names(router, [request()] * n)


def worst_window_deviation(weights: tuple[int, ...], picks: list[str], windows) -> Fraction:
    """The largest |requests a route got - its exact share| over every window of the given lengths."""
    worst = Fraction(0)
    total = sum(weights)
    for i, weight in enumerate(weights):
        prefix = [0]
        for name in picks:
            prefix.append(prefix[-1] + (name == f"r{i}"))
        for window in windows:
            exact = Fraction(window * weight, total)
            for start in range(len(picks) - window + 1):
                worst = max(worst, abs(prefix[start + window] - prefix[start] - exact))
    return worst


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=9999))
def test_every_window_of_a_two_route_split_is_within_one_request(weight_a):
    weights = (weight_a, 10_000 - weight_a)
    picks = split_sequence(weights, 1200)
    assert worst_window_deviation(weights, picks, (1, 2, 3, 7, 10, 39, 40, 41, 100, 333, 1000)) <= 1


@pytest.mark.parametrize("weights", [(5000, 3000, 2000), (3334, 3333, 3333), (9000, 500, 500), (9500, 250, 250),
                                     (2500, 2500, 2500, 2500), (9700, 100, 100, 100), (4000, 3000, 2000, 1000)])
def test_splits_over_more_routes_stay_close_to_exact(weights):
    """From a fresh table the running counts stay within one request of the exact split; a window that
    starts mid-sequence may be off by a little more (no sequence can do better for every weight set)."""
    picks = split_sequence(weights, 2000)
    assert worst_window_deviation(weights, picks, range(1, len(picks) + 1, 97)) < 2
    assert all(abs(picks[:n].count(f"r{i}") - Fraction(n * w, 10_000)) <= 1
               for n in range(1, 2001, 13) for i, w in enumerate(weights))
    for n in (1000, 2000):
        if all(n * w % 10_000 == 0 for w in weights):
            assert Counter(picks[:n]) == {f"r{i}": n * w // 10_000 for i, w in enumerate(weights)}


def test_targets_of_a_route_are_weighted_round_robin():
    targets = (target(8081, weight=300), target(8082, weight=100))
    router = table(route("a", 10_000, targets=targets)).gateways["sava"]
    picks = [router.select(request(), NOW)[1].port for _ in range(400)]
    assert Counter(picks) == {8081: 300, 8082: 100}
    assert picks[:4] in ([8081, 8081, 8082, 8081], [8081, 8082, 8081, 8081])


def test_routes_at_zero_percent_get_no_weight_split_traffic():
    router = table(route("a", 10_000, 8081), route("b", 0, 8082)).gateways["sava"]
    assert counts(router, 500) == {"a": 500}


def test_all_routes_at_zero_percent_serve_nothing_but_their_conditions():
    router = table(route("a", 0, 8081), route("b", 0, 8082, condition="header X-Canary has yes")).gateways["sava"]
    assert router.select(request(), NOW) is None
    assert router.select(request(headers={"X-Canary": "yes"}), NOW)[0].name == "b"


def test_gateway_without_routes_serves_nothing():
    assert table().gateways["sava"].select(request(), NOW) is None


# -- conditions and strength -------------------------------------------------------------------------

CANARY = {"X-Canary": "yes"}


@pytest.mark.parametrize("strength, expected", [(0, 0), (2500, 250), (5000, 500), (10_000, 1000)])
def test_condition_strength_takes_its_exact_share_of_matching_requests(strength, expected):
    router = table(route("a", 10_000, 8081),
                   route("b", 0, 8082, condition="header X-Canary has yes", strength=strength)).gateways["sava"]
    assert counts(router, 1000, request(headers=CANARY))["b"] == expected


def test_strength_50_percent_takes_exactly_every_other_matching_request():
    router = table(route("a", 10_000, 8081),
                   route("b", 0, 8082, condition="header X-Canary has yes", strength=5000)).gateways["sava"]
    mixed = [request(headers=CANARY) if i % 3 else request() for i in range(300)]
    matching = [name for req, name in zip(mixed, route_names(router, mixed)) if req.header("x-canary")]
    assert matching[:2] in (["a", "b"], ["b", "a"])
    assert all(matching[i] != matching[i + 1] for i in range(len(matching) - 1))


def test_first_matching_route_owns_the_request():
    router = table(route("a", 10_000, 8081),
                   route("api", 0, 8082, condition="path prefix /api"),
                   route("canary", 0, 8083, condition="header X-Canary has yes")).gateways["sava"]
    assert route_names(router, [request("/api/x", CANARY), request("/web", CANARY), request("/api/y")]) == \
        ["api", "canary", "api"]


def test_a_request_the_owner_does_not_take_goes_to_the_weight_split_not_the_next_condition():
    router = table(route("a", 10_000, 8081),
                   route("api", 0, 8082, condition="path prefix /api", strength=0),
                   route("canary", 0, 8083, condition="header X-Canary has yes")).gateways["sava"]
    assert counts(router, 10, request("/api/x", CANARY)) == {"a": 10}


def test_conditions_and_weights_together():
    """Canary traffic goes to the conditional route; everything else keeps its exact 90/10 split."""
    router = table(route("a", 9000, 8081), route("b", 1000, 8082),
                   route("firefox", 0, 8083, condition="header X-Canary has yes")).gateways["sava"]
    mixed = [request(headers=CANARY) if i % 2 else request() for i in range(2000)]
    got = Counter(route_names(router, mixed))
    assert got == {"firefox": 1000, "a": 900, "b": 100}


def test_matching_requests_left_by_the_strength_join_the_weight_split():
    router = table(route("a", 9000, 8081), route("b", 1000, 8082),
                   route("c", 0, 8083, condition="header X-Canary has yes", strength=5000)).gateways["sava"]
    assert counts(router, 2000, request(headers=CANARY)) == {"c": 1000, "a": 900, "b": 100}


def test_conditional_route_without_available_target_hands_its_requests_to_the_weight_split():
    config_routes = (route("a", 10_000, 8081), route("b", 0, 8082, condition="header X-Canary has yes"))
    router = table(*config_routes).gateways["sava"]
    router.routes[1].targets[0].mark_failed(NOW)
    assert counts(router, 5, request(headers=CANARY)) == {"a": 5}


def test_table_reports_which_lookups_conditions_need():
    plain = table(route("a", 10_000, 8081, condition="header X-Canary has yes"))
    assert (plain.needs_user_agent, plain.needs_country) == (False, False)
    rich = table(route("a", 5000, 8081, condition="browser = Chrome"),
                 route("b", 5000, 8082, condition="country = GB"))
    assert (rich.needs_user_agent, rich.needs_country) == (True, True)


def test_user_agent_and_country_conditions_route_by_lookups():
    router = table(route("a", 10_000, 8081),
                   route("mobile", 0, 8082, condition="browser = Chrome and os = Android"),
                   route("uk", 0, 8083, condition="country = GB")).gateways["sava"]
    android = {"User-Agent": "Mozilla/5.0 (Linux; Android 14) Chrome/120.0 Mobile Safari/537.36"}
    assert route_names(router, [request(headers=android), request(peer="81.2.69.142"), request(peer="8.8.8.8")]) \
        == ["mobile", "uk", "a"]


# -- sticky ------------------------------------------------------------------------------------------

def sha8(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def test_cookie_name_and_ids_derive_from_names():
    sticky = table(route("sava-1.0", 10_000, 8081), sticky="route").gateways["sava"]
    assert sticky.cookie_name == "vamp_" + sha8("sava")
    assert sticky.routes[0].cookie_id == sha8("sava-1.0")
    assert sticky.routes[0].targets[0].cookie_id == sha8("127.0.0.1:8081")
    assert table(route("a", 10_000, 8081)).gateways["sava"].cookie_name == ""


def test_non_sticky_gateways_set_no_cookie():
    assert table(route("a", 10_000, 8081)).gateways["sava"].select(request(), NOW)[2] is None


def test_sticky_route_cookie_wins_and_does_not_disturb_the_split():
    router = table(route("a", 9000, 8081), route("b", 1000, 8082, 8083), sticky="route",
                   sticky_ttl=1800.0).gateways["sava"]
    b = router.routes[1]
    cookie = f"{router.cookie_name}={b.cookie_id}"
    expected_set_cookie = f"{router.cookie_name}={b.cookie_id}; Path=/; Max-Age=1800; HttpOnly; SameSite=Lax"
    sticky_hits, others = [], Counter()
    for i in range(1100):
        if i % 11 == 0:
            chosen = router.select(request(cookie=f"other=1; {cookie}"), NOW)
            sticky_hits.append((chosen[0].name, chosen[2]))
        else:
            chosen = router.select(request(), NOW)
            others[chosen[0].name] += 1
            assert chosen[2] == f"{router.cookie_name}={chosen[0].cookie_id}; Path=/; Max-Age=1800; HttpOnly; " \
                                "SameSite=Lax"
    assert sticky_hits == [("b", expected_set_cookie)] * 100
    assert others == {"a": 900, "b": 100}


@pytest.mark.parametrize("sticky, attributes, expected", [
    ("route", StickyCookie(), "; Path=/; Max-Age=600; HttpOnly; SameSite=Lax"),
    ("route", StickyCookie("strict", False), "; Path=/; Max-Age=600; HttpOnly; SameSite=Strict"),
    ("instance", StickyCookie("lax", True), "; Path=/; Max-Age=600; HttpOnly; Secure; SameSite=Lax"),
    ("route", StickyCookie("none", True), "; Path=/; Max-Age=600; HttpOnly; Secure; SameSite=None"),
])
def test_the_set_cookie_carries_the_configured_attributes(sticky, attributes, expected):
    router = table(route("a", 10_000, 8081), sticky=sticky, sticky_ttl=600.0,
                   sticky_cookie=attributes).gateways["sava"]
    set_cookie = router.select(request(), NOW)[2]
    assert set_cookie.startswith(f"{router.cookie_name}=") and set_cookie.endswith(expected)
    assert set_cookie.count(";") == expected.count(";")


def test_sticky_route_cookie_wins_over_conditions():
    router = table(route("a", 10_000, 8081), route("c", 0, 8082, condition="header X-Canary has yes"),
                   sticky="route").gateways["sava"]
    cookie = f"{router.cookie_name}={router.routes[0].cookie_id}"
    assert counts(router, 100, request(headers=CANARY, cookie=cookie)) == {"a": 100}
    assert router.select(request(headers=CANARY), NOW)[0].name == "c"


def test_sticky_instance_cookie_names_route_and_target():
    router = table(route("a", 9000, 8081, 8082, 8083), route("b", 1000, 8084), sticky="instance",
                   sticky_ttl=60.0).gateways["sava"]
    a = router.routes[0]
    second = a.targets[1]
    value = f"{a.cookie_id}.{second.cookie_id}"
    picks = {router.select(request(cookie=f"{router.cookie_name}={value}"), NOW)[1:] for _ in range(100)}
    assert picks == {(second, f"{router.cookie_name}={value}; Path=/; Max-Age=60; HttpOnly; SameSite=Lax")}
    fresh = [router.select(request(), NOW) for _ in range(1000)]
    assert Counter(chosen[0].name for chosen in fresh) == {"a": 900, "b": 100}
    assert Counter(chosen[1].port for chosen in fresh if chosen[0] is a) == {8081: 300, 8082: 300, 8083: 300}
    for chosen in fresh:
        assert chosen[2].startswith(f"{router.cookie_name}={chosen[0].cookie_id}.{chosen[1].cookie_id};")


def test_cookie_naming_a_removed_route_is_replaced():
    old = table(route("a", 5000, 8081), route("b", 5000, 8082), sticky="route")
    b_cookie = f"{old.gateways['sava'].cookie_name}={old.gateways['sava'].routes[1].cookie_id}"
    new = RouteTable(Config(gateways=(Gateway("sava", 9050, sticky="route", routes=(route("a", 10_000, 8081),)),)),
                     previous=old)
    chosen = new.gateways["sava"].select(request(cookie=b_cookie), NOW)
    assert chosen[0].name == "a"
    assert chosen[2].startswith(f"{new.gateways['sava'].cookie_name}={chosen[0].cookie_id};")


def test_cookie_naming_a_removed_target_is_replaced():
    old = table(route("a", 10_000, 8081, 8082), sticky="instance")
    router = old.gateways["sava"]
    gone = f"{router.cookie_name}={router.routes[0].cookie_id}.{router.routes[0].targets[1].cookie_id}"
    new = RouteTable(Config(gateways=(Gateway("sava", 9050, sticky="instance",
                                              routes=(route("a", 10_000, 8081),)),)), previous=old)
    chosen = new.gateways["sava"].select(request(cookie=gone), NOW)
    assert chosen[1].port == 8081
    assert chosen[2].split(";")[0] == f"{router.cookie_name}={router.routes[0].cookie_id}.{chosen[1].cookie_id}"


@pytest.mark.parametrize("sticky", ["route", "instance"])
@pytest.mark.parametrize("garbage", ["", "zzz", "deadbeef.cafebabe", "..", "\x00", "a" * 5000])
def test_garbage_cookie_is_ignored_and_replaced(sticky, garbage):
    router = table(route("a", 9000, 8081), route("b", 1000, 8082), sticky=sticky).gateways["sava"]
    chosen = [router.select(request(cookie=f"{router.cookie_name}={garbage}"), NOW) for _ in range(100)]
    assert Counter(c[0].name for c in chosen) == {"a": 90, "b": 10}
    assert all(c[2].startswith(router.cookie_name + "=" + c[0].cookie_id) for c in chosen)


def test_cookie_of_another_gateway_is_ignored():
    tables = table(route("a", 5000, 8081), route("b", 5000, 8082), sticky="route", name="other")
    other = tables.gateways["other"]
    router = table(route("a", 5000, 8081), route("b", 5000, 8082), sticky="route").gateways["sava"]
    foreign = f"{other.cookie_name}={other.routes[1].cookie_id}"
    assert counts(router, 10, request(cookie=foreign)) == {"a": 5, "b": 5}


# -- draining ----------------------------------------------------------------------------------------

def test_draining_target_gets_no_new_requests_but_keeps_its_sticky_clients():
    router = table(route("a", 10_000, targets=(target(8081), target(8082, drain=True))),
                   sticky="instance").gateways["sava"]
    a = router.routes[0]
    draining = a.targets[1]
    assert {router.select(request(), NOW)[1].port for _ in range(50)} == {8081}
    cookie = f"{router.cookie_name}={a.cookie_id}.{draining.cookie_id}"
    assert {router.select(request(cookie=cookie), NOW)[1] for _ in range(50)} == {draining}


def test_draining_route_gets_no_new_requests_but_keeps_its_sticky_clients():
    router = table(route("a", 5000, 8081), route("b", 5000, 8082, drain=True),
                   route("c", 0, 8083, condition="header X-Canary has yes", drain=True),
                   sticky="route").gateways["sava"]
    assert counts(router, 100) == {"a": 100}
    assert counts(router, 100, request(headers=CANARY)) == {"a": 100}
    for draining in router.routes[1:]:
        assert counts(router, 20, request(cookie=f"{router.cookie_name}={draining.cookie_id}")) == \
            {draining.name: 20}


def test_sticky_client_of_a_draining_route_prefers_its_non_draining_targets():
    targets = (target(8081, drain=True), target(8082), target(8083, drain=True))
    router = table(route("a", 10_000, 8090), route("b", 0, targets=targets, drain=True),
                   sticky="route").gateways["sava"]
    cookie = request(cookie=f"{router.cookie_name}={router.routes[1].cookie_id}")
    assert {router.select(cookie, NOW)[1].port for _ in range(20)} == {8082}
    router.routes[1].targets[1].mark_failed(NOW)
    assert Counter(router.select(cookie, NOW)[1].port for _ in range(20)) == {8081: 10, 8083: 10}


def test_draining_flag_changed_on_rebuild_takes_effect_at_once():
    old = table(route("a", 10_000, 8081, 8082))
    new = RouteTable(Config(gateways=(Gateway("sava", 9050, routes=(
        route("a", 10_000, targets=(target(8081), target(8082, drain=True))),)),)), previous=old)
    assert {new.gateways["sava"].select(request(), NOW)[1].port for _ in range(10)} == {8081}


def test_a_drained_target_or_route_is_reached_by_nobody_not_even_its_sticky_clients():
    instance = table(route("a", 10_000, targets=(target(8081), Target("127.0.0.1", 8082, drained=True,
                                                                       drain=True))),
                     sticky="instance").gateways["sava"]
    a = instance.routes[0]
    cookie = request(cookie=f"{instance.cookie_name}={a.cookie_id}.{a.targets[1].cookie_id}")
    chosen = instance.select(cookie, NOW)
    assert chosen[1].port == 8081
    assert chosen[2].startswith(f"{instance.cookie_name}={a.cookie_id}.{chosen[1].cookie_id};")

    by_route = table(route("a", 5000, 8081), Route("b", 5000, (target(8082),), drain=True, drained=True),
                     sticky="route").gateways["sava"]
    b = by_route.routes[1]
    chosen = [by_route.select(request(cookie=f"{by_route.cookie_name}={b.cookie_id}"), NOW) for _ in range(10)]
    assert {(c[0].name, c[2].split(";")[0]) for c in chosen} == {("a", f"{by_route.cookie_name}="
                                                                     f"{by_route.routes[0].cookie_id}")}


# -- back-off and fallback ---------------------------------------------------------------------------

def test_back_off_doubles_per_failed_probe_up_to_30_seconds_and_resets_on_success():
    state = table(route("a", 10_000, 8081)).gateways["sava"].routes[0].targets[0]
    assert state.available(NOW)
    delays = []
    now = NOW
    for _ in range(8):
        state.mark_failed(now)                  # each time the back-off ends, the probe fails again
        delays.append(state.down_until - now)
        now = state.down_until
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]
    assert not state.available(now - 0.1) and state.available(now)
    state.mark_ok()
    assert state.available(NOW) and state.failures == 0


def test_backed_off_target_is_skipped_until_its_back_off_ends():
    router = table(route("a", 10_000, 8081, 8082)).gateways["sava"]
    router.routes[0].targets[0].mark_failed(NOW)
    assert {router.select(request(), NOW + 0.5)[1].port for _ in range(10)} == {8082}
    assert {router.select(request(), NOW + 1.0)[1].port for _ in range(10)} == {8081, 8082}


def test_route_without_available_target_hands_its_share_to_the_other_routes():
    router = table(route("a", 9000, 8081), route("b", 1000, 8082)).gateways["sava"]
    router.routes[1].targets[0].mark_failed(NOW)
    assert counts(router, 1000) == {"a": 1000}
    router.routes[1].targets[0].mark_ok()
    assert counts(router, 1000)["b"] in (100, 101)


def test_fallback_share_follows_the_remaining_weights():
    router = table(route("a", 5000, 8081), route("b", 3000, 8082), route("c", 2000, 8083)).gateways["sava"]
    router.routes[2].targets[0].mark_failed(NOW)
    got = counts(router, 800)
    assert got.keys() == {"a", "b"} and abs(got["a"] - 500) <= 2


def test_route_with_no_targets_at_all_hands_its_share_over():
    router = table(route("a", 5000, 8081), route("empty", 5000)).gateways["sava"]
    assert counts(router, 10) == {"a": 10}


def test_nothing_available_gives_none():
    router = table(route("a", 5000, 8081), route("b", 5000, 8082)).gateways["sava"]
    for _, _, state in table_targets(router):
        state.mark_failed(NOW)
    assert router.select(request(), NOW) is None
    assert router.select(request(headers=CANARY), NOW) is None


def table_targets(router):
    return [(router, r, t) for r in router.routes for t in r.targets]


def test_backed_off_sticky_target_is_replaced():
    router = table(route("a", 10_000, 8081, 8082), sticky="instance").gateways["sava"]
    a = router.routes[0]
    down = a.targets[0]
    down.mark_failed(NOW)
    chosen = router.select(request(cookie=f"{router.cookie_name}={a.cookie_id}.{down.cookie_id}"), NOW)
    assert chosen[1] is a.targets[1]
    assert chosen[2].startswith(f"{router.cookie_name}={a.cookie_id}.{a.targets[1].cookie_id};")


def test_sticky_route_with_every_target_down_is_replaced():
    router = table(route("a", 5000, 8081), route("b", 5000, 8082), sticky="route").gateways["sava"]
    b = router.routes[1]
    b.targets[0].mark_failed(NOW)
    chosen = router.select(request(cookie=f"{router.cookie_name}={b.cookie_id}"), NOW)
    assert chosen[0].name == "a" and chosen[2].startswith(f"{router.cookie_name}={chosen[0].cookie_id};")


def test_redispatch_picks_another_available_target_of_the_same_route_first():
    router = table(route("a", 5000, 8081, 8082, 8083), route("b", 5000, 8084), sticky="instance").gateways["sava"]
    a = router.routes[0]
    first, second, third = a.targets
    first.mark_failed(NOW)
    third.mark_failed(NOW)
    second.mark_failed(NOW)
    rerouted = router.redispatch("a", second, NOW)
    assert (rerouted[0].name, rerouted[1].port) == ("b", 8084)
    assert rerouted[2].startswith(f"{router.cookie_name}={router.routes[1].cookie_id}.{rerouted[1].cookie_id};")
    third.mark_ok()
    assert router.redispatch("a", second, NOW)[1] is third


def test_redispatch_sends_a_sticky_client_of_a_dead_route_elsewhere_with_a_new_cookie():
    router = table(route("a", 5000, 8081), route("b", 5000, 8082), sticky="route").gateways["sava"]
    a, b = router.routes
    cookie = request(cookie=f"{router.cookie_name}={a.cookie_id}")
    assert router.select(cookie, NOW)[0] is a
    a.targets[0].mark_failed(NOW)                           # the connection the sticky client's request needed
    assert router.redispatch("a", a.targets[0], NOW) == (b, b.targets[0], b._set_cookie)
    assert router.select(cookie, NOW)[0] is b               # and the cookie is worth nothing while a is down


def test_redispatch_with_nothing_else_live_gives_none():
    router = table(route("a", 5000, 8081), route("b", 5000, 8082)).gateways["sava"]
    a, b = router.routes
    b.targets[0].mark_failed(NOW)
    a.targets[0].mark_failed(NOW)
    assert router.redispatch("a", a.targets[0], NOW) is None
    assert router.redispatch("gone", a.targets[0], NOW) is None


def test_a_route_counts_its_live_targets_as_they_fail_and_recover():
    tables = table(route("a", 10_000, targets=(target(8081), target(8082), target(8083, drain=True),
                                                target(8084, weight=0))))
    router = tables.gateways["sava"]
    a = router.routes[0]
    first, second = a.targets[:2]
    assert (a.live, a.retry_at) == (2, float("inf"))
    first.mark_failed(NOW)
    assert (a.live, a.retry_at) == (1, NOW + 1)
    second.mark_failed(NOW + 0.5)
    second.mark_failed(NOW + 0.5)
    assert (a.live, a.retry_at, second.failures) == (0, NOW + 1, 1)   # two attempts at once: one failure
    assert not a.is_live(NOW + 0.9) and a.is_live(NOW + 1)   # back-off over: a request may probe it
    first.mark_failed(NOW + 1)                               # the probe failed
    assert (a.live, a.retry_at) == (0, NOW + 1.5)
    second.mark_ok()
    assert (a.live, a.retry_at) == (1, NOW + 3)
    rebuilt = RouteTable(tables.config, previous=tables).gateways["sava"].routes[0]
    assert (rebuilt.live, rebuilt.retry_at) == (1, NOW + 3)
    first.mark_ok()                                          # the rebuilt route counts from now on
    assert (rebuilt.live, rebuilt.retry_at) == (2, float("inf"))


def test_the_split_is_exact_over_the_live_routes_and_a_route_comes_back_when_its_target_does():
    router = table(route("a", 5000, 8081), route("b", 3000, 8082), route("c", 2000, 8083)).gateways["sava"]
    c = router.routes[2].targets[0]
    c.mark_failed(NOW)
    assert counts(router, 800) == {"a": 500, "b": 300}
    picks = route_names(router, [request()] * 800)           # every prefix within one request of 5:3
    assert all(abs(picks[:n].count("a") - Fraction(5 * n, 8)) <= 1 for n in range(1, 801))
    # The back-off is over: c is live again (its next request probes it) and takes its share at once.
    got = Counter(router.select(request(), NOW + 1)[0].name for _ in range(1000))
    assert all(abs(got[name] - share) <= 2 for name, share in {"a": 500, "b": 300, "c": 200}.items()), got


# -- virtual hosts -----------------------------------------------------------------------------------

def virtual_host_table() -> RouteTable:
    return RouteTable(Config(gateways=(
        Gateway("default", 8080, routes=(route("d", 10_000, 8081),)),
        Gateway("sava", 8080, virtual_hosts=("sava.local", "www.sava.local"), routes=(route("s", 10_000, 8082),)),
        Gateway("wild", 8080, virtual_hosts=("*.example.com",), routes=(route("w", 10_000, 8083),)),
        Gateway("deep", 8080, virtual_hosts=("*.eu.example.com", "exact.eu.example.com"),
                routes=(route("e", 10_000, 8084),)),
        Gateway("other", 9090, virtual_hosts=("only.local",), protocol="http", bind="127.0.0.1",
                routes=(route("o", 10_000, 8085),)),
    )))


@pytest.mark.parametrize("port, host, expected", [
    (8080, "sava.local", "sava"),
    (8080, "www.sava.local", "sava"),
    (8080, "a.example.com", "wild"),
    (8080, "a.b.example.com", "wild"),
    (8080, "a.eu.example.com", "deep"),
    (8080, "exact.eu.example.com", "deep"),
    (8080, "example.com", "default"),
    (8080, "unknown.local", "default"),
    (8080, "", "default"),
    (9090, "only.local", "other"),
    (9090, "sava.local", None),
    (9090, "", None),
])
def test_virtual_hosts(port, host, expected):
    router = virtual_host_table().ports[port].for_host(host)
    assert (router.name if router else None) == expected


def test_port_routers_describe_their_listeners():
    ports = virtual_host_table().ports
    assert sorted(ports) == [8080, 9090]
    assert [g.name for g in ports[8080].gateways] == ["default", "sava", "wild", "deep"]
    assert (ports[9090].port, ports[9090].protocol, ports[9090].bind) == (9090, "http", "127.0.0.1")


# -- rebuild -----------------------------------------------------------------------------------------

def test_rebuild_carries_runtime_state_over():
    old = table(route("a", 9000, 8081, 8082), route("b", 1000, 8083))
    old_a, old_b = old.gateways["sava"].routes
    kept, dropped = old_a.targets
    kept.mark_failed(NOW)
    kept.pool, kept.stats, kept.in_flight = UpstreamPool(kept), TargetStats(), 3
    old_a.remainder = TargetStats()
    new = RouteTable(Config(gateways=(Gateway("sava", 9050, routes=(
        route("a", 5000, targets=(target(8081, weight=7, drain=True), target(8090))),
        route("b", 5000, 8083))),)), previous=old)
    new_a, new_b = new.gateways["sava"].routes
    assert new_a.targets[0] is kept
    assert (kept.failures, kept.down_until, kept.in_flight) == (1, NOW + 1, 3)
    assert (kept.weight, kept.drain, kept.target.weight) == (7, True, 7)
    assert new_a.targets[1] is not dropped and new_a.targets[1].failures == 0
    assert new_a.remainder is old_a.remainder and new_b.targets[0] is old_b.targets[0]
    assert [t.address for _, _, t in new.targets()] == ["127.0.0.1:8081", "127.0.0.1:8090", "127.0.0.1:8083"]


def test_rebuild_does_not_share_state_between_gateways_or_routes():
    old = table(route("a", 10_000, 8081))
    kept = old.gateways["sava"].routes[0].targets[0]
    new = RouteTable(Config(gateways=(
        Gateway("sava", 9050, routes=(route("renamed", 10_000, 8081),)),
        Gateway("twin", 9051, routes=(route("a", 10_000, 8081),)),
    )), previous=old)
    assert all(state is not kept for _, _, state in new.targets())


def test_targets_lists_every_gateway_route_and_target():
    tables = virtual_host_table()
    assert [(g.name, r.name, t.port) for g, r, t in tables.targets()] == [
        ("default", "d", 8081), ("sava", "s", 8082), ("wild", "w", 8083), ("deep", "e", 8084), ("other", "o", 8085)]
