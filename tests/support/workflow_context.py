"""A fake `WorkflowContext` for the built-in workflows' tests: a virtual clock, gateways held as documents, and
metrics computed from scripted traffic, so a test runs an hour of canary in milliseconds and knows every figure.

    context = FakeContext(gateways={"shop": shop_document()})
    traffic = Traffic(context, "shop", rate=lambda t: 20.0, error_share={"v2": lambda t: 0.2})
    workflow = Canary(context, parameters)
    task = asyncio.create_task(workflow.run())
    await context.run_until(task, context.start + 600)       # the run is parked at its first sleep past that

`sleep` moves the clock at once (after running any `at` hooks that fall due), except past the limit that
`run_until` sets: there the run waits until the test moves the limit on or cancels it. `set_weights` behaves as
the contract says: only weights (and the condition strengths asked for) change, conditions and everything else stay.
"""
from __future__ import annotations

import asyncio
import copy
import datetime
import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from control.events.model import Event
from control.metrics.model import Scope, Summary
from gateway.common.errors import Invalid, NotFound
from gateway.common.units import parse_percent

SETTLE_TURNS = 20        # event-loop turns a hook's effects get before the clock moves on (a count: no clock)
START = datetime.datetime(2026, 3, 2, 12, 0, tzinfo=datetime.UTC).timestamp()


def document(routes: Mapping[str, Mapping[str, Any]], name: str = "shop") -> dict[str, Any]:
    """A gateway document as the API shows one: `document({"v1": {"weight": "100%"}, "v2": {"weight": "0%"}})`."""
    return {"name": name, "port": "8000/http", "sticky": "none",
            "routes": {route: {"targets": ["127.0.0.1:9"], "drain": False, **spec} for route, spec in routes.items()}}


class FakeContext:
    def __init__(self, name: str = "release", gateways: Mapping[str, dict] | None = None, *,
                 start: float = START, instances: Mapping[tuple[str, str, str], int] | None = None) -> None:
        self.name = name
        self.start = start
        self.clock = start
        self.metrics: Any = NoMetrics()
        self.documents: dict[str, dict] = {gw: copy.deepcopy(doc) for gw, doc in (gateways or {}).items()}
        self.weight_changes: list[tuple[float, str, dict[str, int]]] = []      # (when, gateway, weights)
        self.events: list[Event] = []
        self.states: list[dict[str, Any]] = []
        self.scaled: list[tuple[float, tuple[str, str, str], int]] = []
        self.counts: dict[tuple[str, str, str], int] = dict(instances or {})
        self.refuse_weights: str | None = None          # a message: set_weights raises Invalid with it
        self._hooks: list[tuple[float, Callable[[], None]]] = []
        self._limit = math.inf
        self._parked = asyncio.Event()
        self._moved = asyncio.Event()
        self._state_set = asyncio.Event()
        self._ids = itertools.count(1)
        self._history: dict[str, list[tuple[float, dict[str, int]]]] = {
            gw: [(-math.inf, _weights(doc))] for gw, doc in self.documents.items()}
        self._strength_history: dict[str, list[tuple[float, dict[str, int]]]] = {
            gw: [(-math.inf, _strengths(doc))] for gw, doc in self.documents.items()}

    # -- the clock -----------------------------------------------------------------------------------------
    def now(self) -> float:
        return self.clock

    async def sleep(self, seconds: float) -> None:
        assert seconds > 0, f"sleep({seconds}): a workflow that sleeps 0 s spins"
        target = self.clock + seconds
        while target > self._limit:
            self._parked.set()
            self._moved.clear()
            await self._moved.wait()
        for when, hook in sorted(self._due(target), key=lambda pair: pair[0]):
            self.clock = max(self.clock, when)
            hook()
            for _ in range(SETTLE_TURNS):      # a workflow the hook woke cancels this sleep: time stops here
                await asyncio.sleep(0)
        self.clock = target
        await asyncio.sleep(0)

    def at(self, when: float, hook: Callable[[], None]) -> None:
        """Call `hook` when the clock reaches `when` (during the sleep that passes it)."""
        self._hooks.append((when, hook))

    def _due(self, until: float) -> list[tuple[float, Callable[[], None]]]:
        due = [pair for pair in self._hooks if pair[0] <= until]
        self._hooks = [pair for pair in self._hooks if pair[0] > until]
        return due

    async def run_until(self, task: asyncio.Task, limit: float = math.inf,
                        state: Callable[[dict[str, Any]], bool] | None = None) -> None:
        """Let `task` run until it finishes, sleeps past `limit` (virtual seconds since the epoch), or sets a state
        that `state` accepts; fails if none of these happens within 30 s of real time."""
        self._limit = limit
        self._parked.clear()
        self._moved.set()
        deadline = asyncio.get_running_loop().time() + 30

        def reached() -> bool:
            return task.done() or self._parked.is_set() or (state is not None and bool(self.states)
                                                            and state(self.states[-1]))
        while not reached():
            self._state_set.clear()
            waiters = {asyncio.ensure_future(self._parked.wait()), asyncio.ensure_future(self._state_set.wait())}
            try:
                await asyncio.wait({task, *waiters}, timeout=max(0.0, deadline - asyncio.get_running_loop().time()),
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
            assert reached() or asyncio.get_running_loop().time() < deadline, \
                "the workflow neither finished, nor slept past the limit, nor reached the state within 30 s"
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()

    # -- events and state ------------------------------------------------------------------------------------
    def publish(self, tags: Iterable[str], value: Any = None) -> Event:
        event = Event(next(self._ids), self.clock, "event", tuple(sorted({*tags, f"workflows:{self.name}"})), value)
        self.events.append(event)
        return event

    def tagged(self, tag: str) -> list[Event]:
        return [event for event in self.events if tag in event.tags]

    def set_state(self, state: Mapping[str, Any]) -> None:
        self.states.append(copy.deepcopy(dict(state)))
        self._state_set.set()

    @property
    def state(self) -> dict[str, Any]:
        assert self.states, "the workflow set no state"
        return self.states[-1]

    # -- gateways --------------------------------------------------------------------------------------------
    async def gateway(self, name: str) -> dict[str, Any]:
        if name not in self.documents:
            raise NotFound(f"no gateway {name}")
        return copy.deepcopy(self.documents[name])

    async def set_weights(self, gateway: str, weights: Mapping[str, int],
                          condition_strengths: Mapping[str, int] | None = None) -> None:
        if gateway not in self.documents:
            raise NotFound(f"no gateway {gateway}")
        if self.refuse_weights is not None:
            raise Invalid(self.refuse_weights, "/routes")
        routes = self.documents[gateway]["routes"]
        for route, weight in weights.items():
            if route not in routes:
                raise Invalid(f"no route {route}", f"/routes/{route}")
            if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 100:
                raise Invalid(f"weight {weight!r}: whole per cents 0-100", f"/routes/{route}/weight")
        if sum(weights.values()) != 100:
            raise Invalid(f"weights sum to {sum(weights.values())}, not 100", "/routes")
        for route, strength in (condition_strengths or {}).items():
            if route not in routes or not routes[route].get("condition"):
                raise Invalid(f"no conditional route {route}", f"/routes/{route}/condition_strength")
            if isinstance(strength, bool) or not isinstance(strength, int) or not 0 <= strength <= 100:
                raise Invalid(f"condition strength {strength!r}: whole per cents 0-100",
                              f"/routes/{route}/condition_strength")
        changed = copy.deepcopy(routes)
        for route, weight in weights.items():
            changed[route]["weight"] = f"{weight}%"
        for route, strength in (condition_strengths or {}).items():
            changed[route]["condition_strength"] = f"{strength}%"
        total = sum(parse_percent(spec["weight"]) for spec in changed.values() if spec.get("weight") is not None)
        if total not in (0, 10_000):
            raise Invalid(f"the gateway's weights would sum to {total / 100}%", "/routes")
        self.documents[gateway]["routes"] = changed
        self.weight_changes.append((self.clock, gateway, dict(weights)))
        self._history[gateway].append((self.clock, _weights(self.documents[gateway])))
        self._strength_history[gateway].append((self.clock, _strengths(self.documents[gateway])))

    def weights(self, gateway: str, when: float | None = None) -> dict[str, int]:
        """The gateway's weights in whole per cents at `when` (default: now)."""
        when = self.clock if when is None else when
        current = [weights for since, weights in self._history[gateway] if since <= when]
        return current[-1]

    def condition_strengths(self, gateway: str, when: float | None = None) -> dict[str, int]:
        """The condition strengths (whole per cents) of the gateway's conditional routes at `when` (default: now)."""
        when = self.clock if when is None else when
        current = [strengths for since, strengths in self._strength_history[gateway] if since <= when]
        return current[-1]

    # -- services --------------------------------------------------------------------------------------------
    def instances(self, deployment: str, cluster: str, service: str) -> int:
        key = (deployment, cluster, service)
        if key not in self.counts:
            raise NotFound(f"no service {deployment}/{cluster}/{service}")
        return self.counts[key]

    async def set_instances(self, deployment: str, cluster: str, service: str, instances: int) -> None:
        key = (deployment, cluster, service)
        if key not in self.counts:
            raise NotFound(f"no service {deployment}/{cluster}/{service}")
        self.counts[key] = instances
        self.scaled.append((self.clock, key, instances))


def _strengths(doc: Mapping[str, Any]) -> dict[str, int]:
    return {route: parse_percent(spec.get("condition_strength") or "100%") // 100
            for route, spec in doc["routes"].items() if spec.get("condition")}


def _weights(doc: Mapping[str, Any]) -> dict[str, int]:
    return {route: parse_percent(spec["weight"]) // 100 if spec.get("weight") is not None else 0
            for route, spec in doc["routes"].items()}


# -- metrics ---------------------------------------------------------------------------------------------------
class NoMetrics:
    """Nothing was ever measured."""

    def summary(self, scopes: Sequence[Scope], window: float) -> Summary:
        return summary_of(window, 0.0, 0.0, None)


def summary_of(window: float, requests: float, errors: float, p99_ms: float | None) -> Summary:
    total, failed = round(requests), round(errors)
    latency = p99_ms if total else None
    return Summary(window=window, requests=total, classes=(0, total - failed, 0, 0, failed), upstream_errors=0,
                   in_flight=0, mean_ms=None if latency is None else latency / 4,
                   p50_ms=None if latency is None else latency / 4, p95_ms=None if latency is None else latency / 2,
                   p99_ms=latency)


@dataclass
class Traffic:
    """Requests entering gateway `gateway` at `rate(t)` per second, split by the gateway's weights at that time;
    `conditional[route]` more per second reach a route through its condition whatever its weight (times the
    route's condition strength). Each route
    answers a share `error_share[route](t)` with 5xx and has a p99 of `p99_ms[route](t)`. `summary` integrates over
    the window second by second. Installs itself as the context's metrics."""
    context: FakeContext
    gateway: str
    rate: Callable[[float], float]
    error_share: dict[str, Callable[[float], float]] = field(default_factory=dict)
    p99_ms: dict[str, Callable[[float], float]] = field(default_factory=dict)
    conditional: dict[str, float] = field(default_factory=dict)
    asked: list[tuple[tuple[Scope, ...], float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.context.metrics = self

    def summary(self, scopes: Sequence[Scope], window: float) -> Summary:
        self.asked.append((tuple(scopes), window))
        requests = errors = 0.0
        latencies: list[float] = []
        end = self.context.now()
        for scope in scopes:
            if scope.gateway != self.gateway:
                continue
            routes = [scope.route] if scope.route is not None else list(self.context.weights(self.gateway))
            for route in routes:
                got, failed, slowest = self._route(route, end - window, end)
                requests += got
                errors += failed
                latencies += slowest
        return summary_of(window, requests, errors, max(latencies) if latencies else None)

    def _route(self, route: str, start: float, end: float) -> tuple[float, float, list[float]]:
        """Requests, errors, and the p99 of each second that had requests (the window's p99: the largest)."""
        requests = errors = 0.0
        latencies = []
        second = start
        while second < end:
            step = min(1.0, end - second)
            middle = second + step / 2
            weight = self.context.weights(self.gateway, middle).get(route, 0)
            strength = self.context.condition_strengths(self.gateway, middle).get(route, 100)
            got = (self.rate(middle) * weight / 100 + self.conditional.get(route, 0.0) * strength / 100) * step
            requests += got
            errors += got * self.error_share.get(route, lambda t: 0.0)(middle)
            if got:
                latencies.append(self.p99_ms.get(route, lambda t: 50.0)(middle))
            second += step
        return requests, errors, latencies


class ScriptedMetrics:
    """Figures per scope name given by a function of the time: `figures(t) -> (requests, errors, p99_ms)` for the
    window ending at t."""

    def __init__(self, context: FakeContext, figures: Mapping[str, Callable[[float], tuple[int, int, float]]]) -> None:
        self.context = context
        self.figures = figures
        context.metrics = self

    def summary(self, scopes: Sequence[Scope], window: float) -> Summary:
        requests = errors = 0
        p99: float | None = None
        for scope in scopes:
            key = scope.gateway if scope.route is None else f"{scope.gateway} {scope.route}"
            if key in self.figures:
                got, failed, latency = self.figures[key](self.context.now())
                requests, errors = requests + got, errors + failed
                p99 = latency if p99 is None else max(p99, latency)
        return summary_of(window, requests, errors, p99)
