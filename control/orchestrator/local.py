"""The local-process driver: the embedded default orchestrator of `vamp run`, one OS process per instance.

Each instance of a service runs its command as a child process on this machine:
- it gets a free loopback port per named port, in the environment as `PORT_<NAME>` (upper case,
  non-alphanumerics as `_`) and `PORT` (the first port), with `VAMP_INSTANCE`, `VAMP_SERVICE` and the spec's
  environment on top of the platform's own; a command starting with "python" runs on the platform's interpreter;
- its stdout and stderr go to `<log_dir>/<instance id>.log` (`/` in the id written as `%2F`), appended across
  restarts, each run headed by a line saying when and why it started;
- it is `ready` after its first passing health check, or, without a health check, once all its ports accept
  connections. While it starts, the check is tried every STARTUP_POLL seconds and the instance is `unhealthy`
  if none passed within `failures × interval` after `initial_delay` (the time the declared cadence allows);
  once ready, it is checked every `interval` and is `unhealthy` after `failures` consecutive failures;
- an unhealthy instance is stopped and restarted, a crashed one (its process exited unasked) is restarted:
  after a back-off of 0.5 s doubling up to 30 s, reset once an instance stayed ready for 60 s. It keeps its id
  and, when they are still free, its port numbers. A service whose spec says `restart: False` runs to
  completion instead: when its process exits (or cannot start) the instance is `stopped`, with the exit code;
- processes never outlive the platform: each starts in a session of its own (so its whole process group can
  be signalled) and, on Linux, with a parent-death signal (SIGTERM when the platform dies, even by SIGKILL);
  `close()` stops them all. Stopping is SIGTERM to the process group, SIGKILL after `stop_grace` seconds.

Scale-down, undeploy and a replacement after a spec change first await the `before_stop` hook (the sync drains
the instance through the gateway there), then stop the process; they run in the background, and the events
tell when they are done. `stop_instance` (the caller has drained already) and `close()` skip the hook.
"""
from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import NoReturn
from urllib.parse import quote

from control.orchestrator.base import (DeployableRefused, HealthCheck, Instance, InstanceEvent, ServiceEvent,
                                       ServiceSpec)
from control.orchestrator.plumbing import BackgroundTasks, Subscribers
from gateway.common.units import PROTOCOLS

log = logging.getLogger("vamp.orchestrator")

BACKOFF_FIRST = 0.5           # seconds before the first restart of a failed instance
BACKOFF_MAX = 30.0            # the back-off doubles up to this
BACKOFF_RESET_AFTER = 60.0    # seconds of readiness after which the next failure starts the back-off afresh
STARTUP_POLL = 0.1            # seconds between two checks while an instance starts
PORT_POLL_MAX = 1.0           # a starting instance without a health check is polled at most this far apart
SETTLE_TIMEOUT = 60.0         # a rolling replacement waits at most this long for each new instance to settle
KILL_WAIT = 5.0               # seconds to wait for a process to vanish after SIGKILL
PORT_ATTEMPTS = 100           # tries to find a free port no other instance holds
PR_SET_PDEATHSIG = 1          # from <linux/prctl.h>
PYTHON_NAMES = ("python", "python3")

_NOT_ALPHANUMERIC = re.compile(r"[^A-Z0-9]")
_HEALTH_PATH = re.compile(r"/[\x21-\x7e]*")
_CONNECT = HealthCheck(protocol="tcp", timeout=1.0)

BeforeStop = Callable[[Instance], Awaitable[None]]


def port_variable(port_name: str) -> str:
    """The environment variable carrying a named port: "webport" -> "PORT_WEBPORT", "web-ui" -> "PORT_WEB_UI"."""
    return "PORT_" + _NOT_ALPHANUMERIC.sub("_", port_name.upper())


def describe_exit(code: int) -> str:
    """'exit code 3', or 'signal SIGKILL' for a process killed by a signal (negative code)."""
    if code >= 0:
        return f"exit code {code}"
    try:
        return f"signal {signal.Signals(-code).name}"
    except ValueError:
        return f"signal {-code}"


def validate_spec(spec: ServiceSpec) -> None:
    """Raise ValueError, naming the field, for a spec the driver cannot run."""
    where = f"service {spec.id!r}"
    if not spec.id or not isinstance(spec.id, str):
        raise ValueError("a service needs a non-empty id")
    if not spec.command and spec.image:
        raise DeployableRefused(
            f"{where}: deployable {spec.image} is a docker image, and the local orchestrator runs processes, not "
            "containers: docker images need `vamp run --orchestrator kubernetes` (see docs/kubernetes.md); to "
            "run the service here, give its breed a command instead (cmd: or python:)")
    if not spec.command or not all(isinstance(part, str) and part for part in spec.command):
        raise ValueError(f"{where}: command must be a non-empty list of non-empty strings")
    if not isinstance(spec.instances, int) or isinstance(spec.instances, bool) or spec.instances < 0:
        raise ValueError(f"{where}: instances must be a whole number >= 0, got {spec.instances!r}")
    variables: dict[str, str] = {}
    for name, protocol in spec.ports.items():
        if protocol not in PROTOCOLS:
            raise ValueError(f"{where}: port {name!r} must be http or tcp, got {protocol!r}")
        other = variables.setdefault(port_variable(name), name)
        if other != name:
            raise ValueError(f"{where}: ports {other!r} and {name!r} would both be {port_variable(name)}")
    check = spec.health_check
    if check is None:
        return
    if not spec.ports:
        raise ValueError(f"{where}: a health check needs a port to check")
    if check.port is not None and check.port not in spec.ports:
        raise ValueError(f"{where}: health check port {check.port!r} is not one of {sorted(spec.ports)}")
    if check.protocol not in PROTOCOLS:
        raise ValueError(f"{where}: health check protocol must be http or tcp, got {check.protocol!r}")
    if not _HEALTH_PATH.fullmatch(check.path):
        raise ValueError(f"{where}: health check path must start with / and hold no spaces, got {check.path!r}")
    if check.interval <= 0 or check.timeout <= 0 or check.initial_delay < 0:
        raise ValueError(f"{where}: health check interval and timeout must be > 0, initial_delay >= 0")
    if not isinstance(check.failures, int) or check.failures < 1:
        raise ValueError(f"{where}: health check failures must be a whole number >= 1, got {check.failures!r}")


async def probe(check: HealthCheck, host: str, port: int) -> str | None:
    """Run one health check: None when it passes, else what went wrong in a few words."""
    try:
        async with asyncio.timeout(check.timeout):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                if check.protocol == "tcp":
                    return None
                writer.write(f"GET {check.path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                             "User-Agent: vamp-health-check\r\nConnection: close\r\n\r\n".encode())
                status_line = await reader.readline()
            finally:
                writer.close()
    except TimeoutError:
        return f"no answer within {check.timeout:g}s"
    except OSError as error:
        return error.strerror or type(error).__name__
    parts = status_line.split()
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return "not an HTTP response"
    status = int(parts[1])
    return None if 200 <= status < 400 else f"status {status}"


async def _port_accepts(host: str, port: int) -> bool:
    return await probe(_CONNECT, host, port) is None


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _unused_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _parent_death_setup() -> Callable[[], None] | None:
    """A preexec_fn asking Linux to send the child SIGTERM when the platform dies (None elsewhere)."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)      # loaded before fork: the child only calls into it
    parent = os.getpid()

    def set_parent_death_signal() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:                 # the platform died before the request took effect
            os._exit(1)
    return set_parent_death_signal


class _Service:
    def __init__(self, spec: ServiceSpec) -> None:
        self.spec = spec
        self.runners: dict[int, _Runner] = {}
        self.undeploying = False
        self.rolling: asyncio.Task | None = None


class _Runner:
    """One instance: its process, its supervision (health, restarts) and its way out."""

    def __init__(self, driver: LocalOrchestrator, service: _Service, index: int) -> None:
        self.driver = driver
        self.service = service
        self.index = index
        self.id = f"{service.spec.id}#{index}"
        self.spec = service.spec                   # the spec its current process runs
        self.state: str | None = None
        self.ports: dict[str, int] = {}
        self.process: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self.started_at = 0.0
        self.ready_since: float | None = None
        self.ready_for = 0.0                       # how long it stayed ready before it last failed
        self.failures = 0                          # failures since it was last ready (or got a new spec)
        self.failure: str | None = None            # what the last of them was
        self.exit_code: int | None = None          # run to completion (spec.restart False): the exit status
        self.ended: str | None = None              # and how the run ended
        self.leaving = False                       # chosen to go: scale-down, undeploy, stop_instance
        self.supervisor: asyncio.Task | None = None
        self.lock = asyncio.Lock()                 # one stop or replacement at a time

    def snapshot(self) -> Instance:
        return Instance(id=self.id, service=self.service.spec.id, host=self.driver.host, ports=dict(self.ports),
                        state=self.state or "starting", pid=self.process.pid if self.process else None,
                        restarts=self.restarts, started_at=self.started_at, failures=self.failures,
                        failure=self.failure, outdated=self.runs_outdated_spec())

    def runs_outdated_spec(self) -> bool:
        return dataclasses.replace(self.spec, instances=self.service.spec.instances) != self.service.spec

    def _set(self, state: str, reason: str, exit_code: int | None = None) -> None:
        previous, self.state = self.state, state
        if state in ("crashed", "unhealthy"):
            self.failures, self.failure = self.failures + 1, reason
        if state == "ready":
            self.failures, self.failure = 0, None
            self.ready_since = time.monotonic()
        elif previous == "ready" and self.ready_since is not None:
            self.ready_for = time.monotonic() - self.ready_since
        elif state == "starting":
            self.ready_for = 0.0
        self.driver.subscribers.publish(InstanceEvent(self.snapshot(), previous, reason, exit_code))

    # -- running and supervising -------------------------------------------------------------------------
    def start(self, reason: str) -> None:
        self.supervisor = asyncio.create_task(self._supervise(reason), name=f"vamp instance {self.id}")
        self.supervisor.add_done_callback(self.driver.background.report)

    async def _supervise(self, reason: str) -> None:
        """Run the process, and restart it with back-off whenever it fails; ends by cancellation, or (a spec
        with `restart` False) when the process exits."""
        delay = BACKOFF_FIRST
        while True:
            failure = await self._run_once(reason)
            if self.ended is not None:
                self._finished(self.ended)
                return
            if self.ready_for >= BACKOFF_RESET_AFTER:
                delay = BACKOFF_FIRST
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)
            self.restarts += 1
            reason = f"restart {self.restarts} after {failure}"

    async def _run_once(self, reason: str) -> str:
        """Start the process and watch it until it fails; return what failed ('exit code 3', 'unhealthy')."""
        try:
            self.process = await self._spawn(reason)
        except OSError as error:
            self.process = None
            if not self.spec.restart:              # run to completion: it will not run at all
                self.ended = f"could not start: {error}"
                return self.ended
            self._set("crashed", f"could not start: {error}")
            return "a failed start"
        self.started_at = time.time()
        self._set("starting", reason)
        exited = asyncio.create_task(self.process.wait())
        monitor = asyncio.create_task(self._monitor(self.spec))
        try:
            await asyncio.wait({exited, monitor}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            monitor.cancel()
            exited.cancel()
        if self.process.returncode is not None:
            code = self.process.returncode
            self._signal_group(signal.SIGKILL)     # whatever it left behind in its process group
            if not self.spec.restart:              # run to completion: exiting is how it ends
                self.exit_code, self.ended = code, f"exited with {describe_exit(code)}"
                return self.ended
            self._set("crashed", f"exited unasked with {describe_exit(code)}", exit_code=code)
            return describe_exit(code)
        self._set("unhealthy", monitor.result())
        await self._terminate()
        return "unhealthy"

    def _finished(self, reason: str) -> None:
        """A run-to-completion instance whose process exited (or could not start): stopped, not replaced."""
        self.leaving = True
        self.service.spec = dataclasses.replace(self.service.spec,
                                                instances=max(0, self.service.spec.instances - 1))
        self._set("stopped", reason, exit_code=self.exit_code)
        self.supervisor = None
        self.driver._forget(self)

    async def _spawn(self, reason: str) -> asyncio.subprocess.Process:
        spec = self.spec = self.service.spec
        self.ports = self.driver._assign_ports(self, spec)
        environment = {**os.environ, "PYTHONUNBUFFERED": "1", **spec.environment,
                       **{port_variable(name): str(port) for name, port in self.ports.items()},
                       "VAMP_INSTANCE": self.id, "VAMP_SERVICE": spec.id}
        if self.ports:
            environment["PORT"] = str(next(iter(self.ports.values())))
        command = list(spec.command)
        if command[0] in PYTHON_NAMES:
            command[0] = sys.executable
        log_path = self.driver.log_path(self.id)
        with open(log_path, "ab") as log_file:
            log_file.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {self.id}: {reason}\n".encode())
            log_file.flush()
            return await asyncio.create_subprocess_exec(
                *command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, env=environment,
                cwd=spec.workdir, start_new_session=True, preexec_fn=self.driver._child_setup)

    async def _monitor(self, spec: ServiceSpec) -> str:
        """Move the instance to ready when it serves; return why, once it is unhealthy."""
        check = spec.health_check
        if check is None:
            await self._wait_ports_open()
            self._set("ready", "its ports accept connections" if self.ports else "running")
            forever: asyncio.Future[NoReturn] = asyncio.get_running_loop().create_future()
            await forever                   # nothing more to watch: wait for the exit
        port = self.ports[check.port or next(iter(spec.ports))]
        await asyncio.sleep(check.initial_delay)
        deadline = time.monotonic() + check.failures * check.interval
        while (problem := await probe(check, self.driver.host, port)) is not None:
            if time.monotonic() >= deadline:
                return f"no health check passed in {check.failures * check.interval:g}s: {problem}"
            await asyncio.sleep(min(STARTUP_POLL, check.interval))
        self._set("ready", "health check passed")
        failures = 0
        while failures < check.failures:
            await asyncio.sleep(check.interval)
            problem = await probe(check, self.driver.host, port)
            failures = 0 if problem is None else failures + 1
        return f"{failures} health checks failed in a row: {problem}"

    async def _wait_ports_open(self) -> None:
        """Return once every port accepts connections (the caller stops this when the process exits)."""
        pause = STARTUP_POLL
        for port in self.ports.values():
            while not await _port_accepts(self.driver.host, port):
                await asyncio.sleep(pause)
                pause = min(pause * 1.5, PORT_POLL_MAX)

    # -- stopping ----------------------------------------------------------------------------------------
    async def _halt_supervisor(self) -> None:
        """Stop watching and restarting (the process itself keeps running)."""
        if self.supervisor is not None:
            self.supervisor.cancel()
            await asyncio.wait({self.supervisor})
            self.supervisor = None

    def _signal_group(self, signum: int) -> None:
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signum)
            except (ProcessLookupError, PermissionError):
                pass

    async def _terminate(self) -> int | None:
        """SIGTERM to the process group, SIGKILL after the grace; the exit code (None: no process)."""
        process = self.process
        if process is None:
            return None
        if process.returncode is None:
            self._signal_group(signal.SIGTERM)
            try:
                async with asyncio.timeout(self.driver.stop_grace):
                    await process.wait()
            except TimeoutError:
                log.warning("instance %s ignored SIGTERM for %gs: killing it", self.id, self.driver.stop_grace)
        self._signal_group(signal.SIGKILL)         # the process, if it is still there, and anything it left
        try:
            async with asyncio.timeout(KILL_WAIT):
                await process.wait()
        except TimeoutError:
            log.error("instance %s (pid %d) survived SIGKILL for %gs", self.id, process.pid, KILL_WAIT)
        return process.returncode

    async def _stop_now(self, reason: str, *, drain: bool) -> None:
        if self.state == "stopped":
            return
        await self._halt_supervisor()
        if self.state != "stopping":
            self._set("stopping", reason)
        if drain and self.driver.before_stop is not None:
            try:
                await self.driver.before_stop(self.snapshot())
            except Exception:
                log.exception("before_stop failed for instance %s; stopping it anyway", self.id)
        code = await self._terminate()
        if code is None:
            self._set("stopped", "stopped")
        else:
            self._set("stopped", f"stopped with {describe_exit(code)}", exit_code=code)

    async def stop(self, reason: str, *, drain: bool) -> None:
        """Take the instance away for good: drained first when `drain` is set."""
        async with self.lock:
            await self._stop_now(reason, drain=drain)
        self.driver._forget(self)

    async def replace(self, reason: str) -> None:
        """Drain and stop the current process, then start it again on the service's current spec."""
        async with self.lock:
            if self.leaving or self.state == "stopped":
                return
            await self._halt_supervisor()
            self._set("stopping", reason)
            if self.driver.before_stop is not None:
                try:
                    await self.driver.before_stop(self.snapshot())
                except Exception:
                    log.exception("before_stop failed for instance %s; replacing it anyway", self.id)
            await self._terminate()
            self.failures, self.failure = 0, None      # the new spec starts with a clean record
            self.start(reason)

    async def settled(self, timeout: float) -> None:
        """Wait (at most `timeout` seconds) until the instance is ready, failed or on its way out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.leaving and self.state not in ("ready", "crashed",
                                                                                      "unhealthy", "stopped"):
            await asyncio.sleep(STARTUP_POLL)


class LocalOrchestrator:
    """The local-process driver (see the module docstring). `log_dir` receives one log file per instance;
    `before_stop` is awaited before an instance is stopped by scale-down, undeploy or replacement."""

    def __init__(self, log_dir: str | os.PathLike[str], *, before_stop: BeforeStop | None = None,
                 stop_grace: float = 10.0, host: str = "127.0.0.1") -> None:
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.before_stop = before_stop
        self.stop_grace = stop_grace
        self.host = host
        self._services: dict[str, _Service] = {}
        self.subscribers = Subscribers()
        self.background = BackgroundTasks("vamp local orchestrator")
        self._closed = False
        self._child_setup = _parent_death_setup()

    # -- the Orchestrator interface ----------------------------------------------------------------------
    def check(self, spec: ServiceSpec) -> None:
        validate_spec(spec)

    def service_host(self, service_id: str) -> str | None:
        return None                 # dependencies go through the cluster's internal gateway

    def problem(self, service_id: str) -> str | None:
        return None                 # every problem of a local service is an instance's

    async def deploy(self, spec: ServiceSpec) -> None:
        self._check_open()
        validate_spec(spec)
        service = self._services.get(spec.id)
        if service is None:
            service = self._services[spec.id] = _Service(spec)
        else:
            changed = dataclasses.replace(service.spec, instances=spec.instances) != spec
            service.spec = spec
            service.undeploying = False
            if changed:
                service.rolling = self.background.start(self._roll(service, service.rolling))
        self._converge(service)

    async def scale(self, service_id: str, instances: int) -> None:
        self._check_open()
        service = self._service(service_id)
        spec = dataclasses.replace(service.spec, instances=instances)
        validate_spec(spec)
        service.spec = spec
        self._converge(service)

    async def undeploy(self, service_id: str) -> None:
        self._check_open()
        service = self._services.get(service_id)
        if service is None:
            return
        service.undeploying = True
        for runner in service.runners.values():
            self._remove(runner, "undeploy")
        if not service.runners:
            del self._services[service_id]

    async def stop_instance(self, instance_id: str) -> None:
        self._check_open()
        service_id, _, index = instance_id.rpartition("#")
        service = self._service(service_id)
        runner = service.runners.get(int(index)) if index.isdigit() else None
        if runner is None:
            raise KeyError(f"no instance {instance_id!r}")
        if not runner.leaving:
            runner.leaving = True
            service.spec = dataclasses.replace(service.spec, instances=max(0, service.spec.instances - 1))
        await runner.stop("stop requested", drain=False)

    def instances(self, service_id: str | None = None) -> list[Instance]:
        services = (self._services.values() if service_id is None
                    else [self._services[service_id]] if service_id in self._services else [])
        return sorted((runner.snapshot() for service in services for runner in service.runners.values()
                       if runner.state is not None), key=lambda instance: instance.id)

    def subscribe(self) -> asyncio.Queue[InstanceEvent | ServiceEvent]:
        return self.subscribers.subscribe()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.background.cancel_all()
        runners = [runner for service in self._services.values() for runner in service.runners.values()]
        await asyncio.gather(*(self._shut_down(runner) for runner in runners))
        self._services.clear()

    # -- helpers -----------------------------------------------------------------------------------------
    def log_path(self, instance_id: str) -> Path:
        """Where an instance's stdout and stderr go."""
        return self.log_dir / f"{quote(instance_id, safe=':#@+=,')}.log"

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the local orchestrator is closed")

    def _service(self, service_id: str) -> _Service:
        service = self._services.get(service_id)
        if service is None or service.undeploying:
            raise KeyError(f"no service {service_id!r}")
        return service

    def _converge(self, service: _Service) -> None:
        """Start or remove instances until as many as the spec asks for are not on their way out."""
        staying = [runner for runner in service.runners.values() if not runner.leaving]
        wanted = service.spec.instances
        index = 0
        for _ in range(wanted - len(staying)):
            while index in service.runners:
                index += 1
            runner = service.runners[index] = _Runner(self, service, index)
            runner.start("started")
        # Instances that serve are the last to go; among equals, the newest (highest index).
        surplus = sorted(staying, key=lambda runner: (runner.state == "ready", -runner.index))
        for runner in surplus[:max(0, len(staying) - wanted)]:
            self._remove(runner, "scale down")

    def _remove(self, runner: _Runner, reason: str) -> None:
        if not runner.leaving:
            runner.leaving = True
            self.background.start(runner.stop(reason, drain=True))

    async def _roll(self, service: _Service, previous: asyncio.Task | None) -> None:
        """Replace, one at a time, the instances that run an older spec than the service's."""
        if previous is not None:
            await asyncio.wait({previous})
        for runner in sorted(service.runners.values(), key=lambda runner: runner.index):
            if runner.runs_outdated_spec():
                await runner.replace("replaced by a new spec")
                await runner.settled(SETTLE_TIMEOUT)

    async def _shut_down(self, runner: _Runner) -> None:
        async with runner.lock:
            await runner._stop_now("platform closing", drain=False)

    def _forget(self, runner: _Runner) -> None:
        service = runner.service
        if service.runners.get(runner.index) is runner:
            del service.runners[runner.index]
        if service.undeploying and not service.runners and self._services.get(service.spec.id) is service:
            del self._services[service.spec.id]

    def _assign_ports(self, runner: _Runner, spec: ServiceSpec) -> dict[str, int]:
        """A port per name: the one the instance had if it is still free, else one no instance holds."""
        held = {port for service in self._services.values() for other in service.runners.values()
                if other is not runner for port in other.ports.values()}
        ports: dict[str, int] = {}
        for name in spec.ports:
            port = runner.ports.get(name)
            if port is None or port in held or not _bindable(self.host, port):
                port = self._free_port(held)
            ports[name] = port
            held.add(port)
        return ports

    def _free_port(self, held: set[int]) -> int:
        for _ in range(PORT_ATTEMPTS):
            port = _unused_port(self.host)
            if port not in held:
                return port
        raise OSError(f"no free port on {self.host} after {PORT_ATTEMPTS} tries")

