"""Runs a plan — in this process, or in `--processes N` worker processes — and builds the result.

With one process the load generator, the progress line and the final merge share one uvloop event loop.
With several, each worker process runs a load generator on its share of connections, requests, rate and virtual
users, reports progress over a pipe four times a second, and sends its recorder's snapshot when it is done; the
parent merges them (histograms included) and starts every worker at the same moment, once all are ready.
"""
from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import signal
import time
from dataclasses import dataclass
from datetime import datetime, UTC
from multiprocessing.connection import Connection as Pipe, wait
from typing import Any
from collections.abc import Callable

import uvloop

from .generator import LoadGenerator, Share
from .plan import NO_RESPONSE, UNLABELLED, Plan
from .recorder import Recorder, add_counts, decode, merge, new_histogram
from .report import Progress
from .traffic import Traffic

PROGRESS_INTERVAL = 0.25        # seconds between two progress updates
MAX_STICKY_EXAMPLES = 10
TIMELINE_POINTS = 200           # at most this many points per series in the result's timeline

ProgressSink = Callable[[Progress], None]


def timeline_interval(plan: Plan) -> float:
    """Seconds per recorded timeline slot: 0.1 s, or a thousandth of a long run (the result has fewer)."""
    return 0.1 if plan.duration is None else max(0.1, plan.duration / 1000)


def rebinned(interval: float, series: dict[str, list[int]], errors: list[int]) -> dict[str, Any]:
    """The result's timeline: the recorded slots added up in runs so that at most TIMELINE_POINTS remain."""
    slots = max([len(errors), *map(len, series.values())], default=0)
    factor = max(1, -(-slots // TIMELINE_POINTS))

    def coarse(values: list[int]) -> list[int]:
        values = values + [0] * (slots - len(values))
        return [sum(values[index:index + factor]) for index in range(0, slots, factor)]

    return {"interval_s": interval * factor, "start_s": 0,
            "groups": {name: coarse(values) for name, values in series.items()}, "errors": coarse(errors)}


@dataclass(frozen=True)
class Outcome:
    """What the processes measured, merged: the recorder snapshot, the mix counts and the run's times."""
    snapshot: dict[str, Any]
    mix: dict[str, dict[str, int]]
    started_at: datetime
    elapsed: float


def run(plan: Plan, traffic: Traffic, on_progress: ProgressSink) -> Outcome:
    if plan.processes == 1:
        return uvloop.run(_run_here(plan, traffic, on_progress))
    return _run_processes(plan, on_progress)


# -- one process -----------------------------------------------------------------------------------------

async def _run_here(plan: Plan, traffic: Traffic, on_progress: ProgressSink) -> Outcome:
    recorder = Recorder(0.0, timeline_interval(plan), plan.sticky)
    generator = LoadGenerator(plan, traffic, recorder)
    started_at = datetime.now(UTC)
    start = time.perf_counter()
    reporter = asyncio.create_task(_report_progress(plan, recorder, start, on_progress))
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, generator.interrupt)
    try:
        await generator.run()
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        reporter.cancel()
    elapsed = time.perf_counter() - start
    on_progress(_progress(plan, recorder.requests, recorder.errors, recorder.group_counts(), elapsed))
    return Outcome(recorder.snapshot(), generator.mix_counts(), started_at, elapsed)


async def _report_progress(plan: Plan, recorder: Recorder, start: float, on_progress: ProgressSink) -> None:
    while True:
        await asyncio.sleep(PROGRESS_INTERVAL)
        on_progress(_progress(plan, recorder.requests, recorder.errors, recorder.group_counts(),
                              time.perf_counter() - start))


def _progress(plan: Plan, requests: int, errors: int, groups: dict[str, int], elapsed: float) -> Progress:
    return Progress(elapsed=elapsed, requests=requests, errors=errors, groups=groups,
                    planned=plan.duration, planned_requests=plan.requests)


# -- several processes ------------------------------------------------------------------------------------

def _run_processes(plan: Plan, on_progress: ProgressSink) -> Outcome:
    context = multiprocessing.get_context("spawn")
    pipes: list[Pipe] = []
    workers = []
    for index in range(plan.processes):
        parent_end, child_end = context.Pipe()
        worker = context.Process(target=_worker_main, args=(plan, Share(index, plan.processes), child_end),
                                 name=f"vamp-loadtest-{index}", daemon=True)
        worker.start()
        child_end.close()
        pipes.append(parent_end)
        workers.append(worker)
    try:
        for pipe in pipes:                  # every worker has loaded its traffic and is ready
            _expect(pipe, "ready")
        started_at = datetime.now(UTC)
        start = time.perf_counter()
        for pipe in pipes:
            pipe.send("go")
        progress: dict[int, Progress] = {}
        finals: dict[int, tuple[dict[str, Any], dict[str, dict[str, int]]]] = {}
        while len(finals) < len(pipes):
            try:
                for ready in wait([p for i, p in enumerate(pipes) if i not in finals], PROGRESS_INTERVAL):
                    index = pipes.index(ready)      # type: ignore[arg-type]  # wait() hands back the pipes given
                    message = _receive(pipes[index], workers[index].name)
                    if message[0] == "progress":
                        progress[index] = message[1]
                    else:
                        finals[index] = message[1]
                on_progress(_progress(plan, sum(p.requests for p in progress.values()),
                                      sum(p.errors for p in progress.values()),
                                      _add_up(p.groups for p in progress.values()), time.perf_counter() - start))
            except KeyboardInterrupt:       # Ctrl-C: the workers stop and report; a second one ends at once
                for index, pipe in enumerate(pipes):
                    if index not in finals:
                        with contextlib.suppress(OSError):
                            pipe.send("stop")
        elapsed = time.perf_counter() - start
    finally:
        for worker in workers:
            worker.join(timeout=5)
            if worker.is_alive():
                worker.kill()
        for pipe in pipes:
            pipe.close()
    snapshots = [finals[index][0] for index in sorted(finals)]
    mixes = [finals[index][1] for index in sorted(finals)]
    merged = merge(snapshots)
    mix = {kind: _add_up(m[kind] for m in mixes) for kind in ("user_agents", "countries")}
    on_progress(_progress(plan, merged["requests"], merged["errors"],
                          {name: g["requests"] for name, g in merged["groups"].items()}, elapsed))
    return Outcome(merged, mix, started_at, elapsed)


def _worker_main(plan: Plan, share: Share, pipe: Pipe) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # Ctrl-C reaches the parent, which tells the workers
    traffic = Traffic(plan)
    uvloop.run(_worker(plan, traffic, share, pipe))


async def _worker(plan: Plan, traffic: Traffic, share: Share, pipe: Pipe) -> None:
    recorder = Recorder(0.0, timeline_interval(plan), plan.sticky)
    generator = LoadGenerator(plan, traffic, recorder, share)
    pipe.send(("ready",))
    pipe.recv()                             # "go" (nothing else runs on this loop yet)
    loop = asyncio.get_running_loop()

    def on_parent_message() -> None:        # "stop" (Ctrl-C), or the parent died
        try:
            pipe.recv()
        except EOFError:
            loop.remove_reader(pipe.fileno())
        generator.interrupt()

    loop.add_reader(pipe.fileno(), on_parent_message)

    reporter = asyncio.create_task(_report_progress(plan, recorder, time.perf_counter(),
                                                    lambda progress: pipe.send(("progress", progress))))
    try:
        await generator.run()
    finally:
        reporter.cancel()
    pipe.send(("done", (recorder.snapshot(), generator.mix_counts())))


def _expect(pipe: Pipe, kind: str) -> None:
    if not pipe.poll(60):
        raise RuntimeError("a load-test worker process did not start within 60 s")
    message = pipe.recv()
    if message[0] != kind:
        raise RuntimeError(f"a load-test worker process said {message[0]!r} instead of {kind!r}")


def _receive(pipe: Pipe, name: str) -> tuple:
    try:
        return pipe.recv()
    except EOFError:
        raise RuntimeError(f"load-test worker process {name} died") from None


def _add_up(parts) -> dict[str, int]:
    total: dict[str, int] = {}
    for part in parts:
        add_counts(total, part)
    return total


# -- the result -------------------------------------------------------------------------------------------

def _percentiles() -> list[float]:
    """Percentiles for plotting: dense towards the tail (halving the distance to 100% every 8 steps)."""
    points = [100.0 * (1 - 0.5 ** (step / 8)) for step in range(0, 8 * 17)]
    return sorted(set(round(p, 6) for p in points)) + [100.0]


PLOT_PERCENTILES = _percentiles()


def latency_summary(histogram) -> dict[str, Any]:
    """The LATENCY object of the result from an HdrHistogram of microseconds."""
    count = histogram.get_total_count()
    if count == 0:
        return {"count": 0, "mean": 0.0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "p99_9": 0.0, "max": 0.0,
                "distribution": [], "hdr": histogram.encode().decode("ascii")}
    ms = 1000.0
    values = histogram.get_percentile_to_value_dict(PLOT_PERCENTILES)
    return {
        "count": count,
        "mean": histogram.get_mean_value() / ms,
        "p50": histogram.get_value_at_percentile(50) / ms,
        "p90": histogram.get_value_at_percentile(90) / ms,
        "p99": histogram.get_value_at_percentile(99) / ms,
        "p99_9": histogram.get_value_at_percentile(99.9) / ms,
        "max": histogram.get_max_value() / ms,
        "distribution": [[p, values[p] / ms] for p in PLOT_PERCENTILES],
        "hdr": histogram.encode().decode("ascii"),
    }


def sticky_summary(plan: Plan, snapshot: dict[str, Any]) -> dict[str, Any] | None:
    if not plan.sticky:
        return None
    several = snapshot["other_groups"]
    examples = [{"user": user, "groups": [snapshot["first_group"][user], *groups]}
                for user, groups in sorted(several.items())[:MAX_STICKY_EXAMPLES]]
    return {"users": plan.clients or 0, "users_seen": len(snapshot["first_group"]),
            "users_with_several_groups": len(several), "examples": examples}


def build_result(plan: Plan, outcome: Outcome, expected: dict[str, float] | None,
                 verdict: dict[str, Any]) -> dict[str, Any]:
    snapshot = outcome.snapshot
    requests = snapshot["requests"]
    labelled = sum(g["requests"] for name, g in snapshot["groups"].items() if name not in UNLABELLED)
    total_histogram = new_histogram()
    groups = []
    names = set(snapshot["groups"]) | set(expected or ())
    for name in sorted(names, key=lambda n: (n in UNLABELLED, -snapshot["groups"].get(n, {}).get("requests", 0), n)):
        data = snapshot["groups"].get(name)
        histogram = decode(data["hdr"]) if data else new_histogram()
        total_histogram.add(histogram)
        count = data["requests"] if data else 0
        base = requests if name in UNLABELLED else labelled
        share = count / base if base else 0.0
        wanted = None if expected is None or name in UNLABELLED else expected.get(name, 0.0)
        groups.append({
            "name": name,
            "requests": count,
            "share": share,
            "expected_share": wanted,
            "deviation": None if wanted is None else share - wanted,
            "errors": data["errors"] if data else 0,
            "errors_by_kind": dict(data["errors_by_kind"]) if data else {},
            "statuses": {str(status): n for status, n in sorted(data["statuses"].items())} if data else {},
            "latency_ms": latency_summary(histogram),
        })
    errors_by_kind: dict[str, int] = {}
    for data in snapshot["groups"].values():
        for kind, count in data["errors_by_kind"].items():
            errors_by_kind[kind] = errors_by_kind.get(kind, 0) + count
    return {
        "schema": "vamp-loadtest/1",
        "url": plan.url,
        "method": plan.method,
        "model": "open" if plan.open_model else "closed",
        "concurrency": plan.concurrency,
        "rate": plan.rate,
        "processes": plan.processes,
        "clients": plan.clients,
        "by": plan.by.text,
        "started_at": outcome.started_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "elapsed_s": outcome.elapsed,
        "totals": {
            "requests": requests,
            "responses": requests - sum(g["requests"] for n, g in snapshot["groups"].items() if n == NO_RESPONSE),
            "errors": snapshot["errors"],
            "error_rate": snapshot["errors"] / requests if requests else 0.0,
            "requests_per_second": requests / outcome.elapsed if outcome.elapsed > 0 else 0.0,
            "errors_by_kind": errors_by_kind,
            "latency_ms": latency_summary(total_histogram),
        },
        "groups": groups,
        "timeline": rebinned(timeline_interval(plan),
                             {name: data["timeline"] for name, data in snapshot["groups"].items()},
                             snapshot["errors_timeline"]),
        "mix": outcome.mix,
        "sticky": sticky_summary(plan, snapshot),
        "verdict": verdict,
    }


def split_counts(plan: Plan, snapshot: dict[str, Any]) -> tuple[dict[str, int], str]:
    """The counts the split is tested on, and their unit: users by first group with --sticky, else requests
    per labelled group."""
    if plan.sticky:
        counts: dict[str, int] = {}
        for group in snapshot["first_group"].values():
            counts[group] = counts.get(group, 0) + 1
        return counts, "users"
    return {name: g["requests"] for name, g in snapshot["groups"].items()
            if name not in UNLABELLED}, "requests"
