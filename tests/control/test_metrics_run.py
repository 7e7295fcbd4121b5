"""The metrics API of a real `vamp run` under a known load: the sava demo deployed with two instances behind its
external gateway, a client sends a known number of requests and counts what it got (each answer names its
instance), and the API's counts equal the client's, per gateway, route, cluster port, service and instance;
health is the share of non-5xx answers. `--metrics-window 0` turns the aggregation off."""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.support import HttpClient, free_port, run_cli
from tests.support.platform import VAMP, PlatformProcess, wait_for

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
GETS, POSTS = 240, 20            # sava answers GET 200 and POST 405
WINDOW = "10m"
COUNT_TIMEOUT = 15.0             # seconds for the aggregation (one sample a second) to show the last request
SERVICE = "sava:1.0.0"
CLUSTER_PORT = "sava/sava/webport"
SERVICE_ROUTE = "sava/sava/sava:1.0.0/webport"


@pytest.fixture
def platform(procs, tmp_path) -> PlatformProcess:
    process = PlatformProcess(tmp_path / "state", tmp_path)
    procs.started.append(process)          # stopped with the test's other processes; its stderr in a failure
    return process.start()


def blueprint(tmp_path: Path, gateway_port: int, instances: int) -> Path:
    path = tmp_path / "sava.yaml"
    text = (EXAMPLES / "sava-1.0.yaml").read_text()
    path.write_text(text.replace("9050:", f"{gateway_port}:").replace("instances: 1", f"instances: {instances}"))
    return path


def send(port: int) -> tuple[Counter, Counter]:
    """(answers by status, answers by instance) of GETS GETs and POSTS POSTs on one keep-alive connection."""
    statuses: Counter = Counter()
    instances: Counter = Counter()
    with HttpClient(port, timeout=10) as client:
        for index in range(GETS + POSTS):
            response = client.request("GET" if index % ((GETS + POSTS) // POSTS) else "POST", "/")
            statuses[response.status] += 1
            instances[response.header("x-instance")] += 1
    return statuses, instances


def test_the_metrics_api_counts_what_the_client_sent_and_got_at_every_level(platform, tmp_path):
    gateway_port = free_port()
    platform.vamp("deploy", str(blueprint(tmp_path, gateway_port, 2)), "--name", "sava", "--api", platform.api_url,
                  "--timeout", "60")
    statuses, by_instance = send(gateway_port)
    assert statuses == Counter({200: GETS, 405: POSTS}) and len(by_instance) == 2
    sent = GETS + POSTS

    def metric(path: str, name: str = "requests") -> object:
        status, answer = platform.api("GET", f"/api/v1/metrics/{path}/{name}?window={WINDOW}")
        assert status == 200, answer
        return answer["value"]

    external = f"gateways/sava/{gateway_port}"
    wait_for(lambda: metric(external) == sent, COUNT_TIMEOUT, f"the API counting {sent} requests")
    assert metric(f"{external}/routes/sava/sava/webport") == sent
    assert metric(f"gateways/{quote(CLUSTER_PORT, safe='')}") == sent
    ports = "deployments/sava/clusters/sava/ports/webport"
    assert metric(ports) == sent
    assert metric(f"{ports}/services/{SERVICE}") == sent
    assert metric(f"gateways/{CLUSTER_PORT}/routes/{SERVICE_ROUTE}") == sent
    for instance, count in by_instance.items():
        assert metric(f"{ports}/services/{SERVICE}/instances/{quote(instance, safe='')}") == count
        assert metric(f"{ports}/services/{SERVICE}/instances/{instance.rsplit('#', 1)[1]}") == count
    summary = metric(ports, "all")
    assert summary["classes"] == {"1xx": 0, "2xx": GETS, "3xx": 0, "4xx": POSTS, "5xx": 0}
    assert summary["errors"] == summary["upstream_errors"] == summary["in_flight"] == 0
    assert summary["health"] == 1.0 and summary["rate"] > 0
    assert 0 < summary["p50"] <= summary["p99"] and summary["response_time"] > 0
    status, health = platform.api("GET", f"/api/v1/health/deployments/sava?window={WINDOW}")
    assert (status, health["value"], health["requests"], health["errors"]) == (200, 1.0, sent, 0)
    assert platform.api("GET", "/api/v1/metrics/deployments/sava/clusters/nothing/ports/webport/rate")[0] == 404
    shown = platform.vamp_json("metrics", f"{ports}/services/{SERVICE}", "--window", WINDOW, "--api", platform.api_url)
    assert shown["value"]["requests"] == sent
    table = platform.vamp("metrics", external, "--api", platform.api_url, "--window", WINDOW).splitlines()
    figures = dict(re.fullmatch(r"(\S.*?)\s{2,}(\S.*)", line).groups() for line in table[2:])
    assert (figures["requests"], figures["4xx responses"], figures["health"]) == (str(sent), str(POSTS), "100.00%")


def test_with_metrics_window_0_there_is_no_aggregation_and_the_metrics_paths_say_so(procs, tmp_path):
    process = PlatformProcess(tmp_path / "state", tmp_path, extra_args=("--metrics-window", "0"))
    procs.started.append(process)
    process.start()
    status, answer = process.api("GET", "/api/v1/health/gateways/anything")
    assert status == 503 and "--metrics-window 0" in answer["error"]


@pytest.mark.parametrize("window, mentions", [("500ms", "at least 1s"), ("soon", "expected a duration")])
def test_a_bad_metrics_window_exits_2_and_starts_nothing(tmp_path, window, mentions):
    result = run_cli(["run", "--state-dir", str(tmp_path / "state"), "--api", f"127.0.0.1:{free_port()}",
                      "--metrics-window", window], executable=VAMP)
    assert result.returncode == 2 and mentions in result.stderr
    assert not (tmp_path / "state").exists()


def test_with_gateway_worker_processes_every_worker_is_counted(procs, tmp_path):
    """`vamp run --workers 2`: the gateways run in two processes sharing their ports; the aggregation reads both,
    so the API counts every request whichever worker took its connection."""
    process = PlatformProcess(tmp_path / "state", tmp_path, extra_args=("--workers", "2"))
    procs.started.append(process)
    process.start()
    gateway_port = free_port()
    process.vamp("deploy", str(blueprint(tmp_path, gateway_port, 1)), "--name", "sava", "--api", process.api_url,
                 "--timeout", "60")
    sent = 0
    for _ in range(8):             # new connections: the kernel spreads them over both workers' sockets
        statuses, _ = send(gateway_port)
        assert statuses == Counter({200: GETS, 405: POSTS})
        sent += GETS + POSTS

    def requests() -> object:
        status, answer = process.api("GET", f"/api/v1/metrics/gateways/sava/{gateway_port}/requests?window={WINDOW}")
        assert status == 200, answer
        return answer["value"]

    wait_for(lambda: requests() == sent, COUNT_TIMEOUT, f"the API counting {sent} requests over both workers")


def test_workers_must_be_at_least_one(tmp_path):
    done = run_cli(["run", "--state-dir", str(tmp_path / "state"), "--api", f"127.0.0.1:{free_port()}",
                    "--workers", "0"], executable=VAMP)
    assert done.returncode == 2 and "--workers" in done.stderr and "at least 1" in done.stderr
    assert not (tmp_path / "state").exists()
