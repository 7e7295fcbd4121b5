"""The route table: a configuration compiled once, consulted by the proxy for every request.

`RouteTable(config, previous)` builds, per listening port, the gateways told apart by Host, and per gateway
everything `GatewayRouter.select()` needs, so that the per-request work is a few attribute reads, one
condition closure per conditional route, one cookie lookup for sticky gateways and integer arithmetic: no
string formatting, no hashing of our own, no sorting, no regular-expression compilation.

Both round-robins (the weight split across routes, the target pick within a route) are one
`gateway.routing.balancer.SmoothWeighted` each, draining routes and targets fenced in it; sticky cookies
(names, Set-Cookie values, the lookup of a cookie) are `gateway.routing.sticky`.

Routing semantics (docs/gateway-config.md, "Routing"), made exact:

1. Conditional routes are tried in the order written. The first whose condition matches owns the request,
   and takes a `condition_strength` share of the requests it owns, spread evenly by error diffusion: the
   k-th owned request is taken iff floor(k*s/10000) > floor((k-1)*s/10000), so 50% takes exactly every
   other owned request, 100% all, 0% none. Only the first matching route is considered: an owned request
   its route does not take (or cannot serve, every target being down) goes to the weight split, never to a
   later conditional route.
2. Every other request is split across the routes with weight > 0 by smooth weighted round-robin (nginx's
   algorithm). With two routes every window of consecutive requests is within one request of the exact
   split, so 1000 requests at 90/10 give exactly 900/100. With three or more routes no sequence can promise
   that for every weight set; measured, smooth round-robin stays within two requests (usually within one).
   Routes at 0% get no weight-split traffic, so a gateway whose routes are all at 0% serves only requests
   its conditions take (others: None, the proxy answers 503).
3. Sticky gateways name the chosen route (`sticky: route`, cookie value `<route id>`) or route and target
   (`sticky: instance`, `<route id>.<target id>`) in the cookie `vamp_<8 hex of sha1(gateway name)>`. Ids
   are the first 8 hex digits of sha1 of the route name / target address, so they survive restarts and
   rebuilds. A valid cookie wins over conditions and weights and advances neither round-robin nor strength
   state; a cookie is valid while its route exists and has a target not backed off (instance mode: the very
   target, present in that route and not backed off). Anything else in the cookie is ignored: the request is
   routed as if it had none. Every answer of a sticky gateway carries a Set-Cookie (sliding `sticky_ttl`).
4. Within a route, targets are picked by smooth weighted round-robin over the available ones (not backed off,
   not draining, weight > 0). A route is *live* while one of its targets is available or, every one being
   backed off, one's back-off has expired (a request may then probe it). The weight split is smooth weighted
   round-robin over the live routes only: a route with no live target takes no share, as if its weight were
   0, until a target comes back. Each route keeps a count of its targets not backed off and the earliest
   end of a back-off, updated when a target fails or recovers, so asking "is it live" costs O(1).
   A target its active health check finds unhealthy (gateway.runtime.health) is skipped like a backed-off one
   whose back-off never ends, until the check passes again: a route whose targets are all unhealthy is not
   live, and its requests go to the other routes by the weight split. (`down_until` carries both, so the
   per-request test is the one it always was.)
   A request whose connection fails (`redispatch`) goes to another available target of its route, else to
   another route by the weight split, with that route's cookie for a sticky client.
5. A draining route (or target) gets no new non-sticky requests: it is skipped for condition ownership, the
   weight split and target picks. A valid sticky cookie still reaches it; a sticky client of a draining route
   (route mode) gets its non-draining targets first, else its draining ones. Once its drain is over
   (`drained`, gateway.runtime.drain) nothing reaches it: a cookie naming it is treated as no cookie.
6. `RouteTable(new, previous=old)` reuses old `TargetState` objects (same gateway, route and address) and
   `RouteState.remainder`, so back-off, upstream pools and counters carry over; round-robin and strength
   state start afresh. (A target that leaves its route has its counters folded into the route's remainder by
   the runtime: gateway.proxy.stats.)
7. Targets written `https://host:port` carry the SSL context of their gateway's `upstream_tls` (`ssl_context`,
   one context per distinct setting, made when the table is built, or the previous table's while the setting
   and its CA file are unchanged: loading CAs takes milliseconds) and the name to verify (`server_hostname`);
   plain targets carry None. A gateway with `redirect_https` is compiled with its answer's port part
   (`GatewayRouter.redirect_https`), which the proxy tests once per new Host, never per request.
"""
from __future__ import annotations

import ssl
from collections.abc import Iterator
from typing import TYPE_CHECKING

from gateway.config import model
from gateway.proxy.rules import RequestRules, ResponseRules, compile_rules
from gateway.routing.balancer import SmoothWeighted
from gateway.routing.conditions import Condition, Matcher, compile_condition
from gateway.routing.request import RequestView
from gateway.routing.route_index import INDEX_FROM, RouteIndex
from gateway.routing.sticky import StickyCookie, StickyLookup, short_id
from gateway.tls.certificates import FileStamp, stamp
from gateway.tls.contexts import upstream_context

# The client contexts of https targets by (upstream_tls setting, its CA file's stamp when it has one).
UpstreamContexts = dict[tuple[model.UpstreamTls | None, FileStamp | None], ssl.SSLContext]

if TYPE_CHECKING:
    from gateway.proxy.exchange import AccessLogHook
    from gateway.proxy.stats import TargetStats
    from gateway.proxy.upstream import UpstreamPool

BACKOFF_FIRST = 1.0     # seconds a target is skipped after its first consecutive connect failure
BACKOFF_MAX = 30.0      # cap of the doubling back-off
INFINITY = float("inf")


class TargetState:
    """Runtime state of one target of one route: health, load and what the proxy attaches to it."""

    __slots__ = ("target", "address", "host", "port", "weight", "drain", "down_until", "failures", "unhealthy",
                 "in_flight", "pool", "stats", "cookie_id", "last_used", "owner", "log_quiet_until",
                 "log_suppressed", "ssl_context", "server_hostname")

    def __init__(self, target: model.Target, tls: tuple[ssl.SSLContext, str] | None = None) -> None:
        self.address = target.address
        self.host = target.host
        self.port = target.port
        self.cookie_id = short_id(self.address)
        # What the balancer reads: 0.0 when the target can take requests, the end of its back-off after connect
        # failures (`failures` > 0), INFINITY while its active health check finds it unhealthy.
        self.down_until = 0.0
        self.failures = 0
        self.unhealthy = False   # set by the active health check (gateway.runtime.health) through set_unhealthy
        self.in_flight = 0
        self.last_used = 0.0     # when it was last picked (monotonic): a drain waits for sticky clients
        self.pool: UpstreamPool | None = None       # the proxy's keep-alive connections to it
        self.stats: TargetStats | None = None
        self.owner: RouteState | None = None    # the route (of the table last built) whose live count it is in
        self.log_quiet_until = 0.0               # connect failures are logged at most once per interval ...
        self.log_suppressed = 0                  # ... and counted meanwhile (gateway.proxy.upstream)
        self.adopt(target, tls)

    def adopt(self, target: model.Target, tls: tuple[ssl.SSLContext, str] | None = None) -> None:
        """Take the (possibly changed) configuration of the same address (round-robin state is the new route's).
        A drained target (its drain is over) is picked by nobody: weight 0, at no cost per request. `tls`: the
        (client context, name to verify) of an https target."""
        self.target = target
        # What a new connection to it is made with (gateway.proxy.upstream): TLS or not, and the name checked.
        self.ssl_context: ssl.SSLContext | None = tls[0] if tls is not None else None
        self.server_hostname: str | None = tls[1] if tls is not None else None
        self.weight = 0 if target.drained else target.weight
        self.drain = target.drain or target.drained

    def report_to(self, route: RouteState) -> None:
        """Tell `route` (of the table last built) when this target fails or recovers, from now on."""
        self.owner = route

    def available(self, now: float) -> bool:
        return self.down_until <= now and not self.drain

    def mark_failed(self, now: float) -> None:
        """Passive health check: back off 1 s after a refused connection, doubling per failure, at most 30 s.
        A failure while backed off already (a connection tried alongside the one that failed first) is the
        same failure: it does not double the back-off again."""
        if self.down_until > now:
            return
        self.failures += 1
        self.down_until = now + min(BACKOFF_MAX, BACKOFF_FIRST * 2.0 ** min(self.failures - 1, 16))
        if self.owner is not None:
            self.owner.count_live()

    def mark_ok(self) -> None:
        if self.failures:
            self.failures = 0
            self.down_until = INFINITY if self.unhealthy else 0.0
            if self.owner is not None:
                self.owner.count_live()

    def set_unhealthy(self, unhealthy: bool) -> None:
        """Active health check: an unhealthy target takes no request until its check passes again, as if backed
        off for ever (folded into `down_until`, so the hot path reads nothing more). A target found healthy
        accepts connections: any passive back-off ends too."""
        if unhealthy == self.unhealthy:
            return
        self.unhealthy = unhealthy
        self.failures = 0
        self.down_until = INFINITY if unhealthy else 0.0
        if self.owner is not None:
            self.owner.count_live()

    def __repr__(self) -> str:
        return f"TargetState({self.address}, weight={self.weight}, drain={self.drain})"


class RouteState:
    """One route of one gateway: its targets, their round-robin, its condition's strength and its sticky cookies.

    `down_until` is what the weight split reads: 0.0 while a target is live, else the earliest end of a
    back-off (INFINITY with no target that takes requests, or every one unhealthy).
    """

    __slots__ = ("name", "route", "targets", "condition", "cookie_id", "remainder", "last_used", "live",
                 "retry_at", "down_until", "pick_target", "pick_for_sticky_client", "_strength",
                 "_strength_credit", "_set_cookie", "_set_cookies", "request_rules", "response_rules")

    def __init__(self, route: model.Route, targets: tuple[TargetState, ...], condition: Condition | None,
                 remainder: TargetStats | None, sticky: StickyCookie | None = None, last_used: float = 0.0
                 ) -> None:
        self.name = route.name
        self.route = route
        self.targets = targets
        self.condition = condition
        self.cookie_id = short_id(route.name)
        # Its rewrites and header rules (gateway.proxy.rules), None for a direction without any.
        self.request_rules: RequestRules | None
        self.response_rules: ResponseRules | None
        self.request_rules, self.response_rules = compile_rules(route)
        # What the route counted besides its targets' own figures (gateway.proxy.stats); set by the runtime.
        self.remainder = remainder
        self.last_used = last_used    # when a request last went to it (monotonic): a drain waits for sticky clients
        balancer = SmoothWeighted((target, target.weight, target.drain) for target in targets)
        # Smooth weighted round-robin over the available targets (except `exclude`); None if there is none.
        self.pick_target = balancer.pick
        # A sticky client's target: an available one first, else a draining one that is not backed off.
        self.pick_for_sticky_client = balancer.pick_for_sticky_client
        self._strength = route.condition_strength
        self._strength_credit = 0
        self._set_cookie: str | None = None                     # route mode: the Set-Cookie of every answer
        self._set_cookies: dict[TargetState, str] | None = None   # instance mode: the Set-Cookie by target
        if sticky is not None and not route.drained:
            self._precompute_cookies(sticky)
        self.live = 0                 # targets that take requests (weight > 0, not draining) and are not down
        self.retry_at = INFINITY      # the earliest end of a back-off among the others that take requests
        self.down_until = INFINITY
        for target in targets:
            target.report_to(self)
        self.count_live()

    def _precompute_cookies(self, sticky: StickyCookie) -> None:
        if not sticky.names_target:
            self._set_cookie = sticky.set_cookie(sticky.value(self.cookie_id))
            return
        self._set_cookies = {target: sticky.set_cookie(sticky.value(self.cookie_id, target.cookie_id))
                             for target in self.targets if not target.target.drained}

    def count_live(self) -> None:
        """Recount `live`, `retry_at` and `down_until`: when the route is built and when one of its targets fails
        or recovers (never per request)."""
        live = 0
        retry_at = INFINITY
        for target in self.targets:
            if target.weight <= 0 or target.drain:
                continue
            if target.down_until:                  # backed off (retried when that ends) or unhealthy (INFINITY)
                retry_at = min(retry_at, target.down_until)
            else:
                live += 1
        self.live = live
        self.retry_at = retry_at
        self.down_until = 0.0 if live else retry_at

    def is_live(self, now: float) -> bool:
        """Can the route take a new request: a target not backed off, or one whose back-off is over?"""
        return self.down_until <= now

    def takes_owned_request(self) -> bool:
        """Error diffusion of `condition_strength`: exactly s/10000 of the owned requests, evenly spread."""
        credit = self._strength_credit + self._strength
        if credit >= model.FULL:
            self._strength_credit = credit - model.FULL
            return True
        self._strength_credit = credit
        return False

    def serve(self, now: float, exclude: TargetState | None = None
              ) -> tuple[RouteState, TargetState, str | None] | None:
        """A new request to this route: (route, target by round-robin, Set-Cookie value or None), None when no
        target (but `exclude`) is available."""
        target = self.pick_target(now, exclude)
        if target is None:
            return None
        self.last_used = target.last_used = now
        if self._set_cookies is None:
            return self, target, self._set_cookie
        return self, target, self._set_cookies.get(target)

    def serve_sticky_client(self, now: float) -> tuple[RouteState, TargetState, str | None] | None:
        """A request whose cookie names this route (`sticky: route`): as `serve`, a draining target rather than
        none."""
        target = self.pick_for_sticky_client(now)
        if target is None:
            return None
        self.last_used = target.last_used = now
        return self, target, self._set_cookie

    def serve_target(self, target: TargetState, now: float) -> tuple[RouteState, TargetState, str | None]:
        """A request whose cookie names `target` of this route (`sticky: instance`)."""
        self.last_used = target.last_used = now
        return self, target, None if self._set_cookies is None else self._set_cookies.get(target)

    def __repr__(self) -> str:
        return f"RouteState({self.name}, weight={self.route.weight}, targets={self.targets})"


class GatewayRouter:
    """One compiled gateway: chooses route and target for each request."""

    def __init__(self, gateway: model.Gateway, routes: tuple[RouteState, ...],
                 sticky: StickyCookie | None = None) -> None:
        self.name = gateway.name
        self.gateway = gateway
        self.routes = routes
        self._conditional = tuple((route, route.condition.matches) for route in routes
                                  if route.condition is not None and not route.route.drain)
        # Many conditioned routes: only those whose required fact the request has are tried (route_index.py).
        self._route_index: RouteIndex[tuple[RouteState, Matcher]] | None = RouteIndex(
            self._conditional, [route.condition.node for route, _ in self._conditional]  # type: ignore[union-attr]
        ) if len(self._conditional) >= INDEX_FROM else None
        self._pick_route = SmoothWeighted((route, route.route.weight, route.route.drain) for route in routes).pick
        self.cookie_name = "" if sticky is None else sticky.name
        lookup = None if sticky is None else StickyLookup(sticky, routes)
        self._sticky_routes: dict[str, RouteState] = {} if lookup is None else lookup.routes
        self._sticky_targets: dict[str, tuple[RouteState, TargetState]] = {} if lookup is None else lookup.targets
        # Conditions and sticky cookies are all select() reads of a request: without them, pass None.
        self.reads_request = bool(self._conditional) or sticky is not None
        # redirect_https: every request is answered 308 to https, on this port part of the Location (b"" for 443).
        port = gateway.redirect_https
        self.redirect_https: bytes | None = None if port is None else b"" if port == 443 else b":%d" % port
        self.request_ids = gateway.request_id     # X-Request-Id (docs/access-logs.md)
        self.access_log: AccessLogHook | None = None  # its access log in this process, set by the runtime

    def select(self, req: RequestView | None, now: float) -> tuple[RouteState, TargetState, str | None] | None:
        """(route, target, Set-Cookie value or None) for a request; None when nothing can serve it.

        `req` is read only for conditions and sticky cookies, so a gateway with neither (e.g. tcp) may be
        given None.
        """
        # (req is None only for a gateway that reads nothing of a request: no sticky cookie, no condition; and a
        # missing cookie, None, names nothing)
        if self._sticky_routes:
            route = self._sticky_routes.get(req.cookie(self.cookie_name))  # type: ignore[union-attr, arg-type]
            if route is not None:
                answer = route.serve_sticky_client(now)
                if answer is not None:
                    return answer
        elif self._sticky_targets:
            hit = self._sticky_targets.get(req.cookie(self.cookie_name))  # type: ignore[union-attr, arg-type]
            if hit is not None and hit[1].down_until <= now:
                return hit[0].serve_target(hit[1], now)
        for route, matches in (self._conditional if self._route_index is None
                               else self._route_index.candidates(req)):  # type: ignore[arg-type]  # (see above)
            if matches(req):  # type: ignore[arg-type]  # (see above)
                if route.takes_owned_request():
                    answer = route.serve(now)
                    if answer is not None:
                        return answer
                break
        # The weight split (as _weight_split, written out here: one call less per request).
        route = self._pick_route(now)
        if route is None:
            return None
        return route.serve(now) or self._after_stale_counts(route, now)

    def _weight_split(self, now: float) -> tuple[RouteState, TargetState, str | None] | None:
        """Smooth weighted round-robin across the live weighted routes: one with no live target takes no
        share until a target comes back, so the split stays exact over the others."""
        route = self._pick_route(now)
        if route is None:
            return None
        return route.serve(now) or self._after_stale_counts(route, now)

    def _after_stale_counts(self, route: RouteState, now: float
                            ) -> tuple[RouteState, TargetState, str | None] | None:
        """The weight split chose `route` but none of its targets is available: its counts were stale (a
        target's state changed outside mark_failed/mark_ok). Recount, and split again if it is not live."""
        route.count_live()
        return self._weight_split(now) if not route.is_live(now) else None

    def redispatch(self, route_name: str, failed: TargetState, now: float
                   ) -> tuple[RouteState, TargetState, str | None] | None:
        """Where a request goes after the connection to `failed` (marked failed already) failed: another
        available target of its route, else another route by the weight split, like a request without
        cookie (so a sticky client gets the new route's cookie). None when nothing else can serve it."""
        for route in self.routes:
            if route.name == route_name:
                answer = route.serve(now, failed)
                if answer is not None:
                    return answer
                break
        return self._weight_split(now)

    def __repr__(self) -> str:
        return f"GatewayRouter({self.name})"


class PortRouter:
    """All gateways sharing one listening port, told apart by the Host header."""

    def __init__(self, port: int, gateways: tuple[GatewayRouter, ...]) -> None:
        self.port = port
        self.gateways = gateways
        self.protocol = gateways[0].gateway.protocol
        self.bind = gateways[0].gateway.bind
        self._by_host: dict[str, GatewayRouter] = {}
        self._by_wildcard: dict[str, GatewayRouter] = {}   # "*.example.com" stored as ".example.com"
        self._default: GatewayRouter | None = None
        # Requests no gateway of the port takes (no gateway for their Host): request ids unless every gateway of
        # the port turned them off; logged to the first gateway with an access log (set by the runtime).
        self.request_ids = any(router.gateway.request_id for router in gateways)
        self.access_log: AccessLogHook | None = None
        for router in gateways:
            if not router.gateway.virtual_hosts and self._default is None:
                self._default = router
            for host in router.gateway.virtual_hosts:
                if host.startswith("*."):
                    self._by_wildcard.setdefault(host[1:], router)
                else:
                    self._by_host.setdefault(host, router)

    def for_host(self, host: str) -> GatewayRouter | None:
        """The gateway for a Host (lower case, without port): exact virtual host, then the most specific
        wildcard (`*.example.com` matches any name ending in `.example.com`), then the port's gateway
        without virtual hosts; None when there is none (the proxy answers 404)."""
        router = self._by_host.get(host)
        if router is not None:
            return router
        if self._by_wildcard:
            dot = host.find(".")
            while dot >= 0:
                router = self._by_wildcard.get(host[dot:])
                if router is not None:
                    return router
                dot = host.find(".", dot + 1)
        return self._default


class RouteTable:
    """The whole compiled configuration: immutable once built, swapped atomically on change."""

    def __init__(self, config: model.Config, previous: RouteTable | None = None) -> None:
        self.config = config
        old_targets: dict[tuple[str, str, str], TargetState] = {}
        old_remainders: dict[tuple[str, str], TargetStats | None] = {}
        old_route_sticky: dict[tuple[str, str], float] = {}
        compiled: dict[str, Condition] = {}
        if previous is not None:
            for old_router, old_route, target in previous.targets():
                old_targets[(old_router.name, old_route.name, target.address)] = target
            for old_router in previous.gateways.values():
                for old_route in old_router.routes:
                    old_remainders[(old_router.name, old_route.name)] = old_route.remainder
                    old_route_sticky[(old_router.name, old_route.name)] = old_route.last_used
                    # (a route with a compiled condition was written with one)
                    if old_route.condition is not None and old_route.route.condition is not None:
                        compiled[old_route.route.condition] = old_route.condition

        self.gateways: dict[str, GatewayRouter] = {}
        self.needs_user_agent = False
        self.needs_country = False
        by_port: dict[int, list[GatewayRouter]] = {}
        self.upstream_contexts: UpstreamContexts = {}
        upstream_contexts = self.upstream_contexts
        reusable = previous.upstream_contexts if previous is not None else {}
        for gateway in config.gateways:
            sticky = None if gateway.sticky == "none" else StickyCookie(gateway)
            routes: list[RouteState] = []
            for route in gateway.routes:
                condition = None
                if route.condition is not None:
                    condition = compiled.get(route.condition)
                    if condition is None:
                        condition = compiled[route.condition] = compile_condition(route.condition)
                    if not route.drain:
                        self.needs_user_agent |= condition.needs_user_agent
                        self.needs_country |= condition.needs_country
                targets = self._target_states(gateway, route, old_targets, upstream_contexts, reusable)
                key = (gateway.name, route.name)
                routes.append(RouteState(route, targets, condition, old_remainders.get(key), sticky,
                                         old_route_sticky.get(key, 0.0)))
            router = GatewayRouter(gateway, tuple(routes), sticky)
            self.gateways[gateway.name] = router
            by_port.setdefault(gateway.port, []).append(router)
        self.ports: dict[int, PortRouter] = {port: PortRouter(port, tuple(routers))
                                             for port, routers in by_port.items()}

    @staticmethod
    def _target_states(gateway: model.Gateway, route: model.Route,
                       old_targets: dict[tuple[str, str, str], TargetState],
                       upstream_contexts: UpstreamContexts, reusable: UpstreamContexts) -> tuple[TargetState, ...]:
        """One state per distinct address (a repeated address is served once), reused when it existed (and
        was reached the same way, over TLS or not: its pooled connections are)."""
        states: dict[str, TargetState] = {}
        for target in route.targets:
            address = target.address
            if address in states:
                continue
            tls = None
            if target.tls:
                settings = gateway.upstream_tls
                key = (settings, stamp(settings.ca) if settings is not None and settings.ca is not None else None)
                context = upstream_contexts.get(key)
                if context is None:
                    context = upstream_contexts[key] = reusable.get(key) or upstream_context(settings)
                tls = (context, settings.server_name if settings is not None and settings.server_name
                       else target.host)
            state = old_targets.get((gateway.name, route.name, address))
            if state is None or state.target.tls != target.tls:
                state = TargetState(target, tls)
            else:
                state.adopt(target, tls)
            states[address] = state
        return tuple(states.values())

    def targets(self) -> Iterator[tuple[GatewayRouter, RouteState, TargetState]]:
        """Every (gateway, route, target), in configuration order: for metrics and the admin API."""
        for router in self.gateways.values():
            for route in router.routes:
                for target in route.targets:
                    yield router, route, target
