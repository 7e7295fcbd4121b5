"""The gateway's control loop: the desired configuration, its drains, its persistence, and its workers.

Every change — an admin API write, SIGHUP, a drain that ends — goes through `ConfigManager`, one at a time:
validate the whole new configuration, work out the drains it starts, push the effective configuration to
every worker (each compiles it off its hot path and swaps it in one step), persist it, and only then answer.
If any step fails, the workers get the previous configuration back and nothing is persisted: an invalid or
impossible change leaves everything as it was. The manager is the standalone gateway's ConfigSource
(gateway.config.source): the admin API's gateway handlers read and write through it.
"""
from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Sequence
from datetime import datetime, UTC
from typing import Any

from gateway.common.errors import Conflict, Invalid, NotFound
from gateway.config import edit
from gateway.config.load import ConfigError, gateway_to_dict
from gateway.config.model import Config, Gateway
from gateway.config.state import StateError, StateStore
from gateway.runtime import snapshot as snapshots
from gateway.runtime.drain import Drainer
from gateway.runtime.workers import ApplyError, Worker

log = logging.getLogger("vamp.controller")

DRAIN_CHECK_INTERVAL = 0.25     # seconds between two looks at what drains


class ConfigManager:
    def __init__(self, workers: Sequence[Worker], store: StateStore | None) -> None:
        self.workers = workers
        self.store = store
        self.desired = Config()
        self.effective = Config()
        self.drainer = Drainer()
        self.lock = asyncio.Lock()
        self._drain_task: asyncio.Task[None] | None = None

    # -- lifecycle -----------------------------------------------------------------------------------
    async def start(self, config: Config) -> None:
        self.drainer.plan(self.effective, config, time.time())
        self.desired = config
        self.effective = self.drainer.effective(config)
        await asyncio.gather(*(worker.start(self.effective) for worker in self.workers))
        if self.store is not None:
            self.store.save(self.desired)
        self._drain_task = asyncio.get_running_loop().create_task(self._watch_drains())

    async def shutdown(self, grace: float) -> None:
        if self._drain_task is not None:
            self._drain_task.cancel()
        await asyncio.gather(*(worker.shutdown(grace) for worker in self.workers))

    # -- changes -------------------------------------------------------------------------------------
    async def replace(self, config: Config) -> None:
        """Serve `config` instead of the current one (SIGHUP, `PUT` of everything)."""
        async with self.lock:
            await self._change(config)

    async def _change(self, desired: Config) -> None:
        saved_drains = copy.copy(self.drainer.drains)
        previous_effective = self.effective
        self.drainer.plan(self.effective, desired, time.time())
        effective = self.drainer.effective(desired)
        try:
            await self._push(effective)
            if self.store is not None:
                self.store.save(desired)
        except (ApplyError, StateError) as exc:
            self.drainer.drains = saved_drains
            try:
                await self._push(previous_effective)
            except ApplyError as again:
                log.error("could not restore the previous configuration: %s", again)
            raise Conflict(str(exc)) from exc
        self.desired = desired
        self.effective = effective
        await self._expire_drains()

    async def _push(self, effective: Config) -> None:
        results = await asyncio.gather(*(w.apply(effective) for w in self.workers), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    # -- the gateway API's source (gateway.config.source) ---------------------------------------------
    async def list_gateways(self) -> list[dict[str, Any]]:
        snap = await self.snapshot()
        return [self.document(name, snap) for name in self.names()]

    async def get_gateway(self, name: str) -> dict[str, Any]:
        return self.document(name, await self.snapshot())

    async def create_gateway(self, name: str, body: dict[str, Any], *, validate_only: bool = False
                             ) -> dict[str, Any]:
        async with self.lock:
            if self.desired.gateway(name) is not None:
                raise Conflict(f"gateway {name!r} exists already")
            gateway = await self._write(name, body, validate_only)
        return await self._answer(name, gateway, validate_only)

    async def put_gateway(self, name: str, body: dict[str, Any], *, validate_only: bool = False
                          ) -> tuple[dict[str, Any], bool]:
        async with self.lock:
            created = self.desired.gateway(name) is None
            gateway = await self._write(name, body, validate_only)
        return await self._answer(name, gateway, validate_only), created

    async def patch_gateway(self, name: str, patch: dict[str, Any], *, validate_only: bool = False
                            ) -> dict[str, Any]:
        async with self.lock:
            current = self.desired.gateway(name)
            if current is None:
                raise NotFound(f"no gateway {name!r}")
            try:
                body = edit.patched(current, patch)
            except ConfigError as exc:
                raise Invalid(str(exc), exc.pointer(name)) from exc
            gateway = await self._write(name, body, validate_only)
        return await self._answer(name, gateway, validate_only)

    async def delete_gateway(self, name: str, *, validate_only: bool = False) -> dict[str, Any]:
        async with self.lock:
            if self.desired.gateway(name) is None:
                raise NotFound(f"no gateway {name!r}")
            await self._write(name, None, validate_only)
        return await self._answer(name, None, validate_only)

    async def _write(self, name: str, body: dict[str, Any] | None, validate_only: bool) -> Gateway | None:
        """Gateway `name` replaced by `body` (None: removed) in the desired configuration, validated whole and
        (unless `validate_only`) applied: the gateway as written. The caller holds the lock."""
        try:
            config = edit.with_gateway(self.desired, name, body)
        except ConfigError as exc:
            raise Invalid(str(exc), exc.pointer(name)) from exc
        if not validate_only:
            await self._change(config)
        return config.gateway(name)

    async def _answer(self, name: str, gateway: Gateway | None, validate_only: bool) -> dict[str, Any]:
        """What a write answers: the gateway as it would be (validate_only), or as it is now, with its status
        (`removed` once gone)."""
        if validate_only:
            return {"name": name, **gateway_to_dict(gateway)} if gateway else {"name": name}
        try:
            return self.document(name, await self.snapshot())
        except NotFound:
            return {"name": name, "status": {"state": "removed"}}

    # -- drains --------------------------------------------------------------------------------------
    async def _watch_drains(self) -> None:
        while True:
            await asyncio.sleep(DRAIN_CHECK_INTERVAL)
            if self.drainer.next_deadline() is None:
                continue
            async with self.lock:
                try:
                    await self._expire_drains()
                except Exception:  # noqa: BLE001 - the watcher must survive a failed round
                    log.exception("draining check failed")

    async def _expire_drains(self) -> None:
        if self.drainer.next_deadline() is None:
            return
        snap = await self.snapshot()
        if not self.drainer.expire(self.effective, lambda key: snapshots.usage(snap, key), time.time()):
            return
        effective = self.drainer.effective(self.desired)
        await self._push(effective)
        self.effective = effective

    # -- reading -------------------------------------------------------------------------------------
    async def snapshot(self) -> dict[str, Any]:
        return snapshots.merge(list(await asyncio.gather(*(w.snapshot() for w in self.workers))))

    def names(self) -> list[str]:
        """Every gateway the admin API shows: the configured ones and those still draining after removal."""
        return sorted(gw.name for gw in self.effective.gateways)

    def document(self, name: str, snap: dict[str, Any]) -> dict[str, Any]:
        """A gateway as the admin API shows it: its configuration plus a read-only `status` (`revision`: the store
        revision of its configuration in a fleet, gateway.store.fleet; None here)."""
        desired = self.desired.gateway(name)
        served = self.effective.gateway(name)
        if served is None:
            raise NotFound(f"no gateway {name!r}")
        shown = desired if desired is not None else served
        gsnap = snap["gateways"].get(name, {"routes": {}})
        routes: dict[str, Any] = {}
        for route in served.routes:
            rsnap = gsnap["routes"].get(route.name, {"targets": {}})
            targets = {}
            for target in route.targets:
                tsnap = rsnap["targets"].get(target.address, {})
                key = (name, route.name, target.address)
                if target.drain or route.drain:
                    state, ends_at = self._drain_state(key)
                else:
                    state, ends_at = ("down" if tsnap.get("down") else "active"), None
                checked_at = tsnap.get("checked_at")
                targets[target.address] = {
                    "state": state, "in_flight": tsnap.get("in_flight", 0),
                    "requests": tsnap.get("requests", 0), "drain_ends_at": ends_at,
                    "health": tsnap.get("health", "unchecked"),
                    "checked_at": None if checked_at is None else _timestamp(checked_at, "milliseconds"),
                    "check_result": tsnap.get("check_result"),
                }
            state, ends_at = self._drain_state((name, route.name)) if route.drain else ("active", None)
            routes[route.name] = {"state": state, "drain_ends_at": ends_at, "targets": targets}
        ghost = desired is None
        return {"name": name, **gateway_to_dict(shown),
                "status": {"state": "draining" if ghost else "active",
                           "drain_ends_at": self._drain_state((name,))[1] if ghost else None,
                           "revision": None, "routes": routes}}

    def _drain_state(self, key: tuple[str, ...]) -> tuple[str, str | None]:
        """(`draining`, when it will end at the latest) or (`drained`, when it ended) of what drains: a target
        drains with its route, and a route with its gateway, too."""
        drains = self.drainer.containing(key)
        over = [drain.ended for drain in drains if drain.ended is not None]     # (`over`)
        if over:
            return "drained", _timestamp(min(over))
        if not drains:
            return "draining", None
        return "draining", _timestamp(min(drain.deadline for drain in drains))


def _timestamp(seconds: float, timespec: str = "seconds") -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec=timespec)
