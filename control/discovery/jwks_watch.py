"""Follow meshbus-policy's key-set bucket into discovery's `JwksInliner` (asyncio adapter).

Each record that changes what a source's usable key set is makes the RequestAuthentications that
name it be modelled again (``reapply``: `ConfigWatch.reapply`); a timer does the same when a key set
passes its maximum age (jwks_inline.py says why discovery, not meshbus-policy, enforces that).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable

from meshbus.bus import codec
from meshbus.bus.connection import BusConnection
from meshbus.bus.errors import BusError
from meshbus.bus.kv import BucketConfig, KeyValueStore, KvEntry
from meshbus.bus.kv_follow import follow
from meshbus.bus.schemas.jwks import JWKS_BUCKET, JwksRecord, jwks_key
from meshbus.bus.tasks import cancel_and_wait

from .jwks_inline import JwksInliner

log = logging.getLogger(__name__)


class JwksWatch:
    """Follows the key-set bucket into a `JwksInliner`; ``reapply`` re-models the affected keys."""

    def __init__(
        self,
        bus: BusConnection,
        inliner: JwksInliner,
        reapply: Callable[[Iterable[str]], None],
        *,
        logger: logging.Logger | None = None,
    ) -> None:
        self.inliner = inliner
        self.reapply = reapply
        self._log = logger or log
        self.kv = KeyValueStore(
            bus,
            BucketConfig(bus.subjects.kv_bucket(JWKS_BUCKET), history=1, description="meshbus JWT key sets"),
        )
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.errors = 0

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(
                follow(self.kv, ">", self._on_load, self._on_change, logger=self._log),
                name="meshbus-discovery-jwks",
            ),
            asyncio.create_task(self._expiry_loop(), name="meshbus-discovery-jwks-expiry"),
        ]

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks, logger=self._log)
        self._tasks = []

    def _record(self, entry: KvEntry) -> tuple[str | None, JwksRecord | None]:
        if entry.deleted or entry.value is None:
            gone = [s for s, r in self.inliner.records.items() if jwks_key(s) == entry.key]
            return (gone[0] if gone else None), None
        try:
            rec = codec.decode(entry.value, None, JwksRecord)
        except BusError as exc:
            self._log.error("skipping key set %s: %s", entry.key, exc)
            return None, None
        return rec.source, rec

    def _on_load(self, entries: list[KvEntry]) -> None:
        keys: set[str] = set()
        present = set()
        for e in entries:
            src, rec = self._record(e)
            if src is not None:
                present.add(src)
                keys |= self.inliner.update(rec, src)
        for src in [s for s in self.inliner.records if s not in present]:
            keys |= self.inliner.update(None, src)
        self._apply(keys)

    def _on_change(self, entry: KvEntry) -> None:
        src, rec = self._record(entry)
        if src is not None:
            self._apply(self.inliner.update(rec, src))

    def _apply(self, keys: set[str]) -> None:
        self._wake.set()  # the earliest expiry may have moved
        if keys:
            self.reapply(keys)

    async def _expiry_loop(self) -> None:
        while True:
            self._wake.clear()
            keys = self.inliner.expired()
            if keys:
                try:
                    self.reapply(keys)
                except Exception:  # a bug: said and counted; the keys stay dropped from the inliner
                    self.errors += 1
                    self._log.exception("re-modelling RequestAuthentications after key expiry failed")
            at = self.inliner.next_expiry()
            timeout = None if at is None else max(0.05, at - self.inliner.clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
