"""`vamp run` runs the SLA monitor: an escalation_only cluster is scaled by events posted to the API, within
its escalation's bounds, and the monitor's own event says what it scaled."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.platform import PlatformProcess, wait_for

BLUEPRINT = """
kind: blueprints
name: sava
clusters:
  sava:
    services:
      breed:
        name: sava:1.0.0
        deployable: cmd://python -m control.demo.sava --version 1.0.0
        ports: {webport: 8080/http}
      scale: 1
      health_checks: {path: /health, interval: 1s, timeout: 1s}
    sla:
      type: escalation_only
      escalations:
        - {type: scale_instances, minimum: 1, maximum: 2, scale_by: 1}
"""
SCALE = "/api/v1/deployments/sava/clusters/sava/services/sava:1.0.0/scale"
ESCALATE = {"tags": ["sla:escalate", "deployments:sava", "clusters:sava"], "value": "paged by ops"}
DEESCALATE = {"tags": ["sla:deescalate", "deployments:sava", "clusters:sava"]}


def deployed(run: PlatformProcess) -> bool:
    status, document = run.api("GET", "/api/v1/deployments/sava")
    return status == 200 and all(service["state"] == "deployed"
                                 for service in document["clusters"]["sava"]["services"])


@pytest.mark.timeout(90)
def test_posted_sla_events_scale_an_escalation_only_cluster_within_its_bounds(procs, tmp_path: Path):
    run = PlatformProcess(tmp_path / "state", tmp_path)
    procs.started.append(run)
    run.start()
    assert run.api("PUT", "/api/v1/deployments/sava", yaml_text=BLUEPRINT)[0] == 202
    wait_for(lambda: deployed(run), 30, "sava deployed")

    for _ in range(2):                              # the second is beyond the maximum: nothing more
        assert run.api("POST", "/api/v1/events", ESCALATE)[0] == 201
    wait_for(lambda: run.api("GET", SCALE)[1]["instances"] == 2, 30, "scaled to 2 instances")
    wait_for(lambda: deployed(run) and len(run.demo_processes()) == 2, 30, "two instances running")
    status, answers = run.api("GET", "/api/v1/events?tag=sla:escalate&tag=services:sava:1.0.0")
    assert status == 200
    assert [event["value"]["scaled"][0]["to"] for event in answers] == [2]

    assert run.api("POST", "/api/v1/events", DEESCALATE)[0] == 201
    wait_for(lambda: run.api("GET", SCALE)[1]["instances"] == 1, 30, "scaled back to 1 instance")
    wait_for(lambda: deployed(run) and len(run.demo_processes()) == 1, 30, "one instance running")
