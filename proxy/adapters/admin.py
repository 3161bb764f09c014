"""Admin HTTP endpoint (default 127.0.0.1:15000), shaped after Envoy's admin API.

GET  /ready               "LIVE" 200, else the state and 503 (draining, health check failed; in mesh
                          mode WAITING_FOR_SNAPSHOT, WAITING_FOR_CERTIFICATE, CERTIFICATE_REFUSED,
                          or "APP_UNHEALTHY: <why>" while the --app-health probe of the app fails)
GET  /server_info         JSON: state, config version, uptime, listeners, options
GET  /config_dump         JSON: the active runtime's config_dump() (includes its version)
GET  /clusters            per cluster: circuit breaker limits, retry and overflow counters; endpoints with
                          health, ejection and active requests (?format=json)
GET  /certs               JSON: the mesh certificate held (identity, issuer, validity, renewal, bundle)
GET  /stats               counters and histograms as text; ?format=json as Envoy's JSON; /stats/prometheus:
                          Prometheus text 0.0.4
POST /healthcheck/fail|ok make /ready answer 503 / 200 (take the proxy out of rotation)
POST /reload              reload the config file now (same as SIGHUP)
Mutations are POST only; a GET on them answers 400, as Envoy does. Not on the request path: one
request per connection, plain asyncio streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from meshbus.proxy.codec.http1 import (
    BODY,
    END,
    HEAD,
    ProtocolError,
    RequestSession,
    local_reply,
    serialize_response_head,
)
from meshbus.telemetry.exposition import render_prometheus, render_stats_json, render_stats_text

if TYPE_CHECKING:
    from meshbus.proxy.core.endpoint import Endpoint

log = logging.getLogger(__name__)

_MUTATIONS = {"/healthcheck/fail", "/healthcheck/ok", "/reload"}


def _endpoint_info(ep: Endpoint, now: float) -> dict[str, Any]:
    ejected_until = ep.ejected_until
    ejected = ejected_until > now
    return {
        "address": ep.address,
        "port": ep.port,
        "labels": dict(ep.labels),
        "healthy": not ejected,
        "health_flags": "/failed_outlier_check" if ejected else "healthy",
        "ejected_for_s": round(max(0.0, ejected_until - now), 3),
        "times_ejected": ep.times_ejected,
        "active_requests": ep.active_requests,
    }


def _breaker_info(b: Any) -> tuple[dict[str, int], dict[str, int]]:
    """Envoy's names: the default-priority thresholds, and the cluster's circuit-breaking and retry
    counters (``upstream_rq_retry_overflow``: retries not made because ``maxRetries`` were under way)."""
    limits = {
        "max_connections": b.max_connections,
        "max_pending_requests": b.max_pending,
        "max_requests": b.max_requests,
        "max_retries": b.max_retries,
    }
    stats = {
        "active_requests": b.active_requests,
        "active_retries": b.active_retries,
        "upstream_rq_retry": b.retries,
        "upstream_rq_retry_success": b.retry_success,
        "upstream_rq_retry_overflow": b.retry_overflow,
        "upstream_rq_retry_limit_exceeded": b.retry_limit_exceeded,
        "upstream_rq_pending_overflow": b.pending_overflow,
        "upstream_rq_overflow": b.rq_overflow,
        "upstream_cx_overflow": b.cx_overflow,
    }
    return limits, stats


def clusters_json(server: Any) -> dict[str, Any]:
    now = time.monotonic()
    out = []
    for name, cluster in sorted(server.runtime.clusters.items()):
        pool = server.pools.pools.get(name)
        limits, stats = _breaker_info(cluster.breaker)
        out.append(
            {
                "name": name,
                "connections": pool.count if pool is not None else 0,
                "pending": len(pool.waiters) if pool is not None else 0,
                "circuit_breakers": limits,
                "stats": stats,
                "endpoints": [_endpoint_info(ep, now) for ep in cluster.endpoints],
            }
        )
    return {"config_version": server.runtime.version, "clusters": out}


def certs_json(server: Any, now: float | None = None) -> dict[str, Any]:
    """What ``meshctl cert inspect PROXY_ID -o json`` shows; a standalone proxy has no identity."""
    # here, not at the top: they bring the bus message codec (msgpack), which a file-mode worker
    # needs for nothing else (tests/unit/proxy/test_worker_imports.py)
    from meshbus.bus.cert_report import certs_doc
    from meshbus.bus.schemas.identity import ProxyCertsReply

    report = getattr(server, "cert_report", None)
    reply = report() if report is not None else ProxyCertsReply(node="")
    return certs_doc(reply, time.time() if now is None else now)


def clusters_text(server: Any) -> str:
    lines = []
    for c in clusters_json(server)["clusters"]:
        name = c["name"]
        lines.append(f"{name}::connections::{c['connections']}")
        lines.append(f"{name}::pending::{c['pending']}")
        lines.extend(f"{name}::default_priority::{k}::{v}" for k, v in c["circuit_breakers"].items())
        lines.extend(f"{name}::{k}::{v}" for k, v in c["stats"].items())
        for ep in c["endpoints"]:
            host = f"{name}::{ep['address']}:{ep['port']}"
            lines.append(f"{host}::health_flags::{ep['health_flags']}")
            lines.append(f"{host}::active_requests::{ep['active_requests']}")
            lines.append(f"{host}::times_ejected::{ep['times_ejected']}")
            lines.append(f"{host}::ejected_for_s::{ep['ejected_for_s']}")
    return "\n".join(lines) + "\n"


class AdminServer:
    def __init__(self, server: Any) -> None:
        self.server = server

    async def listen(self, host: str, port: int) -> asyncio.Server:
        return await asyncio.start_server(self._handle, host, port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            response = await self._read_and_answer(reader)
            writer.write(response)
            await writer.drain()
        except (ConnectionError, TimeoutError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _read_and_answer(self, reader: asyncio.StreamReader) -> bytes:
        session = RequestSession()
        head = None
        async with asyncio.timeout(10):
            while True:
                data = await reader.read(65536)
                if not data:
                    return b""
                try:
                    events = session.feed(data)
                except ProtocolError as exc:
                    return local_reply(exc.status, "bad request\n", close=True)
                done = False
                for kind, payload in events:
                    if kind == HEAD:
                        head = payload
                    elif kind == BODY:
                        continue
                    elif kind == END:
                        done = True
                if done and head is not None:
                    break
        if head.target.split("?")[0] == "/reload" and head.method == "POST":
            ok = await self.server.reload()
            srv = self.server
            text = (
                f"applied {srv.runtime.version}\n"
                if ok
                else f"refused, keeping {srv.runtime.version}: {srv.last_error}\n"
            )
            return _reply(200 if ok else 400, text)
        return self.answer(head.method, head.target)

    def answer(self, method: str, target: str) -> bytes:
        parts = urlsplit(target)
        path = parts.path
        query = parse_qs(parts.query)
        if path in _MUTATIONS and method != "POST":
            return _reply(400, f"{path} requires POST\n")
        srv = self.server
        try:
            if path == "/ready":
                state = srv.state()
                if srv.healthcheck_failed and state == "LIVE":
                    state = "HEALTHCHECK_FAILED"
                return _reply(200 if state == "LIVE" else 503, state + "\n")
            if path == "/server_info":
                return _json(srv.server_info())
            if path == "/config_dump":
                return _json(srv.runtime.config_dump())
            if path == "/certs":
                return _json(certs_json(srv))
            if path == "/clusters":
                if query.get("format") == ["json"]:
                    return _json(clusters_json(srv))
                return _reply(200, clusters_text(srv))
            if path == "/stats/prometheus" or (path == "/stats" and query.get("format") == ["prometheus"]):
                return _reply(
                    200, render_prometheus(srv.registry), "text/plain; version=0.0.4; charset=utf-8"
                )
            if path == "/stats" and query.get("format") == ["json"]:
                return _json(render_stats_json(srv.registry))  # Envoy's /stats?format=json
            if path == "/stats":
                return _reply(200, render_stats_text(srv.registry) + self._proxy_stats())
            if path == "/healthcheck/fail":
                srv.healthcheck_failed = True
                return _reply(200, "OK\n")
            if path == "/healthcheck/ok":
                srv.healthcheck_failed = False
                return _reply(200, "OK\n")
            if path == "/" or path == "/help":
                return _reply(200, __doc__ or "")
        except Exception as exc:  # an admin bug must not take the proxy down
            log.exception("admin %s failed", path)
            return _reply(500, f"meshbus: admin error: {exc}\n")
        return _reply(404, "not found\n")

    def _proxy_stats(self) -> str:
        srv = self.server
        lines = [f"server.active_connections: {len(srv.connections)}"]
        lines.append(f"server.config_reloads_applied: {srv.reloads['applied']}")
        lines.append(f"server.config_reloads_refused: {srv.reloads['refused']}")
        for name, pool in sorted(srv.pools.pools.items()):
            lines.append(f"cluster.{name}.upstream_cx_active: {pool.count}")
            lines.append(f"cluster.{name}.upstream_rq_pending_active: {len(pool.waiters)}")
        return "\n".join(lines) + "\n"


def _reply(status: int, body: str, ctype: str = "text/plain") -> bytes:
    b = body.encode()
    head = serialize_response_head(
        status, [("content-type", ctype), ("content-length", str(len(b))), ("connection", "close")]
    )
    return head + b


def _json(obj: Any) -> bytes:
    return _reply(200, json.dumps(obj, indent=2, default=str) + "\n", "application/json")
