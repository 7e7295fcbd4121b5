"""The running gateway as an operator sees it: metrics, health and readiness, virtual hosts, TCP gateways,
the admin address rule, idle connections and shutdown on SIGTERM."""
from __future__ import annotations

import signal
import socket
import threading
import time

import pytest

from tests.support import HttpClient, config, free_port, gateway, route, run_cli
from tests.support.processes import LOOPBACK
from tests.support.waiting import eventually


@pytest.fixture(scope="module")
def echo(module_procs):
    return module_procs.backend("echo", "v1", "v2")


def test_metrics_count_requests_per_route_and_describe_targets(procs, echo):
    port = free_port()
    gw = procs.gateway(config({"shop": gateway(port, {
        "stable": route(echo.address("v1"), weight="90%"),
        "canary": route(echo.address("v2"), weight="10%"),
        "broken": route(f"{LOOPBACK}:{free_port()}", weight="0%", condition="has header X-Broken"),
    })}))
    with HttpClient(port) as client:
        for _ in range(20):
            assert client.request("GET", "/").status == 200
        assert client.request("GET", "/", [("X-Echo-Status", "503")]).status == 503
        metrics = gw.metrics()
        assert metrics.value("vamp_open_connections", gateway="shop") == 1
    assert metrics.value("vamp_requests_total", gateway="shop", route="stable", code="2xx") == 18
    assert metrics.value("vamp_requests_total", gateway="shop", route="canary", code="2xx") == 2
    assert metrics.value("vamp_requests_total", gateway="shop", route="stable", code="5xx") == 1
    assert metrics.value("vamp_request_duration_seconds_count", gateway="shop", route="stable") == 19
    with HttpClient(port) as client:         # broken cannot connect: the request is redispatched by weight
        assert client.request("GET", "/", [("X-Broken", "1")]).status == 200
    metrics = gw.metrics()
    assert metrics.value("vamp_route_weight_ratio", gateway="shop", route="stable") == pytest.approx(0.9)
    assert metrics.value("vamp_route_weight_ratio", gateway="shop", route="canary") == pytest.approx(0.1)
    assert metrics.value("vamp_upstream_errors_total", gateway="shop", route="broken", kind="connect") >= 1
    assert metrics.value("vamp_target_up", gateway="shop", route="stable", target=echo.address("v1")) == 1
    broken_targets = metrics.find("vamp_target_up", gateway="shop", route="broken")
    assert [s.value for s in broken_targets] == [0]
    assert metrics.value("vamp_target_draining", gateway="shop", route="stable", target=echo.address("v1")) == 0


def test_health_and_ready(procs, echo):
    gw = procs.gateway(config({"g": gateway(free_port(), {"r": route(echo.address("v1"))})}))
    assert gw.admin_status("/health") == 200
    assert gw.admin_status("/ready") == 200
    assert gw.admin_status("/nope") == 404


def test_virtual_hosts_share_a_port_and_unknown_hosts_get_404(procs, echo):
    port = free_port()
    procs.gateway(config({
        "one": gateway(port, {"r": route(echo.address("v1"))}, virtual_hosts=["one.example"]),
        "two": gateway(port, {"r": route(echo.address("v2"))}, virtual_hosts=["two.example"]),
    }))
    with HttpClient(port) as client:
        assert client.request("GET", "/", host="one.example").version == "v1"
        assert client.request("GET", "/", host="TWO.example:8080").version == "v2"
        missing = client.request("GET", "/", host="three.example")
    assert missing.status == 404


def test_tcp_gateway_tunnels_bytes_both_ways(procs, echo):
    port = free_port()
    tcp = gateway(port, {"r": route(echo.address("v2"))})
    tcp["port"] = f"{port}/tcp"
    procs.gateway(config({"raw": tcp}))
    with socket.create_connection((LOOPBACK, port), timeout=5) as sock:
        sock.sendall(b"GET /through-tcp HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200")
    assert b"X-Version: v2" in data
    # the raw stream was not touched: no X-Forwarded-For added by an HTTP hop
    assert b"X-Forwarded-For" not in data


def test_admin_api_refuses_non_loopback_address_without_token(tmp_path):
    path = tmp_path / "gateways.yaml"
    path.write_text("gateways: {}\n")
    result = run_cli(["gateway", "--config", str(path), "--admin", f"0.0.0.0:{free_port()}"],
                     env={"VAMP_ADMIN_TOKEN": ""})
    assert result.returncode == 2
    assert "token" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_idle_keep_alive_connections_are_closed_after_the_idle_timeout(procs, echo):
    port = free_port()
    procs.gateway(config({"g": gateway(port, {"r": route(echo.address("v1"))},
                                       timeouts={"idle": "1s"})}))
    with socket.create_connection((LOOPBACK, port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        rest = sock.recv(65536)           # blocks until the gateway closes the idle connection
        waited = time.monotonic() - started
    assert rest == b""
    assert 0.5 <= waited < 8


def test_sigterm_lets_requests_in_flight_finish_and_exits_zero(procs, echo):
    port = free_port()
    gw = procs.gateway(config({"g": gateway(port, {"r": route(echo.address("v1"))})}))
    result = {}

    def slow_request() -> None:
        with HttpClient(port, timeout=15) as client:
            response = client.request("GET", "/", [("X-Echo-Delay", "1.5")])
            result["status"] = response.status
            result["connection"] = response.header("Connection")

    thread = threading.Thread(target=slow_request)
    thread.start()
    eventually(lambda: gw.metrics().value("vamp_open_connections", gateway="g") == 1, 10,
               "the slow request at the gateway")
    gw.process.send_signal(signal.SIGTERM)
    thread.join(20)
    assert result.get("status") == 200
    assert (result.get("connection") or "").lower() == "close"
    assert gw.process.wait(20) == 0
    with pytest.raises(OSError):
        socket.create_connection((LOOPBACK, port), timeout=2).close()


def test_each_config_file_gets_its_own_default_state_directory(tmp_path):
    from gateway.cli import default_state_dir
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    assert default_state_dir(str(a)) != default_state_dir(str(b))
    assert default_state_dir(str(a)) == default_state_dir(str(a))     # a restart finds its state again
    assert default_state_dir(None).endswith("gateway")
