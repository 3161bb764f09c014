"""Each role's credentials are refused, by a real nats-server configured as `meshctl up` configures it,
for what the role must not do: a proxy publishing config, reading another proxy's snapshot, answering
CA requests or speaking for another node; bootstrap credentials doing anything but ask for a
certificate; components stepping on each other; anyone but the operator minting bootstrap tokens.
Every refusal is paired with the same action done by the role that may (positive control)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from nats.aio.msg import Msg

from meshbus.bus.subjects import Subjects, inbox_all
from meshbus.control.cli.bus_auth import ProxyPrincipal
from tests.support.secure_bus import (
    SecureBus,
    delivered,
    refused_publish,
    refused_subscribe,
    start_secure_bus,
)

# One server and one connection per role for the module (`SecureBus.role`): a plain connect waits for
# the server's TLS-first fallback, so fresh connections per test would cost seconds.
pytestmark = [pytest.mark.timeout(60), pytest.mark.asyncio(loop_scope="module")]

S = Subjects("mesh")
PROXIES = [
    ProxyPrincipal("reviews-v1", "spiffe://cluster.local/ns/default/sa/reviews"),
    ProxyPrincipal("reviews-v2", "spiffe://cluster.local/ns/default/sa/reviews"),
    ProxyPrincipal("productpage", "spiffe://cluster.local/ns/default/sa/productpage"),
    ProxyPrincipal("plain", None),  # --no-mtls: an nkey of its own
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


async def test_a_proxy_without_certificate_uses_its_own_nkey(mesh: SecureBus) -> None:
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
    from meshbus.bus.errors import UnavailableError
    from tests.support.secure_bus import WatchedBus

    # a certificate the mesh root signed, for an identity the server has no user for
    ctx = mesh.tls_context(mesh.certificate("default", "intruder"))
    stranger = WatchedBus(mesh.settings("stranger", ssl_context=ctx, tls_first=True, reconnect=False))
    with pytest.raises(UnavailableError, match="uthorization"):
        await stranger.connect(wait=False)
    await stranger.close(drain=False)
    nobody = WatchedBus(mesh.settings("nobody", reconnect=False))
    with pytest.raises(UnavailableError, match="uthorization"):
        await nobody.connect(wait=False)
    await nobody.close(drain=False)


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
