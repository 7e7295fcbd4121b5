"""SLAs through the real engine, gateway and local orchestrator: a response-time SLA scales sava up to its
maximum and back down to its minimum (the leaving instances drained, no request failing), fed by fake metrics
on a virtual clock; and a blueprint's environment variables make the demo misbehave."""
from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from control import dsl
from control.engine import Engine
from control.orchestrator.base import Instance
from control.orchestrator.local import LocalOrchestrator
from control.sla.monitor import SlaMonitor
from control.store import Store
from gateway.runtime.manager import ConfigManager
from gateway.runtime.runtime import Runtime
from gateway.runtime.workers import LocalWorker
from tests.support import free_port
from tests.support.load import BackgroundTraffic
from tests.support.control_fakes import FakeClock, FakeEventLog, FakeMetrics
from tests.support.waiting import eventually_async

INTERVAL, COOLDOWN = 10, 20
SERVICE = "sava/sava/sava:1.0.0"


def blueprint(port: int, *, sla: str = "", environment: str = "") -> dsl.model.Blueprint:
    return dsl.read_text(f"""
kind: blueprints
name: sava
gateways:
  {port}: sava/webport
clusters:
  sava:
    services:
      breed:
        name: sava:1.0.0
        deployable: cmd://python -m control.demo.sava --version 1.0.0
        ports: {{webport: 8080/http}}
      scale: {{cpu: 0.2, memory: 64MB, instances: 1}}
      health_checks: {{path: /health, port: webport, interval: 1s, timeout: 1s, failures: 3}}
      {environment}
    {sla}
""")[0]


SLA = f"""sla:
      type: response_time_sliding_window
      threshold: {{upper: 100, lower: 10}}
      window: {{interval: {INTERVAL}s, cooldown: {COOLDOWN}s}}
      escalations:
        - type: scale_instances
          minimum: 1
          maximum: 3
          scale_by: 1"""


class Platform:
    def __init__(self, engine: Engine, orchestrator: LocalOrchestrator) -> None:
        self.engine = engine
        self.orchestrator = orchestrator
        self.drained: list[str] = []            # instances whose drain through the gateway had finished

    def ready(self) -> list[Instance]:
        return [i for i in self.orchestrator.instances(SERVICE) if i.state == "ready"]

    def targets(self) -> list[str]:
        gateway = self.engine.gateway("sava/sava/webport")
        return gateway["routes"]["sava/sava/sava:1.0.0/webport"]["targets"] if gateway else []

    def scale(self) -> int:
        return self.engine.scale("sava", "sava", "sava:1.0.0")["instances"]

    async def settled(self, instances: int) -> None:
        def done() -> bool:
            return (self.engine.changing("sava") is None and len(self.ready()) == instances
                    and len(self.orchestrator.instances(SERVICE)) == instances and len(self.targets()) == instances)
        await eventually_async(done, 30, f"sava settled at {instances} instances", interval=0.05,
                               context=lambda: (self.engine.changing("sava"), self.orchestrator.instances(SERVICE)))


@pytest.fixture
async def platform(tmp_path):
    loop = asyncio.get_running_loop()
    gateways = ConfigManager([LocalWorker(Runtime(loop))], None)
    await gateways.start(gateways.desired)
    holder: dict = {}

    async def before_stop(instance: Instance) -> None:
        await holder["platform"].engine.drain_instance(instance)
        holder["platform"].drained.append(instance.id)

    orchestrator = LocalOrchestrator(tmp_path / "logs", before_stop=before_stop, stop_grace=5.0)
    engine = Engine(Store(tmp_path / "vamp.db"), orchestrator, gateways)
    holder["platform"] = Platform(engine, orchestrator)
    await engine.start()
    yield holder["platform"]
    await engine.close()
    await orchestrator.close()
    await gateways.shutdown(1.0)


@pytest.mark.timeout(120)
async def test_a_response_time_sla_scales_up_to_the_maximum_and_back_down_with_drain(platform):
    port = free_port()
    clock, metrics = FakeClock(), FakeMetrics()
    events = FakeEventLog(clock)
    monitor = SlaMonitor(platform.engine, metrics, events, clock)
    metrics.set("sava/sava/webport", requests=1000, mean_ms=400)              # slow
    await platform.engine.deploy("sava", blueprint(port, sla=SLA))
    assert platform.engine.changing("sava") is not None
    await monitor.check()                           # still deploying: not measured
    assert platform.scale() == 1 and events.events == []
    await platform.settled(1)
    clock.advance(INTERVAL)                         # a whole window after the deployment settled

    traffic = BackgroundTraffic(f"http://127.0.0.1:{port}/")
    load = asyncio.get_running_loop().create_task(traffic.run(time.monotonic() + 100))
    try:
        for expected in (2, 3):
            await monitor.check()
            assert platform.scale() == expected
            assert platform.engine.changing("sava") is not None     # an instance to start
            await monitor.check()                   # changing, and cooling down: nothing more
            assert platform.scale() == expected
            await platform.settled(expected)
            clock.advance(INTERVAL + COOLDOWN)
        await monitor.check()                       # at the maximum
        assert platform.scale() == 3
        assert [e.value["scaled"] for e in events.tagged("sla:escalate")][-1] == []
        clock.advance(INTERVAL + COOLDOWN)

        metrics.set("sava/sava/webport", requests=1000, mean_ms=2)            # fast
        for expected in (2, 1):
            leaving = {i.id for i in platform.ready()}
            await monitor.check()
            assert platform.scale() == expected
            assert platform.engine.changing("sava") is not None     # an instance to drain and stop
            await platform.settled(expected)
            leaving -= {i.id for i in platform.ready()}
            assert len(leaving) == 1 and leaving <= set(platform.drained)     # went through the gateway's drain
            clock.advance(INTERVAL + COOLDOWN)
        await monitor.check()                       # at the minimum: quiet
        assert platform.scale() == 1
        await platform.settled(1)
    finally:
        traffic.stop.set()
        await load
    assert [e.value["scaled"][0]["to"] for e in events.tagged("sla:deescalate")] == [2, 1]
    assert [e.value["scaled"][0]["to"] for e in events.tagged("sla:escalate") if e.value["scaled"]] == [2, 3]
    assert len(platform.drained) == 2
    assert traffic.answered > 0
    assert traffic.failures == []


@pytest.mark.timeout(60)
async def test_a_blueprint_makes_the_demo_misbehave_through_its_environment_variables(platform):
    port = free_port()
    await platform.engine.deploy("sava", blueprint(port, environment="environment_variables: "
                                                                     "{SAVA_ERROR_RATE: '1', SAVA_DELAY_MS: 300}"))
    await platform.settled(1)                       # its health check passes: the instance is ready and routed
    async with aiohttp.ClientSession() as session:
        started = time.monotonic()
        async with session.get(f"http://127.0.0.1:{port}/") as response:
            assert response.status == 500
            assert response.headers["X-Version"] == "1.0.0"
            assert "SAVA_ERROR_RATE" in await response.text()
        assert time.monotonic() - started >= 0.3

