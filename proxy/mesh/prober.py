"""The asyncio side of the app readiness probe (`meshbus.proxy.mesh.probe` decides what it means).

Every ``period_s`` one probe runs against 127.0.0.1 (the address the inbound listener forwards to):
an HTTP GET that must answer a status line within ``timeout_s``, or a TCP connect. A probe still
running when the next is due is not doubled: the next one starts after it. Each result goes to
`ProbeTracker`, then to ``on_result(tracker, changed)``: the owner updates ``/ready`` and, on a
change, the heartbeat (so discovery hears of it at once, not at the next beat).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable

from meshbus.proxy.mesh.probe import ProbeSpec, ProbeTracker, http_passes

log = logging.getLogger(__name__)

ResultCallback = Callable[[ProbeTracker, bool], None]
HOST = "127.0.0.1"
USER_AGENT = "meshbus-probe/1"


async def probe_once(spec: ProbeSpec) -> tuple[bool, str]:
    """One probe: (passed, what happened), never raises (but for cancellation)."""
    what = spec.describe()
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(spec.timeout_s):
            reader, writer = await asyncio.open_connection(HOST, spec.port)
            if spec.kind == "tcp":
                return True, f"{what} connected"
            writer.write(
                f"GET {spec.path} HTTP/1.1\r\nHost: {HOST}:{spec.port}\r\nUser-Agent: {USER_AGENT}\r\n"
                "Connection: close\r\n\r\n".encode("latin-1")
            )
            line = await reader.readuntil(b"\r\n")
        ok, said = http_passes(line)
        return ok, f"{what} {said}"
    except TimeoutError:
        return False, f"{what} timed out after {spec.timeout_s:g}s"
    except asyncio.IncompleteReadError:
        return False, f"{what}: the app closed the connection without answering"
    except OSError as exc:  # asyncio's text is "Connect call failed (...)": say what the errno means
        return False, f"{what} failed: {os.strerror(exc.errno) if exc.errno else exc}"
    except asyncio.LimitOverrunError:
        return False, f"{what}: the app's status line is longer than 64 KiB"
    finally:
        if writer is not None:
            writer.close()


class AppProber:
    """Probes the app every period until stopped."""

    def __init__(
        self, spec: ProbeSpec, on_result: ResultCallback, *, logger: logging.Logger | None = None
    ) -> None:
        self.spec = spec
        self.tracker = ProbeTracker(spec.success_threshold, spec.failure_threshold)
        self._on_result = on_result
        self._log = logger or log
        self._task: asyncio.Task[None] | None = None
        self.probes = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="meshbus-app-probe")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            ok, detail = await probe_once(self.spec)
            self.probes += 1
            t = self.tracker
            before = t.state
            changed = t.record(ok, detail)
            if changed:
                self._log.log(
                    logging.INFO if ok else logging.WARNING,
                    "app %s -> %s: %s",
                    before.lower(),
                    t.state.lower(),
                    t.detail,
                    extra={"app_health": t.state},
                )
            try:
                self._on_result(t, changed)
            except Exception:  # the owner's bug must not stop the probing
                self._log.exception("app health callback failed")
            await asyncio.sleep(max(0.0, started + self.spec.period_s - loop.time()))
