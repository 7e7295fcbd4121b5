"""Where the proxy runs: in this process (`LocalWorker`) or in N worker processes sharing each port with
SO_REUSEPORT (`ProcessWorker`, `--workers N`).

The supervising process (admin API, state, drains) talks to each worker process over its stdin/stdout pipes
with length-prefixed pickled messages — both ends are this code base at the same version, and the pipes
belong to the parent and its own children. Messages: `apply` (a whole effective `Config`), `snapshot` (the
worker's counters), `shutdown` (graceful stop). A worker whose supervisor vanishes (EOF on stdin) stops; a
worker that dies is started again by its supervisor with the configuration in force.
"""
from __future__ import annotations

import asyncio
import logging
import os
import pickle
import signal
import struct
import sys
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from gateway.config.model import Config
from gateway.runtime import snapshot as snapshots
from gateway.runtime.runtime import Runtime

log = logging.getLogger("vamp.workers")

FRAME = struct.Struct("!I")
CALL_TIMEOUT = 30.0          # seconds a worker gets to answer one message (an apply opens listeners)


class ApplyError(RuntimeError):
    """A worker could not serve a configuration (e.g. a port is taken); it kept the previous one."""


class Worker(Protocol):
    """Where a ConfigManager's configuration is served: this process, or one worker process."""

    async def start(self, config: Config) -> None: ...

    async def apply(self, config: Config) -> None: ...

    async def snapshot(self) -> dict[str, Any]: ...

    async def shutdown(self, grace: float) -> None: ...

    def reopen_access_logs(self) -> None:
        """SIGUSR1: reopen the access log files (after logrotate moved them)."""
        ...


class LocalWorker:
    """The proxy in this very process: the default with one worker."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def start(self, config: Config) -> None:
        await self.apply(config)

    async def apply(self, config: Config) -> None:
        try:
            await self.runtime.apply(config)
        except OSError as exc:
            raise ApplyError(f"cannot listen: {exc.strerror or exc}") from exc

    async def snapshot(self) -> dict[str, Any]:
        return snapshots.take(self.runtime)

    async def shutdown(self, grace: float) -> None:
        await self.runtime.shutdown(grace)

    def reopen_access_logs(self) -> None:
        self.runtime.reopen_access_logs()


class ProcessWorker:
    """One worker process, restarted by `watch` if it dies."""

    def __init__(self, index: int, worker_args: list[str],
                 current_config: Callable[[], Config]) -> None:
        self.index = index
        self.worker_args = worker_args
        self.current_config = current_config
        self.proc: asyncio.subprocess.Process | None = None
        self.lock = asyncio.Lock()
        self.stopping = False
        self.watcher: asyncio.Task[None] | None = None
        self.restarts = 0

    async def start(self, config: Config) -> None:
        stdout = _stdout_copy()          # where a worker writes an access log whose path is "-"
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "worker", *self.worker_args, "--stdout-fd", str(stdout),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, pass_fds=(stdout,))
        await self.apply(config)
        if self.watcher is None:
            self.watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        """Restart the worker whenever it exits unasked, with the configuration in force then."""
        while not self.stopping:
            proc = self.proc
            assert proc is not None                   # started before it is watched
            code = await proc.wait()
            if self.stopping:
                return
            self.restarts += 1
            log.warning("worker %d (pid %d) exited with %s; starting it again", self.index, proc.pid, code)
            try:
                async with self.lock:
                    pass                       # let a call that was waiting on the dead worker fail first
                await self.start(self.current_config())
            except (ApplyError, OSError) as exc:
                log.error("worker %d failed to restart: %s", self.index, exc)
                await asyncio.sleep(1.0)

    async def _call(self, message: dict[str, Any]) -> dict[str, Any]:
        async with self.lock:
            proc = self.proc
            if proc is None or proc.returncode is not None:
                raise ApplyError(f"worker {self.index} is not running")
            data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
            stdin, stdout = proc.stdin, proc.stdout
            assert stdin is not None and stdout is not None     # both are pipes (start)
            try:
                stdin.write(FRAME.pack(len(data)) + data)
                await stdin.drain()
                reply: dict[str, Any] = await asyncio.wait_for(_read_frame(stdout), CALL_TIMEOUT)
                return reply
            except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
                raise ApplyError(f"worker {self.index} did not answer: {exc or type(exc).__name__}") from exc

    async def apply(self, config: Config) -> None:
        reply = await self._call({"op": "apply", "config": config})
        if not reply.get("ok"):
            raise ApplyError(reply.get("error", "worker refused the configuration"))

    async def snapshot(self) -> dict[str, Any]:
        try:
            snapshot: dict[str, Any] = (await self._call({"op": "snapshot"}))["snapshot"]
            return snapshot
        except ApplyError:
            return snapshots.merge([])       # a worker being restarted counts as empty

    def reopen_access_logs(self) -> None:
        proc = self.proc
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGUSR1)

    async def shutdown(self, grace: float) -> None:
        self.stopping = True
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        try:
            await self._call({"op": "shutdown", "grace": grace})
        except ApplyError:
            pass
        try:
            await asyncio.wait_for(proc.wait(), grace + 5)
        except TimeoutError:
            proc.kill()
            await proc.wait()


_stdout: list[int] = []


def _stdout_copy() -> int:
    """A copy of this process's standard output (made once) that worker processes inherit: their own fd 1 is
    the pipe of the messages above."""
    if not _stdout:
        _stdout.append(os.dup(1))
    return _stdout[0]


async def _read_frame(reader: asyncio.StreamReader) -> Any:
    (size,) = FRAME.unpack(await reader.readexactly(FRAME.size))
    return pickle.loads(await reader.readexactly(size))


async def serve_worker() -> int:
    """The body of `python -m gateway worker`: obey the supervisor on stdin, answer on stdout."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, lambda: None)   # the supervisor decides when workers stop
    runtime = Runtime(loop, reuse_port=True)
    loop.add_signal_handler(signal.SIGUSR1, runtime.reopen_access_logs)   # (sent on by the supervisor)
    reader = asyncio.StreamReader(limit=2 ** 30)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, sys.stdout.buffer)
    writer = asyncio.StreamWriter(transport, protocol, None, loop)

    async def reply(message: dict[str, Any]) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        writer.write(FRAME.pack(len(data)) + data)
        await writer.drain()

    handlers: dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]] = {}

    async def apply(message: dict[str, Any]) -> dict[str, Any]:
        try:
            await runtime.apply(message["config"])
        except OSError as exc:
            return {"ok": False, "error": f"cannot listen: {exc.strerror or exc}"}
        return {"ok": True}

    async def snapshot(_: dict[str, Any]) -> dict[str, Any]:
        return {"snapshot": snapshots.take(runtime)}

    handlers.update(apply=apply, snapshot=snapshot)
    while True:
        try:
            message = await _read_frame(reader)
        except (asyncio.IncompleteReadError, ConnectionError):
            await runtime.shutdown(5.0)          # the supervisor is gone: never outlive it
            return 0
        if message["op"] == "shutdown":
            await runtime.shutdown(message.get("grace", 30.0))
            await reply({"ok": True})
            return 0
        await reply(await handlers[message["op"]](message))
