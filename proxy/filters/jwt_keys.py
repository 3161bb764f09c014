"""JSON Web Key Sets -> the public keys a JWT may be verified with, and which algorithms each allows.

Keys are parsed once per config version (``jwt_authn.JwtAuthnConfig``), never per request. Only
asymmetric keys are taken: RSA (RS256/384/512, PS256/384/512), EC on the curve its algorithm names
(P-256 ES256, P-384 ES384, P-521 ES512) and OKP (Ed25519/Ed448, EdDSA). A symmetric (``oct``) key is
left out with a problem noted: a JWKS is public, so an HMAC secret in one is a secret no more, and
refusing HS* outright is what makes "HMAC with a public key" (the algorithm-confusion attack)
impossible rather than merely unlikely. A key whose ``alg`` names one algorithm allows only that
one; ``use: enc`` keys are left out. Parsing goes through PyJWT's ``PyJWK`` (cryptography underneath).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

RSA_ALGS: Final = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
EC_ALGS: Final = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
OKP_CURVES: Final = frozenset({"Ed25519", "Ed448"})
ALLOWED_ALGS: Final = RSA_ALGS | frozenset(EC_ALGS.values()) | {"EdDSA"}
"""Every algorithm a token may name; ``none`` and HS* are not among them."""


@dataclass(frozen=True, slots=True)
class VerifyKey:
    kid: str | None
    algs: frozenset[str]
    key: Any
    """A cryptography public key object (what ``jwt.decode`` takes)."""

    def fits(self, alg: str, kid: str | None) -> bool:
        """Whether a token with header ``alg``/``kid`` may be checked with this key (jwt_verify_lib's
        rule: a key with a kid is tried only for tokens with the same kid or none)."""
        return alg in self.algs and (kid is None or self.kid is None or self.kid == kid)


def _algs_for(jwk: dict[str, Any]) -> frozenset[str]:
    kty, crv, named = jwk.get("kty"), jwk.get("crv"), jwk.get("alg")
    if not isinstance(named, str | None) or not isinstance(crv, str | None):
        return frozenset()  # a list or object where a name belongs: no key of ours
    if kty == "RSA":
        allowed = RSA_ALGS
    elif kty == "EC":
        alg = EC_ALGS.get(str(crv))
        allowed = frozenset({alg}) if alg else frozenset()
    elif kty == "OKP":
        allowed = frozenset({"EdDSA"}) if crv in OKP_CURVES else frozenset()
    else:
        return frozenset()
    if named is None:
        return allowed
    return allowed & {named}


def parse_jwks(text: str) -> tuple[tuple[VerifyKey, ...], list[str]]:
    """(keys, problems) of a JWKS document; a key that cannot be used is left out and named in
    ``problems``. Raises ValueError when the text is not a key set at all."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"jwks is not JSON: {exc}") from None
    except RecursionError:
        raise ValueError("jwks is not JSON: arrays or objects nested too deeply") from None
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ValueError('jwks must be a JSON object with a "keys" list')
    keys: list[VerifyKey] = []
    problems: list[str] = []
    for i, jwk in enumerate(data["keys"]):
        where = f"keys[{i}]"
        if not isinstance(jwk, dict):
            problems.append(f"{where}: not a JSON object")
            continue
        if jwk.get("kty") == "oct":
            problems.append(f"{where}: symmetric (oct) keys are refused: HMAC tokens are not accepted")
            continue
        if jwk.get("use", "sig") != "sig":
            continue  # an encryption key in the same set: not for signatures
        algs = _algs_for(jwk)
        if not algs:
            problems.append(f"{where}: key type {jwk.get('kty')!r} / alg {jwk.get('alg')!r} is not supported")
            continue
        import jwt  # here: see jwt_authn.py (PyJWT loads cryptography)

        try:
            # PyJWK checks the key's parameters; its own algorithm guess does not matter: ``algs``
            # says which header algorithms this key may verify.
            key = jwt.PyJWK(jwk, algorithm=sorted(algs)[0]).key
        except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
            problems.append(f"{where}: {exc}")
            continue
        kid = jwk.get("kid")
        keys.append(VerifyKey(kid if isinstance(kid, str) else None, algs, key))
    return tuple(keys), problems
