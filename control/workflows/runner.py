"""The workflow runner: every stored workflow runs on its schedule, from the platform's start until it is
suspended, replaced, deleted or the platform stops (docs/workflows.md).

Schedules:
- `daemon`: one run that lasts. A script is restarted by the orchestrator when it exits, with its back-off; a
  built-in whose `run` returns is `finished`, one that raises is run again after a back-off (0.5 s doubling up
  to 30 s, reset after 60 s without a failure), from the state it had set.
- `event`: one run per event that carries every tag of the schedule (`EventSource.follow`), in order, one at a
  time; events that come while a run is going wait (at most EVENT_BACKLOG of them, the rest are dropped and
  logged). Only events published once the workflow is `running` count.
- `time`: a run at `start`, then every `period` (calendar arithmetic: P1M is a month), `repeat` times in all
  (None: forever). Runs never overlap: a tick that passes while a run is going, or while the workflow is
  suspended or the platform is down, is skipped. `start: now` means when the workflow starts.

Status (`GET|PUT /api/v1/workflows/NAME/status`): `starting`, `running` (for event and time schedules: waiting
for the next trigger or running), `stopping`, `suspended`, `restarting`, `finished` (a built-in's daemon run
returned, or a time schedule made its `repeat` runs), `failed` (it cannot run as stored: `reason` says why).
A request for `suspended` stops it and keeps it stopped across platform restarts; `running` starts it again,
resuming a built-in from its state; `restarting` stops it and starts it over, its state and run count cleared.
Replacing a workflow with a different definition starts it over too (a suspended one stays suspended); an
identical write changes nothing.

Per workflow the store keeps, besides its document, a runtime record (kind RUNTIME_KIND): whether it is
suspended or finished, how many runs it made and the state its built-in set, tied to the digest of the document
they belong to. A restarted platform hands that state back to the built-in as `restored`.
"""
from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import logging
import math
from collections.abc import Coroutine, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from control import dsl
from control.dsl.model import Artifact, Reference, Workflow
from control.dsl.units import Period, parse_period
from control.events.model import Event, EventFilter, EventSink, EventSource
from control.metrics.model import MetricsReader
from control.orchestrator.base import InstanceEvent, Orchestrator, ServiceEvent
from control.store import ControlStore
from control.workflows.builtins import BUILTINS
from control.workflows.clock import Clock, SystemClock, sleep_until
from control.workflows.context import BuiltinWorkflow
from control.workflows.platform_context import PlatformContext, WorkflowEngine
from control.workflows.scripts import CannotRun, script_spec
from gateway.common.errors import Conflict, Invalid, NotFound

log = logging.getLogger("vamp.workflows")

RUNTIME_KIND = "workflow-runtime"
REQUESTS = ("running", "suspended", "restarting")        # what PUT …/status may ask for
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
BACKOFF_RESET_AFTER = 60.0
EVENT_BACKLOG = 100
STOP_TIMEOUT = 30.0         # seconds to wait for a script's process to stop (the orchestrator's grace, and more)
LONGEST_MONTH = 31 * 86400.0


class EventLog(EventSink, EventSource, Protocol):
    """The platform's events: published to and followed."""


@dataclass
class Runtime:
    """What the store keeps of a workflow between platform runs."""
    definition: str                     # digest of the workflow document this belongs to
    suspended: bool = False
    finished: bool = False
    runs: int = 0
    state: dict[str, Any] | None = None


@dataclass
class LastRun:
    started: float
    ended: float | None = None
    outcome: str | None = None          # "exited with exit code 0", "finished", "failed: …", "stopped"
    event: int | None = None            # the id of the event it ran for

    def as_json(self) -> dict[str, Any]:
        return {"started": _iso(self.started), "ended": _iso(self.ended) if self.ended is not None else None,
                "outcome": self.outcome, **({"event": self.event} if self.event is not None else {})}


def digest(document: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:32]


class WorkflowRunner:
    def __init__(self, store: ControlStore, orchestrator: Orchestrator, engine: WorkflowEngine, metrics: MetricsReader,
                 events: EventLog, *, api_url: str, token: str | None, clock: Clock | None = None,
                 stop_timeout: float = STOP_TIMEOUT) -> None:
        self.store = store
        self.orchestrator = orchestrator
        self.engine = engine
        self.metrics = metrics
        self.events = events
        self.api_url = api_url
        self.token = token
        self.clock: Clock = clock or SystemClock()
        self.stop_timeout = stop_timeout
        self.closing = False
        self._workflows: dict[str, _Workflow] = {}
        self._runtimes: dict[str, Runtime] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._watches: dict[str, asyncio.Queue[InstanceEvent]] = {}
        self._tasks: set[asyncio.Task] = set()
        self._watcher: asyncio.Task | None = None

    # -- lifecycle -------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start every stored workflow (each as its runtime record says: a suspended one stays suspended)."""
        instances = self.orchestrator.subscribe()
        self._watcher = asyncio.get_running_loop().create_task(self._follow_instances(instances))
        items, _ = self.store.list("workflows")
        for document in items:
            await self._reconcile(document["name"])

    async def close(self) -> None:
        """Stop every workflow (their scripts' processes are the orchestrator's to stop when it closes); what
        they are is kept for the next start."""
        self.closing = True
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks))
        for workflow in list(self._workflows.values()):
            await workflow.stop()
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.wait({self._watcher})

    def changed(self, name: str) -> None:
        """The stored workflow `name` was created, replaced or deleted: start, restart or stop it (soon)."""
        if not self.closing:
            self._background(self._reconcile(name))

    # -- what the API shows and asks -------------------------------------------------------------------
    def shown(self, document: dict[str, Any]) -> dict[str, Any]:
        """A stored workflow's document with its `status`, `reason` and `state`."""
        name = document["name"]
        workflow = self._workflows.get(name)
        runtime = self._runtimes.get(name)
        return {**document, "status": workflow.status if workflow else "starting",
                "reason": workflow.reason if workflow else None,
                "state": runtime.state if runtime and runtime.definition == digest(document) else None}

    def status(self, name: str) -> dict[str, Any]:
        """The status document; NotFound when no workflow `name` is stored."""
        document = self._stored(name)
        workflow = self._workflows.get(name)
        runtime = self._runtimes.get(name)
        return {"name": name, "status": workflow.status if workflow else "starting",
                "reason": workflow.reason if workflow else None,
                "runs": runtime.runs if runtime and runtime.definition == digest(document) else 0,
                "last_run": workflow.last_run.as_json() if workflow and workflow.last_run else None}

    def request(self, name: str, wanted: str, *, validate_only: bool = False) -> dict[str, Any]:
        """Ask for `running`, `suspended` or `restarting`; the change happens in the background, and the
        status answered is where it stands now."""
        if wanted not in REQUESTS:
            raise Invalid(f"expected one of {', '.join(REQUESTS)}, got {wanted!r}", "/status")
        document = self._stored(name)
        if validate_only:
            return self.status(name)
        runtime = self._runtime_for(name, document)
        workflow = self._workflows.get(name)
        active = workflow is not None and workflow.active
        if wanted == "suspended":
            runtime.suspended = True
            if workflow is not None:
                workflow.status = "stopping" if active else "suspended"
        elif wanted == "running":
            runtime.suspended = runtime.finished = False
            if workflow is not None and not active:
                workflow.status = "starting"
        else:
            runtime.suspended = False           # its state and runs are cleared once its run has stopped
            if workflow is not None:
                workflow.status = "restarting"
        self._save(name)
        self._background(self._reconcile(name, restart=wanted == "restarting"))
        return self.status(name)

    def command(self, name: str, action: str, *, validate_only: bool = False) -> dict[str, Any]:
        """Hand a manual action (`promote`, `abort`, …) to the built-in's run in progress."""
        self._stored(name)
        workflow = self._workflows.get(name)
        if workflow is not None and workflow.definition is not None and workflow.definition.workflow is None:
            raise Invalid(f"workflow {name} is a script: it takes no actions, only a status ("
                          f"{', '.join(REQUESTS)})", "/action")
        if workflow is None or workflow.builtin is None:
            status = workflow.status if workflow else "starting"
            raise Conflict(f"workflow {name} has no run in progress to take {action!r} (it is {status})")
        if not validate_only:
            workflow.builtin.command(action)
        return self.status(name)

    def _stored(self, name: str) -> dict[str, Any]:
        document = self.store.get("workflows", name)
        if document is None:
            raise NotFound(f"no workflow named {name!r}")
        return document

    # -- keeping each workflow as stored and asked -------------------------------------------------------
    async def _reconcile(self, name: str, *, restart: bool = False) -> None:
        async with self._locks.setdefault(name, asyncio.Lock()):
            document = self.store.get("workflows", name)
            current = self._workflows.get(name)
            if document is None:
                if current is not None:
                    await current.stop()
                    del self._workflows[name]
                self._runtimes.pop(name, None)
                self.store.delete(RUNTIME_KIND, name)
                return
            if current is not None and (current.document != document or restart):
                await current.stop()
                current = None
            runtime = self._runtime_for(name, document, fresh=restart)
            if current is None:
                current = self._workflows[name] = _Workflow(self, name, document, runtime)
            if runtime.suspended:
                await current.stop()
                current.status = "suspended"
            elif runtime.finished and not current.active:
                current.status = "finished"
            elif not current.active:
                current.start()

    def _runtime_for(self, name: str, document: dict[str, Any], *, fresh: bool = False) -> Runtime:
        """The workflow's runtime record; a new one (keeping only `suspended`) when the document changed, or when
        `fresh`."""
        wanted = digest(document)
        runtime = self._runtimes.get(name)
        if runtime is None:
            stored = self.store.get(RUNTIME_KIND, name)
            runtime = Runtime(**stored) if stored is not None else None
        if runtime is None or runtime.definition != wanted or fresh:
            runtime = Runtime(wanted, suspended=runtime.suspended if runtime else False)
        if self._runtimes.get(name) is not runtime:
            self._runtimes[name] = runtime
            self._save(name)
        return runtime

    def _save(self, name: str, runtime: Runtime | None = None) -> None:
        """Store the workflow's runtime record; `runtime` (a run's own) only while it is the workflow's."""
        current = self._runtimes.get(name)
        if runtime is not None and runtime is not current:
            return
        if current is not None and self.store.get("workflows", name) is not None:
            self.store.put(RUNTIME_KIND, name, asdict(current))

    # -- the orchestrator's instances of scripts ---------------------------------------------------------
    async def _follow_instances(self, events: asyncio.Queue[InstanceEvent | ServiceEvent]) -> None:
        while True:
            event = await events.get()
            if isinstance(event, ServiceEvent):
                continue
            watch = self._watches.get(event.instance.service)
            if watch is not None:
                watch.put_nowait(event)

    def watch(self, service: str) -> asyncio.Queue[InstanceEvent]:
        queue: asyncio.Queue[InstanceEvent] = asyncio.Queue()
        self._watches[service] = queue
        return queue

    def unwatch(self, service: str) -> None:
        self._watches.pop(service, None)

    def lookup(self, reference: Reference) -> Artifact | None:
        document = self.store.get(f"{reference.kind}s", reference.name)
        return dsl.read(reference.kind, document) if document is not None else None

    def _background(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("workflow change failed", exc_info=task.exception())


class _Workflow:
    """One stored workflow: its definition and, while it is active, the task that runs its schedule."""

    def __init__(self, runner: WorkflowRunner, name: str, document: dict[str, Any], runtime: Runtime) -> None:
        self.runner = runner
        self.name = name
        self.document = document
        self.runtime = runtime              # its own: a run that is being stopped never writes into its successor's
        self.status = "starting"
        self.reason: str | None = None
        self.last_run: LastRun | None = None
        self.builtin: BuiltinWorkflow | None = None       # the built-in's run in progress
        self.task: asyncio.Task | None = None
        self.definition: Workflow | None = None
        try:
            definition = dsl.read("workflow", document)
            assert isinstance(definition, Workflow)
            self.definition = definition
        except dsl.DslError as exc:                       # stored by an older version, or a built-in gone
            self.reason = str(exc)

    @property
    def active(self) -> bool:
        return self.task is not None and not self.task.done()

    def start(self) -> None:
        if self.definition is None:
            self.status = "failed"
            return
        self.status, self.reason = "starting", None
        self.task = asyncio.get_running_loop().create_task(self._main(self.definition),
                                                            name=f"vamp workflow {self.name}")

    async def stop(self) -> None:
        task, self.task = self.task, None
        if task is None or task.done():
            return
        if self.status not in ("restarting", "suspended"):
            self.status = "stopping"
        task.cancel()
        await asyncio.wait({task})

    # -- the schedules ---------------------------------------------------------------------------------
    async def _main(self, definition: Workflow) -> None:
        try:
            self.status = "running"
            schedule = definition.schedule
            if schedule.type == "daemon":
                await self._daemon(definition)
            elif schedule.type == "event":
                await self._on_events(definition)
            else:
                await self._on_time(definition)
            self.runtime.finished = True
            self.runner._save(self.name, self.runtime)
            self.status = "finished"
        except CannotRun as exc:
            log.error("workflow %s cannot run: %s", self.name, exc)
            self.status, self.reason = "failed", str(exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a workflow's failure must not take the runner with it
            log.exception("workflow %s failed", self.name)
            self.status, self.reason = "failed", f"{type(exc).__name__}: {exc}"

    async def _daemon(self, definition: Workflow) -> None:
        if definition.workflow is None:
            await self._script(definition, restart=True)
            return
        delay = BACKOFF_FIRST
        clock = self.runner.clock
        while True:
            started = clock.now()
            if await self._run(definition):
                return
            if clock.now() - started >= BACKOFF_RESET_AFTER:
                delay = BACKOFF_FIRST
            await clock.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    async def _on_events(self, definition: Workflow) -> None:
        newest = self.runner.events.query(EventFilter(), limit=1)
        after = newest[0].id if newest else 0       # what is published from now on counts, however late we follow
        backlog: asyncio.Queue[Event] = asyncio.Queue(EVENT_BACKLOG)
        pump = asyncio.get_running_loop().create_task(self._pump(EventFilter(tags=definition.schedule.tags),
                                                                 after, backlog))
        try:
            while True:
                following = asyncio.get_running_loop().create_task(backlog.get())
                try:
                    done, _ = await asyncio.wait({following, pump}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    following.cancel()          # nothing when it is done
                if following not in done:
                    pump.result()               # the event source failed: say why
                    raise RuntimeError("the event stream ended")
                await self._run(definition, following.result())
        finally:
            pump.cancel()
            await asyncio.wait({pump})

    async def _pump(self, where: EventFilter, after: int, backlog: asyncio.Queue[Event]) -> None:
        stream = self.runner.events.follow(where, after)
        try:
            async for event in stream:
                if backlog.full():
                    log.warning("workflow %s: %d runs wait already; event %d is dropped", self.name,
                                EVENT_BACKLOG, event.id)
                else:
                    backlog.put_nowait(event)
        finally:
            close = getattr(stream, "aclose", None)       # an async generator: let it clean up now
            if close is not None:
                await close()

    async def _on_time(self, definition: Workflow) -> None:
        schedule = definition.schedule
        assert schedule.period is not None
        period = parse_period(schedule.period)
        clock = self.runner.clock
        anchor = (datetime.datetime.fromisoformat(schedule.start) if schedule.start is not None
                  else datetime.datetime.fromtimestamp(clock.now(), datetime.UTC))
        tick = _first_tick(anchor, period, clock.now(), schedule.start is None)
        while schedule.repeat is None or self.runtime.runs < schedule.repeat:
            await sleep_until(clock, period.after(anchor, tick).timestamp())
            await self._run(definition)
            tick = max(tick + 1, _first_tick(anchor, period, clock.now(), False))

    # -- one run ---------------------------------------------------------------------------------------
    async def _run(self, definition: Workflow, event: Event | None = None) -> bool:
        """One run of the built-in or the script (for `event`, if one triggered it): True when it ended by
        itself, False when it failed."""
        self._begin(event)
        try:
            if definition.workflow is not None:
                await self._builtin(definition)
                outcome, succeeded = "finished", True
            else:
                ended = await self._script(definition, restart=False, event=event)
                outcome, succeeded = ended.reason, ended.exit_code == 0
        except asyncio.CancelledError:
            self._end("stopped")
            raise
        except CannotRun:
            self._end("could not start")
            raise
        except Exception as exc:  # noqa: BLE001 - a failed run is reported; the schedule goes on
            log.exception("workflow %s: the run failed", self.name)
            self.reason = f"the last run failed: {type(exc).__name__}: {exc}"
            self._end(f"failed: {type(exc).__name__}: {exc}")
            return False
        self.reason = None if succeeded else f"the last run {outcome}"
        self._end(outcome)
        return True

    async def _builtin(self, definition: Workflow) -> None:
        assert definition.workflow is not None
        kind = BUILTINS.get(definition.workflow)
        if kind is None:
            raise CannotRun(f"no built-in workflow named {definition.workflow!r}")
        runner = self.runner
        context = PlatformContext(self.name, engine=runner.engine, metrics=runner.metrics, events=runner.events,
                                  clock=runner.clock, save_state=self._save_state)
        try:
            builtin = kind(context, definition.parameters, self.runtime.state)
        except Invalid as exc:
            raise CannotRun(f"{exc.field or 'parameters'}: {exc.message}") from None
        self.builtin = builtin
        try:
            await builtin.run()
        finally:
            self.builtin = None

    def _save_state(self, state: dict[str, Any]) -> None:
        self.runtime.state = state
        self.runner._save(self.name, self.runtime)

    async def _script(self, definition: Workflow, *, restart: bool, event: Event | None = None) -> InstanceEvent:
        """Run the script: until it exits (`restart` False: the event of its end), or as a daemon until
        cancelled."""
        runner = self.runner
        spec = script_spec(definition, runner.lookup, api_url=runner.api_url, token=runner.token,
                           restart=restart, event=event)
        instances = runner.watch(spec.id)
        try:
            await runner.orchestrator.deploy(spec)
            while True:
                change = await instances.get()
                state = change.instance.state
                if restart and state == "starting":
                    self._begin(None)
                elif restart and state in ("crashed", "unhealthy"):
                    self.reason = f"{change.reason}; restarted after a back-off"
                    self._end(change.reason)
                elif state == "stopped" and not restart:
                    return change
        finally:
            if restart:
                self._end("stopped")
            await self._remove_script(spec.id, instances)
            runner.unwatch(spec.id)

    async def _remove_script(self, service: str, instances: asyncio.Queue[InstanceEvent]) -> None:
        """Undeploy the script's service and wait until its process is gone."""
        orchestrator = self.runner.orchestrator
        if self.runner.closing:         # the orchestrator stops every process when it closes
            return
        await orchestrator.undeploy(service)
        deadline = asyncio.get_running_loop().time() + self.runner.stop_timeout
        while orchestrator.instances(service):
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                log.error("workflow %s: its script did not stop within %gs", self.name, self.runner.stop_timeout)
                return
            try:
                await asyncio.wait_for(instances.get(), remaining)
            except TimeoutError:
                pass

    def _begin(self, event: Event | None) -> None:
        self.runtime.runs += 1
        self.runner._save(self.name, self.runtime)
        self.last_run = LastRun(self.runner.clock.now(), event=event.id if event is not None else None)

    def _end(self, outcome: str) -> None:
        if self.last_run is not None and self.last_run.ended is None:
            self.last_run.ended, self.last_run.outcome = self.runner.clock.now(), outcome


def _first_tick(anchor: datetime.datetime, period: Period, now: float, include_past_anchor: bool) -> int:
    """The index of the first tick (anchor + k periods) at or after `now`; 0 when the anchor is "now"."""
    if include_past_anchor:
        return 0
    start = anchor.timestamp()
    if start >= now:
        return 0
    longest = period.months * LONGEST_MONTH + period.days * 86400.0 + period.seconds
    tick = max(0, math.floor((now - start) / longest) - 1)
    while period.after(anchor, tick).timestamp() < now:
        tick += 1
    return tick


def _iso(seconds: float) -> str:
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

