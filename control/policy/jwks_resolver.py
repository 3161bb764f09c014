"""meshbus-policy's key-set resolver: follow RequestAuthentications, fetch their keys, store them.

Inputs: the config bucket, followed for ``RequestAuthentication.*`` keys; each rule without inline
``jwks`` names a source (`meshbus.bus.schemas.jwks.jwks_source`) with the rule's ``timeout``. Output:
one `JwksRecord` per source in the ``<root>_jwks`` bucket, which meshbus-discovery follows and puts
inline into the snapshots of the proxies the RequestAuthentication selects.

Every replica runs the loop; the bucket coordinates them. A replica reads a source's record, and
fetches only when the record says it is due (`jwks.next_fetch`, with a little jitter so replicas do
not fetch together); it writes with compare-and-set, so when two replicas fetch at once one write
wins and the other sees the fresh record next time. A record's ``expires_at`` limits how long its
keys are used when every fetch fails (`jwks.failed`), even if no replica is left to say so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable

from meshbus.bus import codec
from meshbus.bus.config.resources import RequestAuthentication
from meshbus.bus.connection import BusConnection
from meshbus.bus.errors import BusError, ConflictError
from meshbus.bus.kv import BucketConfig, KeyValueStore, KvEntry, when_available
from meshbus.bus.kv_follow import follow
from meshbus.bus.schemas.config import decode_value, manifest_resource
from meshbus.bus.schemas.jwks import JWKS_BUCKET, JwksRecord, jwks_key, jwks_source
from meshbus.bus.tasks import cancel_and_wait

from . import jwks as rules
from .jwks_fetch import DEFAULT_TIMEOUT, FetchError, fetch

log = logging.getLogger(__name__)

Fetcher = Callable[[str, float], Awaitable[tuple[str, str]]]
JITTER = 0.05
"""Up to this share of the refresh interval is added to each due time (replicas spread out)."""


def jwks_bucket(bus: BusConnection) -> KeyValueStore:
    return KeyValueStore(
        bus, BucketConfig(bus.subjects.kv_bucket(JWKS_BUCKET), history=1, description="meshbus JWT key sets")
    )


def sources_of(ra: RequestAuthentication) -> dict[str, float]:
    """source -> fetch timeout for the rules of one RequestAuthentication that need fetching."""
    out: dict[str, float] = {}
    for rule in ra.spec.jwt_rules:
        src = jwks_source(rule.issuer, rule.jwks_uri, rule.jwks)
        if src is not None:
            timeout = rule.timeout if rule.timeout is not None else DEFAULT_TIMEOUT
            out[src] = min(out.get(src, timeout), timeout)
    return out


class JwksResolver:
    def __init__(
        self,
        bus: BusConnection,
        policy: rules.JwksPolicy | None = None,
        *,
        fetcher: Fetcher = fetch,
        clock: Callable[[], float] = time.time,
        logger: logging.Logger | None = None,
    ) -> None:
        self.bus = bus
        self.policy = policy or rules.JwksPolicy()
        self.fetcher = fetcher
        self.clock = clock
        self._log = logger or log
        self.config = KeyValueStore(bus, BucketConfig(bus.subjects.kv_bucket("config")), create=False)
        self.store = jwks_bucket(bus)
        self.by_resource: dict[str, dict[str, float]] = {}
        """config key -> its sources and their timeouts."""
        self.synced = asyncio.Event()
        self.fetches = 0
        self.failures = 0
        self.errors = 0
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._jitter: dict[str, float] = {}

    def sources(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for srcs in self.by_resource.values():
            for src, timeout in srcs.items():
                out[src] = min(out.get(src, timeout), timeout)
        return out

    async def start(self) -> None:
        # waiting out a JetStream that cannot answer yet, as meshbus-ca does (an exit here kept
        # meshbus-policy away for minutes of restart backoff under chaos)
        await when_available(self.store.open, "JWKS bucket", self._log)
        self._tasks = [
            asyncio.create_task(
                follow(
                    self.config, "RequestAuthentication.>", self._on_load, self._on_change, logger=self._log
                ),
                name="meshbus-policy-config-follow",
            ),
            asyncio.create_task(self._loop(), name="meshbus-policy-jwks"),
        ]

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks, logger=self._log)
        self._tasks = []

    # -- config
    def _on_load(self, entries: list[KvEntry]) -> None:
        self.by_resource = {}
        for e in entries:
            self._put(e)
        self.synced.set()
        self._wake.set()

    def _on_change(self, entry: KvEntry) -> None:
        self._put(entry)
        self._wake.set()

    def _put(self, e: KvEntry) -> None:
        if e.deleted or e.value is None:
            self.by_resource.pop(e.key, None)
            return
        try:
            res = manifest_resource(decode_value(e.value).manifest(), f"config {e.key}@{e.revision}")
        except (BusError, ValueError) as exc:
            self._log.error("skipping %s: %s", e.key, exc)
            return
        if isinstance(res, RequestAuthentication):
            self.by_resource[e.key] = sources_of(res)

    # -- fetching
    async def _loop(self) -> None:
        await self.synced.wait()
        while True:
            self._wake.clear()
            try:
                wake_at = await self.run_due()
            except BusError as exc:  # NATS away: try again soon
                self._log.warning("key sets not refreshed: %s", exc)
                wake_at = self.clock() + 1.0
            except Exception:  # a bug: said and counted, and the loop goes on
                self.errors += 1
                self._log.exception("key set refresh failed")
                wake_at = self.clock() + self.policy.retry
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.05, wake_at - self.clock()))

    async def run_due(self) -> float:
        """Fetch every source that is due; returns when the next one will be."""
        now = self.clock()
        due: list[tuple[str, float, KvEntry | None, JwksRecord | None]] = []
        next_at = now + self.policy.refresh
        for src, timeout in self.sources().items():
            entry = await self.store.get(jwks_key(src))
            record = _decode(entry)
            if record is not None and record.source != src:
                record = None  # a hash collision would be astonishing; never mix two sources' keys
            at = rules.next_fetch(record, self.policy)
            if at > 0:
                at += self._jitter.setdefault(src, random.random() * JITTER * self.policy.refresh)
            if at <= now:
                due.append((src, timeout, entry, record))
            else:
                next_at = min(next_at, at)
        if due:
            await asyncio.gather(*(self._refresh(*d) for d in due))
            next_at = min(next_at, now + self.policy.retry)  # re-read what was written (CAS losers too)
        return next_at

    async def _refresh(
        self, src: str, timeout: float, entry: KvEntry | None, record: JwksRecord | None
    ) -> None:
        self.fetches += 1
        try:
            jwks, url = await self.fetcher(src, timeout)
        except FetchError as exc:
            self.failures += 1
            new = rules.failed(record, src, str(exc), self.clock())
            keeps = (
                "keeps the last good keys until "
                + time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(new.expires_at))
                if new.jwks
                else "has no keys: tokens of this issuer get 401"
            )
            self._log.warning("key set %s: %s (failure %d); it %s", src, exc, new.failures, keeps)
        else:
            new = rules.fetched(record, src, jwks, url, self.clock(), self.policy)
            if record is None or record.jwks != jwks:
                self._log.info("key set %s fetched from %s", src, url)
        data, _ = codec.encode(new)
        key = jwks_key(src)
        try:
            if entry is None:
                await self.store.create(key, data)
            else:
                await self.store.update(key, data, last=entry.revision)
        except ConflictError:
            self._log.debug("key set %s: another replica wrote it first", src)


def _decode(entry: KvEntry | None) -> JwksRecord | None:
    if entry is None or entry.value is None:
        return None
    try:
        return codec.decode(entry.value, None, JwksRecord)
    except BusError:
        return None
