"""The built-in brown-out (`workflow: brown-out`): while a route (or a cluster port) answers too slowly or fails too
often for a `period`, move a `share` of the route's weight to a lighter route; give it back once it has been well
for a `period` again (docs/canary.md, "Brown-out").

Each `interval` it measures the last interval. A breach must last, check after check, for `period` before traffic
moves, and so must the recovery before it comes back. A check with fewer than `min_requests` requests is no data:
it breaks either run of checks and never moves traffic.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from control.metrics.model import Scope, Summary
from control.workflows.context import BuiltinWorkflow, WorkflowContext
from gateway.common.errors import Invalid, RequestError
from gateway.common.units import format_duration, shown

from . import parameters as read
from .moments import iso
from .routes import find_route, weights_of

PARAMETERS = ("gateway", "route", "to", "cluster", "max_response_time", "response_time", "max_error_rate",
              "period", "share", "interval", "min_requests")
STATISTICS = ("mean", "p50", "p95", "p99")
DEFAULT_INTERVAL = 10.0
DEFAULT_MIN_REQUESTS = 10
NORMAL, BROWNED_OUT = "normal", "browned_out"


@dataclass(frozen=True, slots=True)
class BrownOutSettings:
    gateway: str
    route: str
    to: str
    cluster: str | None               # measure this cluster port's gateway instead of the route
    max_response_ms: float | None
    statistic: str
    max_error_rate: float | None      # 0–1
    period: float
    share: float                      # 0–1 of the route's weight
    interval: float
    min_requests: int


def read_settings(parameters: Any) -> BrownOutSettings:
    given = read.only_known(parameters, PARAMETERS, "brown-out")
    route, to = read.text(given, "route"), read.text(given, "to")
    if route == to:
        raise Invalid("to: the lighter route must be another route", read.pointer("to"))
    max_response = read.optional_duration(given, "max_response_time")
    max_error_rate = None if given.get("max_error_rate") is None else read.percent_field(given, "max_error_rate")
    if max_response is None and max_error_rate is None:
        raise Invalid("a brown-out needs a threshold: max_response_time, max_error_rate or both", "/parameters")
    share = read.percent_field(given, "share")
    if not 0 < share < 1:
        raise Invalid(f"share: expected more than 0% and less than 100% (the route needs traffic to show it has "
                      f"recovered), got {shown(given['share'])}", read.pointer("share"))
    period = read.duration(given, "period", minimum=1.0)
    interval = read.duration(given, "interval", DEFAULT_INTERVAL, minimum=1.0)
    if interval > period:
        raise Invalid(f"interval: at most the period ({format_duration(period)})", read.pointer("interval"))
    cluster = None if given.get("cluster") is None else read.text(given, "cluster")
    return BrownOutSettings(gateway=read.text(given, "gateway"), route=route, to=to, cluster=cluster,
                            max_response_ms=None if max_response is None else max_response * 1000,
                            statistic=read.choice(given, "response_time", STATISTICS, "p95"),
                            max_error_rate=max_error_rate, period=period, share=share, interval=interval,
                            min_requests=read.whole(given, "min_requests", DEFAULT_MIN_REQUESTS, minimum=1))


def whole_percents(basis_points: Mapping[str, int]) -> dict[str, int]:
    """Weights in basis points as whole per cents with the same sum (largest remainders round up)."""
    total = sum(basis_points.values())
    floors = {name: weight // 100 for name, weight in basis_points.items()}
    missing = round(total / 100) - sum(floors.values())
    by_remainder = sorted(basis_points, key=lambda name: basis_points[name] % 100, reverse=True)
    for name in by_remainder[:max(0, missing)]:
        floors[name] += 1
    return floors


class BrownOut(BuiltinWorkflow):
    def __init__(self, context: WorkflowContext, parameters: Mapping[str, Any],
                 restored: Mapping[str, Any] | None = None) -> None:
        super().__init__(context, parameters, restored)
        self.settings = read_settings(parameters)
        self.phase = NORMAL
        self.moved = 0                              # per cents moved to the lighter route
        self.since: float | None = None             # when the current run of breaching (or recovered) checks began
        self.measured: dict[str, Any] | None = None
        self.reason: str | None = None
        self.weights: dict[str, str] = {}
        self._route, self._to = self.settings.route, self.settings.to     # as the gateway names them
        moved = restored.get("moved") if restored else None
        if restored and restored.get("phase") == BROWNED_OUT and isinstance(moved, int) and moved > 0:
            self.phase, self.moved = BROWNED_OUT, moved
            weights = restored.get("weights")
            self.weights = dict(weights) if isinstance(weights, Mapping) else {}

    async def run(self) -> None:
        await self._weights()                   # resolves the route names the user wrote, if the gateway is there
        while True:
            await self.context.sleep(self.settings.interval)
            await self.check()

    async def check(self) -> None:
        """One measurement, and what follows from it."""
        settings = self.settings
        now = self.context.now()
        summary = self.context.metrics.summary([self._scope()], settings.interval)
        verdict, why = self._verdict(summary)
        self.measured = {"at": iso(now), "requests": summary.requests, "error_rate": _rounded(summary.error_rate),
                         f"{settings.statistic}_ms": _rounded(self._response_ms(summary)), "verdict": verdict}
        if verdict == "no_data":
            self.since = None
            self.reason = why
        elif (verdict == "breach") == (self.phase == NORMAL):   # a breach while normal, or well while browned out
            self.since = self.since if self.since is not None else now - settings.interval
            lasted = now - self.since
            if lasted >= settings.period:
                await (self._move() if self.phase == NORMAL else self._give_back())
            else:
                self.reason = f"{why} for {format_duration(round(lasted))} of {format_duration(settings.period)}"
        else:
            self.since = None
            self.reason = why
        self._publish_state()

    def _scope(self) -> Scope:
        settings = self.settings
        return Scope(settings.cluster) if settings.cluster is not None else Scope(settings.gateway, self._route)

    def _response_ms(self, summary: Summary) -> float | None:
        return getattr(summary, f"{self.settings.statistic}_ms")

    def _verdict(self, summary: Summary) -> tuple[str, str]:
        settings = self.settings
        if summary.requests < settings.min_requests:
            return "no_data", f"no data: {summary.requests} requests, fewer than min_requests {settings.min_requests}"
        breaches = []
        response_ms = self._response_ms(summary)
        if settings.max_response_ms is not None and response_ms is not None and response_ms > settings.max_response_ms:
            breaches.append(f"{settings.statistic} {response_ms:.0f}ms above {settings.max_response_ms:.0f}ms")
        error_rate = summary.error_rate
        if settings.max_error_rate is not None and error_rate is not None and error_rate > settings.max_error_rate:
            breaches.append(f"error rate {error_rate:.2%} above {settings.max_error_rate:.2%}")
        if breaches:
            return "breach", "; ".join(breaches)
        return "well", "within the thresholds"

    async def _weights(self) -> dict[str, int] | None:
        """The gateway's weights as whole per cents, with the route and the lighter route resolved; None (and a
        reason) if either is missing."""
        settings = self.settings
        try:
            document = await self.context.gateway(settings.gateway)
        except RequestError as error:
            self.reason = f"cannot read gateway {settings.gateway}: {error.message}"
            return None
        route, to = find_route(document, settings.gateway, settings.route), find_route(document, settings.gateway,
                                                                                       settings.to)
        if route is None or to is None:
            self.reason = f"gateway {settings.gateway} has no route {settings.route if route is None else settings.to}"
            return None
        self._route, self._to = route, to
        return whole_percents(weights_of(document))

    async def _move(self) -> None:
        weights = await self._weights()
        if weights is None:
            return
        moved = round(weights[self._route] * self.settings.share)
        if moved == 0:
            self.reason = f"breached, but route {self._route} has no weight to move"
            return
        changed = {**{name: weight for name, weight in weights.items() if weight > 0},
                   self._route: weights[self._route] - moved, self._to: weights[self._to] + moved}
        if await self._set(changed, "brown-out:move", moved):
            self.phase, self.moved, self.since = BROWNED_OUT, moved, None

    async def _give_back(self) -> None:
        weights = await self._weights()
        if weights is None:
            return
        back = min(self.moved, weights[self._to])
        changed = {**{name: weight for name, weight in weights.items() if weight > 0},
                   self._route: weights[self._route] + back, self._to: weights[self._to] - back}
        if await self._set(changed, "brown-out:restore", back):
            self.phase, self.moved, self.since = NORMAL, 0, None

    async def _set(self, weights: dict[str, int], tag: str, amount: int) -> bool:
        settings = self.settings
        try:
            await self.context.set_weights(settings.gateway, weights)
        except RequestError as error:
            self.reason = f"could not set the weights of {settings.gateway}: {error.message}"
            return False
        self.weights = {name: f"{weight}%" for name, weight in weights.items()}
        moving = "moved" if tag == "brown-out:move" else "gave back"
        self.reason = f"{moving} {amount}% of {settings.gateway} from {self._route} to {self._to}" \
            if tag == "brown-out:move" else f"{moving} {amount}% of {settings.gateway} to {self._route}"
        self.context.publish([tag, f"gateways:{settings.gateway}"],
                             {"share": f"{amount}%", "route": self._route, "to": self._to, "weights": self.weights,
                              "measured": self.measured})
        return True

    def _publish_state(self) -> None:
        self.context.set_state({"phase": self.phase, "moved": self.moved, "weights": self.weights,
                                "since": iso(self.since) if self.since is not None else None,
                                "measured": self.measured, "reason": self.reason})


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
