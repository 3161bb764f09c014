"""``RemoteBackend``: a filter served by meshbus-filter-host, called over NATS (bus/schemas/filters.py).

What the filter implements comes from a host's ``info`` answer (``RemoteFilters`` keeps one per filter
name, asked once and again while no host answers): only those hooks are called, bodies only in the
mode it asked for; a host whose ``info`` lists no hooks (one that does not describe its filter) is
called for every hook. Request and response-header hooks are requests with the Plugin's timeout;
``response_body`` and ``done`` are published without waiting. "No responders", a closed connection
or no connection at all raise ``FilterUnreachable`` (503 under FAIL_CLOSE); a timeout raises
``TimeoutError``; an error verdict raises ``RemoteFilterError``.

Requests do not use nats-py's ``request``: ``Replies`` keeps one wildcard inbox subscription per
connection and one callback per call (``begin``'s ``then``), with one timer for all the calls' timeouts.
``request`` adds a random token (a ``getrandom`` call), a done callback and ``asyncio.wait_for``'s
second future and wake-up on every call; this is the proxy's hot path for a remote filter. For the
same reason the call is written to the socket at once, and a reply is read (as its bytes, no nats-py
Msg: meshbus.bus.inline's ``on_raw``), applied to the request and handed to the caller from nats-py's
read loop (meshbus.bus.direct): no pass through nats-py's flusher and subscription tasks, and no
task of the caller's to wake (the adapter's ``then`` settles the chain's pause and resumes the
exchange as that read ends: proxy/filters/plugins/adapter.py ``_Settle``).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import itertools
import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from meshbus.bus import codec
from meshbus.bus.connection import BusConnection
from meshbus.bus.direct import NO_HEADERS, connected, write_now
from meshbus.bus.errors import BusError
from meshbus.bus.inline import read_inline, subscribe_inline
from meshbus.bus.schemas.filters import HOOKS, ONE_WAY_HOOKS, FilterHostInfo, FilterInfoRequest
from meshbus.plugins.api import NO_BODY, BodyMode
from meshbus.plugins.http import Request, Response
from meshbus.plugins.remote.wire import (
    PACKED_CONTINUE,
    CallHead,
    apply_verdict,
    config_digest,
    pack_request,
    read_verdict,
)
from meshbus.proxy.filters.plugins.adapter import FilterUnreachable, RemoteFilterError

log = logging.getLogger(__name__)

INFO_TIMEOUT = 1.0


Then = Callable[[Any, BaseException | None], None]
"""Where a call's outcome goes: ``(result, None)`` or ``(None, exception)``, exactly once."""


class Replies:
    """Replies to one connection's filter calls: ``<inbox>.<n>``, handed to the caller's ``then``
    from nats-py's read loop as they are parsed (no task woken, no future in between).

    Timeouts: one timer for all the calls, not one each (an event-loop timer made and cancelled per
    call is ~2 us of it, timed under uvloop): a queue of (deadline, token) per timeout value, in
    sending order so in deadline order, and the timer set for the earliest head. A call answered
    leaves its entry behind; the heads already answered are dropped as calls are sent and when the
    timer fires, so a queue holds about the calls in flight."""

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.prefix = ""
        self._pending: dict[str, Then] = {}
        self._tokens = itertools.count()
        self._started: asyncio.Task[None] | None = None
        self._deadlines: dict[float, collections.deque[tuple[float, str]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._prefix_size = 0
        """``prefix``'s length in bytes (a reply's subject is read as bytes: ``_on_raw_reply``)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        """The loop the inbox was made on (``send``: ``asyncio.get_running_loop()`` is a getpid()
        system call on every call)."""

    def started(self) -> asyncio.Task[None]:
        if self._started is None:
            self._started = asyncio.ensure_future(self._start())
        return self._started

    async def _start(self) -> None:
        prefix = self.nc.new_inbox() + "."  # under the connection's inbox prefix (mesh mode's NATS users)
        self._prefix_size = len(prefix.encode())
        await subscribe_inline(self.nc, prefix + "*", self._on_reply, on_raw=self._on_raw_reply)
        self._loop = asyncio.get_running_loop()
        self.prefix = prefix

    def _on_reply(self, msg: Msg) -> None:
        then = self._pending.pop(msg.subject[len(self.prefix) :], None)
        if then is None:
            return  # timed out already
        hdrs = msg.headers
        if hdrs and not msg.data and hdrs.get("Status") == "503":
            then(None, nats.errors.NoRespondersError())
        else:
            then(msg, None)

    def _on_raw_reply(self, subject: bytes, reply: bytes, data: bytes) -> None:
        """``_on_reply`` for a plain MSG read ahead of nats-py's parser (meshbus.bus.inline's
        ``on_raw``): no headers, so no "no responders" status; ``then`` gets the payload."""
        token = subject[self._prefix_size :].decode()
        pending = self._pending
        then = pending.get(token)  # get and del: pop with a default is a method call by name
        if then is not None:
            del pending[token]
            then(data, None)

    def _expire(self) -> None:
        """The timer: every call past its deadline times out; the timer is set for the next."""
        self._timer, self._timer_at = None, math.inf
        loop = asyncio.get_running_loop()
        now = loop.time()
        pending = self._pending
        for timeout, queue in list(self._deadlines.items()):
            while queue and queue[0][0] <= now:
                then = pending.pop(queue.popleft()[1], None)
                if then is not None:
                    then(None, TimeoutError())
            _drop_answered(queue, pending)
            if queue:
                self._set_timer(loop, queue[0][0])
            else:
                del self._deadlines[timeout]

    def _set_timer(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        if at < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer, self._timer_at = loop.call_at(at, self._expire), at

    def _fail(self, token: str, exc: BaseException) -> None:
        then = self._pending.pop(token, None)
        if then is not None:
            then(None, exc)

    def request(self, subject: str, data: bytes, timeout: float, then: Then) -> None:
        """Send ``data`` on ``subject``; ``then`` gets the reply (its payload, or the Msg when it came
        with headers: nats-py parsed it), or TimeoutError past
        ``timeout`` seconds, or what failed. Sent now when the reply inbox is up (``prefix`` set),
        else once it is."""
        if self.prefix:
            self.send(subject, data, timeout, then)
            return
        task = asyncio.ensure_future(self._send_when_started(subject, data, timeout, then))
        task.add_done_callback(_log_failure)

    async def _send_when_started(self, subject: str, data: bytes, timeout: float, then: Then) -> None:
        started = self.started()
        try:
            await asyncio.shield(started)
        except Exception as exc:
            if started.done():
                self._started = None  # the next call tries again
            then(None, exc)
            return
        self.send(subject, data, timeout, then)

    def send(self, subject: str, data: bytes, timeout: float, then: Then) -> None:
        """Send the call now (the inbox is up: ``prefix`` is set), written to the socket at once
        when nothing is queued ahead (meshbus.bus.direct)."""
        read_inline(self.nc)  # the reply parsed as its bytes are read (again after a reconnect)
        token = str(next(self._tokens))
        self._pending[token] = then
        queue = self._deadlines.get(timeout)
        if queue is None:
            queue = self._deadlines[timeout] = collections.deque()
        else:
            _drop_answered(queue, self._pending)
        loop = self._loop
        if loop is None:  # set with prefix, which send needs: for the type checker
            loop = self._loop = asyncio.get_running_loop()
        at = loop.time() + timeout
        queue.append((at, token))
        self._set_timer(loop, at)  # a no-op unless this deadline comes before the timer's
        if not write_now(self.nc, subject, data, self.prefix + token, NO_HEADERS):
            sending = asyncio.ensure_future(self.nc.publish(subject, data, reply=self.prefix + token))
            sending.add_done_callback(functools.partial(self._sent, token))

    def _sent(self, token: str, sending: asyncio.Future[None]) -> None:
        """A publish that could not be written at once has gone through nats-py, or failed."""
        exc = None if sending.cancelled() else sending.exception()
        if exc is not None:
            self._fail(token, exc)


def _drop_answered(queue: collections.deque[tuple[float, str]], pending: Mapping[str, Then]) -> None:
    """Drop the queue's heads that are no longer waiting (answered or failed)."""
    while queue and queue[0][1] not in pending:
        queue.popleft()


def _log_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("a remote filter call failed to start", exc_info=task.exception())


def _into_future(fut: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if not fut.done():
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)


def _mode(mode: str, limit: int) -> BodyMode:
    try:
        return (
            BodyMode(mode, limit) if mode == "buffered" else BodyMode(mode if mode == "streamed" else "none")
        )
    except ValueError:
        return NO_BODY


class RemoteFilters:
    """Host descriptions by filter name, for one proxy worker, over a bus connection made on demand."""

    def __init__(
        self, bus: Callable[[], BusConnection | None], described: Callable[[str], None] | None = None
    ) -> None:
        self._bus = bus
        self.infos: dict[str, FilterHostInfo] = {}
        self._asking: dict[str, asyncio.Task[FilterHostInfo | None]] = {}
        self._replies: Replies | None = None
        self.described = described
        """Called with a filter's name when a host first describes it."""

    def replies(self, bus: BusConnection) -> Replies:
        r = self._replies
        if r is None or r.nc is not bus.nc:
            r = self._replies = Replies(bus.nc)
        return r

    def bus(self) -> BusConnection:
        bus = self._bus()
        if bus is None or not connected(bus.nc):
            raise FilterUnreachable("the proxy is not connected to NATS")
        return bus

    def ask(self, name: str) -> asyncio.Task[FilterHostInfo | None]:
        """The (shared) task asking a host of ``name`` what it implements."""
        task = self._asking.get(name)
        if task is None or (task.done() and (task.cancelled() or task.result() is None)):
            task = self._asking[name] = asyncio.ensure_future(self._ask(name))
        return task

    async def _ask(self, name: str) -> FilterHostInfo | None:
        try:
            bus = self._bus()
            if bus is None:
                raise FilterUnreachable("the proxy has no NATS connection")
            await asyncio.wait_for(bus.wait_connected(), INFO_TIMEOUT)
            data, headers = codec.encode(FilterInfoRequest())
            msg = await bus.nc.request(
                bus.subjects.filter_info(name), data, timeout=INFO_TIMEOUT, headers=headers
            )
            info = codec.decode(msg.data, msg.headers, FilterHostInfo)
        except (FilterUnreachable, BusError, nats.errors.Error, TimeoutError) as exc:
            log.debug("no description of remote filter %s yet: %r", name, exc)
            return None
        if not info.hooks:
            log.info("the host of remote filter %s does not list its hooks: calling every hook", name)
        self.infos[name] = info
        if self.described is not None:
            self.described(name)
        return info


class RemoteBackend:
    """One Plugin's calls to the hosts of its filter."""

    def __init__(
        self, remotes: RemoteFilters, name: str, plugin: str, config: Mapping[str, Any] | None, timeout: float
    ) -> None:
        self.remotes = remotes
        self.filter = name
        self.plugin = plugin
        self.config = dict(config) if config is not None else None
        self.digest = config_digest(config)
        self.timeout = timeout
        self.is_async = frozenset({"on_request_headers", "on_request_body", "on_response_headers"})
        self.hooks: frozenset[str] = frozenset()
        self.request_body = NO_BODY
        self.response_body = NO_BODY
        self._publishing: set[asyncio.Task[None]] = set()
        self._subjects: tuple[Any, dict[str, str]] = (None, {})  # (bus.subjects, hook -> subject)
        self._heads: dict[str, CallHead] = {}
        """Each hook's calls' fixed part (the hook, Plugin, config and digest), packed once."""
        self._learn()

    @property
    def ready(self) -> bool:
        """Whether a host has said what the filter implements."""
        return bool(self.hooks) or self._learn()

    def _learn(self) -> bool:
        info = self.remotes.infos.get(self.filter)
        if info is None:
            return False
        self.hooks = frozenset("on_" + h for h in (info.hooks or HOOKS))
        req = _mode(info.request_body, info.request_body_limit)
        self.request_body = req if req.mode == "buffered" else NO_BODY  # a request never pauses per chunk
        self.response_body = _mode(info.response_body, info.response_body_limit)
        return True

    async def wait_ready(self) -> None:
        if self.ready:
            return
        try:
            await asyncio.shield(self.remotes.ask(self.filter))
        except asyncio.CancelledError:
            raise
        if not self._learn():
            raise FilterUnreachable(f"no meshbus-filter-host of {self.filter!r} answered")

    def call(self, hook: str, req: Request, resp: Response | None, body: bytes, end: bool) -> Any:
        """``begin``, as the ``Backend`` protocol has it: None for a one-way hook, else a future
        of what the hook returned."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if not self.begin(hook, req, resp, body, end, functools.partial(_into_future, fut)):
            return None
        return fut

    def begin(
        self, hook: str, req: Request, resp: Response | None, body: bytes, end: bool, then: Then
    ) -> bool:
        """Send ``hook``'s call. False for a one-way hook (nothing comes back); True: ``then`` gets
        the hook's outcome, from nats-py's read loop as the reply is parsed (the verdict's header
        edits already applied to ``req`` / ``resp``) or from the timeout: None or an SDK LocalReply,
        or FilterUnreachable, TimeoutError, RemoteFilterError. Raises FilterUnreachable at once
        without a bus connection."""
        head = self._heads.get(hook)
        if head is None:
            head = self._heads[hook] = CallHead(
                hook.removeprefix("on_"), self.plugin, self.config, self.digest
            )
        wire = head.hook
        data = pack_request(
            head, req, resp, body if hook in ("on_request_body", "on_response_body") else None, end
        )
        bus = self.remotes.bus()
        subject = self._subject(bus, wire)
        if wire in ONE_WAY_HOOKS:
            if write_now(bus.nc, subject, data, "", NO_HEADERS):
                return False
            task = asyncio.ensure_future(_publish(bus, subject, data))
            self._publishing.add(task)
            task.add_done_callback(self._publishing.discard)
            return False
        self.remotes.replies(bus).request(
            subject, data, self.timeout, _Answer(self, bus, wire, req, resp, then)
        )
        return True

    def _subject(self, bus: BusConnection, wire: str) -> str:
        """The hook's subject, made once per hook (and again for another bus's subject root)."""
        source, by_hook = self._subjects
        if source is not bus.subjects:
            source, by_hook = self._subjects = (bus.subjects, {})
        subject = by_hook.get(wire)
        if subject is None:
            subject = by_hook[wire] = source.filter_hook(self.filter, wire)
        return subject

    def close(self) -> None:
        pass  # instances live on the hosts


class _Answer:
    """A call's ``then`` for ``Replies``: its reply (the payload, or a Msg with headers:
    ``Replies.request``) or failure, turned into the hook's outcome for the caller's ``then``. A
    native object rather than a ``functools.partial`` of a method: made and called once a call."""

    __slots__ = ("backend", "bus", "req", "resp", "then", "wire")

    def __init__(
        self,
        backend: RemoteBackend,
        bus: BusConnection,
        wire: str,
        req: Request,
        resp: Response | None,
        then: Then,
    ) -> None:
        self.backend = backend
        self.bus = bus
        self.wire = wire
        self.req = req
        self.resp = resp
        self.then = then

    def __call__(self, reply: bytes | Msg | None, exc: BaseException | None) -> None:
        then = self.then
        if exc is not None:
            name = self.backend.filter
            if isinstance(exc, nats.errors.NoRespondersError):
                exc = FilterUnreachable(f"no meshbus-filter-host of {name!r} is live")
            elif isinstance(
                exc, (nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError)
            ):
                exc = FilterUnreachable(f"NATS connection: {exc!r}")
            elif isinstance(exc, (TimeoutError, nats.errors.TimeoutError)):
                exc = TimeoutError(f"{name} {self.wire}")
            then(None, exc)
            return
        if isinstance(reply, bytes):
            if reply == PACKED_CONTINUE:  # the usual verdict, "continue, nothing changed"
                then(None, None)
                return
            data, headers = reply, None
        else:
            assert reply is not None
            data, headers = reply.data, reply.headers
        try:
            verdict = read_verdict(data, headers, self.bus.settings.max_payload)
            if verdict.error:
                raise RemoteFilterError(verdict.error)
            result = apply_verdict(verdict, self.wire, self.req, self.resp)
        except Exception as e:
            then(None, e)
            return
        then(result, None)


async def _publish(bus: BusConnection, subject: str, data: bytes) -> None:
    try:
        await bus.nc.publish(subject, data)
    except Exception as exc:  # an observation lost: nothing waits for it
        log.debug("could not publish %s: %r", subject, exc)
