"""The kubelet of the simulated cluster's one node ("node-1"): for each pod bound to it, "runs" every
container by serving Vamp's demo service (control.demo.sava) in-process on the pod's own loopback IP and each
containerPort (version: the image's tag, instance: the pod's name, misbehaviour: SAVA_ERROR_RATE and
SAVA_DELAY_MS from the container's env), and reports what a real kubelet reports in the pod's status: phase,
podIP, conditions (PodScheduled, Initialized, ContainersReady, Ready), containerStatuses with their states
(waiting ErrImagePull/ImagePullBackOff/CrashLoopBackOff, running, terminated) and restart counts. Readiness
follows an httpGet readinessProbe when the container has one (every periodSeconds, capped at 0.5 s), else the
container being up. A pod being deleted keeps serving for the grace period (here `termination_seconds`), then
its servers stop and the pod object goes."""
from __future__ import annotations

import asyncio
import copy
import datetime
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from control.demo.sava import misbehaviour_from, start_server

from .resources import image_tag

NODE = "node-1"
NODE_IP = "127.0.0.1"
PROBE_PERIOD_CAP = 0.5            # seconds: probes run at least this often, so tests stay quick
CRASH_INTERVAL = 0.3              # seconds between a crash-looping container's restarts
PULL_RETRY = 0.2                  # seconds from ErrImagePull to ImagePullBackOff


def timestamp(moment: float | None = None) -> str:
    when = datetime.datetime.fromtimestamp(moment if moment is not None else time.time(), datetime.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _hex(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()


@dataclass
class ContainerRun:
    """One container's state as the kubelet reports it."""
    spec: dict[str, Any]
    state: dict[str, Any] = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: dict[str, Any] = field(default_factory=dict)
    restarts: int = 0
    started: bool = False
    probe_ready: bool = False
    container_id: str = ""

    def status(self, ready: bool) -> dict[str, Any]:
        image = self.spec.get("image", "")
        entry: dict[str, Any] = {"name": self.spec["name"], "image": image, "imageID": "", "ready": ready,
                                 "restartCount": self.restarts, "started": self.started,
                                 "state": copy.deepcopy(self.state), "lastState": copy.deepcopy(self.last_state)}
        if self.container_id:
            entry["containerID"] = self.container_id
            repository = image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
            entry["imageID"] = f"{repository}@sha256:{_hex(image)}"
        return entry


class PodRun:
    """A pod the kubelet runs: its IP, its containers' servers, the task that drives them."""

    def __init__(self, kubelet: Kubelet, pod: dict[str, Any], ip: str) -> None:
        self.kubelet = kubelet
        self.namespace = pod["metadata"]["namespace"]
        self.name = pod["metadata"]["name"]
        self.uid = pod["metadata"]["uid"]
        self.deployment = kubelet.owner_of(pod)
        self.ip = ip
        self.containers = [ContainerRun(spec) for spec in pod["spec"].get("containers") or []]
        self.servers: list[asyncio.AbstractServer] = []
        self.started_at = time.time()
        self.ready_since: float | None = None
        self.stopped = False
        self.task: asyncio.Task[None] | None = None
        self.transitions: dict[str, str] = {}

    @property
    def ports(self) -> list[int]:
        return [port["containerPort"] for container in self.containers for port in container.spec.get("ports") or []]

    def ready(self) -> bool:
        return bool(self.containers) and all(self._container_ready(container) for container in self.containers)

    def _container_ready(self, container: ContainerRun) -> bool:
        return "running" in container.state and container.probe_ready and not self.kubelet.held(self.deployment)

    async def run(self) -> None:
        try:
            for container in self.containers:
                if self.kubelet.pull_fails(container.spec.get("image", "")):
                    await self._pull_backoff(container)
            while self.kubelet.crash_looping(self.deployment) and not self.stopped:
                await self._crash_once()
            failure = await self._start_servers()
            while failure is not None and not self.stopped:
                await self._crash_once(failure)
                failure = None if self.kubelet.crash_looping(self.deployment) else await self._start_servers()
            await self._probe_forever()
        except asyncio.CancelledError:
            raise
        finally:
            self.close_servers()

    async def _pull_backoff(self, container: ContainerRun) -> None:
        image = container.spec.get("image", "")
        failure = (f'rpc error: code = NotFound desc = failed to pull and unpack image "{image}": failed to resolve '
                   f'reference "{image}": {image}: not found')
        container.state = {"waiting": {"reason": "ErrImagePull", "message": failure}}
        self.kubelet.report(self)
        self.kubelet.event(self, "Failed", f'Failed to pull image "{image}": {failure}', container)
        self.kubelet.event(self, "Failed", "Error: ErrImagePull", container)
        await asyncio.sleep(PULL_RETRY)
        while self.kubelet.pull_fails(image) and not self.stopped:
            container.state = {"waiting": {"reason": "ImagePullBackOff", "message": f'Back-off pulling image '
                                                                                   f'"{image}"'}}
            self.kubelet.report(self)
            self.kubelet.event(self, "BackOff", f'Back-off pulling image "{image}"', container, kind="Normal")
            self.kubelet.event(self, "Failed", "Error: ImagePullBackOff", container)
            await asyncio.sleep(CRASH_INTERVAL)

    async def _crash_once(self, message: str = "") -> None:
        first = self.containers[0]
        now = timestamp()
        for container in self.containers:
            container.container_id = f"containerd://{_hex(self.uid, container.spec['name'], str(container.restarts))}"
            container.started = False
            container.probe_ready = False
            container.last_state = {"terminated": {"exitCode": 1 if not message else 2, "reason": "Error",
                                                   "startedAt": now, "finishedAt": now,
                                                   "containerID": container.container_id}}
            if message:
                container.last_state["terminated"]["message"] = message
            container.state = {"waiting": {"reason": "CrashLoopBackOff", "message": (
                f"back-off {10 * 2 ** min(container.restarts, 5)}s restarting failed "
                f"container={container.spec['name']} pod={self.name}_{self.namespace}({self.uid})")}}
            container.restarts += 1
        self.kubelet.report(self)
        self.kubelet.event(self, "BackOff", f"Back-off restarting failed container {first.spec['name']} in pod "
                                            f"{self.name}_{self.namespace}({self.uid})", first)
        await asyncio.sleep(CRASH_INTERVAL)

    async def _start_servers(self) -> str | None:
        """Listen on every containerPort; the reason a container cannot start, or None."""
        if self.stopped:
            return None
        for container in self.containers:
            environment = {variable["name"]: variable["value"] for variable in container.spec.get("env") or []
                           if isinstance(variable.get("value"), str)}
            try:
                misbehaviour = misbehaviour_from(environment)
            except ValueError as error:
                self.close_servers()
                return str(error)
            version = image_tag(container.spec.get("image", "")) or "latest"
            for port in container.spec.get("ports") or []:
                if port.get("protocol", "TCP") != "TCP":
                    continue
                try:
                    self.servers.append(await start_server(self.ip, port["containerPort"], version, self.name,
                                                           misbehaviour))
                except OSError as error:
                    self.close_servers()
                    return f"listen {self.ip}:{port['containerPort']}: {error.strerror}"
                if self.stopped:            # stopped while it started listening
                    self.close_servers()
                    return None
            container.container_id = f"containerd://{_hex(self.uid, container.spec['name'], str(container.restarts))}"
            container.started = True
            container.state = {"running": {"startedAt": timestamp()}}
            container.probe_ready = "readinessProbe" not in container.spec
        self.kubelet.report(self)
        return None

    async def _probe_forever(self) -> None:
        failures: dict[str, int] = {}
        successes: dict[str, int] = {}
        while not self.stopped:
            period = PROBE_PERIOD_CAP
            for container in self.containers:
                probe = container.spec.get("readinessProbe")
                if not probe:
                    continue
                period = min(period, float(probe.get("periodSeconds", 10)))
                name = container.spec["name"]
                if await self._probe(container, probe):
                    failures[name] = 0
                    successes[name] = successes.get(name, 0) + 1
                    if successes[name] >= probe.get("successThreshold", 1):
                        container.probe_ready = True
                else:
                    successes[name] = 0
                    failures[name] = failures.get(name, 0) + 1
                    if failures[name] >= probe.get("failureThreshold", 3) or not container.probe_ready:
                        container.probe_ready = False
            self.kubelet.report(self)
            if self.kubelet.crash_looping(self.deployment):
                self.close_servers()
                while self.kubelet.crash_looping(self.deployment) and not self.stopped:
                    await self._crash_once()
                if await self._start_servers() is not None:
                    continue
            await asyncio.sleep(max(0.05, period))

    async def _probe(self, container: ContainerRun, probe: dict[str, Any]) -> bool:
        action = probe.get("httpGet")
        if not isinstance(action, dict):
            return "running" in container.state         # exec and tcpSocket probes: up is ready
        port = action.get("port")
        if isinstance(port, str):
            port = next((p["containerPort"] for p in container.spec.get("ports") or [] if p.get("name") == port),
                        None)
        if not isinstance(port, int):
            return False
        timeout = min(float(probe.get("timeoutSeconds", 1)), PROBE_PERIOD_CAP)
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(self.ip, port), timeout)
        except (OSError, TimeoutError):
            return False
        try:
            writer.write(f"GET {action.get('path', '/')} HTTP/1.1\r\nHost: {self.ip}:{port}\r\n"
                         "User-Agent: kube-probe/1.31\r\nConnection: close\r\n\r\n".encode())
            line = await asyncio.wait_for(reader.readline(), timeout)
            parts = line.split()
            return len(parts) >= 2 and parts[1].isdigit() and 200 <= int(parts[1]) < 400
        except (OSError, TimeoutError):
            return False
        finally:
            writer.close()

    def close_servers(self) -> None:
        for server in self.servers:
            server.close()
        self.servers.clear()

    def status(self, pod: dict[str, Any]) -> dict[str, Any]:
        """The pod's status as this kubelet reports it."""
        old = pod.get("status") or {}
        running = all("running" in container.state for container in self.containers)
        waiting_pull = any(container.state.get("waiting", {}).get("reason") in (
            "ErrImagePull", "ImagePullBackOff", "ContainerCreating") and not container.restarts
            for container in self.containers)
        ready = self.ready()
        if ready and self.ready_since is None:
            self.ready_since = time.time()
        elif not ready:
            self.ready_since = None
        unready = [c.spec["name"] for c in self.containers if not self._container_ready(c)]

        def condition(kind: str, true: bool, reason: str = "", message: str = "") -> dict[str, Any]:
            status = "True" if true else "False"
            key = f"{kind}={status}"
            if self.transitions.get(kind, "").split("@")[0] != key:
                self.transitions[kind] = f"{key}@{timestamp()}"
            entry: dict[str, Any] = {"type": kind, "status": status, "lastProbeTime": None,
                                     "lastTransitionTime": self.transitions[kind].split("@")[1]}
            if not true and reason:
                entry["reason"], entry["message"] = reason, message
            return entry

        not_ready = f"containers with unready status: [{' '.join(unready)}]"
        status: dict[str, Any] = {
            "phase": "Pending" if waiting_pull and not running else "Running",
            "conditions": [condition("PodReadyToStartContainers", True), condition("Initialized", True),
                           condition("Ready", ready, "ContainersNotReady", not_ready),
                           condition("ContainersReady", ready, "ContainersNotReady", not_ready),
                           condition("PodScheduled", True)],
            "hostIP": NODE_IP, "hostIPs": [{"ip": NODE_IP}],
            "podIP": self.ip, "podIPs": [{"ip": self.ip}],
            "startTime": timestamp(self.started_at),
            "containerStatuses": sorted((c.status(self._container_ready(c)) for c in self.containers),
                                        key=lambda entry: entry["name"]),
            "qosClass": old.get("qosClass", "BestEffort"),
        }
        return status


@dataclass
class Kubelet:
    """The node agent: starts and stops PodRuns; the cluster tells it the faults in force."""
    held: Callable[[str | None], bool]
    crash_looping: Callable[[str | None], bool]
    pull_fails: Callable[[str], bool]
    owner_of: Callable[[dict[str, Any]], str | None]
    report: Callable[[PodRun], None]
    event: Callable[..., None]
    runs: dict[tuple[str, str], PodRun] = field(default_factory=dict)

    def start(self, pod: dict[str, Any], ip: str) -> PodRun:
        run = PodRun(self, pod, ip)
        self.runs[(run.namespace, run.name)] = run
        run.task = asyncio.get_running_loop().create_task(run.run(), name=f"kubelet {run.name}")
        return run

    def stop(self, namespace: str, name: str) -> PodRun | None:
        run = self.runs.pop((namespace, name), None)
        if run is not None:
            run.stopped = True
            if run.task is not None:
                run.task.cancel()
            run.close_servers()
        return run

    def stop_all(self) -> None:
        for namespace, name in list(self.runs):
            self.stop(namespace, name)
