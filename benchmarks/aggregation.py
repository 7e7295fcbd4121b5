"""The metrics aggregation benchmark: what `vamp run`'s per-second aggregation costs the gateway's throughput,
and how much memory it takes for many routes over its window.

1. Throughput, aggregation on against off. One nginx worker is the backend (pinned to CPU 1, like wrk).
   `vamp run` (pinned to CPU 0) serves, through a gateway made with its API, the proxy benchmark's 90%/10%
   split with a user-agent condition (benchmarks/proxy.py), plus a second gateway of `--routes` idle routes
   (each its own target), which the aggregation reads every second too. wrk loads the split for `--duration`
   seconds, after `--warmup`, once with `vamp run` as is and once with `--metrics-window 0` (no aggregation),
   alternately for `--rounds` rounds; each round starts a fresh platform for each. Reported per run: req/s,
   p50, p99, errors, the platform's CPU per request and CPU busy; then each round's on/off ratio and their
   median (the target: at most 3% lower, i.e. a ratio of at least 0.97).
2. Memory. In this process, the aggregation (control/metrics/aggregator.py) is fed snapshots of `--memory-routes`
   routes, each with one target, in one gateway (or one gateway each, `--gateway-per-route`), every route busy
   every second (the worst case: every series holds samples), for `--ticks` seconds (default: the window and 5
   more minutes, so every tier of the rings has wrapped). Reported: the memory it holds at the end
   (tracemalloc: what was allocated since it was made and is still alive), per route, and its CPU time per
   second of samples (timed apart, without tracemalloc). Then what the same number of routes costs every second
   when they receive nothing: the gateway's snapshot of them (a real runtime's, without sockets) and the
   aggregation, as a share of a core: what a saturated gateway loses to the aggregation.

    python benchmarks/aggregation.py [--only throughput,memory] [--duration 10] [--warmup 2] [--rounds 3]
                                     [--connections 50] [--routes 100] [--memory-routes 1000] [--window 3600]
                                     [--ticks N] [--gateway-per-route] [--json FILE]

Exit status: 0 when every run was clean, 1 when a server failed or wrk reported errors, 2 for bad arguments.
Processes, temporary directories and CPU pinning work as in benchmarks/proxy.py, whose helpers this uses.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import signal
import statistics
import sys
import tempfile
import time
import tracemalloc
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from control.metrics.aggregator import DEFAULT_WINDOW, Aggregator
from gateway import empty_stats
from gateway.config.load import from_dict
from gateway.runtime import snapshot as snapshots
from gateway.runtime.runtime import Runtime
from proxy import (BenchmarkError, Pinning, Processes, Terminated, WrkResult, backend_config, free_port,
                   integer_at_least, load_with_wrk, start_benchmark, start_nginx, vamp_command, wait_until_serving)

PARTS = ("throughput", "memory")
SPLIT = "bench"                     # the gateway under load
IDLE = "idle"                       # the gateway of idle routes
API_TIMEOUT = 30.0                  # seconds for one API call (a gateway of many routes takes a moment)
CPU_TICKS = 300                     # seconds of samples timed for the aggregation's CPU cost


# --- throughput ---------------------------------------------------------------------------------------------

def split_gateway(port: int, backend_port: int) -> dict:
    """benchmarks/proxy.py's gateway: 90%/10%, the canary's condition never matching wrk."""
    target = f"127.0.0.1:{backend_port}"
    return {"port": port, "bind": "127.0.0.1", "routes": {
        "stable": {"weight": "90%", "targets": [target]},
        "canary": {"weight": "10%", "condition": "user-agent = Firefox", "targets": [target]}}}


def idle_gateway(port: int, routes: int, first_target_port: int) -> dict:
    """`routes` routes sharing the traffic nobody sends, each with a target of its own (nothing listens)."""
    return {"port": port, "bind": "127.0.0.1", "routes": {
        f"idle-{index}": {"targets": [f"127.0.0.1:{first_target_port + index}"]} for index in range(routes)}}


def api_put(api_port: int, path: str, body: dict) -> None:
    request = urllib.request.Request(f"http://127.0.0.1:{api_port}{path}", data=json.dumps(body).encode(),
                                     method="PUT", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=API_TIMEOUT) as response:
        if response.status not in (200, 201, 202):
            raise BenchmarkError(f"PUT {path} answered {response.status}")


@dataclass
class Run:
    aggregation: bool
    round: int
    result: WrkResult


class ThroughputBench:
    """Starts the backend once, then a fresh `vamp run` per measurement, with or without aggregation."""

    def __init__(self, workdir: Path, pinning: Pinning, args: argparse.Namespace) -> None:
        self.workdir = workdir
        self.pinning = pinning
        self.args = args
        self.processes = Processes(workdir)
        self.backend_port = free_port()

    def run(self) -> list[Run]:
        runs = []
        try:
            config = backend_config(self.workdir / "backend", self.backend_port, self.args.connections)
            start_nginx(self.processes, "backend", self.pinning.client, config, self.backend_port)
            for round_ in range(1, self.args.rounds + 1):
                order = (True, False) if round_ % 2 else (False, True)     # drift hits both alike
                for aggregation in order:
                    label = "on" if aggregation else "off"
                    print(f"round {round_}: aggregation {label} ...", file=sys.stderr, flush=True)
                    runs.append(Run(aggregation, round_, self.measure(aggregation, f"{label}-{round_}")))
        finally:
            self.processes.stop_all()
        return runs

    def measure(self, aggregation: bool, name: str) -> WrkResult:
        api_port, port, idle_port = free_port(), free_port(), free_port()
        state = self.workdir / f"state-{name}"
        window = [] if aggregation else ["--metrics-window", "0"]
        self.processes.start("platform", [*self.pinning.proxy, *vamp_command(), "run", "--state-dir", str(state),
                                          "--api", f"127.0.0.1:{api_port}", *window])
        try:
            wait_until_serving(self.processes, "platform", api_port, "/ready")
            api_put(api_port, f"/api/v1/gateways/{SPLIT}", split_gateway(port, self.backend_port))
            if self.args.routes:
                api_put(api_port, f"/api/v1/gateways/{IDLE}", idle_gateway(idle_port, self.args.routes, 45000))
            wait_until_serving(self.processes, "platform", port)
            return load_with_wrk(self.processes, self.pinning, self.args, name, server="platform",
                                 url=f"http://127.0.0.1:{port}/")
        finally:
            self.processes.stop("platform")


def ratios(runs: list[Run], figure: str = "requests_per_second") -> list[float]:
    """Per round: `figure` (a WrkResult field) with aggregation over the same without."""
    found = []
    for round_ in sorted({run.round for run in runs}):
        on = next((r.result for r in runs if r.round == round_ and r.aggregation), None)
        off = next((r.result for r in runs if r.round == round_ and not r.aggregation), None)
        if on is not None and off is not None and getattr(on, figure) and getattr(off, figure):
            found.append(round(getattr(on, figure) / getattr(off, figure), 3))
    return found


def throughput_table(runs: list[Run]) -> str:
    rows = [("round", "aggregation", "req/s", "p50", "p99", "errors", "CPU/req", "CPU busy")]
    for run in runs:
        result = run.result
        cpu = "-" if result.server_cpu_us_per_request is None else f"{result.server_cpu_us_per_request:.1f} us"
        busy = "-" if result.server_cpu_busy_percent is None else f"{result.server_cpu_busy_percent:.0f}%"
        rows.append((str(run.round), "on" if run.aggregation else "off", f"{result.requests_per_second:,.0f}",
                     f"{result.p50_ms:.2f} ms", f"{result.p99_ms:.2f} ms", str(result.errors), cpu, busy))
    return _table(rows)


# --- memory ---------------------------------------------------------------------------------------------------

@dataclass
class Memory:
    routes: int
    gateways: int
    window_s: int
    ticks: int
    series: int
    bytes: int
    bytes_per_route: int
    cpu_ms_per_tick: float


def synthetic_snapshot(routes: int, gateway_per_route: bool) -> dict:
    """A gateway worker's snapshot (gateway/runtime/snapshot.py) of `routes` routes of one target each."""
    gateways: dict = {}
    for index in range(routes):
        name = f"gateway-{index}" if gateway_per_route else "gateway"
        gateway = gateways.setdefault(name, {"open_connections": 0, "in_flight": 0, "unrouted": empty_stats(),
                                             "routes": {}})
        gateway["routes"][f"route-{index}"] = {
            "stats": empty_stats(), "in_flight": 0, "idle_for": 0.0,
            "targets": {f"127.0.0.1:{20000 + index}": {"stats": empty_stats(), "in_flight": 0, "requests": 0,
                                                       "failures": 0, "down": False, "idle_for": 0.0}}}
    return {"gateways": gateways, "malformed": empty_stats()}


def serve_a_second(snapshot: dict, second: int) -> None:
    """Every route answers a few requests in a few latency buckets (its route's counters and its target's)."""
    for gateway in snapshot["gateways"].values():
        for route in gateway["routes"].values():
            for stats in (route["stats"], *(target["stats"] for target in route["targets"].values())):
                for bucket, count in ((1, 3), (2, 5), (4 + second % 3, 1)):
                    stats["buckets"][bucket] += count
                stats["classes"][2] += 8
                stats["classes"][5] += 1
                stats["count"] += 9
                stats["sum"] += 0.03


def feed(aggregator: Aggregator, snapshot: dict, ticks: int) -> float:
    """`ticks` seconds of samples after a baseline; the CPU seconds the aggregation spent on them."""
    cpu = 0.0
    for second in range(ticks + 1):
        if second:
            serve_a_second(snapshot, second)
        started = time.process_time()
        aggregator.ingest([snapshot], 1_000_000 + second)
        cpu += time.process_time() - started
    return cpu


@dataclass
class Idle:
    routes: int
    snapshot_ms: float          # reading the gateway's counters, per second
    aggregation_ms: float       # recording them, per second


async def _measure_idle(routes: int, seconds: int) -> Idle:
    runtime = Runtime(asyncio.get_running_loop())

    async def no_listeners(*_: object) -> None:
        pass
    runtime._open_listeners = no_listeners  # type: ignore[method-assign]
    await runtime.apply(from_dict({"gateways": {IDLE: idle_gateway(19999, routes, 20000)}}))
    aggregator = Aggregator([], window=DEFAULT_WINDOW)
    taking = recording = 0.0
    for second in range(seconds + 1):
        started = time.process_time()
        snapshot = snapshots.take(runtime)
        taken = time.process_time()
        aggregator.ingest([snapshot], 1_000_000 + second)
        if second:
            taking += taken - started
            recording += time.process_time() - taken
    await runtime.close()
    return Idle(routes, round(taking / seconds * 1000, 2), round(recording / seconds * 1000, 2))


def measure_idle(routes: int, seconds: int = CPU_TICKS) -> Idle:
    """What the aggregation costs `vamp run`'s event loop every second for `routes` routes that receive
    nothing: taking the gateway's snapshot (a real runtime's, without listeners) and recording it."""
    return asyncio.run(_measure_idle(routes, seconds))


def measure_memory(routes: int, window: int, ticks: int, gateway_per_route: bool) -> Memory:
    """The CPU time per second of samples (without tracemalloc, which slows everything down: over at most
    CPU_TICKS seconds), then the memory held after `ticks` seconds (with it)."""
    timed = min(ticks, CPU_TICKS)
    cpu = feed(Aggregator([], window=window), synthetic_snapshot(routes, gateway_per_route), timed)
    snapshot = synthetic_snapshot(routes, gateway_per_route)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    aggregator = Aggregator([], window=window)
    feed(aggregator, snapshot, ticks)
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return Memory(routes=routes, gateways=len(snapshot["gateways"]), window_s=window, ticks=ticks,
                  series=aggregator.series_count(), bytes=held, bytes_per_route=held // routes,
                  cpu_ms_per_tick=round(cpu / timed * 1000, 2))


# --- report ---------------------------------------------------------------------------------------------------

def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = ["  ".join([row[0].ljust(widths[0])] + [cell.rjust(w) for cell, w in zip(row[1:], widths[1:])])
             for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def parse_parts(text: str) -> list[str]:
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts or any(part not in PARTS for part in parts):
        raise argparse.ArgumentTypeError(f"choose from {', '.join(PARTS)} (got {text!r})")
    return [part for part in PARTS if part in parts]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="What vamp run's metrics aggregation costs: throughput "
                                                 "(on against off) and memory.")
    parser.add_argument("--only", type=parse_parts, default=list(PARTS), help="throughput,memory (both)")
    parser.add_argument("--duration", type=integer_at_least(1), default=10, help="seconds per wrk run (10)")
    parser.add_argument("--warmup", type=integer_at_least(0), default=2, help="seconds of warm-up per run (2)")
    parser.add_argument("--rounds", type=integer_at_least(1), default=3, help="on/off pairs (3)")
    parser.add_argument("--connections", type=integer_at_least(1), default=50, help="wrk connections (50)")
    parser.add_argument("--routes", type=integer_at_least(0), default=100,
                        help="idle routes the platform also serves in the throughput runs (100)")
    parser.add_argument("--memory-routes", type=integer_at_least(1), default=1000, help="routes measured (1000)")
    parser.add_argument("--window", type=integer_at_least(1), default=3600, help="the metrics window, s (3600)")
    parser.add_argument("--ticks", type=integer_at_least(1),
                        help="seconds of samples for the memory part (default: the window + 300)")
    parser.add_argument("--gateway-per-route", action="store_true", help="memory: one gateway per route")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures to FILE as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    figures: dict = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    clean = True
    try:
        if "throughput" in args.only:
            pinning, environment = start_benchmark(("nginx", "wrk"))
            figures["environment"] = environment
            print(f"placement: {pinning.note}")
            print(f"load: wrk -t1 -c{args.connections} -d{args.duration}s --latency after {args.warmup} s of "
                  f"warm-up; the platform also serves {args.routes} idle routes\n", flush=True)
            with tempfile.TemporaryDirectory(prefix="vamp-bench-aggregation-") as tmp:
                try:
                    runs = ThroughputBench(Path(tmp), pinning, args).run()
                except BenchmarkError as error:
                    print(f"throughput failed: {error}", file=sys.stderr)
                    runs, clean = [], False
            if runs:
                print(throughput_table(runs))
                found, cpu = ratios(runs), ratios(runs, "server_cpu_us_per_request")
                median = statistics.median(found) if found else None
                print()
                for label, values in (("req/s", found), ("CPU per request", cpu)):
                    if values:
                        print(f"{label} with aggregation / without, per round: "
                              f"{', '.join(f'{r:.3f}' for r in values)}; median {statistics.median(values):.3f}")
                errors = sum(run.result.errors for run in runs)
                if errors:
                    print(f"wrk reported {errors} errors", file=sys.stderr)
                    clean = False
                figures["throughput"] = {"routes": args.routes, "runs": [
                    {"round": run.round, "aggregation": run.aggregation, **asdict(run.result),
                     "errors": run.result.errors} for run in runs], "ratios": found, "median_ratio": median,
                    "cpu_ratios": cpu}
        if "memory" in args.only:
            ticks = args.ticks or args.window + 300
            print(f"\nmemory: {args.memory_routes} routes, all busy every second, window {args.window} s, "
                  f"{ticks} s of samples ...", flush=True)
            memory = measure_memory(args.memory_routes, args.window, ticks, args.gateway_per_route)
            print(_table([("routes", "gateways", "series", "memory", "per route", "CPU per second of samples"),
                          (str(memory.routes), str(memory.gateways), str(memory.series),
                           f"{memory.bytes / 1e6:.1f} MB", f"{memory.bytes_per_route / 1e3:.1f} KB",
                           f"{memory.cpu_ms_per_tick:.2f} ms")]))
            figures["memory"] = asdict(memory)
            idle = measure_idle(args.memory_routes)
            total = idle.snapshot_ms + idle.aggregation_ms
            print(f"\nidle: {idle.routes} routes that receive nothing cost the platform {idle.snapshot_ms:.2f} ms "
                  f"(the gateway's snapshot) + {idle.aggregation_ms:.2f} ms (the aggregation) of CPU a second: "
                  f"{total / 10:.2f}% of a core")
            figures["idle"] = asdict(idle)
    except (KeyboardInterrupt, Terminated) as interruption:
        print("interrupted; every process started was stopped", file=sys.stderr)
        return 130 if isinstance(interruption, KeyboardInterrupt) else 128 + signal.SIGTERM
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
