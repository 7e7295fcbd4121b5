"""etcd v3, the store a fleet of gateways (and the platform's replicas) share: where it is, and a client
connected to it.

Where: `etcd://HOST:PORT[,HOST:PORT…]/PREFIX` (`etcds://` for TLS), every key under PREFIX. Credentials and
certificates are options (`StoreAddress.parse`), never part of the URL, so no password reaches a log or the
process list; `str(address)` is safe to print.

The client is aetcd's (asyncio over gRPC). It is given every endpoint at once: gRPC's `pick_first` policy uses
the first that answers and moves to the next when it fails, and keepalive pings notice a peer that went silent
(a partition) within `KEEPALIVE` + `KEEPALIVE_TIMEOUT` seconds. Calls fail fast while no endpoint answers:
`STORE_ERRORS` are what a call to an unreachable (or refusing) store raises.
"""
from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aetcd
import aetcd.exceptions
import aetcd.watcher
import grpc
from aetcd import rpc

SCHEMES = {"etcd": False, "etcds": True}        # scheme -> TLS
DEFAULT_PORT = 2379
CALL_TIMEOUT = 5.0              # seconds an etcd call may take before it counts as failed
KEEPALIVE = 6.0                 # seconds between keepalive pings; etcd answers pings closer than 5 s with GOAWAY
KEEPALIVE_TIMEOUT = 3.0         # seconds without an answer to a ping before the connection counts as dead
MAX_MESSAGE = 64 * 1024 * 1024  # bytes an answer may have (a range read of every gateway of a large fleet)
CLOSE_TIMEOUT = 5.0             # seconds `close_quietly` gives aetcd's close

# What a call to the store raises when it cannot be served (unreachable, timed out, refused, compacted).
STORE_ERRORS: tuple[type[BaseException], ...] = (aetcd.exceptions.ClientError, grpc.RpcError)

_ENDPOINT = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(?::(\d{1,5}))?$")


class StoreAddressError(ValueError):
    """A store URL or option that cannot be used; the message says which part."""


@dataclass(frozen=True)
class StoreAddress:
    endpoints: tuple[tuple[str, int], ...]     # (host, port), hosts of IPv6 literals without brackets
    prefix: str                                # "/vamp": a leading slash, no trailing one ("" for the root)
    tls: bool = False
    ca_file: str | None = None                 # TLS: the CA that signed the members' certificates
    cert_file: str | None = None               # TLS: this client's certificate and key, when etcd asks for one
    key_file: str | None = None
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, text: str, *, ca_file: str | None = None, cert_file: str | None = None,
              key_file: str | None = None, username: str | None = None, password: str | None = None
              ) -> StoreAddress:
        scheme, sep, rest = text.partition("://")
        if not sep or scheme not in SCHEMES:
            raise StoreAddressError(f"a store is etcd://HOST:PORT[,HOST:PORT...]/PREFIX (etcds:// for TLS), "
                                    f"got {text!r}")
        hosts, _, prefix = rest.partition("/")
        if "@" in hosts:
            raise StoreAddressError("credentials do not go in the store URL: use --etcd-user and "
                                    "--etcd-password-file (or VAMP_ETCD_PASSWORD)")
        endpoints = []
        for item in hosts.split(","):
            match = _ENDPOINT.match(item.strip())
            if not match:
                raise StoreAddressError(f"{item.strip()!r} in {text!r} is not HOST:PORT")
            port = int(match.group(2) or DEFAULT_PORT)
            if not 0 < port < 65536:
                raise StoreAddressError(f"port {port} in {text!r} is out of range")
            endpoints.append((match.group(1).strip("[]"), port))
        prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        if cert_file is not None and key_file is None or key_file is not None and cert_file is None:
            raise StoreAddressError("a client certificate needs both --etcd-cert and --etcd-key")
        if (username is None) != (password is None):
            raise StoreAddressError("etcd credentials need both a user and a password")
        tls = SCHEMES[scheme] or ca_file is not None or cert_file is not None
        return cls(tuple(endpoints), prefix, tls, ca_file, cert_file, key_file, username, password)

    def key(self, *parts: str) -> bytes:
        """The key of `parts` under the prefix: key("gateways", "a/b") is b"/vamp/gateways/a/b"."""
        return "/".join((self.prefix, *parts)).encode("utf-8")

    @property
    def target(self) -> str:
        """The gRPC target naming every endpoint (the `ipv4:`/`ipv6:` list form, or `dns:` for one name)."""
        hosts = [host for host, _ in self.endpoints]
        if all(re.fullmatch(r"[0-9.]+", host) for host in hosts):
            return "ipv4:" + ",".join(f"{host}:{port}" for host, port in self.endpoints)
        if all(":" in host for host in hosts):
            return "ipv6:" + ",".join(f"[{host}]:{port}" for host, port in self.endpoints)
        if len(self.endpoints) == 1:
            host, port = self.endpoints[0]
            return f"dns:{host}:{port}"
        raise StoreAddressError("several etcd endpoints must all be IP addresses of one family (or use one DNS "
                                "name that resolves to every member)")

    def __str__(self) -> str:
        hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.endpoints)
        return f"{'etcds' if self.tls else 'etcd'}://{hosts}{self.prefix}"


class EtcdClient(aetcd.Client):
    """aetcd's client on a channel to every endpoint of `address`, with TLS and keepalive when asked."""

    def __init__(self, address: StoreAddress, *, timeout: float = CALL_TIMEOUT) -> None:
        super().__init__(username=address.username, password=address.password, timeout=timeout)
        self.address = address

    async def connect(self) -> None:
        if self._connected.is_set():
            return
        options = [("grpc.lb_policy_name", "pick_first"),
                   ("grpc.keepalive_time_ms", int(KEEPALIVE * 1000)),
                   ("grpc.keepalive_timeout_ms", int(KEEPALIVE_TIMEOUT * 1000)),
                   # only while a call is open (the follower's watch always is): etcd answers pings on a
                   # connection without one with GOAWAY "too_many_pings", breaking what runs on it next
                   ("grpc.keepalive_permit_without_calls", 0),
                   ("grpc.http2.max_pings_without_data", 0),
                   ("grpc.initial_reconnect_backoff_ms", 200),
                   ("grpc.max_reconnect_backoff_ms", 2000),
                   ("grpc.max_receive_message_length", MAX_MESSAGE)]
        address = self.address
        if address.tls:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_read(address.ca_file), private_key=_read(address.key_file),
                certificate_chain=_read(address.cert_file))
            channel = grpc.aio.secure_channel(address.target, credentials, options=options)
        else:
            channel = grpc.aio.insecure_channel(address.target, options=options)
        self.channel = channel
        if address.username is not None:
            try:
                reply = await rpc.AuthStub(channel).Authenticate(
                    rpc.AuthenticateRequest(name=address.username, password=address.password),
                    timeout=self._timeout)
            except grpc.aio.AioRpcError as exc:
                await channel.close()
                self.channel = None
                aetcd.exceptions._handle_exception(exc)
            self.metadata = (("token", reply.token),)
        self.kvstub = rpc.KVStub(channel)
        self.clusterstub = rpc.ClusterStub(channel)
        self.leasestub = rpc.LeaseStub(channel)
        self.maintenancestub = rpc.MaintenanceStub(channel)
        self._watcher = aetcd.watcher.Watcher(rpc.WatchStub(channel), timeout=self._timeout,
                                              metadata=self.metadata)
        self._connected.set()

    async def txn(self, compare: Sequence[Any], success: Sequence[Any]) -> tuple[bool, int]:
        """A transaction (aetcd's compares and operations, `client.transactions.…`): whether its compares held
        (and its operations were done), and the store revision it left (the one its changes carry)."""
        await self.connect()
        request = rpc.TxnRequest(compare=[item.build_message() for item in compare],
                                 success=self._ops_to_requests(success), failure=[])
        try:
            reply = await self.kvstub.Txn(request, timeout=self._timeout, metadata=self.metadata)
        except grpc.aio.AioRpcError as exc:
            aetcd.exceptions._handle_exception(exc)
        return bool(reply.succeeded), int(reply.header.revision)

    async def watch_range(self, start: bytes, end: bytes, start_revision: int,
                          deliver: Callable[[Any], Awaitable[None]]) -> int:
        """Watch the keys in [start, end) from `start_revision` on; returns the watch's id. `deliver` is called
        with each event (aetcd's `Event`: kind "PUT" or "DELETE", kv) in order, and once with the error (or None)
        that ends the watch. aetcd calls it for every event of one etcd answer in a row, without giving the
        loop a turn in between, so what `deliver` queues, a consumer finds whole: the events of a transaction
        (one revision) are never split across answers."""
        await self.connect()
        try:
            callback = await self._watcher.add_callback(start, deliver, range_end=end,
                                                        start_revision=start_revision)
        except grpc.aio.AioRpcError as exc:
            aetcd.exceptions._handle_exception(exc)
        return int(callback.watch_id)

    async def close_quietly(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Close, in a task of its own, waiting for it `timeout` seconds at most; errors are ignored. aetcd's
        close may wait on a watch stream that no longer answers, and takes a cancellation of what it awaits for
        its own: run inline, it could swallow the cancellation of the task that closes."""
        closing = asyncio.get_running_loop().create_task(self.close())
        done, _ = await asyncio.wait({closing}, timeout=timeout)
        if not done:
            closing.cancel()
        elif not closing.cancelled():
            closing.exception()         # retrieved: closing a broken connection may fail, and that is fine


def _read(path: str | None) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise StoreAddressError(f"cannot read {path}: {exc.strerror or exc}") from exc


def describe(error: BaseException) -> str:
    """One line on why a store call failed."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]

