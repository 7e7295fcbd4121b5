"""The Kubernetes objects a Vamp service wants (an apps/v1 Deployment and a v1 Service, as the API takes them),
what keeps a spec from becoming them, and how far an object read from the API is from what is wanted.

The Deployment runs `spec.image` in one container named after the service, with the breed's ports as named
container ports (`port_names`), the environment as env, the arguments as "--name=value" (`privileged: "true"`
as a privileged security context), the health check as readiness and liveness probes, cpu and memory as
requests and limits; it rolls one surplus pod at a time and never runs fewer ready pods than asked
(maxSurge 1, maxUnavailable 0); a pod going away keeps serving PRE_STOP_SECONDS (a preStop sleep) while the
gateway stops routing to it. Its pod template carries a hash of itself (`SPEC_HASH_KEY`), so a pod tells
which spec it runs. The Service (ClusterIP; headless for a breed without ports) selects the pods by their
labels and names its ports as the container does, targetPort by name.

An object read back carries what the API server added (defaults, status, normalised quantities): `drift`
compares only what Vamp sets, and `replacement` is what to PUT: the object read with Vamp's part replaced.
"""
from __future__ import annotations

import copy
import json
import math
import re
from decimal import Decimal, InvalidOperation
from typing import Any

from control.orchestrator.base import DeployableRefused, ServiceSpec
from control.orchestrator.kubernetes import names

PRIVILEGED = "privileged"
PRE_STOP_SECONDS = 5      # a pod going away keeps serving this long before its container is stopped
MEBIBYTE = 2 ** 20
CMD_REFUSED = ("a cmd deployable cannot run on Kubernetes: give the breed a docker image "
               "(deployable: docker://IMAGE)")

_QUANTITY = re.compile(r"([+-]?(?:\d+\.?\d*|\.\d+))(?:[eE]([+-]?\d+))?([a-zA-Z]*)")
_SUFFIXES = {"": Decimal(1), "m": Decimal("0.001"), "k": Decimal(10) ** 3, "M": Decimal(10) ** 6,
             "G": Decimal(10) ** 9, "T": Decimal(10) ** 12, "P": Decimal(10) ** 15, "E": Decimal(10) ** 18,
             "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30, "Ti": Decimal(2) ** 40,
             "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60}


def image_of(spec: ServiceSpec) -> str | None:
    """The image to run: the breed's `docker://image:tag` without the scheme, or the plain image."""
    if not spec.image:
        return None
    return spec.image.removeprefix("docker://")


def port_names(spec: ServiceSpec) -> dict[str, str]:
    """The Kubernetes name of each of the breed's ports; ValueError for a port without a number, two ports
    with one number or one name."""
    where = f"service {spec.id!r}"
    named: dict[str, str] = {}
    numbered: dict[int, str] = {}
    for port in spec.ports:
        number = spec.port_numbers.get(port)
        if not isinstance(number, int) or isinstance(number, bool) or not 1 <= number <= 65535:
            raise ValueError(f"{where}: port {port!r} needs a number from 1 to 65535 to run on Kubernetes, "
                             f"got {number!r}")
        if number in numbered:
            raise ValueError(f"{where}: ports {numbered[number]!r} and {port!r} both have number {number}")
        numbered[number] = port
        try:
            name = names.port_name(port)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        other = next((breed for breed, given in named.items() if given == name), None)
        if other is not None:
            raise ValueError(f"{where}: ports {other!r} and {port!r} would both be named {name!r} on Kubernetes")
        named[port] = name
    return named


def check(spec: ServiceSpec) -> None:
    """Raise ValueError, saying what and why, for a spec that cannot become a Deployment and a Service."""
    names.split_id(spec.id)
    where = f"service {spec.id!r}"
    if not image_of(spec):
        raise DeployableRefused(CMD_REFUSED)
    if not spec.restart:
        raise ValueError(f"{where}: a service that runs to completion cannot run on Kubernetes (a Deployment "
                         "restarts its pods)")
    if not isinstance(spec.instances, int) or isinstance(spec.instances, bool) or spec.instances < 0:
        raise ValueError(f"{where}: instances must be a whole number >= 0, got {spec.instances!r}")
    port_names(spec)
    health = spec.health_check
    if health is not None:
        if not spec.ports:
            raise ValueError(f"{where}: a health check needs a port to check")
        if health.port is not None and health.port not in spec.ports:
            raise ValueError(f"{where}: health check port {health.port!r} is not one of {sorted(spec.ports)}")
        if health.protocol not in ("http", "tcp"):
            raise ValueError(f"{where}: health check protocol must be http or tcp, got {health.protocol!r}")
    if spec.cpu is not None and not spec.cpu > 0:
        raise ValueError(f"{where}: cpu must be > 0, got {spec.cpu!r}")
    if spec.memory is not None and not spec.memory > 0:
        raise ValueError(f"{where}: memory must be > 0 bytes, got {spec.memory!r}")


def cpu_quantity(cores: float) -> str:
    """Cores as millicores: 0.2 -> "200m" (at least 1m)."""
    return f"{max(1, round(cores * 1000))}m"


def memory_quantity(size: int) -> str:
    """Bytes as whole mebibytes when they are ("128Mi"), else as a plain number of bytes."""
    return f"{size // MEBIBYTE}Mi" if size % MEBIBYTE == 0 else str(int(size))


def _seconds(value: float, least: int) -> int:
    return max(least, math.ceil(value))


def _probe(spec: ServiceSpec, ports: dict[str, str]) -> dict[str, Any] | None:
    health = spec.health_check
    if health is None:
        return None
    port = ports[health.port or next(iter(spec.ports))]
    action: dict[str, Any] = ({"httpGet": {"path": health.path, "port": port}} if health.protocol == "http"
                              else {"tcpSocket": {"port": port}})
    return {**action, "initialDelaySeconds": _seconds(health.initial_delay, 0),
            "periodSeconds": _seconds(health.interval, 1), "timeoutSeconds": _seconds(health.timeout, 1),
            "failureThreshold": max(1, health.failures)}


def container(spec: ServiceSpec) -> dict[str, Any]:
    """The one container of the service's pods."""
    ports = port_names(spec)
    body: dict[str, Any] = {"name": names.container_name(spec.id), "image": image_of(spec)}
    if ports:
        body["ports"] = [{"name": ports[port], "containerPort": spec.port_numbers[port], "protocol": "TCP"}
                         for port in spec.ports]
    if spec.environment:
        body["env"] = [{"name": name, "value": value} for name, value in spec.environment.items()]
    arguments = [f"--{name}={value}" for name, value in spec.arguments.items() if name != PRIVILEGED]
    if arguments:
        body["args"] = arguments
    if spec.arguments.get(PRIVILEGED, "").lower() == "true":
        body["securityContext"] = {"privileged": True}
    probe = _probe(spec, ports)
    if probe is not None:
        body["readinessProbe"] = probe
        body["livenessProbe"] = copy.deepcopy(probe)
    amounts: dict[str, str] = {}
    if spec.cpu is not None:
        amounts["cpu"] = cpu_quantity(spec.cpu)
    if spec.memory is not None:
        amounts["memory"] = memory_quantity(spec.memory)
    if amounts:
        body["resources"] = {"requests": amounts, "limits": dict(amounts)}
    # A pod Kubernetes takes away on its own (a rollout, an eviction) is `stopping` in the gateway as soon as
    # its endpoint terminates; it keeps serving meanwhile, so no request routed to it before fails.
    body["lifecycle"] = {"preStop": {"sleep": {"seconds": PRE_STOP_SECONDS}}}
    return body


def _metadata(spec: ServiceSpec) -> dict[str, Any]:
    return {"name": names.object_name(spec.id), "labels": names.labels(spec.id),
            "annotations": names.id_annotations(spec.id)}


def pod_template(spec: ServiceSpec) -> dict[str, Any]:
    """The pod template, its annotations holding a hash of the rest (`spec_hash`)."""
    notes = names.id_annotations(spec.id)
    template: dict[str, Any] = {"metadata": {"labels": names.labels(spec.id), "annotations": notes},
                                "spec": {"containers": [container(spec)]}}
    notes[names.SPEC_HASH_KEY] = names.short_hash(json.dumps(template, sort_keys=True), 16)
    return template


def deployment(spec: ServiceSpec) -> dict[str, Any]:
    """The Deployment of a service."""
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _metadata(spec),
            "spec": {"replicas": spec.instances, "selector": {"matchLabels": names.labels(spec.id)},
                     "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                     "template": pod_template(spec)}}


def service(spec: ServiceSpec) -> dict[str, Any]:
    """The Service of a service: ClusterIP over the breed's ports, headless without ports."""
    ports = port_names(spec)
    body: dict[str, Any] = {"selector": names.labels(spec.id)}
    if ports:
        body["type"] = "ClusterIP"
        body["ports"] = [{"name": ports[port], "port": spec.port_numbers[port], "targetPort": ports[port],
                          "protocol": "TCP"} for port in spec.ports]
    else:
        body["clusterIP"] = "None"
    return {"apiVersion": "v1", "kind": "Service", "metadata": _metadata(spec), "spec": body}


def quantity(text: str) -> Decimal | None:
    """A Kubernetes quantity as a number ("200m" -> 0.2, "128Mi" -> 134217728); None for anything else."""
    match = _QUANTITY.fullmatch(text)
    if match is None or match.group(3) not in _SUFFIXES:
        return None
    try:
        value = Decimal(match.group(1)) * _SUFFIXES[match.group(3)]
        return value * Decimal(10) ** int(match.group(2)) if match.group(2) else value
    except InvalidOperation:
        return None


def drift(wanted: dict[str, Any], actual: dict[str, Any], *, skip: frozenset[str] = frozenset()) -> str | None:
    """Where (a dotted path) an object read from the API differs from the wanted one in what Vamp sets (its
    labels, annotations and spec), or None; paths in `skip` ("spec.replicas") are not compared."""
    mine = {"metadata": {key: wanted["metadata"][key] for key in ("labels", "annotations")}, "spec": wanted["spec"]}
    return difference(mine, actual, skip=skip)


def difference(wanted: Any, actual: Any, path: str = "", *, skip: frozenset[str] = frozenset()) -> str | None:
    """The first place (a dotted path) where `actual` lacks or differs from what `wanted` sets, or None: keys
    only `actual` has are the API's (defaults, status); lists must match item by item; quantities under
    `resources` compare as numbers ("1000m" is "1"). Paths in `skip` are not compared."""
    if path in skip:
        return None
    if isinstance(wanted, dict):
        if not isinstance(actual, dict):
            return path or "."
        for key, value in wanted.items():
            where = f"{path}.{key}" if path else key
            if key not in actual:
                return None if where in skip else where
            found = difference(value, actual[key], where, skip=skip)
            if found is not None:
                return found
        return None
    if isinstance(wanted, list):
        if not isinstance(actual, list) or len(actual) != len(wanted):
            return path
        for index, (want, have) in enumerate(zip(wanted, actual)):
            found = difference(want, have, f"{path}[{index}]", skip=skip)
            if found is not None:
                return found
        return None
    if wanted == actual and type(wanted) is type(actual):
        return None
    if ".resources." in path and isinstance(wanted, str) and isinstance(actual, str):
        amount = quantity(wanted)
        if amount is not None and amount == quantity(actual):
            return None
    return path


def replacement(actual: dict[str, Any], wanted: dict[str, Any], *, keep: tuple[str, ...] = ()) -> dict[str, Any]:
    """What to PUT so that `actual` becomes what `wanted` sets: `actual` (its resourceVersion, what the API
    added) with Vamp's labels and annotations set and each of `wanted`'s spec fields replaced whole, except
    those in `keep` (a Deployment's replicas belong to the scale subresource)."""
    body = {key: copy.deepcopy(value) for key, value in actual.items() if key != "status"}
    metadata = body.setdefault("metadata", {})
    for field in ("labels", "annotations"):
        metadata[field] = {**(metadata.get(field) or {}), **wanted["metadata"][field]}
    body["spec"] = {**(body.get("spec") or {}),
                    **{key: copy.deepcopy(value) for key, value in wanted["spec"].items() if key not in keep}}
    return body
