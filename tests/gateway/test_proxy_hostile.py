"""Hostile clients: a head dribbled byte by byte, an invalid Host, an oversized head. Each gets a clear 4xx
(or the connection closed) and the backend receives nothing of it. (A flood of pipelined requests is answered
with bounded memory: test_proxy_pipelining.)"""
from __future__ import annotations

import socket
import time

import pytest

from tests.support import config, free_port, gateway, route
from tests.support.processes import LOOPBACK


@pytest.fixture(scope="module")
def recorded(module_procs):
    backend = module_procs.backend("record", "rec")
    port = free_port()
    module_procs.gateway(config({"g": gateway(port, {"r": route(backend.address())},
                                              timeouts={"idle": "2s"})}))
    return port, backend


def exchange(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def dribble_head(port: int, limit: float) -> tuple[bytes, float]:
    """Sends a request head one byte every 0.25 s until the gateway answers or `limit` seconds pass; returns
    the answer and the seconds from the first byte to it."""
    with socket.create_connection((LOOPBACK, port), timeout=limit) as sock:
        started = time.monotonic()
        answer = b""
        head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * int(limit * 4)
        for byte in head:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            sock.settimeout(0.25)
            try:
                answer += sock.recv(65536)
            except TimeoutError:
                continue
            if answer:
                break
        waited = time.monotonic() - started
        sock.settimeout(5)
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except OSError:
            pass
    return answer, waited


def test_a_head_dribbled_slower_than_the_head_timeout_gets_408(recorded):
    port, backend = recorded
    before = len(backend.records())
    answer, waited = dribble_head(port, limit=10)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
    assert waited < 8, "the dribbling client kept its connection beyond the head timeout"
    assert len(backend.records()) == before


def test_the_head_deadline_runs_from_the_first_byte_not_from_the_idle_timeout(procs):
    backend = procs.backend("record", "rec")
    port = free_port()
    procs.gateway(config({"g": gateway(port, {"r": route(backend.address())},
                                       timeouts={"idle": "60s", "request_head": "2s"})}))
    answer, waited = dribble_head(port, limit=15)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
    assert 1.5 < waited < 5, f"408 after {waited:.1f} s; the head deadline is 2 s"
    assert backend.records() == []


@pytest.mark.parametrize("host", [b"a b.example", b"a/b", b"x\x7fy"])
def test_an_invalid_host_header_gets_400(recorded, host):
    port, backend = recorded
    before = len(backend.records())
    answer = exchange(port, b"GET / HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400"), answer[:100]
    assert len(backend.records()) == before


def test_an_oversized_head_gets_431(recorded):
    port, backend = recorded
    before = len(backend.records())
    headers = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"v" * 1000) for i in range(80))
    answer = exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 431"), answer[:100]
    assert len(backend.records()) == before
