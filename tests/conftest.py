"""Shared fixtures: a session-wide real nats-server, and a private one for tests that kill it.

Two plugins guard the whole suite: tests/support/timeouts.py makes pytest-timeout's per-test timeout
(pyproject: 60 s unless a test says otherwise) fire inside async fixture teardown too, naming what the
event loop waited for; tests/support/children.py fails an integration or end-to-end test that leaves a
child process behind.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from meshbus.bus import BusConnection, BusSettings
from meshbus.bus.embedded import EmbeddedNats
from tests.support import build, children
from tests.support.bounded import within
from tests.support.children import reaps_its_processes  # noqa: F401  (autouse: runs for every test)
from tests.support.nats_server import start_server

pytest_plugins = ["tests.support.timeouts"]

ROOT = Path(__file__).resolve().parents[1]


def pytest_report_header() -> str:
    built = "compiled (mypyc)" if build.compiled(build.native_modules()[0]) else "pure Python"
    return f"meshbus: {built} build"


def pytest_configure(config: pytest.Config) -> None:
    """Refuse to test another build than the one asked for, or extensions older than their sources."""
    want = build.build_under_test()
    if want not in ("", "native", "pure"):
        pytest.exit(f"meshbus: {build.BUILD_ENV} must be native or pure (got {want!r})", returncode=4)
    if want:
        wrong = [m for m in build.native_modules() if build.compiled(m) != (want == "native")]
        if wrong:
            named = ", ".join(wrong[:3]) + (f" and {len(wrong) - 3} more" if len(wrong) > 3 else "")
            pytest.exit(
                f"meshbus: {build.BUILD_ENV}={want}, but {named} "
                + ("are not compiled: run `make native`" if want == "native" else "are compiled")
                + " (`make test` runs both builds)",
                returncode=4,
            )
    if want == "pure":
        return  # the extensions next to the sources are not what this run imports
    stale = [
        str(src.relative_to(ROOT))
        for part in ("proxy", "telemetry", "bus", "plugins")
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
    assert server.pid is not None
    children.session_owned.add(server.pid)
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
    await within("the test's bus connection to close", conn.close())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if build.build_under_test() == "pure":  # the others ran in the compiled run: see build.PURE_RUN
        same = [item for item in items if not build.in_pure_run(item.path)]
        if same:
            config.hook.pytest_deselected(items=same)
            items[:] = [item for item in items if build.in_pure_run(item.path)]
    # Tests live in unit/, integration/ and e2e/; the folder is the marker.
    for item in items:
        path = str(item.path)
        for marker in ("unit", "integration", "e2e"):
            if f"/tests/{marker}/" in path:
                item.add_marker(getattr(pytest.mark, marker))
