"""Pipelining: however many requests a client writes at once and however the bytes arrive, every request of a
well-formed pipeline is answered, in order. The gateway reads ahead a bounded number of requests and stops
reading (back-pressure) until answers go out, so a flood costs memory in proportion to that bound only."""
from __future__ import annotations

import random

import pytest

from tests.support import HttpClient, PeakRss, config, free_port, gateway, route

MB = 1024 * 1024


@pytest.fixture(scope="module")
def echo(module_procs):
    return module_procs.backend("echo", "echo")


@pytest.fixture(scope="module")
def gw(module_procs, echo):
    port = free_port()
    process = module_procs.gateway(config({"g": gateway(port, {"r": route(echo.address())})}))
    return process, port


def get_request(index: int, extra: str = "") -> bytes:
    return f"GET /{index} HTTP/1.1\r\nHost: pipe.test\r\n{extra}\r\n".encode()


def post_request(index: int) -> bytes:
    body = b"x" * (index % 7)
    return f"POST /{index} HTTP/1.1\r\nHost: pipe.test\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


def pieces(data: bytes, seed: int) -> list[bytes]:
    """`data` cut at random places into pieces of 1 to 400 bytes."""
    rng = random.Random(seed)
    cuts, at = [], 0
    while at < len(data):
        size = rng.randint(1, 400)
        cuts.append(data[at:at + size])
        at += size
    return cuts


def answered_paths(client: HttpClient, methods: list[str]) -> list[str]:
    """Reads one response per method (while the connection stays open); the path each one answers."""
    paths = []
    for method in methods:
        if client.conn is None:
            break
        response = client.read_response_to_raw(method)
        assert response.status == 200, (len(paths), response.status, response.body)
        paths.append(response.json()["path"])
    return paths


@pytest.mark.parametrize("count", [50, 200])
def test_a_pipeline_written_at_once_is_answered_in_order(gw, count):
    _, port = gw
    with HttpClient(port) as client:
        client.send_raw(b"".join(get_request(i) for i in range(count)))
        assert answered_paths(client, ["GET"] * count) == [f"/{i}" for i in range(count)]


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("count", [50, 200])
def test_a_pipeline_arriving_in_random_pieces_is_answered_in_order(gw, count, seed):
    _, port = gw
    requests = [post_request(i) if i % 3 == 0 else get_request(i) for i in range(count)]
    methods = ["POST" if i % 3 == 0 else "GET" for i in range(count)]
    with HttpClient(port) as client:
        for piece in pieces(b"".join(requests), seed):
            client.send_raw(piece)
        assert answered_paths(client, methods) == [f"/{i}" for i in range(count)]


def test_a_pipeline_ends_with_its_connection_close_request(gw):
    _, port = gw
    with HttpClient(port) as client:
        client.send_raw(b"".join(get_request(i, "Connection: close\r\n" if i == 4 else "") for i in range(10)))
        assert answered_paths(client, ["GET"] * 10) == [f"/{i}" for i in range(5)]
        assert client.conn is None, "the connection stays open after the Connection: close request"


def test_a_flood_of_pipelined_requests_is_answered_with_bounded_memory(gw):
    process, port = gw
    count = 5000
    with HttpClient(port, timeout=30) as client, PeakRss(process) as rss:
        client.send_raw(b"".join(get_request(i) for i in range(count)))
        assert answered_paths(client, ["GET"] * count) == [f"/{i}" for i in range(count)]
    assert rss.growth < 16 * MB, f"gateway RSS grew by {rss.growth / MB:.1f} MB"


BAD_HEAD = b"GET /bad HTTP/1.1\r\nHost : x\r\n\r\n"
BAD_BODY = b"POST /bad HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n"


@pytest.mark.parametrize("seed", [None, 4])
@pytest.mark.parametrize("bad", [BAD_HEAD, BAD_BODY], ids=["bad head", "bad body"])
def test_bad_input_behind_good_requests_is_answered_after_them(gw, seed, bad):
    _, port = gw
    data = get_request(0) + get_request(1) + bad + get_request(3)
    with HttpClient(port) as client:
        for piece in [data] if seed is None else pieces(data, seed):
            client.send_raw(piece)
        answers = [client.read_response_to_raw() for _ in range(3)]
        assert client.conn is None, "the connection stays open after the 400"
    assert [a.status for a in answers] == [200, 200, 400]
    assert [a.json()["path"] for a in answers[:2]] == ["/0", "/1"]


def test_pipelined_requests_after_a_large_body_are_answered_in_order(gw):
    _, port = gw
    body = bytes(range(256)) * 4096                 # 1 MiB: many reads, parsed a body at a time
    upload = f"POST /upload HTTP/1.1\r\nHost: pipe.test\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    with HttpClient(port, timeout=30) as client:
        client.send_raw(upload + b"".join(get_request(i) for i in range(40)) + upload)
        first = client.read_response_to_raw("POST").json()
        assert answered_paths(client, ["GET"] * 40) == [f"/{i}" for i in range(40)]
        last = client.read_response_to_raw("POST").json()
    assert first["body_length"] == last["body_length"] == len(body)
