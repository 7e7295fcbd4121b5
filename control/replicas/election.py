"""Which replica leads: an etcd lease and the key PREFIX/leader. One leader runs the engine (orchestrator actions,
SLAs, workflows); the others serve the API and forward to it (control.replicas.forwarding).

- A candidate is granted a lease of `ttl` seconds and creates PREFIX/leader with it, only if the key is absent
  (one txn: create_revision == 0). The value is its record, JSON {id, pid, host, api_url, since}.
- The leader refreshes its lease every ttl/3 and watches its key. It has lost the leadership when the key is gone
  or is not the one it created any more, or when no refresh has succeeded for `ttl - margin` seconds: before etcd
  can expire the lease and let another replica in. Then `lost()` returns, and the platform stops acting
  (control/platform.py exits 3; a supervisor starts it again, as a follower). The store's writes are fenced on
  the key too (control.replicas.store): even a leader that has not yet noticed cannot write once it is gone.
- A follower watches the key (and reads it every `ttl` seconds, should a watch go quiet) and campaigns as soon as
  it is deleted: when the leader resigns, at once; when the leader dies, once its lease expires, at most `ttl`
  seconds after its last refresh.
- Resigning (a leader stopping cleanly, or one that lost, once it has stopped acting) revokes the lease: the
  key goes at once.
- A new leader acts only once the lease of the leader before it is gone (`predecessor_gone`): revoked by that
  leader after its instances stopped, or expired. So two leaders never run instances at once, even when the
  key was taken from a leader that still runs (deleted by hand).

The campaign runs on the etcd connection's own loop (control.replicas.etcd), where a busy platform loop cannot
delay a keep-alive; what it finds is handed to the platform's loop (`role`, `leader`, `won()`, `lost()`).
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from control.replicas.etcd import EtcdThread
from control.replicas.leadership import Replica
from gateway import STORE_ERRORS, EtcdClient, describe_store_error

log = logging.getLogger("vamp.replicas")

DEFAULT_TTL = 10                # seconds: the leader's lease
RETRY = 1.0                     # seconds between two tries while the store cannot be reached
REFRESH_RETRY = 0.2             # seconds between two refreshes of the lease after one failed
PREDECESSOR_POLL = 0.2          # seconds between two looks at whether the previous leader's lease is gone
REFRESH_ERRORS: tuple[type[BaseException], ...] = (TimeoutError, *STORE_ERRORS)
WATCH_ENDS: tuple[type[BaseException], ...] = (asyncio.CancelledError, *STORE_ERRORS)


class Election:
    forwards = True             # a follower's API forwards to the leader

    def __init__(self, etcd: EtcdThread, me: Replica, ttl: int = DEFAULT_TTL) -> None:
        if ttl < 2:
            raise ValueError("the leader's lease needs at least 2 seconds")
        self.etcd = etcd
        self.me = me
        self.ttl = ttl
        self.key = etcd.address.key("leader")
        self.store = str(etcd.address)
        self.role = "candidate"                        # candidate | leader | follower | lost
        self.leader: dict[str, Any] | None = None      # the leader's record, as last read
        self.revision: int | None = None               # while leading: the create revision of our leader key
        self.reason: str | None = None                 # why the leadership was lost
        self.ready = False                             # the platform sets it once it resumed as the leader
        self._changed: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._campaign: Any = None                     # concurrent.futures.Future of the campaign
        self._lease: int | None = None                 # our lease, while campaigning and leading
        self._predecessor: int | None = None           # the lease of the leader key last followed

    def status(self) -> dict[str, Any]:
        return {"store": self.store, "id": self.me.id, "role": self.role,
                "ready": self.role == "leader" and self.ready, "leader": self.leader,
                **({"reason": self.reason} if self.role == "lost" else {})}

    # -- the platform's side (its event loop) -------------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        self._campaign = self.etcd.submit(self._run())

    async def won(self) -> int:
        """Wait until this replica leads: the create revision of its leader key (what the store fences on)."""
        while self.role != "leader":
            await self._wait()
        return self.revision  # type: ignore[return-value]  # (set with the role)

    async def lost(self) -> str:
        """Wait until this replica, having led, has lost the leadership: why."""
        while self.role != "lost":
            await self._wait()
        return self.reason or "lost"

    def lose(self, reason: str) -> None:
        """(The platform's loop) The leadership is gone, as something other than the campaign found out (a write
        fenced off): stop campaigning, and `lost()` returns."""
        if self.role != "leader":
            return
        if self._campaign is not None:
            self._campaign.cancel()
        self.role, self.reason = "lost", reason
        assert self._changed is not None
        self._changed.set()

    async def _wait(self) -> None:
        assert self._changed is not None, "start() first"
        self._changed.clear()
        await self._changed.wait()

    async def predecessor_gone(self, timeout: float | None = None) -> bool:
        """(Having won) Wait until the lease of the leader before is gone: it is revoked by that leader once its
        instances have stopped, or it expired (a leader cut off from the store stops acting before that). So
        a new leader never runs what the one before still runs. False if it is still there after `timeout`
        (default: twice the TTL and 5 s; by then a leader that knew nothing of it has found its key gone)."""
        lease = self._predecessor
        if lease is None:
            return True
        patience = 2 * self.ttl + 5 if timeout is None else timeout
        deadline = time.monotonic() + patience
        while time.monotonic() < deadline:
            try:
                found = await self.etcd.call(lambda client: client.get_lease_info(lease, keys=False))
                if found.TTL <= 0:
                    return True
            except Exception as exc:  # noqa: BLE001 - the store may be away for a moment: ask again
                log.warning("cannot tell whether the previous leader's lease is gone: %s", exc)
            await asyncio.sleep(PREDECESSOR_POLL)
        log.warning("the previous leader's lease is still there after %.0f s: leading anyway", patience)
        return False

    async def resign(self) -> None:
        """Stop campaigning; a leader (or one that lost, once it stopped acting) revokes its lease, so that
        another replica takes over at once."""
        if self._campaign is not None:
            self._campaign.cancel()
        lease = self._lease
        if lease is not None and self.role in ("leader", "lost"):
            try:
                await self.etcd.call(lambda client: client.revoke_lease(lease))
            except Exception as exc:  # noqa: BLE001 - resigning is a courtesy: the lease expires anyway
                log.warning("could not resign (the lease expires in %d s): %s", self.ttl, exc)
        self.role = "stopped"

    def _report(self, role: str, leader: dict[str, Any] | None, *, revision: int | None = None,
                reason: str | None = None) -> None:
        """From the campaign's loop: what it found, for the platform's loop."""
        def apply() -> None:
            if self.role == "stopped":
                return
            if (role, leader) != (self.role, self.leader):
                log.info("replica %s: %s%s", self.me.id, role,
                         f" (leader {leader.get('id')} at {leader.get('api_url')})" if role == "follower" and leader
                         else f": {reason}" if reason else "")
            self.role, self.leader = role, leader
            if revision is not None:
                self.revision = revision
            if reason is not None:
                self.reason = reason
            assert self._changed is not None
            self._changed.set()
        assert self._loop is not None
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(apply)

    # -- the campaign (the etcd connection's loop) --------------------------------------------------------
    async def _run(self) -> None:
        client = self.etcd.client
        while True:
            try:
                if await self._campaign_once(client):
                    return                              # led, and lost: the platform stops
            except STORE_ERRORS as exc:
                if self.role != "leader":
                    log.warning("leader election: the store cannot be reached (%s); trying again",
                                describe_store_error(exc))
                await asyncio.sleep(RETRY)

    async def _campaign_once(self, client: EtcdClient) -> bool:
        """One try: lead (until lost: True), or follow until the leader key is deleted (False)."""
        started = time.monotonic()
        lease = await client.lease(self.ttl)
        self._lease = lease.id
        record = json.dumps(self.me.as_json()).encode()
        try:
            won, answers = await client.transaction(
                compare=[client.transactions.create(self.key) == 0],
                success=[client.transactions.put(self.key, record, lease=lease.id)],
                failure=[client.transactions.get(self.key)])
            found = await client.get(self.key) if won else None
        except BaseException:
            await self._revoke(client, lease.id)
            raise
        if won and found is not None and found.lease == lease.id:
            self._report("leader", self.me.as_json(), revision=found.create_revision)
            reason = await self._hold(client, lease.id, found.create_revision, started)
            self._report("lost", self.me.as_json(), reason=reason)
            log.error("replica %s lost the leadership: %s", self.me.id, reason)
            return True                                 # the lease goes once the platform stopped (resign)
        await self._revoke(client, lease.id)
        self._lease = None
        current = answers[0][0][1] if not won and answers and answers[0] else None
        if current is None:
            return False                                # gone already: campaign again
        self._predecessor = current.lease
        self._report("follower", _record(current.value))
        await self._follow(client, current.mod_revision)
        return False

    async def _follow(self, client: EtcdClient, revision: int) -> None:
        """Until the leader key is deleted (a new leader's record is reported as it comes)."""
        def change(kind: str, kv: Any) -> bool:
            if kind == "DELETE":
                return True
            self._predecessor = kv.lease
            self._report("follower", _record(kv.value))
            return False
        await self._watch(client, revision, change, lambda found: found is None)

    async def _hold(self, client: EtcdClient, lease: int, create_revision: int, last_refresh: float) -> str:
        """Keep the lease while the key is ours: why it ended."""
        margin = min(1.0, self.ttl / 4)
        ended: list[str] = []

        def change(kind: str, kv: Any) -> bool:
            if kind == "DELETE":
                ended.append("the leader key was deleted")
            elif kv.create_revision != create_revision:
                ended.append("another replica holds the leader key")
            return bool(ended)

        def gone(found: Any) -> bool:
            if found is None or found.create_revision != create_revision:
                ended.append("the leader key is gone")
            return bool(ended)
        watch = asyncio.get_running_loop().create_task(self._watch(client, create_revision, change, gone))
        pause = self.ttl / 3
        try:
            while True:
                deadline = last_refresh + self.ttl - margin
                done, _ = await asyncio.wait({watch}, timeout=max(0.0, min(pause, deadline - time.monotonic())))
                if done:
                    try:
                        watch.result()
                    except STORE_ERRORS:     # the watch broke: the refreshes tell whether the store is there
                        watch = asyncio.get_running_loop().create_task(
                            self._watch(client, create_revision, change, gone, after=REFRESH_RETRY))
                    if ended:
                        return ended[0]
                if time.monotonic() >= deadline:
                    return f"no keep-alive of the lease answered for {self.ttl - margin:g} s"
                sent = time.monotonic()
                try:
                    reply = await asyncio.wait_for(client.refresh_lease(lease), max(0.1, deadline - sent))
                except REFRESH_ERRORS:
                    pause = REFRESH_RETRY
                    continue
                if reply is None or reply.TTL <= 0:
                    return "the lease expired"
                last_refresh, pause = sent, self.ttl / 3
        finally:
            watch.cancel()

    async def _watch(self, client: EtcdClient, revision: int, change: Callable[[str, Any], bool],
                     absent: Callable[[Any], bool], *, after: float = 0.0) -> None:
        """Follow the leader key after `revision` until `change(kind, key value)` says done; every
        `ttl` seconds without news, read the key and stop if `absent(what was read)` says so. `after`: seconds
        to wait first (a watch that broke is not opened again at once)."""
        if after:
            await asyncio.sleep(after)
        watch = await client.watch(self.key, start_revision=revision + 1)

        async def events() -> None:
            async for event in watch:
                if change(event.kind, event.kv):
                    return
        task = asyncio.get_running_loop().create_task(events())
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=self.ttl)
                if done:
                    task.result()
                    return
                if absent(await client.get(self.key)):
                    return
        finally:
            task.cancel()
            try:
                await watch.cancel()
            except WATCH_ENDS:
                pass

    @staticmethod
    async def _revoke(client: EtcdClient, lease: int) -> None:
        try:
            await client.revoke_lease(lease)
        except STORE_ERRORS:
            pass                                      # it expires by itself


def _record(value: bytes) -> dict[str, Any] | None:
    try:
        found = json.loads(value)
    except ValueError:
        return None
    return found if isinstance(found, dict) else None
