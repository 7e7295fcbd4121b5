"""The validated gateway configuration: plain immutable values, no behaviour.

`gateway.config.load` turns YAML/JSON into these objects (and rejects anything invalid with the field at fault);
`gateway.routing.table` compiles them into route tables. Weights and strengths are integer basis points
(1/100 of a percent): 97.5% is 9750, 100% is 10000, so decimal weights add up exactly.
"""
from __future__ import annotations

from dataclasses import dataclass, field

FULL = 10_000  # 100% in basis points

STICKY_MODES = ("none", "route", "instance")
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

    @property
    def address(self) -> str:
        """`host:port`, with IPv6 hosts in brackets: the target's identity everywhere."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


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
class AccessLog:
    """A gateway's access log (docs/access-logs.md): one line per request, written off the event loop."""
    format: str = "json"     # one of ACCESS_LOG_FORMATS
    path: str = "-"          # a file (opened for appending, reopened when moved) or "-": standard output
    sample: int = FULL       # basis points of requests logged, spread evenly (100%: all)


@dataclass(frozen=True, slots=True)
class Gateway:
    name: str
    port: int
    protocol: str = "http"            # "http" or "tcp"
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
