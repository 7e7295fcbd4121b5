"""The built-in canary (`workflow: canary`): moves a gateway's traffic from a baseline route to a canary route step
by step, judges the canary each interval on what it served, and promotes it, rolls it back or waits; never promotes
on silence (docs/canary.md).

Everything goes through the `WorkflowContext`: its clock and sleep, its metrics, `set_weights` (weights, and on a
rollback the condition strength of a conditional canary: a route's condition itself stays as it is), `publish`
and `set_state`. The state it sets is enough to resume after a restart of the platform at the step it had
reached.
"""
from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from control.metrics.model import Scope, Summary
from control.metrics.prometheus import PrometheusError, query_scalar
from control.workflows.context import BuiltinWorkflow, WorkflowContext
from gateway.common.errors import Conflict, Invalid, RequestError
from gateway.common.units import format_duration, format_percent, parse_percent, shown

from . import parameters as read
from .moments import iso
from .routes import condition_of, find_route, strength_of, weights_of
from .significance import higher_error_rate_p_value

PARAMETERS = ("gateway", "baseline", "canary", "steps", "interval", "min_requests", "success_rate", "max_p99",
              "failure_limit", "no_data", "no_data_timeout", "compare", "confidence", "checks")
CHECK_FIELDS = ("name", "provider", "address", "query", "max", "min", "timeout")
NO_DATA_ACTIONS = ("wait", "rollback", "halt")
ACTIONS = ("promote", "abort")
FINAL_PHASES = ("promoted", "rolled_back")
PHASES = ("progressing", "waiting", "promoted", "rolled_back", "halted")

DEFAULT_MIN_REQUESTS = 100
DEFAULT_SUCCESS_RATE = "99%"
DEFAULT_FAILURE_LIMIT = 1
DEFAULT_NO_DATA_TIMEOUT = "10m"
DEFAULT_CONFIDENCE = "95%"
DEFAULT_CHECK_TIMEOUT = "5s"
MIN_INTERVAL = 1.0           # the metrics' resolution


@dataclass(frozen=True, slots=True)
class PrometheusCheck:
    name: str
    address: str
    query: str
    maximum: float | None
    minimum: float | None
    timeout: float


@dataclass(frozen=True, slots=True)
class CanarySettings:
    gateway: str
    baseline: str
    canary: str
    steps: tuple[int, ...]              # the canary's weight at each step, whole per cents
    interval: float
    min_requests: int
    success_rate: float                 # 0–1
    max_p99_ms: float | None
    failure_limit: int
    no_data: str
    no_data_timeout: float
    confidence: float | None            # 0–1 with `compare: baseline`, else None
    checks: tuple[PrometheusCheck, ...]


def read_settings(parameters: Any) -> CanarySettings:
    """The canary's parameters, checked; Invalid with the field at fault."""
    given = read.only_known(parameters, PARAMETERS, "canary")
    gateway = read.text(given, "gateway")
    baseline = read.text(given, "baseline")
    canary = read.text(given, "canary")
    if canary == baseline:
        raise Invalid("canary: the canary and the baseline must be different routes", read.pointer("canary"))
    compare = given.get("compare")
    if compare not in (None, "baseline"):
        raise Invalid(f"compare: the canary compares only with 'baseline', got {shown(compare)}",
                      read.pointer("compare"))
    confidence = None
    if compare is not None:
        confidence = read.percent_field(given, "confidence", DEFAULT_CONFIDENCE)
        if not 0.5 <= confidence < 1:
            raise Invalid(f"confidence: expected at least 50% and below 100%, got {shown(given['confidence'])}",
                          read.pointer("confidence"))
    elif given.get("confidence") is not None:
        raise Invalid("confidence: goes with compare: baseline", read.pointer("confidence"))
    max_p99 = read.optional_duration(given, "max_p99")
    return CanarySettings(
        gateway=gateway, baseline=baseline, canary=canary, steps=_steps(given.get("steps")),
        interval=read.duration(given, "interval", minimum=MIN_INTERVAL),
        min_requests=read.whole(given, "min_requests", DEFAULT_MIN_REQUESTS, minimum=1),
        success_rate=read.percent_field(given, "success_rate", DEFAULT_SUCCESS_RATE),
        max_p99_ms=None if max_p99 is None else max_p99 * 1000,
        failure_limit=read.whole(given, "failure_limit", DEFAULT_FAILURE_LIMIT, minimum=0),
        no_data=read.choice(given, "no_data", NO_DATA_ACTIONS, "wait"),
        no_data_timeout=read.duration(given, "no_data_timeout", DEFAULT_NO_DATA_TIMEOUT),
        confidence=confidence, checks=_checks(given.get("checks")))


def _steps(value: Any) -> tuple[int, ...]:
    if value is None:
        raise Invalid("steps is required: the canary's weight at each step, like [5%, 20%, 50%, 100%]",
                      read.pointer("steps"))
    if not isinstance(value, list) or not value:
        raise Invalid(f"steps: expected a list of percentages like [5%, 20%, 50%, 100%], got {shown(value)}",
                      read.pointer("steps"))
    steps: list[int] = []
    for index, item in enumerate(value):
        field_at = read.pointer("steps", index)
        try:
            basis_points = parse_percent(item)
        except ValueError as error:
            raise Invalid(f"steps: {error}", field_at) from None
        if basis_points % 100 or not 100 <= basis_points <= 10_000:
            raise Invalid(f"steps: each step is a whole percentage from 1% to 100%, got {shown(item)}", field_at)
        percent = basis_points // 100
        if steps and percent <= steps[-1]:
            raise Invalid(f"steps: each step gives the canary more than the one before, got {shown(item)} after "
                          f"{steps[-1]}%", field_at)
        steps.append(percent)
    return tuple(steps)


def _checks(value: Any) -> tuple[PrometheusCheck, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise Invalid(f"checks: expected a list, got {shown(value)}", read.pointer("checks"))
    checks = []
    for index, item in enumerate(value):
        at = ("checks", index)
        if not isinstance(item, Mapping):
            raise Invalid(f"checks: each check is a mapping, got {shown(item)}", read.pointer(*at))
        unknown = [key for key in item if key not in CHECK_FIELDS]
        if unknown:
            raise Invalid(f"{unknown[0]}: unknown field; a check has: {', '.join(CHECK_FIELDS)}",
                          read.pointer(*at, unknown[0]))
        provider = item.get("provider")
        if provider != "prometheus":
            raise Invalid(f"provider: the only check provider is 'prometheus', got {shown(provider)}",
                          read.pointer(*at, "provider"))
        maximum, minimum = read.number(item, "max", at=at), read.number(item, "min", at=at)
        if maximum is None and minimum is None:
            raise Invalid("a check needs a bound: max, min or both", read.pointer(*at))
        if maximum is not None and minimum is not None and minimum > maximum:
            raise Invalid("min: above max", read.pointer(*at, "min"))
        try:
            timeout = read.duration(item, "timeout", DEFAULT_CHECK_TIMEOUT)
        except Invalid as error:
            raise Invalid(error.message, read.pointer(*at, "timeout")) from None
        checks.append(PrometheusCheck(
            name=read.text(item, "name", f"check {index + 1}", at=at), address=read.text(item, "address", at=at),
            query=read.text(item, "query", at=at), maximum=maximum, minimum=minimum, timeout=timeout))
    return tuple(checks)


# -- judging one window -----------------------------------------------------------------------------------
PASS, FAIL, NO_DATA = "pass", "fail", "no_data"


@dataclass(slots=True)
class Judgement:
    """The verdict on one window of the canary, with the figures it rests on."""
    at: float
    window: float
    canary: Summary
    verdict: str = PASS
    reasons: list[str] = field(default_factory=list)       # why it failed or had no data; empty on a pass
    baseline: dict[str, Any] | None = None                 # with compare: baseline
    checks: list[dict[str, Any]] = field(default_factory=list)

    def fail(self, reason: str) -> None:
        self.verdict = FAIL
        self.reasons.append(reason)

    def no_data(self, reason: str) -> None:
        if self.verdict != FAIL:
            self.verdict = NO_DATA
        self.reasons.append(reason)

    def as_json(self) -> dict[str, Any]:
        summary = self.canary
        return {"at": iso(self.at), "verdict": self.verdict, "window": _seconds(self.window),
                "requests": summary.requests, "errors": summary.errors,
                "success_rate": _rounded(summary.health), "p99_ms": _rounded(summary.p99_ms),
                "reasons": list(self.reasons), "baseline": self.baseline, "checks": list(self.checks)}


def _rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def _seconds(value: float) -> float:
    return round(value, 3)


class Canary(BuiltinWorkflow):
    """One canary release: see docs/canary.md for what each phase means."""

    def __init__(self, context: WorkflowContext, parameters: Mapping[str, Any],
                 restored: Mapping[str, Any] | None = None) -> None:
        super().__init__(context, parameters, restored)
        self.settings = read_settings(parameters)
        self.phase = "progressing"
        self.step = 1                           # 1-based index into settings.steps
        self.failures = 0
        self.reason: str | None = None
        self.weights: dict[str, int] = {}       # what this canary last set
        self.judgement: dict[str, Any] | None = None
        self.window_start = 0.0
        self.waiting_since: float | None = None
        self.baseline_route = self.settings.baseline
        self.canary_route = self.settings.canary
        self._command: str | None = None
        self._woken = asyncio.Event()

    # -- manual actions ----------------------------------------------------------------------------------
    def command(self, action: str) -> None:
        """`promote`: the canary gets 100% now; `abort`: rolled back now. Applied by the run within moments."""
        if action not in ACTIONS:
            raise Invalid(f"a canary takes {' or '.join(ACTIONS)}, not {shown(action)}", "/status")
        if self.phase in FINAL_PHASES:
            raise Conflict(f"canary {self.context.name} is already {self.phase.replace('_', ' ')}", "/status")
        self._command = action
        self._woken.set()

    # -- the run -----------------------------------------------------------------------------------------
    async def run(self) -> None:
        resumed = self.restored is not None and self._restore(self.restored)
        if self.phase in FINAL_PHASES:
            return
        if not await self._find_routes():
            return
        self.window_start = self.context.now()
        if self.phase != "halted":
            self._transition("progressing", self._step_reason())
            if await self._set_weights(self._step_weights(), "resumed" if resumed else "started"):
                self._event("canary:resume" if resumed else "canary:progress", self._figures())
        self._publish_state()
        while self.phase not in FINAL_PHASES:
            if self.phase == "halted":
                await self._wait_for_command()
                continue
            await self._pause(self.settings.interval)
            if self._command is not None:
                await self._obey()
            else:
                await self._judge_and_act()

    async def _judge_and_act(self) -> None:
        judgement = await self.judge(self.context.now() - self.window_start)
        self.judgement = judgement.as_json()
        figures = {**self._figures(), "judgement": self.judgement}
        if judgement.verdict == NO_DATA:
            await self._no_data(judgement, figures)
        elif judgement.verdict == FAIL:
            self.failures += 1
            self.waiting_since = None
            self.window_start = self.context.now()
            reason = "; ".join(judgement.reasons)
            if self.failures > self.settings.failure_limit:
                await self._rollback(f"failed {self.failures} judgements (failure_limit "
                                     f"{self.settings.failure_limit}): {reason}", figures)
            else:
                self._transition("progressing", f"step {self.step}: judgement failed "
                                 f"({self.failures} of {self.settings.failure_limit} allowed): {reason}")
                self._event("canary:fail", {**self._figures(), "judgement": self.judgement})
        elif self.step == len(self.settings.steps):
            await self._promote("every step passed", figures)
        elif await self._set_weights(self._step_weights(self.step + 1), "stepped"):
            self.step += 1
            self.waiting_since = None
            self.window_start = self.context.now()
            self._transition("progressing", self._step_reason())
            self._event("canary:progress", {**self._figures(), "judgement": self.judgement})
        self._publish_state()

    async def _no_data(self, judgement: Judgement, figures: dict[str, Any]) -> None:
        reason = "; ".join(judgement.reasons)
        if self.settings.no_data == "rollback":
            await self._rollback(f"no data: {reason}", figures)
            return
        now = self.context.now()
        if self.waiting_since is None:
            self.waiting_since = self.window_start
        waited = now - self.waiting_since
        if waited >= self.settings.no_data_timeout:
            why = f"no data for {format_duration(round(waited, 3))} (no_data_timeout " \
                  f"{format_duration(self.settings.no_data_timeout)}): {reason}"
            if self.settings.no_data == "halt":
                self._halt(why, figures)
            else:
                await self._rollback(why, figures)
            return
        self._transition("waiting", f"step {self.step}: waiting for data: {reason}")
        self._event("canary:waiting", {**self._figures(), "judgement": self.judgement,
                                       "requests": judgement.canary.requests,
                                       "min_requests": self.settings.min_requests, "waited": _seconds(waited)})

    async def judge(self, window: float) -> Judgement:
        """The verdict on the canary route over the last `window` seconds."""
        settings = self.settings
        metrics = self.context.metrics
        canary = metrics.summary([Scope(settings.gateway, self.canary_route)], window)
        judgement = Judgement(at=self.context.now(), window=canary.window, canary=canary)
        if canary.requests < settings.min_requests:
            judgement.no_data(f"{canary.requests} requests on the canary in "
                              f"{format_duration(_whole(canary.window) or 1)}, "
                              f"fewer than min_requests {settings.min_requests}")
            return judgement
        health = canary.health
        assert health is not None                # there were requests
        if health < settings.success_rate:
            judgement.fail(f"success rate {_percent(health)} below {_percent(settings.success_rate)} "
                           f"({canary.errors} 5xx of {canary.requests})")
        if settings.max_p99_ms is not None:
            if canary.p99_ms is None:
                judgement.no_data("no p99 response time for the canary")
            elif canary.p99_ms > settings.max_p99_ms:
                judgement.fail(f"p99 {canary.p99_ms:.0f}ms above max_p99 {settings.max_p99_ms:.0f}ms")
        if settings.confidence is not None:
            baseline = metrics.summary([Scope(settings.gateway, self.baseline_route)], window)
            judgement.baseline = self._compare(canary, baseline, settings.confidence)
            if judgement.baseline["significant"]:
                judgement.fail(f"error rate {_percent(canary.error_rate or 0.0)} significantly above the "
                               f"baseline's {_percent(baseline.error_rate or 0.0)} (p = "
                               f"{judgement.baseline['p_value']:.3g}, confidence {_percent(settings.confidence)})")
        for check in settings.checks:
            judgement.checks.append(await self._check(check, judgement))
        return judgement

    @staticmethod
    def _compare(canary: Summary, baseline: Summary, confidence: float) -> dict[str, Any]:
        p_value = higher_error_rate_p_value(canary.errors, canary.requests, baseline.errors, baseline.requests)
        return {"requests": baseline.requests, "errors": baseline.errors,
                "error_rate": _rounded(baseline.error_rate), "canary_error_rate": _rounded(canary.error_rate),
                "p_value": _rounded(p_value, 6), "confidence": confidence,
                "significant": baseline.requests > 0 and p_value < 1 - confidence,
                "compared": baseline.requests > 0}

    async def _check(self, check: PrometheusCheck, judgement: Judgement) -> dict[str, Any]:
        result: dict[str, Any] = {"name": check.name, "value": None, "max": check.maximum, "min": check.minimum}
        try:
            value = await query_scalar(check.address, check.query, timeout=check.timeout)
        except PrometheusError as error:
            result["error"] = str(error)
            judgement.no_data(f"check {check.name}: {error}")
            return result
        result["value"] = value
        if value is None:
            judgement.no_data(f"check {check.name}: no data")
        elif check.maximum is not None and value > check.maximum:
            judgement.fail(f"check {check.name}: {value:g} above max {check.maximum:g}")
        elif check.minimum is not None and value < check.minimum:
            judgement.fail(f"check {check.name}: {value:g} below min {check.minimum:g}")
        return result

    # -- outcomes ----------------------------------------------------------------------------------------
    async def _promote(self, why: str, figures: dict[str, Any]) -> None:
        if await self._set_weights({self.baseline_route: 0, self.canary_route: 100}, "promotion"):
            self._transition("promoted", why)
            self._event("canary:promote", {**figures, **self._figures()})

    async def _rollback(self, why: str, figures: dict[str, Any]) -> None:
        """Baseline 100%, canary 0%; a canary with a condition also gets condition strength 0%, so the requests
        its condition matches go by the weights, to the baseline, too."""
        document = await self._document()
        condition = condition_of(document, self.canary_route) if document is not None else None
        strengths = {self.canary_route: 0} if condition is not None else None
        if not await self._set_weights({self.baseline_route: 100, self.canary_route: 0}, "rollback", strengths):
            return
        self._transition("rolled_back", why)
        value = {**figures, **self._figures()}
        if condition is not None:
            value["condition"] = condition
            value["condition_strength"] = "0%"
            value["note"] = (f"route {self.canary_route} keeps its condition at strength 0%: requests it matches "
                             f"go by the weights, to the baseline")
        self._event("canary:rollback", value)

    def _halt(self, why: str, figures: dict[str, Any] | None = None) -> None:
        self._transition("halted", why)
        self._event("canary:halt", {**(figures or {}), **self._figures()})

    async def _obey(self) -> None:
        action, self._command = self._command, None
        self._woken.clear()
        figures = {**self._figures(), "manual": True}
        if action == "promote":
            await self._promote("promoted by hand", figures)
        else:
            await self._rollback("aborted by hand", figures)
        self._publish_state()

    async def _wait_for_command(self) -> None:
        """Halted: the weights stay as they are until someone promotes or aborts."""
        while self._command is None:
            await self._woken.wait()
            self._woken.clear()
        await self._obey()

    async def _pause(self, seconds: float) -> None:
        """The context's sleep, cut short by a manual action."""
        if self._command is not None:
            return
        sleeping = asyncio.ensure_future(self.context.sleep(seconds))
        woken = asyncio.ensure_future(self._woken.wait())
        try:
            await asyncio.wait({sleeping, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeping, woken):
                task.cancel()
            await asyncio.gather(sleeping, woken, return_exceptions=True)

    # -- the gateway -------------------------------------------------------------------------------------
    async def _document(self) -> dict[str, Any] | None:
        try:
            return await self.context.gateway(self.settings.gateway)
        except RequestError:
            return None

    async def _find_routes(self) -> bool:
        """Wait (up to no_data_timeout) for the gateway and both routes to exist, and check that no other route
        takes a share of the weights; halted otherwise."""
        settings = self.settings
        since = self.context.now()
        while True:
            document = await self._document()
            problem = None
            if document is None:
                problem = f"gateway {settings.gateway} not found"
            else:
                baseline = find_route(document, settings.gateway, settings.baseline)
                canary = find_route(document, settings.gateway, settings.canary)
                missing = [name for name, found in ((settings.baseline, baseline), (settings.canary, canary))
                           if found is None]
                if missing:
                    problem = f"gateway {settings.gateway} has no route {' or '.join(missing)}"
                else:
                    assert baseline is not None and canary is not None
                    self.baseline_route, self.canary_route = baseline, canary
                    others = {name: weight for name, weight in weights_of(document).items()
                              if name not in (baseline, canary) and weight > 0}
                    if others:
                        shares = ", ".join(f"{name} {format_percent(weight)}" for name, weight in others.items())
                        self._halt(f"other routes of gateway {settings.gateway} take traffic by weight ({shares}): "
                                   f"the canary needs the baseline and the canary to share 100%")
                        self._publish_state()
                        return False
                    return True
            if self._command is not None:
                self._halt(f"{self._command} by hand before the canary could start: {problem}")
                self._command = None
                self._publish_state()
                return False
            if self.context.now() - since >= settings.no_data_timeout:
                self._halt(f"{problem} (waited {format_duration(_whole(self.context.now() - since) or 1)})")
                self._publish_state()
                return False
            if self.phase != "halted":
                self._transition("waiting", f"waiting: {problem}")
                self._publish_state()
            await self._pause(settings.interval)

    async def _set_weights(self, weights: dict[str, int], why: str,
                           condition_strengths: dict[str, int] | None = None) -> bool:
        """Set the pair's weights (and the condition strengths given) in one change, unless they are already so;
        halted if the gateway refuses."""
        document = await self._document()
        if document is not None:
            current = weights_of(document)
            if all(current.get(route) == weight * 100 for route, weight in weights.items()) and all(
                    strength_of(document, route) == strength * 100
                    for route, strength in (condition_strengths or {}).items()):
                self.weights = dict(weights)
                return True
        try:
            await self.context.set_weights(self.settings.gateway, weights, condition_strengths)
        except RequestError as error:
            self._halt(f"could not set the weights ({why}): {error.message}",
                       {"wanted": {route: f"{weight}%" for route, weight in weights.items()}})
            self._publish_state()
            return False
        self.weights = dict(weights)
        return True

    def _step_weights(self, step: int | None = None) -> dict[str, int]:
        canary = self.settings.steps[(self.step if step is None else step) - 1]
        return {self.baseline_route: 100 - canary, self.canary_route: canary}

    # -- state and events --------------------------------------------------------------------------------
    def _step_reason(self) -> str:
        return f"step {self.step} of {len(self.settings.steps)}: canary at {self.settings.steps[self.step - 1]}%"

    def _transition(self, phase: str, reason: str) -> None:
        self.phase = phase
        self.reason = reason

    def _figures(self) -> dict[str, Any]:
        return {"phase": self.phase, "step": self.step, "steps": len(self.settings.steps), "failures": self.failures,
                "weights": {route: f"{weight}%" for route, weight in self.weights.items()},
                "reason": self.reason}

    def _event(self, tag: str, value: Mapping[str, Any]) -> None:
        self.context.publish([tag, f"gateways:{self.settings.gateway}"], dict(value))

    def state(self) -> dict[str, Any]:
        """The `state` object (docs/canary.md, "The state object")."""
        return {"phase": self.phase, "step": self.step, "steps": list(f"{step}%" for step in self.settings.steps),
                "weights": {route: f"{weight}%" for route, weight in self.weights.items()},
                "reason": self.reason, "failures": self.failures,
                "window_start": iso(self.window_start) if self.window_start else None,
                "waiting_since": iso(self.waiting_since) if self.waiting_since is not None else None,
                "judgement": self.judgement}

    def _publish_state(self) -> None:
        if self.reason is None and self.phase == "progressing":
            self.reason = self._step_reason()
        self.context.set_state(self.state())

    def _restore(self, state: Mapping[str, Any]) -> bool:
        """Take up a run from its last state; False (start afresh) if the state cannot be one of a canary's."""
        phase, step, failures = state.get("phase"), state.get("step"), state.get("failures", 0)
        if phase not in PHASES or isinstance(step, bool) or not isinstance(step, int) or step < 1 \
                or isinstance(failures, bool) or not isinstance(failures, int) or failures < 0:
            return False
        weights = state.get("weights")
        if phase == "halted" and not weights:
            return False                        # halted before it set any weight: nothing to take up
        self.phase = "progressing" if phase == "waiting" else phase
        self.step = min(step, len(self.settings.steps))
        self.failures = failures
        self.reason = state.get("reason") if isinstance(state.get("reason"), str) else None
        judgement = state.get("judgement")
        self.judgement = dict(judgement) if isinstance(judgement, Mapping) else None
        if isinstance(weights, Mapping):
            try:
                self.weights = {str(route): parse_percent(weight) // 100 for route, weight in weights.items()}
            except ValueError:
                self.weights = {}
        return True


def _percent(fraction: float) -> str:
    return f"{fraction * 100:.2f}".rstrip("0").rstrip(".") + "%"


def _whole(seconds: float) -> float:
    return float(round(seconds))

