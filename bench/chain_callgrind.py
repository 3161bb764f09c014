"""Instructions per request of one sidecar (A, the client's, or B) in bench/mtls.py's real chain,
sockets and event loop included: what bench/micro_chain.py's in-memory figure leaves out of user space.

    .venv/bin/python bench/chain_callgrind.py [--tls] [--proxy a|b] [--port-base N]

The chain is bench/chain.py's (h2load -> proxy A -> proxy B -> nginx origin), on ports of its own so that it
does not collide with a benchmark running beside it. The counted proxy runs under valgrind's
callgrind, the other and nginx natively; h2load sends N requests over 10 keep-alive connections
(after 10 that open them), the counted proxy is stopped (SIGTERM, callgrind writes its totals), and
this is repeated with N + 2000: the difference / 2000 is its user-space instructions per request
(uvloop, the access-log writer, the request path), not the kernel's work. Needs valgrind, nginx and h2load.

Under ``--tls`` each run also pays the handshakes of the connections A opens to B (one per h2load
connection of the warm-up: the pool starts empty, B being new in each run); the runs must open the same
number, read from the native proxy's handshake counter, so that the difference leaves them out.
"""

from __future__ import annotations

import argparse
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
# bench/ is not a package: the shared helpers come from chain.py and run.py next to this file
import chain
import run
from scratch import scratch_dir

A_PORT, B_PORT, ORIGIN, STATS = 28101, 28102, 28080, 28103
# A's connect timeout bounds its TLS handshake with B (adapters/upstream.py): chain.py's 1 s is for native
# speed, and B under callgrind (~50x slower) takes longer than that to handshake, so every warm-up request
# failed 503 after three attempts. The values only move deadlines: the request path does the same work.
SLOW_TIMEOUTS = (("connectTimeout: 1s", "connectTimeout: 60s"), ("timeout: 5s", "timeout: 120s"),
                 ("perTryTimeout: 2s", "perTryTimeout: 60s"))  # fmt: skip


def wait_port(port: int, seconds: float = 120.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"port {port} never opened")


def _handshakes(port: int) -> int:
    """The native proxy's handshakes so far (chain.py's stats line: "outbound inbound failures")."""
    with socket.create_connection(("127.0.0.1", port), 5.0) as s:
        line = s.makefile().readline().split(" ", 2)
    if line[2].strip() != "{}":
        raise SystemExit(f"TLS handshakes failed in the chain: {line[2].strip()}")
    return int(line[0]) + int(line[1])


def _ok(h2load_out: str, n: int) -> None:
    """Refuse a run in which any of the ``n`` requests was not answered 2xx by the origin."""
    m = re.search(r"status codes: (\d+) 2xx", h2load_out)
    if m is None or int(m.group(1)) != n:
        raise SystemExit(f"not every request was answered 2xx through the chain:\n{h2load_out}")


def load_and_collect(counted: subprocess.Popen[str], port: int, n: int, what: str) -> int:
    """Send 10 requests (one opens each of h2load's 10 keep-alive connections, and a proxy's pooled
    connections to a restarted peer reconnect on them), then ``n``, to ``port`` with the origin's
    authority; stop ``counted`` (SIGTERM: callgrind writes its totals)
    and return its instruction count. Any request not answered 2xx ends the run."""
    load = ["h2load", "--h1", "-c", "10", "-H", f":authority: {run.HOST}", f"http://127.0.0.1:{port}/"]
    _ok(subprocess.run([*load, "-n", "10"], check=True, capture_output=True, text=True).stdout, 10)
    _ok(subprocess.run([*load, "-n", str(n)], check=True, capture_output=True, text=True).stdout, n)
    counted.send_signal(signal.SIGTERM)
    m = re.search(r"Collected : (\d+)", counted.communicate(timeout=600)[1])
    if m is None:
        raise SystemExit(f"{what} under callgrind wrote no totals")
    return int(m.group(1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tls", action="store_true")
    ap.add_argument(
        "--proxy", choices=["a", "b"], default="a", help="the sidecar to count (the other runs natively)"
    )
    ap.add_argument(
        "--port-base",
        type=int,
        default=A_PORT,
        help="A, B, the origin and the stats on N .. N+3 (beside another run)",
    )
    args = ap.parse_args()
    tls = args.tls
    a_port, b_port, origin, stats = (args.port_base + i for i in range(4))
    # the configs and nginx.conf read these module globals when written
    chain.A_PORT, chain.B_PORT, chain.ORIGIN, run.ORIGIN = a_port, b_port, origin, origin
    tmp = scratch_dir("meshbus-chain-cg-")
    chain.prepare(tmp)
    a_conf = (tmp / "a.yaml").read_text()
    for old, new in SLOW_TIMEOUTS:
        if old not in a_conf:
            raise SystemExit(f"chain.py's a.yaml no longer says {old!r}: update SLOW_TIMEOUTS")
        a_conf = a_conf.replace(old, new)
    (tmp / "a.yaml").write_text(a_conf)
    py, me = sys.executable, str(Path(chain.__file__).resolve())
    # both sides' TLS handshake timer too (10 s): a fresh valgrind translating OpenSSL's handshake code
    # on a loaded machine ran past it
    common = ["--dir", str(tmp), "--handshake-timeout", "120"] + (["--tls"] if tls else [])
    cmds = {
        "b": ([py, me, "sidecar", *common, "--config", str(tmp / "b.yaml"), "--inbound", f"127.0.0.1:{b_port}",
               "--app-port", str(origin), "--name", "b", "--sa", "origin", "--access-log", str(tmp / "b.log")], b_port),
        "a": ([py, me, "sidecar", *common, "--config", str(tmp / "a.yaml"), "--outbound", f"127.0.0.1:{a_port}",
               "--name", "a", "--sa", "client", "--access-log", str(tmp / "a.log")], a_port),
    }  # fmt: skip
    other = "b" if args.proxy == "a" else "a"
    nginx = subprocess.Popen(["nginx", "-c", str(tmp / "nginx.conf")], stderr=subprocess.DEVNULL)
    native = subprocess.Popen([*cmds[other][0], "--stats-port", str(stats)], stderr=subprocess.DEVNULL)
    counts = []
    handshakes = []
    counted: subprocess.Popen[str] | None = None
    try:
        wait_port(origin)
        wait_port(cmds[other][1])
        wait_port(stats)
        for n in (1000, 3000):
            cmd, port = cmds[args.proxy]
            counted = subprocess.Popen(
                ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg-{n}.out", *cmd],
                stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            # a sidecar starting under valgrind on a shared 2-core machine took over the 2 minutes
            # that are plenty natively
            wait_port(port, 900.0)
            before = _handshakes(stats)
            # the origin's authority, as bench/run.py's loads send it: without it proxy A has no route
            # and answers 404 NR itself (what this counted before: no hop to B, no TLS)
            counts.append(load_and_collect(counted, a_port, n, f"proxy {args.proxy}"))
            handshakes.append(_handshakes(stats) - before)
    finally:
        if counted is not None and counted.poll() is None:  # a run that failed before its SIGTERM
            counted.kill()
            counted.wait()
        native.terminate()
        nginx.terminate()
        native.wait()
        nginx.wait()
    if handshakes[0] != handshakes[1]:
        raise SystemExit(f"the runs made {handshakes} TLS handshakes: their difference is not per request")
    print(
        f"proxy {args.proxy.upper()} ({'mTLS' if tls else 'plain'}), sockets and event loop included: "
        f"{(counts[1] - counts[0]) / 2000:.0f} instructions per request (user space; callgrind; "
        f"{handshakes[0]} handshakes in each run, left out)"
    )


if __name__ == "__main__":
    main()
