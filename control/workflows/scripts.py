"""A script workflow as an orchestrator service: its breed's deployable is the command, run as service
`workflows/NAME` (one instance) with the environment a script needs to reach the platform.

The environment is the breed's variables, overridden by the workflow's, then the platform's own, which nothing
overrides: `VAMP_API_URL` (the API; also as `VAMP_API`, which the `vamp` command reads), `VAMP_TOKEN` (empty
without one), `VAMP_WORKFLOW_NAME`, and for a run on an event `VAMP_EVENT` (the event as the API shows it, JSON).
A `$NAME` in a value names another variable or a constant of the breed. A daemon's service restarts its script
when it exits (the orchestrator's back-off); a run on an event or a timer runs to completion
(`ServiceSpec.restart` False).
"""
from __future__ import annotations

import json
from collections.abc import Callable

from control import dsl
from control.dsl.model import Artifact, Breed, EnvironmentVariable, Placeholder, Reference, Workflow
from control.events.model import Event
from control.orchestrator.base import HealthCheck, ServiceSpec

SERVICE_PREFIX = "workflows/"
MAX_EVENT_VARIABLE = 100_000     # bytes of VAMP_EVENT; a larger event goes without its value (Linux allows 128 KiB)


class CannotRun(Exception):
    """Why a workflow cannot run as it is stored (a missing breed, a docker image, an unfilled variable)."""


def service_of(workflow: str) -> str:
    return SERVICE_PREFIX + workflow


def script_spec(workflow: Workflow, lookup: Callable[[Reference], Artifact | None], *, api_url: str,
                token: str | None, restart: bool, event: Event | None = None) -> ServiceSpec:
    """The service that runs the script once (`restart` False) or as a daemon; CannotRun says why not."""
    try:
        resolved = dsl.resolve_references(workflow, lookup)
        dsl.validate_complete(resolved)
    except dsl.DslError as exc:
        raise CannotRun(str(exc)) from None
    assert isinstance(resolved, Workflow) and isinstance(resolved.breed, Breed)
    breed = resolved.breed
    try:
        command = breed.deployable.argv()
    except ValueError as exc:
        raise CannotRun(f"{exc}: give the breed a cmd or python deployable") from None
    variables = _merged(breed.environment_variables, resolved.environment_variables)
    environment = {variable.variable: _rendered(variable, variables, breed) for variable in variables}
    environment.update(VAMP_API_URL=api_url, VAMP_API=api_url, VAMP_TOKEN=token or "",
                       VAMP_WORKFLOW_NAME=workflow.name)
    if event is not None:
        environment["VAMP_EVENT"] = _event_variable(event)
    checks = breed.health_checks or ()
    check = None
    if checks and breed.ports:
        first = checks[0]
        check = HealthCheck(path=first.path, port=first.port or breed.ports[0].name, protocol=first.protocol,
                            initial_delay=first.initial_delay, interval=first.interval, timeout=first.timeout,
                            failures=first.failures)
    return ServiceSpec(id=service_of(workflow.name), command=command,
                       ports={port.name: port.protocol for port in breed.ports}, environment=environment,
                       instances=1, health_check=check, restart=restart)


def _merged(lower: tuple[EnvironmentVariable, ...], higher: tuple[EnvironmentVariable, ...]
            ) -> tuple[EnvironmentVariable, ...]:
    """By name, the workflow's over the breed's (keeping the breed's alias)."""
    merged = {variable.name: variable for variable in lower}
    for variable in higher:
        inherited = merged.get(variable.name)
        merged[variable.name] = EnvironmentVariable(variable.name, variable.value,
                                                    inherited.alias if inherited else variable.alias)
    return tuple(merged.values())


def _rendered(variable: EnvironmentVariable, variables: tuple[EnvironmentVariable, ...], breed: Breed,
              depth: int = 0) -> str:
    if isinstance(variable.value, Placeholder):        # validate_complete refused these
        raise CannotRun(f"environment variable {variable.name!r} has no value")

    def lookup(reference: dsl.ValueReference) -> str:
        if isinstance(reference, dsl.LocalReference) and depth < 10:
            other = next((v for v in variables if v.name == reference.name and v is not variable), None)
            if other is not None:
                return _rendered(other, variables, breed, depth + 1)
            constant = next((c for c in breed.constants if c.name == reference.name), None)
            if constant is not None:
                return constant.value
        raise CannotRun(f"environment variable {variable.name!r}: a workflow has no ${reference.text} (only its "
                        "own variables and its breed's constants)")
    return dsl.render(variable.value, lookup)


def _event_variable(event: Event) -> str:
    text = json.dumps(event.as_json())
    if len(text.encode()) <= MAX_EVENT_VARIABLE:
        return text
    return json.dumps({**event.as_json(), "value": None})
