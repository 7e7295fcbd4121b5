"""The orchestrator interface: what the control plane asks of any driver (local processes, Kubernetes).

A driver runs services (`ServiceSpec`), each as a number of instances (`Instance`), and reports every change of
an instance's state as an `InstanceEvent` to its subscribers, and what it has to say about a whole service (an
API that refuses it, a problem every instance shares) as a `ServiceEvent`. Instance states:

    starting   the process runs; no health check has passed yet (no traffic must reach it)
    ready      the health check passes (or, without one, its ports accept connections)
    unhealthy  the health check failed `failures` times in a row; the driver restarts it
    crashed    the process exited without being asked to; the driver restarts it after a back-off
    stopping   the driver is taking it away (scale-down, undeploy): drained first, then stopped
    stopped    gone; it no longer appears in `instances()`

Every method is safe to call from the event loop; none blocks it. Drivers: `control.orchestrator.local` (the
embedded default, processes on this machine) and `control.orchestrator.kubernetes` (Deployments and Services in
a namespace, instances from EndpointSlices).
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Protocol


class DeployableRefused(ValueError):
    """What `Orchestrator.check` raises when the driver cannot run this kind of deployable at all (a docker image
    on the local driver, a command on Kubernetes): the breed's `deployable` is at fault, not its settings."""


@dataclass(frozen=True)
class HealthCheck:
    """How to tell that an instance serves: an HTTP GET (2xx/3xx passes) or a TCP connect on one of its ports.

    `port` names one of the service's ports (None: the first). Times are seconds. The instance is `ready` after
    its first passing check, `unhealthy` after `failures` consecutive failing ones."""

    path: str = "/"
    port: str | None = None
    protocol: str = "http"
    initial_delay: float = 0
    interval: float = 10
    timeout: float = 5
    failures: int = 3


@dataclass(frozen=True)
class ServiceSpec:
    """One service to run: `id` is "deployment/cluster/service" (e.g. "sava/sava/sava:1.0.0").

    What runs is `command` (the argv of a local process; a leading "python" means the platform's own
    interpreter) or `image` (a container image, for a driver that runs containers); a breed gives one or the
    other, and a driver refuses (`Orchestrator.check`) a spec it cannot run. `ports` maps each port name to
    "http" or "tcp"; `port_numbers` holds the numbers the breed declares, which a container listens on (the
    local driver chooses free numbers instead). `environment` is added to what the instance gets from the
    driver; `arguments` are the breed's and service's `arguments` (name -> value); `cpu` (cores) and `memory`
    (bytes) are what the scale gives each instance (None: not set); `workdir` None means the platform's working
    directory. With `restart` False the service runs to completion (a workflow's script on an event or a
    timer): an instance whose process exits is not restarted but `stopped`, with the exit code in its event,
    and the service then runs one instance fewer."""

    id: str
    command: tuple[str, ...] = ()
    ports: dict[str, str] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)
    instances: int = 1
    health_check: HealthCheck | None = None
    workdir: str | None = None
    restart: bool = True
    image: str | None = None
    port_numbers: dict[str, int] = field(default_factory=dict)
    arguments: dict[str, str] = field(default_factory=dict)
    cpu: float | None = None
    memory: int | None = None


@dataclass(frozen=True)
class Instance:
    """A snapshot of one running copy of a service. `id` is the service id + "#" + index, stable across
    restarts; `ports` maps port names to the numbers it listens on at `host`; `started_at` is the wall-clock
    time (epoch seconds) its current process started. `failures` counts its failures (crashed, unhealthy)
    since it was last ready, `failure` says what the last one was; `outdated` is true while its process
    runs an older spec than the service's (a replacement is on its way)."""

    id: str
    service: str
    host: str
    ports: dict[str, int]
    state: str
    pid: int | None
    restarts: int
    started_at: float
    failures: int = 0
    failure: str | None = None
    outdated: bool = False


@dataclass(frozen=True)
class InstanceEvent:
    """A change of an instance's state. `previous_state` is None for a new instance; `reason` says why in a
    few words; `exit_code` is the process's exit status when it exited (negative: killed by that signal)."""

    instance: Instance
    previous_state: str | None
    reason: str
    exit_code: int | None = None


@dataclass(frozen=True)
class ServiceEvent:
    """What a driver has to say about a whole service rather than one instance: `problem` is what keeps it
    from running as specified, in a few words (the orchestrator's API refused a change: "403 Forbidden: …";
    no instance can be scheduled), or None once that is over; `reason` says what happened."""

    service: str
    problem: str | None
    reason: str


class Orchestrator(Protocol):
    """What the control plane needs from a driver."""

    def check(self, spec: ServiceSpec) -> None:
        """Raise ValueError, saying what and why, for a spec this driver cannot run: DeployableRefused for a local
        command on a driver that runs container images, or an image on the local one. Called before a deployment
        is accepted."""

    def service_host(self, service_id: str) -> str | None:
        """The host name at which other services reach this service directly, on the port numbers its breed
        declares (`$cluster.host` and `$cluster.ports.NAME` of a dependency), known before it runs; None: they
        reach it through the cluster's internal gateway on the platform's loopback."""

    def problem(self, service_id: str) -> str | None:
        """The problem the last ServiceEvent of this service reported, if it is not over."""

    async def deploy(self, spec: ServiceSpec) -> None:
        """Create or update a service and converge to `spec.instances` running instances (returns at once)."""

    async def scale(self, service_id: str, instances: int) -> None:
        """Converge to `instances` running instances; surplus ones are drained, then stopped (in the background)."""

    async def undeploy(self, service_id: str) -> None:
        """Drain and stop every instance of the service (in the background), then forget the service."""

    async def stop_instance(self, instance_id: str) -> None:
        """Stop one instance now (the caller has drained it) and run one fewer: it is not replaced."""

    def instances(self, service_id: str | None = None) -> list[Instance]:
        """The instances not yet stopped, of one service or of all, sorted by id."""

    def subscribe(self) -> asyncio.Queue[InstanceEvent | ServiceEvent]:
        """A queue that receives every InstanceEvent and ServiceEvent from now on."""

    async def close(self) -> None:
        """Let go of the services: the local driver stops every instance (without draining) and waits until
        their processes are gone; a cluster's driver stops watching and leaves its objects running, for the
        next platform to adopt."""
