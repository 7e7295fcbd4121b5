"""HTTP/1.1 framing through the real gateway: streaming, HEAD/204/304, 100-continue, chunked re-framing,
WebSocket, pipelining, hop-by-hop headers. What the backend received is checked with h11 (record backend)."""
from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

import h11
import pytest
from websockets.sync.client import connect as websocket_connect

from tests.backends import HEAD304_RESOURCE, pattern
from tests.support import GatewayProcess, HttpClient, PeakRss, config, free_port, gateway, route

MB = 1024 * 1024
BIG = 100 * 1000 * 1000           # 100 MB
RSS_GROWTH_LIMIT = 32 * MB
HOP_BY_HOP = ("connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade")


KINDS = ("echo", "record", "head304", "ws")


@pytest.fixture(scope="module")
def backends(module_procs):
    return {kind: module_procs.backend(kind) for kind in KINDS}


@dataclass
class Proxy:
    process: GatewayProcess
    ports: dict[str, int]        # backend kind -> port of the gateway in front of it


@pytest.fixture(scope="module")
def gw(module_procs, backends):
    """One gateway process with one gateway per backend kind."""
    ports = {kind: free_port() for kind in KINDS}
    process = module_procs.gateway(config({
        kind: gateway(ports[kind], {kind: route(backend.address(), weight="100%")})
        for kind, backend in backends.items()}))
    return Proxy(process, ports)


def unique(prefix: str) -> str:
    return f"/{prefix}-{uuid.uuid4().hex[:12]}"


def recorded(record_backend, target: str) -> dict:
    """The single request the record backend received for `target`."""
    found = [r for r in record_backend.records() if r.get("target") == target or "error" in r]
    assert len(found) == 1, f"record backend saw {found} for {target}"
    return found[0]


def header_values(record: dict, name: str) -> list[str]:
    return [value for key, value in record["headers"] if key.lower() == name]


# -- streaming with bounded memory -----------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.timeout(60)
def test_100mb_upload_streams_through_with_bounded_memory(gw):
    digest = hashlib.sha256()
    with HttpClient(gw.ports["echo"], timeout=30) as client:
        assert client.request("GET", "/warm-up").status == 200
        with PeakRss(gw.process) as rss:
            client.send_raw(b"POST /upload HTTP/1.1\r\nHost: big.local\r\nContent-Length: %d\r\n\r\n" % BIG)
            block = b"".join(pattern(MB))
            sent = 0
            while sent < BIG:
                piece = block[:BIG - sent]
                client.sock.sendall(piece)
                digest.update(piece)
                sent += len(piece)
            response = client.read_response_to_raw("POST")
    assert response.status == 200
    echoed = response.json()
    assert echoed["body_length"] == BIG
    assert echoed["body_sha256"] == digest.hexdigest()
    assert rss.growth < RSS_GROWTH_LIMIT, f"gateway RSS grew by {rss.growth / MB:.1f} MB"


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_100mb_download_streams_through_with_bounded_memory(gw):
    expected = hashlib.sha256()
    for block in pattern(BIG):
        expected.update(block)
    received = hashlib.sha256()
    length = 0

    def consume(data: bytes) -> None:
        nonlocal length
        received.update(data)
        length += len(data)

    with HttpClient(gw.ports["echo"], timeout=30) as client:
        assert client.request("GET", "/warm-up").status == 200
        with PeakRss(gw.process) as rss:
            response = client.request("GET", "/download", [("X-Echo-Size", str(BIG))], on_data=consume)
    assert response.status == 200
    assert length == BIG
    assert received.hexdigest() == expected.hexdigest()
    assert rss.growth < RSS_GROWTH_LIMIT, f"gateway RSS grew by {rss.growth / MB:.1f} MB"


# -- responses without a body --------------------------------------------------------------------------

def test_head_response_has_no_body_and_the_connection_stays_usable(gw):
    with HttpClient(gw.ports["head304"]) as client:
        head = client.request("HEAD", "/resource")
        assert head.status == 200
        assert head.header("content-length") == str(len(HEAD304_RESOURCE))
        assert head.body == b""
        following = client.request("GET", "/resource")
        assert following.status == 200
        assert following.body == HEAD304_RESOURCE
        assert client.connections_opened == 1


def test_head_of_a_large_streamed_response_sends_no_body(gw):
    with HttpClient(gw.ports["echo"]) as client:
        head = client.request("HEAD", "/big", [("X-Echo-Size", "1000000")])
        assert head.status == 200
        assert head.header("content-length") == "1000000"
        following = client.request("GET", "/after-head")
        assert following.status == 200
        assert following.json()["path"] == "/after-head"
        assert client.connections_opened == 1


def test_204_has_no_body_and_the_connection_stays_usable(gw):
    with HttpClient(gw.ports["head304"]) as client:
        response = client.request("GET", "/204")
        assert response.status == 204
        assert response.body == b""
        assert client.request("GET", "/resource").body == HEAD304_RESOURCE
        assert client.connections_opened == 1


def test_304_keeps_its_etag_has_no_body_and_the_connection_stays_usable(gw):
    with HttpClient(gw.ports["head304"]) as client:
        first = client.request("GET", "/resource")
        assert first.header("etag") == '"v1"'
        revalidated = client.request("GET", "/resource", [("If-None-Match", '"v1"')])
        assert revalidated.status == 304
        assert revalidated.header("etag") == '"v1"'
        assert revalidated.body == b""
        assert client.request("GET", "/resource").body == HEAD304_RESOURCE
        assert client.connections_opened == 1


# -- request bodies ---------------------------------------------------------------------------------------

def test_expect_100_continue_gets_100_then_the_final_response(gw):
    body = b"hello, after 100 Continue"
    with HttpClient(gw.ports["echo"]) as client:
        client.connect()
        client.send_event(h11.Request(method="POST", target="/continue", headers=[
            ("Host", "test.local"), ("Content-Length", str(len(body))), ("Expect", "100-continue")]))
        interim = client.next_event()          # the body is held back until the 100 arrives
        assert isinstance(interim, h11.InformationalResponse) and interim.status_code == 100
        client.send_event(h11.Data(data=body))
        client.send_event(h11.EndOfMessage())
        response = client.read_response()
    assert response.status == 200
    assert response.json()["body_length"] == len(body)
    assert response.json()["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_chunked_request_is_reframed_for_the_backend(gw, backends):
    target = unique("chunked")
    with HttpClient(gw.ports["record"]) as client:
        client.send_raw(f"POST {target} HTTP/1.1\r\nHost: test.local\r\nTransfer-Encoding: chunked\r\n\r\n"
                        "6;ext=1\r\nhello \r\n8\r\nchunked \r\n5\r\nworld\r\n0\r\n\r\n".encode())
        assert client.read_response_to_raw("POST").status == 200
    record = recorded(backends["record"], target)
    assert record["method"] == "POST"
    assert record["body"] == "hello chunked world"
    framing = header_values(record, "content-length") + header_values(record, "transfer-encoding")
    assert framing in (["19"], ["chunked"]), f"framing headers at the backend: {record['headers']}"


def test_chunked_response_is_reframed_for_the_client(gw):
    size = 300_000
    with HttpClient(gw.ports["echo"]) as client:
        response = client.request("GET", "/chunked", [("X-Echo-Size", str(size)), ("X-Echo-Chunked", "1")])
        assert response.status == 200
        assert response.body == b"".join(pattern(size))
        assert not (response.header("content-length") and response.header("transfer-encoding"))
        assert client.request("GET", "/after-chunked").json()["path"] == "/after-chunked"
        assert client.connections_opened == 1


# -- connection-level behaviour ------------------------------------------------------------------------

def test_websocket_echo_through_the_gateway(gw):
    binary = bytes(range(256)) * 800
    with websocket_connect(f"ws://127.0.0.1:{gw.ports['ws']}/echo", open_timeout=10, close_timeout=5) as ws:
        for index in range(5):
            ws.send(f"message {index}")
            assert ws.recv(timeout=10) == f"message {index}"
        ws.send(binary)
        assert ws.recv(timeout=10) == binary


def test_pipelined_requests_are_answered_in_order(gw):
    with HttpClient(gw.ports["echo"]) as client:
        client.send_raw(b"GET /first HTTP/1.1\r\nHost: test.local\r\n\r\n"
                        b"POST /second HTTP/1.1\r\nHost: test.local\r\nContent-Length: 3\r\n\r\nabc"
                        b"GET /third HTTP/1.1\r\nHost: test.local\r\n\r\n")
        answers = [client.read_response_to_raw(method).json() for method in ("GET", "POST", "GET")]
    assert [a["path"] for a in answers] == ["/first", "/second", "/third"]
    assert [a["body_length"] for a in answers] == [0, 3, 0]


@pytest.mark.parametrize("connection", ["close, X-Secret", "X-Secret, keep-alive"])
def test_hop_by_hop_headers_are_stripped(gw, backends, connection):
    target = unique("hop")
    with HttpClient(gw.ports["record"]) as client:
        client.send_raw(f"GET {target} HTTP/1.1\r\n"
                        "Host: test.local\r\n"
                        f"Connection: {connection}\r\n"
                        "Keep-Alive: timeout=5\r\n"
                        "TE: trailers\r\n"
                        "Trailer: X-Checksum\r\n"
                        "Upgrade: h2c\r\n"
                        "Proxy-Connection: keep-alive\r\n"
                        "X-Secret: s3cret\r\n"
                        "X-Kept: yes\r\n\r\n".encode())
        assert client.read_response_to_raw().status == 200
    record = recorded(backends["record"], target)
    names = {key.lower() for key, _ in record["headers"]}
    assert "x-secret" not in names, record["headers"]
    for name in HOP_BY_HOP[1:]:
        assert name not in names, f"{name} reached the backend: {record['headers']}"
    for value in header_values(record, "connection"):     # the gateway may speak for its own connection
        assert {token.strip().lower() for token in value.split(",")} <= {"keep-alive", "close"}, value
    assert header_values(record, "x-kept") == ["yes"]


def test_forwarded_headers_are_added(gw, backends):
    plain, chained = unique("xff"), unique("xff")
    with HttpClient(gw.ports["record"]) as client:
        assert client.request("GET", plain, host="shop.example:8080").status == 200
        assert client.request("GET", chained, [("X-Forwarded-For", "203.0.113.9")]).status == 200
    record = recorded(backends["record"], plain)
    assert header_values(record, "x-forwarded-for") == ["127.0.0.1"]
    assert header_values(record, "x-forwarded-proto") == ["http"]
    assert header_values(record, "x-forwarded-host") in (["shop.example:8080"], ["shop.example"])
    forwarded_for = ", ".join(header_values(recorded(backends["record"], chained), "x-forwarded-for"))
    assert [part.strip() for part in forwarded_for.split(",")] == ["203.0.113.9", "127.0.0.1"]


# -- Host towards the backend ----------------------------------------------------------------------------

def test_an_http10_request_without_host_reaches_the_backend_with_the_targets_address(gw, backends):
    target = unique("http10")
    with HttpClient(gw.ports["record"]) as client:
        client.send_raw(f"GET {target} HTTP/1.0\r\n\r\n".encode())
        assert client.read_response_to_raw().status == 200
    record = recorded(backends["record"], target)                # h11 rejects a request without Host
    assert header_values(record, "host") == [backends["record"].address()]


@pytest.mark.parametrize("version, host_header", [("1.0", ""), ("1.1", "Host: other.example\r\n")])
def test_an_absolute_form_target_names_the_host_the_backend_sees(gw, backends, version, host_header):
    target = unique("absolute")
    with HttpClient(gw.ports["record"]) as client:
        client.send_raw(f"GET http://shop.example:8080{target} HTTP/{version}\r\n{host_header}\r\n".encode())
        assert client.read_response_to_raw().status == 200
    record = recorded(backends["record"], target)
    assert header_values(record, "host") == ["shop.example:8080"]    # RFC 9112 §3.2.2: the target's authority
