"""Route selection as a gateway's conditioned routes grow: `GatewayRouter.select` for a request to the last of
N path-prefix routes (`path prefix /svcI/`), and for one that matches none (it falls to the weight split), with
the route index (gateway/routing/route_index.py) and, for comparison, scanning every route as before it. CPU
time of this process, best of `--repeat` runs of `--calls` calls, so other work on a shared machine does not
count. Each row says how much more a selection costs than among 1 route.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/route_scale.py [--calls 20000] [--repeat 5] [--sizes 1,10,100]
"""
from __future__ import annotations

import argparse
import time
import timeit

from gateway.config.model import FULL, Config, Gateway, Route, Target
from gateway.routing import table
from gateway.routing.lookups import ClientLookups
from gateway.routing.request import RequestView
from gateway.routing.table import GatewayRouter, RouteTable

NOW = 1000.0


def gateway(size: int, *, indexed: bool) -> GatewayRouter:
    routes = [Route(f"svc{i}", 0, (Target("127.0.0.1", 10000 + i % 50000),), condition=f'path prefix "/svc{i}/"')
              for i in range(size)]
    routes.append(Route("rest", FULL, (Target("127.0.0.1", 9999),)))
    config = Config(gateways=(Gateway("bench", 9050, routes=tuple(routes)),))
    saved = table.INDEX_FROM
    table.INDEX_FROM = saved if indexed else 10 ** 9
    try:
        return RouteTable(config).gateways["bench"]
    finally:
        table.INDEX_FROM = saved


def microseconds(router: GatewayRouter, path: str, calls: int, repeat: int) -> float:
    lookups = ClientLookups()

    def one() -> None:     # a new RequestView per request, as the proxy makes one
        router.select(RequestView(b"GET", path.encode(), [], "", "127.0.0.1", lookups), NOW)
    timer = timeit.Timer(one, timer=time.process_time)
    return min(timer.repeat(repeat, calls)) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--sizes", default="1,10,100,1000,10000")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    print(f"{'routes':>7} {'indexed: last':>14} {'+ vs 1':>8} {'no match':>9} {'scan: last':>11} {'+ vs 1':>8}")
    base: dict[str, float] = {}
    for size in sizes:
        last = f"/svc{size - 1}/item"
        indexed, scanning = gateway(size, indexed=True), gateway(size, indexed=False)
        row = {"indexed": microseconds(indexed, last, args.calls, args.repeat),
               "miss": microseconds(indexed, "/elsewhere", args.calls, args.repeat),
               "scan": microseconds(scanning, last, max(1, args.calls // max(1, size // 100)), args.repeat)}
        base = base or row
        print(f"{size:>7} {row['indexed']:>11.2f} µs {row['indexed'] - base['indexed']:>+6.2f}µs "
              f"{row['miss']:>6.2f} µs {row['scan']:>8.2f} µs {row['scan'] - base['scan']:>+7.1f}µs", flush=True)


if __name__ == "__main__":
    main()
