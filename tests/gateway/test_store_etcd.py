"""Where the store is (`etcd://…` URLs and their options) and the client connected to it, against real etcd:
one member, and three of which one may die without the client noticing."""
from __future__ import annotations

import asyncio

import pytest

from gateway.store.etcd import EtcdClient, StoreAddress, StoreAddressError, STORE_ERRORS
from tests.support.etcd import EtcdCluster, needs_etcd
from tests.support.processes import free_port
from tests.support.waiting import eventually_async


def test_a_store_url_names_its_endpoints_and_prefix():
    address = StoreAddress.parse("etcd://127.0.0.1:2379,127.0.0.2:2380/vamp/fleet/")
    assert address.endpoints == (("127.0.0.1", 2379), ("127.0.0.2", 2380))
    assert address.prefix == "/vamp/fleet"
    assert address.key("gateways", "shop/web") == b"/vamp/fleet/gateways/shop/web"
    assert address.target == "ipv4:127.0.0.1:2379,127.0.0.2:2380"
    assert not address.tls
    assert str(address) == "etcd://127.0.0.1:2379,127.0.0.2:2380/vamp/fleet"


def test_the_port_defaults_to_2379_and_etcds_means_tls():
    address = StoreAddress.parse("etcds://[::1]/v")
    assert address.endpoints == (("::1", 2379),) and address.tls
    assert address.target == "ipv6:[::1]:2379"
    assert str(address) == "etcds://[::1]:2379/v"


@pytest.mark.parametrize("text, fault", [
    ("http://127.0.0.1:2379/v", "etcd://HOST:PORT"),
    ("etcd://user:secret@127.0.0.1:2379/v", "credentials do not go in the store URL"),
    ("etcd://127.0.0.1:99999/v", "out of range"),
    ("etcd://127.0.0.1:2379,,127.0.0.2/v", "is not HOST:PORT"),
])
def test_a_bad_store_url_is_refused_saying_what_is_wrong(text, fault):
    with pytest.raises(StoreAddressError, match=fault) as caught:
        StoreAddress.parse(text)
    assert "secret" not in str(caught.value)


def test_credentials_are_options_and_never_printed():
    address = StoreAddress.parse("etcd://127.0.0.1:2379/v", username="vamp", password="s3cret")
    assert "s3cret" not in str(address) and "s3cret" not in repr(str(address))
    with pytest.raises(StoreAddressError, match="both a user and a password"):
        StoreAddress.parse("etcd://127.0.0.1:2379/v", username="vamp")
    with pytest.raises(StoreAddressError, match="both --etcd-cert and --etcd-key"):
        StoreAddress.parse("etcd://127.0.0.1:2379/v", cert_file="c.pem")


@needs_etcd
def test_the_client_reads_and_writes_a_real_etcd(etcd_server):
    async def scenario():
        client = EtcdClient(StoreAddress.parse(etcd_server.url("/t")))
        try:
            put = await client.put(b"/t/a", b"1")
            ok, _ = await client.transaction(compare=[client.transactions.mod(b"/t/a") == put.header.revision],
                                             success=[client.transactions.put(b"/t/a", b"2")], failure=[])
            return ok, (await client.get(b"/t/a")).value
        finally:
            await client.close()
    assert asyncio.run(scenario()) == (True, b"2")


def test_an_unreachable_store_fails_a_call_quickly_with_a_store_error():
    async def scenario():
        client = EtcdClient(StoreAddress.parse(f"etcd://127.0.0.1:{free_port()}/t"), timeout=2)
        try:
            await client.get(b"/t/a")
        finally:
            await client.close()
    with pytest.raises(STORE_ERRORS):
        asyncio.run(scenario())


@needs_etcd
def test_with_three_members_the_client_goes_on_when_the_one_it_used_dies(tmp_path):
    cluster = EtcdCluster(tmp_path, size=3).start()
    try:
        async def scenario():
            client = EtcdClient(StoreAddress.parse(cluster.url("/t")))
            try:
                await client.put(b"/t/a", b"1")
                cluster.members[0].kill()           # pick_first was using the first member
                # a write in flight while the rest elect a leader may time out: wait for one (not the point here)
                await eventually_async(lambda: all(m.healthy() for m in cluster.members[1:]), 20, "a leader")
                await client.put(b"/t/a", b"2")
                return (await client.get(b"/t/a")).value
            finally:
                await client.close()
        assert asyncio.run(scenario()) == b"2"
    finally:
        cluster.stop()
