"""Instructions (or CPU) per request of each sidecar, per telemetry setting, without sockets.

    .venv/bin/python bench/telemetry_cost.py [--cases off,metrics,...] [--requests 2000] [--callgrind]

bench/telemetry.py's two sidecars and Telemetry resources (off, metrics, metrics+log, on-1, on-100),
each driven in memory as bench/micro.py drives one (listener, exchange and upstream protocol with
in-memory transports): A the client sidecar's outbound listener, B the server sidecar's inbound one.
B is fed the requests A forwards (its traceparent and peer header), with A's sampling decision: at
1% one request in 100 arrives sampled. Every ``--ship-every`` requests (500) the work a shipping ("bus")
sidecar does off the request path is done and counted too: the access-log rows drained and encoded
as AccessLogBatch messages (proxy/mesh/telemetry_ship.py's BusSink, less the publish: access_log_messages,
columns since h20, kept as columns as requests end since h37; before the queue held rows this step also made each record a row), the span rows drained and encoded as a SpanBatch; metric
deltas are once a second whatever the rate, so left out. The access-log writer drains every 0.2 s, so
bench/telemetry.py's sidecars at 4,000 requests a second ship 800 records at a time: ``--ship-every
800`` counts that (when batches were cut at 500 records, as rows, it cost ~2,400 instructions a record
more a sidecar, which the default never showed: on-1 +8.8%, not +4.0%, what bench/telemetry.py
measured in CPU per request).

``--callgrind``: each (case, side) is measured in a child process under valgrind's callgrind with
instrumentation on only around the measured requests (a tiny C helper issues callgrind's client
requests): instructions per request, deterministic (PYTHONHASHSEED=0) and blind to machine load,
which is how this shared machine can still compare settings (``TELCOST_KEEP=DIR``: the
callgrind files are kept there, for callgrind_annotate). Without it: CPU time per request
(best of 5), which load inflates.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from micro import RESPONSE, in_memory
from run import ORIGIN
from scratch import scratch_dir

from telemetry import CASES, HOST, client_conf, telemetry_for

SHIP_EVERY = 500
B_PORT = 18999  # a port number only: nothing listens in memory

_HELPER_C = r"""
#include <valgrind/callgrind.h>
void cg_start(void) { CALLGRIND_ZERO_STATS; CALLGRIND_START_INSTRUMENTATION; CALLGRIND_TOGGLE_COLLECT; }
void cg_stop(void) { CALLGRIND_TOGGLE_COLLECT; CALLGRIND_DUMP_STATS_AT("measured"); CALLGRIND_STOP_INSTRUMENTATION; }
"""


def _helper(tmp: Path) -> Any:
    so = tmp / "cg.so"
    if not so.exists():
        (tmp / "cg.c").write_text(_HELPER_C)
        subprocess.run(["gcc", "-O1", "-shared", "-fPIC", "-o", str(so), str(tmp / "cg.c")], check=True)
    return ctypes.CDLL(str(so))


def request_a() -> bytes:
    return f"GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()


async def sidecar(
    case: str, side: str, tmp: Path, every: int = SHIP_EVERY
) -> tuple[Any, Callable[[int], None]]:
    """(server, loop): ``loop(k)`` sends ``k`` requests through side ``side`` ("a" or "b") of ``case``."""
    from meshbus.bus import codec
    from meshbus.bus.schemas.telemetry import Source
    from meshbus.proxy.adapters.server import ProxyServer
    from meshbus.proxy.bootstrap import Address, BootstrapConfig
    from meshbus.proxy.filters.spans import SpanRecorder
    from meshbus.proxy.mesh.telemetry_ship import access_log_messages, span_batch
    from meshbus.telemetry.peer import Workload

    name = "client" if side == "a" else HOST
    labels = {"app": name, "version": "v1"}
    conf = tmp / f"{case}-{side}.yaml"
    conf.write_text(client_conf(case, B_PORT) if side == "a" else telemetry_for(case))
    cfg = BootstrapConfig(
        config_path=str(conf), admin=None, labels=labels, log_level="warning",
        outbound=Address("127.0.0.1", 0) if side == "a" else None,
        inbound=Address("127.0.0.1", 0) if side == "b" else None,
        app_port=ORIGIN if side == "b" else None,
    )  # fmt: skip
    server = ProxyServer(cfg)
    await server.start()
    spans = SpanRecorder(dropped=server.internal.telemetry_dropped.labels("spans"))
    server.observe.set_identity(
        Workload.of(name, "default", labels, name), name, f"{name}.default.svc.cluster.local", spans
    )

    class Rows:  # BusSink's work, less the publish
        async def write_rows(self, rows: list[Any]) -> None:
            pass

        async def write_columns(self, batch: Any) -> None:
            pass

        async def close(self) -> None:
            pass

    server.add_access_log_sink(Rows())
    source = Source(f"{name}-bench", name, "default", name)
    encoder = codec.Encoder()

    def ship() -> None:
        records = server.access_log.drain_columns()
        if records.n:
            access_log_messages(encoder, source, records, codec.DEFAULT_MAX_BYTES)
        rows = spans.drain()
        if rows:
            encoder.encode(span_batch(source, {}, "", rows))

    port = B_PORT if side == "a" else ORIGIN
    cluster = next(c for c in server.runtime.clusters.values() if c.endpoints and c.endpoints[0].port == port)
    dc, dt, up, ut, flush = in_memory(server, "outbound" if side == "a" else "inbound", cluster)
    requests = [request_a()]
    if side == "b":  # what A forwards, with A's decision: 1 in 100 sampled at 1%, all at 100%
        requests = b_requests(case)

    done = [0]  # requests sent so far: a batch is shipped every ``every`` of them, across calls

    def loop(k: int) -> None:
        n = len(requests)
        for i in range(k):
            dc.data_received(requests[i % n])
            flush()
            up.data_received(RESPONSE)
            flush()
            done[0] += 1
            if done[0] % every == 0:
                ship()
        if not dt.written or not dt.written[-1].endswith(b"x\n"):
            raise RuntimeError(f"unexpected output: {dt.written[-1:]!r}")
        dt.written.clear()
        ut.written.clear()

    return server, loop


def b_requests(case: str) -> list[bytes]:
    """100 request heads as A forwards them: the peer header, a W3C traceparent (new ids each),
    an x-request-id; sampled as A decides for ``case`` (1 in 100 at 1%)."""
    from meshbus.telemetry.peer import PEER_HEADER, Workload
    from meshbus.telemetry.tracecontext import new_ids

    peer = Workload.of("client", "default", {"app": "client", "version": "v1"}, "client").header_value()
    out = []
    for i in range(100):
        sampled = case == "on-100" or (case == "on-1" and i == 0)
        t, s = new_ids()
        out.append(
            f"GET / HTTP/1.1\r\nhost: {HOST}.default.svc.cluster.local\r\n{PEER_HEADER}: {peer}\r\n"
            f"traceparent: 00-{t}-{s}-{'01' if sampled else '00'}\r\n"
            f"x-request-id: {t[:8]}-{t[8:12]}-4{t[13:16]}-a{t[17:20]}-{t[20:]}\r\n\r\n".encode()
        )
    return out


async def measure(case: str, side: str, n: int, callgrind: bool, every: int = SHIP_EVERY) -> float:
    tmp = scratch_dir("meshbus-telcost-")
    server, loop = await sidecar(case, side, tmp, every)
    loop(3000)  # warm-up: caches, label sets, pools
    if callgrind:
        cg = _helper(Path(os.environ.get("TELCOST_HELPER_DIR", tmp)))
        cg.cg_start()
        loop(n)
        cg.cg_stop()
        result = 0.0
    else:
        best = float("inf")
        for _ in range(5):
            c0 = time.thread_time()
            loop(n)
            best = min(best, time.thread_time() - c0)
        result = best / n * 1e6
    await server.shutdown(0)
    return result


def child(case: str, side: str, n: int, every: int) -> None:
    import random

    import uvloop

    random.seed(0)  # the same sampling draws and ids in every run (1%: which requests are sampled)
    uvloop.run(measure(case, side, n, True, every))


def callgrind_ir(case: str, side: str, n: int, helper_dir: Path, every: int) -> float:
    out = helper_dir / f"cg-{case}-{side}.out"
    env = dict(os.environ, PYTHONHASHSEED="0", TELCOST_HELPER_DIR=str(helper_dir))
    cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--collect-atstart=no",
           f"--callgrind-out-file={out}", sys.executable, __file__, "--child", f"{case}:{side}",
           "--requests", str(n), "--ship-every", str(every)]  # fmt: skip
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    total = 0
    for f in helper_dir.glob(f"cg-{case}-{side}.out*"):
        m = re.search(r"^summary: (\d+)", f.read_text(), re.M) if f.stat().st_size else None
        if m and "measured" in f.read_text()[:2000]:
            total = int(m.group(1))
            if os.environ.get("TELCOST_KEEP"):  # for callgrind_annotate
                f.rename(Path(os.environ["TELCOST_KEEP"]) / f"cg-{case}-{side}.out")
                continue
        f.unlink()
    return total / n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--sides", default="a,b")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--callgrind", action="store_true")
    ap.add_argument("--ship-every", type=int, default=SHIP_EVERY,
                    help="requests between two shipped batches (the writer's 0.2 s at the bench's rate)")  # fmt: skip
    ap.add_argument("--child", default="")
    args = ap.parse_args()
    if args.child:
        case, side = args.child.split(":")
        child(case, side, args.requests, args.ship_every)
        return 0
    helper_dir = scratch_dir("meshbus-telcost-cg-")
    if args.callgrind:
        _helper(helper_dir)
    unit = "instructions" if args.callgrind else "CPU us (best of 5)"
    print(f"| case | A: {unit} per request | B | A+B | vs off |")
    print("|---|---|---|---|---|")
    base = None
    for case in args.cases.split(","):
        per = {}
        for side in args.sides.split(","):
            if args.callgrind:
                per[side] = callgrind_ir(case, side, args.requests, helper_dir, args.ship_every)
            else:
                import uvloop

                per[side] = uvloop.run(measure(case, side, args.requests, False, args.ship_every))
        total = sum(per.values())
        base = total if case == "off" else base
        rel = f"{total / base - 1:+.1%}" if base else "-"
        fmt = ",.0f" if args.callgrind else ".2f"
        print(
            f"| {case} | {per.get('a', 0):{fmt}} | {per.get('b', 0):{fmt}} | {total:{fmt}} | {rel} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
