"""The access log's lines (gateway/runtime/access_log.py) against a reference made here, field by field: whatever
a run of exchanges does (one request head repeated within a millisecond and answered with other statuses and
sizes, by another target, with a request id made here, a trusted proxy's or none, with or without a backend
chosen), each line says exactly its own exchange, in JSON and in the combined format. The log keeps what
repeats between lines (`_Memo`); these are the tests that what it keeps never leaks into the next line."""
from __future__ import annotations

import asyncio
import json
import re

import pytest
from hypothesis import given, settings, strategies as st

import gateway.compiled
from gateway.config.model import AccessLog
from gateway.proxy.client import REQUEST_IDS
from gateway.proxy.request_head import read_request_head
from gateway.runtime.access_log import AccessLogger, LogWriter

# The exchanges here are stand-ins, which compiled code refuses (it checks its arguments' classes): these run
# against the source. The compiled build's lines are checked by test_access_log.py, which test_compiled.py runs
# against a real build.
pytestmark = pytest.mark.skipif(gateway.compiled.mode == "compiled",
                                reason="the compiled build runs, and refuses stand-in exchanges")


COMBINED = re.compile(r'(\S+) - - \[([^\]]+)\] "(\S+) (\S+) (\S+)" (\d+) (\d+) "([^"]*)" "([^"]*)" "([^"]*)" '
                      r'"([^"]*)" "([^"]*)" "([^"]*)" (\S+) (\S+) (\d+) (\S+) (\d+)')
HEADS = [read_request_head(b"GET /a?x=1 HTTP/1.1\r\nHost: shop.test\r\nUser-Agent: curl/8.5\r\n\r\n"),
         read_request_head(b'POST /b HTTP/1.1\r\nHost: shop.test\r\nUser-Agent: x "quoted"\r\nContent-Length: 3\r\n'
                           b"\r\n")]


class Thing:
    """An object with these attributes, hashed by identity (as the gateway's targets and gateways are)."""
    def __init__(self, **attributes: object) -> None:
        self.__dict__.update(attributes)


TARGETS = [Thing(address="10.0.0.5:8080"), Thing(address="10.0.0.6:8080")]
ROUTE = Thing(name="stable")
GATEWAY = Thing(name="shop")


class Lookups:
    def client_address(self, peer: str, forwarded_for: str | None) -> str:
        return peer

    def country(self, address: str) -> str | None:
        return "GB" if address == "81.2.69.160" else None


step = st.fixed_dictionaries({
    # (mostly the same head, peer and target: the repeats are where the log reuses what it kept)
    "head": st.sampled_from([0, 0, 0, 1]),
    "peer": st.sampled_from(["127.0.0.1", "127.0.0.1", "81.2.69.160"]),
    "target": st.sampled_from([0, 0, 0, 1, None]),   # None: no backend chosen (a 404, a 503)
    "status": st.sampled_from([200, 204, 404, 499, 502, 503]),
    "body": st.integers(0, 5),
    "sent": st.sampled_from([0, 161, 4095, 4096, 10**7]),
    "duration": st.sampled_from([0, 1, 150, 4095, 4096, 10**7]),
    "upstream": st.sampled_from([0, 120, 4095, 4096]),
    "request_id": st.sampled_from(["made", "made", "trusted", "none"]),
    "later": st.sampled_from([0.0, 0.0, 0.0, 0.0005, 1.5]),  # seconds since the previous line: mostly none
})
FIRST_IDS = st.sampled_from([1, 250, 0x1FE, 0xFFFF0])   # the counter of the first id: near where its stem changes


def exchange(case: dict, count: int, now: float) -> tuple[Thing, dict]:
    """An exchange as the log reads it, and what its line must say."""
    head = HEADS[case["head"]]
    target = TARGETS[case["target"]] if case["target"] is not None else None
    upstream = min(case["upstream"], case["duration"]) if target is not None else None
    if case["request_id"] == "made":
        request_id = (REQUEST_IDS.stem(count) + b"%02x" % (count & 0xFF)).decode()
        head_end, id_count = b"X-Request-Id: %s\r\n\r\n" % request_id.encode(), count
    elif case["request_id"] == "trusted":
        request_id, head_end, id_count = f"lb-{count}", b"X-Request-Id: lb-%d\r\n\r\n" % count, 0
    else:
        request_id, head_end, id_count = None, b"\r\n", 0
    ex = Thing(
        request_head=head, client=Thing(peer=case["peer"]), target=target,
        route=ROUTE if target is not None else None, gateway=GATEWAY, body_buffered=case["body"],
        sent=case["sent"], ended_at=now, started=now - case["duration"] / 1e6,
        routed_at=now - upstream / 1e6 if upstream is not None else 0.0, head_end=head_end, id_count=id_count)
    expected = {
        "client": case["peer"], "method": head.method.decode(), "path": head.url.decode(),
        "host": head.host.decode(), "user_agent": head.user_agent.decode(),
        "country": "GB" if case["peer"] == "81.2.69.160" else None, "gateway": "shop",
        "route": "stable" if target is not None else None, "target": target.address if target is not None else None,
        "status": case["status"], "bytes_in": head.size + case["body"], "bytes_out": case["sent"],
        "duration_us": int((now - ex.started) * 1e6),
        "upstream_us": int((now - ex.routed_at) * 1e6) if upstream is not None else None,
        "request_id": request_id}
    return ex, expected


def log_lines(format: str, cases: list[dict], first_id: int, tmp_path) -> tuple[list[str], list[dict]]:
    async def run() -> tuple[list[str], list[dict]]:
        path = tmp_path / f"{format}.log"
        path.unlink(missing_ok=True)
        writer = LogWriter(str(path), asyncio.get_running_loop())
        logger = AccessLogger("shop", AccessLog(format=format, path=str(path)), writer, Lookups())  # type: ignore[arg-type]
        expected, now = [], 1000.0
        for count, case in enumerate(cases, start=first_id):
            now += case["later"]
            ex, wanted = exchange(case, count, now)
            logger.write(ex, case["status"])  # type: ignore[arg-type]
            expected.append(wanted)
        writer.close()
        await asyncio.to_thread(writer.join, 5)
        return path.read_text().splitlines(), expected
    return asyncio.run(run())


@settings(max_examples=150, deadline=None)
@given(cases=st.lists(step, min_size=1, max_size=24), first_id=FIRST_IDS)
def test_each_json_line_says_its_own_exchange(cases, first_id, tmp_path_factory):
    lines, expected = log_lines("json", cases, first_id, tmp_path_factory.mktemp("json"))
    assert len(lines) == len(expected)
    for line, wanted in zip(lines, expected):
        entry = json.loads(line)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry.pop("time"))
        assert entry == wanted


@settings(max_examples=150, deadline=None)
@given(cases=st.lists(step, min_size=1, max_size=24), first_id=FIRST_IDS)
def test_each_combined_line_says_its_own_exchange(cases, first_id, tmp_path_factory):
    lines, expected = log_lines("combined", cases, first_id, tmp_path_factory.mktemp("combined"))
    assert len(lines) == len(expected)
    for line, wanted in zip(lines, expected):
        match = COMBINED.fullmatch(line)
        assert match, line
        (client, _, method, path, _, status, bytes_out, _, user_agent, gateway, route, target, host, country,
         request_id, duration, upstream, bytes_in) = match.groups()
        said = {"client": client, "method": method, "path": path, "status": int(status),
                "bytes_out": int(bytes_out), "gateway": gateway, "route": route, "target": target, "host": host,
                "country": country, "request_id": request_id, "duration_us": int(duration),
                "upstream_us": upstream, "bytes_in": int(bytes_in)}
        assert said == {
            "client": wanted["client"], "method": wanted["method"], "path": wanted["path"],
            "status": wanted["status"], "bytes_out": wanted["bytes_out"], "gateway": "shop",
            "route": wanted["route"] or "-", "target": wanted["target"] or "-", "host": wanted["host"],
            "country": wanted["country"] or "-", "request_id": wanted["request_id"] or "-",
            "duration_us": wanted["duration_us"],
            "upstream_us": "-" if wanted["upstream_us"] is None else str(wanted["upstream_us"]),
            "bytes_in": wanted["bytes_in"]}
        assert user_agent == wanted["user_agent"].replace('"', r"\x22")
