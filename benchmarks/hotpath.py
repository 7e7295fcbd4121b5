"""The gateway's per-request Python cost, without sockets: a client protocol fed one request and the upstream
protocol fed its response, over and over, on the route table `benchmarks/proxy.py` measures (90%/10% with a
user-agent condition). Syscalls and the kernel's TCP stack are left out on purpose; this is what compiled code
would have to beat. `--rules` measures the same table with a path rewrite and request and response header rules
on both routes (docs/rewrites.md).

    .venv/bin/python benchmarks/hotpath.py [--requests 50000] [--profile] [--rules] \
        [--access-log FILE [--log-format json]]

`--access-log FILE` gives the gateway an access log (docs/access-logs.md) written to FILE ("/dev/null" measures
the formatting and hand-off without the disk).
"""
from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import time

import uvloop

from gateway.config.load import load_text
from gateway.proxy.client import ClientConnection
from gateway.proxy.upstream import UpstreamConnection, pool_of
from gateway.runtime.runtime import Runtime

CONFIG = """
gateways:
  bench:
    port: 19102
    bind: 127.0.0.1
    routes:
      stable: {weight: 90%, targets: ["127.0.0.1:19001"]}
      canary: {weight: 10%, condition: "user-agent = Firefox", targets: ["127.0.0.1:19001"]}
"""
RULES = """
        rewrite: {path: {regex: "^/(.*)", replace: "/app/\\\\1"}}
        request_headers: {set: {X-Env: bench}}
        response_headers: {remove: [Server]}"""
CONFIG_WITH_RULES = f"""
gateways:
  bench:
    port: 19102
    bind: 127.0.0.1
    routes:
      stable:
        weight: 90%
        targets: ["127.0.0.1:19001"]{RULES}
      canary:
        weight: 10%
        condition: "user-agent = Firefox"
        targets: ["127.0.0.1:19001"]{RULES}
"""
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:19002\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n"
RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Wed, 25 Nov 2026 14:50:00 GMT\r\n"
            b"Content-Type: text/plain\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello")


class RecordingTransport:
    """Just enough of an asyncio transport: writes are kept, nothing is sent."""

    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def writelines(self, parts: list[bytes]) -> None:
        self.written.append(b"".join(parts))

    def get_extra_info(self, name: str) -> object:
        return ("127.0.0.1", 5555) if name == "peername" else None

    def set_write_buffer_limits(self, high: int) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


async def measure(requests: int, profile: bool, rules: bool = False, access_log: str | None = None,
                  log_format: str = "json") -> None:
    runtime = Runtime(asyncio.get_running_loop())

    async def no_listeners(*_: object) -> None:
        pass
    runtime._open_listeners = no_listeners  # type: ignore[method-assign]
    config = CONFIG_WITH_RULES if rules else CONFIG
    if access_log is not None:
        setting = f"    access_log: {{format: {log_format}, path: {json.dumps(access_log)}}}\n"
        config = config.replace("    bind: 127.0.0.1\n", "    bind: 127.0.0.1\n" + setting)
    await runtime.apply(load_text(config))
    client = ClientConnection(runtime, 19102)
    client.connection_made(RecordingTransport())  # type: ignore[arg-type]
    for _, _, target in runtime.table.targets():     # one warm pooled connection per target
        upstream = UpstreamConnection(pool_of(target))
        upstream.connection_made(RecordingTransport())  # type: ignore[arg-type]
        pool_of(target).release(upstream)

    def run(count: int) -> None:
        for _ in range(count):
            client.data_received(REQUEST)
            client.current.upstream.data_received(RESPONSE)  # type: ignore[union-attr]

    run(1000)
    started = time.perf_counter()
    run(requests)
    elapsed = time.perf_counter() - started
    print(f"{elapsed / requests * 1e6:.2f} µs of Python per proxied request ({requests} requests)")
    if profile:
        profiler = cProfile.Profile()
        profiler.enable()
        run(min(requests, 20000))
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(20)
    await runtime.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--profile", action="store_true", help="also print a cProfile of the path")
    parser.add_argument("--rules", action="store_true", help="routes with a path rewrite and header rules")
    parser.add_argument("--access-log", metavar="FILE", help="log every request to FILE (docs/access-logs.md)")
    parser.add_argument("--log-format", choices=("json", "combined"), default="json")
    args = parser.parse_args()
    uvloop.run(measure(args.requests, args.profile, args.rules, args.access_log, args.log_format))


if __name__ == "__main__":
    main()
