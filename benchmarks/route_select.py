"""The route table's per-request cost: `GatewayRouter.select` alone, in four typical gateways (two weighted
routes; 90%/10% with a user-agent condition that does not match; sticky routes with a cookie; two routes, one
backed off). CPU time of this process (`time.process_time`), best of `--repeat` runs of `--calls` calls, so
other work on a shared machine does not count.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/route_select.py [--calls 500000] [--repeat 5]
"""
from __future__ import annotations

import argparse
import time
import timeit

from gateway.config.model import Config, Gateway, Route, Target
from gateway.routing.lookups import ClientLookups
from gateway.routing.request import RequestView
from gateway.routing.table import GatewayRouter, RouteTable

NOW = 1000.0


def request(headers: tuple[tuple[str, str], ...] = ()) -> RequestView:
    return RequestView("GET", "/", [(name.encode(), value.encode()) for name, value in headers], "",
                       "127.0.0.1", ClientLookups())


def gateway(*routes: Route, sticky: str = "none") -> GatewayRouter:
    config = Config(gateways=(Gateway("bench", 9050, sticky=sticky, routes=routes),))
    return RouteTable(config).gateways["bench"]


def target(port: int) -> Target:
    return Target("127.0.0.1", port)


def cases() -> dict[str, tuple[GatewayRouter, RequestView | None]]:
    two = gateway(Route("a", 5000, (target(8081),)), Route("b", 5000, (target(8082),)))
    conditional = gateway(Route("a", 9000, (target(8081),)),
                          Route("b", 1000, (target(8082),), condition="user-agent = Firefox"))
    sticky = gateway(Route("a", 9000, (target(8081),)), Route("b", 1000, (target(8082), target(8083))),
                     sticky="route")
    backed_off = gateway(Route("a", 9000, (target(8081),)), Route("b", 1000, (target(8082),)))
    backed_off.routes[1].targets[0].mark_failed(NOW)
    return {
        "2 weighted routes": (two, None),
        "90/10 + user-agent condition": (conditional, request((("User-Agent", "wrk"),))),
        "sticky route + cookie": (sticky, request((("Cookie", f"{sticky.cookie_name}={sticky.routes[1].cookie_id}"),))),
        "one route backed off": (backed_off, None),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    for name, (router, req) in cases().items():
        select = router.select
        best = min(timeit.repeat(lambda select=select, req=req: select(req, NOW), number=args.calls,
                                 repeat=args.repeat, timer=time.process_time))
        print(f"{name:30s} {best / args.calls * 1e9:5.0f} ns per select")


if __name__ == "__main__":
    main()
