"""benchmarks/proxy.py: wrk's figures are read right, the pacing and CPU placement are as promised, short real runs
print the tables (with --workers and --rate-fraction too), failures exit non-zero."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config.load import load_text
from proxy import (WrkResult, gateway_config, gateway_ratios, pacing_for, pacing_script, parse_time_ms,
                   parse_wrk_output, plan_pinning)

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "proxy.py"
SYSTEM_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
MISSING = [name for name in ("wrk", "haproxy", "nginx") if shutil.which(name, path=SYSTEM_PATH) is None]
needs_servers = pytest.mark.skipif(bool(MISSING), reason=f"not installed: {', '.join(MISSING)} (make system-deps)")

WRK_CLEAN = """Running 10s test @ http://127.0.0.1:40123/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   420.00us  110.00us   5.20ms   91.00%
    Req/Sec    86.10k     2.10k   90.00k    70.00%
  Latency Distribution
     50%  397.00us
     75%  450.00us
     90%  520.00us
     99%    1.25ms
  856789 requests in 10.00s, 130.00MB read
Requests/sec:  85678.90
Transfer/sec:     13.00MB
"""

WRK_WITH_ERRORS = """Running 1s test @ http://127.0.0.1:18999/
  1 threads and 2 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    57.95us  126.43us   3.10ms   98.96%
    Req/Sec    35.91k     5.15k   43.47k    54.55%
  Latency Distribution
     50%   46.00us
     75%   55.00us
     90%   67.00us
     99%    2.00s
  39243 requests in 1.10s, 6.62MB read
  Socket errors: connect 0, read 3, write 1, timeout 2
  Non-2xx or 3xx responses: 17
Requests/sec:  35686.19
Transfer/sec:      6.02MB
"""


def test_wrk_figures_are_read_in_milliseconds():
    result = parse_wrk_output(WRK_CLEAN)
    assert result.requests == 856789
    assert result.requests_per_second == 85678.90
    assert (result.p50_ms, result.p99_ms) == (0.397, 1.25)
    assert result.errors == 0


def test_wrk_socket_errors_and_bad_statuses_count_as_errors():
    result = parse_wrk_output(WRK_WITH_ERRORS)
    assert result.socket_errors == {"connect": 0, "read": 3, "write": 1, "timeout": 2}
    assert result.non_2xx_3xx == 17
    assert result.errors == 23
    assert (result.p50_ms, result.p99_ms) == (0.046, 2000.0)


def test_wrk_output_without_latency_percentiles_is_refused():
    without_distribution = "\n".join(line for line in WRK_CLEAN.splitlines() if "%  " not in line)
    with pytest.raises(ValueError, match="--latency"):
        parse_wrk_output(without_distribution)


def test_the_pacing_scripts_99_9_percentile_is_read_when_printed():
    assert parse_wrk_output(WRK_CLEAN + "latency p99.9: 2345us\n").p99_9_ms == 2.345
    assert parse_wrk_output(WRK_CLEAN).p99_9_ms is None


@pytest.mark.parametrize("rate, connections, delay_ms", [
    (20_000, 200, 10),       # the preferred 10 ms between a connection's requests
    (150_000, 900, 6),       # shorter waits keep the connections at most 1000
    (100, 4, 40),            # longer waits keep at least 4 connections
    (2_000_000, 1000, 1),    # beyond 1000 connections x 1 ms: the most wrk is asked for
])
def test_an_offered_rate_becomes_connections_and_a_delay(rate, connections, delay_ms):
    pacing = pacing_for(rate)
    assert (pacing.connections, pacing.delay_ms) == (connections, delay_ms)
    assert pacing.offered_per_second == connections * 1000 / delay_ms
    assert f"function delay()\n    return math.random(0, {2 * delay_ms})" in pacing_script(pacing)


def test_one_worker_keeps_the_proxy_on_cpu_0_and_the_client_on_cpu_1():
    pinning = plan_pinning(1, {0, 1}, "/usr/bin/taskset")
    assert (pinning.proxy, pinning.client, pinning.shared) == (["/usr/bin/taskset", "-c", "0"],
                                                               ["/usr/bin/taskset", "-c", "1"], False)


def test_n_workers_are_pinned_to_cpus_0_to_n_minus_1_when_a_cpu_is_left_for_the_client():
    pinning = plan_pinning(2, {0, 1, 2, 3}, "/usr/bin/taskset")
    assert (pinning.proxy, pinning.client, pinning.shared) == (["/usr/bin/taskset", "-c", "0-1"],
                                                               ["/usr/bin/taskset", "-c", "2"], False)
    assert pinning.note == "proxy pinned to CPUs 0-1; wrk and the backend pinned to CPU 2"


def test_n_workers_without_a_cpu_left_run_unpinned_and_say_their_figures_say_little():
    pinning = plan_pinning(2, {0, 1}, "/usr/bin/taskset")
    assert (pinning.proxy, pinning.client, pinning.shared) == ([], ["/usr/bin/taskset", "-c", "1"], True)
    assert pinning.note.startswith("proxy NOT pinned: 2 workers on CPUs 0-1 would leave no CPU for wrk")
    assert plan_pinning(2, {0, 1, 2, 3}, None).shared


@pytest.mark.parametrize("text, milliseconds", [("318.00us", 0.318), ("1.23ms", 1.23), ("2.00s", 2000.0),
                                                ("1.50m", 90_000.0)])
def test_wrk_time_units(text, milliseconds):
    assert parse_time_ms(text) == milliseconds


def test_gateway_is_compared_by_throughput_and_by_cpu_per_request():
    def result(rate, cpu):
        return WrkResult(requests=int(rate * 10), requests_per_second=rate, p50_ms=0.5, p99_ms=1.0,
                         server_cpu_us_per_request=cpu)
    ratios = gateway_ratios({"haproxy": result(60_000, 15.0), "nginx": result(50_000, 12.0),
                             "gateway": result(30_000, 30.0)})
    assert ratios == {"gateway/haproxy req/s": 0.5, "gateway/haproxy CPU per request": 2.0,
                      "gateway/nginx req/s": 0.6, "gateway/nginx CPU per request": 2.5}
    assert gateway_ratios({"haproxy": result(60_000, 15.0)}) == {}


def test_the_logged_gateway_is_compared_with_the_gateway(tmp_path):
    def result(rate, cpu):
        return WrkResult(requests=int(rate * 10), requests_per_second=rate, p50_ms=0.5, p99_ms=1.0,
                         server_cpu_us_per_request=cpu)
    ratios = gateway_ratios({"gateway": result(40_000, 16.0), "gateway-logged": result(38_400, 16.8)})
    assert ratios == {"gateway-logged/gateway req/s": 0.96, "gateway-logged/gateway CPU per request": 1.05}
    assert gateway_ratios({"nginx": result(50_000, 10.0), "nginx-logged": result(45_000, 11.5)}) == {
        "nginx-logged/nginx req/s": 0.9, "nginx-logged/nginx CPU per request": 1.15}
    logged = load_text(gateway_config(8080, 8081, tmp_path / "access.log")).gateways[0]
    assert (logged.access_log.format, logged.access_log.path) == ("json", str(tmp_path / "access.log"))
    assert load_text(gateway_config(8080, 8081)).gateways[0].access_log is None


def run_benchmark(*args: str, path: str = SYSTEM_PATH, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PATH": path})


def fake_program(directory: Path, name: str, script: str) -> str:
    """A stand-in executable placed first on PATH; returns the PATH to use."""
    program = directory / name
    program.write_text("#!/bin/sh\n" + script)
    program.chmod(0o755)
    return os.pathsep.join([str(directory), SYSTEM_PATH])


@needs_servers
@pytest.mark.timeout(30)
def test_short_run_prints_the_table_and_writes_the_figures(tmp_path):
    figures = tmp_path / "figures.json"
    done = run_benchmark("--duration", "1", "--warmup", "0", "--only", "backend,haproxy", "--json", str(figures))
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    header = next(line for line in lines if line.startswith("case"))
    assert header.split()[1:5] == ["req/s", "p50", "p99", "errors"]
    rows = {line.split("  ")[0].strip(): line for line in lines if line.startswith(("backend", "HAProxy"))}
    assert set(rows) == {"backend (nginx, direct)", "HAProxy"}
    assert "nginx proxy" not in done.stdout and "vamp gateway" not in done.stdout
    data = json.loads(figures.read_text())
    assert set(data["results"]) == {"backend", "haproxy"}
    for result in data["results"].values():
        assert result["requests_per_second"] > 0 and result["errors"] == 0
        assert 0 < result["p50_ms"] <= result["p99_ms"]
        assert f"{result['requests_per_second']:,.0f}" in done.stdout
    assert data["failures"] == {}


@needs_servers
@pytest.mark.timeout(30)
def test_rounds_measure_each_case_again_and_report_its_median_round(tmp_path):
    """(nginx beside nginx logging the same JSON lines to a file: the access log's peer)"""
    figures = tmp_path / "figures.json"
    done = run_benchmark("--duration", "1", "--warmup", "0", "--only", "nginx,nginx-logged", "--rounds", "2",
                         "--json", str(figures))
    assert done.returncode == 0, done.stderr
    assert "(round 2 of 2)" in done.stderr and "2 rounds" in done.stdout
    assert "nginx proxy, JSON access log to a file" in done.stdout
    assert re.search(r"nginx-logged/nginx req/s by round: [\d.]+ [\d.]+ \(median [\d.]+\)", done.stdout)
    written = json.loads(figures.read_text())
    for case in ("nginx", "nginx-logged"):
        rates = sorted(round_["requests_per_second"] for round_ in written["rounds"][case])
        assert len(rates) == 2 and written["results"][case]["requests_per_second"] == rates[1]


@needs_servers
@pytest.mark.timeout(30)
def test_a_proxy_that_fails_to_start_fails_the_run_and_says_why(tmp_path):
    path = fake_program(tmp_path, "haproxy", 'echo "haproxy: cannot bind, for the test" >&2\nexit 1\n')
    done = run_benchmark("--duration", "1", "--warmup", "0", "--only", "haproxy", path=path)
    assert done.returncode == 1
    assert re.search(r"^HAProxy +failed", done.stdout, re.MULTILINE)
    assert "HAProxy failed: haproxy exited with status 1 while starting" in done.stderr
    assert "cannot bind, for the test" in done.stderr


@needs_servers
@pytest.mark.timeout(30)
def test_errors_reported_by_wrk_fail_the_run(tmp_path):
    path = fake_program(tmp_path, "wrk", f"cat <<'EOF'\n{WRK_WITH_ERRORS}EOF\n")
    done = run_benchmark("--duration", "1", "--warmup", "0", "--only", "backend", path=path)
    assert done.returncode == 1
    assert "wrk reported 23 errors" in done.stderr


@pytest.mark.parametrize("args, message", [
    (["--rate-fraction", "0.5", "--only", "haproxy"], "--only must include gateway"),
    (["--rate-fraction", "0"], "--rate-fraction: must be more than 0 and at most 1 (got 0)"),
    (["--workers", "0"], "--workers: must be at least 1 (got 0)"),
])
def test_bad_options_are_refused_naming_the_option(args, message):
    done = run_benchmark(*args)
    assert done.returncode == 2
    assert message in done.stderr


@needs_servers
@pytest.mark.timeout(120)
def test_two_workers_at_half_the_gateways_capacity(tmp_path):
    figures = tmp_path / "figures.json"
    done = run_benchmark("--duration", "1", "--warmup", "0", "--only", "haproxy,nginx,gateway", "--workers", "2",
                         "--rate-fraction", "0.5", "--json", str(figures), timeout=100)
    assert done.returncode == 0, done.stdout + done.stderr
    assert ("workers: 2 per proxy (vamp gateway --workers 2, HAProxy nbthread 2, nginx worker_processes 2)"
            in done.stdout)
    if not {0, 1, 2} <= os.sched_getaffinity(0):
        assert ("WARNING: wrk and the backend share cores with the proxy's 2 workers, so on this machine the "
                "2-worker figures say little") in done.stdout
    data = json.loads(figures.read_text())
    assert data["workers"] == 2
    capacity = data["results"]["gateway"]["requests_per_second"]
    at_rate = data["at_rate"]
    assert (at_rate["fraction"], at_rate["of"]) == (0.5, "gateway capacity")
    assert at_rate["target_requests_per_second"] == pytest.approx(capacity / 2, abs=0.1)
    assert at_rate["offered_requests_per_second"] == pytest.approx(capacity / 2, rel=0.05)
    assert f"at 0.5x the gateway's capacity ({at_rate['offered_requests_per_second']:,.0f} req/s offered" in done.stdout
    second_table = done.stdout.split("at 0.5x the gateway's capacity")[-1]
    assert next(line for line in second_table.splitlines() if line.startswith("case")).split()[1:6] == [
        "req/s", "p50", "p99", "p99.9", "errors"]
    assert set(at_rate["results"]) == {"haproxy", "nginx", "gateway"} and at_rate["failures"] == {}
    for result in at_rate["results"].values():
        assert result["requests_per_second"] > 0 and result["errors"] == 0
        assert 0 < result["p50_ms"] <= result["p99_ms"] <= result["p99_9_ms"]
    # The CPU of the gateway's worker processes is counted, not only its (idle) supervisor's.
    assert data["results"]["gateway"]["server_cpu_us_per_request"] > 2
    assert at_rate["results"]["gateway"]["server_cpu_us_per_request"] > 2
