"""The suite's guards, each shown on an inner pytest run of its own.

- Timeouts (tests/support/timeouts.py): a fixture's teardown awaits a task that never ends while other
  tasks keep the event loop busy, so SIGALRM lands inside one of them, where pytest-timeout's own
  `Failed` is swallowed by asyncio and the run hangs. With the plugin the inner run ends, reports the
  teardown as failed, names the fixture and the task it waited for, and goes on to the next test.
- Reaping (tests/support/children.py): a test that leaves a child process running fails, and the
  child is killed.
- The pure-Python run's selection (tests/support/build.py) names tests that exist.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support.build import PURE_RUN

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.timeout(90)

INNER = """
import asyncio

import pytest


async def busy() -> None:
    while True:
        sum(range(20000))  # Python code running in a task step: where the signal lands
        await asyncio.sleep(0)


@pytest.fixture
async def service():
    workers = [asyncio.create_task(busy(), name=f"busy-{i}") for i in range(3)]
    stopping = asyncio.create_task(asyncio.Event().wait(), name="service-stop")
    yield
    await stopping


@pytest.mark.timeout(1)
async def test_with_a_teardown_that_hangs(service) -> None:
    pass


def test_after_it() -> None:
    pass
"""

INI = """
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
filterwarnings = error
timeout = 60
"""


LEAK = """
import subprocess


def test_leaves_a_process_running() -> None:
    subprocess.Popen(["sleep", "60"], start_new_session=True).returncode = 0  # as if it had been waited for
"""


def inner_run(tmp_path: Path, plugin: str, source: str) -> str:
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(source))
    (tmp_path / "pytest.ini").write_text(INI)
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", plugin, "-p", "no:cacheprovider", "-q",
         "--rootdir", str(tmp_path), "-c", str(tmp_path / "pytest.ini"), str(tmp_path / "test_inner.py")],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    return r.stdout + r.stderr


def test_a_hung_async_teardown_fails_and_names_what_it_waited_for(tmp_path: Path) -> None:
    out = inner_run(tmp_path, "tests.support.timeouts", INNER)
    assert "2 passed, 1 error" in out, out[-3000:]
    assert "Timeout (>1s) in teardown of test_inner.py::test_with_a_teardown_that_hangs" in out, out[-3000:]
    assert "service (test_inner.py:18) -> task 'service-stop' [pending] -> Event.wait" in out, out[-3000:]


def test_a_process_left_running_fails_the_test_and_is_killed(tmp_path: Path) -> None:
    out = inner_run(tmp_path, "tests.support.children", LEAK)
    assert "1 passed, 1 error" in out and "left child processes behind (now killed)" in out, out[-3000:]
    pid = int(re.search(r"pid (\d+) \(running\): sleep 60", out).group(1))  # type: ignore[union-attr]
    assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


def test_the_pure_run_selects_tests_that_exist() -> None:
    """A renamed or moved test would silently drop out of the pure-Python run."""
    missing = [p for p in PURE_RUN if not (ROOT / p).exists() or (p.endswith(".py") != (ROOT / p).is_file())]
    assert not missing, f"tests/support/build.py PURE_RUN names what is not there: {missing}"
