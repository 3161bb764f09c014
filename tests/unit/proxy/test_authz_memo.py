"""The authorization filter's memo of decisions: a request equal to an earlier one in every attribute
the rules read is decided by a lookup, and only then (bus/config/authz/inputs.py says what the rules
read). Each decision is compared with the same filter deciding in full; both filters come from the
real loader and build, driven without sockets."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest

from meshbus.bus.config import load_text
from meshbus.bus.config.authz.compile import Workload, compile_workload
from meshbus.bus.config.authz.inputs import XFF, Inputs, decision_inputs
from meshbus.bus.config.authz.normalize import seen_paths
from meshbus.proxy.codec.http1 import RequestHead
from meshbus.proxy.core.routing import RequestView
from meshbus.proxy.filters.authz import MEMO_REST, MEMO_SIZE, AuthzFilter
from meshbus.proxy.filters.jwt_authn import JwtAuthnFilter
from tests.unit.proxy.test_authz_jwt_handoff import ISSUER, LISTENERS, build, filters, rule
from tests.unit.proxy.test_jwt_authn import Ctx, ra
from tests.unit.proxy.test_jwt_authn import request as jwt_request

pytestmark = pytest.mark.unit

PEER = "spiffe://cluster.local/ns/default/sa/productpage"


def policy(name: str, spec: str, action: str = "ALLOW") -> str:
    return (
        f"apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
        f"metadata: {{name: {name}, namespace: default}}\n"
        f"spec:\n  selector: {{matchLabels: {{app: reviews}}}}\n  action: {action}\n  rules:\n{spec}"
    )


# Rules reading every keyed attribute: request principal, address, method, path, header, peer, host.
POLICIES = (
    policy(
        "tenant",
        f"""  - from: [{{source: {{requestPrincipals: ["{ISSUER.iss}/alice"], ipBlocks: [10.0.0.0/8]}}}}]
    to: [{{operation: {{methods: [GET], paths: ["/books*"]}}}}]
    when: [{{key: "request.headers[x-tenant]", values: [t1]}}]
""",
    ),
    policy(
        "peer",
        f"""  - from: [{{source: {{principals: ["{PEER[9:]}"]}}}}]
    to: [{{operation: {{hosts: ["admin.local"]}}}}]
""",
    ),
    policy("debug", '  - to: [{operation: {paths: ["/books/secret"]}}]\n', "DENY"),
)


def sidecar(
    token: str | None, *, peer: str, principal: str | None, method: str, target: str, headers: dict[str, str]
) -> Ctx:
    h = dict(headers)
    if token is not None:
        h["authorization"] = f"Bearer {token}"
    authority = h.pop("host", "reviews:9080")
    head = RequestHead(method, target, "1.1", list(h.items()), h, True, False, 0, 0)
    ctx = Ctx(head, RequestView(method, target, authority, h, peer))
    ctx.dc = SimpleNamespace(peer_ip=peer, peer_principal=principal, connection_info=lambda name: None)
    ctx.ctx = next(iter(LISTENERS.values()))  # type: ignore[attr-defined]
    return ctx


def decide(jwt: JwtAuthnFilter, authz: AuthzFilter, ctx: Ctx) -> tuple[int, str]:
    r = jwt.on_request_headers(ctx)
    if r is None:
        r = authz.on_request_headers(ctx)
    return (200, ctx.view.path) if r is None else (r.status, r.details)


def header_rule(name: str) -> str:
    return policy(f"no-{name}", f'  - when: [{{key: "request.headers[{name}]", values: ["on"]}}]\n', "DENY")


@pytest.mark.parametrize("extra", [(), ("x-debug",), ("x-debug", "x-trace")], ids=["1", "2", "3"])
def test_a_request_like_an_earlier_one_is_decided_from_the_memo_as_in_full(extra: tuple[str, ...]) -> None:
    docs = (ra(rule()), *POLICIES, *(header_rule(name) for name in extra))  # 1, 2 or 3 headers read
    jwt, authz = filters(build(*docs))
    _, full = filters(build(*docs))
    assert authz is not None and full is not None and authz.memo_on
    assert authz.key_headers == tuple(sorted(("x-tenant", *extra)))
    full.memo_on = False  # the reference: every request decided in full
    alice, bob = ISSUER.token("ES256", sub="alice"), ISSUER.token("ES256", sub="bob")
    on = [{"x-tenant": "t1", name: "on"} for name in extra]  # each extra header's DENY rule matches
    cases = list(
        itertools.product(
            (alice, bob, None),
            ("10.0.0.9", "192.168.0.1"),
            (None, PEER),
            ("GET", "POST"),
            ("/books", "/books/1?x=1", "/books/./secret", "/admin"),
            ({}, {"x-tenant": "t1"}, {"x-tenant": "t2"}, {"host": "admin.local"}, *on),
        )
    )
    outcomes: set[tuple[int, str]] = set()
    for _round in range(2):  # the second round: every request like one of the first
        for token, peer, principal, method, target, headers in cases:
            kw = dict(peer=peer, principal=principal, method=method, target=target, headers=headers)
            got = decide(jwt, authz, sidecar(token, **kw))  # type: ignore[arg-type]
            want = decide(jwt, full, sidecar(token, **kw))  # type: ignore[arg-type]
            assert got == want, (token is alice, token is bob, kw)
            outcomes.add(got)
    assert {s for s, _ in outcomes} == {200, 403}  # both outcomes, each rule deciding somewhere
    assert any("debug" in d for _, d in outcomes) and (200, "/books/secret") not in outcomes
    assert all(any(f"no-{name}" in d for _, d in outcomes) for name in extra)
    assert authz.memo_hits >= len(cases) and full.memo_hits == 0


def test_claims_are_keyed_by_their_token_and_a_filter_that_changes_them_is_decided_in_full() -> None:
    admins = policy("group", '  - when: [{key: "request.auth.claims[group]", values: [admins]}]\n')
    jwt, authz = filters(build(ra(rule()), admins))
    assert authz is not None and authz.memo_on
    admin, user = (
        ISSUER.token("ES256", sub="ann", group="admins"),
        ISSUER.token("ES256", sub="ann", group="x"),
    )
    kw = dict(peer="10.0.0.9", principal=None, method="GET", target="/books", headers={})
    for _ in range(3):  # the same subject, other claims: each token its own key
        assert decide(jwt, authz, sidecar(admin, **kw)) == (200, "/books")  # type: ignore[arg-type]
        assert decide(jwt, authz, sidecar(user, **kw))[0] == 403  # type: ignore[arg-type]
        assert decide(jwt, authz, sidecar(None, **kw))[0] == 403  # type: ignore[arg-type]
    assert authz.memo_hits == 6 and len(authz._memo) == 3
    promoted = sidecar(user, **kw)  # type: ignore[arg-type]
    assert jwt.on_request_headers(promoted) is None and promoted.filter_state is not None
    promoted.filter_state["request.auth"]["claims"] = {"iss": ISSUER.iss, "sub": "ann", "group": "admins"}
    assert authz.on_request_headers(promoted) is None  # its own claims decide, not the token's memo
    # Another filter replaces the token's claims after the JWT filter: the request principal is no
    # longer the one the JWT filter worked out, so the request is not keyed (it would be alice's).
    jwt, authz = filters(build(ra(rule()), *POLICIES))
    assert authz is not None
    alice = ISSUER.token("ES256", sub="alice")
    kw = dict(peer="10.0.0.9", principal=None, method="GET", target="/books", headers={"x-tenant": "t1"})
    assert decide(jwt, authz, sidecar(alice, **kw)) == (200, "/books")  # type: ignore[arg-type]
    ctx = sidecar(alice, **kw)  # type: ignore[arg-type]
    assert jwt.on_request_headers(ctx) is None and ctx.filter_state is not None
    ctx.filter_state["request.auth"]["claims"] = {"iss": ISSUER.iss, "sub": "bob"}
    r = authz.on_request_headers(ctx)
    assert r is not None and r.status == 403


def test_the_memo_rests_while_keys_rarely_repeat_and_keeps_going_while_they_do() -> None:
    _, authz = filters(build(ra(rule()), *POLICIES))
    assert authz is not None

    def ask(target: str) -> int:
        ctx = jwt_request({"x-tenant": "t1"}, target=target)
        ctx.dc = SimpleNamespace(peer_ip="10.0.0.9", peer_principal=PEER, connection_info=lambda n: None)
        ctx.ctx = next(iter(LISTENERS.values()))  # type: ignore[attr-defined]
        r = authz.on_request_headers(ctx)
        return 200 if r is None else r.status

    # Repeated keys: the memo fills up with more hits than entries, empties and goes on.
    for _ in range(MEMO_SIZE + 1):
        assert ask("/books") == 403  # no request principal: no ALLOW rule matches
    for i in range(MEMO_SIZE):
        assert ask(f"/books/{i}") == 403
    assert authz.memo_rest == 0 and len(authz._memo) == 1 and authz.memo_hits == 0
    # A path with an id in it: every key new; once full, the memo rests (and decides as before).
    for i in range(MEMO_SIZE):
        assert ask(f"/id/{i}") == 403
    assert authz.memo_rest == MEMO_REST and len(authz._memo) == 1
    assert ask("/books/secret") == 403 and authz.memo_rest == MEMO_REST - 1
    assert len(authz._memo) == 1 and authz.memo_hits == 0


def workload_inputs(*docs: str) -> Inputs | None:
    result = load_text("".join(docs), "p.yaml")
    assert result.ok, result.validation.render()
    c = compile_workload(result.resources, Workload("default", {"app": "reviews"}, 9080))
    assert c is not None
    return decision_inputs(c.tables)


def test_the_inputs_are_what_the_rules_read() -> None:
    got = workload_inputs(*(p + "---\n" for p in POLICIES))
    assert got == Inputs(
        peer=True, request_principal=True, source_ip=True, host=True, method=True, path=True,
        headers=("x-tenant",),
    )  # fmt: skip
    remote = policy("remote", "  - from: [{source: {notRemoteIpBlocks: [10.0.0.0/8]}}]\n", "DENY")
    assert workload_inputs(remote) == Inputs(source_ip=True, headers=(XFF,))
    assert workload_inputs(policy("ports", "  - to: [{operation: {ports: ['9080']}}]\n")) == Inputs()
    claims = '  - when: [{key: "request.auth.claims[group]", notValues: [guests]}]\n'
    assert workload_inputs(policy("claims", claims)) == Inputs(claims=True)
    for unkeyed in (
        '  - when: [{key: "request.auth.audiences", values: [web]}]\n',
        '  - when: [{key: "destination.ip", values: [10.0.0.1]}]\n',
        '  - when: [{key: "connection.sni", values: [a.b]}]\n',
    ):
        assert workload_inputs(policy("x", unkeyed)) is None, unkeyed


def test_a_path_seen_lately_is_looked_up_in_the_normalization_memo_refused_or_not() -> None:
    _, authz = filters(build(ra(rule()), *POLICIES))
    assert authz is not None and authz.seen is seen_paths(authz.mode)
    kw = dict(peer="10.0.0.9", principal=PEER, method="GET", headers={"host": "admin.local"})
    for _ in range(2):  # the first normalizes, the second finds it in the memo
        assert decide_only(authz, sidecar(None, target="/a/%2e%2e/books?q", **kw)) == (200, "/books?q")  # type: ignore[arg-type]
        assert decide_only(authz, sidecar(None, target="/books%00", **kw)) == (
            400,
            "path_normalization_failed",
        )  # type: ignore[arg-type]
    assert authz.seen["/a/%2e%2e/books"] == "/books" and authz.seen["/books%00"] == ""


def decide_only(authz: AuthzFilter, ctx: Ctx) -> tuple[int, str]:
    r = authz.on_request_headers(ctx)
    return (200, ctx.view.path) if r is None else (r.status, r.details)
