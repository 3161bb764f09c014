"""Compiles the proxy's request path with mypyc; everything else is configured in pyproject.toml.

The modules below run on every request a proxy forwards. mypyc turns their typed Python into C
extensions (native classes, direct calls, unboxed attributes): measured on the two-sidecar mTLS chain
(bench/mtls.py), CPU per request falls by about a fifth. The sources stay the truth: they are ordinary,
type-checked Python, and ``MESHBUS_PURE_PYTHON=1 pip install -e .`` installs them uncompiled (for
platforms without a C compiler, or to debug with pdb/py-spy inside them).

An editable install (``pip install -e .``, ``make``) builds the extensions next to the sources, where
they shadow the .py files: after editing one of these modules, rebuild with ``make native``. The test
suite refuses to run against an extension older than its source (tests/conftest.py).
"""

from __future__ import annotations

import os
from pathlib import Path

from setuptools import setup

# Request-path modules only: control-plane and startup code gains nothing measurable from compiling.
# Makefile (NATIVE_DIRS, NATIVE_DEPS) and tests/conftest.py look for their extensions in proxy/, telemetry/,
# bus/ and plugins/: keep those in step when a module outside proxy/ and telemetry/ joins the list.
NATIVE_MODULES = [
    "proxy/adapters/listener.py",
    "proxy/adapters/exchange.py",
    "proxy/adapters/upstream.py",
    "proxy/codec/http1.py",
    "proxy/adapters/write_batch.py",
    "proxy/tls/stream.py",
    "proxy/core/cluster.py",
    "proxy/core/lb.py",
    "proxy/core/endpoint.py",
    "proxy/core/outlier.py",
    "proxy/core/routing.py",
    "bus/config/hosts.py",  # the host rules every process shares; routing splits authorities with them
    "bus/inline.py",  # a remote filter call's messages read, on both sides
    "bus/direct.py",  # and written
    "bus/read_end.py",  # and what runs as a read ends (the proxy's resumed requests)
    "proxy/core/match.py",
    "proxy/filters/headerops.py",
    "proxy/core/retry.py",
    "proxy/core/flags.py",
    "proxy/core/breaker.py",
    "proxy/core/attempts.py",
    "proxy/filters/fault.py",
    "proxy/filters/ratelimit.py",
    "proxy/filters/cors.py",
    "proxy/filters/chain.py",
    "proxy/filters/jwt_authn.py",
    "proxy/filters/global_ratelimit.py",
    "bus/config/authz/normalize.py",  # authorization, shared with meshctl authz (bus/config/authz/__init__.py)
    "bus/config/authz/matchers.py",
    "bus/config/authz/engine.py",
    "proxy/filters/authz.py",
    "proxy/filters/authz_stats.py",
    # user filters' view of a request, and the adapter that runs them on the chain
    "plugins/http.py",
    "proxy/filters/plugins/adapter.py",
    # a REMOTE filter's call, both sides: the proxy's backend and the wire maps it packs and reads
    # (bench/remote_filter.py --stages: CPU per call), and the host's per-call serving
    "proxy/filters/plugins/remote.py",
    "plugins/remote/wire.py",
    "plugins/remote/host.py",
    "telemetry/metrics.py",
    "telemetry/accesslog.py",
    "telemetry/rowcolumns.py",  # the bus sink packs access-log rows as columns (one pass a batch)
    "telemetry/logcolumns.py",  # ... or the logger keeps them as columns as requests end
    # the STATS phase, on every request (proxy/filters/observe.py)
    "proxy/filters/observe.py",
    "proxy/filters/stats.py",
    "proxy/filters/tracing.py",
    "proxy/filters/spans.py",
    "telemetry/tracecontext.py",
]
PARTS = ("bus", "proxy", "plugins", "control", "telemetry")


def native_extensions() -> list:
    root = Path(__file__).resolve().parent
    if os.environ.get("MESHBUS_PURE_PYTHON", "") not in ("", "0"):
        # extensions left by an earlier (editable) build would shadow the sources: remove them
        for m in NATIVE_MODULES:
            for ext in (root / m).parent.glob(f"{Path(m).stem}.cpython-*.so"):
                ext.unlink()
        for shared in (root / "proxy").glob("_native__mypyc.cpython-*.so"):
            shared.unlink()
        return []
    from mypyc.build import mypycify

    # mypy names modules after their path: give it a meshbus/<part> view of the five folders, as
    # `make typecheck` does (pyproject's package-dir maps meshbus.<part> to <part>/).
    tree = root / "build" / "mypyc-src"
    pkg = tree / "meshbus"
    pkg.mkdir(parents=True, exist_ok=True)
    for part in PARTS:
        link = pkg / part
        if not link.is_symlink():
            link.symlink_to(root / part, target_is_directory=True)
    os.environ["MYPYPATH"] = str(tree)
    paths = [str(pkg / m) for m in NATIVE_MODULES]
    # pip builds in an isolated environment without meshbus's dependencies. So that `make native` (in
    # the venv, where they are) builds the same extensions, their types are Any in both (the compiled
    # code treats their objects generically either way); that leaves some "type: ignore" comments
    # unused. `make typecheck` is the strict check.
    relaxed = [
        "--ignore-missing-imports",
        "--no-warn-unused-ignores",
        "--follow-imports=silent",
        "--no-site-packages",
    ]
    return mypycify(
        ["--config-file", str(root / "pyproject.toml"), "--explicit-package-bases", *relaxed, *paths],
        # one shared library inside the meshbus namespace, not a hash-named top-level module
        group_name="meshbus.proxy._native",
        target_dir=str(root / "build" / "mypyc"),
        opt_level="3",
    )


setup(ext_modules=native_extensions())
