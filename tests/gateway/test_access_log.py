"""Access logs (docs/access-logs.md) of a real gateway process in front of real backends: every field of a routed
request, of a 404 (no gateway for the Host: logged by the port's first gateway with a log) and of a 502 (a backend
refusing connections), in JSON and in the combined format; sampling; standard output; lines that reach a new
file after logrotate moves the old one, or after SIGUSR1, with worker processes; and the configuration's checks."""
from __future__ import annotations

import asyncio
import errno
import json
import os
import re
import signal
import socket
import threading
from datetime import UTC, datetime

import pytest

from gateway.config.load import ConfigError, from_dict, to_dict
from gateway.runtime import access_log
from gateway.runtime.access_log import LogWriter
from tests.support import HttpClient, LOOPBACK, config, free_port, gateway, route
from tests.support.waiting import eventually, eventually_async

JSON_KEYS = ["time", "client", "method", "path", "host", "user_agent", "country", "gateway", "route", "target",
             "status", "bytes_in", "bytes_out", "duration_us", "upstream_us", "request_id"]
COMBINED = re.compile(r'(\S+) - - \[([^\]]+)\] "(\S+) (\S+) (\S+)" (\d+) (\d+) "([^"]*)" "([^"]*)" "([^"]*)" '
                      r'"([^"]*)" "([^"]*)" "([^"]*)" (\S+) (\S+) (\d+) (\S+) (\d+)')
GENERATED = re.compile(r"[0-9a-f]{12}-[0-9a-f]{3,}")
GB_ADDRESS = "81.2.69.160"         # GB in the shipped country data (iptocc)


def exchange(port: int, request: bytes) -> bytes:
    """Sends one request with `Connection: close` and returns every byte the gateway sent back."""
    with socket.create_connection((LOOPBACK, port), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def header(response: bytes, name: str) -> str | None:
    head = response.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    for line in head.split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.lower() == name.lower():
            return value.strip()
    return None


def logged(path, count: int = 1) -> list[str]:
    """The lines of a log file once it has at least `count` (lines are written within about 0.1 s)."""
    def lines():
        try:
            found = path.read_text().splitlines()
        except FileNotFoundError:
            return None
        return found if len(found) >= count else None
    return eventually(lines, 10, f"{count} lines in {path}")


def line_with(path, request_id: str) -> str:
    return eventually(lambda: next((line for line in (path.read_text().splitlines() if path.exists() else [])
                                    if request_id in line), None), 10, f"a line for {request_id} in {path}")


@pytest.fixture(scope="module")
def served(module_procs):
    echo = module_procs.backend("echo", "v1")
    logs = module_procs.workdir / "logs"
    logs.mkdir()
    port, half, nothing, anonymous, plain = free_port(), free_port(), free_port(), free_port(), free_port()
    refused = f"{LOOPBACK}:{free_port()}"          # nothing listens there
    document = config({
        "shop": gateway(port, {"stable": route(echo.address("v1"), weight="100%")}, virtual_hosts=["shop.test"],
                        access_log={"format": "json", "path": str(logs / "shop.log")}),
        "broken": gateway(port, {"dead": route(refused, weight="100%")}, virtual_hosts=["broken.test"],
                          access_log={"format": "combined", "path": str(logs / "broken.log")}),
        "half": gateway(half, {"stable": route(echo.address("v1"), weight="100%")},
                        access_log={"path": str(logs / "half.log"), "sample": "50%"}),
        "nothing": gateway(nothing, {"stable": route(echo.address("v1"), weight="100%")},
                           access_log={"path": str(logs / "nothing.log"), "sample": "0%"}),
        "anonymous": gateway(anonymous, {"stable": route(echo.address("v1"), weight="100%")},
                             access_log={"path": str(logs / "anonymous.log")}, request_id=False),
        "plain": gateway(plain, {"stable": route(echo.address("v1"), weight="100%")},
                         access_log={"format": "combined", "path": str(logs / "plain.log")}),
    }, geo={"trusted_proxies": ["127.0.0.1"]})
    process = module_procs.gateway(document)
    return {"gateway": process, "echo": echo, "logs": logs, "port": port, "half": half, "nothing": nothing,
            "anonymous": anonymous, "plain": plain, "refused": refused}


def test_a_routed_request_is_logged_with_every_field_in_json(served):
    request = (b"POST /shop/items?color=red HTTP/1.1\r\nHost: shop.test\r\nUser-Agent: test-agent/1.0\r\n"
               b"X-Forwarded-For: " + GB_ADDRESS.encode() + b"\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
    before = datetime.now(UTC)
    response = exchange(served["port"], request)
    request_id = header(response, "x-request-id")
    assert response.startswith(b"HTTP/1.1 200 ") and GENERATED.fullmatch(request_id)
    echoed = json.loads(response.split(b"\r\n\r\n", 1)[1])
    assert {k.lower(): v for k, v in echoed["headers"]}["x-request-id"] == request_id     # the backend got it

    entry = json.loads(line_with(served["logs"] / "shop.log", request_id))
    assert list(entry) == JSON_KEYS
    when = datetime.strptime(entry["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert before.replace(microsecond=0) <= when <= datetime.now(UTC)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"])
    assert entry | {"time": None, "duration_us": None, "upstream_us": None} == {
        "time": None, "client": GB_ADDRESS, "method": "POST", "path": "/shop/items?color=red", "host": "shop.test",
        "user_agent": "test-agent/1.0", "country": "GB", "gateway": "shop", "route": "stable",
        "target": served["echo"].address("v1"), "status": 200, "bytes_in": len(request),
        "bytes_out": len(response), "duration_us": None, "upstream_us": None, "request_id": request_id}
    assert 0 <= entry["upstream_us"] <= entry["duration_us"] and entry["duration_us"] > 0


def test_an_id_from_a_trusted_proxy_is_kept_and_logged(served):
    response = exchange(served["port"], b"GET / HTTP/1.1\r\nHost: shop.test\r\nX-Request-Id: lb-42\r\n"
                                        b"Connection: close\r\n\r\n")
    assert header(response, "x-request-id") == "lb-42"
    assert json.loads(line_with(served["logs"] / "shop.log", '"lb-42"'))["status"] == 200


def test_a_request_for_no_gateway_is_a_404_logged_by_the_ports_first_gateway_with_a_log(served):
    request = b"GET /nowhere HTTP/1.1\r\nHost: nobody.test\r\nConnection: close\r\n\r\n"
    response = exchange(served["port"], request)
    request_id = header(response, "x-request-id")
    assert response.startswith(b"HTTP/1.1 404 ") and GENERATED.fullmatch(request_id)
    entry = json.loads(line_with(served["logs"] / "shop.log", request_id))
    assert entry | {"time": None, "duration_us": None} == {
        "time": None, "client": "127.0.0.1", "method": "GET", "path": "/nowhere", "host": "nobody.test",
        "user_agent": "", "country": None, "gateway": None, "route": None, "target": None, "status": 404,
        "bytes_in": len(request), "bytes_out": len(response), "duration_us": None, "upstream_us": None,
        "request_id": request_id}


UNREADABLE = {
    "TLS to a plain port": (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03garbage\r\n\r\n", 400),
    "Content-Length with chunked": (b"POST / HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 5\r\n"
                                    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    "a control byte in a header": (b"GET / HTTP/1.1\r\nHost: shop.test\r\nUser-Agent: a\x01b\r\n\r\n", 400),
    "a head too large": (b"GET / HTTP/1.1\r\nHost: shop.test\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", 431),
}


@pytest.mark.parametrize("request_bytes, status", UNREADABLE.values(), ids=UNREADABLE.keys())
def test_a_request_that_cannot_be_read_gets_an_id_and_a_line_in_its_ports_log(served, request_bytes, status):
    """Answered before any gateway took it, it is logged as a 404 for no gateway is: by the port's first
    gateway with a log, with what is known of it and null for the rest."""
    response = exchange(served["port"], request_bytes)
    request_id = header(response, "x-request-id")
    assert response.startswith(b"HTTP/1.1 %d " % status) and GENERATED.fullmatch(request_id), response[:300]
    entry = json.loads(line_with(served["logs"] / "shop.log", request_id))
    assert list(entry) == JSON_KEYS
    assert entry | {"time": None, "duration_us": None} == {
        "time": None, "client": "127.0.0.1", "method": None, "path": None, "host": None, "user_agent": None,
        "country": None, "gateway": None, "route": None, "target": None, "status": status, "bytes_in": None,
        "bytes_out": len(response), "duration_us": None, "upstream_us": None, "request_id": request_id}
    assert entry["duration_us"] >= 0


def test_a_request_that_cannot_be_read_in_the_combined_format_and_without_ids(served):
    response = exchange(served["plain"], b"GET /\x00 HTTP/1.1\r\n\r\n")
    request_id = header(response, "x-request-id")
    assert response.startswith(b"HTTP/1.1 400 ") and GENERATED.fullmatch(request_id)
    line = line_with(served["logs"] / "plain.log", request_id)
    assert re.fullmatch(r'127\.0\.0\.1 - - \[[^\]]+\] "-" 400 (\d+) "-" "-" "-" "-" "-" "-" - (\S+) (\d+) - -', line)
    assert line.split()[6:8] == ["400", str(len(response))] and line.split()[-4] == request_id

    response = exchange(served["anonymous"], b"GARBAGE\r\n\r\n")       # request_id: false
    assert response.startswith(b"HTTP/1.1 400 ") and header(response, "x-request-id") is None
    entries = [json.loads(line) for line in logged(served["logs"] / "anonymous.log")]
    assert any(entry["status"] == 400 and entry["request_id"] is None and entry["method"] is None
               for entry in entries), entries


def test_a_backend_refusing_connections_is_a_502_logged_in_the_combined_format(served):
    request = (b"GET /broken?x=1 HTTP/1.1\r\nHost: broken.test\r\nUser-Agent: curl/8.5 \"quoted\"\r\n"
               b"Referer: http://ref.test/page\r\nX-Forwarded-For: " + GB_ADDRESS.encode()
               + b"\r\nConnection: close\r\n\r\n")
    response = exchange(served["port"], request)
    request_id = header(response, "x-request-id")
    assert response.startswith(b"HTTP/1.1 502 ")
    match = COMBINED.fullmatch(line_with(served["logs"] / "broken.log", request_id))
    assert match, "not the documented combined format"
    (client, when, method, path, protocol, status, bytes_out, referer, user_agent, gateway_name, route_name,
     target, host, country, logged_id, duration, upstream, bytes_in) = match.groups()
    assert datetime.strptime(when, "%d/%b/%Y:%H:%M:%S %z").tzinfo is not None
    assert (client, method, path, protocol, int(status), int(bytes_out)) == (
        GB_ADDRESS, "GET", "/broken?x=1", "HTTP/1.1", 502, len(response))
    assert (referer, user_agent, gateway_name, route_name, target, host, country) == (
        "http://ref.test/page", r"curl/8.5 \x22quoted\x22", "broken", "dead", served["refused"], "broken.test",
        "GB")
    assert (logged_id, int(bytes_in)) == (request_id, len(request))
    assert 0 <= int(upstream) <= int(duration) and int(duration) > 0       # (the time spent trying the backend)


def test_sampling_logs_exactly_the_share_asked(served):
    with HttpClient(served["nothing"]) as client:
        for i in range(20):
            assert client.request("GET", f"/{i}").status == 200
    with HttpClient(served["half"]) as client:
        ids = [client.request("GET", f"/{i}").header("x-request-id") for i in range(20)]
    lines = logged(served["logs"] / "half.log", 10)
    assert [json.loads(line)["request_id"] for line in lines] == ids[1::2]       # exactly every other one
    assert (served["logs"] / "nothing.log").read_text() == ""


def test_a_client_gone_before_its_response_is_a_499(served):
    with socket.create_connection((LOOPBACK, served["port"]), timeout=10) as sock:
        sock.sendall(b"GET /gone HTTP/1.1\r\nHost: shop.test\r\nX-Echo-Delay: 1\r\n\r\n")
        served["gateway"].wait_until(lambda: served["gateway"].metrics().value(
            "vamp_open_connections", gateway="shop") >= 1, 10, "the request taken")   # (then the client leaves)
    entry = json.loads(line_with(served["logs"] / "shop.log", '"path":"/gone"'))
    assert (entry["status"], entry["bytes_out"], entry["route"]) == (499, 0, "stable")
    assert 0 < entry["upstream_us"] <= entry["duration_us"]       # the request was upstream until the client left


def test_without_request_ids_the_log_says_null(served):
    response = exchange(served["anonymous"], b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 200 ") and header(response, "x-request-id") is None
    assert json.loads(line_with(served["logs"] / "anonymous.log", '"path":"/a"'))["request_id"] is None


def test_no_line_is_dropped_and_the_metric_says_so(served):
    metrics = served["gateway"].metrics()
    assert metrics.value("vamp_access_log_dropped_total", gateway="shop") == 0
    assert metrics.value("vamp_access_log_dropped_total", gateway="half") == 0


def test_logrotate_sigusr1_standard_output_and_shutdown_with_worker_processes(procs, tmp_path):
    echo = procs.backend("echo", "v1")
    path = tmp_path / "access.log"
    port, stdout_port = free_port(), free_port()
    process = procs.gateway(config({
        "shop": gateway(port, {"stable": route(echo.address("v1"), weight="100%")},
                        access_log={"path": str(path)}),
        "out": gateway(stdout_port, {"stable": route(echo.address("v1"), weight="100%")},
                       access_log={"path": "-", "format": "combined"}),
    }), extra_args=("--workers", "2"))

    def get_id(target_port: int = port) -> str:
        with HttpClient(target_port) as client:         # a new connection each time: both workers serve some
            return client.request("GET", "/").header("x-request-id")

    first = get_id()
    line_with(path, first)
    # logrotate without SIGUSR1: the old file is renamed; new lines go to a new file at the path (checked by
    # each worker at most once a second)
    path.rename(tmp_path / "access.log.1")
    since: list[str] = []

    def a_new_file_has_new_lines() -> bool:
        since.append(get_id())
        return path.exists() and any(request_id in path.read_text() for request_id in since)
    eventually(a_new_file_has_new_lines, 10, "lines in a new access.log", interval=0.2)
    assert first in (tmp_path / "access.log.1").read_text()

    # SIGUSR1: the supervisor passes it on, each worker reopens the file at once
    path.rename(tmp_path / "access.log.2")
    process.process.send_signal(signal.SIGUSR1)
    eventually(lambda: process.stderr_text().count("reopened (asked)") >= 2, 10, "both workers reopened",
               context=process.stderr_text)
    assert path.exists()
    after = get_id()
    line_with(path, after)

    # "-": the supervisor's standard output, whichever worker served the request
    printed = get_id(stdout_port)
    assert COMBINED.fullmatch(eventually(lambda: next((line for line in process.stdout_path.read_text().splitlines()
                                                       if printed in line), None), 10, "a line on stdout"))

    # shutdown: what is waiting is written before the processes exit
    last = get_id()
    assert process.stop() == 0
    assert last in path.read_text()


# -- configuration ---------------------------------------------------------------------------------------
def one_gateway(**fields) -> dict:
    return {"gateways": {"shop": {"port": 8080, **fields}}}


@pytest.mark.parametrize(("access_log", "field", "message"), [
    ({"format": "xml"}, "format", "expected one of json, combined"),
    ({"sample": "150%"}, "sample", "from 0% to 100%"),
    ({"sample": "often"}, "sample", "expected a percentage"),
    ({"path": ""}, "path", "expected '-'"),
    ({"path": "/nonexistent-vamp-dir/access.log"}, "path", "no such directory"),
    ({"path": "/tmp"}, "path", "is a directory"),
    ({"rotate": "daily"}, "rotate", "unknown field"),
])
def test_bad_access_log_settings_are_refused_naming_the_field(access_log, field, message):
    with pytest.raises(ConfigError) as caught:
        from_dict(one_gateway(access_log=access_log))
    assert caught.value.location == ("gateways", "shop", "access_log", field)
    assert message in str(caught.value)


def test_a_tcp_gateway_has_no_access_log_and_request_id_is_a_boolean():
    with pytest.raises(ConfigError) as caught:
        from_dict({"gateways": {"db": {"port": "5432/tcp", "access_log": {"path": "-"}}}})
    assert caught.value.location == ("gateways", "db", "access_log")
    with pytest.raises(ConfigError) as caught:
        from_dict(one_gateway(request_id="yes"))
    assert caught.value.location == ("gateways", "shop", "request_id")


def test_access_log_and_request_id_round_trip_and_default(tmp_path):
    path = str(tmp_path / "new.log")                   # a file that does not exist yet, in a writable directory
    loaded = from_dict(one_gateway(access_log={"format": "Combined", "path": path, "sample": "12.5%"},
                                   request_id=False))
    shop = loaded.gateways[0]
    assert (shop.access_log.format, shop.access_log.path, shop.access_log.sample, shop.request_id) == (
        "combined", path, 1250, False)
    assert from_dict(to_dict(loaded)) == loaded
    assert not os.path.exists(path)                    # checked, not created, by the configuration
    plain = from_dict(one_gateway())
    assert plain.gateways[0].access_log is None and plain.gateways[0].request_id is True
    assert not {"access_log", "request_id"} & set(to_dict(plain)["gateways"]["shop"])
    defaults = from_dict(one_gateway(access_log={})).gateways[0].access_log
    assert (defaults.format, defaults.path, defaults.sample) == ("json", "-", 10_000)


# -- the time of a line, in this process ---------------------------------------------------------------------
def test_a_line_says_the_wall_clock_millisecond_it_ended_in_and_follows_a_wall_clock_set_within_a_second():
    """Lines take their time from the monotonic clock plus the wall clock's lead over it, formatted once per
    millisecond: every line within that millisecond says it, the first one after says the next, and a wall
    clock set (NTP stepping it) shows from the next second on."""
    lead = 1_780_000_000.0                       # the wall clock's lead over the monotonic clock, in seconds
    stepped = [0.0]
    clock = access_log._Clock(lambda: access_log._monotonic() + lead + stepped[0])

    def said(now: float) -> str:
        if now >= clock.until:
            clock.at(now)
        return json.loads(clock.json + b'"x":0}')["time"]

    def wall(now: float, step: float = 0.0) -> str:
        moment = datetime.fromtimestamp(now + lead + step, UTC)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"

    # (times 100 µs or more from a millisecond's edge: the lead is read with two clock readings, µs apart)
    start = float(int(access_log._monotonic())) + 10.0     # a second's start, ahead of now
    for now in (start + 0.0002, start + 0.0008, start + 0.0012, start + 0.0018, start + 0.9988, start + 1.0004,
                start + 1.2504, start + 7.5002):
        assert said(now) == wall(now), now
    assert said(start + 7.5008) == said(start + 7.5002) and clock.until <= start + 7.501 + 1e-4

    stepped[0] = -3600.0                                            # the wall clock is set back an hour
    assert said(start + 7.7504) == wall(start + 7.7504)             # within the second: still the old lead
    assert said(start + 8.0004) == wall(start + 8.0004, -3600)      # the next second: the clock as set
    assert said(start + 8.0024) == wall(start + 8.0024, -3600)


# -- the writer, in this process ---------------------------------------------------------------------------
async def test_lines_the_writer_cannot_take_are_dropped_and_counted(tmp_path, monkeypatch):
    path = tmp_path / "slow.log"
    writer = LogWriter(str(path), asyncio.get_running_loop())
    for _ in range(3):
        writer.pending.write(b"ke")
        writer.pending.write(b"pt\n")
        writer.added()
    writer.flush()
    monkeypatch.setattr(access_log, "MAX_QUEUED_BYTES", 0)      # as if batches waited for a disk that stalls
    for _ in range(5):
        writer.pending.write(b"dropped\n")
        writer.added()
    writer.flush()
    writer.close()
    await asyncio.to_thread(writer.join, 5)
    assert path.read_bytes() == b"kept\n" * 3
    assert writer.dropped == 5


async def test_writes_that_keep_failing_are_said_once_and_their_recovery_too(tmp_path, caplog, monkeypatch):
    """A full disk: every batch is dropped and counted, the error logged once (not once per batch, ten times a
    second), and the first write that works again says so."""
    path = tmp_path / "full.log"
    full = threading.Event()
    full.set()
    writev = os.writev

    def disk(fd: int, buffers: list) -> int:
        if full.is_set():
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return writev(fd, buffers)

    monkeypatch.setattr(access_log.os, "writev", disk)
    writer = LogWriter(str(path), asyncio.get_running_loop())

    async def batch(line: bytes) -> None:
        done = writer.dropped
        writer.pending.write(line)
        writer.added()
        writer.flush()
        await eventually_async(lambda: writer.dropped > done or path.read_bytes().endswith(line), 5.0,
                               "the batch written or dropped")

    for _ in range(5):
        await batch(b"lost\n")
    full.clear()
    await batch(b"kept\n")
    writer.close()
    await asyncio.to_thread(writer.join, 5)
    assert writer.dropped == 5 and path.read_bytes() == b"kept\n"
    messages = [record.message for record in caplog.records if record.name == "vamp.access_log"]
    assert sum("cannot write: No space left on device" in message for message in messages) == 1, messages
    assert sum("writing again" in message for message in messages) == 1, messages


async def test_a_file_that_cannot_be_opened_drops_its_lines_and_says_so_once(tmp_path, caplog):
    path = tmp_path / "gone" / "access.log"                      # its directory was removed after validation
    writer = LogWriter(str(path), asyncio.get_running_loop())
    for _ in range(3):
        writer.pending.write(b"line\n")
        writer.added()
        writer.flush()
    writer.close()
    await asyncio.to_thread(writer.join, 5)
    assert writer.dropped == 3
    assert sum("cannot open" in record.message for record in caplog.records) == 1
