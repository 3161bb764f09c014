"""JWT authentication (Istio RequestAuthentication, Envoy's jwt_authn filter) in the inbound sidecar.

Per request (``JwtAuthnFilter.on_request_headers``):

1. Tokens are looked for where the rules say (``fromHeaders`` with their prefix, ``fromParams``,
   ``fromCookies``; by default ``Authorization: Bearer`` then ``?access_token``). No token anywhere:
   the request goes on without identity (an AuthorizationPolicy with ``requestPrincipals`` is what
   requires one, as in Istio).
2. A token found is checked by the rule of its ``iss`` that reads that location (none: 401 "Jwt
   issuer is not configured"); with the rule's keys, for the algorithm its header names (RS*, PS*,
   ES*, EdDSA only: ``none`` and HS* are refused, see jwt_keys.py), by PyJWT; ``exp``/``nbf`` with 60
   s of clock skew; ``aud`` against ``audiences`` when the rule lists some. Any failure answers 401
   with ``www-authenticate: Bearer realm=..., error="invalid_token"`` and Envoy's words for the reason,
   also in the access log (``jwt_authn_access_denied{...}``).
3. The first verified token becomes ``ctx.filter_state["request.auth"]``: ``principal``
   (``<iss>/<sub>``), ``audiences``, ``presenter`` (``azp``) and ``claims`` (the payload; ``scope``,
   ``permission`` and the rule's ``spaceDelimitedClaims`` split into lists, as Istio does for
   authorization). The authorization filter and the access log read it there.
4. Upstream, the token header is removed unless ``forwardOriginalToken``; ``outputPayloadToHeader``
   and ``outputClaimToHeaders`` are set from the verified token, and removed from requests that
   carry none, so a client cannot forge them.

Verified tokens are cached, as Envoy's ``jwt_cache_config`` does, so a repeated token costs a dict
lookup, not a signature check:

- the key is the whole token string (header, payload and signature: a token with the same claims
  and another signature is a different key, verified on its own), the value its verified identity
  and the provider that verified it (a hit counts only at a location that provider reads);
- an entry answers only while a fresh check would pass: from ``nbf`` - skew until ``exp`` + skew
  (a token without ``exp``: ``NO_EXP_CACHE_TTL`` at most), on the config's clock;
- bounded (``CACHE_SIZE``), least recently used first out; tokens longer than ``CACHEABLE_TOKEN``
  are checked every time rather than kept;
- the cache lives on the config object, which the build reuses while the proxy's
  RequestAuthentications are unchanged (proxy/build/inbound_filters.py). A changed one (a JWKS
  rotation arrives that way: discovery inlines the fetched keys) compiles a new config, which
  keeps only the entries of providers that are the same in every field, key set text included
  (``JwtAuthnConfig.adopt``): a provider whose keys changed starts with no entry;
- an entry carries what a hit applies, worked out when it is cached (``JwtAuthnConfig._ready``):
  the header operations for a token in the config's one token header, and the request principal
  ``(iss, sub)`` the authorization filter reads (``REQUEST_PRINCIPAL``); they go with their entry,
  so a new config's are its own;
- the header value of the token verified last and its entry (``last_value``, ``last_hit``, per
  config): a client repeating its token costs a string comparison and the validity check, not a
  slice and a hash of the token.

Failures are cached briefly (``FAILED_CACHE_TTL``, ``FAILED_CACHE_SIZE``, a table of their own so
junk tokens cannot push verified ones out), and only those a repeat cannot change while the config
stands (bad signature, no such key, unknown issuer, malformed, expired, wrong audience): a client
replaying a bad token then costs a lookup, not a signature check each time. "Not yet valid" and
"keys missing" may pass later and are never cached; a new config drops every cached failure, so a
key published after a token failed is used at once.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qsl

from meshbus.proxy.filters.chain import AUTHN, HOOK_REQUEST_HEADERS, FilterContext, HttpFilter, LocalReply
from meshbus.proxy.filters.headerops import HeaderOps
from meshbus.proxy.filters.jwt_keys import ALLOWED_ALGS, VerifyKey

JWT_AUTHN: Final = "meshbus.filters.http.jwt_authn"
REQUEST_AUTH: Final = "request.auth"
"""The ``ctx.filter_state`` key of the verified identity (the authorization filter's input)."""
REQUEST_PRINCIPAL: Final = "jwt_authn.iss_sub"
"""The ``ctx.filter_state`` key of the token's `TokenPrincipal`: the request principal as the
authorization filter reads it from the claims (``engine.Request.request_principal``), worked out once
per token. Set only when the claims have string ``iss`` and ``sub``; a reader uses it only while the
identity's ``claims`` is that same dict object (the cached claims are never edited: every request of
the token shares them)."""

CLOCK_SKEW: Final = 60.0
CACHE_SIZE: Final = 4096
FAILED_CACHE_SIZE: Final = 1024
FAILED_CACHE_TTL: Final = 60.0
CACHEABLE_TOKEN: Final = 8192
"""Longer tokens are checked every time rather than kept (a cache of them would be a memory sink)."""
NO_EXP_CACHE_TTL: Final = 300.0
ALWAYS_SPACE_DELIMITED: Final = ("scope", "permission")

# Envoy's (jwt_verify_lib) words for each failure: operators search for them.
MISSING_KEYS: Final = "Jwks remote fetch is failed"
UNKNOWN_ISSUER: Final = "Jwt issuer is not configured"
BAD_FORMAT: Final = "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
BAD_HEADER: Final = "Jwt header is an invalid JSON"
BAD_PAYLOAD: Final = "Jwt payload is an invalid JSON"
BAD_ALG: Final = "Jwt header [alg] field value is invalid"
NO_KEY: Final = "Jwks doesn't have key to match kid or alg from Jwt"
BAD_SIGNATURE: Final = "Jwt verification fails"
EXPIRED: Final = "Jwt is expired"
NOT_YET_VALID: Final = "Jwt not yet valid"
BAD_AUDIENCE: Final = "Audiences in Jwt are not allowed"
BAD_CLAIMS: Final = "Jwt has invalid claims"
_RETRYABLE: Final = frozenset({NOT_YET_VALID, MISSING_KEYS})
"""Failures that may pass later under the same config: never cached."""

# (kind, name, prefix): where one rule reads tokens
HEADER, PARAM, COOKIE = 0, 1, 2
Location = tuple[int, str, str]
DEFAULT_LOCATIONS: Final[tuple[Location, ...]] = (
    (HEADER, "authorization", "Bearer "),
    (PARAM, "access_token", ""),
)


@dataclass(frozen=True, slots=True)
class JwtProvider:
    """One jwtRule, compiled: what it accepts, where it looks, what it hands upstream."""

    issuer: str
    audiences: frozenset[str]
    keys: tuple[VerifyKey, ...] | None = field(compare=False)
    """None: the rule's keys are not available (not fetched yet, or past their maximum age)."""
    locations: tuple[Location, ...] = DEFAULT_LOCATIONS
    forward: bool = False
    payload_header: str | None = None
    claim_headers: tuple[tuple[str, str], ...] = ()
    """(header, claim) pairs; a nested claim is named with dots (``group.id``)."""
    space_delimited: frozenset[str] = frozenset(ALWAYS_SPACE_DELIMITED)
    jwks: str = ""
    """The key set text ``keys`` came from: two providers are equal (``==``) only with the same keys."""
    source: str = field(default="", compare=False)
    """``<namespace>/<name> jwtRules[i]``: for config dumps and logs."""

    def describe(self) -> dict[str, object]:
        return {
            "source": self.source,
            "issuer": self.issuer,
            "audiences": sorted(self.audiences),
            "keys": None if self.keys is None else len(self.keys),
            "locations": [_describe_location(loc) for loc in self.locations],
            "forwardOriginalToken": self.forward,
        }


def _describe_location(loc: Location) -> str:
    kind, name, prefix = loc
    if kind == HEADER:
        return f"header {name}" + (f" (prefix {prefix!r})" if prefix else "")
    return f"{'param' if kind == PARAM else 'cookie'} {name}"


class _Failed(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class TokenPrincipal:
    """One verified token's ``claims`` (the dict object of its identity) and ``(iss, sub)`` from them.
    One per cached token and handed on as it is, so a reader may key on it: it hashes by identity,
    and a key holding it keeps it alive (no other token's can take its place)."""

    __slots__ = ("claims", "iss_sub")

    def __init__(self, claims: dict[str, Any], iss_sub: tuple[str, str]) -> None:
        self.claims = claims
        # Any: a tuple-typed attribute is stored unboxed in the compiled build, and each read would
        # box a new tuple; readers hand this one on and compare it.
        self.iss_sub: Any = iss_sub


@dataclass
class _Verified:
    provider: int
    auth: dict[str, Any]
    payload_segment: str
    valid_from: float
    """``nbf`` - skew (-inf without ``nbf``)."""
    valid_until: float
    """``exp`` + skew (now + NO_EXP_CACHE_TTL without ``exp``)."""
    ops: dict[Location, HeaderOps | None] = field(default_factory=dict)
    """What goes upstream when this token alone came at a location (and no output header did)."""
    one_ready: bool = False
    """This token's provider reads the config's one token header (``JwtAuthnConfig.one_header``):
    ``one_ops`` is then what goes upstream for a token there (without forged output headers to
    remove), worked out when the entry was cached, so a hit costs no lookup keyed by location."""
    one_ops: HeaderOps | None = None
    principal: TokenPrincipal | None = None
    """The authorization filter's request principal (``REQUEST_PRINCIPAL``), or None when the
    claims lack a string ``iss`` or ``sub`` (the principal is then worked out from ``principal``)."""


HeaderEntry = tuple[str, int, Location, tuple[int, ...]]
"""(prefix lowercased, its length, the location, the providers reading it)."""
HeaderLocations = tuple[tuple[str, tuple[HeaderEntry, ...]], ...]
"""Per header name, its entries."""


class JwtAuthnConfig:
    """The JWT rules of one workload (all RequestAuthentications that select it), compiled, with the
    verified-token cache. Built by proxy/build/inbound_filters.py; ``sources`` are the resources it
    came from (the next build reuses this object, cache and all, while they are the same objects)."""

    def __init__(
        self,
        providers: tuple[JwtProvider, ...],
        sources: tuple[object, ...] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.providers = providers
        self.sources = sources
        self.clock = clock
        self.verified: dict[str, _Verified] = {}
        """token -> its verified identity, least recently used first (a hit moves its token to the
        end; a plain dict, whose lookups are the compiled code's fastest)."""
        self.cache_size = CACHE_SIZE
        self.last_value = ""
        self.last_hit: _Verified | None = None
        """The ``one_header`` value whose token was verified (or found in the cache) last, and its
        entry: a client repeating its token costs a string comparison, not a hash of the token."""
        self.newest: _Verified | None = None
        """The entry last put at the end of ``verified`` (a hit on it has nothing to move)."""
        self.failed: dict[str, tuple[str, float, tuple[int, ...]]] = {}
        """token -> (Envoy's words, until when, the providers that read it where it failed): the
        failure of one location's rules says nothing of another's (a token refused at the wrong
        header may be valid at its own)."""
        # Counters as attributes, not a dict: each request bumps one (``stats`` shows them).
        self.n_verified = 0
        self.n_cache_hits = 0
        self.n_denied = 0
        self.n_no_token = 0
        headers: dict[str, dict[str, list[int]]] = {}
        params: dict[str, list[int]] = {}
        cookies: dict[str, list[int]] = {}
        for i, p in enumerate(providers):
            for kind, name, prefix in p.locations:
                if kind == HEADER:
                    headers.setdefault(name, {}).setdefault(prefix, []).append(i)
                elif kind == PARAM:
                    params.setdefault(name, []).append(i)
                else:
                    cookies.setdefault(name, []).append(i)
        self.headers: HeaderLocations = tuple(
            (
                name,
                tuple(
                    (prefix.lower(), len(prefix), (HEADER, name, prefix), tuple(idx))
                    for prefix, idx in by.items()
                ),
            )
            for name, by in headers.items()
        )
        self.params: dict[str, tuple[int, ...]] = {k: tuple(v) for k, v in params.items()}
        self.cookies: dict[str, tuple[int, ...]] = {k: tuple(v) for k, v in cookies.items()}
        # The usual shape (every rule reads ``Authorization: Bearer``, maybe ``?access_token``): a
        # request carries at most one header token, found without building a list (the filter).
        one = self.headers[0] if len(self.headers) == 1 and not self.cookies else None
        self.one_header: tuple[str, HeaderEntry] | None = (
            (one[0], one[1][0]) if one is not None and len(one[1]) == 1 else None
        )
        # one_header's name and location as fields of their own: the last-token shortcut reads
        # them without unpacking (and type-checking) the nested tuple
        self.one_name = self.one_header[0] if self.one_header is not None else ""
        self.one_location: Location = (
            self.one_header[1][2] if self.one_header is not None else DEFAULT_LOCATIONS[0]
        )
        outputs: set[str] = set()
        for p in providers:
            if p.payload_header:
                outputs.add(p.payload_header.lower())
            outputs.update(h.lower() for h, _ in p.claim_headers)
        self.output_headers: frozenset[str] = frozenset(outputs)

    @property
    def stats(self) -> dict[str, int]:
        """Tokens verified, cache hits (verified or failed), requests denied and without a token."""
        return {
            "verified": self.n_verified,
            "cache_hits": self.n_cache_hits,
            "denied": self.n_denied,
            "no_token": self.n_no_token,
        }

    def describe(self) -> list[dict[str, object]]:
        return [p.describe() for p in self.providers]

    def _ready(self, v: _Verified) -> _Verified:
        """``v`` with what a cache hit applies worked out now (``one_ops``, ``principal``)."""
        one = self.one_header
        if one is not None and v.provider in one[1][3]:
            v.one_ready = True
            v.one_ops = self.upstream_ops({}, ((one[1][2], v),))
        claims = v.auth["claims"]
        iss, sub = claims.get("iss"), claims.get("sub")
        if isinstance(iss, str) and isinstance(sub, str):
            v.principal = TokenPrincipal(claims, (iss, sub))
        return v

    def adopt(self, old: JwtAuthnConfig) -> None:
        """Take over ``old``'s verified tokens of the providers this config has unchanged (equal in
        every field, the key set text included), so a change to one RequestAuthentication (a JWKS
        rotation) drops only the entries of the providers it changed. Failures are not taken over.
        A rule without ``issuer`` keeps none: it took its tokens for want of a rule of their issuer,
        which this config may now have."""
        where: dict[int, int] = {}
        for j, p in enumerate(old.providers):
            if p.issuer:
                for i, q in enumerate(self.providers):
                    if q == p:
                        where[j] = i
        if not where:
            return
        for token, v in old.verified.items():  # oldest first: the order of use carries over
            to = where.get(v.provider)
            if to is not None:
                self.verified[token] = self.newest = self._ready(
                    _Verified(to, v.auth, v.payload_segment, v.valid_from, v.valid_until)
                )

    # -- extraction
    def tokens(self, hdict: Mapping[str, str], target: str) -> list[tuple[str, Location, tuple[int, ...]]]:
        """(token, location, providers reading that location) for every token the request carries."""
        found: list[tuple[str, Location, tuple[int, ...]]] = []
        for name, entries in self.headers:
            value = hdict.get(name)
            if value is None:
                continue
            for prefix, plen, location, readers in entries:
                if plen and value[:plen].lower() != prefix:
                    continue
                token = value[plen:].strip()
                if token:
                    found.append((token, location, readers))
                    break
        if self.params and "?" in target:
            query = target.partition("?")[2]
            for name, value in parse_qsl(query, keep_blank_values=False):
                idx = self.params.get(name)
                if idx is not None and value:
                    found.append((value, (PARAM, name, ""), idx))
        if self.cookies:
            cookie = hdict.get("cookie")
            if cookie:
                for part in cookie.split(";"):
                    name, sep, value = part.strip().partition("=")
                    idx = self.cookies.get(name)
                    if sep and idx is not None and value:
                        found.append((value.strip('"'), (COOKIE, name, ""), idx))
        return found

    # -- verification
    def verify(self, token: str, readers: tuple[int, ...]) -> _Verified:
        """The verified identity of ``token`` (read at a location of the providers ``readers``), from
        the cache when it is there; raises _Failed with Envoy's words."""
        now = self.clock()
        verified = self.verified
        hit = verified.get(token)
        if hit is not None:
            if hit.valid_from <= now < hit.valid_until:
                if hit.provider in readers:
                    if hit is not self.newest:
                        del verified[token]
                        verified[token] = hit
                        self.newest = hit
                    self.n_cache_hits += 1
                    return hit
            else:
                del verified[token]  # a fresh check would not pass (expired): do it, for its reason
        failed = self.failed
        bad = failed.get(token)
        if bad is not None:
            if now < bad[1] and bad[2] == readers:
                self.n_cache_hits += 1
                raise _Failed(bad[0])
            del failed[token]
        try:
            result = self._verify(token, readers, now)
        except _Failed as exc:
            if exc.message not in _RETRYABLE and len(token) <= CACHEABLE_TOKEN:
                if len(failed) >= FAILED_CACHE_SIZE:
                    del failed[next(iter(failed))]  # the oldest
                failed[token] = (exc.message, now + FAILED_CACHE_TTL, readers)
            raise
        self.n_verified += 1
        self._ready(result)
        if len(token) <= CACHEABLE_TOKEN:
            if len(verified) >= self.cache_size:
                del verified[next(iter(verified))]  # the least recently used
            verified[token] = result
            self.newest = result
        return result

    def _verify(self, token: str, readers: tuple[int, ...], now: float) -> _Verified:
        parts = token.split(".")
        if len(parts) != 3:
            raise _Failed(BAD_FORMAT)
        header = _segment_json(parts[0], BAD_HEADER)
        claims = _segment_json(parts[1], BAD_PAYLOAD)
        iss = claims.get("iss")
        pi = self._provider_for(iss if isinstance(iss, str) else "", readers)
        provider = self.providers[pi]
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in ALLOWED_ALGS:
            raise _Failed(BAD_ALG)
        if provider.keys is None:
            raise _Failed(MISSING_KEYS)
        kid = header.get("kid")
        kid = kid if isinstance(kid, str) else None
        candidates = [k for k in provider.keys if k.fits(alg, kid)]
        if not candidates:
            raise _Failed(NO_KEY)
        import jwt  # here, not at module level: PyJWT pulls in cryptography (~10 MB) for workers with no JWT rule

        payload: dict[str, Any] | None = None
        for key in candidates:
            try:
                payload = jwt.decode(
                    token,
                    key.key,
                    algorithms=[alg],
                    audience=list(provider.audiences) or None,
                    leeway=CLOCK_SKEW,
                    # Time claims are checked below, on the config's clock (tests move it).
                    options={
                        "verify_aud": bool(provider.audiences),
                        "verify_iat": False,
                        "verify_iss": False,
                        "verify_exp": False,
                        "verify_nbf": False,
                    },
                )
                break
            except jwt.InvalidSignatureError:
                continue
            except (jwt.InvalidAudienceError, jwt.MissingRequiredClaimError):
                raise _Failed(BAD_AUDIENCE) from None
            except jwt.DecodeError:
                raise _Failed(BAD_FORMAT) from None
            except (jwt.PyJWTError, ValueError, TypeError):
                raise _Failed(BAD_CLAIMS) from None
        if payload is None:
            raise _Failed(BAD_SIGNATURE)
        exp = _time_claim(payload, "exp")
        nbf = _time_claim(payload, "nbf")
        if exp is not None and now >= exp + CLOCK_SKEW:
            raise _Failed(EXPIRED)
        if nbf is not None and now < nbf - CLOCK_SKEW:
            raise _Failed(NOT_YET_VALID)
        until = now + NO_EXP_CACHE_TTL if exp is None else exp + CLOCK_SKEW
        since = float("-inf") if nbf is None else nbf - CLOCK_SKEW
        return _Verified(pi, _identity(payload, provider), parts[1], since, until)

    def _provider_for(self, iss: str, readers: tuple[int, ...]) -> int:
        fallback = None
        for i in readers:
            p = self.providers[i].issuer
            if p == iss:
                return i
            if not p and fallback is None:
                fallback = i  # a rule without issuer (jwksUri only) takes any issuer
        if fallback is None:
            raise _Failed(UNKNOWN_ISSUER)
        return fallback

    # -- what goes upstream
    def upstream_ops(
        self, hdict: Mapping[str, str], used: Iterable[tuple[Location, _Verified]]
    ) -> HeaderOps | None:
        remove: set[str] = {h for h in self.output_headers if h in hdict}
        sets: dict[str, str] = {}
        for (kind, name, _prefix), v in used:
            p = self.providers[v.provider]
            if kind == HEADER and not p.forward:
                remove.add(name)
            if p.payload_header:
                sets[p.payload_header.lower()] = v.payload_segment
            for header, claim in p.claim_headers:
                value = _claim_text(_lookup(v.auth["claims"], claim))
                if value is not None:
                    sets[header.lower()] = value
        if not remove and not sets:
            return None
        return HeaderOps(set=tuple(sets.items()), remove=frozenset(remove))


def _segment_json(segment: str, failure: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError, RecursionError):  # RecursionError: arrays nested thousands deep
        raise _Failed(failure) from None
    if not isinstance(value, dict):
        raise _Failed(failure)
    return value


def _time_claim(payload: Mapping[str, Any], name: str) -> float | None:
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:  # NaN
        raise _Failed(BAD_CLAIMS)
    try:
        return float(value)
    except OverflowError:  # an integer past float's range (1e308): no time at all
        raise _Failed(BAD_CLAIMS) from None


def _identity(payload: dict[str, Any], provider: JwtProvider) -> dict[str, Any]:
    aud = payload.get("aud")
    audiences = (
        [aud]
        if isinstance(aud, str)
        else [a for a in aud if isinstance(a, str)]
        if isinstance(aud, list)
        else []
    )
    claims = dict(payload)
    for name in provider.space_delimited:
        value = claims.get(name)
        if isinstance(value, str):
            claims[name] = value.split()
    azp = payload.get("azp")
    return {
        "principal": f"{payload.get('iss', '')}/{payload.get('sub', '')}",
        "audiences": audiences,
        "presenter": azp if isinstance(azp, str) else None,
        "claims": claims,
    }


def _lookup(claims: Mapping[str, Any], name: str) -> Any:
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _claim_text(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
        return ",".join(str(v) for v in value)
    return None


def _realm(ctx: FilterContext) -> str:
    path = ctx.view.path.partition("?")[0]
    text = f"http://{ctx.view.authority}{path}"
    return "".join(c for c in text if c >= " " and c not in '"\\\x7f')


class JwtAuthnFilter(HttpFilter):
    """Verifies request tokens against the workload's RequestAuthentication rules (module doc)."""

    def __init__(self, config: JwtAuthnConfig) -> None:
        # AUTHN phase, last in it: Istio's own authentication runs after AUTHN-phase plugins.
        super().__init__(JWT_AUTHN, AUTHN, -(2**31), HOOK_REQUEST_HEADERS)
        self.config = config

    def on_request_headers(self, ctx: FilterContext) -> Any:
        config = self.config
        head = ctx.head
        hdict = head.hdict
        one = config.one_header
        if one is not None and (not config.params or "?" not in head.target):
            # At most one token, in the one header the rules read: no lists, no loop.
            value = hdict.get(config.one_name)
            if value is not None and value == config.last_value:
                # The header of the token verified last (a client repeating its token): its entry
                # without slicing the token out and hashing it, while a fresh check would pass.
                last = config.last_hit
                now = config.clock()
                if last is not None and last.valid_from <= now < last.valid_until:
                    config.n_cache_hits += 1
                    return _identified(ctx, config, hdict, config.one_location, last, True)
            _name, (prefix, plen, location, readers) = one
            token = ""
            # the prefix as configured (``Bearer ``) first: the usual spelling costs no lowercase copy
            if value is not None and (value.startswith(location[2]) or value[:plen].lower() == prefix):
                token = value[plen:].strip()
            if not token:
                return _no_token(ctx, config, hdict)
            try:
                verified = config.verify(token, readers)
            except _Failed as exc:
                config.n_denied += 1
                return _unauthorized(ctx, exc.message)
            if value is not None and len(token) <= CACHEABLE_TOKEN:
                config.last_value = value
                config.last_hit = verified
            return _identified(ctx, config, hdict, location, verified, True)
        found = config.tokens(hdict, head.target)
        if not found:
            return _no_token(ctx, config, hdict)
        used: list[tuple[Location, _Verified]] = []
        seen: set[str] = set()
        for token, location, readers in found:
            if token in seen:
                continue
            seen.add(token)
            try:
                used.append((location, config.verify(token, readers)))
            except _Failed as exc:
                config.n_denied += 1
                return _unauthorized(ctx, exc.message)
        if len(used) == 1:
            return _identified(ctx, config, hdict, *used[0])
        _set_identity(ctx, used[0][1])
        _add_ops(ctx, config.upstream_ops(hdict, used))
        return None


def _no_token(ctx: FilterContext, config: JwtAuthnConfig, hdict: Mapping[str, str]) -> None:
    config.n_no_token += 1
    if config.output_headers and not config.output_headers.isdisjoint(hdict):
        _add_ops(ctx, config.upstream_ops(hdict, ()))
    return None


def _set_identity(ctx: FilterContext, verified: _Verified) -> None:
    auth = dict(verified.auth)  # a copy: a filter that edits it edits its request's only
    principal = verified.principal
    state = ctx.filter_state
    if state is None:
        if principal is None:
            ctx.filter_state = {REQUEST_AUTH: auth}
        else:
            ctx.filter_state = {REQUEST_AUTH: auth, REQUEST_PRINCIPAL: principal}
    else:
        state[REQUEST_AUTH] = auth
        if principal is None:
            state.pop(REQUEST_PRINCIPAL, None)
        else:
            state[REQUEST_PRINCIPAL] = principal


def _identified(
    ctx: FilterContext,
    config: JwtAuthnConfig,
    hdict: Mapping[str, str],
    location: Location,
    verified: _Verified,
    at_one: bool = False,
) -> None:
    """One verified token: its identity for the filters after, and what goes upstream. ``at_one``:
    the token came in the config's one token header (``location`` is ``one_header``'s)."""
    _set_identity(ctx, verified)
    outputs = config.output_headers
    if at_one and verified.one_ready and (not outputs or outputs.isdisjoint(hdict)):
        _add_ops(ctx, verified.one_ops)  # the usual request: worked out when the token was cached
        return None
    if not outputs or outputs.isdisjoint(hdict):
        # No forged output header to remove: what goes upstream is the token's own, worked out
        # once per location (a repeated token costs a lookup here too).
        cached = verified.ops
        if location in cached:
            ops = cached[location]
        else:
            ops = cached[location] = config.upstream_ops(hdict, ((location, verified),))
    else:
        ops = config.upstream_ops(hdict, ((location, verified),))
    _add_ops(ctx, ops)
    return None


def _unauthorized(ctx: FilterContext, message: str) -> LocalReply:
    return LocalReply(
        401,
        message,
        (("www-authenticate", f'Bearer realm="{_realm(ctx)}", error="invalid_token"'),),
        details=f"jwt_authn_access_denied{{{message.replace(' ', '_')}}}",
    )


def _add_ops(ctx: FilterContext, ops: HeaderOps | None) -> None:
    if ops is None:
        return
    prev = ctx.req_ops
    ctx.req_ops = ops if prev is None else prev.then(ops)
