"""The TLS benchmark: HAProxy and the Vamp gateway terminating TLS with the same certificate, in one run.

One nginx worker serves a tiny body over plain HTTP as the backend (pinned, with wrk, to CPU 1). HAProxy and
`vamp gateway` (one worker each, pinned to CPU 0) terminate TLS with one certificate made here with trustme (an
ECDSA P-256 key by default, `--rsa` for RSA 2048), TLS 1.2 and 1.3 with Mozilla's intermediate ciphers on both,
and forward to the backend over keep-alive connections. wrk loads each twice:

- keep-alive: `--connections` TLS connections, each carrying many requests: TLS record cost;
- handshakes: every request with `Connection: close`, so each is a new TCP connection and a full TLS handshake
  (wrk resumes no sessions): new TLS handshakes per second.

It prints requests per second, p50/p99 latency, errors, the CPU time the server spent per request and how busy
it kept its CPU, then the gateway's throughput and CPU per request relative to HAProxy's. Pieces (processes,
wrk output, CPU accounting, pinning) are benchmarks/proxy.py's.

    python benchmarks/tls.py [--duration 10] [--warmup 2] [--connections 50] [--rsa] [--json results.json]

Exit status: 0 when every case ran cleanly, 1 when a server failed to start or wrk reported errors.
"""
from __future__ import annotations

import argparse
import json
import signal
import socket
import ssl
import sys
import tempfile
import time
from pathlib import Path

import trustme

from proxy import (HAPROXY_DEFAULTS, BenchmarkError, Pinning, Processes, Terminated, WrkResult, WRK_GRACE,
                   backend_config, connection_limit, free_port, integer_at_least, load_with_wrk, parse_wrk_output,
                   require_program, start_benchmark, start_nginx, vamp_command, wait_until_serving)

from gateway.tls.contexts import INTERMEDIATE_CIPHERS

SERVER_NAME = "bench.example"
STARTUP_TIMEOUT = 20.0
PROBE_INTERVAL = 0.05
CASES = {
    "haproxy-keepalive": "HAProxy, keep-alive",
    "gateway-keepalive": "vamp gateway, keep-alive",
    "haproxy-handshakes": "HAProxy, new handshakes",
    "gateway-handshakes": "vamp gateway, new handshakes",
}


def haproxy_config(port: int, backend_port: int, pem: Path, connections: int) -> str:
    return f"""global
    nbthread 1
    maxconn {connection_limit(connections)}
    ssl-default-bind-ciphers {INTERMEDIATE_CIPHERS}
    ssl-default-bind-options ssl-min-ver TLSv1.2

{HAPROXY_DEFAULTS}
frontend bench
    bind 127.0.0.1:{port} ssl crt {pem} alpn http/1.1
    default_backend nginx

backend nginx
    server backend 127.0.0.1:{backend_port}
"""


def gateway_config(port: int, backend_port: int, cert: Path, key: Path) -> str:
    return f"""gateways:
  bench:
    port: {port}/https
    bind: 127.0.0.1
    tls:
      certificates: [{{cert: {cert}, key: {key}}}]
    routes:
      stable:
        targets: [127.0.0.1:{backend_port}]
"""


def wait_until_serving_tls(processes: Processes, name: str, port: int) -> None:
    """Poll until GET / over TLS answers 200; fail early if the process exits."""
    proc = processes.running[name]
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    deadline = time.monotonic() + STARTUP_TIMEOUT
    problem = "no answer yet"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchmarkError(f"{name} exited with status {proc.returncode}:\n{processes.log_tail(name)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as raw, \
                    context.wrap_socket(raw, server_hostname=SERVER_NAME) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
                answer = sock.recv(64)
            if answer.startswith(b"HTTP/1.1 200"):
                return
            problem = repr(answer)
        except OSError as error:
            problem = str(error)
        time.sleep(PROBE_INTERVAL)
    raise BenchmarkError(f"{name} did not answer 200 over TLS on port {port} ({problem}):\n"
                         f"{processes.log_tail(name)}")


class TlsBench:
    def __init__(self, workdir: Path, pinning: Pinning, args: argparse.Namespace) -> None:
        self.workdir = workdir
        self.pinning = pinning
        self.args = args
        self.processes = Processes(workdir)
        ca = trustme.CA(key_type=trustme.KeyType.RSA if args.rsa else trustme.KeyType.ECDSA)
        issued = ca.issue_cert(SERVER_NAME, "127.0.0.1",
                               key_type=trustme.KeyType.RSA if args.rsa else trustme.KeyType.ECDSA)
        self.cert, self.key, self.pem = workdir / "server.crt", workdir / "server.key", workdir / "server.pem"
        self.cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
        self.key.write_bytes(issued.private_key_pem.bytes())
        self.pem.write_bytes(self.cert.read_bytes() + self.key.read_bytes())     # HAProxy: one file
        self.backend_port = 0

    def start_backend(self) -> None:
        self.backend_port = free_port()
        config = backend_config(self.workdir / "backend", self.backend_port, self.args.connections)
        start_nginx(self.processes, "backend", self.pinning.client, config, self.backend_port)

    def start_haproxy(self) -> int:
        port = free_port()
        path = self.workdir / "haproxy.cfg"
        path.write_text(haproxy_config(port, self.backend_port, self.pem, self.args.connections))
        self.processes.start("haproxy", [*self.pinning.proxy, require_program("haproxy"), "-db", "-f", str(path)])
        wait_until_serving_tls(self.processes, "haproxy", port)
        return port

    def start_gateway(self) -> int:
        port, admin_port = free_port(), free_port()
        directory = self.workdir / "gateway"
        directory.mkdir()
        config = directory / "gateways.yaml"
        config.write_text(gateway_config(port, self.backend_port, self.cert, self.key))
        self.processes.start("gateway", [*self.pinning.proxy, *vamp_command(), "gateway", "--config", str(config),
                                         "--admin", f"127.0.0.1:{admin_port}", "--state-dir",
                                         str(directory / "state")])
        wait_until_serving(self.processes, "gateway", admin_port, "/ready")
        wait_until_serving_tls(self.processes, "gateway", port)
        return port

    def handshakes(self, server: str, port: int) -> WrkResult:
        """wrk with `Connection: close`: one TLS handshake per request."""
        url = f"https://127.0.0.1:{port}/"
        command = [*self.pinning.client, require_program("wrk"), "-t1", f"-c{self.args.connections}",
                   "-H", "Connection: close", "--latency"]
        if self.args.warmup > 0:
            self.processes.run(f"wrk-warmup-{server}-close", [*command, f"-d{self.args.warmup}s", url],
                               self.args.warmup + WRK_GRACE)
        cpu_before, started = self.processes.cpu_seconds(server), time.monotonic()
        status, output = self.processes.run(f"wrk-{server}-close", [*command, f"-d{self.args.duration}s", url],
                                            self.args.duration + WRK_GRACE)
        cpu_used, elapsed = self.processes.cpu_seconds(server) - cpu_before, time.monotonic() - started
        if status != 0:
            raise BenchmarkError(f"wrk exited with status {status}:\n{output.strip()}")
        try:
            result = parse_wrk_output(output)
        except ValueError as error:
            raise BenchmarkError(f"{error}:\n{output.strip()}") from None
        if result.requests:
            result.server_cpu_us_per_request = round(cpu_used / result.requests * 1e6, 1)
        result.server_cpu_busy_percent = round(cpu_used / elapsed * 100)
        return result

    def run(self, results: dict[str, WrkResult], failures: dict[str, str]) -> None:
        try:
            self.start_backend()
            for server, start in (("haproxy", self.start_haproxy), ("gateway", self.start_gateway)):
                print(f"measuring {server} ...", file=sys.stderr, flush=True)
                try:
                    port = start()
                    results[f"{server}-keepalive"] = load_with_wrk(
                        self.processes, self.pinning, self.args, f"{server}-keepalive", server=server,
                        url=f"https://127.0.0.1:{port}/")
                    results[f"{server}-handshakes"] = self.handshakes(server, port)
                except BenchmarkError as error:
                    failures[server] = str(error)
                finally:
                    self.processes.stop(server)
        except BenchmarkError as error:
            failures["backend"] = str(error)
        finally:
            self.processes.stop_all()


def format_table(results: dict[str, WrkResult]) -> str:
    rows = [("case", "req/s", "p50", "p99", "errors", "server CPU/req", "server CPU busy")]
    for case, label in CASES.items():
        result = results.get(case)
        if result is None:
            rows.append((label, "failed", "-", "-", "-", "-", "-"))
            continue
        cpu = "-" if result.server_cpu_us_per_request is None else f"{result.server_cpu_us_per_request:.1f} us"
        busy = "-" if result.server_cpu_busy_percent is None else f"{result.server_cpu_busy_percent:.0f}%"
        rows.append((label, f"{result.requests_per_second:,.0f}", f"{result.p50_ms:.2f} ms",
                     f"{result.p99_ms:.2f} ms", str(result.errors), cpu, busy))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = ["  ".join([row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])])
             for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def ratios(results: dict[str, WrkResult]) -> dict[str, float]:
    """The gateway against HAProxy: throughput and CPU per request, keep-alive and new handshakes."""
    found = {}
    for kind in ("keepalive", "handshakes"):
        gateway, haproxy = results.get(f"gateway-{kind}"), results.get(f"haproxy-{kind}")
        if gateway is None or haproxy is None:
            continue
        if haproxy.requests_per_second > 0:
            found[f"{kind}: gateway/haproxy req/s"] = round(gateway.requests_per_second
                                                            / haproxy.requests_per_second, 2)
        if gateway.server_cpu_us_per_request and haproxy.server_cpu_us_per_request:
            found[f"{kind}: gateway/haproxy CPU per request"] = round(
                gateway.server_cpu_us_per_request / haproxy.server_cpu_us_per_request, 2)
    return found


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=integer_at_least(1), default=10, help="seconds per measurement")
    parser.add_argument("--warmup", type=integer_at_least(0), default=2, help="seconds of warm-up before each")
    parser.add_argument("--connections", type=integer_at_least(1), default=50, help="wrk connections")
    parser.add_argument("--rsa", action="store_true", help="an RSA 2048 certificate instead of ECDSA P-256")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    pinning, environment = start_benchmark(("haproxy", "wrk"))
    print(f"placement: {pinning.note}; wrk: 1 thread, {args.connections} connections, {args.duration} s "
          f"(+{args.warmup} s warm-up); certificate: {'RSA 2048' if args.rsa else 'ECDSA P-256'}")
    results: dict[str, WrkResult] = {}
    failures: dict[str, str] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="vamp-bench-tls-") as tmp:
            TlsBench(Path(tmp), pinning, args).run(results, failures)
    except (KeyboardInterrupt, Terminated) as interruption:
        print("interrupted; every process started was stopped", file=sys.stderr)
        return 130 if isinstance(interruption, KeyboardInterrupt) else 128 + signal.SIGTERM
    print(format_table(results))
    found = ratios(results)
    if found:
        print()
    for name, ratio in found.items():
        print(f"{name}: {ratio:.2f}")
    for case, problem in failures.items():
        print(f"\n{case} failed: {problem}", file=sys.stderr)
    for case, result in results.items():
        if result.errors:
            print(f"\n{case}: wrk reported {result.errors} errors", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps({
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "environment": environment, "placement": pinning.note,
            "load": {"threads": 1, "connections": args.connections, "duration_s": args.duration,
                     "warmup_s": args.warmup, "certificate": "rsa2048" if args.rsa else "ecdsa-p256"},
            "results": {case: vars(result) for case, result in results.items()}, "ratios": found,
            "failures": failures}, indent=2) + "\n")
    return 0 if not failures and not any(r.errors for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
