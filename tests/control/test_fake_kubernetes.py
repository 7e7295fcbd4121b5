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


async def test_an_update_with_a_stale_resource_version_conflicts(kube: KubeTarget) -> None:
    async with api_client(kube) as api:
        apps = client.AppsV1Api(api)
        first = await apps.create_namespaced_deployment(kube.namespace, deployment("web"))
        first.spec.replicas = 3
        second = await apps.replace_namespaced_deployment("web", kube.namespace, first)
        assert second.spec.replicas == 3 and second.metadata.generation == 2
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
        created = await apps.create_namespaced_deployment(kube.namespace, deployment("web", replicas=1))
        scale = await apps.read_namespaced_deployment_scale("web", kube.namespace)
        assert scale.kind == "Scale" and scale.api_version == "autoscaling/v1"
        assert scale.spec.replicas == 1 and scale.status.selector == "app=web"
        assert scale.metadata.uid == created.metadata.uid
        scale = await apps.patch_namespaced_deployment_scale("web", kube.namespace, {"spec": {"replicas": 3}})
        assert scale.spec.replicas == 3
        read = await apps.read_namespaced_deployment("web", kube.namespace)
        assert read.spec.replicas == 3 and read.metadata.generation == 2
        scale.spec.replicas = 0
        scale = await apps.replace_namespaced_deployment_scale("web", kube.namespace, scale)
        assert (await apps.read_namespaced_deployment("web", kube.namespace)).spec.replicas == 0


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
        with pytest.raises((aiohttp.ClientError, asyncio.IncompleteReadError, ConnectionError)):
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
        api.allow("patch", "deployments")
        await apps.patch_namespaced_deployment("web", fake_kube.namespace, {"spec": {"replicas": 1}})


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
