"""The timeouts sweep checks downstream connections a slice per loop turn (proxy/adapters/server.py)."""

from __future__ import annotations

import asyncio

import pytest

from meshbus.proxy.adapters import server
from meshbus.proxy.adapters.server import check_timeouts

pytestmark = pytest.mark.unit


class _Conn:
    def __init__(self, turn: list[int], seen: list[tuple[int, float, float, float]]) -> None:
        self.turn, self.seen = turn, seen

    def check_timeouts(self, now: float, header_timeout: float, idle_timeout: float) -> None:
        self.seen.append((self.turn[0], now, header_timeout, idle_timeout))


async def test_thousands_of_connections_are_checked_a_slice_per_loop_turn() -> None:
    # 10,000 idle keep-alive connections cost ~0.6 ms to check (compiled): in one turn, four times
    # a second, that is a stall for every request that arrives meanwhile
    turn = [0]
    seen: list[tuple[int, float, float, float]] = []
    conns = [_Conn(turn, seen) for _ in range(3 * server.SWEEP_SLICE + 1)]
    stop = False

    async def ticker() -> None:
        while not stop:
            turn[0] += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    await check_timeouts(conns, 5.0, 10.0, 300.0)
    stop = True
    await task
    assert len(seen) == len(conns) and {s[1:] for s in seen} == {(5.0, 10.0, 300.0)}
    per_turn: dict[int, int] = {}
    for t, *_ in seen:
        per_turn[t] = per_turn.get(t, 0) + 1
    assert len(per_turn) == 4 and max(per_turn.values()) == server.SWEEP_SLICE, per_turn


async def test_a_few_connections_take_one_turn() -> None:
    turn = [0]
    seen: list[tuple[int, float, float, float]] = []
    await check_timeouts([_Conn(turn, seen) for _ in range(10)], 1.0, 2.0, 3.0)
    assert len(seen) == 10
