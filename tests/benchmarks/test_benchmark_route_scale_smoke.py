"""benchmarks/route_scale.py: a short run prints a header and one row per number of routes."""
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "route_scale.py"


@pytest.mark.timeout(60)
def test_a_short_run_prints_a_row_per_size():
    done = subprocess.run([sys.executable, str(SCRIPT), "--calls", "200", "--repeat", "1", "--sizes", "1,10,100"],
                          capture_output=True, text=True, timeout=50)
    assert done.returncode == 0, done.stdout + done.stderr
    header, *rows = done.stdout.splitlines()
    assert header.split()[0] == "routes"
    assert [row.split()[0] for row in rows] == ["1", "10", "100"]
    assert all(row.count("µs") == 5 for row in rows), rows
