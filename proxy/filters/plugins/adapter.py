"""``PluginFilter``: an SDK filter (meshbus.plugins) as one HttpFilter of the chain, with its failure policy.

The filter itself sits behind a ``Backend``: ``LocalBackend`` calls the instance in this process,
``RemoteBackend`` (remote.py) calls a meshbus-filter-host. Either returns what a hook returns:
None, an SDK ``LocalReply``, or an awaitable of those. This class turns that into what the chain
takes (proxy/filters/chain.py) and keeps the rules in one place:

- Failures: a hook that raises, an async hook or remote call past the Plugin's ``timeout``, or a
  host nobody answers for, is counted (``meshbus_plugin_errors_total{reason}``) and logged with the
  reason; FAIL_OPEN skips the filter for the rest of the request, FAIL_CLOSE answers 500 (503 when
  the host is unreachable) with response flag FF and ``plugin:<ns>/<name>:<reason>`` in the access
  log. A hook pauses only its own request (the exchange awaits it: a task for an async hook in this
  process; for a remote one, a ``Resumable`` the reply's callback settles, which resumes the
  exchange as the bus read that brought the reply ends: see ``_Settle``).
- Bodies: none unless the filter asked. Buffered request bodies are collected (up to the limit, else
  413) and handed to ``on_request_body`` once, before the request goes upstream; streamed chunks are
  shown as they pass (sync hooks only). Response body hooks observe.
- A local reply's response headers pass only hooks that cannot pause (sync, in process).
- The filter's ``Request`` is a ``LiveRequest``: its fields are read from the exchange when the
  filter reads them, its headers are the request's own list. A filter with a single hook (no body)
  gets one per call and nothing of the request is kept after it (a view the filter did not keep,
  and its header view if the filter did not keep that, is emptied and reused for its next call: a
  reference count tells); any other keeps its view (with ``state``) in
  ``ctx.filter_state`` until ``on_done``, which drops it (the view refers to the exchange).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import sys
import time
import types
from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol, cast

from meshbus.bus.read_end import after_read
from meshbus.plugins.api import HOOK_NAMES, MAX_BUFFER, BodyMode
from meshbus.plugins.api import LocalReply as SdkReply
from meshbus.plugins.http import Headers, Peer, Request, Response, _checked, _lower, _lowered
from meshbus.proxy.adapters.exchange import Exchange
from meshbus.proxy.codec.http1 import HOP_BY_HOP, RequestHead
from meshbus.proxy.core import flags as F
from meshbus.proxy.filters.chain import (
    HOOK_DONE,
    HOOK_REQUEST_BODY,
    HOOK_REQUEST_HEADERS,
    HOOK_RESPONSE_BODY,
    HOOK_RESPONSE_HEADERS,
    FilterContext,
    HttpFilter,
    LocalReply,
    Resumable,
)
from meshbus.telemetry.metrics import HistogramChild, Tally

log = logging.getLogger(__name__)

_clock: Final = time.perf_counter
"""The hooks' clock (Final: a C static when compiled; ``time.perf_counter`` is a module lookup each call)."""

_refs: Final = sys.getrefcount
"""How many references an object has: the direct path reuses a request view nobody else refers to."""

LOG_EVERY: Final = 1.0
"""Failures of one Plugin are logged at most once a second (with how many were not)."""


class FilterUnreachable(Exception):
    """No filter host answered (none live, or the bus is down): FAIL_CLOSE answers 503."""


class RemoteFilterError(Exception):
    """The host ran the filter and it failed there (raised, refused its config)."""


class Backend(Protocol):
    """Where the filter runs. ``hooks``: the SDK hooks it implements; ``is_async``: those that may
    pause; ``call`` runs one and returns None, an SDK LocalReply, or an awaitable of them."""

    hooks: frozenset[str]
    is_async: frozenset[str]
    request_body: BodyMode
    response_body: BodyMode

    @property
    def ready(self) -> bool:
        """Whether ``hooks`` and the body modes are known (a remote host may not have said yet)."""
        ...

    async def wait_ready(self) -> None: ...

    def call(self, hook: str, req: Request, resp: Response | None, body: bytes, end: bool) -> Any: ...

    def close(self) -> None: ...


class LocalBackend:
    """The filter instance, in this process."""

    def __init__(
        self, instance: Any, hooks: tuple[str, ...], request_body: BodyMode, response_body: BodyMode
    ):
        self.instance = instance
        self.hooks = frozenset(hooks)
        self.is_async = frozenset(h for h in hooks if inspect.iscoroutinefunction(getattr(instance, h)))
        self.request_body = request_body
        self.response_body = response_body
        self.fns: dict[str, Callable[..., Any]] = {h: getattr(instance, h) for h in hooks}

    ready = True

    async def wait_ready(self) -> None:
        return None

    def call(self, hook: str, req: Request, resp: Response | None, body: bytes, end: bool) -> Any:
        fn = self.fns[hook]
        if hook == "on_request_headers":
            return fn(req)
        if hook == "on_request_body":
            return fn(req, body, end)
        if hook == "on_response_body":
            return fn(req, resp, body, end)
        return fn(req, resp)  # on_response_headers, on_done

    def close(self) -> None:
        self.instance.close()


TIMED_FIRST: Final = 64
"""A hook's first TIMED_FIRST plain (sync, in-process) calls are all timed, ..."""
TIME_EVERY: Final = 16
"""... and after them one in TIME_EVERY: reading the clock twice and filling the histogram cost more
than a no-op hook itself (bench/plugins.py --callgrind). The histogram is then a sample of the calls
(its count says how many were timed); the call counter counts every call. Awaited hooks (async, and
every remote call) are always timed: their cost dwarfs the clock's."""


class HookStats:
    """One hook of one Plugin: its call counter and time histogram, made on the first call (a hook
    never called has no series). Calls are counted in the counter's ``Tally`` (a native int the
    counter adds in when it is read), not by ``CounterChild.inc``, which cost a quarter of a no-op
    hook's call."""

    __slots__ = ("_calls", "_plugin", "_time", "_timed", "hook")

    def __init__(self, plugin: PluginStats, hook: str) -> None:
        self._plugin = plugin
        self.hook = hook
        self._calls: Tally | None = None
        self._time: HistogramChild | None = None
        self._timed = 0
        """Plain calls so far, up to TIMED_FIRST + TIME_EVERY (then back to TIMED_FIRST)."""

    def start(self) -> float:
        """Before a plain (sync, in-process) call: the clock if this call is to be timed (see
        TIMED_FIRST, TIME_EVERY), else -1.0 (``record`` then only counts it)."""
        n = self._timed + 1
        if n <= TIMED_FIRST:
            self._timed = n
            return _clock()
        if n == TIMED_FIRST + TIME_EVERY:
            self._timed = TIMED_FIRST
            return _clock()
        self._timed = n
        return -1.0

    def record(self, t0: float) -> None:
        """One call, timed from ``t0`` (``_clock``) to now when ``t0`` >= 0, else only counted."""
        calls = self._calls
        hist = self._time
        if calls is None or hist is None:
            p = self._plugin
            if p.calls is None or p.time is None:
                return
            made: Tally = p.calls.tally(p.ref, self.hook)  # typed: ``n`` is then a native field
            observed: HistogramChild = p.time.labels(p.ref, self.hook)
            calls = self._calls = made
            hist = self._time = observed
        calls.n += 1
        if t0 >= 0.0:
            hist.observe((_clock() - t0) * 1000.0)


class PluginStats:
    """Per Plugin: the metric families it records into (None: nothing recorded), and a
    ``HookStats`` per hook, shared by the Plugin's inbound and outbound filters."""

    __slots__ = ("_errors", "calls", "hooks", "ref", "time")

    def __init__(self, ref: str, calls: Any = None, errors: Any = None, time_ms: Any = None) -> None:
        self.ref = ref
        self.calls = calls
        self._errors = errors
        self.time = time_ms
        self.hooks: dict[str, HookStats] = {h: HookStats(self, h) for h in HOOK_NAMES}

    def error(self, reason: str, action: str) -> None:
        if self._errors is not None:
            self._errors.labels(self.ref, reason, action).inc()


# Names whose line the exchange handles itself (framing, hop-by-hop, its own X-Forwarded-*): a filter
# that adds one makes the head be rebuilt, as any other edit does.
_NOT_APPENDED: Final = HOP_BY_HOP | {
    "host",
    "content-length",
    "expect",
    "x-forwarded-for",
    "x-forwarded-proto",
}
_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+")


class _HeadHeaders(Headers):
    """``req.headers`` over the parsed request head's own list: an edit also updates the head's
    lowercase map. A header the request did not have, added (``set``/``add``), is appended to the
    head as received (``RequestHead.raw``), which can then still go upstream without a rebuild; any
    other edit drops that head, and the exchange rebuilds it from the list."""

    __slots__ = ("_head",)

    def __init__(self, head: RequestHead) -> None:  # typed: compiled, its fields are read natively
        self._items = head.headers  # Headers.__init__'s work, without a call for its defaults
        self._on_change = None
        self._head = head

    def bind(self, head: RequestHead) -> None:
        """Be the view of ``head`` (a spare view, reused: see ``LiveRequest.headers``)."""
        self._items = head.headers
        self._head = head

    def unbind(self) -> None:
        """Refer to no request (kept as a spare by a view nobody else refers to)."""
        self._items = _NO_ITEMS
        self._head = _NO_HEAD

    def get(self, name: str, default: str | None = None) -> str | None:
        hdict = self._head.hdict
        if len(hdict) == len(self._items):
            # No name occurs twice (the map is kept in step with the list): the map's value is the
            # first and only one, found by one lookup instead of a scan of the list. The map's names
            # are lowercase: a name found as given needs no lowercase form looked up.
            v = hdict.get(name)
            if v is not None:
                return v
            memo = _memo
            if name is memo.name:  # the name of the last read, missed again (a header the request lacks)
                n = memo.lower
            else:
                found = _lowered.get(name)
                n = found if found is not None else _lower(name)
                if type(name) is str:  # a str subclass's dealloc could run code between the stores
                    memo.name = name
                    memo.lower = n
            if n is not name:  # not lowercase as given (``_lowered`` maps a lowercase name to itself)
                v = hdict.get(n)
            return default if v is None else v
        lower = _lowered.get(name)
        return super().get(lower if lower is not None else _lower(name), default)

    def set(self, name: str, value: str) -> None:
        # Setting a name the request does not have (the usual case) needs no scan of the list for
        # values to drop, nor a second look in the map: the head's lowercase map says it is new. The
        # name's ``_Line`` (the last set's, or one cache lookup) gives its check, lowercase form, line
        # appended to the head as received by one concatenation, and the list's pair.
        text = value if type(value) is str else str(value)
        memo = _memo
        line = memo.line
        if line.name is not name:
            found = _lines.get(name)
            line = found if found is not None else _line(name)
            memo.line = line
        data = line.take(name, text)  # raises for a CR, LF or NUL, before anything changes
        n = line.lower
        head = self._head
        hdict = head.hdict
        had = len(hdict)
        hdict.setdefault(n, text)  # one lookup both asks and, for a new name, enters it
        if len(hdict) == had:
            super().set(n, text)
            return
        self._items.append(line.pair)  # (n, text): the same tuple at every request that sets this value
        raw = head.raw
        if raw is None or data is None:
            self._rejoin(n)
            return
        head.raw = raw + data

    def _changed(self, name: str, checked: bool = False) -> None:
        headers = self._head.headers
        if headers and name not in self._head.hdict:
            k, value = headers[-1]
            if (
                k == name
                and (checked or ("\r" not in value and "\n" not in value))
                and self._append(name, value, _append_prefix(name))
            ):
                return
        self._rejoin(name)

    def _append(self, name: str, value: str, prefix: bytes | None) -> bool:
        """Append the new line ``name: value`` to the head as received, if it may be (``prefix``,
        ``_append_prefix``'s, is not None), else False."""
        head = self._head
        raw = head.raw
        if raw is None or prefix is None:
            return False
        data = _line_bytes(prefix, value)
        if data is None:
            return False  # the rebuild serializes it (and fails) as it did before
        head.hdict[name] = value
        head.raw = raw + data
        return True

    def _rejoin(self, name: str) -> None:
        """``name``'s values joined into the head's map, and the head dropped: it is rebuilt."""
        head = self._head
        values = [v for k, v in head.headers if k == name]
        if values:
            head.hdict[name] = ",".join(values)
        else:
            head.hdict.pop(name, None)
        head.raw = None


_NO_ITEMS: Final[list[tuple[str, str]]] = []
_NO_HEAD: Final = RequestHead("", "", "", _NO_ITEMS, {}, False, False, 0, 0)
"""A spare header view's list and head: of no request (nothing edits them: nobody refers to a spare)."""

_prefixes: Final[dict[str, bytes | None]] = {}  # Final: a C static when compiled, not a globals lookup


def _append_prefix(name: str) -> bytes | None:
    """``b"name: "`` for a header line a filter may append to the head as received, else None."""
    prefix = _prefixes.get(name, b"")
    if prefix == b"":
        ok = name not in _NOT_APPENDED and _TOKEN.fullmatch(name) is not None
        prefix = (name + ": ").encode("ascii") if ok else None
        if len(_prefixes) >= 256:  # names come from filters' code: few, but do not grow without end
            _prefixes.clear()
        _prefixes[name] = prefix
    return prefix


def _line_bytes(prefix: bytes, value: str) -> bytes | None:
    """``b"name: value\r\n"`` (None when the value is not latin-1: the rebuild reports it). mypyc's
    concatenation of bytes is two copies: cheaper than ``b"".join`` of a tuple or an f-string."""
    try:
        encoded = value.encode("latin-1")
    except UnicodeEncodeError:
        return None
    return prefix + encoded + b"\r\n"


class _Line:
    """A name ``req.headers.set`` was given (``name``, as given), checked: its lowercase form, its line
    prefix (``_append_prefix``: None when its line may not be appended to the head as received), and
    the last value set with it, that value's line and its ``(lower, value)`` pair for the header
    list. A filter that sets the same value at every request (a constant or a value from its config,
    the usual header filter, or a request's header copied while clients send the same one) has it
    checked and encoded once, and its pair made once (a tuple is immutable: the lists of many
    requests may hold the same one; an equal str serves as well as the one given)."""

    __slots__ = ("data", "lower", "name", "pair", "prefix", "value")

    def __init__(self, name: str | None, lower: str) -> None:
        self.name = name
        self.lower = lower
        self.prefix = _append_prefix(lower)
        self.value: str | None = None
        self.data: bytes | None = None
        # Any, not tuple[str, str]: compiled, a typed tuple field is a C struct, boxed anew at each read.
        self.pair: Any = (lower, "")

    def take(self, name: str, text: str) -> bytes | None:
        """``text`` checked (ValueError for a CR, LF or NUL) and its line, when it may be appended;
        ``pair`` is then ``(lower, text)`` (or the pair of an equal value set before)."""
        last = self.value
        if text is last:  # the very object checked and encoded before (str is immutable)
            return self.data
        # Equal text in another object: a value parsed from each request (the usual copy of a
        # header into another: a client sends the same User-Agent at every request) was checked and
        # encoded when it came first. One comparison instead of three scans, an encoding, two
        # concatenations and a pair (bench/plugins.py --callgrind: ~1,100 instructions a set).
        if last is not None and text == last:
            return self.data
        if "\r" in text or "\n" in text or "\0" in text:
            _checked(name, text)  # raises, with the message every edit gives
        prefix = self.prefix
        data = None if prefix is None else _line_bytes(prefix, text)
        self.value = text
        self.data = data
        self.pair = (self.lower, text)
        return data


_lines: Final[dict[str, _Line]] = {}
"""Names ``req.headers.set`` was given (as the filter spells them), checked."""


def _line(name: str) -> _Line:
    """``name`` checked (``_checked`` raises for a character HTTP does not allow) and cached: a filter
    sets the same few names."""
    line = _Line(name, _checked(name, ""))
    if len(_lines) >= 256:  # names come from filters' code: few, but do not grow without end
        _lines.clear()
    _lines[name] = line
    return line


class _Memo:
    """The name of the last ``set`` (its ``line``) and of the last ``get`` that missed (``name`` and
    its ``lower`` form), compared by identity: a filter passes the same name object (a constant of
    its code) at every request, and an identity test costs a fraction of a dict lookup. One filter
    runs at a time, and no other code runs between the stores of a pair."""

    __slots__ = ("line", "lower", "name")

    def __init__(self) -> None:
        self.line = _Line(None, "")  # no name is None: the first set looks its name up
        self.name: str | None = None
        self.lower = ""


_memo: Final = _Memo()


_NO_CTX: Final[Any] = None
"""A released view's context: none (typed Any so that the field's type stays the one every
property reads)."""


class LiveRequest(Request):
    """The ``Request`` a filter sees, over the live request (``ctx``): each field is read when the
    filter reads it, so a filter that reads little costs little. Also what the adapter keeps for
    one filter and one request: ``skipped`` (failed open) and the buffered body."""

    __slots__ = (
        "_ctx",
        "_f",
        "_live_headers",
        "_spare_headers",
        "body",
        "body_size",
        "body_waiter",
        "skipped",
    )

    def __init__(self, ctx: FilterContext, f: PluginFilter) -> None:
        self._ctx = ctx
        self._f = f
        self._live_headers: _HeadHeaders | None = None
        self._spare_headers: _HeadHeaders | None = None
        """The direct path's header view of an earlier call, which nobody kept (see ``release``)."""
        self._state = None
        self.skipped = False
        self.body: list[bytes] | None = None
        self.body_size = 0
        self.body_waiter: asyncio.Future[bytes] | None = None

    @property
    def method(self) -> str:
        m: str = self._ctx.head.method
        return m

    @property
    def path(self) -> str:
        p: str = self._ctx.view.path
        return p

    @property
    def authority(self) -> str:
        a: str = self._ctx.view.authority
        return a

    @property
    def headers(self) -> Headers:
        h = self._live_headers
        if h is None:
            ctx = self._ctx
            head: RequestHead
            if isinstance(ctx, Exchange):
                head = ctx.head  # compiled: the exchange's own field, read natively
            else:
                head = ctx.head  # another context (tests): through the protocol, looked up by name
            h = self._spare_headers
            if h is None:
                h = _HeadHeaders(head)
            else:
                self._spare_headers = None
                h.bind(head)
            self._live_headers = h
        return h

    @property
    def scheme(self) -> str:
        s: str = self._ctx.head.hdict.get("x-forwarded-proto", "http")
        return s

    @property
    def request_id(self) -> str | None:
        r: str | None = self._ctx.head.hdict.get("x-request-id")
        return r

    @property
    def route(self) -> str:
        n: str = self._ctx.route.name
        return n

    @property
    def source(self) -> Peer:
        f = self._f
        if f.inbound:
            return f.peer(self._ctx.dc.peer_principal or "", True)
        return f.workload

    @property
    def destination(self) -> Peer:
        f = self._f
        if f.inbound:
            return f.workload
        ctx = self._ctx
        dest = ctx.dest
        return f.peer(dest.host if dest is not None else ctx.view.authority, False)

    @property
    def claims(self) -> Mapping[str, Any] | None:
        # Read at each access: an earlier filter (the JWT one) may set them after this view was made.
        state = self._ctx.filter_state
        auth = state.get("request.auth") if state is not None else None
        if type(auth) is dict:  # the JWT filter's {"principal", "audiences", "presenter", "claims"}
            claims = auth.get("claims")
            return claims if type(claims) is dict else None
        return None

    def release(self, unshared: int) -> None:
        """Refer to nothing of the request that was seen (the direct path keeps the view for the
        next one, which sets ``_ctx`` again): the exchange, its head and the filter's state can go.
        The header view is kept for the next call when the filter kept no reference to it: when its
        count is ``unshared``, ``_headers_refs`` of a view only the slot refers to."""
        self._ctx = _NO_CTX
        if self._live_headers is not None:
            if self._headers_refs() == unshared:
                h = self._live_headers
                h.unbind()
                self._spare_headers = h
            self._live_headers = None
        self._state = None

    def _headers_refs(self) -> int:
        """The header view's reference count, as this method sees it (0: there is none)."""
        h = self._live_headers
        return 0 if h is None else _refs(h)

    def _unshared_headers_refs(self) -> int:
        """``_headers_refs`` of a header view only the slot refers to (the view is made, counted and
        dropped): the same method counting the same holders, however the build holds locals."""
        self._live_headers = _HeadHeaders(_NO_HEAD)
        n = self._headers_refs()
        self._live_headers = None
        return n

    def add_body(self, data: bytes) -> None:
        body = self.body
        if body is None:
            body = self.body = []
        body.append(data)
        self.body_size += len(data)

    def take_body(self) -> bytes:
        body = b"".join(self.body or ())
        self.body = None
        return body


class PluginFilter(HttpFilter):
    """One Plugin on one side (``direction``: inbound/outbound) of the proxy. See the module doc."""

    def __init__(
        self,
        ref: str,
        phase: int,
        priority: int,
        backend: Backend,
        *,
        direction: str,
        workload: Peer,
        fail_open: bool,
        timeout: float,
        stats: PluginStats,
        remote: bool = False,
    ) -> None:
        b = backend
        # A remote filter's hooks are known once a host described it (bindings asks before a build).
        # Until then every hook point is taken, and those it does not implement return at once; the
        # binding is made again, with only its own hook points, on the next build after the answer.
        self.described = not remote or b.ready
        if not self.described:
            hooks = HOOK_REQUEST_HEADERS | HOOK_REQUEST_BODY | HOOK_RESPONSE_HEADERS | HOOK_RESPONSE_BODY
            hooks |= HOOK_DONE
        else:
            hooks = 0
            if "on_request_headers" in b.hooks or b.request_body.mode == "buffered":
                hooks |= HOOK_REQUEST_HEADERS
            if b.request_body.wanted:
                hooks |= HOOK_REQUEST_BODY
            if "on_response_headers" in b.hooks:
                hooks |= HOOK_RESPONSE_HEADERS
            if b.response_body.wanted:
                hooks |= HOOK_RESPONSE_BODY
            if "on_done" in b.hooks:
                hooks |= HOOK_DONE
        # One call per request (a single hook, no body): its view is made for the call and dropped.
        # Any other keeps its view for the request, and on_done drops it.
        self.single = self.described and hooks in (HOOK_REQUEST_HEADERS, HOOK_RESPONSE_HEADERS, HOOK_DONE)
        if not self.single:
            hooks |= HOOK_DONE
        super().__init__(f"plugin:{ref}", phase, priority, hooks)
        self.ref = ref
        self.backend = backend
        self.direction = direction
        self.inbound = direction == "inbound"
        self.workload = workload
        self.fail_open = fail_open
        self.timeout = timeout
        self.stats = stats
        self.remote = remote
        self._logged_at = 0.0
        self._unlogged = 0
        self._done_tasks: set[asyncio.Task[Any]] = set()
        self._peers: dict[str, Peer] = {}
        # The single hook's function and stats, for the direct path. A hook that is a plain method
        # is called as its function with the instance (``_fn_self``): one call, not the bound
        # method's call that then calls the function with the instance put before the arguments.
        self._fn: Callable[..., Any] | None = None
        self._fn_self: object = None
        # A remote backend's ``begin`` (proxy/filters/plugins/remote.py): calls resolved by callback
        self._begin: Callable[..., bool] | None = getattr(backend, "begin", None) if remote else None
        self._fn_stats = stats.hooks["on_request_headers"]
        # The direct path's request view of the last call, when nothing else kept it: the next call
        # reuses it instead of making one (an object made and freed cost a fifth of a no-op hook).
        self._spare: LiveRequest | None = None
        self._spare_refs = 0
        """The spare's reference count as ``on_request_headers`` takes it (0: not counted yet)."""
        self._unshared = 0
        """``LiveRequest._headers_refs`` of a header view nobody but its request refers to."""
        if self.single and isinstance(backend, LocalBackend):
            self._unshared = LiveRequest(_NO_CTX, self)._unshared_headers_refs()
            hook = next(iter(backend.hooks))
            fn = backend.fns[hook]
            if isinstance(fn, types.MethodType) and isinstance(fn.__func__, types.FunctionType):
                self._fn, self._fn_self = fn.__func__, fn.__self__
            else:
                self._fn = fn
            self._fn_stats = stats.hooks[hook]

    # ---- per-request view ----------------------------------------------------------------------

    def _state(self, ctx: FilterContext) -> LiveRequest:
        """This request's view, kept in ``ctx.filter_state`` (filters with more than one call)."""
        fs = ctx.filter_state
        if fs is None:
            fs = ctx.filter_state = {}
        st: LiveRequest | None = fs.get(self.name)
        if st is None:
            st = fs[self.name] = LiveRequest(ctx, self)
        return st

    def peer(self, key: str, principal: bool) -> Peer:
        """The other end, made once per principal (inbound) or service host (outbound): peers are
        immutable, and a view per request would cost an object each."""
        peer = self._peers.get(key)
        if peer is None:
            if len(self._peers) >= 1024:
                self._peers.clear()
            if principal:
                peer = Peer.from_principal(key or None)
            else:
                parts = key.split(".")
                peer = Peer(namespace=parts[1] if len(parts) > 2 else None, service=key)
            self._peers[key] = peer
        return peer

    # ---- running one hook ----------------------------------------------------------------------

    def _run(self, st: LiveRequest, hook: str, resp: Response | None, body: bytes, end: bool) -> Any:
        """Run ``hook``: a chain result (None / LocalReply) or an awaitable of one."""
        begin = self._begin
        if begin is not None:
            return self._run_remote(begin, st, hook, resp, body, end)
        t0 = self.stats.hooks[hook].start()
        try:
            r = self.backend.call(hook, st, resp, body, end)
        except Exception as exc:
            return self._failed(st, hook, "error", exc)
        if r is None:
            self.stats.hooks[hook].record(t0)
            return None
        return self._outcome(st, hook, r, t0)

    def _run_remote(
        self,
        begin: Callable[..., bool],
        st: LiveRequest,
        hook: str,
        resp: Response | None,
        body: bytes,
        end: bool,
    ) -> Any:
        """A remote call: a ``Resumable`` of the chain result, settled by the reply's callback in
        nats-py's read loop (or the timeout's) with the failure policy applied; no task runs for it."""
        t0 = _clock()
        # the exchange's loop (the running one): asyncio.get_running_loop() is a getpid() system
        # call each time on CPython 3.11, one a remote call (strace of a paced proxy). Read as Any:
        # the listener's class is not checked (tests hand the adapter stand-ins).
        listener: Any = cast(Any, st._ctx).ctx
        out = Resumable(listener.loop.create_future())
        try:
            waits = begin(hook, st, resp, body, end, _Settle(self, st, hook, t0, out))
        except FilterUnreachable as exc:
            return self._failed(st, hook, "unreachable", exc)
        except Exception as exc:
            return self._failed(st, hook, "error", exc)
        if not waits:  # one-way: sent
            self.stats.hooks[hook].record(t0)
            return None
        return out

    def settle(
        self, st: LiveRequest, hook: str, r: Any, exc: BaseException | None, t0: float
    ) -> LocalReply | None:
        """A remote hook's outcome as a chain result (the failure policy applied)."""
        if exc is not None:
            if isinstance(exc, TimeoutError):
                return self._failed(st, hook, "timeout", TimeoutError(f"no answer within {self.timeout:g}s"))
            if isinstance(exc, FilterUnreachable):
                return self._failed(st, hook, "unreachable", exc)
            return self._failed(st, hook, "error", exc)
        self.stats.hooks[hook].record(t0)
        if r is None:
            return None
        if isinstance(r, SdkReply):
            return self._reply(r)
        return self._failed(st, hook, "error", TypeError(f"{hook} returned {type(r).__name__}"))

    def _outcome(self, st: LiveRequest, hook: str, r: Any, t0: float) -> Any:
        """What a hook that did not return None returned, for the chain."""
        if isinstance(r, SdkReply):
            self.stats.hooks[hook].record(t0)
            return self._reply(r)
        if inspect.isawaitable(r):
            return self._guarded(st, hook, r, t0 if t0 >= 0.0 else _clock())  # awaited: always timed
        return self._failed(st, hook, "error", TypeError(f"{hook} returned {type(r).__name__}"))

    async def _guarded(self, st: LiveRequest, hook: str, aw: Any, t0: float) -> LocalReply | None:
        """An async hook in this process, within the Plugin's timeout."""
        try:
            r = await asyncio.wait_for(aw, self.timeout)
        except Exception as exc:
            return self.settle(st, hook, None, exc, t0)
        return self.settle(st, hook, r, None, t0)

    def _reply(self, r: SdkReply) -> LocalReply:
        return LocalReply(r.status, r.body, tuple(r.headers), details=r.details or f"plugin:{self.ref}")

    def _failed(self, st: LiveRequest, hook: str, reason: str, exc: BaseException) -> LocalReply | None:
        action = "fail_open" if self.fail_open else "fail_close"
        self.stats.error(reason, action)
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY:
            more = f" (and {self._unlogged} more since the last report)" if self._unlogged else ""
            log.warning(
                "plugin %s %s %s: %s: %s; %s%s",
                self.ref, hook, reason, type(exc).__name__, exc, action.replace("_", " "), more,
            )  # fmt: skip
            self._logged_at, self._unlogged = now, 0
        else:
            self._unlogged += 1
        if self.fail_open:
            st.skipped = True
            return None
        status = 503 if reason == "unreachable" else 500
        text = "filter host unreachable\n" if reason == "unreachable" else "filter error\n"
        return LocalReply(status, text, flag=F.FF, details=f"plugin:{self.ref}:{reason}")

    # ---- the chain's hooks ---------------------------------------------------------------------

    def on_request_headers(self, ctx: FilterContext) -> Any:
        fn = self._fn
        if fn is not None:  # the direct path: a local filter whose one hook this is
            req = self._spare
            spare = req is not None
            if req is None:
                req = LiveRequest(ctx, self)
            else:
                self._spare = None  # taken: a call made from inside the hook makes its own
                req._ctx = ctx
            # Counted here and after the call by the same expression, so that the count does not
            # depend on how the compiler holds ``req``: equal after, the filter kept no reference.
            # A spare is held here by this function alone (nobody kept it), so its count is the
            # same at every call: counted once.
            refs = self._spare_refs
            if not spare or refs == 0:
                refs = _refs(req)
                if spare:
                    self._spare_refs = refs
            t0 = self._fn_stats.start()
            inst = self._fn_self
            try:
                r = fn(req) if inst is None else fn(inst, req)
            except Exception as exc:
                return self._failed(req, "on_request_headers", "error", exc)
            if r is None:
                self._fn_stats.record(t0)
                if _refs(req) == refs:  # nothing else refers to it: it serves the next call
                    req.release(self._unshared)
                    self._spare = req
                return None
            return self._outcome(req, "on_request_headers", r, t0)
        st = LiveRequest(ctx, self) if self.single else self._state(ctx)  # single: a remote one
        if not self.backend.ready:
            return self._when_ready(st, ctx)
        return self._request_headers(st, ctx)

    async def _when_ready(self, st: LiveRequest, ctx: FilterContext) -> LocalReply | None:
        """A remote filter no host has described yet: ask (within the timeout), then go on."""
        try:
            await asyncio.wait_for(self.backend.wait_ready(), self.timeout)
        except TimeoutError:
            return self._failed(st, "on_request_headers", "unreachable", TimeoutError("no host described it"))
        except FilterUnreachable as exc:
            return self._failed(st, "on_request_headers", "unreachable", exc)
        r = self._request_headers(st, ctx)
        if inspect.isawaitable(r):
            r = await r
        return r

    def _request_headers(self, st: LiveRequest, ctx: FilterContext) -> Any:
        r = None
        if "on_request_headers" in self.backend.hooks:
            r = self._run(st, "on_request_headers", None, b"", True)
        if self.backend.request_body.mode != "buffered":
            st.body = None  # chunks kept while a remote filter's wishes were unknown: not wanted
            return r
        if r is not None and not inspect.isawaitable(r):
            return r  # answered (or failed closed) before the body was wanted
        return self._then_body(st, ctx, r)

    async def _then_body(self, st: LiveRequest, ctx: FilterContext, first: Any) -> LocalReply | None:
        """Buffered request body: after the header hook, wait for the whole body, then show it."""
        if first is not None:
            r = await first
            if r is not None or st.skipped:
                return r
        if ctx.head.body == 0:  # no body at all: the hook sees it empty
            body = b""
        else:
            if st.body_waiter is None:
                st.body_waiter = asyncio.get_running_loop().create_future()
            body = await st.body_waiter
        if st.skipped:
            return None
        r = self._run(st, "on_request_body", None, body, True)
        if inspect.isawaitable(r):
            r = await r
        return r

    def on_request_body(self, ctx: FilterContext, data: bytes, end: bool) -> Any:
        st = self._state(ctx)
        if st.skipped:
            return None
        b = self.backend
        mode = b.request_body if b.ready else BodyMode("buffered", MAX_BUFFER)  # keep it until we know
        if mode.mode == "none":
            return None
        if mode.mode == "streamed":
            if data or end:
                r = self._run(st, "on_request_body", None, data, end)
                if inspect.isawaitable(r):
                    r.close()  # type: ignore[attr-defined]
                    return self._failed(
                        st, "on_request_body", "error", TypeError("a streamed body hook paused")
                    )
                return r
            return None
        st.add_body(data)
        if st.body_size > mode.limit:
            return LocalReply(413, "payload too large\n", details=f"plugin:{self.ref}:body_too_large")
        if end:
            body = st.take_body()
            waiter = st.body_waiter
            if waiter is None:
                waiter = st.body_waiter = asyncio.get_running_loop().create_future()
            if not waiter.done():
                waiter.set_result(body)
        return None

    def on_response_headers(self, ctx: FilterContext) -> Any:
        fn = self._fn
        if fn is not None:  # the direct path (see on_request_headers)
            if ctx.is_local and "on_response_headers" in self.backend.is_async:
                return None  # a local reply is on its way out: nothing may pause it
            req = LiveRequest(ctx, self)
            t0 = self._fn_stats.start()
            try:
                resp = Response(ctx.status, Headers(ctx.resp_headers))
                inst = self._fn_self
                r = fn(req, resp) if inst is None else fn(inst, req, resp)
            except Exception as exc:
                return self._failed(req, "on_response_headers", "error", exc)
            if r is None:
                self._fn_stats.record(t0)
                return None
            return self._outcome(req, "on_response_headers", r, t0)
        st = LiveRequest(ctx, self) if self.single else self._state(ctx)
        if st.skipped or "on_response_headers" not in self.backend.hooks:
            return None
        if ctx.is_local and (self.remote or "on_response_headers" in self.backend.is_async):
            return None  # a local reply is on its way out: nothing may pause it
        resp = Response(ctx.status, Headers(ctx.resp_headers))
        return self._run(st, "on_response_headers", resp, b"", True)

    def on_response_body(self, ctx: FilterContext, data: bytes, end: bool) -> None:
        st = self._state(ctx)
        mode = self.backend.response_body
        if st.skipped or not mode.wanted:
            return
        resp = Response(ctx.status, Headers(list(getattr(ctx, "resp_headers", None) or ())))
        if mode.mode == "buffered":
            if st.body_size <= mode.limit:
                st.add_body(data)
            if not end:
                return
            data = st.take_body()[: mode.limit]
        elif not data and not end:
            return
        self._observe(st, "on_response_body", resp, data, end)

    def on_done(self, ctx: FilterContext) -> None:
        if self.single:
            st = LiveRequest(ctx, self)
        else:
            # The kept view refers to the exchange, which refers to it: drop it, so no cycle is left
            # for the collector (a hook still running keeps its own reference).
            fs = ctx.filter_state
            kept: LiveRequest | None = fs.pop(self.name, None) if fs is not None else None
            st = kept if kept is not None else LiveRequest(ctx, self)
        if "on_done" not in self.backend.hooks:
            return
        resp = Response(ctx.status, Headers(list(getattr(ctx, "resp_headers", None) or ())))
        self._observe(st, "on_done", resp, b"", True)

    def _observe(self, st: LiveRequest, hook: str, resp: Response, data: bytes, end: bool) -> None:
        """A hook whose result cannot change the response: an awaitable runs on in a task of its own."""
        r = self._run(st, hook, resp, data, end)
        if inspect.isawaitable(r):
            task = asyncio.ensure_future(r)
            self._done_tasks.add(task)
            task.add_done_callback(self._done_tasks.discard)


class _Settle:
    """A remote call's ``then``: its outcome, through the filter's failure policy, into ``out`` (the
    pause the exchange waits on; nothing, if the exchange gave up on it).

    The exchange resumes (``out.resume``) as the bus read that brought the verdict ends
    (meshbus.bus.read_end's ``after_read``): after that read's other messages are handed over, so a
    request's filters and router never run in the middle of them, and before the read's own turn
    of writes and the upstream writes the requests made, which go out then (``WriteBatch``), not
    two passes of the event loop later (the future's done callback, then the batch's flush: an
    extra ``epoll_wait`` a request). From a timeout (or a verdict nats-py's parser read) it resumes
    in a ready callback, as a done callback would."""

    __slots__ = ("f", "hook", "out", "st", "t0")

    def __init__(self, f: PluginFilter, st: LiveRequest, hook: str, t0: float, out: Resumable) -> None:
        self.f = f
        self.st = st
        self.hook = hook
        self.t0 = t0
        self.out = out

    def __call__(self, r: Any, exc: BaseException | None) -> None:
        out = self.out
        fut = out.future
        if fut.done():  # cancelled: the request is over
            return
        fut.set_result(self.f.settle(self.st, self.hook, r, exc, self.t0))
        resume = out.resume
        if resume is not None:
            out.resume = None
            if not after_read(resume, fut):
                fut.get_loop().call_soon(resume, fut)
