"""benchmarks/fleet.py: a very short real run against real etcd measures fleets of one and two gateways,
prints the table beside etcd's own figures, and writes its figures as JSON."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fleet import Percentiles, parse_fleets

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "fleet.py"
SYSTEM_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
MISSING = [name for name in ("etcd", "nginx") if shutil.which(name, path=SYSTEM_PATH) is None]


def test_percentiles_are_in_milliseconds_and_the_p99_is_a_measured_value():
    figures = Percentiles.of([0.001 * n for n in range(1, 101)])
    assert (figures.count, figures.p50_ms, figures.p99_ms, figures.max_ms) == (100, 50.5, 99.0, 100.0)
    assert Percentiles.of([]) == Percentiles(0, 0.0, 0.0, 0.0)


def test_fleet_sizes_are_a_comma_list():
    assert parse_fleets("1,3,10") == [1, 3, 10]
    for bad in ("", "0", "a,b", "1,1000"):
        with pytest.raises(Exception, match="--fleets|between"):
            parse_fleets(bad)


@pytest.mark.skipif(bool(MISSING), reason=f"not installed: {', '.join(MISSING)} (make system-deps)")
@pytest.mark.timeout(90)
def test_short_run_measures_every_fleet_and_etcd_alone(tmp_path):
    figures = tmp_path / "figures.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--fleets", "1,2", "--changes", "4", "--seconds", "1",
                           "--json", str(figures)],
                          capture_output=True, text=True, timeout=85, env={**os.environ, "PATH": SYSTEM_PATH})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "etcd alone (the peer)" in done.stdout
    data = json.loads(figures.read_text())
    assert [fleet["gateways"] for fleet in data["fleets"]] == [1, 2]
    for fleet in data["fleets"]:
        assert fleet["every_gateway_serving"]["count"] == 4
        assert fleet["stale"] == 0 and fleet["failed_writes"] == 0 and fleet["refused_writes"] == 0
        assert fleet["writes_per_second"] > 0
    assert data["etcd"]["watch_notified"]["count"] == 4 and data["etcd"]["transactions_per_second"] > 0
