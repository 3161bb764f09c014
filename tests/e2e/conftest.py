"""End-to-end fixtures: real meshbus processes; their logs are printed when a test fails."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.support.mesh import DemoMesh, start_demo
from tests.support.nats_server import require_binary
from tests.support.processes import ProcessGroup


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, object, object]:
    report = yield
    setattr(item, f"rep_{call.when}", report)
    return report


@pytest.fixture
def processes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ProcessGroup]:
    group = ProcessGroup(tmp_path / "logs")
    try:
        yield group
    finally:
        group.stop_all()
        rep = getattr(request.node, "rep_call", None)
        if rep is None or rep.failed:
            print("\n" + group.dump_logs())


@pytest.fixture
def demo_mesh(tmp_path: Path, processes: ProcessGroup) -> Iterator[DemoMesh]:
    require_binary()
    mesh = start_demo(tmp_path, processes)
    try:
        yield mesh
    finally:
        processes.stop_all()
        mesh.nats.cleanup()
