"""`vamp deploy` and `vamp scale` against a real `vamp run`: they return once the gateway serves the new
instances (or exit 1 naming what failed or is not ready), the API shows each service's state, the gateway's
status counts the requests each target served, and errors name what the user wrote."""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from tests.support import HttpClient, free_port, get, run_cli
from tests.support.platform import VAMP, PlatformProcess

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
BREED_TEMPLATE = """\
kind: blueprints
name: {name}:1.0
gateways:
  {port}: {name}/webport
clusters:
  {name}:
    services:
      breed:
        name: {name}:1.0.0
        deployable:
          type: cmd
          definition: {command}
        ports:
          webport: 8080/http
      scale:
        cpu: 0.2
        memory: 64MB
        instances: {instances}
      health_checks:
        path: /
        port: webport
        initial_delay: {initial_delay}
        interval: 5s
        timeout: 2s
        failures: 3
"""
DEMO = "python -m control.demo.sava --version 1.0.0"
WAIT = 60.0                   # seconds the CLI gets to return in a test that expects it to succeed


@pytest.fixture(scope="module")
def platform(module_procs, tmp_path_factory) -> PlatformProcess:
    workdir = tmp_path_factory.mktemp("platform")
    process = PlatformProcess(workdir / "state", workdir)
    module_procs.started.append(process)
    return process.start()


def blueprint(tmp_path: Path, name: str, *, command: str = DEMO, instances: int | str = 1,
              initial_delay: str = "0s", port: int | None = None) -> tuple[Path, int]:
    """(a blueprint file with one cluster `name` running breed `name:1.0.0`, its external gateway port)."""
    port = port or free_port()
    path = tmp_path / f"{name}.yaml"
    path.write_text(BREED_TEMPLATE.format(name=name, port=port, command=command, instances=instances,
                                          initial_delay=initial_delay))
    return path, port


def vamp(platform: PlatformProcess, *args: str, timeout: float = WAIT):
    """`vamp ARGS --api URL` to completion: the CompletedProcess (any exit code)."""
    return run_cli([*args, "--api", platform.api_url], timeout=timeout, executable=VAMP)


def service_of(platform: PlatformProcess, deployment: str) -> dict:
    """The only service of `deployment`, as GET /api/v1/deployments/NAME shows it."""
    status, document = platform.api("GET", f"/api/v1/deployments/{deployment}")
    assert status == 200, (status, document)
    (cluster,) = document["clusters"].values()
    (service,) = cluster["services"]
    return service


def gateway_requests(platform: PlatformProcess, name: str) -> dict[str, int]:
    """Requests each target of gateway `name` served, by route/target, as the API's status shows them."""
    status, document = platform.api("GET", f"/api/v1/gateways/{name}")
    assert status == 200, (status, document)
    return {f"{route}/{address}": target["requests"] for route, body in document["status"]["routes"].items()
            for address, target in body["targets"].items()}


# -- deploy and scale wait ---------------------------------------------------------------------------------
@pytest.mark.timeout(90)
def test_deploy_and_scale_return_once_the_gateway_serves_the_new_instances(platform, tmp_path):
    path = tmp_path / "sava-1.0.yaml"
    port = free_port()
    path.write_text((EXAMPLES / "sava-1.0.yaml").read_text().replace("9050:", f"{port}:"))

    deployed = vamp(platform, "deploy", str(path), "--name", "sava")
    assert deployed.returncode == 0, deployed.stderr
    response = get(port)                             # README's curl, at once
    assert response.status == 200 and response.header("x-version") == "1.0.0", response.body[:200]
    assert deployed.stdout.strip() == "deployment sava deployed"
    assert service_of(platform, "sava")["state"] == "deployed"
    first, _, last = os.environ.get("VAMP_INTERNAL_PORTS", "40000-40999").partition("-")
    internal = platform.api("GET", "/api/v1/gateways/sava/sava/webport")[1]["port"]
    assert int(first) <= int(str(internal).split("/")[0]) <= int(last), internal     # vamp run --internal-ports

    scaled = vamp(platform, "scale", "sava/sava/sava:1.0.0", "3")
    assert scaled.returncode == 0, scaled.stderr
    service = service_of(platform, "sava")
    assert service["state"] == "deployed" and len(service["instances"]) == 3, service
    reached = set()
    with HttpClient(port, timeout=5) as client:
        for _ in range(6):
            client.close()                           # a new connection each: the round-robin meets each instance
            response = client.request("GET", "/")
            assert response.status == 200, response.body[:200]
            reached.add(response.header("x-instance"))
    assert reached == {instance["name"] for instance in service["instances"]}


@pytest.mark.timeout(90)
def test_scale_down_and_up_again_waits_for_the_instances_that_come_back(platform, tmp_path):
    """Instances keep their ids across a scale-down and up: the ones back are routed like new ones."""
    path, port = blueprint(tmp_path, "updown", instances=3)
    assert vamp(platform, "deploy", str(path), "--name", "updown").returncode == 0
    for instances in (1, 3):
        result = vamp(platform, "scale", "updown/updown/updown:1.0.0", str(instances), "--timeout", "30")
        assert result.returncode == 0, result.stderr
    service = service_of(platform, "updown")
    ready = {i["name"] for i in service["instances"] if i["state"] == "ready"}
    assert service["state"] == "deployed" and len(ready) == 3, service
    reached = set()
    with HttpClient(port, timeout=5) as client:
        for _ in range(6):
            client.close()
            reached.add(client.request("GET", "/").header("x-instance"))
    assert reached == ready


@pytest.mark.timeout(90)
def test_a_changed_breed_is_deployed_once_its_new_instances_serve(platform, tmp_path):
    """Merging a blueprint whose breed runs another command replaces the instances one by one; deploy
    returns once the new ones serve."""
    path, port = blueprint(tmp_path, "changed")
    assert vamp(platform, "deploy", str(path), "--name", "changed").returncode == 0
    path.write_text(path.read_text().replace("--version 1.0.0", "--version 1.0.1"))
    result = vamp(platform, "deploy", str(path), "--name", "changed", "--timeout", "30")
    assert result.returncode == 0, result.stderr
    response = get(port)
    assert response.status == 200 and response.header("x-version") == "1.0.1", response.body[:200]


@pytest.mark.timeout(60)
def test_a_service_whose_command_fails_is_failed_and_deploy_exits_1_naming_it(platform, tmp_path):
    path, _ = blueprint(tmp_path, "broken", command="python -c 'import sys; sys.exit(3)'")
    started = time.monotonic()
    result = vamp(platform, "deploy", str(path), "--name", "broken", "--timeout", "45")
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert time.monotonic() - started < 30          # failed is told as soon as it is known, not at the timeout
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("vamp: broken/broken/broken:1.0.0 failed: "), result.stderr
    assert "exit code 3" in last_line, last_line
    assert "waiting for broken/broken/broken:1.0.0: 0 of 1 instances ready; instance broken/broken/broken:1.0.0#0: " \
           "exited unasked with exit code 3" in result.stderr.splitlines(), result.stderr   # the first failures
    service = service_of(platform, "broken")
    assert service["state"] == "failed" and "exit code 3" in service["reason"], service
    status, _ = platform.api("DELETE", "/api/v1/deployments/broken")
    assert status == 202


@pytest.mark.timeout(60)
def test_no_wait_returns_while_the_service_is_still_deploying(platform, tmp_path):
    path, _ = blueprint(tmp_path, "slowstart", initial_delay="60s")      # ready only after a minute
    result = vamp(platform, "deploy", str(path), "--name", "slowstart", "--no-wait")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "deployment slowstart accepted"
    service = service_of(platform, "slowstart")
    assert service["state"] == "deploying", service
    status, _ = platform.api("DELETE", "/api/v1/deployments/slowstart")
    assert status == 202


@pytest.mark.timeout(60)
def test_timeout_exits_1_naming_what_is_not_ready(platform, tmp_path):
    path, _ = blueprint(tmp_path, "slow", initial_delay="60s")
    started = time.monotonic()
    result = vamp(platform, "deploy", str(path), "--name", "slow", "--timeout", "1")
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert time.monotonic() - started < 15
    progress, last_line = result.stderr.strip().splitlines()
    assert progress == "waiting for slow/slow/slow:1.0.0: 0 of 1 instances ready", result.stderr
    assert last_line == "vamp: not ready after 1s: slow/slow/slow:1.0.0 is deploying (0 of 1 instances ready)"

    scaled = vamp(platform, "scale", "slow/slow/slow:1.0.0", "2", "--timeout", "1")
    assert scaled.returncode == 1, (scaled.stdout, scaled.stderr)
    assert "slow/slow/slow:1.0.0 is deploying" in scaled.stderr.strip().splitlines()[-1], scaled.stderr
    status, _ = platform.api("DELETE", "/api/v1/deployments/slow")
    assert status == 202


def test_timeout_must_be_positive(platform, tmp_path):
    path, _ = blueprint(tmp_path, "never")
    result = vamp(platform, "deploy", str(path), "--name", "never", "--timeout", "0")
    assert result.returncode == 2 and "--timeout" in result.stderr, result.stderr
    assert platform.api("GET", "/api/v1/deployments/never")[0] == 404


# -- the gateway's status under vamp run ---------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_the_gateway_status_counts_the_requests_of_each_target(platform, tmp_path):
    path, port = blueprint(tmp_path, "counted", instances=2)
    deployed = vamp(platform, "deploy", str(path), "--name", "counted")
    assert deployed.returncode == 0, deployed.stderr
    with HttpClient(port, timeout=5) as client:
        for _ in range(40):
            assert client.request("GET", "/").status == 200
    internal = gateway_requests(platform, "counted/counted/webport")
    assert len(internal) == 2 and sum(internal.values()) == 40, internal
    assert all(count == 20 for count in internal.values()), internal     # round-robin over two instances
    assert list(gateway_requests(platform, f"counted/{port}").values()) == [40]
    listed = {g["name"]: g for g in platform.api("GET", "/api/v1/gateways?per_page=1000")[1]}
    shown = listed["counted/counted/webport"]["status"]["routes"]
    assert sum(t["requests"] for r in shown.values() for t in r["targets"].values()) == 40


# -- errors name what the user wrote -------------------------------------------------------------------------
def test_a_blueprint_error_names_the_deployment_the_user_gave(platform, tmp_path):
    path, _ = blueprint(tmp_path, "typo", instances="one")        # the blueprint is named typo:1.0
    result = vamp(platform, "deploy", str(path), "--name", "mistyped")
    assert result.returncode == 2, result.stderr
    assert "deployment 'mistyped'" in result.stderr and "deployment 'typo:1.0'" not in result.stderr, \
        result.stderr
    assert "clusters.typo.services.scale.instances" in result.stderr, result.stderr

    unresolved = tmp_path / "unresolved.yaml"           # a breed by name that is not stored
    unresolved.write_text("kind: blueprints\nname: typo:1.0\nclusters:\n  typo:\n    services:\n"
                          "      breed: missing:1.0.0\n")
    result = vamp(platform, "deploy", str(unresolved), "--name", "mistyped")
    assert result.returncode == 2 and result.stderr.startswith("vamp: deployment 'mistyped': "), result.stderr
    assert "no breed named 'missing:1.0.0' is stored" in result.stderr, result.stderr


def test_scale_names_the_part_of_the_path_that_does_not_exist(platform, tmp_path):
    path, _ = blueprint(tmp_path, "named")
    assert vamp(platform, "deploy", str(path), "--name", "named").returncode == 0
    for target, message in [
            ("nope/named/named:1.0.0", "no deployment 'nope'"),
            ("named/nope/named:1.0.0", "no cluster 'nope' in deployment 'named'"),
            ("named/named/nope:1.0.0", "no service 'nope:1.0.0' in cluster 'named' of deployment 'named'")]:
        result = vamp(platform, "scale", target, "3")
        assert result.returncode != 0 and result.stderr == f"vamp: {message}\n", (target, result.stderr)
        deployment, cluster, service = target.split("/")
        status, answer = platform.api(
            "PUT", f"/api/v1/deployments/{deployment}/clusters/{cluster}/services/{service}/scale", {"instances": 3})
        assert status == 404 and answer["error"] == message, (target, answer)


def test_readme_example_error_is_what_the_cli_prints(tmp_path):
    """README's "Gateway configuration" shows a file and the error `vamp gateway` prints for one bad condition."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Gateway configuration"):]
    config = re.search(r"```yaml\n(.*?)```", section, re.DOTALL).group(1)
    bad = re.search(r"for example, for `condition: (.*?)`", section).group(1)
    printed = re.search(r"```\n(vamp: gateways\.yaml: .*)\n```", section).group(1)
    lines = config.splitlines()
    (index,) = [i for i, line in enumerate(lines) if line.strip().startswith("condition:")]
    lines[index] = re.sub(r"condition: .*", f"condition: {bad}", lines[index])
    lines = [line.replace("bind: 0.0.0.0", "bind: 127.0.0.1") for line in lines]   # loopback only, same lines
    path = tmp_path / "gateways.yaml"
    path.write_text("\n".join(lines) + "\n")
    result = run_cli(["gateway", "--config", str(path), "--state-dir", str(tmp_path / "state"),
                      "--admin", f"127.0.0.1:{free_port()}"], timeout=20, executable=VAMP)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().replace(str(path), "gateways.yaml") == printed
