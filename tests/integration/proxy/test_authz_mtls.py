"""AuthorizationPolicy on identities: two real sidecars with mTLS (app -> client sidecar -> server sidecar -> app).

The server sidecar learns the caller's SPIFFE ID from the mTLS handshake; principals, namespaces and
service accounts are matched on it. JWT-derived attributes come from the AUTHN-phase filter's
``request.auth`` state, set here by a stand-in filter (the JWT filter is another module's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from meshbus.bus.config.authz.normalize import split_target
from meshbus.proxy.filters.chain import AUTHN, HOOK_REQUEST_HEADERS, FilterChain, FilterContext, HttpFilter
from tests.integration.proxy.conftest import LogCapture, ProxyFactory, ProxyHandle, UpstreamFactory
from tests.integration.proxy.mesh_pki import MeshCa, StaticCertClient
from tests.integration.proxy.test_authz import policy
from tests.integration.proxy.test_mtls import reviews_entry
from tests.integration.proxy.upstreams import Client, Upstream

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

STRICT = (
    "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: default}\n"
    "spec: {mtls: {mode: STRICT}}\n---\n"
)
READERS = policy(
    "reviews-readers",
    """
    selector: {matchLabels: {app: reviews}}
    rules:
    - from: [{source: {principals: [cluster.local/ns/default/sa/productpage]}}]
      to: [{operation: {methods: [GET], paths: ["/reviews/*"]}}]
    - from: [{source: {namespaces: [ops]}}]
    """,
)
NO_ADMIN = policy("no-admin", "action: DENY\nrules: [{to: [{operation: {paths: [/reviews/admin]}}]}]")


@dataclass
class Mesh:
    app: Upstream
    server: ProxyHandle
    log: LogCapture
    ca: MeshCa
    proxy: ProxyFactory

    async def client_as(self, sa: str, namespace: str = "default") -> Client:
        """A client sidecar with the identity ``namespace/sa``; returns a connection to its outbound port."""
        client = await self.proxy(reviews_entry(self.server.inbound_port, "reviews"))
        client.server.enable_mesh_tls(StaticCertClient(self.ca.identity(namespace, sa)), labels={"app": sa})
        return await Client.connect(client.port)


@pytest.fixture
async def mesh(upstreams: UpstreamFactory, proxy: ProxyFactory) -> Mesh:
    ca = MeshCa()
    app = await upstreams()
    server = await proxy(STRICT + READERS + NO_ADMIN, app_port=app.port, labels={"app": "reviews"})
    server.server.enable_mesh_tls(StaticCertClient(ca.identity(sa="reviews")), labels={"app": "reviews"})
    log = LogCapture()
    server.server.access_log = log
    return Mesh(app, server, log, ca, proxy)


async def test_allow_by_principal_method_and_path_and_deny_wins(mesh: Mesh) -> None:
    pp = await mesh.client_as("productpage")
    try:
        ok = await pp.request(path="/reviews/1")
        assert ok.status == 200, ok.body
        rec = mesh.log.records[-1]
        assert rec.downstream_peer_principal == "spiffe://cluster.local/ns/default/sa/productpage"
        assert rec.metadata == {
            "authz_result": "allowed",
            "authz_policy": "ns[default]-policy[reviews-readers]-rule[0]",
        }
        assert (await pp.request("POST", "/reviews/1", body=b"x")).status == 403  # GET only
        denied = await pp.request(path="/reviews/admin")  # DENY before ALLOW
        assert (denied.status, denied.body) == (403, b"RBAC: access denied")
        assert mesh.log.records[-1].response_code_details == (
            "rbac_access_denied_matched_policy[ns[default]-policy[no-admin]-rule[0]]"
        )
    finally:
        await pp.close()
    ratings = await mesh.client_as("ratings")
    try:
        r = await ratings.request(path="/reviews/1")
        assert (r.status, r.body) == (403, b"RBAC: access denied")
        assert mesh.log.records[-1].response_code_details == "rbac_access_denied_matched_policy[none]"
        # the access log reads a connection's principal once: a new caller's connection logs its own
        assert (
            mesh.log.records[-1].downstream_peer_principal == "spiffe://cluster.local/ns/default/sa/ratings"
        )
    finally:
        await ratings.close()
    ops = await mesh.client_as("oncall", namespace="ops")  # any workload of namespace ops, any request
    try:
        assert (await ops.request("DELETE", "/anything")).status == 200
        assert mesh.log.records[-1].downstream_peer_principal == "spiffe://cluster.local/ns/ops/sa/oncall"
        assert (await ops.request(path="/reviews/admin")).status == 403
    finally:
        await ops.close()
    assert [s.path for s in mesh.app.seen] == ["/reviews/1", "/anything"]


async def test_a_service_account_policy_and_a_principal_condition(mesh: Mesh) -> None:
    extra = policy(
        "sa-rules",
        """
        rules:
        - from: [{source: {serviceAccounts: [default/ratings]}}]
          when: [{key: source.principal, notValues: ["*/sa/productpage"]}, {key: source.namespace, values: [default]}]
        """,
    )
    mesh.server.write_config(STRICT + READERS + NO_ADMIN + extra)
    assert await mesh.server.server.reload()
    ratings = await mesh.client_as("ratings")
    try:
        assert (await ratings.request(path="/ratings")).status == 200
    finally:
        await ratings.close()


class FakeJwt(HttpFilter):
    """Stands in for the JWT filter: its verified token as ``request.auth`` state, from a test header."""

    def __init__(self, tokens: dict[str, dict[str, Any]]) -> None:
        super().__init__("test.jwt", AUTHN, 0, HOOK_REQUEST_HEADERS)
        self.tokens = tokens

    def on_request_headers(self, ctx: FilterContext) -> Any:
        token = self.tokens.get(ctx.head.hdict.get("x-test-token", ""))
        if token is not None:
            ctx.filter_state = {**(ctx.filter_state or {}), "request.auth": token}
        return None


async def test_claims_and_request_principals_from_the_authn_filter(mesh: Mesh) -> None:
    claims = policy(
        "claims",
        """
        action: DENY
        rules:
        - from: [{source: {notRequestPrincipals: ["*"]}}]
          to: [{operation: {paths: ["/orders*"]}}]
        - to: [{operation: {paths: ["/orders*"]}}]
          when: [{key: "request.auth.claims[groups]", notValues: [buyers]}]
        """,
    )
    mesh.server.write_config(STRICT + policy("all", "rules: [{}]") + claims)
    assert await mesh.server.server.reload()
    route = mesh.server.server.runtime.inbound.virtual_hosts[0].routes[0]
    tokens = {
        "alice": {"principal": "https://idp/alice", "audiences": ["shop"], "presenter": None,
                  "claims": {"iss": "https://idp", "sub": "alice", "groups": ["buyers", "staff"]}},
        "bob": {"principal": "https://idp/bob", "audiences": ["shop"], "presenter": None,
                "claims": {"iss": "https://idp", "sub": "bob", "groups": ["staff"]}},
    }  # fmt: skip
    object.__setattr__(route, "chain", FilterChain([FakeJwt(tokens), *route.chain.filters]))
    pp = await mesh.client_as("productpage")
    try:
        assert (await pp.request(path="/orders/1")).status == 403  # no token: no request principal
        assert (await pp.request(path="/orders/1", headers=[("x-test-token", "bob")])).status == 403
        r = await pp.request(path="/orders/1", headers=[("x-test-token", "alice")])
        assert r.status == 200, r.body
        assert (await pp.request(path="/catalog")).status == 200
    finally:
        await pp.close()
    assert [split_target(s.path)[0] for s in mesh.app.seen] == ["/orders/1", "/catalog"]


async def test_connection_attributes_sni_and_destination_address(mesh: Mesh) -> None:
    conn = policy(
        "by-connection",
        f"""
        action: DENY
        rules:
        - when: [{{key: connection.sni, notValues: [shelf.internal]}}]
        - when: [{{key: destination.ip, notValues: [127.0.0.0/8]}}]
        - when: [{{key: destination.port, notValues: ["{mesh.app.port}"]}}]
        """,
    )
    mesh.server.write_config(STRICT + policy("all", "rules: [{}]") + conn)
    assert await mesh.server.server.reload()
    plain = await mesh.client_as("productpage")  # no SNI sent: denied
    try:
        assert (await plain.request(path="/x")).status == 403
    finally:
        await plain.close()
    rule = (
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews, namespace: default}\n"
        "spec: {host: reviews.default.svc.cluster.local, trafficPolicy: {tls: {mode: ISTIO_MUTUAL, sni: shelf.internal}}}\n"
    )
    client = await mesh.proxy(reviews_entry(mesh.server.inbound_port, "reviews", rule))
    client.server.enable_mesh_tls(StaticCertClient(mesh.ca.identity(sa="productpage")), labels={"app": "pp"})
    c = await Client.connect(client.port)
    try:
        r = await c.request(path="/x")
        assert r.status == 200, r.body
    finally:
        await c.close()
