"""The remote filter messages: a request and a verdict make the round trip through the codec."""

from __future__ import annotations

import msgpack
import pytest

from meshbus.bus import codec
from meshbus.bus.errors import BadRequestError
from meshbus.bus.schemas.filters import FilterCall, FilterVerdict
from meshbus.plugins import Headers, LocalReply, Peer, Request, Response
from meshbus.plugins.remote.wire import (
    CallHead,
    apply_verdict,
    call_in,
    call_of,
    config_digest,
    host_verdict,
    pack_call,
    pack_request,
    pack_verdict,
    verdict_of,
    views_of,
)

pytestmark = pytest.mark.unit


def test_a_call_carries_the_request_and_a_verdict_carries_the_changes_back() -> None:
    live = [("host", "svc"), ("x-a", "1")]
    req = Request(
        "POST", "/p?q=1", "svc", Headers(live), request_id="rid", route="r1",
        source=Peer.from_principal("spiffe://td/ns/a/sa/b"), destination=Peer(namespace="d", labels={"app": "x"}),
        claims={"sub": "me"},
    )  # fmt: skip
    call = call_of("request_headers", req, plugin="ns/p", config={"v": 1}, digest=config_digest({"v": 1}))
    data, headers = codec.encode(call)
    got = codec.decode(data, headers, FilterCall)
    host_req, host_resp = views_of(got)
    assert host_resp is None
    assert (host_req.method, host_req.path, host_req.request_id, host_req.route) == (
        "POST",
        "/p?q=1",
        "rid",
        "r1",
    )
    assert host_req.source.namespace == "a" and host_req.destination.labels == {"app": "x"}
    assert host_req.claims == {"sub": "me"}
    host_req.headers.set("x-a", "2")
    host_req.headers.add("x-b", "3")
    host_req.state["n"] = 1
    verdict = codec.decode(*codec.encode(verdict_of(None, got, host_req, host_resp)), FilterVerdict)
    assert apply_verdict(verdict, "request_headers", req, None) is None
    assert live == [("host", "svc"), ("x-a", "2"), ("x-b", "3")] and req.state == {"n": 1}


def test_a_reply_and_response_headers_come_back_and_nothing_changed_sends_nothing() -> None:
    req = Request("GET", "/", "svc", Headers.of({"a": "1"}))
    resp = Response(200, Headers([("server", "up")]))
    call = call_of("response_headers", req, resp=resp)
    host_req, host_resp = views_of(call)
    assert verdict_of(None, call, host_req, host_resp) == FilterVerdict()
    assert host_resp is not None
    host_resp.headers.set("x-stamp", "s")
    v = verdict_of(LocalReply(451, "no", (("x", "y"),), "why"), call, host_req, host_resp)
    reply = apply_verdict(v, "response_headers", req, resp)
    assert resp.headers.items() == [("server", "up"), ("x-stamp", "s")]
    assert reply == LocalReply(451, b"no", (("x", "y"),), "why")
    assert config_digest({"b": 1, "a": 2}) == config_digest({"a": 2, "b": 1})


def _packed(m: dict[str, object]) -> bytes:
    return msgpack.packb(m, use_bin_type=True)


CALL_HEADERS = {codec.SCHEMA_HEADER: codec.schema_id(FilterCall)}


def test_call_in_reads_what_pack_call_sends_as_the_codec_does() -> None:
    req = Request(
        "POST", "/p", "svc", Headers([("host", "svc"), ("x-a", "1")]), request_id="rid", route="r1",
        source=Peer.from_principal("spiffe://td/ns/a/sa/b"), destination=Peer(namespace="d", labels={"app": "x"}),
        claims={"sub": "me"},
    )  # fmt: skip
    req.state = {"n": 1}
    resp = Response(201, Headers([("x-r", "2")]))
    for kw in (
        {},
        {"plugin": "ns/p", "config": {"v": [1, 2]}, "digest": "d1"},
        {"resp": resp, "body": b"\x00chunk", "end": False},
    ):
        data = pack_call("response_body", req, **kw)  # type: ignore[arg-type]
        assert_read_as_the_codec_does(data, CALL_HEADERS)
        assert_read_as_the_codec_does(data, None)  # a hand-written call has no schema header


def test_a_call_the_codec_takes_with_odd_header_pairs_fails_in_the_views_as_before() -> None:
    data = _packed({"hook": "done", "headers": [["a", "1", "extra"]]})  # the codec's list[str] takes them
    with pytest.raises(ValueError, match="unpack"):
        views_of(codec.decode(data, None, FilterCall))
    with pytest.raises(ValueError, match="unpack"):
        call_in(data, None, 1 << 20)  # the host answers with an error verdict


@pytest.mark.parametrize(
    ("data", "headers", "error"),
    [
        (_packed({"hook": "done", "headers": [["a", 1]]}), None, "FilterCall.headers"),
        (_packed({"hook": "done", "source": {"labels": {"a": 1}}}), None, "FilterCall.source"),
        (_packed({"hook": "done", "destination": {"service": 2}}), None, "FilterCall.destination"),
        (_packed({"hook": "done", "response_headers": [["a", 1]]}), None, "FilterCall.response_headers"),
        (_packed({"method": "GET"}), None, "FilterCall"),  # no hook
        (b"\xc1", None, "undecodable"),
        (_packed({"hook": "done"}), {codec.SCHEMA_HEADER: "meshbus.filter.v1.Verdict"}, "expected schema"),
        (_packed({"hook": "done", "path": "x" * 100}), None, "exceeds the limit"),
    ],
)
def test_call_in_refuses_what_the_codec_refuses_with_its_error(
    data: bytes, headers: dict[str, str] | None, error: str
) -> None:
    with pytest.raises(BadRequestError, match=error):
        call_in(data, headers, 64)
    with pytest.raises(BadRequestError, match=error):
        codec.decode(data, headers, FilterCall, max_bytes=64)


def _seen(req: Request, resp: Response | None) -> tuple[object, ...]:
    """Everything a hook can read off its views."""
    return (
        req.method, req.path, req.authority, req.headers.items(), req.scheme, req.request_id, req.route,
        req.source, req.destination, req.claims, req.state,
        None if resp is None else (resp.status, resp.headers.items()),
    )  # fmt: skip


def assert_read_as_the_codec_does(data: bytes, headers: dict[str, str] | None) -> None:
    ref = codec.decode(data, headers, FilterCall)
    got = call_in(data, headers, 1 << 20)
    assert _seen(got.req, got.resp) == _seen(*views_of(ref))
    assert (got.hook, got.config, got.config_digest, got.body, got.end) == (
        ref.hook, ref.config, ref.config_digest, ref.body, ref.end,
    )  # fmt: skip


WIRE_CALLS = [
    {"hook": "request_headers", "headers": [["Host", "svc"], ["x-a", "1"]], "method": "GET", "path": "/",
     "authority": "svc", "scheme": "https", "request_id": "r", "route": "rt", "claims": {"sub": "me"},
     "source": {"principal": "spiffe://td/ns/a/sa/b", "namespace": "a", "service_account": "b"},
     "destination": {"service": "origin", "labels": {"app": "x"}}, "state": {"n": 1}},
    {"hook": "response_headers", "status": 201, "response_headers": [["x-r", "2"]], "config": {"v": 1},
     "config_digest": "d1"},
    {"hook": "response_body", "body": b"chunk", "end": False, "response_headers": None},
    {"hook": "done", "status": True, "newer_field": 1},  # a bool status: the codec's general path
    {"hook": "done", "headers": (("a", "1"),), "source": {"labels": {"app": "x"}, "principal": "p"}},
]  # fmt: skip


@pytest.mark.parametrize("m", WIRE_CALLS)
def test_the_host_sees_what_views_of_the_codecs_call_show(m: dict[str, object]) -> None:
    assert_read_as_the_codec_does(_packed(m), None)


def test_the_hosts_verdict_is_verdict_of_and_a_no_op_packs_to_the_empty_map() -> None:
    for m in WIRE_CALLS[:3]:
        data = _packed(m)
        call = call_in(data, None, 1 << 20)
        assert pack_verdict(host_verdict(None, call)) == b"\x80"
        ref = codec.decode(data, None, FilterCall)
        ref_views = views_of(ref)
        for req, resp in ((call.req, call.resp), ref_views):
            (resp if resp is not None and m["hook"] == "response_headers" else req).headers.set("x-new", "v")
            req.state["k"] = 2
        reply = LocalReply(451, "no", (("x", "y"),), "why")
        assert host_verdict(reply, call) == verdict_of(reply, ref, *ref_views)


def test_the_host_makes_one_peer_per_distinct_peer_not_one_per_call() -> None:
    data = _packed(WIRE_CALLS[0])
    a, b = call_in(data, None, 1 << 20), call_in(data, None, 1 << 20)
    assert a.req.source is b.req.source and a.req.destination is b.req.destination
    assert a.req.headers is not b.req.headers and a.req.state is not b.req.state


def test_a_call_that_cannot_be_packed_leaves_nothing_behind_for_the_next() -> None:
    bad = Request("GET", "/", "svc", Headers([("host", "svc")]), claims={"sub": object()})
    with pytest.raises(TypeError):
        pack_call("request_headers", bad)
    good = Request("GET", "/", "svc", Headers([("host", "svc")]))
    assert msgpack.unpackb(pack_call("request_headers", good)) == {
        "hook": "request_headers", "method": "GET", "path": "/", "authority": "svc", "headers": [["host", "svc"]],
    }  # fmt: skip


def test_a_call_packed_on_its_hooks_fixed_part_is_the_whole_map_at_any_size() -> None:
    """``pack_request`` joins the hook's part, packed once, to the request's (packed as an array
    whose header becomes the map's): one map, whether the parts are under 16 entries or not."""
    head = CallHead("response_body", "ns/p", {"v": [1, 2]}, "d1")
    small = Request("GET", "/", "svc", Headers([("host", "svc")]))
    assert msgpack.unpackb(pack_request(head, small)) == {
        "hook": "response_body", "plugin": "ns/p", "config": {"v": [1, 2]}, "config_digest": "d1",
        "method": "GET", "path": "/", "authority": "svc", "headers": [["host", "svc"]],
    }  # fmt: skip
    big = Request(
        "POST", "/p", "svc", Headers([("host", "svc")]), scheme="https", request_id="rid", route="r1",
        source=Peer.from_principal("spiffe://td/ns/a/sa/b"), destination=Peer(namespace="d"), claims={"sub": "me"},
    )  # fmt: skip
    big.state = {"n": 1}
    data = pack_request(head, big, Response(201, Headers([("x-r", "2")])), b"\x00chunk", False)
    assert data[0] == 0xDE  # 19 entries: a map16, its request part an array16 of 30 items
    assert msgpack.unpackb(data) == {
        "hook": "response_body", "plugin": "ns/p", "config": {"v": [1, 2]}, "config_digest": "d1",
        "method": "POST", "path": "/p", "authority": "svc", "headers": [["host", "svc"]], "scheme": "https",
        "request_id": "rid", "route": "r1",
        "source": {"principal": "spiffe://td/ns/a/sa/b", "namespace": "a", "service_account": "b"},
        "destination": {"namespace": "d"}, "claims": {"sub": "me"}, "status": 201,
        "response_headers": [["x-r", "2"]], "body": b"\x00chunk", "end": False, "state": {"n": 1},
    }  # fmt: skip
    assert msgpack.unpackb(pack_request(head, small)) == msgpack.unpackb(
        pack_call("response_body", small, plugin="ns/p", config={"v": [1, 2]}, digest="d1")
    )
