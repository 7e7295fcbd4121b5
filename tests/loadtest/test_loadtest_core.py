"""The load tester's core, no load sent: the plan's parsing (and resolving the URL's host), the recorder and
its merge across processes, and the verdict (chi-square, errors, stickiness)."""
from __future__ import annotations

import socket

import pytest
from scipy.stats import chisquare

from loadtest.cli import resolve_host
from loadtest.generator import Share
from loadtest.plan import (NO_LABEL, NO_RESPONSE, OTHER_GROUP, MAX_GROUPS, PlanError, parse_expectations,
                                      parse_fraction, parse_grouping, parse_url)
from loadtest.recorder import Recorder, decode, merge
from loadtest.runner import rebinned
from loadtest.verdict import FAILED, PASSED, chi_square, judge


# -- plan ------------------------------------------------------------------------------------------------

def test_expectations_as_percentages_or_weights():
    assert parse_expectations(["1.0.0=90%", "1.1.0=10%"]) == pytest.approx({"1.0.0": 0.9, "1.1.0": 0.1})
    assert parse_expectations(["a=9", "b=1"]) == pytest.approx({"a": 0.9, "b": 0.1})
    assert parse_expectations(["v=1=50%", "w=50%"]) == pytest.approx({"v=1": 0.5, "w": 0.5})


@pytest.mark.parametrize("items, message", [
    (["a=90%", "b=20%"], "add up to 110%"),
    (["a=90%", "b=1"], "every share as a percentage"),
    (["a=50%", "a=50%"], "given twice"),
    (["a"], "GROUP=SHARE"),
    (["a=-5"], "negative"),
    (["a=0"], "above zero"),
    (["a=x%"], "expected a number"),
])
def test_bad_expectations_name_the_option(items, message):
    with pytest.raises(PlanError, match="--expect") as caught:
        parse_expectations(items)
    assert message in str(caught.value)


def test_grouping_kinds():
    header = parse_grouping("header:X-Version")
    assert (header.kind, header.header) == ("header", b"x-version")
    body = parse_grouping('body:/"name": "(\\w+)"/')
    assert body.kind == "body" and body.pattern.search(b'{"name": "v2"}').group(1) == b"v2"
    assert parse_grouping("status").kind == "status"
    for bad in ("header:", "cookie:x", "body:/(a)(b)/", "body:/(/", "header:bad name"):
        with pytest.raises(PlanError, match="--by"):
            parse_grouping(bad)


def test_url_forms():
    assert parse_url("http://127.0.0.1:9050/a?b=1") == ("127.0.0.1", 9050, "/a?b=1", "127.0.0.1:9050")
    assert parse_url("http://[::1]:8080") == ("::1", 8080, "/", "[::1]:8080")
    assert parse_url("http://localhost/") == ("localhost", 80, "/", "localhost")
    for bad in ("https://127.0.0.1/", "127.0.0.1:9050", "http:///x", "http://127.0.0.1:99999/"):
        with pytest.raises(PlanError, match="URL"):
            parse_url(bad)


def test_fractions():
    assert parse_fraction("0.1%", "--max-errors") == pytest.approx(0.001)
    assert parse_fraction("0.05", "--max-errors") == pytest.approx(0.05)
    with pytest.raises(PlanError, match="--max-errors"):
        parse_fraction("150%", "--max-errors")


def test_processes_share_everything_exactly():
    for total in (0, 1, 7, 64, 1001):
        for count in (1, 2, 3, 5):
            parts = [Share(i, count).part(total) for i in range(count)]
            assert sum(parts) == total and max(parts) - min(parts) <= 1
            firsts = [Share(i, count).first(total) for i in range(count)]
            assert firsts == [sum(parts[:i]) for i in range(count)]


# -- recorder --------------------------------------------------------------------------------------------

def test_recorder_counts_groups_errors_and_timeline():
    recorder = Recorder(start=100.0, interval=0.5)
    recorder.response(b"v1", 200, 0.002, 100.1)
    recorder.response(b"v1", 200, 0.004, 100.7)
    recorder.response(b"v2", 503, 0.010, 101.2)
    recorder.response(None, 502, 0.001, 101.3)
    recorder.failure("connect", 0.0001, 101.4)
    snapshot = recorder.snapshot()
    assert (snapshot["requests"], snapshot["errors"]) == (5, 3)
    groups = snapshot["groups"]
    assert groups["v1"]["timeline"] == [1, 1]
    assert groups["v2"]["errors_by_kind"] == {"http_5xx": 1} and groups["v2"]["statuses"] == {503: 1}
    assert groups[NO_LABEL]["requests"] == 1
    assert groups[NO_RESPONSE]["errors_by_kind"] == {"connect": 1}
    assert snapshot["errors_timeline"] == [0, 0, 3]
    latency = decode(groups["v1"]["hdr"])
    assert latency.get_total_count() == 2
    assert latency.get_max_value() == pytest.approx(4000, rel=0.01)       # microseconds


def test_status_labels_and_group_cap():
    recorder = Recorder(start=0.0, interval=1.0)
    recorder.response(200, 200, 0.001, 0.1)
    for index in range(MAX_GROUPS + 5):
        recorder.response(f"label-{index}".encode(), 200, 0.001, 0.1)
    names = set(recorder.group_counts())
    assert "200" in names and OTHER_GROUP in names
    assert len(names) == MAX_GROUPS + 1
    assert recorder.group_counts()[OTHER_GROUP] == 6


def test_merge_adds_processes_up_histograms_included():
    first, second = Recorder(0.0, 1.0, sticky=True), Recorder(0.0, 1.0, sticky=True)
    for index in range(100):
        first.response(b"v1", 200, 0.001 * (index + 1), 0.5, user=index % 10)
    for index in range(50):
        second.response(b"v2", 200, 0.2, 1.5, user=10 + index % 5)
    second.response(b"v1", 200, 0.3, 1.5, user=10)
    merged = merge([first.snapshot(), second.snapshot()])
    assert merged["requests"] == 151
    assert merged["groups"]["v1"]["requests"] == 101
    assert merged["groups"]["v1"]["timeline"] == [100, 1]
    histogram = decode(merged["groups"]["v1"]["hdr"])
    assert histogram.get_total_count() == 101
    assert histogram.get_max_value() == pytest.approx(300_000, rel=0.01)
    assert len(merged["first_group"]) == 15
    assert merged["other_groups"] == {10: ["v1"]}


# -- verdict ---------------------------------------------------------------------------------------------

def test_chi_square_matches_scipy():
    observed, expected = {"a": 880, "b": 120}, {"a": 0.9, "b": 0.1}
    statistic, freedom, p_value = chi_square(observed, expected)
    reference = chisquare([880, 120], [900, 100])
    assert statistic == pytest.approx(reference.statistic)
    assert p_value == pytest.approx(reference.pvalue)
    assert freedom == 1


def verdict_for(observed, expected, *, errors=0, several=None, alpha=0.001, max_errors=0.001):
    return judge(observed=observed, expected=expected, expected_from="expect", unit="requests",
                 requests=sum(observed.values()) or 1, errors=errors, alpha=alpha, max_errors=max_errors,
                 users_with_several_groups=several)


def test_an_exact_split_passes_and_a_wrong_one_fails():
    assert verdict_for({"v1": 2700, "v2": 300}, {"v1": 0.9, "v2": 0.1})["exit_status"] == PASSED
    failed = verdict_for({"v1": 1500, "v2": 1500}, {"v1": 0.9, "v2": 0.1})
    assert failed["exit_status"] == FAILED and failed["split_holds"] is False
    assert "v1 50.00% (expected 90.00%), v2 50.00% (expected 10.00%)" in failed["reasons"][0]


def test_an_unexpected_group_fails_even_when_tiny():
    failed = verdict_for({"v1": 9999, "v3": 1}, {"v1": 1.0})
    assert failed["split_holds"] is False and "v3 got 1 requests" in failed["reasons"][0]


def test_errors_and_stickiness_gate_the_run():
    assert verdict_for({"v1": 1000}, {"v1": 1.0}, errors=1)["exit_status"] == PASSED      # 0.1% is allowed
    too_many = verdict_for({"v1": 1000}, {"v1": 1.0}, errors=2)
    assert too_many["errors_ok"] is False and too_many["exit_status"] == FAILED
    assert verdict_for({"v1": 10}, None, several=0)["exit_status"] == PASSED
    unstuck = verdict_for({"v1": 10}, None, several=3)
    assert unstuck["sticky_ok"] is False and "3 sticky virtual users" in unstuck["reasons"][0]


def test_without_expectation_only_errors_count():
    verdict = verdict_for({"v1": 10, "v2": 990}, None)
    assert verdict["split_holds"] is None and verdict["chi_square"] is None and verdict["passed"]


def test_timeline_is_rebinned_to_at_most_200_points_without_losing_counts():
    series = {"v1": [1] * 1000, "v2": [2] * 450}
    timeline = rebinned(0.1, series, [0] * 999 + [7])
    assert timeline["interval_s"] == pytest.approx(0.5)
    assert len(timeline["groups"]["v1"]) == len(timeline["groups"]["v2"]) == len(timeline["errors"]) == 200
    assert sum(timeline["groups"]["v1"]) == 1000 and sum(timeline["groups"]["v2"]) == 900
    assert timeline["errors"][-1] == 7
    short = rebinned(0.1, {"v1": [3, 4]}, [])
    assert short == {"interval_s": 0.1, "start_s": 0, "groups": {"v1": [3, 4]}, "errors": [0, 0]}


def test_a_host_name_resolves_to_the_address_that_accepts_connections():
    with socket.create_server(("127.0.0.1", 0)) as listener:       # IPv4 only, whatever localhost says first
        port = listener.getsockname()[1]
        assert resolve_host("localhost", port) == "127.0.0.1"
    assert resolve_host("::1", 1) == "::1"                              # a literal is taken as it is
