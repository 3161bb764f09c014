"""Trailer sections of chunked messages in the sans-IO HTTP/1.1 sessions: dropped, never a header of the
next message, and refused (431 from a client, 502 from an upstream) before httptools, which buffers a
trailer field until it ends, holds more than the head's limit plus one read."""

from __future__ import annotations

import tracemalloc

import pytest

from meshbus.proxy.codec.http1 import (
    BODY,
    END,
    HEAD,
    MAX_RESPONSE_HEAD,
    UNTIL_EOF,
    ProtocolError,
    RequestSession,
    ResponseSession,
)

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]

CHUNKED_POST = b"POST /1 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
CHUNKED_200 = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


def kinds(events: list) -> list[int]:
    return [k for k, _ in events]


def _fed_until_refused(feed: object, piece: bytes, limit: int) -> int:
    """Feed ``piece`` until the session refuses; the bytes fed by then (``limit`` pieces at most)."""
    fed = 0
    for _ in range(limit):
        fed += len(piece)
        feed(piece)  # type: ignore[operator]
    return fed


def test_an_endless_request_trailer_field_is_431_before_it_ends() -> None:
    s = RequestSession(max_header_bytes=2048)
    assert kinds(s.feed(CHUNKED_POST + b"1\r\nx\r\n")) == [HEAD, BODY]
    s.feed(b"0\r\nX-Big: ")
    with pytest.raises(ProtocolError) as err:
        _fed_until_refused(s.feed, b"y" * 500, 100)
    assert err.value.status == 431 and "trailer" in err.value.reason


def test_a_trailer_value_sent_in_pieces_is_refused_before_the_limit_plus_a_read_is_held() -> None:
    # The memory is httptools' own (it joins a field's pieces into one bytes): traced, it stays under
    # the limit plus a read or two, and the refusal comes before the client has sent 1 MiB of it.
    piece = b"v" * 16384
    s = RequestSession()  # the default 60 KiB
    s.feed(CHUNKED_POST + b"1\r\nx\r\n0\r\nX-Big: ")
    tracemalloc.start()
    try:
        fed = 0
        with pytest.raises(ProtocolError) as err:
            while fed < 64 * len(piece):  # 1 MiB
                fed += len(piece)
                s.feed(piece)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert err.value.status == 431
    assert fed <= 60 * 1024 + 2 * len(piece), fed
    assert peak < 4 * (60 * 1024 + 2 * len(piece)), peak


def test_a_trailer_section_over_the_limit_in_one_read_is_431() -> None:
    # Fields that end within a read are counted as a head's are: many of them, or one long one.
    many = b"".join(b"X-T%d: %s\r\n" % (i, b"v" * 40) for i in range(100))
    for trailers in (many, b"X-Big: " + b"v" * 3000 + b"\r\n"):
        s = RequestSession(max_header_bytes=2048)
        with pytest.raises(ProtocolError) as err:
            s.feed(CHUNKED_POST + b"1\r\nx\r\n0\r\n" + trailers + b"\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n")
        assert err.value.status == 431


def test_a_response_trailer_section_over_the_limit_in_one_read_is_502() -> None:
    r = ResponseSession()
    r.expect(False)
    with pytest.raises(ProtocolError) as err:
        r.feed(CHUNKED_200 + b"2\r\nok\r\n0\r\nX-Big: " + b"v" * (MAX_RESPONSE_HEAD + 1) + b"\r\n\r\n")
    assert err.value.status == 502


def test_trailers_under_the_limit_pass_in_pieces_and_are_dropped() -> None:
    s = RequestSession(max_header_bytes=2048)
    ev = s.feed(CHUNKED_POST + b"3\r\nabc\r\n0\r\nX-A: ")
    for _ in range(15):
        ev += s.feed(b"a" * 100)
    ev += s.feed(b"\r\nX-B: 2\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n")
    assert kinds(ev) == [HEAD, BODY, END, HEAD, END]
    assert ev[3][1].headers == [("host", "a")]


def test_a_long_chunked_body_in_small_reads_is_not_taken_for_trailers() -> None:
    # Reads that carry only chunk-size lines or CRLFs give no event either: data resets the count, so
    # a body of any length in reads of any size passes a small limit.
    s = RequestSession(max_header_bytes=64)
    ev = s.feed(CHUNKED_POST)
    for _ in range(2000):
        ev += s.feed(b"20\r\n") + s.feed(b"d" * 32) + s.feed(b"\r\n")
    ev += s.feed(b"0\r\n\r\n")
    assert kinds(ev)[-1] == END
    assert sum(len(p) for k, p in ev if k == BODY) == 2000 * 32


def test_the_count_starts_afresh_with_each_request() -> None:
    s = RequestSession(max_header_bytes=2048)
    for _ in range(5):
        ev = s.feed(CHUNKED_POST + b"1\r\nx\r\n0\r\nX-A: ")
        ev += s.feed(b"a" * 1500)
        ev += s.feed(b"\r\n\r\n")
        assert kinds(ev) == [HEAD, BODY, END]


@pytest.mark.parametrize("raw_heads", [False, True])
def test_response_trailer_fields_do_not_become_the_next_responses_headers(raw_heads: bool) -> None:
    # A trailer "Transfer-Encoding: chunked" in the next response's headers would frame it (its hdict
    # is what framing reads): the injection the request side had, on the upstream side. (llhttp itself
    # refuses a trailer Content-Length in a chunked message.)
    r = ResponseSession(raw_heads=raw_heads)
    r.expect(False)
    ev = r.feed(CHUNKED_200 + b"2\r\nok\r\n0\r\nTransfer-Encoding: chunked\r\nX-Injected: 1\r\n\r\n")
    assert kinds(ev) == [HEAD, BODY, END]
    r.expect(False)
    ev = r.feed(b"HTTP/1.1 200 OK\r\nX-A: b\r\n\r\n")
    (head,) = [p for k, p in ev if k == HEAD]
    assert head.headers == [("x-a", "b")] and head.hdict == {}
    assert (head.body, head.keep_alive) == (UNTIL_EOF, False)  # not chunked by the trailer


@pytest.mark.parametrize("raw_heads", [False, True])
def test_an_endless_response_trailer_field_is_502(raw_heads: bool) -> None:
    r = ResponseSession(raw_heads=raw_heads)
    r.expect(False)
    assert kinds(r.feed(CHUNKED_200 + b"2\r\nok\r\n")) == [HEAD, BODY]
    r.feed(b"0\r\nX-Big: ")
    piece = b"t" * 65536
    with pytest.raises(ProtocolError) as err:
        _fed_until_refused(r.feed, piece, 4 * MAX_RESPONSE_HEAD // len(piece))
    assert err.value.status == 502


def test_a_response_trailer_value_is_refused_before_the_limit_plus_a_read_is_held() -> None:
    piece = b"t" * 65536
    r = ResponseSession()
    r.expect(False)
    r.feed(CHUNKED_200 + b"2\r\nok\r\n0\r\nX-Big: ")
    fed = 0
    with pytest.raises(ProtocolError):
        while fed < 8 * MAX_RESPONSE_HEAD:
            fed += len(piece)
            r.feed(piece)
    assert fed <= MAX_RESPONSE_HEAD + 2 * len(piece), fed


def test_a_long_chunked_response_in_small_reads_passes() -> None:
    r = ResponseSession(raw_heads=True)
    r.expect(False)
    ev = r.feed(CHUNKED_200)
    block = b"b" * 60000
    for _ in range(40):  # 2.4 MB, past MAX_RESPONSE_HEAD, size lines apart from their data
        ev += r.feed(b"%x\r\n" % len(block)) + r.feed(block) + r.feed(b"\r\n")
    ev += r.feed(b"0\r\nX-T: 1\r\n\r\n")
    assert kinds(ev)[-1] == END


def test_a_trailer_section_over_the_limit_in_the_two_reads_that_give_events_is_431() -> None:
    # Why the field count stays beside the count of event-less reads: the read in which a trailer
    # section begins carries the last chunk's data, and the one in which it ends the message's end,
    # so a section that fits in those two reads is seen by the field count alone.
    fields = b"".join(b"X-T%d: %s\r\n" % (i, b"v" * 40) for i in range(30))  # ~1.5 KiB each time
    s = RequestSession(max_header_bytes=2048)
    assert kinds(s.feed(CHUNKED_POST + b"1\r\nx\r\n0\r\n" + fields)) == [HEAD, BODY]
    with pytest.raises(ProtocolError) as err:
        s.feed(fields + b"\r\n")
    assert err.value.status == 431


@pytest.mark.parametrize("raw_heads", [False, True])
def test_a_response_head_over_the_limit_is_502_in_the_read_that_completes_it(raw_heads: bool) -> None:
    # That read gives the HEAD event, so the count of event-less reads never sees it: the head's own
    # size is the bound, in both modes.
    r = ResponseSession(raw_heads=raw_heads)
    r.expect(False)
    assert r.feed(b"HTTP/1.1 200 OK\r\n") == []
    line = b"X-Pad: " + b"p" * 1000 + b"\r\n"
    with pytest.raises(ProtocolError) as err:
        r.feed(line * (MAX_RESPONSE_HEAD // len(line) + 1) + b"Content-Length: 0\r\n\r\n")
    assert err.value.status == 502
