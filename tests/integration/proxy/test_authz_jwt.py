"""AuthorizationPolicy on the identity the real JWT filter verified (RequestAuthentication, inline jwks).

The JWT filter (AUTHN phase) leaves ``filter_state["request.auth"]``; the authorization filter (AUTHZ
phase) reads ``requestPrincipals`` and ``request.auth.*`` from it. A standalone server sidecar, real
sockets, real signed tokens (tests/support/jwks.py).
"""

from __future__ import annotations

import json

import pytest

from tests.integration.proxy.conftest import LogCapture, ProxyFactory, UpstreamFactory, yaml
from tests.integration.proxy.test_authz import counter, policy
from tests.integration.proxy.upstreams import fetch
from tests.support.jwks import Issuer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

IDP = Issuer(iss="https://idp.test", algorithms=("ES256",))


def request_authentication() -> str:
    jwks = json.dumps(IDP.jwks())
    return (
        yaml(
            f"""
        apiVersion: security.istio.io/v1
        kind: RequestAuthentication
        metadata: {{name: shelf-jwt, namespace: default}}
        spec:
          selector: {{matchLabels: {{app: shelf}}}}
          jwtRules:
          - issuer: {IDP.iss}
            jwks: {jwks}
            audiences: [shelf]
        """
        )
        + "---\n"
    )


REQUIRE_TOKEN = policy(
    "require-token",
    """
    selector: {matchLabels: {app: shelf}}
    action: DENY
    rules:
    - from: [{source: {notRequestPrincipals: ["*"]}}]
    """,
)
EDITORS = policy(
    "editors",
    """
    selector: {matchLabels: {app: shelf}}
    rules:
    - from: [{source: {requestPrincipals: ["https://idp.test/*"]}}]
      to: [{operation: {methods: [GET]}}]
    - to: [{operation: {methods: [POST]}}]
      when:
      - {key: "request.auth.claims[groups]", values: [editors]}
      - {key: "request.auth.claims[scope]", values: [books.write]}
      - {key: request.auth.audiences, values: [shelf]}
      - {key: "request.auth.claims[org][team]", values: [books]}
    """,
)


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


async def test_request_principals_and_claims_come_from_the_verified_token(
    upstreams: UpstreamFactory, proxy: ProxyFactory
) -> None:
    app = await upstreams()
    handle = await proxy(
        request_authentication() + REQUIRE_TOKEN + EDITORS, app_port=app.port, labels={"app": "shelf"}
    )
    log = LogCapture()
    handle.server.access_log = log
    port = handle.inbound_port

    anonymous = await fetch(port, "/books/1")  # no token: the JWT filter lets it through without identity
    assert (anonymous.status, anonymous.body) == (403, b"RBAC: access denied")
    assert log.records[-1].response_code_details == (
        "rbac_access_denied_matched_policy[ns[default]-policy[require-token]-rule[0]]"
    )
    forged = await fetch(port, "/books/1", headers=bearer(IDP.token("ES256", aud="shelf") + "x"))
    assert forged.status == 401  # the JWT filter answers first: authorization never sees it

    reader = IDP.token("ES256", sub="alice", aud="shelf", scope="books.read", groups=["readers"])
    ok = await fetch(port, "/books/1", headers=[*bearer(reader), ("X-Shelf-Client", "reader-app")])
    assert ok.status == 200, ok.body
    assert log.records[-1].request_principal == "https://idp.test/alice"
    # The token is not forwarded (forwardOriginalToken unset); the rest of the head is.
    up = app.seen[-1]
    assert "authorization" not in up.headers and up.headers.get("x-shelf-client") == "reader-app"
    assert (await fetch(port, "/books/1", method="POST", headers=bearer(reader))).status == 403

    editor = IDP.token(
        "ES256",
        sub="bob",
        aud="shelf",
        scope="books.read books.write",  # space-delimited: split into a list, as Istio does
        groups=["readers", "editors"],
        org={"team": "books"},
    )
    assert (await fetch(port, "/books/1", method="POST", headers=bearer(editor), body=b"{}")).status == 200
    other_team = IDP.token(
        "ES256", sub="carol", aud="shelf", scope="books.write", groups=["editors"], org={"team": "films"}
    )
    assert (
        await fetch(port, "/books/1", method="POST", headers=bearer(other_team), body=b"{}")
    ).status == 403
    assert (
        counter(handle, action="DENY", result="denied", policy="ns[default]-policy[require-token]-rule[0]")
        == 1
    )
