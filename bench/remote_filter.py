"""One REMOTE filter call's round trip, without HTTP: a client calls a meshbus-filter-host's no-op
filter through the proxy's own ``RemoteBackend`` at a paced rate over a local nats-server.

    .venv/bin/python bench/remote_filter.py [--rate 1000 | --inflight N] [--duration 5] [--stages]
        [--old-resume] [--write turn|none|once] [--profile] [--default-gc]

Isolates what a remote filter adds to a proxied request from the proxy's HTTP work and from the
load generator (bench/plugins.py measures the whole): p50/p99 of the call, the client's and the
host's CPU per call (process CPU time: less sensitive to the machine's other load than latency). The host runs on CPU 0
and the client on CPU 1, as in bench/plugins.py; nats-server is not pinned (it is started with every
CPU allowed: it inherited the client's CPU 1 before, and Go sized its GOMAXPROCS by it; 3 rounds of
3 s each way, interleaved, on a loaded machine: p99 4.5-5.4 ms so, 1.1-4.0 ms unpinned). Also printed when the bench starts nats-server: its CPU, its wait to
run and its context switches a call (/proc, all its threads). Go runtime settings for that server
were weighed with ``--floor`` (the server inherits the environment; 10 pairs against the default,
order alternated, all SCHED_FIFO under ``chrt -f 50``, 5 s each): GOMAXPROCS=1 moved p50 by
-0.066..+0.032 ms (median -0.016, against 0.40-0.49 ms) and p99 either way (two of its runs had
5.2 and 6.7 ms, none of the default's above 1.8), while its CPU a call fell from 194-292 us to
173-235 us and its context switches from ~7.9 to ~6.3; GOGC=400 (4 triples) was slower or level,
p50 +0.013..+0.086 ms. As normal tasks (6 pairs) the machine's other load decided every run (p50
0.6-43 ms). Neither helped clearly, so meshbus starts its embedded server with Go's defaults.

``--stages`` sends one call at a time and stamps each call where it passes (CLOCK_MONOTONIC, the
same clock in both processes): the client's publish, its bytes written to the socket, the host's
read of the message, its handler, its reply written, the client's read of the reply, and the
caller resumed; printed as the median and p99 time between stages.

"Resumed" is where the proxy's exchange would go on with the request: as the bus read that brought
the verdict ends (``RemoteBackend.begin``'s callback settles the call's future and hands the stamp to
meshbus.bus.direct's ``after_read``, as the adapter's ``_Settle`` resumes the exchange since h76).
``--future-resume`` stamps in the done callback of the call's future instead (how the exchange
resumed before h76, a pass of the event loop later; the call and its settling otherwise the same,
``begin_resumed``); ``--old-resume`` wraps the call in a coroutine first, as the adapter did before that (a task
per call: its start, its wake-up on the reply, then its done callback: two event-loop passes more),
for a side-by-side reference. ``--against`` an older checkout runs that checkout's own script, so
its side resumes as that checkout's exchange did. h76 (resumed as the verdict's read ends) against
main (the done callback), ``--stages --against``, 6 pairs of 4 s, SCHED_FIFO, a loaded machine:
p50 -0.010 ms median [-0.028 .. -0.005] (every pair lower; 0.315-0.370 ms against 0.324-0.377),
p99 -0.030 [-0.068 .. +0.021] ms, client CPU -9.0 [-16.0 .. +7.9] us a call; read -> resumed
16.0-16.4 us p50 against 19.6-21.7 with ``--future-resume`` (2 runs each). ``--write`` weighs what meshbus.bus.direct's write costs in CPU against
what it saves in latency, on both sides: ``turn`` (what it does: the messages of a turn of the
event loop in one write as the turn ends), ``none`` (every call and verdict through nats-py's
flusher), ``once`` (its earlier policy: the first message of a turn written at once, the rest left
to the flusher). Also printed: write system calls per call on each side (/proc/PID/io ``syscw``:
a count, not a time, so the machine's load does not blur it). ``--floor`` runs the same pacing and payload through bare nats-py (``Client.request`` to a plain
subscription callback that ``respond``s an empty map): what a NATS request/reply from Python costs
on this machine, the floor to weigh ours against (bench/plugins.py runs it beside its latency rounds,
``--nats URL`` pointing it at the nats-server its proxies use). ``--inflight N`` runs a closed loop
with N calls in flight instead of the paced rate: a busy proxy's regime, many calls a turn.
``--burst K`` keeps the rate but sends the calls K at a time, in one turn of the event loop (a
proxy's requests from several connections read in one pass).

``--against DIR`` runs A/B pairs instead: ``--rounds`` pairs, each one run of this tree and one of
the meshbus checkout at DIR (e.g. ``git worktree add /tmp/main main``: its own bench script, its
modules first on PYTHONPATH), the order alternating pair by pair (A B, B A, ...) so the machine's
drift weighs on both; each run is this script's run with the other options. Printed: each run's
line, then per pair this tree minus DIR for p50, p99 and both sides' CPU per call, and their
medians. With ``--stages`` (one call at a time: no batching, so CPU per call compares) it is the
method to use on a loaded machine.

GC: the client and the host freeze what they loaded and raise the young-generation threshold once
started (``quiet_gc``), as meshbus-proxy and meshbus-filter-host do (bus/process.py). Before, they
ran with the interpreter's defaults, so the client (the proxy's stand-in) made a full pass over the
bench's imports now and then (one of 30-50 ms in a 4,000-call run: a stall of ~40 calls, the whole
p99), which the proxy never does. ``--default-gc`` keeps the old way, for reference; each run prints
both processes' GC passes.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import itertools
import json
import os
import pstats
import re
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scratch import scratch_dir
from write_policy import replace_write_now

from meshbus.bus.connection import BusConnection, BusSettings
from meshbus.bus.embedded import EmbeddedNats
from meshbus.plugins import Filter
from meshbus.plugins.http import Headers, Peer, Request
from meshbus.plugins.registry import info_of
from meshbus.plugins.remote.host import FilterHost
from meshbus.plugins.remote.wire import config_digest, pack_call
from meshbus.proxy.filters.plugins.remote import RemoteBackend, RemoteFilters

NAME = "bench-noop"
HEADERS = [
    ("host", "origin"), ("user-agent", "h2load nghttp2/1.52.0"), ("accept", "*/*"),
    ("x-request-id", "6f1c0a8e-6f1c-4a8e-9f1c-0a8e6f1c0a8e"),
]  # fmt: skip


class Noop(Filter):
    def on_request_headers(self, req: Request) -> None:
        return None


def stamp_transport(nc: Any, marks: list[float], has: bytes) -> None:
    """Stamp every write of ``nc``'s to its socket with ``has`` in it (the flusher's, or an inline one)."""
    for t, name in ((nc._transport, "writelines"), (nc._transport._io_writer, "write")):
        orig = getattr(t, name)

        def wrapped(data: Any, _orig: Any = orig) -> None:
            chunks = [data] if isinstance(data, (bytes, bytearray)) else data
            if any(has in c for c in chunks):
                marks.append(time.monotonic())
            _orig(data)

        setattr(t, name, wrapped)


def stamp_reads(nc: Any, marks: list[float], has: bytes) -> None:
    """Stamp every read off ``nc``'s socket with a message with ``has`` in its subject, as the bytes
    reach its reader (before any parse: meshbus.bus.direct parses inline subscriptions' messages
    without nats-py's ``_process_msg``, so the stamp cannot be there). Call it after read_inline."""
    reader = nc._transport._io_reader
    feed = reader.feed_data  # read_inline's, when in place

    def feed_data(data: Any) -> None:
        k = bytes(data).count(has)  # one a message: a read may carry several
        if k:
            marks.extend([time.monotonic()] * k)
        feed(data)

    reader.feed_data = feed_data


def stamp_handoffs(nc: Any, marks: list[float], has: bytes) -> None:
    """Stamp every message with ``has`` in its subject that an inline subscription of ``nc`` hands to
    its function (meshbus.bus.inline), just before the function runs: each hand-over's ``on_msg`` (and
    ``on_raw``) is wrapped (its class may be compiled). Call it once the subscriptions are made."""
    for sub in nc._subs.values():
        handoff = sub._pending_queue
        if type(handoff).__name__ != "_Handoff":
            continue

        def on_msg(msg: Any, _orig: Any = handoff.on_msg) -> None:
            if has in msg.subject.encode():
                marks.append(time.monotonic())
            _orig(msg)

        handoff.on_msg = on_msg
        if getattr(handoff, "on_raw", None) is not None:  # plain MSGs, read ahead of nats-py's parser

            def on_raw(subject: bytes, reply: bytes, data: bytes, _orig: Any = handoff.on_raw) -> None:
                if has in subject:
                    marks.append(time.monotonic())
                _orig(subject, reply, data)

            handoff.on_raw = on_raw


def server_usage(pid: int | None) -> tuple[int, int, int]:
    """nats-server's threads together: ns on a CPU, ns waiting to run, context switches (/proc: its
    own CPU a call, beside ours, and what its Go scheduler's hand-offs between threads cost). Zeros
    when the server is not ours (``--nats``)."""
    if pid is None:
        return 0, 0, 0
    on = wait = switches = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        run, queued, _ = (task / "schedstat").read_text().split()
        on, wait = on + int(run), wait + int(queued)
        for line in (task / "status").read_text().splitlines():
            if "ctxt_switches:" in line:  # voluntary and not
                switches += int(line.split()[1])
    return on, wait, switches


def write_calls(pid: int | str = "self") -> int:
    """The process's write system calls so far (/proc: write and writev, as libuv sends)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("syscw:"):
            return int(line.split()[1])
    return 0


async def _awaited(aw: Any) -> Any:
    return await aw


def begin_resumed(
    backend: RemoteBackend,
    req: Request,
    loop: asyncio.AbstractEventLoop,
    after: Callable[[Any], None],
    done_callback: bool = False,
) -> None:
    """Call the no-op's request hook and hand its settled future to ``after`` as the exchange is
    resumed (the adapter's ``_Settle``): as the bus read that brought the verdict ends, else (a
    timeout) in a ready callback; with ``done_callback``, as the exchange was before h76: by the
    future's done callback, a pass of the event loop later (everything else the same)."""
    # here: bench/plugins.py imports this module against older trees
    from meshbus.bus.read_end import after_read

    out = loop.create_future()

    def settle(r: Any, exc: BaseException | None) -> None:
        if exc is not None:
            out.set_exception(exc)
        else:
            out.set_result(r)
        if not done_callback and not after_read(after, out):
            loop.call_soon(after, out)

    if done_callback:
        out.add_done_callback(after)
    backend.begin("on_request_headers", req, None, b"", True, settle)


FLOOR_SUBJECT = "bench.floor"


def host_signals() -> tuple[asyncio.Event, list[float]]:
    """A host's stop (SIGTERM) and its CPU time at the measured run's start (SIGUSR1)."""
    stop = asyncio.Event()
    cpu = [0.0]
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, lambda: cpu.__setitem__(0, time.process_time()))
    return stop, cpu


async def serve_floor(url: str, default_gc: bool = False) -> None:
    """``--floor``'s host: bare nats-py, a subscription callback answering every message with an
    empty map (what a no-op's verdict is), through ``msg.respond`` (nats-py's flusher)."""
    stop, cpu = host_signals()
    async with BusConnection(BusSettings(url=url, name="bench floor host")) as bus:

        async def answer(msg: Any) -> None:
            await msg.respond(b"\x80")

        await bus.nc.subscribe(FLOOR_SUBJECT, cb=answer)
        await bus.nc.flush()
        quiet_gc(default_gc)
        print("ready", flush=True)
        await stop.wait()
        print(time.process_time() - cpu[0], flush=True)
        print("host GC: -", flush=True)


async def serve_host(url: str, out: str, default_gc: bool = False) -> None:
    marks: dict[str, list[float]] = {"host_read": [], "host_handler": [], "host_write": []}
    stop, cpu = host_signals()
    async with BusConnection(BusSettings(url=url, name="bench host")) as bus:
        host = FilterHost(bus, info_of(NAME, Noop, "bench"))
        async with host:
            if out:  # where the read loop hands a call to the host (FilterHost may be compiled)
                stamp_handoffs(bus.nc, marks["host_handler"], b".request_headers")
                stamp_reads(bus.nc, marks["host_read"], b".request_headers")
                stamp_transport(bus.nc, marks["host_write"], b"PUB _INBOX")
            quiet_gc(default_gc)
            pauses = gc_pauses()
            print("ready", flush=True)
            await stop.wait()
            print(time.process_time() - cpu[0], flush=True)  # CPU seconds since SIGUSR1
            print(
                "host GC:",
                ", ".join(
                    f"gen{g} {len(p)}x max {max(p, default=0) * 1e3:.2f} ms" for g, p in pauses.items()
                ),
                flush=True,
            )
    if out:
        Path(out).write_text(json.dumps(marks))  # noqa: ASYNC240 - once, at the end


def quiet_gc(default: bool) -> None:
    """What bus/process.py's quiet_gc does (kept here too: A/B runs import an older meshbus)."""
    if not default:
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)


def gc_pauses() -> dict[int, list[float]]:
    """Each cyclic-GC pass's duration by generation, from now on."""
    pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
    began = [0.0]

    def cb(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            began[0] = time.perf_counter()
        else:
            pauses[info["generation"]].append(time.perf_counter() - began[0])

    gc.callbacks.append(cb)
    return pauses


def describe(pauses: dict[int, list[float]]) -> str:
    return "GC: " + ", ".join(
        f"gen{g} {len(p)}x max {max(p, default=0) * 1e3:.2f} ms" for g, p in pauses.items()
    )


def request() -> Request:
    return Request(
        "GET", "/", "origin", Headers(list(HEADERS)), request_id="6f1c0a8e", route="default",
        source=Peer(), destination=Peer(service="origin"),
    )  # fmt: skip


async def drive(
    url: str,
    rate: int,
    duration: float,
    stages: bool,
    host_pid: int,
    old_resume: bool = False,
    profile: bool = False,
    inflight: int = 0,
    floor: bool = False,
    default_gc: bool = False,
    burst: int = 1,
    server_pid: int | None = None,
    future_resume: bool = False,
) -> dict[str, Any]:
    async with BusConnection(BusSettings(url=url, name="bench client")) as bus:
        backend = RemoteBackend(RemoteFilters(lambda: bus), NAME, "default/bench", None, 2.0)
        if floor:  # bare nats-py: the same payload through Client.request, nothing decoded

            def floor_call(*_a: Any) -> Any:
                return bus.nc.request(FLOOR_SUBJECT, payload, timeout=2.0)

            payload = pack_call(
                "request_headers", request(), plugin="default/bench", digest=config_digest(None)
            )
            call: Any = floor_call
        else:
            call = backend.call  # RemoteBackend may be compiled: not patched
            await backend.wait_ready()
        for _ in range(200):  # warm-up
            await call("on_request_headers", request(), None, b"", True)
        marks: dict[str, list[float]] = {"send": [], "write": [], "read": [], "resumed": []}
        if stages:
            stamp_transport(bus.nc, marks["write"], b".request_headers")
            stamp_reads(bus.nc, marks["read"], b"_INBOX")
        lat: list[float] = []
        loop = asyncio.get_running_loop()

        async def one() -> None:
            t0 = time.monotonic()
            if stages:
                marks["send"].append(t0)
            resumed = loop.create_future()

            def after(_t: Any) -> None:  # the exchange's _after_await
                t1 = time.monotonic()
                if stages:
                    marks["resumed"].append(t1)
                lat.append(t1 - t0)
                resumed.set_result(None)

            if floor or old_resume:
                r = call("on_request_headers", request(), None, b"", True)
                task = asyncio.ensure_future(
                    _awaited(r) if old_resume and not floor else r
                )  # as the exchange did
                task.add_done_callback(after)
            else:
                begin_resumed(backend, request(), loop, after, future_resume)
            await resumed

        n = int(rate * duration)
        quiet_gc(default_gc)
        pauses = gc_pauses()
        os.kill(host_pid, signal.SIGUSR1)
        prof = cProfile.Profile() if profile else None
        if prof is not None:
            prof.enable()
        cpu0 = time.process_time()
        writes0, host_writes0 = write_calls(), write_calls(host_pid)
        server0 = server_usage(server_pid)
        start = loop.time()
        tasks = []
        if inflight:  # closed loop: as many calls as the client and host can make, ``inflight`` at a time
            end = start + duration

            async def worker() -> None:
                while loop.time() < end:
                    await one()

            await asyncio.gather(*(worker() for _ in range(inflight)))
            n = len(lat)
        for i in range(0 if inflight else n):
            delay = start + (i - i % burst) / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if stages:
                await one()  # one at a time: every stage list lines up call by call
            else:
                tasks.append(asyncio.ensure_future(one()))
        await asyncio.gather(*tasks)
        cpu = time.process_time() - cpu0
        writes, host_writes = write_calls() - writes0, write_calls(host_pid) - host_writes0
        server = [b - a for a, b in zip(server0, server_usage(server_pid), strict=True)]
        if prof is not None:
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(30)
        print(f"  client {describe(pauses)}")
    return {
        "lat": lat, "cpu": cpu, "n": n, "marks": marks, "writes": writes, "host_writes": host_writes,
        "server": server,
    }  # fmt: skip


def q(xs: list[float], p: int) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[p - 1] * 1e3


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--stages", action="store_true", help="one call at a time, stamped at each stage")
    ap.add_argument("--profile", action="store_true", help="cProfile the client (interpreted code only)")
    ap.add_argument("--old-resume", action="store_true", help="a task per call, as before (reference)")
    ap.add_argument(
        "--future-resume",
        action="store_true",
        help="resumed by the call's future's done callback, as the exchange did before h76 (reference)",
    )
    ap.add_argument(
        "--write",
        choices=["turn", "none", "once"],
        default="turn",
        help="bus/direct.py's write_now (turn), none (nats-py's flusher), once (the earlier policy)",
    )
    ap.add_argument(
        "--burst",
        type=int,
        default=1,
        help="paced calls sent --burst at a time (h2load's connections in step)",
    )
    ap.add_argument("--inflight", type=int, default=0, help="closed loop with N calls in flight (not paced)")
    ap.add_argument(
        "--floor",
        action="store_true",
        help="bare nats-py request/reply with the same payload and pacing (the floor; no --stages)",
    )
    ap.add_argument("--default-gc", action="store_true", help="the interpreter's GC settings (reference)")
    ap.add_argument("--nats", metavar="URL", help="an nats-server already running (default: start one)")
    ap.add_argument("--against", metavar="DIR", help="A/B pairs against the meshbus checkout at DIR")
    ap.add_argument("--serve-host", metavar="URL", help=argparse.SUPPRESS)
    ap.add_argument("--serve-floor", metavar="URL", help=argparse.SUPPRESS)
    ap.add_argument("--marks", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.stages = args.stages and not args.floor
    if args.against:
        return against(Path(args.against), args.rounds, argv or sys.argv[1:])
    import uvloop

    if args.write != "turn":
        replace_write_now(args.write)
    if args.serve_floor:
        uvloop.run(serve_floor(args.serve_floor, args.default_gc))
        return 0
    if args.serve_host:
        uvloop.run(serve_host(args.serve_host, args.marks, args.default_gc))
        return 0
    if os.environ.get("MESHBUS_BENCH_PINNED") != "1":  # the client on CPU 1, as the proxy
        env = {**os.environ, "MESHBUS_BENCH_PINNED": "1"}
        return subprocess.call(["taskset", "-c", "1", sys.executable, __file__, *sys.argv[1:]], env=env)
    tmp = scratch_dir("meshbus-bench-remote-")
    nats = EmbeddedNats(port=0, store_dir=str(tmp / "nats"), jetstream=False)
    if not args.nats:
        # not on the client's CPU: a child inherits this process's pinning (and Go sizes GOMAXPROCS by it)
        pinned = os.sched_getaffinity(0)
        os.sched_setaffinity(0, range(os.cpu_count() or 1))
        try:
            nats.start()
        finally:
            os.sched_setaffinity(0, pinned)
    url = args.nats or nats.url
    try:
        for rnd in range(args.rounds):
            marks_file = str(tmp / "host-marks.json") if args.stages else ""
            cmd = [
                "taskset",
                "-c",
                "0",
                sys.executable,
                __file__,
                "--serve-floor" if args.floor else "--serve-host",
                url,
                "--marks",
                marks_file,
                "--write",
                args.write,
                *(["--default-gc"] if args.default_gc else []),
            ]
            host = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
            try:
                assert host.stdout is not None and host.stdout.readline().strip() == "ready"
                r = uvloop.run(
                    drive(
                        url,
                        args.rate,
                        args.duration,
                        args.stages,
                        host.pid,
                        args.old_resume,
                        args.profile,
                        args.inflight,
                        args.floor,
                        args.default_gc,
                        args.burst,
                        None if args.nats else nats.pid,
                        args.future_resume,
                    )
                )
            finally:
                host.terminate()
                out, _ = host.communicate(timeout=10)
            host_cpu = float(out.split()[0])
            gc_line = out.strip().splitlines()[-1]
            lat, n = r["lat"], r["n"]
            pace = (
                f"{args.inflight} in flight"
                if args.inflight
                else f"{args.rate}/s" + (f" in bursts of {args.burst}" if args.burst > 1 else "")
            )
            print(f"round {rnd + 1}: {n} calls at {pace}: p50 {q(lat, 50):.3f} ms  p99 {q(lat, 99):.3f} ms"
                  f"  client {r['cpu'] * 1e6 / n:.1f} us/call  host {host_cpu * 1e6 / n:.1f} us/call  "
                  f"writes/call client {r['writes'] / n:.2f} host {r['host_writes'] / n:.2f}")  # fmt: skip
            print(f"  {gc_line}")
            on, queued, switches = r["server"]
            if switches:
                print(f"  nats-server: {on / n / 1e3:.1f} us on a CPU and {queued / n / 1e3:.1f} us waiting to run a call,"
                      f" {switches / n:.2f} context switches a call")  # fmt: skip
            if args.stages:
                print_stages(r["marks"], json.loads(Path(marks_file).read_text()), n)
    finally:
        if not args.nats:
            nats.cleanup()
    return 0


ROUND = re.compile(
    r"p50 (?P<p50>[\d.]+) ms +p99 (?P<p99>[\d.]+) ms +client (?P<client>[\d.]+) us/call +host (?P<host>[\d.]+) us/call"
)


def against(other: Path, pairs: int, argv: list[str]) -> int:
    """``--against``: interleaved runs of this tree and ``other``'s, and the per-pair differences."""
    view = scratch_dir("meshbus-bench-against-") / "meshbus"
    view.mkdir()
    for part in ("bus", "proxy", "plugins", "control", "telemetry"):
        (view / part).symlink_to(other.resolve() / part)
    rest, skip = [], False
    for a in argv:  # each run is one round of the other options
        if not skip and a not in ("--against", "--rounds") and not a.startswith(("--against=", "--rounds=")):
            rest.append(a)
        skip = a in ("--against", "--rounds") and not skip
    sides = {
        "this": ([sys.executable, __file__, *rest], dict(os.environ)),
        "other": (
            [sys.executable, str(other / "bench" / "remote_filter.py"), *rest],
            {**os.environ, "PYTHONPATH": str(view.parent)},
        ),
    }
    got: dict[str, list[dict[str, float]]] = {"this": [], "other": []}
    for i in range(pairs):
        for side in ("this", "other") if i % 2 == 0 else ("other", "this"):
            cmd, env = sides[side]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
            m = ROUND.search(out)
            assert m is not None, out
            got[side].append({k: float(v) for k, v in m.groupdict().items()})
            print(f"pair {i + 1} {side:5s} {m.group(0)}", flush=True)
    print(f"this tree minus {other} per pair (median [min .. max] of {pairs}):")
    for key, unit in (("p50", "ms"), ("p99", "ms"), ("client", "us/call"), ("host", "us/call")):
        d = [a[key] - b[key] for a, b in zip(got["this"], got["other"], strict=True)]
        print(f"  {key:6s} {statistics.median(d):+.3f} [{min(d):+.3f} .. {max(d):+.3f}] {unit}")
    return 0


def print_stages(client: dict[str, list[float]], host: dict[str, list[float]], n: int) -> None:
    order = [
        ("send", client["send"]), ("write", client["write"]), ("host_read", host["host_read"]),
        ("host_handler", host["host_handler"]), ("host_write", host["host_write"]),
        ("read", client["read"]), ("resumed", client["resumed"]),
    ]  # fmt: skip
    # the last n marks of each list are the measured calls (before them: warm-up, info, flushes)
    print("  stamps:", {name: len(xs) for name, xs in order})
    cols = [(name, xs[-n:]) for name, xs in order]
    if any(len(xs) != n for _, xs in cols):
        print("stage counts differ:", {name: len(xs) for name, xs in order})
        return
    for (a, xa), (b, xb) in itertools.pairwise(cols):
        d = [y - x for x, y in zip(xa, xb, strict=True)]
        print(f"  {a:>12s} -> {b:<12s} p50 {q(d, 50) * 1e3:7.1f} us  p99 {q(d, 99) * 1e3:7.1f} us")


if __name__ == "__main__":
    sys.exit(main())
