"""benchmarks/tls.py: HAProxy and the gateway are configured alike, the ratios compare like with like, and a short
real run prints both servers' keep-alive and handshake rows."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from proxy import WrkResult
from tls import INTERMEDIATE_CIPHERS, gateway_config, haproxy_config, ratios

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "tls.py"
SYSTEM_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
MISSING = [name for name in ("wrk", "haproxy", "nginx") if shutil.which(name, path=SYSTEM_PATH) is None]


def result(rate: float, cpu: float) -> WrkResult:
    return WrkResult(requests=int(rate), requests_per_second=rate, p50_ms=1.0, p99_ms=2.0,
                     server_cpu_us_per_request=cpu)


def test_both_servers_get_the_same_certificate_files_and_ciphers(tmp_path):
    haproxy = haproxy_config(8443, 8080, tmp_path / "server.pem", 50)
    assert f"ssl-default-bind-ciphers {INTERMEDIATE_CIPHERS}" in haproxy and "ssl-min-ver TLSv1.2" in haproxy
    assert f"bind 127.0.0.1:8443 ssl crt {tmp_path / 'server.pem'} alpn http/1.1" in haproxy
    gateway = gateway_config(8444, 8080, tmp_path / "server.crt", tmp_path / "server.key")
    assert "port: 8444/https" in gateway and f"cert: {tmp_path / 'server.crt'}" in gateway


def test_ratios_compare_the_gateway_with_haproxy_per_kind_of_load():
    found = ratios({"haproxy-keepalive": result(10_000, 20.0), "gateway-keepalive": result(5_000, 40.0),
                    "haproxy-handshakes": result(1_000, 300.0), "gateway-handshakes": result(800, 390.0)})
    assert found == {"keepalive: gateway/haproxy req/s": 0.5, "keepalive: gateway/haproxy CPU per request": 2.0,
                     "handshakes: gateway/haproxy req/s": 0.8, "handshakes: gateway/haproxy CPU per request": 1.3}


@pytest.mark.skipif(bool(MISSING), reason=f"not installed: {', '.join(MISSING)} (make system-deps)")
def test_a_short_run_prints_keep_alive_and_handshake_rows_for_both(tmp_path):
    figures = tmp_path / "figures.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--duration", "1", "--warmup", "0", "--connections", "4",
                           "--json", str(figures)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PATH": SYSTEM_PATH})
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith(("HAProxy", "vamp gateway"))]
    assert len(rows) == 4 and not any("failed" in row for row in rows), done.stdout
    assert "handshakes: gateway/haproxy req/s" in done.stdout
    written = json.loads(figures.read_text())
    assert set(written["results"]) == {"haproxy-keepalive", "gateway-keepalive", "haproxy-handshakes",
                                       "gateway-handshakes"}
