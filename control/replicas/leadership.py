"""Who leads the platform, as one replica knows it: its own record (`Replica`), and what the API shows of the
leadership (`GET /api/v1/status`) and acts on (control.replicas.forwarding). A platform alone on its store (SQLite)
is `Solo`: it leads from the start, for good; on etcd the leadership is an `Election` (control.replicas.election).
"""
from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol


class Leadership(Protocol):
    forwards: bool              # whether a follower's API forwards to the leader
    role: str                   # leader | follower | candidate | lost | stopped
    leader: dict[str, Any] | None   # the leader's record (Replica.as_json), as last known
    ttl: int                    # seconds until another replica may lead when the leader goes silent
    ready: bool                 # leading, the engine resumed: it serves the API (until then: 503)

    @property
    def me(self) -> Replica: ...

    def status(self) -> dict[str, Any]:
        """{store, id, role, leader}: what `GET /api/v1/status` answers."""
        ...


@dataclass(frozen=True)
class Replica:
    """A replica as the others see it: the value of the leader key while it leads."""
    id: str
    pid: int
    host: str
    api_url: str                # where the other replicas forward the API's requests
    since: float = field(default_factory=time.time)

    @classmethod
    def this_process(cls, api_url: str) -> Replica:
        return cls(id=uuid.uuid4().hex[:12], pid=os.getpid(), host=socket.gethostname(), api_url=api_url)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


class Solo:
    """The leadership of a platform alone on its store (SQLite): it leads from the start, and for good."""

    forwards = False
    ttl = 0
    ready = True

    def __init__(self, me: Replica, store: str) -> None:
        self.me = me
        self.store = store
        self.role = "leader"
        self.leader: dict[str, Any] | None = me.as_json()

    def status(self) -> dict[str, Any]:
        return {"store": self.store, "id": self.me.id, "role": self.role, "ready": self.ready, "leader": self.leader}
