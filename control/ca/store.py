"""JetStream KV adapters of meshbus-ca: token records and the trust bundle.

Built on `meshbus.bus.kv.KeyValueStore` (typed errors, bucket re-created after a server
loses it). Every write that depends on what was read is a compare-and-set
(``update(last=rev)``, `ConflictError` when another writer got there first), so replicas
serving the same mesh share token use counts and converge on one bundle: a lost race
re-reads and re-applies the (pure) rule from tokens.py / bundle.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from meshbus.bus import codec
from meshbus.bus.connection import BusConnection
from meshbus.bus.errors import ConflictError
from meshbus.bus.kv import BucketConfig, KeyValueStore
from meshbus.bus.schemas.identity import TrustBundle
from meshbus.bus.spiffe import SpiffeId

from . import tokens
from .errors import TokenInvalidError
from .tokens import TokenRecord

log = logging.getLogger(__name__)

TOKENS_BUCKET = "ca_tokens"
STATE_BUCKET = "ca_state"
BUNDLE_KEY = "bundle"
_CAS_ATTEMPTS = 16
GC_GRACE_S = 3600.0
"""Expired token records are kept this long (so a late use still says 'expired', not 'unknown')."""


async def open_bucket(bus: BusConnection, name: str, *, description: str) -> KeyValueStore:
    """Bind to ``<root>_<name>`` with history 1, creating it on first use (replicas may race)."""
    store = KeyValueStore(
        bus, BucketConfig(name=bus.subjects.kv_bucket(name), history=1, description=description)
    )
    await store.open()
    return store


class TokenStore:
    def __init__(self, kv: KeyValueStore) -> None:
        self.kv = kv

    @classmethod
    async def open(cls, bus: BusConnection) -> TokenStore:
        return cls(await open_bucket(bus, TOKENS_BUCKET, description="meshbus-ca bootstrap tokens (hashed)"))

    async def add(self, record: TokenRecord) -> None:
        await self.kv.create(record.token_id, record.to_bytes())

    async def get(self, token_id: str) -> TokenRecord | None:
        entry = await self.kv.get(token_id)
        return TokenRecord.from_bytes(entry.value) if entry is not None and entry.value is not None else None

    async def consume(self, token: str, requested: SpiffeId, now: float) -> TokenRecord:
        """Use ``token`` once for ``requested``: the rules of `tokens.consume`, applied atomically."""
        token_id, secret = tokens.parse(token)
        for _ in range(_CAS_ATTEMPTS):
            entry = await self.kv.get(token_id)
            if entry is None or entry.value is None:
                raise TokenInvalidError(f"bootstrap token {token_id} is unknown (never created, or purged)")
            used = tokens.consume(TokenRecord.from_bytes(entry.value), secret, requested, now)
            try:
                await self.kv.update(token_id, used.to_bytes(), last=entry.revision)
            except ConflictError:
                continue  # another replica used it in between: re-read and re-check
            return used
        raise ConflictError(f"bootstrap token {token_id} is contended; try again")

    async def sweep(self, now: float, grace_s: float = GC_GRACE_S) -> int:
        """Delete records that expired more than ``grace_s`` ago; returns how many."""
        removed = 0
        for entry in await self.kv.scan(">"):
            if entry.value is None or TokenRecord.from_bytes(entry.value).expires_at > now - grace_s:
                continue
            try:
                await self.kv.delete(entry.key, last=entry.revision)
                removed += 1
            except ConflictError:  # used or swept by another replica meanwhile
                pass
        return removed


class BundleStore:
    def __init__(self, kv: KeyValueStore) -> None:
        self.kv = kv

    @classmethod
    async def open(cls, bus: BusConnection) -> BundleStore:
        return cls(await open_bucket(bus, STATE_BUCKET, description="meshbus-ca state (trust bundle)"))

    async def load(self) -> tuple[TrustBundle | None, int]:
        entry = await self.kv.get(BUNDLE_KEY)
        if entry is None or entry.value is None:
            return None, 0
        bundle = codec.decode(entry.value, None, TrustBundle)
        return codec.evolve(bundle, version=entry.revision), entry.revision

    async def apply(
        self,
        change: Callable[[TrustBundle | None], TrustBundle],
        same: Callable[[TrustBundle | None, TrustBundle], bool],
    ) -> tuple[TrustBundle, bool]:
        """Apply ``change`` to the stored bundle with CAS; returns (bundle with its version, written?)."""
        for _ in range(_CAS_ATTEMPTS):
            previous, revision = await self.load()
            updated = change(previous)
            if previous is not None and same(previous, updated):
                return previous, False
            data, _headers = codec.encode(updated)
            try:
                new_rev = await self.kv.update(BUNDLE_KEY, data, last=revision)  # last=0: must not exist yet
            except ConflictError:
                continue
            return codec.evolve(updated, version=new_rev), True
        raise ConflictError("trust bundle is contended; try again")
