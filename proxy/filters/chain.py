"""The HTTP filter chain: the one place that says what a filter is and in which order filters run.

Every request passes the chain of its route (Envoy's HTTP filters, Istio's WasmPlugin ordering):

    request  ->  [AUTHN] -> [AUTHZ] -> [STATS] -> built-ins -> [UNSPECIFIED] -> header ops -> router
    response <-  the same filters in reverse order                                    <- upstream

A filter has symmetric hooks: ``on_request_headers``, ``on_request_body``, ``on_response_headers``,
``on_response_body`` and ``on_done`` (after the response, for logging; it cannot change it). A hook
returns what happens next:

- ``None``: continue with the next filter;
- a ``LocalReply``: stop here and answer the client (status, body, headers, response flag, details);
  the filters that already saw the request see the reply's headers on its way out (Envoy's
  ``sendLocalReply``), the others never see it;
- a ``Delay``: pause the request for a time, then continue (or stop with ``Delay.then``);
- an awaitable (an ``async def`` hook): pause until it completes; its result is one of the above.
  Request hooks and response-header hooks may pause (the exchange holds the response, body and end
  included, until a paused response hook completes); body hooks and ``on_done`` must not;
- a ``Resumable``: an awaitable pause its filter ends by a call (a remote filter's verdict), which
  the exchange resumes in, not a pass of the event loop later as a future's done callback runs.

Phases and priorities mean what they mean in Istio's WasmPlugin: ``AUTHN`` before authentication,
``AUTHZ`` after it and before authorization, ``STATS`` after authorization, ``UNSPECIFIED`` just before
the router; within a phase a higher priority runs first, ties by name. meshbus's compiled built-ins
(local rate limit, CORS, fault) sit between ``STATS`` and ``UNSPECIFIED``, as Istio's cors and fault
filters sit after its authn/authz/stats filters; header operations sit last, next to the router
(Envoy applies route header operations in the router).

Config: a filter instance is made per route from that route's entry in ``Route.filter_config`` (a
typed map, filter name -> frozen config), once per config version; a route whose map is empty has
the empty chain, and the exchange's fast paths (pass-through heads) stay as they were. This module is
sans-IO: filters get the request as a ``FilterContext`` and the clock as ``FilterContext.t0``; the
exchange (proxy/adapters/exchange.py) does the I/O, the timers and the awaiting.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable
from typing import TYPE_CHECKING, Any, Final, Protocol

from mypy_extensions import mypyc_attr

if TYPE_CHECKING:
    from meshbus.proxy.adapters.contracts import Downstream
    from meshbus.proxy.adapters.listener import ListenerContext
    from meshbus.proxy.codec.http1 import RequestHead
    from meshbus.proxy.core.routing import Destination, RequestView, Route
    from meshbus.proxy.filters.headerops import HeaderOps

# Phases (Istio WasmPlugin PluginPhase), as sort keys: lower runs first on the request path.
AUTHN: Final = 10
AUTHZ: Final = 20
STATS: Final = 30
BUILTIN: Final = 35  # meshbus's compiled built-ins: local rate limit, CORS, fault
UNSPECIFIED: Final = 40  # "just before the router"
ROUTER: Final = 50  # header operations: applied with the router's own work


class LocalReply:
    """Stop the request and answer it here. ``flag`` (an Envoy response flag, proxy/core/flags.py) and
    ``details`` go to the access log; ``flag`` is also sent in ``x-meshbus-flags``."""

    __slots__ = ("body", "details", "flag", "headers", "status")

    def __init__(
        self,
        status: int,
        body: str | bytes = b"",
        headers: tuple[tuple[str, str], ...] = (),
        flag: str | None = None,
        details: str = "",
    ) -> None:
        self.status = status
        self.body = body
        self.headers = headers
        self.flag = flag
        self.details = details

    def __repr__(self) -> str:
        return f"LocalReply({self.status}, flag={self.flag!r}, details={self.details!r})"


class Delay:
    """Pause the request for ``seconds`` (loop time), then continue, or answer ``then`` if given."""

    __slots__ = ("seconds", "then")

    def __init__(self, seconds: float, then: LocalReply | None = None) -> None:
        self.seconds = seconds
        self.then = then


class Resumable:
    """A paused hook that its filter ends by a call: ``future`` gets the outcome (a chain result,
    or an exception), and ``resume``, when the exchange set it, is then called with that future by
    the filter itself, instead of the exchange's done callback on the future, which asyncio runs a
    pass of the event loop later (and the upstream write it makes waits one more pass for its
    flush). A remote filter's verdict (proxy/filters/plugins/adapter.py) resumes its request so at
    the end of the bus read that brought it. Anything else awaits it as it would the future.

    The filter calls ``resume`` only where running the rest of a request is safe (its chain's
    other filters, the router), at most once, and after ``future`` is done; a cancelled future
    (the request is over) is never resumed."""

    __slots__ = ("future", "resume")

    def __init__(self, future: Any) -> None:
        self.future = future  # an asyncio.Future (Any: this module imports no I/O, test_sans_io.py)
        self.resume: Callable[[Any], None] | None = None

    def __await__(self) -> Generator[Any, None, Any]:
        return self.future.__await__()


class FilterContext(Protocol):
    """What a filter sees of one request (the exchange implements it).

    ``head`` is the parsed request (method, target, ``headers`` list and lowercase ``hdict``); ``view``
    what routing matched on; ``route``/``dest`` the matched route and the destination picked for it;
    ``flags`` the response flags so far (a filter may append); ``t0`` the request's start on the
    monotonic clock. On the response path ``status`` and ``resp_headers`` (a list the filter may edit
    or replace) hold the response; ``is_local`` says it is a local reply. ``req_ops`` is the header
    operations the router applies to the upstream request head (None: forward the head as received).
    ``dc`` is the downstream connection (``peer_ip``, ``peer_principal``: the verified SPIFFE ID of an
    mTLS peer). ``filter_state`` is per-request data filters share, keyed by filter name (Envoy's
    filter state and dynamic metadata: a JWT filter's verified claims for the authorization filter,
    the deciding policy for the access log; ``filter_state["access_log"]``, a dict of strings, is
    added to the request's access-log line as its ``metadata``); None until a filter sets it.
    ``ctx`` is the listener the request came in on (``ctx.server``: its pools, metrics registry and
    loop), for filters that call out. ``bytes_in``, ``req_done`` and ``replay`` (the body chunks kept
    for a retry, None once too big) are read-only: they say how much of the body already arrived.
    """

    dc: Downstream
    filter_state: dict[str, Any] | None
    ctx: ListenerContext
    bytes_in: int
    req_done: bool
    replay: list[bytes] | None

    head: RequestHead
    view: RequestView
    route: Route
    dest: Destination | None
    flags: list[str]
    t0: float
    status: int
    resp_headers: list[tuple[str, str]]
    is_local: bool
    req_ops: HeaderOps | None


# Compiled with the request path, and still a base that filters written in plain Python (tests, and
# the plugin SDK to come) can subclass.
@mypyc_attr(allow_interpreted_subclasses=True)
class HttpFilter:
    """Base of the built-in filters: every hook continues. ``name`` is the filter's key in
    ``Route.filter_config``; ``phase`` and ``priority`` order it (see the module doc); ``hooks`` says
    which hooks do something (HOOK_* bits), so the chain calls only those."""

    def __init__(self, name: str, phase: int, priority: int, hooks: int) -> None:
        self.name = name
        self.phase = phase
        self.priority = priority
        self.hooks = hooks

    def on_request_headers(self, ctx: FilterContext) -> Any:
        return None

    def on_request_body(self, ctx: FilterContext, data: bytes, end: bool) -> Any:
        return None

    def on_response_headers(self, ctx: FilterContext) -> Any:  # LocalReply, None, or an awaitable of them
        return None

    def on_response_body(self, ctx: FilterContext, data: bytes, end: bool) -> None:
        return None

    def on_done(self, ctx: FilterContext) -> None:
        return None


HOOK_REQUEST_HEADERS: Final = 1
HOOK_REQUEST_BODY: Final = 2
HOOK_RESPONSE_HEADERS: Final = 4
HOOK_RESPONSE_BODY: Final = 8
HOOK_DONE: Final = 16


def _order(f: HttpFilter) -> tuple[int, int, str]:
    return (f.phase, -f.priority, f.name)


class FilterChain:
    """The ordered filters of one route, with per-hook lists so a hook no filter has costs nothing."""

    __slots__ = ("done", "filters", "request_body", "request_headers", "response_body", "response_headers")

    def __init__(self, filters: Iterable[HttpFilter] = ()) -> None:
        ordered = sorted(filters, key=_order)
        names = [f.name for f in ordered]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"meshbus: filter chain names {sorted(dup)} more than once")
        self.filters: tuple[HttpFilter, ...] = tuple(ordered)
        self.request_headers = tuple(f for f in ordered if f.hooks & HOOK_REQUEST_HEADERS)
        self.request_body = tuple(f for f in ordered if f.hooks & HOOK_REQUEST_BODY)
        # Response hooks run in reverse order, as Envoy's encoder filters do.
        self.response_headers = tuple(f for f in reversed(ordered) if f.hooks & HOOK_RESPONSE_HEADERS)
        self.response_body = tuple(f for f in reversed(ordered) if f.hooks & HOOK_RESPONSE_BODY)
        self.done = tuple(f for f in ordered if f.hooks & HOOK_DONE)

    def __len__(self) -> int:
        return len(self.filters)

    def response_filters_before(self, stopper: HttpFilter | None) -> tuple[HttpFilter, ...]:
        """Response-header filters a local reply passes: those that ran before ``stopper`` on the
        request path (all of them for a reply the router makes, ``stopper`` None), in reverse."""
        if stopper is None:
            return self.response_headers
        out: list[HttpFilter] = []
        for f in self.filters:
            if f is stopper:
                break
            if f.hooks & HOOK_RESPONSE_HEADERS:
                out.append(f)
        out.reverse()
        return tuple(out)

    def describe(self) -> list[str]:
        return [f.name for f in self.filters]


EMPTY_CHAIN: Final = FilterChain()
