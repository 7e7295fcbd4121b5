"""The Kubernetes driver: each Vamp service as a Deployment and a Service in one namespace (`objects`), its
instances from the Service's EndpointSlices and the pods.

Level-based: each service has a reconciler (a background task) that reads the Deployment and the Service,
creates what is missing, replaces what differs from the service's spec (with the resourceVersion read; 409
Conflict: read again) and sets the replicas through the scale subresource, until nothing differs. It runs on
every deploy, scale, undeploy and stop_instance, and whenever a watch shows the objects changed by someone else;
it is idempotent, so a restarted platform that deploys its stored services again adopts what it finds (the
objects' annotations name the service) and creates nothing twice. Objects with Vamp's labels that no deploy
claims are left alone.

Scaling down, Vamp chooses the pods, not Kubernetes: the instances to remove (not ready before ready, then the
newest) get the lowest pod-deletion-cost, turn `stopping`, are drained (`before_stop`), and only then do the
replicas drop. `stop_instance` does so for one instance the caller drained; `undeploy` drains every instance,
then deletes both objects (propagation Background) and forgets the service once its pods are gone (deployed
again meanwhile, it starts afresh once they are). A spec change
other than instances replaces the pod template: Kubernetes rolls (maxSurge 1, maxUnavailable 0), and
terminating endpoints show as `stopping`.

Instances: one per endpoint of the service's EndpointSlices (id "<service id>#<pod name>") and per pod that
has none yet: `ready` when the endpoint is, `stopping` while it terminates (or the pod is chosen to go),
`starting` otherwise, `stopped` once gone. A pod that cannot run (a container in CrashLoopBackOff,
ImagePullBackOff, ErrImagePull, CreateContainerConfigError; unschedulable) gives its instance a `failure`, and
the service a problem (a ServiceEvent) until no pod has it. So does an API that refuses a request (403
Forbidden, 422 Invalid): the reconciler tries again with back-off, and the first success clears it. No error
ends a background task.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from functools import partial
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from control.orchestrator.base import Instance, InstanceEvent, ServiceEvent, ServiceSpec
from control.orchestrator.plumbing import BackgroundTasks, Subscribers
from control.orchestrator.kubernetes import api, names, objects
from control.orchestrator.kubernetes.watch import ListWatch, Objects
from gateway.common.backoff import Backoff

log = logging.getLogger("vamp.orchestrator.kubernetes")

BeforeStop = Callable[[Instance], Awaitable[None]]

LOWEST_COST = "-2147483648"          # pod-deletion-cost of a pod Vamp chose to go: the first the ReplicaSet deletes
POD_PROBLEMS = ("CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError")
FIRST_LIST_TIMEOUT = 10.0            # start() waits this long at most for the first lists
GONE_TIMEOUT = 120.0                 # undeploy: how long the pods may take to go before the service is forgotten
COST_SEEN_TIMEOUT = 5.0              # scale-down: how long to wait for the deletion costs to show in the watch
MERGE_PATCH = "application/merge-patch+json"
DELETE_OPTIONS = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}


class Refused(Exception):
    """Something the reconciler will not do (an object of that name that is not the service's)."""


class _Service:
    """What the driver knows of one Vamp service: its spec and objects, its instances, its problems."""

    def __init__(self, spec: ServiceSpec) -> None:
        self.id = spec.id
        self.name = names.object_name(spec.id)
        self.labels = names.labels(spec.id)
        self.set_spec(spec)
        self.undeploying = False
        self.redeploy: ServiceSpec | None = None   # deployed again while undeploying: what to run once it is down
        self.leaving: dict[str, str] = {}          # pod -> why it is going (chosen by Vamp)
        self.drained: set[str] = set()             # pods drained already (before_stop done, or the caller did)
        self.slices: Objects = {}
        self.slices_listed = False                 # no instances until the EndpointSlices were listed once
        self.instances: dict[str, Instance] = {}   # by instance id
        self.first_seen: dict[str, float] = {}     # instance id -> when the driver first saw it
        self.problems: dict[str, str] = {}         # "api" | "pods" | "endpointslices" -> problem
        self.troubles: dict[str, tuple[str, str]] = {}    # pod -> (reason, message) it cannot run for, until ready
        self.pod_trouble: tuple[str, str] | None = None   # (pod, reason) of the pods' problem reported
        self.tolerated: dict[str, tuple[str, str]] = {}   # kind -> (spec hash, path) the API keeps different
        self.wake = asyncio.Event()
        self.tasks: list[asyncio.Task] = []

    def set_spec(self, spec: ServiceSpec) -> None:
        self.spec = spec
        self.ports = objects.port_names(spec)
        self.deployment = objects.deployment(spec)
        self.service = objects.service(spec)
        self.spec_hash: str = self.deployment["spec"]["template"]["metadata"]["annotations"][names.SPEC_HASH_KEY]

    def instance_id(self, key: str) -> str:
        return f"{self.id}#{key}"


class KubernetesOrchestrator:
    """The Kubernetes driver (see the module docstring) over `api_client`, in `namespace`. `before_stop` is
    awaited for each instance before a scale-down or undeploy stops it. `start()` before use; `connect()`
    makes one from a kubeconfig and starts it."""

    def __init__(self, api_client: client.ApiClient, namespace: str, *, before_stop: BeforeStop | None = None
                 ) -> None:
        self.api_client = api_client
        self.namespace = namespace
        self.before_stop = before_stop
        self.apps = client.AppsV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.discovery = client.DiscoveryV1Api(api_client)
        self._services: dict[str, _Service] = {}
        self.subscribers = Subscribers()
        self.background = BackgroundTasks("vamp kubernetes")
        self._watch_problems: dict[str, str] = {}
        self._pods_seen = asyncio.Event()          # set (and replaced) on each change of the pods
        self._closed = False
        where = f"in namespace {namespace}"
        self._deployments = ListWatch(f"Deployments {where}", self.apps.list_namespaced_deployment, namespace,
                                      label_selector=names.MANAGED_SELECTOR, on_change=self._deployments_changed,
                                      on_problem=partial(self._watch_problem, "Deployments"))
        self._service_objects = ListWatch(f"Services {where}", self.core.list_namespaced_service, namespace,
                                          label_selector=names.MANAGED_SELECTOR, on_change=self._services_changed,
                                          on_problem=partial(self._watch_problem, "Services"))
        self._pods = ListWatch(f"pods {where}", self.core.list_namespaced_pod, namespace,
                               label_selector=names.MANAGED_SELECTOR, on_change=self._pods_changed,
                               on_problem=partial(self._watch_problem, "pods"))

    # -- lifecycle ---------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Watch the namespace's Deployments, Services and pods of Vamp; say which Deployments are there to adopt."""
        watches = (self._deployments, self._service_objects, self._pods)
        for watch in watches:
            self.background.start(watch.run(), watch.what)
        try:
            async with asyncio.timeout(FIRST_LIST_TIMEOUT):
                await asyncio.gather(*(watch.synced.wait() for watch in watches))
        except TimeoutError:
            log.warning("the first lists of %s took longer than %gs; going on", self.namespace, FIRST_LIST_TIMEOUT)
        for name, found in sorted(self._deployments.objects.items()):
            log.info("found Deployment %s of service %s in namespace %s: adopted when that service is deployed, "
                     "else left alone", name, names.service_id_of(found.get("metadata") or {}) or "(unnamed)",
                     self.namespace)

    async def close(self) -> None:
        """Stop watching and reconciling; every object stays (the next platform adopts it)."""
        if self._closed:
            return
        self._closed = True
        await self.background.cancel_all()
        self._services.clear()
        await self.api_client.close()

    # -- the Orchestrator interface ----------------------------------------------------------------------
    def check(self, spec: ServiceSpec) -> None:
        objects.check(spec)
        name = names.object_name(spec.id)
        for other in self._services.values():
            if other.id != spec.id and other.name == name:
                raise ValueError(f"services {other.id!r} and {spec.id!r} would both be named {name!r} on Kubernetes")

    def service_host(self, service_id: str) -> str | None:
        return f"{names.object_name(service_id)}.{self.namespace}.svc"      # the Service's DNS name

    def problem(self, service_id: str) -> str | None:
        service = self._services.get(service_id)
        if service is None:
            return None
        return next(iter(service.problems.values()), None) or next(iter(self._watch_problems.values()), None)

    async def deploy(self, spec: ServiceSpec) -> None:
        self._check_open()
        self.check(spec)
        service = self._services.get(spec.id)
        if service is None:
            service = self._services[spec.id] = _Service(spec)
            slices = ListWatch(f"EndpointSlices of Service {service.name}",
                               self.discovery.list_namespaced_endpoint_slice, self.namespace,
                               label_selector=f"{names.SERVICE_NAME_LABEL}={service.name}",
                               on_change=partial(self._slices_changed, service),
                               on_problem=partial(self._slices_problem, service))
            service.tasks = [self.background.start(self._reconcile_loop(service), f"reconcile {spec.id}"),
                             self.background.start(slices.run(), slices.what)]
        elif service.undeploying:
            service.redeploy = spec                    # its pods are on their way out: then start afresh
            return
        else:
            service.set_spec(spec)
        self._refresh(service)
        service.wake.set()

    async def scale(self, service_id: str, instances: int) -> None:
        self._check_open()
        service = self._service(service_id)
        spec = dataclasses.replace(service.spec, instances=instances)
        objects.check(spec)
        service.set_spec(spec)
        service.wake.set()

    async def undeploy(self, service_id: str) -> None:
        self._check_open()
        service = self._services.get(service_id)
        if service is None:
            return
        service.undeploying = True
        service.redeploy = None
        service.wake.set()

    async def stop_instance(self, instance_id: str) -> None:
        self._check_open()
        service_id, _, pod = instance_id.rpartition("#")
        service = self._service(service_id)
        if instance_id not in service.instances or pod not in self._pods_of(service):
            raise KeyError(f"no instance {instance_id!r}")
        if pod not in service.leaving:
            service.leaving[pod] = "stop requested"
            service.drained.add(pod)
            service.set_spec(dataclasses.replace(service.spec, instances=max(0, service.spec.instances - 1)))
            self._refresh(service)
        service.wake.set()

    def instances(self, service_id: str | None = None) -> list[Instance]:
        services = (self._services.values() if service_id is None
                    else [self._services[service_id]] if service_id in self._services else [])
        return sorted((instance for service in services for instance in service.instances.values()),
                      key=lambda instance: instance.id)

    def subscribe(self) -> asyncio.Queue[InstanceEvent | ServiceEvent]:
        return self.subscribers.subscribe()

    # -- reconciling -------------------------------------------------------------------------------------
    async def _reconcile_loop(self, service: _Service) -> None:
        """Bring the service's objects in line whenever woken, until it is undeployed and gone."""
        backoff = Backoff()
        while True:
            await service.wake.wait()
            service.wake.clear()
            try:
                if service.undeploying:
                    if await self._take_down(service):
                        return
                else:
                    await self._reconcile(service)
                backoff.reset()
                continue
            except Refused as exc:
                log.warning("service %s: %s", service.id, exc)
            except ApiException as exc:
                if exc.status == 409:
                    log.info("service %s: %s; reading again", service.id, api.describe(exc))
                else:
                    log.warning("service %s: %s; trying again", service.id, api.describe(exc))
            except api.TRANSPORT_ERRORS as exc:
                log.warning("service %s: the API is out of reach (%s); trying again", service.id, api.describe(exc))
            except Exception:  # noqa: BLE001 - reconciling must outlive any one failure
                log.exception("service %s: reconciling failed; trying again", service.id)
            service.wake.set()
            await backoff.wait()

    async def _reconcile(self, service: _Service) -> None:
        deployment = await self._converge(service, "Deployment", service.deployment,
                                          self.apps.read_namespaced_deployment, self.apps.create_namespaced_deployment,
                                          self.apps.replace_namespaced_deployment, keep=("replicas",))
        await self._converge(service, "Service", service.service, self.core.read_namespaced_service,
                             self.core.create_namespaced_service, self.core.replace_namespaced_service)
        await self._converge_replicas(service, deployment)
        self._set_problem(service, "api", None, f"the API accepted Deployment and Service {service.name}: resolved")

    async def _converge(self, service: _Service, kind: str, wanted: dict[str, Any], read: api.ApiCall,
                        create: api.ApiCall, replace: api.ApiCall, keep: tuple[str, ...] = ()) -> dict[str, Any]:
        """Create the object or replace what differs in it; the object as the API now holds it."""
        what = f"{kind} {service.name}"
        actual = await self._ask(service, "get", what, read, service.name, self.namespace, missing_ok=True)
        if actual is None:
            log.info("service %s: creating %s", service.id, what)
            return await self._ask(service, "create", what, create, self.namespace, wanted)  # type: ignore[return-value]
        owner = names.service_id_of(actual.get("metadata") or {})
        if owner != service.id:
            problem = f"{what} exists and is not this service's ({f'it is {owner}' if owner else 'not made by Vamp'})"
            self._set_problem(service, "api", problem, f"will not take over {what}")
            raise Refused(problem)
        skip = frozenset(f"spec.{field}" for field in keep)
        path = objects.drift(wanted, actual, skip=skip)
        if path is None or service.tolerated.get(kind) == (service.spec_hash, path):
            return actual
        log.info("service %s: %s differs from the spec at %s: replacing it", service.id, what, path)
        written = await self._ask(service, "update", what, replace, service.name, self.namespace,
                                  objects.replacement(actual, wanted, keep=keep))
        assert written is not None
        still = objects.drift(wanted, written, skip=skip)
        if still is not None:
            log.warning("service %s: the API keeps %s different at %s from what was written; not writing it "
                        "again for this spec", service.id, what, still)
            service.tolerated[kind] = (service.spec_hash, still)
        return written

    async def _converge_replicas(self, service: _Service, deployment: dict[str, Any]) -> None:
        current = (deployment.get("spec") or {}).get("replicas", 1)
        wanted = service.spec.instances
        if current < wanted:
            log.info("service %s: %d -> %d replicas", service.id, current, wanted)
            await self._set_replicas(service, wanted)
        elif current > wanted:
            await self._scale_down(service, current, wanted)
        else:
            for name in self._stranded(service):
                log.info("service %s: the ReplicaSet kept pod %s, drained to go: deleting it", service.id, name)
                await self._ask(service, "delete", f"Pod {name}", self.core.delete_namespaced_pod, name,
                                self.namespace, missing_ok=True)

    def _stranded(self, service: _Service) -> list[str]:
        """Pods drained to go that the ReplicaSet kept (it deleted another, one that turned unready meanwhile):
        still running while no more pods run than the spec asks for."""
        active = [name for name, pod in self._pods_of(service).items() if not _terminating(pod)]
        if len(active) > service.spec.instances:
            return []
        return [name for name in active if name in service.leaving and name in service.drained]

    async def _set_replicas(self, service: _Service, replicas: int) -> None:
        await self._ask(service, "patch", f"the scale of Deployment {service.name}",
                        self.apps.patch_namespaced_deployment_scale, service.name, self.namespace,
                        {"spec": {"replicas": replicas}}, _content_type=MERGE_PATCH)

    async def _scale_down(self, service: _Service, current: int, wanted: int) -> None:
        """Choose the pods to go, mark them, drain them, then drop the replicas."""
        pods = {name: pod for name, pod in self._pods_of(service).items() if not _terminating(pod)}
        chosen = [name for name in sorted(pods) if name in service.leaving]
        rest = sorted((name for name in pods if name not in service.leaving),
                      key=lambda name: (_created(pods[name]), service.first_seen.get(service.instance_id(name), 0.0)),
                      reverse=True)                                                     # the newest first
        rest.sort(key=lambda name: self._ready(service, name))                          # not ready first
        chosen += rest[:max(0, current - wanted - len(chosen))]
        log.info("service %s: %d -> %d replicas, stopping %s", service.id, current, wanted, ", ".join(chosen) or "-")
        marked = []
        for name in chosen:
            service.leaving.setdefault(name, "scale down")
            notes = (pods[name].get("metadata") or {}).get("annotations") or {}
            if notes.get(names.DELETION_COST) != LOWEST_COST:
                body = {"metadata": {"annotations": {names.DELETION_COST: LOWEST_COST}}}
                if await self._ask(service, "patch", f"Pod {name}", self.core.patch_namespaced_pod, name,
                                   self.namespace, body, missing_ok=True, _content_type=MERGE_PATCH) is None:
                    continue
            marked.append(name)
        self._refresh(service)
        await self._until(lambda: all(self._cost_seen(name) for name in marked), COST_SEEN_TIMEOUT)
        await self._drain(service, chosen)
        await self._set_replicas(service, wanted)

    async def _drain(self, service: _Service, pods: list[str]) -> None:
        """Await before_stop for each of `pods` not drained yet (together)."""
        waiting = [(name, service.instances.get(service.instance_id(name))) for name in pods
                   if name not in service.drained]
        if self.before_stop is not None:
            results = await asyncio.gather(*(self.before_stop(instance) for _, instance in waiting
                                             if instance is not None), return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    log.error("before_stop failed for an instance of %s; stopping it anyway", service.id,
                              exc_info=result)
        service.drained.update(name for name, _ in waiting)

    async def _take_down(self, service: _Service) -> bool:
        """Drain every instance, delete both objects, and once the pods are gone forget the service (True), or
        start it afresh when it was deployed again meanwhile (False)."""
        for instance in service.instances.values():
            service.leaving.setdefault(instance.id.rpartition("#")[2], "undeploy")
        self._refresh(service)
        await self._drain(service, list(service.leaving))
        for kind, delete in (("Deployment", self.apps.delete_namespaced_deployment),
                             ("Service", self.core.delete_namespaced_service)):
            log.info("service %s: deleting %s %s", service.id, kind, service.name)
            await self._ask(service, "delete", f"{kind} {service.name}", delete, service.name, self.namespace,
                            body=DELETE_OPTIONS, propagation_policy="Background", missing_ok=True)
        deadline = time.monotonic() + GONE_TIMEOUT
        while service.instances and time.monotonic() < deadline:
            service.wake.clear()
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    await service.wake.wait()
            except TimeoutError:
                break
        for instance in service.instances.values():
            log.warning("service %s: instance %s still there %gs after the undeploy; forgetting it", service.id,
                        instance.id, GONE_TIMEOUT)
            self.subscribers.publish(InstanceEvent(dataclasses.replace(instance, state="stopped"), instance.state,
                                     "service undeployed"))
        service.instances.clear()
        service.leaving.clear()
        service.drained.clear()
        if service.redeploy is not None:
            log.info("service %s: undeployed, and deployed again", service.id)
            service.undeploying = False
            service.set_spec(service.redeploy)
            service.redeploy = None
            service.wake.set()
            return False
        if self._services.get(service.id) is service:
            del self._services[service.id]
        for task in service.tasks:
            if task is not asyncio.current_task():
                task.cancel()
        log.info("service %s: undeployed", service.id)
        return True

    async def _ask(self, service: _Service, verb: str, what: str, method: api.ApiCall, *args: Any,
                   missing_ok: bool = False, **kwargs: Any) -> dict[str, Any] | None:
        """One call for the service; a refusal (not a passing trouble) becomes the service's problem."""
        try:
            return await api.call(method, *args, **kwargs)
        except ApiException as exc:
            if exc.status == 404 and missing_ok:
                return None
            if not api.transient(exc):
                self._set_problem(service, "api", api.describe(exc), f"the API refused to {verb} {what}")
            raise

    # -- instances ---------------------------------------------------------------------------------------
    def _pods_of(self, service: _Service) -> Objects:
        return {name: pod for name, pod in self._pods.objects.items()
                if all(((pod.get("metadata") or {}).get("labels") or {}).get(key) == value
                       for key, value in service.labels.items())}

    def _ready(self, service: _Service, pod: str) -> bool:
        instance = service.instances.get(service.instance_id(pod))
        return instance is not None and instance.state == "ready"

    def _cost_seen(self, pod: str) -> bool:
        found = self._pods.objects.get(pod)
        return found is None or ((found.get("metadata") or {}).get("annotations") or {}).get(
            names.DELETION_COST) == LOWEST_COST

    async def _until(self, condition: Callable[[], bool], timeout: float) -> None:
        """Wait until `condition` holds after a change of the pods, `timeout` seconds at most."""
        deadline = time.monotonic() + timeout
        while not condition() and time.monotonic() < deadline:
            try:
                async with asyncio.timeout(deadline - time.monotonic()):
                    await self._pods_seen.wait()
            except TimeoutError:
                return

    def _endpoints(self, service: _Service) -> dict[str, tuple[dict[str, Any], dict[str, int]]]:
        """Each endpoint of the service's slices by pod name (its address without a pod), with the slice's ports
        by name; IPv4 slices first."""
        found: dict[str, tuple[dict[str, Any], dict[str, int]]] = {}
        slices = sorted(service.slices.values(), key=lambda s: (s.get("addressType") != "IPv4", s["metadata"]["name"]))
        for piece in slices:
            if piece.get("addressType") not in ("IPv4", "IPv6"):
                continue
            ports = {port.get("name") or "": port["port"] for port in piece.get("ports") or () if port.get("port")}
            for endpoint in piece.get("endpoints") or ():
                addresses = endpoint.get("addresses") or []
                if not addresses:
                    continue
                ref = endpoint.get("targetRef") or {}
                key = ref["name"] if ref.get("name") and ref.get("kind", "Pod") == "Pod" else addresses[0]
                found.setdefault(key, (endpoint, ports))
        return found

    def _refresh(self, service: _Service) -> None:
        """Work out the service's instances from its pods and endpoints; an event for each that changed."""
        if not service.slices_listed:
            return                                 # a ready pod would show as starting until they are
        pods = self._pods_of(service)
        endpoints = self._endpoints(service)
        for name in [name for name in service.troubles if name not in pods]:
            del service.troubles[name]
        for name in pods:
            if (trouble := _trouble(pods[name])) is not None:
                service.troubles[name] = trouble
        current: dict[str, Instance] = {}
        reasons: dict[str, str] = {}
        for key in sorted(pods.keys() | endpoints.keys()):
            pod, found = pods.get(key), endpoints.get(key)
            if found is None and pod is not None and (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                continue
            instance, reason = self._instance(service, key, pod, found)
            current[instance.id] = instance
            reasons[instance.id] = reason
        self._update_pod_problem(service)
        previous, service.instances = service.instances, current
        for identity, instance in previous.items():
            if identity not in current:
                service.first_seen.pop(identity, None)
                self.subscribers.publish(InstanceEvent(dataclasses.replace(instance, state="stopped"),
                                                       instance.state, "gone"))
        for identity, instance in current.items():
            before = previous.get(identity)
            if before is None or (before.state, before.failure, before.failures) != (
                    instance.state, instance.failure, instance.failures):
                self.subscribers.publish(InstanceEvent(instance, before.state if before else None, reasons[identity]))
        for name in [name for name in service.leaving if service.instance_id(name) not in current]:
            del service.leaving[name]
            service.drained.discard(name)

        if service.undeploying:
            service.wake.set()

    def _instance(self, service: _Service, key: str, pod: dict[str, Any] | None,
                  found: tuple[dict[str, Any], dict[str, int]] | None) -> tuple[Instance, str]:
        identity = service.instance_id(key)
        metadata = (pod or {}).get("metadata") or {}
        status = (pod or {}).get("status") or {}
        endpoint, slice_ports = found if found is not None else ({}, {})
        conditions = endpoint.get("conditions") or {}
        trouble = service.troubles.get(key)
        failure = f"{trouble[0]}: {trouble[1]}" if trouble and trouble[1] else (trouble[0] if trouble else None)
        if key in service.leaving:
            state, reason = "stopping", service.leaving[key]
        elif metadata.get("deletionTimestamp"):
            state, reason = "stopping", "pod terminating"
        elif found is not None and conditions.get("terminating") is True:
            state, reason = "stopping", "endpoint terminating"
        elif found is not None and conditions.get("ready") is not False:
            state, reason = "ready", "endpoint ready"
            if service.troubles.pop(key, None) is not None:
                trouble = failure = None          # ready again: what it failed with is over
        else:
            state = "starting"
            reason = failure or ("endpoint not ready" if found is not None else "pod has no endpoint yet")
        addresses = endpoint.get("addresses") or []
        host = addresses[0] if addresses else status.get("podIP") or ""
        ports = {breed: slice_ports.get(name, service.spec.port_numbers.get(breed, 0))
                 for breed, name in service.ports.items()}
        statuses = status.get("containerStatuses") or []
        restarts = sum(int(entry.get("restartCount") or 0) for entry in statuses)
        seen = service.first_seen.setdefault(identity, time.time())
        started = _epoch(status.get("startTime")) or _epoch(metadata.get("creationTimestamp")) or seen
        pod_hash = (metadata.get("annotations") or {}).get(names.SPEC_HASH_KEY)
        instance = Instance(id=identity, service=service.id, host=host, ports=ports, state=state, pid=None,
                            restarts=restarts, started_at=started, failures=max(1, restarts) if trouble else 0,
                            failure=failure, outdated=pod_hash is not None and pod_hash != service.spec_hash)
        return instance, reason

    def _update_pod_problem(self, service: _Service) -> None:
        """The service's problem while one of its pods cannot run (from the first sign until the pod is ready or
        gone: a crash-looping container runs for a moment between its back-offs): reported once, and once when it
        is over."""
        trouble = next(((name, service.troubles[name]) for name in sorted(service.troubles)
                        if name not in service.leaving), None)
        key = (trouble[0], trouble[1][0]) if trouble else None
        if key == service.pod_trouble:
            return
        service.pod_trouble = key
        if trouble is None:
            self._set_problem(service, "pods", None, "the pods' problem is resolved")
            return
        name, (reason, message) = trouble
        self._set_problem(service, "pods", f"pod {name}: {reason}: {message}" if message else f"pod {name}: {reason}",
                          f"pod {name} cannot run")

    # -- what the watches say ----------------------------------------------------------------------------
    def _deployments_changed(self, found: Objects) -> None:
        for service in self._services.values():
            actual = found.get(service.name)
            if service.undeploying:
                continue
            if actual is None or (actual.get("spec") or {}).get("replicas") != service.spec.instances:
                service.wake.set()
                continue
            path = objects.drift(service.deployment, actual, skip=frozenset({"spec.replicas"}))
            if path is not None and service.tolerated.get("Deployment") != (service.spec_hash, path):
                service.wake.set()

    def _services_changed(self, found: Objects) -> None:
        for service in self._services.values():
            actual = found.get(service.name)
            if service.undeploying:
                continue
            path = objects.drift(service.service, actual) if actual is not None else "."
            if path is not None and service.tolerated.get("Service") != (service.spec_hash, path):
                service.wake.set()

    def _pods_changed(self, found: Objects) -> None:
        for service in list(self._services.values()):
            self._refresh(service)
        self._pods_seen.set()
        self._pods_seen = asyncio.Event()

    def _slices_changed(self, service: _Service, found: Objects) -> None:
        service.slices = found
        service.slices_listed = True
        if self._services.get(service.id) is service:
            self._refresh(service)

    def _slices_problem(self, service: _Service, problem: str | None) -> None:
        self._set_problem(service, "endpointslices", problem,
                          f"the API refused to watch EndpointSlices of {service.name}" if problem
                          else f"watching EndpointSlices of {service.name} again: resolved")

    def _watch_problem(self, what: str, problem: str | None) -> None:
        before = {identity: self.problem(identity) for identity in self._services}
        if problem is None:
            self._watch_problems.pop(what, None)
        else:
            self._watch_problems[what] = problem
        reason = f"the API refused to watch {what}" if problem else f"watching {what} again: resolved"
        for identity, was in before.items():
            now = self.problem(identity)
            if now != was:
                self.subscribers.publish(ServiceEvent(identity, now, reason))

    def _set_problem(self, service: _Service, kind: str, problem: str | None, reason: str) -> None:
        before = self.problem(service.id)
        if problem is None:
            service.problems.pop(kind, None)
        else:
            service.problems[kind] = problem
        now = self.problem(service.id)
        if now != before and self._services.get(service.id) is service:
            self.subscribers.publish(ServiceEvent(service.id, now, reason))

    # -- helpers -----------------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the Kubernetes orchestrator is closed")

    def _service(self, service_id: str) -> _Service:
        service = self._services.get(service_id)
        if service is None or service.undeploying:
            raise KeyError(f"no service {service_id!r}")
        return service



def _terminating(pod: dict[str, Any]) -> bool:
    return bool((pod.get("metadata") or {}).get("deletionTimestamp"))


def _created(pod: dict[str, Any]) -> str:
    return (pod.get("metadata") or {}).get("creationTimestamp") or ""


def _epoch(stamp: Any) -> float | None:
    """An API timestamp ("2024-05-01T12:00:00Z") as epoch seconds (None: none or not one)."""
    if not isinstance(stamp, str):
        return None
    try:
        return datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return None


def _trouble(pod: dict[str, Any]) -> tuple[str, str] | None:
    """(reason, message) when the pod cannot run: a container waiting on a problem, or no node to run on."""
    status = pod.get("status") or {}
    for entry in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        waiting = (entry.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in POD_PROBLEMS:
            return waiting["reason"], waiting.get("message") or ""
    if status.get("phase") == "Pending":
        for condition in status.get("conditions") or ():
            if (condition.get("type"), condition.get("status"), condition.get("reason")) == (
                    "PodScheduled", "False", "Unschedulable"):
                return "Unschedulable", condition.get("message") or ""
    return None
