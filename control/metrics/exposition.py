"""Per-cluster Prometheus series (docs/metrics.md): what every deployment's cluster received, built from the
gateway's counters of its internal gateways (`deployment/cluster/port`), plus its instances by state."""
from __future__ import annotations

from typing import Any
from collections.abc import Iterator

from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import CollectorRegistry

from control.engine import Engine, cluster_ports, service_id
from gateway import BUCKET_LABELS, CLASS_LABELS, empty_stats


class _ClusterCollector:
    def __init__(self, engine: Engine, snapshot: dict[str, Any]) -> None:
        self.engine = engine
        self.snapshot = snapshot

    def collect(self) -> Iterator:
        labels = ("deployment", "cluster")
        requests = CounterMetricFamily("vamp_cluster_requests", "Requests a cluster received, by status class",
                                       labels=labels + ("code",))
        duration = HistogramMetricFamily("vamp_cluster_request_duration_seconds",
                                         "Time from request head to the end of the response, per cluster",
                                         labels=labels)
        instances = GaugeMetricFamily("vamp_cluster_instances", "Instances of a cluster by state",
                                      labels=labels + ("state",))
        for deployment in self.engine.running.values():
            for cluster in deployment.clusters:
                key = (deployment.name, cluster.name)
                total = empty_stats()
                for port in cluster_ports(cluster):
                    gateway = self.snapshot["gateways"].get(f"{deployment.name}/{cluster.name}/{port.name}")
                    for route in (gateway or {}).get("routes", {}).values():
                        stats = route["stats"]
                        total["classes"] = [a + b for a, b in zip(total["classes"], stats["classes"])]
                        total["buckets"] = [a + b for a, b in zip(total["buckets"], stats["buckets"])]
                        total["sum"] += stats["sum"]
                for cls, count in enumerate(total["classes"]):
                    if count:
                        requests.add_metric(key + (CLASS_LABELS[cls],), count)
                cumulative, buckets = 0, []
                for label, count in zip(BUCKET_LABELS, total["buckets"]):
                    cumulative += count
                    buckets.append((label, cumulative))
                duration.add_metric(key, buckets, total["sum"])
                states: dict[str, int] = {}
                for service in cluster.services:
                    for instance in self.engine.orchestrator.instances(service_id(deployment.name, cluster.name,
                                                                                  service)):
                        states[instance.state] = states.get(instance.state, 0) + 1
                for state, count in sorted(states.items()):
                    instances.add_metric(key + (state,), count)
        yield from (requests, duration, instances)


def render_clusters(engine: Engine, snapshot: dict[str, Any]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_ClusterCollector(engine, snapshot))
    return generate_latest(registry)
