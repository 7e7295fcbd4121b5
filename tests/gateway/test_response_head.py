"""A backend's response head is read once from its raw bytes (gateway/proxy/response_head.py) instead of through
a parser callback per header. What the client gets must be what a reading through llhttp's own header callbacks
gives, for any head llhttp accepts, however the head is split across reads; the cache of readings stays
bounded and never mixes two heads up."""
from __future__ import annotations

import httptools
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.proxy import response_head
from gateway.proxy.response_head import CACHE_SIZE, read_head
from gateway.proxy.wire import HOP_BY_HOP, connection_named_headers
from tests.support.config import config, gateway, route
from tests.support.fake_transport import FakeGateway, parse_responses, without_request_ids

GET = b"GET /a HTTP/1.1\r\nHost: shop.example\r\n\r\n"


class CallbackReading:
    """The reference: a head as llhttp's per-header callbacks report it."""

    def __init__(self, raw: bytes) -> None:
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        parser = httptools.HttpResponseParser(self)
        parser.feed_data(raw)
        self.status = parser.get_status_code()

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def status_line(self) -> bytes:
        return b"HTTP/1.1 %d %s" % (self.status, self.reason)

    def end_to_end(self) -> list[tuple[bytes, bytes]]:
        """The headers a client gets, in order: hop-by-hop ones and those Connection names left out."""
        named: set[bytes] = set()
        for name, value in self.headers:
            if name.lower() == b"connection":
                named |= connection_named_headers(value) or set()
        return [(n, v) for n, v in self.headers if n.lower() not in HOP_BY_HOP and n.lower() not in named]

    def last(self, name: bytes) -> bytes | None:
        values = [v for n, v in self.headers if n.lower() == name]
        return values[-1] if values else None


def lines_of(prefix: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """A head's status line and its header lines as (name, value), values as llhttp reports them."""
    assert prefix.endswith(b"\r\n")
    status_line, *lines = prefix[:-2].split(b"\r\n")
    return status_line, [(name, value.lstrip(b" \t")) for name, _, value in (line.partition(b":") for line in lines)]

    def last(self, name: bytes) -> bytes | None:
        values = [v for n, v in self.headers if n.lower() == name]
        return values[-1] if values else None


token = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_!#$%&'*+.^`|~",
                min_size=1, max_size=12).map(str.encode)
value_text = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7e), max_size=20).map(str.encode)
header_value = st.tuples(st.sampled_from([b"", b" ", b"  ", b"\t"]), value_text,
                         st.sampled_from([b"", b" ", b" \t"])).map(lambda parts: b"".join(parts))
hop_name = st.sampled_from(sorted(HOP_BY_HOP - {b"content-length", b"transfer-encoding"}) + [b"X-Named", b"x-other"])
any_case = st.builds(lambda name, upper: name.upper() if upper else name, hop_name | token, st.booleans())
connection_value = st.lists(st.sampled_from([b"close", b"keep-alive", b"X-Named", b"x-other", b"upgrade"]),
                            min_size=1, max_size=3).map(b", ".join)


@st.composite
def response_heads(draw: st.DrawFn) -> bytes:
    status = draw(st.sampled_from([200, 201, 204, 301, 304, 404, 500, 503]))
    reason = draw(st.sampled_from([b"OK", b"", b"Very  Fine ", b"Not Found"]))
    lines = [b"HTTP/1.%d %d%s" % (draw(st.sampled_from([0, 1])), status, b" " + reason if reason or
                                   draw(st.booleans()) else b"")]
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["plain", "hop", "connection"]))
        name = draw(token) if kind == "plain" else draw(any_case) if kind == "hop" else b"Connection"
        value = draw(connection_value) if kind == "connection" else draw(header_value)
        lines.append(b"%s:%s" % (name, value))
    framing = draw(st.sampled_from(["length", "chunked", "none", "gzip"]))
    if framing == "length":
        lines.append(b"Content-Length: %d" % draw(st.integers(0, 10**6)))
    elif framing == "chunked":
        lines.append(b"Transfer-Encoding: chunked")
    elif framing == "gzip":
        lines.append(b"Transfer-Encoding: gzip, chunked")
    return b"\r\n".join(lines) + b"\r\n\r\n"


@settings(max_examples=400, deadline=None)
@given(response_heads())
def test_a_head_reads_as_llhttps_header_callbacks_report_it(raw):
    try:
        reference = CallbackReading(raw)
    except httptools.HttpParserError:
        return                                   # llhttp refuses it: never read
    head = read_head(raw)
    assert head.status == reference.status
    assert lines_of(head.prefix) == (reference.status_line(), reference.end_to_end())
    assert head.content_length == reference.last(b"content-length")
    coding = reference.last(b"transfer-encoding")
    assert head.chunked == (coding is not None)
    assert head.bad_coding == (coding is not None and coding.strip().lower() != b"chunked")
    assert head.upgrade == reference.last(b"upgrade")
    assert read_head(raw) is head or len(raw) > response_head.CACHE_HEAD_BYTES


def test_the_cache_of_readings_stays_bounded_and_keeps_each_head_its_own():
    heads = [b"HTTP/1.1 200 OK\r\nX-Request: %d\r\nContent-Length: 0\r\n\r\n" % i for i in range(CACHE_SIZE * 3)]
    for raw in heads:
        assert read_head(raw).prefix == raw[:-len(b"Content-Length: 0\r\n\r\n")]
        assert len(response_head._cache) <= CACHE_SIZE
    assert read_head(heads[5]).prefix.endswith(b"X-Request: 5\r\n")


# -- through the proxy -----------------------------------------------------------------------------------------

RESPONSES = [
    b"HTTP/1.1 200 OK\r\nServer: one\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\nContent-Length: 5\r\n"
    b"\r\nhello",
    b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nKeep-Alive: timeout=5\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
]


async def answered(pieces: list[bytes]) -> bytes:
    gw = FakeGateway(config({"shop": gateway(8080, {"stable": route("127.0.0.1:9001", weight="100%")})}))
    client = gw.client()
    client.send(GET)
    await gw.settle()
    backend = gw.backend()
    for piece in pieces:
        backend.respond(piece)
    return without_request_ids(client.received)        # (each request has an id of its own)


@pytest.mark.parametrize("response", RESPONSES)
async def test_a_response_head_split_anywhere_across_reads_reaches_the_client_the_same(response):
    whole = await answered([response])
    [parsed] = parse_responses(whole)
    assert parsed.body == b"hello"
    assert parsed.header("x-secret") is None and parsed.header("keep-alive") is None
    head_end = response.rindex(b"\r\n\r\n", 0, response.index(b"hello")) + 4
    for cut in range(1, head_end):
        assert await answered([response[:cut], response[cut:]]) == whole, f"split at byte {cut}"


async def test_a_response_head_without_end_is_a_502_not_a_buffer_without_bound():
    gw = FakeGateway(config({"shop": gateway(8080, {"stable": route("127.0.0.1:9001", weight="100%")})}))
    client = gw.client()
    client.send(GET)
    await gw.settle()
    backend = gw.backend()
    backend.respond(b"HTTP/1.1 200 OK\r\n")
    for _ in range(80):
        if backend.closed or backend.aborted:
            break
        backend.respond(b"X-Filler: " + b"x" * 1000 + b"\r\n")
    [parsed] = parse_responses(client.received)
    assert parsed.status == 502
    assert backend.closed or backend.aborted
