"""The idle-pool sweep (proxy/adapters/upstream.py ClusterPool.sweep) is linear in the idle connections."""

from __future__ import annotations

import asyncio
import time

import pytest

from meshbus.proxy.adapters.upstream import ClusterPool, UpstreamConnection

pytestmark = pytest.mark.unit


def _pool(n: int) -> tuple[ClusterPool, list[UpstreamConnection]]:
    pool = ClusterPool("c", asyncio.get_running_loop())
    conns = [UpstreamConnection(pool, ("10.0.0.1", 80)) for _ in range(n)]
    for i, c in enumerate(conns):
        c.idle_since = 0.0 if i % 2 == 0 else 100.0  # every other one idle for too long
    pool.idle[("10.0.0.1", 80)] = list(conns)
    return pool, conns


def _sweep_time(n: int) -> float:
    best = float("inf")
    for _ in range(5):
        pool, _conns = _pool(n)
        t = time.perf_counter()
        pool.sweep(100.0, 50.0)
        best = min(best, time.perf_counter() - t)
    return best


async def test_sweep_closes_the_expired_and_keeps_the_rest_in_order() -> None:
    pool, conns = _pool(6)
    conns[1].closed = True
    pool.sweep(100.0, 50.0)
    assert pool.idle[("10.0.0.1", 80)] == [conns[3], conns[5]]
    assert all(c.closed for c in conns[0::2]) and not conns[3].closed


async def test_sweep_time_grows_linearly_with_the_idle_connections() -> None:
    # quadratic (a list membership test per connection) would make 8x the connections cost ~64x
    small, large = _sweep_time(500), _sweep_time(4000)
    assert large < 25 * small, (small, large)
