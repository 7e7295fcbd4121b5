"""Real etcd servers on loopback for the tests: Debian's `etcd` binary (`make system-deps` installs it), one
member or a cluster of three, each member a process of its own that a test may kill, restart or compact.

`etcd_server` (one member for a whole test module) and `etcd_cluster` (three members, for one test) are
fixtures; `store_prefix` gives each test a prefix of its own, so tests sharing a server never see each other's
keys. Without the binary the tests that need it are skipped, saying why.
"""
from __future__ import annotations

import asyncio
import json
import shutil
import signal
import ssl
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .processes import LOOPBACK, ManagedProcess, ProcessError, free_port

ETCD = shutil.which("etcd") or ("/usr/bin/etcd" if Path("/usr/bin/etcd").exists() else None)
needs_etcd = pytest.mark.skipif(ETCD is None, reason="etcd is not installed (make system-deps installs Debian's "
                                                     "etcd-server)")
START_TIMEOUT = 30.0


@dataclass(frozen=True)
class Certificates:
    """A CA of the test's own, a server certificate for 127.0.0.1 and a client certificate, all signed by it."""
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    @classmethod
    def make(cls, directory: Path) -> Certificates:
        """New keys and certificates in `directory`, made with openssl (skips the test without it)."""
        openssl = shutil.which("openssl")
        if openssl is None:
            pytest.skip("openssl is not installed")
        directory.mkdir(parents=True, exist_ok=True)

        def run(*args: str) -> None:
            subprocess.run([openssl, *args], check=True, capture_output=True, cwd=directory)

        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=vamp test CA")
        for name, extensions in (("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
                                 ("client", "extendedKeyUsage=clientAuth\n")):
            (directory / f"{name}.ext").write_text(extensions)
            run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN=vamp test {name}")
            run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")
        return cls(directory / "ca.pem", directory / "server.pem", directory / "server.key",
                   directory / "client.pem", directory / "client.key")


class EtcdMember(ManagedProcess):
    """One etcd member: its client and peer ports stay the same across restarts, and so does its data."""

    label = "etcd"

    def __init__(self, name: str, workdir: Path, *, cluster_token: str, also_on: tuple[str, ...] = (),
                 tls: Certificates | None = None) -> None:
        """`also_on`: addresses besides loopback where clients reach it (a test host's link), on the same port.
        `tls`: clients speak TLS to it and must show a certificate the same CA signed."""
        self.name = name
        self.also_on = also_on
        self.tls = tls
        self.client_port = free_port()
        self.peer_port = free_port()
        self.data_dir = workdir / f"etcd-{name}"
        self.cluster_token = cluster_token
        self.initial_cluster = ""
        super().__init__([], workdir, log_name=f"etcd-{name}")
        self.label = f"etcd member {name}"

    @property
    def client_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{LOOPBACK}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{LOOPBACK}:{self.peer_port}"

    def command(self) -> list[str]:
        scheme = "https" if self.tls else "http"
        listen = ",".join([self.client_url, *(f"{scheme}://{host}:{self.client_port}" for host in self.also_on)])
        tls = [] if self.tls is None else [
            "--cert-file", str(self.tls.server_cert), "--key-file", str(self.tls.server_key),
            "--client-cert-auth", "--trusted-ca-file", str(self.tls.ca)]
        return [ETCD, "--name", self.name, "--data-dir", str(self.data_dir), *tls,
                "--listen-client-urls", listen, "--advertise-client-urls", self.client_url,
                "--listen-peer-urls", self.peer_url, "--initial-advertise-peer-urls", self.peer_url,
                "--initial-cluster", self.initial_cluster, "--initial-cluster-token", self.cluster_token,
                "--initial-cluster-state", "new", "--heartbeat-interval", "50", "--election-timeout", "500",
                "--logger", "zap", "--log-level", "warn"]

    def start(self) -> EtcdMember:
        self.args = self.command()
        self.spawn()
        return self

    def healthy(self) -> bool:
        context = None
        if self.tls is not None:
            context = ssl.create_default_context(cafile=str(self.tls.ca))
            context.load_cert_chain(str(self.tls.client_cert), str(self.tls.client_key))
        try:
            with urllib.request.urlopen(f"{self.client_url}/health", timeout=1, context=context) as answer:
                return json.loads(answer.read()).get("health") == "true"
        except (OSError, ValueError):
            return False

    def wait_healthy(self, timeout: float = START_TIMEOUT) -> None:
        self.wait_until(self.healthy, timeout, "healthy")

    def kill(self) -> None:
        """SIGKILL, as a crash would: the member's data stays for a restart."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def restart(self) -> None:
        self.kill()
        self.start()
        self.wait_healthy()


class EtcdCluster:
    """One or three members on loopback; `url(prefix)` is the store URL naming every member."""

    def __init__(self, workdir: Path, size: int = 1, *, also_on: tuple[str, ...] = (),
                 tls: Certificates | None = None) -> None:
        token = f"vamp-test-{uuid.uuid4().hex[:8]}"
        self.tls = tls
        self.members = [EtcdMember(f"m{i}", workdir, cluster_token=token, also_on=also_on, tls=tls)
                        for i in range(size)]
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        for member in self.members:
            member.initial_cluster = initial

    def start(self) -> EtcdCluster:
        for member in self.members:
            member.start()
        try:
            for member in self.members:
                member.wait_healthy()
        except ProcessError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for member in self.members:
            member.stop()

    def url(self, prefix: str = "/vamp") -> str:
        hosts = ",".join(f"{LOOPBACK}:{m.client_port}" for m in self.members)
        return f"{'etcds' if self.tls else 'etcd'}://{hosts}{prefix}"

    def client_options(self) -> dict[str, str]:
        """What `StoreAddress.parse` needs besides the URL to reach this cluster (its TLS files)."""
        if self.tls is None:
            return {}
        return {"ca_file": str(self.tls.ca), "cert_file": str(self.tls.client_cert),
                "key_file": str(self.tls.client_key)}

    @property
    def endpoints(self) -> str:
        """As etcdctl takes them."""
        return ",".join(m.client_url for m in self.members)

    def kill_all(self) -> None:
        for member in self.members:
            member.kill()

    def restart_all(self) -> None:
        for member in self.members:
            member.kill()
        for member in self.members:
            member.start()
        for member in self.members:
            member.wait_healthy()

    # -- a client of the tests' own ----------------------------------------------------------------------
    def run(self, coroutine_function, *args):
        """Run `coroutine_function(client, *args)` with a fresh aetcd client on this cluster, and return what it
        returns (the tests' own look at, and changes to, the store: keys, compaction, revisions)."""
        from gateway.store.etcd import EtcdClient, StoreAddress

        async def with_client():
            client = EtcdClient(StoreAddress.parse(self.url(), **self.client_options()))
            try:
                await client.connect()
                return await coroutine_function(client, *args)
            finally:
                await client.close()
        return asyncio.run(with_client())

    def revision(self) -> int:
        async def current(client):
            return (await client.get_prefix(b"\x00none")).header.revision
        return self.run(current)

    def compact(self) -> int:
        """Compact the store at its current revision (physically): a watch from an older revision fails."""
        async def compact(client):
            revision = (await client.get_prefix(b"\x00none")).header.revision
            await client.compact(revision, physical=True)
            return revision
        return self.run(compact)

    def get(self, key: str) -> bytes | None:
        async def get(client):
            found = await client.get(key.encode())
            return None if found is None else found.value
        return self.run(get)

    def put(self, key: str, value: bytes | str) -> int:
        async def put(client):
            return (await client.put(key.encode(), value.encode() if isinstance(value, str) else value)
                    ).header.revision
        return self.run(put)

    def keys(self, prefix: str) -> dict[str, bytes]:
        async def keys(client):
            return {kv.key.decode(): kv.value for kv in await client.get_prefix(prefix.encode())}
        return self.run(keys)


def etcdctl(cluster: EtcdCluster, *args: str) -> str:
    """etcdctl (Debian's etcd-client) against the cluster, when a test wants the reference tool's view."""
    tool = shutil.which("etcdctl")
    if tool is None:
        pytest.skip("etcdctl is not installed")
    return subprocess.run([tool, "--endpoints", cluster.endpoints, *args], check=True, capture_output=True,
                          text=True, env={"ETCDCTL_API": "3"}).stdout


def running_cluster(workdir: Path, size: int = 1, **options) -> Iterator[EtcdCluster]:
    """What an etcd fixture yields: a cluster started in `workdir`, stopped after the tests (skipped, saying
    why, without the etcd binary). `options`: EtcdCluster's (`also_on`, `tls`)."""
    if ETCD is None:
        pytest.skip("etcd is not installed (make system-deps installs Debian's etcd-server)")
    cluster = EtcdCluster(workdir, size=size, **options).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def etcd_server(tmp_path_factory):
    """One etcd member for a whole test module (tests isolate themselves by `store_prefix`)."""
    yield from running_cluster(tmp_path_factory.mktemp("etcd"))


@pytest.fixture
def etcd_cluster(tmp_path):
    """Three etcd members on loopback, for one test."""
    yield from running_cluster(tmp_path, size=3)


@pytest.fixture
def store_prefix() -> str:
    """A key prefix of this test's own."""
    return f"/vamp-test-{uuid.uuid4().hex[:10]}"
