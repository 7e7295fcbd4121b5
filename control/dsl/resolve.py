"""Completing what was read: references to stored artifacts replaced through the caller's lookup, the
effective environment and health checks of a service (its scopes combined), and the check, before anything
is deployed, that nothing is missing (`validate_complete`).

Scopes: a service's environment is its breed's variables, overridden by name by the cluster's (blueprint-level
`CLUSTER.NAME`), overridden by the service's own; a variable's alias (the name in the process) is the most
specific one given.
Health checks are taken whole from the most specific level that declares them (service, else cluster, else
breed); a check without a port gets the breed's first port.

`$NAME.…` references name a cluster of the blueprint, or an alias from the breed's `dependencies` that stands
for the cluster running a matching breed (a name ending in `*` matches by prefix).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, overload
from collections.abc import Callable

from control.dsl.consistency import check_cycles
from control.dsl.errors import DslError, Path
from control.dsl.model import (Artifact, Blueprint, Breed, Cluster, ClusterGateway, Condition,
                               EnvironmentVariable, Escalation, Gateway, GatewayRoute, HealthCheck, Placeholder,
                               Reference, Scale, Service, Sla, Workflow)
from control.dsl.references import HostReference, LocalReference, ValueReference, references
from control.dsl.writer import kind_of
from gateway.common.units import parse_port

Lookup = Callable[[Reference], Artifact | None]

_ARTIFACT_TYPES: dict[str, type] = {"breed": Breed, "scale": Scale, "sla": Sla, "escalation": Escalation,
                                    "condition": Condition, "blueprint": Blueprint}
MAX_NESTING = 10    # escalations referring to escalations referring to ...


# -- scopes ------------------------------------------------------------------------------------------
def effective_environment(cluster: Cluster, service: Service) -> tuple[EnvironmentVariable, ...]:
    """The service's variables: breed < cluster < service, by name (the breed must be resolved)."""
    breed = _resolved_breed(service)
    merged: dict[str, EnvironmentVariable] = {variable.name: variable for variable in breed.environment_variables}
    for variable in cluster.environment_variables + service.environment_variables:
        inherited = merged.get(variable.name)
        merged[variable.name] = replace(variable, alias=variable.alias or inherited.alias) if inherited else variable
    return tuple(merged.values())


def effective_health_checks(cluster: Cluster, service: Service) -> tuple[HealthCheck, ...]:
    """The service's health checks (the breed must be resolved); `()` when none is declared anywhere."""
    breed = _resolved_breed(service)
    by_number = {str(port.number): port.name for port in breed.ports if port.reference is None}
    names = {port.name for port in breed.ports}
    for level, checks in (("service", service.health_checks), ("cluster", cluster.health_checks),
                          ("breed", breed.health_checks)):
        if checks is not None:
            first_port = breed.ports[0].name if breed.ports else None
            named = tuple(replace(check, port=by_number.get(check.port, check.port) if check.port else first_port)
                          for check in checks)
            # a cluster's check is for the services that have its port
            return tuple(check for check in named if level != "cluster" or check.port in names)
    return ()


def referenced_cluster(blueprint: Blueprint, service: Service, name: str) -> Cluster | None:
    """The cluster `$name.…` means in this service's variables: a cluster of the blueprint, or the cluster
    running the breed that the service's breed lists under dependency alias `name`."""
    cluster = blueprint.cluster(name)
    if cluster is not None or not isinstance(service.breed, Breed):
        return cluster
    dependency = next((d for d in service.breed.dependencies if d.alias == name), None)
    if dependency is None:
        return None
    return next((c for c in blueprint.clusters if any(_matches(dependency.breed.name, s.name) for s in c.services)),
                None)


def _matches(pattern: str, name: str) -> bool:
    return name.startswith(pattern[:-1]) if pattern.endswith("*") else name == pattern


def _resolved_breed(service: Service) -> Breed:
    if isinstance(service.breed, Reference):
        raise DslError(f"breed {service.breed.name!r} is a reference: resolve it first (resolve_references)")
    return service.breed


# -- references to stored artifacts ------------------------------------------------------------------
@overload
def resolve_references(artifact: Blueprint, lookup: Lookup) -> Blueprint: ...
@overload
def resolve_references(artifact: Artifact, lookup: Lookup) -> Artifact: ...


def resolve_references(artifact: Artifact, lookup: Lookup) -> Artifact:
    """The artifact with every `Reference` to a stored breed, scale, SLA, escalation or condition replaced
    by `lookup(reference)` (None or KeyError: it does not exist, a DslError naming where it was used); what
    is inlined is anonymous (name None) as if written inline, except breeds, whose name is their identity.
    A cluster gateway written for "the only port" gets that port once the breeds are known."""
    resolver = _Resolver(lookup, _label(artifact))
    return resolver.artifact(artifact)


class _Resolver:
    def __init__(self, lookup: Lookup, document: str) -> None:
        self.lookup = lookup
        self.document = document

    def fetch(self, reference: Reference, at: Path) -> Any:
        try:
            found = self.lookup(reference)
        except KeyError:
            found = None
        if found is None:
            raise DslError(f"no {reference.kind} named {reference.name!r} is stored", at, self.document)
        if not isinstance(found, _ARTIFACT_TYPES[reference.kind]):
            raise DslError(f"{reference.name!r} is not a {reference.kind}", at, self.document)
        # inline ones are anonymous (what is fetched inline, a scale, SLA, escalation or condition, may be)
        return found if isinstance(found, Breed) else replace(found, name=None)  # type: ignore[arg-type]

    def artifact(self, artifact: Artifact) -> Artifact:
        if isinstance(artifact, Blueprint):
            return replace(artifact, clusters=tuple(self.cluster(cluster, ("clusters", cluster.name))
                                                    for cluster in artifact.clusters),
                           gateways=tuple(self.gateway(gateway, ("gateways", str(gateway.port)))
                                          for gateway in artifact.gateways))
        if isinstance(artifact, Gateway):
            return self.gateway(artifact, ())
        if isinstance(artifact, Sla):
            return self.sla(artifact, (), 0)
        if isinstance(artifact, Escalation):
            return self.escalation(artifact, (), 0)
        if isinstance(artifact, Workflow):
            if artifact.breed is None:          # a built-in
                return artifact
            return replace(artifact, breed=self.breed(artifact.breed, ("breed",)),
                           scale=self.scale(artifact.scale, ("scale",)) if artifact.scale is not None else None)
        return artifact

    def breed(self, breed: Breed | Reference, at: Path) -> Breed:
        return self.fetch(breed, at) if isinstance(breed, Reference) else breed

    def scale(self, scale: Scale | Reference, at: Path) -> Scale:
        return self.fetch(scale, at) if isinstance(scale, Reference) else scale

    def breed_with_ports(self, breed: Breed | Reference, at: Path) -> Breed:
        """The breed, with a port given as `$alias.constants.NAME` numbered from that dependency's constant."""
        resolved = self.breed(breed, at)
        if all(port.reference is None for port in resolved.ports):
            return resolved
        ports = []
        for port in resolved.ports:
            if port.reference is not None:
                alias, _, constant = port.reference.lstrip("$").strip("{}").partition(".constants.")
                dependency = next((d.breed for d in resolved.dependencies if d.alias == alias), None)
                target = self.breed(dependency, at + ("dependencies", alias)) if dependency is not None else None
                value = next((c.value for c in target.constants if c.name == constant), None) if target else None
                if value is None:
                    raise DslError(f"port {port.name!r} is {port.reference}, which names no constant of a dependency",
                                   at + ("ports", port.name), self.document)
                try:
                    number, protocol = parse_port(value)
                except ValueError as exc:
                    raise DslError(f"port {port.name!r} ({port.reference}): {exc}", at + ("ports", port.name),
                                   self.document) from None
                port = replace(port, number=number, protocol=protocol, reference=None)
            ports.append(port)
        return replace(resolved, ports=tuple(ports))

    def cluster(self, cluster: Cluster, at: Path) -> Cluster:
        services = tuple(replace(service, breed=self.breed_with_ports(service.breed, at + ("services", index, "breed")),
                                 scale=self.scale(service.scale, at + ("services", index, "scale")))
                         for index, service in enumerate(cluster.services))
        sla = cluster.sla
        if sla is not None:
            fetched = self.fetch(sla, at + ("sla",)) if isinstance(sla, Reference) else sla
            if isinstance(sla, Reference) and sla.escalations:     # the reference's own escalations replace the SLA's
                fetched = replace(fetched, escalations=sla.escalations)
            sla = self.sla(fetched, at + ("sla",), 0)
        resolved = replace(cluster, services=services, sla=sla)
        return replace(resolved, gateways=tuple(self.cluster_gateway(gateway, resolved, at + ("gateways",))
                                                for gateway in cluster.gateways))

    def cluster_gateway(self, gateway: ClusterGateway, cluster: Cluster, at: Path) -> ClusterGateway:
        gateway_at = at + (gateway.port,) if gateway.port else at
        routes = tuple(self.route(route, gateway_at + ("routes", route.path)) for route in gateway.routes)
        if gateway.port is not None:
            return replace(gateway, routes=routes)
        ports = list(dict.fromkeys(port.name for service in cluster.services
                                   for port in _resolved_breed(service).ports))
        if len(ports) != 1:
            raise DslError(f"the cluster's services have ports {', '.join(ports) or '(none)'}: key the gateway by "
                           "port name, like {webport: {routes: ...}}", at, self.document)
        return replace(gateway, port=ports[0], routes=routes)

    def gateway(self, gateway: Gateway, at: Path) -> Gateway:
        return replace(gateway, routes=tuple(self.route(route, at + ("routes", route.path))
                                             for route in gateway.routes))

    def route(self, route: GatewayRoute, at: Path) -> GatewayRoute:
        if isinstance(route.condition, Reference):
            return replace(route, condition=self.fetch(route.condition, at + ("condition",)))
        return route

    def sla(self, sla: Sla, at: Path, depth: int) -> Sla:
        return replace(sla, escalations=self.escalations(sla.escalations, at + ("escalations",), depth))

    def escalations(self, escalations: tuple[Escalation | Reference, ...], at: Path,
                    depth: int) -> tuple[Escalation, ...]:
        if depth > MAX_NESTING:
            raise DslError(f"escalations nested more than {MAX_NESTING} deep (do they refer to each other?)",
                           at, self.document)
        return tuple(self.escalation(self.fetch(item, at + (index,)) if isinstance(item, Reference) else item,
                                     at + (index,), depth + 1) for index, item in enumerate(escalations))

    def escalation(self, escalation: Escalation, at: Path, depth: int) -> Escalation:
        return replace(escalation, escalations=self.escalations(escalation.escalations, at + ("escalations",), depth))


# -- completeness ------------------------------------------------------------------------------------
def validate_complete(artifact: Artifact) -> None:
    """DslError unless the artifact can be deployed as it is: every reference to a stored artifact resolved,
    every `~` placeholder filled by a higher scope, every `$cluster…` reference naming a cluster, port,
    variable or constant that exists, every gateway and health check naming existing ports, breed
    dependencies present in the blueprint."""
    document = _label(artifact)
    try:
        if isinstance(artifact, Blueprint):
            _complete_blueprint(artifact)
        elif isinstance(artifact, Breed):
            _complete_variables(artifact.environment_variables, ("environment_variables",))
        elif isinstance(artifact, Workflow):
            if artifact.breed is None:          # a built-in: its parameters were checked when it was read
                return
            if isinstance(artifact.breed, Reference):
                raise _unresolved(artifact.breed, ("breed",))
            _complete_variables(_merged(artifact.breed.environment_variables, artifact.environment_variables),
                                ("environment_variables",))
        elif isinstance(artifact, Reference):
            raise _unresolved(artifact, ())
        else:
            _no_references(artifact, ())
    except DslError as error:
        error.document = document
        raise


def _complete_blueprint(blueprint: Blueprint) -> None:
    for cluster in blueprint.clusters:
        for index, service in enumerate(cluster.services):
            service_at: Path = ("clusters", cluster.name, "services", index)
            if isinstance(service.breed, Reference):
                raise _unresolved(service.breed, service_at + ("breed",))
            if isinstance(service.scale, Reference):
                raise _unresolved(service.scale, service_at + ("scale",))
    for cluster in blueprint.clusters:
        at: Path = ("clusters", cluster.name)
        for index, service in enumerate(cluster.services):
            service_at = at + ("services", index)
            variables = effective_environment(cluster, service)
            _complete_variables(variables, service_at + ("environment_variables",))
            _check_value_references(blueprint, service, variables, service_at + ("environment_variables",))
            breed = _resolved_breed(service)
            _check_dependencies(blueprint, breed, service_at + ("breed", "dependencies"))
            unresolved = next((port for port in breed.ports if port.reference is not None), None)
            if unresolved is not None:
                raise DslError(f"port {unresolved.name!r} is {unresolved.reference}: resolve it first "
                               "(resolve_references)", service_at + ("breed", "ports", unresolved.name))
            ports = {port.name for port in breed.ports}
            for check_index, check in enumerate(effective_health_checks(cluster, service)):
                if check.port not in ports:
                    raise DslError(f"health check port {check.port!r} is not a port of breed {service.name!r} "
                                   f"(it has: {', '.join(sorted(ports)) or 'none'})",
                                   service_at + ("health_checks", check_index, "port"))
        sla = cluster.sla
        if isinstance(sla, Reference):
            raise _unresolved(sla, at + ("sla",))
        if sla is not None:
            _no_references(sla, at + ("sla",))
            _check_escalation_targets(blueprint, sla.escalations, at + ("sla", "escalations"))
        cluster_ports = {port.name for service in cluster.services for port in _resolved_breed(service).ports}
        for gateway in cluster.gateways:
            gateway_at = at + ("gateways", gateway.port) if gateway.port else at + ("gateways",)
            if gateway.port not in cluster_ports:
                raise DslError(f"no port {gateway.port!r} in cluster {cluster.name!r} (its ports: "
                               f"{', '.join(sorted(cluster_ports)) or 'none'})", gateway_at)
            _no_references(gateway, gateway_at)
    for external in blueprint.gateways:
        external_at: Path = ("gateways", str(external.port))
        _no_references(external, external_at)
        for route in external.routes:
            cluster_name, _, port = route.path.partition("/")
            routed = blueprint.cluster(cluster_name)
            if routed is not None and port not in {p.name for s in routed.services for p in _resolved_breed(s).ports}:
                raise DslError(f"cluster {cluster_name!r} has no port {port!r}", external_at + ("routes", route.path))


def _complete_variables(variables: tuple[EnvironmentVariable, ...], at: Path) -> None:
    for variable in variables:
        if isinstance(variable.value, Placeholder):
            raise DslError(f"environment variable {variable.name!r} is a placeholder (~) that no higher scope "
                           "filled: give it a value on the service, or for the whole cluster as CLUSTER."
                           f"{variable.name} in the blueprint's environment_variables", at + (variable.name,))


def _merged(lower: tuple[EnvironmentVariable, ...],
            higher: tuple[EnvironmentVariable, ...]) -> tuple[EnvironmentVariable, ...]:
    merged = {variable.name: variable for variable in lower}
    merged.update((variable.name, variable) for variable in higher)
    return tuple(merged.values())


def _check_value_references(blueprint: Blueprint, service: Service, variables: tuple[EnvironmentVariable, ...],
                            at: Path) -> None:
    breed = _resolved_breed(service)
    local_names = {variable.name for variable in variables} | {constant.name for constant in breed.constants}
    for variable in variables:
        if isinstance(variable.value, Placeholder):
            continue
        for reference in references(variable.value):
            problem = _missing(blueprint, service, local_names, reference)
            if problem:
                raise DslError(f"${reference.text}: {problem}", at + (variable.name,))


def _missing(blueprint: Blueprint, service: Service, local_names: set[str], reference: ValueReference) -> str:
    """Why a reference cannot be filled in, or "" when it can."""
    if isinstance(reference, LocalReference):
        return "" if reference.name in local_names else \
            f"the service has no environment variable or constant {reference.name!r}"
    cluster = referenced_cluster(blueprint, service, reference.cluster)
    if cluster is None:
        return f"no cluster (or dependency alias) {reference.cluster!r} in this blueprint"
    if isinstance(reference, HostReference):
        return ""
    breeds = [_resolved_breed(other) for other in cluster.services]
    if reference.group == "ports":
        names = {port.name for breed in breeds for port in breed.ports}
    elif reference.group == "constants":
        names = {constant.name for breed in breeds for constant in breed.constants}
    else:
        names = {variable.name for other in cluster.services for variable in effective_environment(cluster, other)}
    what = {"ports": "port", "constants": "constant", "environment_variables": "environment variable"}[reference.group]
    return "" if reference.name in names else f"cluster {cluster.name!r} has no {what} {reference.name!r}"


def _check_dependencies(blueprint: Blueprint, breed: Breed, at: Path) -> None:
    check_cycles(breed, at[:-1], {_resolved_breed(service).name: _resolved_breed(service)
                                  for cluster in blueprint.clusters for service in cluster.services})
    for dependency in breed.dependencies:
        pattern = dependency.breed.name
        if not any(_matches(pattern, service.name) for cluster in blueprint.clusters for service in cluster.services):
            raise DslError(f"breed {breed.name!r} depends on {pattern!r}, which no cluster of this blueprint runs",
                           at + (dependency.alias,))


def _check_escalation_targets(blueprint: Blueprint, escalations: tuple[Escalation | Reference, ...],
                              at: Path) -> None:
    for index, escalation in enumerate(escalations):
        if isinstance(escalation, Escalation):
            target = escalation.parameters.get("target")
            if isinstance(target, str) and escalation.type.startswith("scale_") and blueprint.cluster(target) is None:
                raise DslError(f"no cluster {target!r} to scale in this blueprint", at + (index, "target"))
            _check_escalation_targets(blueprint, escalation.escalations, at + (index, "escalations"))


def _no_references(value: Any, at: Path) -> None:
    """DslError for the first Reference left inside an SLA, escalation or gateway."""
    if isinstance(value, Reference):
        raise _unresolved(value, at)
    if isinstance(value, (Sla, Escalation)):
        for index, escalation in enumerate(value.escalations):
            _no_references(escalation, at + ("escalations", index))
    elif isinstance(value, (Gateway, ClusterGateway)):
        for route in value.routes:
            if route.reference is not None:
                raise DslError(f"route {route.path!r} names a stored route ({route.reference!r}), which this project "
                               "does not keep: write the route's weight and condition instead",
                               at + ("routes", route.path))
            _no_references(route.condition, at + ("routes", route.path, "condition"))


def _unresolved(reference: Reference, at: Path) -> DslError:
    return DslError(f"{reference.kind} {reference.name!r} is a reference to a stored {reference.kind} that has not "
                    "been resolved", at)


def _label(artifact: Artifact) -> str:
    """"blueprint 'sava:1.0'", as the reader names documents."""
    kind = artifact.kind if isinstance(artifact, Reference) else kind_of(artifact)
    return f"{kind} {artifact.name!r}" if artifact.name else kind
