"""`vamp loadtest` output: the result schema, the --json file, the --plot PNG, the final summary and the live
progress line, on result dicts built the way the runner builds them (latencies in real HDR histograms)."""
from __future__ import annotations

import dataclasses
import io
import json
import math
import random
import struct
from collections import Counter

import jsonschema
import pytest
from hdrh.histogram import HdrHistogram
from rich.console import Console

from loadtest.plan import NO_LABEL, NO_RESPONSE, UNLABELLED, Plan
from loadtest.plot import write_plot
from loadtest.report import RESULT_SCHEMA, LiveProgress, Progress, print_summary, write_json

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TAB10_BLUE = (31, 119, 180)       # the first labelled group's colour in the plot


# -- a result builder ---------------------------------------------------------------------------------------

def latency(values_ms: list[float]) -> dict:
    """LATENCY as the contract has it, from a real HdrHistogram recorded in microseconds."""
    histogram = HdrHistogram(1, 60_000_000, 3)
    for value in values_ms:
        histogram.record_value(max(1, round(value * 1000)))
    return {
        "count": histogram.get_total_count(),
        "mean": histogram.get_mean_value() / 1000,
        **{key: histogram.get_value_at_percentile(percentile) / 1000
           for key, percentile in (("p50", 50), ("p90", 90), ("p99", 99), ("p99_9", 99.9))},
        "max": histogram.get_max_value() / 1000,
        "distribution": [[step.percentile_level_iterated_to, step.value_iterated_to / 1000]
                         for step in histogram.get_percentile_iterator(5)],
        "hdr": histogram.encode().decode("ascii"),
    }


def spread(total: int, intervals: int) -> list[int]:
    """`total` requests spread evenly over `intervals` intervals."""
    base, extra = divmod(total, intervals) if intervals else (0, 0)
    return [base + (index < extra) for index in range(intervals)]


def make_group(label: str, requests: int, share: float, expected_share: float | None, by_kind: dict[str, int],
               latencies: list[float]) -> dict:
    errors = sum(by_kind.values())
    statuses = {} if label == NO_RESPONSE else {"200": requests - errors, "503": by_kind.get("http_5xx", 0)}
    return {"name": label, "requests": requests, "share": share, "expected_share": expected_share,
            "deviation": None if expected_share is None else share - expected_share,
            "errors": errors, "errors_by_kind": by_kind, "statuses": {code: n for code, n in statuses.items() if n},
            "latency_ms": latency(latencies)}


def make_verdict(expected: dict[str, float] | None, errors_ok: bool, sticky: dict | None, passed: bool,
                 reasons: tuple[str, ...]) -> dict:
    return {"expected_from": "expect" if expected else None, "unit": "users" if sticky else "requests",
            "chi_square": 0.4 if expected else None,
            "degrees_of_freedom": len(expected) - 1 if expected else None,
            "p_value": 0.527 if expected else None, "alpha": 0.001,
            "split_holds": True if expected else None,
            "max_errors": 0.001, "errors_ok": errors_ok,
            "sticky_ok": None if sticky is None else not sticky["users_with_several_groups"],
            "passed": passed, "exit_status": 0 if passed else 3, "reasons": list(reasons)}


def make_result(counts: dict[str, int], *, expected: dict[str, float] | None = None,
                errors: dict[str, dict[str, int]] | None = None, intervals: int = 10, sticky: dict | None = None,
                mix: dict | None = None, passed: bool = True, reasons: tuple[str, ...] = ()) -> dict:
    """A result of a 10 s run with `counts` requests per group label; `errors` gives errors by kind per label.
    Each group's latencies are log-normal, slower for later groups; "(no response)" has none."""
    rng = random.Random(5)
    errors = errors or {}
    everything = sum(counts.values())
    labelled_total = sum(count for label, count in counts.items() if label not in UNLABELLED)
    latencies = {label: [rng.lognormvariate(0.5 + position, 0.6) for _ in range(count * (label != NO_RESPONSE))]
                 for position, (label, count) in enumerate(counts.items())}
    groups = []
    for label, count in counts.items():
        unlabelled = label in UNLABELLED
        share = count / (everything if unlabelled else labelled_total)
        expected_share = None if unlabelled or expected is None else expected.get(label, 0.0)
        groups.append(make_group(label, count, share, expected_share, errors.get(label, {}), latencies[label]))
    groups.sort(key=lambda group: (group["name"] in UNLABELLED, -group["requests"]))
    errors_by_kind = dict(sum((Counter(by_kind) for by_kind in errors.values()), Counter()))
    error_count = sum(errors_by_kind.values())
    elapsed = 10.0
    return {
        "schema": "vamp-loadtest/1", "url": "http://127.0.0.1:9050/", "method": "GET",
        "model": "closed", "concurrency": 64, "rate": None, "processes": 1,
        "clients": sticky["users"] if sticky else None, "sticky": sticky, "by": "header:X-Version",
        "started_at": "2025-01-31T12:00:00.123456+00:00", "elapsed_s": elapsed,
        "totals": {"requests": everything, "responses": everything - counts.get(NO_RESPONSE, 0),
                   "errors": error_count, "error_rate": error_count / everything if everything else 0.0,
                   "requests_per_second": everything / elapsed, "errors_by_kind": errors_by_kind,
                   "latency_ms": latency([value for values in latencies.values() for value in values])},
        "groups": groups,
        "timeline": {"interval_s": elapsed / max(intervals, 1), "start_s": 0,
                     "groups": {label: spread(count, intervals) for label, count in counts.items()},
                     "errors": spread(error_count, intervals)},
        "mix": mix or {"user_agents": {}, "countries": {}},
        "verdict": make_verdict(expected, not errors, sticky, passed, reasons),
    }


NINETY_TEN = {"1.0.0": 9000, "1.1.0": 1000}


@pytest.fixture(scope="module")
def validator():
    schema = json.loads(RESULT_SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def five_groups() -> dict[str, int]:
    return {"v1": 4000, "v2": 3000, "v3": 2000, NO_LABEL: 600, NO_RESPONSE: 400}


MIX = {"user_agents": {"Chrome / Windows": 6000, "Mobile Safari / iOS": 4000}, "countries": {"GB": 2000, "US": 8000}}


def sticky_report(several: int) -> dict:
    return {"users": 500, "users_seen": 500, "users_with_several_groups": several,
            "examples": [{"user": 17, "groups": ["1.0.0", "1.1.0"]}][:several]}


# -- the schema -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("result", [
    make_result(NINETY_TEN, expected={"1.0.0": 0.9, "1.1.0": 0.1}),
    make_result({"200": 500}),
    make_result(five_groups(), errors={NO_RESPONSE: {"connect": 300, "reset": 100}, "v3": {"http_5xx": 20}},
                passed=False, reasons=("error rate 4.20% is above --max-errors 0.10%",)),
    make_result(NINETY_TEN, sticky=sticky_report(0), mix=MIX),
    make_result({}, intervals=0),
], ids=["split", "one-group", "errors", "sticky-and-mix", "nothing"])
def test_results_as_the_runner_builds_them_validate(validator, result):
    validator.validate(result)


DELETE = object()


@pytest.mark.parametrize("path, value", [
    ("verdict", DELETE),
    ("groups.0.latency_ms", DELETE),
    ("groups.0.colour", "blue"),
    ("totals.surprise", 1),
    ("groups.0.share", 1.5),
    ("groups.0.requests", -1),
    ("groups.0.errors_by_kind", {"boom": 1}),
    ("groups.0.statuses", {"OK": 1}),
    ("groups.0.latency_ms.distribution", [[50.0, 1.0, 2.0]]),
    ("groups.0.latency_ms.hdr", "not base64!"),
    ("model", "burst"),
    ("schema", "vamp-loadtest/2"),
    ("started_at", "2025-01-31T12:00:00+02:00"),
    ("verdict.exit_status", 2),             # passed, so 0
    ("verdict.exit_status", 4),
    ("verdict.passed", False),              # failed, yet exit status 0
    ("verdict.unit", "bytes"),
    ("verdict.p_value", 1.2),
    ("timeline.errors", [1, 2.5]),
    ("mix.countries", {"Britain": 3}),
    ("sticky", {"users": 1, "users_seen": 1, "users_with_several_groups": 0, "examples": [], "extra": 1}),
])
def test_broken_results_are_rejected(validator, path, value):
    result = make_result(NINETY_TEN, expected={"1.0.0": 0.9, "1.1.0": 0.1})
    *parents, last = path.split(".")
    target = result
    for key in parents:
        target = target[int(key)] if isinstance(target, list) else target[key]
    if value is DELETE:
        del target[last]
    else:
        target[last] = value
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(result)


def test_every_field_is_documented():
    schema = json.loads(RESULT_SCHEMA.read_text())
    undocumented = []

    def walk(node: dict, where: str) -> None:
        for name, child in node.get("properties", {}).items():
            if "description" not in child and "$ref" not in child:
                undocumented.append(f"{where}.{name}")
            walk(child, f"{where}.{name}")

    walk(schema, "result")
    for name, definition in schema["$defs"].items():
        walk(definition, name)
    assert undocumented == []


# -- --json -----------------------------------------------------------------------------------------------------

def test_write_json_writes_the_whole_result_prettily(tmp_path, validator):
    result = make_result(five_groups(), expected={"v1": 0.45, "v2": 0.33, "v3": 0.22})
    path = tmp_path / "result.json"
    write_json(result, str(path))
    text = path.read_text()
    assert json.loads(text) == result
    validator.validate(json.loads(text))
    assert text.startswith('{\n  "schema": "vamp-loadtest/1",') and text.endswith("}\n")
    assert list(tmp_path.iterdir()) == [path]


@pytest.mark.parametrize("poison", [math.nan, object()], ids=["nan", "not-serialisable"])
def test_write_json_leaves_the_old_file_alone_when_it_fails(tmp_path, poison):
    path = tmp_path / "result.json"
    path.write_text('{"old": true}\n')
    result = make_result(NINETY_TEN)
    result["elapsed_s"] = poison
    with pytest.raises((ValueError, TypeError)):
        write_json(result, str(path))
    assert path.read_text() == '{"old": true}\n'
    assert list(tmp_path.iterdir()) == [path]


def test_write_json_replaces_an_existing_file(tmp_path):
    path = tmp_path / "result.json"
    path.write_text("x" * 100_000)
    write_json(make_result(NINETY_TEN), str(path))
    assert json.loads(path.read_text())["totals"]["requests"] == 10_000


# -- --plot -----------------------------------------------------------------------------------------------------

def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE
    length, chunk = struct.unpack(">I4s", data[8:16])
    assert chunk == b"IHDR" and length == 13
    return struct.unpack(">II", data[16:24])


def pixels(path) -> set[tuple[int, int, int]]:
    from matplotlib.image import imread
    image = (imread(path)[:, :, :3] * 255).round().astype(int)
    return set(map(tuple, image.reshape(-1, 3).tolist()))


@pytest.mark.parametrize("result", [
    make_result({"200": 5000}),
    make_result(NINETY_TEN, expected={"1.0.0": 0.9, "1.1.0": 0.1}),
    make_result(five_groups(), errors={NO_RESPONSE: {"timeout": 400}}, expected={"v1": 0.4, "v2": 0.3, "v3": 0.3}),
], ids=["1-group", "2-groups", "5-groups"])
def test_write_plot_draws_the_groups_into_a_png(tmp_path, result):
    path = tmp_path / "result.png"
    write_plot(result, str(path))
    width, height = png_size(path.read_bytes())
    assert width > height > 0
    assert TAB10_BLUE in pixels(path)


def test_write_plot_copes_with_a_run_that_recorded_nothing(tmp_path):
    path = tmp_path / "empty.png"
    write_plot(make_result({}, intervals=0), str(path))
    assert min(png_size(path.read_bytes())) > 0
    assert TAB10_BLUE not in pixels(path)


# -- the final summary --------------------------------------------------------------------------------------------

def summary(result: dict, width: int = 120) -> str:
    console = Console(record=True, width=width, file=io.StringIO())
    print_summary(result, console)
    return console.export_text()


def test_summary_shows_each_group_with_its_share_and_the_verdict():
    text = summary(make_result(NINETY_TEN, expected={"1.0.0": 0.9, "1.1.0": 0.1}))
    rows = {line.split()[1]: line for line in text.splitlines() if line.split()[1:2] in (["1.0.0"], ["1.1.0"])}
    assert "9,000" in rows["1.0.0"] and "90.00%" in rows["1.0.0"] and "+0.00%" in rows["1.0.0"]
    assert "1,000" in rows["1.1.0"] and "10.00%" in rows["1.1.0"]
    assert "PASS" in text and "FAIL" not in text
    assert "10,000 requests" in text
    assert ("chi-square 0.40, 1 degree of freedom, p = 0.527 (alpha 0.001), requests counted, "
            "expected split from --expect") in text
    assert "errors: none" in text


def test_summary_on_a_narrow_console_splits_the_table_rather_than_cut_figures():
    text = summary(make_result(NINETY_TEN, expected={"1.0.0": 0.9, "1.1.0": 0.1}), width=80)
    assert "…" not in text
    assert max(map(len, text.splitlines())) <= 80
    assert text.count("│ 1.0.0 ") == 2 and "90.00%" in text and "p99.9 ms" in text


def test_summary_of_a_failed_run_gives_the_reasons_and_errors_by_kind():
    result = make_result(five_groups(), expected={"v1": 0.4, "v2": 0.3, "v3": 0.3},
                         errors={NO_RESPONSE: {"connect": 300, "reset": 100}, "v3": {"http_5xx": 20}}, passed=False,
                         reasons=("error rate 4.20% is above --max-errors 0.10%",))
    text = summary(result)
    assert "FAIL" in text and "PASS" not in text
    assert "error rate 4.20% is above --max-errors 0.10%" in text
    assert "connect 300, reset 100, http_5xx 20" in text
    assert "v3: http_5xx 20" in text and "(no response): connect 300, reset 100" in text
    lines = text.splitlines()
    v1, v3, none, no_response = (next(index for index, line in enumerate(lines) if f"│ {name} " in line)
                                 for name in ("v1", "v3", NO_LABEL, NO_RESPONSE))
    assert v1 < v3 < none < no_response
    assert any(set(line) <= set("├┼─┤") for line in lines[v3 + 1:none]), "unlabelled groups are set apart"


def test_summary_shows_sticky_users_and_the_traffic_mix():
    result = make_result(NINETY_TEN, sticky=sticky_report(1), mix=MIX, passed=False,
                         reasons=("1 virtual user saw more than one group",))
    text = summary(result)
    assert "1 saw more than one group" in text and "user 17: 1.0.0, 1.1.0" in text
    assert "Chrome / Windows" in text and "60.00%" in text and "US" in text and "80.00%" in text


def test_summary_without_expectation_says_so_and_formats_latency_for_people():
    result = make_result({"200": 2000}) | {"model": "open", "rate": 5000.0}
    text = summary(result)
    assert "open model, 5,000 req/s planned" in text
    assert "no expected split to test" in text
    row = next(line for line in text.splitlines() if line.split()[1:2] == ["200"])
    p50 = result["groups"][0]["latency_ms"]["p50"]
    assert f"{p50:.2f}" in row


# -- the live progress line ---------------------------------------------------------------------------------------

PLAN = Plan(url="http://127.0.0.1:9050/", host="127.0.0.1", port=9050, target="/", host_header="127.0.0.1:9050",
            duration=10.0)


def progress(elapsed: float, requests: int, groups: dict[str, int] | None = None, errors: int = 0) -> Progress:
    return Progress(elapsed=elapsed, requests=requests, errors=errors, groups=groups or {"1.0.0": requests},
                    planned=10.0, planned_requests=None)


def run_live(console: Console, updates: list[Progress], plan: Plan = PLAN) -> str:
    with LiveProgress(plan, console) as live:
        for update in updates:
            live.update(update)
    return console.file.getvalue()


def test_live_progress_prints_nothing_when_not_on_a_terminal():
    console = Console(file=io.StringIO(), force_terminal=False, width=160)
    assert run_live(console, [progress(0.25 * step, 100 * step) for step in range(1, 9)]) == ""


def test_live_progress_prints_nothing_when_progress_is_off():
    console = Console(file=io.StringIO(), force_terminal=True, width=160)
    assert run_live(console, [progress(1.0, 100)], dataclasses.replace(PLAN, progress=False)) == ""


def test_live_progress_shows_the_running_split_on_a_terminal():
    console = Console(file=io.StringIO(), force_terminal=True, color_system=None, width=200)
    output = run_live(console, [progress(2.5, 10_000, {"1.0.0": 8_990, "1.1.0": 1_000, NO_RESPONSE: 10}, errors=10)])
    assert "2.5s / 10.0s" in output
    assert "1.0.0 89.99%" in output and "1.1.0 10.01%" in output
    assert "(no response) 10" in output
    assert "errors 10 (0.10%)" in output


def test_live_progress_measures_requests_per_second_over_the_last_second():
    console = Console(file=io.StringIO(), force_terminal=True, color_system=None, width=200)
    # 1,000 req/s for 2 s, then 3,000 req/s: one second later the line says 3,000
    steps = [(0.25 * step, 250 * step) for step in range(1, 9)]
    steps += [(2 + 0.25 * step, 2000 + 750 * step) for step in range(1, 5)]
    output = run_live(console, [progress(elapsed, requests) for elapsed, requests in steps])
    assert "1,000 req/s" in output
    assert output.rstrip().rsplit("req/s", 1)[0].endswith("3,000 ")


def test_live_progress_repaints_at_most_five_times_a_second():
    console = Console(file=io.StringIO(), force_terminal=True, color_system=None, width=200)
    output = run_live(console, [progress(0.01 * step, 10 * step) for step in range(1, 101)])
    assert 1 <= output.count("req/s") <= 6
