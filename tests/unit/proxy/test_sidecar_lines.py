"""A server sidecar cuts the X-Forwarded-* and peer lines a client sidecar put last in a passed-through
head by comparing the head's end (exchange._cut_sidecar_lines): the same bytes as the case-blind
regex that searches the whole head, or no answer (the regex then runs) when the head ends otherwise."""

from __future__ import annotations

import pytest

from meshbus.proxy.adapters.exchange import _RAW_FORWARDED, _cut_sidecar_lines
from meshbus.proxy.codec.http1 import HEAD, RequestHead, RequestSession

pytestmark = pytest.mark.unit

PEER = "x-meshbus-peer: ns|wl|app|v1|cluster.local|spiffe://cluster.local/ns/ns/sa/client\r\n"


def head(data: bytes) -> RequestHead:
    (h,) = [p for k, p in RequestSession().feed(data) if k == HEAD]
    assert h.raw is not None and len(h.hdict) == len(h.headers)  # the pass-through's preconditions
    return h


@pytest.mark.parametrize("peer", ["", PEER])
@pytest.mark.parametrize(
    "trace", ["", "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n"]
)
def test_a_client_sidecars_lines_are_cut_from_the_end(peer: str, trace: str) -> None:
    """What a server sidecar receives from a meshbus client sidecar (Exchange._dispatch's layout)."""
    data = (
        f"GET /s?q=1 HTTP/1.1\r\nHost: reviews\r\nUser-Agent: wrk\r\nx-request-id: 7e3c\r\n{trace}{peer}"
        "x-forwarded-proto: http\r\nx-forwarded-for: 10.1.2.3\r\n\r\n"
    ).encode()
    h = head(data)
    cut = _cut_sidecar_lines(h.raw, h.headers, h.hdict)  # type: ignore[arg-type]
    assert cut == _RAW_FORWARDED.sub(b"", h.raw, count=3)  # type: ignore[arg-type]
    assert (
        cut
        == f"GET /s?q=1 HTTP/1.1\r\nHost: reviews\r\nUser-Agent: wrk\r\nx-request-id: 7e3c\r\n{trace}".encode()
    )


@pytest.mark.parametrize(
    "data",
    [
        # another layout: the regex decides
        b"GET / HTTP/1.1\r\nHost: r\r\nx-forwarded-for: 1.2.3.4\r\nx-forwarded-proto: http\r\n\r\n",
        b"GET / HTTP/1.1\r\nX-Forwarded-Proto: http\r\nHost: r\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: r\r\nX-Forwarded-Proto: http\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
        # the peer line not next to the others
        (
            "GET / HTTP/1.1\r\n"
            + PEER
            + "Host: r\r\nx-forwarded-proto: http\r\nx-forwarded-for: 1.2.3.4\r\n\r\n"
        ).encode(),
        b"GET / HTTP/1.1\r\nHost: r\r\nx-forwarded-for: 1.2.3.4\r\n\r\n",  # one of them only
        # odd blanks whose lengths cancel out (the head is kept as received): a line is not where its
        # value's length puts it, before the tail or inside it
        b"GET / HTTP/1.1\r\nHost:r\r\nx-forwarded-proto: http\r\nx-forwarded-for:  1.2.3.4\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost:r\r\nx-forwarded-proto:  http\r\nx-forwarded-for: 1.2.3.4\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: r\r\nx-forwarded-proto:http\r\nx-forwarded-for:  1.2.3.4\r\n\r\n",
        (
            "GET / HTTP/1.1\r\nHost:r\r\n" + PEER.replace(": ", ":  ", 1) + "x-forwarded-proto: http\r\n"
            "x-forwarded-for: 1\r\n\r\n"
        ).encode(),
        # the peer line's text at the end of another header's value, the real peer line earlier
        (
            "GET / HTTP/1.1\r\n" + PEER + "X-Note: a" + PEER + "x-forwarded-proto: http\r\n"
            "x-forwarded-for: 1\r\n\r\n"
        ).encode(),
    ],
)
def test_other_heads_are_left_to_the_regex(data: bytes) -> None:
    h = head(data)
    assert _cut_sidecar_lines(h.raw, h.headers, h.hdict) is None  # type: ignore[arg-type]
