"""Global rate limiting, two designs measured side by side: a check per request vs leased budgets.

    .venv/bin/python bench/global_ratelimit.py [--limit 200] [--rate 400] [--windows 5] [--policies 2]

Real processes: an embedded nats-server, ``--policies`` meshbus-policy replicas, and (for the lower
bound of any per-request design) a bare NATS echo responder. Two "replicas of the limited service"
are two clients, each with its own NATS connection, offering ``--rate`` requests/s between them
(more than ``--limit``) for ``--windows`` one-second windows.

- A, check per request: each request asks meshbus-policy (``policy.ratelimit``, hits=1) and waits
  for the answer (Envoy's rate limit service model). Also the bare NATS round trip to an echo
  responder: what any per-request check costs at least, even with counters in memory.
- B, leased budgets: each request goes through the global rate limit filter
  (proxy/filters/global_ratelimit.py) with its lease client over NATS (proxy/mesh/ratelimit_client.py).

Reported per design: the decision's added latency (p50 / p99, microseconds: time from the request
reaching the filter to its verdict), the client-side CPU per request (what a sidecar would spend,
from process CPU time, less the load driver's own), and accuracy: requests admitted per window / limit. Targets (issue 11):
accuracy within 10% across two replicas, added p50 under 0.3 ms. The machine is shared: quote the
CPU figures and ratios, not absolute latencies.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import subprocess
import sys
import time
from collections import Counter
from typing import Any

from scratch import scratch_dir

from meshbus.bus import rpc
from meshbus.bus.connection import BusConnection, BusSettings
from meshbus.bus.embedded import EmbeddedNats
from meshbus.bus.schemas.ratelimit import LeaseReply, LeaseRequest
from meshbus.proxy.codec.http1 import RequestHead
from meshbus.proxy.filters.chain import LocalReply
from meshbus.proxy.filters.global_ratelimit import (
    Budgets,
    GlobalRateLimitConfig,
    GlobalRateLimitFilter,
    GlobalRule,
)
from meshbus.proxy.mesh.ratelimit_client import NatsLeaseClient

ROOT = "bench"
ECHO = """
import asyncio, sys, nats
async def main():
    nc = await nats.connect(sys.argv[1])
    async def cb(msg):
        await msg.respond(msg.data)
    await nc.subscribe("bench.echo", cb=cb)
    await asyncio.Event().wait()
asyncio.run(main())
"""


class Ctx:
    """The parts of a FilterContext the rate limit filter reads."""

    def __init__(self) -> None:
        self.head = RequestHead("GET", "/", "1.1", [], {}, True, False, 0, 0)
        self.dc = type("Peer", (), {"peer_ip": "10.0.0.1"})()
        self.filter_state = None


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] if xs else float("nan")


async def connect(url: str, name: str) -> BusConnection:
    bus = BusConnection(BusSettings(url=url, name=name, root=ROOT))
    await bus.connect()
    return bus


async def drive(rate: float, seconds: float, one: Any) -> list[tuple[float, bool, float]]:
    """Offer ``rate`` requests/s for ``seconds``, starting at a window boundary; (wall time, admitted,
    decision seconds) per request. Requests run concurrently, as a proxy's requests do."""
    start = math.floor(time.time()) + 1
    await asyncio.sleep(start - time.time())
    out: list[tuple[float, bool, float]] = []
    tasks = []
    interval = 1.0 / rate
    t0 = time.monotonic()
    i = 0
    while time.monotonic() - t0 < seconds:
        tasks.append(asyncio.ensure_future(one(i, out)))
        i += 1
        delay = t0 + i * interval - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    await asyncio.gather(*tasks)
    return out


def accuracy(results: list[tuple[float, bool, float]], limit: int) -> tuple[float, float, list[int]]:
    per = Counter(math.floor(t) for t, ok, _ in results if ok)
    windows = sorted({math.floor(t) for t, _ok, _ in results})[:-1]  # the last one may be partial
    admitted = [per[w] for w in windows]
    ratios = [a / limit for a in admitted]
    return min(ratios), max(ratios), admitted


async def bench(args: argparse.Namespace, url: str) -> None:
    limit, rate, windows = args.limit, args.rate, args.windows
    clients = [await connect(url, f"replica-{i}") for i in range(2)]

    # -- bare NATS round trip (lower bound of any per-request check)
    rtts = []
    for _ in range(2000):
        t = time.perf_counter()
        await clients[0].nc.request("bench.echo", b"x" * 60, timeout=2)
        rtts.append(time.perf_counter() - t)
    cpu0 = time.process_time()
    for _ in range(2000):
        await clients[0].nc.request("bench.echo", b"x" * 60, timeout=2)
    echo_cpu = (time.process_time() - cpu0) / 2000

    # -- A: a check per request
    subject = clients[0].subjects.policy("ratelimit")

    async def check(i: int, out: list[tuple[float, bool, float]]) -> None:
        req = LeaseRequest(f"bench/a/{args.tag}", limit, "Second", 1)
        t = time.perf_counter()
        try:
            reply = await rpc.request(clients[i % 2], subject, req, LeaseReply, timeout=2)
            ok = reply.granted > 0
        except Exception:
            ok = True  # failure mode open
        out.append((time.time(), ok, time.perf_counter() - t))

    # the driver's own CPU per request (a task per request, pacing), taken off the designs' figures
    async def nothing(i: int, out: list[tuple[float, bool, float]]) -> None:
        out.append((time.time(), True, 0.0))

    cpu0 = time.process_time()
    base = await drive(rate, 1, nothing)
    driver = (time.process_time() - cpu0) / len(base)

    cpu0 = time.process_time()
    res_a = await drive(rate, windows, check)
    cpu_a = (time.process_time() - cpu0) / len(res_a) - driver

    # -- B: leased budgets through the filter
    rule = GlobalRule(f"bench/b/{args.tag}", limit, "Second")
    config = GlobalRateLimitConfig((rule,), fail_open=True, timeout=0.1)
    filters = [
        GlobalRateLimitFilter(config, Budgets(NatsLeaseClient(c), f"replica-{i}"))
        for i, c in enumerate(clients)
    ]

    async def leased(i: int, out: list[tuple[float, bool, float]]) -> None:
        f = filters[i % 2]
        t = time.perf_counter()
        r = f.on_request_headers(Ctx())
        if r is not None and not isinstance(r, LocalReply):
            r = await r
        out.append((time.time(), r is None, time.perf_counter() - t))

    cpu0 = time.process_time()
    res_b = await drive(rate, windows, leased)
    cpu_b = (time.process_time() - cpu0) / len(res_b) - driver
    leases = sum(f.budgets.stats["leases"] for f in filters)

    # the filter alone, tokens in hand (no I/O): its CPU cost per request
    local = GlobalRateLimitFilter(
        GlobalRateLimitConfig((GlobalRule("bench/local", 10**9, "Hour"),)),
        Budgets(NatsLeaseClient(clients[0])),
    )
    r = local.on_request_headers(Ctx())
    if r is not None and not isinstance(r, LocalReply):
        await r
    ctx = Ctx()
    n = 200_000
    t = time.perf_counter()
    for _ in range(n):
        local.on_request_headers(ctx)
    filter_us = (time.perf_counter() - t) / n * 1e6

    print(
        f"\nlimit {limit}/s, offered {rate}/s from two replicas, {windows} windows, "
        f"{args.policies} meshbus-policy replica(s)\n"
    )
    print(f"{'design':<34} {'p50 us':>8} {'p99 us':>8} {'CPU us/req':>10} {'admitted/limit per window':>30}")
    print(
        f"{'bare NATS request/reply (bound)':<34} {pct(rtts, 50) * 1e6:>8.0f} {pct(rtts, 99) * 1e6:>8.0f} "
        f"{echo_cpu * 1e6:>10.0f} {'-':>30}"
    )
    for name, res, cpu in (("A: check per request", res_a, cpu_a), ("B: leased budgets", res_b, cpu_b)):
        lat = [d for _t, _ok, d in res]
        lo, hi, admitted = accuracy(res, limit)
        print(
            f"{name:<34} {pct(lat, 50) * 1e6:>8.0f} {pct(lat, 99) * 1e6:>8.0f} {cpu * 1e6:>10.0f} "
            f"{f'{lo:.2f}-{hi:.2f} {admitted}':>30}"
        )
    print(
        f"\nB asked for {leases} leases for {len(res_b)} requests; the filter alone with tokens in hand: "
        f"{filter_us:.2f} us per request (CPU, no I/O)"
    )
    for c in clients:
        await c.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--rate", type=float, default=400)
    ap.add_argument("--windows", type=int, default=5)
    ap.add_argument("--policies", type=int, default=2)
    ap.add_argument("--tag", default=str(os.getpid()))
    args = ap.parse_args()
    tmp = scratch_dir("meshbus-rl-bench-")
    with EmbeddedNats(port=0, store_dir=str(tmp / "nats")) as nats:
        env = {
            **os.environ,
            "MESHBUS_NATS_URL": nats.url,
            "MESHBUS_SUBJECT_ROOT": ROOT,
            "MESHBUS_LOG_LEVEL": "warning",
        }
        procs = [
            subprocess.Popen([sys.executable, "-m", "meshbus.control.policy"], env=env,
                             stdout=subprocess.DEVNULL, stderr=open(tmp / f"policy-{i}.log", "wb"))
            for i in range(args.policies)
        ]  # fmt: skip
        procs.append(subprocess.Popen([sys.executable, "-c", ECHO, nats.url], env=env))
        try:
            asyncio.run(wait_and_bench(args, nats.url))
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(10)


async def wait_and_bench(args: argparse.Namespace, url: str) -> None:
    bus = await connect(url, "probe")
    req = LeaseRequest("bench/probe", 1, "Second", 1)
    await rpc.request(
        bus, bus.subjects.policy("ratelimit"), req, LeaseReply, timeout=30, wait_for_service=True
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            await bus.nc.request("bench.echo", b"", timeout=1)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)
    await bus.close()
    await bench(args, url)


if __name__ == "__main__":
    main()
