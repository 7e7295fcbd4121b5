"""The control plane's store, SQLite and etcd alike: artifacts and events survive the process, writes are
all-or-nothing, and an event is handed on only once its write committed."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from control.events.model import EventFilter

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_artifacts_round_trip_page_and_survive_reopening(control_stores):
    store = control_stores.open()
    assert store.put("breeds", "b:1", {"name": "b:1", "x": 1}) is True
    assert store.put("breeds", "b:1", {"name": "b:1", "x": 2}) is False
    for i in range(5):
        store.put("blueprints", f"bp{i}", {"name": f"bp{i}"})
    page, total = store.list("blueprints", offset=1, limit=2)
    assert total == 5 and [p["name"] for p in page] == ["bp1", "bp2"]
    store.close()
    again = control_stores.open()
    assert again.get("breeds", "b:1") == {"name": "b:1", "x": 2}
    assert again.delete("breeds", "b:1") is True
    assert again.delete("breeds", "b:1") is False
    assert again.get("breeds", "b:1") is None


def test_names_with_slashes_stay_in_their_kind_and_list_in_name_order(control_stores):
    store = control_stores.open()
    for name in ("b/2", "a", "b/1", "c:1"):
        store.put("gateways", name, {"name": name})
    store.put("gateways-x", "z", {"name": "z"})
    assert [item["name"] for item in store.list("gateways")[0]] == ["a", "b/1", "b/2", "c:1"]
    assert store.list("gateways", offset=3)[1] == 4


def test_a_failed_transaction_changes_nothing(control_stores):
    store = control_stores.open()
    store.put("gateways", "g", {"v": 1})
    with pytest.raises(RuntimeError), store.transaction():
        store.put("gateways", "g", {"v": 2})
        store.put("gateways", "h", {"v": 1})
        store.add_event(["inside"])
        raise RuntimeError("boom")
    assert store.get("gateways", "g") == {"v": 1}
    assert store.get("gateways", "h") is None
    assert store.count_events(EventFilter()) == 0


def test_a_transaction_reads_its_own_writes_and_commits_them_together(control_stores):
    store = control_stores.open()
    other = control_stores.open()          # another connection sees nothing until the commit
    with store.transaction():
        store.put("deployments", "d", {"v": 1})
        store.delete("deployments", "d")
        store.put("deployments", "e", {"v": 2})
        assert store.get("deployments", "d") is None and store.get("deployments", "e") == {"v": 2}
        assert [item["v"] for item in store.list("deployments")[0]] == [2]
        first = store.add_event(["a"])
        assert store.add_event(["b"]) == first + 1
        assert other.get("deployments", "e") is None
    assert other.get("deployments", "e") == {"v": 2}
    assert [event["tags"] for event in other.events()] == [["b"], ["a"]]


def test_on_commit_runs_after_the_outermost_commit_and_never_after_a_rollback(control_stores):
    store = control_stores.open()
    ran: list[str] = []
    with store.transaction():
        store.on_commit(lambda: ran.append("outer"))
        with store.transaction():
            store.put("breeds", "x", {})
            store.on_commit(lambda: ran.append("inner"))
        assert ran == []
    assert ran == ["outer", "inner"]
    with pytest.raises(RuntimeError), store.transaction():
        store.on_commit(lambda: ran.append("rolled back"))
        raise RuntimeError
    store.on_commit(lambda: ran.append("now"))
    assert ran == ["outer", "inner", "now"]


def test_events_filter_by_tags_with_implied_prefixes_and_type(control_stores):
    store = control_stores.open()
    store.add_event(["deployments:sava", "synchronization:deployed"], {"n": 1})
    store.add_event(["deployments:other"], type="metrics")
    assert [e["value"] for e in store.events(["deployments", "synchronization"])] == [{"n": 1}]
    assert len(store.events(["deployments"])) == 2
    assert len(store.events(type="metrics")) == 1


def test_event_ids_keep_growing_after_pruning_and_reopening(control_stores):
    store = control_stores.open()
    ids = [store.add_event(["n"], index, timestamp=1000.0 + index) for index in range(5)]
    assert ids == sorted(ids) and len(set(ids)) == 5
    assert store.prune_events(keep=2) == 3
    assert [event.id for event in store.query_events(EventFilter())] == ids[:-3:-1]
    assert store.prune_events(older_than=1004.0) == 1
    assert store.last_event_id() == ids[-1]
    store.close()
    assert control_stores.open().add_event(["n"]) > ids[-1]


def test_a_write_committed_before_kill_9_is_there_after(control_stores, tmp_path):
    code = (f"import os, sys; sys.path.insert(0, {str(REPO_ROOT)!r}); {control_stores.python_opening()}; "
            "s.put('deployments', 'sava', {'n': 1}); os.kill(os.getpid(), 9)")
    subprocess.run([sys.executable, "-c", code], timeout=30, cwd=str(tmp_path))
    assert control_stores.open().get("deployments", "sava") == {"n": 1}
