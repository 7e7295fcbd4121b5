"""Mutation fuzzing of the gateway's HTTP/1.1 front end: seeded, bounded, through real processes.

Well-formed requests (GET, HEAD, bodies framed by Content-Length or chunked, HTTP/1.0, absolute-form targets,
`Expect: 100-continue`, Upgrade) are mutated (bytes flipped, inserted, deleted; lines duplicated, dropped,
swapped, re-terminated; smuggling-style framing headers added; chunk sizes garbled), truncated, made
oversized, trickled in small pieces and pipelined, then sent through a gateway process to the record backend,
an independent h11 server that logs every request it accepts and every one it rejects. Asserted throughout:
the gateway never dies; its RSS stays within a bound; the requests of a pipeline are answered in the order
they were sent, every well-formed one before a mutated one; the backend never receives anything h11 rejects.

Bounded by VAMP_FUZZ_CASES (default 2000) and VAMP_FUZZ_SECONDS (default 10), whichever comes first;
VAMP_FUZZ_SEED (default 9) picks the cases, and every failure names the case numbers, each reproducible alone
with VAMP_FUZZ_CASE=N. Leave it out with `pytest -m "not fuzz"`; run longer with e.g.
`VAMP_FUZZ_SECONDS=600 VAMP_FUZZ_CASES=1000000 pytest -m fuzz tests/gateway/test_proxy_fuzz.py`.
"""
from __future__ import annotations

import json
import os
import random
import socket
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import h11
import pytest

from tests.support import PeakRss, config, free_port, gateway, route
from tests.support.processes import LOOPBACK

pytestmark = [pytest.mark.fuzz, pytest.mark.timeout(600)]

SEED = int(os.environ.get("VAMP_FUZZ_SEED", "9"))
MAX_CASES = int(os.environ.get("VAMP_FUZZ_CASES", "2000"))
MAX_SECONDS = float(os.environ.get("VAMP_FUZZ_SECONDS", "10"))
ONLY_CASE = os.environ.get("VAMP_FUZZ_CASE")
WORKERS = 8                       # cases in flight at once (most of a case's time is waiting)
BATCH = 64                        # cases between two checks of the gateway and the backend's log
MB = 1024 * 1024
RSS_GROWTH_LIMIT = 64 * MB
ANSWER_TIMEOUT = 10.0             # seconds a well-formed request may take to be answered
QUIET = 0.3                       # seconds of silence after which a mutated request is taken as unanswered

METHODS = ("GET", "GET", "GET", "HEAD", "POST", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")
HOSTS = ("fuzz.test", "vh.test", "127.0.0.1", "127.0.0.1:8080", "[::1]:80", "other.example")
SPECIAL_BYTES = b"\x00\r\n \t:;,\x7f\x80\xff\"\\/\x0b\x0c"
INSERTIONS = (
    b"\r\n", b"\n", b"\r", b" ", b"\t", b"\x00", b"\r\n\r\n", b"GET /x HTTP/1.1\r\n", b"Host: a\r\n",
    b"Transfer-Encoding: chunked\r\n", b"Content-Length: 5\r\n", b"Content-Length: -1\r\n",
    b"Upgrade: websocket\r\nConnection: Upgrade\r\n", b"Expect: 100-continue\r\n", b"0\r\n\r\n",
)
FRAMING_HEADERS = (
    b"Transfer-Encoding: chunked", b"Transfer-Encoding:chunked", b"Transfer-Encoding : chunked",
    b"Transfer-Encoding: xchunked", b"Transfer-Encoding: chunked\x0b", b" Transfer-Encoding: chunked",
    b"Transfer-Encoding:\tchunked", b'Transfer-Encoding: "chunked"', b"Transfer-encoding: cHuNkEd",
    b"Transfer-Encoding: chunked, identity", b"Transfer-Encoding: identity, chunked",
    b"Transfer-Encoding: gzip, chunked", b"Transfer-Encoding:\r\n chunked", b"Content-Length: 0",
    b"Content-Length: 4", b"Content-Length: +4", b"Content-Length: 04", b"Content-Length: 4, 4",
    b"Content-Length: 99999999999999999999", b"Content-Length: 0x10", b"Content-Length:", b"Content-Length: 4 ",
    b"Content-Length:\t4", b"Content_Length: 4", b"Connection: close", b"Connection: keep-alive, Upgrade",
    b"Upgrade: h2c", b"Host: ", b"Host: evil.example", b"Host: a b", b"Expect: 100-continue", b"Expect: x",
)
CHUNK_SIZES = (b"ffffffffffffffffffff", b"-1", b"1;ext=1", b"0x5", b"5 ", b" 5", b"5\t", b"", b"g", b"05")


@dataclass
class Sent:
    """One request of a case: its bytes, and what its answer must say when it is well-formed."""
    data: bytes
    method: str
    target: str | None           # the target the backend must see (None: mutated, anything may happen)
    keep_alive: bool = True


@dataclass
class Case:
    index: int
    kind: str
    requests: list[Sent]
    pieces: list[bytes] = field(default_factory=list)
    pause: float = 0.0           # seconds between two pieces (trickled)
    hang_up: bool = False        # close right after sending, without reading (truncated)

    def describe(self) -> str:
        data = b"".join(s.data for s in self.requests)
        return f"case {self.index} ({self.kind}, {len(self.requests)} requests): {data[:300]!r}"


# -- building cases ------------------------------------------------------------------------------------

def token(rng: random.Random, size: int = 8) -> str:
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789-") for _ in range(rng.randint(1, size)))


def well_formed(rng: random.Random, case: int, number: int, in_pipeline: bool) -> Sent:
    method = rng.choice(METHODS)
    target = f"/fz/{case}/{number}" + (f"?{token(rng)}={token(rng)}" if rng.random() < 0.3 else "")
    version = "1.0" if rng.random() < 0.15 else "1.1"
    headers: list[tuple[str, str]] = []
    request_target = target
    if rng.random() < 0.1:
        request_target = f"http://{rng.choice(HOSTS[:2])}{target}"       # HTTP/1.1 still needs a Host
    if version == "1.1" or rng.random() < 0.5:
        headers.append(("Host", rng.choice(HOSTS)))
    for _ in range(rng.randint(0, 6)):
        headers.append(rng.choice((
            ("User-Agent", f"fuzz/{token(rng)}"), ("Accept", "*/*"), ("Cookie", f"{token(rng)}={token(rng)}"),
            ("X-Forwarded-For", f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.1"), ("X-" + token(rng), token(rng)),
            ("Accept-Encoding", "gzip, br"), ("Cache-Control", "no-cache"))))
    keep_alive = version == "1.1" or in_pipeline or rng.random() < 0.5
    if version == "1.0" and keep_alive:
        headers.append(("Connection", "keep-alive"))
    body = b""
    if method in ("POST", "PUT", "PATCH") or (method == "DELETE" and rng.random() < 0.2):
        body = bytes(rng.getrandbits(8) for _ in range(rng.choice((0, 1, 5, 100, 2000))))
        if version == "1.1" and rng.random() < 0.4:
            headers.append(("Transfer-Encoding", "chunked"))
            body = chunked(rng, body)
        else:
            headers.append(("Content-Length", str(len(body))))
        if version == "1.1" and rng.random() < 0.2:
            headers.append(("Expect", "100-continue"))
    elif method == "GET" and version == "1.1" and rng.random() < 0.1:
        headers += [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13")]
    rng.shuffle(headers)
    head = f"{method} {request_target} HTTP/{version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    return Sent(head.encode() + body, method, target, keep_alive)


def chunked(rng: random.Random, body: bytes) -> bytes:
    out, at = [], 0
    while at < len(body):
        size = rng.randint(1, max(1, len(body) - at))
        extension = b";x=1" if rng.random() < 0.1 else b""
        out.append(b"%x%s\r\n%s\r\n" % (size, extension, body[at:at + size]))
        at += size
    trailer = b"X-Trailer: t\r\n" if rng.random() < 0.1 else b""
    return b"".join(out) + b"0\r\n" + trailer + b"\r\n"


def mutate(rng: random.Random, data: bytes) -> bytes:
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        data = rng.choice(MUTATIONS)(rng, data)
    return data


def flip(rng, data):
    at = rng.randrange(len(data))
    byte = rng.choice(SPECIAL_BYTES) if rng.random() < 0.7 else rng.getrandbits(8)
    return data[:at] + bytes([byte]) + data[at + 1:]


def insert(rng, data):
    at = rng.randrange(len(data) + 1)
    return data[:at] + rng.choice(INSERTIONS) + data[at:]


def delete(rng, data):
    at = rng.randrange(len(data))
    return data[:at] + data[at + rng.randint(1, 8):]


def line_edit(rng, data):
    head, sep, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    at = rng.randrange(len(lines))
    action = rng.randrange(6)
    if action == 0:
        lines.insert(at, lines[at])                                   # a repeated line
    elif action == 1 and len(lines) > 1:
        del lines[max(1, at)]                                         # a header dropped
    elif action == 2:
        other = rng.randrange(len(lines))
        lines[at], lines[other] = lines[other], lines[at]             # the request line may move
    elif action == 3:
        lines[at] += rng.choice((b"\n", b"\r", b"\r\r", b" ", b"\t"))  # odd line ends, trailing space
    elif action == 4:
        lines[at] = rng.choice((b" ", b"\t", b"\x00")) + lines[at]    # leading whitespace: obs-fold
    else:
        lines[at] = lines[at].upper() if rng.random() < 0.5 else lines[at].lower()
    return b"\r\n".join(lines) + sep + body


def framing(rng, data):
    head, sep, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    lines.insert(rng.randint(1, len(lines)), rng.choice(FRAMING_HEADERS))
    extra = rng.choice((b"", b"", b"0\r\n\r\n", b"5\r\nhello\r\n0\r\n\r\n", b"abcd"))
    return b"\r\n".join(lines) + sep + body + extra


def chunk_size(rng, data):
    head, sep, body = data.partition(b"\r\n\r\n")
    if b"chunked" not in head:
        return framing(rng, data)
    lines = body.split(b"\r\n")
    lines[rng.randrange(0, len(lines), 2)] = rng.choice(CHUNK_SIZES)       # a chunk-size line
    return head + sep + b"\r\n".join(lines)


MUTATIONS = (flip, flip, insert, insert, delete, line_edit, line_edit, framing, framing, chunk_size)


def oversized(rng: random.Random, case: int) -> Sent:
    target = f"/fz/{case}/0"
    choice = rng.randrange(5)
    if choice == 0:
        return Sent(b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", "GET", None)
    if choice == 1:
        return Sent(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 70_000 + b"\r\n\r\n", "GET", None)
    if choice == 2:
        return Sent(b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Many: 0123456789abcdef\r\n" * 3000 + b"\r\n", "GET", None)
    if choice == 3:
        body = b"b" * 300_000
        return Sent(f"POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body,
                    "POST", target)
    body = b"1\r\nc\r\n" * 5_000 + b"0\r\n\r\n"
    return Sent(f"POST {target} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode() + body,
                "POST", target)


def make_case(index: int) -> Case:
    rng = random.Random(f"{SEED}:{index}")
    roll = rng.random()
    if roll < 0.35:
        sent = well_formed(rng, index, 0, in_pipeline=False)
        case = Case(index, "mutated", [Sent(mutate(rng, sent.data), sent.method, None, sent.keep_alive)])
    elif roll < 0.45:
        case = Case(index, "well-formed", [well_formed(rng, index, 0, in_pipeline=False)])
    elif roll < 0.70:
        requests = [well_formed(rng, index, n, in_pipeline=True) for n in range(rng.randint(2, 60))]
        if rng.random() < 0.5:
            at = rng.randrange(len(requests))
            requests[at] = Sent(mutate(rng, requests[at].data), requests[at].method, None)
            kind = "pipeline with a mutated request"
        else:
            kind = "pipeline"
        case = Case(index, kind, requests)
    elif roll < 0.80:
        sent = well_formed(rng, index, 0, in_pipeline=False)
        cut = rng.randrange(1, len(sent.data))
        case = Case(index, "truncated", [Sent(sent.data[:cut], sent.method, None)], hang_up=True)
    elif roll < 0.88:
        case = Case(index, "oversized", [oversized(rng, index)])
    else:
        requests = [well_formed(rng, index, n, in_pipeline=True) for n in range(rng.randint(1, 3))]
        case = Case(index, "trickled", requests, pause=0.001)
    data = b"".join(s.data for s in case.requests)
    if case.kind == "trickled":
        case.pieces = split(rng, data, 1, 3)
    elif rng.random() < 0.4:
        case.pieces = split(rng, data, 1, 600)
    else:
        case.pieces = [data]
    return case


def split(rng: random.Random, data: bytes, smallest: int, largest: int) -> list[bytes]:
    pieces, at = [], 0
    while at < len(data):
        size = rng.randint(smallest, largest)
        pieces.append(data[at:at + size])
        at += size
    return pieces


# -- running cases --------------------------------------------------------------------------------------

@dataclass
class Answer:
    status: int
    target: str | None           # the backend's X-Target: which request it answers


@dataclass
class Outcome:
    case: Case
    answers: list[Answer]
    broken: str | None = None    # why reading stopped early (a response h11 could not parse)


def run_case(port: int, case: Case) -> Outcome:
    with socket.create_connection((LOOPBACK, port), timeout=ANSWER_TIMEOUT) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            for piece in case.pieces:
                sock.sendall(piece)
                if case.pause:
                    time.sleep(case.pause)          # the traffic's shape (trickling), not a synchronisation
        except OSError:
            pass                                    # the gateway closed early (e.g. after a 4xx)
        if case.hang_up:
            if case.index % 2:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))   # reset
            return Outcome(case, [])
        return read_answers(sock, case)


def read_answers(sock: socket.socket, case: Case) -> Outcome:
    """Reads one response per request sent, in order, while the connection stays open and answers come."""
    conn = h11.Connection(h11.CLIENT)
    answers: list[Answer] = []
    for sent in case.requests:
        conn.send(h11.Request(method="HEAD" if sent.method == "HEAD" else "GET", target="/",
                              headers=[("Host", "fuzz")]))
        conn.send(h11.EndOfMessage())
        # Everything up to the first mutated request must be answered; after it, silence ends the case.
        sock.settimeout(ANSWER_TIMEOUT if sent.target is not None and not any(
            s.target is None for s in case.requests[:len(answers)]) else QUIET)
        response: h11.Response | None = None
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                return Outcome(case, answers, f"unparseable response: {exc}")
            if event is h11.NEED_DATA:
                try:
                    data = sock.recv(262144)
                except (TimeoutError, ConnectionResetError):
                    return Outcome(case, answers)
                conn.receive_data(data)
                continue
            if isinstance(event, h11.InformationalResponse):
                continue
            if isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                return Outcome(case, answers)
        target = dict(response.headers).get(b"x-target")
        answers.append(Answer(response.status_code, target.decode("latin-1") if target else None))
        if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
            break                                    # the gateway closes the connection
        conn.start_next_cycle()
    return Outcome(case, answers)


def problems(outcome: Outcome) -> list[str]:
    """What the answers to a case say about the gateway: answered out of order, or not at all."""
    case, answers = outcome.case, outcome.answers
    found = []
    sent_targets = [s.target for s in case.requests]
    first_mutated = next((i for i, t in enumerate(sent_targets) if t is None), len(sent_targets))
    for i, target in enumerate(sent_targets[:first_mutated]):     # every well-formed request before a mutated one
        if i >= len(answers):
            found.append(f"request {i} ({target}) of a well-formed prefix got no answer")
            break
        if answers[i].status != 200 or answers[i].target != target:
            found.append(f"request {i} ({target}) answered {answers[i].status} for {answers[i].target}")
            break
        if not case.requests[i].keep_alive:
            break
    # Whatever else was answered by the backend answers the requests in the order they were sent.
    order = [sent_targets.index(a.target) for a in answers if a.target in sent_targets]
    if order != sorted(order) or len(set(order)) != len(order):
        found.append(f"answers out of order: {[a.target for a in answers]}")
    if outcome.broken and first_mutated == len(sent_targets):
        found.append(outcome.broken)
    return [f"{case.describe()}: {problem}" for problem in found]


# -- the test -----------------------------------------------------------------------------------------------

# A body cut short by the connection's end: what a client that goes away mid-upload leaves (the gateway passes
# the end on); the backend sees an incomplete message, never a different one.
CUT_SHORT = "peer closed connection without sending complete message body"


class BackendLog:
    """Reads the record backend's log incrementally: requests it accepted, bodies cut short, and what it
    rejected."""

    def __init__(self, path) -> None:
        self.path = path
        self.offset = 0
        self.accepted = 0
        self.cut_short = 0

    def rejected(self) -> list[dict]:
        with open(self.path, encoding="utf-8") as file:
            file.seek(self.offset)
            text = file.read()
        complete = text[:text.rfind("\n") + 1]
        self.offset += len(complete.encode("utf-8"))
        entries = [json.loads(line) for line in complete.splitlines() if line.strip()]
        self.accepted += sum("error" not in entry for entry in entries)
        self.cut_short += sum(entry.get("error", "").startswith(CUT_SHORT) for entry in entries)
        return [entry for entry in entries if "error" in entry and not entry["error"].startswith(CUT_SHORT)]


@pytest.fixture(scope="module")
def fuzz_gateway(module_procs):
    backend = module_procs.backend("record", "rec")
    port = free_port()
    process = module_procs.gateway(config({
        "fuzz": gateway(port, {"r": route(backend.address())},
                        timeouts={"response": "5s", "idle": "10s", "request_head": "3s"}),
        "vh": gateway(port, {"r": route(backend.address())}, virtual_hosts=["vh.test"]),
    }))
    return process, port, backend


def test_the_gateway_survives_mutated_truncated_oversized_trickled_and_pipelined_requests(fuzz_gateway):
    process, port, backend = fuzz_gateway
    log = BackendLog(backend.record_path)
    indices = [int(ONLY_CASE)] if ONLY_CASE is not None else range(MAX_CASES)
    deadline = time.monotonic() + MAX_SECONDS
    ran = 0
    kinds: dict[str, int] = {}
    with ThreadPoolExecutor(WORKERS) as pool, PeakRss(process, interval=0.05, max_seconds=MAX_SECONDS + 120) as rss:
        for start in range(0, len(indices), BATCH):
            if time.monotonic() > deadline:
                break
            cases = [make_case(i) for i in indices[start:start + BATCH]]
            outcomes = list(pool.map(lambda case: run_case(port, case), cases))
            ran += len(cases)
            for case in cases:
                kinds[case.kind] = kinds.get(case.kind, 0) + 1
            assert process.returncode is None, (
                f"the gateway died during cases {cases[0].index}-{cases[-1].index}:\n{process.stderr_text()}")
            found = [problem for outcome in outcomes for problem in problems(outcome)]
            assert not found, "\n".join(found[:5])
            rejected = log.rejected()
            assert not rejected, (f"the backend received what h11 rejects during cases {cases[0].index}-"
                                  f"{cases[-1].index} (seed {SEED}): {rejected[:3]}")
            assert rss.peak - rss.baseline < RSS_GROWTH_LIMIT, (
                f"gateway RSS grew by {(rss.peak - rss.baseline) / MB:.1f} MB by case {cases[-1].index}")
    assert ran >= min(len(indices), 200), f"only {ran} cases ran in {MAX_SECONDS} s"
    print(f"\nfuzz: {ran} cases (seed {SEED}) {kinds}; the backend accepted {log.accepted} requests "
          f"({log.cut_short} bodies cut short); gateway RSS growth {(rss.peak - rss.baseline) / MB:.1f} MB")
