"""AuthorizationPolicy in the server sidecar: the AUTHZ-phase filter of inbound routes a policy applies to.

Per request (Istio's order; the tables come from meshbus.bus.config.authz, compiled once per config):

1. The path is normalized as MeshConfig ``pathNormalization`` says (bus/config/authz/normalize.py);
   ``%00`` is answered 400 (``path_normalization_failed``). The normalized path is what the router
   sends upstream, so the application gets the path the policies were matched on. The query string
   is kept, and never matched.
2. CUSTOM: when a CUSTOM rule matches, the workload's provider is asked (an ``async`` hook: other
   requests go on meanwhile); a denial answers with the provider's reply (flag UAEX), an error with
   ``statusOnError`` unless the provider fails open. A CUSTOM rule whose provider is unusable denies.
3. AUDIT, DENY, ALLOW (``Tables.decide``). A denial is 403 ``RBAC: access denied`` with
   ``rbac_access_denied_matched_policy[<rule id>]`` as the access log's response_code_details.
   Decisions are remembered by what the rules read of the request (bus/config/authz/inputs.py): a
   request equal to an earlier one in all of it costs a key and a dict lookup (``_key``; bounded,
   and rested while keys rarely repeat).

The deciding rule, dry-run results, AUDIT marks and the provider's outcome go to the access log
(``filter_state["access_log"]``, shown as the line's ``metadata``; the deciding rule only when the
server keeps an access log, as nothing else reads it) and to the counters of filters/authz_stats.py. The JWT filter (AUTHN phase, before this one) leaves the verified token in
``filter_state["request.auth"]`` (principal, audiences, presenter, claims); without it a request has
no request principal. Routes without a policy have no such filter, so they pay nothing for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from meshbus.bus.config.authz.compile import BAD_CUSTOM_SUFFIX, Compiled, ProviderSpec, describe_check
from meshbus.bus.config.authz.engine import (
    ALLOW_BY_DEFAULT,
    ALLOWED,
    DENIED,
    Decision,
    Request,
    Rule,
    Tables,
)
from meshbus.bus.config.authz.inputs import Inputs, decision_inputs
from meshbus.bus.config.authz.normalize import normalize_path, seen_paths, split_target
from meshbus.proxy.codec.http1 import NO_BODY
from meshbus.proxy.core.flags import UAEX
from meshbus.proxy.core.routing import RequestView
from meshbus.proxy.filters.authz_providers import (
    CLIENT_FACTORIES,
    AuthzClient,
    CheckInput,
    CheckResult,
)
from meshbus.proxy.filters.authz_providers import (
    DENIED as CHECK_DENIED,
)
from meshbus.proxy.filters.authz_providers import (
    ERROR as CHECK_ERROR,
)
from meshbus.proxy.filters.authz_stats import AuthzStats
from meshbus.proxy.filters.chain import (
    AUTHZ as AUTHZ_PHASE,
)
from meshbus.proxy.filters.chain import (
    HOOK_REQUEST_BODY,
    HOOK_REQUEST_HEADERS,
    HOOK_RESPONSE_HEADERS,
    FilterContext,
    HttpFilter,
    LocalReply,
)
from meshbus.proxy.filters.headerops import HeaderOps
from meshbus.proxy.filters.jwt_authn import TokenPrincipal
from meshbus.telemetry.accesslog import NULL_ACCESS_LOG

if TYPE_CHECKING:
    from meshbus.proxy.filters.observe import Observability
    from meshbus.telemetry.metrics import Registry

AUTHORIZATION: Final = "meshbus.filters.http.authz"
AUTH_STATE: Final = "request.auth"
"""filter_state key of the JWT filter's verified token (read here)."""
PRINCIPAL_STATE: Final = "jwt_authn.iss_sub"
"""filter_state key of the JWT filter's `TokenPrincipal` (jwt_authn.REQUEST_PRINCIPAL): the request
principal worked out once per token, good while ``request.auth``'s claims are its ``claims``."""
ACCESS_LOG_STATE: Final = "access_log"
"""filter_state key of the fields filters add to the request's access-log line."""
_BODY_STATE: Final = "authz.body"
_ALLOW_HEADERS_STATE: Final = "authz.downstream"

RBAC_DENIED_BODY: Final = "RBAC: access denied"
_BAD_PATH: Final = LocalReply(400, "bad request\n", details="path_normalization_failed")
_TOO_LARGE: Final = LocalReply(413, "Payload Too Large", flag=UAEX, details="ext_authz_request_too_large")
MAX_CHECK_BODY: Final = 64 * 1024
"""Most body bytes held for a check: the exchange keeps at most this much while it waits (MAX_REPLAY)."""
MEMO_SIZE: Final = 4096
"""Most decisions the filter remembers (see ``AuthzFilter._memo``)."""
MEMO_REST: Final = 16 * MEMO_SIZE
"""Requests decided without the memo after it filled up with more entries than hits (a key that
rarely repeats, e.g. a path with an id in it): the memo costs such requests a key and an insert."""


@dataclass(frozen=True)
class AuthzConfig:
    """What one inbound route enforces: the compiled tables and the mesh settings they read."""

    compiled: Compiled
    dest_port: int = 0
    describe_cache: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def tables(self) -> Tables:
        return self.compiled.tables

    def describe(self) -> dict[str, Any]:
        """JSON-able: the policies in evaluation order (``meshctl authz check`` prints it)."""
        if not self.describe_cache:
            self.describe_cache.update(describe(self.compiled))
        return self.describe_cache


def describe(c: Compiled) -> dict[str, Any]:
    s = c.settings
    steps = []
    for name, rs in c.tables.steps():
        steps.append({"step": name, "rules": [_rule_doc(x) for x in rs.rules]})
    out: dict[str, Any] = {
        "meshConfig": s.source or "(none: defaults)",
        "rootNamespace": s.root_namespace,
        "pathNormalization": s.normalization_name,
        "numTrustedProxies": s.trusted_proxies,
        "policies": [f"{p.metadata.namespace}/{p.metadata.name}" for p in c.policies],
        "defaultAllow": not c.tables.has_allow,
        "steps": steps,
        "problems": list(c.problems),
    }
    if c.provider is not None:
        p = c.provider
        out["provider"] = {"name": p.name, "type": p.kind, "target": p.target, "failOpen": p.fail_open}
    return out


def _rule_doc(rule: Rule) -> dict[str, Any]:
    doc: dict[str, Any] = {"id": rule.id}
    if rule.froms:
        doc["from"] = [[describe_check(c) for c in g] for g in rule.froms]
    if rule.tos:
        doc["to"] = [[describe_check(c) for c in g] for g in rule.tos]
    if rule.when:
        doc["when"] = [describe_check(c) for c in rule.when]
    return doc


def remote_address(xff: str | None, peer: str, trusted: int) -> str:
    """Envoy's trusted client address with ``xff_num_trusted_hops`` = ``trusted``: the ``trusted``-th
    X-Forwarded-For entry from the right, or the peer when there are fewer (or none is trusted)."""
    if trusted <= 0 or not xff:
        return peer
    parts = xff.split(",")
    if len(parts) < trusted:
        return peer
    return parts[-trusted].strip()


class _Body:
    """The request body held for a check (``includeRequestBodyInCheck``)."""

    __slots__ = ("chunks", "done", "limit", "over", "size", "waiter")

    def __init__(self, limit: int) -> None:
        self.chunks: list[bytes] = []
        self.size = 0
        self.limit = limit
        self.done = False
        self.over = False
        self.waiter: Any = None

    def add(self, data: bytes, end: bool) -> None:
        """A chunk of the body (``end``: the last). Past ``limit`` the body is over: held so far, done."""
        if self.done:
            return
        if data:
            room = self.limit - self.size
            if len(data) > room:
                self.chunks.append(data[:room])
                self.size = self.limit
                self.over = True
                self.finish()
                return
            self.chunks.append(data)
            self.size += len(data)
        if end:
            self.finish()

    def finish(self) -> None:
        self.done = True
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)


class AuthzFilter(HttpFilter):
    """Enforces the tables of one inbound route (see the module doc)."""

    def __init__(self, config: AuthzConfig) -> None:
        c = config.compiled
        provider = c.provider
        hooks = HOOK_REQUEST_HEADERS
        if provider is not None and provider.max_request_bytes:
            hooks |= HOOK_REQUEST_BODY
        if provider is not None and bool(getattr(provider.config, "headers_to_downstream_on_allow", None)):
            hooks |= HOOK_RESPONSE_HEADERS
        super().__init__(AUTHORIZATION, AUTHZ_PHASE, 0, hooks)
        self.config = config
        self.tables = c.tables
        self.mode = c.settings.normalization
        self.seen = seen_paths(self.mode)
        self.trusted = c.settings.trusted_proxies
        self.uses_remote_ip = c.uses_remote_ip
        self.uses_dest_ip = c.uses_dest_ip
        self.uses_sni = c.uses_sni
        self.custom = c.tables.custom is not None or c.tables.custom_denied is not None
        self.custom_dry = c.tables.custom_dry_run is not None
        self.provider: ProviderSpec | None = provider
        self.dest_port = config.dest_port
        self._denials: dict[str, LocalReply] = {}
        self._stats: AuthzStats | None = None
        self._stats_lc: object = None
        self._obs: Observability | None = None
        """The telemetry of the server of the listener ``_stats`` was last looked up for (its access log,
        read natively: ProxyServer.access_log is a property over it)."""
        self._client: tuple[Any, AuthzClient] | None = None
        # The memo of decisions: the AUDIT, DENY and ALLOW steps are a pure function of the request
        # attributes the rules read (bus/config/authz/inputs.py), so a request equal to an earlier
        # one in all of them costs a key and a lookup instead of a Request and the rule lookups.
        # Not with CUSTOM rules (their provider is asked per request) nor for tables that read
        # request.auth.audiences or presenter, the destination address or SNI (decision_inputs is
        # then None); claims are keyed by the token they came from. The key_* copies are read per
        # request as the filter's own (native) fields.
        inputs = None if self.custom or self.custom_dry else decision_inputs(c.tables)
        self.memo_on = inputs is not None
        i = inputs if inputs is not None else Inputs()
        self.key_peer = i.peer
        self.key_rp = i.request_principal
        self.key_claims = i.claims
        self.key_ip = i.source_ip
        self.key_host = i.host
        self.key_method = i.method
        self.key_path = i.path
        self.key_headers: tuple[str, ...] = i.headers
        self._memo: dict[tuple[Any, ...], Decision] = {}
        self.memo_hits = 0
        """Hits since the memo was last emptied."""
        self.memo_rest = 0
        """Requests still to decide without the memo (MEMO_REST)."""

    # -- request path ---------------------------------------------------------------------------

    def on_request_headers(self, ctx: FilterContext) -> Any:
        view = ctx.view
        target = view.path
        if "#" in target:  # a fragment is not sent on (Envoy strips it)
            path, query = split_target(target)
            target = view.path = path + query
        q = target.find("?")
        path = target if q < 0 else target[:q]
        norm: str | None = self.seen.get(path)  # a path seen lately: no call (normalize_path's memo)
        if norm is None:
            norm = normalize_path(path, self.mode)
        if not norm:  # None, or "" (refused) from the memo
            return _BAD_PATH
        if norm != path:
            path = norm
            view.path = norm if q < 0 else norm + target[q:]
        if self.memo_on:
            if self.memo_rest:
                self.memo_rest -= 1
            else:
                key = self._key(ctx, path)
                if key is not None:
                    memo = self._memo
                    d = memo.get(key)
                    if d is not None:
                        self.memo_hits += 1
                    else:
                        d = self.tables.decide(self._request(ctx, path, view))
                        if len(memo) >= MEMO_SIZE:
                            self._memo_full()
                        memo[key] = d
                    return self._decided(ctx, d)
        r = self._request(ctx, path, view)
        if self.custom:
            hit = self.tables.custom_match(r)
            if hit is not None:
                if hit.id.endswith(BAD_CUSTOM_SUFFIX):
                    return self._decided(ctx, Decision(False, hit.id, "CUSTOM"))
                return self._ask(ctx, r, hit)
        if self.custom_dry:
            self._custom_dry_run(ctx, r)
        return self._decided(ctx, self.tables.decide(r))

    def _key(self, ctx: FilterContext, path: str) -> tuple[Any, ...] | None:
        """The memo key of this request: the values of what the rules read (in ``_request``'s
        terms), "" for what they do not; the JWT filter's `TokenPrincipal` stands for the token's
        claims. None when the request's identity is not what the JWT filter worked out (no
        TokenPrincipal, or another filter changed the claims): then it is decided in full."""
        rp: Any = None  # the JWT filter's tuple as it is (a typed tuple would be unboxed and boxed anew)
        token: TokenPrincipal | None = None
        if self.key_rp or self.key_claims:
            fs = ctx.filter_state
            auth = fs.get(AUTH_STATE) if fs is not None else None
            if auth is not None:
                known = fs.get(PRINCIPAL_STATE) if fs is not None else None
                if (
                    not isinstance(known, TokenPrincipal)
                    or not isinstance(auth, dict)
                    or auth.get("claims") is not known.claims
                ):
                    return None
                rp = known.iss_sub
                if self.key_claims:
                    token = known
        head = ctx.head
        peer = ""
        ip = ""
        if self.key_peer or self.key_ip:
            dc = ctx.dc
            if self.key_peer:
                peer = dc.peer_principal or ""
            if self.key_ip:
                ip = dc.peer_ip
        path_key = path if self.key_path else ""
        method = head.method if self.key_method else ""
        host = ctx.view.authority if self.key_host else ""
        names = self.key_headers
        n = len(names)
        # one or two header values go in the key itself: no inner tuple to make, hash and compare
        if n == 0:
            return (path_key, method, peer, ip, host, rp, token)
        hdict = head.hdict
        if n == 1:
            return (path_key, method, peer, ip, host, rp, token, hdict.get(names[0]))
        if n == 2:
            return (path_key, method, peer, ip, host, rp, token, hdict.get(names[0]), hdict.get(names[1]))
        return (path_key, method, peer, ip, host, rp, token, tuple([hdict.get(name) for name in names]))

    def _memo_full(self) -> None:
        if self.memo_hits < MEMO_SIZE:  # fewer hits than entries: keys rarely repeat, rest a while
            self.memo_rest = MEMO_REST
        self._memo.clear()
        self.memo_hits = 0

    def _request(self, ctx: FilterContext, path: str, view: RequestView) -> Request:
        # ctx is read once per attribute: it is a Protocol, so each read is a generic lookup
        dc = ctx.dc
        fs = ctx.filter_state
        auth = fs.get(AUTH_STATE) if fs is not None else None
        if auth is not None and not isinstance(auth, dict):
            auth = dict(auth)  # a filter that left another Mapping: Request takes a dict
        head = ctx.head
        peer = dc.peer_ip
        r = Request(dc.peer_principal or "", peer, head.method, view.authority, path, head.hdict, auth)
        if auth is not None:
            known = fs.get(PRINCIPAL_STATE) if fs is not None else None
            if isinstance(known, TokenPrincipal) and auth.get("claims") is known.claims:
                r.known_request_principal(known.iss_sub)
        r.dest_port = self.dest_port
        if self.uses_remote_ip:
            r.remote_ip = remote_address(head.hdict.get("x-forwarded-for"), peer, self.trusted)
        if self.uses_dest_ip:
            sock = dc.connection_info("sockname")
            r.dest_ip = sock[0] if sock else ""
        if self.uses_sni:
            ssl_object = dc.connection_info("ssl_object")
            r.sni = getattr(ssl_object, "meshbus_sni", None) or ""  # tls/contexts.py SNI_ATTRIBUTE
        return r

    def _decided(self, ctx: FilterContext, d: Decision) -> LocalReply | None:
        if d is ALLOW_BY_DEFAULT:
            return None
        stats = self._stats_for(ctx)
        if d.dry_run or d.audit:
            self._marks(ctx, stats, d)
        if not d.action:  # the default allow, with marks
            return None
        stats.decided(d.allowed, d.action, d.policy)
        obs = self._obs
        if obs is None or obs.access_log is NULL_ACCESS_LOG:
            # No access log is kept (the records are not even made, observe.py): nothing reads the
            # fields below. Marks (dry run, AUDIT) and CUSTOM outcomes are logged regardless.
            return None if d.allowed else self._denial(d)
        ready = d.log_fields  # a decision the tables share: its fields made once (engine.Decision)
        fs = ctx.filter_state
        md = fs.get(ACCESS_LOG_STATE) if fs is not None else None
        if md is not None:  # another filter logs too: add ours to its fields
            if ready is not None:
                md.update(ready)
            else:
                md["authz_result"] = ALLOWED if d.allowed else DENIED
                md["authz_policy"] = d.policy
            return None if d.allowed else self._denial(d)
        # the request's own fields: a copy of the shared ones (a later filter may add to them)
        fields = (
            ready.copy()
            if ready is not None
            else {"authz_result": ALLOWED if d.allowed else DENIED, "authz_policy": d.policy}
        )
        if fs is None:  # nothing else logs
            ctx.filter_state = {ACCESS_LOG_STATE: fields}
        else:  # the JWT filter's state only (the usual request with a token)
            fs[ACCESS_LOG_STATE] = fields
        return None if d.allowed else self._denial(d)

    def _denial(self, d: Decision) -> LocalReply:
        reply = self._denials.get(d.policy)
        if reply is None:
            details = f"rbac_access_denied_matched_policy[{d.policy}]"
            reply = self._denials[d.policy] = LocalReply(403, RBAC_DENIED_BODY, details=details)
        return reply

    def _marks(self, ctx: FilterContext, stats: AuthzStats, d: Decision) -> None:
        """Dry-run results and the AUDIT mark: counted and logged, deciding nothing."""
        md = _log_fields(ctx)
        for action, result, policy in d.dry_run:
            stats.decision(action, result, policy, True)
            key = "authz_dry_run_" + action.lower()
            md[key + "_result"] = result
            md[key + "_policy"] = policy or "none"
        if d.audit:
            stats.decision("AUDIT", "audited", d.audit)
            md["authz_audit_policy"] = d.audit

    def _custom_dry_run(self, ctx: FilterContext, r: Request) -> None:
        hit = self.tables.custom_dry_run_match(r)
        md = _log_fields(ctx)
        md["authz_dry_run_custom_result"] = "matched" if hit is not None else "not_matched"
        md["authz_dry_run_custom_policy"] = hit.id if hit is not None else "none"
        self._stats_for(ctx).decision(
            "CUSTOM", "matched" if hit else "not_matched", hit.id if hit else "", True
        )

    async def _ask(self, ctx: FilterContext, r: Request, rule: Rule) -> LocalReply | None:
        """CUSTOM: ask the provider, then (allowed) go on with AUDIT, DENY, ALLOW."""
        p = self.provider
        client = self._client_for(ctx)
        stats = self._stats_for(ctx)
        md = _log_fields(ctx)
        md["ext_authz_policy"] = rule.id
        if p is None or client is None:  # no client for the provider's type in this process
            stats.ext(p.name if p is not None else "", "error")
            md["ext_authz_result"] = "error"
            return LocalReply(
                403 if p is None else p.status_on_error, b"", flag=UAEX, details="ext_authz_error"
            )
        body: bytes | None = None
        partial = False
        if p.max_request_bytes:
            held = await self._body(ctx, client, min(p.max_request_bytes, MAX_CHECK_BODY))
            if held.over and not p.allow_partial:
                stats.ext(p.name, "body_too_large")
                md["ext_authz_result"] = "body_too_large"
                return _TOO_LARGE
            body, partial = b"".join(held.chunks), held.over
        head = ctx.head
        result = await client.check(
            CheckInput(
                head.method,
                ctx.view.path,
                ctx.view.authority,
                head.headers,
                body,
                partial=partial,
                source_ip=r.source_ip,
                principal=r.principal,
            )
        )
        if result.kind == CHECK_DENIED:
            stats.ext(p.name, "denied")
            md["ext_authz_result"] = "denied"
            return LocalReply(
                result.status, result.body, result.headers, flag=UAEX, details="ext_authz_denied"
            )
        if result.kind == CHECK_ERROR:
            md["ext_authz_error"] = result.reason
            if not p.fail_open:
                stats.ext(p.name, "error")
                md["ext_authz_result"] = "error"
                return LocalReply(p.status_on_error, b"", flag=UAEX, details="ext_authz_error")
            stats.ext(p.name, "failed_open")
            md["ext_authz_result"] = "failed_open"
        else:
            stats.ext(p.name, "ok")
            md["ext_authz_result"] = "ok"
            self._allowed(ctx, result)
        if self.custom_dry:
            self._custom_dry_run(ctx, r)
        return self._decided(ctx, self.tables.decide(r))

    async def _body(self, ctx: FilterContext, client: AuthzClient, limit: int) -> _Body:
        held = _Body(limit)
        if ctx.head.body == NO_BODY:  # complete at its head
            held.finish()
            return held
        if ctx.bytes_in or ctx.req_done:
            # Body bytes arrived before this request's turn (pipelining): the exchange holds them.
            replay = ctx.replay
            for chunk in replay or ():
                held.add(chunk, False)
            if replay is None:
                held.over = True
                held.finish()
            elif ctx.req_done:
                held.add(b"", True)
        if not held.done:
            fs = ctx.filter_state
            if fs is None:
                fs = ctx.filter_state = {}
            fs[_BODY_STATE] = held
            held.waiter = client.body_waiter()
            await held.waiter
        return held

    def on_request_body(self, ctx: FilterContext, data: bytes, end: bool) -> Any:
        fs = ctx.filter_state
        held = fs.get(_BODY_STATE) if fs is not None else None
        if held is not None:
            held.add(data, end)
        return None

    def _allowed(self, ctx: FilterContext, result: CheckResult) -> None:
        if result.upstream_set or result.upstream_add or result.upstream_remove:
            ops = HeaderOps(result.upstream_set, result.upstream_add, result.upstream_remove)
            ctx.req_ops = ops if ctx.req_ops is None else ctx.req_ops.then(ops)
        if result.downstream:
            fs = ctx.filter_state
            if fs is None:
                fs = ctx.filter_state = {}
            fs[_ALLOW_HEADERS_STATE] = result.downstream

    def on_response_headers(self, ctx: FilterContext) -> LocalReply | None:
        fs = ctx.filter_state
        extra = fs.get(_ALLOW_HEADERS_STATE) if fs is not None else None
        if extra and not ctx.is_local:
            ctx.resp_headers.extend(extra)
        return None

    # -- per server -----------------------------------------------------------------------------

    def _stats_for(self, ctx: FilterContext) -> AuthzStats:
        lc = ctx.ctx
        stats = self._stats
        if stats is not None and self._stats_lc is lc:  # a listener's server keeps its registry
            return stats
        registry: Registry = lc.server.registry
        if stats is None or stats.registry is not registry:
            stats = self._stats = AuthzStats(registry)
        self._stats_lc = lc
        self._obs = lc.server.observe
        return stats

    def _client_for(self, ctx: FilterContext) -> AuthzClient | None:
        server = ctx.ctx.server
        held = self._client
        if held is not None and held[0] is server:
            return held[1]
        p = self.provider
        factory = CLIENT_FACTORIES.get(p.kind) if p is not None else None
        if p is None or factory is None:
            return None
        client = factory(p, server)
        self._client = (server, client)
        return client


def _log_fields(ctx: FilterContext) -> dict[str, str]:
    fs = ctx.filter_state
    if fs is None:
        fs = ctx.filter_state = {}
    md: dict[str, str] | None = fs.get(ACCESS_LOG_STATE)
    if md is None:
        md = fs[ACCESS_LOG_STATE] = {}
    return md
