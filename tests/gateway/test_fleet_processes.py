"""A fleet of real `vamp gateway --config-store` processes on one etcd: three replicas side by side (--bind
127.0.0.2, .3, .4) following weight changes written through any of them under load, serving on while etcd is
gone (writes refused, nothing half-applied) and resuming when it is back, a replica restarted meanwhile serving
its state directory; and, on a three-member cluster, going on when the member they use dies."""
from __future__ import annotations

import json
import signal
from collections import Counter

import pytest
import yaml

from tests.support import HttpClient, config, free_port, gateway, route, run_cli
from tests.support.etcd import EtcdCluster, needs_etcd, running_cluster
from tests.support.load import LoadGenerator, admin_call
from tests.support.waiting import eventually

pytestmark = needs_etcd

CHANGES = 200               # weight changes written round-robin through the three replicas
DEADLINE = 20.0             # seconds for what a replica does on its own (reconnecting backs off up to 5 s)
PREFIX = "/fleet"


class Fleet:
    def __init__(self, etcd: EtcdCluster, replicas: list, port: int) -> None:
        self.etcd = etcd
        self.url = etcd.url(PREFIX)
        self.replicas = replicas
        self.port = port


@pytest.fixture(scope="module")
def etcd(tmp_path_factory):
    """An etcd member of this module's own: the tests kill and restart it."""
    yield from running_cluster(tmp_path_factory.mktemp("etcd"))


def shop(port: int, echo, v2: int) -> dict:
    return config({"shop": gateway(port, {"v1": route(echo.address("v1"), weight=f"{100 - v2}%"),
                                          "v2": route(echo.address("v2"), weight=f"{v2}%")})})


@pytest.fixture(scope="module")
def fleet(module_procs, etcd):
    echo = module_procs.backend("echo", "v1", "v2")
    port = free_port()
    url = etcd.url(PREFIX)
    replicas = [module_procs.fleet_gateway(url, f"127.0.0.{n}", seed=shop(port, echo, 0)) for n in (2, 3, 4)]
    return Fleet(etcd, replicas, port)


def set_split(replica, v2: int) -> tuple[int, dict]:
    return admin_call(replica, "PATCH", "/api/v1/gateways/shop",
                      {"routes": {"v1": {"weight": f"{100 - v2}%"}, "v2": {"weight": f"{v2}%"}}})


def document(replica) -> dict:
    status, body = admin_call(replica, "GET", "/api/v1/gateways/shop")
    assert status == 200, body
    return body


def split_of(replica, port: int, count: int) -> Counter:
    """X-Version of `count` sequential requests to the replica, over one keep-alive connection."""
    with HttpClient(port, replica.bind) as client:
        seen = Counter(client.request("GET", "/").version for _ in range(count))
        assert client.connections_opened == 1
    return seen


def assert_exact(counts: Counter, count: int, v2: int) -> None:
    """Within one request of the split (a smooth round-robin window of two routes)."""
    assert sum(counts.values()) == count
    assert abs(counts["v2"] - count * v2 / 100) <= 1, f"{counts} for v2 at {v2}%"


def wait_up(replica) -> dict:
    return eventually(lambda: (s := replica.store_status())["up"] and s, DEADLINE, f"{replica.label} up",
                      context=replica.store_status)


def test_three_replicas_follow_200_weight_changes_under_load_without_a_failed_request(fleet):
    splits = [(step * 37) % 100 for step in range(CHANGES - 1)] + [30]
    loads = [LoadGenerator(fleet.port, host=replica.bind, connections=2, seconds=180) for replica in fleet.replicas]
    for load in loads:
        load.start()
    try:
        for load in loads:
            load.wait_for_responses(20)
        for step, v2 in enumerate(splits):
            replica = fleet.replicas[step % len(fleet.replicas)]
            status, written = set_split(replica, v2)
            assert status == 200, written
            assert written["routes"]["v2"]["weight"] == f"{v2}%"
            read = document(replica)                        # the replica written to serves it as it answers
            assert read["routes"]["v2"]["weight"] == f"{v2}%"
            assert read["status"]["revision"] == written["status"]["revision"]
    finally:
        for load in loads:
            load.stop()
    for replica, load in zip(fleet.replicas, loads):
        assert load.failures == [], f"{replica.label}: {load.failure_kinds()} {load.failures[:3]}"
        assert len(load.outcomes) > 100
    last = written["status"]["revision"]
    for replica in fleet.replicas:
        eventually(lambda replica=replica: replica.store_status()["revision"] == last, DEADLINE,
                   f"{replica.label} at {last}")
        assert document(replica)["status"]["revision"] == last
        assert replica.metrics().value("vamp_config_store_revision") == last
        assert_exact(split_of(replica, fleet.port, 200), 200, 30)
    listed = run_cli(["gateways", "list", "--api", fleet.replicas[0].admin_url("")])
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split()[-1] == "REVISION" and row.split()[-1] == str(last)


def test_with_etcd_gone_the_replicas_serve_on_refuse_writes_and_resume(fleet):
    served = document(fleet.replicas[0])
    v2 = int(served["routes"]["v2"]["weight"].rstrip("%"))
    stored_before = fleet.etcd.get(f"{PREFIX}/gateways/shop")
    fleet.etcd.kill_all()
    try:
        for replica in fleet.replicas:
            eventually(lambda replica=replica: not replica.store_status()["up"], DEADLINE,
                       f"{replica.label} seeing etcd gone")
            assert replica.admin_status("/ready") == 200
            assert json.loads(replica.admin_get("/ready"))["config_store"]["up"] is False
            assert replica.metrics().value("vamp_config_store_up") == 0
            assert replica.store_status()["error"]
        status, refused = set_split(fleet.replicas[1], 50)
        assert status == 503, refused
        assert f"the configuration store {fleet.url} is unreachable" in refused["error"]
        for replica in fleet.replicas:
            assert document(replica)["routes"] == served["routes"]
            assert_exact(split_of(replica, fleet.port, 100), 100, v2)
    finally:
        fleet.etcd.restart_all()
    for replica in fleet.replicas:
        wait_up(replica)
        assert replica.metrics().value("vamp_config_store_up") == 1
    assert fleet.etcd.get(f"{PREFIX}/gateways/shop") == stored_before, "a refused write reached the store"

    status, written = set_split(fleet.replicas[2], 40)
    assert status == 200, written
    for replica in fleet.replicas:
        eventually(lambda replica=replica: document(replica)["routes"]["v2"]["weight"] == "40%", DEADLINE,
                   f"{replica.label} following again")


def test_a_replica_restarted_while_etcd_is_down_serves_its_last_configuration(fleet):
    replica = fleet.replicas[2]
    wait_up(replica)
    served = document(replica)
    v2 = int(served["routes"]["v2"]["weight"].rstrip("%"))
    revision = replica.store_status()["revision"]
    fleet.etcd.kill_all()
    try:
        replica.restart()
        status = replica.store_status()
        assert (status["up"], status["source"], status["revision"]) == (False, "state directory", revision)
        assert document(replica)["status"]["revision"] == served["status"]["revision"]
        assert_exact(split_of(replica, fleet.port, 100), 100, v2)
    finally:
        fleet.etcd.restart_all()
    assert wait_up(replica)["source"] == "store"


def test_on_three_members_the_replicas_go_on_when_the_member_they_use_dies(procs, etcd_cluster):
    echo = procs.backend("echo", "v1", "v2")
    port = free_port()
    url = etcd_cluster.url(PREFIX)
    first = procs.fleet_gateway(url, "127.0.0.5", seed=shop(port, echo, 10))
    second = procs.fleet_gateway(url, "127.0.0.6")
    assert_exact(split_of(second, port, 100), 100, 10)

    etcd_cluster.members[0].kill()              # the first endpoint: the one every client uses first
    eventually(lambda: all(m.healthy() for m in etcd_cluster.members[1:]), DEADLINE, "a leader among the rest")
    status, written = set_split(first, 25)
    assert status == 200, written
    eventually(lambda: document(second)["status"]["revision"] == written["status"]["revision"], DEADLINE,
               "the other replica following")
    assert_exact(split_of(second, port, 100), 100, 25)
    for replica in (first, second):
        assert wait_up(replica)["revision"] == written["status"]["revision"]


def test_sighup_writes_the_config_file_to_the_store_in_one_transaction(procs, etcd_server, store_prefix):
    a, b, c = free_port(), free_port(), free_port()
    target = "127.0.0.1:1"          # never contacted
    replica = procs.fleet_gateway(etcd_server.url(store_prefix), "127.0.0.7", seed=config({
        "a": gateway(a, {"r": route(target)}), "b": gateway(b, {"r": route(target)})}))
    replica.config_path.write_text(yaml.safe_dump(config({
        "b": gateway(b, {"r": route(target)}, sticky="route"), "c": gateway(c, {"r": route(target)})})))
    replica.process.send_signal(signal.SIGHUP)

    def listed() -> dict:
        _, gateways = admin_call(replica, "GET", "/api/v1/gateways")
        return {doc["name"]: doc for doc in gateways if doc["status"]["state"] == "active"}
    eventually(lambda: set(listed()) == {"b", "c"}, DEADLINE, "the file applied", context=listed)
    documents = listed()
    assert documents["b"]["sticky"] == "route"
    assert documents["b"]["status"]["revision"] == documents["c"]["status"]["revision"]     # one transaction
    assert set(etcd_server.keys(f"{store_prefix}/gateways/")) == {f"{store_prefix}/gateways/b",
                                                                  f"{store_prefix}/gateways/c"}
