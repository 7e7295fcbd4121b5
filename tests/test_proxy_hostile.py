"""Hostile clients: a head dribbled byte by byte, an invalid Host, a flood of pipelined requests, an oversized
head. Each gets a clear 4xx (or the connection closed) and the backend receives nothing of it."""
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


def test_a_head_dribbled_slower_than_the_head_timeout_gets_408(recorded):
    port, backend = recorded
    before = len(backend.records())
    with socket.create_connection((LOOPBACK, port), timeout=15) as sock:
        started = time.monotonic()
        answer = b""
        for byte in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 40:     # one byte every 0.25 s
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            sock.settimeout(0.25)
            try:
                answer += sock.recv(65536)
            except socket.timeout:
                continue
            if answer:
                break
        sock.settimeout(5)
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except OSError:
            pass
        waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
    assert waited < 8, "the dribbling client kept its connection beyond the head timeout"
    assert len(backend.records()) == before


@pytest.mark.parametrize("host", [b"a b.example", b"a/b", b"x\x7fy"])
def test_an_invalid_host_header_gets_400(recorded, host):
    port, backend = recorded
    before = len(backend.records())
    answer = exchange(port, b"GET / HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400"), answer[:100]
    assert len(backend.records()) == before


def test_a_flood_of_pipelined_requests_is_cut_off(recorded):
    port, backend = recorded
    before = len(backend.records())
    flood = b"GET /p HTTP/1.1\r\nHost: x\r\n\r\n" * 2000
    answer = exchange(port, flood)
    answered = answer.count(b"HTTP/1.1 200")
    assert answered < 2000
    assert len(backend.records()) - before == answered


def test_an_oversized_head_gets_431(recorded):
    port, backend = recorded
    before = len(backend.records())
    headers = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"v" * 1000) for i in range(80))
    answer = exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 431"), answer[:100]
    assert len(backend.records()) == before
