"""Hot-path counters: plain integers and a fixed-bucket latency histogram, per gateway, route and target.

The proxy bumps these with a few integer operations per request; `gateway.runtime.metrics` turns them into Prometheus
series at scrape time. A `RouteStats` object hangs off each `RouteState` (and so survives route-table rebuilds
for routes that still exist); a `TargetStats` off each `TargetState`; a `GatewayStats` per gateway name.
"""
from __future__ import annotations

from bisect import bisect_left

# Upper bounds (seconds) of the latency buckets; the last, implicit bucket is +Inf.
BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

UPSTREAM_ERROR_KINDS = ("connect", "timeout", "reset")


class RouteStats:
    """Requests by status class, a latency histogram and upstream errors of one route (or of a gateway's
    requests that never reached a route: 404, 503 with no route)."""
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


class TargetStats:
    __slots__ = ("requests", "failures")

    def __init__(self) -> None:
        self.requests = 0
        self.failures = 0


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
