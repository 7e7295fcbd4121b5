"""The leader election on a real etcd (control.replicas.election): of two candidates one leads and the other
follows it; a leader that resigns hands over at once, one that dies (its keep-alives stop) within the lease's
TTL; a leader whose key is taken away knows it has lost."""
from __future__ import annotations

import asyncio
import time

import pytest

from control.replicas.election import Election, Replica
from control.replicas.etcd import EtcdThread
from gateway import StoreAddress

TTL = 2                 # seconds: the shortest lease the election takes


@pytest.fixture
def candidates(etcd_server, store_prefix):
    made: list[tuple[Election, EtcdThread]] = []

    def make(name: str, ttl: int = TTL) -> Election:
        etcd = EtcdThread(StoreAddress.parse(etcd_server.url(store_prefix)))
        election = Election(etcd, Replica(id=name, pid=0, host="test", api_url=f"http://{name}"), ttl=ttl)
        made.append((election, etcd))
        election.start()
        return election
    yield make
    for _election, etcd in made:
        etcd.close()


async def until(condition, timeout: float, what: str) -> float:
    """Seconds until `condition()` held (AssertionError naming `what` after `timeout`)."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"not {what} within {timeout} s"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def test_one_of_two_candidates_leads_and_the_other_follows_it(candidates):
    first = candidates("a")
    await asyncio.wait_for(first.won(), 10)
    second = candidates("b")
    await until(lambda: second.role == "follower", 10, "following")
    assert second.leader["id"] == "a" and second.leader["api_url"] == "http://a"
    assert first.role == "leader" and first.revision and first.status()["leader"]["id"] == "a"


async def test_a_leader_that_resigns_hands_over_at_once(candidates):
    first = candidates("a")
    await asyncio.wait_for(first.won(), 10)
    second = candidates("b")
    await until(lambda: second.role == "follower", 10, "following")
    await first.resign()
    took = await until(lambda: second.role == "leader", TTL, "taken over")
    assert took < TTL and second.leader["id"] == "b"


async def test_a_dead_leaders_lease_expires_and_a_follower_takes_over_within_the_ttl(candidates):
    first = candidates("a")
    await asyncio.wait_for(first.won(), 10)
    second = candidates("b")
    await until(lambda: second.role == "follower", 10, "following")
    first.etcd.close()                  # as a killed process: no keep-alive, no resignation
    took = await until(lambda: second.role == "leader", TTL + 3, "taken over")
    assert second.revision != first.revision
    assert took < TTL + 3


async def test_a_leader_whose_key_is_taken_away_knows_it_lost(candidates, etcd_server, store_prefix):
    first = candidates("a")
    revision = await asyncio.wait_for(first.won(), 10)
    await asyncio.to_thread(etcd_server.run, lambda client: client.delete(f"{store_prefix}/leader".encode()))
    reason = await asyncio.wait_for(first.lost(), TTL + 2)
    assert "deleted" in reason and first.role == "lost" and revision


async def test_a_leader_cut_off_from_the_store_stops_leading_before_its_lease_can_expire(etcd_cluster):
    etcd = EtcdThread(StoreAddress.parse(etcd_cluster.url("/cut-off")))
    leader = Election(etcd, Replica(id="a", pid=0, host="test", api_url="http://a"), ttl=TTL)
    try:
        leader.start()
        await asyncio.wait_for(leader.won(), 10)
        cut = time.monotonic()
        await asyncio.to_thread(etcd_cluster.kill_all)
        reason = await asyncio.wait_for(leader.lost(), TTL + 2)
        assert "keep-alive" in reason
        assert time.monotonic() - cut < TTL         # before etcd could have let another replica lead
    finally:
        etcd.close()


async def test_a_new_leader_waits_until_the_leader_before_has_let_go_of_its_lease(candidates, etcd_server,
                                                                                   store_prefix):
    first = candidates("a", ttl=6)                       # its lease outlives the first look below by seconds
    await asyncio.wait_for(first.won(), 10)
    second = candidates("b", ttl=6)
    await until(lambda: second.role == "follower", 10, "following")
    await asyncio.to_thread(etcd_server.run, lambda client: client.delete(f"{store_prefix}/leader".encode()))
    await asyncio.wait_for(second.won(), 10)             # the key is free: b leads at once …
    await asyncio.wait_for(first.lost(), 5)
    assert await second.predecessor_gone(timeout=0.3) is False   # … but a still holds its lease (its instances)
    await first.resign()                                 # a has stopped acting: it lets go
    assert await asyncio.wait_for(second.predecessor_gone(), 5) is True


async def test_a_leader_that_followed_no_one_has_no_one_to_wait_for(candidates):
    first = candidates("a")
    await asyncio.wait_for(first.won(), 10)
    assert await asyncio.wait_for(first.predecessor_gone(), 1) is True
