"""RequestAuthentication in the inbound sidecar (proxy/filters/jwt_authn.py), driven without sockets.

The config goes through the real loader and build (proxy/build/inbound_filters.py); the filter is
driven with a FilterContext stand-in, as the exchange drives it.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from typing import Any

import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshbus.bus.config import load_text
from meshbus.proxy.build.runtime import ProxyRuntime, build_runtime
from meshbus.proxy.codec.http1 import RequestHead
from meshbus.proxy.core.routing import RequestView
from meshbus.proxy.filters import jwt_authn
from meshbus.proxy.filters.chain import LocalReply
from meshbus.proxy.filters.headerops import HeaderOps
from meshbus.proxy.filters.jwt_authn import JWT_AUTHN, REQUEST_AUTH, JwtAuthnConfig, JwtAuthnFilter
from tests.support.jwks import ALGORITHMS, Issuer

pytestmark = pytest.mark.unit

ISSUER = Issuer()
OTHER = Issuer(iss="https://other.test", algorithms=("ES256",))


def ra(
    rule: str = "", *, name: str = "jwt", namespace: str = "default", selector: str = "{app: reviews}"
) -> str:
    jwks = json.dumps(ISSUER.jwks())
    rule = rule or f"  - issuer: {ISSUER.iss}\n    audiences: [reviews]\n    jwks: {jwks}\n"
    sel = f"  selector:\n    matchLabels: {selector}\n" if selector else ""
    return (
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\n"
        f"metadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{sel}  jwtRules:\n{rule}"
    )


def runtime(*docs: str, labels: dict[str, str] | None = None, namespace: str = "default") -> ProxyRuntime:
    result = load_text("---\n".join(docs), "ra.yaml")
    assert result.ok, result.validation.render()
    return build_runtime(
        result.resources, namespace=namespace, labels=labels or {"app": "reviews"}, app_port=9080
    )


def jwt_filter(rt: ProxyRuntime) -> JwtAuthnFilter | None:
    (route,) = rt.inbound.virtual_hosts[0].routes
    for f in route.chain.filters:
        if isinstance(f, JwtAuthnFilter):
            return f
    return None


@dataclass
class Ctx:
    head: Any
    view: Any
    dc: Any = None
    filter_state: dict[str, Any] | None = None
    req_ops: HeaderOps | None = None
    flags: list[str] = field(default_factory=list)
    route: Any = None
    dest: Any = None
    t0: float = 0.0


def request(headers: dict[str, str] | None = None, target: str = "/books") -> Ctx:
    h = {k.lower(): v for k, v in (headers or {}).items()}
    head = RequestHead("GET", target, "1.1", list(h.items()), h, True, False, 0, 0)
    return Ctx(head, RequestView("GET", target, "reviews:9080", h, "10.0.0.9"))


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def flt() -> JwtAuthnFilter:
    f = jwt_filter(runtime(ra()))
    assert f is not None
    return f


def upstream(ctx: Ctx) -> dict[str, str]:
    """The request headers the router would send (after the filter's operations)."""
    hdrs = list(ctx.head.headers)
    return dict(ctx.req_ops.apply(hdrs) if ctx.req_ops is not None else hdrs)


def denied(r: object, message: str) -> None:
    assert isinstance(r, LocalReply), r
    assert r.status == 401
    assert r.body == message
    (name, value), *_ = r.headers
    assert name == "www-authenticate"
    assert value == 'Bearer realm="http://reviews:9080/books", error="invalid_token"'
    assert r.details == "jwt_authn_access_denied{" + message.replace(" ", "_") + "}"


# -- verification ---------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_every_supported_algorithm_verifies_and_sets_the_identity(flt: JwtAuthnFilter, alg: str) -> None:
    token = ISSUER.token(alg, sub="alice", azp="web", scope="read write", group={"id": "g1"})
    ctx = request(bearer(token))
    assert flt.on_request_headers(ctx) is None
    assert ctx.filter_state is not None
    auth = ctx.filter_state[REQUEST_AUTH]
    assert set(auth) == {"principal", "audiences", "presenter", "claims"}
    assert auth["principal"] == f"{ISSUER.iss}/alice"
    assert auth["audiences"] == ["reviews"]
    assert auth["presenter"] == "web"
    assert auth["claims"]["group"] == {"id": "g1"}
    assert auth["claims"]["scope"] == ["read", "write"]  # Istio splits scope for authorization
    assert "authorization" not in upstream(ctx)  # forwardOriginalToken is false by default


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ISSUER.token(ttl=-61), jwt_authn.EXPIRED),
        (lambda: ISSUER.token(nbf=int(time.time()) + 120), jwt_authn.NOT_YET_VALID),
        (lambda: ISSUER.token(aud="ratings"), jwt_authn.BAD_AUDIENCE),
        (lambda: ISSUER.token(aud=None), jwt_authn.BAD_AUDIENCE),
        (lambda: ISSUER.token(iss="https://evil.test"), jwt_authn.UNKNOWN_ISSUER),
        (lambda: OTHER.token("ES256", iss=ISSUER.iss, kid=ISSUER.kid("ES256")), jwt_authn.BAD_SIGNATURE),
        (lambda: OTHER.token("ES256", iss=ISSUER.iss, kid="unknown"), jwt_authn.NO_KEY),
        (lambda: _tampered(ISSUER.token()), jwt_authn.BAD_SIGNATURE),
        (lambda: _alg_none(), jwt_authn.BAD_ALG),
        (lambda: _hmac_with_public_key(), jwt_authn.BAD_ALG),
        (lambda: "garbage", jwt_authn.BAD_FORMAT),
        (lambda: "a.b.c", jwt_authn.BAD_HEADER),
        (lambda: "e30.bm90IGpzb24.c2ln", jwt_authn.BAD_PAYLOAD),
        (lambda: "x" * 60_000, jwt_authn.BAD_FORMAT),
        (lambda: ISSUER.token() + "A" * 40_000, jwt_authn.BAD_SIGNATURE),
    ],
    ids=[
        "expired", "not-yet-valid", "wrong-audience", "no-audience", "unknown-issuer", "other-key-same-kid",
        "unknown-kid", "tampered-payload", "alg-none", "hmac-with-public-key", "garbage", "bad-header",
        "bad-payload", "huge", "huge-signature",
    ],
)  # fmt: skip
def test_bad_tokens_are_401_with_envoys_reason(flt: JwtAuthnFilter, make: Any, message: str) -> None:
    ctx = request(bearer(make()))
    denied(flt.on_request_headers(ctx), message)
    assert ctx.filter_state is None


def _tampered(token: str) -> str:
    head, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["sub"] = "admin"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{head}.{forged}.{sig}"


def _b64(obj: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def _alg_none() -> str:
    claims = {"iss": ISSUER.iss, "sub": "admin", "aud": "reviews", "exp": int(time.time()) + 60}
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."


def _hmac_with_public_key() -> str:
    """The algorithm-confusion attack: HS256 keyed with the issuer's public key (which is public)."""
    claims = {"iss": ISSUER.iss, "sub": "admin", "aud": "reviews", "exp": int(time.time()) + 60}
    secret = json.dumps(ISSUER.jwk("RS256")).encode()
    signing = f"{_b64({'alg': 'HS256', 'kid': ISSUER.kid('RS256')})}.{_b64(claims)}".encode()
    import hashlib
    import hmac

    sig = base64.urlsafe_b64encode(hmac.new(secret, signing, hashlib.sha256).digest()).rstrip(b"=")
    return (signing + b"." + sig).decode()


def test_exp_and_nbf_allow_sixty_seconds_of_clock_skew(flt: JwtAuthnFilter) -> None:
    assert flt.on_request_headers(request(bearer(ISSUER.token(ttl=-50)))) is None
    assert flt.on_request_headers(request(bearer(ISSUER.token(nbf=int(time.time()) + 50)))) is None


def test_a_request_without_a_token_passes_without_identity(flt: JwtAuthnFilter) -> None:
    ctx = request({"x-other": "1"})
    assert flt.on_request_headers(ctx) is None
    assert ctx.filter_state is None and ctx.req_ops is None
    # another scheme in Authorization is not a token of ours
    assert flt.on_request_headers(request({"authorization": "Basic dXNlcjpwdw=="})) is None


def test_the_access_token_query_parameter_is_a_default_location(flt: JwtAuthnFilter) -> None:
    ctx = request(target=f"/books?x=1&access_token={ISSUER.token()}")
    assert flt.on_request_headers(ctx) is None
    assert ctx.filter_state is not None
    denied(flt.on_request_headers(request(target="/books?access_token=garbage")), jwt_authn.BAD_FORMAT)


def _clocked(
    *docs: str, previous: ProxyRuntime | None = None
) -> tuple[ProxyRuntime, JwtAuthnFilter, list[float]]:
    """A runtime of ``docs`` whose JWT config reads the returned one-item clock."""
    result = load_text("---\n".join(docs), "ra.yaml")
    assert result.ok, result.validation.render()
    rt = build_runtime(result.resources, labels={"app": "reviews"}, app_port=9080, previous=previous)
    f = jwt_filter(rt)
    assert f is not None
    now = [time.time()]
    f.config.clock = lambda: now[0]
    return rt, f, now


def test_a_cached_token_answers_exactly_while_a_fresh_check_would_pass() -> None:
    _rt, f, now = _clocked(ra())
    cfg = f.config
    t0 = now[0]
    token = ISSUER.token(ttl=30, nbf=int(t0) + 30)  # not before t0 + 30: within the 60 s of skew
    for _ in range(3):
        assert f.on_request_headers(request(bearer(token))) is None
    assert cfg.stats["verified"] == 1 and cfg.stats["cache_hits"] == 2
    exp = int(t0) + 30
    now[0] = exp + jwt_authn.CLOCK_SKEW - 0.5  # the last moment a check would pass: served from the cache
    assert f.on_request_headers(request(bearer(token))) is None
    assert cfg.stats["verified"] == 1 and cfg.stats["cache_hits"] == 3
    now[0] = exp + jwt_authn.CLOCK_SKEW  # on time, not a second late: checked again, and refused
    denied(f.on_request_headers(request(bearer(token))), jwt_authn.EXPIRED)
    assert token not in cfg.verified
    # nbf holds for a cached token too (a clock set back): before nbf - skew it is checked, and refused
    _rt, f, now = _clocked(ra())
    assert f.on_request_headers(request(bearer(token))) is None
    now[0] = int(t0) + 30 - jwt_authn.CLOCK_SKEW - 1
    denied(f.on_request_headers(request(bearer(token))), jwt_authn.NOT_YET_VALID)


def test_the_cache_key_is_the_whole_token_not_its_claims() -> None:
    _rt, f, _now = _clocked(ra())
    cfg = f.config
    token = ISSUER.token("ES256", sub="carol", exp=int(time.time()) + 600, iat=1)
    assert f.on_request_headers(request(bearer(token))) is None
    head, payload, _sig = token.split(".")
    # same header and claims, another (invalid) signature: not the cached entry, and refused
    other_sig = base64.urlsafe_b64encode(bytes(64)).rstrip(b"=").decode()
    denied(f.on_request_headers(request(bearer(f"{head}.{payload}.{other_sig}"))), jwt_authn.BAD_SIGNATURE)
    # the same claims signed again (ECDSA signatures differ each time): verified on its own
    again = ISSUER.token("ES256", sub="carol", exp=int(time.time()) + 600, iat=1)
    assert again != token and again.split(".")[1] == payload
    assert f.on_request_headers(request(bearer(again))) is None
    assert cfg.stats["verified"] == 2 and cfg.stats["cache_hits"] == 0


def test_a_jwks_rotation_drops_that_providers_cached_tokens_only() -> None:
    other = ra(f"  - issuer: {OTHER.iss}\n    jwks: {json.dumps(OTHER.jwks())}\n", name="other")
    first, f1, _ = _clocked(ra(), other)
    ours, theirs = ISSUER.token("ES256"), OTHER.token("ES256")
    assert f1.on_request_headers(request(bearer(ours))) is None
    assert f1.on_request_headers(request(bearer(theirs))) is None
    assert set(f1.config.verified) == {ours, theirs}
    # ISSUER rotates its ES256 key (same kid, new key), as discovery would push it: inline jwks
    rotated = Issuer(iss=ISSUER.iss, algorithms=("ES256",))
    rule = f"  - issuer: {ISSUER.iss}\n    audiences: [reviews]\n    jwks: {json.dumps(rotated.jwks())}\n"
    _second, f2, _ = _clocked(ra(rule), other, previous=first)
    assert f2.config is not f1.config
    assert list(f2.config.verified) == [theirs]  # the other issuer's entry is kept
    denied(f2.on_request_headers(request(bearer(ours))), jwt_authn.BAD_SIGNATURE)  # not from the cache
    assert f2.on_request_headers(request(bearer(theirs))) is None
    assert f2.config.stats["cache_hits"] == 1 and f2.config.stats["verified"] == 0
    assert f2.on_request_headers(request(bearer(rotated.token("ES256")))) is None


def test_a_cached_failure_does_not_outlive_the_config_it_failed_under() -> None:
    newcomer = Issuer(iss=ISSUER.iss, algorithms=("ES256",))
    token = newcomer.token("ES256", kid="key-new")  # signed with a key not published yet
    first, f1, _ = _clocked(ra())
    denied(f1.on_request_headers(request(bearer(token))), jwt_authn.NO_KEY)
    assert token in f1.config.failed
    keys = json.loads(ISSUER.jwks())["keys"] + [{**newcomer.jwk("ES256"), "kid": "key-new"}]
    rule = f"  - issuer: {ISSUER.iss}\n    audiences: [reviews]\n    jwks: {json.dumps(json.dumps({'keys': keys}))}\n"
    _second, f2, _ = _clocked(ra(rule), previous=first)
    assert f2.on_request_headers(request(bearer(token))) is None


def test_bad_tokens_are_cached_too_so_replaying_one_costs_no_signature_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    f = jwt_filter(runtime(ra()))
    assert f is not None
    bad = _tampered(ISSUER.token())
    denied(f.on_request_headers(request(bearer(bad))), jwt_authn.BAD_SIGNATURE)
    calls = []
    import jwt  # the filter imports it on its first verification, as here

    monkeypatch.setattr(jwt, "decode", lambda *a, **k: calls.append(a))
    denied(f.on_request_headers(request(bearer(bad))), jwt_authn.BAD_SIGNATURE)
    assert calls == []


def test_the_cache_is_bounded() -> None:
    f = jwt_filter(runtime(ra()))
    assert f is not None
    assert f.config.cache_size == jwt_authn.CACHE_SIZE
    f.config.cache_size = 3
    tokens = [ISSUER.token("ES256", sub=f"user{i}") for i in range(5)]
    for t in tokens:
        assert f.on_request_headers(request(bearer(t))) is None
    assert list(f.config.verified) == tokens[2:]  # the oldest went first
    # least recently used goes first: a hit keeps an old token in
    assert f.on_request_headers(request(bearer(tokens[2]))) is None
    assert f.on_request_headers(request(bearer(tokens[0]))) is None
    assert list(f.config.verified) == [tokens[4], tokens[2], tokens[0]]


def test_keys_not_fetched_yet_make_tokens_401_and_say_why() -> None:
    rule = f"  - issuer: {ISSUER.iss}\n    jwksUri: https://idp.test/jwks.json\n"
    f = jwt_filter(runtime(ra(rule)))
    assert f is not None
    denied(f.on_request_headers(request(bearer(ISSUER.token()))), jwt_authn.MISSING_KEYS)
    assert f.on_request_headers(request()) is None


# -- locations and what goes upstream --------------------------------------------------------------


def test_custom_locations_forwarding_and_output_headers() -> None:
    jwks = json.dumps(ISSUER.jwks("ES256"))
    rule = (
        f"  - issuer: {ISSUER.iss}\n    jwks: {jwks}\n"
        "    fromHeaders: [{name: x-jwt-assertion, prefix: 'Token '}]\n"
        "    fromParams: [jwt]\n    fromCookies: [session]\n"
        "    forwardOriginalToken: true\n    outputPayloadToHeader: x-jwt-payload\n"
        "    outputClaimToHeaders:\n    - {header: x-sub, claim: sub}\n    - {header: x-group, claim: group.id}\n"
        "    - {header: x-admin, claim: admin}\n"
    )
    f = jwt_filter(runtime(ra(rule)))
    assert f is not None
    token = ISSUER.token("ES256", group={"id": "g7"}, admin=True)
    payload = token.split(".")[1]
    for headers, target in (
        ({"x-jwt-assertion": f"Token {token}"}, "/books"),
        ({}, f"/books?jwt={token}"),
        ({"cookie": f"theme=dark; session={token}"}, "/books"),
    ):
        ctx = request(headers, target)
        assert f.on_request_headers(ctx) is None, (headers, target)
        up = upstream(ctx)
        assert up["x-jwt-payload"] == payload
        assert (up["x-sub"], up["x-group"], up["x-admin"]) == ("alice", "g7", "true")
        if "x-jwt-assertion" in headers:
            assert up["x-jwt-assertion"] == f"Token {token}"  # forwardOriginalToken
    # the default location is not read when the rule names its own
    assert f.on_request_headers(request(bearer(token))) is None
    # a client cannot forge the output headers: without a token they are removed
    ctx = request({"x-sub": "admin", "x-jwt-payload": "forged"})
    assert f.on_request_headers(ctx) is None
    assert "x-sub" not in upstream(ctx) and "x-jwt-payload" not in upstream(ctx)


def test_two_issuers_each_checked_with_its_own_keys() -> None:
    rules = (
        f"  - issuer: {ISSUER.iss}\n    jwks: {json.dumps(ISSUER.jwks('RS256'))}\n"
        f"  - issuer: {OTHER.iss}\n    jwks: {json.dumps(OTHER.jwks())}\n"
    )
    f = jwt_filter(runtime(ra(rules)))
    assert f is not None
    for issuer, alg in ((ISSUER, "RS256"), (OTHER, "ES256")):
        ctx = request(bearer(issuer.token(alg)))
        assert f.on_request_headers(ctx) is None
        assert ctx.filter_state is not None
        assert ctx.filter_state[REQUEST_AUTH]["principal"] == f"{issuer.iss}/alice"
    # a token of one issuer signed with the other's key
    denied(f.on_request_headers(request(bearer(OTHER.token("ES256", iss=ISSUER.iss)))), jwt_authn.NO_KEY)


# -- scope ------------------------------------------------------------------------------------------

MESH_CONFIG = "apiVersion: meshbus.io/v1\nkind: MeshConfig\nmetadata: {name: mesh, namespace: mesh-root}\nspec:\n  rootNamespace: mesh-root\n"


@pytest.mark.parametrize(
    ("docs", "applies"),
    [
        ((ra(),), True),
        ((ra(selector="{app: ratings}"),), False),
        ((ra(selector=""),), True),  # no selector: the whole namespace
        ((ra(namespace="other", selector=""),), False),
        ((ra(namespace="istio-system", selector=""),), True),  # the root namespace: mesh-wide
        ((ra(namespace="istio-system", selector="{app: reviews}"),), True),
        ((ra(namespace="istio-system", selector=""), MESH_CONFIG), False),  # the root is elsewhere now
        ((ra(namespace="mesh-root", selector=""), MESH_CONFIG), True),
    ],
)
def test_scope_is_istios_selector_namespace_and_root_namespace(docs: tuple[str, ...], applies: bool) -> None:
    assert (jwt_filter(runtime(*docs)) is not None) is applies


def test_the_compiled_rules_and_their_cache_survive_an_unrelated_config_change() -> None:
    result = load_text(ra(), "ra.yaml")
    first = build_runtime(result.resources, labels={"app": "reviews"}, app_port=9080)
    f1 = jwt_filter(first)
    se = load_text(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: db}\nspec:\n  hosts: [db]\n"
        "  resolution: STATIC\n  ports: [{number: 5432, name: tcp, protocol: HTTP}]\n"
        "  endpoints: [{address: 10.0.0.5}]\n",
        "se.yaml",
    ).resources
    second = build_runtime([*result.resources, *se], labels={"app": "reviews"}, app_port=9080, previous=first)
    f2 = jwt_filter(second)
    assert f1 is not None and f2 is not None and f2.config is f1.config
    third = build_runtime(
        load_text(ra(), "ra.yaml").resources, labels={"app": "reviews"}, app_port=9080, previous=second
    )
    f3 = jwt_filter(third)
    assert f3 is not None and f3.config is not f1.config  # new resource objects: compiled again
    dump = third.config_dump()["listeners"]["inbound"]["virtualHosts"][0]["routes"][0]
    assert dump["jwtRules"][0]["issuer"] == ISSUER.iss and dump["filters"] == [JWT_AUTHN]


def test_symmetric_keys_in_a_jwks_are_left_out() -> None:
    jwks = json.dumps(
        json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}, ISSUER.jwk("ES256")]})
    )
    f = jwt_filter(runtime(ra(f"  - issuer: {ISSUER.iss}\n    jwks: {jwks}\n")))
    assert f is not None and isinstance(f.config, JwtAuthnConfig)
    keys = f.config.providers[0].keys
    assert keys is not None and [k.kid for k in keys] == [ISSUER.kid("ES256")]
    hs = jwt.encode({"iss": ISSUER.iss, "sub": "x"}, "s" * 32, algorithm="HS256", headers={"kid": "h"})
    denied(f.on_request_headers(request(bearer(hs))), jwt_authn.BAD_ALG)


# -- nothing a client sends crashes the filter --------------------------------------------------------

_VALID = ISSUER.token("ES256")


def _mutations() -> st.SearchStrategy[str]:
    parts = _VALID.split(".")
    segment = st.text(
        alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=.+/", max_size=80
    )
    swapped = st.tuples(st.integers(0, 2), segment).map(
        lambda t: ".".join(s if i != t[0] else t[1] for i, s in enumerate(parts))
    )
    json_header = st.dictionaries(st.sampled_from(["alg", "kid", "typ", "crit", "jku"]), st.one_of(
        st.none(), st.integers(), st.text(max_size=10), st.sampled_from(["none", "HS256", "RS256", "ES256", "EdDSA"])
    )).map(lambda h: f"{_b64(h)}.{parts[1]}.{parts[2]}")  # fmt: skip
    json_claims = st.dictionaries(st.sampled_from(["iss", "sub", "aud", "exp", "nbf", "azp"]), st.one_of(
        st.none(), st.integers(), st.floats(allow_nan=True), st.text(max_size=10), st.lists(st.integers(), max_size=3),
    )).map(lambda c: f"{parts[0]}.{_b64(c)}.{parts[2]}")  # fmt: skip
    return st.one_of(st.text(max_size=200), swapped, json_header, json_claims)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(token=_mutations(), where=st.sampled_from(["header", "param", "cookie"]))
def test_no_token_a_client_can_send_crashes_the_filter_or_gets_through(
    flt: JwtAuthnFilter, token: str, where: str
) -> None:
    if where == "header":
        ctx = request({"authorization": f"Bearer {token}"})
    elif where == "param":
        ctx = request(target=f"/books?access_token={token}")
    else:
        ctx = request({"cookie": f"access_token={token}"})
    r = flt.on_request_headers(ctx)
    if token == _VALID:
        assert r is None
    elif r is not None:
        assert isinstance(r, LocalReply) and r.status == 401
        assert ctx.filter_state is None
