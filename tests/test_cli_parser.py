"""The `vamp` command is one parser, built in `control.cli` from each part's own `register` function, through
argparse's public interface; `python -m gateway` runs the gateway's commands of it alone, exactly as `vamp`
runs them."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from tests.support import run_cli

REPO = Path(__file__).resolve().parents[1]
PARTS = ("gateway", "control", "loadtest")
VAMP = [sys.executable, "-m", "control"]
GATEWAY_ALONE = [sys.executable, "-m", "gateway"]

# argparse's private names, and one part's private helpers called from another (`gateway_cli._setup_logging`)
PRIVATE = re.compile(r"\b_SubParsersAction\b|\._actions\b|\._subparsers\b|\b\w+_cli\._\w+")


def test_no_command_line_reaches_into_argparse_or_another_part_s_private_helpers():
    offenders = [f"{path.relative_to(REPO)}:{number}: {line.strip()}"
                 for part in PARTS for path in sorted((REPO / part).rglob("*.py"))
                 for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if PRIVATE.search(line)]
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize("command", [["--help"], ["gateway", "--help"], ["gateways", "set-weight", "--help"],
                                     ["apply", "--help"], ["gateway", "--workers", "0"], ["no-such-command"]])
def test_python_m_gateway_runs_the_gateway_s_commands_as_vamp_does(command):
    alone, vamp = run_cli(command, executable=GATEWAY_ALONE), run_cli(command, executable=VAMP)
    assert alone.returncode == vamp.returncode
    if command == ["--help"]:       # vamp lists the control plane's and the load tester's commands too
        assert "{gateway,worker,gateways,apply}" in alone.stdout
        assert ("{gateway,worker,gateways,apply,run,deploy,get,delete,scale,events,metrics,workflows,loadtest}"
                in vamp.stdout)
    elif command == ["no-such-command"]:
        assert alone.stderr.startswith("vamp: ") and vamp.stderr.startswith("vamp: ")
    else:
        assert (alone.stdout, alone.stderr) == (vamp.stdout, vamp.stderr)
