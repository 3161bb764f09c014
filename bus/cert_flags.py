"""A client certificate's pair of flags (``--<prefix>-cert``, ``--<prefix>-key``), for every process
(`meshbus.bus.process`) and the proxy's bootstrap (`meshbus.proxy.mesh.agent_args`). Apart so that a
proxy worker building its parser imports nothing else (no asyncio: tests/unit/proxy/test_sans_io.py)."""

from __future__ import annotations

import os
from typing import Any


def add_cert_args(parser: Any, prefix: str, envs: tuple[str, str], what: str) -> None:
    """``--<prefix>-cert`` and ``--<prefix>-key``, defaulting to the variables ``envs`` (cert, key)."""
    parser.add_argument(
        f"--{prefix}-cert",
        default=os.environ.get(envs[0]) or None,
        metavar="FILE",
        help=f"{what} (default: ${envs[0]})",
    )
    parser.add_argument(
        f"--{prefix}-key",
        default=os.environ.get(envs[1]) or None,
        metavar="FILE",
        help=f"private key of --{prefix}-cert (default: ${envs[1]})",
    )
