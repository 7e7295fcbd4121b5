"""Counters and usage of one gateway process as plain data, and their sum across worker processes.

A snapshot is what `/metrics`, the admin API's target states, the drain checks and the platform's metrics
aggregation read:

    {"gateways": {GW: {"open_connections": n, "in_flight": n, "access_log_dropped": n, "unrouted": STATS,
                       "routes": {ROUTE: {"stats": STATS, "in_flight": n, "idle_for": s,
                                          "targets": {ADDRESS: {"stats": STATS, "in_flight": n, "requests": n,
                                                                "failures": n, "down": bool, "idle_for": s,
                                                                "health": H, "checked_at": t, "check_result": r
                                                                }}}}}},
     "malformed": STATS,
     "tls": {GW: {"expiry": {CERTIFICATE: seconds since the epoch}, "reload_errors": n}}}
    STATS = {"classes": [6 ints], "buckets": [ints], "sum": float, "count": int, "errors": {kind: n}}

A target's `stats` are the exchanges it answered; a route's are the sum of its targets' and of its remainder
(gateway.proxy.stats: the counts of targets that left it), so they never go back while the route exists. A
route's `in_flight` is its targets' sum, a gateway's its routes'. `requests` counts the requests sent to a target
(each attempt), `failures` its failed connections. `idle_for` is the seconds since the route or target was
last picked (infinity when never). `down`: the target takes no request (backed off after connection failures,
or unhealthy). `health` is its active health check's verdict (gateway.runtime.health: `unchecked`, `unknown`,
`healthy` or `unhealthy`), `checked_at` when the last probe ended (epoch seconds, None before the first) and
`check_result` what it saw. Each worker process probes on its own. Summing takes the smallest `idle_for`; a
target is `down` when any worker has it backed off or unhealthy, and its `health` is the worst any worker
sees (unhealthy, then unknown, then healthy), with the latest probe's time and result. `tls` has the https
gateways' certificates (by first name) and the reloads refused; every worker reads the same files, so summing
takes the earliest expiry and the largest count.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from gateway.proxy.stats import BUCKETS, UPSTREAM_ERROR_KINDS, RouteStats
from gateway.runtime.health import HEALTHY, UNCHECKED, UNHEALTHY, UNKNOWN

if TYPE_CHECKING:
    from gateway.runtime.runtime import Runtime

INFINITY = float("inf")
HEALTH_RANK = {UNCHECKED: 0, HEALTHY: 1, UNKNOWN: 2, UNHEALTHY: 3}     # merging workers: the highest wins


def empty_stats() -> dict[str, Any]:
    return {"classes": [0] * 6, "buckets": [0] * (len(BUCKETS) + 1), "sum": 0.0, "count": 0,
            "errors": {kind: 0 for kind in UPSTREAM_ERROR_KINDS}}


def _stats(stats: RouteStats | None) -> dict[str, Any]:
    if stats is None:
        return empty_stats()
    return {"classes": list(stats.by_class), "buckets": list(stats.buckets), "sum": stats.duration_sum,
            "count": stats.count, "errors": dict(stats.upstream_errors)}


def _idle(last_used: float, now: float) -> float:
    return now - last_used if last_used else INFINITY


def take(runtime: "Runtime") -> dict[str, Any]:
    now = time.monotonic()
    health = runtime.health.status
    gateways: dict[str, Any] = {}
    for name, router in runtime.table.gateways.items():
        gstats = runtime.stats.gateways.get(name)
        routes = {}
        gateway_in_flight = 0
        for route in router.routes:
            total = _stats(route.remainder)
            targets = {}
            in_flight = 0
            for t in route.targets:
                stats = _stats(t.stats)
                _add_stats(total, stats)
                in_flight += t.in_flight
                targets[t.address] = {"stats": stats, "in_flight": t.in_flight,
                                      "requests": t.stats.requests if t.stats else 0,
                                      "failures": t.stats.failures if t.stats else 0,
                                      "down": t.down_until > now,
                                      "idle_for": _idle(t.last_used, now), **health(t)}
            routes[route.name] = {"stats": total, "in_flight": in_flight, "idle_for": _idle(route.last_used, now),
                                  "targets": targets}
            gateway_in_flight += in_flight
        gateways[name] = {"open_connections": gstats.open_connections if gstats else 0,
                          "in_flight": gateway_in_flight,
                          "access_log_dropped": runtime.access_log_dropped(name),
                          "unrouted": _stats(gstats.unrouted if gstats else None), "routes": routes}
    return {"gateways": gateways, "malformed": _stats(runtime.stats.malformed), "tls": _tls(runtime)}


def _tls(runtime: "Runtime") -> dict[str, Any]:
    gateways: dict[str, Any] = {}
    for state in runtime.tls.values():
        for name, expiry in state.expiry().items():
            gateways[name] = {"expiry": expiry, "reload_errors": state.reload_errors.get(name, 0)}
    return gateways


def _add_stats(into: dict[str, Any], other: dict[str, Any]) -> None:
    into["classes"] = [a + b for a, b in zip(into["classes"], other["classes"])]
    into["buckets"] = [a + b for a, b in zip(into["buckets"], other["buckets"])]
    into["sum"] += other["sum"]
    into["count"] += other["count"]
    for kind, count in other["errors"].items():
        into["errors"][kind] = into["errors"].get(kind, 0) + count


def merge(snapshots: list[dict[str, Any]]) -> dict[str, Any]:
    """The sum of several processes' snapshots (the first one's structure, extended by the others'); one
    snapshot is its own sum."""
    if len(snapshots) == 1:
        return snapshots[0]
    total: dict[str, Any] = {"gateways": {}, "malformed": empty_stats(), "tls": {}}
    for snap in snapshots:
        _add_stats(total["malformed"], snap["malformed"])
        for name, tls in snap.get("tls", {}).items():
            tls_into = total["tls"].setdefault(name, {"expiry": {}, "reload_errors": 0})
            tls_into["reload_errors"] = max(tls_into["reload_errors"], tls["reload_errors"])
            for certificate, expiry in tls["expiry"].items():
                tls_into["expiry"][certificate] = min(tls_into["expiry"].get(certificate, expiry), expiry)
        for name, gw in snap["gateways"].items():
            into = total["gateways"].setdefault(name, {"open_connections": 0, "in_flight": 0,
                                                       "access_log_dropped": 0, "unrouted": empty_stats(),
                                                       "routes": {}})
            into["open_connections"] += gw["open_connections"]
            into["access_log_dropped"] += gw.get("access_log_dropped", 0)
            into["in_flight"] += gw["in_flight"]
            _add_stats(into["unrouted"], gw["unrouted"])
            for rname, route in gw["routes"].items():
                r_into = into["routes"].setdefault(rname, {"stats": empty_stats(), "in_flight": 0,
                                                           "idle_for": INFINITY, "targets": {}})
                _add_stats(r_into["stats"], route["stats"])
                r_into["in_flight"] += route["in_flight"]
                r_into["idle_for"] = min(r_into["idle_for"], route["idle_for"])
                for address, target in route["targets"].items():
                    t_into = r_into["targets"].setdefault(address, {"stats": empty_stats(), "in_flight": 0,
                                                                    "requests": 0, "failures": 0,
                                                                    "down": False, "idle_for": INFINITY,
                                                                    "health": UNCHECKED, "checked_at": None,
                                                                    "check_result": None})
                    _add_stats(t_into["stats"], target["stats"])
                    for field in ("in_flight", "requests", "failures"):
                        t_into[field] += target[field]
                    t_into["down"] = t_into["down"] or target["down"]
                    t_into["idle_for"] = min(t_into["idle_for"], target["idle_for"])
                    _merge_health(t_into, target)
    return total


def _merge_health(into: dict[str, Any], target: dict[str, Any]) -> None:
    """The worst health either side sees; the time and result of the latest probe."""
    health = target.get("health", UNCHECKED)
    if HEALTH_RANK[health] > HEALTH_RANK[into["health"]]:
        into["health"] = health
    checked_at = target.get("checked_at")
    if checked_at is not None and (into["checked_at"] is None or checked_at > into["checked_at"]):
        into["checked_at"] = checked_at
        into["check_result"] = target.get("check_result")


def usage(snapshot: dict[str, Any], key: tuple[str, ...]) -> tuple[int, float]:
    """(requests in flight, seconds since last picked) of a gateway, route or target."""
    gw = snapshot["gateways"].get(key[0])
    if gw is None:
        return 0, INFINITY
    routes = gw["routes"] if len(key) == 1 else {key[1]: gw["routes"].get(key[1])}
    in_flight, idle_for = 0, INFINITY
    for route in routes.values():
        if route is None:
            continue
        targets = route["targets"] if len(key) < 3 else {key[2]: route["targets"].get(key[2])}
        for target in targets.values():
            if target is not None:
                in_flight += target["in_flight"]
                idle_for = min(idle_for, target["idle_for"])
        idle_for = min(idle_for, route["idle_for"]) if len(key) < 3 else idle_for
    return in_flight, idle_for
