"""Mesh mTLS through two real proxies: app client -> client sidecar (outbound) -> server sidecar (inbound) -> app.

Certificates come from the CA issuer in-process; every socket is real.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from meshbus.bus.spiffe import SpiffeId
from meshbus.proxy.filters.spans import ROW, SpanRecorder
from meshbus.proxy.mesh.identity import Identity
from meshbus.telemetry.accesslog import AccessLogRecord
from meshbus.telemetry.peer import Workload
from tests.integration.proxy.conftest import ProxyFactory, ProxyHandle, UpstreamFactory, yaml
from tests.integration.proxy.mesh_pki import MeshCa, StaticCertClient, web_server_cert
from tests.integration.proxy.upstreams import Client, Upstream, fetch
from tests.support.processes import run_command

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

PRODUCTPAGE = "spiffe://cluster.local/ns/default/sa/productpage"


class Capture:
    def __init__(self) -> None:
        self.records: list[AccessLogRecord] = []

    def log(self, record: AccessLogRecord) -> None:
        self.records.append(record)


def peer_auth(mode: str, *, name: str = "default", namespace: str = "default", selector: str = "") -> str:
    sel = f"  selector: {{matchLabels: {{{selector}}}}}\n" if selector else ""
    return (
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
        f"metadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{sel}  mtls: {{mode: {mode}}}\n---\n"
    )


def reviews_entry(inbound_port: int, sa: str | None = "reviews", extra: str = "") -> str:
    sa_field = f", serviceAccount: {sa}" if sa else ""
    return (
        yaml(f"""
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {{name: reviews, namespace: default}}
        spec:
          hosts: [reviews.default.svc.cluster.local]
          location: MESH_INTERNAL
          resolution: STATIC
          ports: [{{number: 9080, name: http, protocol: HTTP}}]
          endpoints:
          - {{address: 127.0.0.1, ports: {{http: {inbound_port}}}{sa_field}}}
        """)
        + "---\n"
        + extra
    )


@dataclass
class Pair:
    app: Upstream
    server: ProxyHandle
    client: ProxyHandle
    server_log: Capture
    server_certs: StaticCertClient
    client_certs: StaticCertClient

    @property
    def stats(self) -> tuple[Any, Any]:
        return self.client.server.tls_stats, self.server.server.tls_stats


@pytest.fixture
def ca() -> MeshCa:
    return MeshCa()


async def sidecars(
    upstreams: UpstreamFactory,
    proxy: ProxyFactory,
    ca: MeshCa,
    *,
    server_config: str = "",
    server_ident: Identity | None = None,
    dest_sa: str | None = "reviews",
    client_extra: str = "",
) -> Pair:
    app = await upstreams()
    server = await proxy(server_config or "# no resources\n", app_port=app.port)
    server_certs = StaticCertClient(server_ident or ca.identity(sa="reviews"))
    server.server.enable_mesh_tls(server_certs, labels={"app": "reviews"})
    log = Capture()
    server.server.access_log = log
    client = await proxy(reviews_entry(server.inbound_port, dest_sa, client_extra))
    client_certs = StaticCertClient(ca.identity(sa="productpage"))
    client.server.enable_mesh_tls(client_certs, labels={"app": "productpage"})
    return Pair(app, server, client, log, server_certs, client_certs)


async def test_requests_go_mtls_with_peer_identity_logged_and_one_handshake(
    upstreams: UpstreamFactory, proxy: ProxyFactory, ca: MeshCa
) -> None:
    pair = await sidecars(upstreams, proxy, ca, server_config=peer_auth("STRICT"))
    c = await Client.connect(pair.client.port)
    try:
        for i in range(20):
            r = await c.request(path=f"/{i}")
            assert r.status == 200, r.body
            assert r.json()["path"] == f"/{i}"
    finally:
        await c.close()
    out, inn = pair.stats
    assert out.handshakes["outbound"] == 1  # pooled: never a handshake per request
    assert inn.handshakes["inbound"] == 1
    assert pair.app.connections == 1
    assert len(pair.server_log.records) == 20
    assert {r.downstream_peer_principal for r in pair.server_log.records} == {PRODUCTPAGE}


async def test_the_server_sides_spans_name_the_callers_principal_on_every_request_of_a_connection(
    upstreams: UpstreamFactory, proxy: ProxyFactory, ca: MeshCa
) -> None:
    pair = await sidecars(upstreams, proxy, ca, server_config=peer_auth("STRICT"))
    spans = SpanRecorder()
    pair.server.server.observe.set_identity(
        Workload.of("reviews", "default", {"app": "reviews"}),
        "reviews",
        "reviews.default.svc.cluster.local",
        spans,
    )
    c = await Client.connect(pair.client.port)
    try:
        for i in range(3):  # sampled by the caller: every hop records its span
            tp = f"00-{'4bf92f3577b34da6a3ce929d0e0e473' + str(i)}-00f067aa0ba902b7-01"
            assert (await c.request(path=f"/{i}", headers=[("traceparent", tp)])).status == 200
    finally:
        await c.close()
    rows = [dict(zip(ROW, row, strict=True)) for row in spans.drain()]
    assert [r["target"] for r in rows] == ["/0", "/1", "/2"]
    assert {r["peer_principal"] for r in rows} == {PRODUCTPAGE}
    assert {r["peer_address"] for r in rows} == {"127.0.0.1"}


async def test_large_bodies_cross_the_mtls_hop_both_ways_on_one_connection(
    upstreams: UpstreamFactory, proxy: ProxyFactory, ca: MeshCa
) -> None:
    """Many TLS records per message, socket reads that split records, backpressure on both sidecars."""
    pair = await sidecars(upstreams, proxy, ca, server_config=peer_auth("STRICT"))
    c = await Client.connect(pair.client.port)
    try:
        upload = bytes(range(256)) * 16384  # 4 MiB
        r = await c.request("POST", "/up", body=upload)
        assert r.status == 200, r.body
        assert r.json()["body_len"] == len(upload)
        assert pair.app.seen[-1].body == upload
        size = 6 * 1024 * 1024 + 7
        r = await c.request(headers=[("x-test-action", "big"), ("x-test-size", str(size))])
        assert r.status == 200
        assert r.body == b"x" * size
        r = await c.request(path="/after")  # the connection is still in step
        assert r.json()["path"] == "/after"
    finally:
        await c.close()
    out, inn = pair.stats
    assert (out.handshakes["outbound"], inn.handshakes["inbound"]) == (1, 1)


async def test_strict_refuses_plaintext_and_permissive_serves_both_on_one_port(
    upstreams: UpstreamFactory, proxy: ProxyFactory, ca: MeshCa
) -> None:
    strict = await sidecars(upstreams, proxy, ca, server_config=peer_auth("STRICT"))
    with pytest.raises(ConnectionError):
        await fetch(strict.server.inbound_port)  # plaintext straight to the inbound port
    assert strict.stats[1].failures["plaintext_refused"] == 1
    assert (await fetch(strict.client.port)).status == 200  # mTLS through the client sidecar

    permissive = await sidecars(upstreams, proxy, ca)  # no PeerAuthentication: PERMISSIVE
    plain = await fetch(permissive.server.inbound_port)
    mutual = await fetch(permissive.client.port)
    assert plain.status == 200 and mutual.status == 200
    assert [r.downstream_peer_principal for r in permissive.server_log.records] == [None, PRODUCTPAGE]
    assert permissive.stats[1].plaintext_inbound == 1


async def test_workload_selector_and_disable(
    upstreams: UpstreamFactory, proxy: ProxyFactory, ca: MeshCa
) -> None:
    # namespace STRICT, but the workload's own policy says DISABLE: plaintext only, TLS is not spoken.
    config = peer_auth("STRICT") + peer_auth("DISABLE", name="reviews", selector="app: reviews")
    pair = await sidecars(upstreams, proxy, ca, server_config=config)
    assert (await fetch(pair.server.inbound_port)).status == 200
    r = await fetch(pair.client.port)  # the client still originates mTLS (auto): the server cannot speak it
    assert r.status in (502, 503)
    assert pair.stats[1].handshakes["inbound"] == 0


async def test_auto_mtls_speaks_plaintext_to_a_workload_whose_peer_authentication_disables_it(
    upstreams: UpstreamFactory, proxy: ProxyFactory, ca: MeshCa
) -> None:
    # As above, but the client sees the PeerAuthentications too (discovery sends them to every proxy)
    # and the endpoint's labels: Istio's auto-mTLS then sends plaintext, and the request succeeds.
    policies = peer_auth("STRICT") + peer_auth("DISABLE", name="reviews", selector="app: reviews")
    entry = reviews_entry(0).replace(
        "{http: 0}, serviceAccount: reviews", "{http: PORT}, serviceAccount: reviews, labels: {app: reviews}"
    )
    pair = await sidecars(upstreams, proxy, ca, server_config=policies)
    client = await proxy(entry.replace("PORT", str(pair.server.inbound_port)) + policies)
    client.server.enable_mesh_tls(
        StaticCertClient(ca.identity(sa="productpage")), labels={"app": "productpage"}
    )
    r = await fetch(client.port)
    assert r.status == 200
    assert pair.stats[1].handshakes["inbound"] == 0 and client.server.tls_stats.handshakes["outbound"] == 0
    plan = client.server.runtime.tls.clusters["outbound|9080||reviews.default.svc.cluster.local"]
    assert plan.mode_for(("127.0.0.1", pair.server.inbound_port)) == "DISABLE"


@pytest.mark.parametrize(
    ("case", "reason"),
    [("wrong_identity", "wrong_identity"), ("other_mesh", "untrusted"), ("other_trust_domain", "wrong_trust_domain"),
     ("expired", "expired")],
)  # fmt: skip
async def test_bad_server_certificates_fail_with_503_naming_the_reason(
    upstreams: UpstreamFactory, proxy: ProxyFactory, ca: MeshCa, case: str, reason: str
) -> None:
    server_ident = None
    dest_sa = "reviews"
    if case == "wrong_identity":
        dest_sa = "ratings"  # the registry says ratings runs there; reviews answers
    elif case == "other_mesh":
        server_ident = MeshCa().identity(sa="reviews", bundle=ca.root_pem)
    elif case == "other_trust_domain":
        server_ident = ca.identity(sa="reviews", td="evil.local")
    else:
        past = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
        server_ident = ca.identity(sa="reviews", issued=past, ttl=dt.timedelta(hours=1))
    pair = await sidecars(upstreams, proxy, ca, server_ident=server_ident, dest_sa=dest_sa)
    r = await fetch(pair.client.port)
    assert r.status == 503
    assert r.flags == "UF,URX"  # connect failures are retried (Istio default policy), then given up
    assert r.headers["x-meshbus-tls-failure"] == reason
    assert f"TLS error: {reason}" in r.body.decode()
    assert pair.stats[0].failures[reason] >= 1
    assert pair.app.seen == []


async def test_expired_client_is_refused_by_the_server(
    upstreams: UpstreamFactory, proxy: ProxyFactory, ca: MeshCa
) -> None:
    pair = await sidecars(upstreams, proxy, ca, server_config=peer_auth("STRICT"))
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    pair.client_certs.rotate(ca.identity(sa="productpage", issued=past, ttl=dt.timedelta(hours=1)))
    r = await fetch(pair.client.port)
    assert r.status == 503 and r.flags == "UF,URX"
    assert r.headers["x-meshbus-tls-failure"] == "peer_rejected_expired"
    await _until(lambda: pair.stats[1].failures["expired"] >= 1)
    assert pair.app.seen == []


async def _until(cond: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():  # noqa: ASYNC110 - the server logs the failure on its own schedule
            await asyncio.sleep(0.01)


async def test_renewal_under_load_loses_no_request(
    upstreams: UpstreamFactory, proxy: ProxyFactory, ca: MeshCa
) -> None:
    # Connections cycle every 5 requests, so renewed certificates are used by new handshakes
    # while older connections still carry requests on the previous ones.
    dr = yaml("""
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: reviews, namespace: default}
        spec:
          host: reviews.default.svc.cluster.local
          trafficPolicy: {connectionPool: {http: {maxRequestsPerConnection: 5}}}
        """)
    pair = await sidecars(upstreams, proxy, ca, server_config=peer_auth("STRICT"), client_extra=dr)
    short = dt.timedelta(seconds=30)
    statuses: list[int] = []
    stop = asyncio.Event()

    async def load() -> None:
        c = await Client.connect(pair.client.port)
        try:
            while not stop.is_set():
                statuses.append((await c.request()).status)
        finally:
            await c.close()

    workers = [asyncio.create_task(load()) for _ in range(4)]
    serials = set()
    for _ in range(6):
        await _until(lambda n=len(statuses): len(statuses) >= n + 20)
        pair.server_certs.rotate(ca.identity(sa="reviews", ttl=short))
        pair.client_certs.rotate(ca.identity(sa="productpage", ttl=short))
        serials.add(pair.server_certs.current.serial_hex)
    await _until(lambda n=len(statuses): len(statuses) >= n + 20)
    stop.set()
    await asyncio.gather(*workers)
    assert len(statuses) >= 140 and set(statuses) == {200}
    out, inn = pair.stats
    assert out.handshakes["outbound"] >= 6 and not out.failures and not inn.failures
    assert len(serials) == 6


async def test_real_cert_client_short_lifetimes_renew_during_load(
    upstreams: UpstreamFactory, proxy: ProxyFactory, nats_server: Any, bus: Any
) -> None:
    from meshbus.proxy.mesh.identity import CertClient, CertClientConfig
    from tests.integration.control.ca_helpers import ca_replica, create_token
    from tests.unit.control.ca.pki import root

    dr = yaml("""
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: reviews, namespace: default}
        spec:
          host: reviews.default.svc.cluster.local
          trafficPolicy: {connectionPool: {http: {maxRequestsPerConnection: 10}}}
        """)
    async with ca_replica(nats_server.url, bus.subjects.root, root(), probe=bus):
        clients = []
        for sa in ("reviews", "productpage"):
            token = await create_token(bus, sa=sa)
            cc = CertClient(
                bus, CertClientConfig(SpiffeId.workload("cluster.local", "default", sa), token=token, ttl_s=2)
            )
            await cc.start()
            clients.append(cc)
        try:
            app = await upstreams()
            server = await proxy(peer_auth("STRICT"), app_port=app.port)
            server.server.enable_mesh_tls(clients[0])
            client = await proxy(reviews_entry(server.inbound_port, "reviews", dr))
            client.server.enable_mesh_tls(clients[1])
            statuses: list[int] = []
            c = await Client.connect(client.port)
            try:
                loop = asyncio.get_running_loop()
                end = loop.time() + 3.2  # > 1.5 lifetimes: without renewal the first SVIDs expire mid-test
                while loop.time() < end:
                    statuses.append((await c.request()).status)
            finally:
                await c.close()
            assert set(statuses) == {200}, statuses[-3:]
            assert clients[0].renewals >= 2 and clients[1].renewals >= 2
            assert not client.server.tls_stats.failures and not server.server.tls_stats.failures
        finally:
            for cc in clients:
                await cc.stop()


async def test_destination_rule_disable_and_explicit_istio_mutual(
    upstreams: UpstreamFactory, proxy: ProxyFactory, ca: MeshCa
) -> None:
    app = await upstreams()
    disable = yaml("""
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: reviews, namespace: default}
        spec: {host: reviews.default.svc.cluster.local, trafficPolicy: {tls: {mode: DISABLE}}}
        """)
    # DISABLE: plaintext even though the endpoint is a mesh workload (here: the app itself)
    p = await proxy(reviews_entry(app.port, "reviews", disable))
    p.server.enable_mesh_tls(StaticCertClient(ca.identity(sa="productpage")))
    assert (await fetch(p.port)).status == 200
    assert p.server.tls_stats.handshakes["outbound"] == 0

    # ISTIO_MUTUAL to an endpoint with no known service account: any identity of our trust domain
    pair = await sidecars(
        upstreams, proxy, ca, dest_sa=None, client_extra=disable.replace("DISABLE", "ISTIO_MUTUAL")
    )
    assert (await fetch(pair.client.port)).status == 200
    assert pair.stats[0].handshakes["outbound"] == 1
    # ... and without a mesh identity it is refused rather than sent in plaintext
    q = await proxy(reviews_entry(pair.server.inbound_port, None, disable.replace("DISABLE", "ISTIO_MUTUAL")))
    r = await fetch(q.port)
    assert r.status == 503 and r.headers["x-meshbus-tls-failure"] == "no_identity"


async def test_simple_tls_origination_to_external_service(proxy: ProxyFactory, tmp_path: Path) -> None:
    host = "api.example.test"
    ca_file, cert_file, key_file = web_server_cert(host, tmp_path)
    sctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    sctx.load_cert_chain(cert_file, key_file)
    seen_sni: list[str | None] = []
    sctx.sni_callback = lambda _obj, name, _ctx: seen_sni.append(name)  # type: ignore[func-returns-value]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nexternal")
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=sctx)
    port = srv.sockets[0].getsockname()[1]
    try:

        def config(ca: Path) -> str:
            return yaml(f"""
                apiVersion: networking.istio.io/v1
                kind: ServiceEntry
                metadata: {{name: ext, namespace: default}}
                spec:
                  hosts: [{host}]
                  location: MESH_EXTERNAL
                  resolution: STATIC
                  ports: [{{number: 443, name: http, protocol: HTTP}}]
                  endpoints: [{{address: 127.0.0.1, ports: {{http: {port}}}}}]
                ---
                apiVersion: networking.istio.io/v1
                kind: DestinationRule
                metadata: {{name: ext, namespace: default}}
                spec:
                  host: {host}
                  trafficPolicy: {{tls: {{mode: SIMPLE, sni: {host}, caCertificates: {ca}}}}}
                """)

        good = await proxy(config(ca_file))  # standalone: no mesh identity needed for SIMPLE
        r = await fetch(good.port, host=host)
        assert r.status == 200 and r.body == b"external"
        assert seen_sni == [host]
        (tmp_path / "other").mkdir()
        other_ca, _, _ = web_server_cert("other.test", tmp_path / "other")
        bad = await proxy(config(other_ca))
        r = await fetch(bad.port, host=host)
        assert r.status == 503 and r.headers["x-meshbus-tls-failure"] == "untrusted"
    finally:
        srv.close()
        await srv.wait_closed()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
async def test_openssl_s_client_sees_a_verifiable_chain_with_one_uri_san(
    upstreams: UpstreamFactory, proxy: ProxyFactory, ca: MeshCa, tmp_path: Path
) -> None:
    pair = await sidecars(upstreams, proxy, ca, server_config=peer_auth("STRICT"))
    chain, key, root_file = ca.write_files(ca.identity(sa="curl"), tmp_path)
    code, out, _err = await run_command(
        "openssl", "s_client", "-connect", f"127.0.0.1:{pair.server.inbound_port}", "-CAfile", str(root_file),
        "-cert", str(chain), "-key", str(key), "-verify_return_error", "-showcerts", "-ign_eof",
        stdin=b"GET / HTTP/1.1\r\nhost: reviews\r\nconnection: close\r\n\r\n", timeout=15,
    )  # fmt: skip
    text = out.decode(errors="replace")
    assert code == 0, text
    assert "Verify return code: 0 (ok)" in text
    assert "HTTP/1.1 200" in text
    pem = text[text.index("-----BEGIN CERTIFICATE-----") :]
    leaf = x509.load_pem_x509_certificate(pem[: pem.index("-----END CERTIFICATE-----") + 25].encode())
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://cluster.local/ns/default/sa/reviews"
    ]
    assert san.get_values_for_type(x509.DNSName) == []
    assert (
        pair.server_log.records[-1].downstream_peer_principal == "spiffe://cluster.local/ns/default/sa/curl"
    )


def test_under_uvloop_mtls_works_and_a_refused_client_learns_why(tmp_path: Path) -> None:
    """meshbus-proxy runs on uvloop, whose TLS protocol is used inbound: same results, own event loop."""
    import uvloop

    from meshbus.proxy.adapters.server import ProxyServer
    from meshbus.proxy.bootstrap import Address, BootstrapConfig

    local = Address("127.0.0.1", 0)

    async def scenario() -> tuple[int, int, str | None, str | None]:
        assert type(asyncio.get_running_loop()).__module__.startswith("uvloop")
        ca = MeshCa()
        app = await Upstream().start()
        (tmp_path / "s.yaml").write_text(peer_auth("STRICT"))
        (tmp_path / "c.yaml").write_text("# filled below\n")
        s = ProxyServer(BootstrapConfig(str(tmp_path / "s.yaml"), outbound=None, inbound=local, admin=None,
                                        app_port=app.port))  # fmt: skip
        await s.start()
        c = None
        try:
            s.enable_mesh_tls(StaticCertClient(ca.identity(sa="reviews")))
            (tmp_path / "c.yaml").write_text(reviews_entry(s.ports["inbound"]))
            c = ProxyServer(
                BootstrapConfig(str(tmp_path / "c.yaml"), outbound=local, inbound=None, admin=None)
            )
            await c.start()
            certs = StaticCertClient(ca.identity(sa="productpage"))
            c.enable_mesh_tls(certs)
            ok = await fetch(c.ports["outbound"])
            past = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
            certs.rotate(ca.identity(sa="productpage", issued=past, ttl=dt.timedelta(hours=1)))
            c.pools.close_all()  # new connections, with the expired certificate
            refused = await fetch(c.ports["outbound"])
            return ok.status, refused.status, refused.flags, refused.headers.get("x-meshbus-tls-failure")
        finally:
            for x in (c, s):
                if x is not None:
                    await x.shutdown(0)
            await app.stop()

    ok, refused, flags, reason = uvloop.run(scenario())
    assert ok == 200
    # the server sidecar sends its alert (proxy/tls/stream.py): the client names the real reason
    assert (refused, flags, reason) == (503, "UF,URX", "peer_rejected_expired")
