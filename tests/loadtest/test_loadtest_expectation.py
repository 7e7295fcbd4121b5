"""`vamp loadtest --from-gateway`: the split a gateway should give the load tester's traffic, by the
gateway's own routing semantics, mapped onto the groups the responses carry; and reading the gateway from
a real admin API."""
from __future__ import annotations

import time
from collections import Counter

import pytest

from loadtest.expectation import (ExpectationError, GatewayUnreachable, fetch_gateway,
                                             groups_for_routes, route_shares)
from loadtest.mixes import BUILTIN_MIXES
from loadtest.plan import NO_LABEL, Plan
from loadtest.traffic import Traffic
from gateway.config.load import from_dict
from gateway.routing.geo import TrustedProxies
from gateway.routing.lookups import ClientLookups
from gateway.routing.request import RequestView
from gateway.routing.table import RouteTable
from tests.support import config, free_port, gateway, route

V1, V2, V3 = "127.0.0.1:18001", "127.0.0.1:18002", "127.0.0.1:18003"     # never connected to


def make_traffic(**fields) -> Traffic:
    return Traffic(Plan(url="http://127.0.0.1:9050/", host="127.0.0.1", port=9050, target="/",
                        host_header="127.0.0.1:9050", **fields))


def document(routes: dict, **fields) -> dict:
    """A gateway document as the admin API answers it (configuration plus a read-only status)."""
    return {"name": "sava", **gateway(9050, routes, **fields), "status": {"state": "active", "routes": {}}}


def test_plain_weights_give_their_split():
    shares = route_shares(document({"v1": route(V1, weight="90%"), "v2": route(V2, weight="10%")}), "sava",
                          make_traffic())
    assert shares == pytest.approx({"v1": 0.9, "v2": 0.1})


def test_a_platform_gateway_document_with_its_generated_flag_is_read():
    """`vamp run`'s API marks the gateways it generated for deployments; the flag is read-only."""
    platform_document = {**document({"sava:1.0.0": route(V1, weight="80%"), "sava:1.1.0": route(V2, weight="20%")}),
                         "generated": True}
    assert route_shares(platform_document, "sava", make_traffic()) == pytest.approx(
        {"sava:1.0.0": 0.8, "sava:1.1.0": 0.2})


def test_a_country_condition_takes_exactly_the_share_of_that_country_in_the_mix():
    routes = {"uk": route(V3, weight="0%", condition="country = GB"),
              "v1": route(V1, weight="90%"), "v2": route(V2, weight="10%")}
    for clients in (None, 500):
        traffic = make_traffic(forwarded_for="countries:GB=20,US=80", clients=clients)
        shares = route_shares(document(routes), "sava", traffic)
        assert shares == pytest.approx({"uk": 0.2, "v1": 0.72, "v2": 0.08})


def test_a_condition_strength_of_half_takes_half_of_the_matching_requests():
    routes = {"beta": route(V3, condition="header X-Beta = yes", strength="50%"),
              "v1": route(V1, weight="90%"), "v2": route(V2, weight="10%")}
    beta_users = make_traffic(headers=(("X-Beta", "yes"),))
    assert route_shares(document(routes), "sava", beta_users) == pytest.approx({"beta": 0.5, "v1": 0.45, "v2": 0.05})
    others = make_traffic(headers=(("X-Beta", "no"),))
    assert route_shares(document(routes), "sava", others) == pytest.approx({"beta": 0.0, "v1": 0.9, "v2": 0.1})


def test_a_browser_condition_takes_the_mix_share_of_that_browser_family():
    routes = {"chrome": route(V3, weight="0%", condition='browser = "Chrome Mobile"'), "v1": route(V1, weight="100%")}
    chrome_mobile = sum(entry.weight for entry in BUILTIN_MIXES["mobile"]
                        if entry.label.startswith("Chrome Mobile")) / 100
    shares = route_shares(document(routes), "sava", make_traffic(mix="mobile"))
    assert shares == pytest.approx({"chrome": chrome_mobile, "v1": 1 - chrome_mobile})


def test_only_the_first_matching_condition_owns_a_request():
    routes = {"first": route(V1, weight="0%", condition="country = GB", strength="0%"),
              "second": route(V2, weight="0%", condition="country in (GB, US)"),
              "v3": route(V3, weight="100%")}
    shares = route_shares(document(routes), "sava", make_traffic(forwarded_for="countries:GB=20,US=80"))
    assert shares == pytest.approx({"first": 0.0, "second": 0.8, "v3": 0.2})


def test_a_draining_route_takes_nothing_new_and_the_others_share_its_weight():
    routes = {"v1": route(V1, weight="50%"), "v2": route(V2, weight="30%"),
              "old": route(V3, weight="20%", condition="country = GB", drain=True)}
    shares = route_shares(document(routes), "sava", make_traffic(forwarded_for="81.2.69.160"))
    assert shares == pytest.approx({"v1": 0.625, "v2": 0.375, "old": 0.0})


def test_a_route_without_a_target_to_serve_hands_its_share_to_the_others():
    routes = {"v1": route(V1, weight="50%"), "v2": route(V2, weight="25%"),
              "empty": route(weight="25%", condition="country = GB"),
              "drained": route({"address": V3, "drain": True}, weight="0%", condition="country = US")}
    shares = route_shares(document(routes), "sava", make_traffic(forwarded_for="countries:GB=1,US=1"))
    assert shares == pytest.approx({"v1": 2 / 3, "v2": 1 / 3, "empty": 0.0, "drained": 0.0})


def test_an_invalid_gateway_document_is_an_expectation_error():
    with pytest.raises(ExpectationError, match="route weights add up to 110%"):
        route_shares(document({"v1": route(V1, weight="90%"), "v2": route(V2, weight="20%")}), "sava",
                     make_traffic())


def test_the_shares_are_what_the_gateway_router_does_with_the_same_requests():
    routes = {"uk": route(V3, weight="0%", condition="country = GB", strength="50%"),
              "firefox": route(V3, weight="0%", condition="browser = Firefox"),
              "old": route(V3, weight="30%", drain=True),
              "v1": route(V1, weight="50%"), "v2": route(V2, weight="20%")}
    traffic = make_traffic(mix="browsers", forwarded_for="countries:GB=30,US=60,DE=10")
    expected = route_shares(document(routes), "sava", traffic)
    router = RouteTable(from_dict(config({"sava": gateway(9050, routes)}))).gateways["sava"]
    lookups = ClientLookups(trusted_proxies=TrustedProxies(["127.0.0.1/32"]))
    rounds = 20
    routed: Counter[str] = Counter()
    for identity in traffic.identities(0, traffic.cycle) * rounds:
        headers = [(b"Host", b"127.0.0.1:9050"), (b"User-Agent", identity.user_agent.encode()),
                   (b"X-Forwarded-For", identity.forwarded_for.encode())]
        request = RequestView(b"GET", b"/", headers, "127.0.0.1", "127.0.0.1", lookups)
        routed[router.select(request, time.monotonic())[0].name] += 1
    total = traffic.cycle * rounds
    assert {name: routed[name] for name in expected} == pytest.approx(
        {name: share * total for name, share in expected.items()}, abs=2)
    assert expected["uk"] > 0.1 and expected["firefox"] > 0.05 and expected["old"] == 0


# -- routes to groups ------------------------------------------------------------------------------------

def test_a_route_maps_to_the_group_of_its_name_or_of_a_part_of_its_name():
    shares = {"sava/sava/sava:1.0.0/web": 0.6, "sava/sava/sava:1.1.0/web": 0.3, "canary": 0.1}
    observed = ["1.0.0", "1.1.0", "canary", NO_LABEL]
    assert groups_for_routes(shares, observed) == pytest.approx({"1.0.0": 0.6, "1.1.0": 0.3, "canary": 0.1})


def test_routes_of_one_group_add_up_and_an_unseen_route_keeps_its_name():
    shares = {"sava/blue": 0.3, "blue": 0.3, "sava:blue": 0.2, "green": 0.2, "idle": 0.0}
    assert groups_for_routes(shares, ["blue"]) == pytest.approx({"blue": 0.8, "green": 0.2})


def test_a_route_whose_name_parts_match_several_groups_is_an_error_naming_them():
    with pytest.raises(ExpectationError, match="'sava:1.0.0/web'.*1.0.0, web"):
        groups_for_routes({"sava:1.0.0/web": 1.0}, ["web", "1.0.0"])


# -- the admin API of a real gateway -----------------------------------------------------------------------

def test_groups_that_no_route_names_are_an_error_suggesting_expect():
    with pytest.raises(ExpectationError, match=r"no route of the gateway \(canary, stable\) names a group that "
                                               r"was seen \(v1, v2\).*--expect"):
        groups_for_routes({"stable": 0.9, "canary": 0.1}, ["v1", "v2", NO_LABEL])


def test_the_expected_split_comes_from_a_running_gateway(procs):
    port = free_port()
    gw = procs.gateway(config({"sava/9050": gateway(port, {
        "sava/sava/sava:1.0.0/web": route(V1, weight="90%"),
        "sava/sava/sava:1.1.0/web": route(V2, weight="10%"),
    })}))
    fetched = fetch_gateway(gw.admin, "sava/9050", None)
    shares = route_shares(fetched, "sava/9050", make_traffic())
    assert groups_for_routes(shares, ["1.0.0", "1.1.0"]) == pytest.approx({"1.0.0": 0.9, "1.1.0": 0.1})
    with pytest.raises(ExpectationError, match="no gateway 'nope'") as missing:
        fetch_gateway(f"http://{gw.admin}", "nope", "token")
    assert not isinstance(missing.value, GatewayUnreachable)


def test_an_admin_api_that_does_not_answer_is_unreachable():
    with pytest.raises(GatewayUnreachable, match="cannot reach the API"):
        fetch_gateway(f"127.0.0.1:{free_port()}", "sava", None, timeout=2.0)
