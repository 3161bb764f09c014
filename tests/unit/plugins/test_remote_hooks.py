"""Which hook points a REMOTE Plugin's filter takes: what its host describes (sans-IO, no bus)."""

from __future__ import annotations

import pytest

from meshbus.bus.schemas.filters import FilterHostInfo
from meshbus.plugins import Filter, Peer, Request, Response
from meshbus.plugins.registry import info_of
from meshbus.plugins.remote.host import FilterHost
from meshbus.proxy.filters import chain as C
from meshbus.proxy.filters.plugins.adapter import PluginFilter, PluginStats
from meshbus.proxy.filters.plugins.remote import RemoteBackend, RemoteFilters

pytestmark = pytest.mark.unit


class RequestOnly(Filter):
    def on_request_headers(self, req: Request) -> None:
        return None


class Both(Filter):
    def on_request_headers(self, req: Request) -> None:
        return None

    def on_response_headers(self, req: Request, resp: Response) -> None:
        return None


def remote_filter(info: FilterHostInfo | None) -> PluginFilter:
    remotes = RemoteFilters(lambda: None)
    if info is not None:
        remotes.infos["f"] = info
    backend = RemoteBackend(remotes, "f", "default/p", None, 1.0)
    return PluginFilter(
        "default/p", C.UNSPECIFIED, 0, backend, direction="outbound", workload=Peer(), fail_open=False,
        timeout=1.0, stats=PluginStats("default/p"), remote=True,
    )  # fmt: skip


def test_a_host_describes_the_hooks_its_filter_overrides() -> None:
    host = FilterHost(None, info_of("f", Both))  # type: ignore[arg-type]  # describe() needs no bus
    assert host.describe().hooks == ["request_headers", "response_headers"]
    assert FilterHost(None, info_of("f", RequestOnly)).describe().hooks == ["request_headers"]  # type: ignore[arg-type]


def test_a_request_headers_only_remote_filter_takes_only_that_hook_point() -> None:
    f = remote_filter(FilterHost(None, info_of("f", RequestOnly)).describe())  # type: ignore[arg-type]
    assert f.described and f.single
    assert f.hooks == C.HOOK_REQUEST_HEADERS
    chain = C.FilterChain([f])
    assert chain.request_headers == (f,)
    assert chain.response_headers == () and chain.response_body == () and chain.done == ()


def test_a_described_filter_with_response_hooks_takes_them_and_done() -> None:
    f = remote_filter(FilterHostInfo(filter="f", hooks=["request_headers", "response_headers"]))
    assert f.hooks == C.HOOK_REQUEST_HEADERS | C.HOOK_RESPONSE_HEADERS | C.HOOK_DONE
    assert not f.single  # keeps its view (with req.state) from one call to the next


def test_a_filter_no_host_described_yet_takes_every_hook_point() -> None:
    f = remote_filter(None)
    assert not f.described
    every = C.HOOK_REQUEST_HEADERS | C.HOOK_REQUEST_BODY | C.HOOK_RESPONSE_HEADERS | C.HOOK_RESPONSE_BODY
    assert f.hooks == every | C.HOOK_DONE


def test_a_host_that_lists_no_hooks_is_called_for_every_hook() -> None:
    f = remote_filter(FilterHostInfo(filter="f"))  # an info without `hooks`: a host that does not say
    assert f.backend.hooks == {
        "on_request_headers", "on_request_body", "on_response_headers", "on_response_body", "on_done",
    }  # fmt: skip
    # bodies only in the mode it asked for (none): the header hooks and done
    assert f.hooks == C.HOOK_REQUEST_HEADERS | C.HOOK_RESPONSE_HEADERS | C.HOOK_DONE
