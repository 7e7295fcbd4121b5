"""The workflow runner over a real store and the real local orchestrator, with a virtual clock for built-ins and
schedules: time schedules (start, period, repeat, missed ticks), event schedules (one run per matching event),
daemons (a built-in that finishes, one that fails and is run again from its state, a script restarted when it
exits), suspend, resume and restart, manual actions, state kept across a restart of the platform, replaced and
deleted workflows, and what a script gets in its environment."""
from __future__ import annotations

import asyncio
import datetime
import json
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

from control import dsl
from control.events.model import EventFilter
from control.orchestrator.local import LocalOrchestrator
from control.store import Store
from control.workflows.builtins import BUILTINS
from control.workflows.context import BuiltinWorkflow
from control.events.log import EventLog
from control.metrics.model import NoMetrics
from control.workflows.runner import RUNTIME_KIND, WorkflowRunner
from gateway.common.errors import Conflict, Invalid, NotFound
from tests.support.clock import VirtualClock
from tests.support.waiting import eventually_async

TOKEN = "s3cret-token"
API_URL = "http://127.0.0.1:1"
WAIT = 15.0             # seconds: a deadline, never a pause


# -- built-ins for the tests ---------------------------------------------------------------------------------
class Counter(BuiltinWorkflow):
    """One count per run, kept in its state and published."""

    async def run(self) -> None:
        count = (self.restored or {}).get("count", 0) + 1
        self.context.set_state({"count": count})
        self.context.publish(["counted"], count)


class Keeper(BuiltinWorkflow):
    """A daemon that keeps a step: `next` moves it on, `finish` ends the run."""

    def __init__(self, context: Any, parameters: Any, restored: Any = None) -> None:
        super().__init__(context, parameters, restored)
        self.step = (restored or {}).get("step", 0)
        self.done = asyncio.Event()

    async def run(self) -> None:
        self.context.set_state({"step": self.step})
        await self.done.wait()

    def command(self, action: str) -> None:
        if action == "next":
            self.step += 1
            self.context.set_state({"step": self.step})
        elif action == "finish":
            self.done.set()
        else:
            super().command(action)


class Flaky(BuiltinWorkflow):
    """Fails its first two runs, then finishes; counts its attempts in its state."""

    async def run(self) -> None:
        attempts = (self.restored or {}).get("attempts", 0) + 1
        self.context.set_state({"attempts": attempts})
        if attempts < 3:
            raise RuntimeError(f"attempt {attempts} failed")


class Harness:
    """A runner as the platform has it, its parts within reach; `restart()` is the platform stopping and
    starting again on the same store."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.store = Store(tmp_path / "vamp.db")
        self.clock = VirtualClock()
        self.events = EventLog(self.store)
        self.orchestrator = LocalOrchestrator(tmp_path / "logs", stop_grace=5.0)
        self.runner = self._runner()

    def _runner(self) -> WorkflowRunner:
        return WorkflowRunner(self.store, self.orchestrator, engine=None, metrics=NoMetrics(),  # type: ignore[arg-type]
                              events=self.events, api_url=API_URL, token=TOKEN, clock=self.clock)

    def put(self, document: dict[str, Any]) -> None:
        """Store a workflow as the API does, and tell the runner."""
        stored = dsl.to_dict(dsl.read("workflows", document))
        self.store.put("workflows", stored["name"], stored)
        self.runner.changed(stored["name"])

    def delete(self, name: str) -> None:
        self.store.delete("workflows", name)
        self.runner.changed(name)

    def state(self, name: str) -> Any:
        return self.runner.shown(self.store.get("workflows", name))["state"]

    async def until(self, name: str, status: str, **extra: Any) -> dict[str, Any]:
        """Wait until the workflow's status is `status` (and its status document has `extra`)."""
        def reached() -> dict[str, Any] | None:
            document = self.runner.status(name)
            return document if document["status"] == status and all(
                document.get(key) == value for key, value in extra.items()) else None
        return await eventually_async(reached, WAIT, f"workflow {name} {status} {extra or ''}",
                                      context=lambda: self.runner.status(name))

    async def until_state(self, name: str, state: Any) -> None:
        await eventually_async(lambda: self.state(name) == state, WAIT, f"workflow {name}'s state {state}",
                               context=lambda: self.state(name))

    async def until_asleep(self) -> None:
        """Wait until every workflow waits on the clock (or on nothing that the clock could change)."""
        await eventually_async(lambda: self.clock.sleepers >= 1, WAIT, "a workflow waiting on the clock")

    async def restart(self) -> None:
        await self.runner.close()
        self.runner = self._runner()
        await self.runner.start()

    async def close(self) -> None:
        await self.runner.close()
        await self.orchestrator.close()
        self.store.close()


@pytest.fixture
async def harness(tmp_path, monkeypatch):
    for name, kind in (("counter", Counter), ("keeper", Keeper), ("flaky", Flaky)):
        monkeypatch.setitem(BUILTINS, name, kind)
    started = Harness(tmp_path)
    await started.runner.start()
    yield started
    await started.close()


def workflow(name: str, builtin: str, schedule: Any, **parameters: Any) -> dict[str, Any]:
    return {"name": name, "workflow": builtin, "schedule": schedule, "parameters": parameters}


# -- time schedules ------------------------------------------------------------------------------------------
async def test_a_time_schedule_runs_at_once_then_every_period_until_it_has_run_repeat_times(harness):
    harness.put(workflow("hourly", "counter", {"time": {"period": "PT1H", "repeat": 3}}))
    await harness.until_state("hourly", {"count": 1})
    await harness.until_asleep()
    harness.clock.advance(1800)                  # half a period: no run
    await harness.until_asleep()
    assert (harness.runner.status("hourly")["runs"], harness.state("hourly")) == (1, {"count": 1})
    harness.clock.advance(1800)
    await harness.until_state("hourly", {"count": 2})
    await harness.until_asleep()
    harness.clock.advance(3600)
    await harness.until("hourly", "finished", runs=3)
    assert harness.state("hourly") == {"count": 3}


async def test_a_time_schedule_with_a_past_start_waits_for_its_next_tick(harness):
    start = harness.clock.now() - 5400           # 1.5 periods ago: the next tick is in half an hour
    moment = datetime.datetime.fromtimestamp(start, datetime.UTC).isoformat()
    harness.put(workflow("aligned", "counter", {"time": {"period": "PT1H", "start": moment}}))
    await harness.until_asleep()
    harness.clock.advance(1799)
    await harness.until_asleep()
    assert harness.runner.status("aligned")["runs"] == 0
    harness.clock.advance(1)
    await harness.until_state("aligned", {"count": 1})


async def test_ticks_that_pass_while_a_workflow_is_suspended_are_skipped(harness):
    harness.put(workflow("hourly", "counter", {"time": "PT1H"}))
    await harness.until_state("hourly", {"count": 1})
    harness.runner.request("hourly", "suspended")
    await harness.until("hourly", "suspended")
    harness.clock.advance(5 * 3600)
    harness.runner.request("hourly", "running")  # `start: now` anchors at the resume: one run, not five
    await harness.until_state("hourly", {"count": 2})
    await harness.until_asleep()
    assert harness.runner.status("hourly")["runs"] == 2


# -- event schedules -----------------------------------------------------------------------------------------
async def test_an_event_schedule_runs_once_per_event_carrying_all_its_tags(harness):
    harness.put(workflow("on-deploy", "counter", {"event": {"tags": ["deployments", "synchronization:deployed"]}}))
    await harness.until("on-deploy", "running")                            # from now on, events count
    harness.events.publish(["deployments:sava"])                                   # one tag only: no run
    first = harness.events.publish(["deployments:sava", "synchronization:deployed"])
    await harness.until("on-deploy", "running", runs=1)
    assert harness.runner.status("on-deploy")["last_run"]["event"] == first.id
    harness.events.publish(["synchronization:deployed", "deployments:other", "clusters:x"])
    await harness.until_state("on-deploy", {"count": 2})
    counted = harness.events.query(EventFilter(tags=("counted", "workflows:on-deploy")))
    assert sorted(event.value for event in counted) == [1, 2]


# -- daemons ---------------------------------------------------------------------------------------------------
async def test_a_daemon_built_in_that_fails_runs_again_after_a_back_off_from_its_state(harness):
    harness.put(workflow("flaky", "flaky", "daemon"))
    await harness.until_state("flaky", {"attempts": 1})
    status = harness.runner.status("flaky")
    assert status["status"] == "running" and "attempt 1 failed" in status["reason"]
    assert status["last_run"]["outcome"] == "failed: RuntimeError: attempt 1 failed"
    await harness.until_asleep()
    harness.clock.advance(0.5)                   # the first back-off
    await harness.until_state("flaky", {"attempts": 2})
    await harness.until_asleep()
    harness.clock.advance(0.5)                   # the back-off doubled: not yet
    await harness.until_asleep()
    assert harness.state("flaky") == {"attempts": 2}
    harness.clock.advance(0.5)
    await harness.until("flaky", "finished", runs=3, reason=None)          # the failures are history


# -- status, actions and state -------------------------------------------------------------------------------
async def test_suspend_resume_and_restart(harness):
    harness.put(workflow("keep", "keeper", "daemon"))
    await harness.until_state("keep", {"step": 0})
    harness.runner.command("keep", "next")
    assert harness.state("keep") == {"step": 1}

    answer = harness.runner.request("keep", "suspended")
    assert answer["status"] in ("stopping", "suspended")
    await harness.until("keep", "suspended")
    with pytest.raises(Conflict):                # no run to take it
        harness.runner.command("keep", "next")

    harness.runner.request("keep", "running")    # resumed from its state
    await harness.until("keep", "running", runs=2)        # a run in progress from the moment it counts
    harness.runner.command("keep", "next")
    assert harness.state("keep") == {"step": 2}

    harness.runner.request("keep", "restarting")  # started over: state and runs cleared
    await harness.until("keep", "running", runs=1)
    await harness.until_state("keep", {"step": 0})


async def test_actions_go_to_the_built_in_and_are_refused_when_they_cannot(harness):
    harness.put(workflow("keep", "keeper", "daemon"))
    await harness.until_state("keep", {"step": 0})
    with pytest.raises(Invalid) as refused:
        harness.runner.command("keep", "promote")
    assert "takes no action 'promote'" in refused.value.message
    harness.runner.command("keep", "next", validate_only=True)
    assert harness.state("keep") == {"step": 0}
    harness.runner.command("keep", "finish")
    await harness.until("keep", "finished")
    with pytest.raises(NotFound):
        harness.runner.command("nothing", "next")
    with pytest.raises(Invalid):
        harness.runner.request("keep", "paused")


async def test_state_and_suspension_survive_a_restart_of_the_platform(harness):
    harness.put(workflow("keep", "keeper", "daemon"))
    harness.put(workflow("idle", "keeper", "daemon"))
    await harness.until_state("keep", {"step": 0})
    harness.runner.command("keep", "next")
    harness.runner.command("keep", "next")
    harness.runner.request("idle", "suspended")
    await harness.until("idle", "suspended")

    await harness.restart()

    await harness.until("keep", "running")
    await harness.until_state("keep", {"step": 2})           # handed back as `restored`
    harness.runner.command("keep", "next")
    assert harness.state("keep") == {"step": 3}
    assert harness.runner.status("idle")["status"] == "suspended"


async def test_a_changed_workflow_starts_over_an_identical_write_changes_nothing_a_deleted_one_stops(harness):
    harness.put(workflow("keep", "keeper", "daemon"))
    await harness.until_state("keep", {"step": 0})
    harness.runner.command("keep", "next")
    harness.put(workflow("keep", "keeper", "daemon"))                     # the same document
    await asyncio.wait(list(harness.runner._tasks))                       # the runner has looked at it
    assert (harness.state("keep"), harness.runner.status("keep")["runs"]) == ({"step": 1}, 1)

    harness.put(workflow("keep", "keeper", "daemon", speed="fast"))      # another definition
    await harness.until_state("keep", {"step": 0})
    assert harness.runner.status("keep")["runs"] == 1

    harness.delete("keep")
    await eventually_async(lambda: harness.store.get(RUNTIME_KIND, "keep") is None, WAIT, "its record gone")
    with pytest.raises(NotFound):
        harness.runner.status("keep")


# -- scripts ---------------------------------------------------------------------------------------------------
ENV_DUMP = ("import json, os, sys; json.dump({k: v for k, v in os.environ.items() if k.startswith(('VAMP_', 'OUT'))"
            " or k == 'GREETING'}, open(os.environ['OUT'], 'w')); sys.exit(3)")


def script(name: str, code: str, schedule: Any, **variables: str) -> dict[str, Any]:
    return {"name": name, "schedule": schedule, "environment_variables": variables,
            "breed": {"name": f"{name}-script", "cmd": f"{sys.executable} -c \"{code}\"",
                      "environment_variables": {"GREETING": "hello from the breed"}}}


async def test_a_script_runs_once_per_event_with_the_platform_s_environment(harness, tmp_path, caplog):
    out = tmp_path / "env.json"
    harness.put(script("dump", ENV_DUMP, {"event": ["go"]}, OUT=str(out), GREETING="hello from $WHO", WHO="us"))
    await harness.until("dump", "running")
    event = harness.events.publish(["go"], {"n": 1})
    status = await harness.until("dump", "running", runs=1)
    await eventually_async(lambda: harness.runner.status("dump")["last_run"]["outcome"] is not None, WAIT,
                           "the run ended", context=lambda: harness.runner.status("dump"))
    status = harness.runner.status("dump")
    assert status["last_run"]["outcome"] == "exited with exit code 3"
    assert status["reason"] == "the last run exited with exit code 3"       # an exit other than 0 is a failure
    environment = json.loads(out.read_text())
    assert environment["VAMP_API_URL"] == environment["VAMP_API"] == API_URL
    assert (environment["VAMP_TOKEN"], environment["VAMP_WORKFLOW_NAME"]) == (TOKEN, "dump")
    assert environment["GREETING"] == "hello from us"                      # the workflow's over the breed's
    assert json.loads(environment["VAMP_EVENT"])["id"] == event.id
    assert harness.orchestrator.instances("workflows/dump") == []           # nothing left behind
    assert TOKEN not in caplog.text


async def test_a_daemon_script_is_restarted_when_it_exits_and_stopped_when_suspended(harness, tmp_path):
    starts = tmp_path / "starts"
    code = ("import os, sys, time; f = open(os.environ['OUT'], 'a'); f.write('x'); f.close(); "
            "n = len(open(os.environ['OUT']).read()); sys.exit(1) if n < 2 else time.sleep(300)")
    harness.put(script("daemon", code, "daemon", OUT=str(starts)))
    await harness.until("daemon", "running", runs=2)                       # exited once, restarted
    assert "exited unasked with exit code 1" in harness.runner.status("daemon")["reason"]
    await eventually_async(lambda: starts.read_text() == "xx", WAIT, "the second start under way")
    [instance] = harness.orchestrator.instances("workflows/daemon")
    process = psutil.Process(instance.pid)
    harness.runner.request("daemon", "suspended")
    await harness.until("daemon", "suspended")
    assert harness.orchestrator.instances("workflows/daemon") == []
    assert not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    assert starts.read_text() == "xx"                                      # and not started again


async def test_a_script_whose_breed_is_not_stored_fails_saying_so(harness):
    harness.put({"name": "lost", "breed": "nowhere", "schedule": "daemon"})
    status = await harness.until("lost", "failed")
    assert "no breed named 'nowhere' is stored" in status["reason"]
    harness.store.put("breeds", "nowhere", dsl.to_dict(dsl.read("breeds", {
        "name": "nowhere", "cmd": f"{sys.executable} -c \"import time; time.sleep(300)\""})))
    harness.runner.request("lost", "running")
    await harness.until("lost", "running", runs=1)
