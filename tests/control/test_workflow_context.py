"""What a built-in may do through its context on the platform (control/workflows/platform_context.py): weights
go through the gateway API's merge patch, checked first (whole per cents adding up to 100, routes that exist);
instance counts through the scale path; events carry `workflows:NAME`; the state is a JSON copy handed to the
runner; and the dry context a built-in is validated with refuses every use."""
from __future__ import annotations

from typing import Any

import pytest

from control.dsl.model import Scale
from control.events.model import Event
from control.workflows.context import DryContext
from control.metrics.model import NoMetrics
from control.workflows.platform_context import PlatformContext
from gateway.common.errors import Invalid, NotFound

GATEWAY = {"name": "sava/sava/webport", "routes": {
    "sava/sava/sava:1.0.0/webport": {"weight": "100%"},
    "sava/sava/sava:1.1.0/webport": {"weight": "0%", "condition": "user-agent = Chrome"}}}


class FakeEngine:
    def __init__(self) -> None:
        self.patches: list[tuple[str, dict[str, Any]]] = []
        self.scales: list[tuple[str, str, str, Scale]] = []

    async def get_gateway(self, name: str) -> dict[str, Any]:
        if name != GATEWAY["name"]:
            raise NotFound(f"no gateway named {name!r}")
        return GATEWAY

    async def patch_gateway(self, name: str, patch: dict[str, Any], *, validate_only: bool = False) -> dict:
        self.patches.append((name, patch))
        return GATEWAY

    def scale(self, deployment: str, cluster: str, service: str) -> dict[str, Any]:
        return {"kind": "scales", "cpu": 0.2, "memory": "64MB", "instances": 2}

    async def set_scale(self, deployment: str, cluster: str, service: str, scale: Scale, *,
                        validate_only: bool = False) -> dict:
        self.scales.append((deployment, cluster, service, scale))
        return {}


class Events:
    def __init__(self) -> None:
        self.published: list[tuple[list[str], Any]] = []

    def publish(self, tags, value=None, type="event") -> Event:
        self.published.append((sorted(tags), value))
        return Event(len(self.published), 0.0, type, tuple(sorted(tags)), value)


@pytest.fixture
def context():
    saved: list[dict] = []
    made = PlatformContext("canary", engine=FakeEngine(), metrics=NoMetrics(), events=Events(), clock=None,
                           save_state=saved.append)  # type: ignore[arg-type]
    made.saved = saved      # type: ignore[attr-defined]
    return made


async def test_weights_are_one_merge_patch_of_the_named_routes(context):
    await context.set_weights("sava/sava/webport", {"sava/sava/sava:1.0.0/webport": 95,
                                                    "sava/sava/sava:1.1.0/webport": 5})
    assert context.engine.patches == [("sava/sava/webport", {"routes": {
        "sava/sava/sava:1.0.0/webport": {"weight": "95%"}, "sava/sava/sava:1.1.0/webport": {"weight": "5%"}}})]


async def test_condition_strengths_go_in_the_same_patch_and_need_a_condition(context):
    await context.set_weights("sava/sava/webport", {"sava/sava/sava:1.0.0/webport": 100,
                                                    "sava/sava/sava:1.1.0/webport": 0},
                              condition_strengths={"sava/sava/sava:1.1.0/webport": 0})
    assert context.engine.patches == [("sava/sava/webport", {"routes": {
        "sava/sava/sava:1.0.0/webport": {"weight": "100%"},
        "sava/sava/sava:1.1.0/webport": {"weight": "0%", "condition_strength": "0%"}}})]
    for route, strength in (("sava/sava/sava:1.0.0/webport", 0), ("sava/sava/sava:1.1.0/webport", 101)):
        with pytest.raises(Invalid) as refused:     # no condition to weaken; not a percentage
            await context.set_weights("sava/sava/webport", {"sava/sava/sava:1.0.0/webport": 100},
                                      condition_strengths={route: strength})
        assert refused.value.field == f"/condition_strengths/{route}"
    assert len(context.engine.patches) == 1


@pytest.mark.parametrize("weights, error, field", [
    ({"sava/sava/sava:1.0.0/webport": 90, "sava/sava/sava:1.1.0/webport": 5}, Invalid, "/weights"),
    ({"sava/sava/sava:1.0.0/webport": 99.5, "sava/sava/sava:1.1.0/webport": 0.5}, Invalid,
     "/weights/sava/sava/sava:1.0.0/webport"),
    ({"sava/sava/sava:1.0.0/webport": 101, "sava/sava/sava:1.1.0/webport": -1}, Invalid,
     "/weights/sava/sava/sava:1.0.0/webport"),
    ({}, Invalid, "/weights"),
    ({"sava/sava/sava:1.0.0/webport": 50, "sava/sava/sava:2.0.0/webport": 50}, NotFound, None),
])
async def test_weights_that_do_not_add_up_or_name_no_route_change_nothing(context, weights, error, field):
    with pytest.raises(error) as refused:
        await context.set_weights("sava/sava/webport", weights)
    assert refused.value.field == field
    assert context.engine.patches == []


async def test_an_unknown_gateway_is_not_found(context):
    with pytest.raises(NotFound):
        await context.set_weights("nowhere", {"a": 100})


async def test_instances_are_read_and_set_through_the_scale(context):
    assert context.instances("sava", "sava", "sava:1.0.0") == 2
    await context.set_instances("sava", "sava", "sava:1.0.0", 5)
    assert context.engine.scales == [("sava", "sava", "sava:1.0.0", Scale(cpu=0.2, memory=64_000_000, instances=5))]
    with pytest.raises(Invalid):
        await context.set_instances("sava", "sava", "sava:1.0.0", -1)


def test_events_carry_the_workflow_and_state_is_kept_as_a_json_copy(context):
    context.publish(["canary:step"], {"step": 1})
    assert context.events.published == [(["canary:step", "workflows:canary"], {"step": 1})]
    state = {"phase": "progressing", "weights": {"a": 95}}
    context.set_state(state)
    state["weights"]["a"] = 0
    assert context.saved == [{"phase": "progressing", "weights": {"a": 95}}]
    with pytest.raises(Invalid):
        context.set_state({"when": object()})


async def test_a_dry_context_refuses_every_use():
    dry = DryContext("canary")
    with pytest.raises(RuntimeError, match="being validated"):
        dry.metrics.summary([], 60)
    with pytest.raises(RuntimeError):
        await dry.set_weights("g", {"a": 100})
    with pytest.raises(RuntimeError):
        dry.set_state({})
