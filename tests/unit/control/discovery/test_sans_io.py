"""The discovery core stays sans-IO (STYLE E1): only the adapters import asyncio or nats."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4] / "control" / "discovery"
ADAPTERS = {"server.py", "config_watch.py", "jwks_watch.py", "versions.py", "client.py", "__main__.py"}
FORBIDDEN = {"asyncio", "nats", "socket", "uvloop", "selectors"}


def _core_modules() -> list[Path]:
    return sorted(p for p in ROOT.glob("*.py") if p.name not in ADAPTERS)


def test_core_module_list_is_not_empty() -> None:
    names = {p.name for p in _core_modules()}
    assert {"debounce.py", "push_queue.py", "acks.py", "registry.py", "generate.py", "model.py"} <= names


@pytest.mark.parametrize("path", _core_modules(), ids=lambda p: p.name)
def test_core_module_imports_no_io(path: Path) -> None:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
            if node.module.startswith("meshbus.bus.") and node.module.split(".")[2] in {
                "connection",
                "rpc",
                "service",
                "kv",
            }:
                roots.add("nats")
    assert not roots & FORBIDDEN, f"{path.name} imports {roots & FORBIDDEN}"
