"""AuthorizationPolicy decisions as compiled tables: a request costs a few lookups (sans-IO).

`compile.py` turns the policies that apply to one workload into `Tables`; the proxy's filter (and
``meshctl authz explain``) fills a `Request` and asks. Istio's evaluation order (security/v1beta1
authorization_policy.proto) is kept, with Envoy's RBAC filter doing each step as Istio configures it:

1. CUSTOM: `Tables.custom_match` says whether a CUSTOM rule matches; only then is the external
   authorizer asked (the caller does that), and a denial there is final.
2. AUDIT: the first matching AUDIT rule marks the request (it never decides).
3. DENY: any matching DENY rule denies.
4. ALLOW: with no (enforced) ALLOW policy on the workload, allow; a matching ALLOW rule allows;
   otherwise deny (the deciding policy is then ``none``, as Envoy logs it).

Policies annotated ``istio.io/dry-run: "true"`` are evaluated beside their enforced kind (a DENY
dry run when the request reaches the DENY step, an ALLOW dry run at the ALLOW step) and only reported.
Within a step, rules are tried in the order of their ids (``ns[<ns>]-policy[<name>]-rule[<i>]``),
as Envoy's policy map is ordered, so the rule that decides is the one Envoy would name.

Matching follows Istio's generator (pilot/pkg/security/authz/model): rules OR'ed; within a rule,
any ``from``, any ``to`` and every ``when``; within a source or operation, every field; ``values``
OR'ed, ``notValues`` negate the OR of theirs. An attribute the request lacks (no mTLS principal, no
JWT, no header) matches no value, so its ``not`` side matches.

Speed: each rule set is indexed on the attribute most of its rules pin to exact values (the peer
principal or the path): a request looks its value up in a dict and tries only the rules filed
under it plus those no index covers, in id order. Hot module: compiled with the request path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from meshbus.bus.config.authz.matchers import IpMatch, StrMatch

SPIFFE: Final = "spiffe://"

ALLOWED: Final = "allowed"
DENIED: Final = "denied"


class Request:
    """The attributes one decision reads. ``principal`` is the peer's verified SPIFFE ID ("" without
    mTLS); ``path`` is normalized and without query; ``headers`` has lowercase names, duplicates
    joined with ","; ``auth`` is the JWT filter's ``request.auth`` state (``principal``,
    ``audiences``, ``presenter``, ``claims``) or None. Both are dicts (not any Mapping): the compiled
    checks then read them with the dict API's fast paths."""

    __slots__ = (
        "_host",
        "_parts",
        "_req_principal",
        "auth",
        "dest_ip",
        "dest_port",
        "headers",
        "host",
        "method",
        "path",
        "principal",
        "remote_ip",
        "sni",
        "source_ip",
    )

    def __init__(
        self,
        principal: str,
        source_ip: str,
        method: str,
        host: str,
        path: str,
        headers: dict[str, str],
        auth: dict[str, Any] | None = None,
        *,
        remote_ip: str = "",
        dest_ip: str = "",
        dest_port: int = 0,
        sni: str = "",
    ) -> None:
        self.principal = principal
        self.source_ip = source_ip
        self.method = method
        self.host = host
        self.path = path
        self.headers = headers
        self.auth = auth
        self.remote_ip = remote_ip or source_ip
        self.dest_ip = dest_ip
        self.dest_port = dest_port
        self.sni = sni
        self._host: str | None = None
        self._parts: tuple[str, str, str] | None = None
        self._req_principal: tuple[str, str] | None = None

    def principal_id(self) -> str:
        """The principal as policies write it: without ``spiffe://`` ("" when there is none)."""
        p = self.principal
        return p[9:] if p.startswith(SPIFFE) else p

    def host_lower(self) -> str:
        h = self._host
        if h is None:
            h = self._host = self.host.lower()
        return h

    def peer_parts(self) -> tuple[str, str, str]:
        """(trust domain, namespace, service account) of the principal; "" parts when it has none
        or is not of the ``/ns/<ns>/sa/<sa>`` shape."""
        parts = self._parts
        if parts is None:
            pid = self.principal_id()
            segs = pid.split("/")
            if len(segs) == 5 and segs[1] == "ns" and segs[3] == "sa":
                parts = (segs[0], segs[2], segs[4])
            else:
                parts = (segs[0] if pid else "", "", "")
            self._parts = parts
        return parts

    def claim(self, path: tuple[str, ...]) -> Any:
        auth = self.auth
        if auth is None:
            return None
        value: Any = auth.get("claims")
        for key in path:
            # dict first: the JWT filter's claims are one, and an ABC isinstance costs far more
            if not isinstance(value, dict) and not isinstance(value, Mapping):
                return None
            value = value.get(key)
        return value

    def known_request_principal(self, rp: tuple[str, str] | None) -> None:
        """``request_principal``'s answer worked out beforehand (by the JWT filter, once per token)."""
        self._req_principal = rp

    def request_principal(self) -> tuple[str, str] | None:
        """(iss, sub) of the JWT (the claims, else the ``principal`` split at its last ``/``), or
        None without one; worked out once per request, however many rules ask."""
        rp = self._req_principal
        if rp is None:
            auth = self.auth
            if auth is None:
                return None
            claims = auth.get("claims")
            iss: Any = None
            sub: Any = None
            if isinstance(claims, dict) or isinstance(claims, Mapping):
                iss, sub = claims.get("iss"), claims.get("sub")
            if not isinstance(iss, str) or not isinstance(sub, str):
                principal = auth.get("principal")
                if not isinstance(principal, str) or "/" not in principal:
                    return None
                iss, _, sub = principal.rpartition("/")
            rp = self._req_principal = (iss, sub)
        return rp


# -- checks: one field of a source, an operation or a condition -------------------------------------


class Check:
    """A positive test of one attribute against the values of one field (``values`` OR'ed)."""

    __slots__ = ("what",)

    def __init__(self, what: str) -> None:
        self.what = what  # the field as written, for explanations ("principals", "when request.headers[x]")

    def test(self, r: Request) -> bool:
        raise NotImplementedError


class Not(Check):
    """``notValues``: none of them matches."""

    __slots__ = ("inner",)

    def __init__(self, inner: Check) -> None:
        super().__init__("not " + inner.what)
        self.inner = inner

    def test(self, r: Request) -> bool:
        return not self.inner.test(r)


class Never(Check):
    """An ALLOW rule meshbus cannot evaluate, or an empty policy (``spec: {}``): never matches."""

    __slots__ = ()

    def test(self, r: Request) -> bool:
        return False


class MatchCheck(Check):
    """A check whose values are one StrMatch; subclasses say which attribute it reads."""

    __slots__ = ("m",)

    def __init__(self, what: str, m: StrMatch) -> None:
        super().__init__(what)
        self.m = m


class PrincipalCheck(MatchCheck):
    __slots__ = ()

    def test(self, r: Request) -> bool:
        pid = r.principal_id()
        return bool(pid) and self.m.match(pid)


class NamespaceCheck(MatchCheck):
    __slots__ = ()

    def test(self, r: Request) -> bool:
        ns = r.peer_parts()[1]
        return bool(ns) and self.m.match(ns)


class TrustDomainCheck(MatchCheck):
    __slots__ = ()

    def test(self, r: Request) -> bool:
        td = r.peer_parts()[0]
        return bool(td) and self.m.match(td)


class ServiceAccountCheck(Check):
    """``ns/sa`` pairs (a bare ``sa`` is in the policy's namespace), any trust domain."""

    __slots__ = ("pairs",)

    def __init__(self, what: str, pairs: frozenset[tuple[str, str]]) -> None:
        super().__init__(what)
        self.pairs = pairs

    def test(self, r: Request) -> bool:
        _td, ns, sa = r.peer_parts()
        return bool(sa) and (ns, sa) in self.pairs


class RequestPrincipalCheck(Check):
    """JWT ``iss/sub`` values, matched as Istio does: split at the last ``/``, ``iss`` and ``sub`` each
    matched on the token's claims (a ``*`` on either side: any non-empty value)."""

    __slots__ = ("pairs",)

    def __init__(self, what: str, pairs: tuple[tuple[StrMatch, StrMatch], ...]) -> None:
        super().__init__(what)
        self.pairs = pairs

    def test(self, r: Request) -> bool:
        rp = r.request_principal()
        if rp is None:
            return False
        iss, sub = rp
        for mi, ms in self.pairs:
            if mi.match(iss) and ms.match(sub):
                return True
        return False


_SOURCE_IP: Final = 0
_REMOTE_IP: Final = 1
_DEST_IP: Final = 2


class IpCheck(Check):
    __slots__ = ("m", "which")

    def __init__(self, what: str, which: int, m: IpMatch) -> None:
        super().__init__(what)
        self.which = which
        self.m = m

    def test(self, r: Request) -> bool:
        w = self.which
        ip = r.source_ip if w == _SOURCE_IP else (r.remote_ip if w == _REMOTE_IP else r.dest_ip)
        return self.m.match(ip)


class HostCheck(MatchCheck):
    __slots__ = ()

    def test(self, r: Request) -> bool:
        return self.m.match(r.host_lower())


class MethodCheck(MatchCheck):
    __slots__ = ()

    def test(self, r: Request) -> bool:
        return self.m.match(r.method)


class PathCheck(MatchCheck):
    __slots__ = ()

    def test(self, r: Request) -> bool:
        return self.m.match(r.path)


class PortCheck(Check):
    __slots__ = ("ports",)

    def __init__(self, what: str, ports: frozenset[int]) -> None:
        super().__init__(what)
        self.ports = ports

    def test(self, r: Request) -> bool:
        return r.dest_port in self.ports


class HeaderCheck(Check):
    __slots__ = ("m", "name")

    def __init__(self, what: str, name: str, m: StrMatch) -> None:
        super().__init__(what)
        self.name = name
        self.m = m

    def test(self, r: Request) -> bool:
        value = r.headers.get(self.name)
        if value is None:
            return False
        m = self.m
        return m.present or m.match(value)  # "*" is Envoy's present_match: an empty value counts


class SniCheck(MatchCheck):
    __slots__ = ()

    def test(self, r: Request) -> bool:
        return self.m.match(r.sni)


class ClaimCheck(Check):
    """A JWT claim (nested with ``[a][b]``): a string value, or any string of a list value."""

    __slots__ = ("m", "path")

    def __init__(self, what: str, path: tuple[str, ...], m: StrMatch) -> None:
        super().__init__(what)
        self.path = path
        self.m = m

    def test(self, r: Request) -> bool:
        return _any_string(r.claim(self.path), self.m)


class AuthListCheck(Check):
    """``request.auth.audiences`` / ``request.auth.presenter`` from the JWT filter's state."""

    __slots__ = ("key", "m")

    def __init__(self, what: str, key: str, m: StrMatch) -> None:
        super().__init__(what)
        self.key = key
        self.m = m

    def test(self, r: Request) -> bool:
        auth = r.auth
        return auth is not None and _any_string(auth.get(self.key), self.m)


def _any_string(value: Any, m: StrMatch) -> bool:
    if isinstance(value, str):
        return m.match(value)
    if isinstance(value, list | tuple):
        for v in value:
            if isinstance(v, str) and m.match(v):
                return True
    return False


# -- rules and rule sets -----------------------------------------------------------------------------


class Rule:
    """One policy rule: any source, any operation, every condition. ``froms``/``tos`` empty: any."""

    __slots__ = (
        "action",
        "dry_run",
        "flat",
        "froms",
        "id",
        "name",
        "namespace",
        "number",
        "order",
        "tos",
        "when",
    )

    def __init__(
        self,
        rule_id: str,
        action: str,
        froms: tuple[tuple[Check, ...], ...],
        tos: tuple[tuple[Check, ...], ...],
        when: tuple[Check, ...],
        *,
        namespace: str = "",
        name: str = "",
        number: int = 0,
        dry_run: bool = False,
    ) -> None:
        self.id = rule_id
        self.action = action
        self.froms = froms
        self.tos = tos
        self.when = when
        self.namespace = namespace
        self.name = name
        self.number = number
        self.dry_run = dry_run
        self.order = 0  # position in its rule set (set by RuleSet)
        # At most one source and one operation (the usual rule): then every check of the rule must
        # pass, and one loop over them all decides (None: try each source and operation).
        self.flat: tuple[Check, ...] | None = (
            when + (froms[0] if froms else ()) + (tos[0] if tos else ())
            if len(froms) <= 1 and len(tos) <= 1
            else None
        )

    def matches(self, r: Request) -> bool:
        flat = self.flat
        if flat is not None:
            for c in flat:
                if not c.test(r):
                    return False
            return True
        for c in self.when:
            if not c.test(r):
                return False
        froms = self.froms
        if froms and not _any_all(froms, r):
            return False
        tos = self.tos
        return not tos or _any_all(tos, r)

    def failed(self, r: Request) -> list[tuple[str, Check]]:
        """Why this rule does not match ``r`` (explain): (where, check) of each check that fails;
        [] when it matches."""
        out = [("", c) for c in self.when if not c.test(r)]
        for label, group in (("from", self.froms), ("to", self.tos)):
            if group and not _any_all(group, r):
                for i, checks in enumerate(group):
                    out.extend((f"{label}[{i}]", c) for c in checks if not c.test(r))
        return out


def _any_all(groups: tuple[tuple[Check, ...], ...], r: Request) -> bool:
    for checks in groups:
        ok = True
        for c in checks:
            if not c.test(r):
                ok = False
                break
        if ok:
            return True
    return False


# What a rule is filed under in its RuleSet: the most selective attribute it pins, so that a request
# tries only the rules its own values can satisfy.
GUARD_PRINCIPAL: Final = 0  # every source names exact principals
GUARD_PATH: Final = 1  # every operation names exact paths
GUARD_SEGMENT: Final = 2  # every operation's paths start with a whole first segment ("/api/")
GUARD_HEADER: Final = 3  # a condition needs a request header (values, not notValues)
GUARD_METHOD: Final = 4  # every operation names exact methods
GUARDS: Final = ("principal", "path", "path segment", "header", "method")


class RuleSet:
    """The rules of one step in id order, each filed under a guard (see GUARD_*) or with the rest.

    ``first`` looks the request's principal, path, first path segment, headers and method up in the
    guard tables and tries only the rules found there and the unguarded ones, each list in id order,
    keeping the earliest match: the rule a scan of every rule in order would find (Envoy's choice).
    """

    __slots__ = (
        "by_header",
        "by_method",
        "by_path",
        "by_principal",
        "by_segment",
        "guarded",
        "rest",
        "rules",
    )

    def __init__(self, rules: list[Rule]) -> None:
        ordered = sorted(rules, key=lambda x: x.id)
        for i, rule in enumerate(ordered):
            rule.order = i
        self.rules: tuple[Rule, ...] = tuple(ordered)
        tables: list[dict[str, list[Rule]]] = [{}, {}, {}, {}, {}]
        rest: list[Rule] = []
        for rule in ordered:
            guard = rule_guard(rule)
            if guard is None:
                rest.append(rule)
                continue
            for key in guard[1]:
                tables[guard[0]].setdefault(key, []).append(rule)
        frozen = [{k: tuple(v) for k, v in t.items()} for t in tables]
        self.by_principal, self.by_path, self.by_segment, self.by_header, self.by_method = frozen
        self.rest: tuple[Rule, ...] = tuple(rest)
        self.guarded = len(rest) < len(ordered)

    def first(self, r: Request) -> Rule | None:
        """The first rule (in id order) that matches ``r``, or None."""
        if not self.guarded:
            for rule in self.rules:
                if rule.matches(r):
                    return rule
            return None
        # Each table is tried only when the request has an entry there (the usual request finds
        # one rule, or none, in one table).
        rest = self.rest
        best = _earliest(rest, r, None) if rest else None
        found: tuple[Rule, ...] | None
        if self.by_principal:
            found = self.by_principal.get(r.principal_id())
            if found is not None:
                best = _earliest(found, r, best)
        if self.by_path:
            found = self.by_path.get(r.path)
            if found is not None:
                best = _earliest(found, r, best)
        if self.by_segment:
            path = r.path
            i = path.find("/", 1)
            if i > 0:
                found = self.by_segment.get(path[: i + 1])
                if found is not None:
                    best = _earliest(found, r, best)
        if self.by_header:
            headers = r.headers
            for name, candidates in self.by_header.items():
                if name in headers:
                    best = _earliest(candidates, r, best)
        if self.by_method:
            found = self.by_method.get(r.method)
            if found is not None:
                best = _earliest(found, r, best)
        return best

    def __len__(self) -> int:
        return len(self.rules)


def _earliest(candidates: tuple[Rule, ...], r: Request, best: Rule | None) -> Rule | None:
    """The first of ``candidates`` (in id order) that matches, if it comes before ``best``."""
    limit = best.order if best is not None else len(candidates) + (1 << 30)
    for rule in candidates:
        if rule.order >= limit:
            break
        if rule.matches(r):
            return rule
    return best


def rule_guard(rule: Rule) -> tuple[int, frozenset[str]] | None:
    """(GUARD_*, the keys it is filed under) for ``rule``, or None when it pins nothing indexable."""
    keys = _pinned(rule.froms, PrincipalCheck, exact=True)
    if keys is not None:
        return GUARD_PRINCIPAL, keys
    keys = _pinned(rule.tos, PathCheck, exact=True)
    if keys is not None:
        return GUARD_PATH, keys
    keys = _segments(rule.tos)
    if keys is not None:
        return GUARD_SEGMENT, keys
    for c in rule.when:
        if isinstance(c, HeaderCheck):
            return GUARD_HEADER, frozenset((c.name,))
    keys = _pinned(rule.tos, MethodCheck, exact=True)
    if keys is not None:
        return GUARD_METHOD, keys
    return None


def _pinned(groups: tuple[tuple[Check, ...], ...], kind: type, *, exact: bool) -> frozenset[str] | None:
    """The exact values of ``kind`` checks every group has (a rule matches only under one of them)."""
    if not groups:
        return None
    keys: set[str] = set()
    for checks in groups:
        found = None
        for c in checks:
            if isinstance(c, kind) and isinstance(c, MatchCheck) and c.m.only_exact():
                found = c.m.exact
        if found is None:
            return None
        keys |= found
    return frozenset(keys)


def _segments(groups: tuple[tuple[Check, ...], ...]) -> frozenset[str] | None:
    """First path segments (``/api/``) every operation's paths start with, when each value has one."""
    if not groups:
        return None
    keys: set[str] = set()
    for checks in groups:
        found: set[str] | None = None
        for c in checks:
            if isinstance(c, PathCheck):
                segs = {_segment(v) for v in c.m.text}
                if "" not in segs:
                    found = segs
        if found is None:
            return None
        keys |= found
    return frozenset(keys)


def _segment(value: str) -> str:
    """``/api/v1/*`` -> ``/api/``; "" when the value does not pin a whole first segment."""
    literal = value.split("*", 1)[0].split("{", 1)[0]
    if value.startswith("*") or not literal.startswith("/"):
        return ""
    i = literal.find("/", 1)
    return literal[: i + 1] if i > 0 else ""


# -- the decision ------------------------------------------------------------------------------------


class Decision:
    """The outcome of the AUDIT, DENY and ALLOW steps. ``policy``: the rule id that decided ("none":
    denied because no ALLOW rule matched; "" allowed because the workload has no ALLOW policy).
    ``action``: the step that decided (DENY / ALLOW, "" for the default allow). ``audit``: the AUDIT rule
    that matched. ``dry_run``: (action, result, rule id or "") per dry-run step evaluated."""

    __slots__ = ("action", "allowed", "audit", "dry_run", "log_fields", "policy")

    def __init__(
        self,
        allowed: bool,
        policy: str,
        action: str,
        audit: str = "",
        dry_run: tuple[tuple[str, str, str], ...] = (),
    ) -> None:
        self.allowed = allowed
        self.policy = policy
        self.action = action
        self.audit = audit
        self.dry_run = dry_run
        self.log_fields: dict[str, str] | None = None
        """The access-log fields of an enforced decision, made once for the decisions the tables
        share (``logged``); a reader copies them (None: build them)."""

    def logged(self) -> Decision:
        """This decision with its ``log_fields`` made (for one shared by every request it decides)."""
        if self.action:
            self.log_fields = {
                "authz_result": ALLOWED if self.allowed else DENIED,
                "authz_policy": self.policy,
            }
        return self

    def with_marks(self, audit: str, dry_run: tuple[tuple[str, str, str], ...]) -> Decision:
        if not audit and not dry_run:
            return self
        return Decision(self.allowed, self.policy, self.action, audit, dry_run)


ALLOW_BY_DEFAULT: Final = Decision(True, "", "")
DENY_NO_MATCH: Final = Decision(False, "none", "ALLOW").logged()


class Tables:
    """Every rule that applies to one workload, by step. Built by compile.py; read-only afterwards.

    ``custom`` (enforced CUSTOM rules of the workload's one usable provider), ``custom_dry_run``,
    ``custom_denied`` (CUSTOM rules that deny because their provider is unknown, unusable or one of
    several: Istio's ``-deny-due-to-bad-CUSTOM-action``), ``audit``, ``deny``/``deny_dry_run``,
    ``allow``/``allow_dry_run``; ``has_allow`` says an enforced ALLOW policy exists (then an
    unmatched request is denied). ``provider`` is the CUSTOM rules' provider (compile.ProviderSpec).
    """

    __slots__ = (
        "allow",
        "allow_decisions",
        "allow_dry_run",
        "audit",
        "custom",
        "custom_denied",
        "custom_dry_run",
        "deny",
        "deny_decisions",
        "deny_dry_run",
        "has_allow",
        "marks",
        "provider",
    )

    def __init__(
        self,
        *,
        custom: RuleSet | None = None,
        custom_dry_run: RuleSet | None = None,
        custom_denied: RuleSet | None = None,
        audit: RuleSet | None = None,
        deny: RuleSet | None = None,
        deny_dry_run: RuleSet | None = None,
        allow: RuleSet | None = None,
        allow_dry_run: RuleSet | None = None,
        has_allow: bool = False,
        provider: Any = None,
    ) -> None:
        self.custom = custom
        self.custom_dry_run = custom_dry_run
        self.custom_denied = custom_denied
        self.audit = audit
        self.deny = deny
        self.deny_dry_run = deny_dry_run
        self.allow = allow
        self.allow_dry_run = allow_dry_run
        self.has_allow = has_allow
        self.provider = provider
        self.marks = audit is not None or deny_dry_run is not None or allow_dry_run is not None
        # One shared Decision per deciding rule: the common request allocates nothing.
        self.deny_decisions = {
            x.id: Decision(False, x.id, "DENY").logged() for x in (deny.rules if deny else ())
        }
        self.allow_decisions = {
            x.id: Decision(True, x.id, "ALLOW").logged() for x in (allow.rules if allow else ())
        }

    def custom_match(self, r: Request) -> Rule | None:
        """The CUSTOM rule that sends ``r`` to the provider, if any (a rule of ``custom_denied`` too:
        the caller denies those without asking)."""
        bad = self.custom_denied
        if bad is not None:
            hit = bad.first(r)
            if hit is not None:
                return hit
        custom = self.custom
        return custom.first(r) if custom is not None else None

    def custom_dry_run_match(self, r: Request) -> Rule | None:
        dry = self.custom_dry_run
        return dry.first(r) if dry is not None else None

    def decide(self, r: Request) -> Decision:
        """AUDIT, DENY, then ALLOW (CUSTOM is the caller's, before this)."""
        if not self.marks:
            deny = self.deny
            if deny is not None:
                hit = deny.first(r)
                if hit is not None:
                    return self.deny_decisions[hit.id]
            if not self.has_allow:
                return ALLOW_BY_DEFAULT
            allow = self.allow
            hit = allow.first(r) if allow is not None else None
            return DENY_NO_MATCH if hit is None else self.allow_decisions[hit.id]
        return self._decide_marked(r)

    def _decide_marked(self, r: Request) -> Decision:
        audit = ""
        if self.audit is not None:
            hit = self.audit.first(r)
            if hit is not None:
                audit = hit.id
        dry: list[tuple[str, str, str]] = []
        if self.deny_dry_run is not None:
            hit = self.deny_dry_run.first(r)
            dry.append(("DENY", DENIED if hit is not None else ALLOWED, hit.id if hit is not None else ""))
        deny = self.deny
        if deny is not None:
            hit = deny.first(r)
            if hit is not None:
                return self.deny_decisions[hit.id].with_marks(audit, tuple(dry))
        if self.allow_dry_run is not None:
            hit = self.allow_dry_run.first(r)
            dry.append(("ALLOW", ALLOWED if hit is not None else DENIED, hit.id if hit is not None else ""))
        if not self.has_allow:
            return ALLOW_BY_DEFAULT.with_marks(audit, tuple(dry))
        allow = self.allow
        hit = allow.first(r) if allow is not None else None
        decided = DENY_NO_MATCH if hit is None else self.allow_decisions[hit.id]
        return decided.with_marks(audit, tuple(dry))

    def steps(self) -> list[tuple[str, RuleSet]]:
        """(step name, rule set) in evaluation order, for listings."""
        out: list[tuple[str, RuleSet]] = []
        for name, rs in (
            ("CUSTOM (denied: bad provider)", self.custom_denied),
            ("CUSTOM", self.custom),
            ("CUSTOM (dry run)", self.custom_dry_run),
            ("AUDIT", self.audit),
            ("DENY (dry run)", self.deny_dry_run),
            ("DENY", self.deny),
            ("ALLOW (dry run)", self.allow_dry_run),
            ("ALLOW", self.allow),
        ):
            if rs is not None:
                out.append((name, rs))
        return out
