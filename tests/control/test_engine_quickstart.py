"""The canary quickstart, driven through the deployment engine with a real gateway, real local processes and
real HTTP on loopback: deploy sava:1.0, scale to 3, merge sava:1.1 at 0%, 50/50, Chrome only, then 1.1
alone — with no request failing from the merge on."""
from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from control import dsl
from control.engine import Engine
from control.orchestrator.local import LocalOrchestrator
from control.store import Store
from gateway.runtime.manager import ConfigManager
from gateway.runtime.runtime import Runtime
from gateway.runtime.workers import LocalWorker
from tests.support import free_port
from tests.support.load import BackgroundTraffic
from tests.support.waiting import eventually_async

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CHROME = ("Mozilla/5.0 (Linux; Android 13; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/120.0.0.0 Mobile Safari/537.36")
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"


def blueprint(name: str, port: int) -> dsl.model.Blueprint:
    text = (EXAMPLES / name).read_text().replace("9050:", f"{port}:")
    return dsl.read_text(text)[0]


async def eventually(condition, timeout: float, what: str) -> None:
    await eventually_async(condition, timeout, what, interval=0.05)


async def versions(url: str, count: int, user_agent: str | None = None) -> Counter:
    seen: Counter = Counter()
    headers = {"User-Agent": user_agent} if user_agent else {}
    async with aiohttp.ClientSession() as session:
        for _ in range(count):
            async with session.get(url, headers=headers) as response:
                assert response.status == 200, await response.text()
                seen[response.headers["X-Version"]] += 1
    return seen


@pytest.fixture
async def platform(tmp_path):
    loop = asyncio.get_running_loop()
    gateways = ConfigManager([LocalWorker(Runtime(loop))], None)
    await gateways.start(gateways.desired)
    holder: dict = {}

    async def before_stop(instance):
        await holder["engine"].drain_instance(instance)

    orchestrator = LocalOrchestrator(tmp_path / "logs", before_stop=before_stop, stop_grace=5.0)
    engine = Engine(Store(tmp_path / "vamp.db"), orchestrator, gateways)
    holder["engine"] = engine
    await engine.start()
    yield engine
    await engine.close()
    await orchestrator.close()
    await gateways.shutdown(1.0)


@pytest.mark.timeout(120)
async def test_the_canary_quickstart_end_to_end(platform):
    engine = platform
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    internal = "sava/sava/webport"

    # 1. deploy sava:1.0 with its external gateway
    await engine.deploy("sava", blueprint("sava-1.0.yaml", port))

    async def serving() -> bool:
        try:
            return (await versions(url, 1)) == Counter({"1.0.0": 1})
        except (aiohttp.ClientError, AssertionError):
            return False
    await eventually(serving, 20, "serving sava 1.0.0")

    # 2. scale sava:1.0.0 to 3 instances: the internal gateway spreads over them
    await engine.set_scale("sava", "sava", "sava:1.0.0", dsl.model.Scale(instances=3))

    async def three_targets() -> bool:
        gateway = engine.gateway(internal)
        return len(gateway["routes"]["sava/sava/sava:1.0.0/webport"]["targets"]) == 3
    await eventually(three_targets, 20, "three ready instances behind the gateway")

    traffic = BackgroundTraffic(url)
    load = asyncio.get_running_loop().create_task(traffic.run(time.monotonic() + 90))
    try:
        # 3. merge sava:1.1: it joins at 0%
        await engine.deploy("sava", blueprint("sava-1.1.yaml", port))
        routes = engine.gateway(internal)["routes"]
        assert routes["sava/sava/sava:1.1.0/webport"]["weight"] == "0%"
        assert routes["sava/sava/sava:1.0.0/webport"]["weight"] == "100%"

        async def canary_ready() -> bool:
            return len(engine.gateway(internal)["routes"]["sava/sava/sava:1.1.0/webport"]["targets"]) == 1
        await eventually(canary_ready, 20, "sava 1.1.0 ready")
        assert (await versions(url, 20)) == Counter({"1.0.0": 20})

        # 4. 50/50, then Chrome users only to 1.1
        await engine.patch_gateway(internal, {"routes": {"sava/sava/sava:1.0.0/webport": {"weight": "50%"},
                                                         "sava/sava/sava:1.1.0/webport": {"weight": "50%"}}})
        # The background traffic shares the split with this probe: count both over the same window. The split
        # alternates, so the two differ by one at most, plus the background's one request in flight as the
        # window opens (routed under the old weights: to 1.0.0) and as it closes (answered after it, uncounted).
        before = traffic.versions.copy()
        split = await versions(url, 100) + (traffic.versions - before)
        assert abs(split["1.0.0"] - split["1.1.0"]) <= 3, split
        await engine.patch_gateway(internal, {"routes": {
            "sava/sava/sava:1.0.0/webport": {"weight": "100%"},
            "sava/sava/sava:1.1.0/webport": {"weight": "0%", "condition": "browser = Chrome",
                                             "condition_strength": "100%"}}})
        assert (await versions(url, 20, CHROME)) == Counter({"1.1.0": 20})
        assert (await versions(url, 20, FIREFOX)) == Counter({"1.0.0": 20})

        # 5. 1.1 to 100%, then remove 1.0: its instances drain before they stop
        await engine.patch_gateway(internal, {"routes": {
            "sava/sava/sava:1.0.0/webport": {"weight": "0%"},
            "sava/sava/sava:1.1.0/webport": {"weight": "100%", "condition": None,
                                             "condition_strength": None}}})
        assert (await versions(url, 20)) == Counter({"1.1.0": 20})
        await engine.undeploy("sava", blueprint("sava-1.0.yaml", port).__class__(
            name="sava:1.0", clusters=blueprint("sava-1.0.yaml", port).clusters))

        async def old_gone() -> bool:
            return not engine.orchestrator.instances("sava/sava/sava:1.0.0")
        await eventually(old_gone, 30, "sava 1.0.0 stopped")
        assert (await versions(url, 20)) == Counter({"1.1.0": 20})
    finally:
        traffic.stop.set()
        await load
    assert traffic.failures == [], traffic.failures[:5]
    assert traffic.versions["1.1.0"] > 0


@pytest.mark.timeout(60)
async def test_cluster_metrics_count_what_each_cluster_received(platform):
    from prometheus_client.parser import text_string_to_metric_families

    from control.metrics.exposition import render_clusters

    engine = platform
    port = free_port()
    await engine.deploy("sava", blueprint("sava-1.0.yaml", port))
    url = f"http://127.0.0.1:{port}/"

    async def serving() -> bool:
        try:
            return bool(await versions(url, 1))
        except (aiohttp.ClientError, AssertionError):
            return False
    await eventually(serving, 20, "serving sava 1.0.0")
    await versions(url, 9)
    text = render_clusters(engine, await engine.gateway_controller.snapshot()).decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    labels = (("cluster", "sava"), ("deployment", "sava"))
    assert samples[("vamp_cluster_requests_total", labels[:1] + (("code", "2xx"),) + labels[1:])] == 10
    assert samples[("vamp_cluster_request_duration_seconds_count", labels)] == 10
    assert samples[("vamp_cluster_instances", labels[:1] + labels[1:] + (("state", "ready"),))] == 1
