"""Shared fixtures: a session-wide real nats-server, and a private one for tests that kill it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from meshbus.bus import BusConnection, BusSettings
from meshbus.bus.embedded import EmbeddedNats
from tests.support.nats_server import start_server

ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    """Refuse to test mypyc extensions (setup.py) built from older sources: they shadow the .py files."""
    stale = [
        str(src.relative_to(ROOT))
        for part in ("proxy", "telemetry", "bus")
        for ext in (ROOT / part).rglob("*.cpython-*.so")
        if (src := ext.with_name(ext.name.split(".")[0] + ".py")).exists()
        and src.stat().st_mtime > ext.stat().st_mtime
    ]
    if stale:
        pytest.exit(
            f"meshbus: {', '.join(sorted(stale))} changed after being compiled; run `make native` "
            "(`MESHBUS_PURE_PYTHON=1 make native` removes the extensions to test the sources uncompiled)",
            returncode=4,
        )


@pytest.fixture(scope="session")
def nats_server() -> Iterator[EmbeddedNats]:
    server = start_server()
    yield server
    server.cleanup()


@pytest.fixture
def private_nats() -> Iterator[EmbeddedNats]:
    """A server of the test's own, which the test may kill and restart."""
    server = start_server()
    yield server
    server.cleanup()


@pytest.fixture
def subject_root(request: pytest.FixtureRequest) -> str:
    # One root per test keeps tests that share the session server from hearing each other.
    name = "".join(c if c.isalnum() else "_" for c in request.node.name)[:40]
    return f"t_{name}"


@pytest.fixture
async def bus(nats_server: EmbeddedNats, subject_root: str) -> AsyncIterator[BusConnection]:
    conn = BusConnection(BusSettings(url=nats_server.url, name="test", root=subject_root))
    await conn.connect()
    yield conn
    await conn.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Tests live in unit/, integration/ and e2e/; the folder is the marker.
    for item in items:
        path = str(item.path)
        for marker in ("unit", "integration", "e2e"):
            if f"/tests/{marker}/" in path:
                item.add_marker(getattr(pytest.mark, marker))
