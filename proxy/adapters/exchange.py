"""One downstream request through its route: the filter chain, then the router, as callbacks.

An ``Exchange`` is made per request head by the listener and driven by plain callbacks (no task per
request: the anchors price a task + futures at a quarter of the Python budget). Order, as Envoy/Istio
apply it: route match (404 NR) and the weighted destination pick -> the route's filter chain
(proxy/filters/chain.py: local rate limit 429 RL, CORS preflight, fault delay DI / abort FI, user
filters by phase, header operations) -> the router: redirect / direct response, cluster LB pick (503
UH), circuit breaker (503 UO), pooled connection, response, with retries (per-try timeout, backoff),
the route timeout (504 UT) and outlier feedback via ``Cluster.record_result``. Response headers pass
the chain's response hooks in reverse order; local replies pass those of the filters before the one
that answered. A route with an empty chain costs one tuple check per hook point, and its heads go
upstream and back as received when nothing changes them.

The exchange is also the filters' ``FilterContext``: a hook that pauses (a ``Delay``, an awaitable
from an ``async def`` hook, or a remote filter's ``Resumable``) holds only its own request; a timer,
a task's done callback or the remote verdict's read resumes the chain.

The exchange writes no wire format downstream: it answers through its client stream's calls
(contracts.Downstream: ``send_head``, ``send_data``, ``send_end``, ``send_local``), which the HTTP/1
connection frames (listener.py) and an HTTP/2 stream would frame as HEADERS and DATA.

Request bodies stream to the upstream as they arrive; a copy is kept for replay only while a retry
could still need it and only up to ``MAX_REPLAY`` bytes (past that, no retry). Response bodies stream
to the client; the listener pauses the upstream socket when the client reads slowly.
Mirrors are fire-and-forget, bounded in number, and only for requests whose body fits the replay buffer.

Attempts, retries, per-try and route timeouts, the retry budget and the response flag that ends a
forwarded request are decided by ``core.attempts.Attempts`` (sans-IO): the exchange feeds it events
with ``now`` (``ctx.now``, time.monotonic) and performs the action each returns (``_act``). Its
deadlines wait in the listener's sweep (``dl_at``: the loop's clock never runs ahead of monotonic
time, so the sweep is never early); the backoff between attempts is a loop timer.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import random
import re
import time
from functools import partial
from typing import TYPE_CHECKING, Any, Final

from meshbus.proxy.adapters.upstream import (
    OVERFLOW,
    PENDING,
    ClusterPool,
    MirrorSend,
    PoolManager,
    UpstreamConnection,
)
from meshbus.proxy.codec.http1 import (
    CHUNKED,
    HOP_BY_HOP,
    LENGTH,
    NO_BODY,
    UNTIL_EOF,
    RequestHead,
    ResponseHead,
    connection_tokens,
    serialize_request_head,
)
from meshbus.proxy.core import flags as F
from meshbus.proxy.core.attempts import ABORT, CONNECT, FAIL, NOTHING, RETRY, Attempts
from meshbus.proxy.core.cluster import Cluster
from meshbus.proxy.core.routing import Destination, RequestView, Route
from meshbus.proxy.filters.chain import Delay, HttpFilter, LocalReply, Resumable
from meshbus.proxy.filters.headerops import HeaderOps
from meshbus.proxy.filters.tracing import TraceHop
from meshbus.telemetry.peer import PEER_HEADER
from meshbus.telemetry.tracecontext import TRACE_HEADERS, HexRecords, strip_trace_lines

if TYPE_CHECKING:
    from meshbus.proxy.adapters.contracts import Downstream, Pool
    from meshbus.proxy.adapters.listener import DownstreamConnection, ListenerContext

log = logging.getLogger(__name__)

MAX_REPLAY: Final = 64 * 1024
MAX_MIRRORS_IN_FLIGHT: Final = 64

# Request headers never forwarded as received: hop-by-hop ones, and those the proxy sets itself.
_REQ_SKIP: Final = HOP_BY_HOP | {"host", "x-forwarded-proto", "expect", PEER_HEADER}
_REQ_SKIP_XFF: Final = _REQ_SKIP | {"x-forwarded-for"}
# A request with none of these (and no duplicate names) can go upstream as received plus the proxy's
# own lines: nothing in it is hop-by-hop, replaced or dropped (see RequestHead.raw). Exceptions cut out
# of the raw head by a regex: a Connection header naming only keep-alive or close, and the client's
# X-Forwarded-For / -Proto lines (replaced by the proxy's own; every request from a client sidecar
# to a server sidecar has them, so the inbound side would otherwise rebuild every head).
_RAW_UNSAFE: Final = (HOP_BY_HOP - {"connection"}) | {"expect"}
_RAW_UNSAFE_NAMES: Final = tuple(sorted(_RAW_UNSAFE))  # what _no_unsafe_name looks up
_WALK_NAMES: Final = 5  # _no_unsafe_name walks a head with fewer names than this instead
_RAW_CONNECTION: Final = re.compile(rb"\r\nconnection:[^\r]*", re.IGNORECASE)
_RAW_FORWARDED: Final = re.compile(rb"\r\n(?:x-forwarded-(?:for|proto)|x-meshbus-peer):[^\r]*", re.IGNORECASE)
_PLAIN_CONNECTION: Final = frozenset({"keep-alive", "close"})
_PEER_START: Final = b"\r\n" + PEER_HEADER.encode("latin-1") + b": "  # a peer line's start, its CRLF before
_PEER_LINE_LEN: Final = len(_PEER_START)  # its name, ": " and CRLF: the line's length less its value's


def _awaited(r: object, loop: asyncio.AbstractEventLoop) -> asyncio.Future[Any] | None:
    """``asyncio.ensure_future(r, loop=loop)`` for a hook's result that is awaitable, else None. A
    future of this loop (a remote filter's call returns one) is itself, as ensure_future would
    return it, without ``inspect.isawaitable``'s ABC check and ensure_future's interpreted calls
    (callgrind, the two ways alone on a uvloop future: 8.0k -> 1.9k instructions a paused hook)."""
    if isinstance(r, asyncio.Future) and r.get_loop() is loop:
        return r
    if inspect.isawaitable(r):
        return asyncio.ensure_future(r, loop=loop)
    return None


def _cut_sidecar_lines(raw: bytes, headers: list[tuple[str, str]], hdict: dict[str, str]) -> bytes | None:
    """``raw`` without the lines a meshbus client sidecar puts last in a head it passes through (its
    peer line if any, X-Forwarded-Proto, X-Forwarded-For: ``Exchange._dispatch``'s order), when the
    head ends with exactly those lines; else None (then ``_RAW_FORWARDED`` searches all of it, ~4k
    instructions a request on a server sidecar). The same bytes as that regex: the caller checked that
    no name occurs twice, and ``raw`` is one line a header, in the parser's order.

    The lines' places come from the parsed values' lengths ("name: value\r\n" each), and only the
    line starts are compared: a line that starts where its value's length puts it, with its name and
    one blank, holds that value (the parser reported it from that line, and a value with blanks
    around it would be shorter than the line). Building the expected tail from the values and
    comparing it cost ~2,500 instructions a request."""
    n = len(headers)
    if n < 3 or headers[n - 1][0] != "x-forwarded-for" or headers[n - 2][0] != "x-forwarded-proto":
        return None
    xff_at = len(raw) - len(headers[n - 1][1]) - 19  # "x-forwarded-for: " + value + CRLF
    start = xff_at - len(headers[n - 2][1]) - 21  # "x-forwarded-proto: " + value + CRLF
    if headers[n - 3][0] == PEER_HEADER:
        peer_at = start - len(headers[n - 3][1]) - _PEER_LINE_LEN
        # the tail must start a line: the request line at least comes before it
        if peer_at < 2 or raw[peer_at - 2 : peer_at + _PEER_LINE_LEN - 2] != _PEER_START:
            return None
    elif PEER_HEADER in hdict:
        return None  # the peer line elsewhere: the regex finds it
    else:
        peer_at = start
        if start < 2:
            return None
    if (
        raw[start - 2 : start + 19] != b"\r\nx-forwarded-proto: "
        or raw[xff_at - 2 : xff_at + 17] != b"\r\nx-forwarded-for: "
        or not raw.endswith(b"\r\n")
    ):
        return None
    return raw[:peer_at]


def _no_unsafe_name(hdict: dict[str, str]) -> bool:
    """``hdict.keys().isdisjoint(_RAW_UNSAFE)``, compiled. The view's method was called by name and
    tested each name through the generic sequence protocol: ~1,800 instructions on a server
    sidecar's head (nine dict lookups here, ~1,200), ~1,200 on a client's (a few names; ~800 here).
    Walking the head's names costs ~200 a name (the dict's iterator and a set lookup) against ~135
    a lookup of the nine in the dict: the walk is cheaper only under five names (callgrind, the
    server sidecar of bench/chain_callgrind.py: 7 names walked, ~1,850 instructions)."""
    if len(hdict) < _WALK_NAMES:
        for name in hdict:
            if name in _RAW_UNSAFE:
                return False
        return True
    for name in _RAW_UNSAFE_NAMES:
        if name in hdict:
            return False
    return True


def _strip_connection(raw: bytes, value: str) -> bytes | None:
    """``raw`` without its Connection line when that names only keep-alive or close; else None."""
    if value.strip().lower() not in _PLAIN_CONNECTION:
        return None
    return _RAW_CONNECTION.sub(b"", raw, count=1)


_REMOVE_LINE: dict[str, tuple[bytes, bytes, re.Pattern[bytes]]] = {}


def _raw_removed(raw: bytes, ops: HeaderOps, hdict: dict[str, str]) -> bytes | None:
    """``raw`` without the lines of header operations that only remove (a JWT filter dropping the
    token header), so such a request still goes upstream as received; None when ``ops`` sets or
    adds headers (the head is rebuilt). The caller checks that no name occurs twice."""
    if ops.set or ops.add:
        return None
    for name in ops.remove:
        value = hdict.get(name)
        if value is not None:
            found = _REMOVE_LINE.get(name)
            if found is None:
                if len(_REMOVE_LINE) > 256:
                    _REMOVE_LINE.clear()
                bname = name.encode()
                title = "-".join(p.capitalize() for p in name.split("-")).encode()
                pat = re.compile(b"\r\n" + re.escape(bname) + b":[^\r]*", re.I)
                found = _REMOVE_LINE[name] = (b"\r\n" + bname + b":", b"\r\n" + title + b":", pat)
            # The name as clients usually spell it (Title-Case or lowercase) is a plain search, a
            # fraction of the case-blind regex's cost; the line is the only one of its name.
            lower, title_case, pat = found
            i = raw.find(title_case)
            if i < 0:
                i = raw.find(lower)
            if i < 0:
                raw = pat.sub(b"", raw, count=1)
                continue
            # The line ends after its value and the blanks around it (the parser hands the value
            # without them, latin-1: one byte a character): stepping over them costs no search of
            # the value for its CR (a token is hundreds of bytes). Anything else: search.
            end = i + len(lower)
            n = len(raw)
            while end < n and (raw[end] == 32 or raw[end] == 9):
                end += 1
            end += len(value)
            while end < n and (raw[end] == 32 or raw[end] == 9):
                end += 1
            if end >= n or raw[end] != 13:
                end = raw.find(b"\r", i + 2)
            raw = raw[:i] if end < 0 else raw[:i] + raw[end:]
    return raw


_rand: Final = random.random
# Bound once: ``time.monotonic()`` in compiled code is a module attribute lookup, then the call.
_monotonic: Final = time.monotonic
_wall_clock: Final = time.time


# The variant digit of a UUIDv4 (RFC 9562: binary 10xx) from a random hex digit: its two low bits.
_VARIANT: Final = bytes.maketrans(b"0123456789abcdef", b"89ab89ab89ab89ab")
_IDS_PER_DRAW: Final = 128
_RID_NAME: Final = b"x-request-id: "


class RequestIds(HexRecords):
    """Random UUIDv4s (version 4, variant 10: RFC 9562) for ``x-request-id``, as Envoy makes them:
    122 random bits each from OpenSSL's CSPRNG (``random_hex``, ``RAND_bytes`` as Envoy's), so an id
    seen tells nothing of the next one, nor of the ``random`` module's state (sampling, balancing).

    Made 128 at a time (tracecontext.HexRecords): 36 random hex digits per id, then the dashes, the
    version digit and the variant digit written over their places in all of them at once; an id is
    then a slice of one string, and its ASCII bytes a slice of one bytes, for the head's line (no
    encode, no ``%`` format a request: ~700 instructions). One id at a time (a draw, an int
    formatted, five slices joined) cost five times as much (bench/request_ids.py).
    """

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(36, _IDS_PER_DRAW)

    def take(self) -> tuple[str, bytes]:
        """The next id, as a str and as its ASCII bytes."""
        pos = self.next_record()
        end = pos + 36
        return self.ids[pos:end], self.raw[pos:end]

    def _lay_out(self, buf: bytearray, n: int) -> None:
        dashes = b"-" * n
        buf[8::36] = dashes
        buf[13::36] = dashes
        buf[18::36] = dashes
        buf[23::36] = dashes
        buf[14::36] = b"4" * n
        buf[19::36] = buf[19::36].translate(_VARIANT)


_REQUEST_IDS: Final = RequestIds()
os.register_at_fork(after_in_child=_REQUEST_IDS.reset)


def new_request_id() -> str:
    """A random UUIDv4 for ``x-request-id`` (see ``RequestIds``)."""
    return _REQUEST_IDS.take()[0]


def request_id_line() -> tuple[str, bytes]:
    """A new request id and its head line, ``x-request-id: <id>\r\n``."""
    rid, raw = _REQUEST_IDS.take()
    return rid, _RID_NAME + raw + b"\r\n"


class Exchange:
    # Response headers while response filters run: set just before, so a request whose route has
    # none costs no list (read before it is set, it raises AttributeError, as a bug should).
    resp_headers: list[tuple[str, str]]

    __slots__ = (
        "att",
        "authority",
        "bytes_in",
        "bytes_out",
        "cluster",
        "conn",
        "ctx",
        "dc",
        "dest",
        "details",
        "dl_armed",
        "dl_at",
        "dn",
        "done",
        "filter_state",
        "flags",
        "head",
        "head_bytes",
        "held",
        "held_end",
        "is_local",
        "keep_alive",
        "out",
        "peer_ip",
        "peer_ip_bytes",
        "pool",
        "replay",
        "req_chunked",
        "req_done",
        "req_ops",
        "resp",
        "resp_headers",
        "resp_started",
        "rid_line",
        "route",
        "runtime",
        "start",
        "status",
        "t0",
        "task",
        "timer",
        "tls_failure",
        "tr",
        "unsent",
        "unsent_bytes",
        "upstream_host",
        "view",
        "waiting",
    )

    def __init__(
        self,
        dc: Downstream,
        head: RequestHead,
        ctx: ListenerContext,
        peer_ip: str | None = None,
        peer_ip_bytes: bytes | None = None,
    ) -> None:
        self.dc = dc
        # ``dc`` again when it is the HTTP/1 listener's connection (the listener sets it): typed, so
        # the compiled build calls it natively on the response path; through the Protocol each call
        # is a lookup by name that missed CPython's type method cache. None for other streams.
        self.dn: DownstreamConnection | None = None
        # The client's address as the listener hands it over (read natively there): ``dc`` is a
        # Protocol, so reading it here would go by name through the type attribute cache per request.
        self.peer_ip = dc.peer_ip if peer_ip is None else peer_ip
        self.peer_ip_bytes = dc.peer_ip_bytes if peer_ip_bytes is None else peer_ip_bytes
        self.head = head
        self.ctx = ctx
        self.flags: list[str] = []
        self.status = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.req_done = head.body == 0  # NO_BODY: complete at its head
        self.req_chunked = head.body == CHUNKED
        self.replay: list[bytes] | None = []
        self.unsent: list[bytes] = []
        self.unsent_bytes = 0
        self.conn: UpstreamConnection | None = None
        self.waiting = False
        self.resp: ResponseHead | None = None
        self.resp_started = False
        self.keep_alive = head.keep_alive
        self.done = False
        self.timer: Any = None
        self.task: Any = None  # an async filter hook being awaited
        self.details: str | None = None  # a filter's local-reply details (access log)
        self.is_local = False  # the response is a local reply (filters see it on the way out)
        self.req_ops: HeaderOps | None = None  # header operations for the upstream head (filters)
        self.filter_state: dict[str, Any] | None = None  # filters' per-request data (Envoy's filter state)
        self.held: list[bytes] | None = None  # response body held while an async response hook runs
        self.held_end: UpstreamConnection | None = None  # and the response's end, if it came meanwhile
        self.tls_failure: str | None = None  # "<reason>:<message>" when the upstream TLS handshake failed
        self.upstream_host: str | None = None  # "address:port" of the last attempt (access log)
        self.tr: Any = None  # this hop's trace (proxy/filters/tracing.py TraceHop), set in begin()
        self.att: Attempts | None = None  # the attempts of a forwarded request (set by _dispatch)
        self.dl_armed = False  # waiting in ctx.deadlines for att.wake_at() (dl_at)
        self.dl_at = 0.0
        self.route: Any = None
        self.cluster: Cluster | None = None
        self.dest: Destination | None = None
        self.view: Any = None
        self.head_bytes = b""
        self.rid_line = b""  # "x-request-id: ...\r\n" when the proxy made the id (pass-through heads)
        self.runtime: Any = None
        self.pool: Pool | None = None  # the pool of the current attempt
        self.authority = ""
        self.t0 = 0.0
        self.start = 0.0

    # ---- request side ---------------------------------------------------------------------------

    def begin(self) -> None:
        """Called by the listener when this request's turn comes (pipelined requests wait)."""
        self.t0 = _monotonic()
        self.start = _wall_clock()
        ctx = self.ctx
        head = self.head
        hdict = head.hdict
        target = head.target
        authority = hdict.get("host", "")
        if target[:1] != "/":
            if target.startswith("http://"):
                # absolute-form (the client uses us as its HTTP_PROXY): authority comes from the URI
                rest = target[7:]
                i = rest.find("/")
                authority, target = (rest, "/") if i < 0 else (rest[:i], rest[i:])
            elif not (head.method == "OPTIONS" and target == "*"):
                self.keep_alive = False
                self.local(501, "-", "meshbus: only origin-form and http:// absolute-form targets\n")
                return
        if not authority and head.version != "1.0" and "host" not in hdict:
            # RFC 9112 3.2: an HTTP/1.1 request must carry Host (empty is allowed); HTTP/1.0 need not,
            # and routes on the default host. An absolute-form target names it (as Envoy and nginx).
            self.details = "missing_host_header"  # Envoy's response code details
            self.local(400, "-", "meshbus: an HTTP/1.1 request needs a Host header\n")
            return
        self.authority = authority
        if "x-request-id" not in hdict:
            rid, line = request_id_line()
            hdict["x-request-id"] = rid
            head.headers.append(("x-request-id", rid))
            self.rid_line = line  # goes after head.raw (_dispatch)
        runtime = self.runtime = ctx.live.runtime
        if runtime is not ctx.runtime:  # a swapped runtime: its table and clusters into typed fields
            ctx.bind(runtime)
        view = self.view = RequestView(head.method, target, authority, hdict, self.peer_ip)
        table = ctx.routes
        assert table is not None  # bound just above
        route = self.route = table.match(view)
        self.tr = ctx.tele.begin(self)  # the STATS phase's trace decision (proxy/filters/observe.py)
        if route is None:
            self.local_flag(F.NR)
            return
        if route.kind == "forward":
            # Picked with the route, as Envoy picks a weighted cluster, so filters see the destination.
            self.dest = route.pick_destination(_rand())
        if route.chain.request_headers:
            self._run_request_filters(0)
        else:
            self._dispatch()

    # ---- the filter chain (proxy/filters/chain.py says what a hook may return) -------------------

    def _run_request_filters(self, i: int) -> None:
        """Request-header hooks from the ``i``-th on, then the router; a hook may stop or pause."""
        route: Route = self.route  # typed: ``route`` is Any for filters' sake (see _dispatch)
        filters = route.chain.request_headers
        n = len(filters)
        while i < n:
            f = filters[i]
            i += 1
            try:
                r = f.on_request_headers(self)
            except Exception as exc:
                self._filter_failed(f, exc)
                return
            if r is not None:
                self._filter_paused(f, r, i)
                return
        self._dispatch()

    def _filter_paused(self, f: HttpFilter, r: object, i: int) -> None:
        """A request hook did not continue: answer, wait, or await it, then go on at filter ``i``."""
        if isinstance(r, LocalReply):
            self.reply(r, f)
        elif isinstance(r, Delay):
            self.timer = self.ctx.loop.call_later(r.seconds, self._after_delay, f, r.then, i)
        elif isinstance(r, Resumable) and not r.future.done():  # its filter resumes us (chain.py)
            self.task = r.future
            r.resume = partial(self._after_await, f, i)
        elif (task := _awaited(r, self.ctx.loop)) is not None:
            self.task = task
            task.add_done_callback(partial(self._after_await, f, i))
        else:
            self._filter_failed(f, TypeError(f"hook returned {type(r).__name__}, not None/LocalReply/Delay"))

    def _after_delay(self, f: HttpFilter, then: LocalReply | None, i: int) -> None:
        self.timer = None
        if self.done:
            return
        if then is not None:
            self.reply(then, f)
        else:
            self._run_request_filters(i)

    def _after_await(self, f: HttpFilter, i: int, task: Any) -> None:
        self.task = None
        if self.done or task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._filter_failed(f, exc)
            return
        r = task.result()
        if r is None:
            self._run_request_filters(i)
        else:
            self._filter_paused(f, r, i)

    def _filter_failed(self, f: HttpFilter, exc: BaseException) -> None:
        log.error("filter %s failed: %s: %s", f.name, type(exc).__name__, exc)
        self.reply(LocalReply(500, "filter error\n", details=f"filter_error:{f.name}"), f)

    def _body_filters(self, data: bytes, end: bool) -> bool:
        """Request-body hooks (observe, or answer before the response starts); False when one
        answered, so the body goes no further."""
        for f in self.route.chain.request_body:
            try:
                r = f.on_request_body(self, data, end)
            except Exception as exc:
                r = exc
            if r is None or self.done or self.resp_started:
                continue
            self._abandon_upstream()
            if isinstance(r, LocalReply):
                self.reply(r, f)
            elif isinstance(r, BaseException):
                self._filter_failed(f, r)
            else:
                self._filter_failed(f, TypeError("a body hook may only return None or a LocalReply"))
            return False
        return True

    def reply(self, r: LocalReply, stopper: HttpFilter | None) -> None:
        """Answer with a filter's local reply; only the filters before ``stopper`` see it go out."""
        if r.details:
            self.details = r.details
        hdrs = list(r.headers)
        if r.flag is not None:
            self.flags.append(r.flag)
            hdrs.insert(0, (F.FLAGS_HEADER, F.join(self.flags)))
        self.send_local(r.status, r.body, hdrs, stopper)

    def _dispatch(self) -> None:
        # Typed locals: the fields are Any for filters' sake, and a typed local lets the compiled
        # build read attributes natively instead of by generic lookup.
        route: Route = self.route
        kind = route.kind
        if kind != "forward":
            if kind == "redirect":
                status, location = route.redirect(self.view)
                self.send_local(status, "", [("location", location)])
            else:
                self.send_local(route.direct_status, route.direct_body or b"", None)
            return
        dest = self.dest
        assert dest is not None  # picked in begin() for forward routes
        cluster: Cluster | None = self.ctx.clusters.get(dest.cluster)
        self.cluster = cluster
        if cluster is None:
            self.local_flag(F.UH)
            return
        head = self.head
        view: RequestView = self.view
        hdict = head.hdict
        raw = head.raw
        if (
            raw is not None
            and route.plain
            and (self.req_ops is None or (raw := _raw_removed(raw, self.req_ops, hdict)) is not None)
            and not route.mirrors  # _mirror_head edits the lowercase host line of a rebuilt head
            and not route.rewrite_authority
            and view.path == head.target  # origin-form: the request line and Host stay as sent
            and len(hdict) == len(head.headers)
            and "host" in hdict
            and _no_unsafe_name(hdict)
            and (
                "connection" not in hdict or (raw := _strip_connection(raw, hdict["connection"])) is not None
            )
        ):
            # Pass-through: the head as received (names keep the client's spelling, as Envoy forwards
            # them) plus the proxy's own X-Forwarded-* lines; no per-header Python work.
            prior = None  # the received X-Forwarded-For, which the proxy's own extends
            if "x-forwarded-for" in hdict or "x-forwarded-proto" in hdict or PEER_HEADER in hdict:
                cut = _cut_sidecar_lines(raw, head.headers, hdict)
                # no duplicate names: one line each at most
                raw = cut if cut is not None else _RAW_FORWARDED.sub(b"", raw, count=3)
                prior = hdict.get("x-forwarded-for")
            tr: TraceHop = self.tr
            if tr.strip:
                raw = strip_trace_lines(raw, hdict)
            # The peer line next to the X-Forwarded-* ones, last: a server sidecar cuts the three by
            # comparing the head's end (_cut_sidecar_lines). The received X-Forwarded-For goes into
            # the head as it is built, not into a value of its own first.
            if prior is None:
                self.head_bytes = b"%b%b%b%bx-forwarded-proto: http\r\nx-forwarded-for: %b\r\n\r\n" % (
                    raw,
                    self.rid_line,
                    tr.line,
                    self.ctx.tele.peer_line_for(self),
                    self.peer_ip_bytes,
                )
            else:
                self.head_bytes = b"%b%b%b%bx-forwarded-proto: http\r\nx-forwarded-for: %b, %b\r\n\r\n" % (
                    raw,
                    self.rid_line,
                    tr.line,
                    self.ctx.tele.peer_line_for(self),
                    prior.encode("latin-1"),
                    self.peer_ip_bytes,
                )
        else:
            self.head_bytes = self._rebuild_head(route)
        hp = cluster.hash_policy
        att = self.att = Attempts(
            cluster,
            route.retry,
            route.timeout,
            None if hp is None else hp.key(view),
            head.method,
            head.upgrade,
        )
        if self.replay is None:
            att.replayable = False
        if route.mirrors:
            if self.req_done:
                self._mirror()
        if "expect" in hdict and hdict["expect"].lower() == "100-continue" and not self.req_done:
            # Envoy's default: the proxy itself says 100 Continue, and does not forward Expect.
            self.dc.send_continue()
        self._act(att.start(self.ctx.now()))

    def _rebuild_head(self, route: Route) -> bytes:
        """The upstream request head from the parsed headers: hop-by-hop ones dropped, header ops and
        rewrites applied, X-Forwarded-* set."""
        head = self.head
        view: RequestView = self.view
        hdict = head.hdict
        authority = route.rewrite_authority or self.authority
        if "x-forwarded-for" in hdict:
            # replace the received one by one that also names the client we saw
            skip = _REQ_SKIP_XFF
            xff = hdict["x-forwarded-for"] + ", " + self.peer_ip
        else:
            skip = _REQ_SKIP
            xff = self.peer_ip
        if "connection" in hdict:
            skip = skip | connection_tokens(hdict)
        tr: TraceHop = self.tr
        if tr.strip:
            skip = skip | TRACE_HEADERS
        ops = self.req_ops
        if route.plain and ops is None and not self.req_chunked and not head.upgrade:
            # Fast path (no header ops, no rewrite, no framing change): one list, built in its final order.
            hdrs = [("host", authority)]
            hdrs += [h for h in head.headers if h[0] not in skip]
            hdrs.append(("x-forwarded-proto", "http"))
            hdrs.append(("x-forwarded-for", xff))
            hdrs += self.ctx.tele.upstream_headers(self, tr)
            path = view.path
        else:
            hdrs = [h for h in head.headers if h[0] not in skip]
            hdrs.append(("x-forwarded-proto", "http"))
            hdrs.append(("x-forwarded-for", xff))
            hdrs += self.ctx.tele.upstream_headers(self, tr)
            if self.req_chunked:
                hdrs.append(("transfer-encoding", "chunked"))
            if head.upgrade and "upgrade" in hdict:
                hdrs.append(("connection", "upgrade"))
                hdrs.append(("upgrade", hdict["upgrade"]))
            if ops is not None:  # the header-ops filter's (the destination's, then the route's)
                hdrs = ops.apply(hdrs)
            path = route.rewrite_path(view) or view.path
            hdrs.insert(0, ("host", authority))
        return serialize_request_head(head.method, path, hdrs)

    def on_request_body(self, data: bytes) -> None:
        if self.done:
            return  # answered already (an early response): nothing will send it, so nothing keeps it
        self.bytes_in += len(data)
        route: Route | None = self.route
        if route is not None and route.chain.request_body and not self._body_filters(data, False):
            return
        replay = self.replay
        if replay is not None:
            replay.append(data)
            if self.bytes_in > MAX_REPLAY:
                self.replay = None  # too big to replay: this request will not be retried
                if self.att is not None:
                    self.att.replayable = False
        conn = self.conn
        if conn is not None and not self.waiting:
            conn.send_body(data, self.req_chunked)
        else:
            self.unsent.append(data)
            self.unsent_bytes += len(data)
            if self.unsent_bytes > MAX_REPLAY:
                self.dc.pause("body")

    def on_request_end(self) -> None:
        if self.req_done:
            return  # a body-less request was complete at its head
        self.req_done = True
        route: Route | None = self.route
        if route is not None and route.chain.request_body and not self._body_filters(b"", True):
            return
        conn = self.conn
        if conn is not None and not self.waiting and self.req_chunked:
            conn.send_last_chunk()
        if route is not None and route.mirrors and self.head_bytes and not self.done:
            self._mirror()

    # ---- attempts: the machine decides (core/attempts.py), the exchange does the I/O ---------------

    def _act(self, action: int) -> None:
        """Perform what the attempts machine asked for (its arguments are on ``att``)."""
        att = self.att
        if att is None:
            return
        if action == CONNECT:
            self._connect(att)
        elif action == RETRY:
            self._abandon_upstream()
            delay = att.delay
            if delay > 0:
                self.timer = self.ctx.loop.call_later(delay, self._backoff_done)
                self._arm()
            else:
                self._act(att.backoff_done(self.ctx.now()))
        elif action == FAIL:
            self._abandon_upstream()
            self.local_flag(att.flag, att.extra)
        elif action == ABORT:
            self._abandon_upstream()
            self.flags.append(att.flag)
            self._abort_downstream()

    def _connect(self, att: Attempts) -> None:
        """Start the attempt the machine counted: a pooled connection to ``att.ep``."""
        cluster = att.cluster
        if att.try_deadline or att.deadline:
            self._arm()
        pools = self.ctx.pools
        # the server's own pools: native calls in the compiled build (through the Protocols each is a
        # lookup by name); tests' fakes go the generic way
        if isinstance(pools, PoolManager):
            own = pools.get(cluster.name)
            self.pool = own
            r = own.acquire(cluster, att.ep, self)  # type: ignore[arg-type]  # CONNECT: ep is set
        else:
            pool = self.pool = pools.get(cluster.name)
            r = pool.acquire(cluster, att.ep, self)  # type: ignore[arg-type]  # CONNECT: ep is set
        if r is PENDING:
            self.waiting = True
        elif r is OVERFLOW:
            self._act(att.on_overflow(self.ctx.now()))
        else:
            self._send(r)  # type: ignore[arg-type]  # not an int: a connection

    def on_pool_conn(self, conn: UpstreamConnection | None, error: str | None) -> None:
        """The pool's answer to an attempt that waited (PoolWaiter)."""
        if not self.waiting or self.done:
            # we gave up on this attempt (timeout, client gone): hand the connection back
            if conn is not None and self.pool is not None and self.cluster is not None:
                self.pool.release(conn, True, self.cluster, self.ctx.now())
            return
        self.waiting = False
        if conn is None:
            self._upstream_failed(error or "connect-failure", False)
        else:
            self._send(conn)

    def _send(self, conn: UpstreamConnection) -> None:
        self.conn = conn
        self.upstream_host = conn.host
        dn = self.dn
        if dn.write_paused if dn is not None else self.dc.write_paused:
            conn.transport.pause_reading()  # type: ignore[union-attr]
        body = self.replay if self.replay is not None else self.unsent
        conn.send(self, self.head_bytes, body, self.req_chunked, self.req_done, self.head.method == "HEAD")
        conn.native = self  # the connection's typed route to us (see UpstreamConnection.native)
        if self.unsent:
            self.unsent = []
            if self.unsent_bytes > MAX_REPLAY:
                self.dc.resume("body")
            self.unsent_bytes = 0

    def _backoff_done(self) -> None:
        self.timer = None
        att = self.att
        if att is not None and not self.done:
            self._act(att.backoff_done(self.ctx.now()))

    def _abandon_upstream(self) -> None:
        """Let go of the current attempt's upstream: leave the pool's queue, or close its connection
        (a response not read to its end leaves it unusable)."""
        if self.waiting:
            self.waiting = False
            if self.pool is not None:
                self.pool.cancel_wait(self)
        conn = self.conn
        if conn is not None:
            self.conn = None
            conn.close()

    def _upstream_failed(self, kind: str, reused: bool) -> None:
        """Connect failure, reset or protocol error of the current attempt's upstream."""
        if kind[:4] == "tls:":  # TLS handshake / peer identity failed (proxy/tls/mtls.py): UF with a reason
            self.tls_failure = kind[4:]
            kind = "connect-failure"
        else:
            self.tls_failure = None
        att = self.att
        if att is not None:
            self._act(att.on_error(kind, reused, self.ctx.now()))

    def _arm(self) -> None:
        """Wait in the listener's deadline sweep until the machine's next deadline."""
        att = self.att
        if att is None:
            return
        nxt = att.wake_at()
        if not nxt:
            return
        if self.dl_armed and self.dl_at <= nxt:
            return  # an earlier wake-up is armed; it re-arms for what is left when it fires
        self.dl_at = nxt
        self.dl_armed = True
        self.ctx.deadlines.add(self, nxt)

    def _on_deadline(self) -> None:
        self.dl_armed = False  # the sweep has taken us out of its set
        att = self.att
        if self.done or att is None:
            return
        action = att.on_deadline(self.ctx.now())
        if action == NOTHING:
            self._arm()
        else:
            self._act(action)

    # ---- upstream callbacks (from UpstreamConnection) -------------------------------------------

    def on_upstream_head(self, rh: ResponseHead) -> None:
        status = rh.status
        att = self.att
        if att is not None:
            if att.on_head(status, self.ctx.now()) == RETRY:
                self._act(RETRY)
                return
            if att.flag:
                self.flags.append(att.flag)  # URX or UO: a failure given up on goes to the client
        self.resp = rh
        self.status = status
        if not self.req_done:
            # As Envoy 1.40 (measured): a response that starts before its request is complete says
            # ``connection: close`` and the connection ends after it; the rest of the body is dropped.
            self.keep_alive = False
        route: Route = self.route
        if rh.passthrough is not None and (rh.body == LENGTH or rh.body == NO_BODY) and status != 101:
            # Nothing to change but hop-by-hop headers: forward the head as received (no header list).
            if not route.chain.response_headers and not self.ctx.live.draining:
                self.resp_started = True
                dn = self.dn
                if dn is not None:
                    dn.send_raw_head(rh.passthrough, self.keep_alive)
                else:
                    self.dc.send_raw_head(rh.passthrough, self.keep_alive)
                return
        hdrs = rh.headers
        hd = rh.hdict
        if status != 101:  # a 101 keeps Connection/Upgrade: they are the point of it
            skip = HOP_BY_HOP if "connection" not in hd else connection_tokens(hd)
            hdrs = [(n, v) for n, v in hdrs if n not in skip]
        filters = route.chain.response_headers
        if filters:
            self.resp_headers = hdrs
            if not self._response_filters(filters, 0):
                return
            hdrs = self.resp_headers
        self._head_out(status, hdrs)

    def _response_filters(self, filters: tuple[HttpFilter, ...], i: int) -> bool:
        """Response-header hooks from the ``i``-th on; False when one answered, or paused (an async
        plugin hook: the response is held, body and end included, until it completes)."""
        n = len(filters)
        while i < n:
            f = filters[i]
            i += 1
            try:
                r = f.on_response_headers(self)
            except Exception as exc:
                self._abandon_upstream()
                self.resp = None
                self._filter_failed(f, exc)
                return False
            if r is None:
                continue
            if isinstance(r, Resumable) and not r.future.done():
                self._hold_response(r.future)
                r.resume = partial(self._after_response_await, f, i)  # its filter resumes us (chain.py)
                return False
            if not isinstance(r, LocalReply) and (task := _awaited(r, self.ctx.loop)) is not None:
                self._hold_response(task)
                task.add_done_callback(partial(self._after_response_await, f, i))
                return False
            self._abandon_upstream()  # the filter answers instead of the upstream
            self.resp = None
            self.reply(r, f)
            return False
        return True

    def _hold_response(self, task: Any) -> None:
        """A response hook paused: the response (body and end included) waits for ``task``."""
        if self.held is None:
            self.held = []
        conn = self.conn
        if conn is not None and conn.transport is not None:
            conn.transport.pause_reading()
        self.task = task

    def _after_response_await(self, f: HttpFilter, i: int, task: Any) -> None:
        self.task = None
        if self.done or task.cancelled():
            return
        exc = task.exception()
        r = None if exc is not None else task.result()
        if exc is not None or r is not None:
            self.held = None
            self._abandon_upstream()
            self.resp = None
            if exc is not None:
                self._filter_failed(f, exc)
            elif isinstance(r, LocalReply):
                self.reply(r, f)
            else:
                self._filter_failed(f, TypeError(f"hook returned {type(r).__name__}, not None/LocalReply"))
            return
        if not self._response_filters(self.route.chain.response_headers, i):
            return
        held, end = self.held or [], self.held_end
        self.held = None
        self.held_end = None
        conn = self.conn
        if conn is not None and conn.transport is not None:
            conn.transport.resume_reading()
        self._head_out(self.status, self.resp_headers)
        for data in held:
            self.on_upstream_body(data)
        if end is not None:
            self.on_upstream_end(end)
        else:
            self.flush_out()

    def _head_out(self, status: int, hdrs: list[tuple[str, str]]) -> None:
        if self.ctx.live.draining:
            self.keep_alive = False  # tell the client to go away while we drain
        self.resp_started = True
        # The stream holds the head back: one write (one loopback segment) for head + body is the
        # cheapest path; the upstream connection flushes it at the end of the read that carried the
        # head (flush_out).
        rh = self.resp
        body = rh.body if rh is not None else NO_BODY
        dn = self.dn
        if dn is not None:
            self.keep_alive = dn.send_head(status, hdrs, body, self.keep_alive)
        else:
            self.keep_alive = self.dc.send_head(status, hdrs, body, self.keep_alive)

    def flush_out(self) -> None:
        dn = self.dn
        if dn is not None:
            dn.flush()
        else:
            self.dc.flush()

    def on_upstream_body(self, data: bytes) -> None:
        held = self.held
        if held is not None:
            held.append(data)
            return
        self.bytes_out += len(data)
        route: Route = self.route  # typed: the compiled build reads its fields natively
        filters = route.chain.response_body
        if filters:
            for f in filters:
                f.on_response_body(self, data, False)
        dn = self.dn
        if dn is not None:
            dn.send_data(data)
        else:
            self.dc.send_data(data)

    def on_upstream_end(self, conn: UpstreamConnection) -> None:
        if self.held is not None:
            self.held_end = conn
            return
        route: Route = self.route
        filters = route.chain.response_body
        if filters:
            for f in filters:
                f.on_response_body(self, b"", True)
        dn = self.dn
        if dn is not None:
            dn.send_end()
        else:
            self.dc.send_end()
        rh = self.resp
        now = self.ctx.now()
        self.conn = None
        att = self.att
        if att is not None:
            att.on_end(self.status, now)
        # A connection whose request body was not fully sent cannot carry another request.
        reusable = rh is not None and rh.keep_alive and self.req_done
        pool = self.pool
        cluster = self.cluster
        if pool is not None and cluster is not None:
            if isinstance(pool, ClusterPool):  # native, as in _connect
                pool.release(conn, reusable, cluster, now)
            else:
                pool.release(conn, reusable, cluster, now)
        self.finish(now)

    def on_upstream_upgrade(self, conn: UpstreamConnection, rest: bytes) -> None:
        rh = self.resp
        if rh is None or rh.status != 101:
            self.on_upstream_error(conn, "protocol-error")
            return
        self.conn = None
        if self.att is not None:
            self.att.on_upgrade()
        self.flush_out()
        self.dc.start_tunnel(conn, rest)
        self.finish()

    def on_upstream_error(self, conn: UpstreamConnection, kind: str) -> None:
        if self.done:
            return
        rh = self.resp
        if rh is not None and rh.body == UNTIL_EOF and kind == "reset":
            # close-delimited body: the close is its end
            self.on_upstream_end(conn)
            return
        self.conn = None
        self._upstream_failed(kind, conn.requests > 1)

    def on_upstream_paused(self, paused: bool) -> None:
        if paused:
            self.dc.pause("upstream")
        else:
            self.dc.resume("upstream")

    def on_downstream_paused(self, paused: bool) -> None:
        conn = self.conn
        if conn is not None and conn.transport is not None:
            if paused:
                conn.transport.pause_reading()
            else:
                conn.transport.resume_reading()

    def on_downstream_lost(self) -> None:
        if self.done:
            return
        self.flags.append(F.DC)
        self._abandon_upstream()  # the attempts machine lets go of what it holds in finish()
        self.keep_alive = False
        self.finish()

    def on_downstream_error(self, status: int, body: str, details: str) -> None:
        """The request failed to parse (a malformed chunk, trailers over the limit; or its head, for
        the exchange the listener makes to answer it): as Envoy, answer ``status`` and close when no
        response has started, else reset; either way DPE and ``details`` in the access log, and the
        upstream, which has a partial body, let go."""
        if self.done:
            return
        self.flags.append(F.DPE)
        self.details = details
        self._abandon_upstream()
        if self.resp_started:
            self._abort_downstream()
        else:
            self.keep_alive = False
            self.local(status, F.join(self.flags), body)

    # ---- endings --------------------------------------------------------------------------------

    def local_flag(self, flag: str, extra: str | None = None) -> None:
        status, body = F.LOCAL_REPLIES[flag]
        self.flags.append(flag)
        if extra:
            self.flags.append(extra)
        tls = self.tls_failure
        if tls is not None and flag == F.UF:
            reason, _, msg = tls.replace("\n", " ").partition(":")
            body = f"{body[:-1]}, transport failure reason: TLS error: {reason}: {msg}\n"
            extra_hdrs = [(F.FLAGS_HEADER, F.join(self.flags)), ("x-meshbus-tls-failure", reason)]
            self.send_local(status, body, extra_hdrs)
            return
        self.local(status, F.join(self.flags), body)

    def local(self, status: int, flag_text: str, body: str) -> None:
        self.send_local(status, body, [(F.FLAGS_HEADER, flag_text)] if flag_text != "-" else None)

    def send_local(
        self,
        status: int,
        body: str | bytes,
        extra: list[tuple[str, str]] | None,
        stopper: HttpFilter | None = None,
    ) -> None:
        """Answer here. The response-header hooks of the filters that ran before ``stopper`` (all of
        them for a reply of the router's, ``stopper`` None) see the reply's headers on the way out."""
        if self.done:
            return
        if not self.req_done or self.ctx.live.draining:
            self.keep_alive = False  # the rest of the request body is not read: close after the reply
        self.status = status
        hdrs = list(extra) if extra else []
        rid = self.head.hdict.get("x-request-id")
        if rid:
            hdrs.append(("x-request-id", rid))
        route: Route | None = self.route
        if route is not None and route.chain.response_headers:
            self.is_local = True
            self.resp_headers = hdrs
            for f in route.chain.response_filters_before(stopper):
                try:
                    f.on_response_headers(self)  # a reply already: a second one is not taken
                except Exception as exc:
                    log.error("filter %s failed on a local reply: %s: %s", f.name, type(exc).__name__, exc)
            hdrs = self.resp_headers
        self.bytes_out = self.dc.send_local(status, body, hdrs, self.keep_alive, self.head.method == "HEAD")
        self.resp_started = True
        self.finish()

    def _abort_downstream(self) -> None:
        self.keep_alive = False
        self.finish()
        self.dc.abort()

    def finish(self, now: float = 0.0) -> None:
        if self.done:
            return
        self.done = True
        att = self.att
        if att is not None:
            att.cancel()  # whatever ended the request, its endpoint, breaker and retry slots are freed
        t = self.timer
        if t is not None:
            t.cancel()
            self.timer = None
        task = self.task
        if task is not None:
            self.task = None
            task.cancel()
        ctx = self.ctx
        if self.dl_armed:
            self.dl_armed = False
            ctx.deadlines.discard(self)
        route: Route | None = self.route
        fl = F.join(self.flags) if self.flags else "-"
        duration = ((now or _monotonic()) - self.t0) * 1000.0
        if route is not None and route.chain.done:
            for f in route.chain.done:
                try:
                    f.on_done(self)
                except Exception as exc:
                    log.error("filter %s failed in on_done: %s: %s", f.name, type(exc).__name__, exc)
        try:
            ctx.tele.done(self, fl, duration)  # metrics, the span's end, the access-log record
        except Exception as exc:  # telemetry must never cost the response
            log.error("telemetry failed: %s: %s", type(exc).__name__, exc)
        dn = self.dn
        if dn is not None:
            dn.exchange_done(self, self.keep_alive)
        else:
            self.dc.exchange_done(self, self.keep_alive)

    # ---- mirror ---------------------------------------------------------------------------------

    def _mirror(self) -> None:
        ctx = self.ctx
        if self.replay is None and self.bytes_in:
            return  # body too large to copy: Envoy skips such shadows too
        body = b"".join(self.replay or ())
        for m in self.route.mirrors:
            if not m.should_mirror(_rand()):
                continue
            cluster = self.runtime.clusters.get(m.cluster)
            if cluster is None:
                continue
            if ctx.mirrors_in_flight >= MAX_MIRRORS_IN_FLIGHT:
                ctx.mirrors_dropped += 1
                continue
            MirrorSend(ctx, cluster, self._mirror_head(m), body).begin()

    def _mirror_head(self, m: Any) -> bytes:
        # Istio/Envoy send the shadow with "-shadow" appended to the host (before any port).
        data = self.head_bytes
        start = data.index(b"\r\nhost: ") + 8
        end = data.index(b"\r\n", start)
        authority = data[start:end].decode("latin-1")
        return data[:start] + m.shadow_authority(authority).encode("latin-1") + data[end:]
