"""What the etcd store adds to the store's behaviour (tests/control/test_store.py holds for both): replicas share
it, so a transaction that raced another replica's write, or one made by a replica that is no longer the leader,
writes nothing; an unreachable store is a 503 at once; a transaction too big for one etcd txn is refused whole."""
from __future__ import annotations

import threading
import time

import pytest

from control.events.model import EventFilter
from control.replicas.etcd import StoreUnavailable
from control.replicas.store import MAX_TXN_OPS, EtcdStore, NotLeader, StoreConflict
from gateway import StoreAddress
from gateway.common.errors import Invalid
from tests.support import free_port


@pytest.fixture
def url(etcd_server, store_prefix) -> str:
    return etcd_server.url(store_prefix)


@pytest.fixture
def open_store(url):
    opened: list[EtcdStore] = []

    def open_one() -> EtcdStore:
        opened.append(EtcdStore(StoreAddress.parse(url)))
        return opened[-1]
    yield open_one
    for store in opened:
        store.close()


def test_a_transaction_that_raced_another_replicas_write_writes_nothing(open_store):
    mine, theirs = open_store(), open_store()
    mine.put("deployments", "sava", {"v": 1})
    ran = []
    with pytest.raises(StoreConflict), mine.transaction():
        current = mine.get("deployments", "sava")
        theirs.put("deployments", "sava", {"v": 2})       # between my read and my commit
        mine.put("deployments", "sava", {"v": current["v"] + 10})
        mine.put("allocations", "internal-ports", {"sava/sava/web": 40000})
        mine.add_event(["deployments:sava"])
        mine.on_commit(lambda: ran.append("committed"))
    assert theirs.get("deployments", "sava") == {"v": 2}
    assert theirs.get("allocations", "internal-ports") is None
    assert theirs.count_events(EventFilter()) == 0 and ran == []


def test_a_key_read_as_absent_must_still_be_absent_when_the_transaction_commits(open_store):
    mine, theirs = open_store(), open_store()
    with pytest.raises(StoreConflict), mine.transaction():
        assert mine.get("gateways", "g") is None
        theirs.put("gateways", "g", {"by": "them"})
        mine.put("gateways", "g", {"by": "me"})
    assert theirs.get("gateways", "g") == {"by": "them"}


def test_events_added_by_two_replicas_at_once_get_distinct_growing_ids(open_store):
    stores = [open_store(), open_store()]
    ids: list[list[int]] = [[], []]

    def add(index: int) -> None:
        for n in range(20):
            ids[index].append(stores[index].add_event([f"replica:{index}"], n))
    threads = [threading.Thread(target=add, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    every = ids[0] + ids[1]
    assert len(set(every)) == 40 and all(sorted(got) == got for got in ids)
    assert stores[0].last_event_id() == max(every)
    assert sorted(event.id for event in stores[0].query_events(EventFilter())) == sorted(every)


def test_a_replica_that_lost_the_leader_key_writes_nothing_and_says_so(open_store, etcd_server, store_prefix):
    leader, other = open_store(), open_store()
    leader_key = f"{store_prefix}/leader"
    etcd_server.put(leader_key, '{"id": "a"}')
    created = _create_revision(etcd_server, leader_key)
    lost = []
    leader.fence(leader_key.encode(), created)
    leader.on_fence_lost = lambda: lost.append(True)
    leader.put("deployments", "sava", {"v": 1})               # while it holds the key
    etcd_server.run(lambda client: client.delete(leader_key.encode()))
    etcd_server.put(leader_key, '{"id": "b"}')                # another replica won since
    with pytest.raises(NotLeader):
        leader.put("deployments", "sava", {"v": 2})
    with pytest.raises(NotLeader):
        leader.add_event(["late"])
    assert other.get("deployments", "sava") == {"v": 1} and other.count_events(EventFilter()) == 0
    assert lost == [True, True]


def test_a_transaction_bigger_than_one_etcd_txn_is_refused_whole(open_store):
    store = open_store()
    with pytest.raises(Invalid, match="at most 128"), store.transaction():
        for index in range(MAX_TXN_OPS + 1):
            store.put("breeds", f"b{index}", {})
    assert store.list("breeds") == ([], 0)


def test_an_unreachable_store_is_unavailable_within_its_timeout():
    store = EtcdStore(StoreAddress.parse(f"etcd://127.0.0.1:{free_port()}/nowhere"))
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="nowhere"):
            store.get("deployments", "sava")
        assert time.monotonic() - started < store.etcd.timeout + 2
    finally:
        store.close()


def _create_revision(cluster, key: str) -> int:
    async def read(client):
        return (await client.get(key.encode())).create_revision
    return cluster.run(read)
