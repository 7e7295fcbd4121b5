"""Prometheus export (docs/metrics.md), rendered at scrape time from a snapshot of the hot-path counters
(summed over every worker process) and the configuration being served."""
from __future__ import annotations

from typing import Any
from collections.abc import Iterator

from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry

from gateway.config.model import FULL, Config
from gateway.proxy.stats import BUCKETS, UPSTREAM_ERROR_KINDS

CLASS_LABELS = ("", "1xx", "2xx", "3xx", "4xx", "5xx")
BUCKET_LABELS = tuple(repr(bound) for bound in BUCKETS) + ("+Inf",)


class _SnapshotCollector:
    def __init__(self, snapshot: dict[str, Any], config: Config) -> None:
        self.snapshot = snapshot
        self.config = config

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("vamp_requests", "Requests answered, by gateway, route and status class",
                                       labels=("gateway", "route", "code"))
        duration = HistogramMetricFamily("vamp_request_duration_seconds",
                                         "Time from request head to the end of the response",
                                         labels=("gateway", "route"))
        errors = CounterMetricFamily("vamp_upstream_errors", "Failed upstream exchanges by kind",
                                     labels=("gateway", "route", "kind"))
        connections = GaugeMetricFamily("vamp_open_connections", "Open client connections",
                                        labels=("gateway",))
        weights = GaugeMetricFamily("vamp_route_weight_ratio", "Configured route weight (0-1)",
                                    labels=("gateway", "route"))
        up = GaugeMetricFamily("vamp_target_up", "1 unless the target is backed off after failures or unhealthy",
                               labels=("gateway", "route", "target"))
        healthy = GaugeMetricFamily("vamp_target_healthy", "0 while the target fails its active health check, else "
                                    "1 (only targets with a health check)", labels=("gateway", "route", "target"))
        draining = GaugeMetricFamily("vamp_target_draining", "1 while the target (or its route) drains",
                                     labels=("gateway", "route", "target"))
        dropped = CounterMetricFamily("vamp_access_log_dropped", "Access log lines dropped: the writer could not "
                                      "keep up with the requests, or could not write", labels=("gateway",))

        def add_route(gateway: str, route: str, stats: dict[str, Any]) -> None:
            for cls, count in enumerate(stats["classes"]):
                if count:
                    requests.add_metric((gateway, route, CLASS_LABELS[cls]), count)
            cumulative, buckets = 0, []
            for label, count in zip(BUCKET_LABELS, stats["buckets"]):
                cumulative += count
                buckets.append((label, cumulative))
            duration.add_metric((gateway, route), buckets, stats["sum"])
            for kind in UPSTREAM_ERROR_KINDS:
                errors.add_metric((gateway, route, kind), stats["errors"].get(kind, 0))

        counted = self.snapshot["gateways"]
        for gw in self.config.gateways:
            gsnap = counted.get(gw.name, {"open_connections": 0, "unrouted": None, "routes": {}})
            connections.add_metric((gw.name,), gsnap["open_connections"])
            if gw.access_log is not None:
                dropped.add_metric((gw.name,), gsnap.get("access_log_dropped", 0))
            if gsnap["unrouted"] and gsnap["unrouted"]["count"]:
                add_route(gw.name, "", gsnap["unrouted"])
            for route in gw.routes:
                weights.add_metric((gw.name, route.name), route.weight / FULL)
                rsnap = gsnap["routes"].get(route.name)
                if rsnap is not None:
                    add_route(gw.name, route.name, rsnap["stats"])
                for target in route.targets:
                    labels = (gw.name, route.name, target.address)
                    tsnap = rsnap["targets"].get(target.address) if rsnap else None
                    up.add_metric(labels, 0 if tsnap and tsnap["down"] else 1)
                    health = tsnap.get("health", "unchecked") if tsnap else "unchecked"
                    if health != "unchecked":
                        healthy.add_metric(labels, 0 if health == "unhealthy" else 1)
                    drains = (target.drain or route.drain) and not (target.drained or route.drained)
                    draining.add_metric(labels, 1 if drains else 0)
        if self.snapshot["malformed"]["count"]:
            add_route("", "", self.snapshot["malformed"])
        yield from (requests, duration, errors, connections, weights, up, healthy, draining, dropped)
        yield from self._tls()

    def _tls(self) -> Iterator[Metric]:
        tls = self.snapshot.get("tls")
        if not tls:
            return
        expiry = GaugeMetricFamily("vamp_tls_certificate_expiry_timestamp_seconds",
                                   "When each certificate served expires (its notAfter), by its first name",
                                   labels=("gateway", "certificate"))
        reload_errors = CounterMetricFamily("vamp_tls_certificate_reload_errors",
                                            "Certificate files that changed and could not be loaded",
                                            labels=("gateway",))
        for gateway, state in tls.items():
            for certificate, seconds in state["expiry"].items():
                expiry.add_metric((gateway, certificate), seconds)
            reload_errors.add_metric((gateway,), state["reload_errors"])
        yield from (expiry, reload_errors)


class _StoreCollector:
    def __init__(self, status: dict[str, Any]) -> None:
        self.status = status

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("vamp_config_store_up", "1 while the configuration store (etcd) is reachable")
        up.add_metric((), 1 if self.status["up"] else 0)
        yield up
        if self.status["revision"] is not None:
            revision = GaugeMetricFamily("vamp_config_store_revision",
                                         "The configuration store revision this gateway serves")
            revision.add_metric((), self.status["revision"])
            yield revision


def render(snapshot: dict[str, Any], config: Config, store: dict[str, Any] | None = None) -> bytes:
    """The Prometheus text exposition of a snapshot for the configuration being served; `store`: the status of
    a fleet's configuration store (gateway.store.fleet.FleetGateways.status), when there is one."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SnapshotCollector(snapshot, config))
    if store is not None:
        registry.register(_StoreCollector(store))
    return generate_latest(registry)
