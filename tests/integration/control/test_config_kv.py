"""meshbus.bus.kv against a real nats-server: revisions, conflicts, atomic commits, re-obtained handles."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from meshbus.bus import BusConnection, BusSettings, rpc
from meshbus.bus.errors import ConflictError, NotFoundError, NotReadyError
from meshbus.bus.kv import BucketConfig, BucketMissingError, KeyValueStore, KvOperation, KvWrite
from meshbus.bus.schemas.config import ListReply, ListRequest
from meshbus.control.config.service import ConfigService
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
