"""How Vamp is installed and shipped: `make run` installs only when pyproject.toml changed, the package metadata
builds without setuptools warnings, the image's HEALTHCHECK follows the admin API's /health, and the container
example (examples/container/) is a configuration the gateway accepts, listening on every address, with the
admin API's token from a file."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from control.cli import build_parser
from gateway.config.load import load_file
from tests.support import LOOPBACK, config, free_port, gateway, route

REPO = Path(__file__).resolve().parents[1]
CONTAINER = REPO / "examples" / "container"


# -- make: install only when pyproject.toml changed --------------------------------------------------------
@pytest.fixture
def project(tmp_path) -> Path:
    """The Makefile and pyproject.toml in a folder of their own, with a venv that looks created."""
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(REPO / name, tmp_path / name)
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.touch()
    return tmp_path


def planned(project: Path, target: str) -> str:
    """What `make TARGET` would run (make -n)."""
    completed = subprocess.run(["make", "-n", target], cwd=project, capture_output=True, text=True, timeout=30)
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


def age(path: Path, seconds_ago: float) -> None:
    when = path.stat().st_mtime - seconds_ago
    os.utime(path, (when, when))


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_run_installs_only_when_pyproject_changed(project):
    assert "pip install -q -e ." in planned(project, "run")            # never installed in this venv
    (project / ".venv" / ".installed").touch()
    age(project / "pyproject.toml", 60)
    again = planned(project, "run")
    assert "pip install" not in again and "vamp run" in again
    (project / "pyproject.toml").touch()                               # edited after the last install
    assert "pip install -q -e ." in planned(project, "run")


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_test_installs_the_test_extra_once_and_that_serves_make_run_too(project):
    assert "pip install -q -e '.[test]'" in planned(project, "install-test")
    for stamp in (".installed-test", ".installed"):
        (project / ".venv" / stamp).touch()
    age(project / "pyproject.toml", 60)
    assert "pip install" not in planned(project, "install-test")
    assert "pip install" not in planned(project, "install")


def test_the_package_metadata_builds_without_setuptools_warnings():
    """What `pip install -e .` reads from pyproject.toml, with every warning an error (a license table, for
    one, is deprecated since setuptools 77)."""
    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"setuptools {setuptools.__version__} predates SPDX license expressions")
    code = ("from setuptools.config.pyprojecttoml import apply_configuration\n"
            "from setuptools.dist import Distribution\n"
            "apply_configuration(Distribution(), 'pyproject.toml')\n")
    completed = subprocess.run([sys.executable, "-W", "error", "-c", code], cwd=REPO, capture_output=True,
                               text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr


def test_benchmarks_are_not_installed_and_the_load_tester_s_dependencies_are_an_extra():
    """A gateway-only install (`pip install vamp`) gets the load tester's code but not scipy, matplotlib,
    hdrhistogram or rich: those come with `vamp[loadtest]`, which the test extra includes."""
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution
    dist = apply_configuration(Distribution(), REPO / "pyproject.toml")

    def names(requirements: list[str]) -> set[str]:
        return {re.match(r"[A-Za-z0-9._-]+", requirement).group().lower() for requirement in requirements}
    assert {"gateway", "control", "loadtest"} <= set(dist.packages)
    assert not [package for package in dist.packages if package.split(".")[0] == "benchmarks"]
    assert "*.json" in dist.package_data["loadtest"] and (REPO / "loadtest" / "result.schema.json").is_file()
    shipped = dist.package_data["gateway.ui"]          # the web UI's files (docs/ui.md) are package data
    ui = REPO / "gateway" / "ui"
    assert {path.relative_to(ui).as_posix() for pattern in shipped for path in ui.glob(pattern)} == \
        {path.relative_to(ui).as_posix() for path in (ui / "static").rglob("*") if path.is_file()}
    assert (ui / "static" / "index.html").is_file() and (ui / "static" / "js" / "app.js").is_file()
    heavy = {"scipy", "matplotlib", "hdrhistogram", "rich"}
    assert not names(dist.install_requires) & heavy
    assert heavy <= names(dist.extras_require["loadtest"])
    assert "vamp[loadtest]" in dist.extras_require["test"]


# -- the image -----------------------------------------------------------------------------------------------
def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile's final stage, continuation lines joined."""
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, arguments = line.partition(" ")
            if keyword.upper() == "FROM":
                instructions = []
            instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def instruction(name: str) -> str:
    found = [arguments for keyword, arguments in dockerfile_instructions() if keyword == name]
    assert len(found) == 1, f"expected one {name} in the final stage, found {len(found)}"
    return found[0]


def health_check_command() -> list[str]:
    """The HEALTHCHECK's command (exec form), after its --interval … options."""
    arguments = instruction("HEALTHCHECK")
    options, cmd, command = arguments.partition(" CMD ")
    assert cmd and all(option.startswith("--") for option in options.split()), arguments
    return json.loads(command)


def health_check(url: str) -> int:
    """Runs the image's health check command here, as Docker would, with VAMP_HEALTH_URL=url."""
    program, *arguments = health_check_command()
    assert program == "python"
    return subprocess.run([sys.executable, *arguments], env={**os.environ, "VAMP_HEALTH_URL": url},
                          capture_output=True, timeout=30).returncode


def test_the_image_runs_the_gateway_with_its_admin_api_where_the_health_check_looks():
    entrypoint, command = json.loads(instruction("ENTRYPOINT")), json.loads(instruction("CMD"))
    assert entrypoint[:2] == ["vamp", "gateway"]
    args = build_parser().parse_args(entrypoint[1:] + command)
    assert args.command == "gateway" and args.admin == "0.0.0.0:9090"
    assert instruction("ENV") == "VAMP_HEALTH_URL=http://127.0.0.1:9090/health"
    assert instruction("USER") == "vamp"


def test_the_health_check_passes_while_the_admin_api_answers_and_fails_when_it_does_not(procs):
    backend = procs.backend("echo", "v1")
    with_token = procs.gateway(config({"g": gateway(free_port(), {"v1": route(backend.address("v1"))})}),
                               extra_args=("--admin-token", "container-token"))
    assert health_check(with_token.admin_url("/health")) == 0           # /health needs no token
    assert health_check(f"http://{LOOPBACK}:{free_port()}/health") != 0  # nothing listens
    assert health_check(with_token.admin_url("/no-such-page")) != 0     # 404


# -- examples/container ------------------------------------------------------------------------------------
def compose() -> dict:
    return yaml.safe_load((CONTAINER / "compose.yaml").read_text())


def test_the_container_gateways_load_and_listen_on_every_address():
    loaded = load_file(CONTAINER / "gateways.yaml")
    assert loaded.gateways, "the example has a gateway"
    services = set(compose()["services"])
    for gw in loaded.gateways:
        assert gw.bind == "0.0.0.0", f"gateway {gw.name} must listen on every address inside a container"
        for target in (t for r in gw.routes for t in r.targets):
            assert target.host in services, f"{target.host} is not a service of compose.yaml"


def test_the_compose_example_gives_the_gateway_its_config_and_a_token_file():
    service = compose()["services"]["gateway"]
    mounted = {volume.split(":")[1]: volume.split(":")[0] for volume in service["volumes"]}
    assert compose()["secrets"]["vamp-token"]["file"] == "./vamp-token"
    assert "examples/container/vamp-token" in (REPO / ".gitignore").read_text().splitlines()   # never committed
    parser = build_parser()
    known = {option for action in parser._subparsers._group_actions[0].choices["gateway"]._actions
             for option in action.option_strings}
    if "--token-file" not in known:
        pytest.skip("this vamp gateway has no --token-file option yet")
    args = parser.parse_args(["gateway", *service["command"]])
    assert (CONTAINER / mounted[args.config]).resolve() == (CONTAINER / "gateways.yaml").resolve()
    assert args.admin.startswith("0.0.0.0:")
    secret = Path(args.token_file)
    assert secret == Path("/run/secrets/vamp-token") and "vamp-token" in service["secrets"]


def test_the_compose_example_s_backends_are_the_demo_service_on_every_address():
    services = compose()["services"]
    for name in ("sava-1-0", "sava-1-1"):
        entrypoint = services[name]["entrypoint"]
        assert entrypoint[:3] == ["python", "-m", "control.demo.sava"]
        assert importlib.util.find_spec(entrypoint[2]) is not None
        assert entrypoint[entrypoint.index("--host") + 1] == "0.0.0.0"
        assert entrypoint[entrypoint.index("--port") + 1] == "8080"


# -- make run and make run-gateway side by side ---------------------------------------------------------------
def test_make_run_and_make_run_gateway_use_different_ports():
    run_api = int(build_parser().parse_args(["run"]).api.rpartition(":")[2])
    quickstart = yaml.safe_load((REPO / "examples" / "sava-1.0.yaml").read_text())
    platform_ports = {run_api, *map(int, quickstart["gateways"])}
    demo = load_file(REPO / "examples" / "gateways.yaml")
    demo_admin = int(build_parser().parse_args(["gateway"]).admin.rpartition(":")[2])
    demo_ports = {demo_admin, *(gw.port for gw in demo.gateways),
                  *(target.port for gw in demo.gateways for r in gw.routes for target in r.targets)}
    assert not platform_ports & demo_ports, f"both take port(s) {sorted(platform_ports & demo_ports)}"
