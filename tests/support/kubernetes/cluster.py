"""SimulatedCluster (being written)."""
from __future__ import annotations

from .server import FakeKubernetes


class SimulatedCluster:
    def __init__(self, api: FakeKubernetes, *, termination_seconds: float = 0.3) -> None:
        self.api = api
        self.termination_seconds = termination_seconds

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass
