"""Following the store: a `ConfigManager` kept serving what etcd holds under a prefix (gateway.store.keys).

It reads every key of the prefix once (one range read: the configuration and the revision it is at), hands the
configuration to the manager, then watches the prefix from the next revision. Each change goes through the
manager's `replace` — the one path that validates, pushes to the workers and persists — whole: the events
aetcd has queued when the follower wakes are applied together, and every event of one etcd answer is queued
before it wakes (`EtcdClient.watch_range`), so a transaction that changes several gateways is never served
half. Keys that do not make a valid configuration (garbage written with etcdctl, two gateways claiming one
port) are refused whole: the gateway keeps serving what it had, logs the key and why, and says so in its
status; the next revision that makes a valid configuration is served. A valid revision this process cannot
apply (a port taken on this host) is refused the same way, and tried again every RETRY_APPLY seconds.

When the store cannot be reached the gateway keeps serving the last configuration it applied and says so
(`up` False, since when, why). The follower reconnects with back-off (gateway.common.backoff: 0.1 s doubling to 5 s,
with jitter) and resumes its watch from its last revision; if etcd compacted that revision away, it reads
everything again and the manager works out the difference (drains included). Started while etcd is
unreachable, it serves the configuration persisted in the state directory (source "state directory"), or,
without one, waits for the store: a gateway never serves an empty configuration it was not given.

`--bind` (a replica's own listen address) is applied to every gateway before the manager sees it; the store,
the state directory's `store.json` (MARK_FILE: which store revision the persisted configuration is) and the
status speak of the store's configuration.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import aetcd.exceptions

from gateway.common.backoff import Backoff
from gateway.common.errors import Conflict
from gateway.config.load import ConfigError, assemble
from gateway.config.model import Config
from gateway.config.state import StateError, write_atomically
from gateway.runtime.manager import ConfigManager
from gateway.store.etcd import STORE_ERRORS, EtcdClient, StoreAddress, describe
from gateway.store.keys import BadValue, Entry, Layout, StoreState

log = logging.getLogger("vamp.store")

MARK_FILE = "store.json"    # in the state directory, next to gateways.json
RETRY_APPLY = 5.0           # seconds before a revision this process could not apply (a port taken) is tried again

# What loading the store may fail with: the store out of reach, or keys that make no valid configuration.
LOAD_ERRORS: tuple[type[BaseException], ...] = (*STORE_ERRORS, BadValue, ConfigError)

SOURCE_STORE = "store"
SOURCE_STATE_DIR = "state directory"


class WatchEnded(aetcd.exceptions.ClientError):   # type: ignore[misc]  # aetcd ships no types
    """The store ended the watch without an error (the client was closed)."""


def bound(config: Config, bind: str | None) -> Config:
    """`config` with every gateway listening on `bind` (None: as configured), checked again as a whole (two
    gateways on one port with different binds may clash once bound alike); ConfigError."""
    if bind is None:
        return config
    return assemble(tuple(replace(gateway, bind=bind) for gateway in config.gateways), config.geo)


class Follower:
    """Keeps `manager` serving the gateways under `address.prefix` (see the module docstring)."""

    def __init__(self, manager: ConfigManager, address: StoreAddress, *, bind: str | None = None) -> None:
        self.manager = manager
        self.address = address
        self.bind = bind
        self.layout = Layout(address.prefix)
        self.state = StoreState(self.layout)
        # what is served
        self.config: Config | None = None           # the store's configuration last applied (before --bind)
        self.revision: int | None = None            # the store revision it is
        self.revisions: dict[str, int] = {}         # each gateway's key's mod revision in it
        self.source = SOURCE_STORE
        self.processed = 0                          # the revision watched up to (applied, or refused)
        self.refused: str | None = None             # why the last revision seen was not applied
        # the store
        self.up = False
        self.since = time.time()
        self.down_reason: str | None = "not connected yet"
        self._client: EtcdClient | None = None
        self._reload_needed = False
        self._closing = False
        self._retry_apply = False                   # the last revision was valid but could not be applied here
        self.retry_apply = RETRY_APPLY
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    # -- lifecycle -----------------------------------------------------------------------------------------
    async def start(self, before_load: Callable[[], Awaitable[None]] | None = None) -> None:
        """Load the prefix and start the manager with it (or with the state directory's configuration when the
        store cannot be reached; without one, wait for the store), then follow. `before_load` runs before each
        attempt to load until one succeeds (seeding an empty prefix)."""
        try:
            config = await self._first_load(before_load)
        except LOAD_ERRORS as exc:
            await self._not_loaded(exc)
            if not await self._start_from_state_dir():
                await self._wait_for_store(before_load)
        else:
            await self._start_manager(config)
        self._task = asyncio.get_running_loop().create_task(self._follow(), name="store follower")

    async def close(self) -> None:
        """Stop following (the manager serves on) and close the connection."""
        self._closing = True
        task, self._task = self._task, None
        while task is not None and not task.done():     # again if a library took the cancellation for its own
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)
        if task is not None and not task.cancelled() and task.exception() is not None:
            log.error("following the configuration store had failed: %s", task.exception())
        await self._drop_client()

    async def _first_load(self, before_load: Callable[[], Awaitable[None]] | None) -> Config:
        """The configuration the store holds, bound (the manager starts with it); raises what failed."""
        if before_load is not None:
            await before_load()
        await self._read()
        self._mark_up()
        config, revisions = self.state.config()
        served = bound(config, self.bind)
        self.config, self.revisions = config, revisions
        return served

    async def _start_manager(self, config: Config) -> None:
        await self.manager.start(config)
        self.revision = self.processed = self.state.revision
        self._served()

    async def _start_from_state_dir(self) -> bool:
        store = self.manager.store
        stored = None
        if store is not None:
            try:
                stored = store.load()
            except StateError as exc:
                log.error("the state directory cannot be used: %s", exc)
        if stored is None:
            return False
        try:
            served = bound(stored, self.bind)
        except ConfigError as exc:
            log.error("the state directory's configuration cannot be served with --bind %s: %s", self.bind, exc)
            return False
        log.warning("serving the configuration last applied in %s until the configuration store %s can be "
                    "read", store.directory if store else "?", self.address)
        mark = self._read_mark()
        self.revision = mark.get("revision") if isinstance(mark.get("revision"), int) else None
        gateways = mark.get("gateways")
        self.revisions = ({name: rev for name, rev in gateways.items() if isinstance(rev, int)}
                          if isinstance(gateways, dict) else {})
        self.source = SOURCE_STATE_DIR
        self._reload_needed = True
        await self.manager.start(served)
        return True

    async def _wait_for_store(self, before_load: Callable[[], Awaitable[None]] | None) -> None:
        log.warning("waiting for the configuration store %s (no configuration in the state directory to serve "
                    "meanwhile): %s", self.address, self.down_reason or self.refused)
        backoff = Backoff()
        while True:
            await asyncio.sleep(backoff.next())
            try:
                config = await self._first_load(before_load)
            except LOAD_ERRORS as exc:
                await self._not_loaded(exc)
                continue
            await self._start_manager(config)
            return

    async def _not_loaded(self, why: BaseException) -> None:
        if isinstance(why, (BadValue, ConfigError)):
            self._refuse(why)
        else:
            self._mark_down(why)
            await self._drop_client()

    # -- following -----------------------------------------------------------------------------------------
    async def _follow(self) -> None:
        backoff = Backoff()
        while not self._closing:
            try:
                if self._reload_needed:
                    await self._reload()
                await self._watch(backoff)
            except aetcd.exceptions.RevisionCompactedError as exc:
                log.warning("the configuration store compacted its history past revision %d (%s): reading "
                            "everything again", self.state.revision, exc)
                self._reload_needed = True
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - whatever failed, keep serving and try again
                if not isinstance(exc, STORE_ERRORS):
                    log.exception("following the configuration store failed")
                self._mark_down(exc)
                await self._drop_client()
                await asyncio.sleep(backoff.next())

    async def _reload(self) -> None:
        await self._read()
        self._mark_up()
        await self._apply()
        self._reload_needed = False

    async def _watch(self, backoff: Backoff) -> None:
        client = await self._connected()
        queue: asyncio.Queue[Any] = asyncio.Queue()

        async def deliver(item: Any) -> None:
            queue.put_nowait(item)

        # The watch ends with the connection: an error drops it (a fresh one for the next attempt), close()
        # closes it, and etcd cancels a watch whose revision it compacted.
        await client.watch_range(self.layout.start, self.layout.end, self.state.revision + 1, deliver)
        self._mark_up()
        backoff.reset()
        while True:
            if self._retry_apply:       # this process could not apply the last revision: try again later
                try:
                    first = await asyncio.wait_for(queue.get(), self.retry_apply)
                except TimeoutError:
                    await self._apply()
                    continue
            else:
                first = await queue.get()
            batch = [first]
            while not queue.empty():
                batch.append(queue.get_nowait())
            events = [item for item in batch if not (item is None or isinstance(item, BaseException))]
            ended = [item for item in batch if item is None or isinstance(item, BaseException)]
            for event in events:
                if event.kind == "PUT":
                    self.state.put(event.kv.key, event.kv.value, event.kv.mod_revision)
                else:
                    self.state.delete(event.kv.key, event.kv.mod_revision)
            if events:
                await self._apply()
            if ended:
                raise ended[0] if ended[0] is not None else WatchEnded("the watch ended")

    async def _read(self) -> None:
        client = await self._connected()
        found = await client.get_range(self.layout.start, self.layout.end)
        self.state.load({kv.key: Entry(kv.value, kv.mod_revision) for kv in found.kvs}, int(found.header.revision))

    async def _apply(self) -> None:
        """Serve what `self.state` holds, or refuse it whole."""
        revision = self.state.revision
        self._retry_apply = False
        try:
            config, revisions = self.state.config()
            served = bound(config, self.bind)
            if served != self.manager.desired:
                await self.manager.replace(served)
        except (BadValue, ConfigError) as exc:
            self._refuse(exc)
        except Exception as exc:  # noqa: BLE001 - a worker could not apply it (Conflict: a port taken, ...)
            if not isinstance(exc, Conflict):
                log.exception("applying revision %d failed", revision)
            self._refuse(exc)
            self._retry_apply = True
        else:
            self.config, self.revisions, self.revision = config, revisions, revision
            self._served()
        finally:
            self.processed = max(self.processed, revision)
            self._notify()

    def _served(self) -> None:
        if self.refused is not None:
            log.info("revision %s of the configuration store is valid again: serving it", self.revision)
        self.refused = None
        self.source = SOURCE_STORE
        self._write_mark()
        self._notify()

    def _refuse(self, error: BaseException) -> None:
        what = error.message if isinstance(error, Conflict) else str(error)
        self.refused = f"revision {self.state.revision} not applied: {what}"
        log.error("configuration store %s: %s; still serving revision %s", self.address, self.refused,
                  self.revision)

    # -- the connection --------------------------------------------------------------------------------------
    async def _connected(self) -> EtcdClient:
        if self._client is None:
            self._client = EtcdClient(self.address)
        await self._client.connect()
        return self._client

    async def _drop_client(self) -> None:
        """A fresh connection for the next attempt (a restarted etcd forgets authentication tokens)."""
        client, self._client = self._client, None
        if client is not None:
            await client.close_quietly()

    def _mark_up(self) -> None:
        if not self.up:
            self.up, self.since, self.down_reason = True, time.time(), None
            log.info("configuration store %s reachable at revision %d", self.address, self.state.revision)
            self._notify()

    def _mark_down(self, error: BaseException) -> None:
        reason = describe(error)
        if self.up or self.down_reason != reason:
            log.warning("configuration store %s unreachable (%s); serving revision %s", self.address, reason,
                        self.revision)
        if self.up:
            self.up, self.since = False, time.time()
        self.down_reason = reason
        self._notify()

    # -- waiting ------------------------------------------------------------------------------------------
    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for(self, revision: int, timeout: float) -> bool:
        """Whether this process serves `revision` (or a later one) within `timeout` seconds."""
        return await self._wait(lambda: self.revision is not None and self.revision >= revision, timeout)

    async def wait_processed(self, revision: int, timeout: float) -> bool:
        """Whether the follower has seen `revision` (and applied or refused it) within `timeout` seconds."""
        return await self._wait(lambda: self.processed >= revision, timeout)

    async def _wait(self, condition: Callable[[], bool], timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not condition():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return condition()
        return True

    # -- the state directory's mark ---------------------------------------------------------------------------
    def _write_mark(self) -> None:
        store = self.manager.store
        if store is None or self.source != SOURCE_STORE:
            return
        data = {"store": str(self.address), "revision": self.revision, "gateways": self.revisions}
        try:
            write_atomically(store.directory / MARK_FILE, json.dumps(data, indent=2).encode() + b"\n")
        except StateError as exc:
            log.warning("%s", exc)

    def _read_mark(self) -> dict[str, Any]:
        """What the state directory says of the store revision it holds ({} when it says nothing usable)."""
        store = self.manager.store
        if store is None:
            return {}
        try:
            data = json.loads((store.directory / MARK_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("store") != str(self.address):
            return {}
        return data
