"""A proxy worker imports only the config kinds it builds (bus/config/proxy_kinds.py), not the catalog,
the plugin registry only for a LOCAL Plugin, and a CUSTOM authorizer's client only when a runtime with
such a provider goes live (adapters/server.py ``AUTHZ_CLIENTS``).

The catalog (bus/config/resources.py) adds the Gateway API, EnvoyFilter, WasmPlugin, WorkloadGroup, ...
pydantic models, several MB of RSS in every worker for kinds a worker never builds. The plugin registry
reads entry points with importlib.metadata, which imports the email package: ~1.3 MB of idle RSS
(bench/run.py's 100-service worker) in a worker without a Plugin. The authorizers' clients and the bus
message families a worker does not exchange (the NATS client pulled them all in): ~0.7 MB.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from meshbus.proxy.adapters.server import AUTHZ_CLIENTS
from meshbus.proxy.filters.authz_providers import PROVIDER_KINDS

pytestmark = pytest.mark.timeout(60)

CATALOG_ONLY = (
    "meshbus.bus.config.resources",
    "meshbus.bus.config.gateway_api",
    "meshbus.bus.config.workload_group",
    "meshbus.bus.config.extensions",
)


PLUGIN_LOADING_ONLY = ("meshbus.plugins.registry", "meshbus.plugins.loader", "importlib.metadata", "email")

CUSTOM_AUTHZ_ONLY = (
    "meshbus.proxy.adapters.ext_authz_http",
    "meshbus.proxy.adapters.ext_authz_nats",
    "meshbus.bus.schemas.authz",
)
OTHER_PROCESSES_MESSAGES = (  # the families of the control plane's messages, none a file-mode worker sends
    "meshbus.bus.schemas.config",
    "meshbus.bus.schemas.discovery",
    "meshbus.bus.schemas.telemetry",
    "meshbus.bus.schemas.common",
)


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


def test_a_worker_imports_no_authorizer_client_nor_other_message_families() -> None:
    imported = _imported_by_a_worker(CUSTOM_AUTHZ_ONLY + OTHER_PROCESSES_MESSAGES)
    assert imported == "", f"a proxy worker imported {imported}"


def test_every_provider_type_has_a_client_module_that_registers_it() -> None:
    assert set(AUTHZ_CLIENTS) == set(PROVIDER_KINDS)
    code = (
        "import importlib\n"
        "from meshbus.proxy.filters.authz_providers import CLIENT_FACTORIES\n"
        f"for kind, module in {AUTHZ_CLIENTS!r}.items():\n"
        "    importlib.import_module(module)\n"
        "    assert kind in CLIENT_FACTORIES, kind\n"
    )
    subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=50)


SERVE = textwrap.dedent(
    """
    import asyncio, sys
    from meshbus.proxy.adapters.server import ProxyServer
    from meshbus.proxy.bootstrap import Address, BootstrapConfig
    from meshbus.proxy.filters.authz_providers import CLIENT_FACTORIES

    async def main() -> None:
        cfg = BootstrapConfig(sys.argv[1], outbound=Address("127.0.0.1", 0), inbound=None, admin=None,
                              app_port=9080, labels={"app": "shelf"})
        server = ProxyServer(cfg)
        await server.start()
        try:
            loaded = [m for m in sys.argv[2:] if m in sys.modules]
            print(server.runtime.authz_provider_kind(), ",".join(sorted(CLIENT_FACTORIES)), ",".join(loaded), sep="|")
        finally:
            await server.shutdown(0)

    asyncio.run(main())
    """
)

PROVIDER = """apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext-authz, namespace: authz}
spec:
  hosts: [ext-authz.authz.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8181, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1}]
---
apiVersion: meshbus.io/v1
kind: MeshConfig
metadata: {name: mesh, namespace: istio-system}
spec:
  extensionProviders:
  - name: my-authz
    envoyExtAuthzHttp: {service: ext-authz.authz.svc.cluster.local, port: 8181}
---
"""
CUSTOM = """apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext, namespace: default}
spec:
  action: CUSTOM
  provider: {name: my-authz}
  rules: [{to: [{operation: {paths: ["/private/*"]}}]}]
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (PROVIDER, "||"),  # a provider no policy uses: nothing to call
        (PROVIDER + CUSTOM, "envoyExtAuthzHttp|envoyExtAuthzHttp|meshbus.proxy.adapters.ext_authz_http"),
    ],
)
def test_a_custom_providers_client_is_registered_when_its_runtime_goes_live(
    text: str, expected: str, tmp_path: Path
) -> None:
    assert _serve(SERVE, text, tmp_path, CUSTOM_AUTHZ_ONLY) == expected


def _serve(script: str, text: str, tmp_path: Path, modules: tuple[str, ...]) -> str:
    """``script``'s output, run in a fresh interpreter on a config file of ``text``."""
    path = tmp_path / "mesh.yaml"
    path.write_text(text)
    out = subprocess.run(
        [sys.executable, "-c", script, str(path), *modules],
        capture_output=True, text=True, check=True, timeout=50,
    )  # fmt: skip
    return out.stdout.strip()


# What an idle file-mode worker (bench/run.py's idle RSS: meshbus-proxy --config, admin on) no longer
# imports unless its config asks: the global rate limit filter with its lease messages and msgpack
# (builtin.LAZY_FILTERS), the plugin SDK and chain adapter (bindings, on the first Plugin), the
# certificate report and its bus codec (admin, on /certs), tempfile and ctypes.util (__main__, tls).
# Together ~0.7-0.8 MB of that worker's RSS.
IDLE_WORKER_SKIPS = (
    "meshbus.proxy.filters.global_ratelimit",
    "meshbus.bus.schemas.ratelimit",
    "meshbus.bus.codec",
    "msgpack",
    "meshbus.plugins.api",
    "meshbus.proxy.filters.plugins.adapter",
    "meshbus.bus.schemas.identity",
    "meshbus.bus.cert_report",
    "tempfile",
    "ctypes.util",
)

IDLE_WORKER = textwrap.dedent(
    """
    import asyncio, sys
    from meshbus.proxy import __main__ as cli
    from meshbus.proxy.adapters.server import ProxyServer

    cfg, _ = cli.parse_command_line(["--config", sys.argv[1], "--outbound", "127.0.0.1:0", "--inbound",
                                     "127.0.0.1:0", "--app-port", "9080", "--admin", "127.0.0.1:0",
                                     "--workers", "1"])
    cli._tune_malloc()

    async def main() -> None:
        server = ProxyServer(cfg)
        await server.start()
        try:
            print(",".join(m for m in sys.argv[2:] if m in sys.modules))
        finally:
            await server.shutdown(0)

    asyncio.run(main())
    """
)

SERVICE = """apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: shelf}
spec:
  hosts: [shelf.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1, ports: {http: 9080}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shelf}
spec:
  hosts: [shelf]
  http: [{route: [{destination: {host: shelf}}], timeout: 5s, retries: {attempts: 2}}]
"""


def _idle_worker_imports(text: str, tmp_path: Path) -> str:
    return _serve(IDLE_WORKER, text, tmp_path, IDLE_WORKER_SKIPS)


def test_an_idle_file_mode_worker_imports_only_what_its_config_uses(tmp_path: Path) -> None:
    imported = _idle_worker_imports(SERVICE, tmp_path)
    assert imported == "", f"an idle file-mode worker imported {imported}"


RATE_LIMIT = """---
apiVersion: meshbus.io/v1
kind: RateLimit
metadata: {name: per-client}
spec:
  rules: [{limit: {requests: 10, unit: Minute}}]
"""


def test_a_rate_limit_in_the_config_brings_its_filter(tmp_path: Path) -> None:
    imported = _idle_worker_imports(SERVICE + RATE_LIMIT, tmp_path)
    assert "meshbus.proxy.filters.global_ratelimit" in imported.split(",")


def test_the_lazy_filter_names_match_their_modules() -> None:
    from meshbus.proxy.filters import builtin, global_ratelimit

    assert builtin.GLOBAL_RATELIMIT == global_ratelimit.GLOBAL_RATELIMIT
    config_type, factory = builtin.LAZY_FILTERS[builtin.GLOBAL_RATELIMIT]()
    assert (config_type, factory) == (
        global_ratelimit.GlobalRateLimitConfig,
        global_ratelimit.GlobalRateLimitFilter,
    )
