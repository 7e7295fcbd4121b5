"""Configuration loading and validation: the YAML file of docs/gateway-config.md (or the same shapes as JSON/dicts, as
the admin API receives them) to `gateway.config.model.Config`, and back.

Anything invalid is rejected whole with a `ConfigError` naming the gateway, route and field at fault, in one
line. The rules, beyond the value syntaxes of `gateway.common.units`:

- Top level: `gateways` (a mapping name -> gateway, or a list of gateways each with a `name`) and `geo`. An
  empty document or `gateways: {}` is valid and serves nothing. Unknown keys are errors everywhere. A null
  value means "not given" (the default) for every optional field.
- Gateway names: 1-4 `/`-separated non-empty parts of letters, digits and `- _ . :` (`sava/9050`), and the
  rule of every name (`gateway.common.names`: at most 253 characters, no part `.` or `..`).
  Route names: any text without whitespace or control characters (`sava/sava/sava:1.1.0/webport`,
  `[127.0.0.1:8080]`).
- Gateway: `port` (required), `sticky` none|route|instance (null is none), `sticky_ttl` (30m),
  `sticky_cookie` {same_site lax|strict|none (lax), secure (false); same_site none needs secure true},
  `drain_timeout` (5m: how long removed or drained routes and targets may keep serving their sticky clients),
  `virtual_hosts` (host names, IP literals or wildcards `*.example.com` for any name ending in
  `.example.com`; stored lower case, without port), `timeouts` {connect 2s, response 30s, idle 60s,
  request_head 30s},
  `routes` (possibly none: the gateway answers 503), `bind` (an IP literal, default 0.0.0.0),
  `access_log` {format json|combined (json), path "-"|FILE ("-": standard output; a file must be writable
  now), sample (100%)}, not for tcp gateways; `request_id` (true).
- Route: `weight`, `targets` (possibly none), `condition` (stored in canonical form), `condition_strength`
  (100% by default, only with a condition), `drain`. A target is "host:port" or
  {address, weight (integer 0-1000, default 100; 0 takes no traffic), drain}.
- Weights of a gateway: given weights sum to exactly 100% or are all 0%; routes without a weight share what
  the weighted routes leave evenly in basis points, the remainder going one basis point each to the first
  of them (so the sum is exact); more than 100% given is an error.
- Gateways sharing a port share one listener: the same `bind`, at most one without `virtual_hosts`, no host
  claimed twice; a tcp gateway is alone on its port and has no conditions, sticky or virtual hosts.
- `geo.database` is null (the shipped data) or the path of a readable file (relative to the working
  directory), checked now; `geo.trusted_proxies` are CIDRs or addresses, stored normalised.

YAML specifics: duplicate keys are errors; mapping keys are taken as written (`9050:` is the name "9050");
errors found in YAML text carry the line of the offending field. Routes keep the order written (conditions
are tried in that order), so a YAML dump of `to_dict` must not sort keys.
"""
from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import replace
from typing import Any

import yaml

from gateway.common.names import RULE as NAME_RULE, breaks_rule
from gateway.common.units import (format_duration, format_percent, is_host_name, parse_address, parse_duration,
                                  parse_percent, parse_port, shown, unknown_field)
from gateway.common.yamltext import YamlTextError, line_of, single_document
from gateway.config.model import (ACCESS_LOG_FORMATS, FULL, SAME_SITE_VALUES, STICKY_MODES, AccessLog, Config,
                                  Gateway, GeoSettings, Route, StickyCookie, Target, Timeouts)
from gateway.routing import conditions

Location = tuple[str | int, ...]

TOP_FIELDS = ("gateways", "geo")
GATEWAY_FIELDS = ("name", "port", "bind", "sticky", "sticky_ttl", "sticky_cookie", "drain_timeout", "virtual_hosts",
                  "timeouts", "routes", "access_log", "request_id")
ACCESS_LOG_FIELDS = ("format", "path", "sample")
STICKY_COOKIE_FIELDS = ("same_site", "secure")
TIMEOUT_FIELDS = ("connect", "response", "idle", "request_head")
ROUTE_FIELDS = ("weight", "targets", "condition", "condition_strength", "drain")
TARGET_FIELDS = ("address", "weight", "drain")
GEO_FIELDS = ("database", "trusted_proxies")
MAX_TARGET_WEIGHT = 1000

_GATEWAY_NAME = re.compile(r"[A-Za-z0-9_.:-]+(?:/[A-Za-z0-9_.:-]+){0,3}")
_ROUTE_NAME = re.compile(r"[^\s\x00-\x1f\x7f-\x9f]+")
_LINE_BREAKS = re.compile(r"[\r\n\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")


class ConfigError(ValueError):
    """An invalid configuration: `location` is the path to the field at fault, e.g.
    ("gateways", "sava", "routes", "sava-1.1", "condition"); `message` says what is wrong or expected; `line`
    is the source line when the configuration came from YAML text. `str()` is one line."""

    def __init__(self, message: str, location: Location = (), line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.location = tuple(location)
        self.line = line

    def __str__(self) -> str:
        where = describe_location(self.location)
        if where:
            text = f"{where}: {self.message}" + (f" (line {self.line})" if self.line is not None else "")
        else:
            text = (f"line {self.line}: " if self.line is not None else "") + self.message
        return _LINE_BREAKS.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)

    def pointer(self, gateway: str) -> str | None:
        """The location as a JSON pointer (RFC 6901) into the document of gateway `gateway`, as both APIs
        answer it in `field` (`/routes/sava-1.1/condition`); None for the gateway as a whole."""
        parts = list(self.location)
        if parts[:2] == ["gateways", gateway]:
            parts = parts[2:]
        if not parts:
            return None
        return "/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in parts)


class PortConflict(ConfigError):
    """Two gateways claim the same port (or host on a port) in ways that cannot share it: each is valid on
    its own, together they clash."""


def describe_location(location: Location) -> str:
    """("gateways", "sava", "routes", "r", "targets", 1, "weight") -> "gateway 'sava', route 'r', field
    'targets[1].weight'"."""
    parts, rest = [], list(location)
    if len(rest) >= 2 and rest[0] == "gateways" and isinstance(rest[1], str):
        parts.append(f"gateway {shown(rest[1])}")
        rest = rest[2:]
        if len(rest) >= 2 and rest[0] == "routes" and isinstance(rest[1], str):
            parts.append(f"route {shown(rest[1])}")
            rest = rest[2:]
    if rest:
        field = ""
        for part in rest:
            field += f"[{part}]" if isinstance(part, int) else (f".{part}" if field else part)
        parts.append(f"field {field!r}")
    return ", ".join(parts)


# -- loading -----------------------------------------------------------------------------------------
def load_file(path: str | os.PathLike[str]) -> Config:
    """Read and validate a YAML (or JSON) configuration file."""
    try:
        with open(path, "rb") as file:
            raw = file.read()
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(f"cannot read the configuration file {os.fsdecode(path)!r}: {reason}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"not UTF-8 text (byte {exc.start})", line=line) from None
    return load_text(text, source=os.fsdecode(path))


def parse_document(text: str, source: str = "<config>") -> Any:
    """YAML (or JSON) text to plain data with this module's strict loader (duplicate keys refused, keys kept
    as text, line numbers in errors), before any validation."""
    return _parse_yaml(text, source)[1]


def load_text(text: str, source: str = "<config>") -> Config:
    """Validate configuration text (YAML, or JSON which is YAML too); `source` names it in YAML marks."""
    node, data = _parse_yaml(text, source)
    try:
        return from_dict(data)
    except ConfigError as exc:
        if exc.line is None:
            exc.line = line_of(node, exc.location)
        raise


def _parse_yaml(text: str, source: str) -> tuple[yaml.Node | None, Any]:
    try:
        return single_document(text, source)
    except YamlTextError as exc:
        raise ConfigError(exc.message, line=exc.line) from None


def from_dict(data: Any) -> Config:
    """Validate a whole document {"gateways": {...}, "geo": {...}}; None (an empty file) is an empty Config."""
    if data is None:
        return Config()
    body = _mapping(data, (), "the configuration ('gateways' and 'geo')")
    _only_fields(body, TOP_FIELDS, (), "the configuration")
    gateways = tuple(gateway_from_dict(name, gateway) for name, gateway in _gateway_entries(body.get("gateways")))
    _check_shared_ports(gateways)
    return Config(gateways=gateways, geo=_geo(body.get("geo"), ("geo",)))


def assemble(gateways: tuple[Gateway, ...], geo: GeoSettings | None = None) -> Config:
    """A configuration of gateways each validated on its own (`gateway_from_dict`), checked together (the ports
    they share) as `from_dict` checks them: a store of gateways (gateway.store) decodes them one by one."""
    _check_shared_ports(gateways)
    return Config(gateways=gateways, geo=geo if geo is not None else GeoSettings())


def _gateway_entries(value: Any) -> list[tuple[Any, Any]]:
    at: Location = ("gateways",)
    if value is None:
        return []
    if not isinstance(value, list):
        return list(_mapping(value, at, "gateway names to gateways").items())
    entries: list[tuple[Any, Any]] = []
    for index, item in enumerate(value):
        item = _mapping(item, at + (index,), "gateway fields")
        name = item.get("name")
        if isinstance(name, int) and not isinstance(name, bool):
            name = str(name)
        if not isinstance(name, str):
            raise ConfigError(f"expected the gateway's name, got {shown(name)}", at + (index, "name"))
        if any(name == seen for seen, _ in entries):
            raise ConfigError(f"a gateway named {name!r} is already defined", at + (index, "name"))
        entries.append((name, {**item, "name": name}))
    return entries


def _check_shared_ports(gateways: tuple[Gateway, ...]) -> None:
    """Gateways on one port share a listener: they must be told apart by Host (see the module docstring)."""
    by_port: dict[int, list[Gateway]] = {}
    for gateway in gateways:
        at: Location = ("gateways", gateway.name)
        for other in by_port.get(gateway.port, ()):
            if gateway.protocol == "tcp" or other.protocol == "tcp":
                raise PortConflict(f"port {gateway.port} is already used by gateway {other.name!r}; a tcp "
                                   "gateway needs a port of its own", at + ("port",))
            if gateway.bind != other.bind:
                raise PortConflict(f"gateway {other.name!r} on the same port {gateway.port} binds "
                                   f"{other.bind}; gateways sharing a port must use the same bind address",
                                   at + ("bind",))
            if not gateway.virtual_hosts and not other.virtual_hosts:
                raise PortConflict(f"port {gateway.port} is already used by gateway {other.name!r} without "
                                   "virtual_hosts; give one of them virtual_hosts to tell them apart",
                                   at + ("port",))
            for index, host in enumerate(gateway.virtual_hosts):
                if host in other.virtual_hosts:
                    raise PortConflict(f"host {host!r} on port {gateway.port} is already claimed by gateway "
                                       f"{other.name!r}", at + ("virtual_hosts", index))
        by_port.setdefault(gateway.port, []).append(gateway)


# -- validation: one gateway -------------------------------------------------------------------------
def gateway_from_dict(name: Any, data: Any) -> Gateway:
    """Validate one gateway's fields (as under `gateways: {name: ...}`); a `name` field must match `name`."""
    if not isinstance(name, str):
        raise ConfigError(f"expected a gateway name, got {shown(name)}", ("gateways",))
    at: Location = ("gateways", name)
    if breaks_rule(name):
        raise ConfigError(f"invalid gateway name: {NAME_RULE}", at + ("name",))
    if not _GATEWAY_NAME.fullmatch(name):
        raise ConfigError("invalid gateway name: use 1-4 non-empty parts separated by '/', made of letters, "
                          "digits, '-', '_', '.' and ':'", at + ("name",))
    body = _mapping(data, at, "gateway fields")
    _only_fields(body, GATEWAY_FIELDS, at, "a gateway")
    if body.get("name") is not None and body["name"] != name:
        raise ConfigError(f"{shown(body['name'])} does not match the gateway's name {name!r}", at + ("name",))
    if body.get("port") is None:
        raise ConfigError("required field missing: the port to listen on, like 8080 or '8080/tcp'",
                          at + ("port",))
    port, protocol = _parsed(parse_port, body["port"], at + ("port",))
    fields: dict[str, Any] = {"name": name, "port": port, "protocol": protocol}
    if body.get("bind") is not None:
        fields["bind"] = _ip_address(body["bind"], at + ("bind",))
    if body.get("sticky") is not None:
        fields["sticky"] = _sticky(body["sticky"], at + ("sticky",))
    if body.get("sticky_ttl") is not None:
        fields["sticky_ttl"] = _parsed(parse_duration, body["sticky_ttl"], at + ("sticky_ttl",))
    if body.get("sticky_cookie") is not None:
        fields["sticky_cookie"] = _sticky_cookie(body["sticky_cookie"], at + ("sticky_cookie",))
    if body.get("drain_timeout") is not None:
        fields["drain_timeout"] = _parsed(parse_duration, body["drain_timeout"], at + ("drain_timeout",))
    fields["virtual_hosts"] = _virtual_hosts(body.get("virtual_hosts"), at + ("virtual_hosts",))
    fields["timeouts"] = _timeouts(body.get("timeouts"), at + ("timeouts",))
    fields["routes"] = _routes(body.get("routes"), at + ("routes",), protocol)
    if body.get("access_log") is not None:
        if protocol == "tcp":
            raise ConfigError("a tcp gateway has no HTTP requests to log", at + ("access_log",))
        fields["access_log"] = _access_log(body["access_log"], at + ("access_log",))
    fields["request_id"] = _bool(body.get("request_id"), True, at + ("request_id",))
    gateway = Gateway(**fields)
    if protocol == "tcp":
        if gateway.sticky != "none":
            raise ConfigError("a tcp gateway cannot be sticky (it sees no HTTP cookies)", at + ("sticky",))
        if gateway.virtual_hosts:
            raise ConfigError("a tcp gateway cannot have virtual_hosts (it sees no Host header)",
                              at + ("virtual_hosts",))
    return gateway


def _ip_address(value: Any, at: Location) -> str:
    try:
        if isinstance(value, str):
            return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        pass
    raise ConfigError(f"expected an IP address to listen on, like 0.0.0.0, 127.0.0.1 or ::, got {shown(value)}",
                      at)


def _sticky(value: Any, at: Location) -> str:
    if isinstance(value, str) and value.strip().lower() in STICKY_MODES:
        return value.strip().lower()
    raise ConfigError(f"expected one of {', '.join(STICKY_MODES)}, got {shown(value)}", at)


def _sticky_cookie(value: Any, at: Location) -> StickyCookie:
    body = _mapping(value, at, "sticky cookie attributes (same_site, secure)")
    _only_fields(body, STICKY_COOKIE_FIELDS, at, "sticky_cookie")
    default = StickyCookie()
    same_site = body.get("same_site")
    if same_site is None:
        same_site = default.same_site
    elif isinstance(same_site, str) and same_site.strip().lower() in SAME_SITE_VALUES:
        same_site = same_site.strip().lower()
    else:
        raise ConfigError(f"expected one of {', '.join(SAME_SITE_VALUES)}, got {shown(same_site)}",
                          at + ("same_site",))
    secure = _bool(body.get("secure"), default.secure, at + ("secure",))
    if same_site == "none" and not secure:
        raise ConfigError("same_site none needs secure: true (browsers refuse a SameSite=None cookie without "
                          "Secure)", at + ("same_site",))
    return StickyCookie(same_site=same_site, secure=secure)


def _virtual_hosts(value: Any, at: Location) -> tuple[str, ...]:
    hosts: list[str] = []
    for index, item in enumerate(_list(value, at, "host names, like [sava.local]")):
        host = item.strip().lower().rstrip(".") if isinstance(item, str) else ""
        if not _is_virtual_host(host):
            raise ConfigError("expected a host name without port, like 'sava.local' or '*.sava.local', "
                              f"got {shown(item)}", at + (index,))
        if host in hosts:
            raise ConfigError(f"host {host!r} is listed twice", at + (index,))
        hosts.append(host)
    return tuple(hosts)


def _is_virtual_host(host: str) -> bool:
    """A host name, a wildcard `*.name` (any name ending in `.name`), an IPv4 literal or a bracketed IPv6."""
    if is_host_name(host.removeprefix("*.")):
        return True
    try:
        if host.startswith("[") and host.endswith("]"):
            ipaddress.IPv6Address(host[1:-1])
        else:
            ipaddress.IPv4Address(host)
        return True
    except ValueError:
        return False


def _access_log(value: Any, at: Location) -> AccessLog:
    """`access_log: {format, path, sample}`; a file path must be writable now (created if missing)."""
    body = _mapping(value, at, "access log settings (format, path, sample)")
    _only_fields(body, ACCESS_LOG_FIELDS, at, "access_log")
    fields: dict[str, Any] = {}
    log_format = body.get("format")
    if log_format is not None:
        if not isinstance(log_format, str) or log_format.strip().lower() not in ACCESS_LOG_FORMATS:
            raise ConfigError(f"expected one of {', '.join(ACCESS_LOG_FORMATS)}, got {shown(log_format)}",
                              at + ("format",))
        fields["format"] = log_format.strip().lower()
    path = body.get("path")
    if path is not None:
        if not isinstance(path, str) or not path.strip() or "\0" in path:
            raise ConfigError(f"expected '-' (standard output) or the path of a file, got {shown(path)}",
                              at + ("path",))
        path = path.strip()
        if path != "-":
            _check_writable(path, at + ("path",))
        fields["path"] = path
    if body.get("sample") is not None:
        fields["sample"] = _parsed(parse_percent, body["sample"], at + ("sample",))
    return AccessLog(**fields)


def _check_writable(path: str, at: Location) -> None:
    """A log file the gateway can append to: an existing writable file, or a new one in a writable directory."""
    if os.path.isdir(path):
        raise ConfigError(f"{path!r} is a directory, not a file", at)
    if os.path.exists(path):
        if not os.access(path, os.W_OK):
            raise ConfigError(f"cannot write to {path!r}: permission denied", at)
        return
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ConfigError(f"no such directory: {directory!r}", at)
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot create {path!r}: permission denied in {directory!r}", at)


def _timeouts(value: Any, at: Location) -> Timeouts:
    if value is None:
        return Timeouts()
    body = _mapping(value, at, "timeouts (connect, response, idle, request_head)")
    _only_fields(body, TIMEOUT_FIELDS, at, "timeouts")
    return Timeouts(**{key: _parsed(parse_duration, body[key], at + (key,))
                       for key in TIMEOUT_FIELDS if body.get(key) is not None})


# -- validation: routes and targets ------------------------------------------------------------------
def _routes(value: Any, at: Location, protocol: str) -> tuple[Route, ...]:
    if value is None:
        return ()
    routes = [_route(name, body, at + (name,), protocol)
              for name, body in _mapping(value, at, "route names to routes").items()]
    weights = resolve_weights([route.weight if route.weight_given else None for route in routes], at)
    return tuple(replace(route, weight=weight) for route, weight in zip(routes, weights))


def _route(name: str, data: Any, at: Location, protocol: str) -> Route:
    """One route, with weight 0 when none was given (`resolve_weights` fills it in)."""
    if not _ROUTE_NAME.fullmatch(name):
        raise ConfigError("invalid route name: it must be non-empty, without whitespace or control characters",
                          at)
    body = _mapping(data, at, "route fields")
    _only_fields(body, ROUTE_FIELDS, at, "a route")
    condition = _condition(body.get("condition"), at + ("condition",))
    if condition is not None and protocol == "tcp":
        raise ConfigError("a tcp gateway cannot route by condition (it sees no HTTP request)",
                          at + ("condition",))
    strength = FULL
    if body.get("condition_strength") is not None:
        if condition is None:
            raise ConfigError("condition_strength needs a condition", at + ("condition_strength",))
        strength = _parsed(parse_percent, body["condition_strength"], at + ("condition_strength",))
    weight_given = body.get("weight") is not None
    return Route(name=name,
                 weight=_parsed(parse_percent, body["weight"], at + ("weight",)) if weight_given else 0,
                 targets=_targets(body.get("targets"), at + ("targets",)),
                 condition=condition, condition_strength=strength,
                 drain=_bool(body.get("drain"), False, at + ("drain",)),
                 weight_given=weight_given)


def _condition(value: Any, at: Location) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"expected a condition as text, like 'browser = Firefox', got {shown(value)}", at)
    try:
        return conditions.canonical(value)
    except conditions.ConditionError as exc:
        raise ConfigError(str(exc), at) from None


def resolve_weights(weights: list[int | None], at: Location = ()) -> list[int]:
    """Vamp's rule: given weights sum to 100% (or all 0%); routes without one share the rest evenly."""
    given_total = sum(weight for weight in weights if weight is not None)
    if given_total > FULL:
        raise ConfigError(f"route weights add up to {format_percent(given_total)}, more than 100%", at)
    unweighted = [index for index, weight in enumerate(weights) if weight is None]
    if not unweighted:
        if given_total not in (0, FULL):
            raise ConfigError(f"route weights add up to {format_percent(given_total)}; they must add up to "
                              "100% (or all be 0%)", at)
        return [weight or 0 for weight in weights]
    share, remainder = divmod(FULL - given_total, len(unweighted))
    resolved = [weight or 0 for weight in weights]      # the unweighted ones' shares are set below
    for rank, index in enumerate(unweighted):
        resolved[index] = share + (1 if rank < remainder else 0)
    return resolved


def _targets(value: Any, at: Location) -> tuple[Target, ...]:
    targets: list[Target] = []
    for index, item in enumerate(_list(value, at, "targets, like ['127.0.0.1:8081']")):
        target = _target(item, at + (index,))
        if any(target.address == other.address for other in targets):
            raise ConfigError(f"target {target.address} is listed twice", at + (index,))
        targets.append(target)
    return tuple(targets)


def _target(item: Any, at: Location) -> Target:
    if isinstance(item, str):
        return Target(*_parsed(parse_address, item, at))
    if not isinstance(item, dict):
        raise ConfigError(f"expected 'host:port' or a mapping with address, weight and drain, got {shown(item)}",
                          at)
    body = _mapping(item, at, "target fields")
    _only_fields(body, TARGET_FIELDS, at, "a target")
    if body.get("address") is None:
        raise ConfigError("required field missing: the target's host:port", at + ("address",))
    host, port = _parsed(parse_address, body["address"], at + ("address",))
    fields: dict[str, Any] = {"drain": _bool(body.get("drain"), False, at + ("drain",))}
    weight = body.get("weight")
    if weight is not None:
        if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= MAX_TARGET_WEIGHT:
            raise ConfigError(f"expected a whole number from 0 to {MAX_TARGET_WEIGHT}, got {shown(weight)}",
                              at + ("weight",))
        fields["weight"] = weight
    return Target(host, port, **fields)


# -- validation: geo ---------------------------------------------------------------------------------
def _geo(value: Any, at: Location) -> GeoSettings:
    if value is None:
        return GeoSettings()
    body = _mapping(value, at, "geo settings (database, trusted_proxies)")
    _only_fields(body, GEO_FIELDS, at, "geo")
    database = body.get("database")
    if database is not None:
        if not isinstance(database, str) or not database.strip():
            raise ConfigError("expected null (the shipped country data) or the path of a MaxMind .mmdb file, "
                              f"got {shown(database)}", at + ("database",))
        if not os.path.isfile(database):
            raise ConfigError(f"no such file: {database!r}", at + ("database",))
        if not os.access(database, os.R_OK):
            raise ConfigError(f"cannot read {database!r}: permission denied", at + ("database",))
    proxies: list[str] = []
    for index, item in enumerate(_list(body.get("trusted_proxies"), at + ("trusted_proxies",),
                                       "CIDRs, like ['10.0.0.0/8']")):
        item_at = at + ("trusted_proxies", index)
        try:
            network = str(ipaddress.ip_network(item.strip(), strict=False)) if isinstance(item, str) else None
        except ValueError:
            network = None
        if network is None:
            raise ConfigError(f"expected a CIDR like '10.0.0.0/8' or an address, got {shown(item)}", item_at)
        if network in proxies:
            raise ConfigError(f"{network} is listed twice", item_at)
        proxies.append(network)
    return GeoSettings(database=database, trusted_proxies=tuple(proxies))


# -- validation helpers ------------------------------------------------------------------------------
def _mapping(value: Any, at: Location, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"expected a mapping of {what}, got {shown(value)}", at)
    for key in value:
        if not isinstance(key, str):
            raise ConfigError(f"expected names as keys, got {shown(key)}", at)
    return value


def _list(value: Any, at: Location, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"expected a list of {what}, got {shown(value)}", at)
    return value


def _only_fields(body: dict[str, Any], allowed: tuple[str, ...], at: Location, what: str) -> None:
    unknown = unknown_field(body, allowed, what)
    if unknown is not None:
        raise ConfigError(unknown[1], at + (unknown[0],))


def _bool(value: Any, default: bool, at: Location) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ConfigError(f"expected true or false, got {shown(value)}", at)
    return value


def _parsed(parse: Any, value: Any, at: Location) -> Any:
    """`parse(value)`, its ValueError becoming a ConfigError at `at`."""
    try:
        return parse(value)
    except ValueError as exc:
        raise ConfigError(str(exc), at) from None


# -- back to the documented shape --------------------------------------------------------------------
def to_dict(config: Config) -> dict[str, Any]:
    """The documented shape of a Config; `from_dict(to_dict(c)) == c` for every validated `c`."""
    return {"gateways": {gateway.name: gateway_to_dict(gateway) for gateway in config.gateways},
            "geo": {"database": config.geo.database, "trusted_proxies": list(config.geo.trusted_proxies)}}


def gateway_to_dict(gateway: Gateway) -> dict[str, Any]:
    """One gateway's fields, every one explicit (but `access_log` when there is none, and `request_id` when
    true); routes without a given weight stay without one."""
    body: dict[str, Any] = {
        "port": f"{gateway.port}/{gateway.protocol}",
        "bind": gateway.bind,
        "sticky": gateway.sticky,
        "sticky_ttl": format_duration(gateway.sticky_ttl),
        "sticky_cookie": {"same_site": gateway.sticky_cookie.same_site, "secure": gateway.sticky_cookie.secure},
        "drain_timeout": format_duration(gateway.drain_timeout),
        "virtual_hosts": list(gateway.virtual_hosts),
        "timeouts": {key: format_duration(getattr(gateway.timeouts, key)) for key in TIMEOUT_FIELDS},
        "routes": {route.name: _route_to_dict(route) for route in gateway.routes},
    }
    if gateway.access_log is not None:
        log = gateway.access_log
        body["access_log"] = {"format": log.format, "path": log.path, "sample": format_percent(log.sample)}
    if not gateway.request_id:
        body["request_id"] = False
    return body


def _route_to_dict(route: Route) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if route.weight_given:
        body["weight"] = format_percent(route.weight)
    body["targets"] = [target.address if target == Target(target.host, target.port)
                       else {"address": target.address, "weight": target.weight, "drain": target.drain}
                       for target in route.targets]
    if route.condition is not None:
        body["condition"] = route.condition
        body["condition_strength"] = format_percent(route.condition_strength)
    body["drain"] = route.drain
    return body
