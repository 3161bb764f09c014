"""Watch the config KV bucket and keep an immutable `MeshModel` of it (asyncio adapter).

The initial contents are applied as one batch (one model copy), then each change as it comes.
The watch is re-established from scratch when the connection to NATS was re-made (a restarted
server may not resume the old consumer), and the fresh initial contents replace the model: keys
that vanished meanwhile are deleted then. Values are decoded with the config service's reference
reader (`meshbus.bus.schemas.config.decode_value`) and validated into the config models
(`ConfigEntry.from_value`); a value that does not decode or validate is logged, counted, and skipped:
the key keeps its last good value and the rest of the mesh keeps flowing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from meshbus.bus.connection import BusConnection
from meshbus.bus.errors import BusError
from meshbus.bus.kv import BucketConfig, KeyValueStore, KvEntry
from meshbus.bus.kv_follow import FollowState, follow
from meshbus.bus.schemas.config import decode_value
from meshbus.bus.tasks import cancel_and_wait

from .model import ConfigEntry, MeshModel, served

log = logging.getLogger(__name__)

OnChange = Callable[[list[str], MeshModel], None]
Transform = Callable[[Mapping[str, Any]], Mapping[str, Any]]


class ConfigWatch:
    def __init__(
        self,
        bus: BusConnection,
        on_change: OnChange,
        *,
        create: bool = False,
        retry: float = 0.5,
        stall_check: float = 5.0,
        logger: logging.Logger | None = None,
        transform: Transform | None = None,
    ) -> None:
        self.bus = bus
        # What discovery adds to a stored value before modelling it (the JWT key sets meshbus-policy
        # fetched, jwks_inline.py); the stored values are kept to model them again (`reapply`).
        self.transform = transform
        self.raw: dict[str, Mapping[str, Any]] = {}
        self.on_change = on_change
        self.retry = retry
        self.kv = KeyValueStore(
            bus,
            BucketConfig(bus.subjects.kv_bucket("config"), history=64, description="meshbus config"),
            create=create,
        )
        self.model = MeshModel()
        self.synced = False
        self.bad_values = 0
        self.follow = FollowState()
        self.stall_check = stall_check
        self._log = logger or log
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name="meshbus-discovery-config-watch")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task], logger=self._log)
            self._task = None

    async def _supervise(self) -> None:
        await follow(
            self.kv,
            ">",
            self._load,
            lambda entry: self._apply([entry]),
            retry=self.retry,
            stall_check=self.stall_check,
            logger=self._log,
            state=self.follow,
        )

    @property
    def restarts(self) -> int:
        return self.follow.restarts

    @property
    def stalls(self) -> int:
        return self.follow.stalls

    @property
    def seen(self) -> int:
        """The newest revision the watch delivered (bad values included)."""
        return self.follow.seen

    def _load(self, entries: list[KvEntry]) -> None:
        """Initial contents: apply them and delete whatever the model has that they lack."""
        present = {e.key for e in entries if not e.deleted}
        revision = max((e.revision for e in entries), default=0)
        gone = [KvEntry(k, revision, None) for k in self.model.entries if k not in present]
        self._apply(entries, extra_deletes=gone)
        if not self.synced:
            self.synced = True
            self._log.info(
                "config loaded: %d resources at revision %d", len(self.model.entries), self.model.revision
            )

    def _apply(self, entries: list[KvEntry], extra_deletes: list[KvEntry] | None = None) -> None:
        puts: list[ConfigEntry] = []
        deletes: list[tuple[str, int]] = [(e.key, e.revision) for e in extra_deletes or ()]
        for e in entries:
            if e.deleted or e.value is None:
                deletes.append((e.key, e.revision))
                continue
            try:
                value: Mapping[str, Any] = decode_value(e.value).manifest()
                if not served(value):  # accepted but not acted on by proxies (EnvoyFilter, HTTPRoute, ...)
                    deletes.append((e.key, e.revision))
                    continue
                if self.transform is not None:
                    self.raw[e.key] = value
                    value = self.transform(value)
                puts.append(ConfigEntry.from_value(value, e.revision))
            except (BusError, ValueError) as exc:
                self.bad_values += 1
                self._log.error("skipping config key %s at revision %d: %s", e.key, e.revision, exc)
        for key, _rev in deletes:
            self.raw.pop(key, None)
        self._commit(puts, deletes)

    def reapply(self, keys: Iterable[str]) -> None:
        """Model these keys again from their stored values (what `transform` adds to them changed)."""
        if self.transform is None:
            return
        puts: list[ConfigEntry] = []
        for key in keys:
            raw, entry = self.raw.get(key), self.model.get(key)
            if raw is None or entry is None:
                continue  # deleted meanwhile
            try:
                puts.append(ConfigEntry.from_value(self.transform(raw), entry.revision))
            except ValueError as exc:
                self.bad_values += 1
                self._log.error("skipping config key %s: %s", key, exc)
        if puts:
            self._commit(puts, [])

    def _commit(self, puts: list[ConfigEntry], deletes: list[tuple[str, int]]) -> None:
        old = self.model
        new = old.apply(puts, deletes)
        if new.generation == old.generation:
            self.model = new  # revision may still have moved
            return
        changed = [p.key for p in puts if (old.get(p.key) or _NONE).digest != p.digest]
        changed += [k for k, _ in deletes if k in old.entries]
        self.model = new
        self.on_change(changed, new)


class _None:
    digest = ""


_NONE = _None()
