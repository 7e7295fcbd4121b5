"""Fixtures of the integration tests: `procs` (per test) and `module_procs` (per module) start real backend
and gateway processes on loopback and stop them afterwards; a failed test's report carries their stderr."""
from __future__ import annotations

import os

# Every exchange state transition is checked against gateway/proxy/exchange.py's table, in this process and in
# the gateways it starts (they inherit the environment).
os.environ.setdefault("VAMP_CHECK_STATES", "1")

import pytest

from tests.support import Processes
from tests.support.etcd import etcd_cluster, etcd_server, store_prefix  # noqa: F401 - fixtures for every test
from tests.support.kubernetes.fixtures import fake_kube, kube  # noqa: F401 - fixtures for every test
from tests.support.stores import control_stores  # noqa: F401 - a fixture for every test

# Under pytest-xdist (`make test` runs the suite in worker processes), each worker's `vamp run` platforms give
# their internal gateways ports from a part of the range of their own, so two platforms never pick the same one.
_worker = os.environ.get("PYTEST_XDIST_WORKER", "")          # gw0, gw1, ...
if _worker.startswith("gw") and _worker[2:].isdigit():
    _share = 1000 // max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    _first = 40000 + _share * int(_worker[2:])
    os.environ.setdefault("VAMP_INTERNAL_PORTS", f"{_first}-{_first + _share - 1}")

PROCESSES = pytest.StashKey[list]()


def _register(node, processes: Processes) -> None:
    node.stash.setdefault(PROCESSES, []).append(processes)


@pytest.fixture
def procs(request, tmp_path):
    processes = Processes(tmp_path)
    _register(request.node, processes)
    yield processes
    processes.stop_all()


@pytest.fixture(scope="module")
def module_procs(request, tmp_path_factory):
    processes = Processes(tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]))
    _register(request.node, processes)
    yield processes
    processes.stop_all()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for node in item.listchain():
            for processes in node.stash.get(PROCESSES, ()):
                for title, text in processes.logs():
                    report.sections.append((title, text or "(empty)"))
