"""The client and upstream protocols of the hot path, driven over fake transports (tests/support/fake_transport):
no sockets, no processes. What a test sees is what reaches each peer and what the proxy calls on its
transports: framing both ways, the request head the backend gets, malformed input, pipelining, flow control,
upgrades, keep-alive reuse, and how an exchange ends (complete, timed out, reset)."""
from __future__ import annotations

import pytest

from tests.support.config import config, gateway, route
from tests.support.fake_transport import (CLIENT_PEER, FakeGateway, parse_requests, parse_responses,
                                         without_request_ids)
from tests.support.http import BrokenResponse

PORT = 8080
TARGET = "127.0.0.1:9001"
OTHER_TARGET = "127.0.0.1:9002"
QUEUE_LIMIT = 32                  # pipelined requests read ahead of the one in flight before reading pauses

GET = b"GET /a HTTP/1.1\r\nHost: shop.example\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"


def get(path: str) -> bytes:
    return b"GET %s HTTP/1.1\r\nHost: shop.example\r\n\r\n" % path.encode()


def ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def shop(*targets: str, **fields) -> dict:
    return config({"shop": gateway(PORT, {"stable": route(*(targets or (TARGET,)), weight="100%")}, **fields)})


@pytest.fixture
async def gw():
    return FakeGateway(shop())


async def request(gw: FakeGateway, data: bytes = GET):
    """A client that sent `data`, and the backend connection it reached."""
    client = gw.client()
    client.send(data)
    await gw.settle()
    return client, gw.backend()


def decode_chunked(body: bytes) -> bytes:
    """The payload of a complete chunked body (asserting it is well framed and ends with the last chunk)."""
    payload = b""
    while True:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            assert body == b"\r\n", f"trailers or garbage after the last chunk: {body!r}"
            return payload
        payload += body[:size]
        assert body[size:size + 2] == b"\r\n"
        body = body[size + 2:]


def head_and_body(data: bytes) -> tuple[bytes, bytes]:
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, f"no complete head in {data!r}"
    return head + b"\r\n", body


def header_names(head: bytes) -> list[bytes]:
    return [line.split(b":", 1)[0].lower() for line in head.split(b"\r\n")[1:] if line]


# -- framing -----------------------------------------------------------------------------------------------

async def test_a_response_with_content_length_reaches_the_client_whole_and_keeps_the_connection(gw):
    client, backend = await request(gw)
    backend.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nX-Served-By: one\r\n\r\nhello")
    backend.respond(b" world")
    [response] = parse_responses(client.received)
    assert response.status == 200
    assert response.header("content-length") == "11"
    assert response.header("x-served-by") == "one"
    assert response.body == b"hello world"
    assert response.header("transfer-encoding") is None
    assert not client.closed


async def test_a_chunked_request_body_is_rechunked_for_the_backend(gw):
    client, backend = await request(gw, b"POST /up HTTP/1.1\r\nHost: shop.example\r\nTransfer-Encoding: chunked\r\n"
                                        b"\r\n5;ext=1\r\nhello\r\n")
    client.send(b"6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")
    head, body = head_and_body(backend.received)
    assert b"Transfer-Encoding: chunked\r\n" in head
    assert b"content-length" not in header_names(head)
    assert b"ext=1" not in body and b"X-Trailer" not in body        # extensions and trailers are not forwarded
    assert decode_chunked(body) == b"hello world"


async def test_a_chunked_response_is_rechunked_for_an_http11_client(gw):
    client, backend = await request(gw)
    backend.respond(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=x\r\nhello\r\n")
    backend.respond(b"6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")
    head, body = head_and_body(client.received)
    assert b"Transfer-Encoding: chunked\r\n" in head
    assert decode_chunked(body) == b"hello world"
    assert b"ext=x" not in body and b"X-Trailer" not in body
    assert not client.closed


async def test_a_chunked_response_to_an_http10_client_is_delimited_by_the_close(gw):
    client, backend = await request(gw, b"GET /a HTTP/1.0\r\nHost: shop.example\r\n\r\n")
    backend.respond(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    head, body = head_and_body(client.received)
    assert b"transfer-encoding" not in header_names(head)
    assert b"Connection: close\r\n" in head
    assert body == b"hello"
    assert client.closed


@pytest.mark.parametrize("method, answer, length", [
    ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", "1234"),
    ("GET", b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 1234\r\n\r\n", "1234"),
    ("GET", b"HTTP/1.1 204 No Content\r\nContent-Length: 1234\r\n\r\n", None),
])
async def test_a_bodiless_answer_with_a_length_ends_at_its_head_and_the_next_request_follows(gw, method, answer,
                                                                                           length):
    head = b"%s /a HTTP/1.1\r\nHost: shop.example\r\n\r\n" % method.encode()
    client, backend = await request(gw, head + get("/next"))
    backend.respond(answer)
    # the exchange is over at the head: the pipelined request goes out on the same connection
    assert [r.target for r in parse_requests(backend.received)] == ["/a", "/next"]
    backend.respond(OK)
    first, second = parse_responses(client.received, (method, "GET"))
    assert first.header("content-length") == length
    assert first.body == b""
    assert second.body == b"hello"
    assert len(gw.backends) == 1


async def test_informational_responses_reach_an_http11_client_before_the_final_one(gw):
    client, backend = await request(gw)
    backend.respond(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n" + OK)
    [response] = parse_responses(client.received)
    assert response.informational == [103]
    assert response.body == b"hello"
    assert client.received.startswith(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n")


async def test_informational_responses_are_not_sent_to_an_http10_client(gw):
    client, backend = await request(gw, b"GET /a HTTP/1.0\r\nHost: shop.example\r\n\r\n")
    backend.respond(b"HTTP/1.1 103 Early Hints\r\n\r\n" + OK)
    assert client.received.startswith(b"HTTP/1.1 200 OK\r\n")


async def test_expect_100_continue_is_answered_by_the_gateway_once(gw):
    client, backend = await request(gw, b"PUT /up HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 5\r\n"
                                        b"Expect: 100-continue\r\n\r\n")
    assert client.take() == b"HTTP/1.1 100 Continue\r\n\r\n"
    head, _ = head_and_body(backend.received)
    assert b"expect" not in header_names(head)
    client.send(b"hello")
    assert parse_requests(backend.received)[0].body == b"hello"
    backend.respond(b"HTTP/1.1 100 Continue\r\n\r\n" + OK)     # the backend's own 100 is not repeated
    assert client.take().startswith(b"HTTP/1.1 200 OK\r\n")


@pytest.mark.parametrize("version", ["1.1", "1.0"])
async def test_a_close_delimited_response_is_complete_when_the_backend_closes(gw, version):
    client, backend = await request(gw, b"GET /a HTTP/%s\r\nHost: shop.example\r\n\r\n" % version.encode())
    backend.respond(b"HTTP/1.1 200 OK\r\nX-Kind: stream\r\n\r\nhel")
    backend.respond(b"lo")
    backend.close()
    head, body = head_and_body(client.received)
    if version == "1.1":        # re-framed as chunked: the client keeps its connection
        assert b"Transfer-Encoding: chunked\r\n" in head
        assert decode_chunked(body) == b"hello"
        assert not client.closed
    else:                       # an HTTP/1.0 client reads to the close
        assert b"transfer-encoding" not in header_names(head)
        assert body == b"hello"
        assert client.closed
    [response] = parse_responses(client.received, closed=client.closed)
    assert response.body == b"hello"


async def test_a_response_cut_short_is_never_completed_for_the_client(gw):
    client, backend = await request(gw)
    backend.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
    backend.reset()
    assert client.aborted
    with pytest.raises(BrokenResponse):
        parse_responses(client.received, closed=True)


# -- the request head the backend gets -------------------------------------------------------------------

async def test_hop_by_hop_and_connection_named_headers_are_stripped(gw):
    _, backend = await request(gw, b"GET /a HTTP/1.1\r\nHost: shop.example\r\nConnection: keep-alive, X-Secret\r\n"
                                   b"Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\n"
                                   b"Trailer: X-T\r\nUpgrade: h2c\r\nX-Secret: s3cr3t\r\nX-Kept: yes\r\n\r\n")
    [forwarded] = parse_requests(backend.received)
    names = {name for name, _ in forwarded.headers}
    assert not names & {"connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade", "x-secret"}
    assert forwarded.header("x-kept") == "yes"
    assert forwarded.header("host") == "shop.example"


async def test_forwarded_headers_are_added_and_those_of_an_untrusted_peer_are_replaced(gw):
    _, backend = await request(gw, b"GET /a HTTP/1.1\r\nHost: shop.example\r\nX-Forwarded-For: 203.0.113.9\r\n"
                                   b"X-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.example\r\n\r\n")
    [forwarded] = parse_requests(backend.received)
    assert forwarded.header_values("x-forwarded-for") == [f"203.0.113.9, {CLIENT_PEER[0]}"]
    assert forwarded.header_values("x-forwarded-proto") == ["http"]
    assert forwarded.header_values("x-forwarded-host") == ["shop.example"]


async def test_a_trusted_peers_forwarded_headers_are_kept():
    gw = FakeGateway(shop(), trusted=(CLIENT_PEER[0],))
    _, backend = await request(gw, b"GET /a HTTP/1.1\r\nHost: shop.example\r\nX-Forwarded-For: 203.0.113.9\r\n"
                                   b"X-Forwarded-Proto: https\r\nX-Forwarded-Host: www.example\r\n\r\n")
    [forwarded] = parse_requests(backend.received)
    assert forwarded.header_values("x-forwarded-proto") == ["https"]
    assert forwarded.header_values("x-forwarded-host") == ["www.example"]


async def test_an_http10_request_without_host_is_sent_as_http11_with_the_targets_address(gw):
    _, backend = await request(gw, b"GET /old HTTP/1.0\r\nAccept: */*\r\n\r\n")
    assert backend.received.startswith(b"GET /old HTTP/1.1\r\nHost: %s\r\n" % TARGET.encode())
    [forwarded] = parse_requests(backend.received)
    assert forwarded.header_values("host") == [TARGET]


async def test_a_request_body_of_known_length_goes_upstream_as_it_arrives(gw):
    client, backend = await request(gw, b"POST /up HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 10\r\n\r\nhello")
    assert backend.received.endswith(b"\r\n\r\nhello")
    client.send(b"world")
    [forwarded] = parse_requests(backend.received)
    assert forwarded.header("content-length") == "10"
    assert forwarded.body == b"helloworld"


# -- malformed input ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("data", [
    pytest.param(b"POST /a HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"0\r\n\r\n", id="content-length-and-chunked"),
    pytest.param(b"POST /a HTTP/1.1\r\nHost: shop.example\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n",
                 id="bad-chunk-size"),
    pytest.param(b"GET /a HTTP/1.1\r\nHost: shop.example\r\nHost: other.example\r\n\r\n", id="two-hosts"),
    pytest.param(b"GET /a HTTP/1.1\r\n\r\n", id="no-host"),
    pytest.param(b"GET /a HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 1x\r\n\r\n", id="bad-length"),
])
async def test_malformed_input_gets_400_and_nothing_reaches_a_backend(gw, data):
    client = gw.client()
    client.send(data)
    await gw.settle()
    [response] = parse_responses(client.received, closed=True)
    assert response.status == 400
    assert client.closed
    assert gw.connects == []


async def test_a_bad_chunk_after_the_request_went_upstream_aborts_both_connections(gw):
    client, backend = await request(gw, b"POST /a HTTP/1.1\r\nHost: shop.example\r\nTransfer-Encoding: chunked\r\n\r\n"
                                        b"5\r\nhello\r\n")
    client.send(b"zz\r\nnope\r\n")
    assert backend.aborted and client.aborted
    assert b"nope" not in backend.received


async def test_malformed_input_behind_a_good_request_is_answered_after_it(gw):
    client, backend = await request(gw, GET + b"GET /b HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
    assert len(parse_requests(backend.received)) == 1
    assert client.received == b""
    backend.respond(OK)
    first, second = parse_responses(client.received, ("GET", "GET"))
    assert (first.status, second.status) == (200, 400)
    assert client.closed
    assert len(parse_requests(backend.received)) == 1


# -- pipelining --------------------------------------------------------------------------------------------

async def test_pipelined_requests_go_upstream_one_at_a_time_and_are_answered_in_order(gw):
    client, backend = await request(gw, get("/1") + get("/2") + get("/3"))
    assert [r.target for r in parse_requests(backend.received)] == ["/1"]
    for n in (1, 2, 3):
        assert [r.target for r in parse_requests(backend.received)][-1] == f"/{n}"
        backend.respond(ok(b"answer %d" % n))
    assert [r.body for r in parse_responses(client.received, ("GET",) * 3)] == [b"answer 1", b"answer 2", b"answer 3"]
    assert len(gw.backends) == 1


async def test_reading_pauses_with_32_requests_queued_and_resumes_as_answers_go_out(gw):
    client, backend = await request(gw, get("/0") + b"".join(get(f"/{n}") for n in range(1, QUEUE_LIMIT)))
    assert client.reading                                  # one in flight, 31 queued
    client.send(get(f"/{QUEUE_LIMIT}"))
    assert not client.reading                              # 32 queued
    backend.respond(OK)
    assert client.reading
    assert [r.target for r in parse_requests(backend.received)] == ["/0", "/1"]


async def test_a_read_beyond_the_pipeline_limit_is_held_and_served_after_the_answers(gw):
    count = QUEUE_LIMIT + 10
    client, backend = await request(gw, b"".join(get(f"/{n}") for n in range(count)))
    assert not client.reading
    for _ in range(count):
        backend.respond(OK)
    assert len(parse_responses(client.received, ("GET",) * count)) == count
    assert [r.target for r in parse_requests(backend.received)] == [f"/{n}" for n in range(count)]
    assert client.reading


async def test_a_request_body_queued_behind_another_pauses_reading_until_its_turn(gw):
    client, backend = await request(gw, GET + b"POST /b HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 8\r\n\r\n"
                                              b"half")
    assert not client.reading
    backend.respond(OK)
    assert client.reading
    client.send(b"more")
    assert parse_requests(backend.received)[1].body == b"halfmore"


# -- flow control ------------------------------------------------------------------------------------------

async def test_a_slow_client_pauses_reading_from_the_backend(gw):
    client, backend = await request(gw)
    backend.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 50000)
    assert backend.reading
    client.pause_writing()
    assert not backend.reading
    client.resume_writing()
    assert backend.reading
    backend.respond(b"x" * 50000)
    assert parse_responses(client.received)[0].body == b"x" * 100000


async def test_a_slow_backend_pauses_reading_the_request_body_from_the_client(gw):
    client, backend = await request(gw, b"POST /up HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 100000\r\n\r\n")
    client.send(b"x" * 50000)
    backend.pause_writing()
    assert not client.reading
    backend.resume_writing()
    assert client.reading
    client.send(b"x" * 50000)
    assert parse_requests(backend.received)[0].body == b"x" * 100000


async def test_a_backend_pause_ends_with_its_exchange(gw):
    client, backend = await request(gw, b"POST /up HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 5\r\n\r\n")
    backend.pause_writing()
    client.send(b"hello")
    backend.respond(OK)                   # answered without ever draining: the client is read again
    assert client.reading


# -- upgrade -----------------------------------------------------------------------------------------------

UPGRADE = (b"GET /ws HTTP/1.1\r\nHost: shop.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
SWITCHING = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
SMUGGLED = b"POST /smuggled HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 3\r\n\r\nbad"


async def test_bytes_after_an_upgrade_request_are_held_until_the_backend_answers(gw):
    client, backend = await request(gw, UPGRADE + b"early frame")
    [forwarded] = parse_requests(backend.received)
    assert forwarded.header("upgrade") == "websocket"
    assert b"early frame" not in backend.received
    assert not client.reading


async def test_after_a_101_bytes_pass_through_both_ways_untouched(gw):
    client, backend = await request(gw, UPGRADE + b"early frame")
    backend.take()
    backend.respond(SWITCHING + b"server first")
    head, rest = head_and_body(client.take())
    assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert {b"upgrade", b"connection", b"sec-websocket-accept"} <= set(header_names(head))
    assert rest == b"server first"
    assert backend.take() == b"early frame"
    assert client.reading
    client.send(b"\x81\x05hello GET / HTTP/1.1\r\n\r\n")
    assert backend.take() == b"\x81\x05hello GET / HTTP/1.1\r\n\r\n"
    backend.respond(b"\x81\x02ok")
    assert client.take() == b"\x81\x02ok"
    assert len(gw.backends) == 1


async def test_a_tunnel_passes_eof_and_close_on(gw):
    client, backend = await request(gw, UPGRADE)
    backend.respond(SWITCHING)
    assert client.eof() is True                 # half-close: the backend may still answer
    assert backend.transport.eof_written
    backend.respond(b"last words")
    assert client.received.endswith(b"last words")
    backend.close()
    assert client.closed


async def test_tunnel_flow_control_goes_both_ways(gw):
    client, backend = await request(gw, UPGRADE)
    backend.respond(SWITCHING)
    client.pause_writing()
    assert not backend.reading
    client.resume_writing()
    assert backend.reading
    backend.pause_writing()
    assert not client.reading
    backend.resume_writing()
    assert client.reading


async def test_a_refused_upgrade_makes_the_held_bytes_the_next_request(gw):
    client, backend = await request(gw, UPGRADE + get("/after"))
    backend.respond(b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\n\r\n")
    await gw.settle()
    assert client.reading
    [after] = [r for b in gw.backends for r in parse_requests(b.received) if r.target != "/ws"]
    assert after.target == "/after"
    gw.backend().respond(OK)
    first, second = parse_responses(client.received, ("GET", "GET"))
    assert (first.status, second.status) == (426, 200)


async def test_a_request_smuggled_behind_a_refused_upgrade_is_rejected_not_forwarded(gw):
    client, backend = await request(gw, UPGRADE + b"POST /smuggled HTTP/1.1\r\nHost: shop.example\r\n"
                                                  b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    backend.respond(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    await gw.settle()
    assert all(b"/smuggled" not in b.received for b in gw.backends)
    first, second = parse_responses(client.received, ("GET", "POST"), closed=client.closed)
    assert (first.status, second.status) == (400, 400)
    assert client.closed


# -- keep-alive and the exchange's end -----------------------------------------------------------------------

async def test_the_upstream_connection_is_reused_after_a_complete_response(gw):
    _, backend = await request(gw)
    backend.respond(OK)
    second_client, _ = await request(gw, get("/b"))
    assert len(gw.backends) == 1
    assert [r.target for r in parse_requests(backend.received)] == ["/a", "/b"]
    backend.respond(ok(b"again"))
    assert parse_responses(second_client.received)[0].body == b"again"


async def test_an_upstream_connection_is_not_reused_while_its_response_is_incomplete(gw):
    _, first = await request(gw)
    first.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
    _, second = await request(gw, get("/b"))
    assert second is not first
    assert [r.target for r in parse_requests(second.received)] == ["/b"]


async def test_a_backend_asking_to_close_is_not_reused(gw):
    first_client, first = await request(gw)
    first.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
    assert first.closed
    assert not first_client.closed                        # the client's connection is its own
    first_client.send(get("/b"))
    await gw.settle()
    assert len(gw.backends) == 2
    assert [r.target for r in parse_requests(gw.backend().received)] == ["/b"]


async def test_a_client_asking_to_close_is_closed_after_its_response(gw):
    client, backend = await request(gw, b"GET /a HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n")
    assert not client.closed
    backend.respond(OK)
    assert client.closed
    assert b"Connection: close\r\n" in client.received
    assert not backend.closed                             # the backend connection goes back to the pool


async def test_no_response_within_the_timeout_gets_504(gw):
    client, backend = await request(gw)
    gw.expire_responses(after=29.0)
    assert client.received == b""
    gw.expire_responses(after=31.0)
    [response] = parse_responses(client.received)
    assert response.status == 504
    assert backend.aborted


async def test_a_timeout_after_the_response_started_aborts_the_client(gw):
    client, backend = await request(gw)
    backend.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
    gw.expire_responses(after=31.0)
    assert client.aborted and backend.aborted
    assert b"504" not in client.received


async def test_a_backend_reset_before_any_response_byte_gets_502(gw):
    client, backend = await request(gw)
    backend.reset()
    [response] = parse_responses(client.received)
    assert response.status == 502
    assert gw.recorded == [502]


async def test_an_invalid_response_gets_502(gw):
    client, backend = await request(gw)
    backend.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: gzip\r\n\r\nhello")
    assert parse_responses(client.received)[0].status == 502
    assert backend.aborted


async def test_a_pooled_connection_found_dead_is_replaced_once_for_a_get(gw):
    client, first = await request(gw)
    first.respond(OK)
    client.send(get("/b"))
    first.reset()                                         # the backend had closed it meanwhile
    await gw.settle()
    assert len(gw.backends) == 2
    assert [r.target for r in parse_requests(gw.backend().received)] == ["/b"]
    gw.backend().respond(ok(b"second"))
    assert parse_responses(client.received, ("GET", "GET"))[1].body == b"second"


async def test_a_pooled_connection_found_dead_gets_502_for_a_post_whose_body_went_out(gw):
    client, first = await request(gw)
    first.respond(OK)
    client.send(b"POST /b HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 2\r\n\r\nhi")
    first.reset()
    await gw.settle()
    assert len(gw.backends) == 1
    assert parse_responses(client.received, ("GET", "POST"))[1].status == 502


async def test_a_refused_connection_gets_502(gw):
    gw.refusing.add(TARGET)
    client = gw.client()
    client.send(GET)
    await gw.settle()
    assert parse_responses(client.received)[0].status == 502
    assert gw.backends == []


async def test_a_refused_connection_is_retried_on_the_routes_other_target():
    gw = FakeGateway(shop(TARGET, OTHER_TARGET))
    gw.refusing.add(TARGET)
    client = gw.client()
    client.send(GET)
    await gw.settle()
    assert TARGET in gw.connects
    assert [b.address for b in gw.backends] == [OTHER_TARGET]
    gw.backend().respond(OK)
    assert parse_responses(client.received)[0].status == 200


async def test_a_client_gone_mid_exchange_aborts_its_upstream_connection(gw):
    client, backend = await request(gw)
    backend.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhel")
    client.reset()
    assert backend.aborted
    _, fresh = await request(gw, get("/b"))
    assert fresh is not backend


async def test_a_request_for_an_unknown_host_gets_404_without_a_backend():
    gw = FakeGateway(config({"shop": gateway(PORT, {"stable": route(TARGET)}, virtual_hosts=["shop.example"])}))
    client = gw.client()
    client.send(b"GET / HTTP/1.1\r\nHost: other.example\r\n\r\n" + GET)
    await gw.settle()
    [response] = parse_responses(client.received)
    assert response.status == 404
    assert [r.target for r in parse_requests(gw.backend().received)] == ["/a"]


async def test_a_body_arriving_before_the_connection_is_made_is_sent_with_the_head(gw):
    client = gw.client()
    client.send(b"POST /up HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 10\r\n\r\nhello")
    client.send(b"world")                                 # the connection to the target is not made yet
    await gw.settle()
    [forwarded] = parse_requests(gw.backend().received)
    assert forwarded.body == b"helloworld"


async def test_a_large_body_waiting_for_its_connection_pauses_reading_until_it_is_sent(gw):
    client = gw.client()
    size = 300 * 1024                                     # more than the gateway buffers before the connection
    client.send(b"POST /up HTTP/1.1\r\nHost: shop.example\r\nContent-Length: %d\r\n\r\n" % (2 * size))
    client.send(b"x" * size)
    assert not client.reading
    await gw.settle()
    assert client.reading
    client.send(b"y" * size)
    assert parse_requests(gw.backend().received)[0].body == b"x" * size + b"y" * size


async def test_a_101_to_a_request_that_asked_for_no_upgrade_gets_502_and_opens_no_tunnel(gw):
    client, backend = await request(gw)
    backend.respond(SWITCHING)
    assert parse_responses(client.received)[0].status == 502
    assert backend.aborted
    client.send(get("/sneaked"))
    assert b"/sneaked" not in backend.received


async def test_bytes_after_a_complete_response_drop_the_upstream_connection(gw):
    client, backend = await request(gw)
    backend.respond(OK)
    backend.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")      # nobody asked
    assert backend.closed
    assert without_request_ids(client.received) == OK
    _, fresh = await request(gw, get("/b"))
    assert fresh is not backend


async def test_a_second_response_in_the_same_read_is_not_forwarded_and_drops_the_connection(gw):
    client, backend = await request(gw)
    backend.respond(OK + b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert without_request_ids(client.received) == OK
    assert backend.closed
