"""`FleetGateways`: the gateways of a fleet, kept in etcd — the ConfigSource (gateway.config.source) the admin API
of `vamp gateway --config-store` serves, and what the platform builds on.

Every replica follows the store (gateway.store.follower) and serves what it holds. A write never changes this
process directly: it goes to etcd as one transaction and is applied from the watch like everyone else's, so
every replica, the one written to included, takes the same path; the write answers once this process serves
it, so a client reading back from the replica it wrote to sees its write.

    one gateway (admin API)   read its key fresh (a linearizable get: value and mod revision), apply the write
                              (gateway.config.edit: the same merge patch, validation and error fields as the
                              standalone gateway), validate the whole configuration with it, then a transaction
                              that only succeeds if the key still has the mod revision read (absent: 0)
    everything (`replace`)    one range read, then one transaction of puts (new or changed gateways, geo) and
                              deletes (gone ones), each compared with the mod revision read, and no key of the
                              gateways created or changed since the read

A lost race is a Conflict (409), the store out of reach Unavailable (503, naming the store), a bad
configuration Invalid (400): each changes nothing. Two writes through different replicas to different gateways
are not checked against each other; if together they make an invalid configuration (two gateways on one port),
every replica refuses that revision whole and keeps serving the previous one, saying so in its status.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, UTC
from typing import Any, NoReturn

import aetcd.exceptions

from gateway.common.errors import Conflict, Invalid, NotFound, Unavailable
from gateway.config import edit
from gateway.config.load import ConfigError, gateway_to_dict
from gateway.config.model import Config, Gateway
from gateway.config.source import Document
from gateway.runtime.manager import ConfigManager
from gateway.store.etcd import STORE_ERRORS, EtcdClient, StoreAddress, describe
from gateway.store.follower import Follower, bound
from gateway.store.keys import Layout, decode_gateway, encode_config, encode_gateway

log = logging.getLogger("vamp.store")

WRITE_WAIT = 10.0           # seconds a write waits for this process to serve it


class FleetGateways:
    """The gateways under `address.prefix`, served by `manager` (with every gateway on `bind` when given)."""

    def __init__(self, manager: ConfigManager, address: StoreAddress, *, bind: str | None = None) -> None:
        self.manager = manager
        self.address = address
        self.layout = Layout(address.prefix)
        self.follower = Follower(manager, address, bind=bind)
        self._client: EtcdClient | None = None         # for writes; the follower has its own
        self._write_lock = asyncio.Lock()               # one write of this process at a time (fewer 409s)
        self._fence: tuple[bytes, int] | None = None    # (key, create revision) every write requires

    def fence(self, key: bytes, create_revision: int) -> None:
        """From now on every write also requires `key` to be the one created at `create_revision`: a platform
        replica that leads fences its writes on its leader key, so once another replica leads, no write of this
        one lands (it answers Conflict)."""
        self._fence = (key, create_revision)

    # -- lifecycle -----------------------------------------------------------------------------------------
    async def start(self, *, seed: Config | None = None) -> None:
        """Load the store (or the state directory's configuration while the store is out of reach; without
        one, wait for the store), start the manager with it, then follow the store. `seed`: written first, in
        one transaction, if the prefix holds no gateway yet (`vamp gateway --config FILE`)."""
        async def seed_empty_prefix() -> None:
            try:
                seeded = seed is not None and await self._seed(seed)
            except Unavailable as exc:
                raise exc.__cause__ or exc from None        # the store's own error: the follower retries
            if seeded and seed is not None:
                log.info("the configuration store %s was empty: seeded it with %d gateway(s)", self.address,
                         len(seed.gateways))
        await self.follower.start(seed_empty_prefix if seed is not None else None)

    async def close(self) -> None:
        """Stop following the store and close the connections; the manager keeps serving what it serves until
        its owner shuts it down."""
        await self.follower.close()
        await self._drop_client()

    # -- what is served ----------------------------------------------------------------------------------------
    @property
    def effective(self) -> Config:
        return self.manager.effective

    @property
    def desired(self) -> Config:
        return self.manager.desired

    @property
    def revision(self) -> int | None:
        """The store revision this process serves (None: none yet)."""
        return self.follower.revision

    async def wait_for(self, revision: int, timeout: float) -> bool:
        """Whether this process serves `revision` (or a later one) within `timeout` seconds."""
        return await self.follower.wait_for(revision, timeout)

    def status(self) -> dict[str, Any]:
        """The store as this process sees it: reachable (`up`), since when, the revision served and where from,
        and what is wrong (the store out of reach, or a revision refused), if anything."""
        follower = self.follower
        return {"url": str(self.address), "up": follower.up, "revision": follower.revision,
                "source": follower.source,
                "since": datetime.fromtimestamp(follower.since, UTC).isoformat(timespec="seconds"),
                "error": follower.down_reason if not follower.up else follower.refused}

    async def snapshot(self) -> dict[str, Any]:
        return await self.manager.snapshot()

    def names(self) -> list[str]:
        return self.manager.names()

    def document(self, name: str, snap: dict[str, Any]) -> Document:
        """The manager's document of a gateway, with the fields as the store holds them (not this replica's
        `--bind`) and `status.revision`: the mod revision of its key as served here."""
        document = self.manager.document(name, snap)
        if self.manager.desired.gateway(name) is None:
            return document                 # removed, draining
        stored = self.follower.config.gateway(name) if self.follower.config is not None else None
        if stored is not None:
            document.update(gateway_to_dict(stored))
        document["status"]["revision"] = self.follower.revisions.get(name)
        return document

    # -- the gateway API's source (gateway.config.source) ----------------------------------------------------
    async def list_gateways(self) -> list[Document]:
        snap = await self.snapshot()
        return [self.document(name, snap) for name in self.names()]

    async def get_gateway(self, name: str) -> Document:
        return self.document(name, await self.snapshot())

    async def create_gateway(self, name: str, body: Document, *, validate_only: bool = False) -> Document:
        def write(current: bytes | None) -> Document:
            if current is not None:
                raise Conflict(f"gateway {name!r} exists already")
            return body
        gateway, _ = await self._write(name, write, validate_only)
        return await self._answer(name, gateway, validate_only)

    async def put_gateway(self, name: str, body: Document, *, validate_only: bool = False
                          ) -> tuple[Document, bool]:
        gateway, created = await self._write(name, lambda current: body, validate_only)
        return await self._answer(name, gateway, validate_only), created

    async def patch_gateway(self, name: str, patch: Document, *, validate_only: bool = False) -> Document:
        def write(current: bytes | None) -> Document:
            if current is None:
                raise NotFound(f"no gateway {name!r}")
            try:
                stored = decode_gateway(name, current)
            except ConfigError as exc:
                raise Conflict(f"gateway {name!r} in the configuration store is not valid ({exc}); replace it "
                               "whole with PUT") from exc
            try:
                return edit.patched(stored, patch)
            except ConfigError as exc:
                raise Invalid(str(exc), exc.pointer(name)) from exc
        gateway, _ = await self._write(name, write, validate_only)
        return await self._answer(name, gateway, validate_only)

    async def delete_gateway(self, name: str, *, validate_only: bool = False) -> Document:
        def write(current: bytes | None) -> None:
            if current is None:
                raise NotFound(f"no gateway {name!r}")
        await self._write(name, write, validate_only)
        return await self._answer(name, None, validate_only)

    async def _write(self, name: str, write: Callable[[bytes | None], Document | None], validate_only: bool
                     ) -> tuple[Gateway | None, bool]:
        """Gateway `name` replaced by what `write` makes of its stored value (None: removed), validated with the
        rest of the configuration, then (unless `validate_only`) written and served here: (the gateway as
        written, whether it was created)."""
        key = self._key(name)
        async with self._write_lock:
            client = await self._connected()
            try:
                found = await client.get(key)
            except STORE_ERRORS as exc:
                await self._unreachable(exc)
            current, mod_revision = (None, 0) if found is None else (found.value, int(found.mod_revision))
            body = write(current)
            try:
                config = edit.with_gateway(self._base(), name, body)
                bound(config, self.follower.bind)
            except ConfigError as exc:
                raise Invalid(str(exc), exc.pointer(name)) from exc
            gateway = config.gateway(name)
            if validate_only:
                return gateway, current is None
            operations = ([client.transactions.delete(key)] if gateway is None
                          else [client.transactions.put(key, encode_gateway(gateway))])
            ok, revision = await self._transaction(client, [client.transactions.mod(key) == mod_revision],
                                                   operations)
            if not ok:
                raise Conflict(f"gateway {name!r} changed in the configuration store while this write was made; "
                               "read it again and retry")
        await self._until_served(revision)
        return gateway, current is None

    def _key(self, name: str) -> bytes:
        try:
            return self.layout.gateway_key(name)
        except UnicodeEncodeError:
            raise Invalid("invalid gateway name: it must be UTF-8 text", "/name") from None

    def _base(self) -> Config:
        """The configuration a write is validated with: the store's as served here."""
        return self.follower.config if self.follower.config is not None else self.manager.desired

    async def _answer(self, name: str, gateway: Gateway | None, validate_only: bool) -> Document:
        if validate_only:
            return {"name": name, **gateway_to_dict(gateway)} if gateway else {"name": name}
        try:
            return self.document(name, await self.snapshot())
        except NotFound:
            return {"name": name, "status": {"state": "removed", "revision": None}}

    # -- everything at once ----------------------------------------------------------------------------------
    async def replace(self, config: Config) -> None:
        """Make the store hold exactly `config`'s gateways (and geo settings) in one transaction, then wait
        until this process serves it. Unavailable, Conflict (a lost race), Invalid."""
        try:
            bound(config, self.follower.bind)
        except ConfigError as exc:
            raise Invalid(f"with --bind {self.follower.bind}: {exc}") from exc
        async with self._write_lock:
            revision = await self._put_all(await self._connected(), config, only_if_empty=False)
        if revision is not None:
            await self._until_served(revision)

    async def _seed(self, config: Config) -> bool:
        """Write `config` if the prefix holds no gateway (nor geo settings) yet: whether it did."""
        async with self._write_lock:
            try:
                return await self._put_all(await self._connected(), config, only_if_empty=True) is not None
            except Conflict:
                return False        # seeded by another replica meanwhile

    async def _put_all(self, client: EtcdClient, config: Config, *, only_if_empty: bool) -> int | None:
        """Write what differs from `config` under the prefix in one transaction: the revision the store holds
        it at (None when `only_if_empty` and the prefix holds something). Conflict when the gateways changed
        since they were read."""
        try:
            found = await client.get_range(self.layout.start, self.layout.end)
        except STORE_ERRORS as exc:
            await self._unreachable(exc)
        read_at = int(found.header.revision)
        stored = {kv.key: (kv.value, int(kv.mod_revision)) for kv in found.kvs if self.layout.is_ours(kv.key)}
        if only_if_empty and stored:
            return None
        wanted = encode_config(self.layout, config)
        t = client.transactions
        compares = [t.mod(self.layout.gateways_start, self.layout.gateways_end) < read_at + 1,
                    t.mod(self.layout.geo) < read_at + 1]
        operations = []
        for key, value in wanted.items():
            if key not in stored or stored[key][0] != value:
                compares.append(t.mod(key) == (stored[key][1] if key in stored else 0))
                operations.append(t.put(key, value))
        for key, (_, mod_revision) in stored.items():
            if key not in wanted:
                compares.append(t.mod(key) == mod_revision)
                operations.append(t.delete(key))
        if not operations:
            return read_at
        ok, revision = await self._transaction(client, compares, operations)
        if not ok:
            raise Conflict("the gateways changed in the configuration store while this change was made; "
                           "try again")
        return revision

    # -- the store ------------------------------------------------------------------------------------------
    async def _connected(self) -> EtcdClient:
        if self._client is None:
            self._client = EtcdClient(self.address)
        try:
            await self._client.connect()
        except STORE_ERRORS as exc:
            await self._unreachable(exc)
        return self._client

    async def _transaction(self, client: EtcdClient, compares: list[Any], operations: list[Any]) -> tuple[bool, int]:
        if self._fence is not None:
            key, create_revision = self._fence
            compares = [*compares, client.transactions.create(key) == create_revision]
        try:
            return await client.txn(compares, operations)
        except aetcd.exceptions.InvalidArgumentError as exc:
            raise Invalid(f"the configuration store refused the change: {describe(exc)}") from exc
        except STORE_ERRORS as exc:
            await self._unreachable(exc)

    async def _unreachable(self, error: BaseException) -> NoReturn:
        await self._drop_client()
        raise Unavailable(f"the configuration store {self.address} is unreachable: {describe(error)}") from error

    async def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close_quietly()

    async def _until_served(self, revision: int) -> None:
        """Wait until this process serves `revision`: Unavailable when it has not seen it in time, Conflict when
        it could not apply it (the change is in the store: other replicas may serve it)."""
        follower = self.follower
        if not await follower.wait_processed(revision, WRITE_WAIT):
            raise Unavailable(f"the change is in the configuration store {self.address} (revision {revision}) "
                              f"but this gateway has not applied it within {WRITE_WAIT:.0f} s: "
                              f"{follower.down_reason or 'the store is slow'}")
        if follower.revision is None or follower.revision < revision:
            raise Conflict(f"the change is in the configuration store (revision {revision}) but this gateway "
                           f"cannot serve it: {follower.refused}")
