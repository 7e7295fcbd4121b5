"""SimulatedCluster: what a real cluster's controllers and node do, played on a FakeKubernetes in its thread
and through its API, so that every effect is an object change a client sees (and watches): the Deployment
controller (deployments.py), the scheduler (binds pods to "node-1", or leaves them Pending with PodScheduled
False/Unschedulable and a FailedScheduling event), the garbage collector (pods of a deleted Deployment go),
the kubelet (kubelet.py: each pod gets a loopback IP of its own, 127.0.X.Y with X random per cluster, and its
containers serve Vamp's demo service there), and the EndpointSlice controller (endpointslices.py).
Faults a test asks for (hold, crash_loop, image_pull_fails, unschedulable) show as the real statuses and
events do."""
from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from typing import Any

from .deployments import REVISION, DeploymentController, replica_set_uid, template_hash
from .endpointslices import MANAGED_BY, SERVICE_NAME, desired_slice, same_content
from .errors import ApiError
from .kubelet import NODE, Kubelet, PodRun, timestamp
from .server import FakeKubernetes

log = logging.getLogger(__name__)
TICK = 0.1                  # seconds between passes when nothing changes (timers: deadlines, terminations)
EVENT_REPEAT = 1.0          # seconds before the same event is counted again


def owner_of(pod: dict[str, Any]) -> str | None:
    """The Deployment a pod belongs to, through its ReplicaSet `<deployment>-<hash>`."""
    for owner in pod["metadata"].get("ownerReferences") or []:
        if owner.get("kind") == "ReplicaSet" and owner.get("controller"):
            return str(owner["name"]).rsplit("-", 1)[0]
    return None


class SimulatedCluster:
    """What a real cluster's controllers and kubelet do, played on a FakeKubernetes (in its thread): the
    Deployment controller with its ReplicaSets folded in, the scheduler, the kubelet running each pod's
    container, and the EndpointSlice controller."""

    def __init__(self, api: FakeKubernetes, *, termination_seconds: float = 0.3) -> None:
        self.api = api
        self.termination_seconds = termination_seconds
        self.subnet = random.randint(2, 250)
        self._addresses = 0
        self._faults = threading.Lock()
        self._held: set[str] = set()
        self._crashing: set[str] = set()
        self._pull_failures: set[str] = set()
        self._unschedulable: dict[str, str] = {}
        self._running = False
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._terminations: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._events: dict[tuple[str, str, str], tuple[str, float]] = {}
        self.kubelet = Kubelet(held=self._is_held, crash_looping=self._is_crashing, pull_fails=self._pull_fails,
                               owner_of=owner_of, report=self._report, event=self._pod_event)
        self.deployments = DeploymentController(
            create_pod=lambda namespace, pod: self.api.create("pods", namespace, pod),
            delete_pod=self._delete_pod, write_status=self._write_deployment_status,
            ready_since=self._ready_since, clock=time.monotonic)

    # lifecycle

    def start(self) -> None:
        self.api.run(self._start())

    def stop(self) -> None:
        """Stop every container it runs (the objects stay in the API server)."""
        if self._running:
            self.api.run(self._stop())

    async def _start(self) -> None:
        self._wake = asyncio.Event()
        self._running = True
        self.api.on_change(self._changed)
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="simulated cluster")

    async def _stop(self) -> None:
        self._running = False
        if self._wake is not None:
            self._wake.set()
        if self._task is not None:
            await self._task            # it ends at its next turn (no cancel: wait_for may swallow one)
        for handle in self._terminations.values():
            handle.cancel()
        self._terminations.clear()
        self.kubelet.stop_all()

    def _changed(self, kind: str, resource: str, obj: dict[str, Any]) -> None:
        if self._running and resource != "events" and self._wake is not None:
            self._wake.set()

    def _poke(self) -> None:
        if self._running and self._wake is not None:
            self.api.loop.call_soon_threadsafe(self._wake.set)

    async def _loop(self) -> None:
        assert self._wake is not None
        while self._running:
            self._wake.clear()
            try:
                self._reconcile()
            except Exception:           # a controller's bug must not stop the cluster: log it, go on
                log.exception("simulated cluster: a reconcile pass failed")
            try:
                await asyncio.wait_for(self._wake.wait(), TICK)
            except TimeoutError:
                pass

    # what tests read

    def pods(self, namespace: str, deployment: str | None = None) -> list[dict[str, Any]]:
        pods = self.api.list("pods", namespace)
        return [pod for pod in pods if deployment is None or owner_of(pod) == deployment]

    def address(self, pod: str) -> tuple[str, int]:
        """The pod's IP and its first container port."""
        for obj in self.api.storage.items("pods", None):
            if obj["metadata"]["name"] == pod:
                ip = (obj.get("status") or {}).get("podIP")
                ports = [port["containerPort"] for container in obj["spec"].get("containers") or []
                         for port in container.get("ports") or []]
                if not ip or not ports:
                    raise LookupError(f"pod {pod} has no IP or no container port yet")
                return ip, ports[0]
        raise LookupError(f"no pod {pod}")

    # faults

    def hold(self, deployment: str) -> None:
        """Its pods run but never turn ready (readiness fails)."""
        with self._faults:
            self._held.add(deployment)
        self._poke()

    def release(self, deployment: str) -> None:
        with self._faults:
            self._held.discard(deployment)
        self._poke()

    def crash_loop(self, deployment: str) -> None:
        """Its containers keep exiting: CrashLoopBackOff, restartCount rising, not ready."""
        with self._faults:
            self._crashing.add(deployment)
        self._poke()

    def image_pull_fails(self, image: str) -> None:
        """Pods with that image wait in ImagePullBackOff (ErrImagePull first)."""
        with self._faults:
            self._pull_failures.add(image)
        self._poke()

    def unschedulable(self, deployment: str, message: str = "0/1 nodes are available: 1 Insufficient cpu.") -> None:
        """New pods stay Pending, condition PodScheduled False reason Unschedulable."""
        with self._faults:
            self._unschedulable[deployment] = message
        self._poke()

    def heal(self, deployment: str) -> None:
        """Undo crash_loop and unschedulable for it."""
        with self._faults:
            self._crashing.discard(deployment)
            self._unschedulable.pop(deployment, None)
        self._poke()

    def _is_held(self, deployment: str | None) -> bool:
        with self._faults:
            return deployment in self._held

    def _is_crashing(self, deployment: str | None) -> bool:
        with self._faults:
            return deployment in self._crashing

    def _pull_fails(self, image: str) -> bool:
        with self._faults:
            return image in self._pull_failures

    def _unschedulable_message(self, deployment: str | None) -> str | None:
        with self._faults:
            return self._unschedulable.get(deployment) if deployment is not None else None

    # one pass of every controller

    def _reconcile(self) -> None:
        storage = self.api.storage
        self._run_deployments()
        for pod in storage.items("pods", None):
            if not pod["spec"].get("nodeName") and "deletionTimestamp" not in pod["metadata"]:
                self._schedule(pod)
        self._run_kubelet()
        self._run_endpoint_slices()

    def _run_deployments(self) -> None:
        storage = self.api.storage
        deployments = {(d["metadata"]["namespace"], d["metadata"]["name"]): d
                       for d in storage.items("deployments", None)}
        owned: dict[tuple[str, str], list[dict[str, Any]]] = {key: [] for key in deployments}
        for pod in storage.items("pods", None):
            owner = owner_of(pod)
            if owner is None:
                continue
            deployment = deployments.get((pod["metadata"]["namespace"], owner))
            reference = pod["metadata"]["ownerReferences"][0]
            pod_hash = pod["metadata"].get("labels", {}).get("pod-template-hash", "")
            if deployment is None or reference.get("uid") != replica_set_uid(deployment, pod_hash):
                if "deletionTimestamp" not in pod["metadata"]:
                    self._delete_pod(pod)           # the garbage collector: its owner is gone
                continue
            owned[(pod["metadata"]["namespace"], owner)].append(pod)
        for key, deployment in deployments.items():
            if "deletionTimestamp" in deployment["metadata"]:
                self._finalize(deployment, owned[key])
            else:
                self.deployments.reconcile(deployment, owned[key])

    def _finalize(self, deployment: dict[str, Any], owned: list[dict[str, Any]]) -> None:
        """The garbage collector's part in a Foreground (dependents first) or Orphan (dependents kept)
        deletion: its finalizer goes once that is done, and the Deployment with it."""
        finalizers = list(deployment["metadata"].get("finalizers") or [])
        namespace = deployment["metadata"]["namespace"]
        if "orphan" in finalizers:
            for pod in owned:
                with self.api.storage.lock:
                    current = self.api.storage.read("pods", namespace, pod["metadata"]["name"])
                    if current is not None:
                        metadata = {k: v for k, v in current["metadata"].items() if k != "ownerReferences"}
                        self.api.update("pods", namespace, {**current, "metadata": metadata})
            finalizers.remove("orphan")
        elif "foregroundDeletion" in finalizers:
            for pod in owned:
                if "deletionTimestamp" not in pod["metadata"]:
                    self._delete_pod(pod)
            if owned:
                return
            finalizers.remove("foregroundDeletion")
        else:
            return
        with self.api.storage.lock:
            current = self.api.storage.read("deployments", namespace, deployment["metadata"]["name"])
            if current is not None and current["metadata"]["uid"] == deployment["metadata"]["uid"]:
                self.api.update("deployments", namespace, {**current, "metadata": {
                    **current["metadata"], "finalizers": finalizers}})

    def _schedule(self, pod: dict[str, Any]) -> None:
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        message = self._unschedulable_message(owner_of(pod))
        with self.api.storage.lock:
            current = self.api.storage.read("pods", namespace, name)
            if current is None or current["metadata"]["uid"] != pod["metadata"]["uid"]:
                return
            updated = dict(current)
            status = dict(current.get("status") or {})
            if message is not None:
                conditions = status.get("conditions") or []
                wanted = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}
                if not any(all(c.get(k) == v for k, v in wanted.items()) for c in conditions):
                    status["conditions"] = [{**wanted, "lastProbeTime": None, "lastTransitionTime": timestamp()}]
                    updated["status"] = status
                    self.api.update("pods", namespace, updated)
                self._event(current, "FailedScheduling", message, component="default-scheduler")
                return
            updated["spec"] = {**current["spec"], "nodeName": NODE}
            status["conditions"] = [{"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                                     "lastTransitionTime": timestamp()}]
            updated["status"] = status
            self.api.update("pods", namespace, updated)

    def _run_kubelet(self) -> None:
        present = set()
        for pod in self.api.storage.items("pods", None):
            if pod["spec"].get("nodeName") != NODE:
                continue
            key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
            present.add(key)
            run = self.kubelet.runs.get(key)
            if run is not None and run.uid != pod["metadata"]["uid"]:
                self.kubelet.stop(*key)
                run = None
            if run is None and "deletionTimestamp" not in pod["metadata"]:
                run = self.kubelet.start(pod, self._allocate_address())
            if "deletionTimestamp" in pod["metadata"] and key not in self._terminations:
                self._terminations[key] = asyncio.get_running_loop().call_later(
                    self.termination_seconds, self._finish_termination, key, pod["metadata"]["uid"])
            if run is not None:
                self._report(run)
        for key in list(self.kubelet.runs):
            if key not in present:          # deleted at once by someone (grace 0)
                self.kubelet.stop(*key)

    def _finish_termination(self, key: tuple[str, str], uid: str) -> None:
        self._terminations.pop(key, None)
        self.kubelet.stop(*key)
        current = self.api.storage.read("pods", *key)
        if current is not None and current["metadata"]["uid"] == uid:
            self.api.delete("pods", key[0], key[1], grace_period_seconds=0)

    def _allocate_address(self) -> str:
        self._addresses += 1
        third = self.subnet + (self._addresses - 1) // 254
        return f"127.0.{third % 256}.{(self._addresses - 1) % 254 + 1}"

    def _report(self, run: PodRun) -> None:
        with self.api.storage.lock:
            current = self.api.storage.read("pods", run.namespace, run.name)
            if current is None or current["metadata"]["uid"] != run.uid:
                return
            status = run.status(current)
            if status != current.get("status"):
                self.api.update("pods", run.namespace, {**current, "status": status})

    def _ready_since(self, pod: dict[str, Any]) -> float | None:
        run = self.kubelet.runs.get((pod["metadata"]["namespace"], pod["metadata"]["name"]))
        return run.ready_since if run is not None else None

    def _delete_pod(self, pod: dict[str, Any]) -> None:
        self.api.delete("pods", pod["metadata"]["namespace"], pod["metadata"]["name"])

    def _write_deployment_status(self, deployment: dict[str, Any], status: dict[str, Any], revision: str) -> None:
        namespace, name = deployment["metadata"]["namespace"], deployment["metadata"]["name"]
        with self.api.storage.lock:
            current = self.api.storage.read("deployments", namespace, name)
            if current is None or current["metadata"]["uid"] != deployment["metadata"]["uid"]:
                return
            if current["metadata"].get("generation") != deployment["metadata"].get("generation"):
                return          # the spec moved on: the next pass writes the status of the new one
            annotations = {**(current["metadata"].get("annotations") or {}), REVISION: revision}
            self.api.update("deployments", namespace, {**current, "status": status, "metadata": {
                **current["metadata"], "annotations": annotations}})

    def _run_endpoint_slices(self) -> None:
        storage = self.api.storage
        services = {(s["metadata"]["namespace"], s["metadata"]["name"]): s for s in storage.items("services", None)}
        slices: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for endpoint_slice in storage.items("endpointslices", None):
            labels = endpoint_slice["metadata"].get("labels") or {}
            if labels.get(MANAGED_BY) == "endpointslice-controller.k8s.io" and SERVICE_NAME in labels:
                slices.setdefault((endpoint_slice["metadata"]["namespace"], labels[SERVICE_NAME]), []).append(
                    endpoint_slice)
        for key, service in services.items():
            if not service["spec"].get("selector"):
                continue
            desired = desired_slice(service, storage.items("pods", key[0]))
            existing = slices.pop(key, [])
            for extra in existing[1:]:
                self.api.delete("endpointslices", key[0], extra["metadata"]["name"])
            if not existing:
                self.api.create("endpointslices", key[0], desired)
            elif not same_content(existing[0], desired):
                desired["metadata"]["name"] = existing[0]["metadata"]["name"]
                self.api.update("endpointslices", key[0], {**existing[0], **desired, "metadata": {
                    **existing[0]["metadata"], "labels": desired["metadata"]["labels"],
                    "ownerReferences": desired["metadata"]["ownerReferences"]}})
        for (namespace, _), leftovers in slices.items():       # their Service is gone
            for endpoint_slice in leftovers:
                self.api.delete("endpointslices", namespace, endpoint_slice["metadata"]["name"])

    # events, as the kubelet and the scheduler record them (repeats counted, not repeated)

    def _pod_event(self, run: PodRun, reason: str, message: str, container: Any = None, kind: str = "Warning") -> None:
        pod = self.api.storage.read("pods", run.namespace, run.name)
        if pod is not None and pod["metadata"]["uid"] == run.uid:
            field_path = f"spec.containers{{{container.spec['name']}}}" if container is not None else None
            self._event(pod, reason, message, kind=kind, field_path=field_path)

    def _event(self, pod: dict[str, Any], reason: str, message: str, *, kind: str = "Warning",
               component: str = "kubelet", field_path: str | None = None) -> None:
        metadata = pod["metadata"]
        key = (metadata["uid"], reason, message)
        now = time.monotonic()
        known = self._events.get(key)
        if known is not None and now - known[1] < EVENT_REPEAT:
            return
        try:
            if known is not None:
                current = self.api.get("events", metadata["namespace"], known[0])
                if current is not None:
                    self.api.update("events", metadata["namespace"], {
                        **current, "count": current.get("count", 1) + 1, "lastTimestamp": timestamp()})
                    self._events[key] = (known[0], now)
                    return
            involved = {"kind": "Pod", "namespace": metadata["namespace"], "name": metadata["name"],
                        "uid": metadata["uid"], "apiVersion": "v1", "resourceVersion": metadata["resourceVersion"]}
            if field_path is not None:
                involved["fieldPath"] = field_path
            source = {"component": component, "host": NODE} if component == "kubelet" else {"component": component}
            name = f"{metadata['name']}.{time.time_ns():x}"
            self.api.create("events", metadata["namespace"], {
                "metadata": {"name": name}, "involvedObject": involved, "reason": reason, "message": message,
                "source": source, "firstTimestamp": timestamp(), "lastTimestamp": timestamp(), "count": 1,
                "type": kind, "eventTime": None, "reportingComponent": component,
                "reportingInstance": NODE if component == "kubelet" else ""})
            self._events[key] = (name, now)
        except ApiError:
            log.exception("simulated cluster: an event could not be recorded")


__all__ = ["SimulatedCluster", "owner_of", "template_hash"]
