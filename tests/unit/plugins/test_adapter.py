"""The adapter that runs an SDK filter on the proxy's chain (meshbus.proxy.filters.plugins.adapter),
driven with a request context and no proxy: what the filter's ``Request`` reads, what the adapter
keeps per request, how a header edit reaches the head the proxy forwards, and the per-hook stats."""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from meshbus.plugins import Filter, LocalReply, Peer, Request, Response
from meshbus.plugins.loader import make_filter
from meshbus.plugins.registry import info_of
from meshbus.proxy.codec.http1 import RequestHead, RequestSession
from meshbus.proxy.core.routing import Destination, RequestView, Route
from meshbus.proxy.filters.chain import HOOK_DONE, HOOK_REQUEST_HEADERS, UNSPECIFIED
from meshbus.proxy.filters.plugins.adapter import (
    TIME_EVERY,
    TIMED_FIRST,
    LiveRequest,
    LocalBackend,
    PluginFilter,
    PluginStats,
)
from meshbus.telemetry.metrics import Registry

pytestmark = pytest.mark.unit

RAW = b"GET /items?x=1 HTTP/1.1\r\nHost: shelf:9080\r\nUser-Agent: curl\r\nX-A: 1\r\nX-Request-Id: rid-1\r\n\r\n"


@dataclass
class Ctx:
    """What the exchange hands filters (chain.FilterContext)."""

    head: RequestHead
    view: Any
    route: Any = None
    dest: Any = None
    dc: Any = None
    filter_state: dict[str, Any] | None = None
    flags: list[str] = field(default_factory=list)
    t0: float = 0.0
    status: int = 200
    resp_headers: list[tuple[str, str]] = field(default_factory=list)
    is_local: bool = False
    req_ops: Any = None

    @property
    def ctx(self) -> Any:
        """The listener the request came in on: here only its loop (the running one; asyncio.events'
        name for it, which a test that watches ``asyncio.get_running_loop`` leaves alone)."""
        return SimpleNamespace(loop=asyncio.events.get_running_loop())


@dataclass
class Downstream:
    peer_principal: str | None = None


def ctx(raw: bytes = RAW, principal: str | None = None) -> Ctx:
    events = RequestSession().feed(raw)
    head = events[0][1]
    assert head.raw is not None  # the head as received: it may go upstream without a rebuild
    view = RequestView(head.method, head.target, head.hdict["host"], head.hdict, "10.0.0.1")
    dest = Destination("outbound|9080||shelf", "shelf.shop.svc.cluster.local", 9080)
    return Ctx(head, view, Route("default", "shelf"), dest, Downstream(principal))


def plugin(cls: type[Filter], direction: str = "outbound", stats: PluginStats | None = None) -> PluginFilter:
    info = info_of(cls.__name__.lower(), cls)
    backend = LocalBackend(make_filter(info, None), info.hooks, info.request_body, info.response_body)
    return PluginFilter(
        "default/p", UNSPECIFIED, 0, backend, direction=direction, workload=Peer(namespace="default"),
        fail_open=False, timeout=1.0, stats=stats or PluginStats("default/p"),
    )  # fmt: skip


class Look(Filter):
    """Records what it sees (one hook: nothing kept between calls)."""

    seen: list[Any] = []

    def on_request_headers(self, req: Request) -> None:
        req.state["mine"] = 1
        Look.seen.append(
            (req.method, req.path, req.authority, req.scheme, req.request_id, req.route, req.source,
             req.destination, req.claims, req.state, repr(req))
        )  # fmt: skip


def test_a_one_hook_filter_reads_the_live_request_and_nothing_is_kept() -> None:
    f = plugin(Look)
    assert f.hooks == HOOK_REQUEST_HEADERS  # no on_done: nothing to drop
    c = ctx()
    c.filter_state = {"request.auth": {"claims": {"sub": "me"}}}  # the JWT filter ran first
    Look.seen.clear()
    assert f.on_request_headers(c) is None
    (seen,) = Look.seen
    assert seen[:6] == ("GET", "/items?x=1", "shelf:9080", "http", "rid-1", "default")
    assert seen[6] == Peer(namespace="default")  # outbound: the source is this workload
    assert seen[7].service == "shelf.shop.svc.cluster.local" and seen[7].namespace == "shop"
    assert seen[8] == {"sub": "me"} and seen[9] == {"mine": 1}
    assert seen[10] == "Request(GET shelf:9080/items?x=1)"
    assert c.filter_state == {"request.auth": {"claims": {"sub": "me"}}}  # nothing of the filter's

    inbound = plugin(Look, "inbound")
    Look.seen.clear()
    inbound.on_request_headers(ctx(principal="spiffe://cluster.local/ns/web/sa/front"))
    (seen,) = Look.seen
    assert (seen[6].namespace, seen[6].service_account) == ("web", "front") and seen[7] == Peer(
        namespace="default"
    )
    assert seen[8] is None and seen[9] == {"mine": 1}  # no token; state is per request


class Keep(Filter):
    """Keeps every view it is given (a filter may): each stays the view of its own request."""

    kept: list[Request] = []

    def on_request_headers(self, req: Request) -> None:
        Keep.kept.append(req)


class KeepSome(Filter):
    """Keeps the views of the requests whose path is "/other" (the others are reused)."""

    kept: list[Request] = []

    def on_request_headers(self, req: Request) -> None:
        if req.path == "/other":
            KeepSome.kept.append(req)


def test_a_reused_view_the_filter_kept_stays_the_view_of_its_own_request() -> None:
    f = plugin(KeepSome)
    KeepSome.kept.clear()
    for raw in (RAW, RAW2, RAW, RAW2, RAW):  # the second and fourth get the view the call before let go
        f.on_request_headers(ctx(raw))
    first, second = KeepSome.kept
    assert first is not second
    assert [(v.path, v.headers.get("user-agent")) for v in KeepSome.kept] == [("/other", "wget")] * 2
    assert f._spare is not None and all(f._spare is not v for v in KeepSome.kept)


class Tally(Filter):
    """Keeps nothing; counts in its per-request state."""

    seen: list[Any] = []

    def on_request_headers(self, req: Request) -> None:
        req.state["n"] = req.state.get("n", 0) + 1
        Tally.seen.append((req.path, req.headers.get("user-agent"), dict(req.state)))


RAW2 = RAW.replace(b"/items?x=1", b"/other").replace(b"User-Agent: curl", b"User-Agent: wget")


def test_a_view_the_filter_kept_stays_the_view_of_its_own_request() -> None:
    f = plugin(Keep)
    Keep.kept.clear()
    for raw in (RAW, RAW2, RAW2):
        f.on_request_headers(ctx(raw))
    first, second, third = Keep.kept
    assert first is not second and second is not third and first is not third
    assert [(v.path, v.headers.get("user-agent")) for v in Keep.kept] == [
        ("/items?x=1", "curl"),
        ("/other", "wget"),
        ("/other", "wget"),
    ]


def test_each_call_sees_its_own_request_state_and_headers_and_keeps_none_of_them() -> None:
    f = plugin(Tally)
    Tally.seen.clear()
    contexts = [ctx(RAW), ctx(RAW2), ctx(RAW)]
    for c in contexts:
        f.on_request_headers(c)
    assert Tally.seen == [
        ("/items?x=1", "curl", {"n": 1}),
        ("/other", "wget", {"n": 1}),
        ("/items?x=1", "curl", {"n": 1}),
    ]
    gone = weakref.ref(contexts[-1])
    del contexts, c
    assert gone() is None  # the filter refers to no request after its call


class KeepHeaders(Filter):
    """Reads the request's headers at each call; keeps the view of those whose path is "/other"."""

    kept: list[Any] = []
    seen: list[str | None] = []

    def on_request_headers(self, req: Request) -> None:
        KeepHeaders.seen.append(req.headers.get("user-agent"))
        if req.path == "/other":
            KeepHeaders.kept.append(req.headers)


def test_a_header_view_the_filter_kept_stays_the_view_of_its_own_request() -> None:
    # A view nobody kept serves the next call (reused); one the filter kept must not be: read later,
    # after other requests, it still reads (and edits) its own request's headers.
    f = plugin(KeepHeaders)
    KeepHeaders.kept.clear()
    KeepHeaders.seen.clear()
    contexts = [ctx(raw) for raw in (RAW, RAW2, RAW, RAW2, RAW)]
    for c in contexts:
        f.on_request_headers(c)
    assert KeepHeaders.seen == ["curl", "wget", "curl", "wget", "curl"]
    first, second = KeepHeaders.kept
    assert first is not second
    assert first.get("user-agent") == "wget" and second.get("user-agent") == "wget"
    assert first.items() == contexts[1].head.headers and second.items() == contexts[3].head.headers
    first.set("x-late", "1")  # an edit through a kept view reaches its own request only
    assert contexts[1].head.hdict["x-late"] == "1"
    assert all("x-late" not in c.head.hdict for i, c in enumerate(contexts) if i != 1)


def test_a_header_view_nobody_kept_refers_to_no_request_after_the_call() -> None:
    f = plugin(Tally)
    contexts = [ctx(RAW), ctx(RAW2)]
    for c in contexts:
        f.on_request_headers(c)
    spare = f._spare
    assert spare is not None and spare._live_headers is None
    assert spare._spare_headers is not None  # kept for the next call: nobody else refers to it
    assert spare._spare_headers.items() == []
    assert all(spare._spare_headers._head is not c.head for c in contexts)  # so the head can go


class Stamp(Filter):
    def on_request_headers(self, req: Request) -> None:
        req.state["path"] = req.path
        req.headers["x-stamped"] = "hi"

    def on_response_headers(self, req: Request, resp: Response) -> None:
        resp.headers["x-stamp-path"] = req.state["path"]
        resp.headers["x-claims"] = str(req.claims)


def test_a_filter_with_more_hooks_keeps_its_view_until_on_done() -> None:
    f = plugin(Stamp)
    assert f.hooks & HOOK_DONE  # added, though Stamp has no on_done: that is where the view goes
    c = ctx()
    f.on_request_headers(c)
    assert c.filter_state is not None
    kept = c.filter_state[f.name]
    assert isinstance(kept, LiveRequest) and kept.state == {"path": "/items?x=1"}
    c.filter_state["request.auth"] = {"claims": {"sub": "later"}}  # read when the filter reads it
    f.on_response_headers(c)
    assert c.resp_headers == [("x-stamp-path", "/items?x=1"), ("x-claims", "{'sub': 'later'}")]
    f.on_done(c)
    assert f.name not in c.filter_state  # the view refers to the exchange: no cycle left behind


def test_a_new_header_is_appended_to_the_head_as_received() -> None:
    f = plugin(Stamp)
    c = ctx()
    f.on_request_headers(c)
    head = c.head
    assert head.raw == RAW[:-2] + b"x-stamped: hi\r\n"  # still forwarded without a rebuild
    assert head.headers[-1] == ("x-stamped", "hi") and head.hdict["x-stamped"] == "hi"
    assert len(head.hdict) == len(head.headers)


class Edit(Filter):
    edit: Any = None

    def on_request_headers(self, req: Request) -> None:
        Edit.edit(req.headers)


@pytest.mark.parametrize(
    ("edit", "name", "value"),
    [
        (lambda h: h.set("X-A", "2"), "x-a", "2"),  # replaces a header the request had
        (lambda h: h.add("x-a", "2"), "x-a", "1,2"),
        (lambda h: h.delete("user-agent"), "user-agent", None),
        (lambda h: (h.set("x-new", "1"), h.add("x-new", "2")), "x-new", "1,2"),
        (lambda h: h.set("transfer-encoding", "chunked"), "transfer-encoding", "chunked"),  # framing
        (lambda h: h.set("x-forwarded-for", "1.2.3.4"), "x-forwarded-for", "1.2.3.4"),  # the proxy's own
        (lambda h: h.set("x-odd", "\u20ac"), "x-odd", "\u20ac"),  # not latin-1
    ],
)
def test_other_header_edits_make_the_head_be_rebuilt(edit: Any, name: str, value: str | None) -> None:
    Edit.edit = edit
    c = ctx()
    plugin(Edit).on_request_headers(c)
    head = c.head
    assert head.raw is None  # the exchange rebuilds the head from the edited list
    assert head.hdict.get(name) == value
    assert len(head.hdict) == len({k for k, _ in head.headers})


def test_a_value_set_did_not_check_is_not_appended_to_the_head_as_received() -> None:
    # A remote filter's verdict replaces the headers without set()'s check: its values are checked
    # where a new line would be appended to the head as received (else the head is rebuilt).
    c = ctx()
    headers = LiveRequest(c, plugin(Stamp)).headers
    headers.replace([*c.head.headers, ("x-new", "a\r\nx-injected: 1")])
    assert c.head.raw is None and c.head.hdict["x-new"] == "a\r\nx-injected: 1"
    c = ctx()
    headers = LiveRequest(c, plugin(Stamp)).headers
    headers.replace([*c.head.headers, ("x-new", "a")])
    assert c.head.raw == RAW[:-2] + b"x-new: a\r\n"


class Untouched(Filter):
    views: list[Request] = []

    def on_request_headers(self, req: Request) -> None:
        Untouched.views.append(req)


def test_a_filter_that_never_reads_headers_gets_no_header_view() -> None:
    c = ctx()
    Untouched.views.clear()
    plugin(Untouched).on_request_headers(c)
    (req,) = Untouched.views
    assert isinstance(req, LiveRequest) and req._live_headers is None
    assert req.headers._items is c.head.headers  # made on first use, over the head's own list


def test_calls_and_time_are_recorded_per_hook_from_the_first_call() -> None:
    reg = Registry()
    calls = reg.counter("calls", "", ("plugin", "hook"))
    errors = reg.counter("errors", "", ("plugin", "reason", "action"))
    time_ms = reg.histogram("ms", "", ("plugin", "hook"), (1.0, 10.0))
    stats = PluginStats("default/p", calls, errors, time_ms)
    outbound, inbound = plugin(Stamp, stats=stats), plugin(Stamp, "inbound", stats=stats)
    assert len(calls) == 0  # no series for a hook never called
    for f in (outbound, inbound):
        c = ctx()
        f.on_request_headers(c)
        f.on_response_headers(c)
        f.on_done(c)
    series = {values: child.value for values, child in calls.series()}
    assert series == {("default/p", "on_request_headers"): 2, ("default/p", "on_response_headers"): 2}
    assert [child.count for _, child in time_ms.series()] == [2, 2]


class Answer(Filter):
    def on_request_headers(self, req: Request) -> LocalReply:
        return LocalReply(403)


class Later(Filter):
    async def on_request_headers(self, req: Request) -> None:
        return None


def metric_families() -> tuple[Any, Any, PluginStats]:
    reg = Registry()
    calls = reg.counter("calls", "", ("plugin", "hook"))
    time_ms = reg.histogram("ms", "", ("plugin", "hook"), (1.0, 10.0))
    return calls, time_ms, PluginStats("default/p", calls, reg.counter("e", "", ("p", "r", "a")), time_ms)


@pytest.mark.parametrize("cls", [Untouched, Stamp, Answer])  # the direct path, the general one, a reply
def test_past_the_first_calls_one_plain_call_in_time_every_is_timed_and_every_call_is_counted(
    cls: type[Filter],
) -> None:
    calls, time_ms, stats = metric_families()
    f = plugin(cls, stats=stats)
    n = TIMED_FIRST + 3 * TIME_EVERY + 5
    for _ in range(n):
        c = ctx()
        f.on_request_headers(c)
        f.on_done(c)
        Untouched.views.clear()
    ((_, counted),) = [(k, v) for k, v in calls.series() if k[1] == "on_request_headers"]
    assert counted.value == n
    ((_, hist),) = [(k, v) for k, v in time_ms.series() if k[1] == "on_request_headers"]
    assert hist.count == TIMED_FIRST + 3  # every one of the first, then one in TIME_EVERY
    assert hist.sum >= 0.0


async def test_an_awaited_hook_is_timed_at_every_call() -> None:
    calls, time_ms, stats = metric_families()
    f = plugin(Later, stats=stats)
    n = TIMED_FIRST + 2 * TIME_EVERY
    for _ in range(n):
        assert await f.on_request_headers(ctx()) is None
    assert [child.value for _, child in calls.series()] == [n]
    assert [child.count for _, child in time_ms.series()] == [n]


class SetEach(Filter):
    """Sets each (name, value) of ``SetEach.edits`` at each request."""

    edits: list[tuple[str, str]] = []

    def on_request_headers(self, req: Request) -> None:
        for name, value in SetEach.edits:
            req.headers.set(name, value)


def test_set_lines_follow_the_head_as_received_in_the_order_set() -> None:
    # New names, set one after another (one spelled in capitals), each appended once, in order.
    SetEach.edits = [("x-b", "2"), ("X-A2", "1"), ("x-c", "3")]
    f = plugin(SetEach)
    for _ in range(2):  # the second request finds every name (and value) in the caches
        c = ctx()
        f.on_request_headers(c)
        assert c.head.raw == RAW[:-2] + b"x-b: 2\r\nx-a2: 1\r\nx-c: 3\r\n"
        assert c.head.headers[-3:] == [("x-b", "2"), ("x-a2", "1"), ("x-c", "3")]
        assert c.head.hdict["x-a2"] == "1" and len(c.head.hdict) == len(c.head.headers)


def test_a_value_set_before_does_not_stand_in_for_a_new_one() -> None:
    # The view remembers the last value set with a name and its line; other text is checked and
    # encoded afresh (equal text in another object gives the same head).
    f = plugin(SetEach)
    for value in ("one", "two", "".join(["tw", "o"]), "three"):
        SetEach.edits = [("x-memo", value)]
        c = ctx()
        f.on_request_headers(c)
        assert c.head.raw == RAW[:-2] + b"x-memo: " + value.encode() + b"\r\n"
        assert c.head.headers[-1] == ("x-memo", value) and c.head.hdict["x-memo"] == value  # its pair
    SetEach.edits = [("x-memo", "four\r\nx-injected: 1")]
    c = ctx()
    assert f.on_request_headers(c) is not None  # the filter raised: FAIL_CLOSE answers
    assert "x-memo" not in c.head.hdict and c.head.raw == RAW[:-2]  # nothing of it was kept


def test_an_equal_value_in_another_object_is_set_as_the_one_before() -> None:
    # A header copied from each request (its own str) with the same text as the request before:
    # the line and pair made for the first serve, the value as given is in the map; other text is
    # still checked (and refused) and encoded afresh.
    f = plugin(SetEach)
    pairs = []
    for value in ("".join(["ag", "ent"]), "".join(["ag", "ent"]), "agent2"):
        SetEach.edits = [("x-agent", value)]
        c = ctx()
        f.on_request_headers(c)
        assert c.head.raw == RAW[:-2] + b"x-agent: " + value.encode() + b"\r\n"
        assert c.head.headers[-1] == ("x-agent", value) and c.head.hdict["x-agent"] is value
        pairs.append(c.head.headers[-1])
    assert pairs[1] is pairs[0] and pairs[2] is not pairs[0]
    SetEach.edits = [("x-agent", "agent2\nx-injected: 1")]
    c = ctx()
    assert f.on_request_headers(c) is not None  # refused: FAIL_CLOSE answers
    assert "x-agent" not in c.head.hdict and c.head.raw == RAW[:-2]


@pytest.mark.parametrize(
    ("name", "value", "appended"),
    [
        ("x-fine", "caf\u00e9", True),  # latin-1: appended as such
        ("x-odd", "\u20ac", False),  # not latin-1: the rebuild serializes (and refuses) it
        ("connection", "close", False),  # hop-by-hop: the exchange handles its line
    ],
)
def test_set_twice_with_the_same_value_gives_the_same_head(name: str, value: str, appended: bool) -> None:
    SetEach.edits = [(name, value)]
    f = plugin(SetEach)
    heads = []
    for _ in range(2):
        c = ctx()
        f.on_request_headers(c)
        heads.append(c.head.raw)
        assert c.head.hdict[name] == value
    expected = RAW[:-2] + f"{name}: {value}\r\n".encode("latin-1") if appended else None
    assert heads == [expected, expected]


def test_a_bad_header_name_is_refused_at_every_set() -> None:
    SetEach.edits = [("x bad", "1")]
    f = plugin(SetEach)
    for _ in range(2):  # a refused name is not cached as checked
        c = ctx()
        assert f.on_request_headers(c) is not None
        assert c.head.raw == RAW[:-2]


def test_get_gives_the_first_value_of_a_name_the_request_has_twice() -> None:
    raw = RAW[:-2] + b"X-Dup: 1\r\nx-dup: 2\r\n\r\n"
    headers = LiveRequest(ctx(raw), plugin(Stamp)).headers
    assert headers.get("X-DUP") == "1" and headers.getall("x-dup") == ["1", "2"]
    assert headers.get("user-agent") == "curl" and headers.get("x-none", "-") == "-"
    headers = LiveRequest(ctx(), plugin(Stamp)).headers
    assert headers.get("User-Agent") == "curl" and headers.get("x-none") is None
    headers.add("user-agent", "other")  # now twice: still the first
    assert headers.get("user-agent") == "curl"
    headers.delete("user-agent")
    assert headers.get("user-agent") is None
