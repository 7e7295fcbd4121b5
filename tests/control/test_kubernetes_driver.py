"""The Kubernetes driver against an API server (the fake, with its simulated cluster; a real cluster when
VAMP_TEST_KUBECONFIG names one): deploy creates a Deployment and a Service, instances follow the pods and
EndpointSlices, scale-down drains the pods Vamp chose before the replicas drop, undeploy drains then deletes,
and a restarted driver adopts what it finds. With the fake alone: the API restarting, compacting (410), refusing
(403) and conflicting (409), pods that never turn ready or crash."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from control.orchestrator.base import HealthCheck, Instance, ServiceEvent, ServiceSpec
from control.orchestrator.kubernetes import KubernetesOrchestrator, KubernetesUnavailable, api, connect, names
from tests.support.kubernetes import KubeTarget
from tests.support.waiting import eventually_async

SAVA = "sava/sava/sava:1.0.0"
NAME = "sava-sava-sava-1-0-0"
TIMEOUT = 15.0

Connect = Callable[..., Awaitable[KubernetesOrchestrator]]


def sava(instances: int = 1, version: str = "1.0.0") -> ServiceSpec:
    return ServiceSpec(id=SAVA, image=f"docker://magneticio/sava:{version}", ports={"webport": "http"},
                       port_numbers={"webport": 8080}, instances=instances,
                       health_check=HealthCheck(path="/health", port="webport", interval=1, timeout=1))


async def _drivers(target: KubeTarget) -> AsyncIterator[Connect]:
    made: list[KubernetesOrchestrator] = []

    async def make(**options) -> KubernetesOrchestrator:
        driver = await connect(str(target.kubeconfig), target.namespace, **options)
        made.append(driver)
        return driver
    yield make
    for driver in made:
        await driver.close()


@pytest.fixture
async def driver_for(kube: KubeTarget) -> AsyncIterator[Connect]:
    """connect() to the test's API (the fake, or a real cluster); every driver made is closed afterwards."""
    async for make in _drivers(kube):
        yield make


@pytest.fixture
async def fake_driver_for(fake_kube: KubeTarget) -> AsyncIterator[Connect]:
    """connect() to the fake, for tests of faults only the fake can make."""
    async for make in _drivers(fake_kube):
        yield make


def deployment_with(fake, replicas: int, image: str) -> Callable[[], dict | None]:
    def check() -> dict | None:
        found = fake.get("deployments", "vamp-test", NAME)
        if found and found["spec"]["replicas"] == replicas and \
                found["spec"]["template"]["spec"]["containers"][0]["image"] == image:
            return found
        return None
    return check


async def read(driver: KubernetesOrchestrator, kind: str, name: str = NAME) -> dict | None:
    method = driver.apps.read_namespaced_deployment if kind == "Deployment" else driver.core.read_namespaced_service
    try:
        return await api.call(method, name, driver.namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def states(driver: KubernetesOrchestrator) -> list[str]:
    return [instance.state for instance in driver.instances(SAVA)]


async def ready(driver: KubernetesOrchestrator, count: int) -> list[Instance]:
    """Wait until exactly `count` instances run, all ready."""
    def all_ready() -> list[Instance] | None:
        instances = driver.instances(SAVA)
        return instances if len(instances) == count and all(i.state == "ready" for i in instances) else None
    return await eventually_async(all_ready, TIMEOUT, f"{count} ready instances",
                                  context=lambda: driver.instances(SAVA))


class Drains:
    """A before_stop hook that records each instance it is given, and holds it until `release()`."""

    def __init__(self) -> None:
        self.asked: list[Instance] = []
        self.released = asyncio.Event()

    async def __call__(self, instance: Instance) -> None:
        self.asked.append(instance)
        await self.released.wait()

    def release(self) -> None:
        self.released.set()


async def events_until(queue: asyncio.Queue, match: Callable[[object], bool], what: str) -> object:
    """Read events until one matches (TIMEOUT at most)."""
    seen: list = []

    async def next_match():
        while True:
            event = await queue.get()
            seen.append(event)
            if match(event):
                return event
    try:
        return await asyncio.wait_for(next_match(), TIMEOUT)
    except TimeoutError:
        raise AssertionError(f"no {what} in {TIMEOUT} s; seen: {seen}") from None


# -- against any API ----------------------------------------------------------------------------------------
async def test_deploy_creates_a_deployment_and_a_service(driver_for: Connect):
    driver = await driver_for()
    await driver.deploy(sava(instances=2))
    deployment = await eventually_async(lambda: read(driver, "Deployment"), TIMEOUT, "a Deployment")
    service = await eventually_async(lambda: read(driver, "Service"), TIMEOUT, "a Service")
    assert deployment["metadata"]["labels"] == names.labels(SAVA)
    assert deployment["metadata"]["annotations"] == names.id_annotations(SAVA)
    assert deployment["spec"]["replicas"] == 2
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "magneticio/sava:1.0.0"
    assert container["ports"] == [{"name": "webport", "containerPort": 8080, "protocol": "TCP"}]
    assert service["spec"]["selector"] == names.labels(SAVA)
    assert [(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [("webport", 8080, "webport")]
    assert driver.service_address(SAVA, "webport") == (f"{NAME}.{driver.namespace}.svc", 8080)
    assert driver.problem(SAVA) is None


async def test_connect_says_what_is_missing(tmp_path):
    with pytest.raises(KubernetesUnavailable, match="no kubeconfig at .*nowhere"):
        await connect(str(tmp_path / "nowhere"), None)


async def test_connect_says_where_the_api_is_out_of_reach(fake_kube: KubeTarget, tmp_path):
    fake, _ = fake_kube.fake()
    kubeconfig = fake.write_kubeconfig(tmp_path / "elsewhere", "default")
    kubeconfig.write_text(kubeconfig.read_text().replace(fake.url, "http://127.0.0.1:9"))
    with pytest.raises(KubernetesUnavailable, match="cannot reach the Kubernetes API at http://127.0.0.1:9"):
        await connect(str(kubeconfig), None)


async def test_connect_names_the_missing_permission(fake_kube: KubeTarget):
    fake, _ = fake_kube.fake()
    fake.forbid("list", "deployments")
    with pytest.raises(KubernetesUnavailable, match="does not let the platform list deployments in namespace "
                                                    "vamp-test .*403 Forbidden"):
        await connect(str(fake_kube.kubeconfig), None)


async def test_the_namespace_comes_from_the_kubeconfig(fake_kube: KubeTarget):
    driver = await connect(str(fake_kube.kubeconfig), None)
    try:
        assert driver.namespace == "vamp-test"
    finally:
        await driver.close()


# -- with the fake's faults ---------------------------------------------------------------------------------
async def test_a_restarted_driver_adopts_what_it_finds_and_creates_nothing(fake_kube: KubeTarget,
                                                                           fake_driver_for: Connect):
    fake, _ = fake_kube.fake()
    first = await fake_driver_for()
    await first.deploy(sava(instances=2))
    created = await eventually_async(lambda: read(first, "Service"), TIMEOUT, "a Service")
    deployment = await read(first, "Deployment")
    await first.close()
    before = len(fake.requests())
    second = await fake_driver_for()
    await second.deploy(sava(instances=2))
    await second.scale(SAVA, 3)               # a write that comes after whatever adopting wrote
    await eventually_async(lambda: fake.get("deployments", "vamp-test", NAME)["spec"]["replicas"] == 3, TIMEOUT,
                           "3 replicas")
    writes = [(method, path) for method, path, _ in fake.requests()[before:] if method != "GET"]
    assert writes == [("PATCH", f"/apis/apps/v1/namespaces/vamp-test/deployments/{NAME}/scale")]
    assert (await read(second, "Service"))["metadata"]["uid"] == created["metadata"]["uid"]
    assert (await read(second, "Deployment"))["metadata"]["uid"] == deployment["metadata"]["uid"]


async def test_conflicts_are_read_again_and_retried(fake_kube: KubeTarget, fake_driver_for: Connect):
    fake, _ = fake_kube.fake()
    driver = await fake_driver_for()
    await driver.deploy(sava(instances=1))
    await eventually_async(lambda: read(driver, "Service"), TIMEOUT, "a Service")
    fake.conflict_next("update", "deployments", count=2)
    fake.conflict_next("patch", "deployments", count=2)
    await driver.deploy(sava(instances=2, version="1.1.0"))
    await eventually_async(deployment_with(fake, 2, "magneticio/sava:1.1.0"), TIMEOUT, "the new image, 2 replicas")
    puts = [path for method, path, _ in fake.requests() if method == "PUT" and path.endswith(f"/deployments/{NAME}")]
    assert len(puts) >= 3                                   # two conflicts, then the write that landed
    assert driver.problem(SAVA) is None


async def test_a_refused_create_is_a_problem_until_allowed(fake_kube: KubeTarget, fake_driver_for: Connect):
    fake, _ = fake_kube.fake()
    driver = await fake_driver_for()
    events = driver.subscribe()
    fake.forbid("create", "deployments")
    await driver.deploy(sava())
    event = await events_until(events, lambda e: isinstance(e, ServiceEvent) and e.problem is not None,
                               "a problem")
    assert isinstance(event, ServiceEvent) and event.service == SAVA
    assert event.problem.startswith("403 Forbidden: deployments.apps is forbidden")
    assert event.reason == f"the API refused to create Deployment {NAME}"
    assert driver.problem(SAVA) == event.problem
    fake.allow("create", "deployments")
    event = await events_until(events, lambda e: isinstance(e, ServiceEvent), "the problem resolved")
    assert isinstance(event, ServiceEvent) and event.problem is None and "resolved" in event.reason
    assert driver.problem(SAVA) is None
    assert await read(driver, "Deployment") is not None


async def test_a_deleted_deployment_is_made_again_after_the_api_restarted(fake_kube: KubeTarget,
                                                                          fake_driver_for: Connect):
    fake, _ = fake_kube.fake()
    driver = await fake_driver_for()
    await driver.deploy(sava())
    first = await eventually_async(lambda: fake.get("deployments", "vamp-test", NAME), TIMEOUT, "a Deployment")
    fake.restart()
    fake.delete("deployments", "vamp-test", NAME)
    again = await eventually_async(lambda: fake.get("deployments", "vamp-test", NAME), TIMEOUT,
                                   "the Deployment made again")
    assert again["metadata"]["uid"] != first["metadata"]["uid"]


async def test_after_compaction_a_fresh_list_notices_what_changed(fake_kube: KubeTarget, fake_driver_for: Connect):
    fake, _ = fake_kube.fake()
    driver = await fake_driver_for()
    await driver.deploy(sava())
    await eventually_async(lambda: fake.get("services", "vamp-test", NAME), TIMEOUT, "a Service")
    fake.compact()
    fake.delete("services", "vamp-test", NAME)
    await eventually_async(lambda: fake.get("services", "vamp-test", NAME), TIMEOUT, "the Service made again")
    lists = [query for method, path, query in fake.requests()
             if method == "GET" and path.endswith("/services") and "watch" not in query]
    assert len(lists) >= 2                                  # the first list, and the one after 410
