"""The metrics aggregation (control/metrics/aggregator.py, series.py) on snapshots made up by the test and a
clock the test moves: what a gateway, a route and a target received is counted exactly once, over any window,
whatever the resolution the window reaches into; resets, new and departing targets, several workers and a
worker that cannot be read are counted right; percentiles interpolate within a bucket; memory stays bounded."""
from __future__ import annotations

import asyncio
import random

import pytest

from control.metrics.aggregator import Aggregator, quantile
from control.metrics.model import Scope
from control.metrics.series import Series, Totals, tiers_for, window_start
from gateway import LATENCY_BUCKETS
from tests.support.metrics import FakeGateways
from tests.support.waiting import eventually_async

START = 1_000_000           # the clock's seconds at the first snapshot


class Clocked:
    """An aggregator over fake workers, on a clock the test moves one second at a time."""

    def __init__(self, *workers: FakeGateways, window: int = 3600) -> None:
        self.workers = workers or (FakeGateways(),)
        self.now = START
        self.aggregator = Aggregator([worker.source for worker in self.workers], window=window,
                                     clock=lambda: self.now)
        self.sample()                                    # the baseline

    @property
    def worker(self) -> FakeGateways:
        return self.workers[0]

    def sample(self, readable: tuple[bool, ...] | None = None) -> None:
        snapshots = [worker.snapshot() if readable is None or readable[index] else None
                     for index, worker in enumerate(self.workers)]
        self.aggregator.ingest(snapshots, self.now + 0.25)

    def second(self, readable: tuple[bool, ...] | None = None) -> None:
        self.now += 1
        self.sample(readable)

    def requests(self, scope: Scope, window: float = 3600) -> int:
        return self.aggregator.summary([scope], window).requests


GW, R1, R2, T1, T2, T3 = "shop", "shop/a", "shop/b", "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"


# -- counting once, where it belongs -------------------------------------------------------------------
def test_the_first_snapshot_is_a_baseline_and_what_follows_is_counted_per_gateway_route_and_target():
    worker = FakeGateways()
    worker.answer(GW, R1, T1, times=1000)               # before the aggregation began
    clock = Clocked(worker)
    assert clock.requests(Scope(GW)) == 0
    worker.answer(GW, R1, T1, times=3)
    worker.answer(GW, R1, T2, status=503, times=2)
    worker.answer(GW, R2, T3, times=4)
    worker.answer(GW, None, None, status=503)           # no route took it: the gateway's only
    clock.second()
    assert clock.requests(Scope(GW, R1, T1)) == 3
    assert clock.requests(Scope(GW, R1, T2)) == 2
    assert clock.requests(Scope(GW, R1)) == 5
    assert clock.requests(Scope(GW, R2)) == 4
    assert clock.requests(Scope(GW)) == 10
    summary = clock.aggregator.summary([Scope(GW, R1), Scope(GW, R2)], 60)
    assert (summary.requests, summary.errors, summary.classes) == (9, 2, (0, 7, 0, 0, 2))
    assert summary.health == pytest.approx(7 / 9) and summary.error_rate == pytest.approx(2 / 9)


def test_a_scope_without_requests_has_no_health_and_an_unknown_one_adds_nothing():
    clock = Clocked()
    clock.worker.add_target(GW, R1, T1)
    clock.second()
    quiet = clock.aggregator.summary([Scope(GW, R1)], 60)
    assert (quiet.requests, quiet.health, quiet.error_rate, quiet.mean_ms, quiet.p99_ms) == (0, None, None, None, None)
    assert clock.aggregator.knows(Scope(GW, R1, T1)) and not clock.aggregator.knows(Scope(GW, "nothing"))
    clock.worker.answer(GW, R1, T1, times=2)
    clock.second()
    both = clock.aggregator.summary([Scope(GW, R1), Scope("nothing"), Scope(GW, "nothing", T1)], 60)
    assert both.requests == 2


def test_a_counter_that_went_down_was_reset_and_its_new_value_is_counted():
    clock = Clocked()
    clock.worker.answer(GW, R1, T1, times=50)
    clock.second()
    clock.worker.restart()
    clock.worker.answer(GW, R1, T1, times=3)
    clock.second()
    assert clock.requests(Scope(GW, R1, T1)) == 53
    assert clock.requests(Scope(GW)) == 53


def test_a_target_seen_for_the_first_time_counts_from_zero():
    clock = Clocked()
    clock.worker.answer(GW, R1, T1, times=2)
    clock.second()
    clock.worker.answer(GW, R1, T2, times=7)              # a new instance, busy in its first second
    clock.second()
    assert clock.requests(Scope(GW, R1, T2)) == 7
    assert clock.requests(Scope(GW, R1)) == 9


def test_a_target_that_leaves_keeps_what_it_counted_and_the_route_counts_nothing_twice():
    clock = Clocked()
    clock.worker.answer(GW, R1, T1, times=5)
    clock.worker.answer(GW, R1, T2, times=6)
    clock.second()
    clock.worker.answer(GW, R1, T1)
    clock.second()
    clock.worker.remove_target(GW, R1, T1)              # folded into the route's remainder
    clock.second()
    clock.worker.answer(GW, R1, None)                   # a request that was under way on it ends
    clock.worker.answer(GW, R1, T2)
    clock.second()
    assert clock.requests(Scope(GW, R1, T1)) == 6
    assert clock.requests(Scope(GW, R1, T2)) == 7
    assert clock.requests(Scope(GW, R1)) == 14
    assert clock.requests(Scope(GW)) == 14


def test_workers_are_counted_apart_so_that_one_restarting_or_unreadable_resets_only_its_own():
    one, two = FakeGateways(), FakeGateways()
    clock = Clocked(one, two)
    one.answer(GW, R1, T1, times=100)
    two.answer(GW, R1, T1, times=40)
    clock.second()
    two.restart()                                       # worker 2 died and came back
    two.answer(GW, R1, T1, times=4)
    one.answer(GW, R1, T1, times=1)
    clock.second()
    one.answer(GW, R1, T1, times=2)
    clock.second(readable=(True, False))                # worker 2 could not be read this time
    two.answer(GW, R1, T1, times=5)
    clock.second()
    assert clock.requests(Scope(GW, R1, T1)) == 100 + 40 + 4 + 1 + 2 + 5
    assert clock.requests(Scope(GW)) == 152


def test_upstream_errors_and_requests_in_flight():
    clock = Clocked()
    clock.worker.error(GW, R1, T1)
    clock.worker.error(GW, R1, T1, "timeout")
    clock.worker.in_flight = {(GW, R1, T1): 2, (GW, R2, T3): 1}
    clock.worker.add_target(GW, R2, T3)
    clock.second()
    summary = clock.aggregator.summary([Scope(GW, R1)], 60)
    assert (summary.upstream_errors, summary.in_flight, summary.requests) == (2, 2, 0)
    assert clock.aggregator.summary([Scope(GW)], 60).in_flight == 3
    assert clock.aggregator.summary([Scope(GW, R2, T3), Scope(GW, R1, T1)], 60).in_flight == 3


# -- windows ---------------------------------------------------------------------------------------------
def test_windows_count_every_second_once_at_any_length_and_say_what_they_cover():
    clock = Clocked()
    for _ in range(2 * 3600 + 17):
        clock.worker.answer(GW, R1, T1)                 # one request a second
        clock.second()
    for asked in (1, 2, 30, 59, 60, 61, 89, 90, 300, 599, 600, 601, 1000, 1799, 3599, 3600, 7200):
        summary = clock.aggregator.summary([Scope(GW, R1, T1)], asked)
        covered = min(asked, 3600)
        assert summary.window <= covered and summary.requests == summary.window, asked
        if asked <= 60:
            assert summary.window == asked
        assert summary.window > covered - (15 if covered <= 600 else 120), asked
        assert summary.rate == 1.0


def test_irregular_traffic_is_summed_exactly_against_a_record_of_every_second():
    rng = random.Random(20261202)
    clock = Clocked(window=3000)
    record: dict[int, int] = {}                         # second -> requests of target T1
    for _ in range(4000):
        if rng.random() < 0.05:
            clock.now += rng.choice((30, 200, 900))      # idle stretches: nothing sampled meanwhile
        count = rng.choice((0, 0, 1, 5, 40))
        if count:
            clock.worker.answer(GW, R1, T1, times=count)
        clock.second()
        record[clock.now] = record.get(clock.now, 0) + count
        if rng.random() < 0.02:
            for asked in (rng.randint(1, 60), rng.randint(61, 600), rng.randint(601, 3000)):
                summary = clock.aggregator.summary([Scope(GW, R1, T1)], asked)
                start = clock.now - int(summary.window)
                expected = sum(n for second, n in record.items() if start < second <= clock.now)
                assert summary.requests == expected, (asked, summary.window)


def test_the_window_covers_what_history_there_is():
    clock = Clocked(window=600)
    for _ in range(10):
        clock.worker.answer(GW, R1, T1)
        clock.second()
    summary = clock.aggregator.summary([Scope(GW)], 300)
    assert (summary.window, summary.requests, summary.rate) == (10.0, 10, 1.0)
    assert clock.aggregator.summary([Scope(GW)], 5000).window == 10.0      # and never past the window


def test_tiers_and_window_starts():
    assert [(t.step, t.slots) for t in tiers_for(3600)] == [(1, 61), (15, 41), (120, 31)]
    assert [(t.step, t.slots) for t in tiers_for(30)] == [(1, 31)]
    assert [t.step for t in tiers_for(86400)] == [1, 15, 120, 1200]
    assert window_start(1000, 60) == 940
    assert window_start(1000, 61) == 945                # the first 15 s boundary after 939
    assert window_start(1000, 601) == 480               # the first 2 min boundary after 399


def test_memory_is_bounded_by_what_was_served_within_the_window():
    clock = Clocked(window=120)
    for round_ in range(20):                            # a new instance every 30 s, the old one leaves
        target = f"127.0.0.1:{1000 + round_}"
        for _ in range(30):
            clock.worker.answer(GW, R1, target)
            clock.second()
        clock.worker.remove_target(GW, R1, target)
    assert clock.aggregator.series_count() <= 1 + 1 + 120 // 30 + 2     # gateway, remainder, recent targets
    summary = clock.aggregator.summary([Scope(GW, R1)], 120)
    assert summary.requests == summary.window > 100


def test_an_empty_series_holds_no_buckets_and_a_busy_one_a_fixed_number():
    series = Series(tiers_for(3600))
    assert series.rings is None
    for second in range(1, 10_000):
        series.add(second, [1] * 21, 0.001)
    assert [len(ring.seconds) for ring in series.rings] == [61, 41, 31]
    totals = Totals()
    start = window_start(9999, 3600)
    series.total(start, totals)
    assert totals.requests == (9999 - start) * 15       # 15 latency buckets of 1 each per second
    assert totals.seconds == pytest.approx((9999 - start) * 0.001)


# -- percentiles -----------------------------------------------------------------------------------------
def test_percentiles_interpolate_linearly_within_their_bucket():
    empty = [0] * (len(LATENCY_BUCKETS) + 1)
    assert quantile(empty, 0.5) is None
    in_bucket = list(empty)
    in_bucket[2] = 100                                   # (2.5 ms, 5 ms]
    assert quantile(in_bucket, 0.5) == pytest.approx(3.75)
    assert quantile(in_bucket, 0.99) == pytest.approx(4.975)
    spread = list(empty)
    spread[0], spread[3] = 90, 10                        # 90 at most 1 ms, 10 in (5 ms, 10 ms]
    assert quantile(spread, 0.5) == pytest.approx(0.5 * 1.0 / 0.9)
    assert quantile(spread, 0.95) == pytest.approx(5 + 5 * 0.5)
    slowest = list(empty)
    slowest[-1] = 3                                      # beyond 30 s: its lower bound
    assert quantile(slowest, 0.99) == 30_000


def test_the_summary_reports_mean_and_percentiles_in_milliseconds():
    clock = Clocked()
    clock.worker.answer(GW, R1, T1, seconds=0.003, times=99)
    clock.worker.answer(GW, R1, T1, seconds=0.2, times=1)
    clock.second()
    summary = clock.aggregator.summary([Scope(GW)], 60)
    assert summary.mean_ms == pytest.approx((99 * 3 + 200) / 100)
    assert 2.5 <= summary.p50_ms <= 5 and 2.5 <= summary.p95_ms <= 5
    assert summary.p99_ms == pytest.approx(5.0)          # rank 99 of 100: the end of the 2.5-5 ms bucket


# -- running -----------------------------------------------------------------------------------------------
async def test_started_it_samples_its_sources_until_stopped():
    worker = FakeGateways()
    worker.answer(GW, R1, T1, times=7)                  # before the start: the baseline
    aggregator = Aggregator([worker.source], interval=0.05)
    await aggregator.start()
    try:
        worker.answer(GW, R1, T1, times=3)
        await eventually_async(lambda: aggregator.summary([Scope(GW)], 60).requests == 3, 10,
                               "the requests after the start counted")
    finally:
        await aggregator.stop()
    worker.answer(GW, R1, T1, times=5)
    await asyncio.sleep(0)
    assert aggregator.summary([Scope(GW)], 60).requests == 3


# -- history: the window point by point (the web UI's charts) -------------------------------------------
def test_history_gives_every_request_once_in_the_point_of_its_second_at_the_resolution_that_holds_it():
    clock = Clocked()
    served: dict[int, int] = {}                         # the clock's second -> requests that second
    rng = random.Random(7)
    for _ in range(20 * 60):
        count = rng.choice((0, 1, 3))
        if count:
            clock.worker.answer(GW, R1, T1, times=count)
        clock.second()
        served[clock.now] = count
    points = clock.aggregator.history([Scope(GW, R1)], 15 * 60)
    assert [(start, end) for start, end, _ in points] == sorted((start, end) for start, end, _ in points)
    assert all(0 < end - start <= 120 and end <= 0 for start, end, _ in points)
    lengths = {end - start for start, end, _ in points}
    assert {5, 15, 120} <= lengths                     # the last minute, up to 10 minutes, further back
    assert points[-1][1] == 0 and points[0][0] > -15 * 60 - 120
    for start, end, summary in points:                  # each point holds exactly what its seconds served
        expected = sum(count for second, count in served.items() if clock.now + start < second <= clock.now + end)
        assert summary.requests == expected, (start, end)
        assert summary.rate == pytest.approx(expected / (end - start))
    assert clock.aggregator.history([Scope("nothing")], 60) and all(
        summary.requests == 0 for _, _, summary in clock.aggregator.history([Scope("nothing")], 60))
