"""benchmarks/regex.py: its patterns are all ones the condition parser accepts, and a short run prints a line
per pattern and passes."""
import subprocess
import sys
from pathlib import Path

import pytest

from regex import GROUPS, PATTERNS, condition_text
from gateway.routing.conditions import compile_condition

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "regex.py"


@pytest.mark.parametrize("pattern", PATTERNS, ids=lambda pattern: pattern.regex)
def test_every_benchmarked_pattern_is_accepted_by_the_condition_parser(pattern):
    assert pattern.group in GROUPS
    assert compile_condition(condition_text(pattern.regex)).node.value == pattern.regex.replace("/", "\\/")


@pytest.mark.timeout(60)
def test_a_short_run_prints_every_pattern_and_passes():
    done = subprocess.run([sys.executable, str(SCRIPT), "--size", "4096", "--repeat", "3"], capture_output=True,
                          text=True, timeout=50)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith(GROUPS)]
    assert [row.split("  /", 1)[1].removesuffix("/") for row in rows] == [pattern.regex for pattern in PATTERNS]
    assert "OVER" not in done.stdout


def test_a_bad_group_is_refused():
    done = subprocess.run([sys.executable, str(SCRIPT), "--only", "fast"], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 2
    assert "unknown group 'fast'" in done.stderr
