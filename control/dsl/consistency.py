"""What VAMP checks when a breed, blueprint or workflow is written, beyond each field on its own: breeds that
depend on themselves (directly or through others), references in a breed's variables and ports to what its
dependencies (or the blueprint's clusters) have, dependencies the blueprint does not run, cluster variables
no breed declares, and `~` placeholders left at the top scope.

Only what is known when the document is read is checked: a breed given by reference (a stored breed's name)
is checked when the blueprint is deployed (control.dsl.resolve.validate_complete). Every error is a DslError
at the field at fault.
"""
from __future__ import annotations

from control.dsl.errors import DslError, Path
from control.dsl.model import Blueprint, Breed, Cluster, EnvironmentVariable, Placeholder, Workflow
from control.dsl.references import HostReference, TraitReference, parse_template, references

_GROUP_NAMES = {"ports": "port", "constants": "constant", "environment_variables": "environment variable"}


def check_breed(breed: Breed, at: Path = (), clusters: tuple[Cluster, ...] | None = None) -> None:
    """A breed and its inline dependencies: no cycle, and every `$NAME.…` reference naming a dependency alias
    (or, for a breed inside a blueprint, a cluster of `clusters`) that has what it names, when that is known."""
    check_cycles(breed, at)
    _check_breed_references(breed, at, clusters)


def check_cycles(breed: Breed, at: Path, lookup: dict[str, Breed] | None = None) -> None:
    """DslError naming the cycle when the breed depends on itself, through inline dependencies or, with `lookup`
    (breed name -> breed), through the breeds it names."""
    def visit(current: Breed, trail: tuple[str, ...], where: Path) -> None:
        for dependency in current.dependencies:
            dependency_at = where + ("dependencies", dependency.alias)
            name = dependency.breed.name
            if name in trail:
                cycle = " -> ".join(trail[trail.index(name):] + (name,))
                raise DslError(f"recursive dependency: {cycle} (a breed cannot depend on itself)", dependency_at)
            target = dependency.breed if isinstance(dependency.breed, Breed) else (lookup or {}).get(name)
            if target is not None and len(trail) < 100:
                visit(target, trail + (name,), dependency_at + (("breed",) if isinstance(dependency.breed, Breed)
                                                                  else ()))
    visit(breed, (breed.name,), at)


def _check_breed_references(breed: Breed, at: Path, clusters: tuple[Cluster, ...] | None) -> None:
    cluster_names = {cluster.name for cluster in clusters or ()}
    aliases = {dependency.alias: dependency.breed for dependency in breed.dependencies}
    values = [(variable.value, at + ("environment_variables", variable.name))
              for variable in breed.environment_variables if not isinstance(variable.value, Placeholder)]
    values += [(parse_template(port.reference), at + ("ports", port.name)) for port in breed.ports
               if port.reference is not None]
    for template, where in values:
        for reference in references(template):
            if not isinstance(reference, (HostReference, TraitReference)):
                continue
            name = reference.cluster
            if name in aliases:
                target = aliases[name]
                if isinstance(reference, TraitReference) and isinstance(target, Breed) \
                        and reference.name not in _trait_names(target, reference.group):
                    raise DslError(f"${reference.text}: dependency {name!r} (breed {target.name!r}) has no "
                                   f"{_GROUP_NAMES[reference.group]} {reference.name!r}", where)
            elif clusters is not None and name not in cluster_names:
                raise DslError(f"${reference.text}: no cluster (or dependency alias) {name!r} in this blueprint",
                               where)
            elif clusters is None:
                declared = ", ".join(aliases) or "none"
                raise DslError(f"${reference.text}: {name!r} is not a dependency of breed {breed.name!r} (its "
                               f"dependencies: {declared}); declare it under dependencies", where)
    for dependency in breed.dependencies:
        if isinstance(dependency.breed, Breed):
            _check_breed_references(dependency.breed, at + ("dependencies", dependency.alias, "breed"), None)


def _trait_names(breed: Breed, group: str) -> set[str]:
    if group == "ports":
        return {port.name for port in breed.ports}
    if group == "constants":
        return {constant.name for constant in breed.constants}
    return {variable.name for variable in breed.environment_variables}


def check_blueprint(blueprint: Blueprint) -> None:
    """Every inline breed checked (check_breed, with the blueprint's clusters), its references to other clusters
    naming what they have, its dependencies run by the blueprint; cluster variables declared by the cluster's
    inline breeds; no `~` on a service (nothing above it fills one)."""
    service_names = [service.name for cluster in blueprint.clusters for service in cluster.services]
    for cluster in blueprint.clusters:
        for index, service in enumerate(cluster.services):
            at: Path = ("clusters", cluster.name, "services", index)
            _no_placeholders(service.environment_variables, at + ("environment_variables",), service.name)
            if not isinstance(service.breed, Breed):
                continue
            breed_at = at + ("breed",)
            check_breed(service.breed, breed_at, blueprint.clusters)
            _check_cluster_references(blueprint, service.breed, breed_at)
            for dependency in service.breed.dependencies:
                pattern = dependency.breed.name
                if not any(_matches(pattern, name) for name in service_names):
                    raise DslError(f"breed {service.breed.name!r} depends on {pattern!r}, which no cluster of this "
                                   "blueprint runs", breed_at + ("dependencies", dependency.alias))
        _check_cluster_variables(cluster)


def _check_cluster_references(blueprint: Blueprint, breed: Breed, at: Path) -> None:
    """`$CLUSTER.GROUP.NAME` (or through a dependency alias) naming a cluster whose breeds are all inline: one of
    them has it."""
    for variable in breed.environment_variables:
        if isinstance(variable.value, Placeholder):
            continue
        for reference in references(variable.value):
            if not isinstance(reference, TraitReference):
                continue
            cluster = _referenced_cluster(blueprint, breed, reference.cluster)
            breeds = [service.breed for service in cluster.services] if cluster is not None else []
            if not breeds or not all(isinstance(other, Breed) for other in breeds):
                continue
            if not any(reference.name in _trait_names(other, reference.group) for other in breeds
                       if isinstance(other, Breed)):
                raise DslError(f"${reference.text}: cluster {cluster.name!r} has no "   # type: ignore[union-attr]
                               f"{_GROUP_NAMES[reference.group]} {reference.name!r}",
                               at + ("environment_variables", variable.name))


def _referenced_cluster(blueprint: Blueprint, breed: Breed, name: str) -> Cluster | None:
    cluster = blueprint.cluster(name)
    if cluster is not None:
        return cluster
    dependency = next((d for d in breed.dependencies if d.alias == name), None)
    if dependency is None:
        return None
    return next((c for c in blueprint.clusters if any(_matches(dependency.breed.name, s.name) for s in c.services)),
                None)


def _check_cluster_variables(cluster: Cluster) -> None:
    """A blueprint-level `CLUSTER.NAME` sets a variable the cluster's breeds declare: every inline one must."""
    for variable in cluster.environment_variables:
        for service in cluster.services:
            if isinstance(service.breed, Breed) and \
                    all(declared.name != variable.name for declared in service.breed.environment_variables):
                raise DslError(f"breed {service.breed.name!r} of cluster {cluster.name!r} declares no environment "
                               f"variable {variable.name!r} to set (declare it in the breed, {variable.name}: ~ for "
                               "one a higher scope fills)",
                               ("environment_variables", f"{cluster.name}.{variable.name}"))


def check_workflow(workflow: Workflow) -> None:
    """A script's inline breed checked (check_breed); no `~` at the workflow's own level."""
    if isinstance(workflow.breed, Breed):
        check_breed(workflow.breed, ("breed",))
    if workflow.breed is not None:
        name = workflow.breed.name
        _no_placeholders(workflow.environment_variables, ("environment_variables",), name)


def _no_placeholders(variables: tuple[EnvironmentVariable, ...], at: Path, service: str) -> None:
    for variable in variables:
        if isinstance(variable.value, Placeholder):
            raise DslError(f"environment variable {variable.name!r} of {service!r} needs a value here: ~ is for a "
                           "breed, whose value a higher scope fills, and nothing is above this one",
                           at + (variable.name,))


def _matches(pattern: str, name: str) -> bool:
    return name.startswith(pattern[:-1]) if pattern.endswith("*") else name == pattern
