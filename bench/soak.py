"""Soak: a constant 70% of the chain's capacity through two sidecars with mTLS for SOAK_SECONDS.

    make soak                          # SOAK_SECONDS=600 (issue 16: 10 minutes)
    .venv/bin/python bench/soak.py [--seconds 600] [--load 0.7] [--warmup S] [--window S]

The chain of bench/chain.py (load -> sidecar A -mTLS-> sidecar B -> nginx; load generator and origin
on CPU 0, both sidecars on CPU 1), each sidecar with its access log on (JSON to a file), its metrics
recorded and scraped from its admin port (/stats/prometheus) every sample, as Prometheus would.

1. Capacity: after a 1 s warm-up, ``wrk -t1 -c50`` for --capacity-seconds at full load.
2. Load: --connections h2load processes (``--h1 -c1 --rps R``, started 1 ms apart, as bench/run.py's
   latency run) whose rates add up to --load x capacity, for --seconds; every request's start time,
   status and latency in their per-request logs.
3. Every --sample seconds: each sidecar's VmRSS (/proc/PID/status), open fds (/proc/PID/fd) and the
   number of series its /stats/prometheus exposes (a label set that grows per request is a leak too).

Figures are taken after the warm-up (default: min(60 s, a quarter of the run)), in which pools,
caches, allocator arenas and the TLS session state fill up. Targets (exit 1 when one fails):
- RSS flat: each sidecar's RSS at the end minus at the end of the warm-up < 5 MB (each the median of
  three samples, so one sample taken mid-garbage-collection does not decide it).
- no fd growth: fds at the end minus at the end of the warm-up <= FD_TOLERANCE (2). Once warm the
  count holds still under a leak-free proxy (the capacity run grew each upstream pool to 50
  connections, more than the soak's 16 ever need, and idle ones live an hour), but a connection its
  peer closes is replaced on the next request and a sample can fall between the two, or see a
  replacement opened while the old one is still closing; a leak climbs instead (one fd per leaked
  request would be thousands here).
- p99 stable: the p99 of the last full window is at most 1.5x that of the first window after the
  warm-up, or within +1 ms of it (below a few ms, one scheduler hiccup of this shared 2-core machine
  moves a p99 by more than half without anything degrading). The max/min ratio over every window is
  printed too, and per window the CPU time of both sidecars per request, which other processes on
  the machine move far less than latency: a p99 that climbs while CPU per request stays flat is the
  machine, one that climbs with it is the proxy.
- no series growth: the Prometheus series of each sidecar are as many at the end as after warm-up.
- nothing failed: every request sent got a 2xx (h2load's own count and the per-request logs).
- the load was sustained: the requests went out at >= 90% of the rate (h2load sends every request it
  was asked for, late when the chain falls behind: the run then measured something else).
Needs wrk, h2load, nginx and taskset.
"""

from __future__ import annotations

import argparse
import bisect
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
# bench/ is not a package: the shared helpers come from run.py and chain.py next to this file
from chain import A_PORT, handshakes, meshbus_chain, prepare
from run import ORIGIN, check_tools, cpu_seconds, process, rss_mb, run_wrk, start_h2load
from scratch import scratch_dir

A_ADMIN, B_ADMIN = 18105, 18104
RSS_GROWTH_MB = 5.0
FD_TOLERANCE = 2
P99_RATIO = 1.5
P99_SLACK_MS = 1.0
DIED = "exited during the soak"


@dataclass
class Sample:
    t: float  # seconds since the load started
    rss_mb: float
    fds: int
    series: int
    cpu: float  # user + system seconds so far


@dataclass
class Proc:
    name: str
    pid: int
    admin: int
    samples: list[Sample] = field(default_factory=list)


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def series_count(admin: int) -> int:
    """Series in the proxy's Prometheus exposition (-1 when the scrape fails)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/stats/prometheus", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return -1
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def h2load_counts(out: str) -> tuple[int, int]:
    """(requests h2load was asked for, 2xx responses) from its summary."""
    total = re.search(r"requests: (\d+) total", out)
    ok = re.search(r"status codes: (\d+) 2xx", out)
    return (int(total.group(1)) if total else 0), (int(ok.group(1)) if ok else 0)


def read_logs(logs: list[Path]) -> tuple[list[tuple[float, float]], int]:
    """(start seconds since epoch, latency ms) of every 2xx, and the number of other rows."""
    ok, bad = [], 0
    for log in logs:
        for line in log.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) < 3:
                continue
            if parts[1].startswith("2"):
                ok.append((int(parts[0]) / 1e6, int(parts[2]) / 1000.0))
            else:
                bad += 1
    return ok, bad


def p99(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[98] if len(xs) > 1 else float("nan")


def windows(
    rows: list[tuple[float, float]], t0: float, warmup: float, window: float
) -> list[tuple[float, int, float]]:
    """(window start s, requests, p99 ms) of each window after the warm-up; a trailing window that
    the load covered for less than 90% of its length is dropped (its rate and p99 mean less)."""
    buckets: dict[int, list[float]] = {}
    for start, ms in rows:
        t = start - t0
        if t >= warmup:
            buckets.setdefault(int((t - warmup) // window), []).append(ms)
    if not buckets:
        return []
    end = max(start for start, _ in rows) - t0
    return [
        (warmup + i * window, len(buckets[i]), p99(buckets[i]))
        for i in sorted(buckets)
        if end - (warmup + i * window) >= 0.9 * window
    ]


def _edge(samples: list[Sample], attr: str, first: bool) -> float:
    pick = samples[:3] if first else samples[-3:]
    return statistics.median(getattr(s, attr) for s in pick)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=int(os.environ.get("SOAK_SECONDS", "600")))
    ap.add_argument("--load", type=float, default=0.7, help="share of the measured capacity")
    ap.add_argument("--warmup", type=float, default=None, help="default: min(60, seconds / 4)")
    ap.add_argument(
        "--window", type=float, default=None, help="p99 window; default: ~60 s, >= 3 after the warm-up"
    )
    ap.add_argument("--sample", type=float, default=5.0, help="seconds between RSS/fd samples")
    ap.add_argument("--capacity-seconds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--keep", action="store_true", help="keep the folder (logs, access logs) afterwards")
    args = ap.parse_args(argv)
    warmup = args.warmup if args.warmup is not None else min(60.0, args.seconds / 4)
    # about a minute each, at least three, fitting the time after the warm-up exactly
    window = args.window or (args.seconds - warmup) / max(3, round((args.seconds - warmup) / 60))
    if check_tools():
        return 2
    tmp = scratch_dir("meshbus-soak-")
    failures: list[str] = []
    try:
        failures = soak(args, tmp, warmup, window)
    finally:
        if args.keep or any(DIED in f for f in failures):
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)  # the access logs alone grow ~3 MB/s per sidecar
    for f in failures:
        print(f"FAILED: {f}")
    return 1 if failures else 0


def stop(loaders: list[subprocess.Popen[str]]) -> None:
    for p in loaders:
        if p.poll() is None:
            p.kill()


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def soak(args: argparse.Namespace, tmp: Path, warmup: float, window: float) -> list[str]:
    """Run the chain and the load, sample, report; the failed targets."""
    prepare(tmp)
    print(f"soak dir {tmp}; {args.seconds}s at {args.load:.0%} of capacity, warm-up {warmup:.0f}s, "
          f"p99 windows of {window:.0f}s, samples every {args.sample:.0f}s; load average {os.getloadavg()}")  # fmt: skip
    with ExitStack() as stack:
        stack.enter_context(process(["nginx", "-c", str(tmp / "nginx.conf")], 0, ORIGIN, tmp / "nginx.log"))
        procs = []
        chain = meshbus_chain(tmp, True, (B_ADMIN, A_ADMIN))
        for (cmd, port), name, admin in zip(chain, "BA", (B_ADMIN, A_ADMIN), strict=True):
            pid = stack.enter_context(process(cmd, 1, port, tmp / f"sidecar-{name}.out"))
            procs.append(Proc(f"sidecar {name}", pid, admin))
        run_wrk(A_PORT, 1, None)  # warm-up: pools, caches, TLS
        capacity, _, cap_errors = run_wrk(A_PORT, args.capacity_seconds, None)
        rate = int(capacity * args.load)
        print(f"capacity {capacity:,.0f} rps (wrk -c50, {cap_errors} errors); driving {rate:,} rps "
              f"with {args.connections} connections")  # fmt: skip
        per = max(1, round(rate / args.connections))
        logs = [tmp / f"soak-h2load-{i}.log" for i in range(args.connections)]
        loaders = start_h2load(
            A_PORT, per, per * args.seconds, logs, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        stack.callback(stop, loaders)
        t0 = time.time()
        deadline = time.monotonic() + args.seconds * 1.5 + 30
        next_sample = time.monotonic()
        dead: list[str] = []
        while any(p.poll() is None for p in loaders) and time.monotonic() < deadline:
            dead = [p.name for p in procs if not alive(p.pid)]
            if dead:
                break
            for p in procs:
                # fds before the scrape, whose own connection would be counted otherwise
                rss, fds = rss_mb(p.pid), fd_count(p.pid)
                p.samples.append(
                    Sample(time.time() - t0, rss, fds, series_count(p.admin), cpu_seconds(p.pid))
                )
            next_sample += args.sample
            time.sleep(max(0.0, next_sample - time.monotonic()))
        outputs = []
        for p in loaders:
            if p.poll() is None:
                p.kill()
            outputs.append(p.communicate()[0])
        hs = handshakes()
    asked = sum(h2load_counts(o)[0] for o in outputs)
    ok2xx = sum(h2load_counts(o)[1] for o in outputs)
    rows, bad_rows = read_logs(logs)
    sent = len(rows) + bad_rows
    wins = windows(rows, t0, warmup, window)
    access = {n: (tmp / f"{n}-tls.log").stat().st_size for n in "ab" if (tmp / f"{n}-tls.log").exists()}
    span = max((start for start, _ in rows), default=t0) - t0
    starts = sorted(start - t0 for start, _ in rows)
    cpu = [cpu_per_request(procs, starts, w[0], w[0] + window) for w in wins]
    failures = report(procs, wins, cpu, warmup, asked, sent, ok2xx, bad_rows, rate, args.seconds, span)
    print(
        "access logs: " + ", ".join(f"sidecar {n.upper()} {size / 1e6:,.1f} MB" for n, size in access.items())
    )
    print(f"mTLS handshakes counted by sidecar B (outbound inbound failures): {hs or '-'}")
    print(f"load average at the end {os.getloadavg()}")
    return [f"{name} {DIED} (its output: {tmp})" for name in dead] + failures


def cpu_per_request(procs: list[Proc], starts: list[float], begin: float, end: float) -> float:
    """CPU time of both sidecars per request (us) between the first and last samples in [begin, end]:
    what a request costs, which the machine's other load moves far less than latency."""
    ts = [s.t for s in procs[0].samples if begin <= s.t <= end]
    if len(ts) < 2:
        return float("nan")
    used = 0.0
    for p in procs:
        inside = [s for s in p.samples if ts[0] <= s.t <= ts[-1]]
        used += inside[-1].cpu - inside[0].cpu
    n = bisect.bisect_left(starts, ts[-1]) - bisect.bisect_left(starts, ts[0])
    return used * 1e6 / n if n else float("nan")


def report(
    procs: list[Proc], wins: list[tuple[float, int, float]], cpu: list[float], warmup: float, asked: int, sent: int,
    ok2xx: int, bad_rows: int, rate: int, seconds: int, span: float,
) -> list[str]:  # fmt: skip
    failures = []
    print()
    print("| process | RSS after warm-up MB | RSS at end MB | growth MB | max MB | fds after warm-up | fds at end | "
          "fd growth | max fds | metric series (after warm-up -> end) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for p in procs:
        after = [s for s in p.samples if s.t >= warmup]
        if len(after) < 3:
            failures.append(f"{p.name}: fewer than 3 samples after the warm-up")
            continue
        r0, r1 = _edge(after, "rss_mb", True), _edge(after, "rss_mb", False)
        f0, f1 = _edge(after, "fds", True), _edge(after, "fds", False)
        s0, s1 = after[0].series, after[-1].series
        print(f"| {p.name} | {r0:.1f} | {r1:.1f} | {r1 - r0:+.1f} | {max(s.rss_mb for s in after):.1f} | {f0:.0f} | "
              f"{f1:.0f} | {f1 - f0:+.0f} | {max(s.fds for s in after)} | {s0} -> {s1} |")  # fmt: skip
        if r1 - r0 >= RSS_GROWTH_MB:
            failures.append(
                f"{p.name}: RSS grew {r1 - r0:.1f} MB after the warm-up (target < {RSS_GROWTH_MB} MB)"
            )
        if f1 - f0 > FD_TOLERANCE:
            failures.append(f"{p.name}: {f1 - f0:.0f} more fds after the warm-up (tolerance {FD_TOLERANCE})")
        if s1 != s0:
            failures.append(f"{p.name}: the metric series went from {s0} to {s1} under the same traffic")
    print()
    print("| window (s after start) | requests | rps | p99 ms | CPU us/req (A+B) |")
    print("|---|---|---|---|---|")
    width = (wins[1][0] - wins[0][0]) if len(wins) > 1 else float(seconds) - warmup
    for (start, n, q), us in zip(wins, cpu, strict=True):
        print(f"| {start:.0f}-{start + width:.0f} | {n:,} | {n / width:,.0f} | {q:.3f} | {us:.0f} |")
    if len(wins) >= 2:
        first, last = wins[0][2], wins[-1][2]
        ratio = max(w[2] for w in wins) / min(w[2] for w in wins)
        print(
            f"\np99 first/last window after warm-up {first:.3f} / {last:.3f} ms; max/min over windows {ratio:.2f}"
        )
        if last > max(first * P99_RATIO, first + P99_SLACK_MS):
            failures.append(f"p99 of the last window {last:.3f} ms > max({P99_RATIO}x, +{P99_SLACK_MS} ms) "
                            f"of the first {first:.3f} ms")  # fmt: skip
    else:
        failures.append("fewer than two p99 windows after the warm-up: run longer")
    failed = max(asked - ok2xx, bad_rows)
    achieved = sent / max(1.0, span)
    print(f"requests: target rate {rate:,} rps for {seconds}s; asked {asked:,}, sent {sent:,} in {span:.0f}s "
          f"({achieved:,.0f} rps), 2xx {ok2xx:,}, failed {failed:,}")  # fmt: skip
    if failed:
        failures.append(f"{failed} requests failed")
    if achieved < 0.9 * rate:
        # on a shared machine: other processes took the CPU the capacity run measured
        failures.append(f"the load was not sustained: {achieved:,.0f} of {rate:,} rps")
    return failures


if __name__ == "__main__":
    sys.exit(main())
