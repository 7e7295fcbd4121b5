"""The Kubernetes driver against an API server (the fake, with its simulated cluster; a real cluster when
VAMP_TEST_KUBECONFIG names one): deploy creates a Deployment and a Service, instances follow the pods and
EndpointSlices, scale-down drains the pods Vamp chose before the replicas drop, undeploy drains then deletes,
and a restarted driver adopts what it finds. With the fake alone: the API restarting, compacting (410), refusing
(403) and conflicting (409), pods that never turn ready or crash."""
from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from control.orchestrator.base import HealthCheck, Instance, InstanceEvent, ServiceEvent, ServiceSpec
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
    assert names.id_annotations(SAVA).items() <= deployment["metadata"]["annotations"].items()
    assert deployment["spec"]["replicas"] == 2
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "magneticio/sava:1.0.0"
    assert container["ports"] == [{"name": "webport", "containerPort": 8080, "protocol": "TCP"}]
    assert service["spec"]["selector"] == names.labels(SAVA)
    assert [(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [("webport", 8080, "webport")]
    assert driver.service_host(SAVA) == f"{NAME}.{driver.namespace}.svc"
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


async def test_instances_appear_as_the_pods_turn_ready(kube: KubeTarget, driver_for: Connect):
    driver = await driver_for()
    events = driver.subscribe()
    await driver.deploy(sava(instances=2))
    instances = await ready(driver, 2)
    for instance in instances:
        assert instance.service == SAVA and instance.ports == {"webport": 8080} and instance.pid is None
        assert instance.id.startswith(SAVA + "#") and instance.host
    if kube.cluster is not None:
        pods = {pod["metadata"]["name"]: pod for pod in kube.cluster.pods(kube.namespace, NAME)}
        assert {f"{SAVA}#{name}" for name in pods} == {instance.id for instance in instances}
        for instance in instances:
            pod = pods[instance.id.rpartition("#")[2]]
            assert kube.cluster.address(pod["metadata"]["name"]) == (instance.host, 8080)
            async with aiohttp.ClientSession() as session, session.get(f"http://{instance.host}:8080/") as response:
                assert response.headers["X-Version"] == "1.0.0"
    seen: dict[str, list[str | None]] = {}
    while not events.empty():
        event = events.get_nowait()
        if isinstance(event, InstanceEvent):
            seen.setdefault(event.instance.id, []).append(event.previous_state)
    assert all(history[0] is None for history in seen.values())    # each new once, then changes of state


async def test_scale_down_drains_the_pods_it_chose_before_the_replicas_drop(kube: KubeTarget, driver_for: Connect):
    drains = Drains()
    driver = await driver_for(before_stop=drains)
    await driver.deploy(sava(instances=1))
    [oldest] = await ready(driver, 1)
    await driver.scale(SAVA, 3)
    everyone = {instance.id for instance in await ready(driver, 3)}
    events = driver.subscribe()
    await driver.scale(SAVA, 1)
    await eventually_async(lambda: len(drains.asked) == 2, TIMEOUT, "two instances handed to before_stop",
                           context=lambda: drains.asked)
    chosen = {instance.id for instance in drains.asked}
    assert {i.id for i in driver.instances(SAVA) if i.state == "stopping"} == chosen
    assert (await read(driver, "Deployment"))["spec"]["replicas"] == 3     # nothing goes before it is drained
    assert {i.id for i in driver.instances(SAVA)} == everyone
    drains.release()
    [survivor] = await ready(driver, 1)
    assert survivor.id == oldest.id                                        # all ready: the newest went
    assert (await read(driver, "Deployment"))["spec"]["replicas"] == 1
    changes = []
    while not events.empty():
        event = events.get_nowait()
        if isinstance(event, InstanceEvent):
            changes.append((event.instance.id, event.instance.state))
    assert {identity for identity, state in changes if state == "stopped"} == chosen
    assert all(identity in chosen for identity, state in changes if state in ("stopping", "stopped"))


async def test_stop_instance_runs_one_fewer(kube: KubeTarget, driver_for: Connect):
    drains = Drains()
    driver = await driver_for(before_stop=drains)
    await driver.deploy(sava(instances=2))
    first, second = await ready(driver, 2)
    await driver.stop_instance(second.id)
    assert {i.id: i.state for i in driver.instances(SAVA)}[second.id] == "stopping"
    [left] = await ready(driver, 1)
    assert left.id == first.id and drains.asked == []        # the caller drained it
    assert (await read(driver, "Deployment"))["spec"]["replicas"] == 1
    with pytest.raises(KeyError):
        await driver.stop_instance(f"{SAVA}#nothing")


async def test_undeploy_drains_every_instance_then_deletes_both_objects(kube: KubeTarget, driver_for: Connect):
    drains = Drains()
    driver = await driver_for(before_stop=drains)
    await driver.deploy(sava(instances=2))
    instances = await ready(driver, 2)
    events = driver.subscribe()
    await driver.undeploy(SAVA)
    await eventually_async(lambda: len(drains.asked) == 2, TIMEOUT, "both instances handed to before_stop")
    assert {i.id for i in drains.asked} == {i.id for i in instances}
    assert states(driver) == ["stopping", "stopping"]
    assert await read(driver, "Deployment") is not None and await read(driver, "Service") is not None
    drains.release()
    await eventually_async(lambda: _none(read(driver, "Deployment")), TIMEOUT, "the Deployment deleted")
    await eventually_async(lambda: _none(read(driver, "Service")), TIMEOUT, "the Service deleted")
    await eventually_async(lambda: driver.instances() == [], TIMEOUT, "no instances")
    stopped = set()
    while not events.empty():
        event = events.get_nowait()
        if isinstance(event, InstanceEvent) and event.instance.state == "stopped":
            stopped.add(event.instance.id)
    assert stopped == {i.id for i in instances}


async def _none(value: Awaitable[dict | None]) -> bool:
    return await value is None


async def test_a_new_spec_rolls_the_pods_and_the_old_ones_show_as_stopping(kube: KubeTarget, driver_for: Connect):
    driver = await driver_for()
    await driver.deploy(sava(instances=2))
    old = {instance.id for instance in await ready(driver, 2)}
    events = driver.subscribe()
    await driver.deploy(sava(instances=2, version="1.1.0"))
    assert all(instance.outdated for instance in driver.instances(SAVA))
    new = await eventually_async(
        lambda: (found := {i.id for i in driver.instances(SAVA)}) and not found & old and len(found) == 2 and all(
            i.state == "ready" and not i.outdated for i in driver.instances(SAVA)) and found,
        TIMEOUT, "two new instances ready", context=lambda: driver.instances(SAVA))
    assert len(new) == 2
    went: dict[str, list[str]] = {}
    while not events.empty():
        event = events.get_nowait()
        if isinstance(event, InstanceEvent) and event.instance.id in old:
            went.setdefault(event.instance.id, []).append(event.instance.state)
    assert {identity: states[-2:] for identity, states in went.items()} == {
        identity: ["stopping", "stopped"] for identity in old}
    if kube.cluster is not None:
        for instance in driver.instances(SAVA):
            async with aiohttp.ClientSession() as session, session.get(f"http://{instance.host}:8080/") as response:
                assert response.headers["X-Version"] == "1.1.0"


# -- with the fake's faults ---------------------------------------------------------------------------------
async def test_a_restarted_driver_adopts_what_it_finds_and_creates_nothing(fake_kube: KubeTarget,
                                                                           fake_driver_for: Connect):
    fake, _ = fake_kube.fake()
    first = await fake_driver_for()
    await first.deploy(sava(instances=2))
    await first.deploy(dataclasses.replace(sava(), id="sava/sava/other:1.0.0"))
    created = await eventually_async(lambda: read(first, "Service"), TIMEOUT, "a Service")
    deployment = await read(first, "Deployment")
    other = await eventually_async(lambda: read(first, "Service", "sava-sava-other-1-0-0"), TIMEOUT, "another one")
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
    assert (await read(second, "Service", "sava-sava-other-1-0-0")) == other      # not claimed: left alone
    assert second.instances("sava/sava/other:1.0.0") == []


async def test_conflicts_are_read_again_and_retried(fake_kube: KubeTarget, fake_driver_for: Connect):
    fake, _ = fake_kube.fake()
    driver = await fake_driver_for()
    await driver.deploy(sava(instances=1))
    await eventually_async(lambda: read(driver, "Service"), TIMEOUT, "a Service")
    fake.conflict_next("update", "deployments", count=2)
    fake.conflict_next("patch", "deployments/scale", count=2)
    await driver.deploy(sava(instances=2, version="1.1.0"))
    await eventually_async(deployment_with(fake, 2, "magneticio/sava:1.1.0"), TIMEOUT, "the new image, 2 replicas")
    puts = [path for method, path, _ in fake.requests() if method == "PUT" and path.endswith(f"/deployments/{NAME}")]
    scales = [path for method, path, _ in fake.requests() if method == "PATCH" and path.endswith("/scale")]
    assert len(puts) == 3 and len(scales) == 3              # two conflicts each, then the write that landed
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


async def test_instances_keep_following_after_the_api_restarted(fake_kube: KubeTarget, fake_driver_for: Connect):
    fake, _ = fake_kube.fake()
    driver = await fake_driver_for()
    await driver.deploy(sava(instances=1))
    await ready(driver, 1)
    fake.restart()
    await driver.scale(SAVA, 2)
    await ready(driver, 2)


async def test_instances_keep_following_after_compaction(fake_kube: KubeTarget, fake_driver_for: Connect):
    fake, _ = fake_kube.fake()
    driver = await fake_driver_for()
    await driver.deploy(sava(instances=1))
    await ready(driver, 1)
    before = len(fake.requests())
    fake.compact()
    await driver.scale(SAVA, 2)
    await ready(driver, 2)
    assert any(path.endswith("/endpointslices") and "watch" not in query
               for method, path, query in fake.requests()[before:])    # listed afresh after 410


async def test_a_pod_that_never_turns_ready_stays_starting(fake_kube: KubeTarget, fake_driver_for: Connect):
    fake, cluster = fake_kube.fake()
    cluster.hold(NAME)
    driver = await fake_driver_for()
    await driver.deploy(sava(instances=1))
    [held] = await eventually_async(lambda: driver.instances(SAVA), TIMEOUT, "an instance")
    await eventually_async(lambda: fake.list("endpointslices", "vamp-test", f"kubernetes.io/service-name={NAME}"),
                           TIMEOUT, "an EndpointSlice")
    await eventually_async(lambda: driver.instances(SAVA)[0].host, TIMEOUT, "the pod's address")
    assert states(driver) == ["starting"]
    cluster.release(NAME)
    await ready(driver, 1)


async def test_a_crash_looping_pod_fails_its_instance_and_is_a_problem_of_the_service(fake_kube: KubeTarget,
                                                                                    fake_driver_for: Connect):
    fake, cluster = fake_kube.fake()
    cluster.crash_loop(NAME)
    driver = await fake_driver_for()
    events = driver.subscribe()
    await driver.deploy(sava(instances=1))
    event = await events_until(events, lambda e: isinstance(e, ServiceEvent) and e.problem is not None,
                               "a problem")
    assert isinstance(event, ServiceEvent) and event.service == SAVA
    assert event.problem.startswith("pod sava-sava-sava-1-0-0-") and ": CrashLoopBackOff: " in event.problem
    [instance] = driver.instances(SAVA)
    assert instance.state == "starting" and instance.failure.startswith("CrashLoopBackOff") and instance.failures >= 1
    assert driver.problem(SAVA) == event.problem
    cluster.heal(NAME)
    event = await events_until(events, lambda e: isinstance(e, ServiceEvent), "the problem resolved")
    assert isinstance(event, ServiceEvent) and event.problem is None and "resolved" in event.reason
    await ready(driver, 1)


async def test_a_restarted_driver_finds_the_same_instances(fake_kube: KubeTarget, fake_driver_for: Connect):
    fake, _ = fake_kube.fake()
    first = await fake_driver_for()
    await first.deploy(sava(instances=2))
    before = [(i.id, i.host, i.ports) for i in await ready(first, 2)]
    await first.close()
    requests = len(fake.requests())
    second = await fake_driver_for()
    await second.deploy(sava(instances=2))
    assert [(i.id, i.host, i.ports) for i in await ready(second, 2)] == before
    assert [path for method, path, _ in fake.requests()[requests:] if method == "POST"] == []


@pytest.mark.parametrize("fault, failure", [("crash_loop", "CrashLoopBackOff"), ("unschedulable", "Unschedulable"),
                                            ("image_pull_fails", "ImagePullBackOff")])
async def test_pods_that_cannot_run_are_the_services_problem(fake_kube: KubeTarget, fake_driver_for: Connect,
                                                             fault: str, failure: str):
    fake, cluster = fake_kube.fake()
    getattr(cluster, fault)("magneticio/sava:1.0.0" if fault == "image_pull_fails" else NAME)
    driver = await fake_driver_for()
    events = driver.subscribe()
    await driver.deploy(sava(instances=1))
    event = await events_until(events, lambda e: isinstance(e, ServiceEvent) and e.problem is not None
                               and failure in e.problem, f"a {failure} problem")
    assert isinstance(event, ServiceEvent) and event.problem.startswith(f"pod {NAME}-")
    [instance] = await eventually_async(lambda: [i for i in driver.instances(SAVA) if i.failure
                                                 and i.failure.startswith(failure)], TIMEOUT, f"a {failure} instance")
    assert instance.state == "starting" and instance.failures >= 1
    assert driver.problem(SAVA) == event.problem


async def test_a_refused_scale_is_a_problem_until_allowed(fake_kube: KubeTarget, fake_driver_for: Connect):
    fake, _ = fake_kube.fake()
    driver = await fake_driver_for()
    events = driver.subscribe()
    await driver.deploy(sava(instances=1))
    await ready(driver, 1)
    fake.forbid("patch", "deployments/scale")
    await driver.scale(SAVA, 2)
    event = await events_until(events, lambda e: isinstance(e, ServiceEvent), "a problem")
    assert isinstance(event, ServiceEvent) and event.problem.startswith("403 Forbidden: ")
    assert event.reason == f"the API refused to patch the scale of Deployment {NAME}"
    fake.allow("patch", "deployments/scale")
    await ready(driver, 2)
    assert driver.problem(SAVA) is None


async def test_a_refused_watch_is_a_problem_until_allowed(fake_kube: KubeTarget, fake_driver_for: Connect):
    fake, _ = fake_kube.fake()
    fake.forbid("list", "endpointslices")
    driver = await fake_driver_for()
    events = driver.subscribe()
    await driver.deploy(sava(instances=1))
    event = await events_until(events, lambda e: isinstance(e, ServiceEvent), "a problem")
    assert isinstance(event, ServiceEvent) and event.problem.startswith("403 Forbidden: endpointslices")
    assert event.reason == f"the API refused to watch EndpointSlices of {NAME}"
    fake.allow("list", "endpointslices")
    await ready(driver, 1)
    assert driver.problem(SAVA) is None
