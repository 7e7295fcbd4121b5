"""Issue 11's release loop end to end: a real `vamp run`, the repository's example blueprints and canary workflow
(with short intervals), deployed with the `vamp` CLI and driven by `vamp loadtest` as a process.

A good 1.1 is promoted through every step without one failed request; a 1.1 answering 20% with 500 is rolled
back within two intervals, the `canary:rollback` event carrying the figures; without traffic the canary stays at
its first step, waiting; the metrics API counts what the load tester counted, per route; the event stream
delivers a canary's events live and resumes from Last-Event-ID; an SLA scales a slow cluster up to its maximum
and back down, drained, when it is fast again.

Intervals are 2 s by default; VAMP_E2E_INTERVAL=30 runs the same scenarios at the example's pace (minutes).
"""
from __future__ import annotations

import datetime
import http.client
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import yaml

from tests.support.platform import PlatformProcess, wait_for
from tests.support.processes import REPO_ROOT, free_port

EXAMPLES = REPO_ROOT / "examples"
GATEWAY = "sava/sava/webport"
BASELINE = "sava/sava/sava:1.0.0/webport"
CANARY = "sava/sava/sava:1.1.0/webport"
INTERVAL = float(os.environ.get("VAMP_E2E_INTERVAL", "2"))      # seconds at each canary step (and SLA window)
STEPS = ["20%", "50%", "100%"]     # at RATE, 20% is twice MIN_REQUESTS per interval
MIN_REQUESTS = 20
RATE = 100                      # requests per second the load tester sends
WAIT = max(60.0, 15 * INTERVAL)                 # seconds a whole canary run may take on a busy machine
LOADTEST_SECONDS = int(max(120, 20 * INTERVAL))  # the load tester's bound; the tests stop it with Ctrl-C before
RUN_NUMBERS = itertools.count(1)    # numbers the --json files


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


def traffic_flows(run: PlatformProcess) -> bool:
    """True once the cluster's gateway has answered requests within the last 2 s (the load tester is up)."""
    status, figure = run.api("GET", f"/api/v1/metrics/gateways/{GATEWAY}/requests?window=2s")
    return status == 200 and figure["value"] > 0


def state(run: PlatformProcess) -> dict:
    return run.api("GET", "/api/v1/workflows/sava-canary")[1]["state"] or {}


def events(run: PlatformProcess, *tags: str) -> list[dict]:
    query = "&".join(f"tag={tag}" for tag in tags)
    status, found = run.api("GET", f"/api/v1/events?{query}&per_page=1000")
    assert status == 200
    return sorted(found, key=lambda event: event["id"])


class Loadtest:
    """`vamp loadtest` as a process, grouping by X-Version; `finish()` sends Ctrl-C and returns its --json."""

    def __init__(self, port: int, workdir: Path, *, requests: int | None = None, rate: int | None = RATE) -> None:
        self.result_path = workdir / f"loadtest-{next(RUN_NUMBERS)}.json"
        self.interrupt = requests is None
        bound = ["-d", f"{LOADTEST_SECONDS}s"] if requests is None else ["-n", str(requests)]
        if rate is not None:                                   # else the closed model: 8 requests in flight
            bound += ["-r", str(rate)]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "control", "loadtest", f"http://127.0.0.1:{port}/", *bound, "-c", "8",
             "--by", "header:X-Version", "--no-progress",
             "--json", str(self.result_path)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def finish(self) -> dict:
        if self.interrupt and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        stdout, stderr = self.process.communicate(timeout=60)
        assert self.result_path.exists(), f"no --json from vamp loadtest: {stderr.strip()} {stdout.strip()}"
        return json.loads(self.result_path.read_text())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


def iso_seconds(timestamp: str) -> float:
    return datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def groups(result: dict) -> dict[str, dict]:
    return {group["name"]: group for group in result["groups"]}


def test_a_good_canary_is_promoted_through_every_step_without_a_failed_request(procs, tmp_path):
    run = start_platform(procs, tmp_path)
    port = deploy_sava(run, tmp_path, "sava-1.1.yaml")
    load = Loadtest(port, tmp_path)
    try:
        wait_for(lambda: traffic_flows(run), WAIT, "the load tester's requests")
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


def test_a_canary_failing_a_fifth_of_its_requests_is_rolled_back_within_two_intervals(procs, tmp_path):
    run = start_platform(procs, tmp_path)
    port = deploy_sava(run, tmp_path, "sava-1.1-bad.yaml")
    load = Loadtest(port, tmp_path)
    try:
        wait_for(lambda: traffic_flows(run), WAIT, "the load tester's requests")
        apply_canary(run, tmp_path)
        wait_for(lambda: state(run).get("phase") == "rolled_back", WAIT, "the canary rolled back")
        [rollback] = events(run, "canary:rollback", "workflows:sava-canary")
        [started] = events(run, "canary:progress", "workflows:sava-canary")      # never left its first step
        routes = run.api("GET", f"/api/v1/gateways/{GATEWAY}")[1]["routes"]
        before = groups(load.finish())
        load = Loadtest(port, tmp_path, requests=300)        # a bounded run after the rollback
        after = groups(load.finish())
    finally:
        load.stop()

    judgement = rollback["value"]["judgement"]
    assert judgement["verdict"] == "fail" and judgement["requests"] >= MIN_REQUESTS
    assert 0.7 <= judgement["success_rate"] <= 0.9 and judgement["errors"] > 0       # about a fifth failed
    assert rollback["value"]["failures"] == 2 and rollback["value"]["step"] == 1
    assert "gateways:" + GATEWAY in rollback["tags"]
    elapsed = iso_seconds(rollback["timestamp"]) - iso_seconds(started["timestamp"])
    waited = events(run, "canary:waiting", "workflows:sava-canary")
    assert elapsed < 2 * INTERVAL + 1.0, f"rolled back {elapsed:.1f}s after the start, having waited {waited}"
    assert routes[CANARY]["weight"] == "0%" and routes[BASELINE]["weight"] == "100%"
    assert before["1.1.0"]["errors"] > 0                     # the load tester saw the bad canary's 500s ...
    assert set(after) == {"1.0.0"} and after["1.0.0"]["errors"] == 0      # ... and none once 1.0 has it all


def test_without_traffic_the_canary_waits_at_its_first_step(procs, tmp_path):
    run = start_platform(procs, tmp_path)
    deploy_sava(run, tmp_path, "sava-1.1.yaml")
    apply_canary(run, tmp_path)
    wait_for(lambda: len(events(run, "canary:waiting", "workflows:sava-canary")) >= 3, WAIT,
             "three judgements without data")
    now = state(run)
    assert now["phase"] == "waiting" and now["step"] == 1
    assert now["weights"] == {BASELINE: "80%", CANARY: "20%"}
    assert now["judgement"]["verdict"] == "no_data" and now["judgement"]["requests"] == 0
    assert now["judgement"]["success_rate"] is None              # unknown, not 100%
    assert [event["value"]["step"] for event in events(run, "canary:progress", "workflows:sava-canary")] == [1]
    assert events(run, "canary:promote") == [] and events(run, "canary:rollback") == []
    waiting = events(run, "canary:waiting", "workflows:sava-canary")
    assert all(event["value"]["requests"] == 0 for event in waiting)
    shown = run.vamp_json("workflows", "status", "sava-canary", "--api", run.api_url)
    assert shown["status"] == "running"


def test_the_metrics_api_counts_what_the_load_tester_counted_per_route(procs, tmp_path):
    run = start_platform(procs, tmp_path)
    port = deploy_sava(run, tmp_path, "sava-1.1.yaml")
    run.vamp("gateways", "set-weight", GATEWAY, f"{BASELINE}=70%", f"{CANARY}=30%", "--api", run.api_url)
    load = Loadtest(port, tmp_path, requests=1000)
    try:
        result = load.finish()
    finally:
        load.stop()
    seen = {"1.0.0": groups(result)["1.0.0"]["requests"], "1.1.0": groups(result)["1.1.0"]["requests"]}
    assert result["totals"]["errors"] == 0 and sum(seen.values()) == 1000

    def counted() -> dict[str, int]:
        return {version: run.api("GET", f"/api/v1/metrics/gateways/{GATEWAY}/routes/{route}/requests"
                                        "?window=300s")[1]["value"]
                for version, route in (("1.0.0", BASELINE), ("1.1.0", CANARY))}

    def within_one_percent() -> bool:
        return all(abs(counted()[version] - seen[version]) <= 0.01 * seen[version] for version in seen)

    wait_for(within_one_percent, WAIT, f"the metrics API's counts within 1% of {seen}")
    total = run.api("GET", f"/api/v1/metrics/gateways/{GATEWAY}/requests?window=300s")[1]["value"]
    assert abs(total - 1000) <= 10


class EventStream:
    """`GET /api/v1/events/stream?tag=TAG` read in a thread: the events in the order they came, as decoded."""

    def __init__(self, run: PlatformProcess, tag: str, last_event_id: int | None = None) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", run.api_port, timeout=30)
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        self.connection.request("GET", f"/api/v1/events/stream?tag={tag}&heartbeat=1", headers=headers)
        self.response = self.connection.getresponse()
        assert self.response.status == 200
        assert self.response.getheader("Content-Type", "").startswith("text/event-stream")
        self.received: list[dict] = []
        self.subscribed = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        assert self.subscribed.wait(30), "the stream's first line"

    def _read(self) -> None:
        try:
            for raw in self.response:
                line = raw.decode().rstrip("\r\n")
                if line.startswith(":"):
                    self.subscribed.set()
                elif line.startswith("data:"):
                    self.received.append(json.loads(line[len("data:"):].strip()))
        except (OSError, http.client.HTTPException):      # cut by close()
            pass

    def tags(self) -> list[str]:
        return [tag for event in list(self.received) for tag in event["tags"] if tag.startswith("canary:")]

    def close(self) -> None:
        self.connection.sock.shutdown(socket.SHUT_RDWR)        # the reader sees the end, then it is closed
        self.thread.join(10)
        self.connection.close()


def test_the_event_stream_delivers_a_canary_live_and_resumes_from_last_event_id(procs, tmp_path):
    run = start_platform(procs, tmp_path)
    port = deploy_sava(run, tmp_path, "sava-1.1-bad.yaml")
    first = EventStream(run, "workflows:sava-canary")
    load = Loadtest(port, tmp_path)
    try:
        wait_for(lambda: traffic_flows(run), WAIT, "the load tester's requests")
        apply_canary(run, tmp_path)
        wait_for(lambda: "canary:progress" in first.tags(), WAIT, "canary:progress, live")
        first.close()                                            # dropped before the judgements
        seen_first = list(first.received)
        second = EventStream(run, "workflows:sava-canary", last_event_id=seen_first[-1]["id"])
        wait_for(lambda: "canary:rollback" in second.tags(), WAIT, "canary:rollback, after resuming")
        second.close()
    finally:
        load.stop()

    streamed = seen_first + second.received
    ids = [event["id"] for event in streamed]
    assert ids == sorted(set(ids))                                  # in order, none twice
    logged = events(run, "workflows:sava-canary")
    assert ids == [event["id"] for event in logged]                 # none missed
    assert streamed == logged
    canary = [tag for event in streamed for tag in event["tags"] if tag.startswith("canary:")]
    assert [tag for tag in canary if tag != "canary:waiting"] == ["canary:progress", "canary:fail", "canary:rollback"]


SLA_INTERVAL = SLA_COOLDOWN = INTERVAL


def sla_blueprint(tmp_path: Path, port: int, delay_ms: int, instances: int) -> Path:
    """examples/sava-sla.yaml on `port`, with short windows, the given delay and instance count."""
    blueprint = yaml.safe_load((EXAMPLES / "sava-sla.yaml").read_text())
    blueprint["gateways"] = {port: "sava/webport"}
    cluster = blueprint["clusters"]["sava"]
    cluster["services"]["environment_variables"]["SAVA_DELAY_MS"] = delay_ms
    cluster["services"]["scale"]["instances"] = instances
    cluster["sla"]["window"] = {"interval": f"{SLA_INTERVAL:g}s", "cooldown": f"{SLA_COOLDOWN:g}s"}
    path = tmp_path / f"sava-sla-{delay_ms}.yaml"
    path.write_text(yaml.safe_dump(blueprint))
    return path


def steps(found: list[dict]) -> list[tuple[int, int]]:
    return [(scaled["from"], scaled["to"]) for event in found for scaled in event["value"]["scaled"]]


def assert_one_step_per_cooldown(found: list[dict]) -> None:
    stamps = [iso_seconds(event["timestamp"]) for event in found]
    gaps = [later - earlier for earlier, later in zip(stamps, stamps[1:])]
    assert all(gap >= SLA_INTERVAL + SLA_COOLDOWN - 0.01 for gap in gaps), f"steps {gaps} s apart"


def test_a_slow_cluster_scales_up_to_its_maximum_one_step_per_cooldown_and_back_down_when_fast(procs, tmp_path):
    run = start_platform(procs, tmp_path)
    port = free_port()
    deploy(run, sla_blueprint(tmp_path, port, delay_ms=300, instances=1))
    load = Loadtest(port, tmp_path, rate=None)
    try:
        wait_for(lambda: any(event["value"]["scaled"] == [] for event in events(run, "sla:escalate")), WAIT,
                 "an escalation at the maximum that scales nothing")
        up = events(run, "sla:escalate")
        deployed = events(run, "synchronization:deployed", "deployments:sava")[0]      # the first deploy
        assert iso_seconds(up[0]["timestamp"]) - iso_seconds(deployed["timestamp"]) >= SLA_INTERVAL - 0.01
        assert steps(up) == [(1, 2), (2, 3)]                       # to the maximum, one at a time, no further
        assert all(event["value"]["measured"] > 200 for event in up)
        assert_one_step_per_cooldown(up)
        assert len(run.demo_processes()) == 3

        deploy(run, sla_blueprint(tmp_path, port, delay_ms=0, instances=3))     # the delay is gone
        wait_for(lambda: steps(events(run, "sla:deescalate")) == [(3, 2), (2, 1)], WAIT, "scaled down to 1")
        down = events(run, "sla:deescalate")
        assert all(event["value"]["measured"] < 50 for event in down)
        assert_one_step_per_cooldown(down)
        wait_for(lambda: len(run.demo_processes()) == 1, WAIT, "the instances that went drained and stopped")
        result = load.finish()
    finally:
        load.stop()
    assert result["totals"]["errors"] == 0, result["totals"]["errors_by_kind"]      # scaling down drains
