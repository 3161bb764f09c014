"""Scratch directories of bench runs, removed when the bench exits.

A bench run's directory holds its configs and its processes' logs; the proxies' access logs alone
grow by gigabytes in a pass flat out (bench/plugins.py left ~4 GB a run in /tmp, and a few passes
filled this machine's disk). ``MESHBUS_BENCH_KEEP=1`` keeps them for a look afterwards: each bench
prints its directory.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path


def scratch_dir(prefix: str) -> Path:
    """A new directory under the system's temporary one, removed at exit unless MESHBUS_BENCH_KEEP is set."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if not os.environ.get("MESHBUS_BENCH_KEEP"):
        atexit.register(shutil.rmtree, path, True)
    return path
