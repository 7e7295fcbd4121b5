"""`vamp gateways ...` and `vamp apply -f FILE`: the requests the CLI sends, what it prints and its exit codes;
and how every API command is pointed at a server (`--api`, `VAMP_API`, `VAMP_TOKEN`).

Most tests run the CLI in-process against `FakeAdminApi`, a small stand-in for the admin API contract (issue 3)
on 127.0.0.1 that records every request; the end-to-end tests at the bottom drive a real `vamp gateway` and a
real `vamp run`.
"""
from __future__ import annotations

import io
import json
import subprocess
import threading
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import yaml

from control.cli import KINDS, build_parser, main
from gateway.common.cli import API_URL_VARIABLES, TOKEN_VARIABLES, api_token, api_url
from gateway.common.units import parse_percent
from gateway.config.edit import merge_patch
from tests.support import LOOPBACK, HttpClient, config, free_port, gateway, route, run_cli
from tests.support.platform import VAMP, PlatformProcess
from tests.support.processes import REPO_ROOT

TOKEN = "s3cret-admin-token"


# -- the fake admin API ------------------------------------------------------------------------------
@dataclass
class Recorded:
    method: str
    path: str           # decoded
    query: dict
    headers: dict       # names lower case
    body: Any

    @property
    def is_write(self) -> bool:
        return self.method != "GET"

    @property
    def validate_only(self) -> bool:
        return self.query.get("validate_only") == "true"




class FakeAdminApi:
    """The admin API of the contract, in memory: `gateways` maps names to documents without `status` (a
    document seeded with a `status` keeps it, else one is derived); `scripted` answers (status, body) to the
    next requests instead of the API."""

    def __init__(self, token: str | None = None) -> None:
        self.token = token
        self.gateways: dict[str, dict] = {}
        self.requests: list[Recorded] = []
        self.scripted: list[tuple[int, Any]] = []
        self.lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                api.handle(self)

            do_PUT = do_PATCH = do_DELETE = do_POST = do_GET

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.url = f"http://{LOOPBACK}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)

    @property
    def writes(self) -> list[Recorded]:
        return [request for request in self.requests if request.is_write]

    def document(self, name: str) -> dict:
        doc = self.gateways[name]
        return doc if "status" in doc else {**doc, "status": derived_status(doc)}

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        url = urllib.parse.urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        request = Recorded(handler.command, urllib.parse.unquote(url.path), dict(urllib.parse.parse_qsl(url.query)),
                           {k.lower(): v for k, v in handler.headers.items()}, json.loads(raw) if raw else None)
        with self.lock:
            self.requests.append(request)
            status, body = self.scripted.pop(0) if self.scripted else self.answer(request)
        data = json.dumps(body).encode() if body is not None else b""
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def answer(self, request: Recorded) -> tuple[int, Any]:
        if request.is_write and self.token and request.headers.get("authorization") != f"Bearer {self.token}":
            return 401, error("missing or wrong bearer token")
        prefix = "/api/v1/gateways"
        if request.path == prefix and request.method == "GET":
            return 200, [self.document(name) for name in sorted(self.gateways)]
        if not request.path.startswith(prefix + "/"):
            return 404, error("not found")
        name = request.path[len(prefix) + 1:]
        exists = name in self.gateways
        if request.method == "GET":
            return (200, self.document(name)) if exists else (404, error(f"no gateway {name!r}"))
        if request.method == "DELETE":
            if not exists:
                return 404, error(f"no gateway {name!r}")
            doc = self.document(name)
            del self.gateways[name]
            return 202, {**doc, "status": {**doc["status"], "state": "draining"}}
        if request.method == "PATCH":
            if not exists:
                return 404, error(f"no gateway {name!r}")
            body = merge_patch(self.gateways[name], request.body)
        elif request.method == "PUT":
            body = request.body
        else:
            return 405, error("method not allowed")
        try:
            doc = validated(name, body)
        except ValueError as exc:
            return 400, error(*exc.args)
        if request.validate_only:
            return 200, {**doc, "status": derived_status(doc)}
        self.gateways[name] = doc
        return (200 if exists else 201), self.document(name)


def error(message: str, field: str | None = None) -> dict:
    return {"error": message, "field": field}


def validated(name: str, body: Any) -> dict:
    """The fake's share of validation and normalisation: a name matching the path, a port written as
    'N/http', weights given summing to 100%."""
    if not isinstance(body, dict):
        raise ValueError("expected a gateway document")
    if body.get("name", name) != name:
        raise ValueError(f"the name {body['name']!r} differs from the path's {name!r}", "/name")
    routes = {key: dict(value) for key, value in (body.get("routes") or {}).items()}
    given = [(route_name, parse_percent(r["weight"])) for route_name, r in routes.items() if "weight" in r]
    if given and sum(weight for _, weight in given) not in (0, 10_000):
        raise ValueError(f"weights add up to {sum(w for _, w in given) / 100:g}%, not 100%",
                         f"/routes/{given[-1][0]}/weight")
    port = str(body.get("port"))
    doc = {key: value for key, value in body.items() if key != "status"}
    return {**doc, "name": name, "port": port if "/" in port else f"{port}/http",
            "sticky": body.get("sticky") or "none", "routes": routes}


def derived_status(doc: dict) -> dict:
    routes = {}
    for name, spec in doc.get("routes", {}).items():
        targets = {}
        for target in spec.get("targets", []):
            address, drain = (target["address"], target["drain"]) if isinstance(target, dict) else (target, False)
            targets[address] = {"state": "draining" if drain or spec.get("drain") else "active",
                                "in_flight": 0, "drain_ends_at": None}
        routes[name] = {"state": "draining" if spec.get("drain") else "active", "drain_ends_at": None,
                        "targets": targets}
    return {"state": "active", "routes": routes}


def sava(**fields) -> dict:
    """The contract's example gateway, normalised as the API answers it (without status)."""
    return {"name": "sava", "port": "9050/http", "bind": "127.0.0.1", "sticky": "route", "sticky_ttl": "30m",
            "virtual_hosts": [], "routes": {
                "sava-1.0": {"weight": "90%", "targets": ["127.0.0.1:8081"]},
                "sava-1.1": {"weight": "10%", "targets": ["127.0.0.1:8082"], "condition": 'browser = "Chrome"',
                             "condition_strength": "100%"}}, **fields}


# -- running the CLI in-process ----------------------------------------------------------------------
@dataclass
class Run:
    code: int
    out: str
    err: str

    def error_line(self) -> str:
        """The single line on stderr (asserted to be one line)."""
        lines = self.err.strip().splitlines()
        assert len(lines) == 1, f"expected one line on stderr, got {self.err!r}"
        return lines[0]


@pytest.fixture(autouse=True)
def no_server_env(monkeypatch):
    for name in API_URL_VARIABLES + TOKEN_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def api():
    fake = FakeAdminApi()
    fake.thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


@pytest.fixture
def vamp(api, capsys):
    """vamp(*args) runs `vamp ARGS --api <the fake>` in-process."""
    def run(*args: str, admin: str | None = api.url) -> Run:
        capsys.readouterr()
        code = main([*args] + (["--api", admin] if admin else []))
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)
    return run


def row_of(table: str, target: str) -> list[str]:
    """The cells of the table row of that target (blank cells dropped)."""
    return next(line.split() for line in table.splitlines() if f" {target} " in line)


def fetch(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


# -- list and get ------------------------------------------------------------------------------------
def test_list_shows_a_row_per_gateway_with_its_route_weights(api, vamp):
    api.gateways["sava"] = sava()
    api.gateways["web/8080"] = {"name": "web/8080", "port": "8080/http", "sticky": "none", "routes": {
        "a": {"targets": []}, "b": {"targets": []}, "c": {"targets": []}}}
    run = vamp("gateways", "list")
    assert (run.code, run.err) == (0, "")
    assert run.out == (
        "NAME      PORT       STICKY  ROUTES  WEIGHTS\n"
        "sava      9050/http  route   2       sava-1.0=90% sava-1.1=10%\n"
        "web/8080  8080/http  none    3       a=33.34% b=33.33% c=33.33%\n")


def test_list_shows_the_store_revision_each_gateway_of_a_fleet_serves(api, vamp):
    api.gateways["sava"] = sava(status={"state": "active", "revision": 1042})
    api.gateways["web"] = sava(name="web", status={"state": "draining", "revision": None})
    run = vamp("gateways", "list")
    assert (run.code, run.err) == (0, "")
    assert run.out.splitlines()[0].split() == ["NAME", "PORT", "STICKY", "ROUTES", "WEIGHTS", "REVISION"]
    revisions = {line.split()[0]: line.split()[-1] for line in run.out.splitlines()[1:]}
    assert revisions == {"sava": "1042", "web": "-"}


def test_list_without_gateways_says_so(vamp):
    assert vamp("gateways", "list").out == "no gateways\n"


@pytest.mark.parametrize("kind", KINDS)
def test_an_empty_list_of_any_kind_says_so_in_words(api, vamp, kind):
    api.scripted.append((200, []))
    run = vamp("get", kind)
    assert (run.code, run.err) == (0, "")
    assert run.out.lower().startswith(f"no {kind} ") and len(run.out.splitlines()) == 1     # words, no header
    if kind in ("breeds", "blueprints"):        # deployments made from a file store none: where to look
        assert "`vamp get deployments`" in run.out
    api.scripted.append((200, []))
    assert json.loads(vamp("get", kind, "-o", "json").out) == []        # scripts still get the API's answer


def test_get_of_what_a_gateway_s_admin_api_does_not_serve_names_the_api_that_does(api, vamp):
    run = vamp("get", "deployments")        # the fake, like a `vamp gateway`, serves gateways only
    assert run.code == 2
    assert run.error_line() == (f"vamp: the API at {api.url} has no deployments: `vamp get deployments` needs "
                                "`vamp run`'s API (only `vamp get gateways` works against a `vamp gateway`)")


@pytest.mark.parametrize("command", [("get", "gateways", "-o", "json"), ("gateways", "list"),
                                     ("gateways", "list", "-o", "yaml")], ids=" ".join)
def test_output_into_a_pipe_closed_early_ends_quietly_with_status_141(api, command):
    """`vamp get gateways -o json | head -1`: the reader closes the pipe after one line, with far more than a
    pipe's buffer (64 KiB) still to be written."""
    for number in range(3000):
        api.gateways[f"gateway-{number}"] = sava(name=f"gateway-{number}")
    process = subprocess.Popen([*VAMP, *command, "--api", api.url], cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        first_line = process.stdout.readline()
        process.stdout.close()
        stderr = process.stderr.read().decode()
        status = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert first_line.strip(), "the command printed nothing"
    assert (status, stderr) == (141, "")


@pytest.mark.parametrize("output, parse", [("json", json.loads), ("yaml", yaml.safe_load)])
def test_json_and_yaml_print_what_the_api_answered(api, vamp, output, parse):
    api.gateways["sava"] = sava()
    listed = vamp("gateways", "list", "-o", output)
    assert listed.code == 0 and parse(listed.out) == fetch(api.url + "/api/v1/gateways")
    got = vamp("gateways", "get", "sava", "-o", output)
    assert got.code == 0 and parse(got.out) == fetch(api.url + "/api/v1/gateways/sava")


def test_get_shows_each_route_and_target_with_its_state_including_what_still_drains(api, vamp):
    ends = "2026-01-01T12:05:00Z"
    api.gateways["sava/9050"] = sava(name="sava/9050", virtual_hosts=["sava.local"], routes={
        "sava-1.0": {"weight": "90%", "targets": ["127.0.0.1:8081"]},
        "sava-1.1": {"weight": "10%", "condition": 'browser = "Chrome"', "condition_strength": "50%",
                     "targets": ["127.0.0.1:8082", {"address": "127.0.0.1:8083", "weight": 50, "drain": True}]}},
        status={"state": "active", "routes": {
            "sava-1.0": {"state": "active", "drain_ends_at": None, "targets": {
                "127.0.0.1:8081": {"state": "down", "in_flight": 0, "drain_ends_at": None}}},
            "sava-1.1": {"state": "active", "drain_ends_at": None, "targets": {
                "127.0.0.1:8082": {"state": "active", "in_flight": 3, "drain_ends_at": None},
                "127.0.0.1:8083": {"state": "draining", "in_flight": 1, "drain_ends_at": ends},
                "127.0.0.1:8084": {"state": "draining", "in_flight": 2, "drain_ends_at": ends}}},
            "sava-0.9": {"state": "draining", "drain_ends_at": ends, "targets": {
                "127.0.0.1:8080": {"state": "draining", "in_flight": 5, "drain_ends_at": ends}}}}})
    run = vamp("gateways", "get", "sava/9050")
    assert run.code == 0, run.err
    assert run.out == (
        "gateway sava/9050: port 9050/http on 127.0.0.1, sticky route (ttl 30m), state active\n"
        "virtual hosts: sava.local\n"
        "\n"
        "ROUTE     WEIGHT  CONDITION                 TARGET                      STATE     IN-FLIGHT  DRAIN-ENDS\n"
        "sava-1.0  90%     -                         127.0.0.1:8081              down      0          -\n"
        "sava-1.1  10%     browser = \"Chrome\" (50%)  127.0.0.1:8082              active    3          -\n"
        f"sava-1.1                                    127.0.0.1:8083 (weight 50)  draining  1          {ends}\n"
        f"sava-1.1                                    127.0.0.1:8084              draining  2          {ends}\n"
        f"sava-0.9  -       -                         127.0.0.1:8080              draining  5          {ends}\n")
    assert [r.path for r in api.requests] == ["/api/v1/gateways/sava/9050"]


def test_get_of_an_unknown_gateway_prints_the_api_error_and_exits_2(vamp):
    run = vamp("gateways", "get", "nope")
    assert run.code == 2 and run.out == ""
    assert run.error_line() == "vamp: no gateway 'nope'"


# -- set-weight --------------------------------------------------------------------------------------
def test_set_weight_sends_every_weight_in_one_merge_patch(api, vamp):
    api.gateways["sava"] = sava()
    run = vamp("gateways", "set-weight", "sava", "sava-1.0=97.5", "sava-1.1=2.5%")
    assert (run.code, run.err) == (0, "")
    assert run.out == "gateway sava: sava-1.0=97.5% sava-1.1=2.5%\n"
    [patch] = api.writes
    assert (patch.method, patch.path) == ("PATCH", "/api/v1/gateways/sava")
    assert patch.body == {"routes": {"sava-1.0": {"weight": "97.5%"}, "sava-1.1": {"weight": "2.5%"}}}
    assert patch.headers["content-type"] == "application/json"
    assert api.gateways["sava"]["routes"]["sava-1.1"]["targets"] == ["127.0.0.1:8082"]


@pytest.mark.parametrize("assignments, message", [
    (["sava-1.2=10%"], "no route 'sava-1.2'"),
    (["sava-1.0"], "expected ROUTE=PERCENT"),
    (["sava-1.0=ten"], "expected a percentage"),
    (["sava-1.0=150%"], "from 0% to 100%"),
    (["sava-1.0=33.333%"], "two decimals"),
    (["sava-1.0=50%", "sava-1.0=50%"], "given twice"),
])
def test_set_weight_refuses_bad_input_before_writing(api, vamp, assignments, message):
    api.gateways["sava"] = sava()
    run = vamp("gateways", "set-weight", "sava", *assignments)
    assert run.code == 2
    assert message in run.error_line()
    assert api.writes == []


def test_set_weight_rejected_by_the_api_prints_its_error_and_field(api, vamp):
    api.gateways["sava"] = sava()
    run = vamp("gateways", "set-weight", "sava", "sava-1.0=50")
    assert run.code == 2 and run.out == ""
    assert run.error_line() == "vamp: weights add up to 60%, not 100% (field: /routes/sava-1.1/weight)"
    assert api.gateways["sava"] == sava()


# -- drain and undrain -------------------------------------------------------------------------------
def test_drain_of_a_route_whose_name_holds_slashes(api, vamp):
    api.gateways["sava/9050"] = sava(name="sava/9050", routes={
        "sava/sava:1.0/web": {"weight": "50%", "targets": ["127.0.0.1:8081"]},
        "sava/sava:1.1/web": {"weight": "50%", "targets": ["127.0.0.1:8082"]}})
    run = vamp("gateways", "drain", "sava/9050", "sava/sava:1.1/web")
    assert (run.code, run.out) == (0, "gateway sava/9050: route sava/sava:1.1/web draining\n")
    [patch] = api.writes
    assert (patch.method, patch.path) == ("PATCH", "/api/v1/gateways/sava/9050")
    assert patch.body == {"routes": {"sava/sava:1.1/web": {"drain": True}}}
    assert vamp("gateways", "undrain", "sava/9050", "sava/sava:1.1/web").code == 0
    assert api.writes[-1].body == {"routes": {"sava/sava:1.1/web": {"drain": False}}}


def test_drain_and_undrain_of_one_target_rewrite_that_route_s_targets(api, vamp):
    other = {"address": "127.0.0.1:8084", "weight": 50, "drain": False}
    api.gateways["shop"] = sava(name="shop", routes={
        "a/b": {"weight": "100%", "targets": ["127.0.0.1:8082", "[::1]:8083", other]}})
    run = vamp("gateways", "drain", "shop", "a/b/[0:0::1]:8083")
    assert (run.code, run.out) == (0, "gateway shop: target [::1]:8083 of route a/b draining\n")
    assert api.writes[-1].body == {"routes": {"a/b": {"targets": [
        "127.0.0.1:8082", {"address": "[::1]:8083", "weight": 100, "drain": True}, other]}}}
    table = vamp("gateways", "get", "shop").out
    assert row_of(table, "[::1]:8083") == ["a/b", "[::1]:8083", "draining", "0", "-"]

    run = vamp("gateways", "undrain", "shop", "a/b/[::1]:8083")
    assert (run.code, run.out) == (0, "gateway shop: target [::1]:8083 of route a/b active\n")
    assert api.writes[-1].body == {"routes": {"a/b": {"targets": ["127.0.0.1:8082", "[::1]:8083", other]}}}


def test_drain_of_an_https_target_names_it_with_its_scheme(api, vamp):
    api.gateways["shop"] = sava(name="shop", routes={
        "a/https:": {"weight": "50%", "targets": ["127.0.0.1:8082"]},
        "b": {"weight": "50%", "targets": ["https://api.example:8443", "127.0.0.1:8443"]}})
    run = vamp("gateways", "drain", "shop", "b/HTTPS://API.example:8443")
    assert (run.code, run.out) == (0, "gateway shop: target https://api.example:8443 of route b draining\n")
    assert api.writes[-1].body == {"routes": {"b": {"targets": [
        {"address": "https://api.example:8443", "weight": 100, "drain": True}, "127.0.0.1:8443"]}}}
    run = vamp("gateways", "undrain", "shop", "b/127.0.0.1:8443")      # the plain target of the same port
    assert run.out == "gateway shop: target 127.0.0.1:8443 of route b active\n"
    assert api.writes[-1].body == {"routes": {"b": {"targets": [
        {"address": "https://api.example:8443", "weight": 100, "drain": True}, "127.0.0.1:8443"]}}}
    run = vamp("gateways", "drain", "shop", "b/https://127.0.0.1:8443")
    assert run.code == 2 and "has no target 'https://127.0.0.1:8443'" in run.error_line()
    run = vamp("gateways", "drain", "shop", "a/https:/127.0.0.1:8082")    # a route name ending in a scheme
    assert run.out == "gateway shop: target 127.0.0.1:8082 of route a/https: draining\n"


@pytest.mark.parametrize("spec, message", [
    ("sava-1.2", "gateway 'sava': no route 'sava-1.2' (routes: sava-1.0, sava-1.1)"),
    ("sava-1.1/127.0.0.1:9999", "route 'sava-1.1' of gateway 'sava' has no target '127.0.0.1:9999' "
                                "(targets: 127.0.0.1:8082)"),
])
def test_drain_of_something_unknown_writes_nothing(api, vamp, spec, message):
    api.gateways["sava"] = sava()
    run = vamp("gateways", "drain", "sava", spec)
    assert run.code == 2
    assert run.error_line() == f"vamp: {message}"
    assert api.writes == []


# -- delete ------------------------------------------------------------------------------------------
def test_delete_sends_delete_and_the_gateway_goes(api, vamp):
    api.gateways["sava"] = sava()
    run = vamp("gateways", "delete", "sava")
    assert (run.code, run.out) == (0, "gateway sava deleted: it drains, then disappears\n")
    assert [(r.method, r.path) for r in api.writes] == [("DELETE", "/api/v1/gateways/sava")]
    assert vamp("gateways", "delete", "sava").code == 2


# -- apply -------------------------------------------------------------------------------------------
GATEWAYS_FILE = """\
gateways:
  same:                       # equal to what the API has once normalised (port 9050 -> 9050/http)
    port: 9050
    routes:
      v1: {weight: 100%, targets: [127.0.0.1:8081]}
  changed:
    port: 9051
    routes:
      v1: {weight: 90%, targets: [127.0.0.1:8081]}
      v2: {weight: 10%, targets: [127.0.0.1:8082]}
  new:
    port: 9052
    routes:
      v1: {targets: [127.0.0.1:8081]}
"""


def test_apply_validates_every_gateway_then_writes_only_what_differs(api, vamp, tmp_path):
    api.gateways["same"] = validated("same", {"port": 9050, "routes": {
        "v1": {"weight": "100%", "targets": ["127.0.0.1:8081"]}}})
    api.gateways["changed"] = validated("changed", {"port": 9051, "routes": {
        "v1": {"weight": "100%", "targets": ["127.0.0.1:8081"]}}})
    path = tmp_path / "gateways.yaml"
    path.write_text(GATEWAYS_FILE)
    run = vamp("apply", "-f", str(path))
    assert (run.code, run.err) == (0, "")
    assert run.out == "gateway same unchanged\ngateway changed configured\ngateway new created\n"
    assert [(w.method, w.path, w.validate_only) for w in api.writes] == [
        ("PUT", "/api/v1/gateways/same", True), ("PUT", "/api/v1/gateways/changed", True),
        ("PUT", "/api/v1/gateways/new", True),
        ("PUT", "/api/v1/gateways/changed", False), ("PUT", "/api/v1/gateways/new", False)]
    assert api.writes[-1].body == {"port": 9052, "routes": {"v1": {"targets": ["127.0.0.1:8081"]}}}
    assert api.gateways["changed"]["routes"]["v2"]["weight"] == "10%"
    assert vamp("apply", "-f", str(path)).out == (
        "gateway same unchanged\ngateway changed unchanged\ngateway new unchanged\n")


def test_apply_with_one_invalid_gateway_changes_nothing(api, vamp, tmp_path):
    path = tmp_path / "gateways.yaml"
    path.write_text("gateways:\n  good:\n    port: 9050\n    routes: {v1: {weight: 100%}}\n"
                    "  bad:\n    port: 9051\n    routes: {v1: {weight: 90%}}\n")
    run = vamp("apply", "-f", str(path))
    assert run.code == 2 and run.out == ""
    assert run.error_line() == "vamp: gateway 'bad': weights add up to 90%, not 100% (field: /routes/v1/weight)"
    assert all(write.validate_only for write in api.writes) and api.gateways == {}


def test_apply_reads_stdin_and_the_list_form(api, vamp, monkeypatch):
    document = {"gateways": [{"name": "sava/9050", "port": "9050/http", "routes": {"v1": {"targets": []}}}]}
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(document)))
    run = vamp("apply", "-f", "-", "-o", "json")
    assert run.code == 0, run.err
    [applied] = json.loads(run.out)
    assert applied == fetch(api.url + "/api/v1/gateways/sava/9050")
    assert api.writes[-1].path == "/api/v1/gateways/sava/9050"
    assert api.writes[-1].body["name"] == "sava/9050"


def test_apply_says_that_geo_is_not_applied_through_the_api(api, vamp, tmp_path):
    path = tmp_path / "gateways.yaml"
    path.write_text("gateways:\n  sava: {port: 9050}\ngeo: {trusted_proxies: [10.0.0.0/8]}\n")
    run = vamp("apply", "-f", str(path))
    assert (run.code, run.out) == (0, "gateway sava created\n")
    assert "'geo' is a setting of the gateway process" in run.error_line()


@pytest.mark.parametrize("text, message", [
    ("gateways:\n  sava:\n    port: [9050\n", "line 4: YAML syntax error"),
    ("gateways:\n  sava: {port: 1}\n  sava: {port: 2}\n", "duplicate key 'sava'"),
    ("gatways: {}\n", "expected a document with 'gateways'"),
])
def test_apply_of_a_file_that_does_not_parse_sends_nothing(api, vamp, tmp_path, text, message):
    path = tmp_path / "gateways.yaml"
    path.write_text(text)
    run = vamp("apply", "-f", str(path))
    assert run.code == 2 and message in run.error_line()
    assert api.requests == []


def test_apply_of_a_missing_file(vamp, tmp_path):
    run = vamp("apply", "-f", str(tmp_path / "missing.yaml"))
    assert run.code == 2 and "No such file" in run.error_line()


# -- which server, which token, failures -------------------------------------------------------------
API_COMMANDS = [          # every command that talks to an API, each with a request the fake answers
    ("gateways", "list"), ("gateways", "get", "sava"), ("gateways", "set-weight", "sava", "sava-1.0=80",
                                                       "sava-1.1=20"),
    ("gateways", "drain", "sava", "sava-1.1"), ("gateways", "undrain", "sava", "sava-1.1"),
    ("gateways", "delete", "sava"), ("get", "gateways"), ("get", "gateways", "sava"), ("delete", "gateways", "sava"),
]


def test_every_command_defaults_to_the_address_vamp_run_serves_on():
    parser = build_parser()
    served = "http://" + parser.parse_args(["run"]).api
    assert served == "http://127.0.0.1:8080"
    commands = [*API_COMMANDS, ("deploy", "sava.yaml"), ("scale", "sava/sava/sava:1.0.0", "3"),
                ("apply", "-f", "sava.yaml"), ("loadtest", "http://127.0.0.1:9050/", "--from-gateway", "sava")]
    for command in commands:
        args = parser.parse_args(list(command))
        assert (api_url(args), api_token(args)) == (served, None), command


@pytest.mark.parametrize("command", API_COMMANDS, ids=" ".join)
def test_every_api_command_takes_the_server_and_token_from_vamp_api_and_vamp_token(api, vamp, monkeypatch,
                                                                                    command):
    api.token = TOKEN
    api.gateways["sava"] = sava()
    monkeypatch.setenv("VAMP_API", api.url)
    monkeypatch.setenv("VAMP_TOKEN", TOKEN)
    run = vamp(*command, admin=None)
    assert run.code == 0, run.err
    assert api.requests, "no request reached the server named by VAMP_API"
    assert all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in api.requests), \
        "the token goes with every request, reads included"
    assert TOKEN not in run.out + run.err


def test_the_option_wins_over_the_environment_and_the_current_names_over_the_old(api, vamp, monkeypatch):
    api.gateways["sava"] = sava()
    unreachable = f"http://{LOOPBACK}:{free_port()}"
    monkeypatch.setenv("VAMP_API", unreachable)
    assert vamp("gateways", "get", "sava").code == 0                     # --api <the fake>
    monkeypatch.setenv("VAMP_API", api.url)
    monkeypatch.setenv("VAMP_API_URL", unreachable)
    monkeypatch.setenv("VAMP_ADMIN_URL", unreachable)
    monkeypatch.setenv("VAMP_TOKEN", "current")
    monkeypatch.setenv("VAMP_ADMIN_TOKEN", "old")
    assert vamp("gateways", "get", "sava", admin=None).code == 0
    assert api.requests[-1].headers["authorization"] == "Bearer current"
    assert vamp("gateways", "get", "sava", "--token", "given", admin=None).code == 0
    assert api.requests[-1].headers["authorization"] == "Bearer given"


@pytest.mark.parametrize("variable", ["VAMP_API_URL", "VAMP_ADMIN_URL"])
def test_the_older_names_still_work(api, vamp, monkeypatch, variable):
    api.gateways["sava"] = sava()
    monkeypatch.setenv(variable, api.url)
    monkeypatch.setenv("VAMP_ADMIN_TOKEN", TOKEN)
    assert vamp("gateways", "get", "sava", admin=None).code == 0
    assert api.requests[-1].headers["authorization"] == f"Bearer {TOKEN}"
    old_option = vamp("gateways", "get", "sava", "--admin", api.url, admin=None)
    assert old_option.code == 0
    assert old_option.error_line() == "vamp: note: --admin is deprecated, use --api"


def test_the_server_url_may_be_host_port_or_carry_the_api_path(api, vamp):
    api.gateways["sava"] = sava()
    host_port = api.url.removeprefix("http://")
    assert vamp("gateways", "get", "sava", admin=host_port).code == 0
    assert vamp("gateways", "get", "sava", admin=api.url + "/api/v1/").code == 0
    assert [r.path for r in api.requests] == ["/api/v1/gateways/sava"] * 2


@pytest.mark.parametrize("admin", ["ftp://127.0.0.1:9090", "http://127.0.0.1:notaport", "http://"])
def test_a_bad_server_url_is_bad_input(vamp, admin):
    run = vamp("gateways", "list", admin=admin)
    assert run.code == 2 and "--api expects a URL" in run.error_line()


def test_an_unreachable_api_exits_1_with_one_clear_line(vamp):
    url = f"http://{LOOPBACK}:{free_port()}"
    run = vamp("gateways", "list", admin=url)
    assert run.code == 1
    line = run.error_line()
    assert line.startswith(f"vamp: cannot reach the API at {url}: ")
    assert "--api" in line and "VAMP_API" in line


def test_a_server_error_exits_1(api, vamp):
    api.scripted.append((500, error("state directory not writable")))
    run = vamp("gateways", "list")
    assert run.code == 1
    assert run.error_line() == f"vamp: the API at {api.url} failed: HTTP 500: state directory not writable"


def test_a_non_json_error_answer_is_shown_by_its_first_line(api, vamp):
    api.scripted.append((405, None))
    assert vamp("gateways", "delete", "sava").error_line() == "vamp: Method Not Allowed"


def test_requests_carry_the_token_from_the_environment_or_option_and_never_print_it(api, vamp, monkeypatch):
    api.token = TOKEN
    api.gateways["sava"] = sava()
    refused = vamp("gateways", "set-weight", "sava", "sava-1.0=80", "sava-1.1=20")
    assert refused.code == 2
    assert refused.error_line() == ("vamp: missing or wrong bearer token; this API needs a token: set "
                                    "VAMP_TOKEN or --token")
    wrong = vamp("gateways", "drain", "sava", "sava-1.1", "--token", "not-" + TOKEN)
    assert wrong.code == 2 and "the token was refused" in wrong.error_line()
    assert TOKEN not in wrong.err + wrong.out

    monkeypatch.setenv("VAMP_TOKEN", TOKEN)
    accepted = vamp("gateways", "set-weight", "sava", "sava-1.0=80", "sava-1.1=20")
    assert accepted.code == 0, accepted.err
    assert api.writes[-1].headers["authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in accepted.out + accepted.err
    assert vamp("gateways", "drain", "sava", "sava-1.1", "--token", TOKEN).code == 0


@pytest.mark.parametrize("args", [("gateways",), ("gateways", "set-weight", "sava"), ("apply",),
                                  ("gateways", "list", "-o", "xml")])
def test_missing_or_wrong_arguments_are_bad_input(api, vamp, args):
    with pytest.raises(SystemExit) as exited:
        vamp(*args)
    assert exited.value.code == 2
    assert api.requests == []


# -- end to end: a real `vamp gateway` and its admin API ---------------------------------------------
@dataclass
class Live:
    """A running gateway `demo` (routes v1 -> echo v1; v2 -> echo v2 and v2b) with a token on its admin API."""
    gateway: Any
    echo: Any
    port: int
    env: dict

    def vamp(self, *args: str, env: dict | None = None):
        return run_cli(list(args), env={**self.env, **(env or {})})

    def versions(self, count: int = 100) -> Counter:
        """X-Version of `count` sequential GETs through the gateway."""
        with HttpClient(self.port) as client:
            return Counter(client.request("GET", "/").version for _ in range(count))

    def document(self, name: str = "demo") -> dict:
        return json.loads(self.gateway.admin_get(f"/api/v1/gateways/{name}"))


@pytest.fixture
def live(procs):
    echo = procs.backend("echo", "v1", "v2", "v2b")
    port = free_port()
    process = procs.gateway(config({"demo": gateway(port, {
        "v1": route(echo.address("v1"), weight="100%"),
        "v2": route(echo.address("v2"), echo.address("v2b"), weight="0%")})}),
        extra_args=("--admin-token", TOKEN), token=TOKEN)
    return Live(process, echo, port, {"VAMP_API": f"http://{process.admin}", "VAMP_TOKEN": TOKEN})


def assert_within_one(counts: Counter, expected: dict[str, int]) -> None:
    assert set(counts) <= set(expected), counts
    for name, exact in expected.items():
        assert abs(counts[name] - exact) <= 1, f"{name}: got {counts[name]}, expected {exact} ±1 ({counts})"


def test_live_list_and_get(live):
    listed = live.vamp("gateways", "list")
    assert (listed.returncode, listed.stderr) == (0, "")
    assert listed.stdout.splitlines()[1].split() == ["demo", f"{live.port}/http", "none", "2", "v1=100%", "v2=0%"]
    got = live.vamp("gateways", "get", "demo")
    assert got.returncode == 0, got.stderr
    assert row_of(got.stdout, live.echo.address("v1")) == ["v1", "100%", "-", live.echo.address("v1"), "active",
                                                           "0", "-"]
    assert row_of(got.stdout, live.echo.address("v2b")) == ["v2", live.echo.address("v2b"), "active", "0", "-"]
    as_json = live.vamp("gateways", "get", "demo", "-o", "json")
    assert json.loads(as_json.stdout) == live.document()


def test_live_set_weight_changes_the_split(live):
    run = live.vamp("gateways", "set-weight", "demo", "v1=70", "v2=30%")
    assert (run.returncode, run.stdout, run.stderr) == (0, "gateway demo: v1=70% v2=30%\n", "")
    counts = live.versions(100)
    assert_within_one(Counter({"v1": counts["v1"], "v2": counts["v2"] + counts["v2b"]}), {"v1": 70, "v2": 30})

    refused = live.vamp("gateways", "set-weight", "demo", "v1=0", "v2=100",
                        env={"VAMP_TOKEN": "", "VAMP_ADMIN_TOKEN": ""})
    assert refused.returncode == 2 and "VAMP_TOKEN" in refused.stderr
    invalid = live.vamp("gateways", "set-weight", "demo", "v1=50")
    assert invalid.returncode == 2 and "(field: /routes" in invalid.stderr
    assert {name: r["weight"] for name, r in live.document()["routes"].items()} == {"v1": "70%", "v2": "30%"}


def test_live_drain_of_a_target_then_of_its_route(live):
    assert live.vamp("gateways", "set-weight", "demo", "v1=50", "v2=50").returncode == 0
    run = live.vamp("gateways", "drain", "demo", f"v2/{live.echo.address('v2b')}")
    assert run.returncode == 0, run.stderr
    assert_within_one(live.versions(100), {"v1": 50, "v2": 50, "v2b": 0})
    # not sticky and nothing in flight: its drain may be over already
    state = row_of(live.vamp("gateways", "get", "demo").stdout, live.echo.address("v2b"))[2]
    assert state in ("draining", "drained")

    assert live.vamp("gateways", "drain", "demo", "v2").returncode == 0
    assert live.versions(50) == Counter({"v1": 50})
    assert live.document()["status"]["routes"]["v2"]["state"] in ("draining", "drained")

    assert live.vamp("gateways", "undrain", "demo", "v2").returncode == 0
    assert_within_one(live.versions(100), {"v1": 50, "v2": 50, "v2b": 0})


def test_live_apply_creates_and_configures_then_finds_nothing_to_change(live, tmp_path):
    new_port = free_port()
    path = tmp_path / "gateways.yaml"
    path.write_text(yaml.safe_dump(config({
        "demo": gateway(live.port, {"v1": route(live.echo.address("v1"), weight="20%"),
                                    "v2": route(live.echo.address("v2"), weight="80%")}),
        "new": gateway(new_port, {"only": route(live.echo.address("v2b"))})}), sort_keys=False))
    run = live.vamp("apply", "-f", str(path))
    assert (run.returncode, run.stdout, run.stderr) == (0, "gateway demo configured\ngateway new created\n", "")
    assert_within_one(live.versions(100), {"v1": 20, "v2": 80})
    with HttpClient(new_port) as client:
        assert client.request("GET", "/").version == "v2b"
    again = live.vamp("apply", "-f", str(path))
    assert (again.returncode, again.stdout) == (0, "gateway demo unchanged\ngateway new unchanged\n")

    path.write_text(yaml.safe_dump(config({
        "new": gateway(new_port, {"only": route(live.echo.address("v1"))}),
        "demo": gateway(live.port, {"v1": route(live.echo.address("v1"), weight="20%")})}), sort_keys=False))
    invalid = live.vamp("apply", "-f", str(path))
    assert invalid.returncode == 2 and invalid.stdout == ""
    assert "'demo'" in invalid.stderr and "(field: /routes" in invalid.stderr
    assert live.document("new")["routes"]["only"]["targets"] == [live.echo.address("v2b")]


def test_live_delete(live):
    run = live.vamp("gateways", "delete", "demo")
    assert (run.returncode, run.stdout, run.stderr) == (0, "gateway demo deleted: it drains, then disappears\n", "")
    # nothing is in flight and nobody is sticky: the drain ends at once
    live.gateway.wait_until(lambda: live.gateway.admin_status("/api/v1/gateways/demo") == 404, 10.0, "demo gone")
    assert live.vamp("gateways", "list").stdout == "no gateways\n"
    missing = live.vamp("gateways", "delete", "nope")
    assert (missing.returncode, missing.stderr) == (2, "vamp: no gateway 'nope'\n")


# -- end to end: one way to point the CLI at `vamp run` or at a `vamp gateway` -----------------------
def vamp_command(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The `vamp` command (`python -m control`) as a process, to completion."""
    return run_cli(list(args), executable=VAMP, env=env)


def test_live_the_same_commands_work_against_vamp_run_and_a_vamp_gateway(procs, tmp_path):
    echo = procs.backend("echo", "v1", "v2")
    platform = PlatformProcess(tmp_path / "state", tmp_path)
    procs.started.append(platform)
    platform.start()
    alone_port, shop_port = free_port(), free_port()
    alone = procs.gateway(config({"alone": gateway(alone_port, {"v1": route(echo.address("v1"))})}))
    shop = tmp_path / "shop.yaml"
    shop.write_text(yaml.safe_dump(config({"shop": gateway(shop_port, {
        "v1": route(echo.address("v1"), weight="100%"), "v2": route(echo.address("v2"), weight="0%")})})))

    # `vamp run`, named once in the environment: no option on any command
    under_run = {"VAMP_API": platform.api_url}
    applied = vamp_command("apply", "-f", str(shop), env=under_run)
    assert (applied.returncode, applied.stdout) == (0, "gateway shop created\n"), applied.stderr
    listed = vamp_command("gateways", "list", env=under_run)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[1].split() == ["shop", f"{shop_port}/http", "none", "2", "v1=100%", "v2=0%"]
    moved = vamp_command("gateways", "set-weight", "shop", "v1=70", "v2=30", env=under_run)
    assert moved.returncode == 0, moved.stderr
    with HttpClient(shop_port) as client:
        versions = Counter(client.request("GET", "/").version for _ in range(100))
    assert versions == Counter({"v1": 70, "v2": 30})
    assert "shop" in vamp_command("get", "gateways", env=under_run).stdout

    # a `vamp gateway` alone, with --api its admin address
    gateway_api = ("--api", f"http://{alone.admin}")
    listed = vamp_command("gateways", "list", *gateway_api)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[1].split()[:2] == ["alone", f"{alone_port}/http"]
    got = vamp_command("get", "gateways", "alone", "-o", "json", *gateway_api)
    assert got.returncode == 0 and json.loads(got.stdout)["name"] == "alone", got.stderr
    deployments = vamp_command("get", "deployments", *gateway_api)
    assert deployments.returncode == 2 and "`vamp run`'s API" in deployments.stderr
