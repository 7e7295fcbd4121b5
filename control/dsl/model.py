"""The normalised model of Vamp's DSL: immutable values, every shorthand already expanded.

`control.dsl.reader` builds these from documents (YAML/JSON/dicts) and `control.dsl.writer` writes them back
in Vamp's long form; the rest of the control plane sees only this model. Units: percentages (weights,
condition strengths) are integer basis points as in the gateway (10000 = 100%), durations float seconds,
memory whole bytes, CPU float cores.

Decisions that go beyond Vamp:
- `Deployable.type` is "cmd", "python" or "docker". A "cmd" definition is a command line (split like a shell
  would, no shell involved): `python -m control.demo.sava --version 1.0.0`. A "python" definition is a module
  name and its arguments, run as `python -m <definition>`. A "docker" definition is an image (`image:tag`),
  Vamp's default; the local orchestrator cannot run it. `Deployable.argv()` gives the local command.
- A reference to a stored artifact (`ref:`/`reference:`, or a bare name where Vamp allows one) is kept as a
  `Reference(kind, name)`; `control.dsl.resolve.resolve_references` replaces it through a caller's lookup.
- `~` is kept as `PLACEHOLDER` (environment variables only); `resolve.validate_complete` reports those still
  unfilled.
- A route without a weight has `weight=None` ("shares what the weighted routes leave", resolved by the
  gateway); `condition_strength` is 100% when a condition is set, and None without one.
- `health_checks` is None when a level does not declare any, `()` when it declares none (which turns them
  off for the levels below): service overrides cluster overrides breed, the whole list at once.
- Blueprint-level `environment_variables: {CLUSTER.NAME: value}` are stored on the cluster they name
  (`Cluster.environment_variables`); scopes are breed < cluster < service.
- Free-form data (dialects, metadata, parameters of unknown SLA/escalation types, a built-in workflow's parameters)
  is kept as plain JSON-like data and must be treated as read-only.
- What VAMP reads but this project does not apply is read, checked and kept, so that it is written back: a
  route's `balance` and `rewrites`, gateway and route `selector`s, a gateway's `service`, `metadata`, a
  port given as a reference (`$db.constants.port`, resolved when deployed) and a route that names a stored
  route (`reference`, which this project cannot deploy).
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any

from control.dsl.references import Template

FULL = 10_000   # 100% in basis points

DEPLOYABLE_TYPES = ("cmd", "python", "docker")
PROTOCOLS = ("http", "tcp")
HEALTH_CHECK_PROTOCOLS = ("http", "https", "tcp")
STICKY_MODES = ("none", "route", "instance")
REFERENCE_KINDS = ("breed", "blueprint", "scale", "sla", "escalation", "condition")

DEFAULT_CPU = 1.0
DEFAULT_MEMORY = 1000**3
DEFAULT_INSTANCES = 1


@dataclass(frozen=True, slots=True)
class Reference:
    """A stored artifact named by `ref:`/`reference:` (or a bare name): kind is one of REFERENCE_KINDS.
    A reference to a stored SLA may carry `escalations` of its own (VAMP's SlaReference): they replace the
    stored SLA's."""
    kind: str
    name: str
    escalations: tuple[Escalation | Reference, ...] = ()


@dataclass(frozen=True, slots=True)
class Placeholder:
    """Vamp's `~`: a value a higher scope must fill. All placeholders are equal."""

    def __repr__(self) -> str:
        return "PLACEHOLDER"


PLACEHOLDER = Placeholder()


@dataclass(frozen=True, slots=True)
class Deployable:
    type: str           # one of DEPLOYABLE_TYPES
    definition: str     # command line, module and arguments, or docker image

    def argv(self) -> tuple[str, ...]:
        """The command that runs this deployable as a local process (ValueError for a docker image)."""
        if self.type == "cmd":
            return tuple(shlex.split(self.definition))
        if self.type == "python":
            return ("python", "-m", *shlex.split(self.definition))
        raise ValueError(f"a {self.type} deployable ({self.definition}) cannot run as a local process")


@dataclass(frozen=True, slots=True)
class Port:
    name: str
    number: int                 # 0 while `reference` is unresolved
    protocol: str = "http"      # "http" or "tcp"
    reference: str | None = None    # `$db.constants.port`: a dependency's constant, resolved when deployed


@dataclass(frozen=True, slots=True)
class EnvironmentVariable:
    name: str
    value: Template | Placeholder
    alias: str | None = None    # `debug[SAVA_DEBUG]`: referenced as `debug`, set in the process as SAVA_DEBUG

    @property
    def variable(self) -> str:
        """The name the variable has in the process environment."""
        return self.alias or self.name


@dataclass(frozen=True, slots=True)
class Constant:
    name: str
    value: str


@dataclass(frozen=True, slots=True)
class Argument:
    name: str
    value: str


@dataclass(frozen=True, slots=True)
class HealthCheck:
    path: str = "/"             # VAMP's relative `path/to/check` is read as /path/to/check
    port: str | None = None     # a port name, or a port number as text; None: the breed's first port
    protocol: str = "http"      # "http", "https" or "tcp"
    initial_delay: float = 0.0
    interval: float = 10.0
    timeout: float = 5.0
    failures: int = 3


@dataclass(frozen=True, slots=True)
class Dependency:
    alias: str                  # the name `$alias.host` uses for the cluster running the dependency
    breed: Breed | Reference    # a reference name may end in `*` (`redis:1.*`)


@dataclass(frozen=True, slots=True)
class Breed:
    name: str
    deployable: Deployable
    ports: tuple[Port, ...] = ()
    environment_variables: tuple[EnvironmentVariable, ...] = ()
    constants: tuple[Constant, ...] = ()
    arguments: tuple[Argument, ...] = ()
    dependencies: tuple[Dependency, ...] = ()
    health_checks: tuple[HealthCheck, ...] | None = None


@dataclass(frozen=True, slots=True)
class Scale:
    name: str | None = None     # None inline; the stored name for a scale artifact
    cpu: float = DEFAULT_CPU
    memory: int = DEFAULT_MEMORY
    instances: int = DEFAULT_INSTANCES


@dataclass(frozen=True, slots=True)
class Condition:
    condition: str              # canonical text (gateway.routing.conditions.canonical)
    name: str | None = None     # None inline; the stored name for a condition artifact


@dataclass(frozen=True, slots=True)
class GatewayRoute:
    path: str                   # cluster/port, deployment/cluster/service/port, a service (breed) name, [host:port]
    weight: int | None = None   # basis points; None shares what the weighted routes leave
    condition: Condition | Reference | None = None
    condition_strength: int | None = None
    targets: tuple[str, ...] = ()   # explicit host:port targets (gateway artifacts); normally the sync's job
    balance: str | None = None      # VAMP's balance mode (round-robin, least-connections …): kept, not applied
    rewrites: tuple[str, ...] = ()  # VAMP's path rewrites, `REPLACEMENT if CONDITION`: kept, not applied
    selector: str | None = None     # VAMP's route selector (orchestrator labels, control.dsl.selectors): kept
    reference: str | None = None    # a stored route (VAMP's `route: NAME`): kept; not deployable here


@dataclass(frozen=True, slots=True)
class Gateway:
    """A gateway artifact (`name` set) or a blueprint's external gateway (`name` None, keyed by its port)."""
    name: str | None
    port: int
    protocol: str = "http"
    sticky: str = "none"        # one of STICKY_MODES
    virtual_hosts: tuple[str, ...] = ()
    routes: tuple[GatewayRoute, ...] = ()
    selector: str | None = None     # VAMP's gateway selector: kept, not applied
    service: str | None = None      # VAMP's `service: {host, port}` as `host:port/protocol`: kept, not applied
    metadata: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True)
class ClusterGateway:
    """A cluster's internal gateway for one of its ports; routes are named by service (breed name)."""
    port: str | None            # a port name; None: the cluster's only port (Vamp's anonymous form)
    sticky: str = "none"
    routes: tuple[GatewayRoute, ...] = ()
    virtual_hosts: tuple[str, ...] = ()     # kept: an internal gateway is reached by port, not by host


@dataclass(frozen=True, slots=True)
class Escalation:
    type: str                   # scale_instances, scale_cpu, scale_memory, to_all, to_one, or another
    name: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict, hash=False)
    escalations: tuple[Escalation | Reference, ...] = ()     # to_all / to_one only


@dataclass(frozen=True, slots=True)
class Sla:
    type: str                   # response_time_sliding_window, error_rate, escalation_only, or another
    name: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict, hash=False)
    escalations: tuple[Escalation | Reference, ...] = ()


@dataclass(frozen=True, slots=True)
class Service:
    breed: Breed | Reference
    scale: Scale | Reference = Scale()
    environment_variables: tuple[EnvironmentVariable, ...] = ()
    arguments: tuple[Argument, ...] = ()
    health_checks: tuple[HealthCheck, ...] | None = None
    network: str | None = None
    dialects: dict[str, Any] = field(default_factory=dict, hash=False)

    @property
    def name(self) -> str:
        """The service's name: its breed's."""
        return self.breed.name


@dataclass(frozen=True, slots=True)
class Cluster:
    name: str
    services: tuple[Service, ...]
    gateways: tuple[ClusterGateway, ...] = ()
    sla: Sla | Reference | None = None
    health_checks: tuple[HealthCheck, ...] | None = None
    network: str | None = None
    dialects: dict[str, Any] = field(default_factory=dict, hash=False)
    environment_variables: tuple[EnvironmentVariable, ...] = ()

    def service(self, name: str) -> Service | None:
        return next((service for service in self.services if service.name == name), None)


@dataclass(frozen=True, slots=True)
class Blueprint:
    name: str
    clusters: tuple[Cluster, ...]
    gateways: tuple[Gateway, ...] = ()
    dialects: dict[str, Any] = field(default_factory=dict, hash=False)
    metadata: dict[str, Any] = field(default_factory=dict, hash=False)

    def cluster(self, name: str) -> Cluster | None:
        return next((cluster for cluster in self.clusters if cluster.name == name), None)


@dataclass(frozen=True, slots=True)
class Deployment(Blueprint):
    """A blueprint being deployed under a deployment name: the shape `?as_blueprint=true` returns."""


@dataclass(frozen=True, slots=True)
class Schedule:
    type: str                       # "daemon", "event" or "time"
    tags: tuple[str, ...] = ()      # event: the tags that trigger a run
    period: str | None = None       # time: ISO 8601 duration, e.g. P1DT12H
    start: str | None = None        # time: ISO 8601 date-time; None: now
    repeat: int | None = None       # time: how many runs; None: forever


@dataclass(frozen=True, slots=True)
class Workflow:
    """A script (`breed`: its deployable is the command the orchestrator runs) or a built-in (`workflow`: its
    name, with its `parameters`), never both, run on `schedule`. `scale`, `environment_variables` and
    `arguments` belong to scripts."""
    name: str
    breed: Breed | Reference | None
    schedule: Schedule
    scale: Scale | Reference | None = None
    environment_variables: tuple[EnvironmentVariable, ...] = ()
    arguments: tuple[Argument, ...] = ()
    workflow: str | None = None                 # a built-in's name (control.workflows.builtins)
    parameters: dict[str, Any] = field(default_factory=dict, hash=False)
    network: str | None = None                  # a script's network, as a service's


Artifact = Breed | Blueprint | Deployment | Gateway | Scale | Condition | Sla | Escalation | Workflow | Reference
