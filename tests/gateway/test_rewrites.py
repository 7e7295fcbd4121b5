"""Rewrites and header rules per route (docs/rewrites.md): what a backend receives and what a client gets back,
through a real gateway in front of echo backends on loopback; what the configuration refuses, with the field and
position at fault; and the compiled rules on their own (gateway/proxy/rules.py), including a property test that a
rewritten head is still exactly one valid request for llhttp."""
from __future__ import annotations

import re

import httptools
import pytest
from hypothesis import given, settings, strategies as st

from gateway.config import model
from gateway.config.load import ConfigError, from_dict, load_text, to_dict
from gateway.proxy.request_head import read_request_head
from gateway.proxy.response_head import read_head
from gateway.proxy.rules import compile_rules
from tests.support import HttpClient, config, free_port, gateway, get, raw_exchange, route

API_REWRITE = {"path": {"regex": r"^/api/v(\d+)/(.*)", "replace": r"/\2/version/\1"}}
REQUEST_RULES = {"set": {"X-Env": "canary", "Host": "backend.internal"}, "add": {"X-Tag": "added"},
                 "remove": ["X-Debug"]}
RESPONSE_RULES = {"set": {"X-Version": "rewritten"}, "add": {"X-Served-By": "vamp"}, "remove": ["Content-Type"]}


@pytest.fixture(scope="module")
def echo(module_procs):
    return module_procs.backend("echo", "a", "b")


@pytest.fixture(scope="module")
def ports(module_procs, echo):
    """One gateway process; a gateway per feature, each on its own port."""
    dead = free_port()          # nothing listens there: connections to it are refused
    names = ("rewrite", "strip", "both", "headers", "by_condition", "split", "fallback", "plain", "down")
    port = {name: free_port() for name in names}
    module_procs.gateway(config({
        "rewrite": gateway(port["rewrite"], {"r": route(echo.address("a"), rewrite=API_REWRITE)}),
        "strip": gateway(port["strip"], {"r": route(echo.address("a"), strip_prefix="/api")}),
        "both": gateway(port["both"], {"r": route(echo.address("a"), strip_prefix="/api", rewrite={
            "path": {"regex": "^/v1/", "replace": "/v2/"}})}),
        "headers": gateway(port["headers"], {"r": route(echo.address("a"), request_headers=REQUEST_RULES,
                                                        response_headers=RESPONSE_RULES)}),
        "by_condition": gateway(port["by_condition"], {
            "a": route(echo.address("a"), condition="header x-route = a", strip_prefix="/a",
                       request_headers={"set": {"X-Route": "was-a"}}, response_headers={"add": {"X-Rules": "a"}}),
            "b": route(echo.address("b"), weight="100%", rewrite={"path": {"regex": "^/(.*)", "replace": r"/b/\1"}},
                       response_headers={"add": {"X-Rules": "b"}}),
        }),
        "split": gateway(port["split"], {
            "a": route(echo.address("a"), weight="50%", rewrite={"path": {"regex": "^/", "replace": "/a/"}},
                       request_headers={"add": {"X-Rules": "a"}}),
            "b": route(echo.address("b"), weight="50%", request_headers={"add": {"X-Rules": "b"}}),
        }),
        "fallback": gateway(port["fallback"], {
            "dead": route(f"127.0.0.1:{dead}", weight="50%", strip_prefix="/x",
                          request_headers={"add": {"X-Rules": "dead"}}),
            "live": route(echo.address("b"), weight="50%"),
        }),
        "plain": gateway(port["plain"], {"r": route(echo.address("a"))}),
        "down": gateway(port["down"], {"r": route(f"127.0.0.1:{dead}", response_headers=RESPONSE_RULES)}),
    }))
    return port


def header_values(headers: list[list[str]], name: str) -> list[str]:
    return [value for key, value in headers if key.lower() == name.lower()]


# -- path rewrites ------------------------------------------------------------------------------------------
def test_a_path_is_rewritten_with_its_groups_and_the_query_is_kept(ports):
    seen = get(ports["rewrite"], "/api/v2/items/7?x=1&y=%20&x=2").json()
    assert seen["path"] == "/items/7/version/2"
    assert seen["query"] == [["x", "1"], ["y", " "], ["x", "2"]]


def test_a_path_the_regex_does_not_match_goes_as_it_came(ports):
    assert get(ports["rewrite"], "/apix/v2/a?q=1").json()["path"] == "/apix/v2/a"
    assert get(ports["rewrite"], "/").json()["path"] == "/"


@pytest.mark.parametrize("sent, received", [
    ("/api/x", "/x"), ("/api", "/"), ("/api/", "/"), ("/apix", "/apix"), ("/api/a/b", "/a/b"),
    ("/x/api/y", "/x/api/y"), ("/API/x", "/API/x"),
])
def test_strip_prefix_takes_a_leading_prefix_off_on_a_segment_boundary(ports, sent, received):
    assert get(ports["strip"], sent).json()["path"] == received


def test_strip_prefix_keeps_the_query(ports):
    seen = get(ports["strip"], "/api?q=1").json()
    assert (seen["path"], seen["query"]) == ("/", [["q", "1"]])


def test_strip_prefix_comes_before_the_rewrite(ports):
    assert get(ports["both"], "/api/v1/users").json()["path"] == "/v2/users"
    assert get(ports["both"], "/v1/users").json()["path"] == "/v2/users"        # no prefix: rewritten all the same


def test_an_options_star_request_is_not_rewritten(ports):
    response = raw_exchange(ports["strip"], b"OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n", "OPTIONS")
    assert response.status == 200 and response.json()["path"] == "*"


# -- header rules -------------------------------------------------------------------------------------------
def test_request_headers_set_add_and_remove(ports):
    response = get(ports["headers"], "/h", headers=[
        ("x-env", "one"), ("X-ENV", "two"), ("X-Tag", "mine"), ("X-Debug", "1"), ("x-debug", "2"), ("Accept", "*/*")])
    headers = response.json()["headers"]
    assert header_values(headers, "X-Env") == ["canary"]              # set: every line of the name replaced by one
    assert header_values(headers, "X-Tag") == ["mine", "added"]       # add: one more line
    assert header_values(headers, "X-Debug") == []                    # remove: every line dropped
    assert header_values(headers, "Host") == ["backend.internal"]     # Host may be set (routing used the real one)
    assert header_values(headers, "Accept") == ["*/*"]
    assert header_values(headers, "X-Forwarded-Host") == ["test.local"]   # the gateway's own lines are kept


def test_response_headers_set_add_and_remove(ports):
    response = get(ports["headers"], "/h")
    assert response.status == 200
    assert response.header_values("x-version") == ["rewritten"]
    assert response.header_values("x-served-by") == ["vamp"]
    assert response.header("content-type") is None
    assert response.json()["name"] == "a"


@pytest.mark.parametrize("extra", [
    [("X-Echo-Size", "3000"), ("X-Echo-Chunked", "1")],      # a chunked body: the head goes the long way
    [("X-Echo-Size", "3000")],
    [("X-Echo-Status", "204")],
])
def test_response_header_rules_apply_whatever_the_framing(ports, extra):
    response = get(ports["headers"], "/h", headers=extra)
    assert response.header_values("x-version") == ["rewritten"] and response.header_values("x-served-by") == ["vamp"]


def test_response_header_rules_apply_for_http10_and_head(ports):
    response = raw_exchange(ports["headers"], b"GET /h HTTP/1.0\r\nHost: t\r\n\r\n")
    assert response.status == 200 and response.header_values("x-served-by") == ["vamp"]
    with HttpClient(ports["headers"]) as client:
        head = client.request("HEAD", "/h")
        assert head.status == 200 and head.header_values("x-served-by") == ["vamp"]
        again = client.request("GET", "/h")                              # the same connection, the plain path
        assert again.header_values("x-served-by") == ["vamp"] and again.json()["name"] == "a"


def test_the_gateways_own_answers_get_no_response_rules(ports):
    refused = get(ports["down"], "/h")                      # routed, but its target refuses connections
    assert refused.status == 502 and refused.header("x-served-by") is None
    assert refused.header("content-type") == "text/plain; charset=utf-8"
    bad = get(ports["headers"], "/h", host="bad host")      # not routed at all
    assert bad.status == 400 and bad.header("x-served-by") is None


# -- rules per route ------------------------------------------------------------------------------------------
def test_each_route_gets_its_own_rules(ports):
    a = get(ports["by_condition"], "/a/x", headers=[("X-Route", "a")])
    b = get(ports["by_condition"], "/a/x")
    assert (a.json()["name"], a.json()["path"], a.header("x-rules")) == ("a", "/x", "a")
    assert header_values(a.json()["headers"], "X-Route") == ["was-a"]
    assert (b.json()["name"], b.json()["path"], b.header("x-rules")) == ("b", "/b/a/x", "b")


def test_pipelined_requests_taking_different_routes_each_get_their_routes_rules(ports):
    requests = [b"GET /a/%d HTTP/1.1\r\nHost: t\r\n%s\r\n" % (i, b"X-Route: a\r\n" if i % 3 else b"")
                for i in range(30)]
    with HttpClient(ports["by_condition"]) as client:
        client.send_raw(b"".join(requests))
        for i in range(30):
            response = client.read_response_to_raw()
            seen = response.json()
            if i % 3:
                assert (seen["name"], seen["path"], response.header("x-rules")) == ("a", f"/{i}", "a"), i
            else:
                assert (seen["name"], seen["path"], response.header("x-rules")) == ("b", f"/b/a/{i}", "b"), i


def test_the_same_head_split_across_two_routes_gets_each_routes_rules(ports):
    """Identical requests on one keep-alive connection, split 50/50: the head read once, forwarded per route."""
    request = b"GET /same HTTP/1.1\r\nHost: t\r\n\r\n"
    with HttpClient(ports["split"]) as client:
        client.send_raw(request * 20)
        seen = [client.read_response_to_raw().json() for _ in range(20)]
    by_name = {(s["name"], s["path"], tuple(header_values(s["headers"], "X-Rules"))) for s in seen}
    assert by_name == {("a", "/a/same", ("a",)), ("b", "/same", ("b",))}


def test_a_request_redispatched_to_another_route_gets_that_routes_rules(ports):
    """The dead route's rules are not applied to a request its failed target handed to the live route."""
    for _ in range(6):
        seen = get(ports["fallback"], "/x/kept").json()
        assert (seen["name"], seen["path"], header_values(seen["headers"], "X-Rules")) == ("b", "/x/kept", [])


def test_a_route_without_rules_forwards_as_before(ports):
    seen = get(ports["plain"], "/api/v1/x?q", headers=[("X-Debug", "1")]).json()
    assert seen["path"] == "/api/v1/x" and header_values(seen["headers"], "X-Debug") == ["1"]


# -- configuration --------------------------------------------------------------------------------------------
def load_route(**fields) -> model.Route:
    document = config({"g": gateway(8080, {"r": route("127.0.0.1:9", **fields)})})
    loaded = from_dict(document)
    assert from_dict(to_dict(loaded)) == loaded
    return loaded.gateways[0].routes[0]


def refusal(**fields) -> str:
    with pytest.raises(ConfigError) as caught:
        load_route(**fields)
    return str(caught.value)


def test_the_rules_load_and_round_trip():
    loaded = load_route(strip_prefix="/api", rewrite=API_REWRITE, request_headers=REQUEST_RULES,
                        response_headers={"remove": ["Server"], "add": {"X-Version-Number": 2}})
    assert loaded.strip_prefix == "/api"
    assert loaded.rewrite == model.PathRewrite(r"^/api/v(\d+)/(.*)", r"/\2/version/\1")
    assert loaded.request_headers == model.HeaderRules(set=(("X-Env", "canary"), ("Host", "backend.internal")),
                                                       add=(("X-Tag", "added"),), remove=("X-Debug",))
    assert loaded.response_headers == model.HeaderRules(add=(("X-Version-Number", "2"),), remove=("Server",))


def test_no_rules_and_empty_rules_are_none_and_stay_out_of_the_document():
    assert load_route(request_headers={}, response_headers={"set": {}, "remove": []}).request_headers is None
    body = to_dict(from_dict(config({"g": gateway(8080, {"r": route("127.0.0.1:9", request_headers={})})})))
    assert set(body["gateways"]["g"]["routes"]["r"]) == {"targets", "drain"}


@pytest.mark.parametrize("fields, expected", [
    ({"rewrite": {"path": {"regex": "^/api/(.*", "replace": "/"}}},
     "field 'rewrite.path.regex': invalid regular expression: missing ) at position 6"),
    ({"rewrite": {"path": {"regex": "^/(?!admin)", "replace": "/"}}},
     "field 'rewrite.path.regex': invalid regular expression: lookaround '(?!' is not supported"),
    ({"rewrite": {"path": {"regex": "^/(a)", "replace": r"/x/\2"}}},
     r"field 'rewrite.path.replace': \2 names group 2, but the regex has 1 group at position 3"),
    ({"rewrite": {"path": {"regex": "^/", "replace": "/a b"}}},
     "field 'rewrite.path.replace': a replacement may hold only path characters, not ' ' at position 2"),
    ({"rewrite": {"path": {"regex": "^/", "replace": "/a?b=1"}}},
     "(the query string is kept as it came) at position 2"),
    ({"rewrite": {"path": {"regex": "^/", "replace": "x/"}}}, "begins with '/' or with a group"),
    ({"rewrite": {"path": {"regex": "^/", "replace": r"/\x"}}}, "a backslash starts"),
    ({"rewrite": {"path": {"regex": "^/"}}}, "field 'rewrite.path.replace': required field missing"),
    ({"rewrite": {"path": {"regex": "^/", "replace": "/", "flags": "i"}}}, "field 'rewrite.path.flags'"),
    ({"rewrite": {"host": "x"}}, "field 'rewrite.host'"),
    ({"strip_prefix": "/api/"}, "field 'strip_prefix': a prefix ends at a segment boundary"),
    ({"strip_prefix": "api"}, "field 'strip_prefix': expected a path prefix like /api"),
    ({"strip_prefix": "/a%zz"}, "'%' must start a percent-encoding like %2F at position 2"),
    ({"request_headers": {"set": {"Content-Length": "1"}}}, "field 'request_headers.set.Content-Length'"),
    ({"request_headers": {"remove": ["Transfer-Encoding"]}}, "field 'request_headers.remove[0]'"),
    ({"response_headers": {"add": {"Connection": "close"}}}, "field 'response_headers.add.Connection'"),
    ({"response_headers": {"add": {"Proxy-Authenticate": "x"}}}, "field 'response_headers.add.Proxy-Authenticate'"),
    ({"request_headers": {"set": {"X-Forwarded-For": "1.2.3.4"}}}, "the gateway adds or acts on it itself"),
    ({"request_headers": {"remove": ["Host"]}}, "it may be set, not added or removed"),
    ({"request_headers": {"set": {"Host": "a b"}}}, "expected a host[:port] for Host"),
    ({"request_headers": {"set": {"X A": "1"}}}, "'X A' is not a header name"),
    ({"request_headers": {"set": {"X-A": "1\r\nX-B: 2"}}}, "control character U+000D at position 1"),
    ({"request_headers": {"set": {"X-A": "a\x00"}}}, "control character U+0000 at position 1"),
    ({"request_headers": {"set": {"X-A": " a"}}}, "cannot begin or end with whitespace"),
    ({"request_headers": {"set": {"X-A": True}}}, "expected the header's value as text"),
    ({"request_headers": {"set": {"X-A": "1"}, "add": {"x-a": "2"}}}, "x-a is named twice (in set and add)"),
    ({"response_headers": {"replace": {"X-A": "1"}}}, "field 'response_headers.replace'"),
    ({"request_headers": {"set": ["X-A"]}}, "field 'request_headers.set': expected a mapping of header names"),
    ({"request_headers": {"remove": "X-A"}}, "field 'request_headers.remove': expected a list of header names"),
])
def test_invalid_rules_are_refused_with_the_field_and_position(fields, expected):
    assert expected in refusal(**fields)


def test_a_fault_in_yaml_text_names_the_route_field_and_line():
    text = """
gateways:
  g:
    port: 8080
    routes:
      api:
        targets: [127.0.0.1:9]
        rewrite:
          path: {regex: "^/api/(?P=x)", replace: "/"}
"""
    with pytest.raises(ConfigError) as caught:
        load_text(text)
    message = str(caught.value)
    assert message.startswith("gateway 'g', route 'api', field 'rewrite.path.regex': invalid regular expression")
    assert "at position 6" in message and message.endswith("(line 9)")


def test_a_tcp_gateway_has_no_rules():
    document = config({"t": gateway(9000, {"r": route("127.0.0.1:9", strip_prefix="/api")}, )})
    document["gateways"]["t"]["port"] = "9000/tcp"
    with pytest.raises(ConfigError, match="field 'strip_prefix': a tcp gateway cannot have strip_prefix"):
        from_dict(document)


# -- the compiled rules ---------------------------------------------------------------------------------------
def rules_of(**fields):
    return compile_rules(load_route(**fields))


def forwarded(raw: bytes) -> bytes:
    """A request head as the gateway hands it to the rules: its lines without a connection's X-Forwarded-* ones,
    and without the request id line and the empty line that follow."""
    return read_request_head(raw).forward


def test_a_route_without_rules_compiles_to_none():
    assert compile_rules(model.Route("r", 10_000)) == (None, None)
    request, response = rules_of(response_headers={"add": {"X-A": "1"}})
    assert request is None and response is not None


@pytest.mark.parametrize("regex, replace", [
    ("x*", r"/\0"), ("a|", r"/\0"), ("(a)(b)?", r"/\2\1"), ("/", "/"), ("^/(.*)$", r"/p/\1"), ("[0-9]+", r"/n\0"),
])
@pytest.mark.parametrize("path", ["/abc", "/xa", "/axxb", "/aab", "/", "/a1/b22/c333"])
def test_every_match_is_replaced_as_pythons_re_sub_does(regex, replace, path):
    request, _ = rules_of(rewrite={"path": {"regex": regex, "replace": replace}})
    expected = re.sub(regex, replace.replace("\\0", "\\g<0>"), path)
    expected = expected if expected.startswith("/") else "/" + expected
    head = request.head(forwarded(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % path.encode()))
    assert head.split(b" ")[1].decode() == expected


def test_an_unmatched_group_is_empty_and_a_result_without_slash_gets_one():
    request, _ = rules_of(rewrite={"path": {"regex": "^/api(/.*)?$", "replace": r"\1"}})
    assert request.path.target(b"/api") == b"/"
    assert request.path.target(b"/api/x?q") == b"/x?q"


def test_response_rules_keep_the_plain_head_and_framing():
    _, response = rules_of(response_headers={"set": {"Server": "vamp"}, "remove": ["X-Powered-By"]})
    raw = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nX-Powered-By: php\r\nserver: again\r\nContent-Length: 5\r\n\r\n"
    head = response.head(raw, read_head(raw))
    # (without the empty line: it follows the request id line, gateway.proxy.client)
    assert head.prefix == b"HTTP/1.1 200 OK\r\nServer: vamp\r\n"
    assert head.plain == b"HTTP/1.1 200 OK\r\nServer: vamp\r\nContent-Length: 5\r\n"
    assert response.head(raw, read_head(raw)) is head          # cached by the raw head
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    head = response.head(chunked, read_head(chunked))
    assert (head.chunked, head.plain, head.prefix) == (True, None, b"HTTP/1.1 200 OK\r\nServer: vamp\r\n")


def test_request_rules_are_cached_per_exact_head():
    request, _ = rules_of(strip_prefix="/api")
    head = forwarded(b"GET /api/x HTTP/1.1\r\nHost: t\r\n\r\n")
    first = request.head(head)
    assert request.head(bytes(head)) is first and first.startswith(b"GET /x HTTP/1.1\r\n")


# -- property: a rewritten head is still one valid request -----------------------------------------------------
PATH_CHARACTERS = "abcXYZ019-._~!$&'()*+,;=:@%"
segments = st.lists(st.text(alphabet=PATH_CHARACTERS.replace("%", ""), max_size=8)
                    | st.sampled_from(["%2F", "%20", "api", "v1", ""]), max_size=6)
queries = st.none() | st.text(alphabet=PATH_CHARACTERS.replace("%", "") + "=&/?", max_size=12)
RULES = [
    {"strip_prefix": "/api", "rewrite": {"path": {"regex": "^/v([0-9]+)/(.*)", "replace": r"/\2/v\1"}},
     "request_headers": {"set": {"Host": "backend:8080", "X-Env": "café"}, "add": {"Via": "1.1 vamp"},
                         "remove": ["Accept"]}},
    {"rewrite": {"path": {"regex": "a*", "replace": r"/\0"}}},
    {"rewrite": {"path": {"regex": "^/(.*)", "replace": r"\1"}}},
    {"strip_prefix": "/a"},
]


class OneRequest:
    """httptools callbacks, recording every request of what it is fed."""

    def __init__(self) -> None:
        self.urls: list[bytes] = []
        self.headers: list[list[tuple[bytes, bytes]]] = []
        self.complete = 0

    def on_message_begin(self) -> None:
        self.urls.append(b"")
        self.headers.append([])

    def on_url(self, url: bytes) -> None:
        self.urls[-1] += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[-1].append((name, value))

    def on_message_complete(self) -> None:
        self.complete += 1


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(range(len(RULES))), segments, queries)
def test_a_rewritten_head_is_one_valid_request_for_llhttp(rules_index, parts, query):
    request, _ = rules_of(**RULES[rules_index])
    url = "/" + "/".join(parts) + ("" if query is None else "?" + query)
    raw = b"GET %s HTTP/1.1\r\nHost: t\r\nAccept: */*\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n" % url.encode()
    head = request.head(forwarded(raw)) + b"\r\n"
    seen = OneRequest()
    httptools.HttpRequestParser(seen).feed_data(head)
    assert seen.complete == 1 and len(seen.urls) == 1
    sent = seen.urls[0]
    assert sent.startswith(b"/") and sent.partition(b"?")[2] == (b"" if query is None else query.encode())
    names = [name.lower() for name, _ in seen.headers[0]]
    assert names.count(b"host") == 1


class OneResponse(OneRequest):
    def on_status(self, status: bytes) -> None:
        pass


names = st.sampled_from(["Server", "X-A", "x-a", "X-B", "Set-Cookie", "Cache-Control"])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(names, st.text(alphabet="abc =;/1", max_size=6).map(str.strip)), max_size=6))
def test_a_response_head_with_rules_is_one_valid_response_with_the_rules_applied(lines):
    _, rules = rules_of(response_headers={"set": {"X-A": "set"}, "add": {"X-B": "added"}, "remove": ["Server"]})
    raw = b"HTTP/1.1 200 OK\r\n%sContent-Length: 2\r\n\r\n" % b"".join(
        b"%s: %s\r\n" % (name.encode(), value.encode()) for name, value in lines)
    head = rules.head(raw, read_head(raw))
    seen = OneResponse()
    httptools.HttpResponseParser(seen).feed_data(head.plain + b"\r\nok")
    assert seen.complete == 1
    received = [(name.decode(), value.decode()) for name, value in seen.headers[0]]
    kept = [(name, value) for name, value in lines if name.lower() not in ("server", "x-a")]
    assert received == kept + [("X-A", "set"), ("X-B", "added"), ("Content-Length", "2")]
