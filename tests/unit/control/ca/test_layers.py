"""The identity code's sans-IO cores import no asyncio, nats or sockets (STYLE E1)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]
SANS_IO = [
    "bus/spiffe.py",
    "bus/schemas/identity.py",
    "control/ca/issuer.py",
    "control/ca/tokens.py",
    "control/ca/validator.py",
    "control/ca/bundle.py",
    "control/ca/durations.py",
    "proxy/tls/contexts.py",
]
FORBIDDEN = {"asyncio", "nats", "socket", "uvloop", "selectors"}


@pytest.mark.parametrize("rel", SANS_IO)
def test_sans_io(rel: str) -> None:
    tree = ast.parse((ROOT / rel).read_text())
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    assert not roots & FORBIDDEN, f"{rel} imports {roots & FORBIDDEN}"
