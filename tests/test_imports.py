"""Structure rules: every module imports alone; sans-IO cores import no asyncio/nats;
only bus/subjects.py spells subjects; the package dependency direction holds."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.build import build_under_test, native_modules

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["bus", "proxy", "plugins", "control", "telemetry"]

# Modules that must stay sans-IO (STYLE E1): no asyncio, no nats, no sockets. The proxy keeps its own
# list, of the modules that may do I/O: tests/unit/proxy/test_sans_io.py.
SANS_IO = [
    "bus/codec.py",
    "bus/subjects.py",
    "bus/errors.py",
    "bus/spiffe.py",
    "control/config/plan.py",
    "control/config/admission.py",
    "control/config/kinds.py",
    "control/config/manifest.py",
    "control/discovery/debounce.py",
    "control/discovery/push_queue.py",
    "control/discovery/push_request.py",
    "control/discovery/acks.py",
    "control/discovery/registry.py",
    "control/discovery/generate.py",
    "control/discovery/model.py",
    "telemetry/metrics.py",
]
FORBIDDEN_IN_SANS_IO = {"asyncio", "nats", "socket", "uvloop", "selectors"}

# Who may import whom (ARCHITECTURE.md "Packages and layout").
ALLOWED = {
    "bus": set(),
    "telemetry": {"bus"},
    "plugins": {"bus"},
    "proxy": {"bus", "plugins", "telemetry"},
    "control": {"bus", "plugins", "telemetry"},
}


def _modules() -> list[str]:
    names = []
    for pkg in PACKAGES:
        mod = importlib.import_module(f"meshbus.{pkg}")
        names.append(mod.__name__)
        for info in pkgutil.walk_packages(mod.__path__, prefix=f"meshbus.{pkg}."):
            names.append(info.name)
    return names


def _sources() -> list[Path]:
    return [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]


def _imported(tree: ast.AST) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


@pytest.mark.timeout(180)
def test_every_module_imports_alone() -> None:
    mods = [m for m in _modules() if not m.endswith("__main__")]
    if build_under_test() == "pure":  # the others are the same files in both runs: once is enough
        mods = [m for m in mods if m in native_modules()]
    code = "import importlib,sys\nimportlib.import_module(sys.argv[1])\n"

    def try_import(mod: str) -> str | None:
        r = subprocess.run([sys.executable, "-c", code, mod], capture_output=True, text=True, timeout=60)
        return None if r.returncode == 0 else f"{mod} does not import alone:\n{r.stderr}"

    # One fresh interpreter per module catches import cycles and missing imports that
    # a shared interpreter would hide; a few at a time keeps it quick.
    with ThreadPoolExecutor(max_workers=4) as pool:
        failures = [f for f in pool.map(try_import, mods) if f]
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("rel", SANS_IO)
def test_sans_io_modules_import_no_io(rel: str) -> None:
    path = ROOT / rel
    if not path.exists():
        pytest.skip(f"{rel} not written yet")
    roots = {name.split(".")[0] for name in _imported(ast.parse(path.read_text()))}
    assert not roots & FORBIDDEN_IN_SANS_IO, f"{rel} imports {roots & FORBIDDEN_IN_SANS_IO}"


_SUBJECT_LITERAL = re.compile(r"""["'](mesh|\$SRV|\$KV|\$JS)\.[A-Za-z>*]""")


def test_no_subject_literals_outside_subjects_module() -> None:
    offenders = []
    for path in _sources():
        if path == ROOT / "bus" / "subjects.py":
            continue
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            if _SUBJECT_LITERAL.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{lineno}: {line.strip()}")
    assert not offenders, "subjects must be built in bus/subjects.py:\n" + "\n".join(offenders)


def test_dependency_direction() -> None:
    offenders = []
    for path in _sources():
        pkg = path.relative_to(ROOT).parts[0]
        for name in _imported(ast.parse(path.read_text())):
            parts = name.split(".")
            if parts[0] == "meshbus" and len(parts) > 1 and parts[1] != pkg:
                if parts[1] not in ALLOWED[pkg]:
                    offenders.append(f"{path.relative_to(ROOT)} imports {name}")
            if parts[0] == "tests":
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, "\n".join(offenders)
