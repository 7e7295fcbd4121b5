"""The control plane's SQLite store: artifacts and events survive the process, writes are all-or-nothing."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from control.store import Store

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_artifacts_round_trip_page_and_survive_reopening(tmp_path):
    store = Store(tmp_path / "vamp.db")
    assert store.put("breeds", "b:1", {"name": "b:1", "x": 1}) is True
    assert store.put("breeds", "b:1", {"name": "b:1", "x": 2}) is False
    for i in range(5):
        store.put("blueprints", f"bp{i}", {"name": f"bp{i}"})
    page, total = store.list("blueprints", offset=1, limit=2)
    assert total == 5 and [p["name"] for p in page] == ["bp1", "bp2"]
    store.close()
    again = Store(tmp_path / "vamp.db")
    assert again.get("breeds", "b:1") == {"name": "b:1", "x": 2}
    assert again.delete("breeds", "b:1") is True
    assert again.delete("breeds", "b:1") is False
    assert again.get("breeds", "b:1") is None


def test_a_failed_transaction_changes_nothing(tmp_path):
    store = Store(tmp_path / "vamp.db")
    store.put("gateways", "g", {"v": 1})
    with pytest.raises(RuntimeError), store.transaction():
        store.put("gateways", "g", {"v": 2})
        store.put("gateways", "h", {"v": 1})
        raise RuntimeError("boom")
    assert store.get("gateways", "g") == {"v": 1}
    assert store.get("gateways", "h") is None


def test_events_filter_by_tags_with_implied_prefixes_and_type(tmp_path):
    store = Store(tmp_path / "vamp.db")
    store.add_event(["deployments:sava", "synchronization:deployed"], {"n": 1})
    store.add_event(["deployments:other"], type="metrics")
    assert [e["value"] for e in store.events(["deployments", "synchronization"])] == [{"n": 1}]
    assert len(store.events(["deployments"])) == 2
    assert len(store.events(type="metrics")) == 1


def test_a_write_committed_before_kill_9_is_there_after(tmp_path):
    path = tmp_path / "vamp.db"
    code = (f"import os, sys; sys.path.insert(0, {str(REPO_ROOT)!r}); from control.store import Store; "
            f"s = Store({str(path)!r}); s.put('deployments', 'sava', {{'n': 1}}); "
            "os.kill(os.getpid(), 9)")
    subprocess.run([sys.executable, "-c", code], timeout=30, cwd=str(tmp_path))
    assert Store(path).get("deployments", "sava") == {"n": 1}
