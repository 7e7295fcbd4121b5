"""Issue 11's release loop end to end: a real `vamp run`, the repository's example blueprints and canary workflow
(with short intervals), deployed with the `vamp` CLI and driven by `vamp loadtest` as a process.

A good 1.1 is promoted through every step without one failed request; a 1.1 answering 20% with 500 is rolled
back within two intervals, the `canary:rollback` event carrying the figures; without traffic the canary stays at
its first step, waiting; the metrics API counts what the load tester counted, per route.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.support.platform import PlatformProcess, wait_for
from tests.support.processes import REPO_ROOT, free_port

EXAMPLES = REPO_ROOT / "examples"
GATEWAY = "sava/sava/webport"
BASELINE = "sava/sava/sava:1.0.0/webport"
CANARY = "sava/sava/sava:1.1.0/webport"
INTERVAL = 2.0                  # seconds at each canary step
STEPS = ["10%", "50%", "100%"]
MIN_REQUESTS = 20
RATE = 100                      # requests per second the load tester sends
WAIT = 60.0                     # seconds a whole canary run may take on a busy machine
LOADTEST_SECONDS = 120          # the load tester's bound; the tests stop it with Ctrl-C (SIGINT) before


def start_platform(procs, tmp_path: Path) -> PlatformProcess:
    run = PlatformProcess(tmp_path / "state", tmp_path)
    procs.started.append(run)
    return run.start()


def example(tmp_path: Path, name: str, port: int | None = None) -> Path:
    """The example blueprint `name`, its external gateway on `port` instead of 9050 (which may be in use)."""
    text = (EXAMPLES / name).read_text()
    if port is not None:
        assert "9050:" in text
        text = text.replace("9050:", f"{port}:")
    path = tmp_path / name
    path.write_text(text)
    return path


def deploy(run: PlatformProcess, path: Path) -> None:
    run.vamp("deploy", str(path), "--name", "sava", "--api", run.api_url, timeout=120.0)


def deploy_sava(run: PlatformProcess, tmp_path: Path, canary_blueprint: str) -> int:
    """sava 1.0 on a free external port, then `canary_blueprint` merged in at 0%; the external port."""
    port = free_port()
    deploy(run, example(tmp_path, "sava-1.0.yaml", port))
    deploy(run, example(tmp_path, canary_blueprint))
    return port


def apply_canary(run: PlatformProcess, tmp_path: Path, **overrides: Any) -> None:
    """examples/workflows/sava-canary.yaml with short intervals, applied with `vamp apply`."""
    workflow = yaml.safe_load((EXAMPLES / "workflows" / "sava-canary.yaml").read_text())
    workflow["parameters"].update({"interval": f"{INTERVAL:g}s", "steps": STEPS, "min_requests": MIN_REQUESTS,
                                   **overrides})
    path = tmp_path / "sava-canary.yaml"
    path.write_text(yaml.safe_dump(workflow))
    run.vamp("apply", "-f", str(path), "--api", run.api_url)


def state(run: PlatformProcess) -> dict:
    return run.api("GET", "/api/v1/workflows/sava-canary")[1]["state"] or {}


def events(run: PlatformProcess, *tags: str) -> list[dict]:
    query = "&".join(f"tag={tag}" for tag in tags)
    status, found = run.api("GET", f"/api/v1/events?{query}&per_page=1000")
    assert status == 200
    return sorted(found, key=lambda event: event["id"])


class Loadtest:
    """`vamp loadtest` as a process, grouping by X-Version; `finish()` sends Ctrl-C and returns its --json."""

    def __init__(self, port: int, workdir: Path) -> None:
        self.result_path = workdir / f"loadtest-{port}.json"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "control", "loadtest", f"http://127.0.0.1:{port}/", "-d",
             f"{LOADTEST_SECONDS}s", "-r", str(RATE), "-c", "8", "--by", "header:X-Version", "--no-progress",
             "--json", str(self.result_path)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def finish(self) -> dict:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        stdout, stderr = self.process.communicate(timeout=30)
        assert self.result_path.exists(), f"no --json from vamp loadtest: {stderr.strip()} {stdout.strip()}"
        return json.loads(self.result_path.read_text())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


def groups(result: dict) -> dict[str, dict]:
    return {group["name"]: group for group in result["groups"]}


def test_a_good_canary_is_promoted_through_every_step_without_a_failed_request(procs, tmp_path):
    run = start_platform(procs, tmp_path)
    port = deploy_sava(run, tmp_path, "sava-1.1.yaml")
    load = Loadtest(port, tmp_path)
    try:
        apply_canary(run, tmp_path)
        wait_for(lambda: state(run).get("phase") == "promoted", WAIT, "the canary promoted")
        result = load.finish()
    finally:
        load.stop()

    assert result["totals"]["errors"] == 0 and result["totals"]["errors_by_kind"] == {}
    assert groups(result)["1.1.0"]["requests"] > 0
    final = state(run)
    assert final["weights"] == {BASELINE: "0%", CANARY: "100%"}
    routes = run.api("GET", f"/api/v1/gateways/{GATEWAY}")[1]["routes"]
    assert routes[CANARY]["weight"] == "100%" and routes[BASELINE]["weight"] == "0%"
    stepped = [event["value"]["step"] for event in events(run, "canary:progress", "workflows:sava-canary")]
    assert stepped == [1, 2, 3]                         # every step, in order, none skipped
    [promoted] = events(run, "canary:promote", "workflows:sava-canary")
    assert promoted["value"]["judgement"]["verdict"] == "pass"
    assert promoted["value"]["judgement"]["requests"] >= MIN_REQUESTS
