"""The validated gateway configuration: plain immutable values, no behaviour.

`gateway.config.load` turns YAML/JSON into these objects (and rejects anything invalid with the field at fault);
`gateway.routing.table` compiles them into route tables. Weights and strengths are integer basis points
(1/100 of a percent): 97.5% is 9750, 100% is 10000, so decimal weights add up exactly.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

FULL = 10_000  # 100% in basis points

STICKY_MODES = ("none", "route", "instance")
CLIENT_CERTIFICATE_MODES = ("required", "optional")
SAME_SITE_VALUES = ("lax", "strict", "none")
ACCESS_LOG_FORMATS = ("json", "combined")


@dataclass(frozen=True, slots=True)
class Target:
    """One backend endpoint of a route."""
    host: str               # IPv4/IPv6 literal or a host name
    port: int
    weight: int = 100       # relative weight among the route's targets (round-robin share)
    drain: bool = False
    drained: bool = False   # its drain is over (set by gateway.runtime.drain when it serves, never by the user)
    tls: bool = False       # reached over TLS (written `https://host:port`), with the gateway's upstream_tls

    @property
    def address(self) -> str:
        """`host:port`, with IPv6 hosts in brackets: the target's identity everywhere."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """An active health check of a gateway's (or a route's) targets (docs/health-checks.md, gateway.runtime.health).
    Hashable: targets with the same address and check share one probe loop."""
    path: str | None = "/"    # the GET request's path; None: a TCP connect check (a tcp gateway's)
    interval: float = 5.0     # seconds from one probe's start to the next's
    timeout: float = 1.0      # seconds a probe may take to connect and read the status line (at most `interval`)
    healthy: int = 2          # consecutive successes that make an unhealthy target healthy again
    unhealthy: int = 3        # consecutive failures that make a target unhealthy
    host: str | None = None   # the Host header sent; None: the target's address
    expect: tuple[int, int] = (200, 399)    # the status range (inclusive) that counts as healthy


@dataclass(frozen=True, slots=True)
class PathRewrite:
    """A route's `rewrite.path` (docs/rewrites.md): every match of `regex` (RE2) in the request's path is replaced by
    `replace`, in which `\\0` is the match and `\\1`..`\\9` its groups."""
    regex: str
    replace: str


@dataclass(frozen=True, slots=True)
class HeaderRules:
    """A route's `request_headers` or `response_headers` (docs/rewrites.md): names as written (matched without
    regard to case), each named once across the three."""
    set: tuple[tuple[str, str], ...] = ()    # (name, value): replaces every line of that name with one
    add: tuple[tuple[str, str], ...] = ()    # (name, value): one more line, whatever is there
    remove: tuple[str, ...] = ()             # every line of these names is dropped


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    weight: int                       # basis points, resolved (routes without a weight share the rest)
    targets: tuple[Target, ...] = ()
    condition: str | None = None      # canonical condition text (parses back to the same predicate)
    condition_strength: int = FULL    # basis points of matching requests taken by this route
    drain: bool = False
    weight_given: bool = True         # False when the weight was derived from Vamp's "share the rest" rule
    drained: bool = False             # its drain is over (only gateway.runtime.drain sets it, in what is served)
    health_check: HealthCheck | Literal[False] | None = None   # None: the gateway's, if any; False: none (off)
    strip_prefix: str | None = None   # a leading path prefix taken off on a segment boundary (before `rewrite`)
    rewrite: PathRewrite | None = None            # `rewrite.path`
    request_headers: HeaderRules | None = None    # None: no rule (an empty `{}` is None too)
    response_headers: HeaderRules | None = None


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 2.0     # seconds to establish an upstream connection
    response: float = 30.0   # seconds from request sent to the response head (and between body reads)
    idle: float = 60.0       # seconds a keep-alive client connection may sit idle
    request_head: float = 30.0   # seconds a request head may take from its first byte (at most `idle`)


@dataclass(frozen=True, slots=True)
class StickyCookie:
    """Attributes of a sticky gateway's cookie (it is always `Path=/`, `HttpOnly`, `Max-Age=<sticky_ttl>`)."""
    same_site: str = "lax"   # one of SAME_SITE_VALUES; "none" (a site embedded in another's pages) needs secure
    secure: bool = False     # sent only over HTTPS (the gateway behind a TLS terminator)


@dataclass(frozen=True, slots=True)
class CertificateFiles:
    cert: str                # PEM certificate (a chain: the leaf first)
    key: str                 # its PEM private key, without passphrase


HANDSHAKE_TIMEOUT = 10.0     # seconds from a TLS connection's accept to the end of its handshake, by default


@dataclass(frozen=True, slots=True)
class Tls:
    """An https gateway's TLS (docs/tls.md): its certificates, chosen by SNI, and optional client verification."""
    certificates: tuple[CertificateFiles, ...]
    client_ca: str | None = None          # PEM CA file: clients must present a certificate it signed (mTLS)
    client_certificate: str = "required"  # one of CLIENT_CERTIFICATE_MODES (only with client_ca)
    handshake_timeout: float = HANDSHAKE_TIMEOUT   # seconds a connection may take to finish its handshake


@dataclass(frozen=True, slots=True)
class UpstreamTls:
    """How a gateway's https targets are verified."""
    ca: str | None = None             # PEM CA file; None: the system's CAs
    verify: bool = True               # False: any certificate is accepted (never in production)
    server_name: str | None = None    # SNI and the name checked; None: the target's host


@dataclass(frozen=True, slots=True)
class AccessLog:
    """A gateway's access log (docs/access-logs.md): one line per request, written off the event loop."""
    format: str = "json"     # one of ACCESS_LOG_FORMATS
    path: str = "-"          # a file (opened for appending, reopened when moved) or "-": standard output
    sample: int = FULL       # basis points of requests logged, spread evenly (100%: all)


@dataclass(frozen=True, slots=True)
class Gateway:
    name: str
    port: int
    protocol: str = "http"            # "http", "https" or "tcp"
    sticky: str = "none"              # one of STICKY_MODES
    sticky_ttl: float = 1800.0        # seconds
    sticky_cookie: StickyCookie = field(default_factory=StickyCookie)
    drain_timeout: float = 300.0      # seconds a removed/drained target, route or gateway may keep serving
    virtual_hosts: tuple[str, ...] = ()   # lower-case host names; empty: every Host on this port
    timeouts: Timeouts = field(default_factory=Timeouts)
    routes: tuple[Route, ...] = ()
    bind: str = "0.0.0.0"             # listen address (tests use 127.0.0.1)
    access_log: AccessLog | None = None   # None: no access log
    request_id: bool = True           # X-Request-Id sent upstream, returned and logged (docs/access-logs.md)
    tls: Tls | None = None            # an https gateway's certificates (required for https, only there)
    redirect_https: int | None = None     # an http gateway answering every request 308 to https on this port
    upstream_tls: UpstreamTls | None = None   # verification of https targets (None: the system CAs)
    health_check: HealthCheck | None = None   # of every route's targets, unless the route has its own

    def health_check_of(self, route: Route) -> HealthCheck | None:
        """The check of `route`'s targets: the route's own (none if it switched checks off), else the gateway's,
        else none."""
        check = route.health_check
        if check is None:
            return self.health_check
        return check if check is not False else None


@dataclass(frozen=True, slots=True)
class GeoSettings:
    database: str | None = None                 # None: the shipped default (iptocc); else a .mmdb path
    trusted_proxies: tuple[str, ...] = ()       # CIDRs, normalised


@dataclass(frozen=True, slots=True)
class Config:
    gateways: tuple[Gateway, ...] = ()
    geo: GeoSettings = field(default_factory=GeoSettings)

    def gateway(self, name: str) -> Gateway | None:
        for gw in self.gateways:
            if gw.name == name:
                return gw
        return None
