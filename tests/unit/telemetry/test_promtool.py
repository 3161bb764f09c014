"""Cross-check the exposition with Prometheus's own linter when it is installed.

Not marked ``unit``: it runs a process (promtool reads the text on stdin; no sockets).
"""

from __future__ import annotations

import math
import shutil
import subprocess

import pytest

from meshbus.telemetry.exposition import render_prometheus

from .test_exposition import _mesh_registry


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (Debian: prometheus)")
def test_promtool_accepts_the_exposition() -> None:
    r, _ = _mesh_registry()
    r.counter("esc_total", "help with \\ and\nnewline", ("v",)).labels('a"b\\c\nd').inc()
    r.gauge("nan_value", "h").set(math.nan)
    out = subprocess.run(
        ["promtool", "check", "metrics"],
        input=render_prometheus(r),
        capture_output=True,
        text=True,
        timeout=30,
    )
    problems = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    # Istio's own metric name carries its unit; that naming lint is the only finding allowed.
    assert all('use base unit "seconds"' in p for p in problems), problems
    assert out.returncode in (0, 3), out
