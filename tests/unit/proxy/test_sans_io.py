"""The proxy's I/O lives in the modules listed here; every other proxy module is sans-IO (STYLE.md E1).

This is the one list of I/O adapters: a new module is sans-IO unless it is added here. Every other
module of the package must not import an I/O module itself (checked in its source), and importing
all of them in one fresh interpreter must not pull in asyncio, uvloop or NATS. (The standard
library's ssl, email and zipfile import socket for their own reasons, so sockets are checked by
source only.)
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

PROXY = Path(__file__).resolve().parents[3] / "proxy"

IO_ADAPTERS = frozenset(
    {
        "__main__",  # the CLI: workers, signals
        "bootstrap",  # reads files, validates YAML in a child interpreter
        "adapters.admin",
        "adapters.exchange",  # the router's I/O glue (its decisions are in core and filters)
        "adapters.ext_authz_http",  # CUSTOM checks over the pools (the filter's part is filters.authz)
        "adapters.ext_authz_nats",  # CUSTOM checks over NATS (meshbusAuthz)
        "adapters.listener",
        "adapters.server",
        "adapters.upstream",
        "adapters.write_batch",
        "tls.mtls",
        "tls.stream",
        "mesh.agent",
        "mesh.bus_auth",  # the bootstrap connection to a secured bus
        "mesh.identity",
        "mesh.mode",
        "mesh.prober",  # the app readiness probe's sockets (its verdicts are in mesh.probe)
        "mesh.ratelimit_client",  # global rate limit leases over NATS (the budgets are in filters)
        "mesh.telemetry_ship",  # publishes metric deltas, spans and access logs (its deltas: telemetry.delta)
        "filters.plugins.adapter",  # user filters' hooks awaited with their timeout, body waits
        "filters.plugins.remote",  # calls to meshbus-filter-host over NATS
        "filters.plugins.bindings",  # instances closed on a loop timer; makes the two above
    }
)
FORBIDDEN = ("asyncio", "nats", "uvloop")
FORBIDDEN_DIRECT = frozenset({"asyncio", "socket", "selectors", "nats", "uvloop", "threading", "subprocess"})


def _modules() -> list[str]:
    out = []
    for path in sorted(PROXY.rglob("*.py")):
        rel = path.relative_to(PROXY).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        out.append(".".join(parts))
    return out


def test_io_adapter_list_names_real_modules() -> None:
    assert IO_ADAPTERS <= set(_modules()), IO_ADAPTERS - set(_modules())


def test_every_other_proxy_module_imports_no_io() -> None:
    sans_io = [m for m in _modules() if m not in IO_ADAPTERS]
    assert "core.routing" in sans_io and "filters.fault" in sans_io and "build.runtime" in sans_io
    code = (
        "import importlib, sys\n"
        f"for m in {sans_io!r}: importlib.import_module(('meshbus.proxy.' + m).rstrip('.'))\n"
        f"print(','.join(sorted(n for n in {FORBIDDEN!r} if n in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30)
    assert out.stdout.strip() == "", f"a sans-IO proxy module imported {out.stdout.strip()}"


@pytest.mark.parametrize("module", [m for m in _modules() if m not in IO_ADAPTERS])
def test_sans_io_module_source_imports_no_io(module: str) -> None:
    path = PROXY / (module.replace(".", "/") + ".py") if module else PROXY / "__init__.py"
    if not path.exists():
        path = PROXY / module.replace(".", "/") / "__init__.py"
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    assert not roots & FORBIDDEN_DIRECT, f"proxy/{path.relative_to(PROXY)} imports {roots & FORBIDDEN_DIRECT}"
