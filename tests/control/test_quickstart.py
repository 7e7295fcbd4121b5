"""The canary quickstart as a user runs it: a real `vamp run` process, the `vamp` CLI as subprocesses and plain
HTTP to the external gateway — deploy sava 1.0, scale it to 3, merge 1.1 at 0%, 50/50, Chrome only, then 1.1
alone, with no request of a running load failing from the merge on. Also: a platform killed with SIGKILL
takes its instances with it and resumes where it was; a crashed instance is routed around and restarted; the
YAML examples of README.md load, and its `vamp` commands parse and name files that exist."""
from __future__ import annotations

import re
import shlex
import textwrap
from collections import Counter
from pathlib import Path

import pytest
import trustme
import yaml

from control import dsl
from control.cli import build_parser
from gateway.config import load as gateway_config
from tests.support import BrokenResponse, HttpClient, free_port
from tests.support.load import LoadGenerator
from tests.support.platform import PlatformProcess, alive, wait_for

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
INTERNAL = "sava/sava/webport"
OLD_ROUTE = "sava/sava/sava:1.0.0/webport"
NEW_ROUTE = "sava/sava/sava:1.1.0/webport"
CHROME = ("Mozilla/5.0 (Linux; Android 13; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/120.0.0.0 Mobile Safari/537.36")
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"
READY_TIMEOUT = 20.0          # seconds for a deployment, a scale or a restart to show in the gateway
STOP_TIMEOUT = 15.0           # seconds for instances to stop (drained first when they are removed)


@pytest.fixture
def platform(procs, tmp_path) -> PlatformProcess:
    process = PlatformProcess(tmp_path / "state", tmp_path)
    procs.started.append(process)          # stopped with the test's other processes; its stderr in a failure
    return process.start()


def blueprint_file(tmp_path: Path, name: str, gateway_port: int) -> Path:
    """examples/NAME with its external gateway on `gateway_port` instead of 9050."""
    path = tmp_path / name
    path.write_text((EXAMPLES / name).read_text().replace("9050:", f"{gateway_port}:"))
    return path


def probe(port: int, count: int, user_agent: str | None = None, *, new_connections: bool = False
          ) -> tuple[Counter, set[str]]:
    """(X-Version counts, X-Instance names) of `count` GETs to the gateway on `port`, all answered 200."""
    headers = [("User-Agent", user_agent)] if user_agent else []
    versions: Counter = Counter()
    instances: set[str] = set()
    client = HttpClient(port, timeout=5)
    try:
        for _ in range(count):
            if new_connections:
                client.close()
            response = client.request("GET", "/", headers)
            assert response.status == 200, (response.status, response.body[:200])
            versions[response.version] += 1
            instances.add(response.header("x-instance"))
    finally:
        client.close()
    return versions, instances


def answers(port: int, version: str) -> bool:
    try:
        return probe(port, 1)[0] == Counter({version: 1})
    except (OSError, BrokenResponse, AssertionError):     # not listening yet, or not routed yet
        return False


def gateway(platform: PlatformProcess, name: str) -> dict:
    return platform.vamp_json("get", "gateways", name, "--api", platform.api_url)


def targets(platform: PlatformProcess, route: str) -> list[str]:
    status, document = platform.api("GET", f"/api/v1/gateways/{INTERNAL}")
    assert status == 200, (status, document)
    return (document["routes"].get(route) or {}).get("targets", [])


def services(platform: PlatformProcess) -> dict[str, dict]:
    """The services of deployment sava, cluster sava, by breed name, as `vamp get deployments` shows them."""
    document = platform.vamp_json("get", "deployments", "sava", "--api", platform.api_url)
    return {service["breed"]["name"]: service for service in document["clusters"]["sava"]["services"]}


def deployment_without_instances(platform: PlatformProcess) -> dict:
    """`vamp get deployments sava -o json` without what changes from run to run: the instances and the
    services' states."""
    document = platform.vamp_json("get", "deployments", "sava", "--api", platform.api_url)
    for cluster in document["clusters"].values():
        for service in cluster["services"]:
            for field in ("instances", "state", "reason"):
                service.pop(field)
    return document


def weights(platform: PlatformProcess) -> dict[str, str | None]:
    status, document = platform.api("GET", f"/api/v1/gateways/{INTERNAL}")
    assert status == 200, (status, document)
    return {route: body.get("weight") for route, body in document["routes"].items()}


@pytest.mark.timeout(80)
def test_the_canary_quickstart_through_the_cli(platform, tmp_path):
    port = free_port()
    api = ("--api", platform.api_url)
    sava_10 = blueprint_file(tmp_path, "sava-1.0.yaml", port)

    # 1. deploy sava 1.0: the external gateway answers 1.0.0
    platform.vamp("deploy", str(sava_10), "--name", "sava", *api)
    platform.wait_until(lambda: answers(port, "1.0.0"), READY_TIMEOUT, "serving sava 1.0.0")

    # 2. three instances: three targets on the route, each reached
    platform.vamp("scale", "sava/sava/sava:1.0.0", "3", *api)
    platform.wait_until(lambda: len(gateway(platform, INTERNAL)["routes"][OLD_ROUTE]["targets"]) == 3,
                        READY_TIMEOUT, "routing to three instances")
    instances = services(platform)["sava:1.0.0"]["instances"]
    assert {f"127.0.0.1:{i['ports']['webport']}" for i in instances} == set(targets(platform, OLD_ROUTE))
    versions, reached = probe(port, 9, new_connections=True)
    assert versions == Counter({"1.0.0": 9})
    assert reached == {i["name"] for i in instances}

    with LoadGenerator(port, connections=4, seconds=60) as load:
        # 3. merge sava 1.1: it joins at 0%
        platform.vamp("deploy", str(EXAMPLES / "sava-1.1.yaml"), "--name", "sava", *api)
        assert weights(platform) == {OLD_ROUTE: "100%", NEW_ROUTE: "0%"}
        # deployments made from files store no blueprints or breeds: the empty lists say where to look
        for kind in ("blueprints", "breeds"):
            listed = platform.vamp("get", kind, *api)
            assert listed.startswith(f"no {kind} stored") and "`vamp get deployments`" in listed, listed
        platform.wait_until(lambda: len(targets(platform, NEW_ROUTE)) == 1, READY_TIMEOUT, "sava 1.1.0 ready")
        assert probe(port, 20)[0] == Counter({"1.0.0": 20})
        load.wait_for_responses(20)
        assert set(load.versions()) == {"1.0.0"}

        # 4. 50/50 with the gateway verbs against the control API, then Chrome users only to 1.1
        platform.vamp("gateways", "set-weight", INTERNAL, f"{OLD_ROUTE}=50%", f"{NEW_ROUTE}=50%",
                      *api)
        split = load.with_window(lambda: probe(port, 100)[0])
        assert abs(split["1.0.0"] - split["1.1.0"]) <= 2 and set(split) == {"1.0.0", "1.1.0"}, split
        status, document = platform.api("PATCH", f"/api/v1/gateways/{INTERNAL}", {"routes": {
            OLD_ROUTE: {"weight": "100%"},
            NEW_ROUTE: {"weight": "0%", "condition": "browser = Chrome", "condition_strength": "100%"}}})
        assert status == 202, (status, document)           # Vamp answers gateway changes 202 Accepted
        assert probe(port, 20, CHROME)[0] == Counter({"1.1.0": 20})
        assert probe(port, 20, FIREFOX)[0] == Counter({"1.0.0": 20})

        # 5. everything to 1.1, then remove 1.0: its instances stop
        platform.vamp("gateways", "set-weight", INTERNAL, f"{OLD_ROUTE}=0%", f"{NEW_ROUTE}=100%",
                      *api)
        assert probe(port, 20)[0] == Counter({"1.1.0": 20})
        old_processes = platform.demo_processes("1.0.0")
        assert len(old_processes) == 3
        platform.vamp("delete", "-f", str(sava_10), "--deployment", "sava", *api)
        platform.wait_until(lambda: "sava:1.0.0" not in services(platform), STOP_TIMEOUT, "sava 1.0.0 removed")
        platform.wait_until(lambda: not any(alive(p) for p in old_processes), STOP_TIMEOUT,
                            "sava 1.0.0's processes stopped")
        assert weights(platform) == {NEW_ROUTE: "100%"}
        assert probe(port, 20)[0] == Counter({"1.1.0": 20})
        load.wait_for_responses(20)
    assert load.failures == [], load.failures[:5]
    assert load.versions()["1.1.0"] > 0


@pytest.mark.timeout(60)
def test_a_killed_platform_takes_its_instances_and_resumes_where_it_was(procs, platform, tmp_path):
    port = free_port()
    # README's curl: PUT the blueprint file as it is (YAML, with its `kind:`)
    status, document = platform.api("PUT", "/api/v1/deployments/sava",
                                    yaml_text=blueprint_file(tmp_path, "sava-1.0.yaml", port).read_text())
    assert status == 202, (status, document)
    platform.vamp("deploy", str(EXAMPLES / "sava-1.1.yaml"), "--name", "sava", "--api", platform.api_url)
    platform.wait_until(lambda: len(targets(platform, OLD_ROUTE)) == len(targets(platform, NEW_ROUTE)) == 1,
                        READY_TIMEOUT, "both versions ready")
    platform.vamp("gateways", "set-weight", INTERNAL, f"{OLD_ROUTE}=50%", f"{NEW_ROUTE}=50%",
                  "--api", platform.api_url)
    deployment = deployment_without_instances(platform)
    instances = platform.demo_processes()
    assert len(instances) == 2

    platform.kill()
    wait_for(lambda: not any(alive(p) for p in instances), STOP_TIMEOUT, "the instances gone with the platform")

    again = PlatformProcess(platform.state_dir, tmp_path, api_port=platform.api_port, log_name="platform-again")
    procs.started.append(again)
    again.start()
    assert deployment_without_instances(again) == deployment
    assert weights(again) == {OLD_ROUTE: "50%", NEW_ROUTE: "50%"}
    again.wait_until(lambda: all(i["state"] == "ready" for s in services(again).values() for i in s["instances"])
                     and len(again.demo_processes()) == 2, READY_TIMEOUT, "both instances running again")
    again.wait_until(lambda: len(targets(again, OLD_ROUTE)) == len(targets(again, NEW_ROUTE)) == 1,
                     READY_TIMEOUT, "both versions routed again")
    versions, _ = probe(port, 100)
    assert abs(versions["1.0.0"] - versions["1.1.0"]) <= 1 and set(versions) == {"1.0.0", "1.1.0"}, versions


@pytest.mark.timeout(60)
def test_a_crashed_instance_is_routed_around_and_restarted(platform, tmp_path):
    port = free_port()
    api = ("--api", platform.api_url)
    platform.vamp("deploy", str(blueprint_file(tmp_path, "sava-1.0.yaml", port)), "--name", "sava", *api)
    platform.vamp("scale", "sava/sava/sava:1.0.0", "3", *api)
    platform.wait_until(lambda: len(targets(platform, OLD_ROUTE)) == 3, READY_TIMEOUT, "three instances routed")
    victim = services(platform)["sava:1.0.0"]["instances"][1]
    address = f"127.0.0.1:{victim['ports']['webport']}"

    def victim_now() -> dict:
        found = [i for i in services(platform)["sava:1.0.0"]["instances"] if i["name"] == victim["name"]]
        assert len(found) == 1, found
        return found[0]

    def restarted_and_ready() -> bool:
        instance = victim_now()
        return instance["restarts"] == 1 and instance["state"] == "ready"

    with LoadGenerator(port, connections=2, seconds=40) as load:
        load.wait_for_responses(20)
        platform.listening_process(victim["ports"]["webport"]).kill()
        platform.wait_until(lambda: address not in targets(platform, OLD_ROUTE), READY_TIMEOUT,
                            f"the crashed instance's target {address} out of the gateway")
        platform.wait_until(restarted_and_ready, READY_TIMEOUT, f"{victim['name']} restarted and ready")
        restarted = victim_now()
        platform.wait_until(lambda: f"127.0.0.1:{restarted['ports']['webport']}" in targets(platform, OLD_ROUTE),
                            READY_TIMEOUT, "the restarted instance routed again")
        assert len(targets(platform, OLD_ROUTE)) == 3
        load.pause()            # the probe alone takes the round-robin's turns, so it meets every instance
        _, reached = probe(port, 9, new_connections=True)
        load.resume()
        assert victim["name"] in reached and len(reached) == 3, reached
        load.wait_for_responses(20)
    # only a request in flight on the instance when it was killed may fail: at most one per connection
    assert len(load.failures) <= load.connections, load.failures
    assert set(load.versions()) == {"1.0.0"}


# -- README.md's YAML examples -----------------------------------------------------------------------------
YAML_BLOCK = re.compile(r"^([ \t]*)```ya?ml[ \t]*\n(.*?)^\1```", re.MULTILINE | re.DOTALL)


def readme_yaml_blocks() -> list:
    """(line, text) of every ```yaml block of README.md (also indented ones, in a list), as test parameters
    named by the line."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = []
    for match in YAML_BLOCK.finditer(text):
        line = text.count("\n", 0, match.start()) + 2
        blocks.append(pytest.param(line, textwrap.dedent(match.group(2)), id=f"README.md line {line}"))
    return blocks


def make_files_it_names(document: dict, directory: Path) -> None:
    """The files a gateway configuration names (certificates, CA files, access logs), made in `directory` (the
    working directory): validation reads them, and an example names them as a user's would."""
    ca = trustme.CA()
    for gateway in (document.get("gateways") or {}).values():
        paths = [(c["cert"], c["key"]) for c in ((gateway.get("tls") or {}).get("certificates") or [])]
        for cert, key in paths:
            issued = ca.issue_cert("example.test")
            for name, blob in ((cert, b"".join(b.bytes() for b in issued.cert_chain_pems)),
                               (key, issued.private_key_pem.bytes())):
                (directory / name).parent.mkdir(parents=True, exist_ok=True)
                (directory / name).write_bytes(blob)
        for ca_file in ((gateway.get("tls") or {}).get("client_ca"), (gateway.get("upstream_tls") or {}).get("ca")):
            if ca_file:
                (directory / ca_file).parent.mkdir(parents=True, exist_ok=True)
                ca.cert_pem.write_to_path(str(directory / ca_file))
        log = (gateway.get("access_log") or {}).get("path")
        if log and log != "-":
            (directory / log).parent.mkdir(parents=True, exist_ok=True)


@pytest.mark.parametrize("line, text", readme_yaml_blocks())
def test_readme_yaml_examples_load(line, text, tmp_path, monkeypatch):
    documents = [d for d in yaml.safe_load_all(text) if d is not None]
    if any(isinstance(d, dict) and "kind" in d for d in documents):
        assert dsl.read_text(text), f"README.md line {line}: no document"
    elif all(isinstance(d, dict) and "clusters" in d for d in documents) and documents:
        for document in documents:
            dsl.read("blueprints", document)
    elif len(documents) == 1 and isinstance(documents[0], dict) and "gateways" in documents[0]:
        monkeypatch.chdir(tmp_path)
        make_files_it_names(documents[0], tmp_path)
        gateway_config.load_text(text, f"README.md line {line}")


# -- README.md's commands ----------------------------------------------------------------------------------
SH_BLOCK = re.compile(r"^([ \t]*)```sh[ \t]*\n(.*?)^\1```", re.MULTILINE | re.DOTALL)
FILE_OPTIONS = ("--config", "-f", "--file")


def readme_vamp_commands() -> list:
    """The arguments of every `vamp …` command in README.md's ```sh blocks (continuation lines joined,
    comments and a trailing `&` dropped), as test parameters named by their line."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    commands = []
    for match in SH_BLOCK.finditer(text):
        first_line = text.count("\n", 0, match.start()) + 2
        lines = textwrap.dedent(match.group(2)).splitlines()
        for offset, line in enumerate(lines):
            words = line.split()
            if not words or words[0] not in ("vamp", ".venv/bin/vamp"):
                continue
            following = offset
            while line.endswith("\\") and following + 1 < len(lines):     # a command continued on the next line
                following += 1
                line = line[:-1] + " " + lines[following]
            args = shlex.split(line, comments=True)[1:]
            if args and args[-1] == "&":                    # run in the background: the shell's, not vamp's
                args.pop()
            commands.append(pytest.param(args,
                                         id=f"README.md line {first_line + offset}: {' '.join(words[:3])}"))
    return commands


@pytest.mark.parametrize("args", readme_vamp_commands())
def test_readme_commands_run_as_written(args):
    parsed = build_parser().parse_args(args)           # an option that does not exist exits 2
    named = [args[i + 1] for i, word in enumerate(args[:-1]) if word in FILE_OPTIONS]
    if args[0] == "deploy":
        named.append(parsed.file)
    for path in named:
        assert (REPO / path).is_file(), f"{path} is not a file of the repository (the commands run from its root)"
    if args[0] != "gateway":            # `vamp gateway --admin HOST:PORT` is where its admin API listens
        assert "--admin" not in args, "API commands take --api (--admin is its deprecated spelling)"
