"""Workflows under a real `vamp run` (with a token), driven through the API and `vamp workflows …`: a script
posts an event through the client library with the token it was given; a built-in's state outlives the platform,
which resumes it from that state (and keeps a suspended one suspended) after it was stopped and started again."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from tests.support.platform import PlatformProcess, wait_for

TOKEN = "workflow-token"
WAIT = 20.0
GREETER = {"name": "greeter", "schedule": {"time": {"period": "PT1H", "repeat": 1}},
           "breed": {"name": "greeter", "cmd": f"{sys.executable} -c \"from control.client import Vamp; "
                                               "Vamp().event(['greeting'], {'from': 'a script'})\""}}
ALIVE = {"name": "alive", "schedule": "daemon", "workflow": "heartbeat", "parameters": {"interval": "200ms"}}


def platform(procs, tmp_path: Path) -> PlatformProcess:
    secret = tmp_path / "token"
    secret.write_text(TOKEN)
    process = PlatformProcess(tmp_path / "state", tmp_path, extra_args=("--token-file", str(secret)), token=TOKEN)
    procs.started.append(process)
    return process.start()


def vamp(run: PlatformProcess, *args: str) -> Any:
    return run.vamp_json("workflows", *args, "--api", run.api_url, "--token", TOKEN)


def beats(run: PlatformProcess) -> int:
    state = run.api("GET", "/api/v1/workflows/alive")[1]["state"]
    return state["beats"] if state else 0


def test_a_script_reaches_the_api_with_the_token_it_was_given(procs, tmp_path):
    run = platform(procs, tmp_path)
    assert run.api("PUT", "/api/v1/workflows/greeter", GREETER)[0] == 201
    wait_for(lambda: run.api("GET", "/api/v1/events?tag=greeting")[1], WAIT, "the script's event")
    [event] = run.api("GET", "/api/v1/events?tag=greeting")[1]
    assert event["tags"] == ["greeting", "workflows:greeter"] and event["value"] == {"from": "a script"}
    wait_for(lambda: vamp(run, "status", "greeter")["status"] == "finished", WAIT, "its one run done")
    status = vamp(run, "status", "greeter")
    assert status["runs"] == 1 and status["last_run"]["outcome"] == "exited with exit code 0"
    assert status["reason"] is None
    [listed] = vamp(run, "list")
    assert (listed["name"], listed["status"]) == ("greeter", "finished")


def test_a_built_in_resumes_from_its_state_after_the_platform_restarts(procs, tmp_path):
    run = platform(procs, tmp_path)
    assert run.api("PUT", "/api/v1/workflows/alive", ALIVE)[0] == 201
    wait_for(lambda: beats(run) >= 3, WAIT, "three beats")
    assert vamp(run, "suspend", "alive")["status"] in ("stopping", "suspended")
    wait_for(lambda: vamp(run, "status", "alive")["status"] == "suspended", WAIT, "suspended")
    kept = beats(run)
    assert run.stop() == 0

    run = platform(procs, tmp_path)                     # the same state directory
    assert vamp(run, "status", "alive")["status"] == "suspended"
    assert beats(run) == kept
    assert vamp(run, "resume", "alive")["status"] in ("starting", "running")
    wait_for(lambda: beats(run) > kept, WAIT, "a beat after the restart")
    events = run.api("GET", "/api/v1/events?tag=heartbeat&tag=workflows:alive&per_page=1000")[1]
    counted = sorted(event["value"]["beat"] for event in events)
    assert counted == list(range(1, len(counted) + 1)) and len(counted) > kept     # went on, never from 1 again
