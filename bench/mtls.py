"""Two-proxy chain benchmark: plaintext vs mesh mTLS, side by side with HAProxy chained with mutual TLS.

    .venv/bin/python bench/mtls.py [--duration 5] [--latency-duration 5] [--rounds 3]

Chain: wrk -> proxy A (client sidecar, outbound) -> proxy B (server sidecar, inbound) -> nginx origin.
Set-up (bench/chain.py) as bench/run.py and shared/reference/bench-anchors.md: load generator and origin on CPU 0,
both proxies of a chain on CPU 1, keep-alive, rounds interleaved, medians [min-max].
- meshbus plain: the same two sidecars without a mesh identity (plaintext A -> B).
- meshbus mTLS: A and B with SVIDs issued by the CA issuer (ECDSA P-256); A originates mTLS with
  auto-mTLS (the origin's ServiceEntry endpoint names its service account) and checks B's SPIFFE ID,
  B terminates it under PeerAuthentication STRICT. Handshakes are counted: pooled, never per request.
- HAProxy plain / mTLS: two haproxy processes (nbthread 1), A -> B with ``ssl verify required`` and
  client certificates from the same CA, and the sidecars' TLS 1.3 suite order (AES-128-GCM first), so
  both chains run the same cipher (before: both OpenSSL's default, AES-256-GCM).
- Like for like: the sidecars above write a JSON access-log line per request (as in mesh use), HAProxy
  above logs nothing. "haproxy-mtls-log" has both HAProxy processes log each request too (``option
  httplog``, ``log stdout`` into a file), "meshbus-mtls-nolog" has neither sidecar log; the report
  prints meshbus mTLS against each like setup beside the figures against plain "haproxy-mtls".
Throughput: ``wrk -t1 -c50``; CPU per request = CPU time of BOTH proxy processes / requests, with its
kernel share beside it (HAProxy reads a record with two recv calls, the sidecars with one: its mTLS
cost is partly kernel time, theirs user time).
Latency: h2load at 1000 req/s (10 connections), measured as bench/run.py measures it (see its
docstring and run.latency_samples): ``--latency-segments`` (5) runs of fresh h2loads, the first
``--latency-warmup`` (0.5 s) of each not counted, and the origin, both proxies and the h2loads
SCHED_FIFO during the latency run (``--realtime``, the default when chrt may; every chain alike), so
the h2loads' start, one draw of their connections' phases and the shared machine's other work do
not decide a round's p99. Quote the per-round p99 ratio's median (tail_report), over 5 rounds or
more. Needs wrk, h2load, nginx, haproxy, taskset (chrt for --realtime).
Each latency run also prints what sets its tail: both proxies' CPU per request during it (user +
kernel, on the core they share), their context switches per request (voluntary: a wait for work;
preempted: the core taken from them) and how clustered the load's sends were (the share of requests
sent within 200 us of the send before them, any connection). Each h2load process keeps the phase its
start gave it, and a connection whose response came late sends its next request at once, so the 10
connections fall into clusters that differ from run to run (one run: 7 requests within 1 ms, 3 more
~4 ms later, every 10 ms; over two runs of 5-6 rounds 22-70% of sends clustered), and the last
request of a cluster waits for the whole cluster's work on the shared core:
on a quiet machine a round's p99 is mostly that queue, which grows with the chain's CPU per request
and with the round's clustering; on a busy one, other processes holding CPU 1 when a proxy wakes
add more (see --sched). Read the p99 ratios per round, beside each round's clustering.

Diagnostics (not the bench's figures): ``--split`` runs proxy B on CPU 0 (beside the load and the
origin) and A alone on CPU 1, for every setup alike, so the two proxies of a chain no longer share
a core: what p99 loses against the default run is the shared core's share of the tail (the machine
has two cores, so B then shares with the load generator instead). ``--stalls`` has each meshbus
sidecar record its event loop's stalls (telemetry/loop_stalls.py: MESHBUS_LOOP_STALLS) and prints
them per round; its 1 ms probe costs the sidecars, so compare its figures with each other only.
``--latency-only`` skips the throughput run (a 1 s wrk warm-up stays), for more latency rounds.
``--sched`` records the scheduler on CPU 1 during each latency run (``perf sched``; not with
``--split``) and prints, for each proxy of the chain, meshbus and HAProxy alike, how long it waited
between being woken and running, and who held the core during the slowest 1% of those waits: the
other proxy of the chain (the shared core's share), another process (the machine), or nothing.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
from contextlib import ExitStack, nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
# bench/ is not a package: the shared helpers come from run.py and chain.py next to this file
from chain import handshakes, meshbus_chain, prepare
from chain_tail import sched_blame, sched_recording
from run import (
    ORIGIN,
    Result,
    add_latency_args,
    check_tools,
    cpu_user_sys,
    fifo_while,
    h2load_rows,
    latency_per_args,
    med,
    percentiles,
    process,
    realtime_ok,
    run_wrk,
)
from scratch import scratch_dir

from meshbus.proxy.tls.suites import MESH_TLS13_SUITES

HA_A, HA_B = 18111, 18112


# ---- configs ---------------------------------------------------------------------------------------------


def haproxy_chain_conf(tmp: Path, role: str, tls: bool, log: bool = False) -> str:
    if role == "a":
        ssl = f" ssl verify required ca-file {tmp}/root.pem crt {tmp}/a.pem" if tls else ""
        bind, server = f"127.0.0.1:{HA_A}", f"127.0.0.1:{HA_B}{ssl}"
    else:
        ssl = f" ssl crt {tmp}/b.pem ca-file {tmp}/root.pem verify required" if tls else ""
        bind, server = f"127.0.0.1:{HA_B}{ssl}", f"127.0.0.1:{ORIGIN}"
    # the meshbus sidecars' TLS 1.3 suite order (proxy/tls/suites.py): both chains encrypt with AES-128-GCM
    suites = f"  ssl-default-bind-ciphersuites {MESH_TLS13_SUITES}\n  ssl-default-server-ciphersuites {MESH_TLS13_SUITES}\n"
    # log: one line per request (option httplog) written to the process's stdout, which the bench sends
    # to a file, as each meshbus sidecar writes one JSON line per request to its access log file
    log_global, log_defaults = (
        ("  log stdout format raw local0\n", "  log global\n  option httplog\n") if log else ("", "")
    )
    return f"""
global
  nbthread 1
  maxconn 5000
{log_global}{suites if tls else ""}defaults
  mode http
{log_defaults}  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend fe
  bind {bind}
  default_backend be
backend be
  server next {server} maxconn 1000
"""


# ---- parent ----------------------------------------------------------------------------------------------


def haproxy_chain(tmp: Path, tls: bool, log: bool = False) -> list[tuple[list[str], int]]:
    tag = ("tls" if tls else "plain") + ("-log" if log else "")
    out = []
    for role, port in (("b", HA_B), ("a", HA_A)):
        f = tmp / f"haproxy-{role}-{tag}.cfg"
        f.write_text(haproxy_chain_conf(tmp, role, tls, log))
        out.append((["haproxy", "-f", str(f)], port))
    return out


def chains(tmp: Path) -> dict[str, list[tuple[list[str], int]]]:
    """Every chain's commands (B, then A) with the port to wait on, by setup name (``--only``'s)."""
    return {
        "meshbus-plain": meshbus_chain(tmp, False),
        "meshbus-mtls": meshbus_chain(tmp, True),
        "haproxy-plain": haproxy_chain(tmp, False),
        "haproxy-mtls": haproxy_chain(tmp, True),
        # like for like: the sidecars above log every request, HAProxy above logs nothing
        "meshbus-mtls-nolog": meshbus_chain(tmp, True, access_log=False),
        "haproxy-mtls-log": haproxy_chain(tmp, True, log=True),
    }


def _switches(pid: int) -> tuple[int, int]:
    """Voluntary and involuntary context switches of all of ``pid``'s threads."""
    vol = invol = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "status").read_text()
        except OSError:  # a thread that ended meanwhile
            continue
        for line in text.splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                vol += int(line.split()[1])
            elif line.startswith("nonvoluntary_ctxt_switches:"):
                invol += int(line.split()[1])
    return vol, invol


def _usage(pids: list[int]) -> list[tuple[float, float, int, int]]:
    return [(*cpu_user_sys(p), *_switches(p)) for p in pids]


def latency_usage(
    before: list[tuple[float, float, int, int]], after: list[tuple[float, float, int, int]], requests: int
) -> tuple[float, str]:
    """Both proxies' user + kernel CPU us per request, and a line with it, its user share and their
    context switches (voluntary / preempted) per request."""
    user, kern, vol, invol = (sum(a[i] - b[i] for a, b in zip(after, before, strict=True)) for i in range(4))
    n = max(1, requests)
    cpu = (user + kern) * 1e6 / n
    return cpu, (f"cpu {cpu:.0f} us/req (user {user * 1e6 / n:.0f}), "
                 f"switches {vol / n:.2f} + preempted {invol / n:.2f} /req")  # fmt: skip


def clustered(tmp: Path, segments: int, conns: int = 10, gap_us: int = 200) -> float:
    """The share of the latency run's requests sent within ``gap_us`` of the send before them (any
    connection of the same segment): how bunched the 1,000 req/s arrive (run.latency_samples's
    h2load logs, h2load-SEGMENT-CONNECTION.log, read by run.h2load_rows: answered requests)."""
    near = pairs = 0
    for seg in range(segments):
        logs = [tmp / f"h2load-{seg}-{i}.log" for i in range(conns)]
        sends = sorted(start for start, _ in h2load_rows([log for log in logs if log.exists()]))
        near += sum(b - a < gap_us for a, b in itertools.pairwise(sends))
        pairs += max(0, len(sends) - 1)
    return near / pairs if pairs else float("nan")


def _stalls_env(path: Path) -> dict[str, str]:
    path.unlink(missing_ok=True)
    return {**os.environ, "MESHBUS_LOOP_STALLS": str(path)}


def _print_stalls(files: list[Path], window: tuple[float, float]) -> None:
    """Each sidecar's stalls over 200 us (B, then A) during the latency run, per second, by cause
    (the monitor's clock is perf_counter, CLOCK_MONOTONIC as the parent's time.monotonic)."""
    from meshbus.telemetry.loop_stalls import summarize

    for f, who in zip(files, ("B", "A"), strict=True):
        if not f.exists():
            print(f"    stalls {who}: none recorded")
            continue
        lo, hi = window
        sm = summarize([s for s in json.loads(f.read_text())["stalls"] if lo <= s[0] <= hi], hi - lo)
        causes = ", ".join(
            f"{k} {c['per_s']:.1f}/s {c['ms_per_s']:.2f} ms/s max {c['max_us']:.0f} us"
            for k, c in sm["by_cause"].items()
        )
        gcs = [g for g in json.loads(f.read_text())["gc"] if lo <= g[0] <= hi]
        gc_note = f"; GC passes {len(gcs)}, longest {max(g[1] for g in gcs) * 1e6:.0f} us" if gcs else ""
        print(f"    stalls {who}: {sm['stalls_per_s']:.1f}/s over {sm['seconds']:.0f} s: {causes}{gc_note}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    add_latency_args(ap, "origin, both proxies and h2load")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--only",
        default="",
        help="comma list: meshbus-plain,meshbus-mtls,haproxy-plain,haproxy-mtls,meshbus-mtls-nolog,haproxy-mtls-log",
    )
    ap.add_argument("--split", action="store_true", help="diagnostic: proxy B on CPU 0, A on CPU 1")
    ap.add_argument("--stalls", action="store_true", help="diagnostic: meshbus sidecars' loop stalls")
    ap.add_argument("--latency-only", action="store_true", help="no throughput run")
    ap.add_argument("--sched", action="store_true", help="diagnostic: perf sched on CPU 1 in the latency run")
    args = ap.parse_args(argv)
    if check_tools():
        return 2
    tmp = scratch_dir("meshbus-bench-mtls-")
    prepare(tmp)
    setups = chains(tmp)
    if args.only:
        setups = {k: v for k, v in setups.items() if k in args.only.split(",")}
    results = {name: Result() for name in setups}
    notes: dict[str, str] = {}
    sys_share: dict[str, list[float]] = {}  # kernel CPU us/req of both proxies, per round
    lat_cpus: dict[str, list[float]] = {}  # CPU us/req of both proxies in the latency run, per round
    clusters: dict[str, list[float]] = {}  # the latency run's share of clustered sends, per round
    realtime = realtime_ok() if args.realtime is None else args.realtime
    print(f"bench dir {tmp}; {args.rounds} rounds x wrk {args.duration}s + latency {args.latency_duration}s "
          f"in {args.latency_segments} segments (each after {args.latency_warmup}s not counted)"
          f"{'; latency runs SCHED_FIFO' if realtime else ''}")  # fmt: skip
    with process(["nginx", "-c", str(tmp / "nginx.conf")], 0, ORIGIN, tmp / "nginx.log") as origin:
        for rnd in range(args.rounds):
            for name, procs in setups.items():
                stall_files = [tmp / f"stalls-{name}-{i}.json" for i in range(len(procs))]
                with ExitStack() as stack:
                    pids = []
                    for i, (cmd, port) in enumerate(procs):
                        cpu = 0 if args.split and i == 0 else 1
                        env = _stalls_env(stall_files[i]) if args.stalls and "meshbus" in name else None
                        pids.append(
                            stack.enter_context(process(cmd, cpu, port, tmp / f"{name}-{i}.log", env))
                        )
                    port = procs[-1][1]
                    run_wrk(port, 1, None)  # warm-up: pools, caches
                    rps, errors, cpu_us, sys_us = 0.0, 0, float("nan"), float("nan")
                    if not args.latency_only:
                        before = [cpu_user_sys(p) for p in pids]
                        rps, _, errors = run_wrk(port, args.duration, None)
                        after = [cpu_user_sys(p) for p in pids]
                        per_req = 1e6 / max(1.0, rps * args.duration)
                        user_us = sum(a[0] - b[0] for a, b in zip(after, before, strict=True)) * per_req
                        sys_us = sum(a[1] - b[1] for a, b in zip(after, before, strict=True)) * per_req
                        cpu_us = user_us + sys_us
                    with sched_recording(tmp / "sched.data") if args.sched else nullcontext():
                        t0 = time.monotonic()
                        with fifo_while([origin, *pids] if realtime else []):
                            use0 = _usage(pids)
                            lat = latency_per_args(port, tmp, args, realtime)
                            use1 = _usage(pids)
                        p50, p90, p99 = percentiles(lat)
                        window = (t0, time.monotonic())
                    if name == "meshbus-mtls":
                        notes[name] = handshakes()
                res = results[name]
                res.rps.append(rps)
                res.cpu_us.append(cpu_us)
                sys_share.setdefault(name, []).append(sys_us)
                res.errors += errors
                res.p50.append(p50)
                res.p90.append(p90)
                res.p99.append(p99)
                print(f"  round {rnd + 1} {name:14s} {rps:10,.0f} rps  cpu {cpu_us:6.1f} us/req (both proxies; "
                      f"kernel {sys_us:.1f})  "
                      f"p50/p90/p99 {p50:.3f}/{p90:.3f}/{p99:.3f} ms  errors {errors}")  # fmt: skip
                # every request sent in the latency run, the uncounted warm-ups too (their CPU is in it)
                sent = round(1000 * (args.latency_duration + args.latency_segments * args.latency_warmup))
                lat_cpu, usage = latency_usage(use0, use1, sent)
                lat_cpus.setdefault(name, []).append(lat_cpu)
                bunched = clustered(tmp, args.latency_segments)
                clusters.setdefault(name, []).append(bunched)
                print(f"    @1000 rps: {usage}; sends clustered {100 * bunched:.0f}%")
                if args.stalls and "meshbus" in name:
                    _print_stalls(stall_files, window)
                if args.sched:
                    sched_blame(
                        tmp / "sched.data", {pid: who for pid, who in zip(pids, ("B", "A"), strict=True)}
                    )
    report(results, notes, sys_share)
    tail_report(results, lat_cpus, clusters)
    return 0


def _m(results: dict[str, Result], name: str, attr: str) -> float:
    r = results.get(name)
    return statistics.median(getattr(r, attr)) if r is not None else float("nan")


def report(results: dict[str, Result], notes: dict[str, str], sys_share: dict[str, list[float]]) -> None:
    hp = _m(results, "haproxy-mtls", "rps") or float("nan")  # nan: --latency-only, or no HAProxy mTLS
    print()
    print("| chain (A -> B) | rps median [min-max] | x HAProxy mTLS | CPU us/req (A+B) | @1000 rps p50 / p90 / p99 ms "
          "| errors |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        p50, p90, p99 = (statistics.median(x) for x in (r.p50, r.p90, r.p99))
        print(f"| {name} | {med(r.rps)} | {statistics.median(r.rps) / hp:.2f} | {med(r.cpu_us)} | "
              f"{p50:.3f} / {p90:.3f} / {p99:.3f} | {r.errors} |")  # fmt: skip
    for kind in ("meshbus", "haproxy"):
        plain, mtls = f"{kind}-plain", f"{kind}-mtls"
        if plain in results and mtls in results:
            cpu = _m(results, mtls, "cpu_us") / _m(results, plain, "cpu_us")
            rps = _m(results, mtls, "rps") / (_m(results, plain, "rps") or float("nan"))
            # where the extra CPU goes: user space (the record layer) or the kernel (more reads per record)
            extra = _m(results, mtls, "cpu_us") - _m(results, plain, "cpu_us")
            kern = statistics.median(sys_share[mtls]) - statistics.median(sys_share[plain])
            print(
                f"{kind}: mTLS costs {100 * (cpu - 1):+.0f}% CPU per request ({extra:+.1f} us, of which kernel "
                f"{kern:+.1f} us), throughput x{rps:.2f} vs plaintext"
            )
    # like for like: the same chain with and without a per-request access log on both sides
    for mb, ha, what in (
        ("meshbus-mtls", "haproxy-mtls-log", "both log every request"),
        ("meshbus-mtls-nolog", "haproxy-mtls", "neither logs"),
    ):
        if mb in results and ha in results:
            print(
                f"like for like ({what}): {mb} x{_m(results, mb, 'rps') / (_m(results, ha, 'rps') or float('nan')):.2f}"
                f" {ha} throughput, p99 x{_m(results, mb, 'p99') / _m(results, ha, 'p99'):.2f}"
            )
    if "meshbus-mtls" in notes:
        print(f"meshbus-mtls handshakes counted by proxy B after the last round (outbound inbound failures): "
              f"{notes['meshbus-mtls']}")  # fmt: skip
    print("targets (issue 5): meshbus mTLS >= 0.6x HAProxy mTLS throughput; mTLS CPU overhead <= HAProxy's")


def tail_report(
    results: dict[str, Result], lat_cpus: dict[str, list[float]], clusters: dict[str, list[float]]
) -> None:
    """meshbus mTLS's p99 against HAProxy mTLS's round by round (the rounds interleave, so a disturbed
    stretch of the machine hits both of a pair), beside the two chains' CPU per request at 1,000 req/s
    and each run's clustered sends (meshbus / HAProxy), which move p99 as much as the proxies do."""
    mb, ha = results.get("meshbus-mtls"), results.get("haproxy-mtls")
    if mb is None or ha is None:
        return
    print(
        "meshbus mTLS / HAProxy mTLS at 1,000 req/s, per round (p99 ratio, CPU/req ratio, clustered sends):"
    )
    rows = zip(mb.p99, ha.p99, lat_cpus["meshbus-mtls"], lat_cpus["haproxy-mtls"],
               clusters["meshbus-mtls"], clusters["haproxy-mtls"], strict=True)  # fmt: skip
    ratios = []
    for i, (mp, hp, mc, hc, mk, hk) in enumerate(rows):
        ratios.append(mp / hp)
        print(
            f"  round {i + 1}: p99 {mp / hp:.2f}x  CPU {mc / hc:.2f}x  clustered {100 * mk:.0f}% / {100 * hk:.0f}%"
        )
    print(
        f"  p99 ratio median {statistics.median(ratios):.2f}x [{min(ratios):.2f}-{max(ratios):.2f}]; target <= 1.3x"
    )


if __name__ == "__main__":
    sys.exit(main())
