"""Configuration loading and validation (gateway.config.load, gateway.common.units): what a user writes, what it
means, and the one-line error naming the gateway, route and field when it is wrong."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.common.names import RULE as NAME_RULE
from gateway.common.units import (MAX_DURATION, format_duration, format_percent, parse_address, parse_duration,
                                  parse_percent, parse_port)
from gateway.config.load import (ConfigError, from_dict, gateway_from_dict, gateway_to_dict, load_file, load_text,
                                 to_dict)
from gateway.config.model import Config, Gateway, GeoSettings, Route, StickyCookie, Target, Timeouts

REPO = Path(__file__).resolve().parents[2]
GEO_TEST_DATABASE = REPO / "tests" / "data" / "GeoLite2-Country-Test.mmdb"

DESIGN_EXAMPLE = """\
gateways:
  sava:                          # name: letters, digits, - _ . : and up to 3 '/' (Vamp style: sava/9050)
    port: 9050/http
    sticky: route
    sticky_ttl: 30m
    virtual_hosts: [sava.local]
    timeouts: {connect: 2s, response: 30s, idle: 60s}
    routes:
      sava-1.0:
        weight: 97.5%
        targets: [127.0.0.1:8081, 127.0.0.1:8082]
      sava-1.1:
        weight: 2.5%
        condition: browser = Chrome and os = Android and country = GB
        condition_strength: 100%
        targets: [127.0.0.1:8083]
geo:
  database: null
  trusted_proxies: []
"""


def error_of(document) -> ConfigError:
    """The ConfigError of YAML text or a dict; its message must be exactly one line."""
    with pytest.raises(ConfigError) as caught:
        load_text(document) if isinstance(document, str) else from_dict(document)
    assert len(str(caught.value).splitlines()) == 1
    return caught.value


def one_gateway(**fields) -> dict:
    return {"gateways": {"g": {"port": 8080, **fields}}}


def with_routes(**routes) -> dict:
    return one_gateway(routes=routes)


# -- units ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("written, basis_points", [
    ("97.5%", 9750), ("97.5", 9750), (97.5, 9750), (100, 10000), ("0%", 0), ("2.5%", 250), ("0.01%", 1),
    ("100.00%", 10000), (" 50 % ", 5000), (0, 0),
])
def test_percentages_are_basis_points(written, basis_points):
    assert parse_percent(written) == basis_points


@pytest.mark.parametrize("written, complaint", [
    ("97.555%", "at most two decimals"), ("-1%", "from 0% to 100%"), ("100.01%", "from 0% to 100%"),
    (True, "got true"), ("half", "like '97.5%'"), (None, "got null"), (float("nan"), "like '97.5%'"),
    ("", "like '97.5%'"), ("1e2", "like '97.5%'"),
])
def test_bad_percentages_say_what_was_expected(written, complaint):
    with pytest.raises(ValueError, match=complaint):
        parse_percent(written)


@given(st.integers(min_value=0, max_value=10000))
def test_percentages_format_back_exactly(basis_points):
    assert parse_percent(format_percent(basis_points)) == basis_points


def test_percentages_format_like_people_write_them():
    assert [format_percent(bp) for bp in (9750, 10000, 250, 1, 0, 1234)] == \
        ["97.5%", "100%", "2.5%", "0.01%", "0%", "12.34%"]


@pytest.mark.parametrize("written, seconds", [
    ("30m", 1800), ("2s", 2), ("1h", 3600), ("500ms", 0.5), ("1.5s", 1.5), (30, 30), (1.5, 1.5),
    ("2 minutes", 120), ("1 hour", 3600), ("3 hrs", 10800), ("10 sec", 10), ("1d", 86400), ("0.1m", 6),
    ("45", 45), ("5 Seconds", 5),
])
def test_durations_are_seconds(written, seconds):
    assert parse_duration(written) == seconds


@pytest.mark.parametrize("written, complaint", [
    ("0s", "greater than zero"), ("5y", "unknown unit 'y'"), ("400d", "at most 365d"), (True, "got true"),
    ("soon", "like '2s'"), ("-1s", "like '2s'"), ([], "got a list"),
])
def test_bad_durations_say_what_was_expected(written, complaint):
    with pytest.raises(ValueError, match=complaint):
        parse_duration(written)


@given(st.floats(min_value=0.000001, max_value=MAX_DURATION))
def test_durations_format_back_exactly(seconds):
    assert parse_duration(format_duration(seconds)) == seconds


def test_durations_format_like_people_write_them():
    assert [format_duration(s) for s in (1800, 2, 3600, 0.5, 1.5, 60, 86400)] == \
        ["30m", "2s", "1h", "500ms", "1.5s", "1m", "1d"]


@pytest.mark.parametrize("written, port", [
    ("9050", (9050, "http")), (9050, (9050, "http")), ("9050/http", (9050, "http")),
    ("9050/tcp", (9050, "tcp")), ("9050/TCP", (9050, "tcp")), (1, (1, "http")), (65535, (65535, "http")),
])
def test_ports(written, port):
    assert parse_port(written) == port


@pytest.mark.parametrize("written", ["99999", 0, 65536, "9050/udp", True, 9050.0, "http", "", "9050/"])
def test_bad_ports(written):
    with pytest.raises(ValueError, match="expected a port 1-65535 with optional /http or /tcp"):
        parse_port(written)


@pytest.mark.parametrize("written, address", [
    ("127.0.0.1:8081", ("127.0.0.1", 8081)), ("[::1]:8081", ("::1", 8081)),
    ("localhost:8081", ("localhost", 8081)), ("Backend-1.Example.COM:80", ("backend-1.example.com", 80)),
    ("[0:0::1]:1", ("::1", 1)), ("my_service:9000", ("my_service", 9000)),
])
def test_addresses(written, address):
    assert parse_address(written) == address


@pytest.mark.parametrize("written, complaint", [
    ("::1:8081", "needs brackets"), ("127.0.0.256:80", "invalid host name"), ("a..b:80", "invalid host name"),
    ("localhost", "expected host:port"), ("localhost:0", "port 1-65535"), (":80", "expected host:port"),
    ("[zz]:80", "invalid IPv6"), (8080, "expected host:port"), ("a b:80", "invalid host name"),
])
def test_bad_addresses(written, complaint):
    with pytest.raises(ValueError, match=complaint):
        parse_address(written)


# -- valid configurations ------------------------------------------------------------------------------
def test_design_example_parses_to_the_model():
    config = load_text(DESIGN_EXAMPLE)
    assert config == Config(
        gateways=(Gateway(
            name="sava", port=9050, protocol="http", sticky="route", sticky_ttl=1800.0,
            virtual_hosts=("sava.local",), timeouts=Timeouts(connect=2.0, response=30.0, idle=60.0),
            routes=(
                Route(name="sava-1.0", weight=9750,
                      targets=(Target("127.0.0.1", 8081), Target("127.0.0.1", 8082))),
                Route(name="sava-1.1", weight=250, targets=(Target("127.0.0.1", 8083),),
                      condition='browser = "Chrome" and os = "Android" and country = "GB"',
                      condition_strength=10000),
            )),),
        geo=GeoSettings(database=None, trusted_proxies=()))


def test_defaults():
    gateway = from_dict(one_gateway()).gateways[0]
    assert gateway == Gateway(name="g", port=8080, protocol="http", sticky="none", sticky_ttl=1800.0,
                              virtual_hosts=(), timeouts=Timeouts(2.0, 30.0, 60.0), routes=(), bind="0.0.0.0")


@pytest.mark.parametrize("document", ["", "# nothing yet\n", "gateways: {}", "gateways:", "gateways: []"])
def test_an_empty_configuration_serves_nothing(document):
    assert load_text(document) == Config()


def test_a_condition_is_stored_canonical_with_strength_100_by_default():
    route = from_dict(with_routes(r={"condition": "User-Agent == Firefox"})).gateways[0].routes[0]
    assert route.condition == 'user-agent = "Firefox"'
    assert route.condition_strength == 10000


def test_condition_strength_is_a_percentage():
    route = from_dict(with_routes(r={"condition": "has cookie beta", "condition_strength": "12.5%"}))
    assert route.gateways[0].routes[0].condition_strength == 1250


def test_routes_without_weight_share_the_rest_evenly():
    routes = from_dict(with_routes(a={"weight": "10%"}, b={}, c={}, d={})).gateways[0].routes
    assert [(r.name, r.weight, r.weight_given) for r in routes] == \
        [("a", 1000, True), ("b", 3000, False), ("c", 3000, False), ("d", 3000, False)]


def test_the_remainder_basis_points_go_to_the_first_unweighted_routes():
    routes = from_dict(with_routes(a={}, b={"weight": "0%"}, c={}, d={})).gateways[0].routes
    assert [r.weight for r in routes] == [3334, 0, 3333, 3333]


def test_unweighted_routes_get_nothing_when_the_given_weights_make_100():
    routes = from_dict(with_routes(a={"weight": "100%"}, b={})).gateways[0].routes
    assert [r.weight for r in routes] == [10000, 0]


def test_weights_may_all_be_zero():
    routes = from_dict(with_routes(a={"weight": 0, "condition": "browser = Firefox"}, b={"weight": "0%"}))
    assert [r.weight for r in routes.gateways[0].routes] == [0, 0]


@settings(max_examples=200)
@given(st.lists(st.one_of(st.none(), st.integers(0, 10000)), min_size=1, max_size=8))
def test_resolved_weights_add_up_exactly(weights):
    routes = {f"r{i}": ({} if w is None else {"weight": format_percent(w)}) for i, w in enumerate(weights)}
    given_total = sum(w for w in weights if w is not None)
    if given_total > 10000 or (None not in weights and given_total not in (0, 10000)):
        assert error_of(with_routes(**routes)).location == ("gateways", "g", "routes")
        return
    resolved = [r.weight for r in from_dict(with_routes(**routes)).gateways[0].routes]
    assert sum(resolved) in ((0, 10000) if None not in weights else (10000,))
    assert all(r == w for r, w in zip(resolved, weights) if w is not None)
    shares = [r for r, w in zip(resolved, weights) if w is None]
    assert not shares or max(shares) - min(shares) <= 1


def test_targets_as_objects_with_weight_and_drain():
    route = from_dict(with_routes(r={"targets": [
        "127.0.0.1:8081", {"address": "[::1]:8082", "weight": 300, "drain": True}, {"address": "b:1"}]}))
    assert route.gateways[0].routes[0].targets == (
        Target("127.0.0.1", 8081), Target("::1", 8082, weight=300, drain=True), Target("b", 1))


def test_gateway_fields():
    gateway = from_dict(one_gateway(
        port="9000/tcp", bind="::", sticky=None, sticky_ttl="2h", timeouts={"idle": "5m", "request_head": "10s"},
        routes={"r": {"targets": ["10.0.0.1:5432"], "drain": True}})).gateways[0]
    assert (gateway.port, gateway.protocol, gateway.bind, gateway.sticky, gateway.sticky_ttl) == \
        (9000, "tcp", "::", "none", 7200.0)
    assert gateway.timeouts == Timeouts(connect=2.0, response=30.0, idle=300.0, request_head=10.0)
    assert gateway.routes[0].drain


def test_virtual_hosts_are_lower_case_names_wildcards_or_ip_literals():
    gateway = from_dict(one_gateway(virtual_hosts=["Sava.Local", "*.example.com", "10.0.0.1", "[::1]",
                                                   "fqdn.example.org."])).gateways[0]
    assert gateway.virtual_hosts == ("sava.local", "*.example.com", "10.0.0.1", "[::1]", "fqdn.example.org")


def test_vamp_names_are_valid():
    config = from_dict({"gateways": {
        "sava/9050": {"port": 9050, "routes": {"sava/sava/sava:1.1.0/webport": {}}},
        "sava/sava/webport": {"port": 9051, "routes": {"[127.0.0.1:8080]": {}}},
    }})
    assert [g.name for g in config.gateways] == ["sava/9050", "sava/sava/webport"]
    assert [g.routes[0].name for g in config.gateways] == ["sava/sava/sava:1.1.0/webport", "[127.0.0.1:8080]"]


def test_gateways_as_a_list_with_names():
    config = load_text("gateways:\n  - name: a\n    port: 80\n  - name: 9050\n    port: 81\n")
    assert [(g.name, g.port) for g in config.gateways] == [("a", 80), ("9050", 81)]


def test_yaml_keys_are_names_as_written():
    config = load_text("gateways:\n  9050:\n    port: 9050\n    routes: {1.10: {}, 'null': {}}\n")
    assert config.gateways[0].name == "9050"
    assert [r.name for r in config.gateways[0].routes] == ["1.10", "null"]


def test_gateways_may_share_a_port_told_apart_by_host():
    config = from_dict({"gateways": {
        "default": {"port": 80},
        "a": {"port": 80, "virtual_hosts": ["a.example.com"]},
        "b": {"port": 80, "virtual_hosts": ["b.example.com", "*.a.example.com"]},
        "other": {"port": "81/tcp"},
    }})
    assert [g.name for g in config.gateways] == ["default", "a", "b", "other"]


def test_geo_settings():
    config = from_dict({"geo": {"database": str(GEO_TEST_DATABASE),
                                "trusted_proxies": ["10.1.2.3/8", "192.168.0.1", "2001:db8::1/32"]}})
    assert config.geo == GeoSettings(database=str(GEO_TEST_DATABASE),
                                     trusted_proxies=("10.0.0.0/8", "192.168.0.1/32", "2001:db8::/32"))


def test_example_file_loads():
    config = load_file(REPO / "examples" / "gateways.yaml")
    demo = config.gateway("demo")
    assert (demo.port, demo.protocol) == (8000, "http")       # next to `vamp run`'s API on 8080
    assert [(r.name, r.weight, r.targets, r.condition, r.condition_strength) for r in demo.routes] == [
        ("demo-1.0", 9000, (Target("127.0.0.1", 8081),), None, 10000),
        ("demo-1.1", 1000, (Target("127.0.0.1", 8082),), 'browser = "Firefox"', 10000),
    ]


@pytest.mark.parametrize("given, expected", [
    (None, StickyCookie("lax", False)),
    ({}, StickyCookie("lax", False)),
    ({"same_site": "Strict"}, StickyCookie("strict", False)),
    ({"secure": True}, StickyCookie("lax", True)),
    ({"same_site": "none", "secure": True}, StickyCookie("none", True)),
    ({"same_site": None, "secure": None}, StickyCookie("lax", False)),
])
def test_sticky_cookie_attributes_default_to_lax_and_not_secure(given, expected):
    assert from_dict(one_gateway(sticky="route", sticky_cookie=given)).gateways[0].sticky_cookie == expected


def test_sticky_cookie_in_yaml():
    config = load_text("gateways:\n  g:\n    port: 80\n    sticky: route\n"
                       "    sticky_cookie: {same_site: none, secure: true}\n")
    assert config.gateways[0].sticky_cookie == StickyCookie("none", True)
    error = error_of("gateways:\n  g:\n    port: 80\n    sticky_cookie:\n      same_site: none\n")
    assert str(error) == ("gateway 'g', field 'sticky_cookie.same_site': same_site none needs secure: true "
                          "(browsers refuse a SameSite=None cookie without Secure) (line 5)")


# -- round trip ----------------------------------------------------------------------------------------
ROUND_TRIP_DOCUMENT = {
    "gateways": {
        "sava/9050": {
            "port": "9050", "sticky": "instance", "sticky_ttl": "90s", "virtual_hosts": ["sava.local"],
            "sticky_cookie": {"same_site": "none", "secure": True},
            "timeouts": {"connect": "1.5s", "response": "500ms", "idle": "2h"}, "bind": "127.0.0.1",
            "routes": {
                "a": {"weight": "33.33%", "targets": ["127.0.0.1:1", {"address": "[::1]:2", "weight": 7}]},
                "b": {"targets": [{"address": "h:3", "drain": True}], "drain": True},
                "c": {"weight": "0%", "condition": "header x-beta has yes or cookie x = '1'",
                      "condition_strength": "0.5%"},
                "d": {},
            },
        },
        "tcp": {"port": "9051/tcp", "routes": {"db": {"targets": ["127.0.0.1:5432"]}}},
        "empty": {"port": 9052},
    },
    "geo": {"database": str(GEO_TEST_DATABASE), "trusted_proxies": ["10.0.0.0/8"]},
}


def test_to_dict_and_back_gives_the_same_config():
    config = from_dict(ROUND_TRIP_DOCUMENT)
    assert from_dict(to_dict(config)) == config
    assert load_text(yaml.safe_dump(to_dict(config), sort_keys=False)) == config


def test_to_dict_writes_the_documented_shape():
    document = to_dict(from_dict(ROUND_TRIP_DOCUMENT))
    gateway = document["gateways"]["sava/9050"]
    assert gateway["port"] == "9050/http"
    assert gateway["sticky_ttl"] == "90s"
    assert gateway["sticky_cookie"] == {"same_site": "none", "secure": True}
    assert document["gateways"]["empty"]["sticky_cookie"] == {"same_site": "lax", "secure": False}
    assert gateway["timeouts"] == {"connect": "1.5s", "response": "500ms", "idle": "2h", "request_head": "30s"}
    assert gateway["routes"]["a"]["weight"] == "33.33%"
    assert gateway["routes"]["a"]["targets"] == ["127.0.0.1:1", {"address": "[::1]:2", "weight": 7, "drain": False}]
    assert "weight" not in gateway["routes"]["b"] and "weight" not in gateway["routes"]["d"]
    assert gateway["routes"]["c"]["condition_strength"] == "0.5%"
    assert document["geo"] == {"database": str(GEO_TEST_DATABASE), "trusted_proxies": ["10.0.0.0/8"]}


def test_example_file_round_trips():
    config = load_file(REPO / "examples" / "gateways.yaml")
    assert from_dict(to_dict(config)) == config


def test_one_gateway_for_the_admin_api():
    gateway = gateway_from_dict("sava/9050", {"port": 9050, "routes": {"r": {"targets": ["127.0.0.1:1"]}}})
    assert gateway_from_dict("sava/9050", gateway_to_dict(gateway)) == gateway
    assert gateway_from_dict("sava/9050", {"name": "sava/9050", **gateway_to_dict(gateway)}) == gateway
    with pytest.raises(ConfigError) as caught:
        gateway_from_dict("sava/9050", {"name": "other", "port": 1})
    assert caught.value.location == ("gateways", "sava/9050", "name")


# -- invalid configurations: the field at fault, in one line -------------------------------------------
@pytest.mark.parametrize("document, location, complaint", [
    # structure and unknown fields
    ([1, 2], (), "expected a mapping of the configuration"),
    ({"gateway": {}}, ("gateway",), "unknown field (did you mean 'gateways'?)"),
    ({"gateways": "sava"}, ("gateways",), "expected a mapping of gateway names to gateways, got 'sava'"),
    ({"gateways": {"g": 8080}}, ("gateways", "g"), "expected a mapping of gateway fields, got '8080'"),
    (one_gateway(wieght=1), ("gateways", "g", "wieght"), "unknown field"),
    (with_routes(r={"wieght": "1%"}), ("gateways", "g", "routes", "r", "wieght"), "did you mean 'weight'?"),
    (with_routes(r="50%"), ("gateways", "g", "routes", "r"), "expected a mapping of route fields, got '50%'"),
    (with_routes(r=None), ("gateways", "g", "routes", "r"), "got null"),
    (one_gateway(routes=["a", "b"]), ("gateways", "g", "routes"), "got a list"),
    ({"gateways": {1: {}}}, ("gateways",), "expected names as keys, got '1'"),
    # names
    ({"gateways": {"sa va": {"port": 1}}}, ("gateways", "sa va", "name"), "invalid gateway name"),
    ({"gateways": {"a/b/c/d/e": {"port": 1}}}, ("gateways", "a/b/c/d/e", "name"), "1-4 non-empty parts"),
    ({"gateways": {"a//b": {"port": 1}}}, ("gateways", "a//b", "name"), "invalid gateway name"),
    ({"gateways": {"": {"port": 1}}}, ("gateways", "", "name"), "invalid gateway name"),
    ({"gateways": {"..": {"port": 1}}}, ("gateways", "..", "name"), NAME_RULE),
    ({"gateways": {".": {"port": 1}}}, ("gateways", ".", "name"), NAME_RULE),
    ({"gateways": {"sava/..": {"port": 1}}}, ("gateways", "sava/..", "name"), NAME_RULE),
    ({"gateways": {"a/./b": {"port": 1}}}, ("gateways", "a/./b", "name"), NAME_RULE),
    ({"gateways": {"a" * 254: {"port": 1}}}, ("gateways", "a" * 254, "name"), "1 to 253 characters"),
    ({"gateways": {"a" * 253: {"port": 1}}}, None, ""),
    ({"gateways": {"a/..b/c.": {"port": 1}}}, None, ""),
    (with_routes(**{"r 1": {}}), ("gateways", "g", "routes", "r 1"), "invalid route name"),
    (with_routes(**{"r\x00": {}}), ("gateways", "g", "routes", "r\x00"), "control characters"),
    (with_routes(**{"": {}}), ("gateways", "g", "routes", ""), "non-empty"),
    ({"gateways": [{"port": 1}]}, ("gateways", 0, "name"), "expected the gateway's name, got null"),
    ({"gateways": [{"name": "a", "port": 1}, {"name": "a", "port": 2}]}, ("gateways", 1, "name"),
     "a gateway named 'a' is already defined"),
    # gateway fields
    ({"gateways": {"g": {}}}, ("gateways", "g", "port"), "required field missing"),
    (one_gateway(port="99999"), ("gateways", "g", "port"),
     "expected a port 1-65535 with optional /http, /https or /tcp, got '99999'"),
    (one_gateway(sticky="always"), ("gateways", "g", "sticky"), "expected one of none, route, instance"),
    (one_gateway(sticky_ttl="forever"), ("gateways", "g", "sticky_ttl"), "expected a duration"),
    (one_gateway(sticky_cookie={"same_site": "none"}), ("gateways", "g", "sticky_cookie", "same_site"),
     "same_site none needs secure: true"),
    (one_gateway(sticky_cookie={"same_site": "None", "secure": False}),
     ("gateways", "g", "sticky_cookie", "same_site"), "same_site none needs secure: true"),
    (one_gateway(sticky_cookie={"same_site": "loose"}), ("gateways", "g", "sticky_cookie", "same_site"),
     "expected one of lax, strict, none, got 'loose'"),
    (one_gateway(sticky_cookie={"secure": "yes"}), ("gateways", "g", "sticky_cookie", "secure"),
     "expected true or false"),
    (one_gateway(sticky_cookie={"samesite": "lax"}), ("gateways", "g", "sticky_cookie", "samesite"),
     "unknown field"),
    (one_gateway(sticky_cookie="secure"), ("gateways", "g", "sticky_cookie"), "expected a mapping of sticky cookie"),
    (one_gateway(timeouts={"connect": "0s"}), ("gateways", "g", "timeouts", "connect"), "greater than zero"),
    (one_gateway(timeouts={"request_head": "0s"}), ("gateways", "g", "timeouts", "request_head"),
     "greater than zero"),
    (one_gateway(timeouts={"read": "1s"}), ("gateways", "g", "timeouts", "read"), "unknown field"),
    (one_gateway(timeouts="1s"), ("gateways", "g", "timeouts"), "expected a mapping of timeouts"),
    (one_gateway(bind="localhost"), ("gateways", "g", "bind"), "expected an IP address to listen on"),
    (one_gateway(virtual_hosts="a.com"), ("gateways", "g", "virtual_hosts"), "expected a list of host names"),
    (one_gateway(virtual_hosts=["a.com:80"]), ("gateways", "g", "virtual_hosts", 0), "without port"),
    (one_gateway(virtual_hosts=["a b"]), ("gateways", "g", "virtual_hosts", 0), "expected a host name"),
    (one_gateway(virtual_hosts=["*"]), ("gateways", "g", "virtual_hosts", 0), "expected a host name"),
    (one_gateway(virtual_hosts=["a.com", "A.com"]), ("gateways", "g", "virtual_hosts", 1), "listed twice"),
    # routes and weights
    (with_routes(r={"weight": "101%"}), ("gateways", "g", "routes", "r", "weight"), "from 0% to 100%"),
    (with_routes(r={"weight": "97.555%"}), ("gateways", "g", "routes", "r", "weight"), "two decimals"),
    (with_routes(r={"weight": True}), ("gateways", "g", "routes", "r", "weight"), "got true"),
    (with_routes(a={"weight": "60%"}, b={"weight": "50%"}), ("gateways", "g", "routes"),
     "route weights add up to 110%, more than 100%"),
    (with_routes(a={"weight": "60%"}, b={"weight": "70%"}, c={}), ("gateways", "g", "routes"),
     "route weights add up to 130%, more than 100%"),
    (with_routes(a={"weight": "97%"}, b={"weight": "2.5%"}), ("gateways", "g", "routes"),
     "route weights add up to 99.5%; they must add up to 100% (or all be 0%)"),
    (with_routes(r={"condition": "browser ="}), ("gateways", "g", "routes", "r", "condition"),
     "at position 9"),
    (with_routes(r={"condition": ""}), ("gateways", "g", "routes", "r", "condition"), "at position 0"),
    (with_routes(r={"condition": 42}), ("gateways", "g", "routes", "r", "condition"),
     "expected a condition as text"),
    (with_routes(r={"condition_strength": "50%"}), ("gateways", "g", "routes", "r", "condition_strength"),
     "condition_strength needs a condition"),
    (with_routes(r={"condition": "method = GET", "condition_strength": "2"}), None, None),
    (with_routes(r={"drain": "yes"}), ("gateways", "g", "routes", "r", "drain"), "expected true or false"),
    # targets
    (with_routes(r={"targets": "127.0.0.1:1"}), ("gateways", "g", "routes", "r", "targets"),
     "expected a list of targets"),
    (with_routes(r={"targets": ["127.0.0.1"]}), ("gateways", "g", "routes", "r", "targets", 0),
     "expected host:port"),
    (with_routes(r={"targets": ["::1:80"]}), ("gateways", "g", "routes", "r", "targets", 0),
     "an IPv6 address needs brackets"),
    (with_routes(r={"targets": [8080]}), ("gateways", "g", "routes", "r", "targets", 0),
     "expected 'host:port' or a mapping"),
    (with_routes(r={"targets": ["a:1", "A:1"]}), ("gateways", "g", "routes", "r", "targets", 1),
     "target a:1 is listed twice"),
    (with_routes(r={"targets": [{"weight": 1}]}), ("gateways", "g", "routes", "r", "targets", 0, "address"),
     "required field missing"),
    (with_routes(r={"targets": [{"address": "a:1", "weight": 5000}]}),
     ("gateways", "g", "routes", "r", "targets", 0, "weight"), "expected a whole number from 0 to 1000"),
    (with_routes(r={"targets": [{"address": "a:1", "weight": 1.5}]}),
     ("gateways", "g", "routes", "r", "targets", 0, "weight"), "whole number"),
    (with_routes(r={"targets": [{"address": "a:1", "port": 1}]}),
     ("gateways", "g", "routes", "r", "targets", 0, "port"), "unknown field"),
    # tcp gateways
    (one_gateway(port="80/tcp", sticky="route"), ("gateways", "g", "sticky"), "a tcp gateway cannot be sticky"),
    (one_gateway(port="80/tcp", virtual_hosts=["a.com"]), ("gateways", "g", "virtual_hosts"),
     "a tcp gateway cannot have virtual_hosts"),
    (one_gateway(port="80/tcp", routes={"r": {"condition": "true"}}),
     ("gateways", "g", "routes", "r", "condition"), "a tcp gateway cannot route by condition"),
    # geo
    ({"geo": {"database": "/nonexistent/GeoIP2-Country.mmdb"}}, ("geo", "database"), "no such file"),
    ({"geo": {"database": ""}}, ("geo", "database"), "expected null"),
    ({"geo": {"trusted_proxies": ["10.0.0.0/33"]}}, ("geo", "trusted_proxies", 0), "expected a CIDR"),
    ({"geo": {"trusted_proxies": ["10.0.0.1/8", "10.0.0.0/8"]}}, ("geo", "trusted_proxies", 1),
     "10.0.0.0/8 is listed twice"),
    ({"geo": {"trusted_proxies": "10.0.0.0/8"}}, ("geo", "trusted_proxies"), "expected a list of CIDRs"),
    ({"geo": {"country": "GB"}}, ("geo", "country"), "unknown field"),
])
def test_invalid_configurations_name_the_field_at_fault(document, location, complaint):
    if location is None:                                  # a valid neighbour of the invalid cases
        from_dict(document)
        return
    error = error_of(document)
    assert error.location == location
    assert complaint in error.message


def test_the_message_reads_gateway_route_field():
    error = error_of(with_routes(**{"sava-1.1": {"condition": "browser = and os = Android"}}))
    assert str(error).startswith("gateway 'g', route 'sava-1.1', field 'condition': expected a value after '='")
    assert str(error).endswith("at position 10")
    error = error_of({"gateways": {"sava": {"port": "99999"}}})
    assert str(error) == "gateway 'sava', field 'port': expected a port 1-65535 with optional /http, /https " \
                         "or /tcp, got '99999'"
    error = error_of(with_routes(r={"targets": [{"address": "a:1", "weight": -1}]}))
    assert str(error).startswith("gateway 'g', route 'r', field 'targets[0].weight': ")


def test_values_with_line_breaks_stay_on_one_line():
    error = error_of(one_gateway(sticky="route\ninstance"))
    assert "'route\\ninstance'" in str(error)


@pytest.mark.parametrize("gateways, location, complaint", [
    ({"a": {"port": 80}, "b": {"port": 80}}, ("gateways", "b", "port"),
     "port 80 is already used by gateway 'a' without virtual_hosts"),
    ({"a": {"port": 80, "virtual_hosts": ["x.com"]}, "b": {"port": 80, "virtual_hosts": ["y.com", "X.com"]}},
     ("gateways", "b", "virtual_hosts", 1), "host 'x.com' on port 80 is already claimed by gateway 'a'"),
    ({"a": {"port": 80, "virtual_hosts": ["x.com"]}, "b": {"port": "80/tcp"}}, ("gateways", "b", "port"),
     "a tcp gateway needs a port of its own"),
    ({"a": {"port": "80/tcp"}, "b": {"port": 80, "virtual_hosts": ["x.com"]}}, ("gateways", "b", "port"),
     "a tcp gateway needs a port of its own"),
    ({"a": {"port": 80, "bind": "127.0.0.1"}, "b": {"port": 80, "virtual_hosts": ["x.com"]}},
     ("gateways", "b", "bind"), "gateways sharing a port must use the same bind address"),
])
def test_gateways_on_one_port_must_be_told_apart(gateways, location, complaint):
    error = error_of({"gateways": gateways})
    assert error.location == location
    assert complaint in error.message


def test_an_unreadable_geo_database_is_refused(tmp_path):
    error = error_of({"geo": {"database": str(tmp_path)}})   # a directory
    assert error.location == ("geo", "database")


# -- YAML text -----------------------------------------------------------------------------------------
def test_errors_in_yaml_carry_the_line_of_the_field():
    error = error_of(DESIGN_EXAMPLE.replace("os = Android", "os = "))
    assert error.location == ("gateways", "sava", "routes", "sava-1.1", "condition")
    assert error.line == 14
    assert str(error).endswith("(line 14)")
    assert error_of(DESIGN_EXAMPLE.replace("2.5%", "2.6%")).line == 8        # 'routes:' of the gateway
    assert error_of(DESIGN_EXAMPLE.replace("connect: 2s", "connect: 2y")).line == 7
    assert error_of(DESIGN_EXAMPLE.replace("    port: 9050/http\n", "")).line == 2   # the gateway, no port


def test_a_regex_re2_cannot_run_is_an_error_with_its_line_and_position(tmp_path):
    text = DESIGN_EXAMPLE.replace("browser = Chrome and os = Android and country = GB",
                                  "user-agent ~ /(Chrome)\\/\\d+ \\1/")
    path = tmp_path / "gateways.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_file(path)
    assert str(caught.value) == ("gateway 'sava', route 'sava-1.1', field 'condition': invalid regular expression: "
                                 "backreference '\\1' is not supported (conditions use RE2, which runs in linear "
                                 "time) at position 28 (line 14)")


def test_line_of_a_list_item_and_of_a_listed_gateway():
    error = error_of("gateways:\n  - name: a\n    port: 80\n  - name: b\n    port: 80\n    routes:\n"
                     "      r:\n        targets:\n          - 127.0.0.1:1\n          - nonsense\n")
    assert error.location == ("gateways", "b", "routes", "r", "targets", 1)
    assert error.line == 10


def test_duplicate_keys_are_refused_with_their_lines():
    error = error_of("gateways:\n  sava:\n    port: 80\n    sticky: route\n    port: 81\n")
    assert error.line == 5
    assert str(error) == "line 5: duplicate key 'port' (first on line 3)"
    assert error_of("gateways:\n  a: {port: 1}\n  a: {port: 2}\n").line == 3


def test_yaml_merge_keys_may_be_overridden():
    config = load_text("gateways:\n  a: &base {port: 80, sticky: route}\n"
                       "  b:\n    <<: *base\n    port: 81\n")
    assert [(g.port, g.sticky) for g in config.gateways] == [(80, "route"), (81, "route")]


@pytest.mark.parametrize("text, line", [
    ("gateways:\n  sava:\n    port: [80\n", 4),
    ("gateways:\n  sava:\n    port: 80\n   routes: {}\n", 4),
    ("gateways: {}\n---\ngeo: {}\n", 2),
    ("gateways:\n  sava: {port: 80}\n  \x01\n", 3),
    ("gateways:\n  ? [a, b]\n  : {port: 80}\n", 2),
])
def test_yaml_syntax_errors_give_the_line(text, line):
    error = error_of(text)
    assert error.line == line
    assert str(error).startswith(f"line {line}: ")


def test_deeply_nested_yaml_is_refused_cleanly():
    assert "nested too deeply" in error_of("gateways: " + "[" * 5000).message


def test_a_name_against_the_rule_is_refused_with_its_line():
    error = error_of("gateways:\n  ok:\n    port: 80\n  sava/..:\n    port: 81\n")
    assert error.location == ("gateways", "sava/..", "name") and error.line == 4
    assert str(error) == f"gateway 'sava/..', field 'name': invalid gateway name: {NAME_RULE} (line 4)"
    listed = error_of("gateways:\n  - name: ok\n    port: 80\n  - port: 81\n    name: '..'\n")
    assert listed.line == 5


def test_a_very_long_name_is_shortened_in_the_message():
    error = error_of({"gateways": {"x" * 5000: {"port": 1}}})
    assert len(str(error)) < 300, str(error)


def nested(depth: int, open_: str = "[", close: str = "]") -> str:
    return open_ * depth + close * depth


@pytest.mark.parametrize("text", [
    "gateways: " + nested(64),                                    # 65 levels, with the top mapping
    "gateways: " + nested(100_000),
    "gateways: " + "{a: " * 64 + "1" + "}" * 64,
    "gateways:\n" + "".join("  " * level + f"k{level}:\n" for level in range(1, 70)) + "  " * 70 + "x",
])
def test_yaml_nested_more_than_64_levels_is_refused_with_the_line(text):
    error = error_of(text)
    assert "nested too deeply" in error.message and "64" in error.message
    assert error.line is not None


def test_yaml_nested_64_levels_is_read():
    assert "nested" not in error_of("gateways: " + nested(63)).message     # read; then refused as a value


def test_yaml_aliases_cannot_multiply_a_document():
    laughs = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    laughs += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    error = error_of("\n".join(laughs) + "\n")
    assert "aliases" in error.message and "expand" in error.message


def test_yaml_aliases_cannot_nest_a_document_deeper_than_64_levels():
    text = "a: &a " + nested(40) + "\nb: " + "[" * 30 + "*a" + "]" * 30 + "\n"
    assert "nested too deeply" in error_of(text).message


def test_a_yaml_alias_inside_its_own_anchor_is_refused():
    assert "refers to a node that contains it" in error_of("gateways: &loop [*loop]\n").message


def test_load_file_reports_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the configuration file"):
        load_file(tmp_path / "missing.yaml")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"gateways:\n  \xff\xfe: 1\n")
    with pytest.raises(ConfigError, match="not UTF-8") as caught:
        load_file(binary)
    assert caught.value.line == 2


def test_load_file_reads_yaml_and_json(tmp_path):
    yaml_file = tmp_path / "gateways.yaml"
    yaml_file.write_text(DESIGN_EXAMPLE)
    json_file = tmp_path / "gateways.json"
    json_file.write_text('{"gateways": {"g": {"port": "8080", "routes": {"r": {"weight": "100%"}}}}}')
    assert load_file(yaml_file) == load_text(DESIGN_EXAMPLE)
    assert load_file(os.fspath(json_file)).gateways[0].routes[0].weight == 10000


# -- from_dict never fails with anything but ConfigError -----------------------------------------------
_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12),
                     st.sampled_from(["8080", "80/tcp", "50%", "100%", "2s", "route", "127.0.0.1:1", "[::1]:2",
                                      "browser = Firefox", "a.example.com", "10.0.0.0/8", "0.0.0.0"]))
_keys = st.one_of(st.text(max_size=8),
                  st.sampled_from(["gateways", "geo", "g", "port", "routes", "r", "weight", "targets",
                                   "condition", "condition_strength", "drain", "address", "sticky",
                                   "sticky_ttl", "sticky_cookie", "same_site", "secure", "virtual_hosts",
                                   "timeouts", "connect", "bind", "name",
                                   "database", "trusted_proxies"]))
_documents = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(_keys, inner, max_size=5)),
                          max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(_documents)
def test_from_dict_raises_only_config_errors(document):
    try:
        from_dict(document)
    except ConfigError as error:
        assert len(str(error).splitlines()) == 1


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_keys, _documents, max_size=4), st.dictionaries(_keys, _documents, max_size=3))
def test_gateway_shaped_input_raises_only_config_errors(gateway, route):
    document = {"gateways": {"g": {"port": 8080, **gateway, "routes": {"r": route}}}}
    try:
        config = from_dict(document)
    except ConfigError as error:
        assert len(str(error).splitlines()) == 1
    else:
        assert from_dict(to_dict(config)) == config
