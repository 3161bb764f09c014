"""``PluginFilter``: an SDK filter (meshbus.plugins) as one HttpFilter of the chain, with its failure policy.

The filter itself sits behind a ``Backend``: ``LocalBackend`` calls the instance in this process,
``RemoteBackend`` (remote.py) calls a meshbus-filter-host. Either returns what a hook returns:
None, an SDK ``LocalReply``, or an awaitable of those. This class turns that into what the chain
takes (proxy/filters/chain.py) and keeps the rules in one place:

- Failures: a hook that raises, an async hook or remote call past the Plugin's ``timeout``, or a
  host nobody answers for, is counted (``meshbus_plugin_errors_total{reason}``) and logged with the
  reason; FAIL_OPEN skips the filter for the rest of the request, FAIL_CLOSE answers 500 (503 when
  the host is unreachable) with response flag FF and ``plugin:<ns>/<name>:<reason>`` in the access
  log. A hook pauses only its own request (the exchange awaits it in a task).
- Bodies: none unless the filter asked. Buffered request bodies are collected (up to the limit, else
  413) and handed to ``on_request_body`` once, before the request goes upstream; streamed chunks are
  shown as they pass (sync hooks only). Response body hooks observe.
- A local reply's response headers pass only hooks that cannot pause (sync, in process).
- Per request, the filter's ``Request`` view and its ``state`` live in ``ctx.filter_state``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, Final, Protocol

from meshbus.plugins.api import MAX_BUFFER, BodyMode
from meshbus.plugins.api import LocalReply as SdkReply
from meshbus.plugins.http import Headers, Peer, Request, Response
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
)

log = logging.getLogger(__name__)

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
        self._fns: dict[str, Callable[..., Any]] = {h: getattr(instance, h) for h in hooks}

    ready = True

    async def wait_ready(self) -> None:
        return None

    def call(self, hook: str, req: Request, resp: Response | None, body: bytes, end: bool) -> Any:
        fn = self._fns[hook]
        if hook == "on_request_headers":
            return fn(req)
        if hook == "on_request_body":
            return fn(req, body, end)
        if hook == "on_response_body":
            return fn(req, resp, body, end)
        return fn(req, resp)  # on_response_headers, on_done

    def close(self) -> None:
        self.instance.close()


class PluginStats:
    """Per Plugin: the metric children it records into (made once, when the Plugin is applied)."""

    __slots__ = ("_by_hook", "_calls", "_errors", "_time", "ref")

    def __init__(self, ref: str, calls: Any = None, errors: Any = None, time_ms: Any = None) -> None:
        self.ref = ref
        self._calls = calls
        self._errors = errors
        self._time = time_ms
        self._by_hook: dict[str, tuple[Any, Any]] = {}

    def call(self, hook: str, ms: float) -> None:
        children = self._by_hook.get(hook)
        if children is None:
            if self._calls is None:
                return
            children = self._by_hook[hook] = (
                self._calls.labels(self.ref, hook),
                self._time.labels(self.ref, hook),
            )
        children[0].inc()
        children[1].observe(ms)

    def error(self, reason: str, action: str) -> None:
        if self._errors is not None:
            self._errors.labels(self.ref, reason, action).inc()


class _PerRequest:
    """What one filter keeps for one request (in ``ctx.filter_state[name]``)."""

    __slots__ = ("body", "body_size", "body_waiter", "req", "skipped")

    def __init__(self, req: Request) -> None:
        self.req = req
        self.skipped = False
        self.body: list[bytes] = []
        self.body_size = 0
        self.body_waiter: asyncio.Future[bytes] | None = None


def _sync_header(head: Any, name: str) -> None:
    """Keep the parsed head's lowercase map in step with an edited header list; the head can no
    longer go upstream as received."""
    values = [v for k, v in head.headers if k == name]
    if values:
        head.hdict[name] = ",".join(values)
    else:
        head.hdict.pop(name, None)
    head.raw = None


def _claims(ctx: FilterContext) -> Mapping[str, Any] | None:
    state = ctx.filter_state
    auth = state.get("request.auth") if state is not None else None
    if type(auth) is dict:  # the JWT filter's {"principal", "audiences", "presenter", "claims"}
        claims = auth.get("claims")
        return claims if type(claims) is dict else None
    return None


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
        if remote:
            # What a remote filter implements is known once a host said so, maybe after the chain was
            # made: every hook point is taken, and those it does not implement return at once.
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
        super().__init__(f"plugin:{ref}", phase, priority, hooks)
        self.ref = ref
        self.backend = backend
        self.direction = direction
        self.workload = workload
        self.fail_open = fail_open
        self.timeout = timeout
        self.stats = stats
        self.remote = remote
        self._logged_at = 0.0
        self._unlogged = 0
        self._done_tasks: set[asyncio.Task[Any]] = set()
        self._peers: dict[str, Peer] = {}

    # ---- per-request view ----------------------------------------------------------------------

    def _state(self, ctx: FilterContext) -> _PerRequest:
        fs = ctx.filter_state
        if fs is None:
            fs = ctx.filter_state = {}
        st = fs.get(self.name)
        if st is None:
            st = fs[self.name] = _PerRequest(self._view(ctx))
        # Read afresh for each hook (an earlier filter, the JWT one, may have set them meanwhile);
        # the view keeps the value, not the request: no reference cycle for the collector to find.
        st.req._claims = _claims(ctx)
        return st

    def _view(self, ctx: FilterContext) -> Request:
        head = ctx.head
        view = ctx.view
        if self.direction == "inbound":
            source = self._peer(ctx.dc.peer_principal or "", True)
            destination = self.workload
        else:
            source = self.workload
            dest = ctx.dest
            destination = self._peer(dest.host if dest is not None else view.authority, False)
        return Request(
            head.method,
            view.path,
            view.authority,
            Headers(head.headers, partial(_sync_header, head)),
            scheme=head.hdict.get("x-forwarded-proto", "http"),
            request_id=head.hdict.get("x-request-id"),
            route=ctx.route.name,
            source=source,
            destination=destination,
        )

    def _peer(self, key: str, principal: bool) -> Peer:
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

    def _run(self, st: _PerRequest, hook: str, resp: Response | None, body: bytes, end: bool) -> Any:
        """Run ``hook``: a chain result (None / LocalReply) or an awaitable of one."""
        t0 = time.perf_counter()
        try:
            r = self.backend.call(hook, st.req, resp, body, end)
        except Exception as exc:
            return self._failed(st, hook, "error", exc)
        if r is None:
            self.stats.call(hook, (time.perf_counter() - t0) * 1000.0)
            return None
        if isinstance(r, SdkReply):
            self.stats.call(hook, (time.perf_counter() - t0) * 1000.0)
            return self._reply(r)
        if inspect.isawaitable(r):
            return self._guarded(st, hook, r, t0)
        return self._failed(st, hook, "error", TypeError(f"{hook} returned {type(r).__name__}"))

    async def _guarded(self, st: _PerRequest, hook: str, aw: Any, t0: float) -> LocalReply | None:
        try:
            # A remote call carries the timeout itself (the NATS request's); wait_for would add a task.
            r = await (aw if self.remote else asyncio.wait_for(aw, self.timeout))
        except TimeoutError:
            return self._failed(st, hook, "timeout", TimeoutError(f"no answer within {self.timeout:g}s"))
        except FilterUnreachable as exc:
            return self._failed(st, hook, "unreachable", exc)
        except Exception as exc:
            return self._failed(st, hook, "error", exc)
        self.stats.call(hook, (time.perf_counter() - t0) * 1000.0)
        if r is None:
            return None
        if isinstance(r, SdkReply):
            return self._reply(r)
        return self._failed(st, hook, "error", TypeError(f"{hook} returned {type(r).__name__}"))

    def _reply(self, r: SdkReply) -> LocalReply:
        return LocalReply(r.status, r.body, tuple(r.headers), details=r.details or f"plugin:{self.ref}")

    def _failed(self, st: _PerRequest, hook: str, reason: str, exc: BaseException) -> LocalReply | None:
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
        st = self._state(ctx)
        if not self.backend.ready:
            return self._when_ready(st, ctx)
        return self._request_headers(st, ctx)

    async def _when_ready(self, st: _PerRequest, ctx: FilterContext) -> LocalReply | None:
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

    def _request_headers(self, st: _PerRequest, ctx: FilterContext) -> Any:
        r = None
        if "on_request_headers" in self.backend.hooks:
            r = self._run(st, "on_request_headers", None, b"", True)
        if self.backend.request_body.mode != "buffered":
            st.body = []  # chunks kept while a remote filter's wishes were unknown: not wanted
            return r
        if r is not None and not inspect.isawaitable(r):
            return r  # answered (or failed closed) before the body was wanted
        return self._then_body(st, ctx, r)

    async def _then_body(self, st: _PerRequest, ctx: FilterContext, first: Any) -> LocalReply | None:
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
        st.body.append(data)
        st.body_size += len(data)
        if st.body_size > mode.limit:
            return LocalReply(413, "payload too large\n", details=f"plugin:{self.ref}:body_too_large")
        if end:
            body = b"".join(st.body)
            st.body = []
            if st.body_waiter is None:
                st.body_waiter = asyncio.get_running_loop().create_future()
            if not st.body_waiter.done():
                st.body_waiter.set_result(body)
        return None

    def on_response_headers(self, ctx: FilterContext) -> Any:
        st = self._state(ctx)
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
                st.body.append(data)
                st.body_size += len(data)
            if not end:
                return
            data, st.body = b"".join(st.body)[: mode.limit], []
        elif not data and not end:
            return
        self._observe(st, "on_response_body", resp, data, end)

    def on_done(self, ctx: FilterContext) -> None:
        if "on_done" not in self.backend.hooks:
            return
        st = self._state(ctx)
        resp = Response(ctx.status, Headers(list(getattr(ctx, "resp_headers", None) or ())))
        self._observe(st, "on_done", resp, b"", True)

    def _observe(self, st: _PerRequest, hook: str, resp: Response, data: bytes, end: bool) -> None:
        """A hook whose result cannot change the response: an awaitable runs on in a task of its own."""
        r = self._run(st, hook, resp, data, end)
        if inspect.isawaitable(r):
            task = asyncio.ensure_future(r)
            self._done_tasks.add(task)
            task.add_done_callback(self._done_tasks.discard)
