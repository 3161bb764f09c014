"""Follow a KV bucket for as long as a component runs: its contents, then each change, across outages.

`follow(kv, pattern, on_load, on_change)` calls ``on_load`` with every current entry of the keys
matching ``pattern``, then ``on_change`` with each change, and starts over (a fresh ``on_load``, so
keys deleted meanwhile are noticed) when the watch ends or the connection to NATS was re-made (a
restarted server may not resume the old consumer); while the bucket is missing or NATS is away it
retries every ``retry`` seconds. It returns only when cancelled. meshbus-discovery's ConfigWatch
does the same for the config bucket with its own model; this is the general form (meshbus-policy
follows RequestAuthentications, discovery follows the key sets meshbus-policy fetches).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from .errors import BusError
from .kv import KeyValueStore, KvEntry

log = logging.getLogger(__name__)


async def follow(
    kv: KeyValueStore,
    pattern: str,
    on_load: Callable[[list[KvEntry]], None],
    on_change: Callable[[KvEntry], None],
    *,
    retry: float = 0.5,
    logger: logging.Logger | None = None,
) -> None:
    logger = logger or log
    bus = kv.bus
    while True:
        reconnects = bus.stats.reconnects
        watch = asyncio.create_task(
            _watch(kv, pattern, on_load, on_change), name=f"kv-follow-{kv.config.name}"
        )
        try:
            while not watch.done() and bus.stats.reconnects == reconnects:
                await asyncio.wait([watch], timeout=retry)
        finally:
            if not watch.done():
                watch.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watch
        if watch.done() and not watch.cancelled() and watch.exception() is not None:
            exc = watch.exception()
            level = logging.DEBUG if isinstance(exc, BusError) else logging.ERROR
            logger.log(level, "watch of %s ended: %r; retrying", kv.config.name, exc)
        await asyncio.sleep(retry)


async def _watch(
    kv: KeyValueStore,
    pattern: str,
    on_load: Callable[[list[KvEntry]], None],
    on_change: Callable[[KvEntry], None],
) -> None:
    initial: list[KvEntry] = []
    loading = True
    async for entry in kv.watch(pattern):
        if entry is None:
            loading = False
            on_load(initial)
            initial = []
        elif loading:
            initial.append(entry)
        else:
            on_change(entry)
