"""A fleet on an etcd that speaks only TLS and asks every client for a certificate its CA signed (a CA, server
and client certificates made by openssl for the test): the client and a real `vamp gateway --config-store
etcds://…` reach it with `--etcd-ca/--etcd-cert/--etcd-key`, and without a certificate they are refused."""
from __future__ import annotations

import asyncio

import pytest

from gateway.store.etcd import STORE_ERRORS, EtcdClient, StoreAddress
from tests.support import HttpClient, config, free_port, gateway, route
from tests.support.etcd import Certificates, needs_etcd, running_cluster
from tests.support.processes import FleetGatewayProcess

pytestmark = needs_etcd


@pytest.fixture(scope="module")
def tls_etcd(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("etcd-tls")
    yield from running_cluster(workdir, tls=Certificates.make(workdir / "tls"))


def round_trip(url: str, **options: str) -> bytes:
    async def scenario() -> bytes:
        client = EtcdClient(StoreAddress.parse(url, **options), timeout=3)
        try:
            await client.put(b"/tls/key", b"value")
            return (await client.get(b"/tls/key")).value
        finally:
            await client.close()
    return asyncio.run(scenario())


def test_the_client_speaks_tls_with_the_ca_and_its_certificate(tls_etcd):
    assert tls_etcd.url().startswith("etcds://")
    assert round_trip(tls_etcd.url("/tls"), **tls_etcd.client_options()) == b"value"


def test_without_a_client_certificate_or_the_ca_the_store_is_out_of_reach(tls_etcd):
    options = tls_etcd.client_options()
    with pytest.raises(STORE_ERRORS):
        round_trip(tls_etcd.url("/tls"), ca_file=options["ca_file"])            # no client certificate
    with pytest.raises(STORE_ERRORS):
        round_trip(tls_etcd.url("/tls"), cert_file=options["cert_file"], key_file=options["key_file"])  # no CA


def test_a_gateway_follows_a_tls_store_given_its_files(tls_etcd, procs, tmp_path):
    echo = procs.backend("echo", "v1")
    port = free_port()
    options = tls_etcd.client_options()
    replica = FleetGatewayProcess(
        tls_etcd.url("/fleet-tls"), "127.0.0.2", tmp_path / "gateway",
        seed=config({"shop": gateway(port, {"v1": route(echo.address("v1"))})}),
        extra_args=("--etcd-ca", options["ca_file"], "--etcd-cert", options["cert_file"],
                    "--etcd-key", options["key_file"]))
    procs.started.append(replica)
    replica.start()
    status = replica.store_status()
    assert status["up"] is True and status["url"].startswith("etcds://"), status
    with HttpClient(port, host="127.0.0.2") as client:
        assert client.request("GET", "/").version == "v1"
    assert tls_etcd.keys("/fleet-tls/gateways/")                               # seeded through TLS
    assert replica.store_status()["revision"] is not None
