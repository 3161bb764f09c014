"""Global rate limit counters: one count per descriptor and window, shared through a KV bucket.

A lease request (`meshbus.bus.schemas.ratelimit.LeaseRequest`) asks for tokens of one descriptor.
The count of the current window (fixed windows aligned to the unit, as Envoy's rate limit service
counts: ``window = now // unit``) is read, a grant decided by `grant`, and the new count written
with compare-and-set; a lost race re-reads and decides again. So every meshbus-policy replica draws
from the one count, and the sum of what all replicas granted in a window never exceeds the limit.

`grant` gives what was asked while the window is far from full, and at most half of what is left
once it fills: tokens a sidecar holds but does not spend before the window ends are tokens another
replica of the service could not have, so leases shrink as they get scarce (the accuracy
bench/global_ratelimit.py measures comes from this). A lease of ``hits=1`` spent at once is the
per-request check of Envoy's rate limit service; it goes through the same code.

Counters live in ``<root>_ratelimit`` with history 1, each key expiring a day after its last write
(per-user descriptors come and go). Wall clock: replicas' clocks must agree to well within a
window (NTP), as with Envoy's rate limit service and its Redis.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import random
import time
from collections.abc import Callable
from typing import Final

import msgpack

from meshbus.bus.connection import BusConnection
from meshbus.bus.errors import BadRequestError, ConflictError
from meshbus.bus.kv import BucketConfig, KeyValueStore
from meshbus.bus.schemas.ratelimit import RATELIMIT_BUCKET, UNIT_SECONDS, LeaseReply, LeaseRequest

log = logging.getLogger(__name__)

CAS_ATTEMPTS: Final = 12
KEY_TTL: Final = 86400.0 + 3600.0
"""A counter is kept this long after its last write: a day window and then some."""
MAX_HITS: Final = 1_000_000
MAX_LOCKS: Final = 10_000


def window_of(now: float, unit_seconds: int) -> tuple[int, float]:
    """(index of the window ``now`` falls in, seconds until it ends)."""
    index = math.floor(now / unit_seconds)
    return index, (index + 1) * unit_seconds - now


def grant(count: int, requests: int, hits: int) -> int:
    """Tokens to grant when ``count`` of ``requests`` are spoken for in this window (module doc)."""
    left = requests - count
    if left <= 0:
        return 0
    if left <= 2 * hits:
        return max(1, min(hits, left // 2))  # the window is filling: share what is left
    return hits


def counter_key(req: LeaseRequest) -> str:
    return hashlib.sha256(f"{req.unit}\x00{req.descriptor}".encode()).hexdigest()[:40]


def counters_bucket(bus: BusConnection) -> KeyValueStore:
    return KeyValueStore(
        bus,
        BucketConfig(
            bus.subjects.kv_bucket(RATELIMIT_BUCKET),
            history=1,
            description="meshbus global rate limit counters",
            max_age=KEY_TTL,
        ),
    )


class Counters:
    def __init__(self, kv: KeyValueStore, *, clock: Callable[[], float] = time.time) -> None:
        self.kv = kv
        self.clock = clock
        self.leases = 0
        self.conflicts = 0
        self._locks: dict[str, asyncio.Lock] = {}

    async def lease(self, req: LeaseRequest) -> LeaseReply:
        unit = UNIT_SECONDS.get(req.unit)
        if unit is None:
            raise BadRequestError(f"unit must be one of {', '.join(UNIT_SECONDS)}, got {req.unit!r}")
        if not 0 < req.hits <= MAX_HITS or req.requests <= 0 or not req.descriptor:
            raise BadRequestError("a lease needs a descriptor, requests > 0 and 0 < hits <= 1000000")
        key = counter_key(req)
        # One lease per key at a time in this replica (they would only lose compare-and-sets to each
        # other); the compare-and-set settles races with the other replicas.
        lock = self._locks.get(key)
        if lock is None:
            if len(self._locks) >= MAX_LOCKS:
                self._locks = {k: v for k, v in self._locks.items() if v.locked()}
            lock = self._locks[key] = asyncio.Lock()
        async with lock:
            return await self._lease(req, key, unit)

    async def _lease(self, req: LeaseRequest, key: str, unit: int) -> LeaseReply:
        for attempt in range(CAS_ATTEMPTS):
            if attempt:
                await asyncio.sleep(random.random() * 0.002 * attempt)  # replicas racing: spread out
            now = self.clock()
            window, reset = window_of(now, unit)
            entry = await self.kv.latest(key)
            count = 0
            if entry is not None and entry.value is not None:
                stored_window, stored_count = msgpack.unpackb(entry.value)
                if stored_window == window:
                    count = int(stored_count)
            given = grant(count, req.requests, req.hits)
            remaining = max(0, req.requests - count - given)
            if given == 0:
                return LeaseReply(0, 0, reset, window)
            value = msgpack.packb([window, count + given])
            try:
                if entry is None:
                    await self.kv.create(key, value)
                else:
                    await self.kv.update(key, value, last=entry.revision)
            except ConflictError:
                self.conflicts += 1
                continue  # another replica granted in between: decide again on the new count
            self.leases += 1
            return LeaseReply(given, remaining, reset, window)
        raise ConflictError(f"rate limit counter {req.descriptor} is contended; try again")
