"""VAMP's four tutorial steps with the demo-command blueprints of examples/, under a real `vamp run` and the
`vamp` CLI: sava 1.0 (one service), 1.1 merged as a canary and given half the traffic, 1.2 (a frontend and
two backends wired by `$backend1.host:$backend1.ports.webport`) as deployment sava-new, then 1.3 (one
backend) merged into it, given the traffic, and 1.2 removed; at the end one `vamp delete -f` body that only names
the deployments and their gateways removes them all. A page through the external gateway proves the
wiring: the frontend shows the messages of the very backend instances the platform runs."""
from __future__ import annotations

import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from tests.support import free_port
from tests.support.platform import PlatformProcess

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
READY_TIMEOUT = 20.0          # seconds for a deployment or a weight change to show through the gateway


def example(tmp_path: Path, name: str, gateway_port: int | None = None) -> Path:
    """examples/NAME, its external gateway (9050 or 9060) on `gateway_port`."""
    text = (EXAMPLES / name).read_text()
    if gateway_port is not None:
        text = text.replace("\n  9050:", f"\n  {gateway_port}:").replace("\n  9060:", f"\n  {gateway_port}:")
    path = tmp_path / name
    path.write_text(text)
    return path


def page(port: int) -> tuple[int | None, str, str]:
    """(status, X-Version, body) of GET / through the gateway on `port`; (None, "", why) when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
            return response.status, response.headers.get("X-Version", ""), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("X-Version", ""), exc.read().decode(errors="replace")
    except OSError as exc:
        return None, "", str(exc)


def versions(port: int, count: int) -> Counter:
    seen: Counter = Counter()
    for _ in range(count):
        status, version, body = page(port)
        assert status == 200, (status, body)
        seen[version] += 1
    return seen


def instance_names(platform: PlatformProcess, deployment: str, cluster: str) -> list[str]:
    status, document = platform.api("GET", f"/api/v1/deployments/{deployment}")
    assert status == 200, document
    return [instance["name"] for service in document["clusters"][cluster]["services"]
            for instance in service["instances"]]


@pytest.mark.timeout(60)
def test_vamps_four_tutorial_steps_under_vamp_run(procs, tmp_path):
    platform = PlatformProcess(tmp_path / "state", tmp_path)
    procs.started.append(platform)
    platform.start()
    api = ("--api", platform.api_url)
    monolith, split = free_port(), free_port()

    # 1.0: one service
    platform.vamp("deploy", str(example(tmp_path, "sava-1.0.yaml", monolith)), "--name", "sava", *api)
    assert versions(monolith, 3) == Counter({"1.0.0": 3})

    # 1.1: merged at 0%, then half the traffic
    platform.vamp("deploy", str(example(tmp_path, "sava-1.1.yaml")), "--name", "sava", *api)
    assert versions(monolith, 3) == Counter({"1.0.0": 3})
    platform.vamp("gateways", "set-weight", "sava/sava/webport", "sava/sava/sava:1.0.0/webport=50%",
                  "sava/sava/sava:1.1.0/webport=50%", *api)
    halves = versions(monolith, 20)
    assert set(halves) == {"1.0.0", "1.1.0"} and abs(halves["1.0.0"] - halves["1.1.0"]) <= 2, halves

    # 1.2: a frontend and two backends, wired by their environment, next to sava
    platform.vamp("deploy", str(example(tmp_path, "sava-1.2.yaml", split)), "--name", "sava-new", *api)
    platform.wait_until(lambda: page(split)[0] == 200, READY_TIMEOUT, "the 1.2 frontend answering")
    status, version, body = page(split)
    assert (status, version) == (200, "1.2.0")
    assert "<h1>sava-frontend 1.2.0</h1>" in body
    for variable, cluster, breed in (("BACKEND_1", "backend1", "sava-backend1"),
                                     ("BACKEND_2", "backend2", "sava-backend2")):
        [instance] = instance_names(platform, "sava-new", cluster)
        assert f"<li>{variable}: {breed} 1.2.0 (instance {instance})</li>" in body, body
    assert set(versions(monolith, 10)) == {"1.0.0", "1.1.0"}                  # sava is untouched

    # 1.3: merged into sava-new (the frontend at 0%, cluster backend new), given the traffic, then 1.2 removed
    platform.vamp("deploy", str(example(tmp_path, "sava-1.3.yaml")), "--name", "sava-new", *api)
    assert page(split)[1] == "1.2.0"
    platform.vamp("gateways", "set-weight", "sava-new/sava/webport", "sava-new/sava/sava-frontend:1.2.0/webport=0%",
                  "sava-new/sava/sava-frontend:1.3.0/webport=100%", *api)
    platform.wait_until(lambda: page(split)[:2] == (200, "1.3.0"), READY_TIMEOUT, "the 1.3 frontend answering")
    platform.vamp("delete", "-f", str(example(tmp_path, "sava-1.2.yaml")), "--deployment", "sava-new", *api)
    status, document = platform.api("GET", "/api/v1/deployments/sava-new")
    assert status == 200 and set(document["clusters"]) == {"sava", "backend"}, document
    assert [s["breed"]["name"] for s in document["clusters"]["sava"]["services"]] == ["sava-frontend:1.3.0"]
    status, version, body = page(split)
    assert (status, version) == (200, "1.3.0"), body
    [instance] = instance_names(platform, "sava-new", "backend")
    assert f"<li>BACKEND: sava-backend 1.3.0 (instance {instance})</li>" in body, body
    assert "BACKEND_1" not in body

    # the end, as VAMP's recipes clean up: one body that only names each deployment and its external gateway
    cleanup = tmp_path / "cleanup.yaml"
    cleanup.write_text(f"kind: deployment\nname: sava\n---\nkind: gateway\nname: sava/{monolith}\n---\n"
                       f"kind: deployment\nname: sava-new\n---\nkind: gateway\nname: sava-new/{split}\n")
    platform.vamp("delete", "-f", str(cleanup), *api)
    assert platform.api("GET", "/api/v1/deployments")[1] == []
    status, gateways = platform.api("GET", "/api/v1/gateways")
    assert (status, gateways) == (200, [])
