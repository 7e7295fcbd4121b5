"""The canary quickstart on Kubernetes, as a user runs it: a real `vamp run --orchestrator kubernetes`, the
`vamp` CLI as subprocesses and plain HTTP to the external gateway. Each Vamp service shows up as a Deployment
and a Service with the right spec; once the cluster's endpoints are ready the gateway serves them; scale to 3;
merge 1.1 at 0%; 50/50; removing 1.0 drains it under load with no failed request, then deletes its objects. A
platform killed with SIGKILL and started again adopts what it made: it creates nothing twice and keeps serving.

On the fake API server (tests/support/kubernetes) the test plays the cluster: the simulated kubelet runs each
pod's container (Vamp's demo service, on a loopback address of the pod's own) and publishes its endpoints.
With VAMP_TEST_KUBECONFIG the same steps run against a real cluster (README, "Running on Kubernetes")."""
from __future__ import annotations

import asyncio
import os
from collections import Counter
from pathlib import Path

import pytest
from kubernetes_asyncio import client, config

from tests.support import BrokenResponse, HttpClient, free_port
from tests.support.load import LoadGenerator
from tests.support.platform import PlatformProcess

INTERNAL = "sava/sava/webport"
OLD_ROUTE = "sava/sava/sava:1.0.0/webport"
NEW_ROUTE = "sava/sava/sava:1.1.0/webport"
OLD_NAME = "sava-sava-sava-1-0-0"
NEW_NAME = "sava-sava-sava-1-1-0"
READY_TIMEOUT = 30.0
# The demo service's image, tagged with its version. The fake's kubelet runs the demo for any image (the tag is
# the version); a real cluster needs the images built from the Dockerfile's `sava` target (README).
IMAGE = os.environ.get("VAMP_TEST_SAVA_IMAGE", "vamp-sava")

BLUEPRINT = """\
kind: blueprints
name: sava:{version}
gateways:
  {port}: sava/webport
clusters:
  sava:
    services:
      breed:
        name: sava:{version}.0
        deployable: docker://{image}:{version}.0
        ports:
          webport: 8080/http
        environment_variables:
          SAVA_DELAY_MS: "0"
      scale:
        cpu: 0.2
        memory: 64MB
        instances: 1
      health_checks:
        path: /health
        port: webport
        initial_delay: 0s
        interval: 1s
        timeout: 1s
        failures: 3
"""


def blueprint_file(tmp_path: Path, version: str, port: int) -> Path:
    path = tmp_path / f"sava-{version}.yaml"
    path.write_text(BLUEPRINT.format(version=version, port=port, image=IMAGE))
    return path


def probe(port: int, count: int) -> Counter:
    """X-Version counts of `count` GETs to the gateway on `port`, all answered 200."""
    versions: Counter = Counter()
    http = HttpClient(port, timeout=5)
    try:
        for _ in range(count):
            response = http.request("GET", "/", [])
            assert response.status == 200, (response.status, response.body[:200])
            versions[response.version] += 1
    finally:
        http.close()
    return versions


def answers(port: int, version: str) -> bool:
    try:
        return probe(port, 1) == Counter({version: 1})
    except (OSError, BrokenResponse, AssertionError):
        return False


class Objects:
    """What the namespace holds, read through the Kubernetes API (the fake's or a real cluster's)."""

    def __init__(self, kube) -> None:
        self.kube = kube

    async def _read(self, kind: str, name: str) -> dict | None:
        async with await config.new_client_from_config(config_file=str(self.kube.kubeconfig)) as api:
            try:
                if kind == "deployments":
                    found = await client.AppsV1Api(api).read_namespaced_deployment(name, self.kube.namespace)
                else:
                    found = await client.CoreV1Api(api).read_namespaced_service(name, self.kube.namespace)
            except client.ApiException as exc:
                if exc.status == 404:
                    return None
                raise
            return api.sanitize_for_serialization(found)

    def get(self, kind: str, name: str) -> dict | None:
        return asyncio.run(self._read(kind, name))


def weights(platform: PlatformProcess) -> dict[str, str | None]:
    status, document = platform.api("GET", f"/api/v1/gateways/{INTERNAL}")
    assert status == 200, (status, document)
    return {route: body.get("weight") for route, body in document["routes"].items()}


def targets(platform: PlatformProcess, route: str) -> list[str]:
    status, document = platform.api("GET", f"/api/v1/gateways/{INTERNAL}")
    assert status == 200, (status, document)
    return (document["routes"].get(route) or {}).get("targets", [])


def start_platform(procs, tmp_path: Path, kube, *, api_port: int | None = None) -> PlatformProcess:
    process = PlatformProcess(tmp_path / "state", tmp_path, api_port=api_port, extra_args=(
        "--orchestrator", "kubernetes", "--kubeconfig", str(kube.kubeconfig), "--namespace", kube.namespace))
    procs.started.append(process)
    return process.start()


@pytest.mark.timeout(120)
def test_the_canary_quickstart_on_kubernetes(procs, tmp_path, kube):
    platform = start_platform(procs, tmp_path, kube)
    objects = Objects(kube)
    port = free_port()
    api = ("--api", platform.api_url)

    # 1. deploy sava 1.0: a Deployment and a Service with the right spec; the gateway serves its endpoints
    platform.vamp("deploy", str(blueprint_file(tmp_path, "1.0", port)), "--name", "sava", "--no-wait", *api)
    platform.wait_until(lambda: objects.get("deployments", OLD_NAME) is not None, READY_TIMEOUT, "the Deployment")
    deployment = objects.get("deployments", OLD_NAME)
    labels = deployment["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "vamp"
    assert (labels["vamp.io/deployment"], labels["vamp.io/cluster"]) == ("sava", "sava")
    assert deployment["metadata"]["annotations"]["vamp.io/service"] == "sava:1.0.0"
    assert deployment["spec"]["replicas"] == 1
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == f"{IMAGE}:1.0.0"
    assert [(p["name"], p["containerPort"]) for p in container["ports"]] == [("webport", 8080)]
    assert {"name": "SAVA_DELAY_MS", "value": "0"} in container["env"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert container["resources"]["requests"]["cpu"] == "200m"
    service = objects.get("services", OLD_NAME)
    assert service is not None
    assert [(p["name"], p["targetPort"]) for p in service["spec"]["ports"]] == [("webport", "webport")]
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    platform.wait_until(lambda: answers(port, "1.0.0"), READY_TIMEOUT, "serving sava 1.0.0 from its pod")

    # 2. three instances: three pods, three targets at the pods' addresses
    platform.vamp("scale", "sava/sava/sava:1.0.0", "3", *api)
    platform.wait_until(lambda: len(targets(platform, OLD_ROUTE)) == 3, READY_TIMEOUT, "routing to three pods")
    assert objects.get("deployments", OLD_NAME)["spec"]["replicas"] == 3
    if kube.cluster is not None:
        pods = kube.cluster.pods(kube.namespace, OLD_NAME)
        assert {f"{pod['status']['podIP']}:8080" for pod in pods} == set(targets(platform, OLD_ROUTE))

    with LoadGenerator(port, connections=4, seconds=90) as load:
        # 3. merge sava 1.1: it joins at 0%
        platform.vamp("deploy", str(blueprint_file(tmp_path, "1.1", port)), "--name", "sava", *api)
        assert weights(platform) == {OLD_ROUTE: "100%", NEW_ROUTE: "0%"}
        assert objects.get("deployments", NEW_NAME) is not None
        platform.wait_until(lambda: len(targets(platform, NEW_ROUTE)) == 1, READY_TIMEOUT, "sava 1.1.0 ready")
        assert probe(port, 20) == Counter({"1.0.0": 20})

        # 4. 50/50
        platform.vamp("gateways", "set-weight", INTERNAL, f"{OLD_ROUTE}=50%", f"{NEW_ROUTE}=50%", *api)
        # the load shares the split with this probe: count both over the same window
        split = load.with_window(lambda: probe(port, 100))
        assert set(split) == {"1.0.0", "1.1.0"} and abs(split["1.0.0"] - split["1.1.0"]) <= 2, split

        # 5. removing 1.0 drains it, then deletes its Deployment and Service
        platform.vamp("delete", "-f", str(blueprint_file(tmp_path, "1.0", port)), "--deployment", "sava", *api)
        platform.wait_until(lambda: objects.get("deployments", OLD_NAME) is None
                            and objects.get("services", OLD_NAME) is None, READY_TIMEOUT,
                            "sava 1.0.0's Deployment and Service deleted")
        assert weights(platform) == {NEW_ROUTE: "100%"}
        assert probe(port, 20) == Counter({"1.1.0": 20})
        load.wait_for_responses(20)
    assert load.failures == [], load.failures[:5]


@pytest.mark.timeout(90)
def test_a_platform_killed_and_started_again_adopts_what_it_made(procs, tmp_path, kube):
    api, cluster = kube.fake()       # counts the API requests each platform makes
    platform = start_platform(procs, tmp_path, kube)
    port = free_port()
    platform.vamp("deploy", str(blueprint_file(tmp_path, "1.0", port)), "--name", "sava",
                  "--api", platform.api_url)
    platform.vamp("scale", "sava/sava/sava:1.0.0", "2", "--api", platform.api_url)
    platform.wait_until(lambda: len(targets(platform, OLD_ROUTE)) == 2, READY_TIMEOUT, "two pods routed")
    pods = {pod["metadata"]["name"] for pod in cluster.pods(kube.namespace, OLD_NAME)}
    before = len(api.requests())

    platform.kill()
    again = start_platform(procs, tmp_path, kube, api_port=platform.api_port)
    again.wait_until(lambda: answers(port, "1.0.0"), READY_TIMEOUT, "serving again after the restart")
    again.wait_until(lambda: len(targets(again, OLD_ROUTE)) == 2, READY_TIMEOUT, "both pods routed again")
    creates = [(method, path) for method, path, _ in api.requests()[before:] if method == "POST"
               and not path.endswith("/events")]
    assert creates == [], creates
    assert {pod["metadata"]["name"] for pod in cluster.pods(kube.namespace, OLD_NAME)} == pods
    assert len(api.list("deployments", kube.namespace)) == 1
    assert len(api.list("services", kube.namespace)) == 1


def run_vamp(*args: str, timeout: float = 30.0):
    from tests.support.platform import VAMP
    from tests.support.processes import run_cli
    return run_cli(list(args), timeout=timeout, executable=VAMP)


def test_the_kubernetes_options_go_with_the_kubernetes_orchestrator(tmp_path):
    result = run_vamp("run", "--state-dir", str(tmp_path / "state"), "--api", f"127.0.0.1:{free_port()}",
                      "--namespace", "shop")
    assert result.returncode == 2
    assert "--kubeconfig and --namespace go with --orchestrator kubernetes" in result.stderr


def test_a_kubeconfig_that_is_missing_or_names_no_api_server_is_a_clear_error(tmp_path):
    missing = tmp_path / "nowhere.yaml"
    result = run_vamp("run", "--state-dir", str(tmp_path / "a"), "--api", f"127.0.0.1:{free_port()}",
                      "--orchestrator", "kubernetes", "--kubeconfig", str(missing))
    assert result.returncode == 1
    assert str(missing) in result.stderr and "Traceback" not in result.stderr, result.stderr

    silent = free_port()            # nothing listens there
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(f"""\
apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "http://127.0.0.1:{silent}"}}}}]
users: [{{name: u, user: {{token: t}}}}]
contexts: [{{name: x, context: {{cluster: c, user: u, namespace: shop}}}}]
current-context: x
""")
    result = run_vamp("run", "--state-dir", str(tmp_path / "b"), "--api", f"127.0.0.1:{free_port()}",
                      "--orchestrator", "kubernetes", "--kubeconfig", str(kubeconfig))
    assert result.returncode == 1
    assert f"cannot reach the Kubernetes API at http://127.0.0.1:{silent}" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
