"""benchmarks/aggregation.py: a tiny run measures the aggregation's memory and CPU, and (with nginx and wrk
installed) the throughput of `vamp run` with the aggregation on and off, and writes its figures as JSON."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aggregation import Memory, measure_memory

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "aggregation.py"
SYSTEM_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
MISSING = [name for name in ("wrk", "nginx") if shutil.which(name, path=SYSTEM_PATH) is None]


def test_memory_grows_with_the_busy_routes_and_is_reported_per_route():
    small = measure_memory(routes=10, window=120, ticks=150, gateway_per_route=False)
    large = measure_memory(routes=40, window=120, ticks=150, gateway_per_route=False)
    assert isinstance(small, Memory) and (small.series, large.series) == (11, 41)     # targets + the gateway
    assert 0 < small.bytes < large.bytes and large.bytes_per_route <= small.bytes_per_route * 1.5
    assert small.cpu_ms_per_tick > 0


@pytest.mark.timeout(60)
def test_a_tiny_run_writes_its_figures(tmp_path):
    figures = tmp_path / "figures.json"
    only = "memory" if MISSING else "throughput,memory"
    done = subprocess.run([sys.executable, str(SCRIPT), "--only", only, "--duration", "1", "--warmup", "0",
                           "--rounds", "1", "--routes", "3", "--memory-routes", "20", "--window", "120",
                           "--ticks", "130", "--json", str(figures)],
                          capture_output=True, text=True, timeout=55, env={**os.environ, "PATH": SYSTEM_PATH})
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads(figures.read_text())
    assert data["memory"]["routes"] == 20 and data["memory"]["bytes"] > 0
    assert "per route" in done.stdout
    if not MISSING:
        runs = data["throughput"]["runs"]
        assert sorted(run["aggregation"] for run in runs) == [False, True]
        assert all(run["requests_per_second"] > 0 and run["errors"] == 0 for run in runs)
        assert len(data["throughput"]["ratios"]) == 1 and "with aggregation / without" in done.stdout
