"""The remote filter messages: a request and a verdict make the round trip through the codec."""

from __future__ import annotations

import msgpack
import pytest

from meshbus.bus import codec
from meshbus.bus.errors import BadRequestError
from meshbus.bus.schemas.filters import FilterCall, FilterVerdict
from meshbus.plugins import Headers, LocalReply, Peer, Request, Response
from meshbus.plugins.remote.wire import (
    apply_verdict,
    call_in,
    call_of,
    config_digest,
    pack_call,
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
        fast = call_in(data, CALL_HEADERS, 1 << 20)
        assert fast == codec.decode(data, CALL_HEADERS, FilterCall)
        assert call_in(data, None, 1 << 20) == fast  # a hand-written call has no schema header


@pytest.mark.parametrize(
    "m",
    [
        {"hook": "done", "headers": [["a", "1", "extra"]]},  # odd pairs: the codec's list[str] takes them
        {"hook": "done", "status": True},  # a bool is an int to the codec
        {"hook": "done", "headers": (("a", "1"),), "newer_field": 1},
        {"hook": "done", "source": {"labels": {"app": "x"}, "principal": "p"}, "response_headers": None},
    ],
)
def test_call_in_takes_what_the_codec_takes_by_its_general_path(m: dict[str, object]) -> None:
    data = _packed(m)
    assert call_in(data, None, 1 << 20) == codec.decode(data, None, FilterCall)


@pytest.mark.parametrize(
    ("data", "headers", "error"),
    [
        (_packed({"hook": "done", "headers": [["a", 1]]}), None, "FilterCall.headers"),
        (_packed({"hook": "done", "source": {"labels": {"a": 1}}}), None, "FilterCall.source"),
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
