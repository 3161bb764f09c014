"""Plugins in a running proxy: in process and behind a filter host on a real nats-server, their
failure policies, a hanging filter, bodies, and Plugins applied and removed while traffic runs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from meshbus.bus.connection import BusConnection
from meshbus.plugins.registry import FilterInfo, PluginLoadError, info_of
from meshbus.plugins.remote.host import FilterHost
from meshbus.proxy.filters.chain import AUTHN, HOOK_REQUEST_HEADERS, FilterChain, FilterContext, HttpFilter
from meshbus.proxy.filters.plugins import bindings
from meshbus.telemetry.accesslog import AccessLogRecord
from tests.integration.plugins import filters
from tests.integration.proxy.conftest import ProxyFactory, ProxyHandle, UpstreamFactory, service_entry, yaml
from tests.integration.proxy.upstreams import Response, fetch

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

HOST = "reviews.default.svc.cluster.local:9080"
TEST_FILTERS: dict[str, type[Any]] = {
    "stamp": filters.Stamp,
    "async-stamp": filters.AsyncStamp,
    "boom": filters.Boom,
    "hang": filters.Hang,
    "body-check": filters.BodyCheck,
    "claims": filters.Claims,
}


def load_test_filter(name: str) -> FilterInfo:
    if name not in TEST_FILTERS:
        raise PluginLoadError(f"meshbus: no installed filter named {name!r}")
    return info_of(name, TEST_FILTERS[name])


@pytest.fixture(autouse=True)
def _test_filters(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test filters stand in for installed ones (test_example_package installs a real one)."""
    monkeypatch.setattr(bindings, "load", load_test_filter)


def plugin(
    filter_name: str,
    *,
    name: str = "p",
    placement: str = "IN_PROCESS",
    fail: str = "FAIL_CLOSE",
    config: str = "",
    timeout: str = "1s",
    extra: str = "",
) -> str:
    return (
        yaml(f"""
        apiVersion: meshbus.io/v1
        kind: Plugin
        metadata: {{name: {name}, namespace: default}}
        spec:
          filter: {filter_name}
          placement: {placement}
          failStrategy: {fail}
          timeout: {timeout}
          match: [{{mode: CLIENT}}]
        {("  pluginConfig: " + config) if config else ""}
        {extra}
    """)
        + "---\n"
    )


class Capture:
    def __init__(self) -> None:
        self.records: list[AccessLogRecord] = []

    def log(self, record: AccessLogRecord) -> None:
        self.records.append(record)


HostFactory = Callable[..., Awaitable[FilterHost]]


@pytest.fixture
async def host(bus: BusConnection) -> AsyncIterator[HostFactory]:
    started: list[FilterHost] = []

    async def start(name: str, **kw: Any) -> FilterHost:
        h = FilterHost(bus, load_test_filter(name), **kw)
        await h.start()
        started.append(h)
        return h

    yield start
    for h in started:
        await h.stop()


async def remote_proxy(proxy: ProxyFactory, bus: BusConnection, text: str) -> ProxyHandle:
    return await proxy(text, nats=bus.settings.url, subject_root=bus.subjects.root)


async def placed(
    placement: str, name: str, proxy: ProxyFactory, up: Any, bus: BusConnection, host: HostFactory
) -> ProxyHandle:
    """A proxy running filter ``name`` in process, or REMOTE behind a host started for it."""
    if placement == "REMOTE":
        await host(name)
    return await remote_proxy(proxy, bus, service_entry("reviews", [up]) + plugin(name, placement=placement))


def shown(r: Response) -> tuple[Any, ...]:
    """What a client and the upstream saw of a response (no per-request ids)."""
    seen = r.json()["headers"] if r.status == 200 else {}
    return (
        r.status,
        r.headers.get("x-stamp"),
        r.headers.get("x-stamp-path"),
        seen.get("x-stamped"),
        r.body if r.status != 200 else b"",
    )


async def test_the_same_filter_in_process_and_remote_gives_identical_responses(
    proxy: ProxyFactory, upstreams: UpstreamFactory, bus: BusConnection, host: HostFactory
) -> None:
    up = await upstreams()
    await host("stamp")
    local = await proxy(service_entry("reviews", [up]) + plugin("stamp", config="{value: hello}"))
    remote = await remote_proxy(
        proxy,
        bus,
        service_entry("reviews", [up]) + plugin("stamp", placement="REMOTE", config="{value: hello}"),
    )
    cases: list[dict[str, Any]] = [{"path": "/a"}, {"path": "/b", "headers": [("x-block", "1")]}]
    results = []
    for p in (local, remote):
        results.append([shown(await fetch(p.port, host=HOST, **case)) for case in cases])
    assert results[0] == results[1]
    assert results[0][0] == (200, "hello", "/a", "hello", b"")
    assert results[0][1][0] == 451 and results[0][1][4] == b"blocked\n"


async def test_async_hooks_pause_only_their_request_and_stamp_the_response(
    proxy: ProxyFactory, upstreams: UpstreamFactory
) -> None:
    up = await upstreams()
    p = await proxy(service_entry("reviews", [up]) + plugin("async-stamp", config="{value: a}"))
    r = await fetch(p.port, "/x", host=HOST, headers=[("x-test-action", "chunked")])
    assert r.status == 200 and r.headers["x-stamp"] == "a" and r.body == b"part0;part1;part2;"


@pytest.mark.parametrize(("fail", "status", "flag"), [("FAIL_CLOSE", 500, "FF"), ("FAIL_OPEN", 200, None)])
async def test_a_raising_filter_gets_its_fail_strategy(
    proxy: ProxyFactory, upstreams: UpstreamFactory, fail: str, status: int, flag: str | None
) -> None:
    up = await upstreams()
    p = await proxy(service_entry("reviews", [up]) + plugin("boom", fail=fail))
    capture = Capture()
    p.server.access_log = capture  # type: ignore[assignment]
    r = await fetch(p.port, "/", host=HOST)
    assert (r.status, r.flags) == (status, flag)
    errors = p.server.registry.get("meshbus_plugin_errors_total")
    assert errors is not None
    action = fail.lower()
    assert dict(errors.series())[("default/p", "error", action)].value == 1
    if fail == "FAIL_CLOSE":
        assert (capture.records[-1].response_code_details, capture.records[-1].response_flags) == (
            "plugin:default/p:error",
            "FF",
        )
        assert up.seen == []


@pytest.mark.parametrize(("fail", "status", "flag"), [("FAIL_CLOSE", 503, "FF"), ("FAIL_OPEN", 200, None)])
async def test_a_dead_host_gets_the_fail_strategy(
    proxy: ProxyFactory,
    upstreams: UpstreamFactory,
    bus: BusConnection,
    fail: str,
    status: int,
    flag: str | None,
) -> None:
    up = await upstreams()
    p = await remote_proxy(
        proxy,
        bus,
        service_entry("reviews", [up]) + plugin("stamp", placement="REMOTE", fail=fail, config="{value: x}"),
    )
    capture = Capture()
    p.server.access_log = capture  # type: ignore[assignment]
    r = await fetch(p.port, "/", host=HOST)
    assert (r.status, r.flags) == (status, flag)
    if fail == "FAIL_CLOSE":
        assert r.body == b"filter host unreachable\n"
        assert capture.records[-1].response_code_details == "plugin:default/p:unreachable"


async def test_a_host_that_dies_is_unreachable_and_one_that_comes_back_serves(
    proxy: ProxyFactory, upstreams: UpstreamFactory, bus: BusConnection, host: HostFactory
) -> None:
    up = await upstreams()
    h = await host("stamp")
    p = await remote_proxy(
        proxy, bus, service_entry("reviews", [up]) + plugin("stamp", placement="REMOTE", config="{value: x}")
    )
    assert (await fetch(p.port, "/", host=HOST)).headers["x-stamp"] == "x"
    await h.stop()
    r = await fetch(p.port, "/", host=HOST)
    assert (r.status, r.flags) == (503, "FF")
    await host("stamp")
    assert (await fetch(p.port, "/", host=HOST)).headers["x-stamp"] == "x"


async def test_a_hanging_filter_times_out_and_never_delays_other_requests(
    proxy: ProxyFactory, upstreams: UpstreamFactory
) -> None:
    up = await upstreams()
    p = await proxy(service_entry("reviews", [up]) + plugin("hang", timeout="3s"))
    hanging = asyncio.create_task(fetch(p.port, "/hang", host=HOST))
    t0 = time.monotonic()
    for _ in range(5):
        r = await fetch(p.port, "/other", host=HOST)
        assert r.status == 200
    assert time.monotonic() - t0 < 1.5  # served while /hang waits for its 3 s timeout
    assert not hanging.done()
    r = await hanging
    assert (r.status, r.flags) == (500, "FF")


async def test_a_hanging_remote_filter_times_out_with_its_budget(
    proxy: ProxyFactory, upstreams: UpstreamFactory, bus: BusConnection, host: HostFactory
) -> None:
    up = await upstreams()
    await host("hang")
    p = await remote_proxy(
        proxy, bus, service_entry("reviews", [up]) + plugin("hang", placement="REMOTE", timeout="300ms")
    )
    t0 = time.monotonic()
    r = await fetch(p.port, "/hang", host=HOST)
    assert (r.status, r.flags) == (500, "FF")
    assert 0.25 < time.monotonic() - t0 < 2
    assert (await fetch(p.port, "/fine", host=HOST)).status == 200


@pytest.mark.parametrize("placement", ["IN_PROCESS", "REMOTE"])
async def test_a_buffered_body_is_checked_before_the_request_goes_upstream(
    proxy: ProxyFactory, upstreams: UpstreamFactory, bus: BusConnection, host: HostFactory, placement: str
) -> None:
    up = await upstreams()
    p = await placed(placement, "body-check", proxy, up, bus, host)
    r = await fetch(p.port, "/", host=HOST, method="POST", body=b"this is bad")
    assert (r.status, r.body) == (422, b"bad body of 11 bytes\n")
    assert up.seen == []
    r = await fetch(p.port, "/", host=HOST, method="POST", body=b"fine")
    assert r.status == 200 and r.json()["headers"]["x-body-len"] == "4" and r.json()["body_len"] == 4
    r = await fetch(p.port, "/", host=HOST, method="POST", body=b"x" * 2000)
    assert r.status == 413


async def test_a_plugin_is_applied_and_removed_without_a_restart(
    proxy: ProxyFactory, upstreams: UpstreamFactory
) -> None:
    up = await upstreams()
    se = service_entry("reviews", [up])
    p = await proxy(se)
    assert "x-stamp" not in (await fetch(p.port, "/", host=HOST)).headers

    async def reloaded(text: str) -> None:
        n = p.server.reloads["applied"]
        p.write_config(text)
        async with asyncio.timeout(5):
            while p.server.reloads["applied"] == n:  # noqa: ASYNC110 - the file watch has no event
                await asyncio.sleep(0.02)

    await reloaded(se + plugin("stamp", config="{value: on}"))
    assert (await fetch(p.port, "/", host=HOST)).headers["x-stamp"] == "on"
    first = p.server.plugins.active.bindings[0]
    await reloaded(se + plugin("stamp", config="{value: on}") + "# same plugin, file touched\n")
    assert p.server.plugins.active.bindings[0] is first  # unchanged Plugin: same instance
    await reloaded(se)
    assert "x-stamp" not in (await fetch(p.port, "/", host=HOST)).headers
    assert p.server.plugins.active.bindings == ()


async def test_a_bad_plugin_config_is_refused_naming_the_field(
    proxy: ProxyFactory, upstreams: UpstreamFactory
) -> None:
    up = await upstreams()
    se = service_entry("reviews", [up])
    p = await proxy(se)
    with pytest.raises(
        Exception, match=r"Plugin default/p: spec\.pluginConfig\.value: Input should be a valid string"
    ):
        await proxy(se + plugin("stamp", config="{value: [1]}"))
    with pytest.raises(Exception, match=r"spec\.filter: no installed filter named 'nope'"):
        await proxy(se + plugin("nope"))
    assert (await fetch(p.port, "/", host=HOST)).status == 200


async def test_selector_and_match_pick_the_workloads_and_sides(
    proxy: ProxyFactory, upstreams: UpstreamFactory
) -> None:
    up = await upstreams()
    se = service_entry("reviews", [up])
    other = plugin(
        "stamp", name="other", config="{value: other}", extra="  selector: {matchLabels: {app: other}}"
    )
    server_side = plugin("stamp", name="srv", config="{value: srv}").replace("mode: CLIENT", "mode: SERVER")
    mine = plugin(
        "stamp", name="mine", config="{value: mine}", extra="  selector: {matchLabels: {app: shelf}}"
    )
    p = await proxy(se + other + server_side + mine, labels={"app": "shelf"}, app_port=up.port)
    r = await fetch(p.port, "/", host=HOST)
    assert r.headers["x-stamp"] == "mine"  # the outbound side: only the Plugin that selects app=shelf
    r = await fetch(p.inbound_port, "/", host="anything")
    assert r.headers["x-stamp"] == "srv"  # the inbound side: the SERVER one


class FakeJwt(HttpFilter):
    """Stands in for the JWT filter: what it leaves in the request's filter state for others."""

    def __init__(self) -> None:
        super().__init__("test.jwt", AUTHN, 100, HOOK_REQUEST_HEADERS)

    def on_request_headers(self, ctx: FilterContext) -> None:
        if ctx.head.hdict.get("authorization"):
            state = ctx.filter_state = ctx.filter_state or {}
            state["request.auth"] = {
                "principal": "iss/me",
                "audiences": [],
                "presenter": "",
                "claims": {"sub": "me"},
            }


@pytest.mark.parametrize("placement", ["IN_PROCESS", "REMOTE"])
async def test_filters_see_the_verified_token_claims(
    proxy: ProxyFactory, upstreams: UpstreamFactory, bus: BusConnection, host: HostFactory, placement: str
) -> None:
    up = await upstreams()
    p = await placed(placement, "claims", proxy, up, bus, host)
    for vh in p.server.runtime.outbound.virtual_hosts:
        for route in vh.routes:
            object.__setattr__(route, "chain", FilterChain([*route.chain.filters, FakeJwt()]))
    r = await fetch(p.port, "/", host=HOST, headers=[("authorization", "Bearer x")])
    assert r.json()["headers"]["x-sub"] == "me"
    assert (await fetch(p.port, "/", host=HOST)).json()["headers"]["x-sub"] == "-"
