"""A proxy worker imports only the config kinds it builds (bus/config/proxy_kinds.py), not the catalog.

The catalog (bus/config/resources.py) adds the Gateway API, EnvoyFilter, WasmPlugin, WorkloadGroup, ...
pydantic models, several MB of RSS in every worker for kinds a worker never builds.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(60)

CATALOG_ONLY = (
    "meshbus.bus.config.resources",
    "meshbus.bus.config.gateway_api",
    "meshbus.bus.config.workload_group",
    "meshbus.bus.config.extensions",
)


def test_a_worker_does_not_import_the_config_catalog() -> None:
    code = (
        "import sys\n"
        "import meshbus.proxy.adapters.server\n"
        f"print(','.join(n for n in {CATALOG_ONLY!r} if n in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=50)
    assert out.stdout.strip() == "", f"a proxy worker imported {out.stdout.strip()}"
