"""RFC 9112 3.2 on real sockets: an HTTP/1.1 request without Host is a 400 with Envoy's
``missing_host_header`` in the access log, and reaches nothing; HTTP/1.0 needs no Host and is routed
on the default host as before (the inbound listener's route to the app)."""

from __future__ import annotations

import pytest

from tests.integration.proxy.conftest import LogCapture, ProxyFactory, UpstreamFactory
from tests.integration.proxy.test_bad_input import raw_exchange
from tests.integration.proxy.upstreams import fetch

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def test_http11_without_host_is_400_and_http10_is_routed(
    upstreams: UpstreamFactory, proxy: ProxyFactory
) -> None:
    app = await upstreams()
    handle = await proxy("", app_port=app.port)
    log = LogCapture()
    handle.server.access_log = log
    port = handle.inbound_port

    out = await raw_exchange(port, b"GET /no-host HTTP/1.1\r\nX-Pad: 1\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 "), out[:80]
    assert log.records[-1].response_code == 400
    assert log.records[-1].response_code_details == "missing_host_header"
    assert not app.seen

    out = await raw_exchange(port, b"GET /old HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 "), out[:80]
    assert [s.path for s in app.seen] == ["/old"]
    assert log.records[-1].response_code_details in (None, "")

    assert (await fetch(port, "/with-host")).status == 200  # and requests with Host as ever
