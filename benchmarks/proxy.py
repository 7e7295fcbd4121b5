"""The proxy benchmark: the Vamp gateway measured side by side with HAProxy and nginx, in one run.

One nginx worker serves a tiny body as the backend (pinned to CPU 1, like wrk). wrk then loads, in turn, the
backend directly, HAProxy, nginx as a reverse proxy and `vamp gateway` (each proxy pinned to CPU 0), and
this script prints requests per second, median and 99th-percentile latency, errors, the CPU time the server
under test spent per request and how busy it kept its CPU (well under 100%: something else was the limit),
then the gateway's throughput and CPU cost relative to HAProxy and nginx. The gateway carries a 90%/10%
split whose canary route has a user-agent condition, so every request pays for routing. Every config lives
in a temporary directory; every process started here runs in its own process group and is stopped on the
way out, Ctrl-C included.

`--only gateway,gateway-logged` measures the gateway twice in the same run, the second time with a JSON access
log to a file (docs/access-logs.md), and prints the ratio of their req/s and CPU per request: the access log's
cost. `nginx,nginx-logged` does the same for nginx, logging the same fields as JSON with a 1 MiB buffer: what a
peer pays for the same work on the same machine (writing the file included).

`--rounds N` measures the chosen cases N times over, in turn, every other round in the reverse order
(gateway, gateway-logged, then gateway-logged, gateway, ...), prints each case's median round, and for the
access log also the ratio of each round's pair and their median: a difference of a few percent needs that on
a shared machine, where one run drifts by as much.

`--workers N` runs each proxy with N workers (`vamp gateway --workers N`, HAProxy `nbthread N`, nginx
`worker_processes N`; the backend keeps one worker), pinned to CPUs 0..N-1 with wrk and the backend on CPU N
when the machine has those CPUs; otherwise the proxies run unpinned and the output warns that wrk and the
backend share their cores, so the N-worker figures say little there. The CPU time counted is that of every
process of the server's process group (gateway and nginx workers included; HAProxy's threads are one process).

`--rate-fraction F` adds a second pass: every case is loaded again at the same offered load, F times the
gateway's measured capacity, and its p50/p99/p99.9 latency and achieved req/s are printed in a second table.
wrk has no rate option, so a Lua script in the run's work directory makes each connection wait `delay_ms` on
average before each request (a random whole 0..2 x delay_ms, so that connections do not fall into step and
send in bursts), with `connections` chosen so that connections x 1000 / delay_ms is the offered rate
(achieved is a little lower: each connection also waits for its response). wrk times each request from when it
is written, so a slow response delays that connection's next request rather than queueing behind it.

    python benchmarks/proxy.py [--duration 10] [--warmup 2] [--connections 50] [--only haproxy,gateway]
                               [--workers 1] [--rounds 1] [--rate-fraction 0.5] [--json results.json]

Exit status: 0 when every case ran cleanly, 1 when a server failed to start or wrk reported errors, 2 for
bad arguments.
"""
from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

CASES = {
    "backend": "backend (nginx, direct)",
    "haproxy": "HAProxy",
    "nginx": "nginx proxy",
    "gateway": "vamp gateway",
    "gateway-logged": "vamp gateway, JSON access log to a file",
    "nginx-logged": "nginx proxy, JSON access log to a file",
    "floor": "floor (minimal uvloop proxy)",
}
DEFAULT_CASES = ("backend", "haproxy", "nginx", "gateway")   # `floor` and the `-logged` ones only when asked for
LOGGED_PAIRS = (("gateway", "gateway-logged"), ("nginx", "nginx-logged"))
PROXY_CPU = "0"
CLIENT_CPU = "1"          # wrk and the backend
STARTUP_TIMEOUT = 20.0    # seconds for a server to answer its first request
STOP_TIMEOUT = 5.0        # seconds between SIGTERM and SIGKILL
WRK_GRACE = 30.0          # seconds wrk may run beyond its duration before it is considered hung
PROBE_INTERVAL = 0.05     # seconds between readiness probes
SYSTEM_DIRS = ("/usr/sbin", "/sbin", "/usr/local/sbin")   # haproxy and nginx live here on Debian


class BenchmarkError(Exception):
    """A case could not be measured; the message says why."""


class Terminated(Exception):
    """SIGTERM arrived: unwind so that every process started gets stopped."""


def raise_terminated(signum, frame):
    raise Terminated


# --- wrk output --------------------------------------------------------------------------------------------

_TIME_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


@dataclass
class WrkResult:
    """The figures of one wrk run."""
    requests: int
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    p99_9_ms: float | None = None   # printed by the pacing script's done() (wrk's --latency stops at 99%)
    socket_errors: dict[str, int] = field(default_factory=dict)   # connect, read, write, timeout
    non_2xx_3xx: int = 0
    server_cpu_us_per_request: float | None = None   # CPU of the server under test, filled in by Bench
    server_cpu_busy_percent: float | None = None     # its CPU time over the run's wall time: ~100 when it limits

    @property
    def errors(self) -> int:
        return sum(self.socket_errors.values()) + self.non_2xx_3xx


def parse_time_ms(text: str) -> float:
    """wrk's formatted time ("318.00us", "1.23ms", "2.00s") in milliseconds."""
    match = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text.strip())
    if not match:
        raise ValueError(f"not a wrk time: {text!r}")
    return round(float(match.group(1)) * _TIME_UNITS_MS[match.group(2)], 3)


def parse_wrk_output(text: str) -> WrkResult:
    """Read requests/s, the 50% and 99% latency percentiles (from --latency), the 99.9% one when the pacing
    script printed it, and the error counts."""
    rate = re.search(r"^Requests/sec:\s*([0-9.]+)", text, re.MULTILINE)
    total = re.search(r"^\s*(\d+) requests in ", text, re.MULTILINE)
    percentiles = dict(re.findall(r"^\s*(50|99)%\s+(\S+)", text, re.MULTILINE))
    if not rate or not total or set(percentiles) != {"50", "99"}:
        raise ValueError("wrk output lacks Requests/sec, the request count or the 50%/99% latency "
                         "percentiles (was --latency given?)")
    socket_errors = {}
    errors_line = re.search(r"Socket errors:(.*)$", text, re.MULTILINE)
    if errors_line:
        socket_errors = {kind: int(count) for kind, count in re.findall(r"(\w+) (\d+)", errors_line.group(1))}
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", text)
    p99_9 = re.search(r"^latency p99\.9: (\S+)$", text, re.MULTILINE)
    return WrkResult(
        requests=int(total.group(1)),
        requests_per_second=float(rate.group(1)),
        p50_ms=parse_time_ms(percentiles["50"]),
        p99_ms=parse_time_ms(percentiles["99"]),
        p99_9_ms=parse_time_ms(p99_9.group(1)) if p99_9 else None,
        socket_errors=socket_errors,
        non_2xx_3xx=int(non_2xx.group(1)) if non_2xx else 0,
    )


# --- processes ---------------------------------------------------------------------------------------------

class Processes:
    """Starts processes each in its own session (process group) and stops every group it started."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.running: dict[str, subprocess.Popen] = {}

    def start(self, name: str, argv: list[str], cwd: Path | None = None) -> subprocess.Popen:
        with open(self.log_path(name), "wb") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, cwd=cwd)
        self.running[name] = proc
        return proc

    def run(self, name: str, argv: list[str], timeout: float, cwd: Path | None = None) -> tuple[int, str]:
        """Run a command to completion: its exit status and output. Stopped, and BenchmarkError, after timeout s."""
        proc = self.start(name, argv, cwd)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BenchmarkError(f"{name} did not finish within {timeout:.0f} s") from None
        finally:
            self.stop(name)
        return proc.returncode, self.log_path(name).read_text(errors="replace")

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def log_tail(self, name: str, lines: int = 15) -> str:
        try:
            text = self.log_path(name).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def cpu_seconds(self, name: str) -> float:
        """User + system CPU time used so far by the live processes of a process group (master and workers)."""
        return group_cpu_seconds(self.running[name].pid)

    def stop(self, name: str) -> None:
        """SIGTERM the process group, SIGKILL it if the leader has not exited in time, reap the leader."""
        proc = self.running.pop(name, None)
        if proc is None:
            return
        group = proc.pid   # start_new_session: the process leads its own group
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
        # Children (nginx workers, gateway workers) that outlived their leader go too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=STOP_TIMEOUT)

    def stop_all(self) -> None:
        for name in list(reversed(self.running)):
            self.stop(name)


def group_cpu_seconds(group: int) -> float:
    """Sum of utime + stime over every process in a process group, read from /proc."""
    ticks = 0
    for stat_path in Path("/proc").glob("[0-9]*/stat"):
        try:
            stat = stat_path.read_text()
        except OSError:   # the process exited meanwhile
            continue
        fields = stat[stat.rindex(")") + 2:].split()   # the fields after "pid (comm) "
        if int(fields[2]) == group:                     # field 5: pgrp
            ticks += int(fields[11]) + int(fields[12])  # fields 14, 15: utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(port: int, path: str = "/") -> tuple[int, bytes]:
    """Status and body of GET path on a loopback port."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_until_serving(processes: Processes, name: str, port: int, path: str = "/") -> None:
    """Poll until GET path on port answers 200; fail early if the process exits."""
    proc = processes.running[name]
    deadline = time.monotonic() + STARTUP_TIMEOUT
    last_problem = "no answer yet"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchmarkError(f"{name} exited with status {proc.returncode} while starting:\n"
                                 f"{processes.log_tail(name)}")
        try:
            status, body = http_get(port, path)
        except OSError as error:
            last_problem = str(error)
        else:
            if status == 200:
                return
            last_problem = f"HTTP {status}: {body[:200].decode(errors='replace').strip()}"
        time.sleep(PROBE_INTERVAL)
    raise BenchmarkError(f"{name} did not answer 200 on 127.0.0.1:{port}{path} within {STARTUP_TIMEOUT:.0f} s "
                         f"({last_problem}):\n{processes.log_tail(name)}")


def find_program(name: str) -> str | None:
    search_path = os.pathsep.join([os.environ.get("PATH", ""), *SYSTEM_DIRS])
    return shutil.which(name, path=search_path)


def require_program(name: str) -> str:
    program = find_program(name)
    if program is None:
        raise BenchmarkError(f"{name} is not installed (run `make system-deps`)")
    return program


def vamp_command() -> list[str]:
    """The `vamp` console script of this interpreter's environment, else the one on PATH."""
    beside_python = Path(sys.executable).parent / "vamp"
    if beside_python.exists():
        return [str(beside_python)]
    on_path = shutil.which("vamp")
    if on_path:
        return [on_path]
    raise BenchmarkError("the `vamp` command is not installed (run `make install`)")


# --- CPU pinning -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Pinning:
    proxy: list[str]      # command prefix for the proxy under test
    client: list[str]     # command prefix for wrk and the backend
    note: str             # how processes were placed, for the report
    shared: bool = False  # the proxy's workers share cores with wrk and the backend: their req/s say little


def cpu_list(cpus: range) -> str:
    """taskset's spelling of consecutive CPUs: "0", "0-3"."""
    return str(cpus[0]) if len(cpus) == 1 else f"{cpus[0]}-{cpus[-1]}"


def choose_pinning(workers: int = 1) -> Pinning:
    return plan_pinning(workers, os.sched_getaffinity(0), find_program("taskset"))


def plan_pinning(workers: int, cpus: set[int], taskset: str | None) -> Pinning:
    """The proxy on CPUs 0..workers-1 and wrk with the backend on CPU `workers`, when all of those are available
    (one worker: the proxy on CPU 0, the client on CPU 1); else the proxy unpinned, and the client still on
    CPU 1 when it can be, so the backend row stays comparable."""
    proxy_cpus = range(workers)
    if taskset and set(range(workers + 1)) <= cpus:
        client_cpu = str(workers)
        return Pinning([taskset, "-c", cpu_list(proxy_cpus)], [taskset, "-c", client_cpu],
                       f"proxy pinned to CPU{'s' if workers > 1 else ''} {cpu_list(proxy_cpus)}; "
                       f"wrk and the backend pinned to CPU {client_cpu}")
    if taskset and {0, int(CLIENT_CPU)} <= cpus:
        return Pinning([], [taskset, "-c", CLIENT_CPU],
                       f"proxy NOT pinned: {workers} workers on CPUs {cpu_list(proxy_cpus)} would leave no CPU for "
                       f"wrk and the backend (available: {sorted(cpus)}); wrk and the backend pinned to CPU "
                       f"{CLIENT_CPU}", shared=True)
    reason = "taskset is not installed" if not taskset else f"only CPUs {sorted(cpus)} are available"
    return Pinning([], [], f"NOT pinned: {reason}, so every process runs unpinned", shared=workers > 1)


# --- server configurations ---------------------------------------------------------------------------------

KEEPALIVE_REQUESTS = 100_000_000   # nginx closes keep-alive connections after 1000 requests by default


def connection_limit(connections: int) -> int:
    """Connections a proxy must accept: wrk's, with room for probes (a proxy uses 2 descriptors for each)."""
    return max(1024, connections + 64)


def nginx_common(prefix: Path, connections: int, workers: int = 1) -> str:
    return f"""worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections {2 * connection_limit(connections)}; }}
"""


def nginx_temp_paths(prefix: Path) -> str:
    return "\n".join(f"    {kind}_temp_path {prefix}/{kind}_temp;"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))


def backend_config(prefix: Path, port: int, connections: int) -> str:
    return nginx_common(prefix, connections) + f"""http {{
    access_log off;
{nginx_temp_paths(prefix)}
    keepalive_requests {KEEPALIVE_REQUESTS};
    server {{
        listen 127.0.0.1:{port};
        location / {{
            default_type text/plain;
            return 200 "hello\\n";
        }}
    }}
}}
"""


# The gateway's JSON line (docs/access-logs.md) in nginx's variables (times in nginx's own unit, seconds),
# buffered as nginx users log: a peer doing the same work on the same machine, the file included.
NGINX_JSON_LOG = (
    '''log_format vamp escape=json \'{"time":"$time_iso8601","client":"$remote_addr","method":"$request_method",'''
    '''"path":"$request_uri","host":"$http_host","user_agent":"$http_user_agent","country":null,'''
    '''"gateway":"bench","route":"stable","target":"$upstream_addr","status":$status,'''
    '''"bytes_in":$request_length,"bytes_out":$bytes_sent,"duration_us":"$request_time",'''
    '''"upstream_us":"$upstream_response_time","request_id":"$request_id"}\';''')


def nginx_proxy_config(prefix: Path, port: int, backend_port: int, connections: int, workers: int,
                       access_log: Path | None = None) -> str:
    logged = ("    access_log off;" if access_log is None else
              f"    {NGINX_JSON_LOG}\n    access_log {access_log} vamp buffer=1m flush=100ms;")
    return nginx_common(prefix, connections, workers) + f"""http {{
{logged}
{nginx_temp_paths(prefix)}
    keepalive_requests {KEEPALIVE_REQUESTS};
    upstream backend {{
        server 127.0.0.1:{backend_port};
        keepalive 64;
        keepalive_requests {KEEPALIVE_REQUESTS};
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


HAPROXY_DEFAULTS = """defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 30s
    timeout server 30s
"""    # (benchmarks/tls.py's HAProxy too)


def haproxy_config(port: int, backend_port: int, connections: int, threads: int) -> str:
    return f"""global
    nbthread {threads}
    maxconn {connection_limit(connections)}

{HAPROXY_DEFAULTS}
frontend bench
    bind 127.0.0.1:{port}
    default_backend nginx

backend nginx
    server backend 127.0.0.1:{backend_port}
"""


def gateway_config(port: int, backend_port: int, access_log: Path | None = None) -> str:
    """A 90%/10% split; the canary's condition never matches wrk's user agent but is evaluated every time. With
    `access_log`, every request is logged there as JSON (docs/access-logs.md)."""
    logged = "" if access_log is None else f"    access_log: {{format: json, path: {json.dumps(str(access_log))}}}\n"
    return f"""gateways:
  bench:
    port: {port}
    bind: 127.0.0.1
{logged}    routes:
      stable:
        weight: 90%
        targets: [127.0.0.1:{backend_port}]
      canary:
        weight: 10%
        condition: user-agent = Firefox
        targets: [127.0.0.1:{backend_port}]
"""


def start_nginx(processes: Processes, name: str, command_prefix: list[str], config: str, port: int,
                prefix: Path | None = None) -> None:
    """Start nginx with config, its prefix (config, logs, temp paths) a new directory, by default `name` in the log
    directory; wait until it serves."""
    prefix = prefix or processes.log_dir / name
    prefix.mkdir()
    os.chmod(prefix, 0o755)   # run as root, the worker runs as nobody and must reach its temp paths
    (prefix / "nginx.conf").write_text(config)
    processes.start(name, [*command_prefix, require_program("nginx"), "-p", str(prefix),
                           "-c", str(prefix / "nginx.conf"), "-e", str(prefix / "error.log"),
                           "-g", "daemon off;"])
    wait_until_serving(processes, name, port)


# --- one load ---------------------------------------------------------------------------------------------

def run_wrk(processes: Processes, pinning: Pinning, connections: int, name: str, url: str, seconds: int,
            script: Path | None = None) -> str:
    """wrk (one thread, on the client's cores, with the Lua `script` if given) against `url` for `seconds`:
    its output."""
    scripted = ["-s", str(script)] if script else []
    command = [*pinning.client, require_program("wrk"), "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
               *scripted, url]
    status, output = processes.run(name, command, seconds + WRK_GRACE)
    if status != 0:
        raise BenchmarkError(f"wrk exited with status {status}:\n{output.strip()}")
    return output


def load_with_wrk(processes: Processes, pinning: Pinning, args: argparse.Namespace, label: str, *, server: str,
                  url: str, connections: int | None = None, script: Path | None = None) -> WrkResult:
    """wrk against `url` after `args.warmup` seconds of warm-up, for `args.duration` seconds with `connections`
    (default `args.connections`) and the Lua `script` if given: its figures, plus the CPU the process `server`
    spent per request and how busy it was."""
    connections = connections or args.connections
    if args.warmup > 0:
        run_wrk(processes, pinning, connections, f"wrk-warmup-{label}", url, args.warmup, script)
    cpu_before, started = processes.cpu_seconds(server), time.monotonic()
    output = run_wrk(processes, pinning, connections, f"wrk-{label}", url, args.duration, script)
    cpu_used, elapsed = processes.cpu_seconds(server) - cpu_before, time.monotonic() - started
    try:
        result = parse_wrk_output(output)
    except ValueError as error:
        raise BenchmarkError(f"{error}:\n{output.strip()}") from None
    if result.requests:
        result.server_cpu_us_per_request = round(cpu_used / result.requests * 1e6, 1)
    result.server_cpu_busy_percent = round(cpu_used / elapsed * 100)
    return result


# --- an offered load -------------------------------------------------------------------------------------

PACING_DELAY_MS = 10          # preferred wait before each request: long against a proxy's sub-ms latency
PACED_CONNECTIONS = (4, 1000)  # fewest and most connections a paced load may use


@dataclass(frozen=True)
class Pacing:
    """A load of about `offered_per_second`: `connections` connections, each waiting `delay_ms` on average before
    each request (wrk's delay() is in whole milliseconds)."""
    target_per_second: float
    connections: int
    delay_ms: int

    @property
    def offered_per_second(self) -> float:
        return self.connections * 1000 / self.delay_ms


def pacing_for(rate: float) -> Pacing:
    """The pacing closest to `rate` requests per second with PACING_DELAY_MS when the connection count allows,
    else the delay that keeps the connections within PACED_CONNECTIONS (never under 1 ms)."""
    fewest, most = PACED_CONNECTIONS
    delay_ms = max(PACING_DELAY_MS, math.ceil(fewest * 1000 / rate))
    delay_ms = max(1, min(delay_ms, math.floor(most * 1000 / rate)))
    connections = min(most, max(fewest, round(rate * delay_ms / 1000)))
    return Pacing(rate, connections, delay_ms)


def pacing_script(pacing: Pacing) -> str:
    """wrk Lua: wait a random 0..2 x delay_ms (delay_ms on average) before each request, so that connections
    started together do not stay in step; at the end print the 99.9th latency percentile for parse_wrk_output."""
    offered = f"{pacing.connections} connections x 1000 / {pacing.delay_ms} ms = {pacing.offered_per_second:.0f} req/s"
    return f"""-- {offered} offered
function delay()
    return math.random(0, {2 * pacing.delay_ms})
end

function done(summary, latency, requests)
    io.write(string.format("latency p99.9: %dus\\n", latency:percentile(99.9)))
end
"""


# --- one benchmark run ------------------------------------------------------------------------------------

@dataclass
class Figures:
    """One pass over the cases: the figures of each case measured, and why each other case failed."""
    results: dict[str, WrkResult] = field(default_factory=dict)      # (the median round's, with --rounds)
    failures: dict[str, str] = field(default_factory=dict)
    rounds: dict[str, list[WrkResult]] = field(default_factory=dict)  # every round's, in order

    @property
    def clean(self) -> bool:
        return not self.failures and all(result.errors == 0 for result in self.results.values())


class Bench:
    """Starts the backend and each server under test, and loads them with wrk."""

    def __init__(self, workdir: Path, pinning: Pinning, args: argparse.Namespace):
        self.workdir = workdir
        self.pinning = pinning
        self.args = args
        self.processes = Processes(workdir)
        self.backend_port = 0
        self.pacing_path = workdir / "pacing.lua"
        self.server_dir = workdir        # where the proxies keep their configs: one directory per pass and round

    def start_backend(self) -> int:
        self.backend_port = free_port()
        config = backend_config(self.workdir / "backend", self.backend_port, self.args.connections)
        start_nginx(self.processes, "backend", self.pinning.client, config, self.backend_port)
        return self.backend_port

    def start_haproxy(self) -> int:
        port = free_port()
        config_path = self.server_dir / "haproxy.cfg"
        config_path.write_text(haproxy_config(port, self.backend_port, self.args.connections, self.args.workers))
        self.processes.start("haproxy", [*self.pinning.proxy, require_program("haproxy"), "-db",
                                         "-f", str(config_path)])
        wait_until_serving(self.processes, "haproxy", port)
        return port

    def start_nginx_proxy(self, name: str = "nginx") -> int:
        """nginx as the proxy (`nginx-logged`: the same with a JSON access log to a file in the run's directory)."""
        port = free_port()
        prefix = self.server_dir / name
        access_log = prefix / "access.log" if name == "nginx-logged" else None
        config = nginx_proxy_config(prefix, port, self.backend_port, self.args.connections, self.args.workers,
                                    access_log)
        start_nginx(self.processes, name, self.pinning.proxy, config, port, prefix)
        return port

    def start_gateway(self, name: str = "gateway") -> int:
        """The gateway (`gateway-logged`: the same with a JSON access log to a file in the run's directory)."""
        port, admin_port = free_port(), free_port()
        gateway_dir = self.server_dir / name
        gateway_dir.mkdir()
        config_path = gateway_dir / "gateways.yaml"
        access_log = gateway_dir / "access.log" if name == "gateway-logged" else None
        config_path.write_text(gateway_config(port, self.backend_port, access_log))
        self.processes.start(name, [
            *self.pinning.proxy, *vamp_command(), "gateway", "--config", str(config_path),
            "--admin", f"127.0.0.1:{admin_port}", "--state-dir", str(gateway_dir / "state"),
            "--workers", str(self.args.workers)])   # worker processes stay in the gateway's process group
        wait_until_serving(self.processes, name, admin_port, "/ready")
        wait_until_serving(self.processes, name, port)
        return port

    def start_floor(self) -> int:
        """benchmarks/floor_proxy.py: what this event loop and parser cost with no gateway work (one process)."""
        port = free_port()
        script = Path(__file__).resolve().parent / "floor_proxy.py"
        self.processes.start("floor", [*self.pinning.proxy, sys.executable, str(script), "--port", str(port),
                                       "--backend", f"127.0.0.1:{self.backend_port}"])
        wait_until_serving(self.processes, "floor", port)
        return port

    def start(self, case: str) -> int:
        """Start the server of a case (the backend is already running) and return the port to load."""
        if case == "backend":
            return self.backend_port
        starters = {"haproxy": self.start_haproxy, "nginx": self.start_nginx_proxy, "gateway": self.start_gateway,
                    "gateway-logged": lambda: self.start_gateway("gateway-logged"),
                    "nginx-logged": lambda: self.start_nginx_proxy("nginx-logged"), "floor": self.start_floor}
        return starters[case]()

    def stop(self, case: str) -> None:
        if case != "backend":
            self.processes.stop(case)

    def measure(self, case: str, port: int, pacing: Pacing | None) -> WrkResult:
        """The case's capacity under wrk's closed loop, or its figures at the offered load of `pacing`."""
        url = f"http://127.0.0.1:{port}/"
        if pacing is None:
            return load_with_wrk(self.processes, self.pinning, self.args, case, server=case, url=url)
        return load_with_wrk(self.processes, self.pinning, self.args, f"{case}-paced", server=case, url=url,
                             connections=pacing.connections, script=self.pacing_path)

    def measure_each(self, figures: Figures, pacing: Pacing | None) -> None:
        """Start, measure and stop each chosen case in turn (the backend is already running)."""
        rounds = self.args.rounds
        for round_number in range(1, rounds + 1):
            self.server_dir = self.workdir / ("at-rate" if pacing else "capacity") / f"round-{round_number}"
            self.server_dir.mkdir(parents=True)
            # Every other round takes the cases the other way round, so that a machine slowing down (or speeding
            # up) during a round does not always favour the same case.
            order = self.args.only if round_number % 2 else self.args.only[::-1]
            for case in order:
                if case in figures.failures:
                    continue
                load = f" at {pacing.offered_per_second:,.0f} req/s offered" if pacing else ""
                which = f" (round {round_number} of {rounds})" if rounds > 1 else ""
                print(f"measuring {CASES[case]}{load}{which} ...", file=sys.stderr, flush=True)
                try:
                    figures.rounds.setdefault(case, []).append(self.measure(case, self.start(case), pacing))
                except BenchmarkError as error:
                    figures.failures[case] = str(error)
                finally:
                    self.stop(case)
        for case, results in figures.rounds.items():
            if case not in figures.failures:
                figures.results[case] = sorted(results, key=lambda result: result.requests_per_second)[
                    len(results) // 2]

    def run(self, capacity: Figures, at_rate: Figures) -> Pacing | None:
        """Measure every chosen case's capacity; then, with --rate-fraction, every case again at that fraction of
        the gateway's capacity, and return the pacing used. Every process is stopped on the way out."""
        try:
            try:
                self.start_backend()
            except BenchmarkError as error:
                capacity.failures.update(dict.fromkeys(self.args.only, f"backend: {error}"))
                return None
            self.measure_each(capacity, None)
            if self.args.rate_fraction is None:
                return None
            gateway = capacity.results.get("gateway")
            if gateway is None or gateway.requests_per_second <= 0:
                at_rate.failures.update(dict.fromkeys(self.args.only, "the gateway's capacity was not measured"))
                return None
            pacing = pacing_for(self.args.rate_fraction * gateway.requests_per_second)
            self.pacing_path.write_text(pacing_script(pacing))
            self.measure_each(at_rate, pacing)
            return pacing
        finally:
            self.processes.stop_all()


# --- report ------------------------------------------------------------------------------------------------

def command_version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "not available"
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[0].strip() if lines else "unknown"


def environment_info() -> dict[str, str]:
    cpu_model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    programs = {name: find_program(name) for name in ("haproxy", "nginx", "wrk")}
    repository = Path(__file__).resolve().parents[1]
    return {
        "revision": command_version(["git", "-C", str(repository), "describe", "--always", "--dirty"]),
        "nproc": str(os.cpu_count()),
        "cpu": cpu_model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "haproxy": command_version([programs["haproxy"], "-v"]) if programs["haproxy"] else "not installed",
        "nginx": command_version([programs["nginx"], "-v"]) if programs["nginx"] else "not installed",
        "wrk": command_version([programs["wrk"], "-v"]) if programs["wrk"] else "not installed",
        "gateway hot path": command_version([sys.executable, "-c", "import gateway; print(gateway.compiled.mode)"]),
    }


def start_benchmark(programs: tuple[str, ...], workers: int = 1) -> tuple[Pinning, dict[str, str]]:
    """What every benchmark does first: SIGTERM raises Terminated (so its processes are stopped on the way
    out), the CPUs are chosen (for a proxy of `workers` workers), and the machine is printed with the versions
    of `programs`."""
    signal.signal(signal.SIGTERM, raise_terminated)
    pinning = choose_pinning(workers)
    environment = environment_info()
    versions = "".join(f"{environment[name]}; " for name in programs)
    print(f"machine: {environment['nproc']} CPUs, {environment['cpu']}; Python {environment['python']}; "
          f"{versions}vamp {environment['revision']}")
    return pinning, environment


def format_table(figures: Figures, *, with_p99_9: bool = False) -> str:
    """One row per case, in CASES order: its figures, or "failed"."""
    tail = ("p99.9",) if with_p99_9 else ()
    rows = [("case", "req/s", "p50", "p99", *tail, "errors", "server CPU/req", "server CPU busy")]
    for case, label in CASES.items():
        if case in figures.results:
            result = figures.results[case]
            cpu, busy = result.server_cpu_us_per_request, result.server_cpu_busy_percent
            cpu_per_request = "-" if cpu is None else f"{cpu:.1f} us"
            cpu_busy = "-" if busy is None else f"{busy:.0f}%"
            p99_9 = ("-" if result.p99_9_ms is None else f"{result.p99_9_ms:.2f} ms",) if with_p99_9 else ()
            rows.append((label, f"{result.requests_per_second:,.0f}", f"{result.p50_ms:.2f} ms",
                         f"{result.p99_ms:.2f} ms", *p99_9, str(result.errors), cpu_per_request, cpu_busy))
        elif case in figures.failures:
            rows.append((label, "failed", *["-"] * (len(rows[0]) - 2)))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells))
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def gateway_ratios(results: dict[str, WrkResult]) -> dict[str, float]:
    """The gateway against HAProxy and nginx: throughput, and CPU spent per request (robust to a busy machine)."""
    ratios = {}
    for plain_case, logged_case in LOGGED_PAIRS:        # an access log's cost (docs/access-logs.md: at most 5%)
        plain, logged = results.get(plain_case), results.get(logged_case)
        if plain is None or logged is None:
            continue
        if plain.requests_per_second > 0:
            ratios[f"{logged_case}/{plain_case} req/s"] = round(
                logged.requests_per_second / plain.requests_per_second, 3)
        if plain.server_cpu_us_per_request and logged.server_cpu_us_per_request:
            ratios[f"{logged_case}/{plain_case} CPU per request"] = round(
                logged.server_cpu_us_per_request / plain.server_cpu_us_per_request, 3)
    gateway = results.get("gateway")
    for reference in ("haproxy", "nginx", "floor"):
        other = results.get(reference)
        if gateway is None or other is None:
            continue
        if other.requests_per_second > 0:
            throughput = gateway.requests_per_second / other.requests_per_second
            ratios[f"gateway/{reference} req/s"] = round(throughput, 2)
        if gateway.server_cpu_us_per_request and other.server_cpu_us_per_request:
            ratios[f"gateway/{reference} CPU per request"] = round(
                gateway.server_cpu_us_per_request / other.server_cpu_us_per_request, 2)
    return ratios


# --- main --------------------------------------------------------------------------------------------------

def parse_cases(text: str) -> list[str]:
    cases = [case.strip() for case in text.split(",") if case.strip()]
    unknown = [case for case in cases if case not in CASES]
    if unknown or not cases:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(CASES)} (got {text!r})")
    return [case for case in CASES if case in cases]


def integer_at_least(minimum: int):
    """An argparse type: an integer no smaller than minimum."""
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum} (got {value})")
        return value
    parse.__name__ = "integer"   # argparse names the type in its error for a non-number
    return parse


def positive_fraction(text: str) -> float:
    """An argparse type: a number in (0, 1]."""
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most 1 (got {value:g})")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Measure the vamp gateway against HAProxy and nginx with wrk.")
    parser.add_argument("--duration", type=integer_at_least(1), default=10, help="seconds per measurement (10)")
    parser.add_argument("--warmup", type=integer_at_least(0), default=2,
                        help="seconds of unmeasured load before each measurement (2; 0 skips it)")
    parser.add_argument("--connections", type=integer_at_least(1), default=50, help="wrk connections (50)")
    parser.add_argument("--only", type=parse_cases, default=list(DEFAULT_CASES),
                        help=f"comma-separated subset of {','.join(CASES)} ({','.join(DEFAULT_CASES)})")
    parser.add_argument("--workers", type=integer_at_least(1), default=1,
                        help="workers of each proxy: gateway --workers, HAProxy nbthread, nginx worker_processes (1)")
    parser.add_argument("--rounds", type=integer_at_least(1), default=1,
                        help="measure the cases this many times over, in turn, and report each one's median (1)")
    parser.add_argument("--rate-fraction", type=positive_fraction, metavar="F",
                        help="also load every case at F times the gateway's capacity and report p50/p99/p99.9 there")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures to FILE as JSON")
    args = parser.parse_args(argv)
    if args.rate_fraction is not None and "gateway" not in args.only:
        parser.error("--rate-fraction: the offered load is a fraction of the gateway's capacity, so --only must "
                     "include gateway")
    return args


def print_header(args: argparse.Namespace, pinning: Pinning) -> None:
    print(f"placement: {pinning.note}")
    if args.workers > 1:
        print(f"workers: {args.workers} per proxy (vamp gateway --workers {args.workers}, HAProxy nbthread "
              f"{args.workers}, nginx worker_processes {args.workers}); the backend keeps one; server CPU busy "
              f"counts every worker, so it can reach {args.workers * 100}%")
    if pinning.shared:
        print(f"WARNING: wrk and the backend share cores with the proxy's {args.workers} workers, so on this "
              f"machine the {args.workers}-worker figures say little (CPU per request holds better than req/s and "
              "latency)")
    rounds = f"; {args.rounds} rounds, the cases in turn, each case's median round shown" if args.rounds > 1 else ""
    print(f"load: wrk -t1 -c{args.connections} -d{args.duration}s --latency, after {args.warmup} s of warm-up"
          f"{rounds}", flush=True)
    if args.rate_fraction is not None:
        print(f"then every case again at {args.rate_fraction:g}x the gateway's capacity (the same offered load for "
              "every case), paced by a wrk Lua delay()", flush=True)
    print()


def pacing_title(fraction: float, pacing: Pacing) -> str:
    return (f"at {fraction:g}x the gateway's capacity ({pacing.offered_per_second:,.0f} req/s offered to every "
            f"case: {pacing.connections} connections, each waiting {pacing.delay_ms} ms on average before each "
            "request; req/s is the achieved rate)")


def report_problems(figures: Figures, when: str = "") -> None:
    """Each failure and each case with wrk errors, on stderr."""
    for case, reason in figures.failures.items():
        print(f"\n{CASES[case]}{when} failed: {reason}", file=sys.stderr)
    for case, result in figures.results.items():
        if result.errors:
            print(f"\n{CASES[case]}{when}: wrk reported {result.errors} errors (socket errors "
                  f"{result.socket_errors}, non-2xx/3xx responses {result.non_2xx_3xx})", file=sys.stderr)


def figures_json(figures: Figures) -> dict:
    def as_json(result: WrkResult) -> dict:
        return {**asdict(result), "errors": result.errors}
    rounds = {"rounds": {case: [as_json(result) for result in results] for case, results in figures.rounds.items()}
              } if any(len(results) > 1 for results in figures.rounds.values()) else {}
    return {"results": {case: as_json(result) for case, result in figures.results.items()},
            "failures": figures.failures, **rounds}


def at_rate_json(fraction: float | None, pacing: Pacing | None, at_rate: Figures) -> dict | None:
    if fraction is None:
        return None
    offered = {} if pacing is None else {
        "target_requests_per_second": round(pacing.target_per_second, 1),
        "offered_requests_per_second": round(pacing.offered_per_second, 1),
        "connections": pacing.connections, "delay_ms": pacing.delay_ms}
    return {"fraction": fraction, "of": "gateway capacity", **offered, **figures_json(at_rate)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    pinning, environment = start_benchmark(("haproxy", "nginx", "wrk"), args.workers)
    print_header(args, pinning)
    capacity, at_rate = Figures(), Figures()
    try:
        with tempfile.TemporaryDirectory(prefix="vamp-bench-") as tmp:
            pacing = Bench(Path(tmp), pinning, args).run(capacity, at_rate)
    except (KeyboardInterrupt, Terminated) as interruption:
        print("interrupted; every process started was stopped", file=sys.stderr)
        return 130 if isinstance(interruption, KeyboardInterrupt) else 128 + signal.SIGTERM

    print(format_table(capacity))
    ratios = gateway_ratios(capacity.results)
    if ratios:
        print()
    for name, ratio in ratios.items():
        print(f"{name}: {ratio:.3f}" if "-logged/" in name else f"{name}: {ratio:.2f}")
    for plain_case, logged_case in LOGGED_PAIRS:
        if args.rounds > 1 and {plain_case, logged_case} <= capacity.rounds.keys():
            pairs = [logged.requests_per_second / plain.requests_per_second
                     for plain, logged in zip(capacity.rounds[plain_case], capacity.rounds[logged_case])]
            print(f"{logged_case}/{plain_case} req/s by round: {' '.join(f'{ratio:.3f}' for ratio in pairs)} "
                  f"(median {statistics.median(pairs):.3f})")
    if pacing is not None:
        print(f"\n{pacing_title(args.rate_fraction, pacing)}")
        print(format_table(at_rate, with_p99_9=True))
    report_problems(capacity)
    report_problems(at_rate, " at the offered load")
    if args.json:
        args.json.write_text(json.dumps({
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "environment": environment,
            "workers": args.workers,
            "placement": pinning.note,
            "proxy_shares_client_cores": pinning.shared,
            "load": {"threads": 1, "connections": args.connections, "duration_s": args.duration,
                     "warmup_s": args.warmup},
            **figures_json(capacity),
            "ratios": ratios,
            "at_rate": at_rate_json(args.rate_fraction, pacing, at_rate),
        }, indent=2) + "\n")
    return 0 if capacity.clean and at_rate.clean else 1


if __name__ == "__main__":
    sys.exit(main())
