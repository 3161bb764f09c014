"""Messages of chosen subscriptions handed to a plain function as their bytes are read, without
nats-py's event-loop hops, for latency-bound callers (a REMOTE filter's calls: the proxy's reply
inbox and meshbus-filter-host's endpoints); bus/direct.py writes their answers.

nats-py 2.x hands every message of a subscription with a callback to a task of that subscription
(through an asyncio.Queue, the task woken, then the callback called), and its read loop is a task
awaiting its ``StreamReader``: bytes read from the socket wake it for the next pass of the event
loop. Each is one more pass between the socket and the code that waits, on both sides of a filter
call, and nats-py 2.x has no option to skip either, so:

- ``subscribe_inline`` makes a subscription whose messages are handed to a plain function by the
  client's read loop as they are parsed: the function must be quick and must not block; what it
  raises is logged, never let into the read loop (which would end it). ``add_inline_endpoint`` does
  it for a nats.micro endpoint and keeps its stats. Either may take an ``on_raw`` too, which gets
  the plain MSGs ``read_inline`` reads itself as their bytes, without a nats-py ``Msg`` (see
  ``make_inline``): both sides of a filter call use it.
- ``read_inline`` takes out the read loop's pass: what arrives while that task waits on an empty
  reader is parsed in the transport's read callback itself (an inline subscription's function runs
  there); otherwise the reader is fed as before, so the order of the bytes is kept either way.
  There, the whole plain MSGs at the front of a read that are for inline subscriptions are split
  off and handed over without nats-py's parser (pure Python: a third more instructions a message);
  anything else, and all that follows it in that read, goes to nats-py's parser as before. A
  message written to the same connection while a read is handled so (a filter host's verdicts) ends
  its turn of bus/direct.py's write policy with the read (``reading`` / ``read_done``), not in a
  ``call_soon`` a pass later.

Compiled with mypyc (setup.py NATIVE_MODULES): this runs for every message of a remote filter call
on both sides; interpreted it was about a third of the host's instructions a call
(bench/remote_callgrind.py). Its classes are native: benchmarks that stamp a hand-over wrap an
instance's ``on_msg`` rather than the class.

All rest on nats-py internals (``Client._transport``, ``_ps`` (its parser: ``buf``, ``state``),
``_subs``, ``msg_class``, ``stats``, ``Msg``'s field order, a subscription's ``_pending_queue``,
``_pending_size``, ``_max_msgs``, ``_jsi``, ``_received``, ``_id``, nats.micro's
``Service._endpoints``; and asyncio's ``StreamReader._waiter`` / ``_buffer``); pyproject pins nats-py
below 3, and tests/integration/bus/test_direct.py checks on a real nats-server that these paths are
the fast ones with the installed version, so an upgrade that changes them fails there rather than
silently going slow.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from time import perf_counter_ns
from typing import Any, Final

from nats import errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.micro.service import EndpointConfig, Service
from nats.protocol.parser import AWAITING_CONTROL_LINE

from meshbus.bus.direct import read_done, reading

log = logging.getLogger(__name__)


Raw = Callable[[bytes, bytes, bytes], None]
"""A plain message's subject, reply subject (b"": none) and payload, as read off the socket."""


class _Handoff:
    """Stands in for a subscription's message queue: the read loop's ``put_nowait`` calls ``on_msg``;
    ``hand_over`` calls ``on_raw`` instead, when there is one, for a plain MSG (no headers)."""

    def __init__(self, sub: Subscription, on_msg: Callable[[Msg], None], on_raw: Raw | None = None) -> None:
        self.sub = sub
        self.on_msg = on_msg
        self.on_raw = on_raw

    def put_nowait(self, msg: Msg) -> None:
        self.sub._pending_size -= len(msg.data)  # nothing stays pending (the read loop added it)
        self.deliver(msg)

    def deliver(self, msg: Msg) -> None:
        try:
            self.on_msg(msg)
        except Exception:
            log.exception("handling a message on %s failed", msg.subject)

    def deliver_raw(self, on_raw: Raw, subject: bytes, reply: bytes, payload: bytes) -> None:
        try:
            on_raw(subject, reply, payload)
        except Exception:
            log.exception("handling a message on %s failed", subject.decode(errors="replace"))

    async def get(self) -> Msg:
        """Parks the subscription's own task, if it has one, until the subscription ends."""
        await asyncio.get_running_loop().create_future()
        raise AssertionError("unreachable")

    def qsize(self) -> int:
        return 0

    def empty(self) -> bool:
        return True

    def task_done(self) -> None:
        pass

    async def join(self) -> None:  # Subscription.drain waits for the queue to empty: it always is
        pass


async def subscribe_inline(
    nc: Client, subject: str, on_msg: Callable[[Msg], None], queue: str = "", on_raw: Raw | None = None
) -> Subscription:
    """Subscribe with ``on_msg`` called for each message inside the client's read loop (``on_raw``,
    when given, for the plain MSGs ``read_inline`` reads itself: see ``make_inline``)."""
    sub = await nc.subscribe(subject, queue=queue)  # no callback: nats-py starts no task for it
    make_inline(sub, on_msg, on_raw)
    return sub


def make_inline(sub: Subscription, on_msg: Callable[[Msg], None], on_raw: Raw | None = None) -> None:
    """Hand ``sub``'s messages from now on to ``on_msg`` in the read loop, not to its queue.

    With ``on_raw``, a plain MSG that ``read_inline`` reads ahead of nats-py's parser (most of them
    on a quiet connection) goes to ``on_raw`` as its bytes, without a nats-py ``Msg``: an interpreted
    dataclass and the subject and reply decoded, ~3.5k instructions a message, that a caller
    needing only the payload (a filter call's verdict) or the payload and reply (a call) never
    reads. ``on_msg`` still gets the rest (headers, a message split across reads...), so the two
    must do the same with the same message.

    A subscription made with a callback keeps its task (waiting on a queue nothing feeds any more);
    the task ends when the subscription does."""
    missing = [a for a in ("_pending_queue", "_max_msgs", "_jsi", "_received", "_id") if not hasattr(sub, a)]
    if missing:
        raise RuntimeError(
            f"this nats-py's Subscription has no {', '.join(missing)}: meshbus.bus.inline needs them"
        )
    sub._pending_queue = _Handoff(sub, on_msg, on_raw)  # type: ignore[assignment]


async def add_inline_endpoint(
    service: Service, config: EndpointConfig, on_msg: Callable[[Msg], None], on_raw: Raw | None = None
) -> None:
    """``service.add_endpoint(config)``, its requests then handed to ``on_msg`` in the read loop and
    counted in the endpoint's stats as nats.micro counts them (``on_raw``, if given, as
    ``make_inline`` says). ``config.handler`` serves what arrives before the hand-over (and must
    answer as ``on_msg`` does)."""
    await service.add_endpoint(config)
    endpoint = service._endpoints[-1]
    sub = endpoint._subscription
    if sub is None or endpoint._name != config.name:
        raise RuntimeError("nats.micro did not register the endpoint as meshbus.bus.inline expects")
    counted = _Counted(endpoint, on_msg, on_raw)
    synced = service.__dict__.get("stats")
    if not isinstance(synced, _SyncedStats):
        synced = _SyncedStats(service.stats)
        service.stats = synced  # type: ignore[method-assign]
    synced.counts.append(counted)
    make_inline(sub, counted, None if on_raw is None else counted.raw)


class _Counted:
    """An inline endpoint's ``on_msg``, its calls and their time counted here and added into the
    endpoint's stats when nats.micro reads them (``_SyncedStats``): written to the endpoint (an
    interpreted object's attributes, by name) on every call, they were ~3.3k instructions a call of
    meshbus-filter-host's (bench/remote_callgrind.py)."""

    def __init__(self, endpoint: Any, on_msg: Callable[[Msg], None], on_raw: Raw | None) -> None:
        self.endpoint = endpoint
        self.on_msg = on_msg
        self.on_raw = on_raw
        self.requests = 0
        self.time_ns = 0

    def __call__(self, msg: Msg) -> None:
        start = perf_counter_ns()
        try:
            self.on_msg(msg)
        finally:
            self.add(start)

    def raw(self, subject: bytes, reply: bytes, payload: bytes) -> None:
        """The endpoint's ``on_raw`` (given only when there is one), counted as ``on_msg`` is."""
        start = perf_counter_ns()
        try:
            self.on_raw(subject, reply, payload)  # type: ignore[misc]
        finally:
            self.add(start)

    def add(self, start: int) -> None:
        self.requests += 1
        self.time_ns += perf_counter_ns() - start

    def sync(self) -> None:
        """Add what was counted since the last sync into the endpoint's stats, as nats.micro keeps them."""
        if self.requests:
            e = self.endpoint
            e._num_requests += self.requests
            e._processing_time += self.time_ns
            e._average_processing_time = e._processing_time // e._num_requests
            self.requests = self.time_ns = 0


class _SyncedStats:
    """Stands in for a service's ``stats`` method (nats.micro's $SRV.STATS handler calls
    ``self.stats()``): its inline endpoints' counts brought up to date first."""

    def __init__(self, stats: Callable[[], Any]) -> None:
        self.stats = stats
        self.counts: list[_Counted] = []

    def __call__(self) -> Any:
        for c in self.counts:
            c.sync()
        return self.stats()


class _InlineFeed:
    """Stands in for a connection's ``StreamReader.feed_data``: what arrives while nats-py's read
    loop waits on an empty reader is parsed here, in the transport's ``data_received`` (see
    ``read_inline``); anything else is fed to the reader as before, so the order is kept."""

    def __init__(self, nc: Client, reader: asyncio.StreamReader) -> None:
        self.nc = nc
        self.reader = reader
        self.feed = type(reader).feed_data.__get__(reader)
        self.backlog: list[bytes] | None = None
        """Not None while a parse waits on something (nats-py awaited a future): what arrives meanwhile."""
        self.finishing: asyncio.Task[None] | None = None
        self.msg_class: Any = nc.msg_class
        ps = nc._ps
        self.fast = (
            hasattr(ps, "buf") and hasattr(ps, "state") and isinstance(getattr(nc, "_subs", None), dict)
        )
        """Whether ``hand_over`` may read messages ahead of nats-py's parser (it has what it reads)."""

    def __call__(self, data: Any) -> None:  # bytes, or what a transport reads into
        if self.backlog is not None:
            self.backlog.append(bytes(data))
            return
        r: Any = self.reader
        waiter = r._waiter
        if waiter is None or waiter.done() or r._buffer or r._eof or r._exception is not None:
            self.feed(data)  # the read loop is busy, or has bytes to take first: it parses these too
            return
        reading(self.nc)  # a message written meanwhile ends its turn with this read (bus/direct.py)
        try:
            self.parse(bytes(data))
        finally:
            read_done()

    def parse(self, data: bytes) -> None:
        ps = self.nc._ps
        if self.fast and not ps.buf and ps.state == AWAITING_CONTROL_LINE:
            data = self.hand_over(data)
            if not data:
                return
        coro = ps.parse(data)
        try:
            waits = coro.send(None)
        except StopIteration:
            return
        except Exception as exc:
            self.failed(exc)
            return
        self.backlog = []
        self.finishing = asyncio.ensure_future(self.finish(coro, waits))

    def hand_over(self, data: bytes) -> bytes:
        """Hand the whole MSGs at the start of ``data`` that are for inline subscriptions straight
        to them, counted as nats-py counts them; the rest, from the first that is anything else
        (HMSG, a split message, another subscription's, PING...), is left to nats-py's parser.

        nats-py's parser is pure Python (regular expressions, a coroutine per message, an
        ``await`` per header block even when there is none): a filter call's message to the host
        cost 39.8k instructions there, 25.2k here; its verdict to the proxy 35.7k, 23.5k."""
        nc = self.nc
        if "_process_msg" in nc.__dict__:  # wrapped (tests, bench stamps): every message through it
            return data
        subs: dict[int, Any] = nc._subs
        stats = nc.stats
        pos, size = 0, len(data)
        # "MSG " by its bytes: a bytes method is a call by name, with its arguments parsed, each time
        while (
            size - pos >= 4
            and data[pos] == 77
            and data[pos + 1] == 83
            and data[pos + 2] == 71
            and data[pos + 3] == 32
        ):
            eol = _find(data, b"\r\n", pos)
            if eol < 0:
                break
            args = _split(data[pos + 4 : eol], b" ")
            if len(args) == 3:
                subject, sid, n = args
                reply = b""
            elif len(args) == 4:
                subject, sid, reply, n = args
            else:
                break
            sid_n, length = _number(sid), _number(n)
            if sid_n < 0 or length < 0:
                break
            start = eol + 2
            end = start + length
            sub = subs.get(sid_n)
            if end + 2 > size or data[end : end + 2] != b"\r\n" or sub is None:
                break
            handoff = sub._pending_queue
            if type(handoff) is not _Handoff or sub._max_msgs > 0 or sub._jsi is not None:
                break
            payload = data[start:end]
            pos = end + 2
            stats["in_msgs"] += 1
            stats["in_bytes"] += len(payload)
            sub._received += 1
            on_raw = handoff.on_raw
            if on_raw is not None:
                handoff.deliver_raw(on_raw, subject, reply, payload)
                continue
            # by position (nats-py's Msg field order, checked in tests/integration/bus/test_direct.py):
            # a dataclass's __init__ takes keywords at about twice the cost, on every message
            msg = self.msg_class(nc, subject.decode(), reply.decode(), payload, None, None, False, sub._id)
            handoff.deliver(msg)
        return data[pos:] if pos else data

    async def finish(self, coro: Any, waits: Any) -> None:
        """Run a parse that waited to its end, as a task would, then what arrived meanwhile."""
        try:
            while True:
                if isinstance(waits, asyncio.Future):
                    waits._asyncio_future_blocking = False
                    await asyncio.wait([waits])  # the parse reads its outcome when resumed
                else:
                    await asyncio.sleep(0)  # a bare yield
                try:
                    waits = coro.send(None)
                except StopIteration:
                    break
        except Exception as exc:
            self.failed(exc)
        backlog, self.backlog, self.finishing = self.backlog or [], None, None
        for i, data in enumerate(backlog):
            if self.backlog is not None:  # a parse waits again: the rest after it
                self.backlog.extend(backlog[i:])
                return
            self(data)

    def failed(self, exc: Exception) -> None:
        """What nats-py's read loop does with a parse's failure, and this connection's bytes go to
        the reader from now on."""
        self.reader.__dict__.pop("feed_data", None)
        if _inline_readers.get(id(self.nc)) is self.reader:
            del _inline_readers[id(self.nc)]  # read_inline puts a new one in place, as before
        if isinstance(exc, OSError | errors.ProtocolError):
            err = exc if isinstance(exc, OSError) else errors.ProtocolError()
            task = asyncio.ensure_future(self.nc._process_op_err(err))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
        else:
            log.error("nats: encountered error", exc_info=exc)


_find: Final = bytes.find
_split: Final = bytes.split
"""Stored: a bytes method called on a value is looked up by its name each time (mypyc has no
primitive for these two)."""


def _number(b: bytes) -> int:
    """A protocol line's decimal field (a sid, a size) as an int; -1 if it is not one (empty, or
    anything but ASCII digits): what ``isdigit`` then ``int`` said, natively."""
    if not b or len(b) > 18:
        return -1
    v = 0
    for c in b:
        if c < 48 or c > 57:
            return -1
        v = v * 10 + (c - 48)
    return v


def read_inline(nc: Client) -> bool:
    """Parse what arrives on ``nc``'s socket as the event loop reads it, not one pass later in
    nats-py's read loop: a reply to a ``subscribe_inline`` subscription reaches its function in
    the same pass as its bytes (nats-py's reader would wake the read loop's task for the next
    pass). Idempotent and cheap: callers call it again after a reconnect (a new reader), e.g. on
    each call. False: this transport has no stream reader (it is left to nats-py)."""
    t = nc._transport
    reader = getattr(t, "_io_reader", None) if t is not None else None
    key = id(nc)
    if reader is not None and _inline_readers.get(key) is reader:
        return True
    if not isinstance(reader, asyncio.StreamReader) or getattr(nc, "_ps", None) is None:
        return False
    if "feed_data" not in reader.__dict__:
        reader.feed_data = _InlineFeed(nc, reader)  # type: ignore[method-assign]
    if len(_inline_readers) >= 64:
        _inline_readers.clear()  # mostly clients gone; a live one's next call puts its reader back
    _inline_readers[key] = reader
    return True


_inline_readers: dict[int, Any] = {}
"""The reader ``read_inline`` put in place, by client (id): a call on the same reader is a lookup
(the checks above were ~1.4k instructions, on every remote filter call on both sides)."""


def reads_inline(nc: Client) -> bool:
    """Whether ``read_inline`` is in place on ``nc``'s current reader (for tests)."""
    reader = getattr(nc._transport, "_io_reader", None) if nc._transport is not None else None
    return reader is not None and isinstance(reader.__dict__.get("feed_data"), _InlineFeed)
