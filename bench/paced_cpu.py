"""Why a request costs 3x the CPU at 1,000 req/s that it costs flat out: one proxy (meshbus, HAProxy)
measured both ways with the kernel's own counters, per request.

    .venv/bin/python bench/paced_cpu.py [--only meshbus,haproxy] [--rounds 3] [--seconds 4] [--profile]

bench/run.py's set-up on ports of its own (origin pinned to CPU 0, the proxy to CPU 1; meshbus with
run.py's realistic config and access log): wrk -c50 for ``--seconds`` (flat out), then bench/run.py's
paced load (10 h2load connections at 100 req/s each, SCHED_FIFO like its latency run), each under
``perf stat -p``. Per request it prints the proxy's CPU (task-clock: the scheduler's exact runtime),
its loop passes (epoll waits), context switches, wake-ups it made (sched_waking) and syscalls;
``--profile`` instead samples it (perf record, cpu-clock at 5 kHz: no hardware counters in this VM)
and prints the share of its CPU spent in user space, by object.

Why: /proc's user/system split, which bench/mtls.py prints, is sampled by the 250 Hz tick
(TICK_CPU_ACCOUNTING) and is not to be trusted at a low rate: HAProxy's paced "user" read 5, 33, 40
and 55 us a request in four runs here of the same set-up (its total, task-clock, 87-107). The total is
exact. Measured here (December 2026, 2-core KVM guest, shared), per request, flat -> paced:
- CPU: meshbus 39-43 -> 117-132 us (2.9-3.1x), HAProxy 28-31 -> 94-107 us (3.1-3.5x); so meshbus is
  1.1-1.4x HAProxy paced against 1.3-1.5x flat: at 1,000 req/s it does not grow more than HAProxy.
- loop passes 0.06 -> 1.5-1.9 (HAProxy 0.06-0.09 -> 1.6-1.9), context switches 0.02-0.04 ->
  0.6-1.0 (HAProxy 0.01 -> 0.9-1.3), syscalls 4.2 -> 5.8 (HAProxy 4.2 -> 8.8): the same wake-ups,
  fewer syscalls; idle, meshbus wakes 38 times a second (2.5 ms of CPU a second).
- user-space share of the samples 46 -> 51 % (HAProxy 29 -> 32 %): user time grows with kernel time,
  ~3x, while callgrind counts 1.25x the instructions a request paced (56.7k -> 70.6k at 100 req/s,
  where per-second work weighs ten times what it does at 1,000): each wake-up after a gap of a few ms
  finds caches emptied by the rest of the machine (bench/chain_wakes.py: a request's first pass, 38 us
  after 1 ms idle, 140 us after 10 ms; the same for a C loop over 512 KB: 17 -> 57 us), which costs
  the code that touches most memory most (meshbus's Python and mypyc code and objects, against
  HAProxy's C). A SCHED_IDLE spinner keeping CPU 1 out of its idle halt changed meshbus's paced CPU by
  ~10 % (103-115 against 117-132 us), HAProxy's ~7 %; the Python heap on 2 MB pages (PYTHONMALLOC=malloc,
  glibc.malloc.hugetlb=1; AnonHugePages confirmed) did not help (101 / 143 against 115-122 us), nor did
  pymalloc's arenas on them, six pairs (bench/huge_pages.py).
  Nor is it the realistic config: one route without retries, timeouts or DestinationRule, three pairs
  alternated, 106-114 against 104-127 us paced, 34-40 against 33-41 flat.
- a round's CPU moves with its loop passes a request (1.49 -> 117 us, 1.86 -> 132 us): how the
  connections' phases cluster the arrivals, drawn afresh each run (bench/run.py latency_samples).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import run  # bench/ is not a package: run.py's set-up and load helpers
from scratch import scratch_dir

EVENTS = {
    "task-clock": "cpu us",
    "syscalls:sys_enter_epoll_pwait": "loop passes",  # uvloop's
    "syscalls:sys_enter_epoll_wait": "loop passes",  # HAProxy's
    "context-switches": "switches",
    "sched:sched_waking": "wake-ups made",
    "raw_syscalls:sys_enter": "syscalls",
}


def measure(pid: int, load: Callable[[], int], out: Path, profile: bool) -> dict[str, float]:
    """Per request of ``load`` (which returns how many it sent): the counters of EVENTS, or with
    ``profile`` the share of CPU samples in each object (user space and kernel)."""
    if profile:
        cmd = ["perf", "record", "-e", "cpu-clock", "-F", "5000", "-p", str(pid), "-o", str(out)]
    else:
        cmd = ["perf", "stat", "-x", ",", "-e", ",".join(EVENTS), "-p", str(pid), "-o", str(out)]
    perf = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)  # perf attached
    n = load()
    perf.send_signal(2)
    perf.wait()
    res: dict[str, float] = {}
    if profile:
        rep = subprocess.run(["perf", "report", "-i", str(out), "--sort", "dso", "--stdio"],
                             capture_output=True, text=True).stdout  # fmt: skip
        for m in re.finditer(r"^\s+([\d.]+)%\s+(\S+)", rep, re.M):
            if float(m.group(1)) >= 1.0:
                res[m.group(2)] = float(m.group(1))
        return res
    return stat_per_request(out.read_text(), n)


def stat_per_request(csv: str, n: int) -> dict[str, float]:
    """``perf stat -x ,`` output of EVENTS as per-request figures under their names (task-clock in us;
    the two epoll waits summed: one of them is always 0)."""
    res: dict[str, float] = {}
    for line in csv.splitlines():
        f = line.split(",")
        if len(f) > 3 and f[0][:1].isdigit() and f[2] in EVENTS:
            scale = 1000.0 if f[2] == "task-clock" else 1.0  # perf gives ms
            name = EVENTS[f[2]]
            res[name] = res.get(name, 0.0) + float(f[0]) * scale / n
    return res


def prepare(tmp: Path) -> tuple[dict[str, tuple[list[str], int]], dict[str, str]]:
    """The origin's and both proxies' configs in ``tmp``, on ports of their own (so that it can run beside
    bench/run.py; the conf functions read these): each proxy's command and port, and meshbus's env."""
    run.ORIGIN, run.HAPROXY, run.MESHBUS, run.MESHBUS_ADMIN = 38080, 38081, 38082, 38090
    for d in ("nginx-body", "nginx-proxy", "nginx-fcgi", "nginx-uwsgi", "nginx-scgi"):
        (tmp / d).mkdir()
    (tmp / "nginx.conf").write_text(run.nginx_conf(tmp))
    (tmp / "haproxy.cfg").write_text(run.haproxy_conf())
    (tmp / "mesh.yaml").write_text(run.meshbus_conf(1))
    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": str(32 << 20), "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
    mesh = [str(Path(sys.executable).parent / "meshbus-proxy"), "--config", str(tmp / "mesh.yaml"),
            "--outbound", f"127.0.0.1:{run.MESHBUS}", "--inbound", "off", "--admin",
            f"127.0.0.1:{run.MESHBUS_ADMIN}", "--workers", "1", "--log-level", "warning",
            "--access-log", str(tmp / "access.log")]  # fmt: skip
    setups = {
        "haproxy": (["haproxy", "-f", str(tmp / "haproxy.cfg")], run.HAPROXY),
        "meshbus": (mesh, run.MESHBUS),
    }
    return setups, env


def flat(port: int, seconds: int) -> Callable[[], int]:
    """wrk -c50 flat out for ``seconds``: returns how many requests it sent."""

    def go() -> int:
        out = subprocess.run(
            ["taskset", "-c", "0", "wrk", "-t1", "-c50", f"-d{seconds}s", "-H", f"Host: {run.HOST}",
             f"http://127.0.0.1:{port}/"], capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        return int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]

    return go


def paced(port: int, seconds: int, tmp: Path) -> Callable[[], int]:
    """bench/run.py's paced load (10 h2load connections at 100 req/s each, SCHED_FIFO) for ``seconds``."""

    def go() -> int:
        logs = [tmp / f"h2load-{i}.log" for i in range(10)]
        procs = run.start_h2load(port, 100, 100 * seconds, logs, prefix=run.REALTIME)
        for p in procs:
            p.wait()
        return len(run.h2load_rows(logs))

    return go


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="meshbus,haproxy")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--seconds", type=int, default=4)
    ap.add_argument("--profile", action="store_true", help="user-space share by object instead of counts")
    args = ap.parse_args()
    if run.check_tools():
        return 2
    tmp = scratch_dir("meshbus-paced-cpu-")
    setups, env = prepare(tmp)
    with run.process(["nginx", "-c", str(tmp / "nginx.conf")], 0, run.ORIGIN, tmp / "nginx.log") as origin:
        for rnd in range(args.rounds):
            for name in args.only.split(","):
                cmd, port = setups[name]
                with run.process(cmd, 1, port, tmp / f"{name}.log", env) as pid:
                    run.run_wrk(port, 1, pid)  # warm-up: pools, caches
                    r1 = measure(pid, flat(port, args.seconds), tmp / "flat.perf", args.profile)
                    with run.fifo_while([origin, pid]):
                        r2 = measure(pid, paced(port, args.seconds, tmp), tmp / "paced.perf", args.profile)
                print(f"round {rnd + 1} {name}: per request, flat out -> 1,000 req/s"
                      f"{' (% of CPU samples)' if args.profile else ''}")  # fmt: skip
                for k in sorted(set(r1) | set(r2), key=lambda k: -r2.get(k, 0.0)):
                    a, b = r1.get(k, 0.0), r2.get(k, 0.0)
                    print(f"  {k:40s} {a:8.2f} -> {b:8.2f}" + (f"  x{b / a:.2f}" if a else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
