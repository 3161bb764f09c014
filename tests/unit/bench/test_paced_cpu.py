"""bench/paced_cpu.py's and bench/chain_wakes.py's readings of perf's output: per-request counts, and a
sidecar's passes split by direction; bench/huge_pages.py's choice of what to collapse. bench/ is not a
package, so the scripts are loaded by path (their imports of run.py, chain.py and mtls.py beside them
resolve through the bench folder they put on sys.path).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.timeout(30)

BENCH = Path(__file__).resolve().parents[3] / "bench"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[f"bench_{name}"] = mod  # dataclasses look the module up while the class is made
    spec.loader.exec_module(mod)
    return mod


def test_perf_stat_counts_become_per_request_figures() -> None:
    paced = load("paced_cpu")
    csv = (
        "# started on Mon Dec  7 18:00:00 2026\n\n"
        "500.00,msec,task-clock,500000000,100.00,0.125,CPUs utilized\n"
        "7000,,syscalls:sys_enter_epoll_pwait,500000000,100.00,,\n"
        "0,,syscalls:sys_enter_epoll_wait,500000000,100.00,,\n"
        "4000,,context-switches,500000000,100.00,8.000,K/sec\n"
        "<not counted>,,sched:sched_waking,0,0.00,,\n"
    )
    got = paced.stat_per_request(csv, 4000)
    assert got == {"cpu us": 125.0, "loop passes": 1.75, "switches": 1.0}


def script_line(pid: int, tid: int, t: float, enter: bool, nr: int, ret: int = 0) -> str:
    head = f"          python {pid:6d}/{tid:<6d} [001] {t:.6f}: "
    if enter:
        return head + f"raw_syscalls:sys_enter: NR {nr} (3, 7ffd820996d0, 400, 0, 0, 8)"
    return head + f" raw_syscalls:sys_exit: NR {nr} = {ret}"


def test_a_pass_is_timed_from_its_wake_to_its_first_write_and_on_to_its_next_wait() -> None:
    wakes = load("chain_wakes")
    pid = 4242
    lines = [
        script_line(pid, pid, 10.000000, False, 281, 1),  # epoll_pwait returns: the pass starts
        script_line(pid, pid, 10.000005, True, 0),
        script_line(pid, pid, 10.000007, False, 0, 5),  # a TLS record's header: not what it read
        script_line(pid, pid, 10.000009, False, 0, 339),
        script_line(pid, pid + 1, 10.000010, False, 0, 999),  # another thread of the process
        script_line(pid + 7, pid + 7, 10.000011, False, 0, 888),  # another process
        script_line(pid, pid, 10.000124, True, 1),  # first write
        script_line(pid, pid, 10.000150, False, 1, 253),
        script_line(pid, pid, 10.000155, True, 1),  # a second write: the first one counts
        script_line(pid, pid, 10.000161, True, 281),  # back to its wait
        script_line(pid, pid, 10.020000, False, 281, 1),  # a pass that read nothing is not counted
        script_line(pid, pid, 10.020010, False, 0, -11),
        script_line(pid, pid, 10.020020, True, 281),
    ]
    got = wakes.passes("\n".join(lines) + "\n", pid)
    assert list(got) == [339]
    [(to_write, to_sleep)] = got[339]
    assert to_write == pytest.approx(124.0, abs=0.01)
    assert to_sleep == pytest.approx(37.0, abs=0.01)


def test_huge_pages_picks_only_what_a_2mb_page_can_back() -> None:
    """bench/huge_pages.py: a dense anonymous mapping's 2 MB-aligned middle, not a sparse one (a thread
    stack) nor a file mapping; text only where the file offset is aligned as the address is."""
    huge = load("huge_pages")
    mb = 1 << 20
    maps = [
        {"start": 3 * mb, "end": 9 * mb, "perms": "rw-p", "offset": 0, "path": "", "rss": 5 * mb},
        {"start": 10 * mb, "end": 18 * mb, "perms": "rw-p", "offset": 0, "path": "", "rss": mb},  # sparse
        {
            "start": 20 * mb,
            "end": 21 * mb,
            "perms": "rw-p",
            "offset": 0,
            "path": "[heap]",
            "rss": mb,
        },  # < 2 MB
        {"start": 24 * mb, "end": 28 * mb, "perms": "rw-p", "offset": 0, "path": "/lib/x.so", "rss": 4 * mb},
        {"start": 30 * mb, "end": 35 * mb, "perms": "r-xp", "offset": 2 * mb, "path": "/lib/a.so", "rss": 0},
        {"start": 40 * mb, "end": 45 * mb, "perms": "r-xp", "offset": mb, "path": "/lib/b.so", "rss": 0},
    ]
    assert huge.heap_ranges(maps) == [(4 * mb, 8 * mb)]
    assert huge.text_ranges(maps) == [(30 * mb, 34 * mb)]
