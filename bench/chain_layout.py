"""Is the mTLS chain's flat-out CPU a request decided by each process start's memory layout?

    .venv/bin/python bench/chain_layout.py [--starts 8] [--measures 2] [--seconds 2]
        [--settings aslr,noaslr-seed0,noaslr,seed0] [--noise MIB] [--probe]

bench/mtls.py's meshbus-mtls chain (bench/chain.py's sidecars: A and B on CPU 1, nginx and wrk on CPU 0),
started afresh many times under each setting, the settings interleaved (start r runs them in an order
rotated by r): ``aslr`` as the bench starts it (address space randomised, a random PYTHONHASHSEED);
``noaslr`` under ``setarch -R`` (no address randomisation: the same addresses at every start);
``seed0`` PYTHONHASHSEED=0 (the same str hashes, so the same dict and set layouts); ``noaslr-seed0``
both. Each start is warmed up (wrk 1 s) and then measured ``--measures`` times flat out
(``wrk -t1 -c50``, ``--seconds`` each): per request, both proxies' CPU (the kernel's exact runtime,
/proc/PID/task/*/schedstat, summed over threads) and each one's, A and B, and the share of the two
CPUs that other processes used meanwhile (/proc/stat less the chain's, nginx's and wrk's CPU).
``--noise MIB`` runs THRASH_C (random 64-byte lines of MIB MiB read and written) on CPU 0 at
SCHED_IDLE (only CPU 0's idle time: it takes no CPU from the proxies, only cache and memory
bandwidth) during every other measurement of a start; ``--probe`` runs PROBE_C on CPU 1 before each
measurement (the proxies idle) and prints its CPU time (4M dependent loads over 4 MiB: how fast the
core runs memory-bound code at that moment). Both are built with cc.

Measured here (December 2026, 2-core guest shared with other helpers' builds and callgrind runs):
- 8 starts of each setting interleaved, 2 measurements of 2 s: A+B us a request per start (mean of
  its two), sorted: aslr 86 92 99 102 110 113 126 140; noaslr-seed0 96 98 101 102 111 139 148 152;
  noaslr 88 91 91 100 100 101 126 132; seed0 92 93 94 98 99 113 123 134. Again with 4 measurements,
  6 starts each: aslr 89-162, noaslr-seed0 95-138. A fixed layout (no ASLR, fixed hash seed: the same
  addresses and dict layouts at every start) draws the slow figures as often as a random one.
- the figure is not a property of the start: within one start the measurements differed by up to
  1.50x and 1.66x (a no-ASLR seed-0 start: 177.5, 144.5, 106.8, 124.3 us), median 1.09x / 1.17x.
- A and B move together: over 112 measurements their figures are within 2.2-2.4 % of each other
  (median; at most 8.5 %), correlation 0.98 / 1.00. Under ASLR the two processes' layouts are drawn
  independently, so a layout effect would make one slow and not the other; a machine-wide one (the
  host, the other core, other guests) slows both.
- the slow figures come with the machine's other work: 4 starts of each with 4 measurements and
  ``--probe`` (75-90 ms of CPU on a quiet core), 32 measurements: A+B 87-188 us; its correlation
  with the other processes' share of the two CPUs (43-72 %: other helpers' builds and callgrind
  runs) 0.57, with the probe's time 0.45; the half with the most other work read a median 134 us
  against 98 for the other half, the half with the slowest probe 130 against 98.
- ``--noise 24``, 3 starts x 6 measurements alternating: quiet 85-98, noisy 95-108 us a request
  (+10-12 us, A +8-10, B +1-3): another core's cache pressure alone moves the figure by a tenth.
So the two modes are the machine's state while a pass runs, not the layout: a pass's throughput
ratio is decided by what else ran on the host then (mtls.py interleaves HAProxy's rounds with the
chain's, which shares that drift between them only as far as it lasts longer than a round).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
# bench/ is not a package: the chain comes from chain.py and mtls.py, the helpers from run.py
from chain import prepare
from mtls import chains
from run import ORIGIN, process, run_wrk

# --noise: the other core's cache and memory pressure; --probe: how fast CPU 1 runs memory-bound code now
THRASH_C = r"""
/* walk a buffer of argv[1] MiB in random 64-byte lines, forever (cache and memory pressure) */
#include <stdlib.h>
#include <stdint.h>
int main(int argc, char **argv) {
    size_t mib = argc > 1 ? atol(argv[1]) : 16, n = mib * 1024 * 1024 / 64;
    uint64_t *b = malloc(n * 64), x = 88172645463325252ull, s = 0;
    for (size_t i = 0; i < n * 8; i++) b[i] = i;
    for (;;) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; s += b[(x % n) * 8]++; }
    return (int)s;
}
"""
PROBE_C = r"""
/* fixed work: 4M dependent loads over a 4 MiB buffer in random 64-byte lines + arithmetic;
   prints the thread CPU time it took, us (how fast this core runs memory-bound code right now) */
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <time.h>
int main(void) {
    size_t n = 4u << 20 >> 6; uint64_t *b = malloc(n * 64), x = 88172645463325252ull, s = 0;
    for (size_t i = 0; i < n * 8; i++) b[i] = i * 2654435761u;
    struct timespec t0, t1; clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
    for (long i = 0; i < 4000000; i++) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; s += b[((x ^ s) % n) * 8]; }
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t1);
    printf("%.0f\n", (t1.tv_sec - t0.tv_sec) * 1e6 + (t1.tv_nsec - t0.tv_nsec) / 1e3);
    return (int)(s & 1);
}
"""


def compiled(tmp: Path, name: str, source: str) -> str:
    """``source`` built with cc -O2 into ``tmp``; the binary's path."""
    (tmp / f"{name}.c").write_text(source)
    subprocess.run(["cc", "-O2", "-o", str(tmp / name), str(tmp / f"{name}.c")], check=True)
    return str(tmp / name)


SETTINGS: dict[str, tuple[list[str], dict[str, str]]] = {
    "aslr": ([], {}),
    "noaslr": (["setarch", "-R"], {}),
    "seed0": ([], {"PYTHONHASHSEED": "0"}),
    "noaslr-seed0": (["setarch", "-R"], {"PYTHONHASHSEED": "0"}),
}


def runtime_ns(pid: int) -> int:
    """CPU time of all of ``pid``'s threads (the scheduler's, ns)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except OSError:  # a thread that ended meanwhile
            continue
    return total


def machine() -> float:
    """Both CPUs' busy seconds so far (/proc/stat: user, nice, system; not irq and softirq, which
    loopback's packets fill and no process is charged for; steal stayed 0 in this guest)."""
    f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    return (f[0] + f[1] + f[2]) / tick


def one_start(
    tmp: Path,
    setting: str,
    seconds: int,
    nginx: int,
    measures: int,
    noise: list[str] | None,
    probe: list[str],
) -> list[tuple[float, ...]]:
    """Start the chain under ``setting``; per measurement: (A+B, A, B) CPU us a request, the share
    of the machine's two CPUs that other processes (neither proxy, nginx, wrk nor the noise) used
    during it (%), and the probe's time before it (us)."""
    prefix, extra = SETTINGS[setting]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"} | extra
    procs = chains(tmp)["meshbus-mtls"]  # B, then A
    out = []
    with ExitStack() as stack:
        pids = [
            stack.enter_context(process([*prefix, *cmd], 1, port, tmp / f"layout-{i}.log", env))
            for i, (cmd, port) in enumerate(procs)
        ]
        port = procs[-1][1]
        run_wrk(port, 1, None)
        for k in range(measures):
            before = [runtime_ns(p) for p in [*pids, nginx]]
            # how fast CPU 1 runs a fixed memory-bound job right now (the proxies idle meanwhile)
            probe_us = (
                float(subprocess.run(["taskset", "-c", "1", *probe], capture_output=True, text=True).stdout)
                if probe
                else float("nan")
            )
            noisy = noise is not None and k % 2 == 1
            thrash = subprocess.Popen(["chrt", "-i", "0", "taskset", "-c", "0", *noise]) if noisy else None
            m0, kids0, t0 = machine(), resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
            rps, _, errors = run_wrk(port, seconds, None)
            after = [runtime_ns(p) for p in [*pids, nginx]]
            if thrash is not None:
                thrash.kill()
                thrash.wait()
            m1, kids1, t1 = machine(), resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
            wrk = kids1.ru_utime + kids1.ru_stime - kids0.ru_utime - kids0.ru_stime
            ours = sum(a - b for a, b in zip(after, before, strict=True)) / 1e9 + wrk
            others = 100 * (m1 - m0 - ours) / (2 * (t1 - t0))
            if errors:
                raise SystemExit(f"{errors} errors through the chain ({setting})")
            n = rps * seconds
            b_us, a_us = ((x - y) / 1e3 / n for x, y in zip(after[:2], before[:2], strict=True))
            out.append((a_us + b_us, a_us, b_us, others, probe_us))
    for log in tmp.glob("*-tls.log"):  # the sidecars' access logs: ~100 MB a start flat out
        log.unlink()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--starts", type=int, default=8, help="starts of each setting")
    ap.add_argument("--seconds", type=int, default=2, help="seconds per flat-out measurement")
    ap.add_argument("--measures", type=int, default=2, help="flat-out measurements per start")
    ap.add_argument("--noise", type=int, default=0, help="MiB walked on CPU 0 in every other measurement")
    ap.add_argument("--probe", action="store_true", help="time a fixed memory-bound job on CPU 1 before each")
    ap.add_argument("--settings", default="aslr,noaslr-seed0", help=f"comma list of {', '.join(SETTINGS)}")
    args = ap.parse_args()
    names = args.settings.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="meshbus-bench-layout-"))
    prepare(tmp)
    noise = [compiled(tmp, "thrash", THRASH_C), str(args.noise)] if args.noise else None
    probe = [compiled(tmp, "probe", PROBE_C)] if args.probe else []
    rows: dict[str, list[list[tuple[float, ...]]]] = {n: [] for n in names}
    with process(["nginx", "-c", str(tmp / "nginx.conf")], 0, ORIGIN, tmp / "nginx.log") as nginx:
        for r in range(args.starts):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                m = one_start(tmp, name, args.seconds, nginx, args.measures, noise, probe)
                rows[name].append(m)
                print(f"start {r + 1} {name:13s} " + "  ".join(
                    f"A+B {t:5.1f} (A {a:5.1f} B {b:5.1f}; others {o:3.0f}% probe {s:.0f} us)"
                    for t, a, b, o, s in m), flush=True)  # fmt: skip
    shutil.rmtree(tmp, ignore_errors=True)
    print()
    for name, starts in rows.items():
        per_start = sorted(statistics.mean(x[0] for x in m) for m in starts)
        print(f"{name:13s} A+B us/req per start (mean of its 2), sorted: "
              + " ".join(f"{x:.0f}" for x in per_start))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
