"""Writing the model back as Vamp's long form: plain JSON/YAML-ready data, every field explicit, so that
`read(kind, to_dict(artifact)) == artifact`.

Top-level artifacts carry `kind:` (Vamp's plural: breeds, blueprints, ...), so the output of several
`to_dict` calls joined as multi-document YAML reads back with `read_text`. A `Reference` is written as
`{reference: NAME}`; at the top level (a deployment that only names a blueprint) as `{kind: deployments,
name}`.
Key order is meaningful (routes are tried in order): dump YAML with `sort_keys=False`.
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from control.dsl.model import (Argument, Artifact, Blueprint, Breed, Cluster, ClusterGateway, Condition,
                               Dependency, Deployment, EnvironmentVariable, Escalation, Gateway,
                               GatewayRoute, HealthCheck, Placeholder, Port, Reference, Scale, Schedule, Service,
                               Sla, Workflow)
from control.dsl.reader import PLURALS
from control.dsl.units import format_memory
from gateway.common.units import format_duration, format_percent


def kind_of(artifact: Artifact) -> str:
    """The kind an artifact is read as: 'breed', 'blueprint', ...; 'deployment' for a blueprint reference
    (a deployment document that only names a stored blueprint)."""
    if isinstance(artifact, Reference):
        if artifact.kind != "blueprint":
            raise ValueError(f"a reference to a {artifact.kind} is not a document of its own")
        return "deployment"
    return _KINDS[type(artifact)]


def to_dict(artifact: Artifact) -> dict[str, Any]:
    """An artifact in Vamp's long form, with its `kind:`."""
    kind = PLURALS[kind_of(artifact)]
    if isinstance(artifact, Reference):
        return {"kind": kind, "name": artifact.name}
    return {"kind": kind, **_WRITERS[type(artifact)](artifact)}


# -- breeds ------------------------------------------------------------------------------------------
def _breed(breed: Breed) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": breed.name,
        "deployable": {"type": breed.deployable.type, "definition": breed.deployable.definition},
        "ports": {port.name: _port(port) for port in breed.ports},
        "environment_variables": _environment(breed.environment_variables),
        "constants": {constant.name: constant.value for constant in breed.constants},
        "arguments": _arguments(breed.arguments),
        "dependencies": {dependency.alias: _dependency(dependency) for dependency in breed.dependencies},
    }
    if breed.health_checks is not None:
        body["health_checks"] = _health_checks(breed.health_checks)
    return body


def _port(port: Port) -> str:
    return port.reference if port.reference is not None else f"{port.number}/{port.protocol}"


def _environment(variables: tuple[EnvironmentVariable, ...]) -> dict[str, str | None]:
    return {(f"{variable.name}[{variable.alias}]" if variable.alias else variable.name): _value(variable.value)
            for variable in variables}


def _value(value: Any) -> str | None:
    return None if isinstance(value, Placeholder) else value.text


def _arguments(arguments: tuple[Argument, ...]) -> list[dict[str, str]]:
    return [{argument.name: argument.value} for argument in arguments]


def _dependency(dependency: Dependency) -> dict[str, Any]:
    return {"breed": _breed_or_reference(dependency.breed)}


def _breed_or_reference(breed: Breed | Reference) -> dict[str, Any]:
    return _reference(breed) if isinstance(breed, Reference) else _breed(breed)


def _reference(reference: Reference) -> dict[str, Any]:
    if reference.escalations:
        return {"reference": reference.name, "escalations": _escalations(reference.escalations)}
    return {"reference": reference.name}


def _health_checks(checks: tuple[HealthCheck, ...]) -> list[dict[str, Any]]:
    return [{"path": check.path, "port": check.port, "protocol": check.protocol,
             "initial_delay": format_duration(check.initial_delay), "interval": format_duration(check.interval),
             "timeout": format_duration(check.timeout), "failures": check.failures} for check in checks]


# -- scales, conditions, gateways --------------------------------------------------------------------
def _scale(scale: Scale) -> dict[str, Any]:
    body = {"name": scale.name} if scale.name is not None else {}
    return {**body, "cpu": scale.cpu, "memory": format_memory(scale.memory), "instances": scale.instances}


def _scale_or_reference(scale: Scale | Reference) -> dict[str, Any]:
    return _reference(scale) if isinstance(scale, Reference) else _scale(scale)


def _condition(condition: Condition) -> dict[str, Any]:
    return {"name": condition.name, "condition": condition.condition}


def _route(route: GatewayRoute) -> Any:
    if route.reference is not None:
        return route.reference
    body: dict[str, Any] = {}
    if route.weight is not None:
        body["weight"] = format_percent(route.weight)
    if isinstance(route.condition, Reference):
        body["condition"] = _reference(route.condition)
    elif route.condition is not None:
        body["condition"] = {"condition": route.condition.condition}
    if route.condition_strength is not None:
        body["condition_strength"] = format_percent(route.condition_strength)
    if route.targets:
        body["targets"] = list(route.targets)
    if route.balance is not None:
        body["balance"] = route.balance
    if route.rewrites:
        body["rewrites"] = [{"path": rewrite} for rewrite in route.rewrites]
    if route.selector is not None:
        body["selector"] = route.selector
    return body


def _gateway(gateway: Gateway) -> dict[str, Any]:
    # a blueprint's gateway (no name) is keyed by its port instead
    body: dict[str, Any] = {"name": gateway.name, "port": _gateway_port(gateway)} if gateway.name is not None else {}
    body.update(sticky=gateway.sticky, virtual_hosts=list(gateway.virtual_hosts),
                routes={route.path: _route(route) for route in gateway.routes})
    if gateway.selector is not None:
        body["selector"] = gateway.selector
    if gateway.service is not None:
        host, _, port = gateway.service.rpartition(":")
        body["service"] = {"host": host, "port": port}
    if gateway.metadata:
        body["metadata"] = copy.deepcopy(gateway.metadata)
    return body


def _gateway_port(gateway: Gateway) -> str:
    return f"{gateway.port}/{gateway.protocol}"


def _cluster_gateways(gateways: tuple[ClusterGateway, ...]) -> dict[str, Any]:
    """Keyed by port name; Vamp's anonymous form (port unknown until the breeds are) when the port is None."""
    bodies: dict[Any, Any] = {gateway.port: {"sticky": gateway.sticky, "routes": {route.path: _route(route)
                                                                 for route in gateway.routes}}
              for gateway in gateways}
    for gateway in gateways:
        if gateway.virtual_hosts:
            bodies[gateway.port]["virtual_hosts"] = list(gateway.virtual_hosts)
    return bodies.pop(None) if None in bodies else bodies


# -- blueprints --------------------------------------------------------------------------------------
def _blueprint(blueprint: Blueprint) -> dict[str, Any]:
    return {
        "name": blueprint.name,
        "gateways": {_gateway_port(gateway): _gateway(gateway) for gateway in blueprint.gateways},
        "clusters": {cluster.name: _cluster(cluster) for cluster in blueprint.clusters},
        "environment_variables": {f"{cluster.name}.{key}": value for cluster in blueprint.clusters
                                  for key, value in _environment(cluster.environment_variables).items()},
        "dialects": copy.deepcopy(blueprint.dialects),
        **({"metadata": copy.deepcopy(blueprint.metadata)} if blueprint.metadata else {}),
    }


def _cluster(cluster: Cluster) -> dict[str, Any]:
    body: dict[str, Any] = {"services": [_service(service) for service in cluster.services],
                            "gateways": _cluster_gateways(cluster.gateways)}
    if cluster.sla is not None:
        body["sla"] = _reference(cluster.sla) if isinstance(cluster.sla, Reference) else _sla(cluster.sla)
    if cluster.health_checks is not None:
        body["health_checks"] = _health_checks(cluster.health_checks)
    if cluster.network is not None:
        body["network"] = cluster.network
    body["dialects"] = copy.deepcopy(cluster.dialects)
    return body


def _service(service: Service) -> dict[str, Any]:
    body: dict[str, Any] = {"breed": _breed_or_reference(service.breed),
                            "scale": _scale_or_reference(service.scale),
                            "environment_variables": _environment(service.environment_variables),
                            "arguments": _arguments(service.arguments)}
    if service.health_checks is not None:
        body["health_checks"] = _health_checks(service.health_checks)
    if service.network is not None:
        body["network"] = service.network
    body["dialects"] = copy.deepcopy(service.dialects)
    return body


# -- SLAs, escalations, workflows --------------------------------------------------------------------
def _sla(sla: Sla) -> dict[str, Any]:
    body = {"name": sla.name} if sla.name is not None else {}
    parameters = copy.deepcopy(sla.parameters)
    if sla.type in ("response_time_sliding_window", "error_rate"):
        window = parameters["window"]
        parameters["window"] = {key: format_duration(seconds) for key, seconds in window.items()}
    if sla.type == "error_rate":
        parameters["threshold"] = {key: format_percent(basis_points)
                                   for key, basis_points in parameters["threshold"].items()}
    return {**body, "type": sla.type, **parameters, "escalations": _escalations(sla.escalations)}


def _escalations(escalations: tuple[Escalation | Reference, ...]) -> list[dict[str, Any]]:
    return [_reference(item) if isinstance(item, Reference) else _escalation(item) for item in escalations]


def _escalation(escalation: Escalation) -> dict[str, Any]:
    body: dict[str, Any] = {"name": escalation.name} if escalation.name is not None else {}
    parameters = copy.deepcopy(escalation.parameters)
    if escalation.type == "scale_memory":
        parameters.update({key: format_memory(parameters[key]) for key in ("minimum", "maximum", "scale_by")})
    body.update(type=escalation.type, **parameters)
    if escalation.type in ("to_all", "to_one"):
        body["escalations"] = _escalations(escalation.escalations)
    return body


def _workflow(workflow: Workflow) -> dict[str, Any]:
    if workflow.breed is None:
        return {"name": workflow.name, "workflow": workflow.workflow,
                "parameters": copy.deepcopy(workflow.parameters), "schedule": _schedule(workflow.schedule)}
    body: dict[str, Any] = {"name": workflow.name, "breed": _breed_or_reference(workflow.breed),
                            "schedule": _schedule(workflow.schedule)}
    if workflow.scale is not None:
        body["scale"] = _scale_or_reference(workflow.scale)
    body["environment_variables"] = _environment(workflow.environment_variables)
    body["arguments"] = _arguments(workflow.arguments)
    if workflow.network is not None:
        body["network"] = workflow.network
    return body


def _schedule(schedule: Schedule) -> Any:
    if schedule.type == "daemon":
        return "daemon"
    if schedule.type == "event":
        return {"event": {"tags": list(schedule.tags)}}
    return {"time": {"period": schedule.period, "start": schedule.start or "now", "repeat": schedule.repeat}}


_WRITERS: dict[type, Callable[[Any], dict[str, Any]]] = {
    Breed: _breed, Blueprint: _blueprint, Deployment: _blueprint, Gateway: _gateway, Scale: _scale,
    Condition: _condition, Sla: _sla, Escalation: _escalation, Workflow: _workflow}
_KINDS = {Breed: "breed", Blueprint: "blueprint", Deployment: "deployment", Gateway: "gateway", Scale: "scale",
          Condition: "condition", Sla: "sla", Escalation: "escalation", Workflow: "workflow"}
