"""The SLA monitor's rules, against a fake engine, fake metrics, an in-memory event log and a virtual clock:
escalate up to `maximum` and no further, one step per cooldown, de-escalate down to `minimum`, nothing while
the deployment changes or without data, to_one / to_all order, a target cluster, error_rate, escalation_only
driven by posted events."""
from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

import pytest

from control import dsl
from control.dsl.model import Deployment, Scale
from control.metrics.model import Scope
from control.sla.escalations import DEESCALATE, ESCALATE, step
from control.sla.monitor import SlaMonitor
from gateway.common.errors import NotFound
from tests.support.control_fakes import FakeClock, FakeEventLog, FakeMetrics
from tests.support.waiting import eventually_async

INTERVAL, COOLDOWN = 60, 120
SLOW, FAST, FINE = 500.0, 5.0, 50.0          # mean response times against upper 100 ms, lower 10 ms


def breed(name: str) -> dict[str, Any]:
    return {"name": name, "deployable": f"cmd://python -m control.demo.sava --version {name.split(':')[1]}",
            "ports": {"webport": "8080/http"}}


def response_time_sla(escalations: Any) -> dict[str, Any]:
    return {"type": "response_time_sliding_window", "threshold": {"upper": 100, "lower": 10},
            "window": {"interval": INTERVAL, "cooldown": COOLDOWN}, "escalations": escalations}


def scale_instances(minimum: int, maximum: int, scale_by: int = 1, **more: Any) -> dict[str, Any]:
    return {"type": "scale_instances", "minimum": minimum, "maximum": maximum, "scale_by": scale_by, **more}


def deployment(sla: dict[str, Any] | None, *, instances: int = 1, services: tuple[str, ...] = ("sava:1.0.0",),
               backend: int | None = None) -> Deployment:
    """Deployment `sava`: cluster `sava` (its `services` at `instances` each, with `sla`), and a cluster
    `backend` (service backend:1.0.0 at `backend` instances) when `backend` is given."""
    clusters: dict[str, Any] = {"sava": {"services": [{"breed": breed(name), "scale": {
        "cpu": 0.5, "memory": "128MB", "instances": instances}} for name in services]}}
    if sla is not None:
        clusters["sava"]["sla"] = sla
    if backend is not None:
        clusters["backend"] = {"services": [{"breed": breed("backend:1.0.0"), "scale": backend}]}
    blueprint = dsl.read("blueprint", {"name": "sava", "clusters": clusters})
    return Deployment(name="sava", clusters=blueprint.clusters)


class FakeEngine:
    """Deployments held as values; `unsettled` is what `changing` answers; `set_scale` changes the deployment."""

    def __init__(self, *deployments: Deployment) -> None:
        self.running = {d.name: d for d in deployments}
        self.unsettled: str | None = None
        self.scaled: list[tuple[str, str, Scale]] = []

    def changing(self, deployment: str) -> str | None:
        if deployment not in self.running:
            raise NotFound(deployment)
        return self.unsettled

    async def set_scale(self, deployment: str, cluster: str, service: str, scale: Scale) -> dict[str, Any]:
        dep = self.running[deployment]
        clusters = tuple(dataclasses.replace(c, services=tuple(dataclasses.replace(s, scale=scale)
                                                                 if s.name == service else s for s in c.services))
                         if c.name == cluster else c for c in dep.clusters)
        self.running[deployment] = dataclasses.replace(dep, clusters=clusters)
        self.scaled.append((cluster, service, scale))
        return dsl.to_dict(scale)

    def scale(self, cluster: str = "sava", service: str = "sava:1.0.0") -> Scale:
        return self.running["sava"].cluster(cluster).service(service).scale

    def instances(self, cluster: str = "sava", service: str = "sava:1.0.0") -> int:
        return self.scale(cluster, service).instances


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_000_000.0)


@pytest.fixture
def metrics() -> FakeMetrics:
    return FakeMetrics()


@pytest.fixture
def events(clock) -> FakeEventLog:
    return FakeEventLog(clock)


def monitor_of(engine: FakeEngine, metrics: FakeMetrics, events: FakeEventLog, clock: FakeClock) -> SlaMonitor:
    return SlaMonitor(engine, metrics, events, clock)


def respond(metrics: FakeMetrics, mean_ms: float | None, requests: int = 100, errors: int = 0) -> None:
    metrics.set("sava/sava/webport", requests=requests, mean_ms=mean_ms, errors=errors)


# -- response time: up to maximum, one step per cooldown, down to minimum --------------------------------------
async def test_slow_responses_scale_up_one_step_per_cooldown_to_the_maximum_and_no_further(clock, metrics, events):
    engine = FakeEngine(deployment(response_time_sla(scale_instances(1, 3))))
    monitor = monitor_of(engine, metrics, events, clock)
    respond(metrics, SLOW)

    await monitor.check()
    assert engine.instances() == 2
    assert metrics.asked[-1] == ((Scope("sava/sava/webport"),), INTERVAL)
    [first] = events.tagged("sla:escalate")
    assert set(first.tags) == {"sla:escalate", "deployments:sava", "clusters:sava", "services:sava:1.0.0"}
    assert first.value == {
        "sla": "response_time_sliding_window", "measured": SLOW, "unit": "ms",
        "threshold": {"upper": 100, "lower": 10}, "window": {"interval": INTERVAL, "cooldown": COOLDOWN},
        "requests": 100,
        "scaled": [{"cluster": "sava", "service": "sava:1.0.0", "escalation": "scale_instances", "from": 1, "to": 2,
                    "scale": {"cpu": 0.5, "memory": "128MB", "instances": 2}}]}

    clock.advance(INTERVAL + COOLDOWN - 1)          # still cooling down
    await monitor.check()
    assert engine.instances() == 2
    assert len(events.events) == 1

    clock.advance(1)
    await monitor.check()
    assert engine.instances() == 3

    clock.advance(INTERVAL + COOLDOWN)             # at the maximum: the breach is told, nothing scales
    await monitor.check()
    assert engine.instances() == 3
    assert [event.value["scaled"] for event in events.tagged("sla:escalate")][-1] == []
    assert "services:sava:1.0.0" not in events.events[-1].tags
    assert len(engine.scaled) == 2


async def test_fast_responses_scale_down_to_the_minimum_then_stay_quiet(clock, metrics, events):
    engine = FakeEngine(deployment(response_time_sla(scale_instances(2, 6, scale_by=2)), instances=5))
    monitor = monitor_of(engine, metrics, events, clock)
    respond(metrics, FAST)

    await monitor.check()
    assert engine.instances() == 3
    clock.advance(INTERVAL + COOLDOWN)
    await monitor.check()
    assert engine.instances() == 2                  # one more step of 2 would leave [2, 6]
    assert [e.value["scaled"][0]["to"] for e in events.tagged("sla:deescalate")] == [3, 2]
    for _ in range(3):                              # at the minimum: no step, no event
        clock.advance(INTERVAL + COOLDOWN)
        await monitor.check()
    assert engine.instances() == 2
    assert len(events.events) == 2


async def test_responses_between_the_thresholds_change_nothing(clock, metrics, events):
    engine = FakeEngine(deployment(response_time_sla(scale_instances(1, 3)), instances=2))
    monitor = monitor_of(engine, metrics, events, clock)
    for mean in (FINE, 100.0, 10.0):                # the bounds themselves are within
        respond(metrics, mean)
        await monitor.check()
        clock.advance(1)
    assert engine.instances() == 2
    assert events.events == []


def test_a_step_never_leaves_the_bounds_nor_moves_away_from_them():
    assert step(1, 1, 3, 5, ESCALATE) == 3
    assert step(3, 1, 3, 1, ESCALATE) == 3
    assert step(5, 1, 3, 1, ESCALATE) == 5          # set beyond the maximum by hand: the SLA does not shrink it
    assert step(5, 1, 3, 1, DEESCALATE) == 4
    assert step(0, 1, 3, 1, DEESCALATE) == 0
    assert step(0, 1, 3, 1, ESCALATE) == 1


# -- when not to check ---------------------------------------------------------------------------------------
async def test_nothing_is_done_while_the_deployment_changes_nor_on_a_window_that_saw_the_change(
        clock, metrics, events):
    engine = FakeEngine(deployment(response_time_sla(scale_instances(1, 3))))
    monitor = monitor_of(engine, metrics, events, clock)
    respond(metrics, SLOW)
    engine.unsettled = "service sava/sava/sava:1.0.0 is deploying: 0 of 1 instances ready"
    await monitor.check()
    clock.advance(1)
    engine.unsettled = None
    await monitor.check()                           # settled, but the window still covers the change
    clock.advance(INTERVAL - 2)
    await monitor.check()
    assert engine.instances() == 1
    assert events.events == []
    clock.advance(1)                                # a whole window since the change was last seen
    await monitor.check()
    assert engine.instances() == 2


async def test_a_deployment_done_between_two_checks_is_not_measured_in_the_window_that_saw_it(
        clock, metrics, events):
    engine = FakeEngine(deployment(response_time_sla(scale_instances(1, 3))))
    monitor = monitor_of(engine, metrics, events, clock)
    respond(metrics, SLOW)
    events.publish(["deployments:sava", "clusters:sava", "services:sava:1.0.0", "synchronization:deployed"])
    clock.advance(1)                                # deployed and settled before the monitor's first check
    await monitor.check()
    clock.advance(INTERVAL - 2)
    await monitor.check()
    assert engine.instances() == 1 and events.tagged("sla:escalate") == []
    clock.advance(1)                                # a whole window since it was deployed
    await monitor.check()
    assert engine.instances() == 2


async def test_no_requests_in_the_window_is_neither_good_nor_bad(clock, metrics, events, caplog):
    engine = FakeEngine(deployment(response_time_sla(scale_instances(1, 3)), instances=2))
    monitor = monitor_of(engine, metrics, events, clock)
    for _ in range(3):
        await monitor.check()                       # nothing measured at all
        respond(metrics, None, requests=0)
        clock.advance(INTERVAL + COOLDOWN)
    assert engine.instances() == 2
    assert events.events == []
    assert [record.message for record in caplog.records if record.levelno >= logging.WARNING] == []


async def test_the_cooldown_survives_a_restart_through_the_event_log(clock, metrics, events):
    events.publish(["sla:escalate", "deployments:sava", "clusters:sava"], {"scaled": []})
    clock.advance(INTERVAL)
    engine = FakeEngine(deployment(response_time_sla(scale_instances(1, 3))))
    monitor = monitor_of(engine, metrics, events, clock)
    respond(metrics, SLOW)
    await monitor.check()
    assert engine.instances() == 1
    clock.advance(COOLDOWN)
    await monitor.check()
    assert engine.instances() == 2


# -- escalation kinds ----------------------------------------------------------------------------------------
async def test_a_plain_list_is_to_one_head_to_tail_up_and_tail_to_head_down(clock, metrics, events):
    sla = response_time_sla([scale_instances(1, 2), scale_instances(1, 2, target="backend")])
    engine = FakeEngine(deployment(sla, backend=1))
    monitor = monitor_of(engine, metrics, events, clock)
    seen = []

    async def round_(mean: float) -> None:
        respond(metrics, mean)
        await monitor.check()
        clock.advance(INTERVAL + COOLDOWN)
        seen.append((engine.instances("sava"), engine.instances("backend", "backend:1.0.0")))

    for _ in range(3):
        await round_(SLOW)
    for _ in range(3):
        await round_(FAST)
    assert seen == [(2, 1), (2, 2), (2, 2), (2, 1), (1, 1), (1, 1)]
    backend_step = events.tagged("sla:escalate")[1]
    assert {"clusters:sava", "clusters:backend", "services:backend:1.0.0"} <= set(backend_step.tags)
    assert "services:sava:1.0.0" not in backend_step.tags


async def test_to_all_applies_every_escalation_in_order_in_one_step(clock, metrics, events):
    sla = response_time_sla({"to_all": [scale_instances(1, 3, scale_by=2),
                                        {"type": "scale_cpu", "minimum": 0.5, "maximum": 1, "scale_by": 0.1},
                                        {"type": "scale_memory", "minimum": "128MB", "maximum": "256MB",
                                         "scale_by": "64MB"}]})
    engine = FakeEngine(deployment(sla))
    monitor = monitor_of(engine, metrics, events, clock)
    respond(metrics, SLOW)
    await monitor.check()
    assert engine.scale() == Scale(cpu=0.6, memory=192_000_000, instances=3)
    [event] = events.events
    assert [(s["escalation"], s["from"], s["to"]) for s in event.value["scaled"]] == [
        ("scale_instances", 1, 3), ("scale_cpu", 0.5, 0.6), ("scale_memory", "128MB", "192MB")]
    assert event.value["scaled"][-1]["scale"] == {"cpu": 0.6, "memory": "192MB", "instances": 3}

    respond(metrics, FAST)
    for _ in range(3):
        clock.advance(INTERVAL + COOLDOWN)
        await monitor.check()
    assert engine.scale() == Scale(cpu=0.5, memory=128_000_000, instances=1)


async def test_scale_instances_scales_every_service_of_the_cluster(clock, metrics, events):
    engine = FakeEngine(deployment(response_time_sla(scale_instances(1, 2)), services=("sava:1.0.0", "sava:1.1.0")))
    monitor = monitor_of(engine, metrics, events, clock)
    respond(metrics, SLOW)
    await monitor.check()
    assert (engine.instances(service="sava:1.0.0"), engine.instances(service="sava:1.1.0")) == (2, 2)
    assert {"services:sava:1.0.0", "services:sava:1.1.0"} <= set(events.events[0].tags)


async def test_an_escalation_the_platform_does_not_know_changes_nothing(clock, metrics, events):
    engine = FakeEngine(deployment(response_time_sla([{"type": "pager", "who": "ops"}, scale_instances(1, 2)])))
    monitor = monitor_of(engine, metrics, events, clock)
    respond(metrics, SLOW)
    await monitor.check()                           # to_one goes on to the next one
    assert engine.instances() == 2


# -- error rate -----------------------------------------------------------------------------------------------
async def test_the_error_rate_sla_scales_on_the_share_of_5xx(clock, metrics, events):
    sla = {"type": "error_rate", "threshold": {"upper": "5%", "lower": "1%"},
           "window": {"interval": INTERVAL, "cooldown": COOLDOWN}, "escalations": [scale_instances(1, 3)]}
    engine = FakeEngine(deployment(sla))
    monitor = monitor_of(engine, metrics, events, clock)
    respond(metrics, FINE, requests=200, errors=20)
    await monitor.check()
    assert engine.instances() == 2
    assert events.events[-1].value | {"scaled": None} == {
        "sla": "error_rate", "measured": 10.0, "unit": "%", "threshold": {"upper": 5.0, "lower": 1.0},
        "window": {"interval": INTERVAL, "cooldown": COOLDOWN}, "requests": 200, "scaled": None}
    clock.advance(INTERVAL + COOLDOWN)
    respond(metrics, FINE, requests=200, errors=4)     # 2%: within
    await monitor.check()
    assert engine.instances() == 2
    respond(metrics, FINE, requests=200, errors=1)     # 0.5%: below lower
    await monitor.check()
    assert engine.instances() == 1
    assert events.events[-1].value["measured"] == 0.5


# -- escalation_only ------------------------------------------------------------------------------------------
async def test_escalation_only_acts_on_posted_events_and_not_on_its_own(clock, metrics, events):
    engine = FakeEngine(deployment({"type": "escalation_only", "escalations": [scale_instances(1, 3)]}, backend=1))
    monitor = monitor_of(engine, metrics, events, clock)
    follower = asyncio.get_running_loop().create_task(monitor.follow())
    await eventually_async(lambda: events.followers, 5, "following the event log")
    try:
        respond(metrics, SLOW)
        await monitor.check()                       # not measured
        assert engine.instances() == 1

        posted = events.publish(["sla:escalate", "deployments:sava", "clusters:sava"])
        await eventually_async(lambda: engine.instances() == 2, 5, "scaled up by the posted event",
                               context=engine.instances)
        [answer] = [e for e in events.tagged("sla:escalate") if e.id != posted.id]
        assert answer.value["trigger"] == posted.id
        assert "services:sava:1.0.0" in answer.tags
        events.publish(["sla:escalate", "deployments:sava", "clusters:backend"])    # no such SLA there
        events.publish(["sla:escalate", "deployments:other", "clusters:sava"])
        events.publish(["sla:deescalate", "deployments:sava", "clusters:sava"])
        await eventually_async(lambda: engine.instances() == 1, 5, "scaled down by the posted event")
        await eventually_async(lambda: all(q.empty() for _, q in events.followers), 5, "every event read")
        assert [scale.instances for _, _, scale in engine.scaled] == [2, 1]   # its own events moved nothing
        assert engine.instances("backend", "backend:1.0.0") == 1
    finally:
        follower.cancel()


async def test_run_checks_every_period_on_its_clock(clock, metrics, events):
    engine = FakeEngine(deployment(response_time_sla(scale_instances(1, 3))))
    monitor = monitor_of(engine, metrics, events, clock)
    respond(metrics, SLOW)
    started = clock.now()
    runner = asyncio.get_running_loop().create_task(monitor.run())
    try:
        await eventually_async(lambda: engine.instances() == 3, 5, "scaled up to the maximum")
    finally:
        runner.cancel()
    first, second = events.tagged("sla:escalate")[:2]
    assert first.timestamp == started
    assert second.timestamp - first.timestamp == pytest.approx(INTERVAL + COOLDOWN, abs=1)
