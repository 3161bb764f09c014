"""Raw response heads (``ResponseSession(raw_heads=True)``) and the pass-through of unchanged heads."""

from __future__ import annotations

import pytest

from meshbus.proxy.codec.http1 import (
    BODY,
    CHUNKED,
    END,
    HEAD,
    LENGTH,
    MAX_RESPONSE_HEAD,
    NO_BODY,
    UNTIL_EOF,
    UPGRADE,
    ProtocolError,
    ResponseSession,
    passthrough_head,
)

pytestmark = pytest.mark.unit

NGINX = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Fri, 27 Nov 2026 19:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n"
)

RESPONSES = [
    (False, NGINX + b"hello"),
    (False, b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nX-A: b\r\n\r\n1\r\na\r\n0\r\n\r\n"),
    (False, b"HTTP/1.1 100 Continue\r\nX-I: 1\r\n\r\nHTTP/1.1 204 No Content\r\nX-F: 2\r\n\r\n"),
    (False, b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\nETag: x\r\n\r\n"),
    (True, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-H: y\r\n\r\n"),
    (False, b"HTTP/1.1 200 OK\r\nX-E: 1\r\n\r\nabc"),
    (False, b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nxyz"),
    (False, b"HTTP/1.0 200 OK\r\nCONTENT-LENGTH:  2 \r\nSet-Cookie: a\r\nSet-Cookie: b\r\n\r\nhi"),
]


def summary(events: list[tuple[int, object]]) -> list[object]:
    out: list[object] = []
    for kind, payload in events:
        if kind == HEAD:
            h = payload
            out.append((h.status, h.headers, h.hdict, h.keep_alive, h.body, h.content_length))  # type: ignore[attr-defined]
        else:
            out.append((kind, payload))
    return out


@pytest.mark.parametrize("head_request,data", RESPONSES)
@pytest.mark.parametrize("split", [0, 1, 7, 40])
def test_raw_session_gives_the_same_events_as_header_callbacks(
    head_request: bool, data: bytes, split: int
) -> None:
    full = ResponseSession()
    full.expect(head_request)
    want = summary(full.feed(data))
    raw = ResponseSession(raw_heads=True)
    raw.expect(head_request)
    cut = split or len(data)
    got = summary(raw.feed(data[:cut]) + raw.feed(data[cut:]) if cut < len(data) else raw.feed(data))
    assert got == want


def test_raw_head_is_the_final_head_as_received() -> None:
    r = ResponseSession(raw_heads=True)
    r.expect(False)
    ev = r.feed(b"HTTP/1.1 100 Continue\r\n\r\n" + NGINX[:30])
    assert ev == []
    ev = r.feed(NGINX[30:] + b"hello")
    assert [k for k, _ in ev] == [HEAD, BODY, END]
    head = ev[0][1]
    assert head.raw == NGINX and head.body == LENGTH and head.content_length == 5
    assert head.passthrough == NGINX.replace(b"Connection: keep-alive\r\n", b"")
    # the next response on the connection keeps its own head
    r.expect(False)
    ev = r.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    assert (
        ev[0][1].raw == b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" and ev[0][1].body == CHUNKED
    )
    assert ev[0][1].passthrough is None  # re-framed as chunked by the proxy


def test_raw_session_framing_of_empty_and_close_delimited_bodies() -> None:
    r = ResponseSession(raw_heads=True)
    r.expect(False)
    ev = r.feed(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
    assert ev[0][1].body == NO_BODY and [k for k, _ in ev] == [HEAD, END]
    r.expect(False)
    ev = r.feed(b"HTTP/1.1 200 OK\r\n\r\nabc")
    assert ev[0][1].body == UNTIL_EOF and not ev[0][1].keep_alive
    r2 = ResponseSession(raw_heads=True)
    r2.expect(False)
    ev = r2.feed(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nxyz")
    assert [k for k, _ in ev] == [HEAD, UPGRADE] and ev[0][1].hdict["upgrade"] == "websocket"


def test_raw_session_refuses_an_endless_head() -> None:
    r = ResponseSession(raw_heads=True)
    r.expect(False)
    r.feed(b"HTTP/1.1 200 OK\r\n")
    line = b"x-filler: " + b"a" * 65536 + b"\r\n"
    with pytest.raises(ProtocolError) as err:
        for _ in range(MAX_RESPONSE_HEAD // len(line) + 2):
            r.feed(line)
    assert err.value.status == 502


def test_passthrough_drops_a_plain_connection_header_and_keeps_the_rest() -> None:
    out = passthrough_head(NGINX)
    assert out == NGINX.replace(b"Connection: keep-alive\r\n", b"")
    head = b"HTTP/1.1 200 OK\r\nCONNECTION: Close\r\nX-A: 1\r\n\r\n"
    assert passthrough_head(head) == b"HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\n"
    plain = b"HTTP/1.1 404 Not Here\r\nContent-Length: 0\r\nX-Connection: keep\r\n\r\n"
    assert passthrough_head(plain) is plain


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nproxy-authenticate: Basic\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTE: trailers\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTrailer: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nUpgrade: h2c\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
    ],
)
def test_passthrough_declines_heads_that_need_rebuilding(head: bytes) -> None:
    assert passthrough_head(head) is None


def test_repeated_heads_reuse_the_scan_and_a_changed_head_is_scanned_again() -> None:
    r = ResponseSession(raw_heads=True)
    heads = [NGINX, NGINX, NGINX.replace(b"Connection: keep-alive", b"Connection: keep-alive, X-S"), NGINX]
    got = []
    for head in heads:
        r.expect(False)
        rh = r.feed(head + b"hello")[0][1]
        got.append((rh.passthrough, rh.body, rh.content_length))
    plain = (NGINX.replace(b"Connection: keep-alive\r\n", b""), LENGTH, 5)
    assert got == [plain, plain, (None, LENGTH, 5), plain]


def _fed_llhttp(r: ResponseSession, data: bytes) -> tuple[list[object], bool]:
    """Events of one response and whether llhttp saw its bytes (the repeat path skips llhttp)."""
    seen = []
    parser = r._parser
    real = parser.feed_data

    class Spy:
        def feed_data(self, d: bytes) -> None:
            seen.append(d)
            real(d)

        def __getattr__(self, name: str) -> object:  # get_status_code() etc. from the callbacks
            return getattr(parser, name)

    r._parser = Spy()
    try:
        ev = summary(r.feed(data))
    finally:
        r._parser = parser
    return ev, bool(seen)


def _events_of_a_fresh_session(head_request: bool, data: bytes) -> list[object]:
    s = ResponseSession()
    s.expect(head_request)
    return summary(s.feed(data))


@pytest.mark.parametrize(
    "response",
    [
        NGINX + b"hello",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 2\r\n\r\nno",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi",
    ],
)
def test_a_repeated_whole_response_skips_llhttp_and_gives_the_same_events(response: bytes) -> None:
    r = ResponseSession(raw_heads=True)
    want = _events_of_a_fresh_session(False, response)
    for i in range(3):
        r.expect(False)
        ev, via_llhttp = _fed_llhttp(r, response)
        assert ev == want
        assert via_llhttp == (i == 0)


@pytest.mark.parametrize(
    "second",
    [
        NGINX + b"hell",  # body shorter than Content-Length: the rest comes in a later read
        NGINX + b"hello!",  # more than one message's worth: llhttp must see the extra bytes
        NGINX + b"helloHTTP/1.1 200 OK\r\n",
        NGINX.replace(b"19:00:00", b"19:00:01") + b"hello",  # the Date ticked: a new head
        NGINX[:-4] + b"\r\nX-Late: 1\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ],
)
def test_anything_but_an_exact_repeat_goes_through_llhttp(second: bytes) -> None:
    r = ResponseSession(raw_heads=True)
    r.expect(False)
    r.feed(NGINX + b"hello")
    r.expect(False)
    if second.endswith(b"hello!"):
        with pytest.raises(ProtocolError):  # llhttp sees the stray byte after the message and refuses it
            r.feed(second)
        return
    ev, via_llhttp = _fed_llhttp(r, second)
    assert via_llhttp
    assert ev[0] == _events_of_a_fresh_session(False, second)[0]


def test_a_head_request_or_a_parser_mid_message_never_takes_the_repeat_path() -> None:
    r = ResponseSession(raw_heads=True)
    r.expect(False)
    r.feed(NGINX + b"hello")
    r.expect(True)  # the same head, answering HEAD: no body follows
    ev, via_llhttp = _fed_llhttp(r, NGINX)
    assert via_llhttp and [e[0] if isinstance(e, tuple) and len(e) == 2 else "head" for e in ev][-1] == END
    # Bytes after a complete response leave llhttp inside the next message: the next response must
    # be parsed where llhttp is, not skipped past it.
    r.expect(False)
    r.feed(NGINX + b"hello")
    r.expect(False)
    r.feed(NGINX + b"helloHTTP/1.1 2")  # the upstream sent the start of an unasked-for response
    r.expect(False)
    with pytest.raises(ProtocolError):
        _fed_llhttp(r, NGINX + b"hello")  # "HTTP/1.1 2" + "HTTP/1.1 200 ..." is garbage to llhttp


def test_a_repeat_keeps_the_passthrough_and_lazily_parsed_headers() -> None:
    r = ResponseSession(raw_heads=True)
    r.expect(False)
    first = r.feed(NGINX + b"hello")[0][1]
    r.expect(False)
    again = r.feed(NGINX + b"hello")[0][1]
    assert again.raw == first.raw and again.passthrough == first.passthrough
    assert again.headers == first.headers and again.hdict == first.hdict
