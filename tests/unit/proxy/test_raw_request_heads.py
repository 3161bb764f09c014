"""``RequestHead.raw``: the request head as received, kept only when its bytes are exactly the request
line and the "name: value" lines llhttp reported (the pass-through of unchanged request heads)."""

from __future__ import annotations

import pytest

from meshbus.proxy.codec.http1 import BODY, END, HEAD, RequestHead, RequestSession

pytestmark = pytest.mark.unit


def heads(*reads: bytes) -> list[RequestHead]:
    s = RequestSession()
    out: list[RequestHead] = []
    for data in reads:
        out += [payload for kind, payload in s.feed(data) if kind == HEAD]
    return out


def test_canonical_head_is_kept_without_its_blank_line() -> None:
    (h,) = heads(b"GET /a?b=c HTTP/1.1\r\nHost: reviews\r\nX-Mixed-Case: V a l\r\n\r\n")
    assert h.raw == b"GET /a?b=c HTTP/1.1\r\nHost: reviews\r\nX-Mixed-Case: V a l\r\n"
    assert h.headers == [("host", "reviews"), ("x-mixed-case", "V a l")]


def test_head_without_headers_is_kept() -> None:
    (h,) = heads(b"GET / HTTP/1.1\r\n\r\n")
    assert h.raw == b"GET / HTTP/1.1\r\n"


def test_body_in_the_same_read_is_not_part_of_the_raw_head() -> None:
    s = RequestSession()
    events = s.feed(b"POST /p HTTP/1.1\r\nHost: r\r\nContent-Length: 4\r\n\r\nab\r\n")
    assert [k for k, _ in events] == [HEAD, BODY, END]
    assert events[0][1].raw == b"POST /p HTTP/1.1\r\nHost: r\r\nContent-Length: 4\r\n"


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\nHost:reviews\r\n\r\n",  # no space after the colon
        b"GET / HTTP/1.1\r\nHost:  reviews\r\n\r\n",  # two
        b"\r\nGET / HTTP/1.1\r\nHost: reviews\r\n\r\n",  # an empty line first
        b"GET / HTTP/1.0\r\nHost: reviews\r\n\r\n",  # the proxy speaks HTTP/1.1 upstream
    ],
)
def test_heads_not_exactly_as_parsed_are_not_kept(data: bytes) -> None:
    (h,) = heads(data)
    assert h.raw is None and h.hdict["host"] == "reviews"


def test_head_split_over_reads_is_not_kept() -> None:
    (h,) = heads(b"GET / HTTP/1.1\r\nHo", b"st: reviews\r\n\r\n")
    assert h.raw is None and h.hdict == {"host": "reviews"}


def test_only_a_head_starting_a_read_is_kept() -> None:
    # Pipelined: the second head does not start at byte 0 of the read.
    h1, h2 = heads(b"GET /1 HTTP/1.1\r\nHost: r\r\n\r\nGET /2 HTTP/1.1\r\nHost: r\r\n\r\n")
    assert h1.raw == b"GET /1 HTTP/1.1\r\nHost: r\r\n" and h2.raw is None and h2.target == "/2"
    # A body's tail and the next head in one read: the head is not at byte 0 either.
    h1, h2 = heads(
        b"POST /1 HTTP/1.1\r\nHost: r\r\nContent-Length: 6\r\n\r\nab",
        b"\r\n\r\nGET /2 HTTP/1.1\r\nHost: r\r\n\r\n",
    )
    assert h1.raw is not None and h2.raw is None and h2.target == "/2"
    # The next read starting with a new head is kept again.
    h1, h2 = heads(b"GET /1 HTTP/1.1\r\nHost: r\r\n\r\n", b"GET /2 HTTP/1.1\r\nHost: r\r\n\r\n")
    assert h2.raw == b"GET /2 HTTP/1.1\r\nHost: r\r\n"
