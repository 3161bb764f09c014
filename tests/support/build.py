"""Which meshbus build a test run imports: the mypyc extensions (setup.py) or the pure-Python sources.

`make test` runs the suite against both, each run naming its build in MESHBUS_TEST_BUILD (the
Makefile's pytest targets set it; tests/conftest.py checks it). The compiled run runs every test. The
pure run runs the tests of the compiled modules' behaviour, PURE_RUN says which and why: the rest
runs the same code in both builds (only setup.py's NATIVE_MODULES differ), so once is enough.
"""

from __future__ import annotations

import ast
import importlib
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD_ENV = "MESHBUS_TEST_BUILD"

# NATIVE_MODULES are the proxy's request path (proxy/core, codec, filters, the I/O adapters, tls/stream),
# telemetry's records, bus/config/hosts.py, the authorization decisions (bus/config/authz), and what
# runs user filters in the proxy (plugins/http.py, proxy/filters/plugins/adapter.py) or calls and serves
# remote ones (proxy/filters/plugins/remote.py, plugins/remote/wire.py and host.py, and the bus's
# reading and writing of their messages, bus/inline.py and bus/direct.py: test_direct.py pins them on a real nats-server). The proxy's,
# telemetry's and plugins' tests drive them directly, test_hosts.py the host rules, test_authz_* the
# authorization tables; the import check imports each compiled module's source alone. A few end-to-end
# tests drive them in real sidecar processes (the processes inherit the pure PYTHONPATH): routing
# weights, mTLS between sidecars, forked workers, a sidecar restarted from its saved snapshot, plugins
# applied to live traffic.
# Control-plane, config-language, bus and CLI tests touch the compiled modules at most in passing
# (analysis resolves hosts), so they run once, in the compiled run.
PURE_RUN = (
    "tests/unit/proxy/",
    "tests/integration/proxy/",
    "tests/unit/telemetry/",
    "tests/unit/plugins/",
    "tests/integration/plugins/",
    "tests/integration/bus/test_direct.py",
    "tests/unit/config/test_hosts.py",
    "tests/unit/config/test_authz_normalize.py",
    "tests/unit/config/test_authz_engine.py",
    "tests/test_imports.py",
    "tests/fuzz/test_fuzz_http1.py",  # the codec is compiled: fuzz both builds
    "tests/e2e/test_traffic_shift.py",
    "tests/e2e/test_mtls_sidecars.py",
    "tests/e2e/test_proxy_workers.py",
    "tests/e2e/test_sidecar_lifecycle.py",
    "tests/e2e/test_plugins.py",
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


def in_pure_run(path: Path) -> bool:
    rel = path.resolve().relative_to(ROOT).as_posix()
    return any(rel == p or rel.startswith(p) for p in PURE_RUN)
