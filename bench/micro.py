"""Python cost of one proxied request, without sockets: the listener, exchange and upstream protocol
driven with in-memory transports in a loop. Isolates the per-request Python work from the kernel
and from machine noise; ``--profile`` prints a cProfile breakdown.

    .venv/bin/python bench/micro.py [--requests 20000] [--profile] [--access-log] [--plugin noop|header]

``--plugin`` adds an in-process Plugin (bench/plugins.py's filters) to every request's chain.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from run import ORIGIN, meshbus_conf
from scratch import scratch_dir

from meshbus.proxy.adapters.listener import DownstreamConnection
from meshbus.proxy.adapters.server import ProxyServer
from meshbus.proxy.adapters.upstream import UpstreamConnection
from meshbus.proxy.bootstrap import Address, BootstrapConfig

REQUEST = b"GET / HTTP/1.1\r\nHost: origin\r\n\r\n"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Fri, 27 Nov 2026 19:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 100\r\nConnection: keep-alive\r\n\r\n" + b"x" * 99 + b"\n"
)


class MemTransport(asyncio.Transport):
    def __init__(self, peer: Any = None) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.peer = peer

    def write(self, data: bytes) -> None:  # type: ignore[override]
        # Keep only the last few writes: a list growing by one item per request would make the
        # benchmark measure its own allocations.
        w = self.written
        if len(w) > 8:
            del w[:4]
        w.append(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


def pooled(pool: Any, up: UpstreamConnection) -> None:
    """Count ``up`` as the pool's one open, idle connection, as if the pool had dialled it."""
    pool.active.add(up)
    pool.count += 1
    pool.idle[up.key] = [up]


def in_memory(
    server: ProxyServer, direction: str, cluster: Any
) -> tuple[DownstreamConnection, MemTransport, UpstreamConnection, MemTransport, Callable[[], None]]:
    """(downstream, its transport, upstream, its transport, flush): a listener's connection and one
    pooled upstream connection to ``cluster``'s first endpoint, both on in-memory transports."""
    from meshbus.proxy.adapters.listener import ListenerContext

    dc = DownstreamConnection(ListenerContext(server, direction))
    dt = MemTransport()
    dc.connection_made(dt)
    pool = server.pools.get(cluster.name)
    up = UpstreamConnection(pool, cluster.endpoints[0].key)
    ut = MemTransport()
    up.connection_made(ut)
    pooled(pool, up)
    # Held upstream writes (proxy/adapters/write_batch.py): flushed here after each callback, as the loop would
    # after an iteration that handled one socket; the loop's own call_soon per iteration is left out
    # (a real loop runs it; here nothing would, and the handles would pile up).
    batch = server.pools.batch
    batch._call_soon = lambda cb: None
    return dc, dt, up, ut, batch.flush


async def outbound_loop(
    plugin: str = "", access_log: Path | None = None, request: bytes = REQUEST
) -> tuple[ProxyServer, Callable[[int], None], Callable[[], Awaitable[None]]]:
    """(server, loop, close): ``loop(k)`` sends ``k`` requests (``request``) through an outbound route
    (in-memory transports), with bench/plugins.py's in-process filter ``plugin`` (noop, header) when
    given; ``close`` stops the proxy."""
    tmp = scratch_dir("meshbus-micro-")
    text = meshbus_conf(1)
    if plugin:
        from plugins import PLUGIN, install_filters

        install_filters(tmp / "site")
        sys.path.insert(0, str(tmp / "site"))
        text += PLUGIN.format(filter=f"bench-{plugin}", placement="IN_PROCESS")
    (tmp / "mesh.yaml").write_text(text)
    cfg = BootstrapConfig(
        config_path=str(tmp / "mesh.yaml"), outbound=Address("127.0.0.1", 0), inbound=None, admin=None,
        access_log=str(access_log) if access_log else None,
    )  # fmt: skip
    server = ProxyServer(cfg)
    await server.start()
    cluster = next(c for name, c in server.runtime.clusters.items() if "origin" in name and "|v1|" in name)
    assert cluster.endpoints[0].port == ORIGIN
    dc, dt, up, ut, flush = in_memory(server, "outbound", cluster)

    # bound once, as uvloop binds a protocol's data_received: a lookup by name per call would be the
    # harness's (and CPython's type attribute cache misses it when another lookup shares its slot)
    dc_received, up_received = dc.data_received, up.data_received

    def loop(k: int) -> None:
        for _ in range(k):
            dc_received(request)
            flush()
            up_received(RESPONSE)
            flush()
        if not dt.written or not dt.written[-1].endswith(b"x\n"):
            raise RuntimeError(f"unexpected output: {dt.written[-1:]!r}")
        dt.written.clear()
        ut.written.clear()

    async def close() -> None:
        dc.connection_lost(None)
        await server.shutdown(0)

    loop(2000)  # warm-up
    return server, loop, close


async def main(n: int, profile: bool, access_log: bool, plugin: str = "") -> None:
    tmp = scratch_dir("meshbus-micro-")
    server, loop, close = await outbound_loop(plugin, tmp / "access.log" if access_log else None)
    if profile:
        pr = cProfile.Profile()
        pr.enable()
        loop(n)
        pr.disable()
        pstats.Stats(pr).sort_stats("tottime").print_stats(90)
    times, cpu = [], []
    for _ in range(5):  # the best of five: this machine is shared, and noise only ever adds time
        t0, c0 = time.perf_counter(), time.thread_time()
        loop(n)
        times.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
    dt_s = min(times)
    print(
        f"{n} requests x5: {dt_s / n * 1e6:.2f} us of Python per proxied request (best of 5; "
        f"CPU time {min(cpu) / n * 1e6:.2f} us)"
    )
    if access_log:
        # Where the access log's formatting runs: per record as the request ends (AccessLogger.line,
        # AccessLogWriter(per_request=True)) or by the writer DEFAULT_CHUNK at a time (the default). Pairs of
        # rounds, interleaved; per request: the loop's CPU plus the writer's (join, or format) for the
        # same records. Both write the same bytes (tests/unit/telemetry/test_accesslog.py).
        from meshbus.telemetry.accesslog import LINE_JSON, LINE_NONE, format_json_rows
        from meshbus.telemetry.accesslog_writer import DEFAULT_CHUNK

        logger = server.access_log
        eager_cpu: list[float] = []
        batch_cpu: list[float] = []
        for _ in range(7):
            for eager in (True, False):
                logger.line = LINE_JSON if eager else LINE_NONE  # type: ignore[attr-defined]
                logger.drain(), logger.drain_lines()
                c0 = time.thread_time()
                loop(n)
                records, lines = logger.drain(), logger.drain_lines()
                if eager:
                    b"".join(lines)
                else:
                    for i in range(0, len(records), DEFAULT_CHUNK):
                        format_json_rows(records[i : i + DEFAULT_CHUNK])
                (eager_cpu if eager else batch_cpu).append((time.thread_time() - c0) / n * 1e6)
        logger.line = LINE_NONE  # type: ignore[attr-defined]  # the writer's default
        print(
            f"access log, CPU per request incl. the writer's work (median of 7 interleaved pairs): "
            f"formatted per request {statistics.median(eager_cpu):.2f} us, "
            f"formatted by the writer in chunks of {DEFAULT_CHUNK} {statistics.median(batch_cpu):.2f} us"
        )
    await close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--access-log", action="store_true")
    ap.add_argument("--plugin", choices=["", "noop", "header"], default="")
    a = ap.parse_args()
    import uvloop

    uvloop.run(main(a.requests, a.profile, a.access_log, a.plugin))
