"""The canary's Prometheus check provider (`control/metrics/prometheus.py`) against a real Prometheus (Debian's
`prometheus` package) scraping a real `vamp gateway`'s `/metrics` every second: the query sees the requests sent
through the gateway; no series is no data; several series, a refused query, no Prometheus or a silent one are
clear errors."""
from __future__ import annotations

import asyncio
import shutil
import socket
import urllib.request
from pathlib import Path

import pytest
import yaml

from control.metrics.prometheus import PrometheusError, query_scalar
from tests.support import LOOPBACK, HttpClient, free_port, shop_config
from tests.support.processes import ManagedProcess
from tests.support.waiting import eventually_async

PROMETHEUS = shutil.which("prometheus")
needs_prometheus = pytest.mark.skipif(PROMETHEUS is None, reason="the prometheus binary is not installed "
                                      "(Debian package `prometheus`; `make system-deps` installs it)")
REQUESTS = 25
TIMEOUT = 5.0


class PrometheusProcess(ManagedProcess):
    """`prometheus` on a loopback port with its own data directory, scraping `targets` every second."""

    label = "prometheus"

    def __init__(self, workdir: Path, targets: list[str]) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        config = {"global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
                  "scrape_configs": [{"job_name": "vamp", "static_configs": [{"targets": targets}]}]}
        config_path = workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        super().__init__([PROMETHEUS or "prometheus", f"--config.file={config_path}",
                          f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address={self.address}",
                          "--storage.tsdb.retention.time=1h"], workdir, log_name="prometheus")

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def start(self) -> PrometheusProcess:
        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"http://{self.address}/-/ready", timeout=2) as response:
                    return response.status == 200
            except OSError:
                return False
        self.spawn()
        self.wait_until(ready, 60.0, "ready")
        return self


@pytest.fixture(scope="module")
def scraped(module_procs):
    """(prometheus address, gateway port): Prometheus scraping a gateway `shop` on which REQUESTS GETs went to
    route `stable`."""
    echo = module_procs.backend("echo", "v1", "v2")
    port = free_port()
    gateway = module_procs.gateway(shop_config(port, echo))
    prometheus = PrometheusProcess(module_procs.workdir / "prometheus", [gateway.admin])
    module_procs.started.append(prometheus)
    prometheus.start()
    with HttpClient(port) as client:
        for _ in range(REQUESTS):
            assert client.request("GET", "/").status == 200
    return prometheus.address, port


@needs_prometheus
async def test_a_query_sees_the_requests_sent_through_the_gateway(scraped):
    address, _ = scraped
    query = 'sum(vamp_requests_total{gateway="shop", route="stable", code="2xx"})'

    async def counted() -> bool:
        return await query_scalar(address, query, timeout=TIMEOUT) == REQUESTS
    await eventually_async(counted, 30, f"Prometheus counting {REQUESTS} requests", interval=0.25)
    assert await query_scalar(f"http://{address}/", query, timeout=TIMEOUT) == REQUESTS


@needs_prometheus
async def test_a_scalar_is_a_value_and_nan_or_no_series_is_no_data(scraped):
    address, _ = scraped
    assert await query_scalar(address, "1 + 1", timeout=TIMEOUT) == 2.0
    assert await query_scalar(address, '(vamp_requests_total{gateway="nothing"})', timeout=TIMEOUT) is None
    assert await query_scalar(address, "0 / 0", timeout=TIMEOUT) is None


@needs_prometheus
async def test_several_series_and_a_bad_query_are_errors(scraped):
    address, _ = scraped

    async def both_routes_scraped():
        try:
            await query_scalar(address, 'vamp_route_weight_ratio{gateway="shop"}', timeout=TIMEOUT)
        except PrometheusError as error:
            return str(error)
        return None
    message = await eventually_async(both_routes_scraped, 30, "both routes' weights scraped", interval=0.25)
    assert "gives 2 series" in message and "sum(" in message
    with pytest.raises(PrometheusError, match="refused the query 'sum\\(': bad_data"):
        await query_scalar(address, "sum(", timeout=TIMEOUT)


@needs_prometheus
async def test_something_that_is_not_prometheus_is_an_error(scraped):
    _, gateway_port = scraped
    with pytest.raises(PrometheusError, match="is it Prometheus"):
        await query_scalar(f"{LOOPBACK}:{gateway_port}", "1", timeout=TIMEOUT)


async def test_no_prometheus_is_an_error_naming_the_address():
    address = f"{LOOPBACK}:{free_port()}"
    with pytest.raises(PrometheusError, match=f"cannot query Prometheus at {address}"):
        await query_scalar(address, "1", timeout=TIMEOUT)


async def test_a_silent_prometheus_times_out():
    with socket.socket() as silent:          # accepts connections (the kernel does) but never answers
        silent.bind((LOOPBACK, 0))
        silent.listen()
        address = f"{LOOPBACK}:{silent.getsockname()[1]}"
        with pytest.raises(PrometheusError, match="did not answer within 0.5s"):
            await asyncio.wait_for(query_scalar(address, "1", timeout=0.5), 10)
