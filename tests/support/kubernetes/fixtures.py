"""The Kubernetes fixtures: `kube` runs a test twice, on the fake ("fake": FakeKubernetes with its
SimulatedCluster, a kubeconfig in tmp_path, namespace "vamp-test") and on a real cluster ("cluster": only when
VAMP_TEST_KUBECONFIG names a kubeconfig; a fresh namespace `vamp-test-<8 hex>` is created for the test and
deleted afterwards). `fake_kube` is the fake alone, for tests that inject faults only the fake can."""
from __future__ import annotations

import asyncio
import os
import secrets
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .cluster import SimulatedCluster
from .server import FakeKubernetes

KUBECONFIG_VARIABLE = "VAMP_TEST_KUBECONFIG"
FAKE_NAMESPACE = "vamp-test"
NO_CLUSTER = (f"{KUBECONFIG_VARIABLE} is not set: these tests run against a real cluster only when it names a "
              "kubeconfig (README, Running on Kubernetes)")


@dataclass
class KubeTarget:
    kubeconfig: Path
    namespace: str
    api: FakeKubernetes | None          # None on a real cluster
    cluster: SimulatedCluster | None

    def fake(self) -> tuple[FakeKubernetes, SimulatedCluster]:
        if self.api is None or self.cluster is None:
            pytest.skip("needs the fake API server: it injects faults a real cluster cannot be asked for")
        return self.api, self.cluster


@pytest.fixture(params=["fake", "cluster"])
def kube(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KubeTarget]:
    if request.param == "fake":
        yield from _fake_target(tmp_path)
        return
    kubeconfig = os.environ.get(KUBECONFIG_VARIABLE)
    if not kubeconfig:
        pytest.skip(NO_CLUSTER)
    namespace = f"vamp-test-{secrets.token_hex(4)}"
    _run_apart(_namespace(Path(kubeconfig), namespace, create=True))
    try:
        yield KubeTarget(Path(kubeconfig), namespace, None, None)
    finally:
        _run_apart(_namespace(Path(kubeconfig), namespace, create=False))


@pytest.fixture
def fake_kube(tmp_path: Path) -> Iterator[KubeTarget]:
    yield from _fake_target(tmp_path)


def _fake_target(tmp_path: Path) -> Iterator[KubeTarget]:
    api = FakeKubernetes()
    api.start()
    cluster = SimulatedCluster(api)
    try:
        cluster.start()
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig", FAKE_NAMESPACE)
        yield KubeTarget(kubeconfig, FAKE_NAMESPACE, api, cluster)
    finally:
        cluster.stop()
        api.stop()


def _run_apart(coro: Coroutine[Any, Any, None]) -> None:
    """Run `coro` to its end on a loop of its own, in a thread of its own: the test's loop stays untouched."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(coro)
        except BaseException as error:      # handed to the caller's thread
            failure.append(error)
    thread = threading.Thread(target=run, name="kube namespace")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


async def _namespace(kubeconfig: Path, namespace: str, *, create: bool) -> None:
    from kubernetes_asyncio import client, config

    configuration = client.Configuration()
    await config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    async with client.ApiClient(configuration) as api_client:
        core = client.CoreV1Api(api_client)
        if create:
            await core.create_namespace({"metadata": {"name": namespace, "labels": {"vamp-test": "true"}}})
        else:
            try:
                await core.delete_namespace(namespace)
            except client.ApiException as error:
                if error.status != 404:
                    raise
