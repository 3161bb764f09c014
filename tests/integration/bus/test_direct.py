"""meshbus.bus.direct and meshbus.bus.inline on a real nats-server, with the installed nats-py: a publish written at once
(and not when something is queued ahead of it), a subscription served in the read loop, and a
nats.micro endpoint served there and still counted. These pin the nats-py internals the module
reads: an upgrade that changes them fails here. Each test publishes to itself on one connection
(through the server): messages between two connections made just before were sometimes not
delivered on this machine, with nats-py's own subscriptions too."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from nats.aio.msg import Msg
from nats.micro import add_service
from nats.micro.request import Request as MicroRequest
from nats.micro.service import EndpointConfig, ServiceConfig

from meshbus.bus import direct, read_end
from meshbus.bus.connection import BusConnection, BusSettings
from meshbus.bus.direct import header_block, write_now, wrote_directly
from meshbus.bus.embedded import EmbeddedNats
from meshbus.bus.inline import add_inline_endpoint, read_inline, reads_inline, subscribe_inline

pytestmark = [pytest.mark.integration, pytest.mark.timeout(20)]

HEADERS = {"Meshbus-Schema": "meshbus.test.v1.Ping"}
BLOCK = header_block(HEADERS)


async def listening(bus: BusConnection, subject: str) -> asyncio.Queue[Msg]:
    """What ``bus`` receives on ``subject`` (through nats-server), once the connection is idle."""
    got: asyncio.Queue[Msg] = asyncio.Queue()
    await bus.nc.subscribe(subject, cb=got.put)
    await bus.nc.flush()
    return got


async def test_a_publish_is_written_at_once_with_its_headers_and_reply(
    bus: BusConnection, subject_root: str
) -> None:
    got = await listening(bus, f"{subject_root}.direct")
    assert wrote_directly(bus.nc)
    flushes = bus.nc._flush_queue.qsize()  # type: ignore[union-attr]
    assert write_now(bus.nc, f"{subject_root}.direct", b"one", f"{subject_root}.reply.1", BLOCK)
    assert bus.nc._flush_queue.qsize() == flushes  # type: ignore[union-attr]  # the flusher was not woken
    assert bus.nc._pending_data_size == 0
    msg = await asyncio.wait_for(got.get(), 5)
    assert (msg.data, msg.reply, msg.headers) == (b"one", f"{subject_root}.reply.1", HEADERS)
    assert write_now(bus.nc, f"{subject_root}.direct", b"", "", BLOCK)  # no reply subject
    msg = await asyncio.wait_for(got.get(), 5)
    assert (msg.data, msg.reply, msg.headers) == (b"", "", HEADERS)


async def test_a_message_without_headers_goes_as_a_plain_pub(bus: BusConnection, subject_root: str) -> None:
    got = await listening(bus, f"{subject_root}.plain")
    assert write_now(bus.nc, f"{subject_root}.plain", b"one", f"{subject_root}.reply.1", b"")
    assert write_now(bus.nc, f"{subject_root}.plain", b"two", "", b"")  # as the turn ends
    one, two = await asyncio.wait_for(got.get(), 5), await asyncio.wait_for(got.get(), 5)
    assert (one.data, one.reply, one.headers) == (b"one", f"{subject_root}.reply.1", None)
    assert (two.data, two.reply, two.headers) == (b"two", "", None)


async def test_a_quiet_connection_writes_at_once_a_busy_one_once_a_turn_before_what_nats_py_queued(
    bus: BusConnection, subject_root: str
) -> None:
    subject = f"{subject_root}.turn"
    got = await listening(bus, subject)
    writer = bus.nc._transport._io_writer  # type: ignore[union-attr]
    writes: list[bytes] = []
    real = writer.write

    def counted(data: bytes) -> None:
        writes.append(data)
        real(data)

    async def received(*data: bytes) -> None:
        assert [(await asyncio.wait_for(got.get(), 5)).data for _ in data] == list(data)

    writer.write = counted
    try:
        assert write_now(bus.nc, subject, b"1", "", BLOCK)
        assert len(writes) == 1  # quiet: at once
        assert write_now(bus.nc, subject, b"2", "", BLOCK)  # same turn of the loop: as it ends
        assert len(writes) == 1
        await bus.nc.publish(subject, b"3", headers=HEADERS)  # queued in nats-py after "2"
        assert not write_now(bus.nc, subject, b"4", "", BLOCK)  # would overtake "3"
        await bus.nc.publish(subject, b"4", headers=HEADERS)  # the caller's fallback
        await received(b"1", b"2", b"3", b"4")
        assert len(writes) == 2
        # Two in the last turn: busy, so this turn's go together as it ends (one write).
        assert write_now(bus.nc, subject, b"5", "", BLOCK) and write_now(bus.nc, subject, b"6", "", BLOCK)
        assert len(writes) == 2
        await received(b"5", b"6")
        assert len(writes) == 3 and writes[2].count(b"HPUB") == 2
        assert write_now(bus.nc, subject, b"7", "", BLOCK)  # still busy: as the turn ends
        assert len(writes) == 3
        await received(b"7")
        assert write_now(bus.nc, subject, b"8", "", BLOCK)  # one in the last turn: quiet again
        assert len(writes) == 5
        await received(b"8")
    finally:
        writer.write = real
    assert wrote_directly(bus.nc)


async def test_a_publish_queued_ahead_keeps_its_place(bus: BusConnection, subject_root: str) -> None:
    got = await listening(bus, f"{subject_root}.order")
    queued = f"PUB {subject_root}.order 5\r\nfirst\r\n".encode()
    bus.nc._pending.append(queued)  # as nats-py's publish leaves it for its flusher
    bus.nc._pending_data_size += len(queued)
    assert not wrote_directly(bus.nc)
    assert not write_now(bus.nc, f"{subject_root}.order", b"second", "", BLOCK)
    await bus.nc.publish(f"{subject_root}.order", b"second", headers=HEADERS)  # the caller's fallback
    first, second = (await asyncio.wait_for(got.get(), 5)), (await asyncio.wait_for(got.get(), 5))
    assert (first.data, second.data, second.headers) == (b"first", b"second", HEADERS)


async def test_a_closed_connection_is_not_written_to(nats_server: EmbeddedNats) -> None:
    conn = BusConnection(BusSettings(url=nats_server.url, name="closing"))
    await conn.connect()
    await conn.close()
    assert not write_now(conn.nc, "x", b"", "", BLOCK)


async def test_an_inline_subscription_is_served_by_the_read_loop_and_survives_a_raising_handler(
    bus: BusConnection, subject_root: str, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[bytes] = []
    done = asyncio.Event()

    def on_msg(msg: Msg) -> None:
        if msg.data == b"boom":
            raise ValueError("boom")
        seen.append(msg.data)
        if len(seen) == 2:
            done.set()

    sub = await subscribe_inline(bus.nc, f"{subject_root}.inline.*", on_msg)
    await bus.nc.flush()
    assert sub._wait_for_msgs_task is None  # no task of its own: nothing but the read loop calls on_msg
    with caplog.at_level(logging.ERROR, logger="meshbus.bus.inline"):
        for data in (b"a", b"boom", b"b"):
            await bus.nc.publish(f"{subject_root}.inline.x", data)
        await asyncio.wait_for(done.wait(), 5)
    assert seen == [b"a", b"b"]
    assert "boom" in caplog.text
    assert sub.pending_bytes == 0 and sub.pending_msgs == 0
    await sub.drain()  # drain waits for the (always empty) queue
    await bus.nc.publish(f"{subject_root}.inline.x", b"late")
    await bus.nc.flush()
    assert seen == [b"a", b"b"]


async def test_an_inline_micro_endpoint_answers_and_is_counted(bus: BusConnection, subject_root: str) -> None:
    async def handler(req: MicroRequest) -> None:  # what arrives before the hand-over
        await req.respond(req.data.upper())

    def on_msg(msg: Msg) -> None:
        assert write_now(bus.nc, msg.reply, msg.data.upper(), "", BLOCK)

    svc = await add_service(bus.nc, ServiceConfig(name="meshbus-direct-test", version="0.0.1"))
    subject = f"{subject_root}.upper"
    await add_inline_endpoint(svc, EndpointConfig(name="upper", subject=subject, handler=handler), on_msg)
    await bus.nc.flush()
    reply = await bus.nc.request(subject, b"abc", timeout=5)
    assert (reply.data, reply.headers) == (b"ABC", HEADERS)
    stats = json.loads(
        (await bus.nc.request(f"$SRV.STATS.meshbus-direct-test.{svc.id}", b"", timeout=5)).data
    )
    (upper,) = (e for e in stats["endpoints"] if e["name"] == "upper")
    assert upper["num_requests"] == 1 and upper["processing_time"] > 0
    await svc.stop()


async def test_read_inline_parses_in_the_read_callback_in_order_and_after_a_parse_that_waits(
    bus: BusConnection, subject_root: str
) -> None:
    """Messages reach an inline subscription from the transport's read callback (no task), in
    order, big ones split across reads included; a parse that has to wait (nats-py awaited
    something) holds what arrives meanwhile and hands it over after, in order."""
    assert read_inline(bus.nc) and reads_inline(bus.nc)
    seen: list[tuple[bytes, asyncio.Task[object] | None]] = []
    done = asyncio.Event()
    n = 200
    payloads = [str(i).encode() * (1 + (i % 7) * 3000) for i in range(n)]

    def on_msg(msg: Msg) -> None:
        seen.append((msg.data, asyncio.current_task()))
        if len(seen) == n:
            done.set()

    await subscribe_inline(bus.nc, f"{subject_root}.order", on_msg)
    plain = await listening(bus, f"{subject_root}.plain")  # a nats-py subscription still gets its own
    await bus.nc.flush()
    release = asyncio.get_running_loop().create_future()
    original = bus.nc._process_msg
    waited: list[bytes] = []

    async def process_msg(sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes) -> None:
        if data == payloads[10] and not waited:
            waited.append(data)
            await release  # the 11th message's parse waits until more was read
        await original(sid, subject, reply, data, headers)

    bus.nc._process_msg = process_msg  # type: ignore[method-assign]
    reader = bus.nc._transport._io_reader  # type: ignore[union-attr]
    feed = reader.feed_data
    held = asyncio.Event()

    def feed_data(data: bytes) -> None:  # says when bytes were read while the 11th waits
        feed(data)
        if feed.backlog:
            held.set()

    reader.feed_data = feed_data
    for data in payloads:
        await bus.nc.publish(f"{subject_root}.order", data)
    await bus.nc.publish(f"{subject_root}.plain", b"plain")
    await asyncio.wait_for(held.wait(), 10)
    assert len(seen) == 10  # the rest waits behind the 11th
    release.set_result(None)
    await asyncio.wait_for(done.wait(), 10)
    assert [d for d, _ in seen] == payloads
    assert feed.backlog is None
    assert seen[0][1] is None  # the read callback, not nats-py's read loop task
    assert (await asyncio.wait_for(plain.get(), 5)).data == b"plain"


async def test_read_inline_is_put_back_on_the_new_reader_after_a_reconnect(
    private_nats: EmbeddedNats,
) -> None:
    conn = BusConnection(BusSettings(url=private_nats.url, name="inline", reconnect_max=0.2))
    await conn.connect()
    try:
        assert read_inline(conn.nc)
        old = conn.nc._transport._io_reader  # type: ignore[union-attr]
        private_nats.restart()
        await asyncio.wait_for(conn.wait_connected(), 10)
        while conn.nc._transport._io_reader is old:  # type: ignore[union-attr]
            await asyncio.wait_for(conn.wait_connected(), 10)
        assert not reads_inline(conn.nc)  # a new reader: messages go through nats-py meanwhile
        got: list[Msg] = []
        arrived = asyncio.Event()
        await subscribe_inline(conn.nc, "inline.again", lambda m: (got.append(m), arrived.set()))
        await conn.nc.flush()
        await conn.nc.publish("inline.again", b"via nats-py")
        await asyncio.wait_for(arrived.wait(), 5)
        assert read_inline(conn.nc) and reads_inline(conn.nc)
        arrived.clear()
        await conn.nc.publish("inline.again", b"inline")
        await asyncio.wait_for(arrived.wait(), 5)
        assert [m.data for m in got] == [b"via nats-py", b"inline"]
    finally:
        await conn.close()


async def test_read_inline_hands_plain_messages_to_inline_subscriptions_without_nats_py_parsing_them(
    bus: BusConnection, subject_root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An inline subscription's plain MSGs skip nats-py's per-message dispatch (``_process_msg``)
    and are counted as nats-py counts them; one with headers, and a plain subscription's, still go
    through nats-py. Fails if nats-py's parser or client change what read_inline reads."""
    through_nats_py: list[bytes] = []
    original = type(bus.nc)._process_msg

    async def process_msg(self: object, sid: int, subject: bytes, *rest: object) -> None:
        through_nats_py.append(subject)
        await original(self, sid, subject, *rest)  # type: ignore[arg-type]

    monkeypatch.setattr(type(bus.nc), "_process_msg", process_msg)
    assert read_inline(bus.nc)
    got: list[Msg] = []
    arrived = asyncio.Event()

    def on_msg(msg: Msg) -> None:
        got.append(msg)
        if len(got) == 3:
            arrived.set()

    sub = await subscribe_inline(bus.nc, f"{subject_root}.fast.*", on_msg)
    plain = await listening(bus, f"{subject_root}.plain")
    await bus.nc.flush()
    in_msgs, in_bytes = bus.nc.stats["in_msgs"], bus.nc.stats["in_bytes"]
    assert write_now(bus.nc, f"{subject_root}.fast.a", b"one", "reply.to", b"")
    await bus.nc.flush()
    assert write_now(bus.nc, f"{subject_root}.fast.b", b"two", "", BLOCK)
    await bus.nc.flush()
    assert write_now(bus.nc, f"{subject_root}.fast.c", b"", "", b"")
    await asyncio.wait_for(arrived.wait(), 5)
    assert [(m.subject, m.reply, m.data, m.headers) for m in got] == [
        (f"{subject_root}.fast.a", "reply.to", b"one", None),
        (f"{subject_root}.fast.b", "", b"two", HEADERS),
        (f"{subject_root}.fast.c", "", b"", None),
    ]
    assert through_nats_py == [f"{subject_root}.fast.b".encode()]
    assert bus.nc.stats["in_msgs"] == in_msgs + 3 and bus.nc.stats["in_bytes"] == in_bytes + 6
    assert sub._received == 3 and sub.pending_bytes == 0  # type: ignore[attr-defined]
    await bus.nc.publish(f"{subject_root}.plain", b"plain")
    assert (await asyncio.wait_for(plain.get(), 5)).data == b"plain"
    assert through_nats_py[-1] == f"{subject_root}.plain".encode()


async def test_on_raw_gets_plain_messages_as_bytes_without_a_msg_and_on_msg_the_rest(
    bus: BusConnection, subject_root: str, caplog: pytest.LogCaptureFixture
) -> None:
    """With ``on_raw``, a plain MSG read ahead of nats-py's parser reaches it as (subject, reply,
    payload) bytes and no nats-py Msg is made for it; one with headers still reaches ``on_msg``; a
    raising ``on_raw`` is logged and the next message is served."""
    made: list[object] = []
    msg_class = bus.nc.msg_class

    def counting(*args: object, **kw: object) -> object:
        made.append(args)
        return msg_class(*args, **kw)

    bus.nc.msg_class = counting  # type: ignore[assignment]  # read by read_inline's reader when made
    assert read_inline(bus.nc)
    raw: list[tuple[bytes, bytes, bytes]] = []
    msgs: list[Msg] = []
    done = asyncio.Event()

    def on_raw(subject: bytes, reply: bytes, payload: bytes) -> None:
        if payload == b"boom":
            raise ValueError("boom")
        raw.append((subject, reply, payload))
        if payload == b"last":
            done.set()

    sub = await subscribe_inline(bus.nc, f"{subject_root}.raw.*", msgs.append, on_raw=on_raw)
    await bus.nc.flush()
    with caplog.at_level(logging.ERROR, logger="meshbus.bus.inline"):
        assert write_now(bus.nc, f"{subject_root}.raw.a", b"one", "reply.to", b"")
        await bus.nc.flush()
        assert write_now(bus.nc, f"{subject_root}.raw.b", b"two", "", BLOCK)
        await bus.nc.flush()
        assert write_now(bus.nc, f"{subject_root}.raw.c", b"boom", "", b"")
        await bus.nc.flush()
        assert write_now(bus.nc, f"{subject_root}.raw.d", b"last", "", b"")
        await asyncio.wait_for(done.wait(), 5)
    assert raw == [
        (f"{subject_root}.raw.a".encode(), b"reply.to", b"one"),
        (f"{subject_root}.raw.d".encode(), b"", b"last"),
    ]
    assert [(m.subject, m.data, m.headers) for m in msgs] == [(f"{subject_root}.raw.b", b"two", HEADERS)]
    assert "boom" in caplog.text
    assert len(made) == 1  # the one with headers (nats-py's parser made it); the plain ones were never a Msg
    assert sub._received == 4 and sub.pending_bytes == 0  # type: ignore[attr-defined]


async def test_an_inline_micro_endpoint_answers_plain_calls_through_on_raw_and_counts_them(
    bus: BusConnection, subject_root: str
) -> None:
    async def handler(req: MicroRequest) -> None:  # what arrives before the hand-over
        await req.respond(req.data.upper())

    def on_msg(msg: Msg) -> None:
        raise AssertionError("a plain call goes to on_raw")

    def on_raw(subject: bytes, reply: bytes, payload: bytes) -> None:
        assert write_now(bus.nc, reply.decode(), payload.upper(), "", b"")

    svc = await add_service(bus.nc, ServiceConfig(name="meshbus-direct-raw", version="0.0.1"))
    subject = f"{subject_root}.upper-raw"
    config = EndpointConfig(name="upper", subject=subject, handler=handler)
    await add_inline_endpoint(svc, config, on_msg, on_raw)
    await bus.nc.flush()
    assert read_inline(bus.nc)
    for data in (b"abc", b"def"):  # plain PUBs: plain MSGs to the endpoint
        assert (await bus.nc.request(subject, data, timeout=5)).data == data.upper()
    stats = json.loads((await bus.nc.request(f"$SRV.STATS.meshbus-direct-raw.{svc.id}", b"", timeout=5)).data)
    (upper,) = (e for e in stats["endpoints"] if e["name"] == "upper")
    assert upper["num_requests"] == 2 and upper["processing_time"] > 0
    await svc.stop()


async def test_messages_written_while_an_inline_read_is_handled_end_their_turn_with_the_read(
    bus: BusConnection, subject_root: str
) -> None:
    """A reply written by an inline handler (a filter host's verdict) ends its turn as the read that
    brought the call is handled, not in a ``call_soon`` a pass later: a callback the handler
    scheduled before writing already finds the turn ended. The read's messages keep the policy: the
    first written at once, the rest together at the read's end, all in order."""
    nc = bus.nc
    writer = nc._transport._io_writer  # type: ignore[union-attr]
    writes: list[bytes] = []
    real = writer.write

    def counted(data: bytes) -> None:
        writes.append(data)
        real(data)

    got = await listening(bus, f"{subject_root}.answers")
    turn_open_after: list[bool] = []
    loop = asyncio.get_running_loop()

    def on_raw(subject: bytes, reply: bytes, payload: bytes) -> None:
        loop.call_soon(lambda: turn_open_after.append(direct._turns.get(id(nc)) is not None))
        for part in payload.split(b","):
            assert write_now(nc, f"{subject_root}.answers", part, "", b"")

    await subscribe_inline(nc, f"{subject_root}.calls", lambda msg: on_raw(b"", b"", msg.data), on_raw=on_raw)
    await nc.flush()
    assert read_inline(nc)
    writer.write = counted
    try:
        assert write_now(nc, f"{subject_root}.calls", b"a,b,c", "", b"")
        await asyncio.wait_for(got.get(), 5)  # "a": the call was read and answered
        assert [(await asyncio.wait_for(got.get(), 5)).data for _ in range(2)] == [b"b", b"c"]
    finally:
        writer.write = real
    assert turn_open_after == [False]
    # the call; then the read's answers: "a" at once, "b" and "c" in one write as the read ended
    assert len(writes) == 3 and writes[1].count(b"PUB") == 1 and writes[2].count(b"PUB") == 2


async def test_what_after_read_queues_runs_as_the_read_ends_after_its_messages_and_before_its_writes(
    bus: BusConnection, subject_root: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A read's queued callbacks (the proxy resumes the requests its verdicts let go on) run once
    every message of the read was handed over, so none of them waits behind a request's filters and
    router; what they write is written by the read's end (the read's turn); what one raises is
    logged and neither stops the others nor the connection's reading."""
    nc = bus.nc
    got = await listening(bus, f"{subject_root}.answers")
    order: list[bytes] = []
    third = asyncio.Event()

    def boom(_: object) -> None:
        raise RuntimeError("boom")

    def resumed(payload: bytes) -> None:
        order.append(b"after " + payload)
        if payload == b"c":
            third.set()
        else:
            assert write_now(nc, f"{subject_root}.answers", payload, "", b"")

    def on_raw(subject: bytes, reply: bytes, payload: bytes) -> None:
        order.append(payload)
        assert read_end.after_read(boom, payload) and read_end.after_read(resumed, payload)

    sub = await subscribe_inline(
        nc, f"{subject_root}.verdicts", lambda m: on_raw(b"", b"", m.data), on_raw=on_raw
    )
    await nc.flush()
    assert read_inline(nc)
    reader = nc._transport._io_reader  # type: ignore[union-attr]
    writer = nc._transport._io_writer  # type: ignore[union-attr]
    writes: list[bytes] = []
    real = writer.write
    writer.write = lambda data: (writes.append(data), real(data))[1]
    subject = f"{subject_root}.verdicts"
    try:
        with caplog.at_level(logging.ERROR, logger="meshbus.bus.direct"):
            # one read that brings two messages, as nats-py's read loop waits for bytes
            reader.feed_data(f"MSG {subject} {sub._id} 1\r\na\r\nMSG {subject} {sub._id} 1\r\nb\r\n".encode())  # type: ignore[attr-defined]
        assert order == [b"a", b"b", b"after a", b"after b"]
        assert [r.getMessage() for r in caplog.records].count("handling the end of a read failed") == 2
        # both answers written by the read's end: the first at once (a quiet connection), the
        # second as the read's turn ended, not in a call_soon
        assert [w.count(b"PUB") for w in writes] == [1, 1]
    finally:
        writer.write = real
    assert [(await asyncio.wait_for(got.get(), 5)).data for _ in range(2)] == [b"a", b"b"]
    assert not read_end.after_read(boom, b"")  # no read is being handled: the caller's own way
    assert write_now(nc, f"{subject_root}.verdicts", b"c", "", b"")  # the connection still reads
    await asyncio.wait_for(third.wait(), 5)
    assert order[-2:] == [b"c", b"after c"]
