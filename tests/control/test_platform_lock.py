"""One `vamp run` per state directory: a second one on the same directory exits 1 at once, saying which
process holds it, and starts nothing; the lock goes with the process that held it, however it ended."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import free_port, get, run_cli
from tests.support.platform import VAMP, PlatformProcess, alive

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXIT_TIMEOUT = 20.0           # seconds the refused `vamp run` gets to exit


def log_files(state_dir: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted((state_dir / "logs").iterdir())}


@pytest.mark.timeout(90)
def test_a_second_vamp_run_on_the_same_state_directory_starts_nothing(procs, tmp_path):
    state_dir = tmp_path / "state"
    first = PlatformProcess(state_dir, tmp_path, log_name="first")
    procs.started.append(first)
    first.start()
    port = free_port()
    blueprint = tmp_path / "sava-1.0.yaml"
    blueprint.write_text((EXAMPLES / "sava-1.0.yaml").read_text().replace("9050:", f"{port}:"))
    deployed = run_cli(["deploy", str(blueprint), "--name", "sava", "--api", first.api_url], executable=VAMP)
    assert deployed.returncode == 0, deployed.stderr
    instances = first.demo_processes()
    logs = log_files(state_dir)
    assert len(instances) == 1 and logs

    second = PlatformProcess(state_dir, tmp_path, log_name="second")
    procs.started.append(second)
    second.spawn()
    assert second.process.wait(EXIT_TIMEOUT) == 1
    assert second.stderr_text() == f"vamp: another vamp run (pid {first.pid}) is using {state_dir}\n"
    assert first.demo_processes() == instances and all(alive(p) for p in instances)
    assert log_files(state_dir) == logs                  # nothing started, stopped or written
    assert second.api("GET", "/api/v1/deployments")[0] is None      # its API never listened
    assert get(port).status == 200                        # the first one still serves

    first.kill()                                          # SIGKILL: the lock goes with the process
    third = PlatformProcess(state_dir, tmp_path, api_port=first.api_port, log_name="third")
    procs.started.append(third)
    third.start()
    status, document = third.api("GET", "/api/v1/deployments/sava")
    assert status == 200, document
