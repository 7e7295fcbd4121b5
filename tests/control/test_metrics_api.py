"""The metrics and health paths of the control plane API (control/metrics/api.py) over an aggregation fed by the
test: names with '/' read against the names that exist (also %2F-encoded), every metric by name (Vamp's
`responseTime` too), deployments, clusters, ports, services and instances mapped to the gateway's scopes,
health `null` without requests, `?window=` checked, unknown names 404, and 503 with the aggregation off."""
from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient, TestServer

from control import dsl
from control.api import create_app
from control.metrics.aggregator import Aggregator
from control.orchestrator.base import Instance
from control.store import Store
from tests.control.test_control_api import FakeEngine
from tests.support.metrics import FakeGateways

START = 5000.0
BLUEPRINT = {
    "name": "shop",
    "clusters": {
        "web": {"services": [
            {"breed": {"name": "web:1", "deployable": "cmd://web",
                       "ports": {"http": "8080/http", "admin": "9000/http"}}},
            {"breed": {"name": "web:2", "deployable": "cmd://web", "ports": {"http": "8080/http"}}}]},
        "db": {"services": [{"breed": {"name": "db:1", "deployable": "cmd://db", "ports": {"sql": "5432/tcp"}}}]},
    },
}
WEB_HTTP, WEB_ADMIN, DB_SQL = "shop/web/http", "shop/web/admin", "shop/db/sql"
WEB1_HTTP, WEB2_HTTP, WEB1_ADMIN, DB1_SQL = ("shop/web/web:1/http", "shop/web/web:2/http", "shop/web/web:1/admin",
                                             "shop/db/db:1/sql")
INSTANCES = {   # instance id -> its ports
    "shop/web/web:1#0": {"http": 41000, "admin": 41001},
    "shop/web/web:1#1": {"http": 41002, "admin": 41003},
    "shop/web/web:2#0": {"http": 41004},
    "shop/db/db:1#0": {"sql": 41005},
}
EDGE, EDGE_ROUTE = "shop/80", "shop/web/http"        # the external gateway and its route to cluster web


def target(port: int) -> str:
    return f"127.0.0.1:{port}"


def traffic(gateways: FakeGateways) -> None:
    """What the gateways answered in the one second the aggregation measured."""
    gateways.answer(WEB_HTTP, WEB1_HTTP, target(41000), times=6)
    gateways.answer(WEB_HTTP, WEB1_HTTP, target(41002), status=500, times=2, seconds=0.2)
    gateways.answer(WEB_HTTP, WEB2_HTTP, target(41004), times=2)
    gateways.answer(WEB_ADMIN, WEB1_ADMIN, target(41001), status=404, times=3)
    gateways.answer(DB_SQL, DB1_SQL, target(41005), times=0)
    gateways.answer(EDGE, EDGE_ROUTE, target(40000), times=10)


@pytest.fixture
async def api(tmp_path):
    store = Store(tmp_path / "vamp.db")
    engine = FakeEngine(store)
    engine.running["shop"] = dsl.read("deployment", BLUEPRINT)
    for instance_id, ports in INSTANCES.items():
        engine.orchestrator.running.append(Instance(instance_id, instance_id.split("#")[0], "127.0.0.1", ports,
                                                    "ready", None, 0, 0.0))
    gateways = FakeGateways()
    aggregator = Aggregator([gateways.source], window=600)
    aggregator.ingest([gateways.snapshot()], START)
    traffic(gateways)
    gateways.add_target(DB_SQL, DB1_SQL, target(41005))
    gateways.add_target("a/routes/b", "r", target(1))                 # a gateway name holding '/routes/'
    aggregator.ingest([gateways.snapshot()], START + 1)
    async with TestClient(TestServer(create_app(store, engine, metrics=aggregator))) as client:
        yield client
    store.close()


async def get(client: TestClient, path: str, status: int = 200) -> dict:
    response = await client.get(path)
    assert response.status == status, await response.text()
    return await response.json()


async def value(client: TestClient, path: str) -> object:
    return (await get(client, path))["value"]


async def test_a_gateway_and_its_route_by_name_with_slashes_or_encoded(api):
    assert await value(api, "/api/v1/metrics/gateways/shop/web/http/requests") == 10
    assert await value(api, "/api/v1/metrics/gateways/shop%2Fweb%2Fhttp/requests") == 10
    assert await value(api, "/api/v1/metrics/gateways/shop/web/http/routes/shop/web/web:1/http/requests") == 8
    answer = await get(api, "/api/v1/metrics/gateways/shop/80/routes/shop/web/http/rate")
    assert answer == {"metric": "rate", "value": 10.0, "window": 1.0,
                      "scope": {"gateway": "shop/80", "route": "shop/web/http", "target": None}}
    assert await value(api, "/api/v1/metrics/gateways/a/routes/b/requests") == 0
    assert (await get(api, "/api/v1/metrics/gateways/a/routes/b/routes/r/requests"))["scope"]["route"] == "r"


async def test_a_gateway_configured_but_not_sampled_yet_is_known_with_no_requests(api, tmp_path):
    assert (await api.put("/api/v1/gateways/new/one", json={"port": 9999, "routes": {"r": {}}})).status == 202
    answer = await get(api, "/api/v1/metrics/gateways/new/one/routes/r/all")
    assert (answer["value"]["requests"], answer["value"]["health"]) == (0, None)
    await get(api, "/api/v1/metrics/gateways/new/one/routes/nothing/rate", 404)


async def test_every_metric_by_name(api):
    base = "/api/v1/metrics/gateways/shop/web/http/routes/shop/web/web:1/http"
    summary = (await get(api, f"{base}/all"))["value"]
    assert summary["requests"] == 8 and summary["classes"] == {"1xx": 0, "2xx": 6, "3xx": 0, "4xx": 0, "5xx": 2}
    assert (summary["errors"], summary["error_rate"], summary["health"]) == (2, 0.25, 0.75)
    assert summary["response_time"] == pytest.approx((6 * 3 + 2 * 200) / 8)
    for metric in ("rate", "requests", "response_time", "p50", "p95", "p99", "errors", "error_rate", "health",
                   "in_flight", "upstream_errors"):
        assert await value(api, f"{base}/{metric}") == summary[metric], metric
    assert await value(api, f"{base}/responseTime") == summary["response_time"]
    assert await value(api, f"{base}/rate") == 8.0
    missing = await get(api, f"{base}/speed", 404)
    assert "speed" in missing["error"] and "responseTime" in missing["error"]


async def test_cluster_ports_services_and_instances_are_their_internal_gateways_routes_and_targets(api):
    port = "/api/v1/metrics/deployments/shop/clusters/web/ports"
    assert await value(api, f"{port}/http/requests") == 10
    assert await value(api, f"{port}/admin/requests") == 3
    assert await value(api, f"{port}/http/services/web:1/requests") == 8
    assert await value(api, f"{port}/http/services/web:2/requests") == 2
    instance = await get(api, f"{port}/http/services/web:1/instances/1/errors")
    assert instance["value"] == 2 and instance["scope"]["target"] == target(41002)
    assert await value(api, f"{port}/http/services/web:1/instances/shop%2Fweb%2Fweb:1%230/requests") == 6
    assert await value(api, f"{port}/admin/services/web:1/instances/0/requests") == 3


async def test_health_is_the_share_of_non_5xx_responses_and_null_without_requests(api):
    health = "/api/v1/health"
    assert await get(api, f"{health}/deployments/shop") == {"value": 11 / 13, "window": 1.0, "requests": 13,
                                                            "errors": 2}                # the cluster ports
    assert await value(api, f"{health}/deployments/shop/clusters/web") == 11 / 13
    assert await value(api, f"{health}/deployments/shop/clusters/web/services/web:1") == 9 / 11    # http + admin
    assert await value(api, f"{health}/deployments/shop/clusters/web/services/web:1/instances/1") == 0.0
    assert await value(api, f"{health}/deployments/shop/clusters/web/services/web:2/instances/0") == 1.0
    quiet = await get(api, f"{health}/deployments/shop/clusters/db")
    assert (quiet["value"], quiet["requests"]) == (None, 0)
    assert await value(api, f"{health}/gateways/shop/web/http/routes/shop/web/web:1/http") == 0.75
    assert await value(api, f"{health}/gateways/shop%2F80") == 1.0


@pytest.mark.parametrize("path, mentions", [
    ("/api/v1/metrics/gateways/nothing/rate", "no gateway 'nothing'"),
    ("/api/v1/metrics/gateways/shop/web/http/routes/nothing/rate", "no route 'nothing' in gateway 'shop/web/http'"),
    ("/api/v1/metrics/deployments/nothing/clusters/web/ports/http/rate", "no deployment 'nothing'"),
    ("/api/v1/metrics/deployments/shop/clusters/nothing/ports/http/rate", "no cluster 'nothing'"),
    ("/api/v1/metrics/deployments/shop/clusters/web/ports/sql/rate", "no port 'sql'"),
    ("/api/v1/metrics/deployments/shop/clusters/web/ports/admin/services/web:2/rate",
     "no service 'web:2' in cluster 'web' with port 'admin'"),
    ("/api/v1/metrics/deployments/shop/clusters/web/ports/http/services/web:1/instances/9/rate", "no instance '9'"),
    ("/api/v1/health/gateways/nothing", "no gateway 'nothing'"),
    ("/api/v1/health/deployments/shop/clusters/web/services/nothing", "no service 'nothing'"),
])
async def test_unknown_names_are_404_naming_what_is_missing(api, path, mentions):
    assert mentions in (await get(api, path, 404))["error"]


@pytest.mark.parametrize("window, covered", [("1s", 1.0), ("60s", 1.0), ("5m", 1.0), ("10m", 1.0), ("90", 1.0)])
async def test_the_window_is_a_duration_up_to_what_the_metrics_keep(api, window, covered):
    answer = await get(api, f"/api/v1/metrics/gateways/shop/80/requests?window={window}")
    assert (answer["value"], answer["window"]) == (10, covered)


@pytest.mark.parametrize("window", ["soon", "0s", "500ms", "11m", "-1s", ""])
async def test_a_bad_window_is_400_naming_it(api, window):
    answer = await get(api, f"/api/v1/health/gateways/shop/80?window={window}", 400)
    assert answer["field"] == "window"


async def test_with_the_aggregation_off_the_paths_answer_503(tmp_path):
    store = Store(tmp_path / "vamp.db")
    async with TestClient(TestServer(create_app(store, FakeEngine(store)))) as client:
        answer = await get(client, "/api/v1/metrics/gateways/shop/80/rate", 503)
        assert "--metrics-window 0" in answer["error"]
        await get(client, "/api/v1/health/deployments/shop", 503)
    store.close()
