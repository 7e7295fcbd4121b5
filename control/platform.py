"""`vamp run`: the embedded platform — the control plane API, the gateway and the orchestrator in one process
tree, with its state (SQLite store, logs) in the state directory. The orchestrator runs the deployments'
services as local processes (the default) or, with `orchestrator="kubernetes"`, as Deployments in a Kubernetes
namespace (control.orchestrator.kubernetes); workflow scripts are always local processes.

On start it first locks the state directory (an flock on `vamp.lock`, which holds its pid): a second
`vamp run` on the same directory exits 1 at once, starting nothing; the lock goes with the process, however
it ends. Then it resumes every deployment the store holds: the orchestrator starts their instances again and
the gateways are rebuilt as they were; once the API answers, every stored workflow starts as it was left
(control/workflows/runner.py). The metrics aggregation (control.metrics.aggregator) samples the gateway's
workers every second from the start; the API, the SLA monitor and the workflows read it. Stopping (SIGTERM,
SIGINT) stops the instances and exits 0; the instances never outlive the platform. The event log
(control.events.log) prunes by `--events-max-count` and `--events-max-age`; stopping ends its streams first, so
no client holds the shutdown.
"""
from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from aiohttp import web

from control.engine import INTERNAL_PORTS, Engine
from control.events.log import DEFAULT_MAX_AGE, DEFAULT_MAX_COUNT, EventLog
from control.metrics.aggregator import DEFAULT_WINDOW, Aggregator
from control.metrics.exposition import render_clusters
from control.orchestrator.base import Orchestrator
from control.orchestrator.local import LocalOrchestrator
from control.metrics.model import NoMetrics
from control.sla.monitor import SlaMonitor, SystemClock
from control.replicas.leadership import Leadership, Replica, Solo
from control.store import ControlStore, Store
from control.workflows.runner import WorkflowRunner
from gateway import ConfigManager, LocalWorker, ProcessWorker, Runtime, Worker, render_metrics

if TYPE_CHECKING:                       # (etcd's client is loaded only for a platform on etcd)
    from control.replicas.election import Election
    from gateway import FleetGateways, StoreAddress

log = logging.getLogger("vamp.platform")

LOCK_FILE = "vamp.lock"
DEFAULT_LEADER_TTL = 10         # seconds: the leader's lease on an etcd store
EXIT_LOST_LEADERSHIP = 3        # a leader on etcd that lost its lease stops acting and exits with this


class StateDirInUse(Exception):
    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder          # the pid written by the process that holds the lock ("?" if unknown)


def lock_state_dir(state_dir: Path) -> IO[str]:
    """Take the state directory for this process: the open lock file, to keep while the platform runs (its
    descriptor is not inherited by the instances). StateDirInUse when another process holds it."""
    state_dir.mkdir(parents=True, exist_ok=True)
    lock = open(state_dir / LOCK_FILE, "a+", encoding="ascii")  # noqa: SIM115 - held while it runs; "a+": the pid stays readable
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "?"
        lock.close()
        raise StateDirInUse(holder) from None
    lock.truncate(0)
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock


async def serve(state_dir: Path, api_host: str, api_port: int, token: str | None, bind: str,
                grace: float, *, public_metrics: bool = False, events_max_count: int = DEFAULT_MAX_COUNT,
                events_max_age: float = DEFAULT_MAX_AGE, metrics_window: float = DEFAULT_WINDOW,
                workers: int = 1, store: StoreAddress | None = None, leader_ttl: int = DEFAULT_LEADER_TTL,
                api_url: str | None = None, orchestrator: str = "local", kubeconfig: str | None = None,
                namespace: str | None = None, internal_ports: range = INTERNAL_PORTS) -> int:
    """`metrics_window`: seconds of metrics kept (0: no aggregation). `workers`: the gateway in this process (1),
    or in that many worker processes sharing its ports, as `vamp gateway --workers N`. `store`: etcd, shared with
    other replicas (None: SQLite in the state directory); `leader_ttl`: the leader's lease there, in seconds;
    `api_url`: this API as the other replicas reach it (default: from the API's address). `orchestrator`:
    "local" or "kubernetes", with its `kubeconfig` and `namespace` (None: found as `vamp run --help` says).
    `internal_ports`: the loopback ports internal gateways are given."""
    from control.api import create_app

    try:
        lock = lock_state_dir(state_dir)        # first of all: a second platform here must start nothing
    except StateDirInUse as exc:
        print(f"vamp: another vamp run (pid {exc.holder}) is using {state_dir}", file=sys.stderr)
        return 1
    me = Replica.this_process(api_url or _loopback_url(api_host, api_port, wildcard_as_host_name=True))
    control_store: ControlStore
    election: Election | None = None
    if store is None:
        control_store = Store(state_dir / "vamp.db")
        leadership: Leadership = Solo(me, f"sqlite:{state_dir / 'vamp.db'}")
    else:
        from control.replicas.election import Election
        from control.replicas.etcd import StoreUnavailable
        from control.replicas.store import EtcdStore
        from gateway import StoreAddressError
        try:
            etcd_store = EtcdStore(store)
        except (StoreUnavailable, StoreAddressError) as exc:
            print(f"vamp: cannot use the store {store}: {exc}", file=sys.stderr)
            return 1
        control_store = etcd_store
        leadership = election = Election(etcd_store.etcd, me, leader_ttl)
    engine_ref: dict[str, Engine] = {}

    async def before_stop(instance: Any) -> None:
        await engine_ref["engine"].drain_instance(instance)

    local = LocalOrchestrator(state_dir / "logs", before_stop=before_stop)  # workflow scripts, and services by default
    services: Orchestrator = local
    services_where = ""                         # for the banner: where the services run, when not here
    if orchestrator == "kubernetes":
        from control.orchestrator.kubernetes import KubernetesUnavailable, connect
        try:
            cluster = await connect(kubeconfig, namespace, before_stop=before_stop)
        except KubernetesUnavailable as exc:
            print(f"vamp: {exc}", file=sys.stderr)
            control_store.close()
            return 1
        services, services_where = cluster, f", services in Kubernetes namespace {cluster.namespace}"
    loop = asyncio.get_running_loop()
    gateway_workers: list[Worker] = [LocalWorker(Runtime(loop, reuse_port=store is not None))] if workers == 1 else [
        ProcessWorker(index, [], lambda: gateways.effective) for index in range(workers)]
    fleet: FleetGateways | None = None
    if store is None:
        gateways = ConfigManager(gateway_workers, None)
        await gateways.start(gateways.desired)
    else:                                       # the gateways the store holds, followed by every replica
        from control.replicas.gateways import EVERYWHERE, ReplicaGateways
        from gateway import FleetGateways
        gateways = ReplicaGateways(gateway_workers, bind)
        fleet = FleetGateways(gateways, store)
        await fleet.start()
        bind = EVERYWHERE                       # what the leader writes: each replica serves it on its --bind
    aggregation = Aggregator([worker.snapshot for worker in gateways.workers], window=metrics_window) \
        if metrics_window else None
    if aggregation is not None:
        await aggregation.start()               # the baseline: the gateway has counted nothing yet
    orchestrators = (services, local) if services is not local else (local,)
    events = EventLog(control_store, max_count=events_max_count, max_age=events_max_age)
    engine = engine_ref["engine"] = Engine(control_store, services, fleet or gateways, events=events, bind=bind,
                                           internal_ports=internal_ports)
    if election is None and not await _resume(engine, events, state_dir):
        await _stop(engine, orchestrators, gateways, None, 0, events, aggregation, fleet=fleet)
        return 1

    measured = aggregation if aggregation is not None else NoMetrics()
    workflows = WorkflowRunner(control_store, local, engine, measured, events,
                               api_url=_loopback_url(api_host, api_port), token=token)
    app = create_app(control_store, engine, token, public_metrics=public_metrics, events=events,
                     workflows=workflows, metrics=aggregation, leadership=leadership)
    stopping = False

    async def metrics(_: web.Request) -> web.Response:
        snapshot = await gateways.snapshot()
        body = render_metrics(snapshot, gateways.effective) + render_clusters(engine, snapshot)
        return web.Response(body=body, content_type="text/plain", charset="utf-8")

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def ready(_: web.Request) -> web.Response:
        return web.json_response({"status": "stopping"} if stopping else {"status": "ready"},
                                 status=503 if stopping else 200)

    app.router.add_get("/metrics", metrics)
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, api_host, api_port).start()
    except OSError as exc:
        print(f"vamp: cannot listen on {api_host}:{api_port}: {exc.strerror or exc}", file=sys.stderr)
        await _stop(engine, orchestrators, gateways, runner, 0, events, aggregation, fleet=fleet)
        return 1
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def reopen_access_logs() -> None:          # SIGUSR1, after logrotate moved them (docs/access-logs.md)
        for worker in gateway_workers:
            worker.reopen_access_logs()
    loop.add_signal_handler(signal.SIGUSR1, reopen_access_logs)
    if election is not None:
        print(f"Vamp is running as a replica on {store} (id {me.id}, state in {state_dir}):\n"
              f"  API       http://{api_host}:{api_port}/api/v1   (a follower forwards to the leader)\n"
              f"  status    http://{api_host}:{api_port}/api/v1/status\n", flush=True)
        election.start()
        if not await _first(election.won(), stop.wait()):
            await election.resign()
            await _stop(engine, orchestrators, gateways, runner, grace, events, aggregation, fleet=fleet)
            lock.close()
            return 0
        etcd_store.fence(election.key, election.revision)  # type: ignore[arg-type]  # (set: it leads)
        if fleet is not None:
            fleet.fence(election.key, election.revision)  # type: ignore[arg-type]  # (set: it leads)
        await election.predecessor_gone()       # the leader before has stopped its instances (or is dead)
        fenced_off = election.lose

        def found_fenced_off() -> None:
            loop.call_soon_threadsafe(fenced_off, "a write found the leader key gone")
        etcd_store.on_fence_lost = found_fenced_off
        if not await _resume(engine, events, state_dir):
            await election.resign()
            await _stop(engine, orchestrators, gateways, runner, 0, events, aggregation, fleet=fleet)
            return 1
        election.ready = True
        log.info("replica %s leads: the deployments are resumed", me.id)
    await workflows.start()                     # once the API answers: scripts may call it at once
    sla = SlaMonitor(engine, measured, events, SystemClock())
    sla_task = loop.create_task(sla.run(), name="vamp SLA monitor")
    if election is None:
        print(f"Vamp is running (state in {state_dir}{services_where}):\n"
              f"  API       http://{api_host}:{api_port}/api/v1\n"
              f"  metrics   http://{api_host}:{api_port}/metrics\n"
              f"  try       vamp deploy examples/sava-1.0.yaml --name sava   then open http://127.0.0.1:9050/\n",
              flush=True)
    lost = None if election is None else await _first(election.lost(), stop.wait())
    if lost is None:
        await stop.wait()
    stopping = True
    sla_task.cancel()
    await asyncio.wait({sla_task})
    if lost:
        print(f"vamp: replica {me.id} lost the leadership ({leadership.status().get('reason')}): stopping its "
              "instances and exiting; started again, it joins as a follower", file=sys.stderr, flush=True)
        await workflows.close()
        await _stop(engine, orchestrators, gateways, runner, 0, events, aggregation, fleet=fleet,
                    resign=election.resign)     # type: ignore[union-attr]  # (lost: it led on etcd)
        return EXIT_LOST_LEADERSHIP
    log.info("stopping: workflows, instances, then the gateway (grace %.0fs)", grace)
    await workflows.close()
    await _stop(engine, orchestrators, gateways, runner, grace, events, aggregation, fleet=fleet,
                resign=election.resign if election is not None else None)
    lock.close()                                # the instances are gone: the directory is free again
    return 0


async def _resume(engine: Engine, events: EventLog, state_dir: Path) -> bool:
    """Start the event log's pruning and resume every stored deployment; False (said on stderr) if it cannot."""
    events.start()
    try:
        await engine.start()
    except Exception as exc:  # noqa: BLE001 - a start that fails must still stop what it started
        print(f"vamp: cannot resume the deployments in {state_dir}: {exc}", file=sys.stderr)
        return False
    return True


async def _first(wanted: Coroutine[Any, Any, Any], other: Coroutine[Any, Any, Any]) -> bool:
    """Wait for whichever ends first: True when `wanted` did (the other is cancelled)."""
    first = asyncio.ensure_future(wanted)
    second = asyncio.ensure_future(other)
    done, pending = await asyncio.wait({first, second}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return first in done


def _loopback_url(host: str, port: int, *, wildcard_as_host_name: bool = False) -> str:
    """The API's URL as the platform's own processes reach it (a wildcard address through loopback), or, with
    `wildcard_as_host_name`, as other hosts do (a wildcard address as this host's name)."""
    if host in ("", "0.0.0.0", "::") and wildcard_as_host_name:
        host = socket.gethostname()
    elif host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def _stop(engine: Engine, orchestrators: tuple[Orchestrator, ...], gateways: ConfigManager,
                runner: web.AppRunner | None, grace: float, events: EventLog, aggregation: Aggregator | None, *,
                resign: Callable[[], Awaitable[None]] | None = None, fleet: FleetGateways | None = None) -> None:
    """Stop it all; a leader on etcd resigns once its instances are gone (the next one starts its own at once)."""
    await events.close()            # the event streams end now: the API's shutdown waits for none of them
    if aggregation is not None:
        await aggregation.stop()
    await engine.close()
    for orchestrator in orchestrators:      # (a Kubernetes namespace keeps its services running, to be adopted)
        await orchestrator.close()
    if resign is not None:
        await resign()
    if fleet is not None:           # stop following the store, then the gateway stops
        await fleet.close()
    await gateways.shutdown(grace)
    if runner is not None:
        await runner.cleanup()
    engine.store.close()
