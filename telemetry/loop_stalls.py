"""A diagnostic of the event loop's stalls: how often the loop answers late, for how long, and why.

Off unless started (bench/chain_tail.py ``--lag`` starts it in its sidecars; a proxy started with
``MESHBUS_LOOP_STALLS=FILE`` starts it too and writes the stalls to FILE as JSON at exit). When off it
costs next to nothing: the background tasks that mark their work read one module global (and make
one small generator) per slice of work, never per request.

A probe sleeps ``period`` (1 ms) again and again; a wake-up later than ``threshold`` (200 us) is a
stall. The probe also reads how long the thread waited runnable but not running (the kernel's
schedstat) and its CPU time, which tell three kinds apart: a stall the thread slept through is the
timer's own lateness (the loop was idle: no stall at all for an event), one spent mostly waiting for
the CPU is the machine's (another process held the core), any other is our own work (a long
callback, a GC pass). Background work marks its runs (``with loop_stalls.mark("access-log")``), and
a GC pass is timed through ``gc.callbacks``, so an own-work stall is charged to what ran in it, and
to ``requests`` when nothing marked did (mostly requests queued behind requests: a burst).
The split is approximate: CPU and waiting time are read per probe period, not per turn.
The probe's own wake-ups (1,000 a second) keep the loop busier than it would be: compare runs with
and without it, never a run with it against another proxy without one.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

ENV: Final = "MESHBUS_LOOP_STALLS"

ACTIVE: StallMonitor | None = None
"""The running monitor, or None (the usual case: ``mark`` then does nothing)."""


class StallMonitor:
    """The probe task and what it found: ``stalls`` is a list of (perf_counter s, late s, CPU s, waited s,
    causes) (CPU, waited: the thread's time on the CPU, and runnable off it, over the probe's period
    and its lateness)."""

    def __init__(self, threshold: float = 200e-6, period: float = 0.001) -> None:
        self.threshold = threshold
        self.period = period
        self.stalls: list[tuple[float, float, float, float, str]] = []
        self.probes = 0
        self.started = 0.0
        self.elapsed = 0.0
        self.gc_passes: list[tuple[float, float, int]] = []  # (perf_counter s, took s, generation)
        self._marks: list[tuple[float, float, str]] = []  # (start, end, name) since the last probe
        self._gc_start = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        global ACTIVE
        ACTIVE = self
        self.started = time.perf_counter()
        gc.callbacks.append(self._gc)
        self._task = asyncio.get_running_loop().create_task(self._probe(), name="meshbus-loop-stalls")

    def stop(self) -> None:
        global ACTIVE
        if ACTIVE is self:
            ACTIVE = None
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._gc)
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self.elapsed = time.perf_counter() - self.started

    def note(self, start: float, end: float, name: str) -> None:
        """``name`` ran on the loop thread from ``start`` to ``end`` (perf_counter seconds)."""
        self._marks.append((start, end, name))

    def _gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_start = time.perf_counter()
        else:
            end = time.perf_counter()
            self.gc_passes.append((self._gc_start, end - self._gc_start, int(info.get("generation", -1))))
            self.note(self._gc_start, end, f"gc{info.get('generation', '?')}")

    async def _probe(self) -> None:
        period, threshold = self.period, self.threshold
        # The kernel's count of the time this thread waited runnable but not running (schedstat's
        # second field, ns): one pread, ~2 us.
        fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        try:
            while True:
                t, c, w = time.perf_counter(), time.thread_time(), _waited(fd)
                await asyncio.sleep(period)
                now = time.perf_counter()
                late, cpu, waited = now - t - period, time.thread_time() - c, _waited(fd) - w
                self.probes += 1
                marks, self._marks = self._marks, []
                if late > threshold:
                    self.stalls.append((t, late, cpu, waited, self.blame(t, now, cpu, waited, marks)))
        finally:
            os.close(fd)

    def blame(
        self, t: float, now: float, cpu: float, waited: float, marks: list[tuple[float, float, str]]
    ) -> str:
        """What a stall from ``t`` to ``now`` was spent on: ``timer`` when the thread slept through
        most of the lateness (the loop was idle and its timer fired late: libuv keeps loop time in
        whole milliseconds of a coarse clock, so a poll timeout can overshoot by up to ~1 ms; an event
        would have been served at once); else ``off-cpu`` when the thread spent most of the lateness
        runnable but not running (another process held the core); else marked work that ran in it
        (with its microseconds); else ``requests`` (the loop's own callbacks)."""
        late = now - t - self.period
        if (now - t) - cpu - waited - self.period > 0.5 * late:
            return "timer"
        if waited > 0.5 * late:
            return "off-cpu"
        spent: dict[str, float] = {}
        for s, e, name in marks:
            ov = min(e, now) - max(s, t)
            if ov > 0:
                spent[name] = spent.get(name, 0.0) + ov
        if spent and sum(spent.values()) > 0.25 * late:
            return ",".join(f"{k}:{v * 1e6:.0f}us" for k, v in sorted(spent.items(), key=lambda kv: -kv[1]))
        return "requests"

    def summary(self) -> dict[str, Any]:
        """Counts and total time of the stalls per cause, per second of the run."""
        return summarize(self.stalls, self.elapsed or time.perf_counter() - self.started, self.probes)


def summarize(
    stalls: list[tuple[float, float, float, float, str]], seconds: float, probes: int = 0
) -> dict[str, Any]:
    """``stalls`` (of ``seconds`` of a run) per second, by cause: count, total and longest."""
    secs = max(seconds, 1e-9)
    by: dict[str, list[float]] = {}
    for _t, late, _cpu, _waited, causes in stalls:
        key = ",".join(c.split(":")[0] for c in causes.split(","))
        by.setdefault(key, []).append(late)
    return {
        "seconds": secs,
        "probes": probes,
        "stalls_per_s": len(stalls) / secs,
        "by_cause": {
            k: {"per_s": len(v) / secs, "ms_per_s": 1e3 * sum(v) / secs, "max_us": 1e6 * max(v)}
            for k, v in sorted(by.items(), key=lambda kv: -len(kv[1]))
        },
    }


def _waited(fd: int) -> float:
    return int(os.pread(fd, 64, 0).split()[1]) / 1e9


@contextlib.contextmanager
def mark(name: str) -> Iterator[None]:
    """Time the block as ``name``'s work for the running monitor (none running: a global read and
    this generator, once per periodic run)."""
    mon = ACTIVE
    if mon is None:
        yield
        return
    start = time.perf_counter()
    try:
        yield
    finally:
        mon.note(start, time.perf_counter(), name)


def from_env() -> StallMonitor | None:
    """A started monitor when ``MESHBUS_LOOP_STALLS`` names a file (call in the running loop)."""
    if not os.environ.get(ENV):
        return None
    mon = StallMonitor()
    mon.start()
    return mon


def dump(mon: StallMonitor) -> None:
    """Stop ``mon`` and write its summary and stalls to the file ``MESHBUS_LOOP_STALLS`` names."""
    mon.stop()
    path = os.environ.get(ENV)
    if path:
        Path(path).write_text(
            json.dumps({"summary": mon.summary(), "stalls": mon.stalls, "gc": mon.gc_passes})
        )
