"""The config bucket: resources as KV values (format in meshbus.bus.schemas.config), revisions, history.

Reads go to JetStream every time (no cache that could be stale across replicas); only the
decoded, re-validated Resource of a (key, revision) is memoised, since a revision never changes.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence

from pydantic import ValidationError

from meshbus.bus.config.resources import Resource
from meshbus.bus.connection import BusConnection
from meshbus.bus.errors import BadRequestError
from meshbus.bus.kv import BucketConfig, KeyValueStore, KvEntry, KvWrite
from meshbus.bus.schemas.config import StoredConfig, decode_value, encode_value

from .plan import Current, PlannedWrite

log = logging.getLogger(__name__)

HISTORY = 64
_DECODED_CACHE = 4096


class ConfigStore:
    def __init__(self, bus: BusConnection, *, history: int = HISTORY) -> None:
        self.bucket = bus.subjects.kv_bucket("config")
        self.kv = KeyValueStore(
            bus,
            BucketConfig(self.bucket, history=history, description="meshbus config (one key per resource)"),
        )
        self._resources: OrderedDict[tuple[str, int], Resource] = OrderedDict()
        self.undecodable = 0

    async def open(self) -> None:
        await self.kv.open()

    async def state(self, pattern: str = ">") -> dict[str, Current]:
        """Latest message of every key (delete markers included) matching ``pattern``."""
        out: dict[str, Current] = {}
        for entry in await self.kv.scan(pattern, include_deleted=True):
            current = self._current(entry)
            if current is not None:
                out[entry.key] = current
        return out

    async def current(self, key: str) -> Current | None:
        entry = await self.kv.latest(key)
        return None if entry is None else self._current(entry)

    def _current(self, entry: KvEntry) -> Current | None:
        if entry.deleted or entry.value is None:
            return Current(entry.revision, None)
        try:
            return Current(entry.revision, decode_value(entry.value))
        except BadRequestError as exc:
            # Someone wrote junk with `nats kv put`; skip it loudly rather than fail every request.
            self.undecodable += 1
            log.error("ignoring undecodable value of %s at revision %d: %s", entry.key, entry.revision, exc)
            return None

    def resource(self, key: str, current: Current) -> Resource | None:
        """The stored value as a typed Resource (for cross-resource analysis); None if it no longer validates."""
        if current.value is None:
            return None
        cache_key = (key, current.revision)
        res = self._resources.get(cache_key)
        if res is None:
            try:
                res = current.value.to_resource()
            except (ValidationError, BadRequestError) as exc:
                log.warning("stored %s (revision %d) no longer validates: %s", key, current.revision, exc)
                return None
            self._resources[cache_key] = res
            if len(self._resources) > _DECODED_CACHE:
                self._resources.popitem(last=False)
        return res

    async def commit(self, writes: Sequence[PlannedWrite]) -> list[int]:
        return await self.kv.commit(
            [KvWrite(w.key, None if w.value is None else encode_value(w.value), w.last) for w in writes]
        )

    async def history(self, key: str) -> list[KvEntry]:
        return await self.kv.history(key)

    async def at(self, key: str, revision: int) -> KvEntry:
        return await self.kv.at(key, revision)

    @staticmethod
    def decode(entry: KvEntry) -> StoredConfig | None:
        return None if entry.value is None else decode_value(entry.value)
