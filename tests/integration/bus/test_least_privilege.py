"""Each role's credentials are refused, by a real nats-server configured as `meshctl up` configures it,
for what the role must not do: a proxy publishing config, reading another proxy's snapshot, answering
CA requests or speaking for another node; bootstrap credentials doing anything but ask for a
certificate; components stepping on each other; anyone but the operator minting bootstrap tokens.
Every refusal is paired with the same action done by the role that may (positive control).

Every connection here is TLS with a client certificate (each role's from `bus_auth.ensure_bus`, the
proxies' SVIDs); a plain-text client, a client without certificate, one whose certificate the mesh
root did not sign, and a role's certificate claiming another role's user are all turned away."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from nats.aio.msg import Msg

from meshbus.bus.errors import UnavailableError
from meshbus.bus.subjects import Subjects, inbox_all
from meshbus.control.ca.issuer import generate_root
from meshbus.control.cli import bus_auth
from meshbus.control.cli.bus_auth import ProxyPrincipal
from tests.support.bounded import within
from tests.support.secure_bus import (
    TD,
    SecureBus,
    WatchedBus,
    delivered,
    refused_publish,
    refused_subscribe,
    start_secure_bus,
)

# One server and one connection per role for the module (`SecureBus.role`): a TLS handshake each.
pytestmark = [pytest.mark.timeout(60), pytest.mark.asyncio(loop_scope="module")]

S = Subjects("mesh")
PROXIES = [
    ProxyPrincipal("reviews-v1", "spiffe://cluster.local/ns/default/sa/reviews"),
    ProxyPrincipal("reviews-v2", "spiffe://cluster.local/ns/default/sa/reviews"),
    ProxyPrincipal("productpage", "spiffe://cluster.local/ns/default/sa/productpage"),
    ProxyPrincipal("plain", None),  # --no-mtls: a client certificate of its own
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBus]:
    secure = start_secure_bus(tmp_path_factory.mktemp("bus"), PROXIES)
    yield secure
    if secure.server is not None:
        secure.server.cleanup()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def mesh(server: SecureBus) -> AsyncIterator[SecureBus]:
    yield server
    await server.close()


async def test_a_proxy_may_not_publish_config(mesh: SecureBus) -> None:
    proxy, config = await mesh.proxy("reviews-v1"), await mesh.role("config")
    operator = await mesh.role("operator")
    assert await delivered(operator, S.config("apply"), config)
    await refused_publish(proxy, S.config("apply"), config)
    await refused_publish(proxy, S.config_changed(), config)


async def test_a_proxy_may_not_read_another_proxys_snapshot(mesh: SecureBus) -> None:
    reviews, discovery = await mesh.proxy("reviews-v1"), await mesh.role("discovery")
    productpage = await mesh.proxy("productpage", "productpage")
    assert await delivered(discovery, S.xds_snapshot("productpage"), productpage)
    await refused_subscribe(reviews, S.xds_snapshot("productpage"), discovery)
    await refused_subscribe(reviews, S.xds_snapshot_all(), discovery)


async def test_a_proxy_may_not_read_another_proxys_replies(mesh: SecureBus) -> None:
    reviews, discovery = await mesh.proxy("reviews-v1"), await mesh.role("discovery")
    productpage = await mesh.proxy("productpage", "productpage")
    spy = await reviews.nc.subscribe(inbox_all("node", "productpage"))
    assert "subscription" in await reviews.next_violation(inbox_all("node", "productpage"))

    async def answer(msg: Msg) -> None:
        await msg.respond(b"your snapshot")

    server = await discovery.nc.subscribe(S.xds_fetch_all(), cb=answer)
    await discovery.flush()
    reply = await productpage.nc.request(S.xds_fetch("productpage"), b"", timeout=5)
    assert reply.data == b"your snapshot"  # allow_responses: discovery answers on productpage's inbox
    await reviews.flush()
    assert spy.pending_msgs == 0
    await server.unsubscribe()


async def test_a_proxy_may_not_answer_ca_requests(mesh: SecureBus) -> None:
    proxy, ca = await mesh.proxy("reviews-v1"), await mesh.role("ca")
    boot = await mesh.as_bootstrap("new-node")
    assert await delivered(boot, S.ca("certify"), ca)
    await refused_subscribe(proxy, S.ca("certify"), boot)
    await refused_publish(proxy, S.ca_bundle_changed(), proxy)  # nor forge the trust bundle it reads


async def test_a_proxy_speaks_for_its_own_nodes_only(mesh: SecureBus) -> None:
    v1, discovery = await mesh.proxy("reviews-v1"), await mesh.role("discovery")
    telemetry = await mesh.role("telemetry")
    # the same identity runs reviews-v2: allowed; productpage's subjects: refused
    assert await delivered(v1, S.xds_heartbeat("reviews-v2"), discovery)
    assert await delivered(v1, S.xds_fetch("reviews-v1"), discovery)
    assert await delivered(v1, S.telemetry("metrics", "reviews-v1"), telemetry)
    for subject in (
        S.xds_heartbeat("productpage"),
        S.xds_ack("productpage"),
        S.xds_register("productpage"),
        S.xds_fetch("productpage"),
        S.xds_deregister("productpage"),
    ):
        await refused_publish(v1, subject, discovery)
    await refused_publish(v1, S.telemetry("metrics", "productpage"), telemetry)


async def test_a_proxy_without_identity_uses_its_own_client_certificate(mesh: SecureBus) -> None:
    plain, discovery = await mesh.role("proxy-plain"), await mesh.role("discovery")
    assert await delivered(plain, S.xds_heartbeat("plain"), discovery)
    await refused_publish(plain, S.xds_heartbeat("reviews-v1"), discovery)


async def test_bootstrap_credentials_only_ask_for_a_certificate(mesh: SecureBus) -> None:
    boot, discovery, ca = await mesh.as_bootstrap("n1"), await mesh.role("discovery"), await mesh.role("ca")
    await refused_publish(boot, S.xds_register("reviews-v1"), discovery)
    await refused_publish(boot, S.ca("token"), ca)
    await refused_subscribe(boot, S.xds_snapshot("reviews-v1"), discovery)


@pytest.mark.parametrize("role", ["config", "discovery", "ca", "policy", "telemetry", "filter-host"])
async def test_only_the_operator_creates_tokens(mesh: SecureBus, role: str) -> None:
    ca = await mesh.role("ca")
    assert await delivered(await mesh.role("operator"), S.ca("token"), ca)
    await refused_publish(await mesh.role(role), S.ca("token"), ca)


async def test_components_keep_to_their_own_subjects(mesh: SecureBus) -> None:
    config, discovery, ca = await mesh.role("config"), await mesh.role("discovery"), await mesh.role("ca")
    proxy = await mesh.proxy("reviews-v1")
    assert await delivered(discovery, S.xds_snapshot("reviews-v1"), proxy)
    await refused_publish(config, S.xds_snapshot("reviews-v1"), proxy)  # only discovery pushes
    await refused_publish(ca, S.xds_snapshot("reviews-v1"), proxy)
    await refused_subscribe(discovery, S.ca("certify"), await mesh.as_bootstrap("n2"))
    await refused_subscribe(config, S.xds_fetch_all(), proxy)
    await refused_publish(discovery, S.ca_bundle_changed(), proxy)  # only the CA publishes trust


async def test_unknown_or_missing_credentials_are_refused(mesh: SecureBus, tmp_path: Path) -> None:
    # a certificate the mesh root signed, for an identity the server has no user for
    ctx = mesh.tls_context(mesh.certificate("default", "intruder"))
    stranger = WatchedBus(mesh.settings("stranger", ssl_context=ctx, reconnect=False))
    with pytest.raises(UnavailableError, match="uthorization"):
        await stranger.connect(wait=False)
    await stranger.close(drain=False)
    # a client that trusts the server but presents no certificate: refused in the TLS handshake (under
    # TLS 1.3 the client may finish first and see the server hang up: "certificate required", a lost
    # connection, or a broken pipe on its CONNECT; either way no connection)
    nobody = WatchedBus(mesh.settings("nobody", tls_ca=str(mesh.files.server_ca), reconnect=False))
    with pytest.raises(UnavailableError, match=r"(?i)certificate|connection lost|reset|broken pipe"):
        await nobody.connect(wait=False)
    await nobody.close(drain=False)


async def test_a_plain_text_client_is_refused(mesh: SecureBus) -> None:
    """No plain connect: the server's greeting requires TLS, and a CONNECT sent in the clear is refused
    (no PONG) and the connection closed, at once (no TLS-first fallback to wait for)."""
    host, port = mesh.url.removeprefix("nats://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        greeting = await within("the server's INFO", reader.readline(), 5.0)
        info = json.loads(greeting.removeprefix(b"INFO "))
        assert info["tls_required"] and info["tls_verify"], info
        writer.write(b'CONNECT {"verbose":false,"pedantic":false,"name":"plain"}\r\nPING\r\n')
        await writer.drain()
        rest = await within("the server to hang up", reader.read(), 5.0)
        assert b"PONG" not in rest, rest
    finally:
        writer.close()


async def test_a_role_certificate_cannot_act_as_another_role(mesh: SecureBus) -> None:
    """config's certificate, naming the operator's user in its CONNECT, is still config: it is
    refused, or mapped to config, whose permissions do not mint tokens."""
    ca = await mesh.role("ca")
    operator_id = mesh.files.principals["operator"]
    claims = WatchedBus(
        mesh.settings("config as operator", user=operator_id, password="", **mesh.client_tls("config"))
    )
    try:
        await claims.connect(wait=False)
    except UnavailableError as exc:
        assert "uthorization" in str(exc), exc
    else:
        mesh.opened.append(claims)
        await refused_publish(claims, S.ca("token"), ca)


async def test_a_certificate_the_mesh_root_did_not_sign_is_refused(mesh: SecureBus, tmp_path: Path) -> None:
    """The operator's very ID, certified by another CA: the server does not trust it."""
    other = generate_root(TD, dt.datetime.now(dt.UTC))
    key = ec.generate_private_key(ec.SECP256R1())
    cert, key_file = tmp_path / "forged-cert.pem", tmp_path / "forged-key.pem"
    cert.write_bytes(
        bus_auth.client_certificate(other, key, mesh.files.principals["operator"], dt.datetime.now(dt.UTC))
    )
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    forged = WatchedBus(
        mesh.settings(
            "forged operator",
            tls_cert=str(cert),
            tls_key=str(key_file),
            tls_ca=str(mesh.files.server_ca),
            reconnect=False,
        )
    )
    with pytest.raises(UnavailableError):
        await forged.connect(wait=False)
    await forged.close(drain=False)
    assert await delivered(
        await mesh.role("operator"), S.ca("token"), await mesh.role("ca")
    )  # the genuine one


async def test_a_proxy_asks_policy_and_remote_filters_but_never_answers_them(mesh: SecureBus) -> None:
    proxy, host, policy = (
        await mesh.proxy("reviews-v1"),
        await mesh.role("filter-host"),
        await mesh.role("policy"),
    )
    hook = S.filter_hook("acme.stamp", "request_headers")
    for server, subject in (
        (host, hook),
        (host, S.filter_info("acme.stamp")),
        (policy, S.policy("ratelimit")),
    ):

        async def answer(msg: Msg) -> None:
            await msg.respond(b"ok")

        sub = await server.nc.subscribe(subject, queue="q", cb=answer)
        await server.flush()
        assert (await proxy.nc.request(subject, b"", timeout=5)).data == b"ok"
        await sub.unsubscribe()
    await refused_subscribe(proxy, hook, host)
    await refused_subscribe(proxy, S.policy("ratelimit"), policy)
