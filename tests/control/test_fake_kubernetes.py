"""The fake Kubernetes API server and simulated cluster (tests/support/kubernetes) behave as the real ones do
for everything a controller uses, driven here with kubernetes_asyncio as Vamp's Kubernetes driver drives them.
Tests on the `kube` fixture also run against a real cluster when VAMP_TEST_KUBECONFIG names one: that is what
keeps the fake honest. Tests on `fake_kube` inject faults only the fake can."""
from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client, config, watch

from tests.support.kubernetes import FakeKubernetes, KubeTarget
from tests.support.kubernetes.errors import ApiError
from tests.support.kubernetes.patches import json_patch, strategic_merge_patch
from tests.support.kubernetes.selectors import parse_label_selector
from tests.support.waiting import eventually_async

pytestmark = pytest.mark.timeout(60)


@contextlib.asynccontextmanager
async def api_client(target: KubeTarget) -> AsyncIterator[client.ApiClient]:
    configuration = client.Configuration()
    await config.load_kube_config(config_file=str(target.kubeconfig), client_configuration=configuration)
    async with client.ApiClient(configuration) as api:
        yield api


def deployment(name: str, image: str = "sava:1.0.0", replicas: int = 2, **labels: str) -> dict[str, Any]:
    pod_labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "labels": {"app": name, **labels}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": pod_labels},
                     "template": {"metadata": {"labels": pod_labels}, "spec": {"containers": [
                         {"name": "sava", "image": image, "ports": [{"name": "http", "containerPort": 8080}]},
                         {"name": "sidecar", "image": "sidecar:1", "env": [{"name": "A", "value": "1"}]}]}}}}


def service(name: str, selector: dict[str, str] | None = None, **labels: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"ports": [{"name": "http", "port": 80, "targetPort": "http"}]}
    if selector is not None:
        spec["selector"] = selector
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "labels": labels}, "spec": spec}


async def api_error(awaitable: Any) -> client.ApiException:
    with pytest.raises(client.ApiException) as caught:
        await awaitable
    return caught.value


def status_of(error: client.ApiException) -> dict[str, Any]:
    body = json.loads(error.body)
    assert body["kind"] == "Status" and body["apiVersion"] == "v1" and body["status"] == "Failure"
    assert body["code"] == error.status
    return body


# The API server, as any client sees it


async def test_create_get_and_a_second_create_answers_already_exists(kube: KubeTarget) -> None:
    async with api_client(kube) as api:
        apps = client.AppsV1Api(api)
        created = await apps.create_namespaced_deployment(kube.namespace, deployment("web"))
        assert created.metadata.namespace == kube.namespace
        assert created.metadata.uid and created.metadata.creation_timestamp and created.metadata.generation == 1
        assert int(created.metadata.resource_version) > 0
        assert created.spec.strategy.type == "RollingUpdate"      # defaulted, as a real server does
        assert created.spec.template.spec.containers[0].ports[0].protocol == "TCP"
        read = await apps.read_namespaced_deployment("web", kube.namespace)
        assert read.metadata.uid == created.metadata.uid
        error = await api_error(apps.create_namespaced_deployment(kube.namespace, deployment("web")))
        assert error.status == 409
        status = status_of(error)
        assert status["reason"] == "AlreadyExists"
        assert status["message"] == 'deployments.apps "web" already exists'
        error = await api_error(apps.read_namespaced_deployment("nothing", kube.namespace))
        assert error.status == 404 and status_of(error)["reason"] == "NotFound"


async def settled(apps: client.AppsV1Api, namespace: str, name: str) -> client.V1Deployment:
    """The Deployment once its controller has observed its generation (its status writes move the
    resourceVersion on, on a real cluster as on the fake)."""
    async def observed() -> client.V1Deployment | None:
        read = await apps.read_namespaced_deployment(name, namespace)
        return read if read.status.observed_generation == read.metadata.generation else None
    return await eventually_async(observed, 10, f"deployment {name} observed by its controller")


async def test_an_update_with_a_stale_resource_version_conflicts(kube: KubeTarget) -> None:
    async with api_client(kube) as api:
        apps = client.AppsV1Api(api)
        await apps.create_namespaced_deployment(kube.namespace, deployment("web", replicas=0))
        first = await settled(apps, kube.namespace, "web")
        first.spec.replicas = 1
        second = await apps.replace_namespaced_deployment("web", kube.namespace, first)
        assert second.spec.replicas == 1 and second.metadata.generation == 2
        assert int(second.metadata.resource_version) > int(first.metadata.resource_version)
        first.spec.replicas = 4                   # still carries the first resourceVersion
        error = await api_error(apps.replace_namespaced_deployment("web", kube.namespace, first))
        assert error.status == 409 and status_of(error)["reason"] == "Conflict"
        assert "the object has been modified" in status_of(error)["message"]
        body = deployment("other")
        error = await api_error(apps.replace_namespaced_deployment("web", kube.namespace, body))
        assert error.status == 400 and status_of(error)["reason"] == "BadRequest"
        error = await api_error(apps.replace_namespaced_deployment("other", kube.namespace, body))
        assert error.status == 404


async def test_the_three_patch_types(kube: KubeTarget) -> None:
    async with api_client(kube) as api:
        apps = client.AppsV1Api(api)
        await apps.create_namespaced_deployment(kube.namespace, deployment("web"))
        # strategic merge (a dict body): containers merge by name, the sidecar stays
        patched = await apps.patch_namespaced_deployment("web", kube.namespace, {"spec": {"template": {"spec": {
            "containers": [{"name": "sava", "image": "sava:2.0.0", "env": [{"name": "B", "value": "2"}]}]}}}})
        containers = {c.name: c for c in patched.spec.template.spec.containers}
        assert containers["sava"].image == "sava:2.0.0" and containers["sidecar"].image == "sidecar:1"
        assert [e.name for e in containers["sava"].env] == ["B"]
        assert containers["sava"].ports[0].container_port == 8080
        # merge patch: lists are replaced whole
        patched = await apps.patch_namespaced_deployment(
            "web", kube.namespace, {"metadata": {"labels": {"tier": "front"}}, "spec": {"template": {"spec": {
                "containers": [{"name": "only", "image": "sava:3.0.0"}]}}}},
            _content_type="application/merge-patch+json")
        assert [c.name for c in patched.spec.template.spec.containers] == ["only"]
        assert patched.metadata.labels == {"app": "web", "tier": "front"}
        # JSON patch (a list body), with a test that holds and one that does not
        patched = await apps.patch_namespaced_deployment("web", kube.namespace, [
            {"op": "test", "path": "/spec/replicas", "value": 2},
            {"op": "replace", "path": "/spec/replicas", "value": 4},
            {"op": "add", "path": "/metadata/annotations", "value": {"vamp.io/canary": "1"}},
            {"op": "copy", "from": "/metadata/annotations/vamp.io~1canary", "path": "/metadata/annotations/d"},
            {"op": "remove", "path": "/metadata/labels/tier"}])
        assert patched.spec.replicas == 4 and patched.metadata.annotations == {"vamp.io/canary": "1", "d": "1"}
        assert patched.metadata.labels == {"app": "web"}
        error = await api_error(apps.patch_namespaced_deployment("web", kube.namespace, [
            {"op": "test", "path": "/spec/replicas", "value": 2}, {"op": "replace", "path": "/spec/replicas",
                                                                   "value": 9}]))
        assert error.status == 422 and status_of(error)["reason"] == "Invalid"
        assert (await apps.read_namespaced_deployment("web", kube.namespace)).spec.replicas == 4


async def test_the_scale_subresource(kube: KubeTarget) -> None:
    async with api_client(kube) as api:
        apps = client.AppsV1Api(api)
        created = await apps.create_namespaced_deployment(kube.namespace, deployment("web", replicas=0))
        await settled(apps, kube.namespace, "web")
        scale = await apps.read_namespaced_deployment_scale("web", kube.namespace)
        assert scale.kind == "Scale" and scale.api_version == "autoscaling/v1"
        assert scale.spec.replicas == 0 and scale.status.selector == "app=web"
        assert scale.metadata.uid == created.metadata.uid
        scale.spec.replicas = 1
        scale = await apps.replace_namespaced_deployment_scale("web", kube.namespace, scale)
        assert scale.spec.replicas == 1
        scale = await apps.patch_namespaced_deployment_scale("web", kube.namespace, {"spec": {"replicas": 3}})
        assert scale.spec.replicas == 3
        read = await apps.read_namespaced_deployment("web", kube.namespace)
        assert read.spec.replicas == 3 and read.metadata.generation == 3
        error = await api_error(apps.patch_namespaced_deployment_scale("web", kube.namespace, {"spec": {
            "replicas": -1}}))
        assert error.status == 422 and status_of(error)["reason"] == "Invalid"


async def test_label_selectors_equality_and_set_based(kube: KubeTarget) -> None:
    async with api_client(kube) as api:
        core = client.CoreV1Api(api)
        for name, labels in (("a", {"tier": "front", "env": "prod"}), ("b", {"tier": "back", "env": "prod"}),
                             ("c", {"tier": "front"}), ("d", {})):
            await core.create_namespaced_service(kube.namespace, service(name, **labels))

        async def names(selector: str) -> list[str]:
            listed = await core.list_namespaced_service(kube.namespace, label_selector=selector)
            return sorted(item.metadata.name for item in listed.items)

        assert await names("tier=front") == ["a", "c"]
        assert await names("tier==front,env=prod") == ["a"]
        assert await names("tier!=front") == ["b", "d"]
        assert await names("tier in (front, back)") == ["a", "b", "c"]
        assert await names("env notin (prod)") == ["c", "d"]
        assert await names("env") == ["a", "b"]
        assert await names("!env") == ["c", "d"]
        error = await api_error(core.list_namespaced_service(kube.namespace, label_selector="tier in front"))
        assert error.status == 400 and status_of(error)["reason"] == "BadRequest"
        listed = await core.list_namespaced_service(kube.namespace, field_selector="metadata.name=b")
        assert [item.metadata.name for item in listed.items] == ["b"]


async def test_list_pages_with_limit_and_continue(kube: KubeTarget) -> None:
    async with api_client(kube) as api:
        core = client.CoreV1Api(api)
        for name in ("s1", "s2", "s3"):
            await core.create_namespaced_service(kube.namespace, service(name))
        first = await core.list_namespaced_service(kube.namespace, limit=2)
        assert len(first.items) == 2 and first.metadata._continue
        await core.create_namespaced_service(kube.namespace, service("s4"))     # not in the snapshot
        rest = await core.list_namespaced_service(kube.namespace, limit=2, _continue=first.metadata._continue)
        assert [item.metadata.name for item in first.items + rest.items] == ["s1", "s2", "s3"]
        assert rest.metadata.resource_version == first.metadata.resource_version


async def test_a_watch_from_a_lists_resource_version_sees_exactly_the_later_changes(kube: KubeTarget) -> None:
    async with api_client(kube) as api:
        core = client.CoreV1Api(api)
        await core.create_namespaced_service(kube.namespace, service("before", app="w"))
        listed = await core.list_namespaced_service(kube.namespace, label_selector="app=w")
        await core.create_namespaced_service(kube.namespace, service("after", app="w"))
        await core.patch_namespaced_service("before", kube.namespace, {"metadata": {"annotations": {"x": "1"}}})
        await core.patch_namespaced_service("after", kube.namespace, {"metadata": {"labels": {"app": "gone"}}})
        await core.create_namespaced_service(kube.namespace, service("unrelated", app="other"))
        await core.delete_namespaced_service("before", kube.namespace)
        seen = []
        async with watch.Watch() as stream:
            async for event in stream.stream(core.list_namespaced_service, kube.namespace, label_selector="app=w",
                                             resource_version=listed.metadata.resource_version, timeout_seconds=2):
                if event["type"] != "BOOKMARK":
                    seen.append((event["type"], event["object"].metadata.name))
                if len(seen) == 4:
                    break
        # leaving the selector is DELETED for this watch, as the real watch cache filters it
        assert seen == [("ADDED", "after"), ("MODIFIED", "before"), ("DELETED", "after"), ("DELETED", "before")]


async def test_a_watch_without_resource_version_starts_with_what_exists(kube: KubeTarget) -> None:
    async with api_client(kube) as api:
        core = client.CoreV1Api(api)
        await core.create_namespaced_service(kube.namespace, service("one"))
        async with watch.Watch() as stream:
            async for event in stream.stream(core.list_namespaced_service, kube.namespace, timeout_seconds=2):
                assert (event["type"], event["object"].metadata.name) == ("ADDED", "one")
                assert event["raw_object"]["kind"] == "Service"     # watch objects carry their kind
                break


async def test_a_foreground_deletion_keeps_the_deployment_until_its_pods_are_gone(kube: KubeTarget) -> None:
    async with api_client(kube) as api:
        apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
        await apps.create_namespaced_deployment(kube.namespace, deployment("web", replicas=1))

        async def pods() -> list[Any]:
            return (await core.list_namespaced_pod(kube.namespace, label_selector="app=web")).items
        await eventually_async(pods, 10, "a pod")
        await apps.delete_namespaced_deployment("web", kube.namespace, propagation_policy="Foreground")
        marked = await apps.read_namespaced_deployment("web", kube.namespace)
        assert marked.metadata.deletion_timestamp is not None
        assert "foregroundDeletion" in marked.metadata.finalizers

        async def gone() -> bool:
            try:
                await apps.read_namespaced_deployment("web", kube.namespace)
            except client.ApiException as error:
                return error.status == 404
            return False
        await eventually_async(gone, 20, "the deployment gone")
        assert not await pods()


# Faults only the fake can inject


async def test_bookmarks_carry_the_resource_version_a_watch_has_reached(tmp_path: Any) -> None:
    api = FakeKubernetes(bookmark_interval=0.1)
    api.start()
    try:
        target = KubeTarget(api.write_kubeconfig(tmp_path / "kubeconfig", "ns"), "ns", api, None)
        async with api_client(target) as http:
            core = client.CoreV1Api(http)
            listed = await core.list_namespaced_service("ns")
            api.create("services", "ns", service("svc"))
            events = []
            async with watch.Watch() as stream:
                async for event in stream.stream(core.list_namespaced_service, "ns", allow_watch_bookmarks=True,
                                                 resource_version=listed.metadata.resource_version,
                                                 timeout_seconds=5):
                    events.append(event)
                    if event["type"] == "BOOKMARK":
                        break
        added, bookmark = events
        assert added["type"] == "ADDED"
        assert bookmark["raw_object"] == {"kind": "Service", "apiVersion": "v1", "metadata": {
            "resourceVersion": added["object"].metadata.resource_version}}
        assert stream.resource_version == added["object"].metadata.resource_version
    finally:
        api.stop()


async def test_a_watch_from_before_a_compaction_is_expired(fake_kube: KubeTarget) -> None:
    api, _ = fake_kube.fake()
    async with api_client(fake_kube) as http:
        core = client.CoreV1Api(http)
        old = (await core.list_namespaced_service(fake_kube.namespace)).metadata.resource_version
        await core.create_namespaced_service(fake_kube.namespace, service("svc"))
        api.compact()
        # the server answers 200 and one ERROR event; kubernetes_asyncio's Watch raises it as ApiException 410
        with pytest.raises(client.ApiException) as caught:
            async with watch.Watch() as stream:
                async for _ in stream.stream(core.list_namespaced_service, fake_kube.namespace,
                                             resource_version=old, timeout_seconds=2):
                    pass
        assert caught.value.status == 410 and "too old resource version" in caught.value.reason
        raw = await core.list_namespaced_service(fake_kube.namespace, watch=True, resource_version=old,
                                                 _preload_content=False)
        line = json.loads(await raw.content.readline())
        assert line["type"] == "ERROR" and line["object"]["code"] == 410
        assert line["object"]["reason"] == "Expired" and line["object"]["message"].startswith(
            f"too old resource version: {old} (")
        assert await raw.content.readline() == b""
        raw.release()
        # an exact list at a compacted revision is 410 Gone too; not older than it is the current state
        error = await api_error(core.list_namespaced_service(fake_kube.namespace, resource_version=old,
                                                             resource_version_match="Exact"))
        assert error.status == 410 and status_of(error)["reason"] == "Expired"
        listed = await core.list_namespaced_service(fake_kube.namespace, resource_version=old,
                                                    resource_version_match="NotOlderThan")
        assert [item.metadata.name for item in listed.items] == ["svc"]


async def test_compaction_ends_an_open_watch_with_410(fake_kube: KubeTarget) -> None:
    api, _ = fake_kube.fake()
    async with api_client(fake_kube) as http:
        core = client.CoreV1Api(http)
        raw = await core.list_namespaced_service(fake_kube.namespace, watch=True, resource_version="1",
                                                 _preload_content=False)
        api.compact()
        line = json.loads(await asyncio.wait_for(raw.content.readline(), 5))
        assert line["type"] == "ERROR" and line["object"]["code"] == 410
        assert await asyncio.wait_for(raw.content.readline(), 5) == b""
        raw.release()


async def test_a_restart_drops_a_watch_and_a_rewatch_resumes_without_loss(fake_kube: KubeTarget) -> None:
    api, _ = fake_kube.fake()
    namespace = fake_kube.namespace
    async with api_client(fake_kube) as http:
        core = client.CoreV1Api(http)
        listed = await core.list_namespaced_service(namespace)
        stream = watch.Watch()
        events = stream.stream(core.list_namespaced_service, namespace, resource_version=listed.metadata
                               .resource_version, timeout_seconds=30)
        api.create("services", namespace, service("one"))
        first = await asyncio.wait_for(events.__anext__(), 5)
        assert first["object"].metadata.name == "one"
        api.restart()
        api.create("services", namespace, service("two"))      # while nobody watches
        with pytest.raises(aiohttp.ClientPayloadError):     # what kubernetes_asyncio lets through
            await asyncio.wait_for(events.__anext__(), 5)
        await stream.close()
        resumed = []
        async with watch.Watch() as again:
            async for event in again.stream(core.list_namespaced_service, namespace, timeout_seconds=2,
                                            resource_version=first["object"].metadata.resource_version):
                resumed.append((event["type"], event["object"].metadata.name))
                break
        assert resumed == [("ADDED", "two")]


async def test_forbid_answers_403_with_rbacs_words(fake_kube: KubeTarget) -> None:
    api, _ = fake_kube.fake()
    async with api_client(fake_kube) as http:
        apps = client.AppsV1Api(http)
        await apps.create_namespaced_deployment(fake_kube.namespace, deployment("web"))
        api.forbid("patch", "deployments")
        error = await api_error(apps.patch_namespaced_deployment("web", fake_kube.namespace, {"spec": {
            "replicas": 1}}))
        assert error.status == 403 and status_of(error)["reason"] == "Forbidden"
        assert status_of(error)["message"] == (
            'deployments.apps "web" is forbidden: User "system:serviceaccount:vamp-test:vamp" cannot patch '
            'resource "deployments" in API group "apps" in the namespace "vamp-test"')
        await apps.read_namespaced_deployment("web", fake_kube.namespace)     # other verbs still work
        api.forbid("list", "pods")
        error = await api_error(client.CoreV1Api(http).list_namespaced_pod(fake_kube.namespace))
        assert status_of(error)["message"] == (
            'pods is forbidden: User "system:serviceaccount:vamp-test:vamp" cannot list resource "pods" in API '
            'group "" in the namespace "vamp-test"')
        # a permission check (SelfSubjectAccessReview) sees the same denial
        review = await client.AuthorizationV1Api(http).create_self_subject_access_review({"spec": {
            "resourceAttributes": {"namespace": fake_kube.namespace, "verb": "patch", "group": "apps",
                                   "resource": "deployments"}}})
        assert review.status.allowed is False
        api.allow("patch", "deployments")
        await apps.patch_namespaced_deployment("web", fake_kube.namespace, {"spec": {"replicas": 1}})
        review = await client.AuthorizationV1Api(http).create_self_subject_access_review({"spec": {
            "resourceAttributes": {"namespace": fake_kube.namespace, "verb": "patch", "group": "apps",
                                   "resource": "deployments"}}})
        assert review.status.allowed is True


async def test_conflict_next_answers_409_once_then_lets_the_write_through(fake_kube: KubeTarget) -> None:
    api, _ = fake_kube.fake()
    async with api_client(fake_kube) as http:
        apps = client.AppsV1Api(http)
        created = await apps.create_namespaced_deployment(fake_kube.namespace, deployment("web"))
        api.conflict_next("patch", "deployments/scale")
        error = await api_error(apps.patch_namespaced_deployment_scale("web", fake_kube.namespace, {"spec": {
            "replicas": 5}}))
        assert error.status == 409 and status_of(error)["reason"] == "Conflict"
        moved = await apps.read_namespaced_deployment("web", fake_kube.namespace)
        assert int(moved.metadata.resource_version) > int(created.metadata.resource_version)
        scale = await apps.patch_namespaced_deployment_scale("web", fake_kube.namespace, {"spec": {"replicas": 5}})
        assert scale.spec.replicas == 5


async def test_requests_without_the_token_are_unauthorized(fake_kube: KubeTarget) -> None:
    api, _ = fake_kube.fake()
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{api.url}/api/v1/namespaces/vamp-test/pods") as response:
            assert response.status == 401
            assert (await response.json())["reason"] == "Unauthorized"
        async with session.get(f"{api.url}/version") as response:
            assert response.status == 200
    async with api_client(fake_kube) as http:
        assert (await client.VersionApi(http).get_code()).major == "1"
        groups = await client.ApisApi(http).get_api_versions()
        assert {group.name for group in groups.groups} >= {"apps", "discovery.k8s.io"}
        resources = await client.AppsV1Api(http).get_api_resources()
        assert "deployments/scale" in {resource.name for resource in resources.resources}
        namespace = await client.CoreV1Api(http).read_namespace("vamp-test")
        assert namespace.status.phase == "Active"
    assert ("GET", "/api/v1/namespaces/vamp-test/pods", "") in api.requests()


async def test_direct_writes_reach_watches_and_change_listeners(fake_kube: KubeTarget) -> None:
    api, _ = fake_kube.fake()
    seen: list[tuple[str, str, str]] = []
    api.on_change(lambda kind, resource, obj: seen.append((kind, resource, obj["metadata"]["name"])))
    api.create("services", "elsewhere", service("svc"))
    stored = api.get("services", "elsewhere", "svc")
    assert stored is not None and stored["kind"] == "Service" and stored["spec"]["clusterIP"]
    api.update("services", "elsewhere", {**stored, "status": {"loadBalancer": {"ingress": [{"ip": "127.0.0.9"}]}}})
    api.delete("services", "elsewhere", "svc")
    assert api.get("services", "elsewhere", "svc") is None
    await eventually_async(lambda: len(seen) == 3, 5, "three changes", context=lambda: seen)
    assert seen == [("ADDED", "services", "svc"), ("MODIFIED", "services", "svc"), ("DELETED", "services", "svc")]


# The simulated cluster


async def http_get(ip: str, port: int) -> tuple[int, dict[str, str]]:
    async with aiohttp.ClientSession() as session, session.get(f"http://{ip}:{port}/") as response:
        return response.status, dict(response.headers)


def endpoints_of(api: FakeKubernetes, namespace: str, service_name: str) -> list[dict[str, Any]]:
    slices = api.list("endpointslices", namespace, f"kubernetes.io/service-name={service_name}")
    return [endpoint for endpoint_slice in slices for endpoint in endpoint_slice.get("endpoints") or []]


def ready_pods(api: FakeKubernetes, namespace: str, selector: str) -> list[dict[str, Any]]:
    return [pod for pod in api.list("pods", namespace, selector)
            if any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))]


async def test_a_deployment_of_two_becomes_two_ready_pods_whose_endpoints_answer(fake_kube: KubeTarget) -> None:
    api, cluster = fake_kube.fake()
    namespace = fake_kube.namespace
    async with api_client(fake_kube) as http:
        apps, core, discovery = client.AppsV1Api(http), client.CoreV1Api(http), client.DiscoveryV1Api(http)
        await core.create_namespaced_service(namespace, service("web", {"app": "web"}, team="a"))
        await apps.create_namespaced_deployment(namespace, deployment("web", image="registry.local/sava:1.2.3"))

        async def ready() -> bool:
            status = (await apps.read_namespaced_deployment_status("web", namespace)).status
            return status.ready_replicas == 2 and status.available_replicas == 2 and status.observed_generation == 1
        await eventually_async(ready, 10, "two ready replicas")
        pods = (await core.list_namespaced_pod(namespace, label_selector="app=web")).items
        assert len(pods) == 2 and all(pod.status.phase == "Running" and pod.status.pod_ip for pod in pods)
        template_hash = pods[0].metadata.labels["pod-template-hash"]
        assert all(pod.metadata.name.startswith(f"web-{template_hash}-") for pod in pods)
        assert {pod.status.pod_ip for pod in pods} == {cluster.address(pod.metadata.name)[0] for pod in pods}
        slices = (await discovery.list_namespaced_endpoint_slice(
            namespace, label_selector="kubernetes.io/service-name=web")).items

        async def two_endpoints() -> Any:
            found = (await discovery.list_namespaced_endpoint_slice(
                namespace, label_selector="kubernetes.io/service-name=web")).items
            return found if found and len(found[0].endpoints or []) == 2 else None
        slices = await eventually_async(two_endpoints, 5, "two endpoints")
        (web,) = slices
        assert web.metadata.labels["endpointslice.kubernetes.io/managed-by"] == "endpointslice-controller.k8s.io"
        assert web.metadata.labels["team"] == "a" and web.address_type == "IPv4"
        assert [(p.name, p.port, p.protocol) for p in web.ports] == [("http", 8080, "TCP")]
        for endpoint in web.endpoints:
            assert endpoint.conditions.ready and endpoint.target_ref.kind == "Pod"
            status, headers = await http_get(endpoint.addresses[0], web.ports[0].port)
            assert status == 200 and headers["X-Version"] == "1.2.3"
            assert headers["X-Instance"] == endpoint.target_ref.name


async def test_scaling_down_removes_the_cheapest_pod_which_terminates_first(fake_kube: KubeTarget) -> None:
    api, cluster = fake_kube.fake()
    namespace = fake_kube.namespace
    async with api_client(fake_kube) as http:
        apps, core, discovery = client.AppsV1Api(http), client.CoreV1Api(http), client.DiscoveryV1Api(http)
        await core.create_namespaced_service(namespace, service("web", {"app": "web"}))
        await apps.create_namespaced_deployment(namespace, deployment("web", replicas=3))
        await eventually_async(lambda: len(endpoints_of(api, namespace, "web")) == 3
                               and all(e["conditions"]["ready"] for e in endpoints_of(api, namespace, "web")),
                               10, "three ready endpoints")
        victim = sorted(pod["metadata"]["name"] for pod in cluster.pods(namespace, "web"))[1]
        await core.patch_namespaced_pod(victim, namespace, {"metadata": {"annotations": {
            "controller.kubernetes.io/pod-deletion-cost": "-100"}}})
        address = cluster.address(victim)
        listed = await discovery.list_namespaced_endpoint_slice(namespace)
        await apps.patch_namespaced_deployment_scale("web", namespace, {"spec": {"replicas": 2}})
        states = []
        async with watch.Watch() as stream:
            async for event in stream.stream(discovery.list_namespaced_endpoint_slice, namespace,
                                             resource_version=listed.metadata.resource_version, timeout_seconds=5):
                mine = [e for e in event["raw_object"].get("endpoints") or [] if e["targetRef"]["name"] == victim]
                states.append(mine[0]["conditions"] if mine else None)
                if mine and mine[0]["conditions"]["terminating"]:
                    # still serving while it terminates
                    status, headers = await http_get(*address)
                    assert status == 200 and headers["X-Instance"] == victim
                if not mine:
                    break
        assert {"ready": False, "serving": True, "terminating": True} in states and states[-1] is None
        assert victim not in {pod["metadata"]["name"] for pod in cluster.pods(namespace, "web")}
        assert len(cluster.pods(namespace, "web")) == 2
        with pytest.raises(aiohttp.ClientConnectionError):
            await http_get(*address)


async def test_a_rolling_update_with_max_unavailable_0_keeps_every_replica_ready(fake_kube: KubeTarget) -> None:
    api, cluster = fake_kube.fake()
    namespace = fake_kube.namespace
    body = deployment("web", replicas=2)
    body["spec"]["strategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    ready_counts: list[int] = []
    api.on_change(lambda kind, resource, obj: ready_counts.append(len(ready_pods(api, namespace, "app=web")))
                  if resource == "pods" else None)
    async with api_client(fake_kube) as http:
        apps = client.AppsV1Api(http)
        await apps.create_namespaced_deployment(namespace, body)
        await eventually_async(lambda: len(ready_pods(api, namespace, "app=web")) == 2, 10, "two ready pods")
        start = len(ready_counts)
        await apps.patch_namespaced_deployment("web", namespace, {"spec": {"template": {"spec": {"containers": [
            {"name": "sava", "image": "sava:2.0.0"}]}}}})

        async def rolled() -> bool:
            status = (await apps.read_namespaced_deployment("web", namespace)).status
            pods = cluster.pods(namespace, "web")
            return status.updated_replicas == 2 and status.ready_replicas == 2 and status.replicas == 2 \
                and len(pods) == 2 and status.observed_generation == 2
        await eventually_async(rolled, 10, "the rollout done")
    assert min(ready_counts[start:]) >= 2
    versions = {(await http_get(*cluster.address(pod["metadata"]["name"])))[1]["X-Version"]
                for pod in cluster.pods(namespace, "web")}
    assert versions == {"2.0.0"}
    rolled_out = api.get("deployments", namespace, "web")
    progressing = {c["type"]: c for c in rolled_out["status"]["conditions"]}
    assert progressing["Progressing"]["reason"] == "NewReplicaSetAvailable"
    assert rolled_out["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"


async def test_deleting_a_pod_over_http_terminates_it_gracefully(fake_kube: KubeTarget) -> None:
    api, cluster = fake_kube.fake()
    namespace = fake_kube.namespace
    async with api_client(fake_kube) as http:
        core = client.CoreV1Api(http)
        await client.AppsV1Api(http).create_namespaced_deployment(namespace, deployment("web", replicas=1))
        (pod,) = await eventually_async(lambda: ready_pods(api, namespace, "app=web"), 10, "a ready pod")
        deleted = await core.delete_namespaced_pod(pod["metadata"]["name"], namespace)
        assert deleted.metadata.deletion_timestamp is not None and deleted.metadata.deletion_grace_period_seconds
        # the Deployment replaces it at once; the old one goes once its kubelet is done
        await eventually_async(lambda: api.get("pods", namespace, pod["metadata"]["name"]) is None, 5,
                               "the deleted pod gone")
        await eventually_async(lambda: len(ready_pods(api, namespace, "app=web")) == 1, 10, "a new ready pod")
        await client.AppsV1Api(http).delete_namespaced_deployment("web", namespace)
        await eventually_async(lambda: not api.list("pods", namespace), 5, "the deployment's pods gone")


async def test_hold_keeps_pods_running_but_not_ready(fake_kube: KubeTarget) -> None:
    api, cluster = fake_kube.fake()
    namespace = fake_kube.namespace
    cluster.hold("web")
    api.create("deployments", namespace, deployment("web", replicas=1))
    (pod,) = await eventually_async(lambda: [p for p in cluster.pods(namespace, "web")
                                             if p["status"].get("phase") == "Running"], 10, "a running pod")
    conditions = {c["type"]: c for c in pod["status"]["conditions"]}
    assert conditions["Ready"]["status"] == "False" and conditions["Ready"]["reason"] == "ContainersNotReady"
    assert not any(c["ready"] for c in pod["status"]["containerStatuses"])
    status = api.get("deployments", namespace, "web")["status"]
    assert "readyReplicas" not in status and status["unavailableReplicas"] == 1     # zero fields are omitted
    cluster.release("web")
    await eventually_async(lambda: ready_pods(api, namespace, "app=web"), 5, "the pod ready once released")


async def test_crash_loop_shows_as_crash_loop_back_off_with_restarts_and_an_event(fake_kube: KubeTarget) -> None:
    api, cluster = fake_kube.fake()
    namespace = fake_kube.namespace
    cluster.crash_loop("web")
    api.create("deployments", namespace, deployment("web", replicas=1))

    def restarted_twice() -> dict[str, Any] | None:
        for pod in cluster.pods(namespace, "web"):
            statuses = pod["status"].get("containerStatuses") or []
            if statuses and statuses[0]["restartCount"] >= 2:
                return pod
        return None
    pod = await eventually_async(restarted_twice, 10, "restarts")
    container = pod["status"]["containerStatuses"][0]
    assert container["state"]["waiting"]["reason"] == "CrashLoopBackOff" and not container["ready"]
    assert container["lastState"]["terminated"]["exitCode"] == 1
    assert pod["status"]["phase"] == "Running"
    events = await eventually_async(lambda: [e for e in api.list("events", namespace) if e["reason"] == "BackOff"],
                                    5, "a BackOff event")
    assert events[0]["involvedObject"]["name"] == pod["metadata"]["name"]
    assert events[0]["message"].startswith("Back-off restarting failed container")
    cluster.heal("web")
    await eventually_async(lambda: ready_pods(api, namespace, "app=web"), 5, "the pod ready once healed")


async def test_a_failing_image_pull_waits_in_image_pull_back_off(fake_kube: KubeTarget) -> None:
    api, cluster = fake_kube.fake()
    namespace = fake_kube.namespace
    cluster.image_pull_fails("sava:9.9.9")
    reasons: list[str] = []

    def record(kind: str, resource: str, obj: dict[str, Any]) -> None:
        for status in (obj.get("status") or {}).get("containerStatuses") or [] if resource == "pods" else []:
            reason = status["state"].get("waiting", {}).get("reason")
            if reason and reason not in reasons:
                reasons.append(reason)
    api.on_change(record)
    api.create("deployments", namespace, deployment("web", image="sava:9.9.9", replicas=1))
    await eventually_async(lambda: "ImagePullBackOff" in reasons, 10, "ImagePullBackOff", context=lambda: reasons)
    assert reasons.index("ErrImagePull") < reasons.index("ImagePullBackOff")
    (pod,) = cluster.pods(namespace, "web")
    assert pod["status"]["phase"] == "Pending"
    assert {e["reason"] for e in api.list("events", namespace)} >= {"Failed", "BackOff"}


async def test_unschedulable_pods_stay_pending_until_healed(fake_kube: KubeTarget) -> None:
    api, cluster = fake_kube.fake()
    namespace = fake_kube.namespace
    cluster.unschedulable("web")
    api.create("deployments", namespace, deployment("web", replicas=1))

    def pending() -> dict[str, Any] | None:
        for pod in cluster.pods(namespace, "web"):
            for condition in pod["status"].get("conditions") or []:
                if condition["type"] == "PodScheduled" and condition["status"] == "False":
                    return pod
        return None
    pod = await eventually_async(pending, 10, "an unschedulable pod")
    (condition,) = pod["status"]["conditions"]
    assert condition["reason"] == "Unschedulable"
    assert condition["message"] == "0/1 nodes are available: 1 Insufficient cpu."
    assert pod["status"]["phase"] == "Pending" and "nodeName" not in pod["spec"]
    event = await eventually_async(lambda: [e for e in api.list("events", namespace)
                                            if e["reason"] == "FailedScheduling"], 5, "a FailedScheduling event")
    assert event[0]["source"]["component"] == "default-scheduler"
    cluster.heal("web")
    await eventually_async(lambda: ready_pods(api, namespace, "app=web"), 5, "the pod ready once healed")


async def test_an_orphaning_deletion_leaves_the_pods_running(fake_kube: KubeTarget) -> None:
    api, cluster = fake_kube.fake()
    namespace = fake_kube.namespace
    async with api_client(fake_kube) as http:
        apps = client.AppsV1Api(http)
        await apps.create_namespaced_deployment(namespace, deployment("web", replicas=1))
        (pod,) = await eventually_async(lambda: ready_pods(api, namespace, "app=web"), 10, "a ready pod")
        await apps.delete_namespaced_deployment("web", namespace, propagation_policy="Orphan")
        await eventually_async(lambda: api.get("deployments", namespace, "web") is None, 5, "the deployment gone")
        kept = api.get("pods", namespace, pod["metadata"]["name"])
        assert kept is not None and "ownerReferences" not in kept["metadata"]
        assert "deletionTimestamp" not in kept["metadata"]


async def test_a_watch_list_stream_marks_the_end_of_the_initial_events(fake_kube: KubeTarget) -> None:
    api, _ = fake_kube.fake()
    api.create("services", fake_kube.namespace, service("one"))
    async with api_client(fake_kube) as http:
        raw = await client.CoreV1Api(http).list_namespaced_service(
            fake_kube.namespace, watch=True, send_initial_events=True, resource_version_match="NotOlderThan",
            allow_watch_bookmarks=True, _preload_content=False)
        first = json.loads(await asyncio.wait_for(raw.content.readline(), 5))
        second = json.loads(await asyncio.wait_for(raw.content.readline(), 5))
        raw.release()
    assert (first["type"], first["object"]["metadata"]["name"]) == ("ADDED", "one")
    assert second["type"] == "BOOKMARK"
    assert second["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    assert int(second["object"]["metadata"]["resourceVersion"]) >= int(
        first["object"]["metadata"]["resourceVersion"])


# The patch and selector machinery on its own


def test_strategic_merge_patch_honours_the_merge_keys_and_directives() -> None:
    current = {"spec": {"template": {"spec": {"containers": [
        {"name": "a", "image": "a:1", "ports": [{"containerPort": 80, "name": "http"}],
         "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]},
        {"name": "b", "image": "b:1"}]}}}, "metadata": {"finalizers": ["f1"]}}
    patched = strategic_merge_patch(current, {
        "metadata": {"finalizers": ["f2"]},
        "spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
            "containers": [{"name": "a", "ports": [{"containerPort": 81}],
                            "env": [{"name": "X", "$patch": "delete"}, {"name": "Z", "value": "3"}]}]}}}},
        "Deployment")
    containers = patched["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["b", "a"]
    assert containers[1]["ports"] == [{"containerPort": 80, "name": "http"}, {"containerPort": 81}]
    assert containers[1]["env"] == [{"name": "Y", "value": "2"}, {"name": "Z", "value": "3"}]
    assert patched["metadata"]["finalizers"] == ["f1", "f2"]
    replaced = strategic_merge_patch(current, {"spec": {"template": {"spec": {"containers": [
        {"$patch": "replace"}, {"name": "c", "image": "c:1"}]}}}}, "Deployment")
    assert replaced["spec"]["template"]["spec"]["containers"] == [{"name": "c", "image": "c:1"}]
    service_ports = strategic_merge_patch({"spec": {"ports": [{"port": 80, "name": "a"}]}},
                                          {"spec": {"ports": [{"port": 80, "targetPort": 8080}]}}, "Service")
    assert service_ports["spec"]["ports"] == [{"port": 80, "name": "a", "targetPort": 8080}]


def test_json_patch_follows_rfc_6902() -> None:
    document = {"a": [1, 2], "b": {"c": True}}
    assert json_patch(document, [{"op": "add", "path": "/a/-", "value": 3},
                                 {"op": "move", "from": "/b/c", "path": "/d"},
                                 {"op": "test", "path": "/d", "value": True}]) == {"a": [1, 2, 3], "b": {}, "d": True}
    assert document == {"a": [1, 2], "b": {"c": True}}
    for failing in ([{"op": "test", "path": "/b/c", "value": 1}], [{"op": "remove", "path": "/x"}],
                    [{"op": "replace", "path": "/a/5", "value": 0}]):
        with pytest.raises(ApiError) as caught:
            json_patch(document, failing)
        assert caught.value.code == 422


def test_label_selectors_parse_as_the_api_server_parses_them() -> None:
    selector = parse_label_selector("a in (x, y),b notin (z),!c,d,e!=f,g==h")
    assert selector.matches({"a": "x", "d": "", "e": "g", "g": "h"})
    assert not selector.matches({"a": "x", "d": "", "g": "h", "c": "1"})
    assert not selector.matches({"a": "x", "b": "z", "d": "", "g": "h"})
    for bad in ("a in x", "a=b c", "a=(", "in (a)"):
        with pytest.raises(ApiError) as caught:
            parse_label_selector(bad)
        assert caught.value.code == 400
