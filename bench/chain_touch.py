"""What one steady-state request touches in each proxy of bench/mtls.py's mTLS chain, meshbus against
HAProxy: distinct 4 KiB pages and 64-byte cache lines, by mapping and by function. At 1,000 req/s each
request finds the caches emptied by the gap before it (bench/chain_wakes.py, bench/paced_cpu.py), so
its cold pass costs what it touches: this is the map of that working set.

    .venv/bin/python bench/chain_touch.py pages [--trials 30] [--only meshbus-mtls,haproxy-mtls]
    .venv/bin/python bench/chain_touch.py lines [--proxy a|b] [--haproxy | --nolog] [--windows 5] [--top 25]
    .venv/bin/python bench/chain_touch.py calls [--requests 2000]

The chain is bench/chain.py's / bench/mtls.py's (meshbus: A and B sidecars with SVIDs, access logs;
HAProxy: two processes, ssl verify required), on ports of its own (``--port-base``), warmed up,
then driven by ONE keep-alive connection, a request at a time.

``pages`` (native speed): before each request the proxies' page-table accessed bits are cleared
(``/proc/PID/clear_refs``), after its response each mapping's ``Referenced`` (``/proc/PID/smaps``)
is read: the pages the request touched in each process, by mapping (the binary's and each shared
object's text and data, the heap, anonymous memory: pymalloc's arenas, the stack). Medians over
``--trials`` requests, 2 ms apart.

``lines``: the proxy under callgrind, instrumentation off until the steady state
(``--instr-atstart=no``), with a simulated last-level cache of 256 MiB (nothing a window touches is
evicted). Switching instrumentation on empties the simulated caches, so each window (``-i on``,
then ``-d``, then ``-i off``) starts cold and its last-level misses are the distinct lines it
touched: instruction (ILmr) and data (DLmr + DLmw), each charged to the function that touched it
first. A window lasts ~1 s of wall time (callgrind_control), so the loop's periodic work runs in
each: the windows alternate with and without a request, and the request's figure is the median of
the first less the median of the second, by object and by function. ``--nolog``: the sidecars
without access logs (the writer's 0.2 s flush otherwise lands in every request window).

``calls``: both sidecars run with sys.setprofile counting the calls of interpreted (not compiled)
functions (mypyc's make no frames); the counts before and after ``--requests`` requests, per request.

Measured here (December 2026, 2-core guest, shared; callgrind counts are the machine's own only
through the timers that fire in a window):
- pages a request (medians of 30, two runs): meshbus B 704 / 1,026 (range 686-1,760), A 940 / 1,114
  (679-3,144); HAProxy B 318 / 326, A 306 / 306. meshbus B by mapping (first run): anonymous
  (pymalloc arenas) 207 (second run 214), the compiled request path's text (_native__mypyc .so) 113
  (113), libpython text 83 (83), [heap] 49 (50), libpython data 43 (43), libcrypto text 43 (43),
  uvloop text 38, libc text 20 (144 in the second run, A's 260, which callgrind's ~250 libc lines a
  request do not bear out: this guest runs DAMON on physical addresses (kdamond, ``paddr``), which
  checks a sampled page's accessed bits through every process mapping it and keeps what it finds
  in the page's young flag, which smaps counts, so a shared object's text (libc, libpython, the
  extensions A and B share) can show another process's accesses: read text pages as upper bounds,
  private pages (arenas, heap) as they stand, and the lines below for text). HAProxy B: its text 94,
  [heap] 78-83, libcrypto text 43, its data 26, anonymous 18, libssl 18, libc 16. The objects a
  request reaches are spread over ~200 pages of arenas (HAProxy: ~100 pages of heap and anonymous
  memory together); OpenSSL's pages are the same in both.
- lines a request (5 + 5 windows): meshbus B 6,648 (4,252 instruction + 2,396 data: 416 KiB; request
  windows 7.4-8.8k lines, idle 0.6-2.7k), --nolog 6,175 (4,085 + 2,090: 386 KiB); A 6,291 (4,253 +
  2,038), --nolog 6,469 (4,161 + 2,308). HAProxy B 2,640 (2,090 + 550: 165 KiB, idle windows ~130
  lines), A 2,485 (1,977 + 508). meshbus touches ~2.5x HAProxy's lines, 2x the instruction lines and
  4x the data lines, in each proxy; a cold request misses ~400 KiB against ~160 KiB, on a 512 KiB L2.
- by object, meshbus B --nolog (lines: instruction, data): libpython 2,197 (1,268, 929), the
  compiled request path 1,496 (1,078, 418), uvloop 696 (499, 197), libcrypto 481, httptools/llhttp
  410, libssl 327, libc 267, _asyncio 119, _ssl 65. HAProxy B: haproxy 1,712 (1,421, 291), libcrypto
  437, libssl 370, libc 118. OpenSSL is ~800 lines in both: the difference is the runtime (libpython
  ~2.2-2.8k lines: allocation and deallocation, vectorcall, dict and type-attribute lookups, and the
  eval loop of the periodic tasks that run in a window), the compiled code (~1.1k instruction lines
  = 70 KiB of code, spread thinly: the largest function, RequestSession.on_headers_complete, 78
  lines) and uvloop/llhttp (~1.1k, the parser's state machine alone 213).
- by function there is no single large contributor: the top 40 of meshbus B are 30-250 lines each
  (llhttp__internal__run 213, the eval loop 196 + 154, RequestSession.on_headers_complete 78,
  libssl's record layer 73, uvloop's TimerHandle creation 71 + Loop.call_later 61 (a timer armed per
  request), Exchange._dispatch 64, the response head regex 58, _PyObject_Malloc 45, _PyType_Lookup 41).
- interpreted calls a request: B 1.9, A 1.6, all from the access-log writer's 0.2 s flush
  (loop_stalls.mark, contextlib, asyncio.sleep(0) between slices, wait_for): the request path runs
  no interpreted function; the eval loop's lines in a window are the periodic tasks'.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
# bench/ is not a package: the chains come from chain.py and mtls.py, the helpers from run.py
import chain
import mtls
import run
from chain_callgrind import SLOW_TIMEOUTS

PAGE_KIB = 4
LL = "--LL=268435456,16,64"  # 256 MiB: every line a window touches stays in it


def set_ports(base: int) -> None:
    """The chain on base .. base+5 (A, B, B's stats, origin, HAProxy A, HAProxy B); the configs read
    these module globals when written."""
    chain.A_PORT, chain.B_PORT, chain.B_STATS = base, base + 1, base + 2
    chain.ORIGIN = run.ORIGIN = mtls.ORIGIN = base + 3
    mtls.HA_A, mtls.HA_B = base + 4, base + 5


class Client:
    """One keep-alive HTTP/1.1 connection to the chain's front, a request at a time."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), 300.0)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.req = f"GET / HTTP/1.1\r\nHost: {run.HOST}\r\nUser-Agent: chain_touch\r\n\r\n".encode()

    def request(self) -> None:
        self.sock.sendall(self.req)
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += self._recv()
        head, body = buf.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"the chain answered {head[:40]!r}")
        m = re.search(rb"(?i)content-length:\s*(\d+)", head)
        if m is None:
            raise SystemExit("no content-length in the response")
        while len(body) < int(m.group(1)):
            body += self._recv()

    def _recv(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            raise SystemExit("the chain closed the connection")
        return data


# ---- pages ----------------------------------------------------------------------------------------------


def region(path: str, perms: str) -> str:
    """A mapping's name for the report: the file's name (text or data), or the kernel's tag."""
    if not path:
        return "anon (pymalloc arenas, mmap'd malloc)"
    name = path.rsplit("/", 1)[-1] if path.startswith("/") else path
    return f"{name} {'text' if 'x' in perms else 'data'}" if path.startswith("/") else name


def referenced(pid: int) -> dict[str, int]:
    """KiB referenced since the last clear, by region."""
    out: dict[str, int] = defaultdict(int)
    key = ""
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split(maxsplit=5)
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            key = region(head[5] if len(head) > 5 else "", head[1])
        elif line.startswith("Referenced:"):
            out[key] += int(head[1])
    return out


def pages(args: argparse.Namespace, tmp: Path) -> None:
    setups = mtls.chains(tmp)
    with run.process(["nginx", "-c", str(tmp / "nginx.conf")], 0, run.ORIGIN, tmp / "nginx.log"):
        for name in args.only.split(","):
            procs = setups[name]
            with ExitStack() as stack:
                pids = [
                    stack.enter_context(run.process(cmd, 1, port, tmp / f"touch-{name}-{i}.log"))
                    for i, (cmd, port) in enumerate(procs)
                ]
                run.run_wrk(procs[-1][1], 2, None)
                client = Client(procs[-1][1])
                for _ in range(50):
                    client.request()
                samples: list[list[dict[str, int]]] = [[], []]
                for _ in range(args.trials):
                    time.sleep(0.002)
                    for pid in pids:
                        Path(f"/proc/{pid}/clear_refs").write_text("1")
                    client.request()
                    for i, pid in enumerate(pids):
                        samples[i].append(referenced(pid))
            for who, rows in zip(("B", "A"), samples, strict=True):
                totals = [sum(r.values()) for r in rows]
                keys = {k for r in rows for k in r}
                med = {k: statistics.median(r.get(k, 0) for r in rows) for k in keys}
                print(f"{name} proxy {who}: {statistics.median(totals) / PAGE_KIB:.0f} pages a request "
                      f"(median; {min(totals) / PAGE_KIB:.0f}-{max(totals) / PAGE_KIB:.0f} over {len(rows)})")  # fmt: skip
                for k, v in sorted(med.items(), key=lambda kv: -kv[1])[: args.top]:
                    if v:
                        print(f"    {v / PAGE_KIB:6.0f}  {k}")


# ---- lines ----------------------------------------------------------------------------------------------

NAMED = re.compile(r"^(ob|fn|cob|cfn|cfi|cfl|fi|fe|fl)=\((\d+)\)(?: (.*))?$")


def self_costs(out: Path) -> dict[tuple[str, str], list[int]]:
    """(object, function) -> [instructions, instruction lines, data lines] of a callgrind dump, self
    cost only (a call's inclusive cost line, after ``calls=``, is skipped). Events as this run
    names them: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw."""
    names: dict[str, dict[str, str]] = {"ob": {}, "fn": {}}
    ob = fn = "?"
    skip = False
    costs: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for line in out.read_text().splitlines():
        m = NAMED.match(line)
        if m:
            kind = {"cob": "ob", "cfn": "fn"}.get(m.group(1), m.group(1))
            if kind in names:
                table = names[kind]
                if m.group(3) is not None:
                    table[m.group(2)] = m.group(3)
                if m.group(1) == "ob":
                    ob = table[m.group(2)]
                elif m.group(1) == "fn":
                    fn = table[m.group(2)]
        elif line.startswith("calls="):
            skip = True
        elif line[:1] in "0123456789+-*":
            if skip:
                skip = False
                continue
            v = [int(x) for x in line.split()[1:]] + [0] * 9
            c = costs[(ob.rsplit("/", 1)[-1], fn)]
            c[0] += v[0]
            c[1] += v[6]
            c[2] += v[7] + v[8]
    return costs


def control(pid: int, *opts: str) -> None:
    subprocess.run(["callgrind_control", *opts, str(pid)], check=True, capture_output=True, timeout=300)


def lines(args: argparse.Namespace, tmp: Path) -> None:
    if args.dumps:
        files = args.dumps.split(",")
        report_windows([Path(f) for f in files], ["request", "idle"] * (len(files) // 2), args.top)
        return
    name = "haproxy-mtls" if args.haproxy else "meshbus-mtls-nolog" if args.nolog else "meshbus-mtls"
    procs = mtls.chains(tmp)[name]  # B, then A
    idx = 0 if args.proxy == "b" else 1
    out = tmp / "cg.out"
    vg = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--cache-sim=yes",
          "--I1=32768,8,64", "--D1=32768,8,64", LL, f"--callgrind-out-file={out}"]  # fmt: skip
    with ExitStack() as stack:
        stack.enter_context(
            run.process(["nginx", "-c", str(tmp / "nginx.conf")], 0, run.ORIGIN, tmp / "nginx.log")
        )
        pids = []
        for i, (cmd, port) in enumerate(procs):
            if i == idx:
                # a sidecar starting under valgrind on a shared machine takes minutes; B's TLS
                # handshake timer (chain.py) is 10 s at native speed
                cmd = [*vg, *cmd] + (["--handshake-timeout", "300"] if name.startswith("meshbus") else [])
                p = subprocess.Popen(["taskset", "-c", "1", *cmd], stdout=subprocess.DEVNULL,
                                     stderr=open(tmp / "vg.log", "wb"))  # fmt: skip
                stack.callback(p.wait)
                stack.callback(p.terminate)
                run.wait_port(port, 900.0)
                pids.append(p.pid)
            else:
                pids.append(stack.enter_context(run.process(cmd, 1, port, tmp / f"touch-{i}.log")))
        client = Client(procs[-1][1])
        for _ in range(args.warmup):
            client.request()
        counted = pids[idx]
        kinds = []
        for w in range(2 * args.windows):
            # switching instrumentation on empties callgrind's simulated caches: each window is cold.
            # A window lasts ~1 s of wall time (callgrind_control), so the loop's periodic work (timers,
            # the config file watch) runs in each: windows without a request measure it alone.
            control(counted, "-i", "on")
            if w % 2 == 0:
                client.request()
            control(counted, "-d")
            control(counted, "-i", "off")
            kinds.append("request" if w % 2 == 0 else "idle")
            for _ in range(20):
                client.request()
    dumps = sorted(tmp.glob("cg.out.*"), key=lambda f: int(f.name.rsplit(".", 1)[1]))
    print(f"{name} proxy {args.proxy.upper()}, steady state after {args.warmup} requests, "
          f"{args.windows} cold windows with one request and {args.windows} without:")  # fmt: skip
    report_windows(dumps, kinds, args.top)


def report_windows(dumps: list[Path], kinds: list[str], top: int) -> None:
    """Each window's totals; then, per object and per function, the median over the request windows
    less the median over the idle ones: the lines the request itself touched (a line that the
    periodic work touched first in a window is charged to it, so this slightly undercounts)."""
    costs: dict[str, list[dict[tuple[str, str], list[int]]]] = {"request": [], "idle": []}
    for dump, kind in zip(dumps, kinds, strict=True):
        rows = self_costs(dump)
        costs[kind].append(rows)
        ir, il, dl = (sum(c[i] for c in rows.values()) for i in range(3))
        print(f"  {dump.name} {kind:7s}: {ir:7d} instructions, {il:5d} instruction + {dl:5d} data lines")

    def med(kind: str, key: Callable[[tuple[str, str]], str]) -> dict[str, list[float]]:
        per: list[dict[str, list[int]]] = []
        for rows in costs[kind]:
            agg: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
            for k, c in rows.items():
                for i in range(3):
                    agg[key(k)][i] += c[i]
            per.append(agg)
        names = {n for agg in per for n in agg}
        return {
            n: [statistics.median(agg.get(n, [0, 0, 0])[i] for agg in per) for i in range(3)] for n in names
        }

    for what, key, n in (
        ("object", lambda k: k[0], 12),
        ("function", lambda k: f"{k[1][:60]} [{k[0]}]", top),
    ):
        req, idle = med("request", key), med("idle", key)
        diff = {k: [v[i] - idle.get(k, [0, 0, 0])[i] for i in range(3)] for k, v in req.items()}
        if what == "object":
            ir, il, dl = (sum(v[i] for v in diff.values()) for i in range(3))
            print(f"the request (median request window less median idle window): {ir:.0f} instructions, "
                  f"{il + dl:.0f} distinct lines ({il:.0f} instruction, {dl:.0f} data) = {(il + dl) / 16:.0f} KiB")  # fmt: skip
        print(f"  by {what}: lines (instruction, data; instructions)")
        for k, (i, a, d) in sorted(diff.items(), key=lambda kv: -(kv[1][1] + kv[1][2]))[:n]:
            print(f"    {a + d:6.0f} ({a:5.0f}, {d:5.0f}; {i:7.0f})  {k}")


# ---- interpreted calls ----------------------------------------------------------------------------------


def profiled_sidecar(argv: list[str]) -> int:
    """chain.py's sidecar with every call of an interpreted (not compiled) function counted by
    sys.setprofile (mypyc's functions make no frames), written as JSON to $CHAIN_TOUCH_CALLS on SIGUSR1."""
    import json
    import signal
    from collections import Counter

    counts: Counter[str] = Counter()

    def prof(frame: Any, event: str, _arg: Any) -> None:
        if event == "call":
            co = frame.f_code
            counts[f"{co.co_filename}:{co.co_firstlineno} {co.co_qualname}"] += 1

    def dump(*_: Any) -> None:
        Path(os.environ["CHAIN_TOUCH_CALLS"]).write_text(json.dumps(counts))

    signal.signal(signal.SIGUSR1, dump)
    sys.setprofile(prof)
    return chain.sidecar_main(argv)


def calls(args: argparse.Namespace, tmp: Path) -> None:
    import json
    import signal

    procs = mtls.chains(tmp)["meshbus-mtls"]  # B, then A
    me = str(Path(__file__).resolve())
    outs = [tmp / f"calls-{who}.json" for who in "ba"]
    with ExitStack() as stack:
        stack.enter_context(
            run.process(["nginx", "-c", str(tmp / "nginx.conf")], 0, run.ORIGIN, tmp / "nginx.log")
        )
        pids = []
        for (cmd, port), out in zip(procs, outs, strict=True):
            cmd = [cmd[0], me, "profiled-sidecar", *cmd[3:]]  # python chain.py sidecar ARGS
            env = {**os.environ, "CHAIN_TOUCH_CALLS": str(out)}
            pids.append(stack.enter_context(run.process(cmd, 1, port, tmp / f"{out.stem}.log", env)))
        client = Client(procs[-1][1])
        for _ in range(args.warmup):
            client.request()
        snaps = []
        for _ in range(2):
            for pid, out in zip(pids, outs, strict=True):
                out.unlink(missing_ok=True)
                os.kill(pid, signal.SIGUSR1)
            for out in outs:
                while not out.exists():
                    time.sleep(0.01)
            time.sleep(0.1)
            snaps.append([json.loads(out.read_text()) for out in outs])
            if len(snaps) == 1:
                for _ in range(args.requests):
                    client.request()
    for i, who in enumerate("BA"):
        before, after = snaps[0][i], snaps[1][i]
        diff = {k: (v - before.get(k, 0)) / args.requests for k, v in after.items()}
        print(f"proxy {who}: {sum(diff.values()):.2f} interpreted calls a request "
              f"(over {args.requests} requests, one connection), most called:")  # fmt: skip
        for k, v in sorted(diff.items(), key=lambda kv: -kv[1])[: args.top]:
            if v > 0:
                print(f"    {v:7.3f}  {k}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["pages", "lines", "calls"])
    ap.add_argument("--requests", type=int, default=2000, help="calls: requests counted")
    ap.add_argument("--only", default="meshbus-mtls,haproxy-mtls", help="pages: the chains")
    ap.add_argument("--trials", type=int, default=30, help="pages: requests measured")
    ap.add_argument("--proxy", choices=["a", "b"], default="a", help="lines: the proxy counted")
    ap.add_argument("--haproxy", action="store_true", help="lines: HAProxy's chain instead")
    ap.add_argument("--nolog", action="store_true", help="lines: the sidecars without their access logs")
    ap.add_argument("--warmup", type=int, default=300, help="lines: requests before the window")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument(
        "--windows", type=int, default=5, help="lines: cold windows with a request (and as many without)"
    )
    ap.add_argument("--dumps", default="", help="lines: report these callgrind dumps (comma list) only")
    ap.add_argument("--keep", action="store_true", help="keep the bench folder (lines: the callgrind dumps)")
    ap.add_argument("--port-base", type=int, default=38101)
    args = ap.parse_args()
    set_ports(args.port_base)
    tmp = Path(tempfile.mkdtemp(prefix="meshbus-bench-touch-"))
    chain.prepare(tmp)
    if args.what == "lines":  # a peer under valgrind handshakes slowly: chain_callgrind.py's deadlines
        a_conf = (tmp / "a.yaml").read_text()
        for old, new in SLOW_TIMEOUTS:
            a_conf = a_conf.replace(old, new)
        (tmp / "a.yaml").write_text(a_conf)
    try:
        {"pages": pages, "lines": lines, "calls": calls}[args.what](args, tmp)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["profiled-sidecar"]:
        sys.exit(profiled_sidecar(sys.argv[2:]))
    sys.exit(main())
