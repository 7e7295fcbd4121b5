"""The load tester's benchmark: `vamp loadtest` against wrk, each on one core, against the same nginx.

One nginx worker serves a tiny body (pinned to CPU 0, as the proxy benchmark pins the server under test). The
two clients, each pinned to CPU 1 and given the same number of keep-alive connections, then load it in
turn for `--rounds` rounds: `wrk -t1 -cN -dD --latency`, then `vamp loadtest URL --concurrency N --duration D
--processes 1` (its figures read from its --json output), so that drift on a busy machine hits both alike.
Printed: each round's requests per second and p50/p99 latency of both clients, and the ratio tool/wrk (the
median of the rounds' ratios) against the issue's target of 0.5x. The ratio is reported, not asserted.

    python benchmarks/loadtest_vs_wrk.py [--duration 10] [--connections 64] [--rounds 3] [--json FILE]

Exit status: 0 when both clients ran cleanly in every round, 1 when a program failed or a client reported
errors, 2 for bad arguments. Processes, temporary directories and CPU pinning work as in
benchmarks/proxy.py, whose helpers this script uses.
"""
from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from proxy import (CLIENT_CPU, PROXY_CPU, WRK_GRACE, BenchmarkError, Pinning, Processes, Terminated, WrkResult,
                   backend_config, free_port, integer_at_least, parse_wrk_output, require_program, start_benchmark,
                   start_nginx, vamp_command)

TARGET_RATIO = 0.5
TOOL_GRACE = 60.0                 # seconds `vamp loadtest` may take beyond its duration (start-up included)
TRANSPORT_ERRORS = ("connect", "timeout", "reset", "protocol")   # the tool's error kinds that are not statuses


@dataclass
class Round:
    """Both clients' figures in one round, wrk first."""
    wrk: WrkResult
    tool: WrkResult

    @property
    def ratio(self) -> float:
        return self.tool.requests_per_second / self.wrk.requests_per_second if self.wrk.requests_per_second else 0.0


def tool_figures(result: dict) -> WrkResult:
    """The figures of a `vamp loadtest --json` result, in wrk's terms so that both clients tabulate alike."""
    totals = result["totals"]
    by_kind = totals["errors_by_kind"]
    return WrkResult(
        requests=totals["requests"],
        requests_per_second=totals["requests_per_second"],
        p50_ms=totals["latency_ms"]["p50"],
        p99_ms=totals["latency_ms"]["p99"],
        socket_errors={kind: count for kind, count in by_kind.items() if kind in TRANSPORT_ERRORS},
        non_2xx_3xx=by_kind.get("http_4xx", 0) + by_kind.get("http_5xx", 0),
    )


def median_ratio(rounds: list[Round]) -> float | None:
    return round(statistics.median(each.ratio for each in rounds), 2) if rounds else None


class Comparison:
    """Starts nginx and runs wrk and `vamp loadtest` against it, alternately."""

    def __init__(self, workdir: Path, pinning: Pinning, args: argparse.Namespace):
        self.workdir = workdir
        self.pinning = pinning
        self.args = args
        self.processes = Processes(workdir)

    def start_backend(self) -> str:
        port = free_port()
        config = backend_config(self.workdir / "backend", port, self.args.connections)
        start_nginx(self.processes, "backend", self.pinning.proxy, config, port)
        return f"http://127.0.0.1:{port}/"

    def run_wrk(self, number: int, url: str) -> WrkResult:
        name = f"wrk-{number}"
        command = [*self.pinning.client, require_program("wrk"), "-t1", f"-c{self.args.connections}",
                   f"-d{self.args.duration}s", "--latency", url]
        status, output = self.processes.run(name, command, self.args.duration + WRK_GRACE)
        if status != 0:
            raise BenchmarkError(f"wrk exited with status {status}:\n{output.strip()}")
        try:
            return parse_wrk_output(output)
        except ValueError as error:
            raise BenchmarkError(f"{error}:\n{output.strip()}") from None

    def run_tool(self, number: int, url: str) -> WrkResult:
        name = f"loadtest-{number}"
        result_path = self.workdir / f"{name}.json"
        command = [*self.pinning.client, *vamp_command(), "loadtest", url, "--concurrency", str(self.args.connections),
                   "--duration", f"{self.args.duration}s", "--processes", "1", "--no-progress",
                   "--json", str(result_path)]
        status, output = self.processes.run(name, command, self.args.duration + TOOL_GRACE)
        if status != 0:
            raise BenchmarkError(f"vamp loadtest exited with status {status}:\n{output.strip()}")
        try:
            return tool_figures(json.loads(result_path.read_text()))
        except (OSError, ValueError, KeyError) as error:
            raise BenchmarkError(f"vamp loadtest wrote no readable result ({error}):\n{output.strip()}") from None

    def run(self, rounds: list[Round]) -> None:
        """Measure round after round into `rounds`; BenchmarkError at the first failure. Stops every process."""
        try:
            url = self.start_backend()
            for number in range(1, self.args.rounds + 1):
                print(f"round {number}/{self.args.rounds}: wrk ...", file=sys.stderr, flush=True)
                wrk = self.run_wrk(number, url)
                print(f"round {number}/{self.args.rounds}: vamp loadtest ...", file=sys.stderr, flush=True)
                rounds.append(Round(wrk, self.run_tool(number, url)))
        finally:
            self.processes.stop_all()


# --- report ------------------------------------------------------------------------------------------------

def format_table(rounds: list[Round]) -> str:
    rows = [("round", "wrk req/s", "wrk p50", "wrk p99", "tool req/s", "tool p50", "tool p99", "tool/wrk")]
    for number, each in enumerate(rounds, 1):
        rows.append((str(number), *client_cells(each.wrk), *client_cells(each.tool), f"{each.ratio:.2f}x"))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def client_cells(result: WrkResult) -> tuple[str, str, str]:
    return f"{result.requests_per_second:,.0f}", f"{result.p50_ms:.2f} ms", f"{result.p99_ms:.2f} ms"


def placement(pinning: Pinning) -> str:
    if not pinning.client:
        return pinning.note
    return f"nginx pinned to CPU {PROXY_CPU}; wrk and vamp loadtest (one process) pinned to CPU {CLIENT_CPU}"


# --- main --------------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Measure `vamp loadtest` against wrk on one core, against nginx.")
    parser.add_argument("--duration", type=integer_at_least(1), default=10, help="seconds per client run (10)")
    parser.add_argument("--connections", type=integer_at_least(1), default=64,
                        help="connections of both clients (64)")
    parser.add_argument("--rounds", type=integer_at_least(1), default=3,
                        help="rounds of wrk then vamp loadtest (3)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures to FILE as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    pinning, environment = start_benchmark(("nginx", "wrk"))
    print(f"placement: {placement(pinning)}")
    print(f"load: {args.connections} connections, {args.duration} s per run; rounds: {args.rounds} x "
          f"(wrk -t1, then vamp loadtest --processes 1)\n", flush=True)
    rounds: list[Round] = []
    failure = None
    try:
        with tempfile.TemporaryDirectory(prefix="vamp-bench-loadtest-") as tmp:
            Comparison(Path(tmp), pinning, args).run(rounds)
    except BenchmarkError as error:
        failure = str(error)
    except (KeyboardInterrupt, Terminated) as interruption:
        print("interrupted; every process started was stopped", file=sys.stderr)
        return 130 if isinstance(interruption, KeyboardInterrupt) else 128 + signal.SIGTERM

    ratio = median_ratio(rounds)
    if rounds:
        print(format_table(rounds))
        print(f"\ntool/wrk req/s (median of {len(rounds)} rounds): {ratio:.2f}x (target at least {TARGET_RATIO}x)")
    errors = [f"{client} reported {result.errors} errors in round {number} (transport {result.socket_errors}, "
              f"bad statuses {result.non_2xx_3xx})"
              for number, each in enumerate(rounds, 1)
              for client, result in (("wrk", each.wrk), ("vamp loadtest", each.tool)) if result.errors]
    for problem in ([failure] if failure else []) + errors:
        print(f"\n{problem}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps({
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "environment": environment,
            "placement": placement(pinning),
            "load": {"connections": args.connections, "duration_s": args.duration, "rounds": args.rounds},
            "rounds": [{"wrk": {**asdict(each.wrk), "errors": each.wrk.errors},
                        "tool": {**asdict(each.tool), "errors": each.tool.errors},
                        "ratio": round(each.ratio, 3)} for each in rounds],
            "ratio": ratio,
            "target_ratio": TARGET_RATIO,
            "failure": failure,
        }, indent=2) + "\n")
    return 1 if failure or errors else 0


if __name__ == "__main__":
    sys.exit(main())
