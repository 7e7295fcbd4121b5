"""`python -m gateway.compile build|clean|status` (`make compile`): builds the optional compiled hot path with
mypyc, in place, and writes the manifest that gateway/compiled.py checks at import (see there and
docs/hot-path.md). Needs mypy (the test extra) and a C compiler; the gateway itself needs neither.
`VAMP_COMPILE_OPT_LEVEL` (0-3, default 3) is the C compiler's optimisation level: the tests build at 0, which
compiles in a third of the time and runs the same code, only slower.
"""
from __future__ import annotations

import importlib.machinery
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from gateway.compiled import (GROUP, MANIFEST, MODULES, ROOT, RUNTIME, compiled_files, decide, digest, runtime_version,
                              source_of)


def build() -> None:
    """Compile MODULES in place with mypyc (needs mypy and a C compiler), then write the manifest: each source's
    digest, and the librt version compiled against."""
    from mypyc.build import mypycify              # the test extra's mypy; not needed to run the gateway
    from setuptools import Distribution  # type: ignore[import-untyped]

    clean()
    previous = os.getcwd()
    os.chdir(ROOT)                                 # build_ext --inplace writes beside the sources it finds from here
    try:
        sources = [str(source_of(module).relative_to(ROOT)) for module in MODULES]
        with tempfile.TemporaryDirectory() as scratch:
            # Types only (`make lint` holds the code to the project's strict settings); mypyc fails on any message,
            # notes about the project's settings for other modules included, and a library without type stubs
            # (PyYAML's are the test extra's: the Dockerfile compiles without them).
            config = Path(scratch) / "mypy.ini"
            config.write_text("[mypy]\nignore_missing_imports = True\ndisable_error_code = import-untyped\n")
            # experimental_features: the native operations on librt's BytesWriter (the access log's buffer).
            extensions = mypycify(["--config-file", str(config), *sources], group_name=GROUP,
                                  opt_level=os.environ.get("VAMP_COMPILE_OPT_LEVEL", "3"),
                                  experimental_features=True)
        distribution = Distribution({"name": "vamp-hotpath", "ext_modules": extensions})
        command = distribution.get_command_obj("build_ext")
        command.inplace = True
        distribution.run_command("build_ext")
    finally:
        os.chdir(previous)
    manifest: dict[str, str | None] = {module: digest(source_of(module)) for module in MODULES}
    manifest[RUNTIME] = runtime_version()
    MANIFEST.write_text(json.dumps(manifest, indent=2) + "\n")


def clean() -> None:
    """Remove the compiled files and the manifest (the source runs)."""
    group = ROOT.joinpath(*GROUP.split("."))
    for path in [*(p for module in MODULES for p in compiled_files(module)),
                 *(group.with_name(group.name + "__mypyc" + suffix)
                   for suffix in importlib.machinery.EXTENSION_SUFFIXES), MANIFEST]:
        path.unlink(missing_ok=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["build"]:
        try:
            build()
        except ImportError as error:
            print(f"cannot compile: {error} (the compiled build needs mypy: `make install-test`)", file=sys.stderr)
            return 1
        except SystemExit as error:              # mypyc reports type errors, then exits
            print(f"cannot compile: mypyc failed ({error})", file=sys.stderr)
            return 1
        print(f"compiled {len(MODULES)} modules; status: {decide(ROOT, MODULES, MANIFEST, {}) or 'compiled'}")
        return 0
    if args == ["clean"]:
        clean()
        return 0
    if args == ["status"]:
        print(decide(ROOT, MODULES, MANIFEST, os.environ) or "compiled")
        return 0
    print("usage: python -m gateway.compile build|clean|status", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
