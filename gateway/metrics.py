"""Prometheus export of the hot-path counters (DESIGN.md §5), built at scrape time by a custom collector."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import CollectorRegistry

from .stats import BUCKETS, UPSTREAM_ERROR_KINDS, RouteStats

if TYPE_CHECKING:
    from .server import Runtime

CLASS_LABELS = ("", "1xx", "2xx", "3xx", "4xx", "5xx")


class GatewayCollector:
    def __init__(self, runtime: "Runtime") -> None:
        self.runtime = runtime

    def collect(self) -> Iterator:
        runtime = self.runtime
        table = runtime.table
        requests = CounterMetricFamily("vamp_requests", "Requests answered, by gateway, route and status class",
                                       labels=("gateway", "route", "code"))
        duration = HistogramMetricFamily("vamp_request_duration_seconds",
                                         "Time from request head to the end of the response",
                                         labels=("gateway", "route"))
        errors = CounterMetricFamily("vamp_upstream_errors", "Failed upstream exchanges by kind",
                                     labels=("gateway", "route", "kind"))
        connections = GaugeMetricFamily("vamp_open_connections", "Open client connections",
                                        labels=("gateway",))
        weights = GaugeMetricFamily("vamp_route_weight_ratio", "Configured route weight (0–1)",
                                    labels=("gateway", "route"))
        up = GaugeMetricFamily("vamp_target_up", "1 when the target is not backed off after failures",
                               labels=("gateway", "route", "target"))
        draining = GaugeMetricFamily("vamp_target_draining", "1 while the target (or its route) drains",
                                     labels=("gateway", "route", "target"))

        def add_route(gateway: str, route: str, stats: RouteStats) -> None:
            for cls, count in enumerate(stats.by_class):
                if count:
                    requests.add_metric((gateway, route, CLASS_LABELS[cls]), count)
            cumulative, buckets = 0, []
            for bound, count in zip(BUCKETS + (float("inf"),), stats.buckets):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            duration.add_metric((gateway, route), buckets, stats.duration_sum)
            for kind in UPSTREAM_ERROR_KINDS:
                errors.add_metric((gateway, route, kind), stats.upstream_errors[kind])

        now = time.monotonic()
        for name, router in table.gateways.items():
            gstats = runtime.stats.gateways.get(name)
            connections.add_metric((name,), gstats.open_connections if gstats else 0)
            if gstats is not None and gstats.unrouted.count:
                add_route(name, "", gstats.unrouted)
            for route in router.routes:
                weights.add_metric((name, route.name), route.route.weight / 10_000)
                if route.stats is not None:
                    add_route(name, route.name, route.stats)
                for target in route.targets:
                    labels = (name, route.name, target.address)
                    up.add_metric(labels, 0 if target.down_until > now else 1)
                    draining.add_metric(labels, 1 if (target.drain or route.route.drain) else 0)
        if runtime.stats.malformed.count:
            add_route("", "", runtime.stats.malformed)
        yield from (requests, duration, errors, connections, weights, up, draining)


def registry_for(runtime: "Runtime") -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(runtime))
    return registry
