"""The ``envoyExtAuthzHttp`` provider: a CUSTOM check as an HTTP request to an authorizer, Envoy's way.

Envoy's raw HTTP ext_authz client (source/extensions/filters/common/ext_authz/ext_authz_http_impl.cc)
with Istio's settings (pilot/pkg/security/authz/builder/extauthz.go):

- The check request has the original method and path (``pathPrefix`` + the normalized path with its
  query), the original Host, ``Content-Length`` (0, or the body's when ``includeRequestBodyInCheck``),
  ``Authorization`` when sent, the headers ``includeRequestHeadersInCheck`` names (exact, ``prefix*``,
  ``*suffix``; case-insensitive) and ``includeAdditionalHeadersInCheck`` (set, replacing).
- 200 allows: the authorizer's headers named by ``headersToUpstreamOnAllow`` are set on the upstream
  request, ``x-envoy-auth-headers-to-remove`` names headers removed from it, and those named by
  ``headersToDownstreamOnAllow`` are added to the response.
- Any other status below 500 denies with that status and body; the authorizer's headers go to the
  client (``headersToDownstreamOnDeny``; unset: all of them but Host; set: those, plus
  ``www-authenticate``, ``location`` and the framing).
- 5xx, a connection failure or ``timeout`` (Istio's default: 600 s) is an error: the filter fails open
  or answers ``statusOnError`` as the provider says.

The request goes through the proxy's own pools to the cluster of the provider's service
(``outbound|<port>||<host>``): keep-alive connections, and mTLS when the authorizer is a mesh workload.
Registered under ``envoyExtAuthzHttp`` in filters/authz_providers.py when this module is imported
(adapters/server.py imports it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Final

from meshbus.bus.config.authz.compile import ProviderSpec
from meshbus.bus.config.authz.matchers import StrMatch, str_match
from meshbus.bus.config.mesh_config import ExtAuthzHttp
from meshbus.proxy.adapters.upstream import OVERFLOW, UpstreamConnection
from meshbus.proxy.codec.http1 import HOP_BY_HOP, ResponseHead, serialize_request_head
from meshbus.proxy.filters import authz_providers as P

log = logging.getLogger(__name__)

KIND: Final = "envoyExtAuthzHttp"
MAX_RESPONSE_BODY: Final = 64 * 1024
"""An authorizer's denial body is passed to the client; more than this is an error (a misbehaving
authorizer must not make the proxy buffer without bound)."""
_ALWAYS_SENT: Final = frozenset({"authorization"})  # besides method, path and host (Envoy's list)
_DENY_ALWAYS: Final = frozenset({"www-authenticate", "location"})
_STRIP_ON_OK: Final = frozenset({"content-length", "transfer-encoding"})
_HEADERS_TO_REMOVE: Final = "x-envoy-auth-headers-to-remove"


def name_match(names: tuple[str, ...]) -> StrMatch | None:
    """Header names as Istio's provider lists give them (exact, ``prefix*``, ``*suffix``; any case);
    None for an empty list."""
    return str_match(names, lower=True) if names else None


class HttpAuthzClient:
    """One provider's client in one proxy worker (made once, on the first check)."""

    def __init__(self, spec: ProviderSpec, server: Any) -> None:
        cfg = spec.config
        if not isinstance(cfg, ExtAuthzHttp):
            raise TypeError(f"meshbus: {KIND} client given {type(cfg).__name__} config")
        self.spec = spec
        self.server = server
        self.prefix = cfg.path_prefix or ""
        self.request_headers = name_match(cfg.include_request_headers_in_check)
        self.additional = tuple(
            sorted((k.lower(), v) for k, v in cfg.include_additional_headers_in_check.items())
        )
        self.upstream = name_match(cfg.headers_to_upstream_on_allow)
        self.on_deny = name_match(cfg.headers_to_downstream_on_deny)
        self.on_allow = name_match(cfg.headers_to_downstream_on_allow)

    def body_waiter(self) -> asyncio.Future[None]:
        future: asyncio.Future[None] = self.server.loop.create_future()
        return future

    async def check(self, request: P.CheckInput) -> P.CheckResult:
        spec = self.spec
        cluster = self.server.runtime.clusters.get(spec.target)
        if cluster is None:
            return P.CheckResult(P.ERROR, reason=f"no cluster {spec.target} in the running config")
        body = request.body or b""
        call = _Call(
            self.server, cluster, self._head(request), [body] if body else [], request.method == "HEAD"
        )
        try:
            async with asyncio.timeout(spec.timeout):
                error = await call.start()
        except TimeoutError:
            call.abandon()
            return P.CheckResult(P.ERROR, reason=f"no answer from {spec.target} within {spec.timeout:g}s")
        except BaseException:
            call.abandon()  # the request went away (its exchange cancelled this check)
            raise
        if error:
            return P.CheckResult(P.ERROR, reason=f"{spec.target}: {error}")
        head = call.head
        if head is None:
            return P.CheckResult(P.ERROR, reason=f"{spec.target}: no response")
        return self._result(head, b"".join(call.body))

    def _head(self, request: P.CheckInput) -> bytes:
        body = request.body or b""
        headers: list[tuple[str, str]] = [("host", request.host)]
        wanted = self.request_headers
        for name, value in request.headers:
            if name in ("host", "content-length") or name in HOP_BY_HOP:
                continue
            if name in _ALWAYS_SENT or (wanted is not None and wanted.match(name)):
                headers.append((name, value))
        if self.additional:
            names = {k for k, _ in self.additional}
            headers = [h for h in headers if h[0] not in names]
            headers.extend(self.additional)
        headers.append(("content-length", str(len(body))))
        return serialize_request_head(request.method, self.prefix + request.path, headers)

    def _result(self, head: ResponseHead, body: bytes) -> P.CheckResult:
        status = head.status
        if status >= 500:
            return P.CheckResult(P.ERROR, status, reason=f"{self.spec.target} answered {status}")
        hdrs = [(n, v) for n, v in head.headers if n not in HOP_BY_HOP]
        if status == 200:
            remove: set[str] = set()
            for n, v in hdrs:
                if n == _HEADERS_TO_REMOVE:
                    remove.update(x.strip().lower() for x in v.split(",") if x.strip())
            up = self.upstream
            to_set = tuple(
                (n, v)
                for n, v in hdrs
                if up is not None and up.match(n) and n not in _STRIP_ON_OK and n != _HEADERS_TO_REMOVE
            )
            down = self.on_allow
            return P.CheckResult(
                P.OK,
                200,
                upstream_set=to_set,
                upstream_remove=frozenset(remove - {"host", ":authority", ":path", ":method"}),
                downstream=tuple((n, v) for n, v in hdrs if down is not None and down.match(n)),
            )
        deny = self.on_deny
        if deny is not None:
            keep = [(n, v) for n, v in hdrs if deny.match(n) or n in _DENY_ALWAYS]
        else:
            keep = [(n, v) for n, v in hdrs if n != "host"]
        keep = [(n, v) for n, v in keep if n not in ("content-length", "transfer-encoding")]
        return P.CheckResult(P.DENIED, status, headers=tuple(keep), body=body)


class _Call:
    """One check request on a pooled connection (an UpstreamReceiver and a PoolWaiter)."""

    __slots__ = (
        "body", "cluster", "conn", "done", "ep", "head", "head_request", "keep", "pool", "request",
        "request_body", "server",
    )  # fmt: skip

    out = None  # nothing held back: the response is collected here

    def __init__(self, server: Any, cluster: Any, head: bytes, body: list[bytes], head_request: bool) -> None:
        self.server = server
        self.cluster = cluster
        self.request = head
        self.request_body = body
        self.head_request = head_request
        self.pool = server.pools.get(cluster.name)
        self.conn: UpstreamConnection | None = None
        self.head: ResponseHead | None = None
        self.body: list[bytes] = []
        self.keep = False
        self.ep: Any = None
        self.done: asyncio.Future[str] = server.loop.create_future()

    def start(self) -> asyncio.Future[str]:
        """Send; the future resolves to "" (a response is in) or the failure."""
        ep = self.ep = self.cluster.pick(None, time.monotonic())
        if ep is None:
            self._finish("no healthy endpoint")
            return self.done
        r = self.pool.acquire(self.cluster, ep, self)
        if r is OVERFLOW:
            self._finish("connection pool overflow")
        elif isinstance(r, UpstreamConnection):
            self.on_pool_conn(r, None)
        return self.done

    def on_pool_conn(self, conn: UpstreamConnection | None, error: str | None) -> None:
        if self.done.done():  # gave up while waiting: hand it back
            if conn is not None:
                self.pool.release(conn, True, self.cluster, time.monotonic())
            return
        if conn is None:
            self._finish(error or "connect-failure")
            return
        self.conn = conn
        conn.send(self, self.request, self.request_body, False, True, self.head_request)

    def flush_out(self) -> None:
        pass

    def on_upstream_head(self, head: ResponseHead) -> None:
        self.head = head
        self.keep = head.keep_alive

    def on_upstream_body(self, data: bytes) -> None:
        self.body.append(data)
        if sum(len(b) for b in self.body) > MAX_RESPONSE_BODY:
            self.abandon()
            self._finish(f"response body over {MAX_RESPONSE_BODY} bytes")

    def on_upstream_end(self, conn: UpstreamConnection) -> None:
        self.conn = None
        self.pool.release(conn, self.keep, self.cluster, time.monotonic())
        self._finish("")

    def on_upstream_upgrade(self, conn: UpstreamConnection, rest: bytes) -> None:
        self.conn = None
        conn.close()
        self._finish("the authorizer switched protocols")

    def on_upstream_error(self, conn: UpstreamConnection, kind: str) -> None:
        self.conn = None
        self._finish(kind)

    def on_upstream_paused(self, paused: bool) -> None:
        pass

    def abandon(self) -> None:
        """Stop waiting: a connection with an unread response cannot be reused; one still being
        opened is handed back when it arrives (on_pool_conn)."""
        if not self.done.done():
            self.pool.cancel_wait(self)
            self._finish("abandoned")
        conn = self.conn
        if conn is not None:
            self.conn = None
            conn.close()

    def _finish(self, error: str) -> None:
        if not self.done.done():
            self.done.set_result(error)


P.register(KIND, HttpAuthzClient)
