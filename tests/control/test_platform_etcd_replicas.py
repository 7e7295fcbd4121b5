"""Several `vamp run --store etcd://…` replicas on one prefix of a real etcd, as an operator runs them: one leads,
the others forward the API to it, and every replica's gateway serves the deployment; the leader killed with
SIGKILL, another takes over within the lease's TTL, and the deployment goes on — its instance started once by
the new leader, never two at a time, a scale change through a follower works, and traffic through the new
leader's gateway, and the other replica's, reaches the service."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.support import HttpClient, free_port
from tests.support.platform import PlatformProcess, alive, wait_for

REPO = Path(__file__).resolve().parents[2]
TTL = 3                     # seconds: the leader's lease
TAKEOVER_MARGIN = 5.0       # seconds past the TTL a takeover may take on a busy machine (the watch, the campaign)
READY_TIMEOUT = 30.0        # seconds for a deployment or a scale to be served
SERVICE = "sava/sava/sava:1.0.0"


def start_replicas(procs, tmp_path: Path, url: str, count: int) -> list[PlatformProcess]:
    """`count` replicas of `vamp run --store URL --leader-ttl TTL`, replica i's gateway on --bind 127.0.0.(i+2),
    each ready (GET /api/v1/deployments answers: a follower's forwarded)."""
    replicas = []
    for index in range(count):
        replica = PlatformProcess(tmp_path / f"state-{index}", tmp_path, log_name=f"replica-{index}",
                                  ready_timeout=30.0, extra_args=("--store", url, "--leader-ttl", f"{TTL}s",
                                                                  "--bind", f"127.0.0.{index + 2}"))
        procs.started.append(replica)
        replicas.append(replica.start())
    return replicas


def status(replica: PlatformProcess) -> dict:
    code, body = replica.api("GET", "/api/v1/status")
    return body if code == 200 else {}


def services(replica: PlatformProcess) -> dict:
    code, body = replica.api("GET", "/api/v1/deployments/sava")
    assert code == 200, (code, body)
    return {s["breed"]["name"]: s for s in body["clusters"]["sava"]["services"]}


def deployed(replica: PlatformProcess, instances: int) -> bool:
    code, body = replica.api("GET", "/api/v1/deployments/sava")
    if code != 200:
        return False
    service = body["clusters"]["sava"]["services"][0]
    return service["state"] == "deployed" and len(service["instances"]) == instances


def instance_starts(replica: PlatformProcess) -> int:
    """How many times an instance of the service was started: `instance:starting` events of a new instance."""
    code, body = replica.api("GET", "/api/v1/events?tag=instance:starting&tag=services:sava:1.0.0&per_page=1000")
    assert code == 200, (code, body)
    return sum(1 for event in body if event["value"]["previous"] is None)


def answers(host: str, port: int) -> bool:
    try:
        client = HttpClient(port, host=host, timeout=5)
        try:
            response = client.request("GET", "/")
        finally:
            client.close()
    except OSError:
        return False
    return response.status == 200 and response.version == "1.0.0"


@pytest.mark.timeout(120)
def test_a_leader_killed_with_9_hands_over_and_the_deployment_goes_on_without_a_duplicated_instance(
        procs, tmp_path, etcd_server, store_prefix):
    url = etcd_server.url(store_prefix)
    replicas = start_replicas(procs, tmp_path, url, 3)
    wait_for(lambda: sorted(status(r).get("role") for r in replicas) == ["follower", "follower", "leader"],
             10, "one leader, two followers")
    leader = next(r for r in replicas if status(r)["role"] == "leader")
    followers = [r for r in replicas if r is not leader]
    assert {status(r)["leader"]["id"] for r in replicas} == {status(leader)["id"]}
    assert status(leader)["store"] == url

    port = free_port()
    blueprint = tmp_path / "sava.yaml"
    blueprint.write_text((REPO / "examples" / "sava-1.0.yaml").read_text().replace("9050:", f"{port}:"))
    first = followers[0]
    first.vamp("deploy", str(blueprint), "--name", "sava", "--api", first.api_url)   # forwarded to the leader
    leader.wait_until(lambda: deployed(leader, 1), READY_TIMEOUT, "sava deployed")
    code, _ = first.api("GET", "/api/v1/breeds")                 # a follower reads the store itself
    assert code == 200
    for index in range(3):                                       # every replica's gateway, on its own --bind
        wait_for(lambda host=f"127.0.0.{index + 2}": answers(host, port), READY_TIMEOUT,
                 f"sava through replica {index}")
    before = leader.demo_processes()
    assert len(before) == 1 and not any(r.demo_processes() for r in followers)
    assert instance_starts(leader) == 1

    leader.kill()
    killed = time.monotonic()
    wait_for(lambda: not any(alive(p) for p in before), 15, "the dead leader's instance gone with it")
    wait_for(lambda: any(status(r).get("role") == "leader" for r in followers), TTL + TAKEOVER_MARGIN,
             "a follower leading")
    took = time.monotonic() - killed
    new_leader = next(r for r in followers if status(r)["role"] == "leader")
    remaining = next(r for r in followers if r is not new_leader)
    wait_for(lambda: status(remaining).get("leader", {}).get("id") == status(new_leader)["id"], TTL + 5,
             "the other follower following the new leader")

    new_leader.wait_until(lambda: deployed(new_leader, 1), READY_TIMEOUT, "sava deployed again by the new leader")
    assert len(new_leader.demo_processes()) == 1 and not remaining.demo_processes()
    assert instance_starts(new_leader) == 2            # once by each leader: the new one started it exactly once
    assert services(new_leader)["sava:1.0.0"]["instances"][0]["restarts"] == 0
    for replica in (new_leader, remaining):
        index = replicas.index(replica)
        wait_for(lambda host=f"127.0.0.{index + 2}": answers(host, port), READY_TIMEOUT,
                 f"traffic through replica {index}'s gateway reaching sava")

    remaining.vamp("scale", SERVICE, "2", "--api", remaining.api_url)   # through the follower, forwarded
    new_leader.wait_until(lambda: deployed(new_leader, 2), READY_TIMEOUT, "scaled to 2")
    assert len(new_leader.demo_processes()) == 2 and not remaining.demo_processes()
    assert instance_starts(new_leader) == 3
    assert took < TTL + TAKEOVER_MARGIN, took


@pytest.mark.timeout(90)
def test_a_leader_that_loses_its_key_stops_its_instances_and_exits_3_and_a_follower_takes_over(
        procs, tmp_path, etcd_server, store_prefix):
    url = etcd_server.url(store_prefix)
    replicas = start_replicas(procs, tmp_path, url, 2)
    wait_for(lambda: sorted(status(r).get("role") for r in replicas) == ["follower", "leader"], 10,
             "one leader, one follower")
    leader = next(r for r in replicas if status(r)["role"] == "leader")
    follower = next(r for r in replicas if r is not leader)
    port = free_port()
    blueprint = tmp_path / "sava.yaml"
    blueprint.write_text((REPO / "examples" / "sava-1.0.yaml").read_text().replace("9050:", f"{port}:"))
    leader.vamp("deploy", str(blueprint), "--name", "sava", "--api", leader.api_url)
    before = leader.demo_processes()
    assert len(before) == 1

    etcd_server.run(lambda client: client.delete(f"{store_prefix}/leader".encode()))   # as an operator might
    assert leader.process.wait(TTL + 15) == 3
    assert "lost the leadership" in leader.stderr_text()
    assert not any(alive(p) for p in before)            # it stopped its instance before it exited
    wait_for(lambda: status(follower).get("role") == "leader", TTL + TAKEOVER_MARGIN, "the follower leading")
    follower.wait_until(lambda: deployed(follower, 1), READY_TIMEOUT, "sava deployed by the new leader")
    assert len(follower.demo_processes()) == 1 and instance_starts(follower) == 2


@pytest.mark.timeout(90)
def test_an_external_fleet_on_the_platforms_prefix_serves_its_deployments(procs, tmp_path, etcd_server,
                                                                          store_prefix):
    """`vamp gateway --config-store` replicas of their own, reading the prefix `vamp run` writes: they serve the
    deployment's gateway, follow its changes, and keep serving while the platform is gone."""
    url = etcd_server.url(store_prefix)
    platform, = start_replicas(procs, tmp_path, url, 1)
    port = free_port()
    blueprint = tmp_path / "sava.yaml"
    blueprint.write_text((REPO / "examples" / "sava-1.0.yaml").read_text().replace("9050:", f"{port}:"))
    platform.vamp("deploy", str(blueprint), "--name", "sava", "--api", platform.api_url)
    platform.wait_until(lambda: deployed(platform, 1), READY_TIMEOUT, "sava deployed")
    fleet = [procs.fleet_gateway(url, f"127.0.0.{n}") for n in (5, 6)]
    for replica in fleet:
        wait_for(lambda host=replica.bind: answers(host, port), READY_TIMEOUT,
                 f"sava through the external replica on {replica.bind}")
    names = {gateway["name"] for gateway in json.loads(fleet[0].admin_get("/api/v1/gateways"))}
    assert {f"sava/{port}", "sava/sava/webport"} <= names, names

    platform.stop()                         # its instances go with it; the gateways stay in the store
    for replica in fleet:
        assert replica.store_status()["up"] is True and replica.admin_status("/ready") == 200
        assert {g["name"] for g in json.loads(replica.admin_get("/api/v1/gateways"))} == names
