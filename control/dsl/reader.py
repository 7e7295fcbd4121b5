"""Reading Vamp's DSL: documents (YAML text, or the dicts JSON and YAML give) to the model of
control.dsl.model, every shorthand expanded. Errors are `DslError`s naming the document, the path to the
field as it was written and what was expected; unknown fields are errors everywhere.

Kinds (singular or plural, any case): breed, blueprint, deployment, gateway, scale, condition, sla,
escalation, workflow. A `kind:` inside a document must agree with the kind it is read as (a deployment may
also say `kind: blueprints`). A deployment document that is only a name (`name: sava:1.1`, Vamp's merge body)
or a `ref:` is a `Reference("blueprint", name)`.

Shorthands (each reads to the same model as its long form):
- `ref: NAME` = `reference: NAME` for a stored breed, scale, sla, escalation or condition; a bare name is a
  breed reference where a breed is expected, a scale or sla reference where those are.
- `env:` = `environment_variables:`, `dialect:` = `dialects:`; a value `~` is a placeholder; breed variables
  may carry an alias, `debug[SAVA_DEBUG]: true`. Values are text (numbers and booleans as YAML writes them)
  and may hold references (`control.dsl.references`).
- Deployables: `deployable: image:tag` (docker), `deployable: {type, definition}`, `deployable: cmd://...`,
  `python://module ...` or `docker://image`, and on the breed itself `cmd: "..."` or `python: module ...`.
- Breed ports: `8080/http`, `9023/tcp`, or a bare number (http).
- Clusters: a breed name (`sava: sava:1.0.0`), a list of services, a mapping with `services:` (one service,
  a list, or a breed name), or a mapping without `services:` that is the service itself (its `gateways:` and
  `sla:` stay with the cluster). A service is a breed name, `{ref: NAME}`, `{breed: ..., scale: ...}`, or an
  inline breed (a mapping with `name:` and no `breed:`).
- Scale: a stored scale's name, or a whole number of instances (`scale: 3`); missing fields take Vamp's
  defaults (1 CPU, 1GB, 1 instance).
- Health checks: one mapping or a list; `path` defaults to `/`, `protocol` to http.
- Gateway routes: a mapping, one route path, or a list of paths and single-route mappings; a condition is
  text or `{condition: text}` or `{ref: NAME}`; `virtual_hosts` one host or a list.
- Blueprint gateways: `{9050: sava/webport}` (a route path as the whole value) or `{9050/http: {routes: ...}}`.
  Cluster gateways are keyed by port name; one with `routes:`/`sticky:` at its top is for the cluster's only
  port.
- SLA escalations: one escalation or a list; an escalation `{to_all: [...]}` = `{type: to_all, escalations:
  [...]}` (also `to_one`).
- Workflows: a script (`breed:`) or a built-in (`workflow: NAME` with `parameters:`, checked by the built-in
  itself when read). Schedules: `daemon`, `{event: tag | [tags] | {tags: [...]}}`, `{time: PERIOD | {period,
  start, repeat}}`.

Percentages allow two decimals ("2.5%"); durations are gateway.common.units durations (a bare number is seconds);
memory and CPU are control.dsl.units values.
"""
from __future__ import annotations

import datetime
import math
import re
from dataclasses import replace
from typing import Any, Literal, TypeVar, overload
from collections.abc import Callable, Iterator

import yaml

from control.dsl.errors import DslError, Path
from control.dsl.model import (DEPLOYABLE_TYPES, FULL, HEALTH_CHECK_PROTOCOLS, PLACEHOLDER, Argument, Artifact,
                               Blueprint, Breed, Cluster, ClusterGateway, Condition, Constant, Dependency, Deployable,
                               Deployment, EnvironmentVariable, Escalation, Gateway, GatewayRoute, HealthCheck,
                               Placeholder, Port, Reference, Scale, Schedule, Service, Sla, Workflow)
from control.dsl.consistency import check_blueprint, check_breed, check_workflow
from control.dsl.selectors import check_selector
from control.dsl.references import Template, TraitReference, parse_template
from control.dsl.units import parse_cpu, parse_memory, parse_period
from gateway import ConditionError, ConfigError, Target, canonical_condition, gateway_from_dict
from gateway import Gateway as ConfigGateway
from gateway.common.errors import Invalid
from gateway.common.names import RULE as NAME_RULE, breaks_rule
from gateway.common.units import (format_percent, parse_address, parse_duration, parse_percent, parse_port, shown,
                                  unknown_field)
from gateway.common.yamltext import YamlTextError, documents, line_of

_Blueprint = TypeVar("_Blueprint", bound=Blueprint)

KINDS = ("breed", "blueprint", "deployment", "gateway", "scale", "condition", "sla", "escalation", "workflow")
PLURALS = {kind: kind + "s" for kind in KINDS}

BREED_FIELDS = ("name", "deployable", "cmd", "python", "ports", "environment_variables", "env", "constants",
                "arguments", "dependencies", "health_checks")
BLUEPRINT_FIELDS = ("name", "gateways", "clusters", "environment_variables", "env", "dialects", "dialect", "metadata")
CLUSTER_FIELDS = ("services", "gateways", "sla", "health_checks", "network", "dialects", "dialect")
CLUSTER_ONLY_FIELDS = ("gateways", "sla")       # what stays with a cluster written without `services:`
SERVICE_FIELDS = ("breed", "scale", "environment_variables", "env", "arguments", "health_checks", "network",
                  "dialects", "dialect")
SCALE_FIELDS = ("name", "cpu", "memory", "instances")
HEALTH_CHECK_FIELDS = ("path", "port", "protocol", "initial_delay", "interval", "timeout", "failures")
GATEWAY_FIELDS = ("name", "port", "sticky", "virtual_hosts", "routes", "selector", "service", "metadata")
BLUEPRINT_GATEWAY_FIELDS = ("port", "sticky", "virtual_hosts", "routes", "selector", "metadata")
CLUSTER_GATEWAY_FIELDS = ("sticky", "routes", "virtual_hosts")
KEPT_ROUTE_FIELDS = ("balance", "rewrites", "selector")    # VAMP's, read and kept (not applied)
ROUTE_FIELDS = ("weight", "condition", "condition_strength", "targets") + KEPT_ROUTE_FIELDS
CLUSTER_ROUTE_FIELDS = ("weight", "condition", "condition_strength") + KEPT_ROUTE_FIELDS
CONDITION_FIELDS = ("name", "condition")
WORKFLOW_FIELDS = ("name", "breed", "workflow", "parameters", "schedule", "scale", "environment_variables", "env",
                   "arguments", "network", "status")
SCRIPT_ONLY_FIELDS = ("scale", "environment_variables", "env", "arguments", "network")
WORKFLOW_STATUSES = ("starting", "running", "suspended", "suspending", "stopping", "restarting")   # VAMP's
TIME_SCHEDULE_FIELDS = ("period", "start", "repeat")
SLA_FIELDS = {"response_time_sliding_window": ("threshold", "window"), "error_rate": ("threshold", "window"),
              "escalation_only": ()}
ESCALATION_FIELDS = {"scale_instances": ("minimum", "maximum", "scale_by", "target"),
                     "scale_cpu": ("minimum", "maximum", "scale_by", "target"),
                     "scale_memory": ("minimum", "maximum", "scale_by", "target"),
                     "to_all": ("escalations",), "to_one": ("escalations",)}
MAX_INSTANCES = 1000
MAX_FAILURES = 1000

_ARTIFACT_NAME = re.compile(r"[^\s/\[\]\x00-\x1f\x7f]+")
_LABEL_NAME = re.compile(r"[^\s\x00-\x1f\x7f]+")     # names worth quoting in an error (gateways have '/')
_TRAIT_NAME = re.compile(r"[A-Za-z0-9_-]+")
_VARIABLE_NAME = re.compile(r"[A-Za-z0-9_.-]+")      # VAMP allows dots: `time.out`, `a.b.c`
_ALIASED_NAME = re.compile(r"([A-Za-z0-9_.-]+)\[([A-Za-z0-9_.-]+)\]")
_CLUSTER_NAME = _TRAIT_NAME
_ROUTE_SEGMENT = re.compile(r"[^\s/\[\]\x00-\x1f\x7f]+")
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_DEPLOYABLE_SCHEMES = {"cmd://": "cmd", "python://": "python", "docker://": "docker"}
_DEPLOYABLE_TYPE_ALIASES = {"cmd": "cmd", "command": "cmd", "python": "python", "docker": "docker",
                            "container/docker": "docker"}


# -- entry points ------------------------------------------------------------------------------------
def canonical_kind(kind: object) -> str:
    """'breeds', 'Breed', 'breed' -> 'breed'; DslError for anything else."""
    text = kind.strip().lower() if isinstance(kind, str) else ""
    for singular, plural in PLURALS.items():
        if text in (singular, plural):
            return singular
    raise DslError(f"expected a kind, one of {', '.join(PLURALS.values())} (or singular), got {shown(kind)}")


@overload
def read(kind: Literal["deployment", "deployments"], data: Any) -> Deployment | Reference: ...
@overload
def read(kind: Literal["scale", "scales"], data: Any) -> Scale: ...
@overload
def read(kind: str, data: Any) -> Artifact: ...


def read(kind: str, data: Any) -> Artifact:
    """One document as `kind` (singular or plural) to the model; DslError if it is not valid."""
    kind = canonical_kind(kind)
    return _read(kind, data, _document_label(kind, data) or kind)


def read_text(text: str) -> list[Artifact]:
    """Every document of multi-document YAML (or one JSON document), each with its own `kind:`; an error
    names the document by kind and name (or by its number) and carries the source line."""
    artifacts: list[Artifact] = []
    for number, node, data in _yaml_documents(text):
        label = f"document {number}"
        try:
            if not isinstance(data, dict) or "kind" not in data:
                raise DslError("every document needs a 'kind:' (breeds, blueprints, deployments, gateways, "
                               "scales, conditions, slas, escalations or workflows)", document=label)
            kind = _parsed(canonical_kind, data["kind"], ("kind",))
            artifacts.append(_read(kind, data, _document_label(kind, data) or label))
        except DslError as error:
            error.document = error.document or label
            error.line = line_of(node, error.location)
            raise
    return artifacts


def _read(kind: str, data: Any, label: str) -> Artifact:
    try:
        return _READERS[kind](_without_kind(kind, data))
    except DslError as error:
        error.document = label
        raise
    except RecursionError:
        raise DslError("the document is nested too deeply", document=label) from None


def _without_kind(kind: str, data: Any) -> Any:
    if not isinstance(data, dict) or "kind" not in data:
        return data
    given = _parsed(canonical_kind, data["kind"], ("kind",))
    if given != kind and not (kind == "deployment" and given == "blueprint"):
        raise DslError(f"this document is read as {PLURALS[kind]}, but says kind {shown(data['kind'])}", ("kind",))
    return {key: value for key, value in data.items() if key != "kind"}


def _document_label(kind: str, data: Any) -> str:
    """"blueprint 'sava:1.0'", or "" when the document has no usable name."""
    name = data.get("name") if isinstance(data, dict) else None
    if isinstance(name, str) and _LABEL_NAME.fullmatch(name) and len(name) <= 200:
        return f"{kind} {name!r}"
    return ""


# -- YAML text -----------------------------------------------------------------------------------------
def _yaml_documents(text: str) -> Iterator[tuple[int, yaml.Node, Any]]:
    """(number from 1, node, data) of every non-empty document; YAML errors as DslError with the line."""
    number = 1
    try:
        for node, data in documents(text):
            if data is not None:        # an empty document, like one after a final `---`
                yield number, node, data
                number += 1
    except YamlTextError as exc:
        raise DslError(exc.message, document=f"document {number}", line=exc.line) from None


# -- breeds ------------------------------------------------------------------------------------------
def _read_breed(data: Any, at: Path = ()) -> Breed:
    body = _mapping(data, at, "breed fields")
    _only_fields(body, BREED_FIELDS, at, "a breed")
    name = _artifact_name(body.get("name"), at + ("name",), "breed")
    ports = _ports(body.get("ports"), at + ("ports",))
    return Breed(
        name=name,
        deployable=_breed_deployable(body, at),
        ports=ports,
        environment_variables=_environment(body, at),
        constants=_constants(body.get("constants"), at + ("constants",)),
        arguments=_arguments(body.get("arguments"), at + ("arguments",)),
        dependencies=_dependencies(body.get("dependencies"), at + ("dependencies",)),
        health_checks=_health_checks(body.get("health_checks"), at + ("health_checks",), ports))


def _breed_deployable(body: dict[str, Any], at: Path) -> Deployable:
    given = [key for key in ("deployable", "cmd", "python") if body.get(key) is not None]
    if not given:
        raise DslError("required field missing: what to run, as deployable (a docker image or {type, "
                       "definition}), cmd (a command line) or python (a module)", at + ("deployable",))
    if len(given) > 1:
        raise DslError(f"give only one of deployable, cmd and python (this breed has {' and '.join(given)})",
                       at + (given[1],))
    key = given[0]
    if key == "deployable":
        return _deployable(body[key], at + (key,))
    return _deployable_of_type(key, body[key], at + (key,))


def _deployable(value: Any, at: Path) -> Deployable:
    if isinstance(value, str):
        for scheme, scheme_type in _DEPLOYABLE_SCHEMES.items():
            if value.strip().lower().startswith(scheme):
                return _deployable_of_type(scheme_type, value.strip()[len(scheme):], at)
        return _deployable_of_type("docker", value, at)
    body = _mapping(value, at, "deployable fields (type, definition), or a docker image")
    _only_fields(body, ("type", "definition"), at, "a deployable")
    type_text = body.get("type", "docker")
    type_ = _DEPLOYABLE_TYPE_ALIASES.get(type_text.strip().lower()) if isinstance(type_text, str) else None
    if type_ is None:
        raise DslError(f"expected a deployable type, one of {', '.join(DEPLOYABLE_TYPES)}, got {shown(type_text)}",
                       at + ("type",))
    return _deployable_of_type(type_, body.get("definition"), at + ("definition",))


def _deployable_of_type(type_: str, definition: Any, at: Path) -> Deployable:
    what = {"cmd": "a command line, like 'python -m demo.sava --version 1.0.0'",
            "python": "a module name and its arguments, like 'control.demo.sava --version 1.0.0'",
            "docker": "a docker image, like 'magneticio/sava:1.0.0'"}[type_]
    text = definition.strip() if isinstance(definition, str) else ""
    if not text or "\x00" in text:
        raise DslError(f"expected {what}, got {shown(definition)}", at)
    if type_ == "docker":
        if any(character.isspace() for character in text):
            raise DslError(f"expected {what} (no spaces; for a command use cmd: or type: cmd), "
                           f"got {shown(definition)}", at)
        return Deployable(type_, text)
    deployable = Deployable(type_, text)
    try:
        argv = deployable.argv()
    except ValueError as exc:   # shlex: unbalanced quotes
        raise DslError(f"expected {what}: {exc}", at) from None
    program = argv[2] if type_ == "python" else argv[0]
    if not program or (type_ == "python" and not _MODULE.fullmatch(program)):
        raise DslError(f"expected {what}, got {shown(definition)}", at)
    return deployable


def _ports(value: Any, at: Path) -> tuple[Port, ...]:
    ports = []
    for name, port in _mapping_or_empty(value, at, "port names to ports, like {webport: 8080/http}").items():
        _trait_name(name, at + (name,), "port")
        if port is None:
            raise DslError("a port needs a number, like 8080/http (a placeholder ~ is not allowed here)",
                           at + (name,))
        if isinstance(port, str) and port.strip().startswith("$"):
            ports.append(Port(name, 0, reference=_port_reference(port, at + (name,))))
            continue
        number, protocol = _parsed(parse_port, port, at + (name,))
        ports.append(Port(name, number, protocol))
    return tuple(ports)


def _port_reference(value: str, at: Path) -> str:
    """`$db.constants.port`: a port a dependency's constant gives (VAMP's form), kept as its text."""
    template = _parsed(parse_template, value.strip(), at)
    if len(template.parts) != 1 or not isinstance(template.parts[0], TraitReference) \
            or template.parts[0].group != "constants":
        raise DslError(f"expected a port like 8080/http, or a dependency's constant like $db.constants.port, got "
                       f"{shown(value)}", at)
    return template.text


def _environment(body: dict[str, Any], at: Path) -> tuple[EnvironmentVariable, ...]:
    key, value = _one_of(body, ("environment_variables", "env"), at)
    at = at + (key,)
    variables: list[EnvironmentVariable] = []
    for name, raw in _mapping_or_empty(value, at, "variable names to values").items():
        aliased = _ALIASED_NAME.fullmatch(name)
        if aliased is None:
            _variable_name(name, at + (name,))
        plain_name, alias = aliased.groups() if aliased else (name, None)
        if any(variable.name == plain_name for variable in variables):
            raise DslError(f"environment variable {plain_name!r} is given twice", at + (name,))
        variables.append(EnvironmentVariable(plain_name, _variable_value(raw, at + (name,)), alias))
    return tuple(variables)


def _variable_name(value: Any, at: Path) -> str:
    if not isinstance(value, str) or not _VARIABLE_NAME.fullmatch(value) or len(value) > 200:
        raise DslError("expected an environment variable name of letters, digits, '-', '_' and '.' (an alias is "
                       f"written NAME[ALIAS]), got {shown(value)}", at)
    return value


def _variable_value(value: Any, at: Path) -> Template | Placeholder:
    if value is None:
        return PLACEHOLDER
    return _parsed(parse_template, _scalar_text(value, at), at)


def _constants(value: Any, at: Path) -> tuple[Constant, ...]:
    constants = []
    for name, raw in _mapping_or_empty(value, at, "constant names to values").items():
        _trait_name(name, at + (name,), "constant")
        if raw is None:
            raise DslError("a constant needs a value (a placeholder ~ is not allowed here)", at + (name,))
        constants.append(Constant(name, _scalar_text(raw, at + (name,))))
    return tuple(constants)


def _arguments(value: Any, at: Path) -> tuple[Argument, ...]:
    """A mapping, or Vamp's list of single-entry mappings (`- privileged: true`)."""
    if value is None:
        return ()
    if isinstance(value, list):
        entries = []
        for index, item in enumerate(value):
            item_body = _mapping(item, at + (index,), "one argument, like {privileged: true}")
            if len(item_body) != 1:
                raise DslError("expected one argument per list item, like {privileged: true}", at + (index,))
            (name, raw), = item_body.items()
            entries.append((name, raw, at + (index, name)))
    else:
        entries = [(name, raw, at + (name,)) for name, raw in _mapping(value, at, "arguments").items()]
    arguments: list[Argument] = []
    for name, raw, item_at in entries:
        _trait_name(name, item_at, "argument")
        if raw is None:
            raise DslError("an argument needs a value", item_at)
        if any(argument.name == name for argument in arguments):
            raise DslError(f"argument {name!r} is given twice", item_at)
        if name == "privileged" and _scalar_text(raw, item_at).lower() not in ("true", "false"):
            raise DslError(f"expected true or false, got {shown(raw)}", item_at)
        arguments.append(Argument(name, _scalar_text(raw, item_at)))
    return tuple(arguments)


def _dependencies(value: Any, at: Path) -> tuple[Dependency, ...]:
    dependencies = []
    for alias, raw in _mapping_or_empty(value, at, "aliases to breeds, like {cache: redis:1.*}").items():
        _trait_name(alias, at + (alias,), "dependency alias")
        item_at = at + (alias,)
        if isinstance(raw, dict) and set(raw) == {"breed"}:
            raw, item_at = raw["breed"], item_at + ("breed",)
        dependencies.append(Dependency(alias, _breed_or_reference(raw, item_at)))
    return tuple(dependencies)


def _breed_or_reference(value: Any, at: Path) -> Breed | Reference:
    if isinstance(value, str):
        return Reference("breed", _artifact_name(value, at, "breed"))
    body = _mapping(value, at, "a breed, or a breed's name")
    return _reference(body, "breed", at) or _read_breed(body, at)


def _health_checks(value: Any, at: Path, ports: tuple[Port, ...] | None) -> tuple[HealthCheck, ...] | None:
    """One mapping or a list; `ports` (when known) are the ports the checks may name."""
    if value is None:
        return None
    items = [(value, at)] if isinstance(value, dict) else \
        [(item, at + (index,)) for index, item in enumerate(_list(value, at, "health checks"))]
    return tuple(_health_check(item, item_at, ports) for item, item_at in items)


def _health_check(value: Any, at: Path, ports: tuple[Port, ...] | None) -> HealthCheck:
    body = _mapping(value, at, "health check fields")
    _only_fields(body, HEALTH_CHECK_FIELDS, at, "a health check")
    fields: dict[str, Any] = {}
    if body.get("path") is not None:
        path = body["path"]
        if not isinstance(path, str) or not path.strip() or any(c.isspace() for c in path.strip()):
            raise DslError(f"expected an HTTP path like /health, got {shown(path)}", at + ("path",))
        fields["path"] = path.strip() if path.strip().startswith("/") else "/" + path.strip()
    if body.get("port") is not None:
        fields["port"] = _health_check_port(body["port"], at + ("port",), ports)
    if body.get("protocol") is not None:
        protocol = body["protocol"]
        if not isinstance(protocol, str) or protocol.strip().lower() not in HEALTH_CHECK_PROTOCOLS:
            raise DslError(f"expected {', '.join(HEALTH_CHECK_PROTOCOLS)}, got {shown(protocol)}", at + ("protocol",))
        fields["protocol"] = protocol.strip().lower()
    if body.get("initial_delay") is not None:
        fields["initial_delay"] = _parsed(lambda v: parse_duration(v, allow_zero=True), body["initial_delay"],
                                          at + ("initial_delay",))
    for key in ("interval", "timeout"):
        if body.get(key) is not None:
            fields[key] = _parsed(parse_duration, body[key], at + (key,))
    if body.get("failures") is not None:
        fields["failures"] = _whole_number(body["failures"], at + ("failures",), minimum=1, maximum=MAX_FAILURES)
    return HealthCheck(**fields)


def _health_check_port(value: Any, at: Path, ports: tuple[Port, ...] | None) -> str:
    """A port's name, or its number (VAMP allows `port: 8080`) kept as text; checked against `ports` when known
    (a cluster's check: the ports of any of its services)."""
    if isinstance(value, int) and not isinstance(value, bool) or isinstance(value, str) and value.strip().isdigit():
        number = _parsed(parse_port, value, at)[0]
        if ports is not None and all(port.number != number for port in ports if port.reference is None):
            raise DslError(f"no port {number}; the breed has: "
                           f"{', '.join(f'{p.name} ({p.number})' for p in ports) or 'no ports'}", at)
        return str(number)
    name = _trait_name(value, at, "port", " or a port number")
    if ports is not None and name not in {port.name for port in ports}:
        raise DslError(f"no port named {name!r}; the breed has: {', '.join(port.name for port in ports) or 'no ports'}",
                       at)
    return name


# -- scales, conditions ------------------------------------------------------------------------------
def _read_scale(data: Any, at: Path = ()) -> Scale:
    body = _mapping(data, at, "scale fields (name, cpu, memory, instances)")
    _only_fields(body, SCALE_FIELDS, at, "a scale")
    return _scale_fields(body, at, _artifact_name(body.get("name"), at + ("name",), "scale"))


def _inline_scale(value: Any, at: Path) -> Scale | Reference:
    if value is None:
        return Scale()
    if isinstance(value, str):
        return Reference("scale", _artifact_name(value, at, "scale"))
    if isinstance(value, int) and not isinstance(value, bool):
        return Scale(instances=_whole_number(value, at, maximum=MAX_INSTANCES))
    body = _mapping(value, at, "scale fields (cpu, memory, instances), a stored scale's name, or a number "
                               "of instances")
    reference = _reference(body, "scale", at)
    if reference is not None:
        return reference
    _only_fields(body, SCALE_FIELDS[1:], at, "an inline scale (use ref: NAME for a stored one)")
    return _scale_fields(body, at, None)


def _scale_fields(body: dict[str, Any], at: Path, name: str | None) -> Scale:
    fields: dict[str, Any] = {"name": name}
    if body.get("cpu") is not None:
        fields["cpu"] = _parsed(parse_cpu, body["cpu"], at + ("cpu",))
    if body.get("memory") is not None:
        fields["memory"] = _parsed(parse_memory, body["memory"], at + ("memory",))
    if body.get("instances") is not None:
        fields["instances"] = _whole_number(body["instances"], at + ("instances",), maximum=MAX_INSTANCES)
    return Scale(**fields)


def _read_condition(data: Any, at: Path = ()) -> Condition:
    body = _mapping(data, at, "condition fields (name, condition)")
    _only_fields(body, CONDITION_FIELDS, at, "a condition")
    name = _artifact_name(body.get("name"), at + ("name",), "condition")
    return Condition(_condition_text(body.get("condition"), at + ("condition",)), name)


def _condition_text(value: Any, at: Path) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DslError(f"expected a condition as text, like 'browser = Chrome', got {shown(value)}", at)
    try:
        return canonical_condition(value)
    except ConditionError as exc:
        raise DslError(str(exc), at) from None


# -- gateways ----------------------------------------------------------------------------------------
def _read_gateway(data: Any, at: Path = ()) -> Gateway:
    body = _mapping(data, at, "gateway fields")
    _only_fields(body, GATEWAY_FIELDS, at, "a gateway")
    name = body.get("name")
    if not isinstance(name, str) or not name:
        raise DslError(f"expected the gateway's name, like 'sava/9050', got {shown(name)}", at + ("name",))
    if body.get("port") is None:
        raise DslError("required field missing: the port, like 9050 or '9050/http'", at + ("port",))
    routes = _routes(body.get("routes"), at + ("routes",), ROUTE_FIELDS, _gateway_route_path)
    return replace(_checked_gateway(name, body, routes, at),
                   service=_gateway_service(body.get("service"), at + ("service",)))


def check_kept_gateway_fields(body: Any) -> None:
    """The fields of a gateway document that VAMP has and the gateway's configuration has not (a gateway's
    `selector`, `service`, `metadata`, a route's `balance`, `rewrites`, `selector`), checked as this reader
    checks them; DslError at the field (control.dsl.gateways keeps them)."""
    if not isinstance(body, dict):
        return
    _selector(body.get("selector"), ("selector",))
    _gateway_service(body.get("service"), ("service",))
    _metadata(body, ())
    routes = body.get("routes")
    for path, route in (routes.items() if isinstance(routes, dict) else ()):
        if isinstance(route, dict):
            at: Path = ("routes", path)
            _optional_text(route.get("balance"), at + ("balance",), "a balance mode, like round-robin")
            _rewrites(route.get("rewrites"), at + ("rewrites",))
            _route_selector(str(path), route.get("selector"), at + ("selector",))


def _gateway_service(value: Any, at: Path) -> str | None:
    """VAMP's `service: {host, port}` (where the orchestrator exposes the gateway) as `host:port/protocol`."""
    if value is None:
        return None
    body = _mapping(value, at, "the service's host and port")
    _only_fields(body, ("host", "port"), at, "a gateway service")
    host = _optional_text(body.get("host"), at + ("host",), "a host")
    if host is None or any(c.isspace() for c in host):
        raise DslError(f"expected a host, got {shown(body.get('host'))}", at + ("host",))
    number, protocol = _parsed(parse_port, body.get("port"), at + ("port",))
    return f"{host}:{number}/{protocol}"


def _blueprint_gateways(value: Any, at: Path, clusters: tuple[Cluster, ...]) -> tuple[Gateway, ...]:
    gateways: list[Gateway] = []
    for key, raw in _mapping_or_empty(value, at, "ports to gateways, like {9050: sava/webport}").items():
        gateway_at = at + (key,)
        if isinstance(raw, (str, list)):        # `9050: sava/webport`: the routes are the whole value
            body, routes_at = {"routes": raw}, gateway_at
        else:
            body, routes_at = _mapping(raw, gateway_at, "gateway fields"), gateway_at + ("routes",)
            _only_fields(body, BLUEPRINT_GATEWAY_FIELDS, gateway_at, "a blueprint gateway (keyed by its port, or "
                         "by a name with port: in it)")
        routes = _routes(body.get("routes"), routes_at, ROUTE_FIELDS,
                         lambda path, route_at: _cluster_port_path(path, route_at, clusters))
        # VAMP also keys a gateway by a name, `web: {port: 8080/http, ...}`: the name is only a label here
        port, port_at = (body["port"], gateway_at + ("port",)) if body.get("port") is not None else (key, gateway_at)
        gateway = _checked_gateway(None, {**body, "port": port}, routes, gateway_at, port_at=port_at)
        if any(other.port == gateway.port for other in gateways):
            raise DslError(f"port {gateway.port} has two gateways", gateway_at)
        gateways.append(gateway)
    return tuple(gateways)


def _checked_gateway(name: str | None, body: dict[str, Any], routes: list[tuple[GatewayRoute, Path]], at: Path,
                     port_at: Path | None = None) -> Gateway:
    """Validate what the gateway itself checks (port, sticky, virtual hosts, weights adding up, tcp rules)
    with gateway.config.load, so a gateway the DSL accepts is one the gateway accepts."""
    virtual_hosts = body.get("virtual_hosts")
    config = {"port": body["port"], "sticky": body.get("sticky"),
              "virtual_hosts": [virtual_hosts] if isinstance(virtual_hosts, str) else virtual_hosts,
              "routes": {route.path: _route_for_check(route) for route, _ in routes}}
    places: dict[Any, Path] = {("routes", route.path): route_at for route, route_at in routes}
    places.update(port=port_at or at + ("port",), name=at + ("name",))
    checked = _checked_by_gateway_config(name or "gateway", config, at, places)
    return Gateway(name=checked.name if name else None, port=checked.port, protocol=checked.protocol,
                   sticky=checked.sticky, virtual_hosts=checked.virtual_hosts,
                   routes=tuple(route for route, _ in routes), selector=_selector(body.get("selector"),
                                                                                   at + ("selector",)),
                   metadata=_metadata(body, at))


def _metadata(body: dict[str, Any], at: Path) -> dict[str, Any]:
    """VAMP's free-form `metadata` (labels and the like), kept as written."""
    return _plain(_mapping_or_empty(body.get("metadata"), at + ("metadata",), "metadata"), at + ("metadata",))


def _route_for_check(route: GatewayRoute) -> dict[str, Any]:
    """A route as gateway.config.load reads it; a condition stored elsewhere stands in as `true`."""
    condition = route.condition.condition if isinstance(route.condition, Condition) else \
        ("true" if route.condition is not None else None)
    return {"weight": format_percent(route.weight) if route.weight is not None else None,
            "condition": condition,
            # (a route with a condition has a strength: the reader gives it 100% when none is written)
            "condition_strength": format_percent(route.condition_strength)  # type: ignore[arg-type]
            if route.condition else None,
            "targets": list(route.targets)}


def _checked_by_gateway_config(name: str, config: dict[str, Any], at: Path,
                               places: dict[Any, Path]) -> ConfigGateway:
    """gateway.config.load's validation; its error located where the field was written (`places` maps the
    port, the name and each route to that)."""
    try:
        return gateway_from_dict(name, config)
    except ConfigError as exc:
        location = exc.location[2:]
        if location[:1] == ("port",):
            where = places["port"]
        elif not location:
            where = places["name"]
        elif location[:2] in places:
            where = places[location[:2]] + location[2:]
        else:
            where = at + location
        raise DslError(exc.message, where) from None


def _routes(value: Any, at: Path, allowed: tuple[str, ...],
            check_path: Callable[[str, Path], None]) -> list[tuple[GatewayRoute, Path]]:
    routes: list[tuple[GatewayRoute, Path]] = []
    for path, body, route_at in _route_entries(value, at):
        check_path(path, route_at)
        if any(route.path == path for route, _ in routes):
            raise DslError(f"route {path!r} is given twice", route_at)
        routes.append((_route(path, body, route_at, allowed), route_at))
    return routes


def _route_entries(value: Any, at: Path) -> list[tuple[str, Any, Path]]:
    """Routes as a mapping, one path, or a list of paths and single-route mappings -> (path, body, where)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [(value, None, at)]
    if isinstance(value, list):
        entries: list[tuple[str, Any, Path]] = []
        for index, item in enumerate(value):
            if isinstance(item, str):
                entries.append((item, None, at + (index,)))
            else:
                entries.extend((path, body, at + (index, path))
                               for path, body in _mapping(item, at + (index,), "a route path to a route").items())
        return entries
    return [(path, body, at + (path,)) for path, body in _mapping(value, at, "route paths to routes").items()]


def _route(path: str, value: Any, at: Path, allowed: tuple[str, ...]) -> GatewayRoute:
    if value is None:
        return GatewayRoute(path)
    if isinstance(value, str):      # VAMP's reference to a stored route
        return GatewayRoute(path, reference=_artifact_name(value.strip(), at, "route"))
    body = _mapping(value, at, "route fields, or a stored route's name")
    _only_fields(body, allowed, at, "a route")
    condition = _route_condition(body.get("condition"), at + ("condition",))
    strength = None
    if body.get("condition_strength") is not None:
        if condition is None:
            raise DslError("condition_strength needs a condition", at + ("condition_strength",))
        strength = _parsed(parse_percent, body["condition_strength"], at + ("condition_strength",))
    elif condition is not None:
        strength = FULL
    weight = _parsed(parse_percent, body["weight"], at + ("weight",)) if body.get("weight") is not None else None
    return GatewayRoute(path, weight, condition, strength, _targets(body.get("targets"), at + ("targets",)),
                        balance=_optional_text(body.get("balance"), at + ("balance",), "a balance mode, like "
                                               "round-robin or least-connections"),
                        rewrites=_rewrites(body.get("rewrites"), at + ("rewrites",)),
                        selector=_route_selector(path, body.get("selector"), at + ("selector",)))


def _rewrites(value: Any, at: Path) -> tuple[str, ...]:
    """VAMP's `[{path: "REPLACEMENT if CONDITION"}]`, kept as the texts."""
    rewrites = []
    for index, item in enumerate(_list_or_empty(value, at, "rewrites, like [{path: '/v2/%[path] if ...'}]")):
        body = _mapping(item, at + (index,), "a rewrite, like {path: 'REPLACEMENT if CONDITION'}")
        _only_fields(body, ("path",), at + (index,), "a rewrite")
        text = body.get("path")
        if not isinstance(text, str) or not re.fullmatch(r"\s*\S.*?\s+if\s+\S.*", text):
            raise DslError(f"expected a path rewrite 'REPLACEMENT if CONDITION', got {shown(text)}",
                           at + (index, "path"))
        rewrites.append(text.strip())
    return tuple(rewrites)


def _selector(value: Any, at: Path) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise DslError(f"expected a selector, like label(tier)(web), got {shown(value)}", at)
    return _parsed(check_selector, value, at)


def _route_selector(path: str, value: Any, at: Path) -> str | None:
    """A route's selector: only on a route named by one name (VAMP: not a path with '/', not [host:port])."""
    selector = _selector(value, at)
    if selector is not None and ("/" in path or path.startswith("[")):
        raise DslError(f"a route with a selector is named by one name without '/' and is not an external "
                       f"[host:port], got {path!r}", at)
    return selector

def _route_condition(value: Any, at: Path) -> Condition | Reference | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        return Condition(_condition_text(value, at))
    body = _mapping(value, at, "a condition: its text, {condition: text} or {ref: NAME}")
    reference = _reference(body, "condition", at)
    if reference is not None:
        return reference
    _only_fields(body, ("condition",), at, "an inline condition (use ref: NAME for a stored one)")
    text = body.get("condition")
    if text is None or isinstance(text, str) and not text.strip():      # VAMP: an empty condition is none
        return None
    return Condition(_condition_text(text, at + ("condition",)))


def _targets(value: Any, at: Path) -> tuple[str, ...]:
    targets = []
    for index, item in enumerate(_list_or_empty(value, at, "targets, like ['127.0.0.1:8081']")):
        targets.append(Target(*_parsed(parse_address, item, at + (index,))).address)
    return tuple(targets)


def _gateway_route_path(path: str, at: Path) -> None:
    """A gateway artifact's route: 1-4 '/'-separated names, or an external `[host:port]`."""
    if path.startswith("[") and path.endswith("]"):
        _parsed(parse_address, path[1:-1], at)
        return
    segments = path.split("/")
    if not 1 <= len(segments) <= 4 or not all(_ROUTE_SEGMENT.fullmatch(segment) for segment in segments):
        raise DslError("expected a route path of 1 to 4 names separated by '/' (like sava/sava/webport or "
                       "sava/sava/sava:1.1.0/webport), or [host:port]", at)


def _cluster_port_path(path: str, at: Path, clusters: tuple[Cluster, ...]) -> None:
    """A blueprint gateway's route: CLUSTER/PORT of this blueprint, or an external `[host:port]`."""
    if path.startswith("[") and path.endswith("]"):
        _parsed(parse_address, path[1:-1], at)
        return
    cluster_name, slash, port = path.partition("/")
    if not slash or "/" in port:
        raise DslError("expected CLUSTER/PORT (like sava/webport) or [host:port]", at)
    cluster = next((cluster for cluster in clusters if cluster.name == cluster_name), None)
    if cluster is None:
        raise DslError(f"no cluster {cluster_name!r} in this blueprint; it has: "
                       f"{', '.join(cluster.name for cluster in clusters)}", at)
    known = _known_ports(cluster)
    if known is not None and port not in known:
        raise DslError(f"cluster {cluster_name!r} has no port {port!r}; its ports: {', '.join(known) or 'none'}", at)


def _known_ports(cluster: Cluster) -> list[str] | None:
    """The port names of a cluster's breeds, or None when a breed is only a reference."""
    names: dict[str, None] = {}
    for service in cluster.services:
        if isinstance(service.breed, Reference):
            return None
        names.update(dict.fromkeys(port.name for port in service.breed.ports))
    return list(names)


def _port_protocol(cluster: Cluster, port: str) -> str | None:
    protocols = {p.protocol for s in cluster.services if isinstance(s.breed, Breed) for p in s.breed.ports
                 if p.name == port}
    return protocols.pop() if len(protocols) == 1 else None


def _cluster_gateways(value: Any, at: Path, cluster: Cluster) -> tuple[ClusterGateway, ...]:
    if value is None:
        return ()
    body = _mapping(value, at, "port names to gateways (routes, sticky)")
    entries: list[tuple[str | None, Any, Path]]
    if any(key in body for key in CLUSTER_GATEWAY_FIELDS):
        entries = [(None, body, at)]
    else:
        entries = [(port, raw, at + (port,)) for port, raw in body.items()]
    known = _known_ports(cluster)
    gateways = []
    for port, raw, gateway_at in entries:
        if port is None and known is not None:
            if len(known) != 1:
                raise DslError(f"the cluster's services have ports {', '.join(known) or '(none)'}: key the gateway "
                               "by port name, like {webport: {routes: ...}}", at)
            port = known[0]
        elif port is not None:
            _trait_name(port, gateway_at, "port")
            if known is not None and port not in known:
                raise DslError(f"no port {port!r} in this cluster; its ports: {', '.join(known) or 'none'}",
                               gateway_at)
        gateway_body = _mapping(raw, gateway_at, "gateway fields (routes, sticky)")
        _only_fields(gateway_body, CLUSTER_GATEWAY_FIELDS, gateway_at, "a cluster gateway")
        routes = _routes(gateway_body.get("routes"), gateway_at + ("routes",), CLUSTER_ROUTE_FIELDS,
                         lambda path, route_at: _service_route_path(path, route_at, cluster))
        protocol = (_port_protocol(cluster, port) if port is not None else None) or "http"
        checked = _checked_gateway(None, {"port": f"1/{protocol}", "sticky": gateway_body.get("sticky"),
                                          "virtual_hosts": gateway_body.get("virtual_hosts")}, routes, gateway_at)
        gateways.append(ClusterGateway(port, checked.sticky, checked.routes, checked.virtual_hosts))
    return tuple(gateways)


def _service_route_path(path: str, at: Path, cluster: Cluster) -> None:
    if cluster.service(path) is None:
        raise DslError(f"no service {path!r} in cluster {cluster.name!r}; its services: "
                       f"{', '.join(service.name for service in cluster.services)}", at)


# -- blueprints and deployments ----------------------------------------------------------------------
def _read_blueprint(data: Any, at: Path = ()) -> Blueprint:
    return _blueprint(Blueprint, data, at)


def _read_deployment(data: Any, at: Path = ()) -> Deployment | Reference:
    if isinstance(data, dict):
        reference = _reference(data, "blueprint", at)
        if reference is not None:
            return reference
        if set(data) == {"name"}:
            return Reference("blueprint", _artifact_name(data["name"], at + ("name",), "blueprint"))
    return _blueprint(Deployment, data, at)


def _blueprint(cls: type[_Blueprint], data: Any, at: Path) -> _Blueprint:
    body = _mapping(data, at, "blueprint fields (name, gateways, clusters, environment_variables, dialects)")
    _only_fields(body, BLUEPRINT_FIELDS, at, "a blueprint")
    name = _artifact_name(body.get("name"), at + ("name",), "blueprint")
    raw_clusters = _mapping_or_empty(body.get("clusters"), at + ("clusters",), "cluster names to clusters")
    if not raw_clusters:
        raise DslError("a blueprint needs at least one cluster, like {sava: {breed: ..., scale: ...}}",
                       at + ("clusters",))
    clusters = [_cluster(cluster_name, raw, at + ("clusters", cluster_name))
                for cluster_name, raw in raw_clusters.items()]
    _check_unique_services(clusters, at + ("clusters",))
    clusters = _with_cluster_variables(clusters, body, at)
    return cls(name=name, clusters=tuple(clusters),
               gateways=_blueprint_gateways(body.get("gateways"), at + ("gateways",), tuple(clusters)),
               dialects=_dialects(body, at), metadata=_metadata(body, at))


def _cluster(name: str, value: Any, at: Path) -> Cluster:
    _cluster_name(name, at)
    if isinstance(value, str):
        return Cluster(name, (_service(value, at),))
    if isinstance(value, list):
        return Cluster(name, _services(value, at))
    body = _mapping(value, at, "a cluster: its services, a breed name, or the service itself")
    if "services" in body:
        _only_fields(body, CLUSTER_FIELDS, at, "a cluster")
        services = _services(body["services"], at + ("services",))
        own = body
    else:
        service_body = {key: raw for key, raw in body.items() if key not in CLUSTER_ONLY_FIELDS}
        own = {key: raw for key, raw in body.items() if key in CLUSTER_ONLY_FIELDS}
        if not service_body:
            raise DslError("a cluster needs services, like {services: [{breed: sava:1.0.0}]}", at + ("services",))
        services = (_service(service_body, at),)
    cluster = Cluster(name, services, sla=_inline_sla(own.get("sla"), at + ("sla",)),
                      health_checks=_health_checks(own.get("health_checks"), at + ("health_checks",),
                                                   _any_ports(services)),
                      network=_optional_text(own.get("network"), at + ("network",), "a network name"),
                      dialects=_dialects(own, at))
    return replace(cluster, gateways=_cluster_gateways(own.get("gateways"), at + ("gateways",), cluster))


def _any_ports(services: tuple[Service, ...]) -> tuple[Port, ...] | None:
    """The ports of any service's breed (what a cluster-level health check may name: it checks the services
    that have the port); None if unknown."""
    breeds = [service.breed for service in services if isinstance(service.breed, Breed)]
    if len(breeds) < len(services):         # a breed that is a reference: its ports are not known here
        return None
    return tuple({port.name: port for breed in breeds for port in breed.ports}.values())


def _services(value: Any, at: Path) -> tuple[Service, ...]:
    if isinstance(value, (str, dict)):
        return (_service(value, at),)
    items = _list(value, at, "services")
    if not items:
        raise DslError("a cluster needs at least one service", at)
    return tuple(_service(item, at + (index,)) for index, item in enumerate(items))


def _service(value: Any, at: Path) -> Service:
    if isinstance(value, str):
        return Service(Reference("breed", _artifact_name(value, at, "breed")))
    body = _mapping(value, at, "a service: a breed name, {breed: ..., scale: ...} or an inline breed")
    reference = _reference(body, "breed", at)
    if reference is not None:
        return Service(reference)
    if "breed" not in body:
        if "name" in body:
            return Service(_read_breed(body, at))
        raise DslError("required field missing: the service's breed (a name, {ref: NAME} or an inline breed)",
                       at + ("breed",))
    _only_fields(body, SERVICE_FIELDS, at, "a service")
    breed = _breed_or_reference(body["breed"], at + ("breed",))
    ports = breed.ports if isinstance(breed, Breed) else None
    return Service(breed=breed,
                   scale=_inline_scale(body.get("scale"), at + ("scale",)),
                   environment_variables=_environment(body, at),
                   arguments=_arguments(body.get("arguments"), at + ("arguments",)),
                   health_checks=_health_checks(body.get("health_checks"), at + ("health_checks",), ports),
                   network=_optional_text(body.get("network"), at + ("network",), "a network name"),
                   dialects=_dialects(body, at))


def _check_unique_services(clusters: list[Cluster], at: Path) -> None:
    seen: dict[str, str] = {}
    for cluster in clusters:
        for index, service in enumerate(cluster.services):
            if service.name in seen:
                raise DslError(f"breed {service.name!r} is already a service of cluster {seen[service.name]!r}; "
                               "a breed can be deployed once per blueprint", at + (cluster.name, "services", index))
            seen[service.name] = cluster.name


def _with_cluster_variables(clusters: list[Cluster], body: dict[str, Any], at: Path) -> list[Cluster]:
    """Blueprint-level `CLUSTER.NAME` (or `CLUSTER.environment_variables.NAME`) variables, moved onto
    their clusters."""
    key, value = _one_of(body, ("environment_variables", "env"), at)
    by_cluster: dict[str, list[EnvironmentVariable]] = {}
    for name, raw in _mapping_or_empty(value, at + (key,), "CLUSTER.NAME keys to values").items():
        item_at = at + (key, name)
        cluster_name, dot, variable_name = name.partition(".") if isinstance(name, str) else ("", "", "")
        if variable_name.startswith("environment_variables."):
            variable_name = variable_name[len("environment_variables."):]
        if not dot or not variable_name:
            raise DslError("expected CLUSTER.NAME, naming the cluster whose services get the variable", item_at)
        if not any(cluster.name == cluster_name for cluster in clusters):
            raise DslError(f"no cluster {cluster_name!r} in this blueprint", item_at)
        _variable_name(variable_name, item_at)
        variables = by_cluster.setdefault(cluster_name, [])
        if any(variable.name == variable_name for variable in variables):
            raise DslError(f"environment variable {variable_name!r} of cluster {cluster_name!r} is given twice",
                           item_at)
        variables.append(EnvironmentVariable(variable_name, _variable_value(raw, item_at)))
    return [replace(cluster, environment_variables=tuple(by_cluster.get(cluster.name, ()))) for cluster in clusters]


def _dialects(body: dict[str, Any], at: Path) -> dict[str, Any]:
    key, value = _one_of(body, ("dialects", "dialect"), at)
    return _plain(_mapping_or_empty(value, at + (key,), "dialect names to settings"), at + (key,))


# -- SLAs and escalations ----------------------------------------------------------------------------
def _read_sla(data: Any, at: Path = ()) -> Sla:
    body = _mapping(data, at, "SLA fields")
    return _sla_fields(body, at, _artifact_name(body.get("name"), at + ("name",), "SLA"))


def _inline_sla(value: Any, at: Path) -> Sla | Reference | None:
    if value is None:
        return None
    if isinstance(value, str):
        return Reference("sla", _artifact_name(value, at, "SLA"))
    body = _mapping(value, at, "SLA fields, or a stored SLA's name")
    if any(key in body for key in ("ref", "reference")) and "escalations" in body:
        # VAMP's reference to a stored SLA with escalations of its own, which replace the SLA's
        escalations = _escalations(body["escalations"], at + ("escalations",))
        reference = _reference({key: item for key, item in body.items() if key != "escalations"}, "sla", at)
        return replace(reference, escalations=escalations) if reference is not None else None
    reference = _reference(body, "sla", at)
    if reference is not None:
        return reference
    if "name" in body:
        raise DslError("an inline SLA has no name; use ref: NAME for a stored one", at + ("name",))
    return _sla_fields(body, at, None)


def _sla_fields(body: dict[str, Any], at: Path, name: str | None) -> Sla:
    type_ = _type_name(body.get("type"), at + ("type",), "an SLA type, like response_time_sliding_window")
    escalations = _escalations(body.get("escalations"), at + ("escalations",))
    rest = {key: raw for key, raw in body.items() if key not in ("name", "type", "escalations")}
    if type_ not in SLA_FIELDS:
        return Sla(type_, name, _plain(rest, at), escalations)
    _only_fields(body, ("name", "type", "escalations") + SLA_FIELDS[type_], at, f"a {type_} SLA")
    parameters: dict[str, Any] = {}
    if type_ in ("response_time_sliding_window", "error_rate"):
        threshold = _required_mapping(body, "threshold", at, ("upper", "lower"))
        window = _required_mapping(body, "window", at, ("interval", "cooldown"))
        if type_ == "error_rate":         # per cents, as basis points like every percentage of the model
            upper = _parsed(parse_percent, threshold.get("upper"), at + ("threshold", "upper"))
            lower = _parsed(parse_percent, threshold.get("lower"), at + ("threshold", "lower"))
            if lower > upper:
                raise DslError(f"expected at most the upper threshold ({format_percent(upper)}), got "
                               f"{shown(threshold.get('lower'))}", at + ("threshold", "lower"))
        else:                             # milliseconds
            upper = _whole_number(threshold.get("upper"), at + ("threshold", "upper"), maximum=10**9)
            lower = _whole_number(threshold.get("lower"), at + ("threshold", "lower"), maximum=upper)
        interval = _parsed(parse_duration, window.get("interval"), at + ("window", "interval"))
        cooldown = _parsed(lambda v: parse_duration(v, allow_zero=True), window.get("cooldown"),
                           at + ("window", "cooldown"))
        parameters = {"threshold": {"upper": upper, "lower": lower},
                      "window": {"interval": interval, "cooldown": cooldown}}
    return Sla(type_, name, parameters, escalations)


def _read_escalation(data: Any, at: Path = ()) -> Escalation:
    body = _expanded_escalation(_mapping(data, at, "escalation fields"), at)
    return _escalation_fields(body, at, _artifact_name(body.get("name"), at + ("name",), "escalation"))


def _escalations(value: Any, at: Path) -> tuple[Escalation | Reference, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        return (_inline_escalation(value, at),)
    return tuple(_inline_escalation(item, at + (index,)) for index, item in enumerate(value))


def _inline_escalation(value: Any, at: Path) -> Escalation | Reference:
    if isinstance(value, str):
        return Reference("escalation", _artifact_name(value, at, "escalation"))
    body = _mapping(value, at, "escalation fields, or a stored escalation's name")
    reference = _reference(body, "escalation", at)
    if reference is not None:
        return reference
    body = _expanded_escalation(body, at)
    if "name" in body:
        raise DslError("an inline escalation has no name; use ref: NAME for a stored one", at + ("name",))
    return _escalation_fields(body, at, None)


def _expanded_escalation(body: dict[str, Any], at: Path) -> dict[str, Any]:
    """`{to_all: [...]}` / `{to_all: {escalations: [...]}}` -> `{type: to_all, escalations: [...]}` (a
    `name` stays)."""
    keys = [key for key in body if key != "name"]
    if len(keys) != 1 or keys[0] not in ("to_all", "to_one"):
        return body
    type_, inner = keys[0], body[keys[0]]
    named = {"name": body["name"]} if "name" in body else {}
    if isinstance(inner, dict):
        _only_fields(inner, ("escalations",), at + (type_,), f"a {type_} escalation")
        return {**named, "type": type_, "escalations": inner.get("escalations")}
    return {**named, "type": type_, "escalations": inner}


def _escalation_fields(body: dict[str, Any], at: Path, name: str | None) -> Escalation:
    type_ = _type_name(body.get("type"), at + ("type",), "an escalation type, like scale_instances")
    rest = {key: raw for key, raw in body.items() if key not in ("name", "type")}
    if type_ not in ESCALATION_FIELDS:
        return Escalation(type_, name, _plain(rest, at))
    _only_fields(body, ("name", "type") + ESCALATION_FIELDS[type_], at, f"a {type_} escalation")
    if type_ in ("to_all", "to_one"):
        escalations = _escalations(body.get("escalations"), at + ("escalations",))
        if not escalations:
            raise DslError(f"a {type_} escalation needs escalations", at + ("escalations",))
        return Escalation(type_, name, escalations=escalations)
    amount: Callable[[Any, Path], Any] = {
        "scale_instances": lambda v, where: _whole_number(v, where, maximum=MAX_INSTANCES),
        "scale_cpu": lambda v, where: _parsed(parse_cpu, v, where),
        "scale_memory": lambda v, where: _parsed(parse_memory, v, where)}[type_]
    parameters = {key: amount(body.get(key), at + (key,)) for key in ("minimum", "maximum", "scale_by")}
    if parameters["minimum"] > parameters["maximum"]:
        raise DslError(f"expected at most the maximum ({shown(body.get('maximum'))}), got "
                       f"{shown(body.get('minimum'))}", at + ("minimum",))
    if body.get("target") is not None:
        parameters["target"] = _cluster_name(body["target"], at + ("target",))
    return Escalation(type_, name, parameters)


# -- workflows ---------------------------------------------------------------------------------------
def _read_workflow(data: Any, at: Path = ()) -> Workflow:
    body = _mapping(data, at, "workflow fields")
    _only_fields(body, WORKFLOW_FIELDS, at, "a workflow")
    name = _artifact_name(body.get("name"), at + ("name",), "workflow")
    schedule = _schedule(body.get("schedule"), at + ("schedule",))
    status = body.get("status")     # what a workflow's document shows; the runner's, not stored
    if status is not None and (not isinstance(status, str) or status.strip().lower() not in WORKFLOW_STATUSES):
        raise DslError(f"expected a workflow status, one of {', '.join(WORKFLOW_STATUSES)} (it is shown, not "
                       f"stored: PUT /api/v1/workflows/NAME/status changes it), got {shown(status)}", at + ("status",))
    given = [key for key in ("breed", "workflow") if body.get(key) is not None]
    if not given:
        raise DslError("required field missing: what to run, as breed (a script: a breed whose deployable is its "
                       "command) or workflow (a built-in's name, with its parameters)", at + ("breed",))
    if len(given) > 1:
        raise DslError("give breed (a script) or workflow (a built-in), not both", at + ("workflow",))
    if given == ["workflow"]:
        script_only = next((key for key in SCRIPT_ONLY_FIELDS if body.get(key) is not None), None)
        if script_only is not None:
            raise DslError(f"{script_only} is for a script (breed:); a built-in workflow takes parameters only",
                           at + (script_only,))
        builtin = _builtin_name(body["workflow"], at + ("workflow",))
        parameters = _plain(_mapping_or_empty(body.get("parameters"), at + ("parameters",),
                                              "the built-in's parameters"), at + ("parameters",))
        _check_builtin(name, builtin, parameters, at)
        return Workflow(name=name, breed=None, schedule=schedule, workflow=builtin, parameters=parameters)
    if body.get("parameters") is not None:
        raise DslError("parameters are for a built-in workflow (workflow: NAME); a script reads "
                       "environment_variables", at + ("parameters",))
    return Workflow(name=name,
                    breed=_breed_or_reference(body["breed"], at + ("breed",)),
                    schedule=schedule,
                    scale=_inline_scale(body["scale"], at + ("scale",)) if body.get("scale") is not None else None,
                    environment_variables=_environment(body, at),
                    arguments=_arguments(body.get("arguments"), at + ("arguments",)),
                    network=_optional_text(body.get("network"), at + ("network",), "a network name"))


def _builtin_name(value: Any, at: Path) -> str:
    from control.workflows.builtins import BUILTINS     # on use: a built-in may import the DSL in turn

    if not isinstance(value, str) or value.strip() not in BUILTINS:
        raise DslError(f"expected a built-in workflow, one of {', '.join(sorted(BUILTINS)) or '(none)'}, got "
                       f"{shown(value)}", at)
    return value.strip()


def _check_builtin(name: str, builtin: str, parameters: dict[str, Any], at: Path) -> None:
    """The built-in's own check of its parameters (BuiltinWorkflow.validate); its Invalid becomes a DslError at
    the field it names."""
    from control.workflows.builtins import BUILTINS

    try:
        BUILTINS[builtin].validate(name, parameters)
    except Invalid as exc:
        raise DslError(exc.message, at + _pointer_path(exc.field, parameters)) from None


def _pointer_path(pointer: str | None, parameters: dict[str, Any]) -> Path:
    """A JSON pointer ("/parameters/steps/1") as a path into the workflow: ("parameters", "steps", 1); a list
    index is a number, as the reader's own paths have it."""
    parts = [part.replace("~1", "/").replace("~0", "~") for part in (pointer or "").split("/")[1:]]
    if not parts or parts[0] != "parameters":
        return ("parameters",)
    path: list[str | int] = ["parameters"]
    node: Any = parameters
    for part in parts[1:]:
        if isinstance(node, list) and part.isdigit():
            path.append(int(part))
            node = node[int(part)] if int(part) < len(node) else None
        else:
            path.append(part)
            node = node.get(part) if isinstance(node, dict) else None
    return tuple(path)


def _schedule(value: Any, at: Path) -> Schedule:
    expected = "expected daemon, {event: [tags]} or {time: {period: P1D, start: now, repeat: 10}}"
    if isinstance(value, str) and value.strip().lower() == "daemon":
        return Schedule("daemon")
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in ("event", "time"):
        raise DslError(f"{expected}, got {shown(value)}", at)
    (type_, inner), = value.items()
    at = at + (type_,)
    if type_ == "event":
        if isinstance(inner, dict):
            _only_fields(inner, ("tags",), at, "an event schedule")
            inner, at = inner.get("tags"), at + ("tags",)
        tags = [inner] if isinstance(inner, str) else _list(inner, at, "event tags")
        if not tags:
            raise DslError("an event schedule needs at least one tag", at)
        return Schedule("event", tags=tuple(_tag(tag, at + (index,)) for index, tag in enumerate(tags)))
    body = {"period": inner} if isinstance(inner, str) else _mapping(inner, at, "period, start and repeat")
    _only_fields(body, TIME_SCHEDULE_FIELDS, at, "a time schedule")
    period = body.get("period")
    if period is None:
        raise DslError("required field missing: period, an ISO 8601 period like P1D or PT10M", at + ("period",))
    _parsed(parse_period, period, at + ("period",))
    repeat = _whole_number(body["repeat"], at + ("repeat",), minimum=1, maximum=10**9) \
        if body.get("repeat") is not None else None
    return Schedule("time", period=period.strip().upper(), start=_start(body.get("start"), at + ("start",)),
                    repeat=repeat)


def _tag(value: Any, at: Path) -> str:
    if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value.strip()):
        raise DslError(f"expected a tag like 'deployments:sava', got {shown(value)}", at)
    return value.strip()


def _start(value: Any, at: Path) -> str | None:
    if value is None or (isinstance(value, str) and value.strip().lower() == "now"):
        return None
    moment: datetime.datetime | None
    if isinstance(value, datetime.datetime):
        moment = value
    else:
        try:
            moment = datetime.datetime.fromisoformat(value.strip()) if isinstance(value, str) else None
        except ValueError:
            moment = None
        if moment is None:
            raise DslError(f"expected now or an ISO 8601 date-time like 2024-01-31T12:00:00Z, got {shown(value)}",
                           at)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.isoformat()


# -- small value readers -----------------------------------------------------------------------------
def _mapping(value: Any, at: Path, what: str) -> dict[str, Any]:
    """A mapping with text keys; whole-number keys (YAML's `9050:` read by a plain loader) become text."""
    if not isinstance(value, dict):
        raise DslError(f"expected a mapping of {what}, got {shown(value)}", at)
    if all(isinstance(key, str) for key in value):
        return value
    body: dict[str, Any] = {}
    for key, item in value.items():
        if isinstance(key, bool) or not isinstance(key, (str, int)):
            raise DslError(f"expected names as keys, got {shown(key)}", at)
        if str(key) in body:
            raise DslError(f"duplicate key {str(key)!r}", at)
        body[str(key)] = item
    return body


def _mapping_or_empty(value: Any, at: Path, what: str) -> dict[str, Any]:
    return {} if value is None else _mapping(value, at, what)


def _required_mapping(body: dict[str, Any], key: str, at: Path, fields: tuple[str, ...]) -> dict[str, Any]:
    if body.get(key) is None:
        raise DslError(f"required field missing: {key} ({', '.join(fields)})", at + (key,))
    inner = _mapping(body[key], at + (key,), ", ".join(fields))
    _only_fields(inner, fields, at + (key,), key)
    return inner


def _list(value: Any, at: Path, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise DslError(f"expected a list of {what}, got {shown(value)}", at)
    return value


def _list_or_empty(value: Any, at: Path, what: str) -> list[Any]:
    return [] if value is None else _list(value, at, what)


def _only_fields(body: dict[str, Any], allowed: tuple[str, ...], at: Path, what: str) -> None:
    unknown = unknown_field(body, allowed, what)
    if unknown is not None:
        raise DslError(unknown[1], at + (unknown[0],))


def _one_of(body: dict[str, Any], keys: tuple[str, str], at: Path) -> tuple[str, Any]:
    """A field with two spellings (`environment_variables` / `env`): (the spelling used, its value)."""
    if keys[0] in body and keys[1] in body:
        raise DslError(f"give {keys[0]} or {keys[1]}, not both (they are the same)", at + (keys[1],))
    key = keys[1] if keys[1] in body else keys[0]
    return key, body.get(key)


def _reference(body: dict[str, Any], kind: str, at: Path) -> Reference | None:
    """`{ref: NAME}` or `{reference: NAME}` -> Reference(kind, NAME); None for any other mapping."""
    keys = [key for key in ("ref", "reference") if key in body]
    if not keys:
        return None
    if len(body) != 1:
        other = next(key for key in body if key != keys[0])
        raise DslError(f"a reference to a stored {kind} has no other fields (ref: NAME only)", at + (other,))
    return Reference(kind, _artifact_name(body[keys[0]], at + (keys[0],), kind))


def _artifact_name(value: Any, at: Path, what: str) -> str:
    if value is None:
        raise DslError(f"required field missing: the {what}'s name", at)
    if isinstance(value, str) and breaks_rule(value):
        raise DslError(f"invalid {what} name {shown(value)}: {NAME_RULE}", at)
    if not isinstance(value, str) or not _ARTIFACT_NAME.fullmatch(value) or len(value) > 200:
        raise DslError(f"expected a {what} name without whitespace, '/', '[' or ']', got {shown(value)}", at)
    return value


def _cluster_name(value: Any, at: Path) -> str:
    if not isinstance(value, str) or not _CLUSTER_NAME.fullmatch(value) or len(value) > 100:
        raise DslError(f"expected a cluster name of letters, digits, '-' and '_' (it becomes part of gateway "
                       f"names and $cluster references), got {shown(value)}", at)
    return value


def _trait_name(value: Any, at: Path, what: str, hint: str = "") -> str:
    if not isinstance(value, str) or not _TRAIT_NAME.fullmatch(value) or len(value) > 200:
        raise DslError(f"expected a {what} name of letters, digits, '-' and '_'{hint}, got {shown(value)}", at)
    return value


def _type_name(value: Any, at: Path, what: str) -> str:
    if not isinstance(value, str) or not _TRAIT_NAME.fullmatch(value.strip()):
        raise DslError(f"expected {what}, got {shown(value)}", at)
    return value.strip().lower()


def _optional_text(value: Any, at: Path, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise DslError(f"expected {what}, got {shown(value)}", at)
    return value.strip()


def _whole_number(value: Any, at: Path, *, minimum: int = 0, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise DslError(f"expected a whole number >= {minimum}, got {shown(value)}", at)
    if not minimum <= value <= maximum:
        raise DslError(f"expected a whole number from {minimum} to {maximum}, got {shown(value)}", at)
    return value


def _scalar_text(value: Any, at: Path) -> str:
    """A trait value as text: strings as written, booleans as true/false, numbers as YAML writes them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and abs(value) < 10**18:
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    if isinstance(value, str) and "\x00" not in value:
        return value
    raise DslError(f"expected a value (text, a number or true/false), got {shown(value)}", at)


def _plain(value: Any, at: Path) -> Any:
    """A copy of free-form data, refusing what JSON could not carry."""
    if isinstance(value, dict):
        return {key: _plain(item, at + (key,)) for key, item in _mapping(value, at, "settings").items()}
    if isinstance(value, list):
        return [_plain(item, at + (index,)) for index, item in enumerate(value)]
    if value is None or isinstance(value, (str, bool)) or (isinstance(value, int) and abs(value) < 10**18) \
            or (isinstance(value, float) and math.isfinite(value)):
        return value
    raise DslError(f"expected plain data (text, numbers, true/false, lists, mappings), got {shown(value)}", at)


def _parsed(parse: Callable[[Any], Any], value: Any, at: Path) -> Any:
    """`parse(value)`, its ValueError becoming a DslError at `at`."""
    try:
        return parse(value)
    except DslError as error:
        error.location = error.location or tuple(at)
        raise
    except ValueError as exc:
        raise DslError(str(exc), at) from None


def _read_breed_artifact(data: Any) -> Breed:
    breed = _read_breed(data)
    check_breed(breed)
    return breed


def _read_checked_blueprint(data: Any) -> Blueprint:
    blueprint = _read_blueprint(data)
    check_blueprint(blueprint)
    return blueprint


def _read_checked_workflow(data: Any) -> Workflow:
    workflow = _read_workflow(data)
    check_workflow(workflow)
    return workflow


_READERS: dict[str, Callable[[Any], Artifact]] = {
    "breed": _read_breed_artifact, "blueprint": _read_checked_blueprint, "deployment": _read_deployment,
    "gateway": _read_gateway,
    "scale": _read_scale, "condition": _read_condition, "sla": _read_sla, "escalation": _read_escalation,
    "workflow": _read_checked_workflow,
}
