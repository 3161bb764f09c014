"""Each sidecar's pass per request in bench/mtls.py's chain, split by direction, meshbus against HAProxy:
where a lone request's time on the shared core goes.

    .venv/bin/python bench/chain_wakes.py [--only meshbus-mtls,haproxy-mtls] [--rate 50] [--requests 300]

The chain of bench/mtls.py (h2load -> A -> B -> nginx; load and origin on CPU 0, A and B on CPU 1,
SCHED_FIFO as in its latency run), loaded by ONE h2load connection at ``--rate`` req/s, so that every
request meets idle sidecars (no queue: what a request costs on its own, caches as the gap left them).
``perf record -a`` of the scheduler's and the syscalls' tracepoints; each wake-up of a sidecar (its
epoll wait returning) is classed by its first read's size (the request from the client or from A,
the response from nginx or from B) and timed: wake -> its first write (the work before the bytes
leave: the next hop waits for it) and first write -> its next wait (the work after, the write's
own syscall included; on the shared core the other sidecar waits for that too). Medians.

Measured here (December 2026, busy 2-core KVM guest; the tracing adds a few us a syscall, both alike),
isolated requests at 50 req/s, wake -> first write / first write -> sleep, us:
- mTLS, request direction: A 124-191 / 35-47 (HAProxy 40-103 / 28-51), B 104-146 / 42-44 (HAProxy 44-72
  / 36-42); response direction: B 28-31 / 34-36 (HAProxy 26-31 / 30-34), A 31-34 / 47-50 (HAProxy 32-39 /
  38-41). Plain: request A 120-139 (HAProxy 39-46), B 97-112 (HAProxy 27-28); response 14-17 both.
  A lone request's whole gap (p50 0.69-0.85 ms against HAProxy's 0.51-0.67 mTLS, 0.61-0.63 against
  0.38-0.46 plain) is the request direction; returning a response costs meshbus what it costs HAProxy.
- the request direction against the gap since the sidecar last ran (one connection at 50, 100, 250,
  500, 1,000 req/s; plain, A / B): 139 / 112, 140 / 114, 56 / 61, 41 / 47, 38 / 44 us (HAProxy at 1,000:
  23 / 23), and at 1,000 req/s meshbus's lone-request p50 is HAProxy's (0.336 against 0.362 ms). Flat
  out the request direction is ~2.6x the response's instructions (callgrind: DownstreamConnection
  .data_received against UpstreamConnection.data_received); after a gap of 10 ms it takes 4-8x the time.
- ``--hold-core`` (nothing else runs on CPU 1 between requests) left it at 120 / 97 us: the eviction
  is not the work of CPU 1's other processes. A C loop reading 512 KB in random 64-byte lines, FIFO on
  CPU 1, the core held or not, took 9-13 us back to back, 16-23 us after a 1 ms sleep, 36-65 us after
  3-4 ms and 55-70 us after 10-20 ms: on this machine whatever a process leaves untouched for ~3 ms or
  more is gone from the caches (the other core's work and the host's share them), and each request
  after such a gap pays for refetching what its path touches. meshbus's request path touches far more
  (Python objects, interpreter, mypyc and uvloop code) than HAProxy's, hence ~100 us against ~20.
- tried: the compiled request path built -Os (mypycify opt_level "s": text 3.79 -> 2.97 MB), three pairs
  alternated with -O3: request direction A 175 / 151 / 166 against 168 / 162 / 146 us, B 138 / 124 / 131
  against 124 / 121 / 121, and flat-out CPU 42-48 against 39-42 us a request (bench/paced_cpu.py):
  smaller code did not make the cold pass cheaper, and made the warm one dearer.
- tried: the heap on 2 MB pages (bench/huge_pages.py; text could not be): request direction 0-8 % less on
  average, within the run-to-run spread, and no CPU saved at 1,000 req/s.
- tried: the request's upstream write sent at once instead of held for proxy/adapters/write_batch.py's
  end-of-iteration flush (always, or only when the loop had been idle 200 us: no write or response read
  since), alternated with the batch, mTLS, A / B, us: a first series of three triples favoured it
  (batch 147-159 / 121-131, always 122-140 / 105-114, idle-only 112-142 / 100-117); the next six pairs
  (the last three ABBA on a quiet machine) did not (batch 90-195 / 89-152, idle-only 136-202 / 117-160;
  plain 64-154 / 63-118 against 83-137 / 75-101): within the spread, not adopted. Flat out
  (bench/paced_cpu.py) always sending at once cost 37-45 against 30-32 us a request (wake-ups made
  0.43-0.57 against 0.10-0.13 a request), idle-only 30-33 (0.10-0.11): flat-out load needs the batch;
  at 1,000 req/s batch 94-113, idle-only 101-108 us, no change.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
# bench/ is not a package: the chains come from chain.py and mtls.py, the helpers from run.py
from chain import prepare
from mtls import chains
from run import ORIGIN, REALTIME, fifo_while, h2load_rows, process, run_wrk, start_h2load
from scratch import scratch_dir

WAITS = {"232", "281"}  # epoll_wait (HAProxy), epoll_pwait (uvloop)
READS = {"0", "45"}  # read, recvfrom
WRITES = {"1", "20", "44"}  # write, writev, sendto
LINE = re.compile(
    r"\s*\S+\s+(\d+)/(\d+)\s+\[\d+\]\s+([\d.]+):\s+raw_syscalls:sys_(enter|exit):\s*NR (\d+)(.*)"
)


def passes(script: str, pid: int) -> dict[int, list[tuple[float, float]]]:
    """The wake-ups of ``pid``'s main thread in ``perf script`` text, by the size of their first read
    (TLS record headers of 5 bytes skipped: HAProxy reads a record in two): (us from the wake to the
    first write, us from there to the next wait)."""
    ev = []
    for line in script.splitlines():
        m = LINE.match(line)
        if m and int(m.group(1)) == pid and m.group(2) == m.group(1):
            ret = m.group(6).rsplit("=", 1)[-1].strip() if m.group(4) == "exit" else ""
            ev.append((float(m.group(3)), m.group(4) == "exit", m.group(5), ret))
    out: dict[int, list[tuple[float, float]]] = {}
    i = 0
    while i < len(ev):
        t0, is_exit, nr, _ = ev[i]
        i += 1
        if not (is_exit and nr in WAITS):
            continue
        first_read, wrote = 0, 0.0
        while i < len(ev) and not (not ev[i][1] and ev[i][2] in WAITS):
            t, ex, n, ret = ev[i]
            if ex and n in READS and not first_read and ret.lstrip("-").isdigit() and int(ret) > 5:
                first_read = int(ret)
            if not ex and n in WRITES and not wrote:
                wrote = t
            i += 1
        if i < len(ev) and first_read and wrote:
            out.setdefault(first_read, []).append(((wrote - t0) * 1e6, (ev[i][0] - wrote) * 1e6))
    return out


def print_passes(script: str, pids: list[int], requests: int) -> None:
    """Each sidecar's (A's, then B's) kinds of pass that a quarter of the ``requests`` or more made."""
    for who, pid in (("A", pids[1]), ("B", pids[0])):
        for size, v in sorted(passes(script, pid).items(), key=lambda kv: -len(kv[1])):
            if len(v) >= requests // 4:
                print(f"  {who} pass reading {size:4d} B  n={len(v):4d}  wake -> first write "
                      f"{statistics.median(x for x, _ in v):6.1f} us, first write -> sleep "
                      f"{statistics.median(y for _, y in v):6.1f} us")  # fmt: skip


def record(
    origin: int, pids: list[int], port: int, rate: int, requests: int, tmp: Path, hold_core: bool = False
) -> tuple[str, list[Path]]:
    """One h2load connection at ``rate`` req/s through the chain ``pids`` (B, A) listening on ``port``,
    the chain and the origin SCHED_FIFO, under ``perf record -a`` of the scheduler and syscalls: the
    ``perf script`` text (for `passes`) and the h2load log."""
    events = "sched:sched_switch,raw_syscalls:sys_enter,raw_syscalls:sys_exit"
    data = tmp / "wakes.data"
    logs = [tmp / "h2load.log"]
    with fifo_while([origin, *pids]):
        perf = subprocess.Popen(["perf", "record", "-a", "-e", events, "-o", str(data)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        time.sleep(0.5)  # perf attached
        spin = ["chrt", "-f", "1", "taskset", "-c", "1", sys.executable, "-c", "while 1: pass"]
        holder = subprocess.Popen(spin) if hold_core else None
        try:
            for p in start_h2load(port, rate, requests, logs, prefix=REALTIME):
                p.wait()
        finally:  # before the sidecars are normal tasks again: it would starve them
            if holder is not None:
                holder.kill()
                holder.wait()
        perf.send_signal(2)
        perf.wait()
    script = subprocess.run(["perf", "script", "-i", str(data), "-F", "comm,pid,tid,cpu,time,event,trace"],
                            capture_output=True, text=True).stdout  # fmt: skip
    return script, logs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--only", default="meshbus-mtls,haproxy-mtls", help="comma list of bench/mtls.py's setups"
    )
    ap.add_argument("--rate", type=int, default=50, help="req/s of the one h2load connection")
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument(
        "--hold-core",
        action="store_true",
        help="diagnostic: a SCHED_FIFO priority-1 spinner holds CPU 1 in the run, so that no other process "
        "runs there between requests (the chain's FIFO-50 processes preempt it at once)",
    )
    args = ap.parse_args()
    tmp = scratch_dir("meshbus-chain-wakes-")
    prepare(tmp)
    setups = chains(tmp)
    with process(["nginx", "-c", str(tmp / "nginx.conf")], 0, ORIGIN, tmp / "nginx.log") as origin:
        for rnd in range(args.rounds):
            for name in args.only.split(","):
                with ExitStack() as stack:
                    pids = [
                        stack.enter_context(process(cmd, 1, port, tmp / f"{name}-{i}.log"))
                        for i, (cmd, port) in enumerate(setups[name])
                    ]  # B, then A
                    port = setups[name][-1][1]
                    run_wrk(port, 1, None)  # warm-up: pools, caches
                    script, logs = record(origin, pids, port, args.rate, args.requests, tmp, args.hold_core)
                lat = sorted(ms for _, ms in h2load_rows(logs))
                print(f"round {rnd + 1} {name}: {len(lat)} requests, p50 {statistics.median(lat):.3f} ms, "
                      f"p90 {lat[len(lat) * 9 // 10]:.3f} ms")  # fmt: skip
                print_passes(script, pids, len(lat))
    return 0


if __name__ == "__main__":
    sys.exit(main())
