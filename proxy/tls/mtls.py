"""Mesh TLS on the proxy's sockets: inbound termination (STRICT / PERMISSIVE / DISABLE) and origination.

Inbound: once `ProxyServer.enable_mesh_tls` ran, each accepted inbound connection starts with an
`InboundGate`. It resolves the PeerAuthentication mode for the app port (proxy/tls/policy.py) and:
- DISABLE: hands the socket to the HTTP listener at once;
- STRICT / PERMISSIVE: waits for the first bytes. 0x16 (a TLS handshake record, the ClientHello)
  starts TLS with the current SVID over the bytes already read; anything else is plaintext HTTP,
  served under PERMISSIVE and refused (closed, logged) under STRICT.
After the handshake the peer must present an SVID of our trust domain (`verify_peer`); its SPIFFE ID
is stored on the downstream connection (``peer_principal``) for the access log and authorization.
Handshake failures are logged with the reason (expired, untrusted root, wrong trust domain...).

Outbound: `TlsOrigin` sits on the PoolManager and is asked once per NEW upstream connection (pooled
connections are reused, so a handshake is never per request). ISTIO_MUTUAL presents our SVID and
checks the server against the destination's service accounts; SIMPLE / MUTUAL are ordinary TLS to
external services (SNI, caCertificates). A failure comes back as the error kind ``tls:<reason>:<msg>``
that the router answers as 503 UF naming the TLS failure.

Rotation: every new connection reads ``cert_client.current`` (server and client contexts of the
newest SVID); connections already open keep the context they were made with.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshbus.proxy.tls.contexts import (
    PeerPolicy,
    TlsPeerError,
    build_origination_context,
    describe_tls_error,
    verify_peer,
)
from meshbus.proxy.tls.policy import DISABLE, ISTIO_MUTUAL, MUTUAL, SIMPLE, STRICT
from meshbus.proxy.tls.stream import TlsStream

log = logging.getLogger(__name__)

TLS_HANDSHAKE_RECORD = 0x16
HANDSHAKE_TIMEOUT = 10.0
TLS_ERROR_PREFIX = "tls:"


def tls_error_kind(err: TlsPeerError) -> str:
    """The upstream error kind the router turns into 503 UF with the reason (see adapters/exchange.py)."""
    return f"{TLS_ERROR_PREFIX}{err.reason}:{err}"


def upstream_lost_kind(exc: BaseException | None, requests: int, transport: Any) -> str:
    """Error kind for an upstream connection lost with a request in flight: "reset", or a TLS reason.

    With TLS 1.3 the server checks our certificate after our side of the handshake is done, so a
    refusal shows up on the first request: as the server's alert (``peer_rejected_expired``...),
    which meshbus sidecars send (proxy/tls/stream.py), else as the close of a brand-new TLS
    connection before any answer (``peer_closed``).
    """
    if isinstance(exc, ssl.SSLError):
        err = describe_tls_error(exc)
    elif requests == 1 and transport is not None and transport.get_extra_info("ssl_object") is not None:
        err = TlsPeerError(
            "peer_closed",
            "the server closed a new TLS connection before answering: it probably refused our "
            "certificate (its log says why)",
        )
    else:
        return "reset"
    log.warning("upstream TLS connection failed [%s]: %s", err.reason, err)
    return tls_error_kind(err)


class MeshTlsStats:
    """Counters tests and the bench read: handshakes per direction, failures per reason."""

    def __init__(self) -> None:
        self.handshakes: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.plaintext_inbound = 0


# ---- outbound ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Origination:
    """How to open one upstream connection."""

    mode: str
    context: ssl.SSLContext
    server_hostname: str | None
    policy: PeerPolicy | None
    """SPIFFE identity check after the handshake (ISTIO_MUTUAL), None for WebPKI (SIMPLE/MUTUAL)."""


Opener = Callable[[asyncio.Protocol, str, int], Awaitable["str | None"]]


class TlsOrigin:
    """Per-connection TLS decisions for upstream pools (installed as ``PoolManager.origin``)."""

    def __init__(self, server: Any, stats: MeshTlsStats) -> None:
        self.server = server
        self.stats = stats
        self.cert_client: Any = None  # set by enable_mesh_tls; until then auto-mTLS is off
        self._external: dict[tuple[Any, ...], ssl.SSLContext] = {}

    def plan(self, cluster: Any, endpoint: Any) -> Origination | None:
        """None = plaintext; raises TlsPeerError when TLS is required but cannot be set up."""
        ct = self.server.runtime.tls.clusters.get(cluster.name)
        if ct is None:
            return None
        mode = ct.mode_for(endpoint.key)
        if mode == DISABLE:
            return None
        if mode == ISTIO_MUTUAL:
            cc = self.cert_client
            if cc is None:
                if ct.mode != ISTIO_MUTUAL:
                    return None  # auto-mTLS needs a mesh identity; standalone proxies stay plaintext
                raise TlsPeerError("no_identity", "ISTIO_MUTUAL needs a mesh identity (run in mesh mode)")
            ident = cc.current
            td = ident.spiffe_id.trust_domain
            if ct.subject_alt_names:
                policy = PeerPolicy.expect(td, *ct.subject_alt_names)
            elif ct.identities:
                policy = PeerPolicy.expect(
                    td, *(f"spiffe://{td}/ns/{ns}/sa/{sa}" for ns, sa in ct.identities)
                )
            else:
                policy = PeerPolicy(td)  # no service account known: any workload of our trust domain
            return Origination(mode, ident.client_context, ct.sni, policy)
        if mode in (SIMPLE, MUTUAL):
            sni = ct.sni or cluster.service
            return Origination(mode, self._external_context(ct, mode), sni, None)
        raise TlsPeerError("unsupported_mode", f"TLS mode {mode} is not supported")

    def _external_context(self, ct: Any, mode: str) -> ssl.SSLContext:
        files = (ct.ca_certificates, ct.client_certificate, ct.private_key)
        stamp = tuple(_mtime(f) for f in files)
        key = (mode, files, stamp, ct.insecure_skip_verify)
        ctx = self._external.get(key)
        if ctx is None:
            try:
                ca = Path(ct.ca_certificates).read_bytes() if ct.ca_certificates else None
                ctx = build_origination_context(ca)
                if mode == MUTUAL and ct.client_certificate:
                    ctx.load_cert_chain(ct.client_certificate, ct.private_key)
            except (OSError, ValueError) as exc:
                raise TlsPeerError(
                    "bad_tls_config", f"cannot load DestinationRule TLS files: {exc}"
                ) from None
            if ct.insecure_skip_verify:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            self._external[key] = ctx
        return ctx

    def opener(self, cluster: Any, endpoint: Any) -> Opener | None:
        """None for plaintext (the pool connects as before), else a coroutine returning an error kind or None."""
        try:
            plan = self.plan(cluster, endpoint)
        except TlsPeerError as exc:
            err = exc
            self.stats.failures[exc.reason] += 1
            log.warning("TLS to %s (%s:%d) not attempted: %s", cluster.name, *endpoint.key, exc)

            async def refuse(_conn: asyncio.Protocol, _host: str, _port: int) -> str | None:
                return tls_error_kind(err)

            return refuse
        if plan is None:
            return None
        name = cluster.name
        stats = self.stats
        loop = self.server.loop

        async def open_tls(conn: asyncio.Protocol, host: str, port: int) -> str | None:
            done: asyncio.Future[BaseException | None] = loop.create_future()

            def handshaken(_stream: TlsStream, exc: BaseException | None) -> None:
                if not done.done():
                    done.set_result(exc)

            stream = TlsStream(
                loop, plan.context, server_side=False, server_hostname=plan.server_hostname or None,
                on_handshake=handshaken, handshake_timeout=HANDSHAKE_TIMEOUT,
            )  # fmt: skip
            await loop.create_connection(lambda: stream, host, port)
            try:
                exc = await done
            except BaseException:  # the pool gave up on this connection (cancelled, shut down)
                stream.abort()
                raise
            if exc is not None:
                err = describe_tls_error(exc)
            else:
                try:
                    if plan.policy is not None:
                        verify_peer(stream.ssl_object, plan.policy)
                    stats.handshakes["outbound"] += 1
                    stream.set_protocol(conn)
                    conn.connection_made(stream)  # type: ignore[arg-type]
                    return None
                except TlsPeerError as perr:
                    err = perr
                    stream.abort()
            stats.failures[err.reason] += 1
            log.warning("TLS to %s (%s:%d) failed [%s]: %s", name, host, port, err.reason, err)
            return tls_error_kind(err)

        return open_tls


def _mtime(path: str | None) -> int:
    if not path:
        return 0
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return -1


# ---- inbound -------------------------------------------------------------------------------------


class InboundGate(asyncio.Protocol):
    """The first protocol of an inbound connection in mesh mode: picks TLS or plaintext, then hands over."""

    def __init__(self, mesh: MeshTls, ctx: Any, make_downstream: Callable[[Any], Any]) -> None:
        self.mesh = mesh
        self.ctx = ctx
        self.make_downstream = make_downstream
        self.transport: asyncio.Transport | None = None
        self.mode = STRICT
        self.timer: asyncio.TimerHandle | None = None
        self.peer = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.mode = self.mesh.inbound_mode()
        if self.mode == DISABLE:
            self._plaintext(b"")
            return
        self.mesh.pending.add(self)
        self.timer = self.mesh.loop.call_later(HANDSHAKE_TIMEOUT, self._timeout)

    def data_received(self, data: bytes) -> None:
        self._cancel()
        if data[0] == TLS_HANDSHAKE_RECORD:
            self._start_tls(data)
        elif self.mode == STRICT:
            self.mesh.stats.failures["plaintext_refused"] += 1
            log.warning("inbound from %s refused: plaintext under PeerAuthentication STRICT", self.peer)
            self.transport.close()  # type: ignore[union-attr]
        else:
            self._plaintext(data)

    def eof_received(self) -> bool | None:
        self._cancel()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()

    def _cancel(self) -> None:
        self.mesh.pending.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _timeout(self) -> None:
        self.timer = None
        self.mesh.pending.discard(self)
        if self.transport is not None:
            self.transport.close()

    def _plaintext(self, first: bytes) -> None:
        transport = self.transport
        dc = self.make_downstream(self.ctx)
        transport.set_protocol(dc)  # type: ignore[union-attr]
        dc.connection_made(transport)
        if self.mode != DISABLE:
            self.mesh.stats.plaintext_inbound += 1
        if first:
            dc.data_received(first)

    def _start_tls(self, first: bytes) -> None:
        """TLS over bytes already read: the ClientHello we consumed is fed to the TLS layer first."""
        mesh = self.mesh
        ident = mesh.cert_client.current
        stream = TlsStream(
            mesh.loop, ident.server_context, server_side=True, server_hostname=None,
            on_handshake=self._handshaken, handshake_timeout=HANDSHAKE_TIMEOUT,
        )  # fmt: skip
        transport = self.transport
        transport.set_protocol(stream)  # type: ignore[union-attr,arg-type]
        stream.connection_made(transport)
        stream.data_received(first)

    def _handshaken(self, stream: TlsStream, exc: BaseException | None) -> None:
        """Checks the peer's SVID, then the HTTP listener takes the connection."""
        mesh = self.mesh
        if exc is not None:
            if isinstance(exc, ConnectionResetError | BrokenPipeError):
                # Usually the client verified our certificate and refused it: its side has the reason.
                err = TlsPeerError("peer_aborted", "peer closed the connection during the handshake")
            else:
                err = describe_tls_error(exc)
            mesh.stats.failures[err.reason] += 1
            log.warning("inbound mTLS handshake from %s failed [%s]: %s", self.peer, err.reason, err)
            return
        try:
            td = mesh.cert_client.current.spiffe_id.trust_domain  # a renewal keeps the trust domain
            sid = verify_peer(stream.ssl_object, PeerPolicy(td))
        except TlsPeerError as perr:
            mesh.stats.failures[perr.reason] += 1
            log.warning("inbound mTLS from %s refused [%s]: %s", self.peer, perr.reason, perr)
            stream.abort()
            return
        mesh.stats.handshakes["inbound"] += 1
        dc = self.make_downstream(self.ctx)
        stream.set_protocol(dc)
        dc.connection_made(stream)
        dc.peer_principal = str(sid)


class MeshTls:
    """Mesh TLS state of one ProxyServer worker (created by `ProxyServer.enable_mesh_tls`)."""

    def __init__(
        self,
        server: Any,
        cert_client: Any,
        origin: TlsOrigin,
        *,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        self.server = server
        self.loop = server.loop
        self.cert_client = cert_client
        self.origin = origin
        self.stats = origin.stats
        self.labels = dict(labels or {})
        self.pending: set[InboundGate] = set()
        self._mode_cache: tuple[Any, str] | None = None
        origin.cert_client = cert_client
        cert_client.add_rotation_callback(self._rotated)

    def _rotated(self, ident: Any) -> None:
        # Nothing to swap: new connections read cert_client.current; open ones keep their context.
        log.info(
            "mesh identity renewed: %s (serial %s); new connections use it", ident.spiffe_id, ident.serial_hex
        )

    def inbound_mode(self) -> str:
        rt = self.server.runtime
        cached = self._mode_cache
        if cached is not None and cached[0] is rt:
            return cached[1]
        ns = rt.namespace
        mode = rt.tls.inbound.mode_for(self.server.config.app_port, ns, self.labels)
        self._mode_cache = (rt, mode)
        return mode

    def inbound_protocol(self, ctx: Any, make_downstream: Callable[[Any], Any]) -> asyncio.Protocol:
        return InboundGate(self, ctx, make_downstream)

    def close(self) -> None:
        for gate in list(self.pending):
            gate._cancel()
            if gate.transport is not None:
                gate.transport.abort()
