"""`vamp run`'s API as a real process, where it shares the rules of the gateway's admin API: with a token,
every request but /health and /ready needs it, reads and /metrics included (`--public-metrics` opens /metrics
alone, the token may come from `--token-file`); names follow the rule of names; and an invalid gateway write
is answered with the same error and the same `field` as the admin API answers it."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from gateway.common.names import RULE as NAME_RULE
from tests.support import config, free_port, gateway, route, run_cli
from tests.support.admin import AdminApi
from tests.support.platform import VAMP, PlatformProcess

TOKEN = "s3cret"
READS = ["/api/v1/deployments", "/api/v1/gateways", "/api/v1/gateways/edge", "/api/v1/breeds", "/api/v1/events",
         "/api/v1/info", "/api/v1/health", "/api/v1/openapi.json", "/metrics", "/api/v1/nothing"]
PROBES = ["/health", "/ready"]


def platform(procs, tmp_path: Path, *extra_args: str, token: str | None = None) -> PlatformProcess:
    process = PlatformProcess(tmp_path / "state", tmp_path, extra_args=extra_args, token=token)
    procs.started.append(process)          # stopped with the test's other processes; its stderr in a failure
    return process.start()


def status_of(platform: PlatformProcess, path: str, authorization: str | None = None) -> int:
    headers = {"Authorization": authorization} if authorization else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(platform.api_url + path, headers=headers),
                                    timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def edge(port: int) -> dict:
    return gateway(port, {"demo-1.0": route(f"127.0.0.1:{free_port()}", weight="100%"),
                          "demo-1.1": route(f"127.0.0.1:{free_port()}", weight="0%")})


def test_with_a_token_from_a_file_every_request_but_the_probes_needs_it(procs, tmp_path):
    secret = tmp_path / "token"
    secret.write_text(TOKEN + "\n")
    run = platform(procs, tmp_path, "--token-file", str(secret), token=TOKEN)
    assert run.api("PUT", "/api/v1/gateways/edge", edge(free_port()))[0] == 202
    for path in READS:
        for authorization in (None, "Bearer wrong", f"Basic {TOKEN}"):
            assert status_of(run, path, authorization) == 401, (path, authorization)
        assert status_of(run, path, f"Bearer {TOKEN}") == (404 if "nothing" in path else 200), path
    for path in PROBES:
        assert status_of(run, path) == 200
    # the CLI sends the token on reads as on writes
    listed = run_cli(["get", "gateways", "--api", run.api_url, "-o", "json"], executable=VAMP,
                     env={"VAMP_ADMIN_TOKEN": TOKEN})
    assert listed.returncode == 0, listed.stderr
    assert [g["name"] for g in json.loads(listed.stdout)] == ["edge"]
    refused = run_cli(["get", "gateways", "--api", run.api_url], executable=VAMP, env={"VAMP_ADMIN_TOKEN": ""})
    assert refused.returncode == 2
    assert TOKEN not in run.stderr_text()


def test_public_metrics_opens_metrics_alone(procs, tmp_path):
    run = platform(procs, tmp_path, "--token", TOKEN, "--public-metrics", token=TOKEN)
    assert status_of(run, "/metrics") == 200
    for path in READS:
        if path != "/metrics":
            assert status_of(run, path) == 401, path


@pytest.mark.parametrize("content, mentions", [(None, "cannot read the token file"), ("\n", "is empty")])
def test_an_unusable_token_file_exits_2_with_one_line_and_starts_nothing(tmp_path, content, mentions):
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    result = run_cli(["run", "--state-dir", str(tmp_path / "state"), "--api", f"127.0.0.1:{free_port()}",
                      "--token-file", str(path)], executable=VAMP)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and mentions in result.stderr and str(path) in result.stderr
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize("name", ["..", "sava/..", "a/./b", "a" * 300])
def test_gateway_names_breaking_the_rule_are_400_naming_it(procs, tmp_path, name):
    run = platform(procs, tmp_path)
    api = AdminApi(run.api_url)
    for response in (api.create({"name": name, **edge(free_port())}), api.put(name, edge(free_port()))):
        assert response.status == 400, response.body
        assert response.json()["field"] == "/name"
        assert NAME_RULE in response.json()["error"]
    assert api.list().json() == []


INVALID_GATEWAY_WRITES = {
    "condition": ("PATCH", {"routes": {"demo-1.1": {"condition": "browser = = Chrome"}}}),
    "weights": ("PATCH", {"routes": {"demo-1.1": {"weight": "20%"}}}),
    "unknown field": ("PATCH", {"routes": {"demo-1.0": {"wieght": "1%"}}}),
    "port": ("PUT", {"port": "99999"}),
}


def test_gateway_errors_name_the_field_as_the_admin_api_does(procs, tmp_path):
    port = free_port()
    standalone = procs.gateway(config({"edge": edge(port)}))
    run = platform(procs, tmp_path)
    assert run.api("PUT", "/api/v1/gateways/edge", edge(free_port()))[0] == 202
    apis = {"vamp gateway": AdminApi(standalone.admin_url("")), "vamp run": AdminApi(run.api_url)}
    for case, (method, body) in INVALID_GATEWAY_WRITES.items():
        answers = {}
        for server, api in apis.items():
            response = api.request(method, "/api/v1/gateways/edge", body)
            assert response.status == 400, (server, case, response.body)
            answers[server] = response.json()
        assert answers["vamp run"] == answers["vamp gateway"], case
        assert answers["vamp run"]["field"] is not None, case
    condition = apis["vamp run"].patch("edge", INVALID_GATEWAY_WRITES["condition"][1]).json()
    assert condition["field"] == "/routes/demo-1.1/condition"
