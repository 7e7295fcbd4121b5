"""The quickstart's demo service "sava": a tiny keep-alive HTTP/1.1 server that says which version it is.

    python -m control.demo.sava --version 1.0.0 [--name sava] [--port 8080] [--host 127.0.0.1]
    python -m control.demo.sava --frontend --name sava-frontend --version 1.2.0     (control.demo.frontend)

It listens on $PORT_WEBPORT, else $PORT, else --port (the local orchestrator sets both). GET and HEAD on any
path answer a small HTML page naming the service (--name) and version and the instance ($VAMP_INSTANCE), with
the headers `X-Version` and `X-Instance`; `/api/message` answers the same as JSON, `{"message": "sava-backend1
1.2.0 (instance …)", "name", "version", "instance"}` (what the backends of VAMP's tutorial answer their
frontend); `/health` answers 200 "ok"; other methods get 405. Answers are prepared once at start, requests are
parsed by httptools and answered with one write per read, so it keeps up with thousands of requests per second
through the gateway. SIGTERM or SIGINT stops it cleanly (exit status 0). With `--frontend` it is the tutorial's
frontend instead: each page is made of the messages of the backends its environment names
(control.demo.frontend).

It can misbehave on purpose, so that a blueprint can deploy a bad version (read once, at start):
- `SAVA_ERROR_RATE` (0 to 1): that share of page requests is answered 500, spread evenly (0.2: every fifth,
  counted over the whole process); `/health` stays healthy, so the instances still turn ready;
- `SAVA_DELAY_MS` (milliseconds, 0 or more): added to every page answer (500s included). Other connections
  are not held up, and the answers of pipelined requests still go out in order.
An invalid value is an error naming the variable (exit status 2). Empty or unset: 0. An `/api/message` request
counts as a page.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import html
import json
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction

import httptools
import uvloop

Answers = dict[tuple[str, bool, bool], bytes]     # (kind, head_only, keep_alive) -> the whole response

ERROR_RATE = "SAVA_ERROR_RATE"
DELAY_MS = "SAVA_DELAY_MS"
MAX_DELAY_MS = 3_600_000          # an hour
MAX_DENOMINATOR = 1_000_000       # an error rate is kept to this precision (1 in a million)
MAX_PENDING = 64                  # answers waiting for their delay before the connection stops reading


@dataclass(frozen=True, slots=True)
class Misbehaviour:
    """How badly to serve pages: `error_rate` of them answered 500, each answered `delay` seconds late."""
    error_rate: Fraction = Fraction(0)
    delay: float = 0.0


def misbehaviour_from(environment: Mapping[str, str]) -> Misbehaviour:
    """SAVA_ERROR_RATE and SAVA_DELAY_MS from `environment`; ValueError naming the variable when one is invalid."""
    rate = _number(environment, ERROR_RATE, "a number from 0 to 1 (the share of page requests answered 500)",
                   maximum=Decimal(1))
    delay = _number(environment, DELAY_MS, f"a number of milliseconds from 0 to {MAX_DELAY_MS}",
                    maximum=Decimal(MAX_DELAY_MS))
    return Misbehaviour(error_rate=Fraction(rate).limit_denominator(MAX_DENOMINATOR), delay=float(delay) / 1000)


def _number(environment: Mapping[str, str], name: str, expected: str, *, maximum: Decimal) -> Decimal:
    text = environment.get(name, "").strip()
    if not text:
        return Decimal(0)
    try:
        value = Decimal(text)
    except InvalidOperation:
        value = Decimal("NaN")
    if not value.is_finite() or not 0 <= value <= maximum:
        raise ValueError(f"{name} must be {expected}, got {text!r}")
    return value


class ErrorBudget:
    """Which page requests fail: after n of them, exactly floor(n × rate) have, spread evenly."""

    def __init__(self, rate: Fraction) -> None:
        self.numerator, self.denominator = rate.numerator, rate.denominator
        self.pages = 0

    def next_fails(self) -> bool:
        before = self.pages * self.numerator // self.denominator
        self.pages += 1
        return self.pages * self.numerator // self.denominator > before


def message_of(name: str, version: str, instance: str) -> dict[str, str]:
    """What `/api/message` answers (as JSON)."""
    return {"message": f"{name} {version} (instance {instance})", "name": name, "version": version,
            "instance": instance}


def prepare_answers(version: str, instance: str, name: str = "sava") -> Answers:
    """Every response the server can give, as bytes: kind is 'page', 'message', 'error', 'health',
    'not_allowed' or 'bad'."""
    title = html.escape(f"{name} {version}")
    page = (f"<!doctype html>\n<title>{title}</title>\n"
            f"<h1>{title}</h1>\n<p>instance {html.escape(instance)}</p>\n").encode()
    message = (json.dumps(message_of(name, version, instance)) + "\n").encode()
    kinds = {
        "page": ("200 OK", "text/html; charset=utf-8", page, ""),
        "message": ("200 OK", "application/json", message, ""),
        "error": ("500 Internal Server Error", "text/plain; charset=utf-8",
                  f"{name} {version} failed this request on purpose ({ERROR_RATE})\n".encode(), ""),
        "health": ("200 OK", "text/plain; charset=utf-8", b"ok\n", ""),
        "not_allowed": ("405 Method Not Allowed", "text/plain; charset=utf-8", b"method not allowed\n",
                        "Allow: GET, HEAD\r\n"),
        "bad": ("400 Bad Request", "text/plain; charset=utf-8", b"bad request\n", ""),
    }
    identity = f"X-Version: {version}\r\nX-Instance: {instance}\r\n"
    answers: Answers = {}
    for kind, (status, content_type, body, extra) in kinds.items():
        for head_only in (False, True):
            for keep_alive in (False, True):
                head = (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                        f"{identity}{extra}Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n")
                answers[kind, head_only, keep_alive] = head.encode("latin-1") + (b"" if head_only else body)
    return answers


class SavaConnection(asyncio.Protocol):
    """One client connection: parse requests with httptools, answer each from the prepared responses.

    Answers wait in `pending` with the loop time they are due (0: at once); they go out in order, those due by
    now in one write, so a delayed page holds up the answers pipelined behind it and nothing else."""

    transport: asyncio.Transport          # set by connection_made, before any other callback

    def __init__(self, answers: Answers, misbehaviour: Misbehaviour = Misbehaviour(),
                 errors: ErrorBudget | None = None) -> None:
        self.answers = answers
        self.delay = misbehaviour.delay
        self.errors = errors if misbehaviour.error_rate else None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.pending: collections.deque[tuple[float, bytes]] = collections.deque()
        self.last_due = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.closing = False
        self.write_paused = False
        self.backlogged = False
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.pending.clear()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_message_complete(self) -> None:
        method = self.parser.get_method()
        keep_alive = self.parser.should_keep_alive() and not self.closing
        due = 0.0
        if method not in (b"GET", b"HEAD"):
            kind = "not_allowed"
        elif (path := self.url.split(b"?", 1)[0]) == b"/health":
            kind = "health"
        else:
            failing = self.errors is not None and self.errors.next_fails()
            kind = "error" if failing else "message" if path == b"/api/message" else "page"
            if self.delay:
                due = self.loop.time() + self.delay
        self._answer(self.answers[kind, method == b"HEAD", keep_alive], due)
        self.closing = not keep_alive

    def _answer(self, response: bytes, due: float) -> None:
        self.last_due = max(due, self.last_due)
        self.pending.append((self.last_due, response))

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.closing = True         # answered as a plain request; the protocol switch is refused
        except httptools.HttpParserError:
            self._answer(self.answers["bad", False, False], 0.0)
            self.closing = True
        self._flush()

    def _flush(self) -> None:
        """Write the answers that are due, in order; wait for the next one, or close when done and asked to."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.pending and self.pending[-1][0] == 0.0:
            ready = [response for _, response in self.pending]      # nothing is delayed: the fast path
            self.pending.clear()
        else:
            now = self.loop.time()
            ready = []
            while self.pending and self.pending[0][0] <= now:
                ready.append(self.pending.popleft()[1])
        if ready:
            self.transport.write(b"".join(ready))
        if self.pending:
            self.timer = self.loop.call_at(self.pending[0][0], self._flush)
        elif self.closing:
            self.transport.close()
        self._set_backlogged(len(self.pending) >= MAX_PENDING)

    # flow control: a client that does not read its answers, or pipelines far ahead of them, stops being read
    def pause_writing(self) -> None:
        self.write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._update_reading()

    def _set_backlogged(self, backlogged: bool) -> None:
        if backlogged != self.backlogged:
            self.backlogged = backlogged
            self._update_reading()

    def _update_reading(self) -> None:
        if self.closing or self.transport.is_closing():
            return
        if self.write_paused or self.backlogged:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()


async def start_server(host: str, port: int, version: str, instance: str,
                       misbehaviour: Misbehaviour = Misbehaviour(), name: str = "sava") -> asyncio.Server:
    """Listen and serve (the caller closes the server)."""
    answers = prepare_answers(version, instance, name)
    errors = ErrorBudget(misbehaviour.error_rate)
    return await asyncio.get_running_loop().create_server(
        lambda: SavaConnection(answers, misbehaviour, errors), host, port, reuse_address=True, backlog=1024)


async def until_stopped() -> None:
    """Return on SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()


async def serve(host: str, port: int, version: str, instance: str,
                misbehaviour: Misbehaviour = Misbehaviour(), name: str = "sava") -> None:
    """Serve until SIGTERM or SIGINT."""
    server = await start_server(host, port, version, instance, misbehaviour, name)
    bad = (f", {ERROR_RATE}={float(misbehaviour.error_rate):g}" if misbehaviour.error_rate else "") + (
        f", {DELAY_MS}={misbehaviour.delay * 1000:g}" if misbehaviour.delay else "")
    print(f"{name} {version} ({instance}) serving on http://{host}:{port}/{bad}", flush=True)
    await until_stopped()
    server.close()
    print(f"{name} {version} ({instance}) stopped", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m control.demo.sava", description=__doc__.splitlines()[0])
    parser.add_argument("--version", required=True, help="the version it says it is, e.g. 1.0.0")
    parser.add_argument("--name", default="sava", help="the service it says it is, e.g. sava-backend1 (default: sava)")
    parser.add_argument("--frontend", action="store_true",
                        help="be the tutorial's frontend: each page shows the messages of the backends at the URLs "
                             "in $BACKEND and $BACKEND_* (control.demo.frontend)")
    parser.add_argument("--port", type=int, default=8080, help="used when $PORT_WEBPORT and $PORT are unset")
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    port = int(os.environ.get("PORT_WEBPORT") or os.environ.get("PORT") or args.port)
    instance = os.environ.get("VAMP_INSTANCE", "local")
    if args.frontend:
        from control.demo import frontend          # aiohttp: only the frontend needs it
        try:
            backends = frontend.backends_from(os.environ)
        except ValueError as exc:
            parser.error(str(exc))      # exit status 2
        uvloop.run(frontend.serve(args.host, port, args.name, args.version, instance, backends))
        return
    try:
        misbehaviour = misbehaviour_from(os.environ)
    except ValueError as exc:
        parser.error(str(exc))          # exit status 2
    uvloop.run(serve(args.host, port, args.version, instance, misbehaviour, args.name))


if __name__ == "__main__":
    main()
