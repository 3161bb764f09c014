"""Real meshbus processes for end-to-end tests: spawn, wait on events, stop, dump logs on failure.

Every process writes to its own log file under the test's directory; `ProcessGroup.dump_logs`
returns their tails (the e2e conftest prints them when a test fails). Waiting is always polling an
observable condition against a deadline, never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
PYTHON = sys.executable


def pid_alive(pid: int) -> bool:
    """The process exists and is not a zombie (a zombie has exited; only its exit status is left)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def holders(path: Path) -> list[int]:
    """Pids of processes (other than this one) whose working directory or an open file is under ``path``."""
    prefix = str(path.resolve())
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            links = [entry / "cwd", *(entry / "fd").iterdir()]
            if any(os.readlink(link).startswith(prefix) for link in links):
                found.append(int(entry.name))
        except OSError:  # gone meanwhile, or not ours to look at
            continue
    return found


def listening(port: int) -> bool:
    """Something accepts TCP connections on 127.0.0.1:``port``."""
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_port_block(n: int) -> int:
    """First of ``n`` consecutive ports that are free now, below the ephemeral range (where client
    sockets would take them), probed with SO_REUSEADDR as the servers bind (TIME_WAIT is fine)."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 32000 - n)
        socks: list[socket.socket] = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no block of free ports found")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 15.0, every: float = 0.02) -> T:
    """Poll ``probe`` until it returns something truthy; AssertionError naming ``what`` on timeout.

    Other exceptions from ``probe`` count as "not yet"; an AssertionError ends the wait at once."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = probe()
        except AssertionError:  # the probe saw something fatal (a process died): no use waiting
            raise
        except Exception as exc:  # the thing is not up yet
            last_exc = exc
            value = None
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_exc!r})")


async def run_command(
    *argv: str, timeout: float = 20.0, stdin: bytes | None = None, env: dict[str, str] | None = None
) -> tuple[int, bytes, bytes]:
    """Run a command to its end from async code: (exit code, stdout, stderr). Killed and reaped when it
    outlives ``timeout`` (TimeoutError) or the test is cancelled, so no test leaves it running."""
    pipe = asyncio.subprocess.PIPE
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=pipe if stdin is not None else None, stdout=pipe, stderr=pipe, env=env
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return proc.returncode or 0, out, err


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


def http_get(
    port: int,
    path: str = "/",
    *,
    host: str | None = None,
    timeout: float = 5.0,
    headers: dict[str, str] | None = None,
) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={**({"Host": host} if host else {}), **(headers or {})})
        # closed even when reading the body fails: a "connection: close" response owns the socket
        with conn.getresponse() as r:
            return Reply(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    finally:
        conn.close()


def is_ready(admin_port: int) -> bool:
    try:
        return http_get(admin_port, "/ready", timeout=1.0).status == 200
    except OSError:
        return False


@dataclass
class Proc:
    name: str
    argv: tuple[str, ...]
    log_path: Path
    popen: subprocess.Popen[bytes]
    env: dict[str, str] = field(default_factory=dict)
    """What `ProcessGroup.spawn` added to the group's environment (a respawn gets it again)."""

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(sig)
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait(timeout=5)

    def kill(self) -> None:
        self.stop(signal.SIGKILL, timeout=5)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


@dataclass
class ProcessGroup:
    """Processes one test started; `stop_all` stops them in reverse order (SIGTERM, then SIGKILL)."""

    log_dir: Path
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    procs: list[Proc] = field(default_factory=list)

    def spawn(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> Proc:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        n = sum(1 for p in self.procs if p.name == name)
        log_path = self.log_dir / (f"{name}.log" if n == 0 else f"{name}.{n}.log")
        with open(log_path, "ab") as out:
            popen = subprocess.Popen(
                list(argv),
                env={**self.env, **(env or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        proc = Proc(name, tuple(argv), log_path, popen, dict(env or {}))
        self.procs.append(proc)
        return proc

    def respawn(self, proc: Proc) -> Proc:
        """Start the same command again (after a kill), same environment, with a new log file."""
        return self.spawn(proc.name, proc.argv, proc.env)

    def get(self, name: str) -> Proc:
        return [p for p in self.procs if p.name == name][-1]

    def dead(self) -> list[Proc]:
        return [p for p in self.procs if not p.alive()]

    def stop_all(self, timeout: float = 10.0, *, last: Collection[str] = ()) -> None:
        """SIGTERM to all at once, except the processes named in ``last`` (NATS, which the others
        drain through): those once the others have exited."""
        for wave in (
            [p for p in self.procs if p.name not in last],
            [p for p in self.procs if p.name in last],
        ):
            for p in reversed(wave):
                if p.alive():
                    with contextlib.suppress(ProcessLookupError):
                        p.popen.send_signal(signal.SIGTERM)
            for p in reversed(wave):
                try:  # one signal only: a second SIGTERM during a drain means "exit now"
                    p.popen.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    p.kill()

    def dump_logs(self, tail: int = 60) -> str:
        out = []
        for p in self.procs:
            lines = p.log_text().splitlines()[-tail:]
            code = p.popen.poll()
            out.append(f"----- {p.name} (pid {p.pid}, exit {code}) {p.log_path}")
            out.extend(lines)
        return "\n".join(out)
