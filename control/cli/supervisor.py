"""The process supervisor behind `meshctl up`: children that die with it, crashed ones restarted.

- Every child runs in one process group the supervisor owns (the first child started leads it;
  a child started when the group has emptied leads a new one), with stdin closed, its output in a
  log file of its own, and a kernel promise to get SIGKILL if the supervisor dies without stopping
  it (`meshbus.bus.child_process`). So no kill of ``meshctl up``, not even SIGKILL, orphans the mesh.
- A child that exits while the supervisor is not stopping is restarted after a delay that doubles
  with each consecutive crash (`Backoff`) and resets once the child has run `Backoff.stable_after`
  seconds; every restart is counted (the ``up`` and ``ps`` tables show it).
- `Supervisor.stop_all` sends SIGTERM to every child but the ``stop_last`` ones (nats-server: the
  others deregister through it), in reverse start order, waits up to ``grace`` seconds, kills what
  is left, then does the same for the ``stop_last`` ones, and finally kills anything still in the
  group (a child's own children).

Spawn only from the main thread: the kernel ties the death signal to the thread that forked.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from meshbus.bus.child_process import die_with_parent
from meshbus.bus.embedded import EmbeddedNats
from meshbus.bus.errors import BusError


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before restarting a child that crashed ``crashes`` times in a row: base, 2 base, ... cap."""

    base: float = 0.5
    cap: float = 30.0
    stable_after: float = 10.0
    """A child that ran this long before exiting starts its count again (it was not crash-looping)."""

    def delay(self, crashes: int) -> float:
        return min(self.cap, self.base * 2 ** min(max(crashes - 1, 0), 16))


class Process(Protocol):
    """One supervised OS process, started again by `start` after it exited."""

    @property
    def pid(self) -> int | None: ...

    def start(self, group: int) -> int:
        """Start (again) in process group ``group`` (0: lead a new one); returns the pid."""
        ...

    def poll(self) -> int | None:
        """The exit code once it exited (negative: killed by that signal), else None."""
        ...

    def signal(self, sig: int) -> None: ...

    def wait(self, timeout: float) -> bool:
        """True once it exited, False if it still runs after ``timeout`` seconds."""
        ...


class _Popened:
    """Process methods over the subprocess.Popen of the last start."""

    def _popen(self) -> subprocess.Popen[bytes] | None:
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        proc = self._popen()
        return proc.pid if proc else None

    def poll(self) -> int | None:
        proc = self._popen()
        return proc.poll() if proc else 0

    def signal(self, sig: int) -> None:
        proc = self._popen()
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)

    def wait(self, timeout: float) -> bool:
        proc = self._popen()
        if proc is None:
            return True
        try:
            proc.wait(timeout=max(0.0, timeout))
        except subprocess.TimeoutExpired:
            return False
        return True


@dataclass
class Command(_Popened):
    """A Process from an argv: environment from ``env()`` at every start, output appended to ``log``."""

    argv: tuple[str, ...]
    log: Path
    env: Callable[[], Mapping[str, str]]
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    def _popen(self) -> subprocess.Popen[bytes] | None:
        return self._proc

    def start(self, group: int) -> int:
        env = dict(self.env())  # may raise (no bootstrap token yet): nothing is started then
        with open(self.log, "ab") as out:
            self._proc = subprocess.Popen(
                self.argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                process_group=group,
                preexec_fn=die_with_parent(),
            )
        return self._proc.pid


@dataclass
class NatsServer(_Popened):
    """The embedded nats-server as a Process; a restart keeps its port and JetStream store."""

    server: EmbeddedNats

    def _popen(self) -> subprocess.Popen[bytes] | None:
        return self.server.process

    def start(self, group: int) -> int:
        if self.server.process is not None:
            self.server.stop()  # after a crash: collect the dead one and its log pipe
        self.server.die_with_parent = True
        self.server.process_group = group
        self.server.start()
        assert self.server.pid is not None
        return self.server.pid


@dataclass
class Entry:
    name: str
    where: str
    process: Process
    stop_last: bool = False
    restarts: int = 0
    crashes: int = 0
    """Consecutive exits within `Backoff.stable_after` of their start."""
    started: float = 0.0
    due: float | None = None
    """Monotonic time a restart is due (the child exited or could not start)."""
    last_exit: int | None = None

    @property
    def state(self) -> str:
        return "restarting" if self.due is not None else "running"


class Supervisor:
    def __init__(
        self,
        *,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
        say: Callable[[str], None] = print,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.backoff = backoff or Backoff()
        self.clock = clock
        self.say = say
        self.on_change = on_change
        self.entries: list[Entry] = []
        self.pgid: int | None = None
        self.stopping = False

    # -- starting
    def add(self, name: str, where: str, process: Process, *, stop_last: bool = False) -> Entry:
        """Start ``process`` now (errors propagate: the mesh is not up without it) and supervise it."""
        entry = Entry(name, where, process, stop_last)
        self._start(entry)
        self.entries.append(entry)
        self.on_change()
        return entry

    def _start(self, entry: Entry) -> None:
        group = self._group()
        try:
            pid = entry.process.start(group)
        except OSError:
            if group == 0:
                raise
            self.pgid = None  # the group emptied between the check and the child joining it
            group = 0
            pid = entry.process.start(group)
        if group == 0:
            self.pgid = pid
        entry.started, entry.due = self.clock(), None

    def _group(self) -> int:
        """The group a new child joins: ours while a member lives, else 0 (the child leads a new one)."""
        if self.pgid is not None:
            try:
                os.killpg(self.pgid, 0)
                return self.pgid
            except (ProcessLookupError, PermissionError):
                self.pgid = None
        return 0

    # -- watching
    def next_due(self) -> float | None:
        """Monotonic time of the next restart, or None."""
        due = [e.due for e in self.entries if e.due is not None]
        return min(due) if due else None

    def poll(self) -> list[str]:
        """Notice exits, schedule their restarts, start those that are due; the names restarted.

        Each event is recorded (``on_change``) before it is told (``say``)."""
        restarted: list[str] = []
        if self.stopping:
            return restarted
        now = self.clock()
        for e in self.entries:
            if e.due is None:
                code = e.process.poll()
                if code is None:
                    continue
                e.last_exit = code
                e.crashes = 1 if now - e.started >= self.backoff.stable_after else e.crashes + 1
                e.due = now + self.backoff.delay(e.crashes)
                self.on_change()
                self.say(
                    f"{e.name} (pid {e.process.pid}) {_exit_text(code)}; "
                    f"restarting in {e.due - now:.1f}s (see its log)"
                )
            elif now >= e.due:
                try:
                    self._start(e)
                except (OSError, BusError) as exc:
                    e.crashes += 1
                    e.due = now + self.backoff.delay(e.crashes)
                    self.say(f"{e.name} could not start: {exc}; next try in {e.due - now:.1f}s")
                    continue
                e.restarts += 1
                restarted.append(e.name)
                self.on_change()
                self.say(f"{e.name} restarted (pid {e.process.pid}, restart {e.restarts})")
        return restarted

    # -- stopping
    def stop_all(self, grace: float) -> None:
        self.stopping = True
        for last in (False, True):
            wave = [e for e in reversed(self.entries) if e.stop_last == last and e.due is None]
            for e in wave:
                e.process.signal(signal.SIGTERM)
            deadline = self.clock() + grace
            for e in wave:
                if not e.process.wait(deadline - self.clock()):
                    e.process.signal(signal.SIGKILL)
                    e.process.wait(5.0)
        self.kill_group()

    def kill_group(self) -> None:
        """SIGKILL whatever is still in the group (children of children); also a forced stop."""
        if self.pgid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pgid, signal.SIGKILL)


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"
