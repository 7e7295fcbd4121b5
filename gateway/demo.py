"""`make run-gateway`: the gateway with examples/gateways.yaml in front of two small demo backends.

    python -m gateway.demo                   # backends on 8081 (1.0) and 8082 (1.1), gateway on 8000
    python -m gateway.demo backend --port 8081 --version 1.0     # one demo backend alone

The demo backend answers every request with a short page and an `X-Version` header naming its version, so a
split is visible from `curl -si`. Everything started here stops when this process stops.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "gateways.yaml"


class DemoBackend(asyncio.Protocol):
    """A tiny keep-alive HTTP/1.1 server: enough for a demo, not a general server."""

    def __init__(self, version: str) -> None:
        body = (f"<!doctype html><title>demo {version}</title><h1>Hello from demo {version}</h1>\n").encode()
        self.response = (b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nX-Version: "
                         + version.encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        self.buffer = b""

    # asyncio hands a stream protocol a Transport; typeshed declares the base method with BaseTransport.
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        # Requests to the demo carry no body: each blank line ends one request.
        self.buffer += data
        answers = 0
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            self.buffer = self.buffer[end + 4:]
            answers += 1
        if answers:
            self.transport.write(self.response * answers)
        if len(self.buffer) > 65536:
            self.transport.close()


async def serve_backend(port: int, version: str) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: DemoBackend(version), "127.0.0.1", port, reuse_address=True)
    async with server:
        await server.serve_forever()


def _wait_ready(url: str, deadline: float, proc: subprocess.Popen[bytes]) -> bool:
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return True
        except OSError:
            time.sleep(0.1)
    return False


def run_demo(config: Path, admin: str) -> int:
    procs = [subprocess.Popen([sys.executable, "-m", "gateway.demo", "backend", "--port", str(port),
                               "--version", version])
             for port, version in ((8081, "1.0"), (8082, "1.1"))]
    gateway = subprocess.Popen([sys.executable, "-m", "gateway", "gateway", "--config", str(config),
                                "--admin", admin])
    procs.append(gateway)
    try:
        if not _wait_ready(f"http://{admin}/ready", time.monotonic() + 15, gateway):
            print("vamp demo: the gateway did not become ready; see the messages above", file=sys.stderr)
            return 1
        print("\nVamp gateway is up:\n"
              "  try       curl -si http://127.0.0.1:8000/            (90% demo 1.0, 10% demo 1.1)\n"
              "  Firefox   curl -si -A 'Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 "
              "Firefox/120.0' http://127.0.0.1:8000/   (always 1.1)\n"
              f"  metrics   curl -s http://{admin}/metrics\n"
              "Press Ctrl-C to stop.\n", flush=True)
        return gateway.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.demo")
    sub = parser.add_subparsers(dest="command")
    backend = sub.add_parser("backend", help="run one demo backend")
    backend.add_argument("--port", type=int, required=True)
    backend.add_argument("--version", required=True)
    parser.add_argument("--config", type=Path, default=EXAMPLE)
    parser.add_argument("--admin", default="127.0.0.1:9090")
    args = parser.parse_args(argv)
    if args.command == "backend":
        import uvloop
        signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
        uvloop.run(serve_backend(args.port, args.version))
        return 0
    return run_demo(args.config, args.admin)


if __name__ == "__main__":
    sys.exit(main())
