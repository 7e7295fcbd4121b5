"""The built-in canary (`workflow: canary`, docs/canary.md) against a fake context with a virtual clock and scripted
traffic (tests/support/workflow_context.py): promotion through every step, rollback on errors, slow responses, a
baseline that fails less, or a Prometheus check; never a promotion without traffic (Flagger #1011); waiting, its
timeout, halting; manual promote and abort; resuming after a restart; conditions kept; parameters refused with
the field at fault."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

import control.workflows.builtins.canary as canary_module
from control.metrics.model import Scope
from control.metrics.prometheus import PrometheusError
from control.workflows.builtins import BUILTINS
from control.workflows.builtins.canary import Canary
from gateway.common.errors import Conflict, Invalid
from tests.support.workflow_context import FakeContext, ScriptedMetrics, Traffic, document

GATEWAY = "sava/sava/webport"
BASELINE = "sava/sava/sava:1.0.0/webport"
CANARY = "sava/sava/sava:1.1.0/webport"
INTERVAL = 30.0
STEPS = [5, 20, 50, 100]
CHROME = 'browser = "Chrome"'


def sava(canary: dict | None = None, **more_routes: dict) -> dict:
    """The cluster's internal gateway: everything on 1.0.0, 1.1.0 deployed at 0%."""
    return document({BASELINE: {"weight": "100%"}, CANARY: {"weight": "0%", **(canary or {})}, **more_routes},
                    name=GATEWAY)


def parameters(**changes: Any) -> dict[str, Any]:
    given = {"gateway": GATEWAY, "baseline": BASELINE, "canary": CANARY, "steps": [f"{s}%" for s in STEPS],
             "interval": "30s", "min_requests": 100, "success_rate": "99%", "failure_limit": 1}
    given.update(changes)
    return {key: value for key, value in given.items() if value is not None}


def steady(rate: float) -> Any:
    return lambda t: rate


def canary_weights(context: FakeContext) -> list[int]:
    """The canary's weight at each change the workflow made."""
    return [weights[CANARY] for _, _, weights in context.weight_changes]


async def run(context: FakeContext, given: dict[str, Any], *, until: float | None = None,
              restored: dict[str, Any] | None = None, phase: str | None = None) -> tuple[Canary, asyncio.Task]:
    """Start a canary and let it run until it finishes, sleeps past `until` seconds from the start, or reaches
    `phase` (a halted canary neither sleeps nor finishes: it waits for a hand)."""
    workflow = Canary(context, given, restored)
    task = asyncio.create_task(workflow.run())
    await context.run_until(task, context.start + until if until is not None else float("inf"),
                            state=None if phase is None else lambda state: state["phase"] == phase)
    return workflow, task


async def finish(task: asyncio.Task) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def test_the_built_ins_are_registered_by_their_workflow_names():
    assert BUILTINS["canary"] is Canary
    assert set(BUILTINS) == {"canary", "follow-the-sun", "brown-out", "heartbeat"}


# -- promotion and rollback --------------------------------------------------------------------------------------
async def test_a_good_canary_is_promoted_through_every_step_one_interval_each():
    context = FakeContext(gateways={GATEWAY: sava()})
    Traffic(context, GATEWAY, rate=steady(100.0))
    workflow, task = await run(context, parameters())

    assert task.done() and workflow.phase == "promoted"
    assert canary_weights(context) == STEPS                 # the last step is 100%: promotion changes nothing more
    assert [when - context.start for when, _, _ in context.weight_changes] == [0, 30, 60, 90]
    assert all(sum(weights.values()) == 100 for _, _, weights in context.weight_changes)
    promote, = context.tagged("canary:promote")
    assert promote.timestamp == context.start + 4 * INTERVAL
    assert set(promote.tags) >= {"canary:promote", f"gateways:{GATEWAY}", "workflows:release"}
    assert [event.value["step"] for event in context.tagged("canary:progress")] == [1, 2, 3, 4]
    state = context.state
    assert state["phase"] == "promoted" and state["step"] == 4
    assert state["weights"] == {BASELINE: "0%", CANARY: "100%"}
    assert state["judgement"]["verdict"] == "pass" and state["judgement"]["requests"] == 3000
    assert state["judgement"]["success_rate"] == 1.0
    assert context.documents[GATEWAY]["routes"][CANARY]["weight"] == "100%"


async def test_steps_below_100_percent_end_with_the_canary_at_100_percent():
    context = FakeContext(gateways={GATEWAY: sava()})
    Traffic(context, GATEWAY, rate=steady(100.0))
    workflow, _ = await run(context, parameters(steps=["10%", "50%"]))
    assert workflow.phase == "promoted"
    assert [dict(w) for _, _, w in context.weight_changes] == [
        {BASELINE: 90, CANARY: 10}, {BASELINE: 50, CANARY: 50}, {BASELINE: 0, CANARY: 100}]


async def test_a_canary_with_20_percent_errors_is_rolled_back_within_two_intervals():
    context = FakeContext(gateways={GATEWAY: sava()})
    Traffic(context, GATEWAY, rate=steady(100.0), error_share={CANARY: lambda t: 0.2})
    workflow, task = await run(context, parameters())

    assert task.done() and workflow.phase == "rolled_back"
    assert canary_weights(context) == [5, 0]                # never past its first step
    assert context.weight_changes[-1][2] == {BASELINE: 100, CANARY: 0}       # one change
    failed, = context.tagged("canary:fail")
    rollback, = context.tagged("canary:rollback")
    assert failed.timestamp == context.start + INTERVAL
    assert rollback.timestamp <= context.start + 2 * INTERVAL
    assert rollback.value["judgement"]["requests"] == 150 and rollback.value["judgement"]["errors"] == 30
    assert rollback.value["judgement"]["success_rate"] == 0.8
    assert "success rate 80% below 99%" in rollback.value["reason"]
    assert rollback.value["weights"] == {BASELINE: "100%", CANARY: "0%"}
    assert not context.tagged("canary:promote")
    assert context.state["phase"] == "rolled_back" and "failure_limit 1" in context.state["reason"]


@pytest.mark.parametrize("p99, outcome", [(800.0, "rolled_back"), (300.0, "promoted")])
async def test_max_p99_rolls_back_a_slow_canary(p99, outcome):
    context = FakeContext(gateways={GATEWAY: sava()})
    Traffic(context, GATEWAY, rate=steady(100.0), p99_ms={CANARY: lambda t: p99, BASELINE: lambda t: 100.0})
    workflow, _ = await run(context, parameters(max_p99="500ms"))
    assert workflow.phase == outcome
    if outcome == "rolled_back":
        assert "p99 800ms above max_p99 500ms" in context.state["reason"]
        assert context.state["judgement"]["p99_ms"] == 800.0


@pytest.mark.parametrize("limit, outcome, failures", [(0, "rolled_back", 1), (1, "promoted", 1)])
async def test_failure_limit_is_how_many_failed_judgements_a_canary_survives(limit, outcome, failures):
    context = FakeContext(gateways={GATEWAY: sava()})
    start = context.start
    # a burst of errors in the first interval only
    Traffic(context, GATEWAY, rate=steady(100.0), error_share={CANARY: lambda t: 0.5 if t < start + 30 else 0.0})
    workflow, _ = await run(context, parameters(failure_limit=limit))
    assert workflow.phase == outcome
    assert context.state["failures"] == failures
    assert len(context.tagged("canary:fail")) == (1 if limit == 1 else 0)
    if outcome == "promoted":
        # the failed step was judged again on fresh data, then the canary went on
        assert canary_weights(context) == STEPS
        assert context.tagged("canary:promote")[0].timestamp == start + 5 * INTERVAL


# -- no data is never a pass ---------------------------------------------------------------------------------------
async def test_without_traffic_the_canary_waits_at_its_first_step_and_is_never_promoted():
    context = FakeContext(gateways={GATEWAY: sava()})       # NoMetrics: no request at all
    workflow, task = await run(context, parameters(min_requests=1), until=9 * 60)

    assert not task.done()
    assert canary_weights(context) == [5]
    state = context.state
    assert state["phase"] == "waiting" and state["step"] == 1
    assert state["weights"] == {BASELINE: "95%", CANARY: "5%"}
    assert state["judgement"]["verdict"] == "no_data" and state["judgement"]["requests"] == 0
    assert state["judgement"]["success_rate"] is None      # 0 requests are not 100% success
    waiting = context.tagged("canary:waiting")
    assert len(waiting) == 18 and {event.value["requests"] for event in waiting} == {0}
    assert waiting[-1].value["min_requests"] == 1
    assert not context.tagged("canary:promote") and not context.tagged("canary:progress")[1:]
    await finish(task)


async def test_traffic_that_stops_midway_never_promotes_the_canary():
    """Flagger #1011: it advanced when traffic stopped. Here the canary passes two steps, then waits."""
    context = FakeContext(gateways={GATEWAY: sava()})
    start = context.start
    Traffic(context, GATEWAY, rate=lambda t: 100.0 if t < start + 45 else 0.0)
    workflow, task = await run(context, parameters(), until=8 * 60)
    assert canary_weights(context) == [5, 20, 50]
    assert context.state["phase"] == "waiting" and context.state["step"] == 3
    assert "0 requests on the canary" in context.state["reason"]
    assert not context.tagged("canary:promote")
    await finish(task)


@pytest.mark.parametrize("action, phase, canary_after", [("wait", "rolled_back", 0), ("halt", "halted", 5)])
async def test_after_no_data_timeout_the_canary_is_rolled_back_or_halted(action, phase, canary_after):
    context = FakeContext(gateways={GATEWAY: sava()})
    workflow, task = await run(context, parameters(no_data=action, no_data_timeout="5m"), until=20 * 60, phase=phase)
    assert workflow.phase == phase
    assert context.weight_changes[-1][2][CANARY] == canary_after
    event, = context.tagged("canary:rollback" if phase == "rolled_back" else "canary:halt")
    assert event.timestamp == context.start + 5 * 60
    assert "no data for 5m (no_data_timeout 5m)" in context.state["reason"]
    assert not context.tagged("canary:promote")
    await finish(task)


async def test_no_data_rollback_rolls_back_at_the_first_judgement_without_data():
    context = FakeContext(gateways={GATEWAY: sava()})
    Traffic(context, GATEWAY, rate=steady(1.0))          # 5% of 1 req/s: 2 requests in 30 s, fewer than 100
    workflow, task = await run(context, parameters(no_data="rollback"))
    assert task.done() and workflow.phase == "rolled_back"
    rollback, = context.tagged("canary:rollback")
    assert rollback.timestamp == context.start + INTERVAL
    assert rollback.value["judgement"]["requests"] == 2


async def test_a_waiting_step_counts_every_request_since_it_began():
    """A trickle adds up over the step: 1.5 requests per 30 s on the canary, min_requests 6, passes after 2 min."""
    context = FakeContext(gateways={GATEWAY: sava()})
    Traffic(context, GATEWAY, rate=steady(1.0))
    workflow, task = await run(context, parameters(min_requests=6), until=3 * 60)
    waiting = context.tagged("canary:waiting")
    assert [event.value["requests"] for event in waiting] == [2, 3, 4]      # 1.5, 3, 4.5 rounded
    assert context.tagged("canary:progress")[1].timestamp == context.start + 4 * INTERVAL
    await finish(task)


# -- comparing with the baseline -----------------------------------------------------------------------------------
async def test_compare_baseline_rolls_back_a_canary_failing_significantly_more_than_the_baseline():
    context = FakeContext(gateways={GATEWAY: sava()})
    Traffic(context, GATEWAY, rate=steady(1000.0), error_share={CANARY: lambda t: 0.03, BASELINE: lambda t: 0.01})
    # 97% success passes the fixed threshold of 90%: only the comparison can fail it
    workflow, _ = await run(context, parameters(success_rate="90%", failure_limit=0, compare="baseline",
                                                confidence="99%"))
    assert workflow.phase == "rolled_back"
    judgement = context.tagged("canary:rollback")[0].value["judgement"]
    assert judgement["requests"] == 1500 and judgement["errors"] == 45
    baseline = judgement["baseline"]
    assert baseline["requests"] == 28500 and baseline["errors"] == 285
    assert baseline["significant"] and baseline["p_value"] < 0.01 and baseline["confidence"] == 0.99
    assert "significantly above the baseline's 1%" in context.state["reason"]


async def test_compare_baseline_promotes_a_canary_that_fails_like_the_baseline():
    context = FakeContext(gateways={GATEWAY: sava()})
    Traffic(context, GATEWAY, rate=steady(1000.0), error_share={CANARY: lambda t: 0.01, BASELINE: lambda t: 0.01})
    workflow, _ = await run(context, parameters(success_rate="98%", compare="baseline"))
    assert workflow.phase == "promoted"
    judgements = [event.value["judgement"] for event in context.tagged("canary:progress")[1:]]
    assert all(not j["baseline"]["significant"] and j["baseline"]["p_value"] > 0.05 for j in judgements)
    # at 100% the baseline serves nothing: no comparison, and that alone fails nothing
    last = context.state["judgement"]["baseline"]
    assert last["requests"] == 0 and last["compared"] is False and last["significant"] is False


# -- Prometheus checks ---------------------------------------------------------------------------------------------
async def test_a_prometheus_check_fails_waits_or_passes_by_its_value(monkeypatch):
    answers: list[Any] = [0.2, None, PrometheusError("cannot query Prometheus at 127.0.0.1:1: refused"), 0.01]
    asked: list[tuple[str, str, float]] = []

    async def query_scalar(address: str, query: str, *, timeout: float) -> float | None:
        asked.append((address, query, timeout))
        answer = answers.pop(0) if answers else 0.01
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(canary_module, "query_scalar", query_scalar)
    context = FakeContext(gateways={GATEWAY: sava()})
    Traffic(context, GATEWAY, rate=steady(100.0))
    check = {"name": "error ratio", "provider": "prometheus", "address": "127.0.0.1:9090",
             "query": 'sum(rate(vamp_requests_total{code="5xx"}[1m]))', "max": 0.05, "timeout": "2s"}
    workflow, _ = await run(context, parameters(checks=[check]))

    assert asked[0] == ("127.0.0.1:9090", check["query"], 2.0)
    fail, = context.tagged("canary:fail")
    assert "check error ratio: 0.2 above max 0.05" in fail.value["reason"]
    waiting = context.tagged("canary:waiting")
    assert "check error ratio: no data" in waiting[0].value["reason"]
    assert "refused" in waiting[1].value["judgement"]["checks"][0]["error"]
    assert workflow.phase == "promoted"
    assert context.tagged("canary:promote")[0].timestamp == context.start + 7 * INTERVAL


# -- manual promote and abort --------------------------------------------------------------------------------------
@pytest.mark.parametrize("action, phase, weights, tag", [
    ("promote", "promoted", {BASELINE: 0, CANARY: 100}, "canary:promote"),
    ("abort", "rolled_back", {BASELINE: 100, CANARY: 0}, "canary:rollback"),
])
async def test_promote_and_abort_by_hand_act_at_once(action, phase, weights, tag):
    context = FakeContext(gateways={GATEWAY: sava()})
    Traffic(context, GATEWAY, rate=steady(100.0))
    workflow = Canary(context, parameters())
    context.at(context.start + 40, lambda: workflow.command(action))
    task = asyncio.create_task(workflow.run())
    await context.run_until(task)

    assert task.done() and workflow.phase == phase
    assert canary_weights(context) == [5, 20, weights[CANARY]]
    event, = context.tagged(tag)
    assert event.timestamp == context.start + 40 and event.value["manual"] is True
    assert context.state["reason"] == ("promoted by hand" if action == "promote" else "aborted by hand")
    with pytest.raises(Conflict):
        workflow.command("abort")


async def test_a_halted_canary_waits_for_a_manual_promote():
    context = FakeContext(gateways={GATEWAY: sava()})
    workflow = Canary(context, parameters(no_data="halt", no_data_timeout="1m"))
    task = asyncio.create_task(workflow.run())
    await context.run_until(task, state=lambda state: state["phase"] == "halted")
    assert not task.done() and context.state["weights"] == {BASELINE: "95%", CANARY: "5%"}
    workflow.command("promote")
    await context.run_until(task)
    assert workflow.phase == "promoted" and context.weight_changes[-1][2] == {BASELINE: 0, CANARY: 100}


def test_a_canary_takes_only_promote_and_abort():
    workflow = Canary(FakeContext(gateways={GATEWAY: sava()}), parameters())
    with pytest.raises(Invalid) as refused:
        workflow.command("pause")
    assert refused.value.field == "/status" and "promote or abort" in refused.value.message


# -- restarts ------------------------------------------------------------------------------------------------------
async def test_a_restored_canary_resumes_at_its_step():
    context = FakeContext(gateways={GATEWAY: sava()})
    Traffic(context, GATEWAY, rate=steady(100.0))
    _, first = await run(context, parameters(), until=70)       # at step 3 (50%)
    await finish(first)
    restored = context.state
    assert restored["step"] == 3 and restored["phase"] == "progressing"
    changes_before = len(context.weight_changes)

    workflow, second = await run(context, parameters(), restored=restored)
    assert second.done() and workflow.phase == "promoted"
    assert canary_weights(context)[changes_before:] == [100]     # no going back to 5% or 20%
    resume, = context.tagged("canary:resume")
    assert resume.value["step"] == 3
    assert len(context.tagged("canary:promote")) == 1
    assert context.tagged("canary:promote")[0].timestamp == resume.timestamp + 2 * INTERVAL


@pytest.mark.parametrize("phase", ["promoted", "rolled_back"])
async def test_a_restored_finished_canary_does_nothing(phase):
    context = FakeContext(gateways={GATEWAY: sava()})
    Traffic(context, GATEWAY, rate=steady(100.0))
    restored = {"phase": phase, "step": 2, "failures": 0, "weights": {BASELINE: "100%", CANARY: "0%"}}
    workflow, task = await run(context, parameters(), restored=restored)
    assert task.done() and workflow.phase == phase
    assert context.weight_changes == [] and context.events == []


async def test_a_restored_state_that_is_no_canarys_starts_afresh():
    context = FakeContext(gateways={GATEWAY: sava()})
    Traffic(context, GATEWAY, rate=steady(100.0))
    workflow, task = await run(context, parameters(), restored={"phase": "dancing", "step": "two"}, until=10)
    assert canary_weights(context) == [5] and context.state["step"] == 1
    await finish(task)


# -- the gateway ---------------------------------------------------------------------------------------------------
async def test_a_canary_with_a_condition_keeps_it_and_its_weights_apply_to_the_rest():
    context = FakeContext(gateways={GATEWAY: sava({"condition": CHROME, "condition_strength": "100%"})})
    # Chrome users reach 1.1.0 by the condition (10 req/s); the weights split the other 100 req/s
    Traffic(context, GATEWAY, rate=steady(100.0), conditional={CANARY: 10.0})
    workflow, _ = await run(context, parameters())
    assert workflow.phase == "promoted" and canary_weights(context) == STEPS
    route = context.documents[GATEWAY]["routes"][CANARY]
    assert route["condition"] == CHROME and route["condition_strength"] == "100%" and route["weight"] == "100%"
    first = context.tagged("canary:progress")[1].value["judgement"]
    assert first["requests"] == 30 * (5 + 10)


async def test_the_rollback_of_a_canary_with_a_condition_takes_its_users_off_it_too():
    context = FakeContext(gateways={GATEWAY: sava({"condition": CHROME})})
    traffic = Traffic(context, GATEWAY, rate=steady(100.0), error_share={CANARY: lambda t: 0.5},
                      conditional={CANARY: 10.0})
    workflow, _ = await run(context, parameters(failure_limit=0))
    assert workflow.phase == "rolled_back"
    rollback, = context.tagged("canary:rollback")
    assert rollback.value["condition"] == CHROME and rollback.value["condition_strength"] == "0%"
    route = context.documents[GATEWAY]["routes"][CANARY]
    assert route["condition"] == CHROME and route["condition_strength"] == "0%" and route["weight"] == "0%"
    # after the rollback nothing reaches the canary: not by weight, not by its condition
    context.clock += 60
    assert traffic.summary([Scope(GATEWAY, CANARY)], 30).requests == 0


async def test_routes_may_be_named_by_their_service_on_a_cluster_gateway():
    context = FakeContext(gateways={GATEWAY: sava()})
    Traffic(context, GATEWAY, rate=steady(100.0))
    workflow, _ = await run(context, parameters(baseline="sava:1.0.0", canary="sava:1.1.0"))
    assert workflow.phase == "promoted"
    assert context.weight_changes[0][2] == {BASELINE: 95, CANARY: 5}


async def test_another_weighted_route_halts_the_canary_before_it_changes_anything():
    context = FakeContext(gateways={GATEWAY: document({BASELINE: {"weight": "80%"}, CANARY: {"weight": "0%"},
                                                      "other": {"weight": "20%"}}, name=GATEWAY)})
    workflow, task = await run(context, parameters())
    assert task.done() and workflow.phase == "halted"
    assert "other 20%" in context.state["reason"] and context.weight_changes == []


async def test_a_missing_gateway_is_waited_for_then_halts():
    context = FakeContext(gateways={})
    workflow, task = await run(context, parameters(no_data_timeout="2m"), until=60)
    assert context.state["phase"] == "waiting" and f"gateway {GATEWAY} not found" in context.state["reason"]
    await context.run_until(task)
    assert task.done() and workflow.phase == "halted"
    assert context.tagged("canary:halt")[0].timestamp == context.start + 120


async def test_a_hand_before_the_gateway_exists_halts_the_canary():
    context = FakeContext(gateways={})
    workflow = Canary(context, parameters())
    context.at(context.start + 45, lambda: workflow.command("abort"))
    task = asyncio.create_task(workflow.run())
    await context.run_until(task)
    assert task.done() and workflow.phase == "halted"
    assert context.state["reason"].startswith("abort by hand before the canary could start")


async def test_a_restored_halted_canary_waits_for_a_hand_again():
    context = FakeContext(gateways={GATEWAY: document({BASELINE: {"weight": "80%"}, CANARY: {"weight": "20%"}},
                                                      name=GATEWAY)})
    restored = {"phase": "halted", "step": 2, "failures": 0, "reason": "no data for 10m",
                "weights": {BASELINE: "80%", CANARY: "20%"}}
    workflow, task = await run(context, parameters(), restored=restored, until=3600, phase="halted")
    assert not task.done() and context.weight_changes == [] and context.state["reason"] == "no data for 10m"
    workflow.command("abort")
    await context.run_until(task)
    assert workflow.phase == "rolled_back" and context.weight_changes[-1][2] == {BASELINE: 100, CANARY: 0}


async def test_a_refused_weight_change_halts_the_canary_with_the_reason():
    context = FakeContext(gateways={GATEWAY: sava()})
    Traffic(context, GATEWAY, rate=steady(100.0))
    workflow = Canary(context, parameters())
    context.at(context.start + 10, lambda: setattr(context, "refuse_weights", "the deployment is changing"))
    task = asyncio.create_task(workflow.run())
    await context.run_until(task, state=lambda state: state["phase"] == "halted")
    assert "could not set the weights (stepped): the deployment is changing" in context.state["reason"]
    assert context.state["step"] == 1 and context.state["phase"] == "halted"
    assert canary_weights(context) == [5]
    await finish(task)


async def test_scripted_figures_per_scope_reach_the_judgement():
    """The canary asks for its route of its gateway over the step's window."""
    context = FakeContext(gateways={GATEWAY: sava()})
    ScriptedMetrics(context, {f"{GATEWAY} {CANARY}": lambda t: (500, 1, 120.0)})
    workflow, _ = await run(context, parameters())
    assert workflow.phase == "promoted"
    assert context.state["judgement"]["success_rate"] == 0.998


# -- parameters ----------------------------------------------------------------------------------------------------
INVALID = [
    ({"steps": None}, "/parameters/steps", "steps is required"),
    ({"steps": []}, "/parameters/steps", "list of percentages"),
    ({"steps": ["20%", "5%"]}, "/parameters/steps/1", "more than the one before"),
    ({"steps": ["5%", "5%"]}, "/parameters/steps/1", "more than the one before"),
    ({"steps": ["0%", "50%"]}, "/parameters/steps/0", "from 1% to 100%"),
    ({"steps": ["5%", "150%"]}, "/parameters/steps/1", "0% to 100%"),
    ({"steps": ["5.5%"]}, "/parameters/steps/0", "whole percentage"),
    ({"steps": ["lots"]}, "/parameters/steps/0", "percentage"),
    ({"gateway": None}, "/parameters/gateway", "gateway is required"),
    ({"canary": ""}, "/parameters/canary", "non-empty string"),
    ({"canary": BASELINE}, "/parameters/canary", "different routes"),
    ({"interval": "0s"}, "/parameters/interval", "greater than zero"),
    ({"interval": "500ms"}, "/parameters/interval", "at least 1s"),
    ({"interval": "soon"}, "/parameters/interval", "duration"),
    ({"min_requests": 0}, "/parameters/min_requests", "at least 1"),
    ({"min_requests": "many"}, "/parameters/min_requests", "whole number"),
    ({"success_rate": "120%"}, "/parameters/success_rate", "0% to 100%"),
    ({"max_p99": "fast"}, "/parameters/max_p99", "duration"),
    ({"failure_limit": -1}, "/parameters/failure_limit", "at least 0"),
    ({"no_data": "panic"}, "/parameters/no_data", "wait, rollback, halt"),
    ({"no_data_timeout": "forever"}, "/parameters/no_data_timeout", "duration"),
    ({"compare": "previous"}, "/parameters/compare", "only with 'baseline'"),
    ({"compare": "baseline", "confidence": "40%"}, "/parameters/confidence", "at least 50%"),
    ({"compare": "baseline", "confidence": "100%"}, "/parameters/confidence", "below 100%"),
    ({"confidence": "95%"}, "/parameters/confidence", "goes with compare"),
    ({"intervall": "30s"}, "/parameters/intervall", "did you mean 'interval'"),
    ({"checks": "prometheus"}, "/parameters/checks", "a list"),
    ({"checks": [{"provider": "datadog", "address": "x:1", "query": "up", "max": 1}]},
     "/parameters/checks/0/provider", "only check provider is 'prometheus'"),
    ({"checks": [{"provider": "prometheus", "address": "x:1", "query": "up"}]}, "/parameters/checks/0", "a bound"),
    ({"checks": [{"provider": "prometheus", "address": "x:1", "query": "up", "max": "high"}]},
     "/parameters/checks/0/max", "a number"),
    ({"checks": [{"provider": "prometheus", "address": "x:1", "max": 1}]}, "/parameters/checks/0/query",
     "query is required"),
    ({"checks": [{"provider": "prometheus", "address": "x:1", "query": "up", "max": 1, "min": 2}]},
     "/parameters/checks/0/min", "above max"),
    ({"checks": [{"provider": "prometheus", "address": "x:1", "query": "up", "max": 1, "timeout": "x"}]},
     "/parameters/checks/0/timeout", "duration"),
    ({"checks": [{"provider": "prometheus", "address": "x:1", "query": "up", "max": 1, "every": "1m"}]},
     "/parameters/checks/0/every", "unknown field"),
]


@pytest.mark.parametrize("changes, field, message", INVALID, ids=[case[1] + " " + case[2] for case in INVALID])
def test_bad_parameters_are_refused_with_the_field_and_nothing_runs(changes, field, message):
    context = FakeContext(gateways={GATEWAY: sava()})
    given = parameters()
    given.update(changes)
    given = {key: value for key, value in given.items() if value is not None}
    with pytest.raises(Invalid) as refused:
        Canary(context, given)
    assert refused.value.field == field
    assert message in refused.value.message
    assert context.events == [] and context.states == [] and context.weight_changes == []


def test_parameters_must_be_a_mapping():
    with pytest.raises(Invalid) as refused:
        Canary(FakeContext(), ["gateway", GATEWAY])          # type: ignore[arg-type]
    assert refused.value.field == "/parameters"


def test_defaults_are_those_documented():
    settings = Canary(FakeContext(), {"gateway": GATEWAY, "baseline": BASELINE, "canary": CANARY,
                                      "steps": [50, "100"], "interval": 30}).settings
    assert settings.steps == (50, 100) and settings.interval == 30.0
    assert settings.min_requests == 100 and settings.success_rate == 0.99 and settings.failure_limit == 1
    assert settings.no_data == "wait" and settings.no_data_timeout == 600.0
    assert settings.max_p99_ms is None and settings.confidence is None and settings.checks == ()
    compared = Canary(FakeContext(), {"gateway": GATEWAY, "baseline": BASELINE, "canary": CANARY,
                                      "steps": ["100%"], "interval": "1m", "compare": "baseline"}).settings
    assert compared.confidence == 0.95
