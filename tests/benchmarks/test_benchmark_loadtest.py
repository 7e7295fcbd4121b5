"""benchmarks/loadtest_vs_wrk.py: the tool's figures are read right, a very short real run prints both clients'
figures and their ratio, a failing client fails the run."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest_vs_wrk import tool_figures

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "loadtest_vs_wrk.py"
SYSTEM_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
MISSING = [name for name in ("wrk", "nginx") if shutil.which(name, path=SYSTEM_PATH) is None]
needs_servers = pytest.mark.skipif(bool(MISSING), reason=f"not installed: {', '.join(MISSING)} (make system-deps)")


def test_the_tools_errors_are_split_into_transport_errors_and_bad_statuses():
    latency = {"p50": 0.4, "p99": 1.5}
    figures = tool_figures({"totals": {
        "requests": 1000, "requests_per_second": 500.0, "latency_ms": latency,
        "errors_by_kind": {"reset": 2, "timeout": 1, "http_5xx": 4, "http_4xx": 3}}})
    assert (figures.requests, figures.requests_per_second) == (1000, 500.0)
    assert (figures.p50_ms, figures.p99_ms) == (0.4, 1.5)
    assert figures.socket_errors == {"reset": 2, "timeout": 1}
    assert figures.non_2xx_3xx == 7
    assert figures.errors == 10


def run_benchmark(*args: str, path: str = SYSTEM_PATH) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--duration", "1", "--rounds", "1", "--connections", "8",
                           *args], capture_output=True, text=True, timeout=90, env={**os.environ, "PATH": path})


@needs_servers
@pytest.mark.timeout(100)
def test_short_run_prints_both_clients_and_the_ratio(tmp_path):
    figures = tmp_path / "figures.json"
    done = run_benchmark("--json", str(figures))
    assert done.returncode == 0, done.stdout + done.stderr
    ratio = re.search(r"^tool/wrk req/s \(median of 1 rounds\): ([0-9.]+)x \(target at least 0.5x\)$",
                      done.stdout, re.MULTILINE)
    assert ratio, done.stdout
    data = json.loads(figures.read_text())
    [measured] = data["rounds"]
    for client in ("wrk", "tool"):
        assert measured[client]["requests_per_second"] > 0 and measured[client]["errors"] == 0
        assert 0 < measured[client]["p50_ms"] <= measured[client]["p99_ms"]
        assert f"{measured[client]['requests_per_second']:,.0f}" in done.stdout
    expected = measured["tool"]["requests_per_second"] / measured["wrk"]["requests_per_second"]
    assert float(ratio.group(1)) == data["ratio"] == pytest.approx(expected, abs=0.006)


@needs_servers
@pytest.mark.timeout(100)
def test_a_client_that_fails_fails_the_run_and_says_why(tmp_path):
    fake_wrk = tmp_path / "wrk"
    fake_wrk.write_text('#!/bin/sh\necho "wrk: cannot connect, for the test" >&2\nexit 1\n')
    fake_wrk.chmod(0o755)
    done = run_benchmark(path=os.pathsep.join([str(tmp_path), SYSTEM_PATH]))
    assert done.returncode == 1
    assert "wrk exited with status 1" in done.stderr and "cannot connect, for the test" in done.stderr
    assert "tool/wrk" not in done.stdout


def test_bad_arguments_exit_2():
    done = run_benchmark("--rounds", "0")
    assert done.returncode == 2
    assert "must be at least 1" in done.stderr
