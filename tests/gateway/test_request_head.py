"""A client's request head is read once from its raw bytes (gateway/proxy/request_head.py), found in the stream by
where the previous request ended; after a chunked request (whose end llhttp does not report) a parser with header
callbacks follows the connection until a read begins at a request boundary. What a backend gets must be the
same however the client's bytes are cut into reads, and the reading must be what llhttp's own callbacks report."""
from __future__ import annotations

import httptools
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.proxy import request_head
from gateway.proxy.request_head import CACHE_SIZE, read_request_head
from gateway.proxy.wire import HOP_BY_HOP, MAX_HEAD_BYTES
from tests.support.config import config, gateway, route
from tests.support.fake_transport import FakeGateway, parse_requests, without_request_ids

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
PICKED_OUT = {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"expect"}


class CallbackReading:
    """The reference: a head as llhttp's callbacks report it."""

    def __init__(self, raw: bytes) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.parser = httptools.HttpRequestParser(self)
        try:
            self.parser.feed_data(raw)
        except httptools.HttpParserUpgrade:
            pass                                   # an upgrade request: llhttp stops after its head

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()       # (llhttp forgets it once the message is over)

    def values(self, name: bytes) -> list[bytes]:
        return [v for n, v in self.headers if n.lower() == name]


token = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_!#$%&'*+.^`|~",
                min_size=1, max_size=10).map(str.encode).filter(
                    lambda name: name.lower() != b"expect")    # (a random value is a 417: tested below)
value_text = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7e), max_size=16).map(str.encode)
header_value = st.tuples(st.sampled_from([b"", b" ", b"\t "]), value_text,
                         st.sampled_from([b"", b" ", b"\t"])).map(b"".join)
known = st.sampled_from([b"Host", b"user-agent", b"X-Forwarded-For", b"x-forwarded-proto", b"X-Forwarded-Host",
                         b"Keep-Alive", b"TE", b"Upgrade", b"Proxy-Connection", b"Cookie", b"Accept"])


@st.composite
def request_heads(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from([b"GET", b"POST", b"HEAD", b"DELETE"]))
    target = draw(st.sampled_from([b"/", b"/a/b?x=1", b"http://shop.example:8080/p", b"*", b"//x"]))
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0"]))
    lines = [b"%s%s%s %s" % (method, draw(st.sampled_from([b" ", b"  "])), target, version)]
    for _ in range(draw(st.integers(0, 7))):
        name = draw(known | token)
        lines.append(b"%s:%s" % (name, draw(header_value)))
    if draw(st.booleans()):
        lines.append(b"Connection: " + draw(st.sampled_from([b"close", b"keep-alive", b"Cookie, x-a", b"te",
                                                              b"Keep-Alive, x-a", b"x-a,CLOSE", b"upgrade, close",
                                                              b"keep-alive ,  close", b"closed", b"Close"])))
    framing = draw(st.sampled_from(["none", "length", "chunked"]))
    if framing == "length":
        lines.append(b"Content-Length: %d" % draw(st.integers(0, 99)))
    elif framing == "chunked":
        lines.append(b"Transfer-Encoding: chunked")
    return b"\r\n".join(lines) + b"\r\n\r\n"


@settings(max_examples=400, deadline=None)
@given(request_heads())
def test_a_head_reads_as_llhttps_callbacks_report_it(raw):
    try:
        reference = CallbackReading(raw)
    except httptools.HttpParserError:
        return                                     # llhttp refuses it: never read
    head = read_request_head(raw)
    hosts = reference.values(b"host")
    version = reference.parser.get_http_version()
    if len(hosts) > 1:
        assert head.error == (400, "more than one Host header")
        return
    if not hosts and version == "1.1":
        assert head.error == (400, "missing Host header")
        return
    if version == "1.0" and reference.values(b"transfer-encoding"):
        assert head.error == (400, "Transfer-Encoding in an HTTP/1.0 request")
        return
    absolute = reference.url.startswith(b"http://")
    if not reference.url.startswith(b"/") and reference.url != b"*" and not absolute:
        assert head.error is not None and head.error[0] == 400
        return
    assert head.error is None
    assert head.method == reference.parser.get_method()
    assert head.keep_alive == reference.keep_alive
    assert head.http10 == (version == "1.0")
    named = set()
    for value in reference.values(b"connection"):
        named |= {t.strip().lower() for t in value.split(b",")} - {b"close", b"keep-alive", b"upgrade", b""}
    expected = [(n, v) for n, v in reference.headers if n.lower() not in HOP_BY_HOP | PICKED_OUT]
    if absolute:
        assert head.url == b"/p" and head.host == b"shop.example:8080"
        expected = [(b"Host", b"shop.example:8080")] + [(n, v) for n, v in expected if n.lower() != b"host"]
    else:
        assert head.url == reference.url and head.host == (hosts[0] if hosts else b"")
    assert head.headers == expected
    assert head.user_agent == (reference.values(b"user-agent") or [b""])[-1]
    xff = reference.values(b"x-forwarded-for")
    assert head.forwarded_for == (b", ".join(xff) if xff else None)
    sent = head.forward.split(b"\r\n")
    assert sent[0] == b"%s %s HTTP/1.1" % (head.method, head.url)
    assert [tuple(line.split(b": ", 1)) for line in sent[1:] if line and not line.startswith(
        (b"Content-Length", b"Transfer-Encoding"))] == [h for h in expected if h[0].lower() not in named]
    assert head.chunked == bool(reference.values(b"transfer-encoding"))


def test_the_cache_of_readings_stays_bounded_and_keeps_each_head_its_own():
    heads = [b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n" % i for i in range(CACHE_SIZE * 3)]
    for i, raw in enumerate(heads):
        assert read_request_head(raw).url == b"/%d" % i
        assert len(request_head._cache) <= CACHE_SIZE


# -- through the proxy -----------------------------------------------------------------------------------------

STREAMS = {
    "pipelined GETs": b"GET /1 HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: a\r\n\r\n"
                      b"GET /2 HTTP/1.1\r\nHost: shop.example\r\nCookie: c=1\r\n\r\n",
    "a body of known length, then a GET": b"POST /up HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 5\r\n\r\nhello"
                                          b"GET /after HTTP/1.1\r\nHost: shop.example\r\n\r\n",
    "a chunked body, then two GETs": b"POST /up HTTP/1.1\r\nHost: shop.example\r\nTransfer-Encoding: chunked\r\n\r\n"
                                     b"5;x=y\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n"
                                     b"GET /next HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: b\r\n\r\n"
                                     b"GET /last HTTP/1.1\r\nHost: shop.example\r\n\r\n",
    "a chunked body, an upgrade the backend declines, a GET":
        b"POST /up HTTP/1.1\r\nHost: shop.example\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
        b"GET /ws HTTP/1.1\r\nHost: shop.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        b"GET /then HTTP/1.1\r\nHost: shop.example\r\n\r\n",
    "two chunked bodies": b"PUT /1 HTTP/1.1\r\nHost: shop.example\r\nTransfer-Encoding: chunked\r\n\r\n"
                          b"3\r\none\r\n0\r\n\r\n"
                          b"PUT /2 HTTP/1.1\r\nHost: shop.example\r\nTransfer-Encoding: chunked\r\n\r\n"
                          b"3\r\ntwo\r\n0\r\n\r\n"
                          b"GET /3 HTTP/1.1\r\nHost: shop.example\r\n\r\n",
}


async def forwarded(pieces: list[bytes]) -> tuple[list[tuple[str, str, list, bytes]], bytes]:
    """What the backend got (method, target, headers, body of each request) and what the client got back,
    when the client's bytes arrive in `pieces`, each request answered in turn."""
    gw = FakeGateway(config({"shop": gateway(8080, {"stable": route("127.0.0.1:9001", weight="100%")})}))
    client = gw.client()
    for piece in pieces:
        client.send(piece)
        await gw.settle()
    for responded in range(10):                 # answer requests as they reach the backend, one at a time
        if len(parse_requests(b"".join(b.received for b in gw.backends))) == responded:
            break
        gw.backend().respond(OK)
        await gw.settle()
    requests = parse_requests(b"".join(b.received for b in gw.backends))
    assert all(len(r.header_values("x-request-id")) == 1 for r in requests)    # each its own (not compared)
    return ([(r.method, r.target, [h for h in r.headers if h[0] != "x-request-id"], r.body) for r in requests],
            without_request_ids(client.received))


@pytest.mark.parametrize("name", sorted(STREAMS))
async def test_requests_reach_the_backend_the_same_however_the_client_cuts_them(name):
    stream = STREAMS[name]
    whole, answers = await forwarded([stream])
    assert len(whole) == stream.count(b" HTTP/1.1\r\n")
    assert answers.count(b"HTTP/1.1 200 OK") == len(whole)
    for cut in range(1, len(stream)):
        assert await forwarded([stream[:cut], stream[cut:]]) == (whole, answers), f"cut at byte {cut}"
    thirds = [stream[i:i + 7] for i in range(0, len(stream), 7)]
    assert await forwarded(thirds) == (whole, answers)


async def test_a_head_growing_past_the_limit_over_many_reads_gets_431():
    gw = FakeGateway(config({"shop": gateway(8080, {"stable": route("127.0.0.1:9001", weight="100%")})}))
    client = gw.client()
    client.send(b"GET / HTTP/1.1\r\nHost: shop.example\r\n")
    line = b"X-Filler: " + b"x" * 990 + b"\r\n"
    for _ in range(MAX_HEAD_BYTES // len(line) + 2):
        if client.closed:
            break
        client.send(line)
    assert client.received.startswith(b"HTTP/1.1 431 ")
    assert client.closed and not gw.backends


async def test_a_request_line_growing_past_the_limit_over_many_reads_gets_414():
    gw = FakeGateway(config({"shop": gateway(8080, {"stable": route("127.0.0.1:9001", weight="100%")})}))
    client = gw.client()
    client.send(b"GET /")
    for _ in range(MAX_HEAD_BYTES // 1000 + 2):
        if client.closed:
            break
        client.send(b"a" * 1000)
    assert client.received.startswith(b"HTTP/1.1 414 ")
    assert client.closed and not gw.backends


async def test_each_connection_gets_its_own_forwarded_for_even_for_the_same_head():
    gw = FakeGateway(config({"shop": gateway(8080, {"stable": route("127.0.0.1:9001", weight="100%")})}))
    head = b"GET / HTTP/1.1\r\nHost: shop.example\r\n\r\n"
    for peer in ("192.0.2.1", "192.0.2.2", "192.0.2.1"):
        client = gw.client(peer=(peer, 4000))
        client.send(head)
        await gw.settle()
        [request] = parse_requests(gw.backend().take())
        assert request.header("x-forwarded-for") == peer
        gw.backend().respond(OK)
        await gw.settle()
        assert client.received.endswith(b"ok")


async def test_each_request_of_a_connection_is_routed_by_its_own_head_when_heads_repeat_and_change():
    """A connection keeps what routing saw of its last head for the next identical one; a different head, on the
    same connection, is seen afresh."""
    gw = FakeGateway(config({"shop": gateway(8080, {
        "stable": route("127.0.0.1:9001", weight="50%", condition="not cookie beta = yes"),
        "beta": route("127.0.0.1:9002", weight="50%", condition="cookie beta = yes")})}))
    client = gw.client()
    plain = b"GET / HTTP/1.1\r\nHost: shop.example\r\n\r\n"
    beta = b"GET / HTTP/1.1\r\nHost: shop.example\r\nCookie: beta=yes\r\n\r\n"
    for head, expected in [(beta, "127.0.0.1:9002"), (beta, "127.0.0.1:9002"), (plain, "127.0.0.1:9001"),
                           (plain, "127.0.0.1:9001"), (beta, "127.0.0.1:9002"), (plain, "127.0.0.1:9001")]:
        client.send(head)
        await gw.settle()
        backend = next(b for b in reversed(gw.backends) if b.address == expected)
        assert parse_requests(backend.take()), f"{head!r} did not reach {expected}"
        backend.respond(OK)
        await gw.settle()


def test_an_expect_other_than_100_continue_is_a_417_and_100_continue_is_read_in_any_case():
    refused = read_request_head(b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\n")
    assert refused.error == (417, "unsupported Expect")
    accepted = read_request_head(b"POST / HTTP/1.1\r\nHost: x\r\nexpect: 100-Continue\r\nContent-Length: 1\r\n\r\n")
    assert accepted.error is None and accepted.expect_continue
