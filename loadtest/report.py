"""What a `vamp loadtest` run shows people: the live progress line while it runs, the final summary, and the
`--json` file.

The runner feeds `LiveProgress` with `Progress` snapshots; the result dict it builds at the end (described by
`result.schema.json`, next to this module) goes to `print_summary` and `write_json`. Nothing here measures
anything: it only formats what the runner measured.
"""
from __future__ import annotations

import json
import os
import secrets
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.measure import Measurement
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from .plan import UNLABELLED, Plan

RESULT_SCHEMA = Path(__file__).with_name("result.schema.json")

ERROR_KINDS = ("connect", "timeout", "reset", "protocol", "http_4xx", "http_5xx")
COUNT_COLUMNS = ("requests", "share", "expected", "deviation", "errors")
LATENCY_COLUMNS = (("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("p99_9", "p99.9"), ("max", "max"))
REFRESH_INTERVAL = 0.2          # seconds of run time between two repaints of the live line (at most 5/s)
RATE_WINDOW = 1.0               # seconds over which the live line measures requests/s
UNBOUNDED_WIDTH = 10_000        # columns offered to a table to learn how wide it would like to be
SPLIT_SHOWN = 8                 # labelled groups named in the live line; the rest are counted


@dataclass
class Progress:
    """Where a run stands, as the runner sees it a few times a second (all counts cumulative)."""
    elapsed: float                  # seconds since start
    requests: int                   # finished requests
    errors: int
    groups: dict[str, int]          # requests per group label
    planned: float | None           # planned duration (s) or None
    planned_requests: int | None


# -- number formats -------------------------------------------------------------------------------------

def count_text(value: int) -> str:
    return f"{value:,}"


def counted(value: int, noun: str, plural: str | None = None) -> str:
    """'1 connection', '64 connections', '2 processes'."""
    return f"{count_text(value)} {noun if value == 1 else plural or noun + 's'}"


def percent_text(fraction: float | None, signed: bool = False) -> str:
    if fraction is None:
        return "–"
    return f"{fraction * 100:+.2f}%" if signed else f"{fraction * 100:.2f}%"


def ms_text(value: float) -> str:
    """Milliseconds to two or three significant digits: 0.123, 1.23, 12.3, 123, 1,234."""
    if value < 1:
        return f"{value:.3f}"
    if value < 10:
        return f"{value:.2f}"
    if value < 100:
        return f"{value:.1f}"
    return f"{value:,.0f}"


def seconds_text(value: float) -> str:
    return f"{value:.1f}s" if value < 60 else f"{int(value // 60)}m{value % 60:04.1f}s"


def errors_text(by_kind: dict[str, int]) -> str:
    """'connect 3, http_5xx 9': the kinds that occurred, in a fixed order."""
    ordered = [kind for kind in ERROR_KINDS if kind in by_kind] + sorted(set(by_kind) - set(ERROR_KINDS))
    return ", ".join(f"{kind} {count_text(by_kind[kind])}" for kind in ordered if by_kind[kind])


# -- live progress ----------------------------------------------------------------------------------------

class LiveProgress:
    """The one-line live view on a terminal: elapsed / planned, requests/s over the last second, errors and
    the running split. Repaints only from `update` (no refresh thread) and at most every REFRESH_INTERVAL of
    run time; on a console that is not a terminal, or with `plan.progress` off, it shows nothing."""

    def __init__(self, plan: Plan, console: Console) -> None:
        self._console = console
        self._enabled = plan.progress and console.is_terminal
        self._live: Live | None = None
        self._last_paint: float | None = None
        self._samples: deque[tuple[float, int]] = deque([(0.0, 0)], maxlen=64)   # (elapsed, requests)

    def __enter__(self) -> LiveProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def update(self, progress: Progress) -> None:
        if not self._enabled:
            return
        rate = self._rate(progress)
        if self._last_paint is not None and progress.elapsed - self._last_paint < REFRESH_INTERVAL:
            return
        self._last_paint = progress.elapsed
        line = self._render(progress, rate)
        if self._live is None:
            self._live = Live(line, console=self._console, auto_refresh=False, transient=True)
            self._live.start(refresh=True)
        else:
            self._live.update(line, refresh=True)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def _rate(self, progress: Progress) -> float:
        """Requests/s since the latest sample at least RATE_WINDOW old (or since the start)."""
        self._samples.append((progress.elapsed, progress.requests))
        while progress.elapsed - self._samples[1][0] >= RATE_WINDOW:
            self._samples.popleft()
        first_elapsed, first_requests = self._samples[0]
        span = progress.elapsed - first_elapsed
        return (progress.requests - first_requests) / span if span > 0 else 0.0

    @staticmethod
    def _render(progress: Progress, rate: float) -> Table:
        line = Table.grid(padding=(0, 2))
        cells: list[Text | ProgressBar] = []
        if progress.planned is not None:
            cells.append(Text(f"{seconds_text(progress.elapsed)} / {seconds_text(progress.planned)}"))
            cells.append(ProgressBar(total=progress.planned, completed=min(progress.elapsed, progress.planned),
                                     width=20))
        else:
            cells.append(Text(seconds_text(progress.elapsed)))
            if progress.planned_requests:
                cells.append(ProgressBar(total=progress.planned_requests,
                                         completed=min(progress.requests, progress.planned_requests), width=20))
        cells.append(Text(f"{count_text(round(rate))} req/s", style="bold"))
        requests = count_text(progress.requests)
        if progress.planned is None and progress.planned_requests:
            requests += f" / {count_text(progress.planned_requests)}"
        cells.append(Text(f"{requests} requests"))
        error_share = progress.errors / progress.requests if progress.requests else 0.0
        cells.append(Text(f"errors {count_text(progress.errors)} ({percent_text(error_share)})",
                          style="red" if progress.errors else "dim"))
        cells.append(_split_text(progress.groups))
        for _ in cells:
            line.add_column(no_wrap=True)
        line.add_row(*cells)
        return line


def _split_text(groups: dict[str, int]) -> Text:
    """'1.0.0 90.01%  1.1.0 9.99%  (no response) 3': labelled groups as shares of the labelled requests,
    the unlabelled ones as counts."""
    labelled = sorted(((count, label) for label, count in groups.items() if label not in UNLABELLED), reverse=True)
    labelled_total = sum(count for count, _ in labelled)
    text = Text()
    for count, label in labelled[:SPLIT_SHOWN]:
        text.append(f"{label} ", style="cyan")
        text.append(f"{percent_text(count / labelled_total if labelled_total else 0.0)}  ")
    if len(labelled) > SPLIT_SHOWN:
        text.append(f"+{len(labelled) - SPLIT_SHOWN} more  ", style="dim")
    for label in UNLABELLED:
        if groups.get(label):
            text.append(f"{label} {count_text(groups[label])}  ", style="dim")
    text.rstrip()
    return text


# -- final summary ----------------------------------------------------------------------------------------

def print_summary(result: dict, console: Console) -> None:
    """The run in a few lines: what was run, the table per group, errors, traffic mix, sticky users and the
    verdict."""
    console.print(_headline(result))
    for table in _groups_tables(result, console):
        console.print(table)
    console.print(_errors_text(result))
    for title, counts in (("user agent", result["mix"]["user_agents"]), ("country", result["mix"]["countries"])):
        if counts:
            console.print(_mix_table(title, counts))
    if result["sticky"] is not None:
        console.print(_sticky_line(result["sticky"]))
    console.print(_verdict_text(result["verdict"], result["totals"]["requests"]))


def _headline(result: dict) -> Text:
    load = (f"open model, {result['rate']:,g} req/s planned" if result["model"] == "open"
            else f"closed model, {counted(result['concurrency'], 'connection')}")
    processes = counted(result["processes"], "process", "processes")
    who = f", {counted(result['clients'], 'virtual user')}" if result["clients"] else ""
    totals = result["totals"]
    text = Text()
    text.append(f"{result['method']} {result['url']}", style="bold")
    text.append(f" grouped by {result['by']}\n{load}, {processes}{who}: ")
    text.append(f"{count_text(totals['requests'])} requests in {seconds_text(result['elapsed_s'])}, ")
    text.append(f"{count_text(round(totals['requests_per_second']))} req/s", style="bold")
    return text


def _groups_tables(result: dict, console: Console) -> list[Table]:
    """The groups' counts and latencies in one table, or in two (counts, then latencies) when one would not
    fit the console's width."""
    whole = _groups_table(result, counts=True, latencies=True)
    natural = Measurement.get(console, console.options.update_width(UNBOUNDED_WIDTH), whole).maximum
    if natural <= console.width:
        return [whole]
    return [_groups_table(result, counts=True, latencies=False), _groups_table(result, counts=False, latencies=True)]


def _groups_table(result: dict, *, counts: bool, latencies: bool) -> Table:
    """A row per group, the unlabelled groups set apart below the labelled ones, then a row for all."""
    table = Table(header_style="bold")
    table.add_column("group", no_wrap=True)
    for heading in COUNT_COLUMNS if counts else ():
        table.add_column(heading, justify="right")
    for _, heading in LATENCY_COLUMNS if latencies else ():
        table.add_column(f"{heading} ms", justify="right")
    section_started = False
    for group in result["groups"]:
        unlabelled = group["name"] in UNLABELLED
        if unlabelled and not section_started:
            table.add_section()
            section_started = True
        count_cells = [count_text(group["requests"]), percent_text(group["share"]),
                       percent_text(group["expected_share"]), percent_text(group["deviation"], signed=True),
                       _errors_cell(group["errors"])]
        table.add_row(Text(group["name"], style="dim italic" if unlabelled else "cyan"),
                      *(count_cells if counts else ()), *(_latency_cells(group["latency_ms"]) if latencies else ()),
                      style="dim" if unlabelled else "")
    totals = result["totals"]
    count_cells = [count_text(totals["requests"]), "", "", "", _errors_cell(totals["errors"])]
    table.add_section()
    table.add_row(Text("all", style="bold"), *(count_cells if counts else ()),
                  *(_latency_cells(totals["latency_ms"]) if latencies else ()))
    return table


def _errors_cell(errors: int) -> Text:
    return Text(count_text(errors), style="red" if errors else "dim")


def _latency_cells(latency: dict) -> list[str]:
    if not latency["count"]:
        return ["–"] * len(LATENCY_COLUMNS)
    return [ms_text(latency[key]) for key, _ in LATENCY_COLUMNS]


def _errors_text(result: dict) -> Text:
    """'errors: 420 (4.20%): connect 300, http_5xx 120' and a line per group that had errors."""
    totals = result["totals"]
    if not totals["errors"]:
        return Text("errors: none", style="green")
    text = Text("errors: ", style="bold")
    text.append(f"{count_text(totals['errors'])} ({percent_text(totals['error_rate'])})", style="red")
    text.append(f": {errors_text(totals['errors_by_kind'])}")
    for group in result["groups"]:
        if group["errors"]:
            text.append(f"\n  {group['name']}: ", style="dim italic" if group["name"] in UNLABELLED else "cyan")
            text.append(errors_text(group["errors_by_kind"]) or count_text(group["errors"]))
    return text


def _mix_table(title: str, counts: dict[str, int]) -> Table:
    table = Table(header_style="bold")
    table.add_column(title)
    table.add_column("requests", justify="right")
    table.add_column("share", justify="right")
    total = sum(counts.values())
    for label, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        table.add_row(label, count_text(count), percent_text(count / total if total else 0.0))
    return table


def _sticky_line(sticky: dict) -> Text:
    several = sticky["users_with_several_groups"]
    text = Text("sticky: ", style="bold")
    text.append(f"{count_text(sticky['users_seen'])} of {count_text(sticky['users'])} virtual users seen; ")
    if not several:
        text.append("none saw more than one group", style="green")
        return text
    text.append(f"{count_text(several)} saw more than one group", style="red")
    examples = "; ".join(f"user {example['user']}: {', '.join(example['groups'])}" for example in sticky["examples"])
    if examples:
        text.append(f" (e.g. {examples})", style="dim")
    return text


def _verdict_text(verdict: dict, requests: int) -> Text:
    """' PASS  10,000 requests · split holds · errors within --max-errors 0.10%', then the test's figures and
    the reasons it failed."""
    def check(name: str, good: bool, good_text: str, bad_text: str) -> None:
        text.append(f" · {name} ")
        text.append(good_text if good else bad_text, style="green" if good else "red")

    text = Text()
    text.append(" PASS " if verdict["passed"] else " FAIL ",
                style="bold white on green" if verdict["passed"] else "bold white on red")
    text.append(f"  {count_text(requests)} requests")
    if verdict["split_holds"] is not None:
        check("split", verdict["split_holds"], "holds", "does not hold")
    check("errors", verdict["errors_ok"], "within", "above")
    text.append(f" --max-errors {percent_text(verdict['max_errors'])}")
    if verdict["sticky_ok"] is not None:
        check("sticky users", verdict["sticky_ok"], "stayed put", "moved")
    if verdict["expected_from"] is None:
        text.append("\n  no expected split to test: give --expect or --from-gateway", style="dim")
    elif verdict["chi_square"] is not None:
        freedom = verdict["degrees_of_freedom"]
        text.append(f"\n  chi-square {verdict['chi_square']:,.2f}, {freedom} degree{'' if freedom == 1 else 's'} of "
                    f"freedom, p = {verdict['p_value']:.3g} (alpha {verdict['alpha']:g}), "
                    f"{verdict['unit']} counted, expected split from {_expectation_source(verdict['expected_from'])}",
                    style="dim")
    for reason in verdict["reasons"]:
        text.append(f"\n  - {reason}")
    return text


def _expectation_source(expected_from: str) -> str:
    """'expect' -> '--expect'; 'gateway:sava' -> '--from-gateway sava'."""
    return "--expect" if expected_from == "expect" else f"--from-gateway {expected_from.removeprefix('gateway:')}"


# -- JSON -----------------------------------------------------------------------------------------------------

def write_json(result: dict, path: str) -> None:
    """The result as pretty JSON, written atomically: the file at `path` is either the old one or complete.
    Raises ValueError (nothing written) when the result holds a value JSON cannot carry, such as NaN."""
    text = json.dumps(result, indent=2, allow_nan=False, ensure_ascii=False) + "\n"
    target = Path(path)
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temporary, "x", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
