"""Where the two-sidecar chain's latency tail goes: each request of a 1,000 req/s run, split by hop.

    .venv/bin/python bench/chain_tail.py [--tls] [--duration 5] [--rounds 1] [--lag] [--cores shared]

The chain of bench/mtls.py (h2load -> sidecar A -> sidecar B -> nginx; load and origin on CPU 0, both
sidecars on CPU 1; ``--cores split`` puts A on CPU 0 beside them, ``both`` alternates rounds, for
what sharing one core costs the tail). Each sidecar keeps, per request, its begin time and duration
(a record sink in the sidecar's memory, no file); the parent joins them with h2load's per-request log (A and B by
x-request-id, h2load and A by time) and prints, for the median request and for the slowest 1%,
where the time went:

- ``to A``: from h2load's send to A's ``begin`` (A's read, parse; A busy, or not on the CPU),
- ``A->B``: A's route, pool, upstream write until B's ``begin``,
- ``B``: B's whole exchange (origin included),
- ``B->A``: from B's end to A's end (the response through A),
- ``to client``: from A's end to h2load's receive.

``--lag`` also runs, in each sidecar, telemetry/loop_stalls.py's monitor: a 1 ms loop timer that
counts its wake-ups later than 200 us (stalls), per second, each charged to what ran meanwhile (the
access-log writer, the timeouts sweep, a GC pass; ``off-cpu`` when the sidecar waited for the core;
``timer`` when it slept through it, the loop idle: the probe's own timer late, no stall), else to the
requests themselves.
``--sched`` records the scheduler on
CPU 1 during the run (``perf sched``) and says, for the sidecars' waits between being woken and
running, what held the CPU meanwhile: the other sidecar, another process, or nothing (the wake-up of
an idle CPU). ``--format-at request`` has each sidecar format each access-log line as its request ends
(``AccessLogWriter(per_request=True)``) instead of the writer's 0.2 s batches, formatted in slices of
~50 us of loop time (``writer``, the default, as the proxy runs); ``both`` alternates rounds: same bytes
in the file, for an A/B of the tail; ``--format-at slices`` alternates the writer's 50 us slices with
its former fixed 64-record chunks. Needs h2load, nginx, wrk, taskset (and perf for ``--sched``).
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from chain import A_PORT, meshbus_chain, prepare
from run import ORIGIN, process, run_wrk, start_h2load
from scratch import scratch_dir


class _Collector:
    """Stands in for the proxy's AccessLogger: keeps (begin, duration, request id) per request, and
    hands the record on to the real logger when there is one (``--access-log``)."""

    def __init__(self, real: Any) -> None:
        # three flat lists, not a tuple per request: 1,000 tuples a second would count toward the
        # cyclic GC's young generation and set off a ~5-15 ms gen0 pass every ~30 s that the proxy
        # itself does not have (no GC pass in 30 s of bench/mtls.py --stalls at 1,000 req/s)
        self.starts: list[float] = []
        self.durations: list[float] = []
        self.ids: list[str | None] = []
        self.real = real

    def log(self, r: Any) -> None:
        self.starts.append(r.start_time)
        self.durations.append(r.duration_ms)
        self.ids.append(r.request_id)
        if self.real is not None:
            self.real.log(r)

    def drain(self) -> list[Any]:
        return []


async def _serve(args: argparse.Namespace) -> None:
    from chain import start_sidecar

    server = await start_sidecar(args, None, "off")
    if args.access_log:
        from meshbus.telemetry.accesslog_writer import FileSink

        server.add_access_log_sink(FileSink(args.access_log))
        if args.format_at == "request":  # the writer then joins the lines (AccessLogWriter(per_request=True))
            from meshbus.telemetry.accesslog import LINE_JSON

            server.access_log.line = LINE_JSON  # type: ignore[attr-defined]
        elif args.format_at == "chunks64":  # the writer as it was: 64 records a turn, whatever they take
            server._writer._chunk, server._writer._budget = 64, 1.0  # type: ignore[union-attr]
    col = _Collector(server.access_log if args.access_log else None)
    server.access_log = col
    mon = None
    if args.lag:
        from meshbus.telemetry.loop_stalls import StallMonitor

        mon = StallMonitor()
        mon.start()
    try:
        await server.serve_until_stopped()
    finally:
        stalls: dict[str, Any] = {}
        if mon is not None:
            mon.stop()
            stalls = {"summary": mon.summary(), "stalls": mon.stalls, "gc": mon.gc_passes}
        rows = list(zip(col.starts, col.durations, col.ids, strict=True))
        Path(args.out).write_text(json.dumps({"rows": rows, "stalls": stalls}))  # noqa: ASYNC240 - at exit


def sidecar_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    for name in ("--dir", "--config", "--out"):
        ap.add_argument(name, required=True)
    ap.add_argument("--outbound", default="off")
    ap.add_argument("--inbound", default="off")
    ap.add_argument("--app-port", type=int, default=None)
    ap.add_argument("--tls", action="store_true")
    ap.add_argument("--lag", action="store_true")
    ap.add_argument("--access-log", default=None)
    ap.add_argument("--format-at", default="writer")
    ap.add_argument("--name", default="a")
    ap.add_argument("--sa", default="client")
    args, _ = ap.parse_known_args(argv)
    import uvloop

    uvloop.run(_serve(args))
    return 0


def _commands(
    tmp: Path, tls: bool, lag: bool, access_log: bool, format_at: str = "writer"
) -> list[tuple[list[str], int, Path]]:
    me = str(Path(__file__).resolve())
    out = []
    for (cmd, port), name in zip(meshbus_chain(tmp, tls), ("b", "a"), strict=True):
        dump = tmp / f"tail-{name}.json"
        # chain.py's sidecar arguments (the access log's file among them), run by this file's sidecar
        if not access_log:
            i = cmd.index("--access-log")
            cmd = cmd[:i] + cmd[i + 2 :]
        cmd = [cmd[0], me, "sidecar", *cmd[3:], "--out", str(dump), "--format-at", format_at]
        cmd += ["--lag"] if lag else []
        out.append((cmd, port, dump))
    return out


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def analyse(
    h2: list[tuple[float, float]],
    a: list[Any],
    b: list[Any],
    stalls: dict[str, dict[str, Any]],
    window: tuple[float, float],
) -> None:
    """``h2``: (send time s, latency s) per request; ``a``, ``b``: the sidecars' rows."""
    b_by_id = {rid: (st, d / 1000.0) for st, d, rid in b}
    a_rows = sorted((st, d / 1000.0, rid) for st, d, rid in a)
    a_starts = [r[0] for r in a_rows]
    import bisect

    parts: list[tuple[float, tuple[float, ...]]] = []
    for s, lat in h2:
        i = bisect.bisect_left(a_starts, s - 0.0002)  # clocks agree to well under that
        if i >= len(a_rows) or a_rows[i][0] > s + lat:
            continue
        ast, ad, rid = a_rows[i]
        bb = b_by_id.get(rid)
        if bb is None:
            continue
        bst, bd = bb
        to_a = ast - s
        a_to_b = bst - ast
        b_back = (ast + ad) - (bst + bd)
        to_client = s + lat - (ast + ad)
        parts.append((lat, (to_a, a_to_b, bd, b_back, to_client)))
    if not parts:
        print("no requests joined")
        return
    parts.sort()
    lat_all = [p[0] for p in parts]
    p99 = _pct(lat_all, 0.99)
    names = ("to A", "A->B", "B", "B->A", "to client")
    print(f"joined {len(parts)} of {len(h2)} requests; p50 {_pct(lat_all, 0.5) * 1e3:.3f} ms, "
          f"p90 {_pct(lat_all, 0.9) * 1e3:.3f}, p99 {p99 * 1e3:.3f}")  # fmt: skip
    mid = [p for p in parts if abs(p[0] - _pct(lat_all, 0.5)) < 0.00005] or parts[
        len(parts) // 2 : len(parts) // 2 + 1
    ]
    slow = [p for p in parts if p[0] >= p99]
    print(f"{'us':>12s} " + " ".join(f"{n:>10s}" for n in names) + f" {'total':>10s}")
    for label, group in (("median", mid), ("slowest 1%", slow)):
        cols = [statistics.mean(p[1][k] for p in group) * 1e6 for k in range(5)]
        total = statistics.mean(p[0] for p in group) * 1e6
        print(f"{label:>12s} " + " ".join(f"{c:10.0f}" for c in cols) + f" {total:10.0f}")
    for k, n in enumerate(names):
        xs = [p[1][k] for p in parts]
        print(f"  {n:>10s}: p50 {_pct(xs, 0.5) * 1e6:6.0f} us  p99 {_pct(xs, 0.99) * 1e6:6.0f} us  "
              f"max {max(xs) * 1e6:7.0f} us")  # fmt: skip
    for name, st in stalls.items():
        if st:
            print_stalls(name, st, window)


def print_stalls(name: str, st: dict[str, Any], window: tuple[float, float]) -> None:
    """One sidecar's loop stalls (telemetry/loop_stalls.py) during the latency run (``window``, in
    CLOCK_MONOTONIC seconds as the monitor's perf_counter): per second, by cause."""
    from meshbus.telemetry.loop_stalls import summarize

    lo, hi = window
    run = [s for s in st["stalls"] if lo <= s[0] <= hi]
    sm = summarize(run, hi - lo)
    print(f"  loop stalls {name}: {sm['stalls_per_s']:.1f}/s over 200 us ({sm['seconds']:.1f} s)")
    for cause, c in sm["by_cause"].items():
        print(f"    {cause:>24s}: {c['per_s']:6.2f}/s  {c['ms_per_s']:6.2f} ms/s  max {c['max_us']:6.0f} us")
    gcs = [g for g in st.get("gc", []) if lo <= g[0] <= hi]
    print(f"    GC passes: {len(gcs)}" + (f", longest {max(g[1] for g in gcs) * 1e6:.0f} us, generations "
          f"{sorted({g[2] for g in gcs})}" if gcs else ""))  # fmt: skip
    own = [s for s in run if s[-1] not in ("off-cpu", "timer")]
    for _t, late, cpu, waited, causes in sorted(own, key=lambda s: -s[1])[:5]:
        print(f"      worst own: late {late * 1e6:5.0f} us, cpu {cpu * 1e6:5.0f} us, waited {waited * 1e6:5.0f} us: "
              f"{causes}")  # fmt: skip


@contextmanager
def sched_recording(data: Path) -> Iterator[None]:
    """``perf sched record`` on CPU 1 into ``data`` while the block runs (bench/mtls.py --sched too)."""
    perf = subprocess.Popen(
        ["perf", "sched", "record", "-C", "1", "-o", str(data)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(0.5)
    try:
        yield
    finally:
        perf.send_signal(signal.SIGINT)
        perf.wait(30)


def sched_blame(data: Path, sidecars: dict[int, str]) -> None:
    """From ``perf sched timehist`` on CPU 1: the sidecars' scheduling delays and who ran meanwhile."""
    out = subprocess.run(
        ["perf", "sched", "timehist", "-i", str(data), "-C", "1"], capture_output=True, text=True, check=False
    ).stdout
    runs: list[tuple[float, float, str]] = []  # (start, end, who) of each slice on CPU 1
    delays: dict[str, list[tuple[float, float, float]]] = {n: [] for n in sidecars.values()}
    for line in out.splitlines():
        f = line.split()
        if len(f) < 6 or not f[0][0].isdigit():
            continue
        try:
            end, sch, run = float(f[0]), float(f[-2]), float(f[-1])
        except ValueError:
            continue
        task = " ".join(f[2:-3])
        tid = task.rsplit("[", 1)[-1].split("/")[0].rstrip("]")
        who = sidecars.get(int(tid), "other") if tid.isdigit() else ("idle" if "idle" in task else "other")
        start = end - run / 1000.0
        runs.append((start, end, who))
        if who in delays and sch > 0:
            delays[who].append((start - sch / 1000.0, start, sch))
    for name, ds in delays.items():
        if not ds:
            continue
        ds.sort(key=lambda d: d[2])
        blame: dict[str, float] = {}
        worst = ds[-max(1, len(ds) // 100) :]  # the slowest 1% of the waits
        for lo, hi, _ in worst:
            for rs, re_, who in runs:
                ov = min(hi, re_) - max(lo, rs)
                if ov > 0 and who != name:
                    blame[who] = blame.get(who, 0.0) + ov
        total = sum(blame.values()) or 1.0
        schs = [d[2] * 1000 for d in ds]
        print(f"  sched delay {name}: {len(ds)} wake-ups, p50 {_pct(schs, 0.5):.0f} us, p99 {_pct(schs, 0.99):.0f} us, "
              f"max {max(schs):.0f} us; during the slowest 1%, CPU 1 ran: "
              + ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in sorted(blame.items(), key=lambda kv: -kv[1])))  # fmt: skip


def read_h2load(logs: list[Path]) -> list[tuple[float, float]]:
    out = []
    for log in logs:
        for line in log.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 3 and parts[1].startswith("2"):
                out.append((int(parts[0]) / 1e6, int(parts[2]) / 1e6))
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tls", action="store_true")
    ap.add_argument("--lag", action="store_true")
    ap.add_argument(
        "--access-log",
        choices=["on", "off", "both"],
        default="on",
        help="the sidecars' JSON access log to a file as in bench/mtls.py (both: alternate rounds)",
    )
    ap.add_argument(
        "--format-at",
        choices=["request", "writer", "both", "chunks64", "slices"],
        default="writer",
        help="where access-log lines are formatted: by the writer in batches (as the proxy runs), or as "
        "each request ends (both: alternate rounds, the writer's first); chunks64: by the writer in fixed "
        "64-record chunks as before its 50 us budget (slices: alternate rounds, writer then chunks64)",
    )
    ap.add_argument("--sched", action="store_true", help="perf sched on CPU 1: who delays the sidecars")
    ap.add_argument(
        "--cores",
        choices=["shared", "split", "both"],
        default="shared",
        help="shared: both sidecars on CPU 1 (as bench/mtls.py runs them); split: A on CPU 0 beside the "
        "load and the origin, B alone on CPU 1; both: alternate rounds, shared first",
    )
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args(argv)
    tmp = scratch_dir("meshbus-bench-tail-")
    prepare(tmp)
    with process(["nginx", "-c", str(tmp / "nginx.conf")], 0, ORIGIN, tmp / "nginx.log"):
        for rnd in range(args.rounds):
            al = args.access_log == "on" or (args.access_log == "both" and rnd % 2 == 0)
            fmt_at = args.format_at if args.format_at != "both" else ("writer", "request")[rnd % 2]
            if args.format_at == "slices":
                fmt_at = ("writer", "chunks64")[rnd % 2]
            if args.format_at == "both" and args.access_log == "both":
                fmt_at = ("writer", "writer", "request", "request")[rnd % 4]  # each with the log off and on
            split = args.cores == "split" or (args.cores == "both" and rnd % 2 == 1)
            cmds = _commands(tmp, args.tls, args.lag, al, fmt_at)
            with ExitStack() as stack:
                pids = {}
                for i, ((cmd, port, _dump), name) in enumerate(zip(cmds, ("b", "a"), strict=True)):
                    cpu = 0 if split and name == "a" else 1
                    pids[stack.enter_context(process(cmd, cpu, port, tmp / f"tail-{i}.log"))] = name
                run_wrk(A_PORT, 1, None)  # warm-up: pools, caches
                if args.sched:
                    stack.enter_context(sched_recording(tmp / "sched.data"))
                logs = [tmp / f"h2load-{i}.log" for i in range(10)]
                t0 = time.monotonic()  # the stalls counted are the latency run's (no warm-up)
                procs = start_h2load(A_PORT, 100, 100 * args.duration, logs)
                for p in procs:
                    p.wait(args.duration * 3 + 10)
                window = (t0, time.monotonic())
            h2 = read_h2load(logs)
            dumps = {
                name: json.loads(d.read_text()) for (_c, _p, d), name in zip(cmds, ("b", "a"), strict=True)
            }
            where = f", formatted at {fmt_at}" if al else ""
            cores = "A on CPU 0, B on CPU 1" if split else "both sidecars on CPU 1"
            print(
                f"round {rnd + 1} ({'mTLS' if args.tls else 'plain'}, access log {'on' if al else 'off'}{where}, "
                f"{cores}):"
            )
            analyse(
                h2, dumps["a"]["rows"], dumps["b"]["rows"], {k: v["stalls"] for k, v in dumps.items()}, window
            )
            if args.sched:
                sched_blame(tmp / "sched.data", pids)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["sidecar"]:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        sys.exit(sidecar_main(sys.argv[2:]))
    sys.exit(main(sys.argv[1:]))
