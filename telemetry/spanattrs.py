"""A span row's request facts as the stable HTTP semantic-convention attributes (meshbus-telemetry).

The proxy records, per sampled hop, the facts of the request (proxy/filters/spans.py ``ROW``: method,
target, authority, status, ...) and no attribute dict: building ~15 attributes per span cost about a
microsecond of the proxy's request path, where here it costs the collector's. The attributes are
https://opentelemetry.io/docs/specs/semconv/http/http-spans/ (plus Envoy's ``node_id``,
``upstream_cluster`` and meshbus's own ``meshbus.*``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

SERVER: Final = 1  # opentelemetry.trace.SpanKind.SERVER

_KNOWN_METHODS: Final = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)

FACTS: Final[tuple[str, ...]] = (
    "method", "target", "authority", "protocol_version", "request_id", "user_agent", "peer_address",
    "peer_principal", "route", "port", "status", "response_flags", "upstream_host", "upstream_cluster",
    "node_id",
)  # fmt: skip
"""The request facts of a span row (the tail of proxy/filters/spans.py ``ROW``)."""


def http_attributes(span: Mapping[str, Any]) -> dict[str, Any]:
    """The attributes of a span row given by field name (``kind`` and the :data:`FACTS`); its
    ``attributes`` (custom tags) are laid over them."""
    server = span["kind"] == SERVER
    method = span["method"]
    target = span["target"] or ""
    authority = span["authority"] or ""
    host, _, port = authority.rpartition(":") if ":" in authority else (authority, "", "")
    status = span["status"]
    flags = span["response_flags"]
    attrs: dict[str, Any] = {
        "http.request.method": method if method in _KNOWN_METHODS else "_OTHER",
        "url.path": target.partition("?")[0],
        "url.scheme": "http",
        "server.address": host,
        "network.protocol.version": span["protocol_version"],
        "meshbus.request_id": span["request_id"] or "",
        "node_id": span["node_id"],
    }
    if port.isdecimal():
        attrs["server.port"] = int(port)
    elif span["port"]:
        attrs["server.port"] = span["port"]
    if server:
        attrs["network.peer.address"] = span["peer_address"]
        if span["peer_principal"]:
            attrs["meshbus.peer.principal"] = span["peer_principal"]
    else:
        attrs["url.full"] = f"http://{authority}{target}"
    if span["route"]:
        attrs["http.route"] = span["route"]
    if span["user_agent"] is not None:
        attrs["user_agent.original"] = span["user_agent"]
    attrs["http.response.status_code"] = status
    # 5xx is an error on both sides, 4xx on the client side only; no response is one too
    if status >= 500 or status == 0 or (status >= 400 and not server):
        attrs["error.type"] = str(status) if status else (flags if flags != "-" else "_OTHER")
    if flags != "-":
        attrs["meshbus.response_flags"] = flags
    upstream = span["upstream_host"]
    if not server and upstream:
        attrs["network.peer.address"], _, up_port = upstream.rpartition(":")
        if up_port.isdecimal():
            attrs["network.peer.port"] = int(up_port)
    if span["upstream_cluster"] is not None:
        attrs["upstream_cluster"] = span["upstream_cluster"]
    custom = span.get("attributes")
    if custom:
        attrs.update(custom)
    return attrs
