"""CPU cost of one request through bench/mtls.py's two-sidecar chain, without sockets: instructions
per request (callgrind) or CPU time per request, both proxies together, plain and mTLS.

    .venv/bin/python bench/micro_chain.py [--tls] [--requests 20000] [--no-access-log] [--writer]
    .venv/bin/python bench/micro_chain.py --callgrind [--tls] [--no-access-log] [--writer] [--top 40]

The chain is bench/chain.py's (its configs and certificates): proxy A (client sidecar, outbound)
-> proxy B (server sidecar, inbound, PeerAuthentication STRICT with ``--tls``) -> origin, both
ProxyServers in this process, every connection an in-memory transport: A's upstream connection and
B's inbound connection exchange their bytes (TLS records with ``--tls``: A's TlsStream and the
InboundGate / TlsStream B makes, after a real handshake), the origin's response is fed to B's
upstream connection. The access log is on, as in bench/chain.py: records are made on the request
path; their lines are formatted by the access-log writer off it (JSON in chunks of 64), which runs
here only with ``--writer`` (its file write never: no loop iteration). What is left out: the kernel
(the bench's 2 reads and 2 writes per proxied request and hop) and the event loop; for those,
bench/chain_callgrind.py counts proxy A with real sockets.

``--callgrind`` runs this script twice under valgrind's callgrind (N and N + 1000 requests after
the same warm-up) and prints the difference / 1000: the instructions of one request, machine noise
excluded (the figure to decide with on a shared machine).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from chain import B_PORT, FileCertClient, client_sidecar_conf, make_certs, server_sidecar_conf
from micro import RESPONSE, MemTransport, pooled  # the origin's response: nginx's, as in micro.py
from run import ORIGIN
from scratch import scratch_dir

from meshbus.telemetry.accesslog import format_json_rows

REQUEST = b"GET / HTTP/1.1\r\nHost: origin\r\nUser-Agent: wrk\r\n\r\n"


class Pipe(MemTransport):
    """micro.py's in-memory transport, keeping every write until ``take`` and its protocol."""

    def __init__(self) -> None:
        super().__init__()
        self.out: list[bytes] = []
        self.protocol: Any = None

    def write(self, data: Any) -> None:
        self.out.append(bytes(data))

    def take(self) -> bytes:
        data = b"".join(self.out)
        self.out.clear()
        return data

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def get_protocol(self) -> Any:
        return self.protocol

    def is_closing(self) -> bool:
        return False


async def chain_loop(
    tls: bool, access_log: bool, writer: bool = False
) -> tuple[Callable[[int], None], Callable[[], Any]]:
    """(loop, close): ``loop(k)`` sends ``k`` requests through the chain; ``writer``: the access-log
    writer's formatting (JSON lines in chunks of 64, as it formats them) counts too."""
    from meshbus.proxy.adapters.listener import DownstreamConnection, ListenerContext
    from meshbus.proxy.adapters.server import ProxyServer
    from meshbus.proxy.adapters.upstream import UpstreamConnection
    from meshbus.proxy.bootstrap import Address, BootstrapConfig
    from meshbus.proxy.tls.stream import TlsStream

    tmp = scratch_dir("meshbus-micro-chain-")
    (tmp / "a.yaml").write_text(client_sidecar_conf())
    (tmp / "b.yaml").write_text(server_sidecar_conf())
    make_certs(tmp)

    def cfg(name: str, outbound: bool) -> BootstrapConfig:
        return BootstrapConfig(
            config_path=str(tmp / f"{name}.yaml"),
            outbound=Address("127.0.0.1", 0) if outbound else None,
            inbound=None if outbound else Address("127.0.0.1", 0),
            admin=None,
            app_port=None if outbound else ORIGIN,
            access_log=str(tmp / f"{name}.log") if access_log else None,
            log_level="warning",
        )

    a, b = ProxyServer(cfg("a", True)), ProxyServer(cfg("b", False))
    await a.start()
    await b.start()
    if tls:
        a.enable_mesh_tls(FileCertClient(tmp, "a", "client"))
        b.enable_mesh_tls(FileCertClient(tmp, "b", "origin"))
    for s in (a, b):  # held upstream writes: flushed by the loop below, not by a loop iteration
        s.pools.batch._call_soon = lambda cb: None
    flush_a, flush_b = a.pools.batch.flush, b.pools.batch.flush

    # A: client connection, and its upstream connection to B (TLS: a handshaken TlsStream over a pipe)
    dc_a = DownstreamConnection(ListenerContext(a, "outbound"))
    client = Pipe()
    dc_a.connection_made(client)
    cluster_a = next(c for c in a.runtime.clusters.values() if c.endpoints and c.endpoints[0].port == B_PORT)
    pool_a = a.pools.get(cluster_a.name)
    up_a = UpstreamConnection(pool_a, cluster_a.endpoints[0].key)
    a_wire = Pipe()  # A's bytes to B (TLS records with --tls)
    ctx_b = ListenerContext(b, "inbound")
    b_in = b._inbound_protocol(ctx_b)  # InboundGate with --tls, else the DownstreamConnection
    b_wire = Pipe()  # B's bytes to A
    b_wire.protocol = b_in
    b_in.connection_made(b_wire)
    if tls:
        plan = a.pools.origin.plan(cluster_a, cluster_a.endpoints[0])
        assert plan is not None
        stream = TlsStream(
            a.loop, plan.context, server_side=False, server_hostname=plan.server_hostname or None,
            on_handshake=lambda s, exc: None, handshake_timeout=10.0,
        )  # fmt: skip
        stream.connection_made(a_wire)
        for _ in range(10):  # the handshake, in memory
            data = a_wire.take()
            if data:
                b_wire.protocol.data_received(data)
            back = b_wire.take()
            if back:
                stream.data_received(back)
            if not data and not back:
                break
        assert stream._state == 1, "TLS handshake did not complete"
        assert b.tls_stats.handshakes["inbound"] == 1
        stream.set_protocol(up_a)
        up_a.connection_made(stream)  # type: ignore[arg-type]
        a_receiver: Any = stream
    else:
        up_a.connection_made(a_wire)
        a_receiver = up_a
    pooled(pool_a, up_a)

    # B's upstream connection to the origin
    cluster_b = next(c for c in b.runtime.clusters.values() if c.endpoints and c.endpoints[0].port == ORIGIN)
    pool_b = b.pools.get(cluster_b.name)
    up_b = UpstreamConnection(pool_b, cluster_b.endpoints[0].key)
    origin = Pipe()
    up_b.connection_made(origin)
    pooled(pool_b, up_b)

    b_receiver = b_wire.protocol

    def loop(k: int) -> None:
        for _ in range(k):
            dc_a.data_received(REQUEST)
            flush_a()
            b_receiver.data_received(a_wire.take())
            flush_b()
            up_b.data_received(RESPONSE)
            flush_b()
            a_receiver.data_received(b_wire.take())
            flush_a()
        out = client.take()
        if not out.endswith(b"x\n") or origin.out == []:
            raise RuntimeError(f"unexpected output: {out[-200:]!r}")
        origin.out.clear()
        for s in (a, b):  # the records the writer would take (its file write is not measured)
            s.access_log.drain_lines()
            records = s.access_log.drain()
            if writer:
                for i in range(0, len(records), 64):
                    format_json_rows(records[i : i + 64])

    async def close() -> None:
        await a.shutdown(0)
        await b.shutdown(0)

    loop(500)  # warm-up
    return loop, close


async def main(tls: bool, access_log: bool, n: int, count_only: bool, writer: bool) -> None:
    loop, close = await chain_loop(tls, access_log, writer)
    if count_only:
        loop(n)
    else:
        cpu = []
        for _ in range(5):  # best of five: this machine is shared, noise only adds time
            c0 = time.thread_time()
            loop(n)
            cpu.append(time.thread_time() - c0)
        print(
            f"{'mTLS' if tls else 'plain'} chain: {min(cpu) / n * 1e6:.2f} us CPU per request (both proxies, best of 5)"
        )
    await close()


def collected(script: str, args: list[str], env: dict[str, str] | None = None) -> tuple[int, Path]:
    """Run ``script`` with ``args`` under callgrind: the instructions it collected, and its output file
    (kept for callgrind_annotate until the bench exits; MESHBUS_BENCH_KEEP=1 keeps it after). Exits with
    the run's stderr when it fails."""
    out = scratch_dir("meshbus-cg-") / "cg.out"
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, script, *args]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    m = re.search(r"Collected : (\d+)", r.stderr)
    if r.returncode or not m:
        sys.exit(r.stderr[-2000:])
    print(f"callgrind output {out}", file=sys.stderr)
    return int(m.group(1)), out


def callgrind(tls: bool, access_log: bool, top: int, writer: bool) -> None:
    counts, functions = [], []
    for n in (200, 1200):
        count, out = collected(__file__, ["--count-only", "--requests", str(n)] + (["--tls"] if tls else []) + ([] if access_log else ["--no-access-log"]) + (["--writer"] if writer else []))  # fmt: skip
        counts.append(count)
        if top:
            functions.append(_self_costs(out))
    print(f"{'mTLS' if tls else 'plain'} chain: {(counts[1] - counts[0]) / 1000:.0f} instructions per request "
          "(both proxies; callgrind, difference of 1200 and 200 requests)")  # fmt: skip
    if top:
        small, big = functions
        diff = {f: (big.get(f, 0) - small.get(f, 0)) / 1000 for f in big}
        print(f"top {top} functions by their own instructions per request:")
        for f, c in sorted(diff.items(), key=lambda kv: -kv[1])[:top]:
            print(f"{c:9.0f}  {f}")


def _self_costs(path: Path) -> dict[str, int]:
    """Function -> its own instructions (callgrind_annotate's exclusive figures)."""
    text = subprocess.run(
        ["callgrind_annotate", "--auto=no", "--threshold=100", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    costs: dict[str, int] = {}
    for line in text.splitlines():
        m = re.match(r"\s*([\d,]+) \([^)]*\)\s+(\S.*)$", line)
        if m and ":" in m.group(2):
            name = re.sub(r" \[.*\]$", "", m.group(2)).rsplit("/", 1)[-1]
            costs[name] = costs.get(name, 0) + int(m.group(1).replace(",", ""))
    return costs


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--tls", action="store_true")
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--no-access-log", action="store_true")
    ap.add_argument("--writer", action="store_true", help="count the access-log writer's formatting too")
    ap.add_argument("--callgrind", action="store_true")
    ap.add_argument(
        "--top", type=int, default=0, help="with --callgrind: the N costliest functions per request"
    )
    ap.add_argument("--count-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.callgrind:
        callgrind(args.tls, not args.no_access_log, args.top, args.writer)
    else:
        import uvloop

        uvloop.run(main(args.tls, not args.no_access_log, args.requests, args.count_only, args.writer))
