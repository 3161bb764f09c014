"""Follow a KV bucket for as long as a component runs: its contents, then each change, across outages.

`follow(kv, pattern, on_load, on_change)` calls ``on_load`` with every current entry of the keys
matching ``pattern``, then ``on_change`` with each change, and starts over (a fresh ``on_load``, so
keys deleted meanwhile are noticed) when the watch ends or the connection to NATS was re-made (a
restarted server may not resume the old consumer); while the bucket is missing or NATS is away it
retries every ``retry`` seconds; a whole-bucket watch that stopped delivering is started again
(see `follow`). It returns only when cancelled. Its users: meshbus-discovery's ConfigWatch (the
config bucket), meshbus-policy (RequestAuthentications), discovery's JWKS watch (the key sets
meshbus-policy fetches).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from .errors import BusError
from .kv import KeyValueStore, KvEntry

log = logging.getLogger(__name__)


@dataclass
class FollowState:
    """What a `follow` has done so far (for its owner's status and tests)."""

    seen: int = 0
    """The newest revision the watch delivered."""
    restarts: int = 0
    stalls: int = 0
    """Watches started again because they stopped delivering (a lost consumer, see `follow`)."""
    loaded: bool = False
    """The current watch delivered its initial contents."""


async def follow(
    kv: KeyValueStore,
    pattern: str,
    on_load: Callable[[list[KvEntry]], None],
    on_change: Callable[[KvEntry], None],
    *,
    retry: float = 0.5,
    stall_check: float = 5.0,
    logger: logging.Logger | None = None,
    state: FollowState | None = None,
) -> None:
    """Watch ``pattern`` until cancelled. A watch of the whole bucket (``>``) is also checked every
    ``stall_check`` seconds against the bucket's last revision: a JetStream ordered consumer does not
    notice that the NATS node holding it died while the client stayed connected to another node,
    so a watch that did not reach, within a check, the revision the bucket had at the previous one
    is started again (found by tests/chaos). A narrower pattern cannot be compared with the bucket's
    last revision (other keys move it), so it is not checked."""
    logger = logger or log
    state = state if state is not None else FollowState()
    bus = kv.bus
    loop = asyncio.get_running_loop()
    while True:
        reconnects = bus.stats.reconnects
        state.loaded = False
        watch = asyncio.create_task(
            _watch(kv, pattern, on_load, on_change, state), name=f"kv-follow-{kv.config.name}"
        )
        next_check = loop.time() + stall_check
        behind: int | None = None
        try:
            while not watch.done() and bus.stats.reconnects == reconnects:
                await asyncio.wait([watch], timeout=retry)
                if pattern == ">" and state.loaded and loop.time() >= next_check:
                    next_check = loop.time() + stall_check
                    behind = await _behind(kv, state, behind, logger)
                    if behind == _STALLED:
                        break
        finally:
            if not watch.done():
                watch.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watch
        if watch.done() and not watch.cancelled() and watch.exception() is not None:
            exc = watch.exception()
            level = logging.DEBUG if isinstance(exc, BusError) else logging.ERROR
            logger.log(level, "watch of %s ended: %r; retrying", kv.config.name, exc)
        state.restarts += 1
        await asyncio.sleep(retry)


_STALLED = -1


async def _behind(
    kv: KeyValueStore, state: FollowState, before: int | None, logger: logging.Logger
) -> int | None:
    """The bucket's revision when the watch lags it; _STALLED when it lagged it at the last check too
    and has not reached that revision since; None when level."""
    try:
        last = await kv.last_revision()
    except BusError:
        return before  # NATS away: the reconnect restarts the watch
    if last <= state.seen:
        return None
    if before is not None and state.seen < before:
        state.stalls += 1
        logger.warning(
            "watch of %s stalled at revision %d (bucket at %d): watching again",
            kv.config.name,
            state.seen,
            last,
        )
        return _STALLED
    return last


async def _watch(
    kv: KeyValueStore,
    pattern: str,
    on_load: Callable[[list[KvEntry]], None],
    on_change: Callable[[KvEntry], None],
    state: FollowState,
) -> None:
    initial: list[KvEntry] = []
    async for entry in kv.watch(pattern):
        if entry is None:
            state.loaded = True
            on_load(initial)
            initial = []
            continue
        state.seen = max(state.seen, entry.revision)
        if not state.loaded:
            initial.append(entry)
        else:
            on_change(entry)
