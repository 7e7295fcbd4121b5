"""The control plane's store in etcd: a `ControlStore` (control.store) under a key prefix that several `vamp run`
replicas share (`vamp run --store etcd://HOST:PORT/PREFIX`).

Keys under PREFIX:

    artifacts/<kind>/<name>   an artifact's JSON: what SQLite's artifacts table holds (deployments, the internal
                              gateways' port allocations, user gateways, workflows and their runtime records, …)
    events/<id: 20 digits>    an event, {id, timestamp, type, tags, value}
    event-id                  the largest id ever given to an event: ids only ever grow, across leaders
    leader                    the elected leader (control.replicas.election)
    gateways/<name>, geo      the gateways' configuration (the fleet's, gateway.FleetGateways)

Transactions: the writes of a `transaction()` (and of each write outside one) are held here, seen by the reads
inside it, and committed as ONE etcd txn at the outermost exit. The txn compares the mod revision of every key
the transaction read with what it read (a key read as absent must still be absent), and, once this replica is
the leader, that the leader key is still the one it created (`fence`). So a write that raced another replica's,
or one made by a replica that lost its leadership, changes nothing: `StoreConflict` (409) or `NotLeader` (503),
and the on_commit actions run only after the txn succeeded. A transaction writes at most MAX_TXN_OPS keys (etcd's
`--max-txn-ops` default); a bigger one is refused before anything is sent. A write outside a transaction that
lost a race is tried again (it read nothing but its own key's existence, or the event counter).

Events are read in batches of EVENT_BATCH keys, all at the revision of the first batch, and filtered here with
`EventFilter.matches` (the selection SQLite makes in SQL); the event log prunes them by count and age, which
bounds every scan. Pruning by age scans from the oldest event and stops at the first batch holding none too old.
"""
from __future__ import annotations

import builtins
import json
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aetcd import rpc
from aetcd.utils import prefix_range_end

from control.events.model import Event, EventFilter
from control.store import EventDocuments, NestedTransactions
from control.replicas.etcd import EtcdThread, StoreUnavailable
from gateway import EtcdClient, StoreAddress
from gateway.common.errors import Conflict, Invalid

MAX_TXN_OPS = 128           # etcd's default --max-txn-ops: writes (and compares) in one txn
EVENT_BATCH = 500           # event keys read at a time
ID_DIGITS = 20              # an event's id in its key, zero-padded: keys sort as ids do
WRITE_ATTEMPTS = 10         # a write outside a transaction that lost a race is tried this many times
RETRY_PAUSE = 0.01          # seconds, at most, times the attempt, between two (random: racers part ways)


class StoreConflict(Conflict):
    """Another writer changed what this transaction read: nothing was written."""


class NotLeader(StoreUnavailable):
    """This replica wrote as the leader but is not the leader any more: nothing was written."""


@dataclass
class _Pending:
    """A transaction in progress: its writes (None: delete) and the mod revision of each key it read (0: absent)."""
    writes: dict[bytes, bytes | None] = field(default_factory=dict)
    reads: dict[bytes, int] = field(default_factory=dict)
    last_event_id: int | None = None


class EtcdStore(NestedTransactions, EventDocuments):
    def __init__(self, address: StoreAddress, *, etcd: EtcdThread | None = None) -> None:
        """Connects to the store (StoreUnavailable when it cannot); `etcd`: a connection to use (and close)."""
        self.address = address
        self.etcd = etcd or EtcdThread(address)
        self._artifacts = address.key("artifacts") + b"/"
        self._events = address.key("events") + b"/"
        self._events_end = prefix_range_end(self._events)
        self._counter = address.key("event-id")
        super().__init__()
        self._pending: _Pending | None = None
        self._fence: tuple[bytes, int] | None = None
        self.on_fence_lost: Callable[[], None] | None = None      # told when a write finds the leadership gone
        try:
            self.etcd.connect()
        except BaseException:
            self.etcd.close()
            raise

    def __str__(self) -> str:
        return str(self.address)

    def fence(self, key: bytes, create_revision: int) -> None:
        """From now on every write also requires `key` to be the one created at `create_revision` (the leader key
        this replica holds)."""
        self._fence = (key, create_revision)

    def close(self) -> None:
        self.etcd.close()

    # -- transactions ---------------------------------------------------------------------------------
    def _begin(self) -> None:
        self._pending = _Pending()

    def _commit(self) -> None:
        pending, self._pending = self._pending, None
        self._write_pending(pending)  # type: ignore[arg-type]  # (set when the outer one began)

    def _rollback(self) -> None:
        self._pending = None

    def _write_pending(self, pending: _Pending) -> None:
        if not pending.writes:
            return
        if len(pending.writes) > MAX_TXN_OPS:
            raise Invalid(f"this write changes {len(pending.writes)} keys; the store takes at most {MAX_TXN_OPS} "
                          "in one transaction (etcd's --max-txn-ops): send fewer documents at once")
        reads = pending.reads
        if len(reads) + 1 > MAX_TXN_OPS:        # compare what it writes, at least
            reads = {key: revision for key, revision in reads.items() if key in pending.writes}
        compares = [rpc.Compare(key=key, target=rpc.Compare.MOD, result=rpc.Compare.EQUAL, mod_revision=revision)
                    for key, revision in reads.items()]
        operations = [rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value)) if value is not None
                      else rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key))
                      for key, value in pending.writes.items()]
        self._write(compares, operations)

    def _write(self, compares: list[rpc.Compare], operations: list[rpc.RequestOp]) -> rpc.TxnResponse:
        """One txn of `operations` if `compares` (and the fence) hold; StoreConflict or NotLeader if not."""
        fence = self._fence
        if fence is not None:
            compares = [*compares, rpc.Compare(key=fence[0], target=rpc.Compare.CREATE, result=rpc.Compare.EQUAL,
                                               create_revision=fence[1])]
        request = rpc.TxnRequest(compare=compares, success=operations)
        response: rpc.TxnResponse = self.etcd.run(lambda client: _txn(client, request, self.etcd.timeout))
        if response.succeeded:
            return response
        if fence is not None:
            found = self._range(key=fence[0])
            if not found.kvs or found.kvs[0].create_revision != fence[1]:
                if self.on_fence_lost is not None:
                    self.on_fence_lost()
                raise NotLeader("this replica is no longer the leader: nothing was written")
        raise StoreConflict("another replica changed the store while this write was made: nothing was written; "
                            "try again")

    def _retried(self, write: Callable[[], Any]) -> Any:
        """`write()`, tried again when it lost a race and is not part of a larger transaction."""
        for attempt in range(WRITE_ATTEMPTS):
            try:
                return write()
            except StoreConflict:
                if self._depth or attempt == WRITE_ATTEMPTS - 1:
                    raise
                time.sleep(random.uniform(0, RETRY_PAUSE * (attempt + 1)))
        raise AssertionError("unreachable")

    # -- reading --------------------------------------------------------------------------------------
    def _range(self, **request: Any) -> rpc.RangeResponse:
        message = rpc.RangeRequest(**request)
        return self.etcd.run(lambda client: _range(client, message, self.etcd.timeout))

    def _value(self, key: bytes) -> bytes | None:
        """The value of `key` as the transaction in progress sees it (its own writes first); a read inside a
        transaction is compared when it commits."""
        pending = self._pending
        if pending is not None and key in pending.writes:
            return pending.writes[key]
        found = self._range(key=key)
        kv = found.kvs[0] if found.kvs else None
        if pending is not None:
            pending.reads.setdefault(key, kv.mod_revision if kv is not None else 0)
        return kv.value if kv is not None else None

    def _artifact(self, kind: str, name: str) -> bytes:
        return self._artifacts + f"{kind}/{name}".encode()

    # -- artifacts ------------------------------------------------------------------------------------
    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            value = self._value(self._artifact(kind, name))
        return json.loads(value) if value is not None else None

    def list(self, kind: str, offset: int = 0, limit: int | None = None) -> tuple[builtins.list[dict[str, Any]], int]:
        """A page of one kind's artifacts in name order, and how many there are in all."""
        prefix = self._artifacts + f"{kind}/".encode()
        with self._lock:
            found = self._range(key=prefix, range_end=prefix_range_end(prefix), sort_order=rpc.RangeRequest.ASCEND,
                                sort_target=rpc.RangeRequest.KEY)
            values: dict[bytes, bytes] = {kv.key: kv.value for kv in found.kvs}
            if self._pending is not None:
                for key, value in self._pending.writes.items():
                    if key.startswith(prefix):
                        if value is None:
                            values.pop(key, None)
                        else:
                            values[key] = value
        keys = sorted(values)
        page = keys[offset:] if limit is None else keys[offset:offset + limit]
        return [json.loads(values[key]) for key in page], len(keys)

    def put(self, kind: str, name: str, body: dict[str, Any]) -> bool:
        """Create or replace; True when it was created."""
        key = self._artifact(kind, name)
        text = json.dumps(body, sort_keys=False).encode()

        def write() -> bool:
            with self.transaction():
                existed = self._value(key) is not None
                self._pending.writes[key] = text  # type: ignore[union-attr]  # (in the transaction)
            return not existed
        return bool(self._retried(write))

    def delete(self, kind: str, name: str) -> bool:
        key = self._artifact(kind, name)

        def write() -> bool:
            with self.transaction():
                existed = self._value(key) is not None
                if existed:
                    self._pending.writes[key] = None  # type: ignore[union-attr]  # (in the transaction)
            return existed
        return bool(self._retried(write))

    # -- events ---------------------------------------------------------------------------------------
    def _event_key(self, event_id: int) -> bytes:
        return self._events + str(event_id).zfill(ID_DIGITS).encode()

    def add_event(self, tags: Iterable[str], value: Any = None, type: str = "event",
                  timestamp: float | None = None) -> int:
        stamp = time.time() if timestamp is None else timestamp
        unique = sorted(set(tags))

        def write() -> int:
            with self.transaction():
                pending: _Pending = self._pending  # type: ignore[assignment]  # (in the transaction)
                if pending.last_event_id is None:
                    counter = self._value(self._counter)
                    pending.last_event_id = int(counter) if counter is not None else 0
                pending.last_event_id += 1
                event_id = pending.last_event_id
                pending.writes[self._event_key(event_id)] = json.dumps(
                    {"id": event_id, "timestamp": stamp, "type": type, "tags": unique, "value": value}).encode()
                pending.writes[self._counter] = str(event_id).encode()
            return event_id
        return int(self._retried(write))

    def query_events(self, where: EventFilter, *, limit: int | None = None, offset: int = 0,
                     after: int | None = None, oldest_first: bool = False) -> builtins.list[Event]:
        """The events `where` matches (with an id above `after`, if given), newest first unless `oldest_first`."""
        found: builtins.list[Event] = []
        if limit is not None and limit <= 0:
            return found
        start = self._event_key(after + 1) if after is not None and after >= 0 else self._events
        skipped = 0
        for batch in self._event_batches(start, descending=not oldest_first):
            for kv in batch:
                event = _event(kv.value)
                if not where.matches(event):
                    continue
                if skipped < offset:
                    skipped += 1
                    continue
                found.append(event)
                if limit is not None and len(found) >= limit:
                    return found
        return found

    def count_events(self, where: EventFilter) -> int:
        if where == EventFilter():
            return int(self._range(key=self._events, range_end=self._events_end, count_only=True).count)
        return sum(1 for batch in self._event_batches(self._events, descending=False) for kv in batch
                   if where.matches(_event(kv.value)))

    def last_event_id(self) -> int:
        """The largest id ever given to an event (0 before the first), whether or not it is still kept."""
        with self._lock:
            pending = self._pending
            if pending is not None and pending.last_event_id is not None:
                return pending.last_event_id
            found = self._range(key=self._counter)
        return int(found.kvs[0].value) if found.kvs else 0

    def prune_events(self, *, older_than: float | None = None, keep: int | None = None) -> int:
        """Remove the events stamped before `older_than` and all but the `keep` newest; how many went."""
        removed = 0
        if older_than is not None:
            doomed: builtins.list[bytes] = []
            for batch in self._event_batches(self._events, descending=False):
                old = [kv.key for kv in batch if _event(kv.value).timestamp < older_than]
                doomed += old
                if not old:
                    break
            for first in range(0, len(doomed), MAX_TXN_OPS):
                response = self._write([], [rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key))
                                            for key in doomed[first:first + MAX_TXN_OPS]])
                removed += sum(item.response_delete_range.deleted for item in response.responses)
        if keep is not None:
            total = int(self._range(key=self._events, range_end=self._events_end, count_only=True).count)
            if total > keep:
                oldest = self._range(key=self._events, range_end=self._events_end, limit=total - keep,
                                     sort_order=rpc.RangeRequest.ASCEND, sort_target=rpc.RangeRequest.KEY,
                                     keys_only=True)
                if oldest.kvs:
                    delete = rpc.DeleteRangeRequest(key=self._events, range_end=oldest.kvs[-1].key + b"\0")
                    response = self._write([], [rpc.RequestOp(request_delete_range=delete)])
                    removed += response.responses[0].response_delete_range.deleted
        return removed

    def _event_batches(self, start: bytes, *, descending: bool) -> Iterator[builtins.list[Any]]:
        """The event keys from `start` on (ascending) or down to `start` (descending), EVENT_BATCH at a time, all
        read at one revision."""
        low, high, revision = start, self._events_end, 0
        order = rpc.RangeRequest.DESCEND if descending else rpc.RangeRequest.ASCEND
        while True:
            found = self._range(key=low, range_end=high, limit=EVENT_BATCH, revision=revision, sort_order=order,
                                sort_target=rpc.RangeRequest.KEY)
            revision = revision or found.header.revision
            if found.kvs:
                yield builtins.list(found.kvs)
            if not found.more or not found.kvs:
                return
            if descending:
                high = found.kvs[-1].key
            else:
                low = found.kvs[-1].key + b"\0"


def _event(value: bytes) -> Event:
    body = json.loads(value)
    return Event(id=body["id"], timestamp=body["timestamp"], type=body["type"], tags=tuple(body["tags"]),
                 value=body["value"])


async def _range(client: EtcdClient, request: rpc.RangeRequest, timeout: float) -> rpc.RangeResponse:
    await client.connect()
    return await client.kvstub.Range(request, timeout=timeout, metadata=client.metadata)


async def _txn(client: EtcdClient, request: rpc.TxnRequest, timeout: float) -> rpc.TxnResponse:
    await client.connect()
    return await client.kvstub.Txn(request, timeout=timeout, metadata=client.metadata)
