"""A span row's request facts as the stable HTTP semantic-convention attributes."""

from __future__ import annotations

from typing import Any

import pytest

from meshbus.proxy.filters.spans import ROW
from meshbus.telemetry.spanattrs import FACTS, http_attributes

pytestmark = pytest.mark.unit


def _span(kind: int, **facts: Any) -> dict[str, Any]:
    base: dict[str, Any] = dict.fromkeys(FACTS)
    base.update(method="GET", target="/r/1?x=2", authority="reviews", protocol_version="1.1", request_id="rid",
                user_agent="curl", peer_address="10.0.0.3", port=9080, status=200, response_flags="-",
                node_id="productpage")  # fmt: skip
    base.update(facts)
    return {"kind": kind, "attributes": None, **base}


def test_the_row_ends_with_the_facts() -> None:
    assert ROW[-len(FACTS) :] == FACTS


def test_client_span() -> None:
    a = http_attributes(_span(2, upstream_host="10.0.0.7:9080", upstream_cluster="outbound|9080||reviews"))
    assert a == {
        "http.request.method": "GET", "url.path": "/r/1", "url.scheme": "http", "server.address": "reviews",
        "server.port": 9080, "network.protocol.version": "1.1", "meshbus.request_id": "rid",
        "node_id": "productpage", "url.full": "http://reviews/r/1?x=2", "user_agent.original": "curl",
        "http.response.status_code": 200, "network.peer.address": "10.0.0.7", "network.peer.port": 9080,
        "upstream_cluster": "outbound|9080||reviews",
    }  # fmt: skip


def test_server_span_errors_flags_and_custom_tags() -> None:
    span = _span(1, authority="reviews:8080", method="BREW", status=0, response_flags="UF", route="r1")
    span.update(peer_principal="spiffe://td/ns/default/sa/pp", attributes={"team": "a"})
    a = http_attributes(span)
    assert a["server.port"] == 8080 and a["server.address"] == "reviews"
    assert a["http.request.method"] == "_OTHER" and a["http.route"] == "r1"
    assert a["error.type"] == "UF" and a["meshbus.response_flags"] == "UF"
    assert a["network.peer.address"] == "10.0.0.3" and a["meshbus.peer.principal"].startswith("spiffe://")
    assert a["team"] == "a" and "url.full" not in a
    # 4xx is an error on the client side only
    assert "error.type" not in http_attributes(_span(1, status=404))
    assert http_attributes(_span(2, status=404))["error.type"] == "404"
