"""REMOTE Plugins take the hook points their host describes, on a real proxy, host and nats-server:
a request-headers-only filter is never called for response hooks and leaves the response path
without filters; a host that lists no hooks is called for every hook; a host that answers only
after the proxy was built gets the narrow chain on the rebuild its answer triggers."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest

from meshbus.bus.connection import BusConnection
from meshbus.bus.schemas.filters import FilterHostInfo
from meshbus.plugins.registry import info_of
from meshbus.plugins.remote.host import FilterHost
from meshbus.proxy.filters.chain import FilterChain
from tests.integration.plugins import filters
from tests.integration.plugins.test_plugin_proxy import HOST, plugin, remote_proxy
from tests.integration.proxy.conftest import ProxyFactory, ProxyHandle, UpstreamFactory, service_entry
from tests.integration.proxy.upstreams import fetch

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


class Undescribed(FilterHost):
    """A host whose ``info`` does not list its hooks (one that predates the field, or a hand-written
    one that leaves it out)."""

    def describe(self) -> FilterHostInfo:
        return dataclasses.replace(super().describe(), hooks=[])


@pytest.fixture
async def hosts(bus: BusConnection) -> AsyncIterator[list[FilterHost]]:
    started: list[FilterHost] = []
    yield started
    for h in started:
        await h.stop()


async def serve(hosts: list[FilterHost], h: FilterHost) -> FilterHost:
    await h.start()
    hosts.append(h)
    return h


def chains(p: ProxyHandle) -> list[FilterChain]:
    return [route.chain for vh in p.server.runtime.outbound.virtual_hosts for route in vh.routes]


async def test_a_request_headers_only_remote_filter_is_not_called_for_response_hooks(
    proxy: ProxyFactory, upstreams: UpstreamFactory, bus: BusConnection, hosts: list[FilterHost]
) -> None:
    up = await upstreams()
    h = await serve(hosts, FilterHost(bus, info_of("noop", filters.Noop)))
    p = await remote_proxy(proxy, bus, service_entry("reviews", [up]) + plugin("noop", placement="REMOTE"))
    for path in ("/a", "/b", "/c"):
        assert (await fetch(p.port, path, host=HOST)).status == 200
    assert h.calls == 3  # request_headers only: no response_headers, no done
    ours = [c for c in chains(p) if any(f.name == "plugin:default/p" for f in c.filters)]
    assert ours and all(c.request_headers and not c.response_headers and not c.done for c in ours)


async def test_a_host_that_lists_no_hooks_is_called_for_every_hook(
    proxy: ProxyFactory, upstreams: UpstreamFactory, bus: BusConnection, hosts: list[FilterHost]
) -> None:
    up = await upstreams()
    h = await serve(hosts, Undescribed(bus, info_of("stamp", filters.Stamp)))
    p = await remote_proxy(
        proxy, bus, service_entry("reviews", [up]) + plugin("stamp", placement="REMOTE", config="{value: v}")
    )
    r = await fetch(p.port, "/x", host=HOST)
    assert (r.status, r.headers.get("x-stamp"), r.headers.get("x-stamp-path")) == (200, "v", "/x")
    assert r.json()["headers"]["x-stamped"] == "v"
    assert h.calls >= 2  # request_headers and response_headers (done is published, not awaited)


async def test_a_host_that_answers_after_the_build_gets_the_narrow_chain_on_a_rebuild(
    proxy: ProxyFactory, upstreams: UpstreamFactory, bus: BusConnection, hosts: list[FilterHost]
) -> None:
    up = await upstreams()
    p = await remote_proxy(proxy, bus, service_entry("reviews", [up]) + plugin("noop", placement="REMOTE"))
    binding = p.server.plugins.active.bindings[0]
    assert not binding.outbound.described  # no host when it was built: every hook point
    n = p.server.reloads["applied"]
    await serve(hosts, FilterHost(bus, info_of("noop", filters.Noop)))
    # Each request asks the host until one answer arrives; that answer triggers the rebuild. Under
    # load a request may still share the build's ask, whose "no responders" was sent before the host
    # subscribed, or its 1 s ask may expire: it then fails closed (503) and the next one asks again.
    async with asyncio.timeout(10):
        while p.server.reloads["applied"] == n:
            assert (await fetch(p.port, "/", host=HOST)).status in (200, 503)
            await asyncio.sleep(0.05)  # the reload runs in a task of the server's
    rebound: Any = p.server.plugins.active.bindings[0]
    assert rebound is not binding and rebound.outbound.described and rebound.outbound.single
    assert (await fetch(p.port, "/", host=HOST)).status == 200
