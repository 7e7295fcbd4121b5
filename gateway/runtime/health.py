"""Active health checks (docs/health-checks.md): one probe loop per distinct (target address, check) in each
serving process, and the health each finds, which the balancer reads as part of the target's availability.

`HealthChecks.update(table)` is called by `Runtime.apply` just before a new route table is swapped in: it
starts a `Probe` for each (address, check) the table has that had none, keeps the others with their state
(a target that stays keeps its health and its loop), stops those no longer wanted, and tells every checked
`TargetState` its current health. A target whose check changes gets a new probe, starting afresh.

A probe's first check comes after a random delay within its `interval`, so that the checks of many targets
(and of every worker process) are spread over the interval rather than all sent at once, at every apply and
then at every interval. It opens a fresh connection every `interval` (`open_probe_connection`), sends
`GET path HTTP/1.1` with
`Host` (the check's, else the target's address), `Connection: close` and `User-Agent: vamp-health-check`, and
passes when the status line arrives within `timeout` with a status in `expect`. A tcp gateway's check (path
None) passes when the connection is made. The state machine (`next_state`): a probe starts `unknown`, which
counts as up, so a configuration change never drops traffic; `unhealthy` consecutive failures make the
target unhealthy, `healthy` consecutive successes healthy. Each change is logged once, with what the last
probe saw (`timeout`, `refused`, `status 500`, ...). An unhealthy target is taken out through
`TargetState.set_unhealthy` (gateway.routing.table): the hot path pays nothing for it.
"""
from __future__ import annotations

import asyncio
import logging
import random
import re
import ssl
import time
from typing import TYPE_CHECKING

from gateway.config.model import HealthCheck

if TYPE_CHECKING:
    from gateway.routing.table import RouteTable, TargetState

log = logging.getLogger("vamp.health")

USER_AGENT = "vamp-health-check"
UNCHECKED = "unchecked"     # no health check applies to the target
UNKNOWN = "unknown"         # checked, no verdict yet: counts as up
HEALTHY = "healthy"
UNHEALTHY = "unhealthy"
MAX_STATUS_LINE = 8192      # bytes: a longer first line is no HTTP response

_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([1-9][0-9][0-9])(?:[ \r\n]|$)")

ProbeKey = tuple[str, HealthCheck, "ssl.SSLContext | None", "str | None"]   # (address, check, TLS context, name)


def next_state(state: str, successes: int, failures: int, check: HealthCheck) -> str:
    """The whole state machine: the health after a probe, given the consecutive successes and failures up to
    and including it (one of the two is 0). Enough failures make any state unhealthy, enough successes any
    state healthy; anything less leaves the state as it was."""
    if failures >= check.unhealthy:
        return UNHEALTHY
    if successes >= check.healthy:
        return HEALTHY
    return state


async def open_probe_connection(host: str, port: int, ssl_context: ssl.SSLContext | None = None,
                                server_hostname: str | None = None
                                ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A probe's fresh connection to a target: plain TCP, or TLS with `ssl_context` (the certificate checked
    against `server_hostname`, by default `host`)."""
    if ssl_context is None:
        return await asyncio.open_connection(host, port, limit=MAX_STATUS_LINE)
    return await asyncio.open_connection(host, port, limit=MAX_STATUS_LINE, ssl=ssl_context,
                                         server_hostname=server_hostname or host)


def request_of(check: HealthCheck, address: str) -> bytes:
    """The probe's request to the target at `address` (host:port)."""
    return (f"GET {check.path} HTTP/1.1\r\nHost: {check.host or address}\r\nConnection: close\r\n"
            f"User-Agent: {USER_AGENT}\r\nAccept: */*\r\n\r\n").encode("ascii")


async def probe(host: str, port: int, check: HealthCheck, request: bytes | None,
                ssl_context: ssl.SSLContext | None = None, server_hostname: str | None = None) -> tuple[bool, str]:
    """One check of one target: (passed, what was seen: `status 200`, `connected`, `timeout`, `refused`, ...).
    `request`: the bytes to send (`request_of`); None for a TCP connect check."""
    try:
        async with asyncio.timeout(check.timeout):
            reader, writer = await open_probe_connection(host, port, ssl_context, server_hostname)
            try:
                if request is None:
                    return True, "connected"
                writer.write(request)
                line = await reader.readline()
            finally:
                writer.close()
    except TimeoutError:
        return False, "timeout"
    except ConnectionRefusedError:
        return False, "refused"
    except ssl.SSLError as exc:
        return False, f"TLS: {exc.reason or exc}"
    except OSError as exc:
        return False, (exc.strerror or str(exc) or type(exc).__name__).lower()
    except ValueError:                   # (readline past MAX_STATUS_LINE)
        return False, "invalid response"
    if not line:
        return False, "closed without a response"
    match = _STATUS_LINE.match(line)
    if match is None:
        return False, "invalid response"
    status = int(match.group(1))
    low, high = check.expect
    return low <= status <= high, f"status {status}"


class Probe:
    """The probe loop of one target address with one check, what it found, and the targets it speaks for (the
    same address may be a target of several routes and gateways)."""

    def __init__(self, host: str, port: int, address: str, check: HealthCheck) -> None:
        self.host = host
        self.port = port
        self.address = address
        self.check = check
        self.request = None if check.path is None else request_of(check, address)
        self.ssl_context: ssl.SSLContext | None = None     # for targets reached over TLS
        self.server_hostname: str | None = None
        self.state = UNKNOWN
        self.successes = 0            # consecutive, up to the last probe
        self.failures = 0
        self.result: str | None = None          # what the last probe saw
        self.checked_at: float | None = None    # when it ended (wall clock)
        self.targets: list[TargetState] = []
        self.task: asyncio.Task[None] | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.task = loop.create_task(self._run(), name=f"health check of {self.address}")

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.check.interval
        await asyncio.sleep(random.uniform(0.0, interval))     # spread (see the module docstring)
        while True:
            started = loop.time()
            try:
                passed, result = await probe(self.host, self.port, self.check, self.request, self.ssl_context,
                                             self.server_hostname)
            except Exception as exc:  # noqa: BLE001 - the loop must outlive anything one probe runs into
                log.exception("health check of %s failed unexpectedly", self.address)
                passed, result = False, type(exc).__name__
            self.record(passed, result)
            await asyncio.sleep(max(0.0, started + interval - loop.time()))

    def record(self, passed: bool, result: str) -> None:
        """Count a probe's outcome; on a change of state, log it once and tell the targets."""
        self.result = result
        self.checked_at = time.time()
        if passed:
            self.successes, self.failures = min(self.successes + 1, self.check.healthy), 0
        else:
            self.successes, self.failures = 0, min(self.failures + 1, self.check.unhealthy)
        state = next_state(self.state, self.successes, self.failures, self.check)
        if state == self.state:
            return
        before, self.state = self.state, state
        if state == UNHEALTHY:
            log.warning("health check %s: %s is unhealthy after %s (%s)", self.describe(), self.address,
                        _checks(self.failures, "failed"), result)
        elif before == UNHEALTHY:
            log.info("health check %s: %s is healthy again after %s (%s)", self.describe(), self.address,
                     _checks(self.successes, "passed"), result)
        else:
            log.debug("health check %s: %s is healthy (%s)", self.describe(), self.address, result)
        for target in self.targets:
            target.set_unhealthy(state == UNHEALTHY)

    def describe(self) -> str:
        return "TCP connect" if self.check.path is None else f"GET {self.check.path}"


def _checks(count: int, outcome: str) -> str:
    return f"{count} {outcome} check" + ("" if count == 1 else "s")


class HealthChecks:
    """Every probe loop of one serving process, by (target address, check)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.probes: dict[ProbeKey, Probe] = {}
        self._by_target: dict[TargetState, Probe] = {}

    def update(self, table: RouteTable) -> None:
        """Probe what `table` checks (see the module docstring), and set each of its targets' health. Called
        just before `table` is swapped in, with no await in between."""
        wanted: dict[ProbeKey, Probe] = {}
        by_target: dict[TargetState, Probe] = {}
        for router, route, target in table.targets():
            check = router.gateway.health_check_of(route.route)
            if check is None or target.target.drained:          # a drained target takes nothing: no probe
                target.set_unhealthy(False)
                continue
            key = (target.address, check, target.ssl_context, target.server_hostname)
            probe = wanted.get(key)
            if probe is None:
                probe = self.probes.get(key)
                if probe is None:
                    probe = Probe(target.host, target.port, target.address, check)
                    probe.ssl_context = target.ssl_context          # an https target is probed over TLS
                    probe.server_hostname = target.server_hostname
                    probe.start(self.loop)
                probe.targets = []
                wanted[key] = probe
            probe.targets.append(target)
            by_target[target] = probe
            target.set_unhealthy(probe.state == UNHEALTHY)
        for key, probe in self.probes.items():
            if key not in wanted:
                probe.stop()
        self.probes = wanted
        self._by_target = by_target

    def status(self, target: TargetState) -> dict[str, object]:
        """`health` (unchecked, unknown, healthy, unhealthy), `checked_at` (wall clock, None before the first
        probe) and `check_result` (what the last probe saw) of a target of the table last given to `update`."""
        probe = self._by_target.get(target)
        if probe is None:
            return {"health": UNCHECKED, "checked_at": None, "check_result": None}
        return {"health": probe.state, "checked_at": probe.checked_at, "check_result": probe.result}

    async def close(self) -> None:
        """Stop every probe loop and wait for them to end."""
        probes, self.probes, self._by_target = self.probes, {}, {}
        tasks = [probe.task for probe in probes.values() if probe.task is not None]
        for probe in probes.values():
            probe.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
