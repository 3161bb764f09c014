"""Instructions per REMOTE filter call on each side of the bus, with its I/O: callgrind, deterministic.

    .venv/bin/python bench/remote_callgrind.py [--side host|client|both] [--floor] [--calls 1000] [--top N]

One side runs under valgrind's callgrind (user space: the interpreter, uvloop, msgpack, nats-py,
meshbus), the other as usual, on a local nats-server; the client makes its calls one at a time
(each waits for its reply), so every call is one read and one write on each side, whatever the
machine's load. Each side is run twice, with 200 and 200 + ``--calls`` calls; the difference over
``--calls`` is its instructions per call, start-up, warm-up and shutdown left out.

- ``host``: meshbus-filter-host's ``FilterHost`` serving bench/remote_filter.py's no-op filter, from
  the bytes of a call read off its socket to its verdict written (bus/direct.py, plugins/remote);
- ``client``: the proxy's side, ``RemoteBackend.call`` of that filter, from the call packed to its
  future resolved with the verdict applied (no HTTP); with ``--resume exchange`` the call is
  handed on where the proxy's exchange now goes on with its request (``RemoteBackend.begin``, the
  adapter's ``_Settle``: as the bus read that brought the verdict ends), with ``--resume
  done-callback`` where it did before h76 (the future's done callback, a pass of the event loop
  later); either then wakes the driver for the next call, so the two differ by that pass (h76:
  79.1k instructions a call against 83.0k, system calls 4.1 against 4.3 a call);
- ``--floor``: the same on bare nats-py (``Client.request`` to a subscription callback that
  ``respond``s): what a NATS request/reply from Python costs in instructions, beside which a
  remote call's are read.

bench/remote_filter.py times the same call (latency, CPU seconds: noisy on a shared machine);
bench/remote_wire.py counts the message format alone; this counts everything a call costs a side
in user space. Run it on a quiet machine: the client side also counts work that scales with wall
time (its connection's periodic tasks), so next to a running test suite it read 537k instructions a
call against 65.7k alone (2026-12-08). Kernel time is not in it: ``--strace`` counts each side's system calls per call
instead (strace -c -f, same method). Needs valgrind (and strace for ``--strace``).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from remote_filter import FLOOR_SUBJECT, NAME, begin_resumed, quiet_gc, request, serve_floor, serve_host
from scratch import scratch_dir

from meshbus.bus.connection import BusConnection, BusSettings
from meshbus.bus.embedded import EmbeddedNats
from meshbus.plugins.remote.wire import config_digest, pack_call
from meshbus.proxy.filters.plugins.remote import RemoteBackend, RemoteFilters

WARM = 200
HERE = Path(__file__).resolve()


async def drive(url: str, n: int, floor: bool, resume: str = "await") -> None:
    """``n`` calls one at a time (after a warm-up of WARM, in ``n``), as the proxy makes them;
    each awaited, or with ``resume`` handed on as the exchange goes on with a request (see
    ``--resume``), then the driver woken."""
    async with BusConnection(BusSettings(url=url, name="bench client")) as bus:
        req = request()  # the proxy's request view; a no-op's verdict leaves it as it is
        if floor:
            payload = pack_call("request_headers", req, plugin="default/bench", digest=config_digest(None))
            for _ in range(n):
                await bus.nc.request(FLOOR_SUBJECT, payload, timeout=30.0)
        else:
            backend = RemoteBackend(RemoteFilters(lambda: bus), NAME, "default/bench", None, 30.0)
            await backend.wait_ready()
            quiet_gc(False)
            loop = asyncio.get_running_loop()
            for _ in range(n):
                if resume == "await":
                    await backend.call("on_request_headers", req, None, b"", True)
                    continue
                resumed = loop.create_future()
                after = functools.partial(_resumed, resumed)
                begin_resumed(backend, req, loop, after, resume == "done-callback")
                await resumed


def _resumed(resumed: asyncio.Future[None], _: object) -> None:
    """Where the exchange would go on with the request: here the driver is woken for the next call."""
    resumed.set_result(None)


def callgrind(out: str) -> list[str]:
    return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, str(HERE)]


def collected(stderr: str) -> int:
    m = re.search(r"Collected : (\d+)", stderr)
    if m is None:
        raise SystemExit(f"no callgrind total:\n{stderr[-2000:]}")
    return int(m.group(1))


def run(url: str, side: str, floor: bool, n: int, out: str, strace: bool, resume: str = "await") -> int:
    """One run of ``n`` calls with ``side`` counted: its instructions, or with ``strace`` its system calls."""
    serve = ["--serve-floor" if floor else "--serve-host", url]
    drive_args = ["--drive", url, str(n), "--resume", resume] + (["--floor"] if floor else [])
    plain = [sys.executable, str(HERE)]
    counted = ["strace", "-c", "-f", "-o", out, sys.executable, str(HERE)] if strace else callgrind(out)
    host = subprocess.Popen(
        (counted if side == "host" else plain) + serve,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert host.stdout is not None
        if host.stdout.readline().strip() != "ready":
            raise SystemExit(f"the host did not start:\n{host.communicate(timeout=60)[1][-2000:]}")
        client = subprocess.run(
            (counted if side == "client" else plain) + drive_args, capture_output=True, text=True, check=True
        )
    finally:
        stop(host.pid, strace and side == "host")
        _, host_err = host.communicate(timeout=120)
    if strace:
        return syscalls(Path(out).read_text())
    return collected(host_err if side == "host" else client.stderr)


def stop(pid: int, traced: bool) -> None:
    """SIGTERM to the host (strace's child when it is traced: strace itself would detach and leave it)."""
    if traced:
        pid = int(Path(f"/proc/{pid}/task/{pid}/children").read_text().split()[0])
    os.kill(pid, signal.SIGTERM)


def syscalls(report: str) -> int:
    """The total of strace -c's table."""
    m = re.search(r"^[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?total$", report, re.M)
    if m is None:
        raise SystemExit(f"no strace total:\n{report[-2000:]}")
    return int(m.group(1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--side", choices=["host", "client", "both"], default="both")
    ap.add_argument("--floor", action="store_true", help="bare nats-py request/reply instead")
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--strace", action="store_true", help="system calls per call (strace -c -f) instead")
    ap.add_argument("--top", type=int, default=0, help="also the TOP functions by inclusive instructions")
    ap.add_argument(
        "--resume",
        choices=["await", "exchange", "done-callback"],
        default="await",
        help="the client's call awaited (default), resumed as the exchange is (as the verdict's read "
        "ends), or by its future's done callback (the exchange before h76)",
    )
    ap.add_argument("--serve-host", metavar="URL", help=argparse.SUPPRESS)
    ap.add_argument("--serve-floor", metavar="URL", help=argparse.SUPPRESS)
    ap.add_argument("--drive", nargs=2, metavar=("URL", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    import uvloop

    if args.serve_host:
        uvloop.run(serve_host(args.serve_host, ""))
        return 0
    if args.serve_floor:
        uvloop.run(serve_floor(args.serve_floor))
        return 0
    if args.drive:
        uvloop.run(drive(args.drive[0], WARM + int(args.drive[1]), args.floor, args.resume))
        return 0
    tmp = scratch_dir("meshbus-bench-remote-cg-")
    nats = EmbeddedNats(port=0, store_dir=str(tmp / "nats"), jetstream=False)
    nats.start()
    what = "system calls" if args.strace else "instructions"
    try:
        for side in ("host", "client") if args.side == "both" else (args.side,):
            counts = []
            for n in (0, args.calls):
                out = str(tmp / f"{side}-{n}.out")
                counts.append(run(nats.url, side, args.floor, n, out, args.strace, args.resume))
            per = (counts[1] - counts[0]) / args.calls
            label = "floor " if args.floor else ""
            print(f"{label}{side}: {per:,.1f} {what} per call ({counts[1]:,} - {counts[0]:,}) / {args.calls}")
            if args.top and not args.strace:
                top(tmp / f"{side}-{args.calls}.out", tmp / f"{side}-0.out", args.top, args.calls)
    finally:
        nats.cleanup()
    return 0


def top(more: Path, less: Path, k: int, calls: int) -> None:
    """The ``k`` functions whose inclusive instructions grow most per call between the two runs."""

    def inclusive(path: Path) -> dict[str, int]:
        text = subprocess.run(
            ["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(path)],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        out: dict[str, int] = {}
        for line in text.splitlines():
            m = re.match(r"\s*([\d,]+) \([^)]*\)\s+(.+)$", line)
            if m:
                out[m.group(2)] = int(m.group(1).replace(",", ""))
        return out

    a, b = inclusive(more), inclusive(less)
    grown: list[tuple[int, Any]] = sorted(((v - b.get(f, 0), f) for f, v in a.items()), reverse=True)
    for d, f in grown[:k]:
        print(f"  {d / calls:>12,.0f}  {f[:150]}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
