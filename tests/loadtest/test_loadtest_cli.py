"""`vamp loadtest` end to end: the real command as a process against real gateways and backends on loopback.

What a user relies on: the split each version received (exact, since the gateway's smooth weighted round-robin
is), the verdict and the exit status that gate a pipeline, errors counted per group, a stall reported by the
open model, sticky users kept on one version, user-agent and country mixes routed as the gateway's conditions
say, and the JSON (validated against its schema) and PNG outputs.
"""
from __future__ import annotations

import itertools
import json
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import matplotlib.image
import psutil
import pytest

from tests.support import LOOPBACK, GatewayProcess, config, free_port, gateway, route, run_cli
from tests.support.admin import AdminApi
from tests.support.processes import POLL_INTERVAL, REPO_ROOT

VAMP = [sys.executable, "-m", "control"]
SCHEMA = json.loads((REPO_ROOT / "loadtest" / "result.schema.json").read_text())
RUN_TIMEOUT = 60.0          # seconds one `vamp loadtest` run may take, start-up included
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHROME_ANDROID = ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
                  "Chrome/124.0.6367.82 Mobile Safari/537.36")
FIREFOX_WINDOWS = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0"
BY_VERSION = ("--by", "header:X-Version")
RUN_NUMBERS = itertools.count(1)     # numbers the --json files of the runs


# -- running the command ---------------------------------------------------------------------------------

@dataclass
class LoadtestRun:
    """One finished `vamp loadtest`: exit status, output, and the `--json` result (None when none was written)."""
    status: int
    stdout: str
    stderr: str
    result: dict | None

    def group(self, name: str) -> dict:
        groups = {group["name"]: group for group in self.result["groups"]}
        assert name in groups, f"no group {name!r} in {sorted(groups)}"
        return groups[name]

    def requests_by_group(self) -> dict[str, int]:
        return {group["name"]: group["requests"] for group in self.result["groups"]}

    @property
    def verdict(self) -> dict:
        return self.result["verdict"]


def loadtest_args(json_path: Path, url: str, options) -> list[str]:
    return ["loadtest", url, *options, "--no-progress", "--json", str(json_path)]


def json_path_for_run(tmp_path: Path) -> Path:
    return tmp_path / f"result-{next(RUN_NUMBERS)}.json"


def finished(status: int, stdout: str, stderr: str, json_path: Path) -> LoadtestRun:
    """The run's outcome; a written result must validate against the documented schema."""
    result = None
    if json_path.exists():
        result = json.loads(json_path.read_text())
        jsonschema.Draft202012Validator(SCHEMA).validate(result)
    return LoadtestRun(status, stdout, stderr, result)


def loadtest(tmp_path: Path, url: str, *options: str) -> LoadtestRun:
    """Runs `vamp loadtest URL OPTIONS --json FILE` to completion."""
    json_path = json_path_for_run(tmp_path)
    completed = run_cli(loadtest_args(json_path, url, options), timeout=RUN_TIMEOUT, executable=VAMP)
    return finished(completed.returncode, completed.stdout, completed.stderr, json_path)


def assert_exact_split(run: LoadtestRun, expected: dict[str, int]) -> None:
    """Smooth weighted round-robin keeps any window of requests within one request of the exact split."""
    seen = run.requests_by_group()
    assert sum(seen.values()) == sum(expected.values()), seen
    for name, count in expected.items():
        assert abs(seen.get(name, 0) - count) <= 1, f"{name}: {seen.get(name, 0)} requests, expected {count} ±1"


# -- processes --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def echo(module_procs):
    return module_procs.backend("echo", "v1", "v2")


def start_gateway(procs, name: str, routes: dict, geo: dict | None = None, **fields) -> tuple[str, GatewayProcess]:
    """(URL of gateway `name`, its process)."""
    port = free_port()
    process = procs.gateway(config({name: gateway(port, routes, **fields)}, geo=geo))
    return GatewayProcess.url(port), process


def split_routes(echo, v1: str, v2: str) -> dict:
    return {"v1": route(echo.address("v1"), weight=v1), "v2": route(echo.address("v2"), weight=v2)}


@pytest.fixture(scope="module")
def split_90_10(module_procs, echo) -> str:
    return start_gateway(module_procs, "split", split_routes(echo, "90%", "10%"))[0]


@pytest.fixture(scope="module")
def split_50_50(module_procs, echo) -> str:
    return start_gateway(module_procs, "halves", split_routes(echo, "50%", "50%"))[0]


# -- the split and the verdict ----------------------------------------------------------------------------

def test_a_90_10_gateway_is_reported_90_10_and_passes(tmp_path, split_90_10):
    run = loadtest(tmp_path, split_90_10, *BY_VERSION, "--expect", "v1=90%", "--expect", "v2=10%",
                   "--requests", "3000")
    assert run.status == 0, run.stdout + run.stderr
    assert_exact_split(run, {"v1": 2700, "v2": 300})
    assert run.result["totals"]["requests"] == 3000
    assert run.result["totals"]["errors"] == 0
    assert run.group("v1")["expected_share"] == pytest.approx(0.9)
    assert run.group("v2")["expected_share"] == pytest.approx(0.1)
    assert run.verdict["split_holds"] is True and run.verdict["passed"] is True
    assert run.verdict["expected_from"] == "expect"
    assert "PASS" in run.stdout


def test_expecting_50_50_of_a_90_10_gateway_fails_with_exit_3(tmp_path, split_90_10):
    run = loadtest(tmp_path, split_90_10, *BY_VERSION, "--expect", "v1=50%", "--expect", "v2=50%",
                   "--requests", "3000")
    assert run.status == 3, run.stdout + run.stderr
    assert run.verdict["split_holds"] is False and run.verdict["passed"] is False
    assert run.verdict["p_value"] < run.verdict["alpha"]
    assert run.verdict["reasons"]
    assert "FAIL" in run.stdout


def test_from_gateway_reads_the_weights_the_gateway_has_now(procs, echo, tmp_path):
    url, process = start_gateway(procs, "live", split_routes(echo, "90%", "10%"))
    from_gateway = ("--from-gateway", "live", "--api", process.admin_url(""))

    run = loadtest(tmp_path, url, *BY_VERSION, *from_gateway, "--requests", "2000")
    assert run.status == 0, run.stdout + run.stderr
    assert run.verdict["expected_from"] == "gateway:live"
    assert run.group("v1")["expected_share"] == pytest.approx(0.9)
    assert run.group("v2")["expected_share"] == pytest.approx(0.1)

    patched = AdminApi(process.admin_url("")).patch("live", {"routes": {"v1": {"weight": "50%"},
                                                                        "v2": {"weight": "50%"}}})
    assert patched.status == 200, patched.body
    stale = loadtest(tmp_path, url, *BY_VERSION, "--expect", "v1=90%", "--expect", "v2=10%", "--requests", "2000")
    assert stale.status == 3, stale.stdout + stale.stderr
    assert stale.verdict["split_holds"] is False
    current = loadtest(tmp_path, url, *BY_VERSION, *from_gateway, "--requests", "2000")
    assert current.status == 0, current.stdout + current.stderr
    assert current.group("v2")["expected_share"] == pytest.approx(0.5)


def test_from_gateway_whose_routes_name_no_group_reports_fail_and_exits_2(procs, echo, tmp_path):
    # Only the answers can tell: the groups (X-Version v1, v2) are known once they are seen.
    url, process = start_gateway(procs, "named", {"stable": route(echo.address("v1"), weight="90%"),
                                                  "canary": route(echo.address("v2"), weight="10%")})
    run = loadtest(tmp_path, url, *BY_VERSION, "--from-gateway", "named", "--api", process.admin_url(""),
                   "--requests", "500")
    assert run.status == 2, run.stdout + run.stderr
    assert run.requests_by_group() == {"v1": 450, "v2": 50}         # the measurements are still reported
    assert run.verdict["split_holds"] is None
    assert (run.verdict["passed"], run.verdict["exit_status"]) == (False, 2)    # the verdict says what exits
    assert "PASS" not in run.stdout and " FAIL " in run.stdout
    assert "no route of the gateway (canary, stable) names a group" in run.stderr and "--expect" in run.stderr
    assert any("could not be judged" in reason for reason in run.verdict["reasons"])


@pytest.fixture(scope="module")
def unjudgeable(module_procs, record) -> GatewayProcess:
    """Gateways whose split no run could judge: one without routes, one whose routes serve nothing, one that
    leads on to another gateway (as Vamp's external gateway sava/9050 does to sava/sava/webport)."""
    inner_port = free_port()
    return module_procs.gateway(config({
        "empty": gateway(free_port(), {}),
        "no-targets": gateway(free_port(), {"v1": route(weight="100%"), "v2": route(weight="0%")}),
        "inner": gateway(inner_port, {"v1": route(record.address(), weight="90%"),
                                      "v2": route(record.address(), weight="10%")}),
        "outer": gateway(free_port(), {"inner": route(f"{LOOPBACK}:{inner_port}")}),
    }))


@pytest.mark.parametrize("name, by, message", [
    ("nope", BY_VERSION, "no gateway 'nope'"),
    ("empty", BY_VERSION, "the gateway has no routes"),
    ("no-targets", BY_VERSION, "none of its routes (v1, v2) would serve this traffic"),
    ("outer", BY_VERSION, "its route inner leads on to the gateway of that name, whose routes decide the split: "
                          "use --from-gateway inner"),
    ("inner", ("--by", "status"), "--by status groups the answers by status code, and no route name (v1, v2) "
                                  "holds one"),
])
def test_a_split_no_run_could_judge_exits_2_before_sending_anything(tmp_path, record, unjudgeable, name, by,
                                                                    message):
    run = loadtest(tmp_path, f"http://{record.address()}/", *by, "--from-gateway", name,
                   "--api", unjudgeable.admin_url(""), "--requests", "100")
    assert run.status == 2, run.stdout + run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"vamp loadtest: --from-gateway {name}: "), run.stderr
    assert message in lines[0]
    assert run.stdout == "" and run.result is None
    assert record.records() == []


def test_from_gateway_reads_the_api_named_by_vamp_api_and_sends_vamp_token(procs, echo, tmp_path):
    token = "loadtest-token"
    url, process = start_gateway(procs, "tokened", split_routes(echo, "90%", "10%"))
    json_path = json_path_for_run(tmp_path)
    completed = run_cli(loadtest_args(json_path, url, [*BY_VERSION, "--from-gateway", "tokened", "--requests",
                                                       "1000"]),
                        timeout=RUN_TIMEOUT, executable=VAMP,
                        env={"VAMP_API": process.admin_url(""), "VAMP_TOKEN": token})
    run = finished(completed.returncode, completed.stdout, completed.stderr, json_path)
    assert run.status == 0, run.stdout + run.stderr
    assert run.verdict["expected_from"] == "gateway:tokened"


def test_the_help_s_examples_use_only_options_that_exist():
    from control.cli import build_parser
    help_text = run_cli(["loadtest", "--help"], executable=VAMP).stdout
    examples = help_text.split("examples:")[1].split("exit status:")[0].replace("\\\n", " ")
    commands = [shlex.split(line) for line in examples.splitlines() if line.strip()]
    assert len(commands) >= 3
    parser = build_parser()
    for command in commands:
        assert command[:2] == ["vamp", "loadtest"]
        parser.parse_args(command[1:])          # exits 2 on an option that does not exist
    assert "--admin" not in help_text
    assert "--from-gateway sava/sava/webport" in help_text and "--api http://127.0.0.1:8080" in help_text


# -- without the `vamp[loadtest]` extra ----------------------------------------------------------------------
LOADTEST_EXTRA = ("hdrh", "numpy", "rich", "scipy", "matplotlib")


def vamp_without(modules, *args: str) -> subprocess.CompletedProcess:
    """`vamp ARGS` as a process in which `modules` cannot be imported, as where the extra is not installed."""
    code = (f"import sys\nsys.modules.update(dict.fromkeys({list(modules)!r}))\n"
            "from control.cli import main\nsys.exit(main(sys.argv[1:]))")
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("module", LOADTEST_EXTRA)
def test_without_the_extra_vamp_loadtest_says_how_to_install_it(module):
    done = vamp_without([module], "loadtest", f"http://{LOOPBACK}:{free_port()}/", "--requests", "10")
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and "pip install 'vamp[loadtest]'" in done.stderr, done.stderr


def test_without_the_extra_the_rest_of_vamp_works():
    assert vamp_without(LOADTEST_EXTRA, "--help").returncode == 0
    helped = vamp_without(LOADTEST_EXTRA, "loadtest", "--help")
    assert helped.returncode == 0 and "--from-gateway" in helped.stdout, helped.stderr
    refused = vamp_without(LOADTEST_EXTRA, "gateways", "list", "--api", f"http://{LOOPBACK}:{free_port()}")
    assert refused.returncode == 1 and refused.stderr.startswith("vamp: "), refused.stderr     # unreachable


def test_an_unreachable_api_is_a_runtime_failure(tmp_path, split_90_10):
    run = loadtest(tmp_path, split_90_10, *BY_VERSION, "--from-gateway", "split",
                   "--api", f"http://{LOOPBACK}:{free_port()}", "--requests", "100")
    assert run.status == 1, run.stdout + run.stderr
    assert run.stderr.strip()


# -- errors per group -------------------------------------------------------------------------------------

def test_a_failing_backend_errors_are_counted_in_its_group(procs, echo, tmp_path):
    failing = procs.backend("echo", "v2", extra_args=("--status", "500"))
    url, _ = start_gateway(procs, "failing", {"v1": route(echo.address("v1"), weight="50%"),
                                              "v2": route(failing.address("v2"), weight="50%")})
    run = loadtest(tmp_path, url, *BY_VERSION, "--max-errors", "1%", "--requests", "2000")
    assert run.status == 3, run.stdout + run.stderr
    assert_exact_split(run, {"v1": 1000, "v2": 1000})
    v1, v2 = run.group("v1"), run.group("v2")
    assert v2["errors"] == v2["requests"]
    assert v2["errors_by_kind"] == {"http_5xx": v2["requests"]}
    assert v2["statuses"] == {"500": v2["requests"]}
    assert v1["errors"] == 0
    assert run.result["totals"]["errors_by_kind"] == {"http_5xx": 1000}
    assert run.verdict["errors_ok"] is False


def test_a_gateway_with_no_live_target_counts_its_answers_as_unlabelled_errors(procs, tmp_path):
    # A route whose target refuses connections is skipped by the weight split once backed off, so the only
    # way to see the gateway's own error answers throughout is a gateway with no other route.
    url, _ = start_gateway(procs, "dead", {"dead": route(f"{LOOPBACK}:{free_port()}", weight="100%")})
    run = loadtest(tmp_path, url, *BY_VERSION, "--requests", "500")
    assert run.status == 3, run.stdout + run.stderr
    assert run.requests_by_group() == {"(none)": 500}       # the gateway's own answers carry no X-Version
    assert run.group("(none)")["errors_by_kind"] == {"http_5xx": 500}
    assert run.verdict["errors_ok"] is False


def test_a_url_nothing_listens_on_counts_connect_errors(tmp_path):
    run = loadtest(tmp_path, f"http://{LOOPBACK}:{free_port()}/", "--requests", "20", "--concurrency", "4")
    assert run.status == 3, run.stdout + run.stderr
    assert run.result["totals"]["responses"] == 0
    assert run.requests_by_group() == {"(no response)": 20}
    assert run.group("(no response)")["errors_by_kind"] == {"connect": 20}


def test_a_keep_alive_connection_closed_unannounced_is_retried_for_get_but_not_for_post(procs, tmp_path):
    # The backend closes each connection right after its first answer, without `Connection: close`: every
    # second request goes out on a connection the server has just closed. A GET is sent again on a new
    # connection, as browsers do; a POST may have reached the server, so it is counted as a reset.
    backend = procs.backend("echo", "v1", extra_args=("--max-requests-per-connection", "1"))
    url = f"http://{backend.address('v1')}/"
    run = loadtest(tmp_path, url, "--requests", "1000", "--concurrency", "4")
    assert run.status == 0, run.stdout + run.stderr
    assert run.requests_by_group() == {"200": 1000} and run.result["totals"]["errors"] == 0
    posted = loadtest(tmp_path, url, "--requests", "1000", "--concurrency", "4", "--method", "POST")
    assert posted.status == 3
    assert posted.result["totals"]["requests"] == 1000
    assert posted.group("(no response)")["errors_by_kind"]["reset"] > 100


@pytest.mark.parametrize("processes", ["1", "2"])
def test_the_open_model_sends_exactly_rate_times_duration_requests(tmp_path, split_90_10, processes):
    run = loadtest(tmp_path, split_90_10, *BY_VERSION, "--rate", "400", "--duration", "2s", "--concurrency", "8",
                   "--processes", processes)
    assert run.status == 0, run.stdout + run.stderr
    assert run.result["model"] == "open" and run.result["totals"]["requests"] == 800
    assert_exact_split(run, {"v1": 720, "v2": 80})


def test_in_the_open_model_a_url_nothing_listens_on_fails_every_due_request(tmp_path):
    run = loadtest(tmp_path, f"http://{LOOPBACK}:{free_port()}/", "--rate", "100", "--duration", "1s",
                   "--concurrency", "4")
    assert run.status == 3, run.stdout + run.stderr
    assert run.requests_by_group() == {"(no response)": 100}
    assert run.group("(no response)")["errors_by_kind"] == {"connect": 100}


# -- the open model sees a stall the closed model hides ---------------------------------------------------

STALL = 1.0             # seconds the backend is stopped
STALL_AFTER = 1.0       # seconds of normal traffic before it stops (the run lasts 4 s)


def has_client_connection(pid: int, port: int) -> bool:
    return any(connection.status == psutil.CONN_ESTABLISHED and connection.laddr.port == port
               for connection in psutil.Process(pid).net_connections(kind="tcp"))


def run_disturbed(tmp_path: Path, url: str, server, port: int, disturb, *options: str,
                  duration: str = "4s") -> LoadtestRun:
    """A run against `url`; once `server` (a harness process) has been serving it on `port` for STALL_AFTER
    seconds, `disturb()` runs while the load goes on."""
    json_path = json_path_for_run(tmp_path)
    args = loadtest_args(json_path, url, ["--duration", duration, *options])
    process = subprocess.Popen([*VAMP, *args], cwd=REPO_ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        deadline = time.monotonic() + RUN_TIMEOUT / 2
        while not has_client_connection(server.pid, port):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "vamp loadtest never connected to the server"
            time.sleep(POLL_INTERVAL)
        time.sleep(STALL_AFTER)
        disturb()
        stdout, stderr = process.communicate(timeout=RUN_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return finished(process.returncode, stdout, stderr, json_path)


def run_with_stall(tmp_path: Path, backend, *options: str) -> LoadtestRun:
    """A 4 s run against `backend`, which is stopped (SIGSTOP) for STALL seconds in the middle of it."""
    def stall() -> None:
        backend.process.send_signal(signal.SIGSTOP)
        try:
            time.sleep(STALL)
        finally:
            backend.process.send_signal(signal.SIGCONT)

    return run_disturbed(tmp_path, f"http://{backend.address()}/", backend, backend.port(), stall, *options)


def test_the_open_model_reports_a_backend_stall_the_closed_model_hides(procs, tmp_path):
    backend = procs.backend("echo", "stall")
    open_run = run_with_stall(tmp_path, backend, "--rate", "200", "--concurrency", "8")
    closed_run = run_with_stall(tmp_path, backend, "--concurrency", "8")
    for run in (open_run, closed_run):
        assert run.result is not None, run.stdout + run.stderr
        assert run.result["totals"]["errors"] == 0
    opened, closed = open_run.result["totals"]["latency_ms"], closed_run.result["totals"]["latency_ms"]
    assert open_run.result["model"] == "open" and closed_run.result["model"] == "closed"
    # Open model: the ~200 requests scheduled during the stall are late by up to 1 s, measured from when they
    # were due: a quarter of the run, so p99 sits in the stall.
    assert opened["p99"] >= 500, opened
    assert opened["max"] >= 900, opened
    # Closed model: only the 8 requests in flight wait out the stall (max shows it), and no request is sent
    # meanwhile, so among thousands of fast requests the stall is far below p99 (coordinated omission).
    assert closed["max"] >= 900, closed
    assert opened["p99"] > 2 * closed["p99"], (opened, closed)


def test_a_gateway_killed_and_restarted_mid_run_shows_as_errors_at_the_planned_rate(procs, echo, tmp_path):
    port = free_port()
    gateway_process = procs.gateway(config({"restarted": gateway(port, split_routes(echo, "90%", "10%"))}))

    def restart() -> None:
        gateway_process.process.kill()
        gateway_process.process.wait()
        gateway_process.start()             # same port, same state directory; waits until it is ready

    run = run_disturbed(tmp_path, GatewayProcess.url(port), gateway_process, port, restart, *BY_VERSION,
                        "--rate", "400", "--concurrency", "8", "--expect", "v1=90%", "--expect", "v2=10%",
                        duration="6s")     # room for the restart (about a second) on a slow machine
    assert run.status == 3, run.stdout + run.stderr
    totals = run.result["totals"]
    assert totals["requests"] == 2400                   # every request that fell due, served or failed
    assert totals["errors"] > 0 and set(totals["errors_by_kind"]) <= {"connect", "reset"}
    assert run.verdict["split_holds"] is True           # what was served kept its split
    assert run.verdict["errors_ok"] is False
    served_after = sum(run.result["timeline"]["groups"]["v1"][-5:])      # in the last half second
    assert served_after > 0, "no request was served after the restart"


# -- sticky users -----------------------------------------------------------------------------------------

def test_sticky_users_of_a_sticky_route_gateway_never_see_two_versions(procs, echo, tmp_path):
    url, _ = start_gateway(procs, "sticky", split_routes(echo, "50%", "50%"), sticky="route")
    run = loadtest(tmp_path, url, *BY_VERSION, "--clients", "500", "--sticky", "--requests", "5000",
                   "--concurrency", "32")
    assert run.status == 0, run.stdout + run.stderr
    sticky = run.result["sticky"]
    assert sticky["users"] == 500 and sticky["users_seen"] == 500
    assert sticky["users_with_several_groups"] == 0
    assert run.verdict["sticky_ok"] is True


def test_sticky_users_of_a_non_sticky_gateway_are_reported_and_fail(procs, echo, tmp_path):
    url, _ = start_gateway(procs, "loose", split_routes(echo, "50%", "50%"), sticky="none")
    run = loadtest(tmp_path, url, *BY_VERSION, "--clients", "500", "--sticky", "--requests", "5000",
                   "--concurrency", "32")
    assert run.status == 3, run.stdout + run.stderr
    sticky = run.result["sticky"]
    assert sticky["users_with_several_groups"] > 0
    assert sticky["examples"] and all(len(example["groups"]) >= 2 for example in sticky["examples"])
    assert run.verdict["sticky_ok"] is False


# -- traffic mixes route as the gateway's conditions say --------------------------------------------------

COUNTRY_MIX = ("--forwarded-for", "countries:GB=20,US=50,DE=30")


@pytest.fixture(scope="module")
def geo_gateway(module_procs) -> tuple[str, GatewayProcess]:
    backend = module_procs.backend("echo", "gb", "rest")
    return start_gateway(module_procs, "geo", {
        "gb": route(backend.address("gb"), weight="0%", condition="country = GB", strength="100%"),
        "rest": route(backend.address("rest"), weight="100%"),
    }, geo={"trusted_proxies": ["127.0.0.1/32"]})


def test_a_country_mix_sends_exactly_its_gb_share_to_the_gb_route(tmp_path, geo_gateway):
    url, _ = geo_gateway
    run = loadtest(tmp_path, url, *BY_VERSION, *COUNTRY_MIX, "--expect", "gb=20%", "--expect", "rest=80%",
                   "--requests", "2000")
    assert run.status == 0, run.stdout + run.stderr
    countries = run.result["mix"]["countries"]
    assert set(countries) == {"GB", "US", "DE"} and sum(countries.values()) == 2000
    assert abs(countries["GB"] - 400) <= 1
    assert run.group("gb")["requests"] == countries["GB"]
    assert run.group("rest")["requests"] == countries["US"] + countries["DE"]


def test_from_gateway_expects_the_gb_share_of_a_country_mix(tmp_path, geo_gateway):
    url, process = geo_gateway
    run = loadtest(tmp_path, url, *BY_VERSION, *COUNTRY_MIX, "--from-gateway", "geo",
                   "--api", process.admin_url(""), "--requests", "2000")
    assert run.status == 0, run.stdout + run.stderr
    assert run.group("gb")["expected_share"] == pytest.approx(0.2, abs=0.005)
    assert run.group("rest")["expected_share"] == pytest.approx(0.8, abs=0.005)


@pytest.fixture(scope="module")
def device_gateway(module_procs) -> str:
    backend = module_procs.backend("echo", "mobile", "desktop")
    return start_gateway(module_procs, "devices", {
        "mobile": route(backend.address("mobile"), weight="0%", condition="os = Android or os = iOS"),
        "desktop": route(backend.address("desktop"), weight="100%"),
    })[0]


@pytest.mark.parametrize("mix, group", [("mobile", "mobile"), ("browsers", "desktop")])
def test_a_builtin_user_agent_mix_routes_by_its_operating_systems(tmp_path, device_gateway, mix, group):
    run = loadtest(tmp_path, device_gateway, *BY_VERSION, "--mix", mix, "--requests", "1000")
    assert run.status == 0, run.stdout + run.stderr
    assert run.requests_by_group() == {group: 1000}
    assert len(run.result["mix"]["user_agents"]) >= 3, "a built-in mix holds several browsers"


def test_a_mix_file_with_weights_routes_its_share(tmp_path, device_gateway):
    mix_file = tmp_path / "agents.txt"
    mix_file.write_text(f"# three Android phones for one Windows desktop\n3 {CHROME_ANDROID}\n\n"
                        f"1 {FIREFOX_WINDOWS}\n", encoding="utf-8")
    run = loadtest(tmp_path, device_gateway, *BY_VERSION, "--mix", str(mix_file),
                   "--expect", "mobile=75%", "--expect", "desktop=25%", "--requests", "2000")
    assert run.status == 0, run.stdout + run.stderr
    assert_exact_split(run, {"mobile": 1500, "desktop": 500})
    agents = sorted(run.result["mix"]["user_agents"].values())
    assert agents == [run.group("desktop")["requests"], run.group("mobile")["requests"]]


# -- outputs, processes, grouping -------------------------------------------------------------------------

def test_plot_writes_a_png(tmp_path, split_90_10):
    plot = tmp_path / "r.png"
    run = loadtest(tmp_path, split_90_10, *BY_VERSION, "--requests", "2000", "--plot", str(plot))
    assert run.status == 0, run.stdout + run.stderr
    assert plot.read_bytes().startswith(PNG_SIGNATURE)
    image = matplotlib.image.imread(plot)
    assert image.shape[0] > 100 and image.shape[1] > 100


def test_two_processes_finish_exactly_the_requests_asked_and_merge_their_histograms(tmp_path, split_90_10):
    run = loadtest(tmp_path, split_90_10, *BY_VERSION, "--expect", "v1=90%", "--expect", "v2=10%",
                   "--requests", "4000", "--processes", "2")
    assert run.status == 0, run.stdout + run.stderr
    assert run.result["processes"] == 2
    totals = run.result["totals"]
    assert totals["requests"] == 4000
    assert_exact_split(run, {"v1": 3600, "v2": 400})
    assert totals["latency_ms"]["count"] == totals["responses"] == 4000
    assert sum(group["latency_ms"]["count"] for group in run.result["groups"]) == 4000


def test_body_grouping_takes_the_regex_capture(tmp_path, split_50_50):
    by_name = r'body:/"name": "(\w+)"/'
    run = loadtest(tmp_path, split_50_50, "--by", by_name, "--expect", "v1=50%", "--expect", "v2=50%",
                   "--requests", "2000")
    assert run.status == 0, run.stdout + run.stderr
    assert run.result["by"] == by_name
    assert_exact_split(run, {"v1": 1000, "v2": 1000})


# -- bad input --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def record(module_procs):
    return module_procs.backend("record", "record")


@pytest.mark.parametrize("scheme, options, named", [
    ("http", ["--by", "cookie:session"], "--by"),
    ("http", ["--expect", "v1=50%", "--expect", "v2=40%"], "--expect"),
    ("https", [], "https"),
    ("http", ["--rate", "0"], "--rate"),
    ("http", ["--mix", "no-such-mix-file.txt"], "--mix"),
    ("http", ["--plot", "/no/such/folder/plot.png"], "--plot"),
])
def test_bad_input_exits_2_naming_the_option_and_sends_nothing(tmp_path, record, scheme, options, named):
    run = loadtest(tmp_path, f"{scheme}://{record.address()}/", *options, "--requests", "100")
    assert run.status == 2, run.stdout + run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], run.stderr
    assert run.result is None
    assert record.records() == []
