"""This test run's child processes, read from /proc: the check that a test reaped what it spawned (a
pytest plugin: its autouse fixture runs last in every test's teardown), and the last resort of a hung
run (tests/support/timeouts.py).

A child that has exited but was not waited for stays a zombie; one that still runs outlives its test
(and, started in a session of its own as the embedded nats-server and the e2e processes are, the run).
Both are a test's bug. Linux only: elsewhere the check sees no children and passes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PROC = Path("/proc")

session_owned: set[int] = set()
"""Pids of children that session-scoped fixtures own (the shared nats-server): not a test's leak."""


@dataclass(frozen=True, slots=True)
class Child:
    pid: int
    state: str
    """The kernel's state letter: Z for a zombie (exited, never waited for)."""
    argv: str

    def __str__(self) -> str:
        return f"pid {self.pid} ({'exited, not reaped' if self.state == 'Z' else 'running'}): {self.argv}"


def children() -> dict[int, Child]:
    me = os.getpid()
    found: dict[int, Child] = {}
    if not PROC.is_dir():
        return found
    for entry in os.scandir(PROC):
        if not entry.name.isdigit():
            continue
        try:
            stat = (PROC / entry.name / "stat").read_bytes()
        except OSError:  # it ended while we looked
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ')'
        fields = stat[stat.rindex(b")") + 2 :].split()
        if int(fields[1]) != me:
            continue
        pid = int(entry.name)
        try:
            argv = (PROC / entry.name / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            argv = ""
        found[pid] = Child(pid, fields[0].decode(), argv[:200])
    return found


def left_behind(before: set[int], timeout: float = 2.0) -> list[Child]:
    """Children not in ``before`` nor `session_owned` that are still there after ``timeout``.

    The wait covers a child that was killed and is being reaped by asyncio's child watcher thread."""
    deadline = time.monotonic() + timeout
    while True:
        new = [c for pid, c in children().items() if pid not in before and pid not in session_owned]
        if not new or time.monotonic() >= deadline:
            return new
        time.sleep(0.02)


def kill_children(pids: list[int] | None = None) -> list[int]:
    """SIGKILL these children (all of them by default) with their process groups, and reap them."""
    targets = pids if pids is not None else list(children())
    for pid in targets:
        with contextlib.suppress(OSError):
            if os.getpgid(pid) == pid:  # started in a session of its own: take its children too
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
    for pid in targets:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, 0)
    return targets


@pytest.fixture(autouse=True)
def reaps_its_processes(request: pytest.FixtureRequest) -> Iterator[None]:
    """A child this test started and did not wait for fails it, and is killed."""
    if "/tests/unit/" in str(request.node.path):  # unit tests start no processes (subprocess.run reaps)
        yield
        return
    before = set(children())
    yield
    left = left_behind(before)
    if left:
        kill_children([c.pid for c in left])
        pytest.fail("left child processes behind (now killed):\n" + "\n".join(map(str, left)), pytrace=False)
