"""The loop-stall diagnostic (telemetry/loop_stalls.py): what it finds, and how it charges it."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from meshbus.telemetry import loop_stalls
from meshbus.telemetry.loop_stalls import StallMonitor, summarize

pytestmark = pytest.mark.unit


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_blame_tells_idle_timer_machine_marked_work_and_requests_apart() -> None:
    m = StallMonitor(period=0.001)
    # 1 ms late: slept through it (loop idle: the timer was late), waited for the core, or ran
    assert m.blame(0.0, 0.002, cpu=0.0001, waited=0.0, marks=[]) == "timer"
    assert m.blame(0.0, 0.002, cpu=0.0003, waited=0.0007, marks=[]) == "off-cpu"
    assert m.blame(0.0, 0.002, cpu=0.0012, waited=0.0, marks=[(0.0012, 0.0019, "access-log")]) == (
        "access-log:700us"
    )
    assert m.blame(0.0, 0.002, cpu=0.0012, waited=0.0, marks=[(0.0, 0.0001, "sweep")]) == "requests"
    assert m.blame(0.0, 0.002, cpu=0.0012, waited=0.0, marks=[]) == "requests"


def test_summary_counts_stalls_per_second_by_cause() -> None:
    stalls = [
        (0.0, 0.001, 0.0, 0.0, "requests"),
        (1.0, 0.003, 0.0, 0.0, "requests"),
        (2.0, 0.0005, 0, 0, "gc2:400us"),
    ]
    s = summarize(stalls, 2.0)
    assert s["stalls_per_s"] == 1.5
    assert s["by_cause"]["requests"] == {"per_s": 1.0, "ms_per_s": 2.0, "max_us": pytest.approx(3000.0)}
    assert s["by_cause"]["gc2"]["per_s"] == 0.5


async def test_a_marked_blocking_callback_is_found_and_named() -> None:
    mon = StallMonitor()
    mon.start()
    try:
        await asyncio.sleep(0.005)  # the probe is sleeping
        with loop_stalls.mark("writer"):
            _spin(0.02)
        await asyncio.sleep(0.005)
        _spin(0.02)  # unmarked: the requests' share
        await asyncio.sleep(0.005)
    finally:
        mon.stop()
    long = [s for s in mon.stalls if s[1] > 0.015]
    assert len(long) == 2, mon.stalls
    # on a loaded machine the thread may have waited for the core most of that time: then it says so
    assert long[0][-1] in ("off-cpu",) or long[0][-1].startswith("writer:"), long[0]
    assert long[1][-1] in ("off-cpu", "requests"), long[1]
    assert loop_stalls.ACTIVE is None
    assert mon.summary()["probes"] >= 3


async def test_mark_without_a_monitor_records_nothing() -> None:
    assert loop_stalls.ACTIVE is None
    with loop_stalls.mark("sweep"):
        pass
    mon = StallMonitor()
    assert mon._marks == []


async def test_the_env_variable_starts_it_and_dump_writes_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(loop_stalls.ENV, raising=False)
    assert loop_stalls.from_env() is None
    out = tmp_path / "stalls.json"
    monkeypatch.setenv(loop_stalls.ENV, str(out))
    mon = loop_stalls.from_env()
    assert mon is not None and loop_stalls.ACTIVE is mon
    await asyncio.sleep(0.002)  # the probe is sleeping
    _spin(0.01)
    await asyncio.sleep(0.003)
    loop_stalls.dump(mon)
    data = json.loads(out.read_text())
    assert data["summary"]["stalls_per_s"] > 0 and data["stalls"]
    assert loop_stalls.ACTIVE is None
