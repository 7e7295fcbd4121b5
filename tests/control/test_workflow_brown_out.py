"""The built-in brown-out (`workflow: brown-out`, docs/canary.md) on a virtual clock with scripted traffic: a breach
that lasts a period moves a share of the route's weight to the lighter route, a recovery that lasts a period gives
it back; a short breach or no data moves nothing; other routes keep their weights; bad parameters are refused."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

from control.workflows.builtins.brown_out import BrownOut
from gateway.common.errors import Invalid
from tests.support.workflow_context import FakeContext, ScriptedMetrics, Traffic, document

GATEWAY = "sava/9050"
HEAVY = "sava/sava/webport"
LITE = "sava/lite/webport"


def parameters(**changes: Any) -> dict[str, Any]:
    given = {"gateway": GATEWAY, "route": HEAVY, "to": LITE, "max_error_rate": "5%", "period": "1m",
             "interval": "10s", "share": "50%"}
    given.update(changes)
    return {key: value for key, value in given.items() if value is not None}


def gateway(**weights: str) -> dict:
    routes = {HEAVY: {"weight": weights.get("heavy", "100%")}, LITE: {"weight": weights.get("lite", "0%")}}
    if "other" in weights:
        routes["other"] = {"weight": weights["other"]}
    return document(routes, name=GATEWAY)


def between(start: float, end: float, inside: float, outside: float = 0.0) -> Any:
    return lambda t: inside if start <= t < end else outside


async def watch(context: FakeContext, given: dict[str, Any], until: float) -> asyncio.Task:
    task = asyncio.create_task(BrownOut(context, given).run())
    await context.run_until(task, context.start + until)
    return task


async def stop(task: asyncio.Task) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_lasting_breach_moves_a_share_and_a_lasting_recovery_gives_it_back():
    context = FakeContext(gateways={GATEWAY: gateway()})
    t0 = context.start
    Traffic(context, GATEWAY, rate=lambda t: 100.0, error_share={HEAVY: between(t0 + 100, t0 + 400, 0.2)})
    task = await watch(context, parameters(), until=600)

    moved, back = context.weight_changes
    assert moved == (t0 + 160, GATEWAY, {HEAVY: 50, LITE: 50})       # a minute after the breach began
    assert back == (t0 + 460, GATEWAY, {HEAVY: 100, LITE: 0})        # a minute after it ended
    move, = context.tagged("brown-out:move")
    assert move.value["share"] == "50%" and move.value["measured"]["error_rate"] == 0.2
    assert set(move.tags) >= {"brown-out:move", f"gateways:{GATEWAY}", "workflows:release"}
    restore, = context.tagged("brown-out:restore")
    assert restore.value["weights"] == {HEAVY: "100%", LITE: "0%"}
    assert context.state["phase"] == "normal" and context.state["moved"] == 0
    browned = [state for state in context.states if state["phase"] == "browned_out"]
    assert browned and browned[0]["moved"] == 50 and browned[0]["weights"] == {HEAVY: "50%", LITE: "50%"}
    await stop(task)


async def test_a_breach_shorter_than_the_period_moves_nothing():
    context = FakeContext(gateways={GATEWAY: gateway()})
    t0 = context.start
    Traffic(context, GATEWAY, rate=lambda t: 100.0, error_share={HEAVY: between(t0 + 100, t0 + 140, 0.2)})
    task = await watch(context, parameters(), until=600)
    assert context.weight_changes == [] and not context.tagged("brown-out:move")
    assert any("error rate 20.00% above 5.00% for 40s of 1m" in (state["reason"] or "") for state in context.states)
    await stop(task)


async def test_slow_responses_breach_too():
    context = FakeContext(gateways={GATEWAY: gateway()})
    t0 = context.start
    Traffic(context, GATEWAY, rate=lambda t: 100.0, p99_ms={HEAVY: between(t0 + 100, t0 + 10_000, 2000.0, 100.0)})
    task = await watch(context, parameters(max_error_rate=None, max_response_time="800ms", response_time="p99"),
                       until=300)
    assert context.weight_changes == [(t0 + 160, GATEWAY, {HEAVY: 50, LITE: 50})]
    assert context.tagged("brown-out:move")[0].value["measured"]["p99_ms"] == 2000.0
    await stop(task)


async def test_no_data_moves_nothing_and_gives_nothing_back():
    context = FakeContext(gateways={GATEWAY: gateway()})
    # 20% errors, but only a request every 2 s: fewer than min_requests (10) per 10 s check
    Traffic(context, GATEWAY, rate=lambda t: 0.5, error_share={HEAVY: lambda t: 0.2})
    task = await watch(context, parameters(), until=900)
    assert context.weight_changes == []
    assert context.state["measured"]["verdict"] == "no_data" and "fewer than min_requests 10" in context.state["reason"]
    await stop(task)


async def test_other_routes_keep_their_weights():
    context = FakeContext(gateways={GATEWAY: gateway(heavy="60%", lite="0%", other="40%")})
    Traffic(context, GATEWAY, rate=lambda t: 100.0, error_share={HEAVY: lambda t: 0.5})
    task = await watch(context, parameters(share="25%"), until=120)
    assert context.weight_changes[0][2] == {HEAVY: 45, LITE: 15, "other": 40}
    assert context.documents[GATEWAY]["routes"]["other"]["weight"] == "40%"
    await stop(task)


async def test_routes_may_be_named_by_their_service_on_a_cluster_gateway():
    cluster_gateway = "sava/sava/webport"
    full, lite = "sava/sava/sava:1.0.0/webport", "sava/sava/sava:lite/webport"
    context = FakeContext(gateways={cluster_gateway: document({full: {"weight": "100%"}, lite: {"weight": "0%"}},
                                                              name=cluster_gateway)})
    Traffic(context, cluster_gateway, rate=lambda t: 100.0, error_share={full: lambda t: 0.5})
    task = await watch(context, parameters(gateway=cluster_gateway, route="sava:1.0.0", to="sava:lite"), until=120)
    assert context.weight_changes[0][2] == {full: 50, lite: 50}
    await stop(task)


async def test_a_cluster_may_be_measured_instead_of_the_route():
    context = FakeContext(gateways={GATEWAY: gateway()})
    ScriptedMetrics(context, {HEAVY: lambda t: (1000, 100, 50.0)})         # the cluster port's gateway
    task = await watch(context, parameters(cluster=HEAVY), until=120)
    assert context.weight_changes[0][2] == {HEAVY: 50, LITE: 50}
    await stop(task)


async def test_a_restored_brown_out_still_gives_the_share_back():
    context = FakeContext(gateways={GATEWAY: gateway(heavy="70%", lite="30%")})
    Traffic(context, GATEWAY, rate=lambda t: 100.0)
    restored = {"phase": "browned_out", "moved": 30, "weights": {HEAVY: "70%", LITE: "30%"}}
    task = asyncio.create_task(BrownOut(context, parameters(), restored).run())
    await context.run_until(task, context.start + 120)
    assert context.weight_changes == [(context.start + 60, GATEWAY, {HEAVY: 100, LITE: 0})]
    await stop(task)


INVALID = [
    ({"max_error_rate": None}, "/parameters", "needs a threshold"),
    ({"share": "100%"}, "/parameters/share", "less than 100%"),
    ({"share": "0%"}, "/parameters/share", "more than 0%"),
    ({"share": None}, "/parameters/share", "share is required"),
    ({"to": HEAVY}, "/parameters/to", "another route"),
    ({"period": None}, "/parameters/period", "period is required"),
    ({"interval": "2m"}, "/parameters/interval", "at most the period"),
    ({"response_time": "p90"}, "/parameters/response_time", "mean, p50, p95, p99"),
    ({"max_response_time": "slow"}, "/parameters/max_response_time", "duration"),
    ({"max_error_rate": "500%"}, "/parameters/max_error_rate", "0% to 100%"),
    ({"min_requests": 0}, "/parameters/min_requests", "at least 1"),
    ({"threshold": 1}, "/parameters/threshold", "unknown field"),
]


@pytest.mark.parametrize("changes, field, message", INVALID, ids=[case[1] + " " + case[2] for case in INVALID])
def test_bad_parameters_are_refused_with_the_field(changes, field, message):
    with pytest.raises(Invalid) as refused:
        BrownOut(FakeContext(), parameters(**changes))
    assert refused.value.field == field and message in refused.value.message
