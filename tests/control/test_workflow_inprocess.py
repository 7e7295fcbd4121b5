"""Workflows on a platform in this process (the API, engine, gateway and local orchestrator of `vamp run`, served
on loopback with a token):

- the example script workflow (examples/workflows/shift-weight.yaml), run by the orchestrator as a process that
  calls the API through the client library (control/client.py) with the token it was given. The metrics it
  judges by come through the real `/api/v1/metrics/…` and `/api/v1/health/…` paths, from figures the test sets
  in place of the aggregation, so each of its verdicts can be brought about: the first step without one,
  waiting on too few requests, a step on a healthy canary, a rollback on an unhealthy one;
- the built-in canary driven through the status API: it sets its first step's weights on the real gateway, and
  a manual `promote` gives the canary 100% and finishes the workflow.
"""
from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestServer

from control.api import create_app
from control.engine import Engine
from control.orchestrator.local import LocalOrchestrator
from control.store import Store
from control.events.log import EventLog
from control.metrics.model import NoMetrics, Scope, Summary
from control.workflows.runner import WorkflowRunner
from gateway import ConfigManager, LocalWorker, Runtime
from tests.support import free_port
from tests.support.waiting import eventually_async

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "workflows" / "shift-weight.yaml"
TOKEN = "example-token"
WAIT = 20.0             # seconds: a deadline; the script runs every second


class ScriptedMeasurements:
    """The aggregation as the metrics API reads it, reporting for every scope the figures the test sets:
    `requests` (None: none) and `health` (the share of non-5xx)."""
    window = 3600

    def __init__(self, figures: dict[str, float | None]) -> None:
        self.figures = figures

    def knows(self, scope: Scope) -> bool:
        return True

    def summary(self, scopes: Sequence[Scope], window: float) -> Summary:
        requests = int(self.figures["requests"] or 0)
        health = self.figures["health"]
        errors = round(requests * (1 - health)) if requests and health is not None else 0
        latency = 10.0 if requests else None
        return Summary(window=window, requests=requests, classes=(0, requests - errors, 0, 0, errors),
                       upstream_errors=0, in_flight=0, mean_ms=latency, p50_ms=latency, p95_ms=latency,
                       p99_ms=latency)


class Platform:
    def __init__(self, session: aiohttp.ClientSession, url: str, figures: dict[str, float | None]) -> None:
        self.session = session
        self.url = url
        self.figures = figures          # what the fake metrics API answers

    async def call(self, method: str, path: str, body: Any = None, **query: Any) -> Any:
        async with self.session.request(method, self.url + "/api/v1" + path, json=body, params=query,
                                        headers={"Authorization": f"Bearer {TOKEN}"}) as response:
            assert response.status < 300, await response.text()
            return await response.json() if response.content_length != 0 else None

    async def weights(self) -> tuple[str, str]:
        routes = (await self.call("GET", "/gateways/demo"))["routes"]
        return routes["demo-1.0"]["weight"], routes["demo-1.1"]["weight"]

    async def events(self, *tags: str) -> list[dict[str, Any]]:
        return await self.call("GET", "/events", tag=list(tags))


@pytest.fixture
async def platform(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)                  # the example's command is relative to the repository
    gateways = ConfigManager([LocalWorker(Runtime(asyncio.get_running_loop()))], None)
    await gateways.start(gateways.desired)
    orchestrator = LocalOrchestrator(tmp_path / "logs", stop_grace=5.0)
    store = Store(tmp_path / "vamp.db")
    engine = Engine(store, orchestrator, gateways)
    await engine.start()
    workflows = WorkflowRunner(store, orchestrator, engine, NoMetrics(), EventLog(store), api_url="",
                               token=TOKEN)
    figures: dict[str, float | None] = {"requests": None, "health": None}
    app = create_app(store, engine, TOKEN, workflows=workflows, metrics=ScriptedMeasurements(figures))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    workflows.api_url = str(server.make_url("")).rstrip("/")
    await workflows.start()
    async with aiohttp.ClientSession() as session:
        yield Platform(session, workflows.api_url, figures)
    await workflows.close()
    await engine.close()
    await orchestrator.close()
    await server.close()
    await gateways.shutdown(0)
    store.close()


def example_documents() -> list[dict[str, Any]]:
    """The example as written, its workflow pointed at the test's gateway, a step of 25% every second."""
    breed, workflow = yaml.safe_load_all(EXAMPLE.read_text())
    workflow["schedule"] = {"time": {"period": "PT1S"}}
    workflow["environment_variables"].update(GATEWAY="demo", BASELINE="demo-1.0", CANARY="demo-1.1", STEP=25,
                                             MIN_REQUESTS=100, MIN_HEALTH=0.99)
    return [breed, workflow]


async def test_the_example_shifts_weight_while_the_canary_is_healthy_and_rolls_back_when_it_is_not(platform):
    await platform.call("PUT", "/gateways/demo", {
        "port": free_port(), "bind": "127.0.0.1",
        "routes": {"demo-1.0": {"weight": "100%", "targets": [f"127.0.0.1:{free_port()}"]},
                   "demo-1.1": {"weight": "0%", "targets": [f"127.0.0.1:{free_port()}"]}}})
    await platform.call("PUT", "", example_documents())

    async def weights_are(expected: tuple[str, str]) -> bool:
        return await platform.weights() == expected

    # from 0% a first step needs no verdict
    await eventually_async(lambda: weights_are(("75%", "25%")), WAIT, "the first step", context=platform.weights)
    [step] = await eventually_async(lambda: platform.events("shift:step", "workflows:sava-shift", "gateways:demo"),
                                    WAIT, "the first step's event")
    assert step["value"] == {"weight": 0.0, "to": 25.0}
    # no data: the step waits, saying so
    waiting = await eventually_async(lambda: platform.events("shift:waiting"), WAIT, "a run that waits")
    assert waiting[0]["value"] == {"weight": 25.0, "requests": 0.0, "health": None, "needs": 100}
    assert await platform.weights() == ("75%", "25%")
    # enough requests, all good: the next step
    platform.figures.update(requests=150, health=1.0)
    await eventually_async(lambda: weights_are(("50%", "50%")), WAIT, "the second step", context=platform.weights)
    # the canary fails: back to 0%, and the workflow suspends itself
    platform.figures.update(health=0.5)
    await eventually_async(lambda: weights_are(("100%", "0%")), WAIT, "the rollback", context=platform.weights)
    [rollback] = await eventually_async(lambda: platform.events("shift:rollback", "workflows:sava-shift"), WAIT,
                                        "the rollback's event")
    assert rollback["value"] == {"weight": 50.0, "requests": 150.0, "health": 0.5}

    async def status() -> str:
        return (await platform.call("GET", "/workflows/sava-shift/status"))["status"]
    await eventually_async(lambda: status_is(status, "suspended"), WAIT, "the workflow suspended", context=status)
    document = await platform.call("GET", "/workflows/sava-shift")
    assert document["status"] == "suspended" and document["breed"] == {"reference": "shift-weight"}


async def status_is(status: Any, expected: str) -> bool:
    return await status() == expected


async def test_the_canary_sets_its_first_step_and_a_manual_promote_through_the_status_api_finishes_it(platform):
    await platform.call("PUT", "/gateways/demo", {
        "port": free_port(), "bind": "127.0.0.1",
        "routes": {"demo-1.0": {"weight": "100%", "targets": [f"127.0.0.1:{free_port()}"]},
                   "demo-1.1": {"weight": "0%", "targets": [f"127.0.0.1:{free_port()}"]}}})
    await platform.call("PUT", "/workflows/release", {
        "schedule": "daemon", "workflow": "canary",
        "parameters": {"gateway": "demo", "baseline": "demo-1.0", "canary": "demo-1.1", "steps": ["10%", "100%"],
                       "interval": "1h", "min_requests": 100, "success_rate": "99%"}})

    async def weights_are(expected: tuple[str, str]) -> bool:
        return await platform.weights() == expected

    await eventually_async(lambda: weights_are(("90%", "10%")), WAIT, "the first step", context=platform.weights)
    answer = await platform.call("PUT", "/workflows/release/status", "promote")
    assert answer["status"] == "running"
    await eventually_async(lambda: weights_are(("0%", "100%")), WAIT, "promoted", context=platform.weights)

    async def document() -> dict[str, Any]:
        return await platform.call("GET", "/workflows/release")
    finished = await eventually_async(lambda: status_of(document, "finished"), WAIT, "finished", context=document)
    assert finished["state"]["phase"] == "promoted"
    [event] = await platform.events("canary:promote", "workflows:release")
    assert event["value"]["manual"] is True


async def status_of(document: Any, expected: str) -> dict[str, Any] | None:
    found = await document()
    return found if found["status"] == expected else None
