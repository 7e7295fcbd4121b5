"""A fleet's gateway following etcd (gateway.store): in this process, against a real etcd member, through a link
the tests can cut (tests/support/netcut.py) as a partition would. What it loads, how it follows changes —
a transaction over several gateways served whole, a bad value refused whole —, what survives the store going
away (serving on, writes refused, the state directory at start, a compacted history on return), and how writes
go through the store (a lost race, seeding, replacing everything, --bind)."""
from __future__ import annotations

import asyncio
import json
import logging
import socket

import pytest

from gateway.common.errors import Conflict, Invalid, NotFound, Unavailable
from gateway.config.load import from_dict
from gateway.config.model import Config
from gateway.config.state import StateStore
from gateway.runtime.manager import ConfigManager
from gateway.runtime.runtime import Runtime
from gateway.runtime.workers import LocalWorker
from gateway.store.etcd import EtcdClient, StoreAddress
from gateway.store.fleet import FleetGateways
from tests.support import free_port, gateway, port_accepts, route
from tests.support.etcd import needs_etcd
from tests.support.netcut import NetCut
from tests.support.waiting import eventually_async

pytestmark = needs_etcd

DEADLINE = 15.0            # seconds for anything the follower does on its own (reconnects back off up to 5 s)


def split(port: int, v2: int) -> dict:
    """A gateway on `port` sending v2% to route v2, the rest to v1 (the targets are never contacted)."""
    return gateway(port, {"v1": route("127.0.0.1:1", weight=f"{100 - v2}%"),
                          "v2": route("127.0.0.1:2", weight=f"{v2}%")})


def v2_weight(config: Config, name: str) -> int:
    """The weight of route v2 of gateway `name`, in basis points."""
    return next(r.weight for r in config.gateway(name).routes if r.name == "v2")


class Store:
    """The tests' own client of the store, straight to etcd (never through the cut link)."""

    def __init__(self, client: EtcdClient, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    def key(self, name: str) -> bytes:
        return f"{self.prefix}/gateways/{name}".encode()

    async def put(self, name: str, document: dict | bytes) -> int:
        value = document if isinstance(document, bytes) else json.dumps(document).encode()
        return (await self.client.put(self.key(name), value)).header.revision

    async def txn(self, documents: dict[str, dict | bytes | None]) -> int:
        t = self.client.transactions
        operations = [t.delete(self.key(name)) if doc is None else
                      t.put(self.key(name), doc if isinstance(doc, bytes) else json.dumps(doc).encode())
                      for name, doc in documents.items()]
        ok, revision = await self.client.txn([], operations)
        assert ok
        return revision

    async def mod_revision(self, name: str) -> int | None:
        found = await self.client.get(self.key(name))
        return None if found is None else found.mod_revision

    async def stored(self, name: str) -> dict | None:
        found = await self.client.get(self.key(name))
        return None if found is None else json.loads(found.value)

    async def compact(self) -> int:
        revision = (await self.client.get_range(b"\x00", b"\x00\x01")).header.revision
        await self.client.compact(revision, physical=True)
        return revision


@pytest.fixture
async def store(etcd_server, store_prefix):
    client = EtcdClient(StoreAddress.parse(etcd_server.url(store_prefix)))
    await client.connect()
    yield Store(client, store_prefix)
    await client.close_quietly()


@pytest.fixture
async def link(etcd_server):
    cut = await NetCut(etcd_server.members[0].client_port).start()
    yield cut
    await cut.close()


class Fleets:
    """Starts replicas in this process (a ConfigManager with a LocalWorker, and FleetGateways over it), each
    recording every configuration its worker was given; stops them all at the end."""

    def __init__(self, tmp_path, link: NetCut, prefix: str) -> None:
        self.tmp_path = tmp_path
        self.link = link
        self.prefix = prefix
        self.started: list[FleetGateways] = []

    @property
    def address(self) -> StoreAddress:
        return StoreAddress.parse(f"etcd://127.0.0.1:{self.link.port}{self.prefix}")

    def new(self, state: str = "state", bind: str | None = None) -> FleetGateways:
        worker = LocalWorker(Runtime(asyncio.get_running_loop()))
        worker.served = []
        apply, start = worker.apply, worker.start

        async def recording_apply(config: Config) -> None:
            await apply(config)
            worker.served.append(config)

        async def recording_start(config: Config) -> None:
            await start(config)
            worker.served.append(config)
        worker.apply, worker.start = recording_apply, recording_start
        manager = ConfigManager([worker], StateStore(self.tmp_path / state))
        fleet = FleetGateways(manager, self.address, bind=bind)
        self.started.append(fleet)
        return fleet

    async def start(self, state: str = "state", bind: str | None = None, seed: Config | None = None
                    ) -> FleetGateways:
        fleet = self.new(state, bind)
        await asyncio.wait_for(fleet.start(seed=seed), DEADLINE)
        return fleet

    async def stop(self, fleet: FleetGateways) -> None:
        await fleet.close()
        await fleet.manager.shutdown(0)
        self.started.remove(fleet)

    async def stop_all(self) -> None:
        for fleet in list(self.started):
            await self.stop(fleet)


def served(fleet: FleetGateways) -> list[Config]:
    return fleet.manager.workers[0].served


@pytest.fixture
async def fleets(tmp_path, link, store_prefix):
    made = Fleets(tmp_path, link, store_prefix)
    yield made
    await made.stop_all()


# -- loading and following -----------------------------------------------------------------------------
async def test_a_fleet_loads_the_prefix_and_applies_each_watched_change(store, fleets):
    shop, admin = free_port(), free_port()
    await store.put("shop", split(shop, 10))
    await store.put("shop/admin", split(admin, 0))          # names may contain '/'
    await store.client.put(f"{store.prefix}/geo".encode(), json.dumps({"trusted_proxies": ["10.0.0.0/8"]}).encode())
    loaded_at = (await store.client.put(f"{store.prefix}/platform/state".encode(), b"not a gateway's")).header.revision
    fleet = await fleets.start()

    assert sorted(g.name for g in fleet.desired.gateways) == ["shop", "shop/admin"]
    assert v2_weight(fleet.desired, "shop") == 1000 and fleet.desired.geo.trusted_proxies == ("10.0.0.0/8",)
    assert fleet.revision == loaded_at
    assert fleet.status() | {"since": None} == {"url": str(fleets.address), "up": True, "revision": loaded_at,
                                               "source": "store", "since": None, "error": None}
    shop_written_at = await store.mod_revision("shop")
    assert (await fleet.get_gateway("shop"))["status"]["revision"] == shop_written_at
    assert port_accepts(shop) and port_accepts(admin)

    changed_at = await store.put("shop/admin", split(admin, 40))
    await eventually_async(lambda: fleet.revision == changed_at, DEADLINE, "the change served")
    assert v2_weight(fleet.desired, "shop/admin") == 4000
    documents = {doc["name"]: doc for doc in await fleet.list_gateways()}
    assert documents["shop/admin"]["status"]["revision"] == changed_at
    assert documents["shop"]["status"]["revision"] == shop_written_at      # untouched, as it was

    removed_at = await store.txn({"shop": None})
    await eventually_async(lambda: fleet.revision == removed_at, DEADLINE, "the removal served")
    assert [g.name for g in fleet.desired.gateways] == ["shop/admin"]


async def test_a_transaction_over_several_gateways_is_never_served_in_part(store, fleets):
    names = ["a", "b", "c"]
    ports = {name: free_port() for name in names}
    await store.txn({name: split(ports[name], 0) for name in names})
    fleet = await fleets.start()
    last = 0
    for step in range(1, 21):
        last = await store.txn({name: split(ports[name], step) for name in names})
    await eventually_async(lambda: fleet.revision == last, DEADLINE, "the last transaction served")

    seen = [tuple(v2_weight(config, name) for name in names) for config in served(fleet)]
    assert seen[-1] == (2000, 2000, 2000)
    halves = [weights for weights in seen if len(set(weights)) != 1]
    assert not halves, f"configurations served with a transaction in part: {halves}"


async def test_a_value_that_does_not_validate_refuses_its_whole_revision(store, fleets):
    one, two = free_port(), free_port()
    await store.txn({"one": split(one, 0), "two": split(two, 0)})
    fleet = await fleets.start()
    good_at = fleet.revision

    bad_at = await store.txn({"one": split(one, 50), "two": b'{"port": "not a port"'})
    await eventually_async(lambda: fleet.follower.processed >= bad_at, DEADLINE, "the bad revision seen")
    status = fleet.status()
    assert status["up"] and status["revision"] == good_at
    assert f"{store.prefix}/gateways/two" in status["error"] and "not a JSON document" in status["error"]
    assert v2_weight(fleet.desired, "one") == 0, "part of a refused revision was served"
    with pytest.raises(Conflict, match="not valid"):
        await fleet.patch_gateway("two", {"sticky": "route"})

    # two gateways that clash (one port) are refused too, naming one of them
    clash_at = await store.put("two", split(one, 0))
    await eventually_async(lambda: fleet.follower.processed >= clash_at, DEADLINE, "the clash seen")
    assert "port" in fleet.status()["error"] and fleet.revision == good_at

    fixed_at = await store.put("two", split(two, 30))
    await eventually_async(lambda: fleet.revision == fixed_at, DEADLINE, "the fixed revision served")
    assert fleet.status()["error"] is None
    assert (v2_weight(fleet.desired, "one"), v2_weight(fleet.desired, "two")) == (5000, 3000)


async def test_a_revision_this_replica_cannot_apply_is_refused_then_tried_again(store, fleets):
    port, taken = free_port(), free_port()
    await store.put("shop", split(port, 0))
    fleet = await fleets.start()
    fleet.follower.retry_apply = 0.2
    squatter = socket.create_server(("127.0.0.1", taken))       # a port taken on this host only
    try:
        moved_at = await store.put("shop", split(taken, 0))
        await eventually_async(lambda: fleet.follower.processed >= moved_at, DEADLINE, "the move seen")
        assert "address already in use" in fleet.status()["error"]
        assert fleet.desired.gateway("shop").port == port and port_accepts(port)
    finally:
        squatter.close()
    await eventually_async(lambda: fleet.revision == moved_at, DEADLINE, "the move applied once the port is free")
    assert fleet.status()["error"] is None and fleet.desired.gateway("shop").port == taken


# -- writes ---------------------------------------------------------------------------------------------
async def test_a_write_goes_through_the_store_and_answers_once_served_here(store, fleets):
    port = free_port()
    await store.put("shop", split(port, 0))
    fleet = await fleets.start()

    document = await fleet.patch_gateway("shop", {"routes": {"v1": {"weight": "75%"}, "v2": {"weight": "25%"}}})
    written_at = await store.mod_revision("shop")
    assert document["routes"]["v2"]["weight"] == "25%" and document["status"]["revision"] == written_at
    assert fleet.revision == written_at and v2_weight(fleet.desired, "shop") == 2500
    assert (await store.stored("shop"))["routes"]["v2"]["weight"] == "25%"

    checked = await fleet.patch_gateway("shop", {"sticky": "route"}, validate_only=True)
    assert "status" not in checked and checked["sticky"] == "route"
    assert fleet.desired.gateway("shop").sticky == "none" and await store.mod_revision("shop") == written_at
    with pytest.raises(Invalid) as invalid:
        await fleet.patch_gateway("shop", {"routes": {"v2": {"weight": "30%"}}})
    assert invalid.value.field == "/routes"         # the weights no longer add up: the same error as standalone
    with pytest.raises(NotFound):
        await fleet.patch_gateway("nope", {"sticky": "route"})
    with pytest.raises(Conflict, match="exists already"):
        await fleet.create_gateway("shop", split(port, 0))
    assert await store.mod_revision("shop") == written_at, "a refused write changed the store"

    other = free_port()
    document, created = await fleet.put_gateway("other", split(other, 10))
    assert created and document["status"]["revision"] == await store.mod_revision("other")
    deleted = await fleet.delete_gateway("other")
    assert deleted["status"]["state"] in ("draining", "removed")
    assert await store.mod_revision("other") is None


async def test_a_write_that_lost_a_race_is_a_conflict_and_changes_nothing(store, fleets, monkeypatch):
    port = free_port()
    await store.put("shop", split(port, 0))
    fleet = await fleets.start()
    real_get = EtcdClient.get

    async def get_then_someone_else_writes(client, key, *args, **kwargs):
        found = await real_get(client, key, *args, **kwargs)
        await store.put("shop", split(port, 5))          # between this write's read and its transaction
        return found
    monkeypatch.setattr(EtcdClient, "get", get_then_someone_else_writes)

    with pytest.raises(Conflict, match="changed in the configuration store while this write was made"):
        await fleet.patch_gateway("shop", {"routes": {"v1": {"weight": "50%"}, "v2": {"weight": "50%"}}})
    assert (await store.stored("shop"))["routes"]["v2"]["weight"] == "5%"


async def test_replace_writes_every_change_in_one_transaction(store, fleets):
    a, b, c = free_port(), free_port(), free_port()
    await store.txn({"a": split(a, 0), "b": split(b, 0)})
    fleet = await fleets.start()
    served_before = len(served(fleet))

    await fleet.replace(from_dict({"gateways": {"b": split(b, 60), "c": split(c, 60)},
                                   "geo": {"trusted_proxies": ["10.1.0.0/16"]}}))
    assert sorted(g.name for g in fleet.desired.gateways) == ["b", "c"]
    revisions = {name: await store.mod_revision(name) for name in "abc"}
    assert revisions["a"] is None and revisions["b"] == revisions["c"] == fleet.revision
    assert fleet.desired.geo.trusted_proxies == ("10.1.0.0/16",)
    states = {(v2_weight(config, "b"), config.gateway("c") is not None, config.geo.trusted_proxies)
              for config in served(fleet)[served_before:]}       # (a may still show, draining)
    assert states == {(6000, True, ("10.1.0.0/16",))}, "one transaction, served in one change"

    before = fleet.revision
    await fleet.replace(fleet.desired)          # nothing to change: no transaction
    assert fleet.revision == before



async def test_a_fenced_fleet_writes_only_while_its_fence_key_is_the_one_it_was_given(store, fleets):
    port = free_port()
    await store.put("shop", split(port, 0))
    fleet = await fleets.start()
    fence_key = f"{store.prefix}/leader".encode()
    created = (await store.client.put(fence_key, b"me")).header.revision
    fleet.fence(fence_key, created)
    await fleet.patch_gateway("shop", {"routes": {"v1": {"weight": "90%"}, "v2": {"weight": "10%"}}})
    assert (await store.stored("shop"))["routes"]["v2"]["weight"] == "10%"

    await store.client.delete(fence_key)                 # another replica leads from now on
    await store.client.put(fence_key, b"someone else")
    with pytest.raises(Conflict):
        await fleet.patch_gateway("shop", {"routes": {"v1": {"weight": "50%"}, "v2": {"weight": "50%"}}})
    with pytest.raises(Conflict):
        await fleet.replace(from_dict({"gateways": {}}))
    assert (await store.stored("shop"))["routes"]["v2"]["weight"] == "10%"       # nothing landed

async def test_a_seed_fills_an_empty_prefix_only(store, fleets):
    first, second = free_port(), free_port()
    fleet = await fleets.start(seed=from_dict({"gateways": {"seeded": split(first, 20)}}))
    assert [g.name for g in fleet.desired.gateways] == ["seeded"]
    assert (await store.stored("seeded"))["routes"]["v2"]["weight"] == "20%"

    again = await fleets.start(state="state-2", bind="127.0.0.2",       # a second replica, side by side
                               seed=from_dict({"gateways": {"other": split(second, 0)}}))
    assert [g.name for g in again.desired.gateways] == ["seeded"]
    assert await store.stored("other") is None


async def test_bind_moves_every_gateway_of_this_replica_and_the_store_keeps_its_own(store, fleets):
    port = free_port()
    await store.put("shop", split(port, 0))
    fleet = await fleets.start(bind="127.0.0.2")
    assert fleet.desired.gateway("shop").bind == "127.0.0.2"
    await eventually_async(lambda: port_accepts(port, "127.0.0.2"), DEADLINE, "listening on 127.0.0.2")
    document = await fleet.get_gateway("shop")
    assert document["bind"] == "127.0.0.1"           # as stored: a GET sent back as a PUT keeps the store's bind
    await fleet.put_gateway("shop", {**document, "sticky": "route"})
    assert (await store.stored("shop"))["bind"] == "127.0.0.1"
    assert fleet.desired.gateway("shop").sticky == "route" and fleet.desired.gateway("shop").bind == "127.0.0.2"


# -- without the store ----------------------------------------------------------------------------------
async def test_cut_off_from_the_store_it_serves_on_refuses_writes_then_resumes(store, fleets, link):
    port = free_port()
    await store.put("shop", split(port, 0))
    fleet = await fleets.start()
    link.cut()
    await eventually_async(lambda: not fleet.status()["up"], DEADLINE, "the store seen down")
    status = fleet.status()
    assert status["error"] and status["revision"] is not None and status["source"] == "store"

    with pytest.raises(Unavailable) as unavailable:
        await fleet.patch_gateway("shop", {"routes": {"v1": {"weight": "50%"}, "v2": {"weight": "50%"}}})
    assert f"the configuration store {fleets.address} is unreachable" in unavailable.value.message
    with pytest.raises(Unavailable):
        await fleet.replace(from_dict({"gateways": {}}))
    assert v2_weight(fleet.desired, "shop") == 0 and port_accepts(port)
    changed_meanwhile = await store.put("shop", split(port, 10))        # written elsewhere while cut off

    await link.restore()
    await eventually_async(lambda: fleet.revision == changed_meanwhile, DEADLINE, "the watch resumed")
    assert fleet.status()["up"] and fleet.status()["error"] is None
    document = await fleet.patch_gateway("shop", {"routes": {"v1": {"weight": "50%"}, "v2": {"weight": "50%"}}})
    assert document["status"]["revision"] == fleet.revision and v2_weight(fleet.desired, "shop") == 5000


async def test_a_history_compacted_while_cut_off_is_read_again_whole(store, fleets, link, caplog):
    a, b, c = free_port(), free_port(), free_port()
    await store.txn({"a": split(a, 0), "b": split(b, 0)})
    fleet = await fleets.start()
    link.cut()
    await eventually_async(lambda: not fleet.status()["up"], DEADLINE, "the store seen down")
    await store.txn({"a": None, "b": split(b, 70)})
    await store.put("c", split(c, 30))
    compacted_at = await store.compact()

    caplog.set_level(logging.WARNING, "vamp.store")
    await link.restore()
    await eventually_async(lambda: fleet.revision is not None and fleet.revision >= compacted_at, DEADLINE,
                           "everything read again")
    assert "compacted" in caplog.text
    assert sorted(g.name for g in fleet.desired.gateways) == ["b", "c"]
    assert (v2_weight(fleet.desired, "b"), v2_weight(fleet.desired, "c")) == (7000, 3000)
    assert fleet.status()["up"] and fleet.status()["error"] is None
    later = await store.put("c", split(c, 40))                      # and it follows again from there
    await eventually_async(lambda: fleet.revision == later, DEADLINE, "the next change served")


async def test_started_without_the_store_it_serves_its_state_directory_then_the_store(store, fleets, link):
    port = free_port()
    await store.put("shop", split(port, 10))
    first = await fleets.start(state="state")
    served_at = first.revision
    await fleets.stop(first)
    changed_at = await store.put("shop", split(port, 20))

    link.cut()
    fleet = await fleets.start(state="state")               # the same state directory, the store out of reach
    status = fleet.status()
    assert (status["up"], status["source"], status["revision"]) == (False, "state directory", served_at)
    assert v2_weight(fleet.desired, "shop") == 1000
    assert (await fleet.get_gateway("shop"))["status"]["revision"] == served_at
    await eventually_async(lambda: port_accepts(port), DEADLINE, "serving")

    await link.restore()
    await eventually_async(lambda: fleet.revision == changed_at, DEADLINE, "the store read")
    assert fleet.status()["source"] == "store" and v2_weight(fleet.desired, "shop") == 2000


async def test_started_without_the_store_nor_a_state_directory_it_waits_for_the_store(store, fleets, link):
    port = free_port()
    await store.put("shop", split(port, 10))
    link.cut()
    fleet = fleets.new(state="empty-state")
    starting = asyncio.ensure_future(fleet.start())
    await eventually_async(lambda: fleet.follower.down_reason not in (None, "not connected yet"), DEADLINE,
                           "an attempt to reach the store")
    assert not starting.done() and not fleet.desired.gateways
    await link.restore()
    await asyncio.wait_for(starting, DEADLINE)
    assert v2_weight(fleet.desired, "shop") == 1000 and fleet.status()["up"]
