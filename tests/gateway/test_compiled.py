"""The optional compiled build of the hot path (gateway/compiled.py): the compiled modules run only when they all
match their sources; an edited source, a missing module or VAMP_PURE runs the Python source instead, all of it.
The last test builds it for real (mypyc and a C compiler; skipped without them) in a copy of the tree, runs the
proxy's protocol tests and the access log's against the compiled modules, and installs a wheel of the built tree."""
from __future__ import annotations

import importlib.machinery
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.compiled import MODULES, RUNTIME, SourceFirst, decide, digest, runtime_version, source_of

REPO = Path(__file__).resolve().parents[2]
SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


def fake_build(root: Path, modules: tuple[str, ...], *, compiled: tuple[str, ...] | None = None) -> Path:
    """Sources for `modules`, a (fake) extension file beside those in `compiled`, and the manifest of a build."""
    for module in modules:
        source = source_of(module, root)
        source.parent.mkdir(parents=True, exist_ok=True)
        source.write_text(f"NAME = {module!r}\n")
    for module in modules if compiled is None else compiled:
        source_of(module, root).with_suffix(SUFFIX).write_bytes(b"not really an extension")
    manifest = root / "compiled.json"
    built = {module: digest(source_of(module, root)) for module in modules}
    manifest.write_text(json.dumps({**built, RUNTIME: runtime_version()}))
    return manifest


MODS = ("pkg.one", "pkg.sub.two")


def test_without_a_build_the_source_runs(tmp_path):
    for module in MODS:
        source_of(module, tmp_path).parent.mkdir(parents=True, exist_ok=True)
        source_of(module, tmp_path).write_text("")
    assert decide(tmp_path, MODS, tmp_path / "compiled.json", {}) == "no compiled build"


def test_a_build_that_matches_every_source_runs(tmp_path):
    manifest = fake_build(tmp_path, MODS)
    assert decide(tmp_path, MODS, manifest, {}) is None


def test_an_edited_source_runs_the_source_and_says_which(tmp_path):
    manifest = fake_build(tmp_path, MODS)
    with source_of("pkg.sub.two", tmp_path).open("a") as source:
        source.write("EDITED = True\n")
    reason = decide(tmp_path, MODS, manifest, {})
    assert reason is not None and "pkg.sub.two" in reason and "pkg.one" not in reason and "make compile" in reason


def test_a_partial_build_or_one_without_its_manifest_runs_the_source(tmp_path):
    manifest = fake_build(tmp_path, MODS, compiled=("pkg.one",))
    assert "lacks pkg.sub.two" in decide(tmp_path, MODS, manifest, {})
    manifest.unlink()
    for module in MODS:
        source_of(module, tmp_path).with_suffix(SUFFIX).write_bytes(b"")
    assert "compiled.json" in decide(tmp_path, MODS, manifest, {})


def test_a_build_against_another_librt_runs_the_source(tmp_path):
    """librt upgraded (or downgraded) after the build: its compiled interface may not be the one the build
    expects, and a failed import would stop the gateway; the source runs until `make compile`."""
    manifest = fake_build(tmp_path, MODS)
    built = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**built, RUNTIME: "0.0.1"}))
    reason = decide(tmp_path, MODS, manifest, {})
    assert reason is not None and "librt 0.0.1" in reason and str(runtime_version()) in reason
    manifest.write_text(json.dumps({module: built[module] for module in MODS}))       # a build from before librt
    assert "librt None" in decide(tmp_path, MODS, manifest, {})


@pytest.mark.parametrize("variable", ["VAMP_PURE", "VAMP_CHECK_STATES"])
def test_asking_for_the_source_or_for_state_checks_runs_the_source(tmp_path, variable):
    manifest = fake_build(tmp_path, MODS)
    assert variable in decide(tmp_path, MODS, manifest, {variable: "1"})


def test_the_source_first_finder_imports_the_py_beside_a_compiled_file(tmp_path, monkeypatch):
    fake_build(tmp_path, ("srcfirst.mod",))             # an "extension" that would not load
    monkeypatch.syspath_prepend(str(tmp_path))
    finder = SourceFirst({"srcfirst.mod": source_of("srcfirst.mod", tmp_path)})
    monkeypatch.setattr(sys, "meta_path", [finder, *sys.meta_path])
    for name in ("srcfirst", "srcfirst.mod"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    import srcfirst.mod
    assert srcfirst.mod.NAME == "srcfirst.mod" and srcfirst.mod.__file__.endswith(".py")


def test_the_gateway_lists_real_modules():
    assert all(source_of(module).exists() for module in MODULES)


# -- the real build ------------------------------------------------------------------------------------------------

def can_compile() -> str | None:
    try:
        import mypyc.build  # noqa: F401
    except ImportError:
        return "mypyc (mypy) is not installed"
    if shutil.which(os.environ.get("CC", "cc")) is None:
        return "no C compiler"
    return None


def run(tree: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "PYTHONPATH": str(tree), "VAMP_CHECK_STATES": "", "VAMP_PURE": "", **(env or {})}
    return subprocess.run([sys.executable, *args], cwd=tree, env=environ, capture_output=True, text=True,
                          timeout=600)


WHERE = "import gateway, gateway.proxy.client as c; print(gateway.compiled.mode); print(c.__file__)"


@pytest.mark.skipif(can_compile() is not None, reason=f"cannot build here: {can_compile()}")
def test_the_compiled_build_serves_the_protocol_tests_travels_in_a_wheel_and_gives_way_to_an_edited_source(
        tmp_path):
    tree = tmp_path / "tree"
    skip = shutil.ignore_patterns("__pycache__", f"*{SUFFIX}", "compiled.json", "*.so")
    for part in ("gateway", "control", "loadtest", "tests"):
        shutil.copytree(REPO / part, tree / part, ignore=skip)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, tree / name)

    built = run(tree, "-m", "gateway.compile", "build", env={"VAMP_COMPILE_OPT_LEVEL": "0"})  # (3x quicker)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    where = run(tree, "-c", WHERE)
    mode, module_file = where.stdout.split()
    assert mode == "compiled" and module_file.endswith(SUFFIX), where.stdout + where.stderr

    tests = run(tree, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/gateway/test_proxy_protocols.py",
                "tests/gateway/test_request_head.py", "tests/gateway/test_response_head.py",
                "tests/gateway/test_access_log.py")
    assert tests.returncode == 0, tests.stdout[-3000:]

    # A wheel made from the built tree carries the build (the Dockerfile installs one), and runs it installed.
    wheel = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "-w", str(tmp_path / "dist"), str(tree)], capture_output=True, text=True, timeout=300)
    assert wheel.returncode == 0, wheel.stdout[-2000:] + wheel.stderr[-2000:]
    (made,) = (tmp_path / "dist").glob("*.whl")
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                                str(tmp_path / "site"), str(made)], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr[-2000:]
    where = subprocess.run([sys.executable, "-c", WHERE], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                           env={**os.environ, "PYTHONPATH": str(tmp_path / "site"), "VAMP_CHECK_STATES": "",
                                "VAMP_PURE": ""})
    mode, module_file = where.stdout.split()
    assert mode == "compiled" and module_file.startswith(str(tmp_path / "site")), where.stdout + where.stderr

    with (tree / "gateway" / "proxy" / "upstream.py").open("a") as source:
        source.write("\n# edited after the build\n")
    where = run(tree, "-c", WHERE)
    assert where.stdout.splitlines()[1].endswith("client.py"), where.stdout
    assert "gateway.proxy.upstream changed since the build" in where.stdout
    assert "the compiled hot path is not used" in where.stderr
    assert run(tree, "-c", WHERE, env={"VAMP_PURE": "1"}).stdout.splitlines()[1].endswith("client.py")


def test_the_proxy_is_right_without_the_state_checks_too():
    """The suite runs with VAMP_CHECK_STATES, whose checks raise inside the protocols: the proxy must not depend
    on them (a 101 nobody asked for once completed an exchange with nothing sent, and only the checks made it
    a 502). The protocol tests again, unchecked, from the Python source."""
    tests = run(REPO, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/gateway/test_proxy_protocols.py",
                "tests/gateway/test_request_head.py", env={"VAMP_PURE": "1"})
    assert tests.returncode == 0, tests.stdout[-3000:]
