"""A gateway worker's counters made up by a test (`FakeGateways`), shown as the worker's snapshot would show them
(gateway/runtime/snapshot.py), for the metrics aggregation's tests."""
from __future__ import annotations

from bisect import bisect_left

from gateway import LATENCY_BUCKETS, empty_stats


class FakeGateways:
    """The counters of one gateway worker, as its snapshot shows them (gateway/runtime/snapshot.py)."""

    def __init__(self) -> None:
        self.gateways: dict[str, dict] = {}
        self.in_flight: dict[tuple[str, ...], int] = {}

    def _gateway(self, name: str) -> dict:
        return self.gateways.setdefault(name, {"unrouted": empty_stats(), "routes": {}})

    def _route(self, gateway: str, route: str) -> dict:
        return self._gateway(gateway)["routes"].setdefault(route, {"remainder": empty_stats(), "targets": {}})

    def add_target(self, gateway: str, route: str, target: str) -> None:
        self._route(gateway, route)["targets"].setdefault(target, empty_stats())

    def answer(self, gateway: str, route: str | None, target: str | None, status: int = 200,
               seconds: float = 0.003, times: int = 1) -> None:
        """`times` exchanges answered `status` after `seconds`, by `target` of `route` (None: unrouted)."""
        if route is None:
            stats = self._gateway(gateway)["unrouted"]
        elif target is None:
            stats = self._route(gateway, route)["remainder"]
        else:
            self.add_target(gateway, route, target)
            stats = self._route(gateway, route)["targets"][target]
        stats["classes"][status // 100] += times
        stats["buckets"][bisect_left(LATENCY_BUCKETS, seconds)] += times
        stats["sum"] += seconds * times
        stats["count"] += times

    def error(self, gateway: str, route: str, target: str, kind: str = "connect") -> None:
        self.add_target(gateway, route, target)
        self._route(gateway, route)["targets"][target]["errors"][kind] += 1

    def remove_target(self, gateway: str, route: str, target: str) -> None:
        """The target leaves its route: its counts fold into the route's remainder (as the runtime does)."""
        route_body = self._route(gateway, route)
        _add(route_body["remainder"], route_body["targets"].pop(target))

    def restart(self) -> None:
        """The worker started again: every counter from 0."""
        self.gateways = {}

    def snapshot(self) -> dict:
        gateways = {}
        for name, gateway in self.gateways.items():
            routes = {}
            for route_name, route in gateway["routes"].items():
                total = _copy(route["remainder"])
                targets = {}
                for address, stats in route["targets"].items():
                    _add(total, stats)
                    targets[address] = {"stats": _copy(stats),
                                        "in_flight": self.in_flight.get((name, route_name, address), 0)}
                routes[route_name] = {"stats": total, "targets": targets,
                                      "in_flight": sum(t["in_flight"] for t in targets.values())}
            gateways[name] = {"unrouted": _copy(gateway["unrouted"]), "routes": routes,
                              "in_flight": sum(r["in_flight"] for r in routes.values())}
        return {"gateways": gateways, "malformed": empty_stats()}

    async def source(self) -> dict:
        return self.snapshot()


def _copy(stats: dict) -> dict:
    return {**stats, "classes": list(stats["classes"]), "buckets": list(stats["buckets"]),
            "errors": dict(stats["errors"])}


def _add(into: dict, other: dict) -> None:
    into["classes"] = [a + b for a, b in zip(into["classes"], other["classes"])]
    into["buckets"] = [a + b for a, b in zip(into["buckets"], other["buckets"])]
    into["sum"] += other["sum"]
    into["count"] += other["count"]
    for kind, count in other["errors"].items():
        into["errors"][kind] += count
