"""Events through a real `vamp run`, its API and the `vamp` CLI: deploying the sava demo, scaling it, writing a
gateway's weights and removing it all produce the documented tagged events, and a stream connected to the
platform delivers each of them live; the stream ends when the platform stops; `vamp events --follow` prints a
new event live and, after the platform restarts, carries on from where it was (nothing twice); the retention
options prune when the platform starts, and ids keep increasing across restarts."""
from __future__ import annotations

import http.client
import json
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.support import free_port, run_cli
from tests.support.platform import VAMP, PlatformProcess, wait_for
from tests.support.processes import LOOPBACK, ManagedProcess

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
TIMEOUT = 20.0                # seconds for a deployment, a scale or an event to show
READ_TIMEOUT = 30.0           # seconds a stream may stay silent (its heartbeat is far shorter)


def start_platform(procs, tmp_path: Path, *extra: str, api_port: int | None = None,
                   log_name: str = "platform") -> PlatformProcess:
    process = PlatformProcess(tmp_path / "state", tmp_path, extra_args=extra, api_port=api_port, log_name=log_name)
    procs.started.append(process)          # stopped with the test's other processes; its stderr in a failure
    return process.start()


def events(platform: PlatformProcess, **query: Any) -> list[dict]:
    """The kept events matching `query`, oldest first."""
    params = "&".join(f"{key}={value}" for key, values in query.items()
                      for value in (values if isinstance(values, list) else [values]))
    status, found = platform.api("GET", f"/api/v1/events?per_page=1000&{params}")
    assert status == 200, found
    return list(reversed(found))


def post_event(platform: PlatformProcess, body: dict) -> dict:
    status, posted = platform.api("POST", "/api/v1/events", body)
    assert status == 201, posted
    return posted


class StreamReader:
    """`GET /api/v1/events/stream` read in a thread of its own: the events it delivers, and whether it ended."""

    def __init__(self, platform: PlatformProcess, query: str = "") -> None:
        self.connection = http.client.HTTPConnection(LOOPBACK, platform.api_port, timeout=READ_TIMEOUT)
        self.connection.request("GET", f"/api/v1/events/stream?heartbeat=1{query}")
        self.response = self.connection.getresponse()
        assert self.response.status == 200
        assert self.response.readline() == b": events\n" and self.response.readline() == b"\n"
        self.events: list[dict] = []
        self.ended = False
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            while line := self.response.readline():
                if line.startswith(b"data: "):
                    self.events.append(json.loads(line[6:]))
            self.ended = True
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.failure = exc

    def close(self) -> None:
        self.connection.close()


def tagged(found: list[dict], *tags: str) -> list[dict]:
    """The events carrying every one of `tags` (exactly: no implied prefixes here)."""
    return [event for event in found if set(tags) <= set(event["tags"])]


def one(found: list[dict], *tags: str) -> dict:
    matching = tagged(found, *tags)
    assert len(matching) == 1, f"{len(matching)} events tagged {tags}: {json.dumps(found, indent=1)}"
    return matching[0]


@pytest.mark.timeout(120)
def test_deploying_scaling_routing_and_removing_sava_produce_the_tagged_events_live(procs, tmp_path):
    platform = start_platform(procs, tmp_path)
    stream = StreamReader(platform)
    gateway_port = free_port()
    blueprint = tmp_path / "sava-1.0.yaml"
    blueprint.write_text((EXAMPLES / "sava-1.0.yaml").read_text().replace("9050:", f"{gateway_port}:"))
    service = ("deployments:sava", "clusters:sava", "services:sava:1.0.0")
    first, second = "instances:sava/sava/sava:1.0.0#0", "instances:sava/sava/sava:1.0.0#1"

    platform.vamp("deploy", str(blueprint), "--name", "sava", "--api", platform.api_url, timeout=TIMEOUT + 10)
    wait_for(lambda: tagged(events(platform), "synchronization:deployed"), TIMEOUT, "sava deployed")
    deployed = events(platform, tag="deployments:sava")
    created = one(deployed, "deployments:sava", "archive:create")
    assert created["value"] == {"blueprint": "sava:1.0", "added": ["sava/sava:1.0.0"]}
    assert one(deployed, *service, first, "instance:starting")["value"]["previous"] is None
    ready = one(deployed, *service, first, "instance:ready")
    assert set(ready["value"]["ports"]) == {"webport"}
    assert one(deployed, *service, "synchronization:deployed")["value"] == {"instances": 1}
    internal = one(deployed, "gateways:sava/sava/webport", "gateway:created", "clusters:sava")
    assert internal["value"]["routes"] == {"sava/sava/sava:1.0.0/webport": "100%"}
    external = one(deployed, f"gateways:sava/{gateway_port}", "gateway:created")
    assert external["value"] == {"port": f"{gateway_port}/http", "routes": {"sava/sava/webport": "100%"}}
    order = [event["id"] for event in (created, ready, one(deployed, *service, "synchronization:deployed"))]
    assert order == sorted(order) and created["id"] < internal["id"]

    platform.vamp("scale", "sava/sava/sava:1.0.0", "2", "--api", platform.api_url, timeout=TIMEOUT + 10)
    scaled = events(platform, tag=["services:sava:1.0.0"])
    assert one(scaled, *service, "synchronization:scale")["value"] == {"instances": 2, "previous": 1}
    one(scaled, *service, second, "instance:ready")
    assert [e["value"] for e in tagged(scaled, "synchronization:deployed")] == [{"instances": 1}, {"instances": 2}]

    edge = {"port": free_port(), "routes": {"a": {"weight": "100%", "targets": [f"127.0.0.1:{free_port()}"]},
                                            "b": {"weight": "0%", "targets": [f"127.0.0.1:{free_port()}"]}}}
    assert platform.api("PUT", "/api/v1/gateways/edge", edge)[0] == 202
    assert platform.api("PATCH", "/api/v1/gateways/edge", {"routes": {"a": {"weight": "80%"},
                                                                      "b": {"weight": "20%"}}})[0] == 202
    assert platform.api("DELETE", "/api/v1/gateways/edge")[0] == 202
    routed = events(platform, tag="gateways:edge")
    assert [e["tags"] for e in routed] == [["gateway:created", "gateways:edge"],
                                            ["gateway:updated", "gateways:edge", "routes:a", "routes:b"],
                                            ["gateway:deleted", "gateways:edge"]]
    assert routed[1]["value"] == {"changed": {"routes": {"a": {"weight": "80%"}, "b": {"weight": "20%"}}},
                                  "previous": {"routes": {"a": {"weight": "100%"}, "b": {"weight": "0%"}}}}

    platform.vamp("delete", "deployments", "sava", "--api", platform.api_url)
    wait_for(lambda: len(tagged(events(platform), "instance:stopped")) == 2, TIMEOUT, "both instances stopped")
    removed = events(platform, tag="deployments:sava", gt=created["timestamp"])
    assert one(removed, "deployments:sava", "archive:delete")["value"] == {"removed": ["sava/sava:1.0.0"]}
    one(removed, *service, "synchronization:undeployed")
    one(removed, "gateways:sava/sava/webport", "gateway:deleted")
    one(removed, f"gateways:sava/{gateway_port}", "gateway:deleted")
    stopped = {tag for event in tagged(removed, "instance:stopped") for tag in event["tags"]}
    assert {first, second} <= stopped

    everything = events(platform)
    wait_for(lambda: len(stream.events) >= len(everything), TIMEOUT, "every event on the stream")
    assert stream.events[:len(everything)] == everything and stream.failure is None
    stream.close()


def test_the_stream_ends_when_the_platform_stops(procs, tmp_path):
    platform = start_platform(procs, tmp_path)
    stream = StreamReader(platform, "&tag=stop-test")
    posted = post_event(platform, {"tags": ["stop-test"]})
    wait_for(lambda: stream.events == [posted], TIMEOUT, "the event on the stream")
    assert platform.stop() == 0
    wait_for(lambda: stream.ended or stream.failure, READ_TIMEOUT, "the end of the stream")
    assert stream.ended and stream.failure is None, stream.failure


class FollowProcess(ManagedProcess):
    label = "vamp events --follow"

    def __init__(self, workdir: Path, api_url: str) -> None:
        super().__init__([*VAMP, "events", "--follow", "--tag", "cli", "-o", "json", "--api", api_url], workdir,
                         log_name="follow")

    def printed(self) -> list[dict]:
        return [json.loads(line) for line in self.stdout_path.read_text().splitlines() if line.strip()]


@pytest.mark.timeout(120)
def test_vamp_events_follow_prints_a_new_event_live_and_carries_on_after_a_restart(procs, tmp_path):
    api_port = free_port()
    platform = start_platform(procs, tmp_path, api_port=api_port)
    before = post_event(platform, {"tags": ["cli"], "value": "before"})
    follow = FollowProcess(tmp_path, platform.api_url)
    procs.started.append(follow)
    follow.spawn()
    wait_for(lambda: follow.printed() == [before], TIMEOUT, "the event already kept printed")
    live = post_event(platform, {"tags": ["cli"], "value": "live"})
    post_event(platform, {"tags": ["not-cli"], "value": "elsewhere"})
    wait_for(lambda: follow.printed() == [before, live], TIMEOUT, "the new event printed")

    assert platform.stop() == 0
    wait_for(lambda: "reconnecting" in follow.stderr_text(), TIMEOUT, "the CLI noticing the stream's end")
    assert follow.returncode is None
    again = start_platform(procs, tmp_path, api_port=api_port, log_name="platform-again")
    after = post_event(again, {"tags": ["cli"], "value": "after the restart"})
    assert after["id"] > live["id"]
    wait_for(lambda: len(follow.printed()) >= 3, TIMEOUT, "the event after the restart printed")
    assert follow.printed() == [before, live, after]

    follow.process.send_signal(signal.SIGINT)          # Ctrl-C
    assert follow.process.wait(TIMEOUT) == 0


def test_the_retention_options_prune_when_the_platform_starts(procs, tmp_path):
    platform = start_platform(procs, tmp_path)
    posted = [post_event(platform, {"tags": ["kept"], "value": index}) for index in range(5)]
    old = post_event(platform, {"tags": ["kept"], "timestamp": "2026-01-01T00:00:00Z"})
    assert [event["id"] for event in events(platform, tag="kept")] == [e["id"] for e in [*posted, old]]
    assert platform.stop() == 0

    again = start_platform(procs, tmp_path, "--events-max-count", "3", "--events-max-age", "1h",
                           log_name="platform-again")
    kept = [event["id"] for event in events(again)]
    assert kept == [event["id"] for event in posted[2:]]     # the old one is too old; of the others, the 3 newest
    assert post_event(again, {"tags": ["kept"]})["id"] > old["id"]


@pytest.mark.parametrize("option", [["--events-max-count", "0"], ["--events-max-age", "soon"],
                                    ["--events-max-age", "0s"]])
def test_bad_retention_options_are_refused(tmp_path, option):
    result = run_cli(["run", "--state-dir", str(tmp_path / "state"), "--api", f"127.0.0.1:{free_port()}",
                      *option], executable=VAMP)
    assert result.returncode == 2 and option[0] in result.stderr
    assert not (tmp_path / "state").exists()


def test_vamp_events_lists_and_refuses_a_bad_since(procs, tmp_path):
    platform = start_platform(procs, tmp_path)
    posted = [post_event(platform, {"tags": ["listed", f"n:{index}"], "value": index}) for index in range(3)]
    listed = platform.vamp_json("events", "--tag", "listed", "--since", "1h", "--limit", "2", "--api",
                                platform.api_url)
    assert listed == posted[1:]
    lines = platform.vamp("events", "--tag", "n:0", "--api", platform.api_url).splitlines()
    assert lines == [f"{posted[0]['timestamp']}  #{posted[0]['id']}  listed n:0  0"]
    assert platform.vamp("events", "--tag", "nothing", "--api", platform.api_url).strip() == "no events"
    refused = run_cli(["events", "--since", "last tuesday", "--api", platform.api_url], executable=VAMP)
    assert refused.returncode == 2 and "--since" in refused.stderr
