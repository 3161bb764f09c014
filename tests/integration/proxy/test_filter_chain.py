"""Filters on the chain of a running proxy: real sockets, real upstreams, the exchange doing the I/O.

Filters are attached to the compiled routes of the running config (the plugin kind that will do
this from config comes with the plugins issue); everything else is the proxy as users run it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from meshbus.proxy.filters.chain import (
    AUTHN,
    HOOK_DONE,
    HOOK_REQUEST_BODY,
    HOOK_REQUEST_HEADERS,
    HOOK_RESPONSE_BODY,
    HOOK_RESPONSE_HEADERS,
    UNSPECIFIED,
    Delay,
    FilterChain,
    FilterContext,
    HttpFilter,
    LocalReply,
    Resumable,
)
from meshbus.proxy.filters.headerops import make_header_ops
from meshbus.telemetry.accesslog import AccessLogRecord
from tests.integration.proxy.conftest import ProxyFactory, ProxyHandle, UpstreamFactory, service_entry, yaml
from tests.integration.proxy.upstreams import Client, fetch

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


class Capture:
    def __init__(self) -> None:
        self.records: list[AccessLogRecord] = []

    def log(self, record: AccessLogRecord) -> None:
        self.records.append(record)


def attach(p: ProxyHandle, *filters: HttpFilter) -> None:
    """Add ``filters`` to every outbound route of the running config."""
    for vh in p.server.runtime.outbound.virtual_hosts:
        for route in vh.routes:
            object.__setattr__(route, "chain", FilterChain([*route.chain.filters, *filters]))


class Stamp(HttpFilter):
    """Sets a request header (through the router's header operations) and a response header."""

    def __init__(self) -> None:
        super().__init__("test.stamp", UNSPECIFIED, 0, HOOK_REQUEST_HEADERS | HOOK_RESPONSE_HEADERS)

    def on_request_headers(self, ctx: FilterContext) -> Any:
        ctx.req_ops = make_header_ops(set_={"x-stamped": ctx.head.method})
        return None

    def on_response_headers(self, ctx: FilterContext) -> LocalReply | None:
        ctx.resp_headers.append(("x-stamp", str(ctx.status)))
        return None


class Gate(HttpFilter):
    """An async hook: requests for /held wait until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__("test.gate", AUTHN, 0, HOOK_REQUEST_HEADERS)
        self.opened = asyncio.Event()
        self.waiting = asyncio.Event()

    async def on_request_headers(self, ctx: FilterContext) -> Any:
        if ctx.view.path != "/held":
            return None
        self.waiting.set()
        await self.opened.wait()
        return (
            LocalReply(451, "unavailable for legal reasons\n", details="gate_closed")
            if ctx.head.hdict.get("x-refuse")
            else None
        )


class Settled(HttpFilter):
    """Pauses every request and response head with a ``Resumable`` the test settles by a call, as a
    remote filter's verdict does; /refused is answered 403 at its response head."""

    def __init__(self) -> None:
        super().__init__("test.settled", AUTHN, 0, HOOK_REQUEST_HEADERS | HOOK_RESPONSE_HEADERS)
        self.paused: asyncio.Queue[tuple[Resumable, Any]] = asyncio.Queue()

    def pause(self, result: Any) -> Resumable:
        r = Resumable(asyncio.get_running_loop().create_future())
        self.paused.put_nowait((r, result))
        return r

    def on_request_headers(self, ctx: FilterContext) -> Any:
        return self.pause(None)

    def on_response_headers(self, ctx: FilterContext) -> Any:
        return self.pause(LocalReply(403, "refused\n") if ctx.view.path == "/refused" else None)

    async def settle(self) -> None:
        r, result = await asyncio.wait_for(self.paused.get(), 5)
        assert r.resume is not None  # the exchange resumes by this call, with no done callback
        r.future.set_result(result)
        resume, r.resume = r.resume, None
        resume(r.future)


class Reply(HttpFilter):
    def __init__(self, name: str, phase: int, status: int) -> None:
        super().__init__(name, phase, 0, HOOK_REQUEST_HEADERS)
        self.status = status

    def on_request_headers(self, ctx: FilterContext) -> Any:
        return LocalReply(self.status, f"from {self.name}\n", (("x-by", self.name),), details=self.name)


class Boom(HttpFilter):
    def __init__(self) -> None:
        super().__init__("test.boom", UNSPECIFIED, 0, HOOK_REQUEST_HEADERS)

    def on_request_headers(self, ctx: FilterContext) -> Any:
        if ctx.view.path == "/boom":
            raise RuntimeError("filter bug")
        return None


class Recorder(HttpFilter):
    def __init__(self) -> None:
        super().__init__("test.recorder", UNSPECIFIED, 0, HOOK_REQUEST_BODY | HOOK_RESPONSE_BODY | HOOK_DONE)
        self.request_body: list[tuple[bytes, bool]] = []
        self.response_body: list[tuple[bytes, bool]] = []
        self.done: list[tuple[str, int]] = []

    def on_request_body(self, ctx: FilterContext, data: bytes, end: bool) -> Any:
        self.request_body.append((data, end))
        if b"forbidden" in data:
            return LocalReply(413, "no\n")
        return None

    def on_response_body(self, ctx: FilterContext, data: bytes, end: bool) -> None:
        self.response_body.append((data, end))

    def on_done(self, ctx: FilterContext) -> None:
        self.done.append((ctx.view.path, ctx.status))


ROUTE = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews}}]
"""


async def test_a_filter_edits_the_upstream_request_and_the_response(
    upstreams: UpstreamFactory, proxy: ProxyFactory
) -> None:
    u = await upstreams()
    p = await proxy(service_entry("reviews", [u]) + yaml(ROUTE))
    attach(p, Stamp())
    r = await fetch(p.port, "/x")
    assert r.status == 200 and r.headers["x-stamp"] == "200"
    assert u.seen[-1].headers["x-stamped"] == "GET"


async def test_an_async_hook_holds_only_its_own_request_and_can_answer(
    upstreams: UpstreamFactory, proxy: ProxyFactory
) -> None:
    u = await upstreams()
    p = await proxy(service_entry("reviews", [u]) + yaml(ROUTE))
    log = Capture()
    p.server.access_log = log
    gate = Gate()
    attach(p, gate)
    held = asyncio.create_task(fetch(p.port, "/held"))
    await gate.waiting.wait()
    # another request on another connection goes through while the first one waits
    assert (await fetch(p.port, "/free")).status == 200
    assert not held.done()
    refused = asyncio.create_task(fetch(p.port, "/held", headers=[("x-refuse", "1")]))
    gate.opened.set()
    assert (await held).status == 200
    r = await refused
    assert r.status == 451 and r.body == b"unavailable for legal reasons\n"
    assert [s.path for s in u.seen] == ["/free", "/held"]
    assert [rec.response_code_details for rec in log.records if rec.response_code == 451] == ["gate_closed"]


async def test_a_resumable_pause_goes_on_in_the_call_that_settles_it(
    upstreams: UpstreamFactory, proxy: ProxyFactory
) -> None:
    """A ``Resumable`` (a remote filter's pause) resumes the exchange in its filter's call, request
    and response head alike, and its result still answers."""
    u = await upstreams()
    p = await proxy(service_entry("reviews", [u]) + yaml(ROUTE))
    gate = Settled()
    attach(p, gate)
    for path, status in (("/x", 200), ("/refused", 403)):
        got = asyncio.create_task(fetch(p.port, path))
        await gate.settle()  # the request head: it goes upstream
        await gate.settle()  # the response head
        r = await got
        assert r.status == status and u.seen[-1].path == path


async def test_phase_order_decides_who_answers_and_who_sees_the_reply(
    upstreams: UpstreamFactory, proxy: ProxyFactory
) -> None:
    u = await upstreams()
    vs = yaml("""
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews}
        spec:
          hosts: [reviews]
          http:
          - route: [{destination: {host: reviews}}]
            fault: {abort: {httpStatus: 503, percentage: {value: 100}}}
            corsPolicy: {allowOrigins: [{exact: "https://app"}]}
        """)
    p = await proxy(service_entry("reviews", [u]) + vs)
    origin = [("origin", "https://app")]
    # a user filter before the router, after the built-ins: the fault filter answers first
    attach(p, Reply("test.late", UNSPECIFIED, 200))
    r = await fetch(p.port, "/", headers=origin)
    assert r.status == 503 and r.flags == "FI"
    # an AUTHN filter runs before every built-in: its reply passes no CORS filter on the way out
    attach(p, Reply("test.authn", AUTHN, 200))
    r = await fetch(p.port, "/", headers=origin)
    assert r.status == 200 and r.headers["x-by"] == "test.authn"
    assert "access-control-allow-origin" not in r.headers
    assert not u.seen


async def test_a_filter_that_raises_answers_500_and_the_worker_keeps_serving(
    upstreams: UpstreamFactory, proxy: ProxyFactory
) -> None:
    u = await upstreams()
    p = await proxy(service_entry("reviews", [u]) + yaml(ROUTE))
    attach(p, Boom())
    c = await Client.connect(p.port)
    try:
        r = await c.request(path="/boom")
        assert r.status == 500 and r.body == b"filter error\n"
    finally:
        await c.close()
    assert (await fetch(p.port, "/fine")).status == 200


async def test_body_hooks_see_every_chunk_and_done_sees_the_status(
    upstreams: UpstreamFactory, proxy: ProxyFactory
) -> None:
    u = await upstreams()
    p = await proxy(service_entry("reviews", [u]) + yaml(ROUTE))
    rec = Recorder()
    attach(p, rec)
    r = await fetch(p.port, "/up", method="POST", body=b"hello")
    assert r.status == 200
    assert rec.request_body == [(b"hello", False), (b"", True)]
    assert b"".join(d for d, _ in rec.response_body) == r.body and rec.response_body[-1][1]
    r = await fetch(p.port, "/no", method="POST", body=b"forbidden")
    assert r.status == 413
    assert rec.done == [("/up", 200), ("/no", 413)]


async def test_a_delay_pauses_then_continues(upstreams: UpstreamFactory, proxy: ProxyFactory) -> None:
    class Slow(HttpFilter):
        def __init__(self) -> None:
            super().__init__("test.slow", UNSPECIFIED, 0, HOOK_REQUEST_HEADERS)

        def on_request_headers(self, ctx: FilterContext) -> Any:
            return Delay(0.05)

    u = await upstreams()
    p = await proxy(service_entry("reviews", [u]) + yaml(ROUTE))
    attach(p, Slow())
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    assert (await fetch(p.port, "/")).status == 200
    assert loop.time() - t0 >= 0.05
