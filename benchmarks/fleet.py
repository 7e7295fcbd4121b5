"""The fleet benchmark: how soon every gateway of a fleet fed from etcd serves a write, and how many writes a
fleet takes per second, beside etcd's own figures measured in the same run.

For each fleet size (`--fleets`, default 1, 3 and 10 gateway processes), one etcd member and one nginx worker
with two tiny backends (`X-Version: a` and `b`) run on loopback; gateway i is `vamp gateway --config-store
etcd://…/bench-N --bind 127.0.0.(2+i)`, all on one port, the first seeding the store with 100% to `a`.

1. Propagation. `--changes` writes switch the split between 100/0 and 0/100, each a PATCH through the next
   gateway's admin API in turn. Once a write returns, every gateway is probed with new connections until it
   answers from the new route: the write's propagation time is the slowest gateway's (0 when the first probe
   already saw it). The gateway written to must never answer from the old route after its write returned
   (`stale`). Reported: p50, p99 and max over the writes, and the same from the write's start. The peer:
   etcd alone, from a put's start to a watcher on another connection seeing it (a watcher sees a put before
   the put returns, so from the start is the only fair comparison).
2. Sustained writes. For `--seconds`, one writer PATCHes as fast as the answers come, through each gateway in
   turn: writes per second and how many were refused. The peer: sequential etcd transactions from one client.

    python benchmarks/fleet.py [--fleets 1,3,10] [--changes 100] [--seconds 5] [--json FILE]

Exit status: 0 when every write was answered 200 and no stale answer was seen, 1 otherwise, 2 for bad
arguments. Needs etcd and nginx (make system-deps); processes and temporary directories as benchmarks/proxy.py.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp

from gateway.store.etcd import EtcdClient, StoreAddress
from proxy import (BenchmarkError, Processes, Terminated, command_version, free_port, integer_at_least,
                   require_program, start_benchmark, start_nginx, vamp_command, wait_until_serving)
from reconfig import PATCH_PATH, backends_config, gateway_config, weights_patch

SWITCHING = ({"a": 0, "b": 100}, {"a": 100, "b": 0})
NEW_ROUTE = ("b", "a")              # the route each of SWITCHING sends everything to
PROBE_DEADLINE = 10.0               # seconds a gateway gets to serve a write before the benchmark gives up
PROBE_TIMEOUT = 2.0                 # seconds for one probe
START_TIMEOUT = 30.0
WRITE_TIMEOUT = 15.0


@dataclass
class Percentiles:
    count: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of(cls, seconds: list[float]) -> Percentiles:
        if not seconds:
            return cls(0, 0.0, 0.0, 0.0)
        ordered = sorted(seconds)
        p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
        return cls(len(ordered), round(statistics.median(ordered) * 1000, 2), round(p99 * 1000, 2),
                   round(ordered[-1] * 1000, 2))


@dataclass
class FleetFigures:
    gateways: int
    write_round_trip: Percentiles       # a PATCH's round trip (it returns once its gateway serves it)
    every_gateway_serving: Percentiles  # from a write's return to the slowest gateway serving it
    from_write_start: Percentiles       # the same, from the write's start
    stale: int                          # old answers from the gateway written to, after its write returned
    failed_writes: int
    writes_per_second: float
    refused_writes: int


@dataclass
class EtcdFigures:
    watch_notified: Percentiles         # from a put's start to a watcher (another connection) seeing it
    transactions_per_second: float


# --- probes and writes ----------------------------------------------------------------------------------------

async def route_of(host: str, port: int) -> str | None:
    """X-Version of one GET on a new connection to host:port (None when it failed)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), PROBE_TIMEOUT)
    except (TimeoutError, OSError):
        return None
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), PROBE_TIMEOUT)
    except (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return None
    finally:
        writer.close()
    for line in head.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() == "x-version":
            return value.strip()
    return None


async def serving_after(host: str, port: int, expected: str, returned: float) -> tuple[float, int]:
    """(seconds after `returned` until host:port answered from `expected`, 0 when its first probe already did;
    old answers seen meanwhile)."""
    stale, first = 0, True
    while time.perf_counter() - returned < PROBE_DEADLINE:
        route = await route_of(host, port)
        if route == expected:
            return (0.0 if first else time.perf_counter() - returned), stale
        stale += route is not None
        first = False
    raise BenchmarkError(f"{host}:{port} did not serve the route {expected!r} within {PROBE_DEADLINE:.0f} s")


async def patch(session: aiohttp.ClientSession, admin_port: int, weights: dict[str, int]) -> int:
    async with session.patch(f"http://127.0.0.1:{admin_port}{PATCH_PATH}", data=weights_patch(weights),
                             headers={"Content-Type": "application/json"}) as answer:
        await answer.read()
        return answer.status


# --- one fleet --------------------------------------------------------------------------------------------------

class Fleet:
    def __init__(self, size: int, store_url: str, backends: dict[str, int], workdir: Path,
                 processes: Processes) -> None:
        self.hosts = [f"127.0.0.{2 + index}" for index in range(size)]
        self.port = free_port()
        self.admin_ports = [free_port() for _ in range(size)]
        self.store_url = store_url
        self.backends = backends
        self.workdir = workdir
        self.processes = processes

    def start(self) -> None:
        seed = self.workdir / "seed.yaml"
        seed.write_text(gateway_config(self.port, self.backends, {"a": 100, "b": 0}))
        for index, (host, admin_port) in enumerate(zip(self.hosts, self.admin_ports)):
            name = f"gateway-{len(self.hosts)}-{index}"
            self.processes.start(name, [*vamp_command(), "gateway", "--config-store", self.store_url,
                                        *(["--config", str(seed)] if index == 0 else []), "--bind", host,
                                        "--admin", f"127.0.0.1:{admin_port}",
                                        "--state-dir", str(self.workdir / name)])
            wait_until_serving(self.processes, name, admin_port, "/ready")

    def stop(self) -> None:
        for index in range(len(self.hosts)):
            self.processes.stop(f"gateway-{len(self.hosts)}-{index}")

    async def measure(self, changes: int, seconds: int) -> FleetFigures:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WRITE_TIMEOUT)) as session:
            for host in self.hosts:       # every gateway serves the seed before the first write
                await serving_after(host, self.port, "a", time.perf_counter())
            round_trips, serving, from_start, stale, failed = [], [], [], 0, 0
            for change in range(changes):
                weights, expected = SWITCHING[change % 2], NEW_ROUTE[change % 2]
                writer = change % len(self.hosts)
                started = time.perf_counter()
                status = await patch(session, self.admin_ports[writer], weights)
                returned = time.perf_counter()
                if status != 200:
                    failed += 1
                    continue
                round_trips.append(returned - started)
                delays = await asyncio.gather(*(serving_after(host, self.port, expected, returned)
                                                for host in self.hosts))
                serving.append(max(delay for delay, _ in delays))
                from_start.append(serving[-1] + returned - started)
                stale += delays[writer][1]
            written, refused = await self.sustained(session, seconds)
        return FleetFigures(len(self.hosts), Percentiles.of(round_trips), Percentiles.of(serving),
                            Percentiles.of(from_start), stale, failed, round(written / seconds, 1), refused)

    async def sustained(self, session: aiohttp.ClientSession, seconds: int) -> tuple[int, int]:
        """(writes answered 200, writes refused) in `seconds` of back-to-back PATCHes through each gateway in
        turn."""
        written = refused = 0
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            status = await patch(session, self.admin_ports[(written + refused) % len(self.hosts)],
                                 SWITCHING[(written + refused) % 2])
            if status == 200:
                written += 1
            else:
                refused += 1
        return written, refused


# --- etcd alone: the peer ---------------------------------------------------------------------------------------

async def measure_etcd(store_url: str, changes: int, seconds: int) -> EtcdFigures:
    address = StoreAddress.parse(store_url)
    writer, watcher = EtcdClient(address), EtcdClient(address)
    key = address.key("watched")
    try:
        await writer.connect()
        await watcher.connect()
        seen: asyncio.Queue[float] = asyncio.Queue()
        watch = await watcher.watch(key)

        async def follow() -> None:
            async for _event in watch:
                seen.put_nowait(time.perf_counter())
        following = asyncio.get_running_loop().create_task(follow())
        notified = []
        for change in range(changes):
            started = time.perf_counter()
            await writer.put(key, str(change).encode())
            notified.append(await asyncio.wait_for(seen.get(), PROBE_DEADLINE) - started)
        await watch.cancel()
        following.cancel()
        count, deadline = 0, time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            current = await writer.get(key)
            await writer.transaction(compare=[writer.transactions.mod(key) == current.mod_revision],
                                     success=[writer.transactions.put(key, str(count).encode())], failure=[])
            count += 1
        return EtcdFigures(Percentiles.of(notified), round(count / seconds, 1))
    finally:
        await writer.close()
        await watcher.close()


# --- the run ------------------------------------------------------------------------------------------------------

def start_etcd(processes: Processes, workdir: Path) -> str:
    etcd = require_program("etcd")
    client, peer = free_port(), free_port()
    processes.start("etcd", [etcd, "--name", "bench", "--data-dir", str(workdir / "etcd"),
                             "--listen-client-urls", f"http://127.0.0.1:{client}",
                             "--advertise-client-urls", f"http://127.0.0.1:{client}",
                             "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                             "--initial-cluster", f"bench=http://127.0.0.1:{peer}", "--log-level", "warn"])
    wait_until_serving(processes, "etcd", client, "/health")
    return f"etcd://127.0.0.1:{client}"


def format_report(fleets: list[FleetFigures], etcd: EtcdFigures | None) -> str:
    lines = ["every gateway serving a write, from the write's return (ms); sustained writes through the fleet",
             "", f"{'gateways':>8}  {'p50':>7}  {'p99':>7}  {'max':>7}  {'write p50':>9}  {'stale':>5}  "
                 f"{'failed':>6}  {'writes/s':>8}  {'refused':>7}"]
    for figures in fleets:
        serving, trip = figures.every_gateway_serving, figures.write_round_trip
        lines.append(f"{figures.gateways:>8}  {serving.p50_ms:>7.2f}  {serving.p99_ms:>7.2f}  {serving.max_ms:>7.2f}  "
                     f"{trip.p50_ms:>9.2f}  {figures.stale:>5}  {figures.failed_writes:>6}  "
                     f"{figures.writes_per_second:>8.1f}  {figures.refused_writes:>7}")
    if etcd is not None:
        watch = etcd.watch_notified
        lines += ["", f"etcd alone (the peer): a watcher sees a put p50 {watch.p50_ms:.2f} ms, p99 {watch.p99_ms:.2f}"
                      f" ms; {etcd.transactions_per_second:.1f} sequential transactions/s"]
        for figures in fleets:
            rate = figures.writes_per_second / etcd.transactions_per_second if etcd.transactions_per_second else 0
            start = figures.from_write_start
            p50_ratio = start.p50_ms / watch.p50_ms if watch.p50_ms else 0
            p99_ratio = start.p99_ms / watch.p99_ms if watch.p99_ms else 0
            lines.append(f"  {figures.gateways:>2} gateway(s): from the write's start p50 {start.p50_ms:.2f} ms "
                         f"({p50_ratio:.1f}x etcd's), p99 {start.p99_ms:.2f} ms ({p99_ratio:.1f}x); "
                         f"write rate {rate:.2f}x etcd's")
    return "\n".join(lines)


def parse_fleets(text: str) -> list[int]:
    try:
        sizes = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--fleets takes sizes like 1,3,10, got {text!r}") from None
    if not sizes or any(not 1 <= size <= 200 for size in sizes):
        raise argparse.ArgumentTypeError("every fleet size must be between 1 and 200")
    return sizes


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Measure how soon every gateway of an etcd-fed fleet serves a "
                                                 "write, and the write rate it sustains.")
    parser.add_argument("--fleets", type=parse_fleets, default=[1, 3, 10], help="fleet sizes (1,3,10)")
    parser.add_argument("--changes", type=integer_at_least(2), default=100, help="writes timed per fleet (100)")
    parser.add_argument("--seconds", type=integer_at_least(1), default=5, help="seconds of sustained writes (5)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures to FILE as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _pinning, environment = start_benchmark(("nginx",))
    environment["etcd"] = command_version([require_program("etcd"), "--version"])
    print(f"etcd: {environment['etcd']}", flush=True)
    fleets: list[FleetFigures] = []
    etcd: EtcdFigures | None = None
    error = None
    try:
        with tempfile.TemporaryDirectory(prefix="vamp-fleet-") as tmp:
            workdir = Path(tmp)
            processes = Processes(workdir)
            try:
                store = start_etcd(processes, workdir)
                backends = {"a": free_port(), "b": free_port()}
                start_nginx(processes, "backends", [], backends_config(workdir / "backends", backends, 64),
                            backends["a"])
                print("measuring etcd alone ...", file=sys.stderr, flush=True)
                etcd = asyncio.run(measure_etcd(store + "/peer", args.changes, args.seconds))
                for size in args.fleets:
                    print(f"measuring a fleet of {size} ...", file=sys.stderr, flush=True)
                    fleet_dir = workdir / f"fleet-{size}"
                    fleet_dir.mkdir()
                    fleet = Fleet(size, f"{store}/bench-{size}", backends, fleet_dir, processes)
                    try:
                        fleet.start()
                        fleets.append(asyncio.run(fleet.measure(args.changes, args.seconds)))
                    finally:
                        fleet.stop()
            except BenchmarkError as failure:
                error = str(failure)
            finally:
                processes.stop_all()
    except (KeyboardInterrupt, Terminated) as interruption:
        print("interrupted; every process started was stopped", file=sys.stderr)
        return 130 if isinstance(interruption, KeyboardInterrupt) else 128 + signal.SIGTERM

    print(format_report(fleets, etcd))
    if error is not None:
        print(f"\nbenchmark failed: {error}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps({
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "environment": environment,
            "arguments": {key: value for key, value in vars(args).items() if key != "json"},
            "fleets": [asdict(figures) for figures in fleets], "etcd": None if etcd is None else asdict(etcd),
            "error": error}, indent=2) + "\n")
    clean = error is None and all(f.failed_writes == 0 and f.stale == 0 for f in fleets)
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
