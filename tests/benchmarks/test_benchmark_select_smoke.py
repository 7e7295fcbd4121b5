"""benchmarks/route_select.py: a short run prints one line per gateway measured."""
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "route_select.py"


@pytest.mark.timeout(60)
def test_a_short_run_prints_a_line_per_case():
    done = subprocess.run([sys.executable, str(SCRIPT), "--calls", "1000", "--repeat", "1"], capture_output=True,
                          text=True, timeout=50)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = done.stdout.splitlines()
    assert [row.split("  ")[0] for row in rows] == ["2 weighted routes", "90/10 + user-agent condition",
                                                    "sticky route + cookie", "one route backed off"]
    assert all(row.endswith(" ns per select") for row in rows)
