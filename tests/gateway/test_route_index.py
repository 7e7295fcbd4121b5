"""A gateway with many conditioned routes looks up the routes a request can match instead of trying each one
(gateway/routing/route_index.py). It must choose exactly what trying each route in order would: the first
route whose whole condition matches, with its condition strength, else the weight split. Shown on generated
gateways and requests, against a scan written here, and on the same gateway built with and without the index."""
from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config.model import FULL, Config, Gateway, Route, Target
from gateway.routing import route_index, table
from gateway.routing.conditions import canonical, parse
from gateway.routing.lookups import ClientLookups
from gateway.routing.request import RequestView
from gateway.routing.route_index import INDEX_FROM, required_fact
from gateway.routing.table import RouteTable

NOW = 1000.0
PATHS = ("/", "/api", "/api/v1", "/api/v1/users", "/apix", "/shop", "/shop/cart", "/%61pi")
HOSTS = ("a.example", "b.example", "shop.example")
VALUES = ("1", "2", "beta")

# Condition shapes: the ones the index files under a fact, and the ones it must try for every request.
CONDITION = st.one_of(
    st.sampled_from(PATHS).map(lambda p: f'path = "{p}"'),
    st.sampled_from(PATHS).map(lambda p: f'path prefix "{p}"'),
    st.sampled_from(HOSTS).map(lambda h: f"host = {h}"),
    st.sampled_from(("GET", "POST")).map(lambda m: f"method = {m}"),
    st.sampled_from(VALUES).map(lambda v: f"header x-canary = {v}"),
    st.sampled_from(VALUES).map(lambda v: f"cookie group = {v}"),
    st.sampled_from(VALUES).map(lambda v: f"header x-canary != {v}"),
    st.sampled_from(PATHS).map(lambda p: f'path not prefix "{p}"'),
    st.just("path ~ /v1/"),
    st.just("has cookie group"),
    st.just("user-agent = Firefox"),
)
CONDITIONS = st.recursive(CONDITION, lambda inner: st.one_of(
    st.tuples(inner, inner).map(lambda pair: f"({pair[0]}) and ({pair[1]})"),
    st.tuples(inner, inner).map(lambda pair: f"({pair[0]}) or ({pair[1]})"),
    inner.map(lambda c: f"not ({c})")), max_leaves=4)
REQUEST = st.fixed_dictionaries({
    "method": st.sampled_from(("GET", "POST", "PUT")),
    "path": st.sampled_from(PATHS + ("/api/v1/users?x=1", "/nothing")),
    "host": st.sampled_from(HOSTS + ("other.example",)),
    "header": st.one_of(st.none(), st.sampled_from(VALUES)),
    "cookie": st.one_of(st.none(), st.sampled_from(VALUES)),
    "firefox": st.booleans(),
})
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"


def request(method="GET", path="/", host="", header=None, cookie=None, firefox=False) -> RequestView:
    headers = [(b"User-Agent", (FIREFOX if firefox else "curl/8.0").encode())]
    if header is not None:
        headers.append((b"X-Canary", header.encode()))
    if cookie is not None:
        headers.append((b"Cookie", f"group={cookie}".encode()))
    return RequestView(method, path, headers, host, "127.0.0.1", ClientLookups())


def router(conditions, strengths=None, *, indexed=True):
    routes = [Route(f"r{i}", 0, (Target("127.0.0.1", 10000 + i),), condition=canonical(text),
                    condition_strength=(strengths or {}).get(i, FULL))
              for i, text in enumerate(conditions)]
    routes.append(Route("rest", FULL, (Target("127.0.0.1", 9999),)))
    config = Config(gateways=(Gateway("g", 9050, routes=tuple(routes)),))
    if indexed:
        return RouteTable(config).gateways["g"]
    saved = table.INDEX_FROM
    table.INDEX_FROM = 10 ** 9
    try:
        return RouteTable(config).gateways["g"]
    finally:
        table.INDEX_FROM = saved


def scanned(gateway, req) -> str:
    """The route a scan of every conditioned route in order chooses (every strength 100%)."""
    for route in gateway.routes:
        if route.condition is not None and route.condition.matches(req):
            return route.name
    return "rest"


@settings(max_examples=300, deadline=None)
@given(st.lists(CONDITIONS, min_size=INDEX_FROM, max_size=40), st.lists(REQUEST, min_size=1, max_size=10))
def test_the_index_chooses_what_a_scan_of_every_route_chooses(conditions, requests):
    gateway = router(conditions)
    assert gateway._route_index is not None
    for fields in requests:
        req = request(**fields)
        assert gateway.select(req, NOW)[0].name == scanned(gateway, request(**fields)), (fields, conditions)


def test_condition_strengths_spread_the_same_with_and_without_the_index():
    conditions = [f'path prefix "/app{i}"' for i in range(20)] + ["header x-canary = beta", "path prefix /app1"]
    strengths = {1: 5000, 20: 3000, 21: 2500}
    with_index, without = router(conditions, strengths), router(conditions, strengths, indexed=False)
    assert with_index._route_index is not None and without._route_index is None
    paths = itertools.islice(itertools.cycle(["/app1/x", "/app10", "/app3", "/none", "/app19/a"]), 400)
    for path, beta in zip(paths, itertools.cycle([None, "beta", "2"])):
        assert with_index.select(request(path=path, header=beta), NOW)[0].name == \
            without.select(request(path=path, header=beta), NOW)[0].name


def test_a_small_gateway_is_scanned_and_a_large_one_indexed():
    assert router(["path = /a"] * (INDEX_FROM - 1))._route_index is None
    assert router(["path = /a"] * INDEX_FROM)._route_index is not None


@pytest.mark.parametrize("text, fact", [
    ('path = "/a"', (route_index._PATH, None, "/a")),
    ("path prefix /api", (route_index._PREFIX, None, "/api")),
    ("method = POST and path prefix /api", (route_index._PREFIX, None, "/api")),
    ("path prefix /api and path prefix /api/v1 and host = x.example", (route_index._HOST, None, "x.example")),
    ("path prefix /api and path prefix /api/v1", (route_index._PREFIX, None, "/api/v1")),
    ("header X-Canary = beta", (route_index._HEADER, "x-canary", "beta")),
    ("cookie group = beta and browser = Firefox", (route_index._COOKIE, "group", "beta")),
    ("path = /a or path = /b", None),
    ("not path = /a", None),
    ("path ~ /a/", None),
    ("header x-canary has beta", None),
    ("user-agent = Firefox", None),
])
def test_what_a_condition_requires(text, fact):
    assert required_fact(parse(text)) == fact


def test_a_decoded_path_and_a_query_string_are_looked_up_as_the_condition_reads_them():
    gateway = router([f"path = /p{i}" for i in range(10)] + ['path = "/api"'])
    assert gateway.select(request(path="/%61pi?x=1"), NOW)[0].name == "r10"
    assert gateway.select(request(path="/p3?x=/p4"), NOW)[0].name == "r3"
