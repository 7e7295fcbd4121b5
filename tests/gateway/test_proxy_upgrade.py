"""Upgrade requests (WebSocket and the like): nothing the client sends after an Upgrade request reaches the
backend before the backend has answered 101. A refused upgrade leaves the connection plain HTTP: the bytes that
followed are parsed as the next pipelined request, with every check a request gets; the record backend (an
independent h11 server) shows exactly what reached the backend."""
from __future__ import annotations

import os
import socket
import struct

import pytest

from tests.support import HttpClient, config, free_port, gateway, route
from tests.support.processes import LOOPBACK

UPGRADE = (b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
SMUGGLED = (b"POST /smuggled HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n"
            b"X-Forwarded-For: 6.6.6.6\r\n\r\n0\r\n\r\n")


@pytest.fixture(scope="module")
def backends(module_procs):
    return {"record": module_procs.backend("record", "rec"), "ws": module_procs.backend("ws")}


@pytest.fixture(scope="module")
def ports(module_procs, backends):
    ports = {kind: free_port() for kind in backends}
    module_procs.gateway(config({kind: gateway(ports[kind], {kind: route(backend.address())})
                                 for kind, backend in backends.items()}))
    return ports


def records_since(backend, before: int) -> list[dict]:
    return backend.records()[before:]


def statuses(client: HttpClient, sent: bytes, methods: tuple[str, ...]) -> list[int]:
    """Sends raw bytes and reads one response per method, as long as the connection stays open."""
    client.send_raw(sent)
    answered = []
    for method in methods:
        if client.conn is None:          # the previous response closed the connection
            break
        answered.append(client.read_response_to_raw(method).status)
    return answered


def test_a_request_smuggled_behind_a_refused_upgrade_never_reaches_the_backend(ports, backends):
    record = backends["record"]
    before = len(record.records())
    with HttpClient(ports["record"]) as client:
        answered = statuses(client, UPGRADE + SMUGGLED, ("GET", "POST"))
    received = records_since(record, before)
    assert [entry.get("target") for entry in received] == ["/ws"], received
    assert answered == [200, 400]        # the backend declined the upgrade; no Host, CL with TE: the gateway's 400


def test_a_request_after_a_refused_upgrade_is_proxied_like_any_other(ports, backends):
    record = backends["record"]
    before = len(record.records())
    with HttpClient(ports["record"]) as client:
        answered = statuses(client, UPGRADE + b"GET /internal HTTP/1.1\r\nHost: internal.example\r\n"
                                              b"X-Forwarded-For: 6.6.6.6\r\n\r\n", ("GET", "GET"))
    received = records_since(record, before)
    assert [entry.get("target") for entry in received] == ["/ws", "/internal"], received
    assert answered == [200, 200]
    headers = {key.lower(): value for key, value in received[1]["headers"]}
    assert headers["x-forwarded-for"] == "6.6.6.6, 127.0.0.1"        # re-serialised by the gateway, not raw
    assert headers["x-forwarded-proto"] == "http"


def test_an_upgrade_in_the_middle_of_a_pipeline_is_answered_in_order(ports, backends):
    record = backends["record"]
    before = len(record.records())
    with HttpClient(ports["record"]) as client:
        answered = statuses(client, b"GET /before HTTP/1.1\r\nHost: x\r\n\r\n" + UPGRADE
                            + b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n", ("GET", "GET", "GET"))
    assert answered == [200, 200, 200]
    assert [entry.get("target") for entry in records_since(record, before)] == ["/before", "/ws", "/after"]


def test_an_upgrade_request_with_a_body_is_refused(ports, backends):
    record = backends["record"]
    before = len(record.records())
    with HttpClient(ports["record"]) as client:
        assert statuses(client, UPGRADE[:-2] + b"Content-Length: 5\r\n\r\nhello", ("GET",)) == [400]
    assert records_since(record, before) == []


def masked_text_frame(text: bytes) -> bytes:
    mask = os.urandom(4)
    payload = bytes(byte ^ mask[index % 4] for index, byte in enumerate(text))
    return struct.pack("!BB", 0x81, 0x80 | len(text)) + mask + payload


def test_bytes_sent_with_the_upgrade_request_reach_the_backend_after_its_101(ports):
    frame = masked_text_frame(b"sent with the handshake")
    with socket.create_connection((LOOPBACK, ports["ws"]), timeout=10) as sock:
        sock.sendall(UPGRADE + frame)
        received = b""
        while b"sent with the handshake" not in received:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed; received {received!r}"
            received += chunk
    assert received.startswith(b"HTTP/1.1 101")
    _, _, frames = received.partition(b"\r\n\r\n")
    assert frames == b"\x81\x17sent with the handshake"             # the server's unmasked echo
