"""benchmarks/reconfig.py: a very short real run prints both tables, applies changes under load without
errors and writes its figures as JSON."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from reconfig import Summary, weights_patch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "reconfig.py"
SYSTEM_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
MISSING = [name for name in ("wrk", "nginx") if shutil.which(name, path=SYSTEM_PATH) is None]


def test_a_change_is_a_merge_patch_of_the_route_weights():
    assert json.loads(weights_patch({"a": 90, "b": 10})) == {"routes": {"a": {"weight": "90%"},
                                                                         "b": {"weight": "10%"}}}


def test_durations_are_summarised_in_milliseconds():
    assert Summary.of([0.001, 0.003, 0.002]) == Summary(count=3, median_ms=2.0, max_ms=3.0)
    assert Summary.of([]) == Summary(count=0, median_ms=0.0, max_ms=0.0)


@pytest.mark.skipif(bool(MISSING), reason=f"not installed: {', '.join(MISSING)} (make system-deps)")
@pytest.mark.timeout(20)
def test_short_run_reports_throughput_with_and_without_changes_and_propagation(tmp_path):
    figures = tmp_path / "figures.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--duration", "1", "--warmup", "0", "--rate", "10",
                           "--changes", "4", "--streak", "4", "--json", str(figures)],
                          capture_output=True, text=True, timeout=18, env={**os.environ, "PATH": SYSTEM_PATH})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no changes" in done.stdout and "10 changes/s" in done.stdout
    assert "new route seen after the write returned" in done.stdout
    data = json.loads(figures.read_text())
    throughput, propagation = data["throughput"], data["propagation"]
    for run in ("steady", "changing"):
        assert throughput[run]["requests_per_second"] > 0
        assert throughput[run]["socket_errors"] == {} and throughput[run]["non_2xx_3xx"] == 0
    assert throughput["changes_applied"] >= 5 and throughput["changes_failed"] == 0
    assert propagation["visible_after"]["count"] == 4
    assert propagation["stale_answers"] == 0 and propagation["changes_failed"] == 0
