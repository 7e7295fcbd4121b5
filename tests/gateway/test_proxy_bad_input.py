"""Malformed requests over a raw socket: the gateway answers 400 and the backend receives nothing.

After each bad request, a good one on a new connection proves the gateway is alive; the record backend (an
independent h11 server) must then hold exactly that good request and nothing from the bad one.
"""
from __future__ import annotations

import uuid

import pytest

from tests.support import config, free_port, gateway, get, raw_exchange, route

BODY = b"5\r\nhello\r\n0\r\n\r\n"

MALFORMED = {
    "content-length then transfer-encoding":
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 15\r\nTransfer-Encoding: chunked\r\n\r\n" + BODY,
    "transfer-encoding then content-length":
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 15\r\n\r\n" + BODY,
    "duplicate content-length, same value":
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    "duplicate content-length, different values":
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "transfer-encoding gzip":
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nhello",
    "transfer-encoding chunked, gzip":
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n" + BODY,
    "transfer-encoding identity":
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\nhello",
    "bad chunk size":
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    "space before colon":
        b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
    "NUL in a header value":
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Note: a\x00b\r\n\r\n",
    "bare CR in a header value":
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Note: a\rb\r\n\r\n",
    "obs-fold continuation line":
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Note: first\r\n  folded\r\n\r\n",
    "invalid method characters":
        b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n",
    "HTTP/1.1 without Host":
        b"GET / HTTP/1.1\r\nX-Note: no host\r\n\r\n",
    "two Host headers":
        b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
    "request line garbage":
        b"GARBAGE\r\n\r\n",
    "request line with extra words":
        b"GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n",
}


@pytest.fixture(scope="module")
def record(module_procs):
    return module_procs.backend("record")


@pytest.fixture(scope="module")
def port(module_procs, record):
    port = free_port()
    module_procs.gateway(config({"strict": gateway(port, {"only": route(record.address(), weight="100%")})}))
    return port


@pytest.mark.parametrize("request_bytes", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_request_gets_400_and_never_reaches_the_backend(port, record, request_bytes):
    already = len(record.records())
    answer = raw_exchange(port, request_bytes)

    good = f"/good-{uuid.uuid4().hex[:12]}"
    assert get(port, good).status == 200
    received = record.records()[already:]
    assert [entry.get("target") for entry in received] == [good], received
    assert answer.status == 400, answer
