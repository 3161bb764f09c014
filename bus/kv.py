"""Typed JetStream KV: one bucket, revisions as versions, typed errors, atomic multi-key commits.

A `KeyValueStore` wraps one bucket. Every value a key ever had is a message in the bucket's
stream, so a key's *revision* is the stream sequence of its latest message: it only grows,
and an update that names the revision it was based on (``update(key, value, last=rev)``) is
refused with `ConflictError` when the key moved since (the server checks
``Nats-Expected-Last-Subject-Sequence``; nats-py's ``KeyWrongLastSequenceError`` never leaks).

`commit(writes)` stores several keys all-or-nothing with JetStream atomic batch publishing
(ADR-50, nats-server 2.12+): every write carries its expected revision, the server checks all
of them under one lock at commit, and either every message is stored or none is. The bucket is
created with ``allow_atomic`` (and ``allow_direct`` for fast reads); `open()` turns both on for a
bucket someone else created.

The bucket handle is re-obtained on demand: when the server lost the bucket (a restart
without its store), the next call re-creates it (when ``create=True``) and retries once;
while NATS is away calls raise `UnavailableError` and succeed again after reconnect.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import json
import logging
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import nats.errors
import nats.js.errors
from nats.aio.subscription import Subscription
from nats.js import api
from nats.js.kv import KeyValue

from .connection import BusConnection
from .errors import BadRequestError, BusError, ConflictError, NotFoundError, NotReadyError, UnavailableError
from .subjects import Subjects

log = logging.getLogger(__name__)

T = TypeVar("T")

KV_OPERATION_HEADER = "KV-Operation"
_EXPECTED_LAST_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"
_BATCH_ID = "Nats-Batch-Id"
_BATCH_SEQUENCE = "Nats-Batch-Sequence"
_BATCH_COMMIT = "Nats-Batch-Commit"
MAX_BATCH = 1000  # the server's limit per atomic batch (ADR-50)

# JetStream API error codes we act on.
_WRONG_LAST_SEQUENCE = (10071, 10164)
_STREAM_NOT_FOUND = 10059
_NO_MESSAGE_FOUND = 10037


class KvOperation(enum.Enum):
    PUT = "put"
    DELETE = "delete"
    PURGE = "purge"


@dataclass(frozen=True, slots=True)
class KvEntry:
    """One message of a key: a value, or a delete/purge marker (``value`` is None then)."""

    key: str
    revision: int
    value: bytes | None
    operation: KvOperation = KvOperation.PUT
    created: dt.datetime | None = None

    @property
    def deleted(self) -> bool:
        return self.operation is not KvOperation.PUT


@dataclass(frozen=True, slots=True)
class KvWrite:
    """One write of an atomic commit. ``value=None`` deletes the key (a delete marker).

    ``last``: the revision the write was based on. None = unconditional; 0 = the key has never
    been written; for a deleted key, the revision of its delete marker.
    """

    key: str
    value: bytes | None
    last: int | None = None


@dataclass(frozen=True, slots=True)
class BucketConfig:
    name: str
    history: int = 64
    description: str = ""
    max_value_size: int | None = None
    max_age: float | None = None
    """Seconds a value is kept after it was last written (None: forever); for short-lived counters."""
    replicas: int = field(default_factory=lambda: default_replicas())
    """Copies JetStream keeps (on a cluster: 3 survives the loss of one server). Default
    ``$MESHBUS_KV_REPLICAS`` (``meshctl up --nats-cluster 3`` sets it), else 1."""


ENV_REPLICAS = "MESHBUS_KV_REPLICAS"


def default_replicas() -> int:
    try:
        return max(1, min(5, int(os.environ.get(ENV_REPLICAS, "1"))))  # JetStream allows at most 5
    except ValueError:
        return 1


_STALE_FIRST_PAUSE = 0.05
_STALE_PATIENCE = 15.0
"""Seconds a whole-bucket read waits for a catching-up copy before it gives up."""


class BucketMissingError(NotReadyError):
    """The bucket does not exist (yet, or any more)."""


def _op_of(headers: dict[str, str] | None) -> KvOperation:
    op = (headers or {}).get(KV_OPERATION_HEADER)
    if op == "DEL":
        return KvOperation.DELETE
    if op == "PURGE":
        return KvOperation.PURGE
    return KvOperation.PUT


class KeyValueStore:
    """One JetStream KV bucket with typed results and errors."""

    def __init__(self, bus: BusConnection, config: BucketConfig, *, create: bool = True) -> None:
        self.bus = bus
        self.config = config
        self.may_create = create
        self._kv: KeyValue | None = None
        self._direct = False
        self._open_lock = asyncio.Lock()
        self.stale_reads = 0
        """Whole-bucket reads answered from a copy behind the stream leader (read again)."""

    @property
    def stream(self) -> str:
        return Subjects.kv_stream(self.config.name)

    def _subject(self, key: str) -> str:
        return Subjects.kv_key_subject(self.config.name, key)

    @property
    def is_open(self) -> bool:
        return self._kv is not None

    # -- bucket lifecycle
    async def open(self) -> None:
        """Bind to the bucket, creating it (or enabling atomic/direct on it) when allowed."""
        async with self._open_lock:
            try:
                await self._open()
            except BusError:
                raise
            except (nats.errors.Error, TimeoutError) as exc:  # JetStream electing leaders, NATS away
                raise self._map_error(exc) from exc

    async def _open(self) -> None:
        js = self.bus.nc.jetstream()
        try:
            info = await js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            if not self.may_create:
                raise BucketMissingError(f"KV bucket {self.config.name!r} does not exist") from None
            info = await js.add_stream(self._stream_config())
            log.info(
                "created KV bucket %s (history %d, %d replica(s))",
                self.config.name,
                self.config.history,
                self.config.replicas,
            )
        else:
            cfg = info.config
            fewer = (cfg.num_replicas or 1) < self.config.replicas
            if self.may_create and (not cfg.allow_atomic or not cfg.allow_direct or fewer):
                cfg.allow_atomic = True
                cfg.allow_direct = True
                cfg.num_replicas = max(cfg.num_replicas or 1, self.config.replicas)
                info = await js.update_stream(cfg)
                log.info("KV bucket %s: atomic batches, %d replica(s)", self.config.name, cfg.num_replicas)
        self._direct = bool(info.config.allow_direct)
        self._kv = await js.key_value(self.config.name)

    def _stream_config(self) -> api.StreamConfig:
        # The same stream nats-py's create_key_value builds, plus atomic batches and direct gets.
        return api.StreamConfig(
            name=self.stream,
            description=self.config.description or None,
            subjects=[self._subject(">")],
            allow_direct=True,
            allow_rollup_hdrs=True,
            allow_atomic=True,
            deny_delete=True,
            discard=api.DiscardPolicy.NEW,
            duplicate_window=120.0,
            max_consumers=-1,
            max_msgs=-1,
            max_msg_size=self.config.max_value_size,
            max_msgs_per_subject=self.config.history,
            max_age=self.config.max_age,
            num_replicas=self.config.replicas,
        )

    async def _handle(self) -> KeyValue:
        if self._kv is None:
            await self.open()
        if self._kv is None:  # open() either sets it or raises
            raise BucketMissingError(f"KV bucket {self.config.name!r} is not open")
        return self._kv

    async def _call(self, op: Callable[[KeyValue], Awaitable[T]]) -> T:
        """Run ``op`` with typed errors; re-obtain the bucket and retry once if it vanished."""
        for attempt in (0, 1):
            try:
                return await op(await self._handle())
            except BucketMissingError:
                self._kv = None
                if attempt or not self.may_create:
                    raise
                log.warning("KV bucket %s is gone; re-creating it", self.config.name)
            except BusError:
                raise
            except Exception as exc:
                mapped = self._map_error(exc)
                if isinstance(mapped, BucketMissingError):
                    self._kv = None
                    if attempt == 0 and self.may_create:
                        log.warning("KV bucket %s is gone; re-creating it", self.config.name)
                        continue
                raise mapped from exc
        raise BucketMissingError(f"KV bucket {self.config.name!r} is not available")  # pragma: no cover

    def _map_error(self, exc: Exception) -> BusError:
        name = self.config.name
        if isinstance(exc, nats.js.errors.KeyWrongLastSequenceError):
            return ConflictError(f"{name}: {exc.description}")
        if isinstance(exc, nats.js.errors.APIError):
            if exc.err_code in _WRONG_LAST_SEQUENCE:
                return ConflictError(f"{name}: {exc.description}")
            if exc.err_code == _STREAM_NOT_FOUND or isinstance(exc, nats.js.errors.BucketNotFoundError):
                return BucketMissingError(f"KV bucket {name!r} does not exist")
            if isinstance(exc, nats.js.errors.ServiceUnavailableError):
                return UnavailableError(f"JetStream unavailable for bucket {name!r}")
            return UnavailableError(f"JetStream error on bucket {name!r}: {exc.description or exc!r}")
        if isinstance(exc, nats.errors.NoRespondersError):
            # Nothing stores $KV.<bucket>.>: the stream is gone (or JetStream is down).
            return BucketMissingError(f"KV bucket {name!r} does not exist")
        if isinstance(exc, (nats.errors.TimeoutError, TimeoutError)):
            return UnavailableError(f"timed out talking to JetStream (bucket {name!r})")
        if isinstance(exc, (nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError)):
            return UnavailableError(f"NATS connection unavailable (bucket {name!r})")
        if isinstance(exc, nats.errors.Error):
            return UnavailableError(f"NATS error on bucket {name!r}: {exc!r}")
        raise exc

    # -- reads
    async def latest(self, key: str) -> KvEntry | None:
        """The key's latest message, delete markers included; None if it was never written."""

        async def op(kv: KeyValue) -> KvEntry | None:
            js = self.bus.nc.jetstream()
            try:
                msg = await js.get_msg(self.stream, subject=self._subject(key), direct=self._direct)
            except nats.js.errors.NotFoundError as exc:
                if getattr(exc, "err_code", None) == _STREAM_NOT_FOUND:
                    raise
                return None
            return KvEntry(key, int(msg.seq or 0), msg.data, _op_of(msg.headers), msg.time)

        entry = await self._call(op)
        if entry is not None and entry.deleted:
            return KvEntry(entry.key, entry.revision, None, entry.operation, entry.created)
        return entry

    async def get(self, key: str) -> KvEntry | None:
        """The key's current value, or None when it is absent or deleted."""
        entry = await self.latest(key)
        return None if entry is None or entry.deleted else entry

    async def at(self, key: str, revision: int) -> KvEntry:
        """The message of ``key`` stored at ``revision`` (NotFoundError if it is not one of its)."""

        async def op(kv: KeyValue) -> KvEntry:
            js = self.bus.nc.jetstream()
            try:
                msg = await js.get_msg(self.stream, seq=revision, direct=self._direct)
            except nats.js.errors.NotFoundError as exc:
                if getattr(exc, "err_code", None) == _STREAM_NOT_FOUND:
                    raise
                raise NotFoundError(f"revision {revision} of {key} is not in the bucket") from None
            if msg.subject != self._subject(key):
                raise NotFoundError(f"revision {revision} is not a revision of {key}")
            op_ = _op_of(msg.headers)
            value = None if op_ is not KvOperation.PUT else msg.data
            return KvEntry(key, int(msg.seq or 0), value, op_, msg.time)

        return await self._call(op)

    async def history(self, key: str) -> list[KvEntry]:
        """Every message the bucket still holds for ``key``, oldest first (empty if none)."""
        return await self._scan(key, include_history=True, include_deleted=True)

    async def scan(self, pattern: str = ">", *, include_deleted: bool = False) -> list[KvEntry]:
        """The latest message of every key matching ``pattern`` (a subject filter over keys)."""
        return await self._scan(pattern, include_history=False, include_deleted=include_deleted)

    async def _scan(self, pattern: str, *, include_history: bool, include_deleted: bool) -> list[KvEntry]:
        # Not nats-py's KeyValue.watch: its "initial values done" marker can come before
        # values the server already sent (it compares the server's pending count with what the
        # client has processed so far), so a read could miss keys. Here the stream tells how
        # many keys match, and reading stops at the message the server marks as the last one.
        #
        # On a cluster the ephemeral consumer reads one replica's copy, which may be a node that
        # just restarted and is still catching up: its "latest" values are old ones. A whole-bucket
        # read is checked against the stream leader's last sequence (the newest message is the
        # latest of its key, so a current copy delivers it) and read again until the copy caught
        # up; config applies plan on this read, and a stale one answered "unchanged" to a real
        # change under chaos. A narrower pattern cannot be checked this way (its newest message
        # need not be the stream's): such reads are as fresh as the replica that serves them.
        fenced = pattern == ">"
        delay = _STALE_FIRST_PAUSE
        deadline = asyncio.get_running_loop().time() + _STALE_PATIENCE

        async def op(kv: KeyValue) -> tuple[list[KvEntry], int]:
            js = self.bus.nc.jetstream()
            prefix = self._subject("")
            info = await js.stream_info(self.stream, subjects_filter=prefix + pattern)
            if not info.state.subjects:
                return [], 0
            policy = api.DeliverPolicy.ALL if include_history else api.DeliverPolicy.LAST_PER_SUBJECT
            sub = await js.subscribe(
                prefix + pattern,
                stream=self.stream,
                ordered_consumer=True,
                deliver_policy=policy,
                inactive_threshold=30.0,
            )
            out: list[KvEntry] = []
            try:
                while True:
                    msg = await sub.next_msg(timeout=5.0)
                    meta = msg.metadata
                    op_ = _op_of(msg.headers)
                    value = msg.data if op_ is KvOperation.PUT else None
                    out.append(
                        KvEntry(msg.subject[len(prefix) :], meta.sequence.stream, value, op_, meta.timestamp)
                    )
                    if meta.num_pending == 0:
                        break
            finally:
                await _unsubscribe(sub)
            return out, int(info.state.last_seq)

        while True:
            out, leader_last = await self._call(op)
            newest = max((e.revision for e in out), default=0)
            if not fenced or newest >= leader_last:
                return [e for e in out if include_deleted or not e.deleted]
            if asyncio.get_running_loop().time() >= deadline:
                raise UnavailableError(
                    f"KV bucket {self.config.name!r}: the copy that answered is behind the stream "
                    f"(revision {newest} of {leader_last}; a NATS node is catching up): try again"
                )
            self.stale_reads += 1
            log.info(
                "KV bucket %s: read a stale copy (revision %d of %d); reading again",
                self.config.name,
                newest,
                leader_last,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    async def last_revision(self) -> int:
        """The bucket's newest revision (its stream's last sequence): a watcher that has seen less for
        long has lost its consumer (see ``watch``)."""

        async def op(kv: KeyValue) -> int:
            info = await self.bus.nc.jetstream().stream_info(self.stream)
            return int(info.state.last_seq)

        return await self._call(op)

    async def watch(
        self, pattern: str = ">", *, include_history: bool = False
    ) -> AsyncIterator[KvEntry | None]:
        """Every current value (delete markers included), then ``None`` (initial state delivered),
        then every change as it happens. Does not re-subscribe by itself: on UnavailableError
        (NATS away) call it again; the ordered consumer survives plain reconnects."""
        await self._handle()
        js = self.bus.nc.jetstream()
        prefix = self._subject("")
        try:
            info = await js.stream_info(self.stream, subjects_filter=prefix + pattern)
            policy = api.DeliverPolicy.ALL if include_history else api.DeliverPolicy.LAST_PER_SUBJECT
            sub = await js.subscribe(
                prefix + pattern, stream=self.stream, ordered_consumer=True, deliver_policy=policy
            )
        except Exception as exc:
            raise self._map_error(exc) from exc
        initial_done = not info.state.subjects
        try:
            if initial_done:
                yield None
            while True:
                try:
                    msg = await sub.next_msg(timeout=None)
                except Exception as exc:
                    raise self._map_error(exc) from exc
                meta = msg.metadata
                op_ = _op_of(msg.headers)
                value = msg.data if op_ is KvOperation.PUT else None
                yield KvEntry(msg.subject[len(prefix) :], meta.sequence.stream, value, op_, meta.timestamp)
                if not initial_done and meta.num_pending == 0:
                    initial_done = True
                    yield None
        finally:
            await _unsubscribe(sub)

    # -- writes
    async def put(self, key: str, value: bytes) -> int:
        return await self._publish(key, value, None, {})

    async def create(self, key: str, value: bytes) -> int:
        """Write ``key`` only if it was never written (a deleted key counts as written: use update)."""
        return await self._publish(key, value, 0, {})

    async def update(self, key: str, value: bytes, last: int) -> int:
        return await self._publish(key, value, last, {})

    async def delete(self, key: str, last: int | None = None) -> int:
        """Place a delete marker (history is kept); returns the marker's revision."""
        return await self._publish(key, b"", last, {KV_OPERATION_HEADER: "DEL"})

    async def _publish(self, key: str, value: bytes, last: int | None, headers: dict[str, str]) -> int:
        hdrs = dict(headers)
        if last is not None:
            hdrs[_EXPECTED_LAST_SUBJECT_SEQ] = str(last)

        async def op(kv: KeyValue) -> int:
            ack = await self.bus.nc.jetstream().publish(self._subject(key), value, headers=hdrs or None)
            return int(ack.seq)

        return await self._call(op)

    async def commit(self, writes: Sequence[KvWrite], *, timeout: float = 5.0) -> list[int]:
        """Store every write or none (one atomic batch); returns each write's new revision.

        Raises ConflictError when any ``last`` no longer matches; nothing is stored then.
        """
        if not writes:
            return []
        if len(writes) > MAX_BATCH:
            raise BadRequestError(f"at most {MAX_BATCH} keys can be written at once, got {len(writes)}")
        if len({w.key for w in writes}) != len(writes):
            raise BadRequestError("a commit may write each key only once")
        if len(writes) == 1:
            w = writes[0]
            if w.value is None:
                return [await self.delete(w.key, w.last)]
            return [await self._publish(w.key, w.value, w.last, {})]

        async def op(kv: KeyValue) -> list[int]:
            return await self._batch(writes, timeout)

        return await self._call(op)

    async def _batch(self, writes: Sequence[KvWrite], timeout: float) -> list[int]:
        nc = self.bus.nc
        batch_id = uuid.uuid4().hex
        n = len(writes)
        for i, w in enumerate(writes, 1):
            hdrs = {_BATCH_ID: batch_id, _BATCH_SEQUENCE: str(i)}
            if w.value is None:
                hdrs[KV_OPERATION_HEADER] = "DEL"
            if w.last is not None:
                hdrs[_EXPECTED_LAST_SUBJECT_SEQ] = str(w.last)
            if i == n:
                hdrs[_BATCH_COMMIT] = "1"
            subject, payload = self._subject(w.key), w.value or b""
            if i == 1 or i == n:
                # The first message is a request so a stream without atomic batches fails fast.
                reply = await nc.request(subject, payload, timeout=timeout, headers=hdrs)
                ack = _pub_ack(reply.data)
                if i == n:
                    last_seq = int(ack.get("seq", 0))
                    return [last_seq - n + k for k in range(1, n + 1)]
            else:
                await nc.publish(subject, payload, headers=hdrs)
        raise BadRequestError("empty batch")  # pragma: no cover - n >= 2 returns above


async def _unsubscribe(sub: Subscription) -> None:
    try:
        await sub.unsubscribe()
    except Exception as exc:  # the connection may be gone already; nothing to clean up then
        log.debug("could not unsubscribe a KV reader: %r", exc)


def _pub_ack(data: bytes) -> dict[str, Any]:
    if not data:
        return {}
    resp: dict[str, Any] = json.loads(data)
    err = resp.get("error")
    if err:
        raise nats.js.errors.APIError.from_error(err)
    return resp


def _entry(raw: KeyValue.Entry) -> KvEntry:
    op = KvOperation.PUT
    if raw.operation == "DEL":
        op = KvOperation.DELETE
    elif raw.operation == "PURGE":
        op = KvOperation.PURGE
    created = raw.created if isinstance(raw.created, dt.datetime) else None
    value = raw.value if op is KvOperation.PUT else None
    return KvEntry(raw.key, int(raw.revision or 0), value, op, created)


async def when_available(open_: Callable[[], Awaitable[None]], what: str, log: logging.Logger) -> None:
    """Run ``open_`` until JetStream answers it (starting, or electing leaders after a node died): a
    component that exited instead is restarted with a growing backoff and stays away for long (found
    by tests/chaos). JetStream announces no recovery, so this polls with a capped backoff."""
    attempt = 0
    while True:
        try:
            await open_()
            return
        except (UnavailableError, NotReadyError) as exc:
            if attempt == 0:
                log.warning("%s not available yet (%s); retrying", what, exc)
            await asyncio.sleep(min(2.0, 0.05 * 2**attempt))
            attempt = min(attempt + 1, 16)
