"""AuthorizationPolicy + MeshConfig -> the decision tables of one workload (sans-IO).

Which policies apply (Istio): a policy in the workload's namespace without a selector; one whose
``selector.matchLabels`` the workload's labels satisfy; the same for policies in the root namespace
(MeshConfig ``rootNamespace``, default ``istio-system``), which apply to workloads of every
namespace. A policy with ``targetRef(s)`` is for gateways and waypoints and never applies to a sidecar.

How each field compiles follows istio/istio pilot/pkg/security/authz (model/generator.go, builder):
principals match the peer's SPIFFE ID without ``spiffe://``; namespaces, service accounts and trust
domains its parts; requestPrincipals the JWT's ``iss``/``sub``; hosts the Host header
case-insensitively, as sent (a Host with a port needs an entry with that port, as in Istio). A
condition meshbus cannot evaluate (``experimental.envoy.filters.*``) makes an ALLOW rule match
nothing and is left out of a DENY, AUDIT or CUSTOM rule, which then matches more (fails closed):
Istio treats a rule it cannot generate the same way. Each such case is listed in ``problems``.

Used by the proxy (proxy/filters/authz.py, per config version) and by ``meshctl authz``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from meshbus.bus.config.authz.engine import (
    _DEST_IP,
    _REMOTE_IP,
    _SOURCE_IP,
    AuthListCheck,
    Check,
    ClaimCheck,
    HeaderCheck,
    HostCheck,
    IpCheck,
    MethodCheck,
    NamespaceCheck,
    Never,
    Not,
    PathCheck,
    PortCheck,
    PrincipalCheck,
    RequestPrincipalCheck,
    Rule,
    RuleSet,
    ServiceAccountCheck,
    SniCheck,
    Tables,
    TrustDomainCheck,
)
from meshbus.bus.config.authz.matchers import IpMatch, StrMatch, str_match
from meshbus.bus.config.authz.normalize import BASE, MODES
from meshbus.bus.config.mesh_config import ExtensionProvider
from meshbus.bus.config.proxy_kinds import AuthorizationPolicy, MeshConfig, Resource
from meshbus.bus.config.security import Condition, Operation, Source
from meshbus.bus.config.security import Rule as RuleSpec

DEFAULT_ROOT_NAMESPACE: Final = "istio-system"
DRY_RUN_ANNOTATION: Final = "istio.io/dry-run"
BAD_CUSTOM_SUFFIX: Final = "-deny-due-to-bad-CUSTOM-action"
DEFAULT_EXT_AUTHZ_TIMEOUT: Final = 600.0  # Istio's default (pilot/pkg/security/authz/builder/extauthz.go)
HTTP_PROVIDER: Final = "envoyExtAuthzHttp"
PROVIDER_KINDS: Final = ("envoyExtAuthzHttp", "envoyExtAuthzGrpc", "meshbusAuthz")
"""ExtensionProvider fields that make a provider an authorizer (the others are telemetry sinks)."""


class MeshConfigError(ValueError):
    """More than one MeshConfig where there must be one."""


@dataclass(frozen=True, slots=True)
class MeshSettings:
    """What authorization reads from the mesh's one MeshConfig (defaults when there is none)."""

    root_namespace: str = DEFAULT_ROOT_NAMESPACE
    normalization: int = BASE
    normalization_name: str = "BASE"
    trusted_proxies: int = 0
    providers: Mapping[str, ExtensionProvider] = field(default_factory=dict)
    source: str = ""
    """``namespace/name`` of the MeshConfig read ("" for the defaults)."""


def mesh_config_of(resources: Iterable[Resource]) -> MeshConfig | None:
    """The one MeshConfig among ``resources``; raises MeshConfigError naming them when there are several."""
    found = [r for r in resources if isinstance(r, MeshConfig)]
    if len(found) > 1:
        names = ", ".join(f"{r.metadata.namespace}/{r.metadata.name}" for r in found)
        raise MeshConfigError(f"meshbus: a mesh has one MeshConfig, found {len(found)}: {names}")
    return found[0] if found else None


def mesh_settings(mesh: MeshConfig | None) -> MeshSettings:
    if mesh is None:
        return MeshSettings()
    spec = mesh.spec
    norm = spec.path_normalization.normalization if spec.path_normalization is not None else "BASE"
    topo = spec.default_config.gateway_topology if spec.default_config is not None else None
    return MeshSettings(
        root_namespace=spec.root_namespace,
        normalization=MODES[norm],
        normalization_name="BASE" if norm == "DEFAULT" else norm,
        trusted_proxies=topo.num_trusted_proxies if topo is not None else 0,
        providers={p.name: p for p in spec.extension_providers},
        source=f"{mesh.metadata.namespace}/{mesh.metadata.name}",
    )


@dataclass(frozen=True, slots=True)
class Workload:
    """The workload a sidecar serves: where it runs, its labels, the port its app listens on."""

    namespace: str
    labels: Mapping[str, str] = field(default_factory=dict)
    port: int = 0


def applies(policy: AuthorizationPolicy, workload: Workload, root_namespace: str) -> bool:
    spec = policy.spec
    if spec.target_ref is not None or spec.target_refs:
        return False  # for gateways and waypoints (Gateway API): never a sidecar's
    ns = policy.metadata.namespace
    if ns != workload.namespace and ns != root_namespace:
        return False
    sel = spec.selector.match_labels if spec.selector is not None else {}
    return all(workload.labels.get(k) == v for k, v in sel.items())


def applicable(
    resources: Iterable[Resource], workload: Workload, settings: MeshSettings
) -> list[AuthorizationPolicy]:
    """The AuthorizationPolicies that apply to ``workload``, root namespace first, then by namespace/name."""
    found = [
        r
        for r in resources
        if isinstance(r, AuthorizationPolicy) and applies(r, workload, settings.root_namespace)
    ]
    root = settings.root_namespace
    return sorted(found, key=lambda p: (p.metadata.namespace != root, p.metadata.namespace, p.metadata.name))


def parse_bool(text: str) -> bool | None:
    """Go's strconv.ParseBool, as Istio reads ``istio.io/dry-run``; None when it is not a boolean."""
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    return None


def is_dry_run(policy: AuthorizationPolicy) -> bool:
    value = policy.metadata.annotations.get(DRY_RUN_ANNOTATION)
    return value is not None and parse_bool(value) is True


def describe_check(check: Check) -> str:
    """A check as a person reads it: ``paths: /books/*, /health``, ``not principals: ...``."""
    inner = check.inner if isinstance(check, Not) else check
    m = getattr(inner, "m", None)
    values: list[str] | tuple[str, ...] | None = getattr(m, "text", None)
    if values is None:
        items = getattr(inner, "pairs", None) or getattr(inner, "ports", None)
        if items is None:
            return check.what
        values = sorted(
            "/".join(p) if isinstance(p, tuple) and all(isinstance(x, str) for x in p) else str(p)
            for p in items
        )
    return f"{check.what}: {', '.join(values)}"


def rule_id(namespace: str, name: str, i: int) -> str:
    """Envoy's policy name for a rule, as the access log and ``meshctl authz`` show it."""
    return f"ns[{namespace}]-policy[{name}]-rule[{i}]"


# -- providers ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """A CUSTOM provider as the proxy calls it: the common settings, and its own config (``config``:
    the MeshConfig model of its kind, e.g. mesh_config.ExtAuthzHttp)."""

    name: str
    kind: str
    config: object
    host: str = ""
    port: int = 0
    timeout: float = DEFAULT_EXT_AUTHZ_TIMEOUT
    fail_open: bool = False
    status_on_error: int = 403
    max_request_bytes: int = 0
    """0: the body is not sent (``includeRequestBodyInCheck`` unset)."""
    allow_partial: bool = False
    target: str = ""
    """Where the proxy sends checks (its cluster name), set by the resolver."""


def provider_spec(provider: ExtensionProvider, namespace_hint: str) -> ProviderSpec | None:
    """The ProviderSpec of an authorizer provider (None for a telemetry provider)."""
    for kind in PROVIDER_KINDS:
        cfg = getattr(provider, _attr(kind))
        if cfg is None:
            continue
        status = getattr(cfg, "status_on_error", None)
        timeout = getattr(cfg, "timeout", None)
        body = getattr(cfg, "include_request_body_in_check", None)
        service = getattr(cfg, "service", "")
        ns, _, host = service.rpartition("/")
        return ProviderSpec(
            name=provider.name,
            kind=kind,
            config=cfg,
            host=_fqdn(host, ns or namespace_hint),
            port=int(getattr(cfg, "port", 0) or 0),
            timeout=DEFAULT_EXT_AUTHZ_TIMEOUT if timeout is None else float(timeout),
            fail_open=bool(getattr(cfg, "fail_open", False)),
            status_on_error=int(status) if status else 403,
            max_request_bytes=body.max_request_bytes if body is not None else 0,
            allow_partial=body.allow_partial_message if body is not None else False,
        )
    return None


def _fqdn(host: str, namespace: str) -> str:
    host = host.lower().rstrip(".")
    if not host or "." in host or ":" in host:
        return host
    return f"{host}.{namespace}.svc.cluster.local"


def _attr(kind: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in kind)


# -- compiling ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Compiled:
    """The tables of one workload and what went into them."""

    tables: Tables
    policies: tuple[AuthorizationPolicy, ...]
    settings: MeshSettings
    workload: Workload
    provider: ProviderSpec | None = None
    problems: tuple[str, ...] = ()
    uses_remote_ip: bool = False
    uses_dest_ip: bool = False
    uses_sni: bool = False


Resolver = Callable[[ProviderSpec], str | None]
"""Where to send a provider's checks (e.g. the proxy's cluster name for its service), or None when
it cannot be reached: then its CUSTOM rules deny."""


def compile_workload(
    resources: Sequence[Resource],
    workload: Workload,
    *,
    usable_kinds: Iterable[str] = (HTTP_PROVIDER,),
    resolve: Resolver | None = None,
) -> Compiled | None:
    """The tables for ``workload`` from all ``resources`` (MeshConfig included); None when no
    AuthorizationPolicy applies to it. Raises MeshConfigError when there are several MeshConfigs."""
    settings = mesh_settings(mesh_config_of(resources))
    policies = applicable(resources, workload, settings)
    if not policies:
        return None
    return compile_policies(policies, workload, settings, usable_kinds=usable_kinds, resolve=resolve)


def compile_policies(
    policies: Sequence[AuthorizationPolicy],
    workload: Workload,
    settings: MeshSettings,
    *,
    usable_kinds: Iterable[str] = (HTTP_PROVIDER,),
    resolve: Resolver | None = None,
) -> Compiled:
    c = _Compiler(workload)
    groups: dict[tuple[str, bool], list[Rule]] = {}
    custom: dict[str, list[Rule]] = {}  # provider -> enforced CUSTOM rules
    custom_dry: dict[str, list[Rule]] = {}
    has_allow = False
    for policy in policies:
        action = policy.spec.action
        dry = is_dry_run(policy)
        rules = c.policy_rules(policy, dry)
        if action == "CUSTOM":
            name = policy.spec.provider.name if policy.spec.provider is not None else ""
            (custom_dry if dry else custom).setdefault(name, []).extend(rules)
            continue
        if action == "AUDIT" and dry:
            continue  # a dry run marks nothing (Istio's shadow rules have no AUDIT result)
        if action == "ALLOW" and not dry:
            has_allow = True
        groups.setdefault((action, dry), []).extend(rules)
    provider, custom_ok, custom_bad, dry_ok = _custom(c, settings, custom, custom_dry, usable_kinds, resolve)

    def rs(rules: list[Rule] | None) -> RuleSet | None:
        return RuleSet(rules) if rules else None

    tables = Tables(
        custom=rs(custom_ok),
        custom_dry_run=rs(dry_ok),
        custom_denied=rs(custom_bad),
        audit=rs(groups.get(("AUDIT", False))),
        deny=rs(groups.get(("DENY", False))),
        deny_dry_run=rs(groups.get(("DENY", True))),
        allow=rs(groups.get(("ALLOW", False))),
        allow_dry_run=rs(groups.get(("ALLOW", True))),
        has_allow=has_allow,
        provider=provider,
    )
    return Compiled(
        tables=tables,
        policies=tuple(policies),
        settings=settings,
        workload=workload,
        provider=provider,
        problems=tuple(c.problems),
        uses_remote_ip=c.uses_remote_ip,
        uses_dest_ip=c.uses_dest_ip,
        uses_sni=c.uses_sni,
    )


def _custom(
    c: _Compiler,
    settings: MeshSettings,
    custom: dict[str, list[Rule]],
    custom_dry: dict[str, list[Rule]],
    usable_kinds: Iterable[str],
    resolve: Resolver | None,
) -> tuple[ProviderSpec | None, list[Rule], list[Rule], list[Rule]]:
    """(provider, its CUSTOM rules, CUSTOM rules that deny, dry-run CUSTOM rules), as Istio decides:
    one provider per workload; an unknown or unusable one makes its rules deny what they match."""
    names = sorted({*custom, *custom_dry})
    if not names:
        return None, [], [], []
    enforced = [x for n in names for x in custom.get(n, [])]
    if len(names) > 1:
        c.problems.append(
            f"CUSTOM policies name {len(names)} providers ({', '.join(names)}); a workload may use one "
            "(Istio's default): every CUSTOM rule denies the requests it matches"
        )
        return None, [], _bad(enforced), []
    name = names[0]
    why = ""
    spec: ProviderSpec | None = None
    provider = settings.providers.get(name)
    if provider is None:
        known = ", ".join(sorted(settings.providers)) or "none"
        why = f"no extension provider {name!r} in the MeshConfig (defined: {known})"
    else:
        spec = provider_spec(provider, settings.root_namespace)
        if spec is None:
            why = f"extension provider {name!r} is not an authorizer"
        elif spec.kind not in set(usable_kinds):
            why = f"extension provider {name!r} is {spec.kind}, which meshbus-proxy cannot call"
        else:
            target = resolve(spec) if resolve is not None else spec.host
            if target is None:
                why = f"extension provider {name!r}: service {spec.host} port {spec.port} is not known to this proxy"
            else:
                spec = dataclasses.replace(spec, target=target)
    if why:
        c.problems.append(f"{why}: its CUSTOM rules deny the requests they match")
        return None, [], _bad(enforced), []
    return spec, enforced, [], custom_dry.get(name, [])


def _bad(rules: list[Rule]) -> list[Rule]:
    return [
        Rule(
            x.id + BAD_CUSTOM_SUFFIX,
            "CUSTOM",
            x.froms,
            x.tos,
            x.when,
            namespace=x.namespace,
            name=x.name,
            number=x.number,
        )
        for x in rules
    ]


_KEY_HEADERS: Final = "request.headers"
_KEY_CLAIMS: Final = "request.auth.claims"
_UNEVALUABLE: Final = "experimental.envoy.filters."


class _Compiler:
    """Compiles rules of one workload, noting what they need from a request and what it could not do."""

    def __init__(self, workload: Workload) -> None:
        self.workload = workload
        self.problems: list[str] = []
        self.uses_remote_ip = False
        self.uses_dest_ip = False
        self.uses_sni = False

    def policy_rules(self, policy: AuthorizationPolicy, dry: bool) -> list[Rule]:
        spec = policy.spec
        ns, name = policy.metadata.namespace, policy.metadata.name
        action = spec.action
        if not spec.rules:  # spec: {} or rules unset: a policy that never matches
            return [Rule(rule_id(ns, name, 0), action, (), (), (Never("no rules"),), namespace=ns, name=name,
                         dry_run=dry)]  # fmt: skip
        out = []
        for i, r in enumerate(spec.rules):
            rid = rule_id(ns, name, i)
            out.append(self.rule(rid, action, r, ns, name, i, dry))
        return out

    def rule(self, rid: str, action: str, r: RuleSpec, ns: str, name: str, i: int, dry: bool) -> Rule:
        when: list[Check] = []
        for j, cond in enumerate(r.when):
            checks = self.condition(cond, ns)
            if checks is None:
                if action == "ALLOW":
                    self.problems.append(
                        f"{rid}: when[{j}] key {cond.key!r} cannot be evaluated by meshbus: this ALLOW rule "
                        "matches no request"
                    )
                    when.append(Never(f"when {cond.key} (cannot be evaluated)"))
                else:
                    self.problems.append(
                        f"{rid}: when[{j}] key {cond.key!r} cannot be evaluated by meshbus: this {action} rule "
                        "is applied without it, so it matches more requests (fails closed)"
                    )
                continue
            when.extend(checks)
        froms = tuple(tuple(self.source(f.source, ns)) for f in r.from_ or ())
        tos = tuple(tuple(self.operation(t.operation)) for t in r.to or ())
        return Rule(rid, action, froms, tos, tuple(when), namespace=ns, name=name, number=i, dry_run=dry)

    def source(self, s: Source, ns: str) -> list[Check]:
        out: list[Check] = []
        _pair(out, s.principals, s.not_principals, "principals", lambda w, v: PrincipalCheck(w, str_match(v)))
        _pair(
            out, s.request_principals, s.not_request_principals, "requestPrincipals",
            lambda w, v: RequestPrincipalCheck(w, _request_principals(v)),
        )  # fmt: skip
        _pair(
            out, s.namespaces, s.not_namespaces, "namespaces",
            lambda w, v: NamespaceCheck(w, str_match(v, glob_regex=True)),
        )  # fmt: skip
        _pair(
            out, s.service_accounts, s.not_service_accounts, "serviceAccounts",
            lambda w, v: ServiceAccountCheck(w, _service_accounts(v, ns)),
        )  # fmt: skip
        _pair(
            out, s.trust_domains, s.not_trust_domains, "trustDomains",
            lambda w, v: TrustDomainCheck(w, str_match(v, glob_regex=True)),
        )  # fmt: skip
        _pair(out, s.ip_blocks, s.not_ip_blocks, "ipBlocks", lambda w, v: IpCheck(w, _SOURCE_IP, IpMatch(v)))
        if s.remote_ip_blocks or s.not_remote_ip_blocks:
            self.uses_remote_ip = True
        _pair(
            out, s.remote_ip_blocks, s.not_remote_ip_blocks, "remoteIpBlocks",
            lambda w, v: IpCheck(w, _REMOTE_IP, IpMatch(v)),
        )  # fmt: skip
        return out

    def operation(self, o: Operation) -> list[Check]:
        out: list[Check] = []
        _pair(out, o.hosts, o.not_hosts, "hosts", lambda w, v: HostCheck(w, str_match(v, lower=True)))
        _pair(
            out, tuple(str(p) for p in o.ports), tuple(str(p) for p in o.not_ports), "ports",
            lambda w, v: PortCheck(w, frozenset(int(p) for p in v)),
        )  # fmt: skip
        _pair(out, o.methods, o.not_methods, "methods", lambda w, v: MethodCheck(w, str_match(v)))
        _pair(out, o.paths, o.not_paths, "paths", lambda w, v: PathCheck(w, str_match(v, templates=True)))
        return out

    def condition(self, cond: Condition, ns: str) -> list[Check] | None:
        """The checks of one ``when`` condition; None when meshbus cannot evaluate its key."""
        key = cond.key
        make: Callable[[str, tuple[str, ...]], Check]
        if key.startswith(_KEY_HEADERS + "["):
            header = key[len(_KEY_HEADERS) + 1 : -1].lower()
            make = lambda w, v: HeaderCheck(w, header, str_match(v))  # noqa: E731
        elif key.startswith(_KEY_CLAIMS + "["):
            path = _claim_path(key[len(_KEY_CLAIMS) :])
            make = lambda w, v: ClaimCheck(w, path, str_match(v))  # noqa: E731
        elif key == "source.ip":
            make = lambda w, v: IpCheck(w, _SOURCE_IP, IpMatch(v))  # noqa: E731
        elif key == "remote.ip":
            self.uses_remote_ip = True
            make = lambda w, v: IpCheck(w, _REMOTE_IP, IpMatch(v))  # noqa: E731
        elif key == "destination.ip":
            self.uses_dest_ip = True
            make = lambda w, v: IpCheck(w, _DEST_IP, IpMatch(v))  # noqa: E731
        elif key == "source.namespace":
            make = lambda w, v: NamespaceCheck(w, str_match(v, glob_regex=True))  # noqa: E731
        elif key == "source.principal":
            make = lambda w, v: PrincipalCheck(w, str_match(v))  # noqa: E731
        elif key == "source.serviceAccount":
            make = lambda w, v: ServiceAccountCheck(w, _service_accounts(v, ns))  # noqa: E731
        elif key == "source.trustDomain":
            make = lambda w, v: TrustDomainCheck(w, str_match(v, glob_regex=True))  # noqa: E731
        elif key == "request.auth.principal":
            make = lambda w, v: RequestPrincipalCheck(w, _request_principals(v))  # noqa: E731
        elif key == "request.auth.audiences":
            make = lambda w, v: AuthListCheck(w, "audiences", str_match(v))  # noqa: E731
        elif key == "request.auth.presenter":
            make = lambda w, v: AuthListCheck(w, "presenter", str_match(v))  # noqa: E731
        elif key == "destination.port":
            make = lambda w, v: PortCheck(w, frozenset(int(p) for p in v))  # noqa: E731
        elif key == "connection.sni":
            self.uses_sni = True
            make = lambda w, v: SniCheck(w, str_match(v))  # noqa: E731
        else:
            return None  # experimental.envoy.filters.* (validation refuses every other key)
        out: list[Check] = []
        _pair(out, cond.values, cond.not_values, f"when {key}", make)
        return out


def _pair(
    out: list[Check],
    values: Sequence[str],
    not_values: Sequence[str],
    what: str,
    make: Callable[[str, tuple[str, ...]], Check],
) -> None:
    if values:
        out.append(make(what, tuple(values)))
    if not_values:
        out.append(Not(make(what, tuple(not_values))))


def _service_accounts(values: Iterable[str], ns: str) -> frozenset[tuple[str, str]]:
    out = set()
    for v in values:
        a, sep, b = v.partition("/")
        out.add((a, b) if sep else (ns, a))
    return frozenset(out)


_ANY: Final = str_match(["*"])


def _request_principals(values: Iterable[str]) -> tuple[tuple[StrMatch, StrMatch], ...]:
    """Istio's requestPrincipalGenerator: each value to (iss matcher, sub matcher)."""
    out = []
    for value in values:
        idx = value.rfind("/")
        found = idx >= 0
        iss, sub = (value[:idx], value[idx + 1 :]) if found else (value, "")
        if value == "*":
            out.append((_ANY, _ANY))
        elif value.startswith("*"):
            if found:
                out.append((_ANY if iss == "*" else _suffix(iss[1:]), _exact(sub)))
            else:
                out.append((_ANY, _suffix(value[1:])))
        elif value.endswith("*"):
            if found:
                out.append((_exact(iss), _ANY if sub == "*" else _prefix(sub[:-1])))
            else:
                out.append((_prefix(value[:-1]), _ANY))
        else:
            out.append((_exact(iss), _exact(sub)))
    return tuple(out)


def _exact(value: str) -> StrMatch:
    return StrMatch(frozenset({value}), (), (), False, (), (value,))


def _prefix(value: str) -> StrMatch:
    return StrMatch(frozenset(), (value,), (), False, (), (value + "*",))


def _suffix(value: str) -> StrMatch:
    return StrMatch(frozenset(), (), (value,), False, (), ("*" + value,))


def _claim_path(brackets: str) -> tuple[str, ...]:
    """``[a][b]`` -> (a, b); ``[a.b]`` -> (a.b,) (Istio's extractNameInNestedBrackets)."""
    parts: list[str] = []
    i = 0
    while i < len(brackets):
        if brackets[i] != "[":
            break
        end = brackets.find("]", i + 1)
        inner_open = brackets.find("[", i + 1)
        if end < 0 or (0 <= inner_open < end):
            return (brackets[1:-1],)
        parts.append(brackets[i + 1 : end])
        i = end + 1
    if i != len(brackets) or not parts:
        return (brackets[1:-1],)
    return tuple(parts)
