"""`vamp gateway --config FILE` with an invalid file: exit status 2 and exactly one line on stderr that names
what is wrong (gateway, route, field; the position for a condition; the line for YAML syntax)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.support import free_port, run_cli

ROUTES = """
    routes:
      v1:
        weight: 90%
        targets: [127.0.0.1:9]
      v2:
        weight: 10%
        targets: [127.0.0.1:9]
"""

INVALID = {
    "YAML syntax": ("gateways:\n  demo:\n    port: [8080\n", ["line"]),
    "unknown route field": (
        "gateways:\n  demo:\n    port: 8080\n    routes:\n      v1:\n        wieght: 100%\n"
        "        targets: [127.0.0.1:9]\n",
        ["demo", "v1", "wieght"]),
    "unknown gateway field": (
        "gateways:\n  demo:\n    port: 8080\n    stickiness: route\n" + ROUTES, ["demo", "stickiness"]),
    "weights not summing to 100%": (
        "gateways:\n  demo:\n    port: 8080\n    routes:\n      v1:\n        weight: 60%\n"
        "        targets: [127.0.0.1:9]\n      v2:\n        weight: 30%\n        targets: [127.0.0.1:9]\n",
        ["demo", "weight"]),
    "condition that does not parse": (
        "gateways:\n  demo:\n    port: 8080\n    routes:\n      v1:\n        weight: 100%\n"
        "        targets: [127.0.0.1:9]\n      v2:\n        weight: 0%\n        condition: 'browser = '\n"
        "        targets: [127.0.0.1:9]\n",
        ["demo", "v2", "condition", "position"]),
    "bad port": ("gateways:\n  demo:\n    port: 99999\n" + ROUTES, ["demo", "port", "99999"]),
    "a name with a '..' part": ("gateways:\n  demo:\n    port: 8080\n  demo/..:\n    port: 8081\n",
                                ["demo/..", "'..'", "253 characters", "(line 4)"]),
    "nested too deeply": ("gateways:\n  demo: " + "[" * 100 + "]" * 100 + "\n", ["nested too deeply", "line 2"]),
    "duplicate virtual host": (
        "gateways:\n"
        "  shop:\n    port: 8080\n    virtual_hosts: [shop.local]\n" + ROUTES +
        "  store:\n    port: 8080\n    virtual_hosts: [shop.local]\n" + ROUTES,
        ["virtual_hosts", "shop.local"]),
}


def run_gateway(config_path: Path, tmp_path: Path, executable=None):
    return run_cli(["gateway", "--config", str(config_path), "--admin", f"127.0.0.1:{free_port()}",
                    "--state-dir", str(tmp_path / "state")], executable=executable)


def assert_one_line_error(result, fragments: list[str]) -> None:
    assert result.returncode == 2, f"exit {result.returncode}, stderr: {result.stderr!r}"
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {lines}"
    for fragment in fragments:
        assert fragment.lower() in lines[0].lower(), f"{fragment!r} not named in {lines[0]!r}"


@pytest.mark.parametrize("text, fragments", INVALID.values(), ids=INVALID.keys())
def test_invalid_config_exits_2_with_one_line_naming_the_fault(tmp_path, text, fragments):
    path = tmp_path / "gateways.yaml"
    path.write_text(text)
    assert_one_line_error(run_gateway(path, tmp_path), fragments)


def test_missing_config_file_exits_2_naming_the_file(tmp_path):
    missing = tmp_path / "nowhere.yaml"
    assert_one_line_error(run_gateway(missing, tmp_path), ["nowhere.yaml"])


def test_console_script_reports_the_same_way(tmp_path):
    vamp = Path(sys.executable).with_name("vamp")
    assert vamp.exists(), "the `vamp` console script is installed with the package"
    path = tmp_path / "gateways.yaml"
    path.write_text(INVALID["bad port"][0])
    assert_one_line_error(run_gateway(path, tmp_path, executable=[str(vamp)]), ["demo", "port"])
