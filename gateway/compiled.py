"""The optional compiled build of the per-request path: which modules mypyc compiles, and the rule that decides,
at import, whether the compiled modules or their Python source run.

The Python source is the truth; the build only makes it faster (see docs/hot-path.md). `make compile`
(`python -m gateway.compile build`) compiles `MODULES` in place: a `.so` beside each `.py`, which Python's
import prefers, one shared library (`gateway/hotpath__mypyc…so`) and `gateway/compiled.json`, the SHA-256 of
each source as compiled, with the version of `librt` (mypyc's runtime library, whose `BytesWriter` the
access log writes to) compiled against. `gateway/__init__` imports this module first, and on import it decides
(`choose()`): the compiled modules run only when all of them are there, every source is unchanged since the
build and the same `librt` is installed; otherwise the source runs, all of it (a compiled module cannot work
with another's source), and a warning says why. So an edited source is never shadowed by a stale build.
`VAMP_PURE=1`, and `VAMP_CHECK_STATES` (the exchange state checks patch a class, which a compiled class does not
allow), also run the source.
"""
from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.metadata
import importlib.util
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent          # the directory holding the `gateway` package
MANIFEST = ROOT / "gateway" / "compiled.json"
GROUP = "gateway.hotpath"                               # mypyc's shared library: gateway/hotpath__mypyc.*.so
RUNTIME = "librt"                                       # the manifest's key for the librt version compiled against
MODULES = (
    "gateway.proxy.client", "gateway.proxy.upstream", "gateway.proxy.exchange", "gateway.proxy.request_head",
    "gateway.proxy.response_head", "gateway.proxy.flow", "gateway.proxy.wire", "gateway.proxy.stats",
    "gateway.routing.table", "gateway.routing.balancer", "gateway.routing.request", "gateway.routing.conditions",
    "gateway.runtime.access_log",
)

log = logging.getLogger("vamp.compiled")

# What `choose()` decided: "compiled", or why the source runs ("no compiled build", "VAMP_PURE is set", ...).
mode = "not chosen yet"


def source_of(module: str, root: Path = ROOT) -> Path:
    return root.joinpath(*module.split(".")).with_suffix(".py")


def compiled_files(module: str, root: Path = ROOT) -> list[Path]:
    """The extension files of `module` that Python's import would prefer to its source."""
    base = root.joinpath(*module.split("."))
    return [path for suffix in importlib.machinery.EXTENSION_SUFFIXES
            if (path := base.with_name(base.name + suffix)).exists()]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def runtime_version() -> str | None:
    """The installed librt's version: compiled code checks its C interface on import and fails on a mismatch."""
    try:
        return importlib.metadata.version(RUNTIME)
    except importlib.metadata.PackageNotFoundError:
        return None


def decide(root: Path, modules: Sequence[str], manifest: Path, environ: Mapping[str, str]) -> str | None:
    """None when the compiled modules may run; otherwise why the source runs."""
    present = [module for module in modules if compiled_files(module, root)]
    if not present:
        return "no compiled build"
    if environ.get("VAMP_PURE"):
        return "VAMP_PURE is set"
    if environ.get("VAMP_CHECK_STATES"):
        return "VAMP_CHECK_STATES is set (its checks need the source)"
    missing = [module for module in modules if module not in present]
    if missing:
        return f"the compiled build lacks {', '.join(missing)}"
    try:
        built = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return f"the compiled build has no readable {manifest.name}"
    changed = [module for module in modules if built.get(module) != digest(source_of(module, root))]
    if changed:
        return f"the source of {', '.join(changed)} changed since the build (run `make compile` again)"
    installed = runtime_version()
    if built.get(RUNTIME) != installed:
        return (f"the build was compiled against {RUNTIME} {built.get(RUNTIME)}, {installed} is installed "
                f"(run `make compile` again)")
    return None


class SourceFirst(importlib.abc.MetaPathFinder):
    """Imports the listed modules from their `.py`, whatever compiled file lies beside it."""

    def __init__(self, sources: Mapping[str, Path]) -> None:
        self.sources = dict(sources)

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        source = self.sources.get(fullname)
        return None if source is None else importlib.util.spec_from_file_location(fullname, source)


def choose(environ: Mapping[str, str] = os.environ) -> str:
    """Decide once, before the modules are imported, which runs; returns `mode`."""
    global mode
    if mode != "not chosen yet":
        return mode
    reason = decide(ROOT, MODULES, MANIFEST, environ)
    if reason is None:
        mode = "compiled"
        return mode
    mode = f"Python source: {reason}"
    if any(compiled_files(module) for module in MODULES):
        sys.meta_path.insert(0, SourceFirst({module: source_of(module) for module in MODULES}))
        if not environ.get("VAMP_PURE") and not environ.get("VAMP_CHECK_STATES"):
            log.warning("the compiled hot path is not used: %s", reason)
    return mode


choose()            # on import, from gateway/__init__, before any of MODULES is imported
