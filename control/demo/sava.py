"""The quickstart's demo service "sava": a tiny keep-alive HTTP/1.1 server that says which version it is.

    python -m control.demo.sava --version 1.0.0 [--port 8080] [--host 127.0.0.1]

It listens on $PORT_WEBPORT, else $PORT, else --port (the local orchestrator sets both). GET and HEAD on any
path answer a small HTML page naming the version and the instance ($VAMP_INSTANCE), with the headers
`X-Version` and `X-Instance`; `/health` answers 200 "ok"; other methods get 405. Answers are prepared once at
start, requests are parsed by httptools and answered with one write per read, so it keeps up with thousands
of requests per second through the gateway. SIGTERM or SIGINT stops it cleanly (exit status 0).
"""
from __future__ import annotations

import argparse
import asyncio
import html
import os
import signal

import httptools
import uvloop

Answers = dict[tuple[str, bool, bool], bytes]     # (kind, head_only, keep_alive) -> the whole response


def prepare_answers(version: str, instance: str) -> Answers:
    """Every response the server can give, as bytes: kind is 'page', 'health', 'not_allowed' or 'bad'."""
    page = (f"<!doctype html>\n<title>sava {html.escape(version)}</title>\n"
            f"<h1>sava {html.escape(version)}</h1>\n<p>instance {html.escape(instance)}</p>\n").encode()
    kinds = {
        "page": ("200 OK", "text/html; charset=utf-8", page, ""),
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
    """One client connection: parse requests with httptools, answer each from the prepared responses."""

    def __init__(self, answers: Answers) -> None:
        self.answers = answers
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.output: list[bytes] = []
        self.closing = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_message_complete(self) -> None:
        method = self.parser.get_method()
        keep_alive = self.parser.should_keep_alive() and not self.closing
        if method not in (b"GET", b"HEAD"):
            kind = "not_allowed"
        elif self.url.split(b"?", 1)[0] == b"/health":
            kind = "health"
        else:
            kind = "page"
        self.output.append(self.answers[kind, method == b"HEAD", keep_alive])
        self.closing = not keep_alive

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.closing = True         # answered as a plain request; the protocol switch is refused
        except httptools.HttpParserError:
            self.output.append(self.answers["bad", False, False])
            self.closing = True
        if self.output:
            self.transport.write(b"".join(self.output))
            self.output.clear()
        if self.closing:
            self.transport.close()

    # flow control: a client that does not read its answers stops being read
    def pause_writing(self) -> None:
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()


async def serve(host: str, port: int, version: str, instance: str) -> None:
    """Serve until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    answers = prepare_answers(version, instance)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server = await loop.create_server(lambda: SavaConnection(answers), host, port, reuse_address=True,
                                      backlog=1024)
    print(f"sava {version} ({instance}) serving on http://{host}:{port}/", flush=True)
    await stop.wait()
    server.close()
    print(f"sava {version} ({instance}) stopped", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m control.demo.sava", description=__doc__.splitlines()[0])
    parser.add_argument("--version", required=True, help="the version it says it is, e.g. 1.0.0")
    parser.add_argument("--port", type=int, default=8080, help="used when $PORT_WEBPORT and $PORT are unset")
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    port = int(os.environ.get("PORT_WEBPORT") or os.environ.get("PORT") or args.port)
    uvloop.run(serve(args.host, port, args.version, os.environ.get("VAMP_INSTANCE", "local")))


if __name__ == "__main__":
    main()
