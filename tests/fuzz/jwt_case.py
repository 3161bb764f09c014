"""The ``jwt`` fuzz target: tokens and JWKS documents through the inbound sidecar's JWT filter.

The filter is built from a RequestAuthentication by the real loader and build
(proxy/build/inbound_filters.py) with two rules: the default locations (``Authorization: Bearer``,
``?access_token``) with an audience, and a rule reading a header with a prefix, a parameter and a
cookie, forwarding the token and writing the payload and two claims to headers. Its keys (ES256 and
EdDSA) are derived from fixed numbers, so a token signed in one run verifies in the next: a kept case
replays the same way forever.

A case is the parameter byte, then the input. The parameter's low two bits pick the mode:
- 0 ``token``: the input is a token (latin-1, as a header value arrives), sent at the location the
  next two bits pick (header, prefixed header, parameter, cookie).
- 1 ``claims``: the input is a payload segment's JSON, signed with a real key: what a token
  minted by the issuer (or stolen from it) may carry, past the signature check.
- 2 ``header``: the input is a JOSE header's JSON, signed likewise.
- 3 ``jwks``: the input is a JWKS document, parsed (``jwt_keys.parse_jwks``) and, when it yields
  keys, made a rule of that a valid token is checked against.

Promises checked: the filter answers None (the token verified) or a 401 ``LocalReply`` with Envoy's
``jwt_authn_access_denied{...}`` details, never raises; the same token asked again (from the caches)
gets the same answer, and so does a filter with empty caches; a verified token's header names an allowed algorithm, its ``iss`` is the
rule's, and PyJWT verifies it with one of the rule's keys; ``parse_jwks`` returns keys or raises
ValueError.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt as pyjwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from meshbus.bus.config import load_text
from meshbus.proxy.build.runtime import build_runtime
from meshbus.proxy.codec.http1 import RequestHead
from meshbus.proxy.core.routing import RequestView
from meshbus.proxy.filters.chain import LocalReply
from meshbus.proxy.filters.jwt_authn import REQUEST_AUTH, JwtAuthnConfig, JwtAuthnFilter, JwtProvider
from meshbus.proxy.filters.jwt_keys import ALLOWED_ALGS, parse_jwks
from tests.support.jwks import Issuer

ISS = "https://issuer.test"
OTHER_ISS = "https://other.test"
KEYS = {
    "ES256": ec.derive_private_key(0x6D657368627573, ec.SECP256R1()),
    "EdDSA": ed25519.Ed25519PrivateKey.from_private_bytes(b"meshbus fuzz test key, not real!"),
}
"""Test-only keys from fixed numbers: tokens signed with them verify in every run."""
ISSUER = Issuer(ISS, algorithms=tuple(KEYS), keys=dict(KEYS))
OTHER = Issuer(OTHER_ISS, algorithms=("EdDSA",), keys={"EdDSA": KEYS["EdDSA"]})
FOREVER = 4102444800  # 2100-01-01: seeds stay unexpired


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(header: bytes, payload: bytes, alg: str = "EdDSA") -> str:
    """A token of these exact header and payload bytes, signed with the test key of ``alg``."""
    signing_input = f"{_b64(header)}.{_b64(payload)}".encode()
    signature = pyjwt.get_algorithm_by_name(alg).sign(signing_input, KEYS[alg])
    return f"{signing_input.decode()}.{_b64(signature)}"


def header_json(alg: str = "EdDSA") -> bytes:
    return json.dumps({"alg": alg, "typ": "JWT", "kid": ISSUER.kid(alg)}).encode()


def claims_json(**extra: Any) -> bytes:
    claims: dict[str, Any] = {"iss": ISS, "sub": "alice", "aud": "reviews", "exp": FOREVER, **extra}
    return json.dumps({k: v for k, v in claims.items() if v is not None}).encode()


def _filter() -> JwtAuthnFilter:
    rules = (
        f"  - issuer: {ISS}\n    audiences: [reviews]\n    jwks: {json.dumps(ISSUER.jwks())}\n"
        f"  - issuer: {OTHER_ISS}\n    jwks: {json.dumps(OTHER.jwks())}\n"
        "    fromHeaders: [{name: x-jwt-assertion, prefix: 'Token '}]\n    fromParams: [jwt]\n"
        "    fromCookies: [session]\n    forwardOriginalToken: true\n    outputPayloadToHeader: x-jwt-payload\n"
        "    outputClaimToHeaders: [{header: x-sub, claim: sub}, {header: x-group, claim: group.id}]\n"
    )
    doc = (
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\n"
        "metadata: {name: jwt, namespace: default}\nspec:\n  selector:\n    matchLabels: {app: reviews}\n"
        f"  jwtRules:\n{rules}"
    )
    result = load_text(doc, "fuzz-jwt.yaml")
    assert result.ok, result.validation.render()
    rt = build_runtime(result.resources, labels={"app": "reviews"}, app_port=9080)
    (route,) = rt.inbound.virtual_hosts[0].routes
    (flt,) = (f for f in route.chain.filters if isinstance(f, JwtAuthnFilter))
    return flt


FILTER = _filter()


class _Ctx:
    """The FilterContext surface the JWT filter reads and writes."""

    def __init__(self, headers: dict[str, str], target: str) -> None:
        self.head = RequestHead("GET", target, "1.1", list(headers.items()), headers, True, False, 0, 0)
        self.view = RequestView("GET", target, "reviews:9080", headers, "10.0.0.9")
        self.filter_state: dict[str, Any] | None = None
        self.req_ops: Any = None
        self.flags: list[str] = []


def _request(token: str, where: int) -> _Ctx:
    if where == 0:
        return _Ctx({"authorization": f"Bearer {token}"}, "/books")
    if where == 1:
        return _Ctx({"x-jwt-assertion": f"Token {token}"}, "/books")
    if where == 2:
        return _Ctx({}, f"/books?jwt={token}")
    return _Ctx({"cookie": f"theme=dark; session={token}"}, "/books")


def _outcome(flt: JwtAuthnFilter, token: str, where: int) -> tuple[str, Any]:
    ctx = _request(token, where)
    answer = flt.on_request_headers(ctx)  # type: ignore[arg-type]
    if answer is None:
        if ctx.filter_state is None:  # no token found where the rules look (e.g. an empty one)
            return "no-token", None
        auth = ctx.filter_state[REQUEST_AUTH]
        assert isinstance(auth["principal"], str), auth
        if ctx.req_ops is not None:
            ctx.req_ops.apply(list(ctx.head.headers))
        return "verified", auth["principal"]
    assert isinstance(answer, LocalReply), answer
    assert answer.status == 401, answer
    assert answer.details is not None and answer.details.startswith("jwt_authn_access_denied{"), answer
    assert ctx.filter_state is None
    return "denied", answer.body


def _check_verified(token: str, providers: tuple[JwtProvider, ...]) -> None:
    """Independent of the filter: the token is signed by a key of the rule of its issuer."""
    header = pyjwt.get_unverified_header(token)
    alg = header["alg"]
    assert alg in ALLOWED_ALGS, header
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    provider = next(p for p in providers if p.issuer in ("", claims.get("iss")))
    assert provider.keys
    for key in provider.keys:
        if alg not in key.algs:
            continue
        try:
            pyjwt.decode(token, key.key, algorithms=[alg], options={"verify_signature": True, "verify_aud": False,
                         "verify_exp": False, "verify_nbf": False, "verify_iat": False})  # fmt: skip
            return
        except pyjwt.InvalidSignatureError:
            continue
    raise AssertionError(f"the filter verified a token no key of its rule signed: {token!r}")


def through_filter(token: str, where: int, flt: JwtAuthnFilter = FILTER) -> None:
    first = _outcome(flt, token, where)
    again = _outcome(flt, token, where)  # from the verified/failed caches now
    assert again == first, (first, again)
    # the shared filter's caches hold every earlier case: a fresh one must answer the same
    fresh = _outcome(JwtAuthnFilter(JwtAuthnConfig(flt.config.providers)), token, where)
    assert fresh == first, (first, fresh)
    if first[0] == "verified":
        _check_verified(token, flt.config.providers)


def jwks(text: str) -> None:
    try:
        keys, problems = parse_jwks(text)
    except ValueError:
        return
    assert all(isinstance(p, str) for p in problems)
    if not keys:
        return
    provider = JwtProvider(issuer=ISS, audiences=frozenset(), keys=keys)
    flt = JwtAuthnFilter(JwtAuthnConfig((provider,)))
    for alg in KEYS:
        through_filter(sign(header_json(alg), claims_json()), 0, flt)


def case(data: bytes) -> None:
    param, body = (data[0], data[1:]) if data else (0, b"")
    mode, where = param & 3, (param >> 2) & 3
    alg = "ES256" if param & 0x10 else "EdDSA"
    if mode == 0:
        through_filter(body.decode("latin-1"), where)
    elif mode == 1:
        through_filter(sign(header_json(alg), body, alg), where)
    elif mode == 2:
        through_filter(sign(body, claims_json(), alg), where)
    else:
        jwks(body.decode("utf-8", "replace"))


def seeds() -> list[bytes]:
    """Valid tokens and key sets, and a few near misses, as cases."""
    good = [sign(header_json(alg), claims_json(), alg) for alg in KEYS]
    other = sign(header_json("EdDSA"), claims_json(iss=OTHER_ISS, aud=None, group={"id": "g1"}))
    listed = sign(header_json("ES256"), claims_json(aud=["reviews", "x"], scope="a b"), "ES256")
    tokens = [*good, other, listed, good[0] + "x", "a.b.c"]
    out = [bytes([where << 2]) + t.encode() for t in tokens for where in (0, 2)]
    out += [bytes([1 << 2]) + other.encode(), bytes([3 << 2]) + other.encode()]
    out += [
        b"\x01" + claims_json(),
        b"\x11" + claims_json(nbf=1, iat=1, azp="web", scope="read write", group={"id": 7}),
        b"\x01" + claims_json(exp=1),
        b"\x01" + claims_json(aud=["reviews"]),
        b"\x02" + header_json(),
        b"\x12" + header_json("ES256"),
        b"\x02" + json.dumps({"alg": "none"}).encode(),
        b"\x03" + ISSUER.jwks().encode(),
        b"\x03"
        + json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0"}, {"kty": "EC", "crv": "P-384"}]}).encode(),
    ]
    return out
