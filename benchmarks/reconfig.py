"""The reconfiguration benchmark: what live changes through the admin API cost the traffic, and how soon
every worker serves a change.

1. Throughput under changes. One nginx worker serves two tiny backends (`X-Version: a` and `b`, pinned to
   CPU 1 with wrk); `vamp gateway` (one worker, pinned to CPU 0) splits 90%/10% between them. wrk loads it
   once with no changes, then once more while this script PATCHes the weights through the admin API at
   `--rate` changes per second (alternating 90/10 and 10/90). Reported: req/s and p99 of both runs, their
   ratio, the changes applied and how long each write took to answer.
2. Propagation. `vamp gateway --workers 2` (unpinned: two workers) switches between 100/0 and 0/100
   `--changes` times. After each PATCH returns, new connections (one GET each) are opened until `--streak`
   consecutive ones show the new route. Reported per change: the write's round trip, when the change was
   first seen after the write returned (0 when the first new connection already saw it) and how many
   answers still came from the old route; the contract is that a write returns once every worker serves
   it, so stale answers should be 0 and the visible delay under 100 ms.

    python benchmarks/reconfig.py [--duration 10] [--warmup 2] [--connections 50] [--rate 10]
                                  [--changes 20] [--streak 10] [--json FILE]

Exit status: 0 when every run was clean (no wrk errors, every write answered 200, no stale answer), 1
otherwise, 2 for bad arguments. Processes, temporary directories and CPU pinning work as in
benchmarks/proxy.py, whose helpers this script uses.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from proxy import (KEEPALIVE_REQUESTS, WRK_GRACE, BenchmarkError, Pinning, Processes, Terminated, WrkResult,
                   free_port, integer_at_least, nginx_common, nginx_temp_paths, parse_wrk_output, require_program,
                   start_benchmark, vamp_command, wait_until_serving)

GATEWAY = "bench"
PATCH_PATH = f"/api/v1/gateways/{GATEWAY}"
ADMIN_TIMEOUT = 10.0          # seconds an admin API write may take before it counts as failed
PROBE_TIMEOUT = 2.0           # seconds for one probe request on a new connection
PROBES_PER_CHANGE = 1000      # at most this many new connections while waiting for a change to show
BUSY_ENOUGH_PERCENT = 90      # below this CPU use the gateway was not what limited a wrk run


# --- configurations ----------------------------------------------------------------------------------------

def backends_config(prefix: Path, ports: dict[str, int], connections: int) -> str:
    """One nginx worker, one server per route, each answering 200 with its name in X-Version."""
    servers = "".join(f"""    server {{
        listen 127.0.0.1:{port};
        location / {{
            default_type text/plain;
            add_header X-Version {name};
            return 200 "hello from {name}\\n";
        }}
    }}
""" for name, port in ports.items())
    return nginx_common(prefix, connections) + f"""http {{
    access_log off;
{nginx_temp_paths(prefix)}
    keepalive_requests {KEEPALIVE_REQUESTS};
{servers}}}
"""


def gateway_config(port: int, backends: dict[str, int], weights: dict[str, int]) -> str:
    routes = "".join(f"""      {name}:
        weight: {weights[name]}%
        targets: [127.0.0.1:{backend_port}]
""" for name, backend_port in backends.items())
    return f"""gateways:
  {GATEWAY}:
    port: {port}
    bind: 127.0.0.1
    routes:
{routes}"""


def weights_patch(weights: dict[str, int]) -> bytes:
    return json.dumps({"routes": {name: {"weight": f"{weight}%"} for name, weight in weights.items()}}).encode()


# --- figures ------------------------------------------------------------------------------------------------

@dataclass
class Summary:
    """Median and maximum of a series of durations, in milliseconds."""
    count: int
    median_ms: float
    max_ms: float

    @classmethod
    def of(cls, seconds: list[float]) -> "Summary":
        if not seconds:
            return cls(0, 0.0, 0.0)
        return cls(len(seconds), round(statistics.median(seconds) * 1000, 2), round(max(seconds) * 1000, 2))


@dataclass
class ThroughputFigures:
    steady: WrkResult
    changing: WrkResult
    changes_applied: int
    changes_failed: int
    write_latency: Summary

    @property
    def throughput_ratio(self) -> float:
        return round(self.changing.requests_per_second / self.steady.requests_per_second, 3) \
            if self.steady.requests_per_second else 0.0


@dataclass
class PropagationFigures:
    workers: int
    streak: int
    write_latency: Summary
    visible_after: Summary
    stale_answers: int
    changes_failed: int
    samples: list[dict] = field(default_factory=list)


# --- clients -------------------------------------------------------------------------------------------------

class AdminClient:
    """PATCHes the benchmark gateway's weights over one keep-alive connection to the admin API."""

    def __init__(self, admin_port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=ADMIN_TIMEOUT)

    def set_weights(self, weights: dict[str, int]) -> tuple[bool, float]:
        """(answered 200?, seconds the write took)."""
        started = time.perf_counter()
        try:
            self.connection.request("PATCH", PATCH_PATH, weights_patch(weights),
                                    {"Content-Type": "application/json"})
            response = self.connection.getresponse()
            response.read()
            ok = response.status == 200
        except (OSError, http.client.HTTPException):
            self.connection.close()
            ok = False
        return ok, time.perf_counter() - started

    def close(self) -> None:
        self.connection.close()


def route_on_new_connection(port: int) -> str | None:
    """X-Version of one GET on a new connection (None when it failed)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=PROBE_TIMEOUT)
    try:
        connection.request("GET", "/")
        response = connection.getresponse()
        response.read()
        return response.getheader("X-Version") if response.status == 200 else None
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


# --- the benchmark --------------------------------------------------------------------------------------------

ALTERNATING = ({"a": 90, "b": 10}, {"a": 10, "b": 90})
SWITCHING = ({"a": 0, "b": 100}, {"a": 100, "b": 0})


class ReconfigBench:
    def __init__(self, workdir: Path, pinning: Pinning, args: argparse.Namespace) -> None:
        self.workdir = workdir
        self.pinning = pinning
        self.args = args
        self.processes = Processes(workdir)
        self.backends: dict[str, int] = {}

    def start_backends(self) -> None:
        self.backends = {"a": free_port(), "b": free_port()}
        prefix = self.workdir / "backends"
        prefix.mkdir()
        os.chmod(prefix, 0o755)   # run as root, the worker runs as nobody and must reach its temp paths
        (prefix / "nginx.conf").write_text(backends_config(prefix, self.backends, self.args.connections))
        self.processes.start("backends", [*self.pinning.client, require_program("nginx"), "-p", str(prefix),
                                          "-c", str(prefix / "nginx.conf"), "-e", str(prefix / "error.log"),
                                          "-g", "daemon off;"])
        for port in self.backends.values():
            wait_until_serving(self.processes, "backends", port)

    def start_gateway(self, name: str, weights: dict[str, int], workers: int, pin: list[str]) -> tuple[int, int]:
        """(proxy port, admin port) of a gateway serving the two backends at `weights`."""
        port, admin_port = free_port(), free_port()
        directory = self.workdir / name
        directory.mkdir()
        config_path = directory / "gateways.yaml"
        config_path.write_text(gateway_config(port, self.backends, weights))
        self.processes.start(name, [*pin, *vamp_command(), "gateway", "--config", str(config_path),
                                    "--admin", f"127.0.0.1:{admin_port}", "--state-dir", str(directory / "state"),
                                    "--workers", str(workers)])
        wait_until_serving(self.processes, name, admin_port, "/ready")
        wait_until_serving(self.processes, name, port)
        return port, admin_port

    def start_wrk(self, name: str, port: int, seconds: int) -> subprocess.Popen:
        return self.processes.start(name, [*self.pinning.client, require_program("wrk"), "-t1",
                                           f"-c{self.args.connections}", f"-d{seconds}s", "--latency",
                                           f"http://127.0.0.1:{port}/"])

    def finish_wrk(self, name: str, proc: subprocess.Popen, seconds: int) -> WrkResult:
        try:
            proc.wait(timeout=seconds + WRK_GRACE)
        except subprocess.TimeoutExpired:
            raise BenchmarkError(f"wrk did not finish within {seconds + WRK_GRACE:.0f} s") from None
        finally:
            self.processes.stop(name)
        output = self.processes.log_path(name).read_text(errors="replace")
        if proc.returncode != 0:
            raise BenchmarkError(f"wrk exited with status {proc.returncode}:\n{output.strip()}")
        try:
            return parse_wrk_output(output)
        except ValueError as error:
            raise BenchmarkError(f"{error}:\n{output.strip()}") from None

    def run_wrk(self, name: str, port: int, seconds: int) -> WrkResult:
        return self.finish_wrk(name, self.start_wrk(name, port, seconds), seconds)

    def note_cpu(self, result: WrkResult, server: str, cpu_before: float, started: float) -> None:
        """The server's CPU time per request and how busy it kept its CPU during a wrk run."""
        cpu_used = self.processes.cpu_seconds(server) - cpu_before
        if result.requests:
            result.server_cpu_us_per_request = round(cpu_used / result.requests * 1e6, 1)
        result.server_cpu_busy_percent = round(cpu_used / (time.monotonic() - started) * 100)

    def throughput(self) -> ThroughputFigures:
        """wrk without changes, then wrk while the weights change `--rate` times per second."""
        port, admin_port = self.start_gateway("gateway", ALTERNATING[0], 1, self.pinning.proxy)
        try:
            if self.args.warmup:
                self.run_wrk("wrk-warmup", port, self.args.warmup)
            cpu_before, started = self.processes.cpu_seconds("gateway"), time.monotonic()
            steady = self.run_wrk("wrk-steady", port, self.args.duration)
            self.note_cpu(steady, "gateway", cpu_before, started)
            admin = AdminClient(admin_port)
            cpu_before, started = self.processes.cpu_seconds("gateway"), time.monotonic()
            proc = self.start_wrk("wrk-changing", port, self.args.duration)
            latencies, failed = [], 0
            deadline = started + self.args.duration + WRK_GRACE
            change = 0
            while proc.poll() is None and time.monotonic() < deadline:
                ok, seconds = admin.set_weights(ALTERNATING[(change + 1) % 2])
                latencies.append(seconds)
                failed += not ok
                change += 1
                pause = started + change / self.args.rate - time.monotonic()   # keep to the rate
                if pause > 0:
                    time.sleep(pause)
            admin.close()
            changing = self.finish_wrk("wrk-changing", proc, self.args.duration)
            self.note_cpu(changing, "gateway", cpu_before, started)
        finally:
            self.processes.stop("gateway")
        return ThroughputFigures(steady, changing, len(latencies) - failed, failed, Summary.of(latencies))

    def propagation(self) -> PropagationFigures:
        """After each write returns, new connections until `--streak` in a row show the new route."""
        port, admin_port = self.start_gateway("gateway-workers", SWITCHING[1], 2, [])
        admin = AdminClient(admin_port)
        write_latencies, visible_after, samples = [], [], []
        stale_total = failed = 0
        try:
            for change in range(self.args.changes):
                weights = SWITCHING[change % 2]
                expected = "b" if weights["b"] else "a"
                ok, write_seconds = admin.set_weights(weights)
                returned = time.perf_counter()
                write_latencies.append(write_seconds)
                if not ok:
                    failed += 1
                    continue
                visible, stale = self.wait_visible(port, expected, returned)
                stale_total += stale
                if visible is None:
                    failed += 1
                    continue
                visible_after.append(visible)
                samples.append({"write_ms": round(write_seconds * 1000, 2),
                                "visible_after_ms": round(visible * 1000, 2), "stale_answers": stale})
        finally:
            admin.close()
            self.processes.stop("gateway-workers")
        return PropagationFigures(2, self.args.streak, Summary.of(write_latencies), Summary.of(visible_after),
                                  stale_total, failed, samples)

    def wait_visible(self, port: int, expected: str, returned: float) -> tuple[float | None, int]:
        """(seconds from the write's return to the first request of a run of `--streak` new connections
        all answered by `expected`, or None when none came; answers from another route meanwhile)."""
        stale = 0
        streak_started: float | None = None
        streak = 0
        for _ in range(PROBES_PER_CHANGE):
            sent = time.perf_counter()
            version = route_on_new_connection(port)
            if version == expected:
                if streak == 0:
                    streak_started = sent
                streak += 1
                if streak == self.args.streak:
                    return streak_started - returned, stale
            else:
                stale += 1
                streak = 0
        return None, stale


# --- report -------------------------------------------------------------------------------------------------

def format_report(throughput: ThroughputFigures | None, propagation: PropagationFigures | None,
                  rate: int) -> str:
    lines = []
    if throughput is not None:
        rows = [("load", "req/s", "p50", "p99", "errors", "gateway CPU/req", "gateway CPU busy"),
                ("no changes", *_wrk_cells(throughput.steady)),
                (f"{rate} changes/s", *_wrk_cells(throughput.changing))]
        lines += _table(rows)
        lines += ["",
                  f"throughput with changes / without: {throughput.throughput_ratio:.3f}",
                  f"p99 with changes / without: {_ratio(throughput.changing.p99_ms, throughput.steady.p99_ms)}",
                  *[f"warning: the gateway kept its CPU only {result.server_cpu_busy_percent}% busy {label}: "
                    "something else limited it (another process on its CPU?)"
                    for label, result in (("without changes", throughput.steady),
                                          ("with changes", throughput.changing))
                    if (result.server_cpu_busy_percent or 0) < BUSY_ENOUGH_PERCENT],
                  f"changes applied during the run: {throughput.changes_applied} "
                  f"({throughput.changes_failed} failed); write latency median "
                  f"{throughput.write_latency.median_ms:.1f} ms, max {throughput.write_latency.max_ms:.1f} ms"]
    if propagation is not None:
        if lines:
            lines.append("")
        p = propagation
        rows = [("--workers 2, per change", "median", "max"),
                ("admin write round trip", f"{p.write_latency.median_ms:.1f} ms", f"{p.write_latency.max_ms:.1f} ms"),
                ("new route seen after the write returned", f"{p.visible_after.median_ms:.1f} ms",
                 f"{p.visible_after.max_ms:.1f} ms")]
        lines += _table(rows)
        lines += ["", f"changes: {p.visible_after.count} seen by {p.streak} new connections in a row "
                      f"({p.changes_failed} failed); answers from the old route after a write returned: "
                      f"{p.stale_answers}"]
    return "\n".join(lines)


def _wrk_cells(result: WrkResult) -> tuple[str, ...]:
    cpu, busy = result.server_cpu_us_per_request, result.server_cpu_busy_percent
    return (f"{result.requests_per_second:,.0f}", f"{result.p50_ms:.2f} ms", f"{result.p99_ms:.2f} ms",
            str(result.errors), "-" if cpu is None else f"{cpu:.1f} us", "-" if busy is None else f"{busy}%")


def _ratio(value: float, reference: float) -> str:
    return f"{value / reference:.2f}" if reference else "-"


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = ["  ".join([row[0].ljust(widths[0])] + [cell.rjust(w) for cell, w in zip(row[1:], widths[1:])])
             for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return lines


def clean(throughput: ThroughputFigures | None, propagation: PropagationFigures | None) -> bool:
    if throughput is None or propagation is None:
        return False
    return (throughput.steady.errors == 0 and throughput.changing.errors == 0 and throughput.changes_failed == 0
            and propagation.changes_failed == 0 and propagation.stale_answers == 0)


# --- main -----------------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Measure what live admin API changes cost the gateway's traffic "
                                                 "and how soon every worker serves them.")
    parser.add_argument("--duration", type=integer_at_least(1), default=10, help="seconds per wrk run (10)")
    parser.add_argument("--warmup", type=integer_at_least(0), default=2,
                        help="seconds of unmeasured load first (2; 0 skips it)")
    parser.add_argument("--connections", type=integer_at_least(1), default=50, help="wrk connections (50)")
    parser.add_argument("--rate", type=integer_at_least(1), default=10, help="changes per second under load (10)")
    parser.add_argument("--changes", type=integer_at_least(1), default=20,
                        help="changes measured for propagation (20)")
    parser.add_argument("--streak", type=integer_at_least(1), default=10,
                        help="new connections in a row that must show a change (10)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures to FILE as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    pinning, environment = start_benchmark(("nginx", "wrk"))
    print(f"placement: {pinning.note} (the --workers 2 gateway runs unpinned)")
    print(f"load: wrk -t1 -c{args.connections} -d{args.duration}s --latency, after {args.warmup} s of warm-up; "
          f"{args.rate} changes/s; propagation over {args.changes} changes, {args.streak} new connections in a row\n",
          flush=True)
    throughput = propagation = None
    error = None
    try:
        with tempfile.TemporaryDirectory(prefix="vamp-reconfig-") as tmp:
            bench = ReconfigBench(Path(tmp), pinning, args)
            try:
                bench.start_backends()
                print("measuring throughput with and without changes ...", file=sys.stderr, flush=True)
                throughput = bench.throughput()
                print("measuring propagation to 2 workers ...", file=sys.stderr, flush=True)
                propagation = bench.propagation()
            except BenchmarkError as failure:
                error = str(failure)
            finally:
                bench.processes.stop_all()
    except (KeyboardInterrupt, Terminated) as interruption:
        print("interrupted; every process started was stopped", file=sys.stderr)
        return 130 if isinstance(interruption, KeyboardInterrupt) else 128 + signal.SIGTERM

    print(format_report(throughput, propagation, args.rate))
    if error is not None:
        print(f"\nbenchmark failed: {error}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps({
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "environment": environment,
            "placement": pinning.note,
            "arguments": {key: value for key, value in vars(args).items() if key != "json"},
            "throughput": None if throughput is None else {
                **asdict(throughput), "throughput_ratio": throughput.throughput_ratio},
            "propagation": None if propagation is None else asdict(propagation),
            "error": error,
        }, indent=2) + "\n")
    return 0 if error is None and clean(throughput, propagation) else 1


if __name__ == "__main__":
    sys.exit(main())
