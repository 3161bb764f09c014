"""A REMOTE filter's calls on a real nats-server, below the proxy: sent before the caller's task
runs (written to the socket at once, or through nats-py when something is queued ahead), answered
by a host serving a plain-def hook from nats-py's read loop, and timed out without a trace left;
through the Plugin's filter, a ``Resumable`` the reply's callback settles (no task per call) with
the failure policy applied, resuming the exchange as the read that brought the verdict ends."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import AsyncIterator

import pytest
from nats.aio.msg import Msg

from meshbus.bus import read_end
from meshbus.bus.codec import SCHEMA_HEADER
from meshbus.bus.connection import BusConnection
from meshbus.bus.inline import reads_inline
from meshbus.bus.schemas.filters import FilterVerdict
from meshbus.plugins import Headers, Peer, Request
from meshbus.plugins.registry import info_of
from meshbus.plugins.remote.host import FilterHost
from meshbus.plugins.remote.wire import CONTINUE, VERDICT_SCHEMA, pack_verdict
from meshbus.proxy.filters.chain import UNSPECIFIED, LocalReply, Resumable
from meshbus.proxy.filters.plugins.adapter import PluginFilter, PluginStats
from meshbus.proxy.filters.plugins.remote import RemoteBackend, RemoteFilters
from tests.integration.plugins import filters
from tests.unit.plugins.test_adapter import ctx

pytestmark = [pytest.mark.integration, pytest.mark.timeout(20)]


@pytest.fixture
async def stamp(bus: BusConnection) -> AsyncIterator[tuple[FilterHost, RemoteBackend]]:
    """A host of ``Stamp`` (plain def hooks) and a backend calling it, on one connection."""
    host = FilterHost(bus, info_of("stamp", filters.Stamp))
    await host.start()
    backend = RemoteBackend(RemoteFilters(lambda: bus), "stamp", "default/p", {"value": "v"}, 5.0)
    await backend.wait_ready()
    yield host, backend
    await host.stop()


def request(path: str = "/x") -> Request:
    return Request("GET", path, "svc", Headers([("host", "svc")]))


async def test_a_call_is_on_the_wire_before_its_task_runs(
    bus: BusConnection, stamp: tuple[FilterHost, RemoteBackend]
) -> None:
    host, backend = stamp
    await backend.call("on_request_headers", request(), None, b"", True)  # the reply inbox is up
    out = bus.nc.stats["out_msgs"]
    req = request()
    pending = backend.call("on_request_headers", req, None, b"", True)
    assert bus.nc.stats["out_msgs"] == out + 1  # sent by call(), not by the coroutine it returned
    assert bus.nc._pending_data_size == 0  # written, not queued for nats-py's flusher
    assert await pending is None
    assert req.headers.get("x-stamped") == "v"
    blocked = request()
    blocked.headers.set("x-block", "1")
    reply = await backend.call("on_request_headers", blocked, None, b"", True)
    assert (reply.status, reply.body) == (451, b"blocked\n")
    assert host.calls == 3 and host.errors == 0
    info = await bus.nc.request(f"$SRV.STATS.meshbus-filter-host.{host.instance_id}", b"", timeout=5)
    (hook,) = (e for e in json.loads(info.data)["endpoints"] if e["name"] == "request_headers")
    assert hook["num_requests"] == 3  # served from the read loop, counted as nats.micro counts


async def test_a_call_behind_queued_data_goes_through_nats_py(
    bus: BusConnection, stamp: tuple[FilterHost, RemoteBackend]
) -> None:
    _, backend = stamp
    await backend.call("on_request_headers", request(), None, b"", True)
    await bus.nc.publish("t.unrelated", b"queued")  # left in nats-py's buffer for its flusher
    assert bus.nc._pending_data_size > 0
    req = request("/y")
    assert await backend.call("on_request_headers", req, None, b"", True) is None
    assert req.headers.get("x-stamped") == "v"


async def test_a_call_no_host_answers_in_time_times_out_and_is_forgotten(
    bus: BusConnection, stamp: tuple[FilterHost, RemoteBackend]
) -> None:
    host, backend = stamp
    await backend.call("on_request_headers", request(), None, b"", True)
    heard: asyncio.Queue[Msg] = asyncio.Queue()
    await bus.nc.subscribe(
        bus.subjects.filter_hook("stamp", "request_headers"), cb=heard.put
    )  # never answers
    await host.stop()
    await bus.nc.flush()
    slow = RemoteBackend(backend.remotes, "stamp", "default/p", {"value": "v"}, 0.2)
    slow.hooks = backend.hooks
    with pytest.raises(TimeoutError, match="stamp request_headers"):
        await slow.call("on_request_headers", request(), None, b"", True)
    assert (await heard.get()).reply  # it was sent, with a reply subject
    assert backend.remotes.replies(bus)._pending == {}


def plugin(backend: RemoteBackend, fail_open: bool) -> PluginFilter:
    return PluginFilter(
        "default/p", UNSPECIFIED, 0, backend, direction="outbound", workload=Peer(namespace="default"),
        fail_open=fail_open, timeout=backend.timeout, stats=PluginStats("default/p"), remote=True,
    )  # fmt: skip


BLOCKED = b"GET / HTTP/1.1\r\nHost: shelf:9080\r\nX-Block: 1\r\n\r\n"


async def test_a_remote_hook_looks_up_no_running_loop(
    stamp: tuple[FilterHost, RemoteBackend], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its future is made on the exchange's loop, sent and answered without asking asyncio for the
    running loop: on CPython 3.11 that is a getpid() system call, one per call (strace of a proxy
    at 1,000 req/s: ~1 getpid a request with the remote filter, none without)."""
    _, backend = stamp
    f = plugin(backend, False)
    assert await f.on_request_headers(ctx()) is None  # the reply inbox is up
    asked: list[object] = []
    real = asyncio.get_running_loop

    def get_running_loop() -> asyncio.AbstractEventLoop:
        asked.append(None)
        return real()

    c = ctx()
    with monkeypatch.context() as m:
        m.setattr(asyncio, "get_running_loop", get_running_loop)
        r = f.on_request_headers(c)
        assert await r is None
    assert c.head.hdict["x-stamped"] == "v"
    assert asked == []


async def test_a_remote_hook_is_a_resumable_its_reply_settles_with_the_failure_policy(
    bus: BusConnection, stamp: tuple[FilterHost, RemoteBackend]
) -> None:
    host, backend = stamp
    closed, opened = plugin(backend, False), plugin(backend, True)
    c = ctx()
    r = closed.on_request_headers(c)
    # The exchange sets its resume (no task, no done callback); anything else awaits it.
    assert isinstance(r, Resumable) and r.resume is None
    assert isinstance(r.future, asyncio.Future) and not isinstance(r.future, asyncio.Task)
    assert inspect.isawaitable(r)
    assert await r is None and c.head.hdict["x-stamped"] == "v"
    reply = await closed.on_request_headers(ctx(BLOCKED))
    assert isinstance(reply, LocalReply) and reply.status == 451

    await host.stop()  # host gone: no responders
    await bus.nc.flush()
    gone = await closed.on_request_headers(ctx())
    assert isinstance(gone, LocalReply) and (gone.status, gone.details) == (
        503,
        "plugin:default/p:unreachable",
    )
    c = ctx()
    assert await opened.on_request_headers(c) is None
    assert c.filter_state is not None and c.filter_state[opened.name].skipped  # no more hooks for it

    heard: asyncio.Queue[Msg] = asyncio.Queue()
    await bus.nc.subscribe(
        bus.subjects.filter_hook("stamp", "request_headers"), cb=heard.put
    )  # never answers
    await bus.nc.flush()
    slow = RemoteBackend(backend.remotes, "stamp", "default/p", {"value": "v"}, 0.2)
    slow.hooks = backend.hooks
    late = await plugin(slow, False).on_request_headers(ctx())
    assert isinstance(late, LocalReply) and (late.status, late.details) == (500, "plugin:default/p:timeout")
    assert (await heard.get()).reply
    assert backend.remotes.replies(bus)._pending == {}


async def test_calls_and_verdicts_go_without_a_header_block_both_ways(bus: BusConnection) -> None:
    """nats-py parses a header block in pure Python on every message: the hot path's calls and
    verdicts carry none (docs/remote-filters.md), from plain def and async hooks alike."""
    for name, cls in (("stamp", filters.Stamp), ("asyncstamp", filters.AsyncStamp)):
        host = FilterHost(bus, info_of(name, cls))
        await host.start()
        try:
            backend = RemoteBackend(RemoteFilters(lambda: bus), name, "default/p", {"value": "v"}, 5.0)
            await backend.wait_ready()
            await backend.call("on_request_headers", request(), None, b"", True)  # the reply inbox is up
            seen: asyncio.Queue[Msg] = asyncio.Queue()
            prefix = backend.remotes.replies(bus).prefix
            await bus.nc.subscribe(bus.subjects.filter_hook(name, "request_headers"), cb=seen.put)
            await bus.nc.subscribe(prefix + "*", cb=seen.put)
            await bus.nc.flush()
            req = request()
            await backend.call("on_request_headers", req, None, b"", True)
            assert req.headers.get("x-stamped") == "v"  # the verdict was read and applied
            call, verdict = await seen.get(), await seen.get()
        finally:
            await host.stop()
        assert call.subject.endswith(".request_headers") and verdict.subject.startswith(prefix)
        assert (call.headers, verdict.headers) == (None, None)


async def test_a_reply_is_handed_over_as_its_bytes_are_read(
    bus: BusConnection, stamp: tuple[FilterHost, RemoteBackend]
) -> None:
    """No pass through nats-py's read loop task on either side (meshbus.bus.direct.read_inline):
    the host's verdict and the caller's ``then`` run in the transport's read callback."""
    _, backend = stamp
    await backend.call("on_request_headers", request(), None, b"", True)
    outcome: asyncio.Future[tuple[object, asyncio.Task[object] | None]] = (
        asyncio.get_running_loop().create_future()
    )

    def then(result: object, exc: BaseException | None) -> None:
        outcome.set_result((exc or result, asyncio.current_task()))

    req = request()
    assert backend.begin("on_request_headers", req, None, b"", True, then)
    result, task = await asyncio.wait_for(outcome, 5)
    assert result is None and req.headers.get("x-stamped") == "v"
    assert task is None  # not nats-py's read loop (bus.nc._reading_task): no task at all
    assert reads_inline(bus.nc)


async def test_calls_in_flight_share_one_timer_and_each_times_out_at_its_own_deadline(
    bus: BusConnection, stamp: tuple[FilterHost, RemoteBackend]
) -> None:
    host, backend = stamp
    for _ in range(50):  # answered calls leave nothing waiting behind them
        assert await backend.call("on_request_headers", request(), None, b"", True) is None
    replies = backend.remotes.replies(bus)
    assert sum(len(q) for q in replies._deadlines.values()) <= 1
    await host.stop()
    heard: asyncio.Queue[Msg] = asyncio.Queue()
    await bus.nc.subscribe(bus.subjects.filter_hook("stamp", "request_headers"), cb=heard.put)
    await bus.nc.flush()  # a subscriber that never answers
    loop = asyncio.get_running_loop()
    outcomes: dict[str, tuple[float, BaseException | None]] = {}
    all_out = asyncio.Event()

    def calling(timeout: float, name: str) -> None:
        slow = RemoteBackend(backend.remotes, "stamp", "default/p", {"value": "v"}, timeout)
        slow.hooks = backend.hooks

        def then(_: object, exc: BaseException | None) -> None:
            outcomes[name] = (loop.time(), exc)
            if len(outcomes) == 22:
                all_out.set()

        assert slow.begin("on_request_headers", request(), None, b"", True, then)

    start = loop.time()
    for i in range(20):
        calling(0.6, f"long{i}")
    for i in range(2):  # sent later, due earlier: the timer is moved for them
        calling(0.2, f"short{i}")
    timers = [
        h for h in getattr(loop, "_scheduled", []) if not h.cancelled() and h._callback == replies._expire
    ]
    assert len(timers) == 1  # one for the 22 calls, not one each
    await asyncio.wait_for(all_out.wait(), 5)
    assert all(isinstance(exc, TimeoutError) for _, exc in outcomes.values())
    shorts = [t - start for name, (t, _) in outcomes.items() if name.startswith("short")]
    longs = [t - start for name, (t, _) in outcomes.items() if name.startswith("long")]
    assert all(0.19 <= t < 0.5 for t in shorts), shorts
    assert all(t >= 0.59 for t in longs), longs
    assert replies._pending == {} and replies._deadlines == {} and replies._timer is None


async def test_a_plain_call_and_its_verdict_are_never_a_nats_py_msg(bus: BusConnection) -> None:
    """Both sides take a plain MSG (no headers) as its bytes (meshbus.bus.inline's ``on_raw``): the
    host's call and the proxy's reply alike, whatever the verdict (continue, header edits, a reply)."""
    made: list[object] = []
    msg_class = bus.nc.msg_class

    def counting(*args: object, **kw: object) -> object:
        made.append(args or kw)
        return msg_class(*args, **kw)

    bus.nc.msg_class = counting  # type: ignore[assignment]  # before read_inline's reader is made
    host = FilterHost(bus, info_of("stamp", filters.Stamp))
    await host.start()
    try:
        backend = RemoteBackend(RemoteFilters(lambda: bus), "stamp", "default/p", {"value": "v"}, 5.0)
        await backend.wait_ready()
        assert await backend.call("on_request_headers", request(), None, b"", True) is None  # inbox up
        before = len(made)
        req = request()
        assert await backend.call("on_request_headers", req, None, b"", True) is None
        assert req.headers.get("x-stamped") == "v"  # a verdict with header edits, read and applied
        blocked = request()
        blocked.headers.set("x-block", "1")
        reply = await backend.call("on_request_headers", blocked, None, b"", True)
        assert (reply.status, reply.body) == (451, b"blocked\n")
        assert len(made) == before  # two calls and two verdicts, none of them a Msg
        assert host.calls == 3 and host.errors == 0
    finally:
        await host.stop()


async def test_a_verdict_that_comes_with_headers_is_read_from_its_msg(
    bus: BusConnection, stamp: tuple[FilterHost, RemoteBackend]
) -> None:
    """A host may answer with a header block (nats-py's parser makes it a Msg): its verdict is
    read as before, the schema header checked. A guard: it passed before the raw hand-over too."""
    host, backend = stamp
    await backend.call("on_request_headers", request(), None, b"", True)  # the reply inbox is up
    await host.stop()
    answers = [
        pack_verdict(FilterVerdict(headers=[["host", "svc"], ["x-from", "headers"]])),
        pack_verdict(CONTINUE),
    ]

    async def answer(msg: Msg) -> None:
        await bus.nc.publish(msg.reply, answers.pop(0), headers={SCHEMA_HEADER: VERDICT_SCHEMA})

    await bus.nc.subscribe(bus.subjects.filter_hook("stamp", "request_headers"), cb=answer)
    await bus.nc.flush()
    req = request()
    assert await backend.call("on_request_headers", req, None, b"", True) is None
    assert req.headers.get("x-from") == "headers"
    again = request()
    assert await backend.call("on_request_headers", again, None, b"", True) is None
    assert again.headers.get("x-from") is None and not answers


def resuming(r: object, loop: asyncio.AbstractEventLoop) -> asyncio.Future[tuple[object, bool]]:
    """Resume ``r`` as the exchange does (``resume`` set, no done callback): a future of the chain
    result and whether it came while the bus read that brought it was still being handled."""
    assert isinstance(r, Resumable)
    out: asyncio.Future[tuple[object, bool]] = loop.create_future()

    def resume(fut: asyncio.Future[object]) -> None:
        assert fut is r.future and fut.done()
        out.set_result((fut.result(), read_end.after_read(lambda _: None, None)))

    r.resume = resume
    return out


async def test_a_verdict_resumes_the_exchange_as_the_read_that_brought_it_ends(
    bus: BusConnection, stamp: tuple[FilterHost, RemoteBackend]
) -> None:
    """Not a pass of the event loop later (a future's done callback, then the upstream write's
    flush another pass on): in the read's ``after_read``, where its upstream write is flushed too."""
    _, backend = stamp
    loop = asyncio.get_running_loop()
    closed = plugin(backend, False)
    assert await closed.on_request_headers(ctx()) is None  # the reply inbox is up
    c = ctx()
    result, in_read = await asyncio.wait_for(resuming(closed.on_request_headers(c), loop), 5)
    assert result is None and in_read and c.head.hdict["x-stamped"] == "v"
    reply, in_read = await asyncio.wait_for(resuming(closed.on_request_headers(ctx(BLOCKED)), loop), 5)
    assert isinstance(reply, LocalReply) and reply.status == 451 and in_read


async def test_a_resumed_exchange_that_raises_leaves_the_bus_reading_and_the_next_verdicts_come(
    bus: BusConnection, stamp: tuple[FilterHost, RemoteBackend], caplog: pytest.LogCaptureFixture
) -> None:
    _, backend = stamp
    loop = asyncio.get_running_loop()
    f = plugin(backend, False)
    assert await f.on_request_headers(ctx()) is None
    raised = asyncio.Event()

    def resume(_: object) -> None:
        raised.set()
        raise RuntimeError("a bug after the filter")

    r = f.on_request_headers(ctx())
    assert isinstance(r, Resumable)
    r.resume = resume
    with caplog.at_level(logging.ERROR):
        await asyncio.wait_for(raised.wait(), 5)
        later = [resuming(f.on_request_headers(ctx()), loop) for _ in range(3)]
        assert [await asyncio.wait_for(x, 5) for x in later] == [(None, True)] * 3
    assert "handling the end of a read failed" in caplog.text


async def test_a_timed_out_or_unreachable_call_resumes_the_exchange_with_its_failure_policy(
    bus: BusConnection, stamp: tuple[FilterHost, RemoteBackend]
) -> None:
    """From the timer (no read): in a ready callback, with FAIL_CLOSE's 500 / FAIL_OPEN's skip; a
    request that ended meanwhile (its future cancelled) is not resumed."""
    host, backend = stamp
    loop = asyncio.get_running_loop()
    assert await plugin(backend, False).on_request_headers(ctx()) is None
    await host.stop()
    heard: asyncio.Queue[Msg] = asyncio.Queue()
    await bus.nc.subscribe(bus.subjects.filter_hook("stamp", "request_headers"), cb=heard.put)
    await bus.nc.flush()  # a subscriber that never answers
    slow = RemoteBackend(backend.remotes, "stamp", "default/p", {"value": "v"}, 0.2)
    slow.hooks = backend.hooks
    closed, opened = plugin(slow, False), plugin(slow, True)
    gone = closed.on_request_headers(ctx())
    assert isinstance(gone, Resumable)
    gone.resume = lambda _: pytest.fail("a request that ended was resumed")
    gone.future.cancel()  # the exchange's finish()
    c = ctx()
    late, skipped = (
        resuming(closed.on_request_headers(ctx()), loop),
        resuming(opened.on_request_headers(c), loop),
    )
    reply, in_read = await asyncio.wait_for(late, 5)
    assert isinstance(reply, LocalReply) and (reply.status, reply.details) == (
        500,
        "plugin:default/p:timeout",
    )
    assert not in_read
    assert await asyncio.wait_for(skipped, 5) == (None, False)
    assert c.filter_state is not None and c.filter_state[opened.name].skipped
    assert backend.remotes.replies(bus)._pending == {}
