"""What the JWT filter works out once per token and the authorization filter uses per request: the
request principal (``jwt_authn.iss_sub``), the token's header operations and the decision's
access-log fields. Both filters come from the real loader and build, driven without sockets."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from meshbus.bus.config import load_text
from meshbus.bus.config.authz.matchers import IpMatch
from meshbus.proxy.adapters.listener import ListenerContext, LiveState
from meshbus.proxy.build.runtime import ProxyRuntime, build_runtime
from meshbus.proxy.filters.authz import AuthzFilter
from meshbus.proxy.filters.chain import LocalReply
from meshbus.proxy.filters.jwt_authn import REQUEST_AUTH, REQUEST_PRINCIPAL, JwtAuthnFilter, TokenPrincipal
from meshbus.proxy.filters.observe import Observability
from meshbus.telemetry.accesslog import NULL_ACCESS_LOG, AccessLogger
from meshbus.telemetry.metrics import InternalMetrics, IstioMetrics, Registry
from tests.support.jwks import Issuer
from tests.unit.proxy.test_jwt_authn import Ctx, bearer, ra, request, upstream

pytestmark = pytest.mark.unit

ISSUER = Issuer(algorithms=("ES256",))
ALLOW_ALICE = f"""apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: alice-only, namespace: default}}
spec:
  selector: {{matchLabels: {{app: reviews}}}}
  rules:
  - from: [{{source: {{requestPrincipals: ["{ISSUER.iss}/alice"], ipBlocks: [10.0.0.0/8]}}}}]
"""


def build(*docs: str, previous: ProxyRuntime | None = None) -> ProxyRuntime:
    result = load_text("---\n".join(docs), "policy.yaml")
    assert result.ok, result.validation.render()
    return build_runtime(
        result.resources, namespace="default", labels={"app": "reviews"}, app_port=9080, previous=previous
    )


def rule(forward: bool = False) -> str:
    extra = "    forwardOriginalToken: true\n" if forward else ""
    return f"  - issuer: {ISSUER.iss}\n    jwks: {json.dumps(ISSUER.jwks())}\n{extra}"


def filters(rt: ProxyRuntime) -> tuple[JwtAuthnFilter, AuthzFilter | None]:
    (route,) = rt.inbound.virtual_hosts[0].routes
    jwt = next(f for f in route.chain.filters if isinstance(f, JwtAuthnFilter))
    authz = next((f for f in route.chain.filters if isinstance(f, AuthzFilter)), None)
    return jwt, authz


REGISTRY = Registry()
KEPT = AccessLogger()


def listener(logs: object) -> ListenerContext:
    """An inbound listener of a server stand-in whose access log is ``logs`` (the filter reads the
    listener's server: its metrics registry and access log). A real ListenerContext: the compiled
    filter takes nothing else."""
    own = Registry()  # the listener's own telemetry; the authz counters go to REGISTRY
    observe = Observability(IstioMetrics(own), InternalMetrics(own), "default", {})
    observe.access_log = logs  # type: ignore[assignment]  # where ProxyServer.access_log keeps it
    server = SimpleNamespace(
        registry=REGISTRY, access_log=logs, loop=None, observe=observe, live=LiveState(), pools=None
    )
    return ListenerContext(server, "inbound")  # type: ignore[arg-type]


LISTENERS = {id(NULL_ACCESS_LOG): listener(NULL_ACCESS_LOG), id(KEPT): listener(KEPT)}


def sidecar_request(token: str, peer: str = "10.0.0.9", logs: object = NULL_ACCESS_LOG) -> Ctx:
    ctx = request(bearer(token))
    ctx.dc = SimpleNamespace(peer_ip=peer, peer_principal=None, connection_info=lambda name: None)
    ctx.ctx = LISTENERS[id(logs)]  # type: ignore[attr-defined]
    return ctx


def run(jwt: JwtAuthnFilter, authz: AuthzFilter, ctx: Ctx, between: Any = None) -> LocalReply | None:
    assert jwt.on_request_headers(ctx) is None
    if between is not None:
        between(ctx)
    r = authz.on_request_headers(ctx)
    assert r is None or isinstance(r, LocalReply)
    return r


def test_the_request_principal_is_worked_out_once_per_token_and_decides_as_before() -> None:
    jwt, authz = filters(build(ra(rule()), ALLOW_ALICE))
    assert authz is not None
    alice, bob = ISSUER.token("ES256", sub="alice"), ISSUER.token("ES256", sub="bob")
    handed: list[TokenPrincipal] = []
    for _ in range(3):  # verified once, then from the cache (and the last-token shortcut)
        ctx = sidecar_request(alice)
        assert run(jwt, authz, ctx) is None
        assert ctx.filter_state is not None
        handed.append(ctx.filter_state[REQUEST_PRINCIPAL])
        known = ctx.filter_state[REQUEST_PRINCIPAL]
        assert known.claims is ctx.filter_state[REQUEST_AUTH]["claims"]
        assert known.iss_sub == (ISSUER.iss, "alice")
        denied = run(jwt, authz, sidecar_request(bob))
        assert denied is not None and denied.status == 403
    assert jwt.config.stats["verified"] == 2 and jwt.config.stats["cache_hits"] == 4
    # the token's own TokenPrincipal and (iss, sub), not copies per request (the compiled build boxes
    # a new tuple on each read of a tuple-typed attribute or variable)
    assert handed[0] is handed[1] is handed[2]
    assert handed[0].iss_sub is handed[1].iss_sub

    # A filter between them that puts other claims in the request's identity: the principal worked
    # out for the token's own claims no longer applies, and the decision reads the new ones.
    def as_bob(ctx: Ctx) -> None:
        assert ctx.filter_state is not None
        ctx.filter_state[REQUEST_AUTH]["claims"] = {"iss": ISSUER.iss, "sub": "bob"}

    denied = run(jwt, authz, sidecar_request(alice), as_bob)
    assert denied is not None and denied.status == 403


def test_claims_without_a_string_sub_leave_the_principal_to_the_decision() -> None:
    spaced = f"{rule()}    spaceDelimitedClaims: [sub]\n"  # sub becomes a list: no (iss, sub) pair
    jwt, authz = filters(build(ra(spaced), ALLOW_ALICE))
    assert authz is not None
    ctx = sidecar_request(ISSUER.token("ES256", sub="alice"))
    assert run(jwt, authz, ctx) is None  # principal "<iss>/alice", split at its last "/"
    assert ctx.filter_state is not None and REQUEST_PRINCIPAL not in ctx.filter_state


def test_a_tokens_ready_header_operations_go_with_its_config() -> None:
    first = build(ra(rule()))
    jwt, _ = filters(first)
    token = ISSUER.token("ES256")
    for _ in range(2):
        ctx = request(bearer(token))
        assert jwt.on_request_headers(ctx) is None
        assert "authorization" not in upstream(ctx)  # forwardOriginalToken: false
    assert jwt.config.last_hit is not None
    # The rule changes to forward the token: its provider differs, so the new config keeps none of
    # the old one's entries, ready operations included, and the token goes up.
    second = build(ra(rule(forward=True)), previous=first)
    jwt2, _ = filters(second)
    assert jwt2.config is not jwt.config and not jwt2.config.verified and jwt2.config.last_hit is None
    for _ in range(2):
        ctx = request(bearer(token))
        assert jwt2.on_request_headers(ctx) is None
        assert upstream(ctx)["authorization"] == f"Bearer {token}"
    assert jwt2.config.stats["verified"] == 1


def test_the_decisions_access_log_fields_are_each_requests_own() -> None:
    jwt, authz = filters(build(ra(rule()), ALLOW_ALICE))
    assert authz is not None
    alice = ISSUER.token("ES256", sub="alice")
    ctx = sidecar_request(alice, logs=KEPT)
    assert run(jwt, authz, ctx) is None
    assert ctx.filter_state is not None
    fields = ctx.filter_state["access_log"]
    assert fields == {"authz_result": "allowed", "authz_policy": "ns[default]-policy[alice-only]-rule[0]"}
    fields["authz_result"] = "edited by a later filter"
    again = sidecar_request(alice, logs=KEPT)
    assert run(jwt, authz, again) is None
    assert again.filter_state is not None and again.filter_state["access_log"]["authz_result"] == "allowed"
    outside = sidecar_request(alice, peer="192.168.0.1", logs=KEPT)  # ipBlocks 10.0.0.0/8
    denied = run(jwt, authz, outside)
    assert denied is not None and denied.status == 403
    assert outside.filter_state is not None and outside.filter_state["access_log"]["authz_result"] == "denied"


def test_without_an_access_log_the_decision_is_counted_and_not_logged() -> None:
    jwt, authz = filters(build(ra(rule()), ALLOW_ALICE))
    assert authz is not None
    counted = REGISTRY.get("meshbus_authz_requests_total")
    before = sum(c.value for _labels, c in counted.series()) if counted is not None else 0
    ctx = sidecar_request(ISSUER.token("ES256", sub="alice"))
    assert run(jwt, authz, ctx) is None
    assert ctx.filter_state is not None and "access_log" not in ctx.filter_state
    denied = run(jwt, authz, sidecar_request(ISSUER.token("ES256", sub="bob")))
    assert denied is not None and denied.status == 403
    counted = REGISTRY.get("meshbus_authz_requests_total")
    assert counted is not None and sum(c.value for _labels, c in counted.series()) == before + 2


def test_an_address_match_remembers_only_the_address_it_was_last_asked() -> None:
    m = IpMatch(["10.0.0.0/8"])
    inside, outside = "10.1.2.3", "192.168.0.1"
    answers = [m.match(a) for a in (inside, inside, outside, outside, inside)]
    assert answers == [True, True, False, False, True]
    assert m.match("".join(["10.", "9.9.9"])) and not m.match("".join(["192.", "168.0.2"]))
