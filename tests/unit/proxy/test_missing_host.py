"""RFC 9112 3.2: an HTTP/1.1 request without Host gets 400 (Envoy's ``missing_host_header`` in the
access log); HTTP/1.0 needs none; an empty Host, or an absolute-form target, names the authority.
Driven through the real listener and exchange over in-memory transports (test_exchange_glue.Proxy)."""

from __future__ import annotations

import pytest

from tests.unit.proxy.test_exchange_glue import Proxy

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]


def test_http11_without_host_is_400_missing_host_header_and_the_connection_goes_on() -> None:
    p = Proxy()
    _dc, t = p.client(b"GET /a HTTP/1.1\r\nX-Pad: 1\r\n\r\nGET /b HTTP/1.1\r\n\r\n")
    assert t.data.count(b"HTTP/1.1 400 Bad Request\r\n") == 2, t.data
    assert b"needs a Host header" in t.data
    assert [(r.response_code, r.response_code_details, r.response_flags) for r in p.log] == [
        (400, "missing_host_header", "-"),
        (400, "missing_host_header", "-"),
    ]
    assert not t.closed  # the framing was sound: keep-alive as Envoy does
    assert not p.pool.waiting  # nothing went upstream


@pytest.mark.parametrize(
    "raw",
    [
        b"GET / HTTP/1.1\r\nHost: reviews\r\n\r\n",
        b"GET http://reviews/ HTTP/1.1\r\n\r\n",  # absolute-form: the target names the authority
    ],
    ids=["host", "absolute-form"],
)
def test_a_named_authority_is_routed(raw: bytes) -> None:
    p = Proxy()
    p.client(raw)
    assert len(p.pool.waiting) == 1  # routed to reviews: waiting for an upstream connection
    assert not p.log


@pytest.mark.parametrize(
    "raw", [b"GET / HTTP/1.0\r\n\r\n", b"GET / HTTP/1.1\r\nHost:\r\n\r\n"], ids=["http/1.0", "empty-host"]
)
def test_http10_without_host_and_an_empty_host_are_not_refused_for_it(raw: bytes) -> None:
    p = Proxy()
    _dc, t = p.client(raw)
    # no route has the empty authority here: the answer is the route lookup's, as before
    assert t.data.startswith(b"HTTP/1.1 404 "), t.data
    assert p.log[-1].response_flags == "NR" and p.log[-1].response_code_details != "missing_host_header"
