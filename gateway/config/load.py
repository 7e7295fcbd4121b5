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
  `routes` (possibly none: the gateway answers 503), `bind` (an IP literal, default 0.0.0.0), `health_check`
  {path (/, starting with "/"), interval (5s, at least 100ms), timeout (1s or the interval if shorter, at most
  the interval), healthy (2), unhealthy (3) (1-100 each), host (the target's address), expect (200-399)}; a tcp
  gateway's check is a TCP connect and takes no path, host or expect; `access_log` {format json|combined
  (json), path "-"|FILE ("-": standard output; a file must be writable now), sample (100%)}, not for tcp
  gateways; `request_id` (true).
- TLS (docs/tls.md): a gateway on `port: N/https` needs `tls` {certificates: [{cert, key}, ...] (at least one;
  each pair read and checked now: PEM, the key the certificate's), client_ca (a PEM CA file: mTLS),
  client_certificate required|optional (required; only with client_ca), handshake_timeout (10s: a connection
  that has not finished its handshake by then is closed; a shared port takes its gateways' longest)}; `tls`
  anywhere else is an error.
  `redirect_https` (true, or {port: N}, default 443; http gateways only) answers every request 308 to https.
  `upstream_tls` {ca (PEM file), verify (true), server_name} says how targets written `https://host:port`
  are verified.
- Route: `weight`, `targets` (possibly none), `condition` (stored in canonical form), `condition_strength`
  (100% by default, only with a condition), `drain`, `health_check` (as a gateway's, replacing it whole; `false`
  or `off`: none, whatever the gateway's);
  `strip_prefix`, `rewrite` {path {regex, replace}}, `request_headers` and `response_headers` {set, add, remove}
  (docs/rewrites.md; the syntax is `gateway.config.rewrites`; not on tcp gateways; an empty rule set is none). A
  target is "host:port" or {address, weight (integer 0-1000, default 100; 0 takes no traffic), drain}.
- Weights of a gateway: given weights sum to exactly 100% or are all 0%; routes without a weight share what
  the weighted routes leave evenly in basis points, the remainder going one basis point each to the first
  of them (so the sum is exact); more than 100% given is an error.
- Gateways sharing a port share one listener: the same `bind`, at most one without `virtual_hosts`, no host
  claimed twice; a tcp gateway is alone on its port and has no conditions, sticky or virtual hosts. Gateways
  sharing an https port are all https (their certificates are pooled for SNI; the default certificate, for a
  name none serves or no name, is the first certificate of the first gateway on the port) with the same
  client_ca and client_certificate (one handshake serves them all).
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
from typing import Any, Literal

import yaml

from gateway.common.names import RULE as NAME_RULE, breaks_rule
from gateway.common.units import (GATEWAY_PROTOCOLS, format_duration, format_percent, is_host_name, parse_address,
                                  parse_duration, parse_percent, parse_port, shown, unknown_field)
from gateway.common.yamltext import YamlTextError, line_of, single_document
from gateway.config import rewrites
from gateway.config.model import (ACCESS_LOG_FORMATS, CLIENT_CERTIFICATE_MODES, FULL, HANDSHAKE_TIMEOUT,
                                  SAME_SITE_VALUES, STICKY_MODES, AccessLog, CertificateFiles, Config, Gateway,
                                  GeoSettings, HeaderRules, HealthCheck, PathRewrite, Route, StickyCookie, Target,
                                  Timeouts, Tls, UpstreamTls)
from gateway.routing import conditions
from gateway.tls.certificates import CertificateError, load_client_ca, load_pair, read_leaf

Location = tuple[str | int, ...]

TOP_FIELDS = ("gateways", "geo")
GATEWAY_FIELDS = ("name", "port", "bind", "sticky", "sticky_ttl", "sticky_cookie", "drain_timeout", "virtual_hosts",
                  "timeouts", "routes", "tls", "redirect_https", "upstream_tls", "health_check",
                  "access_log", "request_id")
TLS_FIELDS = ("certificates", "client_ca", "client_certificate", "handshake_timeout")
CERTIFICATE_FIELDS = ("cert", "key")
REDIRECT_FIELDS = ("port",)
UPSTREAM_TLS_FIELDS = ("ca", "verify", "server_name")
HTTPS_PORT = 443
HTTPS_PREFIX = "https://"
ACCESS_LOG_FIELDS = ("format", "path", "sample")
STICKY_COOKIE_FIELDS = ("same_site", "secure")
TIMEOUT_FIELDS = ("connect", "response", "idle", "request_head")
ROUTE_FIELDS = ("weight", "targets", "condition", "condition_strength", "drain", "strip_prefix", "rewrite",
                "request_headers", "response_headers", "health_check")
REWRITE_FIELDS = ("path",)
PATH_REWRITE_FIELDS = ("regex", "replace")
TARGET_FIELDS = ("address", "weight", "drain")
GEO_FIELDS = ("database", "trusted_proxies")
HEALTH_CHECK_FIELDS = ("path", "interval", "timeout", "healthy", "unhealthy", "host", "expect")
MAX_TARGET_WEIGHT = 1000
MIN_HEALTH_INTERVAL = 0.1       # seconds
MAX_HEALTH_THRESHOLD = 100
MAX_HEALTH_PATH = 2048          # characters

_GATEWAY_NAME = re.compile(r"[A-Za-z0-9_.:-]+(?:/[A-Za-z0-9_.:-]+){0,3}")
_ROUTE_NAME = re.compile(r"[^\s\x00-\x1f\x7f-\x9f]+")
_HEALTH_PATH = re.compile(r"/[\x21-\x7e]*")                  # visible ASCII: it goes on the request line as is
_HEALTH_HOST = re.compile(r"[A-Za-z0-9._-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")
_STATUS_RANGE = re.compile(r"([1-5][0-9][0-9])(?:\s*-\s*([1-5][0-9][0-9]))?")
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
            if gateway.protocol != other.protocol:
                raise PortConflict(f"port {gateway.port} is already used by gateway {other.name!r} for "
                                   f"{other.protocol}; gateways sharing a port are all http or all https",
                                   at + ("port",))
            if gateway.tls is not None and other.tls is not None and (
                    (gateway.tls.client_ca, gateway.tls.client_certificate)
                    != (other.tls.client_ca, other.tls.client_certificate)):
                raise PortConflict(f"gateway {other.name!r} on the same https port {gateway.port} verifies client "
                                   "certificates differently; gateways sharing a port share one handshake, so "
                                   "they need the same client_ca and client_certificate", at + ("tls",))
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
    port, protocol = _parsed(lambda value: parse_port(value, GATEWAY_PROTOCOLS), body["port"], at + ("port",))
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
    if body.get("health_check") is not None:
        fields["health_check"] = _health_check(body["health_check"], at + ("health_check",), protocol)
    if protocol == "https":
        if body.get("tls") is None:
            raise ConfigError("an https gateway needs tls: {certificates: [{cert: FILE, key: FILE}]}",
                              at + ("tls",))
        fields["tls"] = _tls(body["tls"], at + ("tls",))
    elif body.get("tls") is not None:
        raise ConfigError(f"tls is for https gateways only; listen with port: '{port}/https'", at + ("tls",))
    if body.get("redirect_https") is not None:
        if protocol != "http":
            raise ConfigError("redirect_https is for plain http gateways only", at + ("redirect_https",))
        fields["redirect_https"] = _redirect_https(body["redirect_https"], at + ("redirect_https",))
    if body.get("upstream_tls") is not None:
        fields["upstream_tls"] = _upstream_tls(body["upstream_tls"], at + ("upstream_tls",))
    if body.get("access_log") is not None:
        if protocol == "tcp":
            raise ConfigError("a tcp gateway has no HTTP requests to log", at + ("access_log",))
        fields["access_log"] = _access_log(body["access_log"], at + ("access_log",))
    fields["request_id"] = _bool(body.get("request_id"), True, at + ("request_id",))
    gateway = Gateway(**fields)
    if protocol == "tcp":
        for route in gateway.routes:
            for index, target in enumerate(route.targets):
                if target.tls:
                    raise ConfigError("a tcp gateway passes bytes through; its targets cannot be https",
                                      at + ("routes", route.name, "targets", index))
        if gateway.sticky != "none":
            raise ConfigError("a tcp gateway cannot be sticky (it sees no HTTP cookies)", at + ("sticky",))
        if gateway.virtual_hosts:
            raise ConfigError("a tcp gateway cannot have virtual_hosts (it sees no Host header)",
                              at + ("virtual_hosts",))
    return gateway


def _tls(value: Any, at: Location) -> Tls:
    body = _mapping(value, at, "tls settings (certificates, client_ca, client_certificate, handshake_timeout)")
    _only_fields(body, TLS_FIELDS, at, "tls")
    items = _list(body.get("certificates"), at + ("certificates",), "certificates, like [{cert: FILE, key: FILE}]")
    if not items:
        raise ConfigError("expected at least one certificate, like [{cert: FILE, key: FILE}]",
                          at + ("certificates",))
    certificates = tuple(_certificate(item, at + ("certificates", index)) for index, item in enumerate(items))
    client_ca = body.get("client_ca")
    if client_ca is not None:
        client_ca = _ca_file(client_ca, at + ("client_ca",))
    mode = body.get("client_certificate")
    if mode is None:
        mode = "required"
    elif client_ca is None:
        raise ConfigError("client_certificate needs client_ca (the CA that signs client certificates)",
                          at + ("client_certificate",))
    elif not (isinstance(mode, str) and mode in CLIENT_CERTIFICATE_MODES):
        raise ConfigError(f"expected one of {', '.join(CLIENT_CERTIFICATE_MODES)}, got {shown(mode)}",
                          at + ("client_certificate",))
    handshake = body.get("handshake_timeout")
    handshake_timeout = (HANDSHAKE_TIMEOUT if handshake is None
                         else _parsed(parse_duration, handshake, at + ("handshake_timeout",)))
    return Tls(certificates=certificates, client_ca=client_ca, client_certificate=mode,
               handshake_timeout=handshake_timeout)


def _certificate(value: Any, at: Location) -> CertificateFiles:
    """A certificate and its key, read and checked now (gateway.tls.certificates)."""
    body = _mapping(value, at, "a certificate's files (cert, key)")
    _only_fields(body, CERTIFICATE_FIELDS, at, "a certificate")
    paths = {}
    for key in CERTIFICATE_FIELDS:
        path = body.get(key)
        if path is None:
            what = "certificate" if key == "cert" else "private key"
            raise ConfigError(f"required field missing: the PEM file of the {what}", at + (key,))
        if not isinstance(path, str) or not path.strip():
            raise ConfigError(f"expected a file path, got {shown(path)}", at + (key,))
        paths[key] = path
    try:
        read_leaf(paths["cert"])
    except CertificateError as exc:
        raise ConfigError(exc.reason, at + ("cert",)) from None
    try:
        load_pair(paths["cert"], paths["key"])
    except CertificateError as exc:
        raise ConfigError(exc.reason, at + ("key" if exc.path == paths["key"] else "cert",)) from None
    return CertificateFiles(cert=paths["cert"], key=paths["key"])


def _ca_file(value: Any, at: Location) -> str:
    """A readable PEM file of CA certificates."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"expected the path of a PEM file of CA certificates, got {shown(value)}", at)
    try:
        load_client_ca(value)
    except CertificateError as exc:
        raise ConfigError(exc.reason, at) from None
    return value


def _redirect_https(value: Any, at: Location) -> int | None:
    """true: to port 443; false: none; {port: N}."""
    if isinstance(value, bool):
        return HTTPS_PORT if value else None
    body = _mapping(value, at, "redirect settings (port), or true")
    _only_fields(body, REDIRECT_FIELDS, at, "redirect_https")
    port = body.get("port")
    if port is None:
        return HTTPS_PORT
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigError(f"expected a port 1-65535, got {shown(port)}", at + ("port",))
    return int(port)


def _upstream_tls(value: Any, at: Location) -> UpstreamTls:
    body = _mapping(value, at, "upstream TLS settings (ca, verify, server_name)")
    _only_fields(body, UPSTREAM_TLS_FIELDS, at, "upstream_tls")
    ca = body.get("ca")
    if ca is not None:
        ca = _ca_file(ca, at + ("ca",))
    server_name = body.get("server_name")
    if server_name is not None:
        if not isinstance(server_name, str) or not is_host_name(server_name.strip().lower().rstrip(".")):
            raise ConfigError(f"expected a host name, got {shown(server_name)}", at + ("server_name",))
        server_name = server_name.strip().lower().rstrip(".")
    return UpstreamTls(ca=ca, verify=_bool(body.get("verify"), True, at + ("verify",)), server_name=server_name)


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
    if protocol == "tcp":
        for key in ("strip_prefix", "rewrite", "request_headers", "response_headers"):
            if body.get(key) is not None:
                raise ConfigError(f"a tcp gateway cannot have {key} (it sees no HTTP request)", at + (key,))
    return Route(name=name,
                 weight=_parsed(parse_percent, body["weight"], at + ("weight",)) if weight_given else 0,
                 targets=_targets(body.get("targets"), at + ("targets",)),
                 condition=condition, condition_strength=strength,
                 drain=_bool(body.get("drain"), False, at + ("drain",)),
                 weight_given=weight_given,
                 health_check=_route_health_check(body.get("health_check"), at + ("health_check",), protocol),
                 strip_prefix=_strip_prefix(body.get("strip_prefix"), at + ("strip_prefix",)),
                 rewrite=_rewrite(body.get("rewrite"), at + ("rewrite",)),
                 request_headers=_header_rules(body.get("request_headers"), at + ("request_headers",), "request"),
                 response_headers=_header_rules(body.get("response_headers"), at + ("response_headers",),
                                                "response"))


def _condition(value: Any, at: Location) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"expected a condition as text, like 'browser = Firefox', got {shown(value)}", at)
    try:
        return conditions.canonical(value)
    except conditions.ConditionError as exc:
        raise ConfigError(str(exc), at) from None


def _strip_prefix(value: Any, at: Location) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"expected a path prefix like /api, got {shown(value)}", at)
    try:
        rewrites.check_strip_prefix(value)
    except rewrites.RuleError as exc:
        raise ConfigError(str(exc), at) from None
    return value


def _rewrite(value: Any, at: Location) -> PathRewrite | None:
    """`rewrite: {path: {regex, replace}}`: the regex compiles in RE2 (faults with their position, as for
    conditions), the replacement names only its groups."""
    if value is None:
        return None
    body = _mapping(value, at, "rewrites (path)")
    _only_fields(body, REWRITE_FIELDS, at, "rewrite")
    if body.get("path") is None:
        raise ConfigError("required field missing: the path rewrite, {regex: ..., replace: ...}", at + ("path",))
    at += ("path",)
    path = _mapping(body["path"], at, "regex and replace")
    _only_fields(path, PATH_REWRITE_FIELDS, at, "rewrite.path")
    texts: dict[str, str] = {}
    for key in PATH_REWRITE_FIELDS:
        text = path.get(key)
        if text is None:
            raise ConfigError(f"required field missing: the {key}", at + (key,))
        if not isinstance(text, str):
            example = "^/api/(.*)" if key == "regex" else "/v2/\\1"
            raise ConfigError(f"expected text, like {example}, got {shown(text)}", at + (key,))
        texts[key] = text
    try:
        groups = conditions.compile_regex(texts["regex"], captures=True).groups
    except conditions.ConditionError as exc:
        raise ConfigError(str(exc), at + ("regex",)) from None
    try:
        rewrites.parse_replacement(texts["replace"], groups)
    except rewrites.RuleError as exc:
        raise ConfigError(str(exc), at + ("replace",)) from None
    return PathRewrite(regex=texts["regex"], replace=texts["replace"])


def _header_rules(value: Any, at: Location, side: str) -> HeaderRules | None:
    """`set`/`add` (name: value) and `remove` (names) for the `side` ("request" or "response"); None when there
    is no rule at all."""
    if value is None:
        return None
    body = _mapping(value, at, "header rules (set, add, remove)")
    _only_fields(body, rewrites.OPERATIONS, at, f"{side}_headers")
    named: dict[str, str] = {}          # lower-case name -> the operation naming it

    def claim(name: Any, operation: str, name_at: Location) -> str:
        if not isinstance(name, str):
            raise ConfigError(f"expected a header name, got {shown(name)}", name_at)
        try:
            rewrites.check_header_name(name)
        except rewrites.RuleError as exc:
            raise ConfigError(str(exc), name_at) from None
        refused = rewrites.header_refused(name, side, operation)
        if refused is not None:
            raise ConfigError(f"{side}_headers cannot {operation} {name}: {refused}", name_at)
        earlier = named.get(name.lower())
        if earlier is not None:
            raise ConfigError(f"{name} is named twice (in {earlier} and {operation}): name a header once", name_at)
        named[name.lower()] = operation
        return name

    lines: dict[str, tuple[tuple[str, str], ...]] = {}
    for operation in ("set", "add"):
        pairs = []
        given = body.get(operation)
        for name, text in ({} if given is None else _mapping(given, at + (operation,), "header names to values")
                           ).items():
            name_at = at + (operation, name)
            claim(name, operation, name_at)
            if isinstance(text, int) and not isinstance(text, bool):
                text = str(text)
            if not isinstance(text, str):
                raise ConfigError(f"expected the header's value as text, got {shown(text)}", name_at)
            try:
                rewrites.check_header_value(text, name)
            except rewrites.RuleError as exc:
                raise ConfigError(str(exc), name_at) from None
            pairs.append((name, text))
        lines[operation] = tuple(pairs)
    removed = tuple(claim(name, "remove", at + ("remove", index)) for index, name in
                    enumerate(_list(body.get("remove"), at + ("remove",), "header names, like [X-Debug]")))
    if not (lines["set"] or lines["add"] or removed):
        return None
    return HeaderRules(set=lines["set"], add=lines["add"], remove=removed)


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


def parse_target_address(value: object) -> tuple[str, int, bool]:
    """'host:port' or 'https://host:port' -> (host, port, over TLS); ValueError as `parse_address`."""
    tls = isinstance(value, str) and value.strip().lower().startswith(HTTPS_PREFIX)
    if tls:
        value = str(value).strip()[len(HTTPS_PREFIX):]
    host, port = parse_address(value)
    return host, port, tls


def _target_address(value: Any, at: Location) -> tuple[str, int, bool]:
    result: tuple[str, int, bool] = _parsed(parse_target_address, value, at)
    return result


def _target(item: Any, at: Location) -> Target:
    if isinstance(item, str):
        host, port, tls = _target_address(item, at)
        return Target(host, port, tls=tls)
    if not isinstance(item, dict):
        raise ConfigError(f"expected 'host:port' or a mapping with address, weight and drain, got {shown(item)}",
                          at)
    body = _mapping(item, at, "target fields")
    _only_fields(body, TARGET_FIELDS, at, "a target")
    if body.get("address") is None:
        raise ConfigError("required field missing: the target's host:port", at + ("address",))
    host, port, tls = _target_address(body["address"], at + ("address",))
    fields: dict[str, Any] = {"drain": _bool(body.get("drain"), False, at + ("drain",)), "tls": tls}
    weight = body.get("weight")
    if weight is not None:
        if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= MAX_TARGET_WEIGHT:
            raise ConfigError(f"expected a whole number from 0 to {MAX_TARGET_WEIGHT}, got {shown(weight)}",
                              at + ("weight",))
        fields["weight"] = weight
    return Target(host, port, **fields)


# -- validation: health checks ----------------------------------------------------------------------
def _health_check(value: Any, at: Location, protocol: str) -> HealthCheck:
    """`health_check` of a gateway or route: an HTTP GET (`path`, `host`, `expect`) on an http gateway, a TCP
    connect on a tcp gateway (which takes none of those three)."""
    body = _mapping(value, at, "health check fields (" + ", ".join(HEALTH_CHECK_FIELDS) + ")")
    _only_fields(body, HEALTH_CHECK_FIELDS, at, "health_check")
    default = HealthCheck()
    fields: dict[str, Any] = {}
    if protocol == "tcp":
        for key in ("path", "host", "expect"):
            if body.get(key) is not None:
                raise ConfigError(f"a tcp gateway's health check is a TCP connect: it takes no {key}", at + (key,))
        fields["path"] = None
    else:
        if body.get("path") is not None:
            fields["path"] = _health_path(body["path"], at + ("path",))
        if body.get("host") is not None:
            fields["host"] = _health_host(body["host"], at + ("host",))
        if body.get("expect") is not None:
            fields["expect"] = _status_range(body["expect"], at + ("expect",))
    interval = default.interval
    if body.get("interval") is not None:
        interval = _parsed(parse_duration, body["interval"], at + ("interval",))
        if interval < MIN_HEALTH_INTERVAL:
            raise ConfigError(f"expected an interval of at least {format_duration(MIN_HEALTH_INTERVAL)}, got "
                              f"{shown(body['interval'])}", at + ("interval",))
    timeout = min(default.timeout, interval)
    if body.get("timeout") is not None:
        timeout = _parsed(parse_duration, body["timeout"], at + ("timeout",))
        if timeout > interval:
            raise ConfigError(f"the timeout {format_duration(timeout)} is longer than the interval "
                              f"{format_duration(interval)}", at + ("timeout",))
    for key in ("healthy", "unhealthy"):
        count = body.get(key)
        if count is not None:
            if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_HEALTH_THRESHOLD:
                raise ConfigError(f"expected a whole number of consecutive checks from 1 to {MAX_HEALTH_THRESHOLD}, "
                                  f"got {shown(count)}", at + (key,))
            fields[key] = count
    return HealthCheck(interval=interval, timeout=timeout, **fields)


def _route_health_check(value: Any, at: Location, protocol: str) -> HealthCheck | Literal[False] | None:
    """A route's `health_check`: absent (the gateway's), its own, or `false`/`off` (none, whatever the gateway's)."""
    if value is None or value is False:
        return value
    if value is True:
        raise ConfigError("expected health check fields, or false (off) for none, got true", at)
    return _health_check(value, at, protocol)


def _health_path(value: Any, at: Location) -> str:
    if (isinstance(value, str) and len(value) <= MAX_HEALTH_PATH and _HEALTH_PATH.fullmatch(value)):
        return value
    raise ConfigError("expected a path starting with '/', without spaces or control characters, like '/healthz', "
                      f"got {shown(value)}", at)


def _health_host(value: Any, at: Location) -> str:
    if isinstance(value, str) and len(value) <= 260 and _HEALTH_HOST.fullmatch(value):
        return value
    raise ConfigError(f"expected a Host header value like 'shop.example.com' or 'shop:8080', got {shown(value)}", at)


def _status_range(value: Any, at: Location) -> tuple[int, int]:
    """`200`, `"200-399"` -> (low, high), inclusive, within 100-599."""
    match = None
    if isinstance(value, int) and not isinstance(value, bool):
        match = _STATUS_RANGE.fullmatch(str(value))
    elif isinstance(value, str):
        match = _STATUS_RANGE.fullmatch(value.strip())
    if match is not None:
        low = int(match.group(1))
        high = int(match.group(2) or low)
        if low <= high:
            return low, high
    raise ConfigError(f"expected a status or a range of statuses like 200 or '200-399', got {shown(value)}", at)


def _format_status_range(expect: tuple[int, int]) -> str:
    return str(expect[0]) if expect[0] == expect[1] else f"{expect[0]}-{expect[1]}"


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
        **({} if gateway.health_check is None else {"health_check": _health_check_to_dict(gateway.health_check)}),
        "routes": {route.name: _route_to_dict(route) for route in gateway.routes},
        **_tls_to_dict(gateway),
    }
    if gateway.access_log is not None:
        log = gateway.access_log
        body["access_log"] = {"format": log.format, "path": log.path, "sample": format_percent(log.sample)}
    if not gateway.request_id:
        body["request_id"] = False
    return body


def _tls_to_dict(gateway: Gateway) -> dict[str, Any]:
    """The TLS fields a gateway has (none when it has none, so documents without TLS stay as they were)."""
    body: dict[str, Any] = {}
    tls = gateway.tls
    if tls is not None:
        body["tls"] = {"certificates": [{"cert": c.cert, "key": c.key} for c in tls.certificates]}
        if tls.client_ca is not None:
            body["tls"].update(client_ca=tls.client_ca, client_certificate=tls.client_certificate)
        if tls.handshake_timeout != HANDSHAKE_TIMEOUT:
            body["tls"]["handshake_timeout"] = format_duration(tls.handshake_timeout)
    if gateway.redirect_https is not None:
        body["redirect_https"] = {"port": gateway.redirect_https}
    upstream = gateway.upstream_tls
    if upstream is not None:
        body["upstream_tls"] = {"ca": upstream.ca, "verify": upstream.verify, "server_name": upstream.server_name}
    return body


def _target_to_text(target: Target) -> str:
    return HTTPS_PREFIX + target.address if target.tls else target.address

def _route_to_dict(route: Route) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if route.weight_given:
        body["weight"] = format_percent(route.weight)
    body["targets"] = [_target_to_text(target) if target == Target(target.host, target.port, tls=target.tls)
                       else {"address": _target_to_text(target), "weight": target.weight, "drain": target.drain}
                       for target in route.targets]
    if route.condition is not None:
        body["condition"] = route.condition
        body["condition_strength"] = format_percent(route.condition_strength)
    body["drain"] = route.drain
    if route.strip_prefix is not None:
        body["strip_prefix"] = route.strip_prefix
    if route.rewrite is not None:
        body["rewrite"] = {"path": {"regex": route.rewrite.regex, "replace": route.rewrite.replace}}
    for key, rules in (("request_headers", route.request_headers), ("response_headers", route.response_headers)):
        if rules is not None:
            body[key] = {**({"set": dict(rules.set)} if rules.set else {}),
                         **({"add": dict(rules.add)} if rules.add else {}),
                         **({"remove": list(rules.remove)} if rules.remove else {})}
    if route.health_check is not None:
        body["health_check"] = route.health_check and _health_check_to_dict(route.health_check)
    return body


def _health_check_to_dict(check: HealthCheck) -> dict[str, Any]:
    """Every field explicit; `path`, `host` and `expect` only where they apply (an HTTP check; `host` when set)."""
    body: dict[str, Any] = {} if check.path is None else {"path": check.path}
    body.update(interval=format_duration(check.interval), timeout=format_duration(check.timeout),
                healthy=check.healthy, unhealthy=check.unhealthy)
    if check.path is not None:
        if check.host is not None:
            body["host"] = check.host
        body["expect"] = _format_status_range(check.expect)
    return body
