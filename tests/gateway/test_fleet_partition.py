"""A replica of a fleet on a host of its own (a network namespace), cut off from etcd by its link going dead
— no reset, packets just lost, as in a real partition — while its clients still reach it: it keeps serving
every request with what it last applied, says the store is down, refuses writes, and catches up with what
changed meanwhile once the link is back. Needs root (`ip netns`); skipped elsewhere, saying why."""
from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections import Counter

import pytest

from tests.support import HttpClient, config, free_port, gateway, route
from tests.support.etcd import ETCD, EtcdCluster
from tests.support.load import admin_call
from tests.support.netns import TestHost, netns_unavailable
from tests.support.processes import BackendProcess, FleetGatewayProcess, port_accepts
from tests.support.waiting import eventually

WHY_NOT = "etcd is not installed" if ETCD is None else netns_unavailable()
pytestmark = pytest.mark.skipif(WHY_NOT is not None, reason=f"cannot test a partition here: {WHY_NOT}")

TOKEN = "partition-test-token"          # the cut-off replica's admin API listens off loopback: it needs one
DETECTED = 30.0     # seconds for the replica to notice a silent link (keepalive) and, later, to catch up
PREFIX = "/partition"


class HostedReplica(FleetGatewayProcess):
    """A fleet replica run inside a test host, its gateways and admin API on the host's address."""

    def __init__(self, host: TestHost, address: str, store_url: str, workdir) -> None:
        self.admin_host = address
        super().__init__(store_url, address, workdir, extra_args=("--token", TOKEN), token=TOKEN)
        self.args = host.command(self.args)
        self.label = f"fleet gateway on test host {address}"

    @property
    def admin(self) -> str:
        return f"{self.admin_host}:{self.admin_port}"

    def patch(self, body: dict) -> tuple[int, dict]:
        request = urllib.request.Request(self.admin_url("/api/v1/gateways/shop"), data=json.dumps(body).encode(),
                                         method="PATCH", headers={"Content-Type": "application/json",
                                                                  "Authorization": f"Bearer {TOKEN}"})
        try:
            with urllib.request.urlopen(request, timeout=15) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())


def versions(host: str, port: int, count: int) -> Counter:
    """The backends (X-Version) that answered `count` requests on one connection; a failure raises."""
    seen: Counter = Counter()
    with HttpClient(port, host=host) as client:
        for _ in range(count):
            response = client.request("GET", "/")
            assert response.status == 200, response
            seen[response.version] += 1
    return seen


def split(v2: int) -> dict:
    return {"routes": {"v1": {"weight": f"{100 - v2}%"}, "v2": {"weight": f"{v2}%"}}}


def test_a_replica_cut_off_from_etcd_keeps_serving_and_catches_up_when_the_link_is_back(tmp_path):
    host = TestHost()
    processes = []
    try:
        traffic, store_link = host.link(41), host.link(42)     # clients and backends; etcd
        etcd = EtcdCluster(tmp_path, size=1, also_on=(store_link.outside,)).start()
        processes.append(etcd)
        echo = BackendProcess("echo", ("v1", "v2"), tmp_path, extra_args=("--host", traffic.outside))
        processes.append(echo)
        echo.spawn()
        for name in ("v1", "v2"):
            echo.wait_until(lambda name=name: port_accepts(echo.port(name), traffic.outside), 15, "listening")
        port = free_port()
        targets = {name: f"{traffic.outside}:{echo.port(name)}" for name in ("v1", "v2")}
        seed = config({"shop": gateway(port, {"v1": route(targets["v1"], weight="100%"),
                                              "v2": route(targets["v2"], weight="0%")})})
        # One replica here (it sees etcd on loopback all along), one on the test host (etcd through its link).
        here = FleetGatewayProcess(etcd.url(PREFIX), "127.0.0.2", tmp_path / "here", seed=seed).start()
        processes.append(here)
        store_url = f"etcd://{store_link.outside}:{etcd.members[0].client_port}{PREFIX}"
        away = HostedReplica(host, traffic.inside, store_url, tmp_path / "away").start()
        processes.append(away)
        assert versions(traffic.inside, port, 20) == Counter({"v1": 20})
        assert away.store_status()["up"] is True

        store_link.cut()
        eventually(lambda: away.store_status()["up"] is False, DETECTED, "the cut-off replica to notice",
                   context=away.store_status)
        assert versions(traffic.inside, port, 50) == Counter({"v1": 50})       # serving on, every request
        assert away.admin_status("/ready") == 200
        status, error = away.patch(split(50))
        assert status == 503 and PREFIX in error["error"], error

        assert admin_call(here, "PATCH", "/api/v1/gateways/shop", split(100))[0] == 200
        assert versions("127.0.0.2", port, 20) == Counter({"v2": 20})
        assert versions(traffic.inside, port, 20) == Counter({"v1": 20})       # it cannot know yet

        store_link.mend()
        eventually(lambda: versions(traffic.inside, port, 5) == Counter({"v2": 5}), DETECTED,
                   "the replica to catch up with the change made while it was cut off",
                   context=away.store_status)
        assert away.store_status()["up"] is True
        assert json.loads(away.admin_get("/api/v1/gateways/shop"))["routes"]["v2"]["weight"] == "100%"
    finally:
        for process in reversed(processes):
            process.stop()
        host.close()
        sys.stderr.flush()
