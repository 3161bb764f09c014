"""The sans-IO HTTP/1.1 sessions: bytes in, events out, no sockets."""

from __future__ import annotations

import httptools
import pytest

from meshbus.proxy.codec.http1 import (
    BODY,
    CHUNKED,
    END,
    HEAD,
    LAST_CHUNK,
    LENGTH,
    NO_BODY,
    UNTIL_EOF,
    UPGRADE,
    ProtocolError,
    RequestSession,
    ResponseSession,
    chunk,
    connection_tokens,
    local_reply,
    serialize_request_head,
    serialize_response_head,
)

pytestmark = pytest.mark.unit


def kinds(events: list) -> list[int]:
    return [k for k, _ in events]


def test_simple_get_gives_head_and_end() -> None:
    s = RequestSession()
    ev = s.feed(b"GET /a?b=c HTTP/1.1\r\nHost: Example\r\nX-Two: 1\r\nx-two: 2\r\n\r\n")
    assert kinds(ev) == [HEAD, END]
    head = ev[0][1]
    assert (head.method, head.target, head.version) == ("GET", "/a?b=c", "1.1")
    assert head.headers == [("host", "Example"), ("x-two", "1"), ("x-two", "2")]
    assert head.hdict == {"host": "Example", "x-two": "1,2"}
    assert head.keep_alive and not head.upgrade and head.body == NO_BODY


def test_pipelined_requests_come_out_in_order() -> None:
    s = RequestSession()
    data = (
        b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
        b"POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
        b"GET /3 HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    ev = s.feed(data)
    assert kinds(ev) == [HEAD, END, HEAD, BODY, END, HEAD, END]
    assert [p.target for k, p in ev if k == HEAD] == ["/1", "/2", "/3"]
    assert ev[3][1] == b"abc"
    assert ev[2][1].body == LENGTH and ev[2][1].content_length == 3


def test_trailer_fields_do_not_become_the_next_requests_headers() -> None:
    # llhttp reports a chunked body's trailer fields through the header callbacks, after the head is
    # complete: they used to land in the next pipelined request's headers (here a second Host, and a
    # header the client never sent on that request).
    s = RequestSession()
    ev = s.feed(
        b"POST /1 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"1\r\nx\r\n0\r\nX-Injected: 1\r\nHost: evil\r\n\r\n"
        b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    assert kinds(ev) == [HEAD, BODY, END, HEAD, END]
    second = ev[3][1]
    assert second.headers == [("host", "a")] and second.hdict == {"host": "a"}


def test_names_change_between_requests_on_one_connection() -> None:
    # RequestSession remembers the last head's names by position: a different name, a different
    # spelling of one, and more headers than it remembers must all come out as sent.
    s = RequestSession()
    many = b"".join(b"X-H%d: %d\r\n" % (i, i) for i in range(40))
    reads = [
        b"GET / HTTP/1.1\r\nHost: a\r\nX-One: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHOST: a\r\nX-Two: 2\r\nX-One: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n" + many + b"\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-H1: a\r\nX-H0: b\r\n" + many + b"\r\n",
    ]
    expected = [
        [("host", "a"), ("x-one", "1")],
        [("host", "a"), ("x-two", "2"), ("x-one", "1")],
        [("host", "a")] + [(f"x-h{i}", str(i)) for i in range(40)],
        [("host", "a"), ("x-h1", "a"), ("x-h0", "b")] + [(f"x-h{i}", str(i)) for i in range(40)],
    ]
    for data, want in zip(reads, expected, strict=True):
        (head,) = [p for k, p in s.feed(data) if k == HEAD]
        assert head.headers == want
    assert head.hdict["x-h0"] == "b,0" and head.hdict["x-h1"] == "a,1" and head.hdict["x-h2"] == "2"


def test_values_change_between_requests_on_one_connection() -> None:
    # ... and so does each value: equal, changed, empty, and longer than the ones it keeps.
    s = RequestSession()
    long1, long2 = "a" * 300, "a" * 299 + "b"
    for values in (("a", "1", long1, ""), ("a", "2", long1, ""), ("b", "2", long2, "e"), ("b", "2", "", "")):
        want = list(zip(("host", "x-v", "x-long", "x-e"), values, strict=True))
        data = "GET / HTTP/1.1\r\n" + "".join(f"{n}: {v}\r\n" for n, v in want) + "\r\n"
        (head,) = [p for k, p in s.feed(data.encode()) if k == HEAD]
        assert head.headers == want and head.hdict == dict(want)


def test_bytes_split_anywhere_give_the_same_events() -> None:
    data = (
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    for cut in range(1, len(data)):
        s = RequestSession()
        ev = s.feed(data[:cut]) + s.feed(data[cut:])
        assert kinds(ev)[0] == HEAD and kinds(ev)[-1] == END
        assert b"".join(p for k, p in ev if k == BODY) == b"abcde"
        assert ev[0][1].body == CHUNKED


def test_absolute_form_target_is_kept_for_the_proxy() -> None:
    ev = RequestSession().feed(b"GET http://reviews:9080/x HTTP/1.1\r\nHost: reviews:9080\r\n\r\n")
    assert ev[0][1].target == "http://reviews:9080/x"


@pytest.mark.parametrize(
    "raw",
    [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
        b"GET / HTTP/9.9\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
    ],
)
def test_malformed_requests_are_400(raw: bytes) -> None:
    with pytest.raises(ProtocolError) as err:
        RequestSession().feed(raw)
    assert err.value.status == 400
    assert str(err.value).startswith("meshbus: ")


@pytest.mark.parametrize("order", ["cl-first", "te-first"])
def test_content_length_with_transfer_encoding_is_400(order: str) -> None:
    cl, te = b"Content-Length: 3\r\n", b"Transfer-Encoding: chunked\r\n"
    both = cl + te if order == "cl-first" else te + cl
    with pytest.raises(ProtocolError) as err:
        RequestSession().feed(b"POST / HTTP/1.1\r\nHost: a\r\n" + both + b"\r\n0\r\n\r\n")
    assert err.value.status == 400


def test_headers_over_the_limit_are_431() -> None:
    s = RequestSession(max_header_bytes=2048)
    with pytest.raises(ProtocolError) as err:
        s.feed(b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"x" * 4000 + b"\r\n\r\n")
    assert err.value.status == 431


def test_an_endless_header_line_is_431_before_it_ends() -> None:
    s = RequestSession(max_header_bytes=2048)
    s.feed(b"GET / HTTP/1.1\r\nX-Slow: ")
    assert s.in_head
    with pytest.raises(ProtocolError) as err:
        for _ in range(10):
            s.feed(b"y" * 500)
    assert err.value.status == 431


@pytest.mark.parametrize(
    ("after", "status"),
    [
        (b"G ET /3 HTTP/1.1\r\nHost: a\r\n\r\n", 400),  # llhttp refuses the head
        (b"GET /3 HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),  # the session refuses it
        (b"GET /3 HTTP/1.1\r\nX-Big: " + b"x" * 3000, 431),  # a head still arriving, over the limit
        (b"POST /3 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n", 400),  # its body
    ],
    ids=["llhttp", "two-hosts", "partial-431", "body"],
)
def test_a_protocol_error_carries_the_events_the_read_gave_before_it(after: bytes, status: int) -> None:
    # The listener answers those first, in order, as Envoy does, then the error.
    s = RequestSession(max_header_bytes=2048)
    with pytest.raises(ProtocolError) as err:
        s.feed(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n" + after)
    assert err.value.status == status
    got = [(k, p.target if k == HEAD else p) for k, p in err.value.events]
    want = [(HEAD, "/1"), (END, None), (HEAD, "/2"), (END, None)]
    assert got == ([*want, (HEAD, "/3")] if after.startswith(b"POST") else want)


@pytest.mark.parametrize("version", [b"HTTP/2.0", b"HTTP/0.9"])
def test_versions_llhttp_takes_but_http1_is_not_are_400(version: bytes) -> None:
    # Forwarded before (as HTTP/1.1) when alone in a read; refused when a request followed in it.
    s = RequestSession()
    with pytest.raises(ProtocolError) as err:
        s.feed(b"GET / " + version + b"\r\nHost: a\r\n\r\n")
    assert err.value.status == 400


def test_headers_under_the_limit_pass() -> None:
    s = RequestSession(max_header_bytes=2048)
    ev = s.feed(b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"x" * 1000 + b"\r\n\r\n")
    assert kinds(ev) == [HEAD, END]
    assert not s.in_head


def test_upgrade_hands_over_the_following_bytes() -> None:
    s = RequestSession()
    ev = s.feed(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nRAW")
    assert kinds(ev) == [HEAD, END, UPGRADE]
    assert ev[0][1].upgrade
    assert ev[-1][1] == b"RAW"


def test_http10_without_keep_alive_closes() -> None:
    ev = RequestSession().feed(b"GET / HTTP/1.0\r\n\r\n")
    assert ev[0][1].version == "1.0" and not ev[0][1].keep_alive


def test_response_with_length_then_chunked_on_one_connection() -> None:
    r = ResponseSession()
    r.expect(False)
    ev = r.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: b\r\n\r\nhi")
    assert kinds(ev) == [HEAD, BODY, END]
    head = ev[0][1]
    assert head.status == 200 and head.body == LENGTH and head.keep_alive
    assert head.headers == [("content-length", "2"), ("x-a", "b")]
    r.expect(False)
    ev = r.feed(b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n")
    assert kinds(ev) == [HEAD, BODY, END] and ev[0][1].body == CHUNKED


def test_response_to_head_ends_at_its_head_and_the_next_response_parses() -> None:
    r = ResponseSession()
    r.expect(True)
    ev = r.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
    assert kinds(ev) == [HEAD, END]
    assert ev[0][1].body == NO_BODY
    r.expect(False)
    ev = r.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
    assert kinds(ev) == [HEAD, BODY, END]


def test_interim_100_is_swallowed_and_204_304_have_no_body() -> None:
    r = ResponseSession()
    r.expect(False)
    ev = r.feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n")
    assert kinds(ev) == [HEAD, END] and ev[0][1].status == 204
    r.expect(False)
    ev = r.feed(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n")
    assert kinds(ev) == [HEAD, END] and ev[0][1].body == NO_BODY


def test_close_delimited_response_is_not_keep_alive() -> None:
    r = ResponseSession()
    r.expect(False)
    ev = r.feed(b"HTTP/1.1 200 OK\r\n\r\nabc")
    assert kinds(ev) == [HEAD, BODY]
    assert ev[0][1].body == UNTIL_EOF and not ev[0][1].keep_alive


def test_garbage_response_is_a_protocol_error() -> None:
    r = ResponseSession()
    r.expect(False)
    with pytest.raises(ProtocolError) as err:
        r.feed(b"this is not http\r\n\r\n")
    assert err.value.status == 502


def test_101_switches_to_raw_bytes() -> None:
    r = ResponseSession()
    r.expect(False)
    ev = r.feed(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nxyz")
    assert kinds(ev) == [HEAD, UPGRADE] and ev[0][1].status == 101
    assert ev[-1] == (UPGRADE, b"xyz")


def test_serializers_round_trip_through_the_parsers() -> None:
    data = serialize_request_head("PUT", "/p?q=1", [("host", "h"), ("content-length", "2")]) + b"ok"
    ev = RequestSession().feed(data)
    assert ev[0][1].method == "PUT" and ev[0][1].hdict["host"] == "h" and ev[1] == (BODY, b"ok")
    resp = serialize_response_head(418, [("transfer-encoding", "chunked")]) + chunk(b"tea") + LAST_CHUNK
    assert resp.startswith(b"HTTP/1.1 418 I'm a Teapot\r\n")
    r = ResponseSession()
    r.expect(False)
    ev = r.feed(resp)
    assert ev[0][1].status == 418 and ev[1] == (BODY, b"tea") and ev[2][0] == END


def test_local_reply_is_a_complete_response() -> None:
    data = local_reply(503, "no healthy upstream\n", [("x-meshbus-flags", "UH")], close=True)
    r = ResponseSession()
    r.expect(False)
    ev = r.feed(data)
    head = ev[0][1]
    assert head.status == 503 and ("x-meshbus-flags", "UH") in head.headers and not head.keep_alive
    assert ev[1] == (BODY, b"no healthy upstream\n")


def test_connection_header_names_more_hop_by_hop_headers() -> None:
    tokens = connection_tokens({"connection": "keep-alive, X-Secret"})
    assert "x-secret" in tokens and "transfer-encoding" in tokens


class _Llhttp:
    """llhttp's own answers (the calls the request session skips for a plain HTTP/1.1 head)."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.answer: tuple[bool, bool] | None = None

    def on_headers_complete(self) -> None:
        self.answer = (self.parser.should_keep_alive(), self.parser.should_upgrade())


@pytest.mark.parametrize(
    "raw",
    [
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",  # no Connection: upgrade: not one
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nab",
        b"GET / HTTP/1.0\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
    ],
)
def test_keep_alive_and_upgrade_are_what_llhttp_says(raw: bytes) -> None:
    ev = RequestSession().feed(raw)
    oracle = _Llhttp()
    try:
        oracle.parser.feed_data(raw)
    except httptools.HttpParserUpgrade:  # llhttp stops at an upgrade's head, as the session does
        pass
    head = ev[0][1]
    assert (head.keep_alive, head.upgrade) == oracle.answer
