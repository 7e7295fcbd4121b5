"""What the deployment engine asks of any orchestrator driver and does with its answers, shown with a driver
scripted in memory (`ScriptedDriver`): it refuses what the driver cannot run (400 naming the cluster, nothing
changed), hands the driver the whole spec (image, port numbers, arguments, cpu, memory), routes to each
instance at its own host (a pod's IP, not loopback), resolves a dependency to the address the driver gives,
and turns a driver's service-wide problem into an event and the service's state."""
from __future__ import annotations

import asyncio

import pytest

from control import dsl
from control.engine import Engine
from control.events.model import EventFilter
from control.orchestrator.base import Instance, InstanceEvent, ServiceEvent, ServiceSpec
from control.store import Store
from gateway.common.errors import Invalid
from gateway.runtime.manager import ConfigManager
from gateway.runtime.runtime import Runtime
from gateway.runtime.workers import LocalWorker
from tests.support.waiting import eventually_async


class ScriptedDriver:
    """An orchestrator whose instances and problems the test sets: it runs container images only."""

    def __init__(self) -> None:
        self.specs: dict[str, ServiceSpec] = {}
        self.running: dict[str, list[Instance]] = {}
        self.problems: dict[str, str] = {}
        self.queues: list[asyncio.Queue] = []

    def check(self, spec: ServiceSpec) -> None:
        if spec.image is None:
            raise ValueError(f"service {spec.id!r}: this driver runs container images only")

    def service_host(self, service_id: str) -> str | None:
        return f"{service_id.replace('/', '-')}.svc"

    def problem(self, service_id: str) -> str | None:
        return self.problems.get(service_id)

    async def deploy(self, spec: ServiceSpec) -> None:
        self.check(spec)
        self.specs[spec.id] = spec

    async def scale(self, service_id: str, instances: int) -> None:
        pass

    async def undeploy(self, service_id: str) -> None:
        self.specs.pop(service_id, None)

    async def stop_instance(self, instance_id: str) -> None:
        pass

    def instances(self, service_id: str | None = None) -> list[Instance]:
        return sorted((i for sid, found in self.running.items() if service_id in (None, sid) for i in found),
                      key=lambda i: i.id)

    def subscribe(self) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue()
        self.queues.append(queue)
        return queue

    async def close(self) -> None:
        pass

    # -- what the test does -----------------------------------------------------------------------------
    def run(self, service_id: str, host: str, port: int) -> None:
        instance = Instance(id=f"{service_id}#pod-{host}", service=service_id, host=host, ports={"webport": port},
                            state="ready", pid=None, restarts=0, started_at=0.0)
        self.running.setdefault(service_id, []).append(instance)
        self.emit(InstanceEvent(instance, None, "endpoint ready"))

    def emit(self, event: InstanceEvent | ServiceEvent) -> None:
        if isinstance(event, ServiceEvent):
            if event.problem is None:
                self.problems.pop(event.service, None)
            else:
                self.problems[event.service] = event.problem
        for queue in self.queues:
            queue.put_nowait(event)


BLUEPRINT = """
kind: blueprints
name: shop
gateways:
  9999: web/webport
clusters:
  db:
    breed:
      name: db:1
      deployable: docker://postgres:16
      ports:
        pg: 5432/tcp
  web:
    breed:
      name: web:1.0.0
      deployable: magneticio/sava:1.0.0
      ports:
        webport: 8080/http
      arguments:
        - log-level: debug
      environment_variables:
        DB_HOST: $db.host
        DB_PORT: $db.ports.pg
      dependencies:
        db: db:1
    scale:
      cpu: 0.5
      memory: 128MB
      instances: 2
"""


@pytest.fixture
async def engine(tmp_path):
    loop = asyncio.get_running_loop()
    gateways = ConfigManager([LocalWorker(Runtime(loop))], None)
    await gateways.start(gateways.desired)
    driver = ScriptedDriver()
    engine = Engine(Store(tmp_path / "vamp.db"), driver, gateways, bind="127.0.0.1")
    await engine.start()
    yield engine, driver
    await engine.close()
    await gateways.shutdown(0.5)


def blueprint(text: str) -> dsl.model.Blueprint:
    return dsl.read_text(text.replace("9999", str(_free_port())))[0]


def _free_port() -> int:
    from tests.support import free_port
    return free_port()


async def test_a_deployable_the_driver_cannot_run_is_refused_whole_naming_the_cluster(engine):
    engine, driver = engine
    text = BLUEPRINT.replace("deployable: magneticio/sava:1.0.0",
                             "deployable: cmd://python -m control.demo.sava --version 1.0.0")
    with pytest.raises(Invalid) as refused:
        await engine.deploy("shop", blueprint(text))
    assert "runs container images only" in refused.value.message
    assert refused.value.field == "clusters.web"
    assert engine.deployments() == [] and driver.specs == {}


async def test_the_driver_gets_the_whole_spec_and_dependencies_resolve_to_the_address_it_gives(engine):
    engine, driver = engine
    await engine.deploy("shop", blueprint(BLUEPRINT))
    web = driver.specs["shop/web/web:1.0.0"]
    assert web.image == "magneticio/sava:1.0.0" and web.command == ()
    assert web.port_numbers == {"webport": 8080} and web.ports == {"webport": "http"}
    assert web.arguments == {"log-level": "debug"}
    assert web.cpu == 0.5 and web.memory == 128 * 1000**2 and web.instances == 2
    assert web.environment["DB_HOST"] == "shop-db-db:1.svc"
    assert web.environment["DB_PORT"] == "5432"


async def test_instances_are_routed_at_their_own_hosts(engine):
    engine, driver = engine
    await engine.deploy("shop", blueprint(BLUEPRINT))
    driver.run("shop/web/web:1.0.0", "10.1.0.7", 8080)
    driver.run("shop/web/web:1.0.0", "10.1.0.9", 8080)

    async def deployed() -> bool:
        return engine.deployment("shop")["clusters"]["web"]["services"][0]["state"] == "deployed"
    await eventually_async(deployed, 5, "both pods ready and routed")
    route = engine.gateway("shop/web/webport")["routes"]["shop/web/web:1.0.0/webport"]
    assert sorted(route["targets"]) == ["10.1.0.7:8080", "10.1.0.9:8080"]
    service = engine.deployment("shop")["clusters"]["web"]["services"][0]
    assert {i["host"] for i in service["instances"]} == {"10.1.0.7", "10.1.0.9"}


async def test_a_service_problem_becomes_an_event_and_the_service_state_until_it_is_over(engine):
    engine, driver = engine
    await engine.deploy("shop", blueprint(BLUEPRINT))
    problem = ('403 Forbidden: deployments.apps is forbidden: User "system:serviceaccount:vamp:vamp" cannot create '
               'resource "deployments"')
    driver.emit(ServiceEvent("shop/web/web:1.0.0", problem, "the API refused to create Deployment shop-web-web-1-0-0"))

    async def told() -> bool:
        return bool(engine.events.query(EventFilter(tags=("orchestrator:problem",))))
    await eventually_async(told, 5, "an orchestrator:problem event")
    event = engine.events.query(EventFilter(tags=("orchestrator:problem",)))[-1]
    assert {"deployments:shop", "clusters:web", "services:web:1.0.0"} <= set(event.tags)
    assert event.value["problem"] == problem
    service = engine.deployment("shop")["clusters"]["web"]["services"][0]
    assert (service["state"], service["reason"]) == ("failed", problem)

    driver.emit(ServiceEvent("shop/web/web:1.0.0", None, "created Deployment shop-web-web-1-0-0"))

    async def resolved() -> bool:
        return bool(engine.events.query(EventFilter(tags=("orchestrator:resolved",))))
    await eventually_async(resolved, 5, "an orchestrator:resolved event")
    assert engine.deployment("shop")["clusters"]["web"]["services"][0]["state"] == "deploying"
