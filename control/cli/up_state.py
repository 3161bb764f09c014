"""What a running `meshctl up` keeps in its data dir, so `up --detach`, `ps` and `down` can find it.

<data-dir>/up.pid    the supervisor's pid; it holds an exclusive flock on the file while it runs,
                     so a pid file left by a killed supervisor is told apart from a live one
<data-dir>/up.json   every process it runs: pid, kernel start time (a reused pid is not ours),
                     restarts, state, where it listens, its log
<data-dir>/logs/     one log per process (<name>.log); a detached supervisor's own meshctl-up.log
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

PID_FILE = "up.pid"
STATE_FILE = "up.json"


class AlreadyRunning(Exception):
    def __init__(self, data_dir: Path, pid: int | None) -> None:
        self.pid = pid
        super().__init__(
            f"meshctl up is already running for {data_dir} (pid {pid}); `meshctl down --data-dir {data_dir}` stops it"
        )


class PidLock:
    """The supervisor's claim on a data dir, held for its lifetime (released by the kernel if it dies)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / PID_FILE
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        f = open(self.path, "a+")  # not truncated before the lock is ours: it may name a live supervisor
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise AlreadyRunning(self.data_dir, running_pid(self.data_dir)) from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self._file = f

    def release(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()
            self._file.close()  # closing drops the lock
            self._file = None


def running_pid(data_dir: Path) -> int | None:
    """Pid of the `meshctl up` that holds ``data_dir``, or None when none does."""
    try:
        f = open(data_dir / PID_FILE)
    except FileNotFoundError:
        return None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = f.read().strip()
            return int(text) if text.isascii() and text.isdigit() else -1
        return None  # we got the lock: whoever wrote the file is gone


def start_ticks(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), None if it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after its last ")"
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


@dataclass
class ProcessRecord:
    name: str
    pid: int
    start_ticks: int
    restarts: int = 0
    state: str = "running"
    where: str = ""
    log: str = ""

    def alive(self) -> bool:
        """Still the very process recorded (not gone, not a zombie, not a reused pid)."""
        return self.pid > 0 and start_ticks(self.pid) == self.start_ticks


@dataclass
class UpState:
    supervisor: int
    state: str
    """``starting``, ``up`` or ``stopping``."""
    nats_url: str = ""
    process_group: int = 0
    logs: str = ""
    processes: list[ProcessRecord] = field(default_factory=list)


def write_state(data_dir: Path, state: UpState) -> None:
    tmp = data_dir / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2) + "\n")
    tmp.replace(data_dir / STATE_FILE)  # readers see the old file or the new one, never half


def read_state(data_dir: Path) -> UpState | None:
    try:
        raw: dict[str, Any] = json.loads((data_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    procs = [ProcessRecord(**p) for p in raw.pop("processes", [])]
    return UpState(**raw, processes=procs)


def remove_state(data_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (data_dir / STATE_FILE).unlink()
