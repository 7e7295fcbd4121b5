"""The metrics and health paths of `vamp run`'s API (Vamp's), answered from the platform's aggregation:

    GET /api/v1/metrics/gateways/{gateway}/{metric}                                     a gateway
    GET /api/v1/metrics/gateways/{gateway}/routes/{route}/{metric}                      a route of it
    GET /api/v1/metrics/deployments/{d}/clusters/{c}/ports/{p}/{metric}                 a cluster port
    GET …/ports/{p}/services/{s}/{metric}                                               a service on it
    GET …/ports/{p}/services/{s}/instances/{i}/{metric}                                 an instance of it
    GET /api/v1/health/gateways/{gateway}[/routes/{route}]
    GET /api/v1/health/deployments/{d}[/clusters/{c}[/services/{s}[/instances/{i}]]]

`?window=60s` (default 60 s; `30s`, `5m`, `1h`, at most the aggregation's window). Metrics (`METRICS`): `all`
answers the whole summary. `history` (gateways and routes only) answers the window point by point, each point a
bucket of the history (`Aggregator.history`): requests, rate, error rate, p50 and p99 per point. Health is the
share of non-5xx responses, 0–1, `null` without requests.

Gateway and route names contain '/' (`sava/sava/webport`): the path is read against the names that exist (those
configured, and those with data in the window), and names may also be sent %2F-encoded. Deployments, clusters,
ports, services and instances are the engine's; an instance is its orchestrator id (`sava/sava/sava:1.0.0#0`,
`#` sent as %23) or its number (`0`).
Unknown names answer 404; with the aggregation off (`vamp run --metrics-window 0`), 503.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from aiohttp import web

from control.dsl.model import Cluster, Deployment, Service
from control.engine import (cluster_gateway_name, cluster_ports, instance_target, service_id, service_name,
                            service_route_name)
from control.metrics.model import MetricsReader, Scope, Summary
from control.orchestrator.base import Instance
from gateway.common.errors import Invalid, NotFound
from gateway.common.httpapi import ApiError, respond
from gateway.common.units import parse_duration

DEFAULT_WINDOW = 60.0
HISTORY = "history"           # a gateway's or route's figures point by point (the web UI's charts)
CLASS_NAMES = ("1xx", "2xx", "3xx", "4xx", "5xx")
OFF = "metrics aggregation is off (vamp run --metrics-window 0)"


def summary_document(summary: Summary) -> dict[str, Any]:
    """A summary as the API shows it (times in milliseconds)."""
    return {"window": summary.window, "requests": summary.requests, "rate": summary.rate,
            "response_time": summary.mean_ms, "p50": summary.p50_ms, "p95": summary.p95_ms,
            "p99": summary.p99_ms, "classes": dict(zip(CLASS_NAMES, summary.classes)), "errors": summary.errors,
            "error_rate": summary.error_rate, "health": summary.health,
            "upstream_errors": summary.upstream_errors, "in_flight": summary.in_flight}


METRICS: dict[str, Callable[[Summary], Any]] = {
    "rate": lambda s: s.rate,                     # requests per second
    "requests": lambda s: s.requests,
    "response_time": lambda s: s.mean_ms,         # mean, ms
    "responseTime": lambda s: s.mean_ms,          # Vamp's name
    "p50": lambda s: s.p50_ms,
    "p95": lambda s: s.p95_ms,
    "p99": lambda s: s.p99_ms,
    "errors": lambda s: s.errors,                 # 5xx responses
    "error_rate": lambda s: s.error_rate,
    "health": lambda s: s.health,
    "in_flight": lambda s: s.in_flight,
    "upstream_errors": lambda s: s.upstream_errors,
    "all": summary_document,
}


class Measured(MetricsReader, Protocol):
    """What the API reads: the aggregation (control.metrics.aggregator.Aggregator)."""

    window: int                   # seconds kept

    def knows(self, scope: Scope) -> bool: ...

    def history(self, scopes: Sequence[Scope], window: float) -> list[tuple[int, int, Summary]]: ...


class Platform(Protocol):
    """What the API reads of the engine (control.engine.Engine): the gateways, the deployments and their
    instances."""

    @property
    def running(self) -> Mapping[str, Deployment]: ...

    @property
    def orchestrator(self) -> Any: ...          # `instances(service_id)` (control.orchestrator.base)

    def gateway(self, name: str) -> dict[str, Any] | None:
        """The gateway's document (its `routes` by name), None when there is no such gateway."""
        ...


def add_routes(router: web.UrlDispatcher, metrics: Measured | None, engine: Platform) -> None:
    """The metrics and health paths, most specific first (aiohttp tries them in order)."""
    api = MetricsApi(metrics, engine)
    name = r"[\s\S]+"
    metrics_path, health_path = "/api/v1/metrics", "/api/v1/health"
    gateway = f"/gateways/{{gateway:{name}}}"
    route = f"/routes/{{route:{name}}}"
    cluster = f"/deployments/{{deployment}}/clusters/{{cluster:{name}}}"
    port, service = f"/ports/{{port:{name}}}", f"/services/{{service:{name}}}"
    instance = f"/instances/{{instance:{name}}}"
    router.add_get(f"{metrics_path}{gateway}{route}/{{metric}}", api.gateway_metric)
    router.add_get(f"{metrics_path}{gateway}/{{metric}}", api.gateway_metric)
    router.add_get(f"{metrics_path}{cluster}{port}{service}{instance}/{{metric}}", api.deployment_metric)
    router.add_get(f"{metrics_path}{cluster}{port}{service}/{{metric}}", api.deployment_metric)
    router.add_get(f"{metrics_path}{cluster}{port}/{{metric}}", api.deployment_metric)
    router.add_get(f"{health_path}{gateway}{route}", api.gateway_health)
    router.add_get(f"{health_path}{gateway}", api.gateway_health)
    router.add_get(f"{health_path}{cluster}{service}{instance}", api.deployment_health)
    router.add_get(f"{health_path}{cluster}{service}", api.deployment_health)
    router.add_get(f"{health_path}{cluster}", api.deployment_health)
    router.add_get(f"{health_path}/deployments/{{deployment}}", api.deployment_health)


class MetricsApi:
    def __init__(self, metrics: Measured | None, engine: Platform) -> None:
        self.metrics = metrics
        self.engine = engine

    # -- handlers --------------------------------------------------------------------------------------
    async def gateway_metric(self, request: web.Request) -> web.Response:
        if request.match_info["metric"] == HISTORY:
            return self._history(request, self._window(request), self._gateway_scope(request))
        window, metric = self._window(request), _metric(request)
        return self._answer(request, metric, self._gateway_scope(request), window)

    async def deployment_metric(self, request: web.Request) -> web.Response:
        window, metric = self._window(request), _metric(request)
        return self._answer(request, metric, self._deployment_scope(request), window)

    async def gateway_health(self, request: web.Request) -> web.Response:
        window = self._window(request)
        return self._health(request, [self._gateway_scope(request)], window)

    async def deployment_health(self, request: web.Request) -> web.Response:
        window = self._window(request)
        return self._health(request, self._deployment_scopes(request), window)

    def _answer(self, request: web.Request, metric: str, scope: Scope, window: float) -> web.Response:
        summary = self._reader().summary([scope], window)
        return respond(request, {"metric": metric, "value": METRICS[metric](summary), "window": summary.window,
                                 "scope": {"gateway": scope.gateway, "route": scope.route, "target": scope.target}})

    def _history(self, request: web.Request, window: float, scope: Scope) -> web.Response:
        points = self._reader().history([scope], window)
        return respond(request, {"metric": HISTORY, "window": window, "points": [
            {"from": start, "to": end, "requests": summary.requests, "rate": summary.rate,
             "error_rate": summary.error_rate, "p50": summary.p50_ms, "p99": summary.p99_ms}
            for start, end, summary in points],
            "scope": {"gateway": scope.gateway, "route": scope.route, "target": scope.target}})

    def _health(self, request: web.Request, scopes: list[Scope], window: float) -> web.Response:
        summary = self._reader().summary(scopes, window)
        return respond(request, {"value": summary.health, "window": summary.window, "requests": summary.requests,
                                 "errors": summary.errors})

    def _reader(self) -> Measured:
        if self.metrics is None:
            raise ApiError(503, OFF)
        return self.metrics

    def _window(self, request: web.Request) -> float:
        """`?window=`: a duration of at least 1 s and at most what the aggregation keeps, in whole seconds
        (read first: with the aggregation off, every path answers 503)."""
        text = request.query.get("window")
        kept = self._reader().window
        if text is None:
            return min(DEFAULT_WINDOW, kept)
        try:
            seconds = parse_duration(text)
        except ValueError as exc:
            raise Invalid(f"window: {exc}", "window") from None
        if not 1 <= seconds <= kept:
            raise Invalid(f"window must be from 1s to {kept}s (what the metrics keep), got {text!r}", "window")
        return float(math.ceil(seconds))

    # -- gateway paths ---------------------------------------------------------------------------------
    def _gateway_scope(self, request: web.Request) -> Scope:
        """The gateway (and route) the path names, read against the names that exist."""
        gateway, route = request.match_info["gateway"], request.match_info.get("route")
        if route is None:
            if self._exists(Scope(gateway)):
                return Scope(gateway)
            raise NotFound(f"no gateway {gateway!r}")
        whole = f"{gateway}/routes/{route}"
        for gateway_name, route_name in _splits(whole, ("routes",)):
            if self._exists(Scope(gateway_name, route_name)):
                return Scope(gateway_name, route_name)
        if self._exists(Scope(whole)):
            return Scope(whole)          # a gateway whose name holds '/routes/'
        if self._exists(Scope(gateway)):
            raise NotFound(f"no route {route!r} in gateway {gateway!r}")
        raise NotFound(f"no gateway {gateway!r}")

    def _exists(self, scope: Scope) -> bool:
        """Measured (served at the last sample, or with data in the window), or configured (it may not have
        been sampled yet)."""
        if self._reader().knows(scope):
            return True
        document = self.engine.gateway(scope.gateway)
        return document is not None and (scope.route is None or scope.route in (document.get("routes") or {}))

    # -- deployment paths ------------------------------------------------------------------------------
    def _deployment_scope(self, request: web.Request) -> Scope:
        """The cluster port, service or instance of a metrics path, as a scope of its internal gateway."""
        parts = self._resolve(request, ("port", "service", "instance"))
        deployment, cluster = parts["deployment"], parts["cluster"]
        port: str = parts["port"]
        gateway = cluster_gateway_name(deployment.name, cluster.name, port)
        service = parts.get("service")
        if service is None:
            return Scope(gateway)
        route = service_route_name(deployment.name, cluster.name, service, port)
        instance = parts.get("instance")
        if instance is None:
            return Scope(gateway, route)
        return Scope(gateway, route, instance_target(instance, port).address)

    def _deployment_scopes(self, request: web.Request) -> list[Scope]:
        """Every port's scope of the deployment, cluster, service or instance a health path names."""
        parts = self._resolve(request, ("service", "instance"))
        deployment = parts["deployment"]
        clusters = [parts["cluster"]] if "cluster" in parts else list(deployment.clusters)
        service, instance = parts.get("service"), parts.get("instance")
        scopes = []
        for cluster in clusters:
            for port in cluster_ports(cluster):
                gateway = cluster_gateway_name(deployment.name, cluster.name, port.name)
                if service is None:
                    scopes.append(Scope(gateway))
                elif port.name in _port_names(service):
                    route = service_route_name(deployment.name, cluster.name, service, port.name)
                    if instance is None:
                        scopes.append(Scope(gateway, route))
                    elif port.name in instance.ports:
                        scopes.append(Scope(gateway, route, instance_target(instance, port.name).address))
        return scopes

    def _resolve(self, request: web.Request, kinds: Sequence[str]) -> dict[str, Any]:
        """The deployment, cluster, port, service and instance a path names (those it has), read against what
        runs: the path's names may hold '/', so each way of reading it is tried until one names things that
        exist; else 404 for the first that does not, read as aiohttp matched it."""
        info = request.match_info
        name = info["deployment"]
        deployment = self.engine.running.get(name)
        if deployment is None:
            raise NotFound(f"no deployment {name!r}")
        if "cluster" not in info:
            return {"deployment": deployment}
        kinds = [kind for kind in kinds if kind in info]
        whole = "/".join([info["cluster"], *(f"{_PLURAL[kind]}/{info[kind]}" for kind in kinds)])
        readings = list(_splits(whole, [_PLURAL[kind] for kind in kinds]))
        direct = [info["cluster"], *(info[kind] for kind in kinds)]
        failure: NotFound | None = None
        for names in [direct] + [reading for reading in readings if reading != direct]:
            try:
                return self._found(deployment, dict(zip(("cluster", *kinds), names)))
            except NotFound as exc:
                failure = failure or exc
        assert failure is not None
        raise failure

    def _found(self, deployment: Deployment, names: dict[str, str]) -> dict[str, Any]:
        cluster = next((c for c in deployment.clusters if c.name == names["cluster"]), None)
        if cluster is None:
            raise NotFound(f"no cluster {names['cluster']!r} in deployment {deployment.name!r}")
        found: dict[str, Any] = {"deployment": deployment, "cluster": cluster}
        if "port" in names:
            if names["port"] not in {port.name for port in cluster_ports(cluster)}:
                raise NotFound(f"no port {names['port']!r} in cluster {cluster.name!r}")
            found["port"] = names["port"]
        if "service" in names:
            service = next((s for s in cluster.services if service_name(s) == names["service"]), None)
            if service is None or ("port" in names and names["port"] not in _port_names(service)):
                raise NotFound(f"no service {names['service']!r} in cluster {cluster.name!r}"
                               + (f" with port {names['port']!r}" if service is not None else ""))
            found["service"] = service
        if "instance" in names:
            found["instance"] = self._instance(deployment, cluster, found["service"], names["instance"])
        return found

    def _instance(self, deployment: Deployment, cluster: Cluster, service: Service, name: str) -> Instance:
        owner = service_id(deployment.name, cluster.name, service)
        for instance in self.engine.orchestrator.instances(owner):
            if name in (instance.id, instance.id.removeprefix(owner + "#")):
                return instance
        raise NotFound(f"no instance {name!r} of service {service_name(service)!r}")


_PLURAL = {"port": "ports", "service": "services", "instance": "instances"}


def _metric(request: web.Request) -> str:
    metric = request.match_info["metric"]
    if metric not in METRICS:
        raise NotFound(f"no metric {metric!r}; there are: {', '.join(METRICS)}")
    return metric


def _port_names(service: Service) -> set[str]:
    return {port.name for port in service.breed.ports}  # type: ignore[union-attr]


def _splits(text: str, keywords: Sequence[str]) -> Iterator[list[str]]:
    """Every way of reading `text` as NAME/KEYWORD/NAME/… for `keywords` in order, no name empty."""
    if not keywords:
        if text:
            yield [text]
        return
    marker = f"/{keywords[0]}/"
    index = text.find(marker)
    while index > 0:
        for rest in _splits(text[index + len(marker):], keywords[1:]):
            yield [text[:index], *rest]
        index = text.find(marker, index + 1)
