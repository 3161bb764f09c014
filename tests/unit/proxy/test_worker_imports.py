"""A proxy worker imports only the config kinds it builds (bus/config/proxy_kinds.py), not the catalog,
and the plugin registry only for a LOCAL Plugin.

The catalog (bus/config/resources.py) adds the Gateway API, EnvoyFilter, WasmPlugin, WorkloadGroup, ...
pydantic models, several MB of RSS in every worker for kinds a worker never builds. The plugin registry
reads entry points with importlib.metadata, which imports the email package: ~1.3 MB of idle RSS
(bench/run.py's 100-service worker) in a worker without a Plugin.
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


PLUGIN_LOADING_ONLY = ("meshbus.plugins.registry", "meshbus.plugins.loader", "importlib.metadata", "email")


def _imported_by_a_worker(names: tuple[str, ...]) -> str:
    code = (
        "import sys\n"
        "import meshbus.proxy.adapters.server\n"
        f"print(','.join(n for n in {names!r} if n in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=50)
    return out.stdout.strip()


def test_a_worker_does_not_import_the_config_catalog() -> None:
    imported = _imported_by_a_worker(CATALOG_ONLY)
    assert imported == "", f"a proxy worker imported {imported}"


def test_a_worker_without_a_local_plugin_does_not_load_the_plugin_registry() -> None:
    imported = _imported_by_a_worker(PLUGIN_LOADING_ONLY)
    assert imported == "", f"a proxy worker imported {imported}"
