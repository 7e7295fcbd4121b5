"""The import rules between Vamp's parts (docs/architecture.md, "Dependency rules"), read from the source
itself: every import statement of every .py file, relative ones resolved, `from package import module`
counted as importing the module. Type-only imports (`if TYPE_CHECKING:`) count too: a rule about which
part may know about which holds for types as well."""
from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import gateway

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("gateway", "control", "loadtest")     # what is installed; benchmarks/ holds scripts

# What the gateway offers other parts: its surface (gateway/__init__.py) and what all of Vamp shares.
PUBLIC = ("gateway", "gateway.common")
# Imports that break a rule and are being removed: (file, module). Each must still be there: when it goes,
# delete it here.
PENDING: set[tuple[str, str]] = set()

HOT_PATH = ("gateway.proxy", "gateway.routing")
NOT_FOR_THE_HOT_PATH = ("gateway.admin", "gateway.runtime", "gateway.cli", "gateway.common.cli",
                        "gateway.demo", "gateway.__main__", "gateway.ui")
# The configuration validates conditions with the condition language itself, and certificate files with the TLS
# room's reader.
CONFIG_MAY_IMPORT = ("gateway.config", "gateway.common", "gateway.routing.conditions", "gateway.tls.certificates")


@dataclass(frozen=True)
class Import:
    file: str       # relative to the repository, e.g. "gateway/proxy/client.py"
    line: int
    module: str     # absolute dotted name, e.g. "gateway.routing.request"

    def __str__(self) -> str:
        return f"{self.file}:{self.line} imports {self.module}"


def python_files(*tops: str) -> list[Path]:
    return sorted(path for top in tops if (ROOT / top).is_dir() for path in (ROOT / top).rglob("*.py")
                  if "__pycache__" not in path.parts)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(dotted: str) -> bool:
    base = ROOT.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imports_of(path: Path) -> list[Import]:
    name = module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    file = path.relative_to(ROOT).as_posix()
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=file)):
        if isinstance(node, ast.Import):
            found += [Import(file, node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                submodule = f"{module}.{alias.name}"
                found.append(Import(file, node.lineno, submodule if is_module(submodule) else module))
    return found


def imports_in(*tops: str) -> list[Import]:
    return [found for path in python_files(*tops) for found in imports_of(path)]


def within(module: str, *packages: str) -> bool:
    return any(module == package or module.startswith(package + ".") for package in packages)


def report(broken: list[Import], rule: str) -> str:
    return f"{rule}:\n  " + "\n  ".join(str(found) for found in broken)


def unless_pending(broken: list[Import]) -> list[Import]:
    return [found for found in broken if (found.file, found.module) not in PENDING]


def test_the_rules_see_the_code():
    """Guards the rules below against passing because they read nothing."""
    assert len(python_files("gateway")) > 30 and len(python_files("control")) > 10
    assert any(found.module == "gateway.routing.request" for found in imports_in("gateway/proxy"))


def test_the_gateway_imports_neither_the_control_plane_nor_the_load_tester_nor_benchmarks():
    broken = [found for found in imports_in("gateway") if within(found.module, "control", "loadtest", "benchmarks")]
    assert not broken, report(broken, "gateway/ must stay usable on its own")


def test_no_product_code_imports_benchmarks():
    broken = unless_pending([found for found in imports_in(*PRODUCT) if within(found.module, "benchmarks")])
    assert not broken, report(broken, "benchmarks/ holds scripts, and is not installed")


def test_the_control_plane_and_the_load_tester_use_only_the_gateways_public_surface():
    broken = [found for found in imports_in("control", "loadtest")
              if within(found.module, "gateway") and found.module not in PUBLIC
              and not within(found.module, "gateway.common")]
    assert not broken, report(broken, "import the gateway through `gateway` (gateway/__init__.py: add the name to "
                                      "its surface) or `gateway.common`")


def test_the_hot_path_imports_neither_the_runtime_nor_the_admin_api_nor_the_command_line():
    broken = [found for found in imports_in(*(package.replace(".", "/") for package in HOT_PATH))
              if within(found.module, *NOT_FOR_THE_HOT_PATH)]
    assert not broken, report(broken, "proxy/ and routing/ are the hot path: they are driven by the runtime and "
                                      "know nothing above it (describe what you need as a Protocol, like "
                                      "gateway.proxy.host.ProxyHost)")


def test_the_configuration_imports_only_common_and_the_condition_language():
    broken = [found for found in imports_in("gateway/config")
              if within(found.module, "gateway") and not within(found.module, *CONFIG_MAY_IMPORT)]
    assert not broken, report(broken, "gateway.config may import only gateway.common, "
                                      "gateway.routing.conditions and gateway.tls.certificates")


def test_the_gateways_own_modules_never_import_its_public_surface():
    """The surface imports the rooms; a room importing the surface back would be an import cycle."""
    broken = [found for found in imports_in("gateway") if found.module == "gateway"
              and found.file != "gateway/__init__.py"]
    assert not broken, report(broken, "inside gateway/, import the module that defines the name")


def test_every_pending_exception_is_still_needed():
    present = {(found.file, found.module) for found in imports_in(*PRODUCT)}
    stale = sorted(PENDING - present)
    assert not stale, f"no longer imported, delete from PENDING in tests/test_layout.py: {stale}"


def test_every_name_of_the_public_surface_is_there():
    missing = [name for name in gateway.__all__ if getattr(gateway, name, None) is None]
    assert not missing and len(set(gateway.__all__)) == len(gateway.__all__), missing


def test_importing_the_public_surface_loads_neither_the_servers_nor_aiohttp():
    """`vamp gateway ls` and the control plane's CLI import it: the runtime, the hot path and the admin
    API are loaded on first use of their names, not with the surface."""
    code = ("import sys, gateway\n"
            "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in ('aiohttp', 'asyncio', 'uvloop')\n"
            "      or m.startswith(('gateway.runtime', 'gateway.proxy', 'gateway.admin')))))")
    completed = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    loaded = completed.stdout.split()
    assert not loaded, f"`import gateway` loads {loaded}: import it in gateway/__init__.py's _LATER instead"
