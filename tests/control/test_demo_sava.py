"""The demo service misbehaving on purpose: SAVA_ERROR_RATE answers that share of page requests 500 (its health
check stays fine), SAVA_DELAY_MS delays each page answer without holding up other connections or reordering a
pipeline, and an invalid value stops it at start with exit status 2."""
from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from fractions import Fraction

import aiohttp
import pytest

from control.demo.sava import Misbehaviour, misbehaviour_from, start_server

STATUS_LINE = re.compile(rb"HTTP/1\.1 (\d{3}) ")


@pytest.fixture
async def sava():
    """start(misbehaviour) -> the base URL of an in-process sava 1.0.0 on a free loopback port."""
    servers: list[asyncio.Server] = []

    async def start(misbehaviour: Misbehaviour) -> tuple[str, int]:
        server = await start_server("127.0.0.1", 0, "1.0.0", "test#0", misbehaviour)
        servers.append(server)
        return "127.0.0.1", server.sockets[0].getsockname()[1]
    yield start
    for server in servers:
        server.close()


async def statuses(host: str, port: int, path: str, count: int) -> list[int]:
    found = []
    async with aiohttp.ClientSession() as session:
        for _ in range(count):
            async with session.get(f"http://{host}:{port}{path}") as response:
                await response.read()
                found.append(response.status)
    return found


async def test_the_error_rate_answers_that_share_of_pages_500_spread_evenly_and_health_stays_ok(sava):
    host, port = await sava(Misbehaviour(error_rate=Fraction(1, 4)))
    pages = await statuses(host, port, "/", 40)
    assert pages == [200, 200, 200, 500] * 10
    assert await statuses(host, port, "/health", 20) == [200] * 20


async def test_an_error_rate_of_one_fails_every_page_and_says_why(sava):
    host, port = await sava(misbehaviour_from({"SAVA_ERROR_RATE": "1"}))
    async with aiohttp.ClientSession() as session:
        for path in ("/", "/anything?x=1"):
            async with session.get(f"http://{host}:{port}{path}") as response:
                assert response.status == 500
                assert response.headers["X-Version"] == "1.0.0"
                assert "SAVA_ERROR_RATE" in await response.text()
    assert await statuses(host, port, "/health", 3) == [200] * 3


async def test_a_delay_is_added_to_each_page_answer_and_not_to_the_health_check(sava):
    delay = 0.3
    host, port = await sava(Misbehaviour(delay=delay))
    async with aiohttp.ClientSession() as session:
        for _ in range(3):
            started = time.monotonic()
            async with session.get(f"http://{host}:{port}/") as response:
                assert response.status == 200
                await response.read()
            assert time.monotonic() - started >= delay
    # a health check on another connection overtakes a page asked for before it
    page_reader, page_writer = await asyncio.open_connection(host, port)
    page_writer.write(b"GET / HTTP/1.1\r\nHost: sava\r\nConnection: close\r\n\r\n")
    await page_writer.drain()
    page = asyncio.ensure_future(page_reader.read())
    assert await statuses(host, port, "/health", 1) == [200]
    assert not page.done()
    assert STATUS_LINE.match(await asyncio.wait_for(page, 10)).group(1) == b"200"
    page_writer.close()


async def test_delayed_answers_do_not_hold_up_other_connections(sava):
    delay, connections = 0.5, 10
    host, port = await sava(Misbehaviour(delay=delay))

    async def one() -> int:
        async with aiohttp.ClientSession() as session, session.get(f"http://{host}:{port}/") as response:
            await response.read()           # each on a connection of its own
            return response.status
    started = time.monotonic()
    assert await asyncio.gather(*(one() for _ in range(connections))) == [200] * connections
    assert time.monotonic() - started < connections * delay / 2      # one after the other would take 5 s


async def test_pipelined_answers_keep_their_order_when_delayed(sava):
    delay = 0.3
    host, port = await sava(Misbehaviour(error_rate=Fraction(1, 2), delay=delay))
    reader, writer = await asyncio.open_connection(host, port)
    started = time.monotonic()
    writer.write(b"GET /first HTTP/1.1\r\nHost: sava\r\n\r\n"
                 b"GET /health HTTP/1.1\r\nHost: sava\r\n\r\n"
                 b"HEAD /second HTTP/1.1\r\nHost: sava\r\n\r\n"
                 b"POST /health HTTP/1.1\r\nHost: sava\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    received = await asyncio.wait_for(reader.read(), 10)      # until the server closes, after the last answer
    writer.close()
    assert time.monotonic() - started >= delay
    # the first page (200), the health check (200, held behind it), the second page (the share's 500), the 405
    assert [int(s) for s in STATUS_LINE.findall(received)] == [200, 200, 500, 405]
    first, health, _, _ = received.split(b"HTTP/1.1 ")[1:]
    assert b"<h1>sava 1.0.0</h1>" in first
    assert health.endswith(b"\r\n\r\nok\n")


@pytest.mark.parametrize(("variable", "value"), [
    ("SAVA_ERROR_RATE", "1.5"), ("SAVA_ERROR_RATE", "-0.1"), ("SAVA_ERROR_RATE", "half"),
    ("SAVA_ERROR_RATE", "nan"), ("SAVA_ERROR_RATE", "1/2"), ("SAVA_DELAY_MS", "-5"), ("SAVA_DELAY_MS", "soon"),
    ("SAVA_DELAY_MS", "inf"), ("SAVA_DELAY_MS", "3600001"),
])
def test_an_invalid_value_is_refused_naming_the_variable(variable, value):
    with pytest.raises(ValueError, match=f"^{variable} must be .*got '{re.escape(value)}'$"):
        misbehaviour_from({variable: value})


def test_valid_values_and_their_defaults():
    assert misbehaviour_from({}) == Misbehaviour()
    assert misbehaviour_from({"SAVA_ERROR_RATE": "", "SAVA_DELAY_MS": " "}) == Misbehaviour()
    assert misbehaviour_from({"SAVA_ERROR_RATE": "0.2", "SAVA_DELAY_MS": "250"}) == \
        Misbehaviour(error_rate=Fraction(1, 5), delay=0.25)
    assert misbehaviour_from({"SAVA_ERROR_RATE": "1e-1", "SAVA_DELAY_MS": "1.5"}) == \
        Misbehaviour(error_rate=Fraction(1, 10), delay=0.0015)


def test_the_service_exits_2_at_start_on_an_invalid_value():
    result = subprocess.run([sys.executable, "-m", "control.demo.sava", "--version", "1.0.0", "--port", "0"],
                            env={**os.environ, "SAVA_DELAY_MS": "a while"},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "SAVA_DELAY_MS must be a number of milliseconds from 0 to 3600000, got 'a while'" in result.stderr
    assert result.stdout == ""
