"""meshbus.bus.kv against a real nats-server: revisions, conflicts, atomic commits, re-obtained handles."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from meshbus.bus import BusConnection, BusSettings, rpc
from meshbus.bus.errors import ConflictError, NotFoundError, NotReadyError, UnavailableError
from meshbus.bus.kv import BucketConfig, BucketMissingError, KeyValueStore, KvOperation, KvWrite
from meshbus.bus.schemas.config import ListReply, ListRequest
from meshbus.control.config.service import ConfigService
from tests.support.bounded import eventually
from tests.support.nats_server import start_server

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def kv(bus: BusConnection) -> AsyncIterator[KeyValueStore]:
    store = KeyValueStore(bus, BucketConfig(bus.subjects.kv_bucket("kvtest"), history=8))
    await store.open()
    yield store


async def test_revisions_conflicts_and_history(kv: KeyValueStore) -> None:
    r1 = await kv.create("a", b"1")
    with pytest.raises(ConflictError):
        await kv.create("a", b"again")
    r2 = await kv.update("a", b"2", last=r1)
    with pytest.raises(ConflictError):
        await kv.update("a", b"3", last=r1)
    entry = await kv.get("a")
    assert entry is not None and (entry.revision, entry.value) == (r2, b"2")
    d = await kv.delete("a", last=r2)
    assert await kv.get("a") is None
    latest = await kv.latest("a")
    assert latest is not None and latest.revision == d and latest.operation is KvOperation.DELETE
    assert [(e.revision, e.operation) for e in await kv.history("a")] == [
        (r1, KvOperation.PUT),
        (r2, KvOperation.PUT),
        (d, KvOperation.DELETE),
    ]
    assert (await kv.at("a", r1)).value == b"1"
    other = await kv.put("b", b"x")
    with pytest.raises(NotFoundError):
        await kv.at("a", other)
    assert await kv.latest("never") is None and await kv.history("never") == []


async def test_commit_is_all_or_nothing(kv: KeyValueStore) -> None:
    ra = await kv.put("a", b"a1")
    rb = await kv.put("b", b"b1")
    revs = await kv.commit([KvWrite("a", b"a2", ra), KvWrite("b", None, rb), KvWrite("c", b"c1", 0)])
    assert revs == sorted(revs) and len(set(revs)) == 3
    assert [(e.key, e.value) for e in await kv.scan()] == [("a", b"a2"), ("c", b"c1")]
    before = {e.key: e.revision for e in await kv.scan(include_deleted=True)}

    # The second write is based on a stale revision: the whole batch is refused, nothing stored.
    with pytest.raises(ConflictError):
        await kv.commit([KvWrite("a", b"a3", revs[0]), KvWrite("c", b"c2", 1), KvWrite("d", b"d1", 0)])
    assert {e.key: e.revision for e in await kv.scan(include_deleted=True)} == before
    assert await kv.get("d") is None


async def test_open_enables_atomic_batches_on_a_foreign_bucket(bus: BusConnection) -> None:
    name = bus.subjects.kv_bucket("foreign")
    await bus.nc.jetstream().create_key_value(bucket=name, history=64)  # as another component might
    with pytest.raises(BucketMissingError):
        await KeyValueStore(bus, BucketConfig("nothere"), create=False).open()
    store = KeyValueStore(bus, BucketConfig(name))
    await store.open()
    assert len(await store.commit([KvWrite("x", b"1", 0), KvWrite("y", b"2", 0)])) == 2


async def test_watch_replays_then_follows(kv: KeyValueStore) -> None:
    await kv.put("a", b"1")
    stream = kv.watch()
    first = await anext(stream)
    assert first is not None and first.key == "a"
    assert await anext(stream) is None  # initial state delivered
    await kv.put("b", b"2")
    nxt = await anext(stream)
    assert nxt is not None and (nxt.key, nxt.value) == ("b", b"2")
    await stream.aclose()


async def test_service_is_not_ready_without_jetstream(subject_root: str) -> None:
    server = start_server(jetstream=False)
    try:
        conn = BusConnection(BusSettings(url=server.url, name="t", root=subject_root))
        await conn.connect()
        try:
            async with ConfigService(conn) as svc:
                with pytest.raises(NotReadyError):
                    await rpc.request(conn, conn.subjects.config("list"), ListRequest(), ListReply)
                assert not svc.service.ready
        finally:
            await conn.close()
    finally:
        server.cleanup()


async def _bucket_with_a_missing_newest_message(bus: BusConnection, name: str) -> KeyValueStore:
    """A bucket whose stream's last sequence is a message no read can deliver: what a whole-bucket
    read sees when the copy that answers is a NATS node still catching up (a cluster can show that only
    by racing a restart; here the newest message is removed, which a KV stream normally refuses)."""
    js = bus.nc.jetstream()
    bucket = bus.subjects.kv_bucket(name)
    store = KeyValueStore(bus, BucketConfig(bucket, history=8))
    cfg = store._stream_config()
    cfg.deny_delete = False  # set at creation only: JetStream refuses to lift it later
    await js.add_stream(cfg)
    await store.open()
    await store.put("a", b"1")
    newest = await store.put("b", b"2")
    await js.delete_msg(store.stream, newest)
    return store


async def test_a_whole_bucket_read_from_a_copy_behind_the_stream_is_refused(
    bus: BusConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A config apply plans on this read: a stale one answered "unchanged" to a real change.
    import meshbus.bus.kv as kv_module

    monkeypatch.setattr(kv_module, "_STALE_PATIENCE", 0.3)
    store = await _bucket_with_a_missing_newest_message(bus, "stale")
    with pytest.raises(UnavailableError, match="behind the stream"):
        await store.scan()
    assert store.stale_reads >= 1
    # A narrower pattern is not fenced (its newest message need not be the stream's).
    assert [e.key for e in await store.scan("a")] == ["a"]


async def test_a_stale_whole_bucket_read_is_read_again_until_the_copy_caught_up(bus: BusConnection) -> None:
    store = await _bucket_with_a_missing_newest_message(bus, "catchup")
    read = asyncio.create_task(store.scan())

    async def retried() -> bool:
        return store.stale_reads >= 1

    await eventually("a stale read noticed", retried)
    rev = await store.put("c", b"3")  # the copy now holds the stream's newest message
    entries = await asyncio.wait_for(read, 10)
    assert [(e.key, e.revision) for e in entries][-1] == ("c", rev)
