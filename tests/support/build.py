"""Which meshbus build a test run imports: the mypyc extensions (setup.py) or the pure-Python sources.

`make test` runs the suite against both, each run naming its build in MESHBUS_TEST_BUILD (the
Makefile's pytest targets set it; tests/conftest.py checks it). Tests that cannot tell the builds
apart run only in the compiled run: BUILD_INDEPENDENT says which, and why.
"""

from __future__ import annotations

import ast
import importlib
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD_ENV = "MESHBUS_TEST_BUILD"

# bus/ imports no component (tests/test_imports.py checks the direction), so tests of bus/ alone run
# the same code in both builds; the compose file and the suite's own guards involve no meshbus code.
BUILD_INDEPENDENT = (
    "tests/unit/bus/",
    "tests/unit/config/",
    "tests/integration/bus/",
    "tests/test_compose.py",
    "tests/test_suite_guards.py",
)


def build_under_test() -> str:
    """``native``, ``pure``, or ``""`` when the run did not say (a plain ``pytest``)."""
    return os.environ.get(BUILD_ENV, "")


def native_modules() -> list[str]:
    """setup.py's NATIVE_MODULES as module names (read, not imported: importing setup.py runs setup())."""
    for node in ast.parse((ROOT / "setup.py").read_text()).body:
        if isinstance(node, ast.Assign) and any(
            getattr(t, "id", "") == "NATIVE_MODULES" for t in node.targets
        ):
            names: list[str] = ast.literal_eval(node.value)
            return ["meshbus." + p.removesuffix(".py").replace("/", ".") for p in names]
    raise LookupError("NATIVE_MODULES not found in setup.py")


def compiled(module: str) -> bool:
    return not (importlib.import_module(module).__file__ or "").endswith(".py")


def build_independent(path: Path) -> bool:
    rel = path.resolve().relative_to(ROOT).as_posix()
    return any(rel == p or rel.startswith(p) for p in BUILD_INDEPENDENT)
