"""The local-process orchestrator with real processes on 127.0.0.1: deploy, scale (draining through the
before_stop hook), crash and kill recovery with back-off, health checks, rolling replacement on a new spec, and
no process outliving the platform (close(), and the platform killed with SIGKILL)."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import psutil
import pytest

from control.orchestrator.base import HealthCheck, InstanceEvent, ServiceSpec
from control.orchestrator.local import LocalOrchestrator
from tests.support.waiting import eventually_async

REPO_ROOT = Path(__file__).resolve().parents[2]
SAVA = "sava/sava/sava:1.0.0"
HEALTH = HealthCheck(path="/health", port="webport", interval=0.5, timeout=2, failures=3)
EVENT_TIMEOUT = 15.0
POLL = 0.02

# A server that answers every request with 500: its health check never passes.
FAILING_SERVER = textwrap.dedent("""
    import http.server, os
    class Failing(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()
        def log_message(self, *args):
            pass
    http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Failing).serve_forever()
""")

# The platform in a child process: two demo instances, their pids on stdout once ready, then it waits.
PLATFORM = textwrap.dedent("""
    import asyncio, json, sys, time
    import uvloop
    from control.orchestrator.base import HealthCheck, ServiceSpec
    from control.orchestrator.local import LocalOrchestrator

    async def main():
        driver = LocalOrchestrator(sys.argv[1])
        await driver.deploy(ServiceSpec(
            id="sava/sava/sava:1.0.0", command=("python", "-m", "control.demo.sava", "--version", "1.0.0"),
            ports={"webport": "http"}, instances=2, health_check=HealthCheck(path="/health", interval=0.5)))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            ready = [i for i in driver.instances() if i.state == "ready"]
            if len(ready) == 2:
                print(json.dumps([i.pid for i in ready]), flush=True)
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(60)

    uvloop.run(main())
""")


def sava_spec(version: str = "1.0.0", instances: int = 1, **changes) -> ServiceSpec:
    return ServiceSpec(id=SAVA, command=("python", "-m", "control.demo.sava", "--version", version),
                       ports={"webport": "http"}, instances=instances, health_check=HEALTH, **changes)


async def next_event(queue: asyncio.Queue[InstanceEvent], wanted: Callable[[InstanceEvent], bool],
                     seen: list[InstanceEvent] | None = None, timeout: float = EVENT_TIMEOUT) -> InstanceEvent:
    """The next event that is `wanted`; every event taken from the queue is appended to `seen`."""
    seen = [] if seen is None else seen
    try:
        async with asyncio.timeout(timeout):
            while True:
                event = await queue.get()
                seen.append(event)
                if wanted(event):
                    return event
    except TimeoutError:
        described = [(e.instance.id, e.previous_state, e.instance.state, e.reason) for e in seen]
        raise AssertionError(f"no such event within {timeout}s; seen: {described}") from None


async def wait_until(condition: Callable[[], bool], timeout: float = EVENT_TIMEOUT) -> None:
    await eventually_async(condition, timeout, "the condition met", interval=POLL)


def ready_instances(driver: LocalOrchestrator) -> list:
    return [instance for instance in driver.instances(SAVA) if instance.state == "ready"]


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def get(port: int, path: str = "/") -> tuple[int, dict[str, str], str]:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}{path}") as response:
        return response.status, dict(response.headers), await response.text()


@pytest.fixture
async def make_driver(tmp_path):
    drivers: list[LocalOrchestrator] = []

    def make(**options) -> LocalOrchestrator:
        drivers.append(LocalOrchestrator(tmp_path / "logs", stop_grace=3.0, **options))
        return drivers[-1]
    yield make
    for driver in drivers:
        await driver.close()


async def test_deployed_demo_becomes_ready_and_answers_with_its_version(make_driver, tmp_path):
    driver = make_driver()
    events = driver.subscribe()
    await driver.deploy(sava_spec())
    ready = await next_event(events, lambda e: e.instance.state == "ready")
    instance = ready.instance
    assert (instance.id, instance.service, instance.host, instance.restarts) == (SAVA + "#0", SAVA, "127.0.0.1", 0)
    assert ready.reason == "health check passed" and alive(instance.pid)
    status, headers, body = await get(instance.ports["webport"])
    assert status == 200 and headers["X-Version"] == "1.0.0" and headers["X-Instance"] == instance.id
    assert "sava 1.0.0" in body
    assert driver.instances() == [instance]
    log_text = (tmp_path / "logs" / "sava%2Fsava%2Fsava:1.0.0#0.log").read_text()
    assert f"serving on http://127.0.0.1:{instance.ports['webport']}/" in log_text


async def test_instance_environment_carries_ports_identity_and_spec_environment(make_driver, tmp_path):
    driver = make_driver()
    events = driver.subscribe()
    inherited = sorted(k for k in os.environ if k.startswith(("PORT", "VAMP_")))   # this process's own, passed on
    show_environment = ("import json, os; print(json.dumps({k: v for k, v in os.environ.items() "
                        f"if k.startswith(('PORT', 'VAMP_', 'GREETING')) and k not in {inherited!r}}}))")
    await driver.deploy(ServiceSpec(id="d/c/env:1", command=("python", "-c", show_environment),
                                    ports={"web-ui": "http", "admin": "tcp"}, environment={"GREETING": "hi"}))
    crashed = await next_event(events, lambda e: e.instance.state == "crashed")
    assert crashed.exit_code == 0
    ports = crashed.instance.ports
    printed = (tmp_path / "logs" / "d%2Fc%2Fenv:1#0.log").read_text().splitlines()[1]
    assert json.loads(printed) == {"PORT_WEB_UI": str(ports["web-ui"]), "PORT_ADMIN": str(ports["admin"]),
                                   "PORT": str(ports["web-ui"]), "VAMP_INSTANCE": "d/c/env:1#0",
                                   "VAMP_SERVICE": "d/c/env:1", "GREETING": "hi"}


async def test_scale_up_then_down_drains_through_before_stop_before_sigterm(make_driver):
    drained: list[tuple[str, str, bool]] = []      # (instance, its state, its process alive) at drain time
    release = asyncio.Event()

    async def before_stop(instance) -> None:
        drained.append((instance.id, instance.state, alive(instance.pid)))
        await release.wait()

    driver = make_driver(before_stop=before_stop)
    events = driver.subscribe()
    await driver.deploy(sava_spec())
    await wait_until(lambda: len(ready_instances(driver)) == 1)

    await driver.scale(SAVA, 3)
    await wait_until(lambda: len(ready_instances(driver)) == 3)
    instances = ready_instances(driver)
    assert [i.id for i in instances] == [f"{SAVA}#{n}" for n in range(3)]
    assert len({i.ports["webport"] for i in instances}) == 3
    for instance in instances:
        status, headers, _ = await get(instance.ports["webport"])
        assert status == 200 and headers["X-Instance"] == instance.id

    await driver.scale(SAVA, 1)
    await wait_until(lambda: len(drained) == 2)
    removed = {i.id: i for i in instances[1:]}
    assert sorted(drained) == [(instance_id, "stopping", True) for instance_id in removed]
    for instance in removed.values():             # still serving while the hook drains it
        assert (await get(instance.ports["webport"]))[0] == 200
    release.set()
    stopped = [await next_event(events, lambda e: e.instance.state == "stopped") for _ in range(2)]
    assert sorted(e.instance.id for e in stopped) == sorted(removed)
    assert all(e.exit_code == 0 for e in stopped)       # the demo exits cleanly on SIGTERM
    assert not any(alive(i.pid) for i in removed.values())
    assert [i.id for i in driver.instances()] == [SAVA + "#0"]


async def test_stop_instance_skips_the_hook_and_runs_one_fewer(make_driver):
    hooked: list[str] = []

    async def before_stop(instance) -> None:
        hooked.append(instance.id)

    driver = make_driver(before_stop=before_stop)
    await driver.deploy(sava_spec(instances=2))
    await wait_until(lambda: len(ready_instances(driver)) == 2)
    first = driver.instances()[0]
    await driver.stop_instance(first.id)
    assert not alive(first.pid) and hooked == []
    assert [i.id for i in driver.instances()] == [SAVA + "#1"]

    await driver.undeploy(SAVA)
    await wait_until(lambda: driver.instances() == [])
    assert hooked == [SAVA + "#1"]


async def test_crashing_command_is_restarted_with_growing_back_off(make_driver):
    driver = make_driver()
    events = driver.subscribe()
    await driver.deploy(ServiceSpec(id="d/c/crasher:1", command=("python", "-c", "import sys; sys.exit(3)")))
    seen: list[InstanceEvent] = []
    crashes, starts = [], []
    while len(starts) < 3:
        event = await next_event(events, lambda e: e.instance.state in ("crashed", "starting"), seen)
        (crashes if event.instance.state == "crashed" else starts).append((time.monotonic(), event))
    assert [e.exit_code for _, e in crashes[:2]] == [3, 3]
    assert "exit code 3" in crashes[0][1].reason
    assert [e.instance.restarts for _, e in starts] == [0, 1, 2]
    assert starts[1][1].reason == "restart 1 after exit code 3"
    first_pause = starts[1][0] - crashes[0][0]
    second_pause = starts[2][0] - crashes[1][0]
    assert 0.4 <= first_pause < 0.9 and 0.9 <= second_pause < 1.6


async def test_a_run_to_completion_service_stops_with_its_exit_code_and_is_not_restarted(make_driver):
    driver = make_driver()
    events = driver.subscribe()
    job = ServiceSpec(id="workflows/job", command=("python", "-c", "import sys; sys.exit(4)"), restart=False)
    seen: list[InstanceEvent] = []
    await driver.deploy(job)
    stopped = await next_event(events, lambda e: e.instance.state == "stopped", seen)
    assert (stopped.exit_code, stopped.reason) == (4, "exited with exit code 4")
    states = [e.instance.state for e in seen]
    assert states[0] == "starting" and set(states[1:-1]) <= {"ready"}       # neither crashed nor started again
    assert driver.instances("workflows/job") == []
    await driver.undeploy("workflows/job")
    await driver.deploy(dataclasses.replace(job, command=("no-such-command-anywhere",)))     # cannot even start
    failed = await next_event(events, lambda e: e.instance.state == "stopped")
    assert failed.reason.startswith("could not start:") and failed.exit_code is None
    assert driver.instances("workflows/job") == []


async def test_killed_instance_crashes_restarts_and_is_ready_again(make_driver):
    driver = make_driver()
    events = driver.subscribe()
    await driver.deploy(sava_spec())
    first = (await next_event(events, lambda e: e.instance.state == "ready")).instance
    os.kill(first.pid, signal.SIGKILL)
    crashed = await next_event(events, lambda e: e.instance.state == "crashed")
    assert crashed.exit_code == -signal.SIGKILL and "SIGKILL" in crashed.reason
    assert (crashed.instance.failures, crashed.instance.failure) == (1, crashed.reason)
    restarted = await next_event(events, lambda e: e.instance.state == "starting")
    assert restarted.instance.restarts == 1 and restarted.previous_state == "crashed"
    again = (await next_event(events, lambda e: e.instance.state == "ready")).instance
    assert again.id == first.id and again.pid != first.pid and again.restarts == 1
    assert (again.failures, again.failure) == (0, None)                      # ready again: a clean record
    status, headers, _ = await get(again.ports["webport"])
    assert status == 200 and headers["X-Version"] == "1.0.0"


async def test_failing_health_check_is_never_ready_and_restarted(make_driver):
    driver = make_driver()
    events = driver.subscribe()
    check = HealthCheck(path="/", interval=0.2, timeout=1, failures=2)
    await driver.deploy(ServiceSpec(id="d/c/failing:1", command=("python", "-c", FAILING_SERVER),
                                    ports={"web": "http"}, health_check=check))
    seen: list[InstanceEvent] = []
    first = await next_event(events, lambda e: e.instance.state == "unhealthy", seen)
    assert "status 500" in first.reason
    await next_event(events, lambda e: e.instance.state == "unhealthy" and e.instance.restarts == 1, seen)
    assert "ready" not in [e.instance.state for e in seen]
    assert [e.instance.restarts for e in seen if e.instance.state == "starting"] == [0, 1]


async def test_new_spec_replaces_the_running_instance(make_driver):
    drained: list[str] = []

    async def before_stop(instance) -> None:
        drained.append(instance.id)

    driver = make_driver(before_stop=before_stop)
    events = driver.subscribe()
    await driver.deploy(sava_spec("1.0.0"))
    old = (await next_event(events, lambda e: e.instance.state == "ready")).instance
    await driver.deploy(sava_spec("1.0.1"))
    assert [i.outdated for i in driver.instances(SAVA)] == [True]            # still the old process
    new = (await next_event(events, lambda e: e.instance.state == "ready")).instance
    assert drained == [old.id] and new.id == old.id and not alive(old.pid) and not new.outdated
    assert (await get(new.ports["webport"]))[1]["X-Version"] == "1.0.1"


async def test_failures_in_a_row_are_counted_until_a_new_spec_clears_them(make_driver):
    driver = make_driver()
    events = driver.subscribe()
    await driver.deploy(dataclasses.replace(sava_spec(), command=("python", "-c", "import sys; sys.exit(3)")))
    seen: list[InstanceEvent] = []
    crashes = [await next_event(events, lambda e: e.instance.state == "crashed", seen) for _ in range(2)]
    assert [e.instance.failures for e in crashes] == [1, 2]          # its port never opened: never ready
    assert crashes[1].instance.failure == crashes[1].reason and "exit code 3" in crashes[1].reason
    await driver.deploy(sava_spec("1.0.1"))
    started = await next_event(events, lambda e: e.instance.state == "starting" and not e.instance.outdated, seen)
    assert (started.instance.failures, started.instance.failure) == (0, None)
    ready = (await next_event(events, lambda e: e.instance.state == "ready", seen)).instance
    assert (await get(ready.ports["webport"]))[1]["X-Version"] == "1.0.1"


@pytest.mark.parametrize("spec, fault", [
    (ServiceSpec(id="s", command=()), "command"),
    (ServiceSpec(id="s", command=("x",), instances=-1), "instances"),
    (ServiceSpec(id="s", command=("x",), ports={"web": "udp"}), "port 'web'"),
    (ServiceSpec(id="s", command=("x",), ports={"a-b": "http", "a_b": "http"}), "PORT_A_B"),
    (ServiceSpec(id="s", command=("x",), ports={"web": "http"}, health_check=HealthCheck(port="admin")),
     "health check port 'admin'"),
    (ServiceSpec(id="s", command=("x",), ports={"web": "http"}, health_check=HealthCheck(path="/ x")), "path"),
    (ServiceSpec(id="s", command=("x",), ports={"web": "http"}, health_check=HealthCheck(failures=0)), "failures"),
])
async def test_invalid_specs_are_refused(make_driver, spec, fault):
    driver = make_driver()
    with pytest.raises(ValueError, match=fault):
        await driver.deploy(spec)
    assert driver.instances() == []


async def test_close_leaves_no_process_behind(make_driver):
    driver = make_driver()
    await driver.deploy(sava_spec(instances=2))
    await driver.deploy(ServiceSpec(id="d/c/sleeper:1", command=("python", "-c", "import time; time.sleep(60)")))
    await wait_until(lambda: len(ready_instances(driver)) == 2 and len(driver.instances()) == 3)
    pids = [instance.pid for instance in driver.instances()]
    await driver.close()
    assert not any(alive(pid) for pid in pids)
    assert driver.instances() == []
    with pytest.raises(RuntimeError):
        await driver.deploy(sava_spec())


async def test_platform_killed_with_sigkill_leaves_no_orphans(tmp_path):
    platform = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PLATFORM, str(tmp_path / "logs"), cwd=REPO_ROOT, stdout=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(EVENT_TIMEOUT):
            line = await platform.stdout.readline()
        pids = json.loads(line)
        assert len(pids) == 2 and all(alive(pid) for pid in pids)
        platform.kill()
        await platform.wait()
        await wait_until(lambda: not any(alive(pid) for pid in pids), timeout=10)
    finally:
        if platform.returncode is None:
            platform.kill()
            await platform.wait()
