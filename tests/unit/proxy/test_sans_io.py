"""The traffic-management core imports no asyncio, sockets or NATS (STYLE.md E1)."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

CORE = (
    "runtime routing hosts cluster headerops match retry fault cors ratelimit endpoint breaker outlier lb "
    "build_errors cluster_builder route_builder"
).split()


def test_core_modules_import_no_io() -> None:
    code = (
        "import sys\n"
        f"for m in {CORE!r}: __import__('meshbus.proxy.' + m)\n"
        "print(','.join(sorted(n for n in ('asyncio', 'socket', 'nats', 'uvloop') if n in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30)
    assert out.stdout.strip() == ""
