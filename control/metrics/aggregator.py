"""The platform's metrics aggregation: every second it reads the gateways' counters, turns them into what each
gateway, route and target received in that second, and keeps that over a window (`series.Series`: 1 s
resolution for the last minute, coarser further back, bounded memory). `summary()` answers for any set of
scopes: it is the `MetricsReader` the API, SLAs and workflows read (control/metrics/model.py).

Its sources are the gateway's workers, one snapshot each (`LocalWorker.snapshot`, `ProcessWorker.snapshot`), so
that a worker that restarts with its counters at 0 resets only its own. Per source and counter:

- the source's first snapshot is a baseline: what was counted before the aggregation began is not a burst;
- a counter that went down was reset: its new value is what happened since;
- a counter seen for the first time later (a new route or target) counts from 0;
- a counter missing from a snapshot keeps its last value (for the window), so one that comes back continues.

A route is stored as its targets' series plus a remainder series: what its own (never decreasing) counters
grew by beyond its targets' (gateway.proxy.stats: targets that left it, exchanges without a target). A
gateway is stored whole: its routes' growth plus the requests no route took. Requests in flight are those
of the last snapshot. Everything counted is a finished exchange, in the second its snapshot was taken.
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from control.metrics.model import Scope, Summary
from control.metrics.series import BUCKETS, CLASSES, ERRORS, Series, Totals, tiers_for, window_start
from gateway import LATENCY_BUCKETS

log = logging.getLogger("vamp.metrics")

Snapshot = dict[str, Any]
SnapshotSource = Callable[[], Awaitable[Snapshot]]

DEFAULT_WINDOW = 3600          # seconds kept
INTERVAL = 1.0                 # seconds between two snapshots
PRUNE_EVERY = 60               # ticks between two sweeps for what left the window
_PAST_THE_SECOND = 0.005       # a tick is taken this long after a whole second of the clock
# history(): the points' length by age, (step, how far back in seconds; None: the rest of the window), each a
# multiple of the series' tiers (control/metrics/series.py) where it reaches into them
HISTORY_STEPS: tuple[tuple[int, int | None], ...] = ((5, 60), (15, 600), (120, None))


@dataclass(slots=True)
class _Last:
    """The last counters one source showed of one gateway (its unrouted requests), route or target."""
    ints: list[int]
    seconds: float
    count: int
    errors: int
    seen: int                  # the second of the last snapshot that had it


@dataclass(slots=True)
class _Route:
    remainder: Series | None = None
    targets: dict[str, Series] = field(default_factory=dict)


@dataclass(slots=True)
class _Gateway:
    total: Series | None = None
    routes: dict[str, _Route] = field(default_factory=dict)


Delta = tuple[list[int], float]


class Aggregator:
    """The `MetricsReader` of the platform: `await start()` takes the baseline and samples every `interval`
    seconds of `clock` until `await stop()`. Tests drive it with `ingest(snapshots, now)` on a clock of their own."""

    def __init__(self, sources: Sequence[SnapshotSource], *, window: float = DEFAULT_WINDOW,
                 clock: Callable[[], float] = time.monotonic, interval: float = INTERVAL) -> None:
        if window < 1:
            raise ValueError("the metrics window is at least 1 s")
        self.sources = list(sources)
        self.window = math.ceil(window)
        self.clock = clock
        self.interval = interval
        self._tiers = tiers_for(self.window)
        self._last: list[dict[tuple[str, ...], _Last]] = [{} for _ in self.sources]
        self._baselined: set[int] = set()
        self._gateways: dict[str, _Gateway] = {}
        self._in_flight: dict[tuple[str, ...], int] = {}    # of the last snapshots; its keys: what is served now
        self._now: int | None = None                        # the second of the last snapshots
        self._since: int | None = None                      # the second of the baseline
        self._ticks = 0
        self._task: asyncio.Task | None = None

    # -- running ---------------------------------------------------------------------------------------
    async def start(self) -> None:
        await self.tick()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval - self.clock() % self.interval + _PAST_THE_SECOND)
            try:
                await self.tick()
            except Exception:  # noqa: BLE001 - one failed round must not end the aggregation
                log.exception("metrics aggregation failed")

    async def tick(self) -> None:
        """Read every source now and record what changed."""
        snapshots: list[Snapshot | None] = []
        for source in self.sources:
            try:
                snapshots.append(await source())
            except Exception:  # noqa: BLE001 - a source that fails this time is read again next time
                log.exception("cannot read the gateway's counters")
                snapshots.append(None)
        self.ingest(snapshots, self.clock())

    # -- recording -------------------------------------------------------------------------------------
    def ingest(self, snapshots: Sequence[Snapshot | None], now: float) -> None:
        """Record the sources' snapshots (None: that source could not be read) taken at `now` (the clock's
        seconds), in order; the first is the baseline."""
        second = int(now)
        if self._since is None:
            self._since = second                 # the baseline's second: windows start after it
        else:                                    # never back in time, nor into the baseline's second
            second = max(second, self._now or 0, self._since + 1)
        self._now = second
        deltas: dict[tuple[str, ...], Delta] = {}
        in_flight: dict[tuple[str, ...], int] = {}
        while len(self._last) < len(snapshots):
            self._last.append({})
        for index, snapshot in enumerate(snapshots):
            if snapshot is None:
                continue
            self._read(index, snapshot, second, deltas, in_flight)
            self._baselined.add(index)
        self._in_flight = in_flight
        for key, (ints, seconds) in deltas.items():
            self._series(key).add(second, ints, seconds)
        self._ticks += 1
        if self._ticks % PRUNE_EVERY == 0:
            self._prune(second)

    def _read(self, index: int, snapshot: Snapshot, second: int, deltas: dict[tuple[str, ...], Delta],
              in_flight: dict[tuple[str, ...], int]) -> None:
        last = self._last[index]
        baseline = index not in self._baselined
        for gateway_name, gateway in snapshot["gateways"].items():
            gateway_key = (gateway_name,)
            _count(in_flight, gateway_key, gateway.get("in_flight", 0))
            unrouted = _delta(last, gateway_key, gateway["unrouted"], second, baseline)
            grown = [unrouted] if unrouted is not None else []        # the gateway's: summed once, below
            for route_name, route in gateway["routes"].items():
                route_key = (gateway_name, route_name)
                _count(in_flight, route_key, route.get("in_flight", 0))
                route_grown = _delta(last, route_key, route["stats"], second, baseline)
                attributed: Delta | None = None
                for address, target in route["targets"].items():
                    target_key = (gateway_name, route_name, address)
                    _count(in_flight, target_key, target["in_flight"])
                    target_grown = _delta(last, target_key, target["stats"], second, baseline)
                    if target_grown is not None:
                        _add(deltas, target_key, target_grown)
                        attributed = target_grown if attributed is None else _sum(attributed, target_grown)
                if route_grown is not None:
                    grown.append(route_grown)
                    rest = _beyond(route_grown, attributed)
                    if rest is not None:
                        _add(deltas, route_key, rest)
            if grown:
                _add(deltas, gateway_key, grown[0] if len(grown) == 1 else
                     ([sum(column) for column in zip(*(ints for ints, _ in grown))], sum(s for _, s in grown)))

    def series_count(self) -> int:
        """How many series hold samples (their memory is what the aggregation costs)."""
        return sum((gateway.total is not None and gateway.total.newest is not None)
                   + sum(route.remainder is not None for route in gateway.routes.values())
                   + sum(len(route.targets) for route in gateway.routes.values())
                   for gateway in self._gateways.values())

    def _series(self, key: tuple[str, ...]) -> Series:
        """The series of a gateway (1 name), a route's remainder (2) or a target (3), made on first use."""
        gateway = self._gateways.get(key[0])
        if gateway is None:
            gateway = self._gateways[key[0]] = _Gateway()
        if len(key) == 1:
            if gateway.total is None:
                gateway.total = Series(self._tiers)
            return gateway.total
        route = gateway.routes.get(key[1])
        if route is None:
            route = gateway.routes[key[1]] = _Route()
        if len(key) == 2:
            if route.remainder is None:
                route.remainder = Series(self._tiers)
            return route.remainder
        series = route.targets.get(key[2])
        if series is None:
            series = route.targets[key[2]] = Series(self._tiers)
        return series

    def _prune(self, second: int) -> None:
        """Forget series with nothing in the window that are no longer served, and counters not seen for as
        long: memory stays bounded by what was served within the window."""
        oldest = second - self.window

        def gone(series: Series | None, key: tuple[str, ...]) -> bool:
            return key not in self._in_flight and (series is None or (series.newest or 0) < oldest)

        for gateway_name in list(self._gateways):
            gateway = self._gateways[gateway_name]
            for route_name in list(gateway.routes):
                route = gateway.routes[route_name]
                for address in [a for a, s in route.targets.items() if gone(s, (gateway_name, route_name, a))]:
                    del route.targets[address]
                if not route.targets and gone(route.remainder, (gateway_name, route_name)):
                    del gateway.routes[route_name]
            if not gateway.routes and gone(gateway.total, (gateway_name,)):
                del self._gateways[gateway_name]
        for last in self._last:
            for key in [key for key, seen in last.items() if seen.seen < oldest]:
                del last[key]

    # -- reading ---------------------------------------------------------------------------------------
    def knows(self, scope: Scope) -> bool:
        """Whether the scope is served now or received something within the window."""
        key = _key(scope)
        if key in self._in_flight:
            return True
        gateway = self._gateways.get(scope.gateway)
        if gateway is None or scope.route is None:
            return gateway is not None
        route = gateway.routes.get(scope.route)
        if route is None or scope.target is None:
            return route is not None
        return scope.target in route.targets

    def summary(self, scopes: Sequence[Scope], window: float) -> Summary:
        """The sum of `scopes` over the last `window` seconds (at most the aggregation window; a window past a
        minute starts on a bucket boundary: control/metrics/series.py); `Summary.window` is what it covers."""
        now, since = self._now, self._since
        if now is None or since is None:
            return _summary(Totals(), 0.0, 0)
        asked = min(math.ceil(window), self.window) if window >= 1 else 1          # (NaN too: 1 s)
        start = max(window_start(now, asked), since)
        totals = Totals()
        in_flight = 0
        for scope in scopes:
            for series in self._series_of(scope):
                series.total(start, totals)
            in_flight += self._in_flight.get(_key(scope), 0)
        return _summary(totals, float(now - start), in_flight)

    def history(self, scopes: Sequence[Scope], window: float) -> list[tuple[int, int, Summary]]:
        """The sum of `scopes` over the last `window` seconds, point by point, oldest first: (from, to, summary)
        with `from` and `to` in seconds before the newest sample (negative or 0). Each point is a bucket of the
        finest history that still holds it (`HISTORY_STEPS`: 5 s for the last minute, 15 s up to 10 minutes,
        2 min further back), so the points are exact; `summary.window` is the point's length."""
        now, since = self._now, self._since
        if now is None or since is None:
            return []
        begin = max(now - min(math.ceil(window), self.window), since)
        edges = [now]
        for level, (step, reach) in enumerate(HISTORY_STEPS):
            first = len(edges)
            while True:
                edge = (edges[-1] - 1) // step * step          # the step's boundary before the last edge
                if edge < begin or (reach is not None and now - edge > reach):
                    break
                edges.append(edge)
            if level + 1 < len(HISTORY_STEPS) and edges[-1] >= begin + step:
                coarser = HISTORY_STEPS[level + 1][0]       # end this step's points where the coarser one's begin
                while len(edges) > first and edges[-1] % coarser:
                    edges.pop()
        points = []
        for end, start in zip(edges, edges[1:]):
            totals = Totals()
            for scope in scopes:
                for series in self._series_of(scope):
                    series.total(start, totals, end)
            points.append((start - now, end - now, _summary(totals, float(end - start), 0)))
        points.reverse()
        return points

    def _series_of(self, scope: Scope) -> list[Series]:
        gateway = self._gateways.get(scope.gateway)
        if gateway is None:
            return []
        if scope.route is None:
            return [gateway.total] if gateway.total is not None else []
        route = gateway.routes.get(scope.route)
        if route is None:
            return []
        if scope.target is not None:
            series = route.targets.get(scope.target)
            return [series] if series is not None else []
        return ([route.remainder] if route.remainder is not None else []) + list(route.targets.values())


def _key(scope: Scope) -> tuple[str, ...]:
    if scope.route is None:
        return (scope.gateway,)
    if scope.target is None:
        return (scope.gateway, scope.route)
    return (scope.gateway, scope.route, scope.target)


def _count(into: dict[tuple[str, ...], int], key: tuple[str, ...], value: int) -> None:
    into[key] = into.get(key, 0) + value


def _delta(last: dict[tuple[str, ...], _Last], key: tuple[str, ...], stats: dict[str, Any], second: int,
           baseline: bool) -> Delta | None:
    """What `stats` (a snapshot's STATS) grew by since this source's last snapshot; None when nothing did."""
    count = stats["count"]
    errors = sum(stats["errors"].values())
    seen = last.get(key)
    if seen is not None and seen.count == count and seen.errors == errors:
        seen.seen = second
        return None
    ints = [*stats["buckets"], *stats["classes"][1:CLASSES + 1], errors]
    seconds = stats["sum"]
    if seen is None:
        last[key] = _Last(ints, seconds, count, errors, second)
        return None if baseline else (ints, seconds)
    grown = [now - before for now, before in zip(ints, seen.ints)]
    before = seen.seconds
    seen.ints, seen.seconds, seen.count, seen.errors, seen.seen = ints, seconds, count, errors, second
    if min(grown) < 0:                       # reset: the new value is what happened since
        return ints, seconds
    return grown, max(0.0, seconds - before)


def _sum(total: Delta, delta: Delta) -> Delta:
    return [a + b for a, b in zip(total[0], delta[0])], total[1] + delta[1]


def _beyond(grown: Delta, attributed: Delta | None) -> Delta | None:
    """What a route grew by beyond what its targets did (none below 0); None when nothing."""
    if attributed is None:
        return grown
    if grown[0] == attributed[0]:            # the usual case: all of it on its targets
        return None
    ints = [max(0, a - b) for a, b in zip(grown[0], attributed[0])]
    if not any(ints):
        return None
    return ints, max(0.0, grown[1] - attributed[1])


def _add(deltas: dict[tuple[str, ...], Delta], key: tuple[str, ...], delta: Delta) -> None:
    before = deltas.get(key)
    deltas[key] = delta if before is None else _sum(before, delta)


def quantile(buckets: Sequence[int], q: float) -> float | None:
    """The `q` quantile (0-1) in milliseconds of latencies counted in the histogram `buckets`, interpolated
    linearly within the bucket it falls in (from 0 for the first); in the +Inf bucket, its lower bound. None
    for an empty histogram."""
    total = sum(buckets)
    if not total:
        return None
    rank = q * total
    below = 0
    for index, count in enumerate(buckets):
        if count and below + count >= rank:
            lower = LATENCY_BUCKETS[index - 1] if index else 0.0
            if index == len(LATENCY_BUCKETS):
                return lower * 1000
            upper = LATENCY_BUCKETS[index]
            return (lower + (upper - lower) * max(0.0, rank - below) / count) * 1000
        below += count
    return LATENCY_BUCKETS[-1] * 1000


def _summary(totals: Totals, window: float, in_flight: int) -> Summary:
    ints = totals.ints
    buckets = ints[:BUCKETS]
    requests = sum(buckets)
    classes = tuple(ints[BUCKETS:BUCKETS + CLASSES])
    return Summary(window=window, requests=requests, classes=classes,  # type: ignore[arg-type]
                   upstream_errors=ints[ERRORS], in_flight=in_flight,
                   mean_ms=totals.seconds / requests * 1000 if requests else None,
                   p50_ms=quantile(buckets, 0.50), p95_ms=quantile(buckets, 0.95), p99_ms=quantile(buckets, 0.99))

