"""Hot-path counters: plain integers and a fixed-bucket latency histogram, per gateway, route and target.

The proxy bumps these with a few integer operations per request; `gateway.runtime.snapshot` reads them as plain
data and `gateway.runtime.metrics` turns that into Prometheus series at scrape time.

A finished exchange is counted once, on the target that answered it (`TargetStats`, hanging off each
`TargetState`). A route's own figures are the sum of its targets' plus its `remainder` (`RouteState.remainder`,
also a `TargetStats`): what the route counted without a target now in it, i.e. the counts of targets that
left the route (folded in by `fold_into`, so a route's counters never go backwards) and any exchange that
finished without a target. Both survive route-table rebuilds for routes and targets that still exist. A
`GatewayStats` per gateway name counts its open connections and the requests no route took.
"""
from __future__ import annotations

from bisect import bisect_left

# Upper bounds (seconds) of the latency buckets; the last, implicit bucket is +Inf.
BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

UPSTREAM_ERROR_KINDS = ("connect", "timeout", "reset")


class RouteStats:
    """Requests by status class, a latency histogram and upstream errors (of a target, of a route's remainder,
    or of a gateway's requests that never reached a route: 404, 503 with no route)."""
    __slots__ = ("by_class", "by_code", "buckets", "duration_sum", "count", "upstream_errors")

    def __init__(self) -> None:
        self.by_class = [0, 0, 0, 0, 0, 0]        # index = status // 100 (1xx … 5xx); 0 unused
        self.by_code: dict[int, int] = {}          # exact codes the gateway answered itself (400, 502, …)
        self.buckets = [0] * (len(BUCKETS) + 1)
        self.duration_sum = 0.0
        self.count = 0
        self.upstream_errors = {kind: 0 for kind in UPSTREAM_ERROR_KINDS}

    def record(self, status: int, seconds: float) -> None:
        cls = status // 100
        if 0 < cls < 6:
            self.by_class[cls] += 1
        self.buckets[bisect_left(BUCKETS, seconds)] += 1
        self.duration_sum += seconds
        self.count += 1

    def add(self, other: RouteStats) -> None:
        """Add `other`'s counts to these (off the hot path: when a target leaves its route)."""
        for index, count in enumerate(other.by_class):
            self.by_class[index] += count
        for code, count in other.by_code.items():
            self.by_code[code] = self.by_code.get(code, 0) + count
        for index, count in enumerate(other.buckets):
            self.buckets[index] += count
        self.duration_sum += other.duration_sum
        self.count += other.count
        for kind, count in other.upstream_errors.items():
            self.upstream_errors[kind] = self.upstream_errors.get(kind, 0) + count


class TargetStats(RouteStats):
    """The full figures of one target of one route, plus the requests sent to it (each attempt, a replay too)
    and its failed connections."""
    __slots__ = ("requests", "failures")

    def __init__(self) -> None:
        super().__init__()
        self.requests = 0
        self.failures = 0

    def fold_into(self, remainder: TargetStats) -> None:
        """This target left its route: its counts join the route's `remainder`, which from now on also counts
        what is still under way on it (the caller points the target at `remainder`)."""
        remainder.add(self)
        remainder.requests += self.requests
        remainder.failures += self.failures


class GatewayStats:
    __slots__ = ("open_connections", "unrouted")

    def __init__(self) -> None:
        self.open_connections = 0
        self.unrouted = RouteStats()     # requests answered before a route was chosen (route label "")


class Registry:
    """Owns the GatewayStats by name; route and target stats live on the route table's states."""

    def __init__(self) -> None:
        self.gateways: dict[str, GatewayStats] = {}
        self.malformed = RouteStats()    # requests rejected before a gateway was known (gateway label "")

    def gateway(self, name: str) -> GatewayStats:
        stats = self.gateways.get(name)
        if stats is None:
            stats = self.gateways[name] = GatewayStats()
        return stats

    def forget_except(self, names: set[str]) -> None:
        """Drop the stats of gateways that no longer exist (open connections counted elsewhere finish at 0)."""
        for name in list(self.gateways):
            if name not in names and self.gateways[name].open_connections <= 0:
                del self.gateways[name]
