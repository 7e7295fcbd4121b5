"""The control plane's two stores, for the tests that must hold for both: SQLite in the test's directory, and
etcd under a prefix of the test's own on a real member (tests/support/etcd.py).

    def test_x(control_stores):               # runs once per store kind
        store = control_stores.open()          # open() again: the same data, as a restarted platform sees it
"""
from __future__ import annotations

from pathlib import Path

import pytest

from control.store import ControlStore, Store

STORE_KINDS = ("sqlite", "etcd")


class StoreOpener:
    def __init__(self, kind: str, directory: Path, url: str | None) -> None:
        self.kind = kind
        self.directory = directory
        self.url = url                  # etcd: etcd://HOST:PORT/PREFIX
        self.opened: list[ControlStore] = []

    def open(self) -> ControlStore:
        if self.kind == "sqlite":
            store: ControlStore = Store(self.directory / "vamp.db")
        else:
            from control.replicas.store import EtcdStore
            from gateway import StoreAddress
            store = EtcdStore(StoreAddress.parse(self.url or ""))
        self.opened.append(store)
        return store

    def python_opening(self) -> str:
        """Python source that opens the same store in another process (as `s`), from the repository root."""
        if self.kind == "sqlite":
            return f"from control.store import Store; s = Store({str(self.directory / 'vamp.db')!r})"
        return ("from control.replicas.store import EtcdStore; from gateway import StoreAddress; "
                f"s = EtcdStore(StoreAddress.parse({self.url!r}))")

    def close_all(self) -> None:
        for store in self.opened:
            store.close()


@pytest.fixture(params=STORE_KINDS)
def control_stores(request, tmp_path):
    """Opens the store under test: SQLite, then etcd (skipped without the etcd binary)."""
    url = None
    if request.param == "etcd":
        server = request.getfixturevalue("etcd_server")
        url = server.url(request.getfixturevalue("store_prefix"))
    opener = StoreOpener(request.param, tmp_path, url)
    yield opener
    opener.close_all()
