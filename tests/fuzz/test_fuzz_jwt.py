"""No token a client sends, no claim set or JOSE header a signing key produces and no JWKS document
makes the JWT filter or the key-set parser raise; every answer is a verification or a 401 (the
promises are in tests/fuzz/jwt_case.py). Kept cases replay first."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz import jwt_case, targets
from tests.fuzz.mutate import _VALUES, mutated
from tests.fuzz.seeds import SUITE_SAMPLE, corpus

_CLAIM_NAMES = ["iss", "sub", "aud", "exp", "nbf", "iat", "azp", "scope", "permission", "group", "jti"]
_CLAIM_VALUES = _VALUES | st.sampled_from(
    [jwt_case.ISS, jwt_case.OTHER_ISS, "reviews", ["reviews"], jwt_case.FOREVER, 10**400, -(10**400), 1e308]
)
_HEADER_VALUES = _VALUES | st.sampled_from(
    [
        "EdDSA",
        "ES256",
        "RS256",
        "HS256",
        "none",
        "JWT",
        jwt_case.ISSUER.kid("EdDSA"),
        jwt_case.ISSUER.kid("ES256"),
    ]
)


def test_kept_cases() -> None:
    cases = corpus("jwt", sample=SUITE_SAMPLE)
    assert cases
    for case in cases:
        targets.TARGETS["jwt"](case)


def test_the_seeds_verify_and_refuse() -> None:
    """The target is not vacuous: its seed tokens pass the filter, a tampered one does not."""
    for alg in jwt_case.KEYS:
        token = jwt_case.sign(jwt_case.header_json(alg), jwt_case.claims_json(), alg)
        assert jwt_case._outcome(jwt_case.FILTER, token, 0) == ("verified", f"{jwt_case.ISS}/alice")
        assert jwt_case._outcome(jwt_case.FILTER, token[:-2] + "AA", 0)[0] == "denied"


@st.composite
def _signed(draw: st.DrawFn) -> bytes:
    """A claim set (the rules' own names, values of any type) or a JOSE header, signed with a test key."""
    param = draw(st.integers(0, 255)) & ~3
    if draw(st.booleans()):
        claims = json.loads(jwt_case.claims_json())
        claims.update(draw(st.dictionaries(st.sampled_from(_CLAIM_NAMES), _CLAIM_VALUES, max_size=5)))
        return bytes([param | 1]) + json.dumps(claims).encode()
    header = json.loads(jwt_case.header_json())
    header.update(
        draw(st.dictionaries(st.sampled_from(["alg", "kid", "typ", "crit", "jku", "b64"]), _HEADER_VALUES))
    )
    return bytes([param | 2]) + json.dumps(header).encode()


@st.composite
def _key_set(draw: st.DrawFn) -> bytes:
    """The issuer's JWKS with a few fields of its keys replaced by values of any type, or removed."""
    keys = [
        jwt_case.ISSUER.jwk(alg) for alg in draw(st.lists(st.sampled_from(list(jwt_case.KEYS)), max_size=3))
    ]
    for key in keys:
        for name in draw(st.lists(st.sampled_from([*sorted(key), "use", "crv"]), max_size=3)):
            if draw(st.booleans()):
                key.pop(name, None)
            else:
                key[name] = draw(
                    _VALUES | st.sampled_from(["RSA", "EC", "OKP", "oct", "P-256", "Ed25519", "enc"])
                )
    doc: object = {"keys": keys} if draw(st.integers(0, 9)) else draw(_VALUES)
    return b"\x03" + json.dumps(doc).encode()


@given(_signed() | _key_set() | mutated(corpus("jwt")))
def test_tokens_claims_headers_and_key_sets(data: bytes) -> None:
    targets.TARGETS["jwt"](data)


@pytest.mark.parametrize("where", range(4))
def test_a_token_refused_at_one_location_is_not_refused_from_the_cache_at_its_own(where: int) -> None:
    """(Found while building this fuzz target.) The failed-token cache remembered a refusal by the token alone, so a
    token first sent where only another issuer's rule looks was then refused where its rule looks."""
    token = jwt_case.sign(jwt_case.header_json(), jwt_case.claims_json(iss=jwt_case.OTHER_ISS, aud=None))
    flt = jwt_case.JwtAuthnFilter(jwt_case.JwtAuthnConfig(jwt_case.FILTER.config.providers))
    assert jwt_case._outcome(flt, token, 0) == ("denied", "Jwt issuer is not configured")
    expected = "denied" if where == 0 else "verified"
    assert jwt_case._outcome(flt, token, where)[0] == expected
