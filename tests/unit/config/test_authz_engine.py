"""AuthorizationPolicy semantics without a proxy (bus/config/authz): which policies apply, Istio's order,
each field's matching as Istio generates it, and the index that makes a request cost a few lookups."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshbus.bus.config import load_text
from meshbus.bus.config.authz.compile import Compiled, MeshConfigError, Workload, compile_workload
from meshbus.bus.config.authz.engine import (
    GUARD_HEADER,
    GUARD_METHOD,
    GUARD_PATH,
    GUARD_PRINCIPAL,
    GUARD_SEGMENT,
    HeaderCheck,
    MethodCheck,
    PathCheck,
    PrincipalCheck,
    Request,
    Rule,
    RuleSet,
    rule_guard,
)
from meshbus.bus.config.authz.matchers import str_match

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]

READER = "spiffe://cluster.local/ns/default/sa/reader"
SHELF = Workload("default", {"app": "shelf"}, 9080)


def policy(name: str, spec: str, *, namespace: str = "default", annotations: str = "") -> str:
    meta = f"{{name: {name}, namespace: {namespace}{', annotations: ' + annotations if annotations else ''}}}"
    body = textwrap.indent(textwrap.dedent(spec).strip("\n"), "  ")
    return (
        f"apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {meta}\nspec:\n{body}\n---\n"
    )


def compiled(*docs: str, workload: Workload = SHELF, **kw: Any) -> Compiled:
    result = load_text("".join(docs), "p.yaml")
    assert not result.validation.errors, result.validation.render()
    c = compile_workload(result.resources, workload, **kw)
    assert c is not None
    return c


def req(
    path: str = "/",
    principal: str = READER,
    method: str = "GET",
    host: str = "shelf",
    headers: dict[str, str] | None = None,
    auth: dict[str, Any] | None = None,
    **kw: Any,
) -> Request:
    return Request(principal, "10.1.2.3", method, host, path, headers or {}, auth, dest_port=9080, **kw)


def decide(c: Compiled, r: Request) -> tuple[bool, str]:
    d = c.tables.decide(r)
    return d.allowed, d.policy


# -- scope and order ------------------------------------------------------------------------------------


def test_which_policies_apply_to_a_workload() -> None:
    docs = [
        policy("ns-wide", "action: DENY\nrules: [{to: [{operation: {paths: [/a]}}]}]"),
        policy(
            "mine",
            "selector: {matchLabels: {app: shelf}}\naction: DENY\nrules: [{to: [{operation: {paths: [/b]}}]}]",
        ),
        policy("theirs", "selector: {matchLabels: {app: other}}\naction: DENY\nrules: [{}]"),
        policy("other-ns", "action: DENY\nrules: [{}]", namespace="payments"),
        policy("root", "action: DENY\nrules: [{to: [{operation: {paths: [/c]}}]}]", namespace="istio-system"),
        policy(
            "root-sel",
            "selector: {matchLabels: {app: other}}\naction: DENY\nrules: [{}]",
            namespace="istio-system",
        ),
        policy(
            "gateway",
            "targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: edge}]\naction: DENY\nrules: [{}]",
        ),
    ]
    c = compiled(*docs)
    assert [f"{p.metadata.namespace}/{p.metadata.name}" for p in c.policies] == [
        "istio-system/root",
        "default/mine",
        "default/ns-wide",
    ]
    assert [decide(c, req(p))[0] for p in ("/a", "/b", "/c", "/d")] == [False, False, False, True]


def test_the_mesh_config_names_the_root_namespace() -> None:
    mesh = "apiVersion: meshbus.io/v1\nkind: MeshConfig\nmetadata: {name: mesh, namespace: mesh-root}\nspec: {rootNamespace: mesh-root}\n---\n"
    root = policy("root", "action: DENY\nrules: [{}]", namespace="mesh-root")
    old_root = policy("old", "action: DENY\nrules: [{}]", namespace="istio-system")
    c = compiled(mesh, root, old_root)
    assert [p.metadata.name for p in c.policies] == ["root"]
    assert result_of(load_text(mesh + mesh.replace("name: mesh,", "name: mesh2,"), "m.yaml")) == "several"


def result_of(result: Any) -> str:
    try:
        compile_workload(result.resources, SHELF)
    except MeshConfigError as exc:
        assert "a mesh has one MeshConfig, found 2: mesh-root/mesh, mesh-root/mesh2" in str(exc)
        return "several"
    return "one"


def test_deny_wins_over_allow_and_without_allow_everything_is_allowed() -> None:
    allow = policy("allow-books", "rules: [{to: [{operation: {paths: [/books/*]}}]}]")
    deny = policy("deny-secret", "action: DENY\nrules: [{to: [{operation: {paths: [/books/secret]}}]}]")
    only_deny = compiled(deny)
    assert decide(only_deny, req("/anything")) == (True, "")
    both = compiled(allow, deny)
    assert decide(both, req("/books/1")) == (True, "ns[default]-policy[allow-books]-rule[0]")
    assert decide(both, req("/books/secret")) == (False, "ns[default]-policy[deny-secret]-rule[0]")
    assert decide(both, req("/music")) == (False, "none")


def test_empty_spec_allow_denies_all_and_an_empty_rule_allows_all() -> None:
    assert decide(compiled(policy("nothing", "{}")), req()) == (False, "none")
    assert decide(compiled(policy("everything", "rules: [{}]")), req()) == (
        True,
        "ns[default]-policy[everything]-rule[0]",
    )
    # ALLOW policies add up: an empty one next to an allow-all still lets everything in.
    assert decide(compiled(policy("nothing", "{}"), policy("everything", "rules: [{}]")), req())[0]


def test_the_deciding_rule_is_the_first_by_id_as_envoy_orders_them() -> None:
    rules = "rules:\n" + "".join("- {to: [{operation: {methods: [GET]}}]}\n" for _ in range(11))
    c = compiled(policy("many", rules))
    assert decide(c, req()) == (True, "ns[default]-policy[many]-rule[0]")
    assert [x.id for x in c.tables.allow.rules][:3] == [  # type: ignore[union-attr]
        "ns[default]-policy[many]-rule[0]",
        "ns[default]-policy[many]-rule[10]",  # Envoy's policy map is ordered by name
        "ns[default]-policy[many]-rule[1]",
    ]


def test_dry_run_policies_report_and_do_not_decide() -> None:
    dry = policy("would-deny", "action: DENY\nrules: [{}]", annotations='{istio.io/dry-run: "true"}')
    dry_allow = policy(
        "would-allow", "rules: [{to: [{operation: {paths: [/x]}}]}]", annotations='{istio.io/dry-run: "1"}'
    )
    c = compiled(dry, dry_allow)
    d = c.tables.decide(req("/y"))
    assert d.allowed and d.policy == ""  # no enforced ALLOW policy: allowed
    assert d.dry_run == (
        ("DENY", "denied", "ns[default]-policy[would-deny]-rule[0]"),
        ("ALLOW", "denied", ""),
    )


def test_audit_marks_and_never_decides() -> None:
    c = compiled(policy("audit", "action: AUDIT\nrules: [{to: [{operation: {methods: [POST]}}]}]"))
    d = c.tables.decide(req(method="POST"))
    assert d.allowed and d.audit == "ns[default]-policy[audit]-rule[0]"
    assert c.tables.decide(req()).audit == ""


# -- fields ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "principal", "matches"),
    [
        ("principals: [cluster.local/ns/default/sa/reader]", READER, True),
        ("principals: [cluster.local/ns/default/sa/reader]", "", False),  # no mTLS: no principal
        ("principals: ['*']", READER, True),
        ("principals: ['*']", "", False),
        ("principals: [cluster.local/ns/default/*]", READER, True),
        ("principals: ['*/sa/reader']", READER, True),
        ("principals: [cluster.local/ns/*/sa/reader]", READER, False),  # a * inside is a literal
        ("notPrincipals: [cluster.local/ns/default/sa/reader]", READER, False),
        ("notPrincipals: ['*']", "", True),  # plaintext: nothing to match, so the not-side holds
        ("namespaces: [default]", READER, True),
        ("namespaces: [def*]", READER, True),
        ("namespaces: ['*ault']", READER, True),
        ("namespaces: ['d*t']", READER, True),  # namespaces: every * is a wildcard (Istio's regex)
        ("namespaces: [payments]", READER, False),
        ("notNamespaces: [payments]", READER, True),
        ("serviceAccounts: [reader]", READER, True),  # the policy's namespace
        ("serviceAccounts: [default/reader]", READER, True),
        ("serviceAccounts: [other/reader]", READER, False),
        ("serviceAccounts: [reader]", "spiffe://example.org/ns/default/sa/reader", True),  # any trust domain
        ("trustDomains: [cluster.local]", READER, True),
        ("trustDomains: ['*.local']", READER, True),
        ("trustDomains: [example.org]", READER, False),
        ("trustDomains: ['*']", "", False),
        ("ipBlocks: [10.1.0.0/16]", READER, True),
        ("ipBlocks: [10.1.2.3]", READER, True),
        ("notIpBlocks: [10.0.0.0/8]", READER, False),
        ("remoteIpBlocks: [10.1.2.3/32]", READER, True),  # no trusted proxy: the peer is the remote
    ],
)
def test_source_fields(source: str, principal: str, matches: bool) -> None:
    c = compiled(policy("p", f"rules: [{{from: [{{source: {{{source}}}}}]}}]"))
    assert decide(c, req(principal=principal))[0] is matches


@pytest.mark.parametrize(
    ("operation", "kw", "matches"),
    [
        ("hosts: [Shelf.Example.COM]", {"host": "shelf.example.com"}, True),  # case-insensitive
        ("hosts: [shelf.example.com]", {"host": "shelf.example.com:80"}, False),  # a port needs its entry
        ("hosts: ['*.example.com']", {"host": "a.example.com"}, True),
        ("hosts: ['shelf*']", {"host": "shelf:9080"}, True),
        ("notHosts: ['*']", {"host": "x"}, False),
        ("methods: [GET, HEAD]", {"method": "HEAD"}, True),
        ("methods: [get]", {"method": "GET"}, False),  # methods match case-sensitively
        ("notMethods: [DELETE]", {"method": "GET"}, True),
        ("ports: ['9080']", {}, True),
        ("ports: [8080]", {}, False),
        ("notPorts: ['9080']", {}, False),
        ("paths: [/books]", {"path": "/books"}, True),
        ("paths: [/books]", {"path": "/books/"}, False),
        ("paths: [/books*]", {"path": "/booksellers"}, True),
        ("paths: ['*.json']", {"path": "/a/b.json"}, True),
        ("paths: ['*']", {"path": "/"}, True),
        ("paths: ['/books/{*}/pages']", {"path": "/books/42/pages"}, True),
        ("paths: ['/books/{*}/pages']", {"path": "/books/4/2/pages"}, False),
        ("paths: ['/books/{*}/pages']", {"path": "/books//pages"}, False),
        ("paths: ['/books/{**}']", {"path": "/books/4/2/pages"}, True),
        ("paths: ['/books/{**}']", {"path": "/books/"}, True),
        ("paths: ['/books/{**}']", {"path": "/books"}, False),
        ("paths: ['/{*}/b.txt']", {"path": "/a/b.txt"}, True),
        ("notPaths: [/admin*]", {"path": "/admin/x"}, False),
    ],
)
def test_operation_fields(operation: str, kw: dict[str, Any], matches: bool) -> None:
    c = compiled(policy("p", f"rules: [{{to: [{{operation: {{{operation}}}}}]}}]"))
    assert decide(c, req(**kw))[0] is matches


JWT = {
    "principal": "https://issuer.example.com/alice",
    "audiences": ["books", "music"],
    "presenter": "shelf-ui",
    "claims": {
        "iss": "https://issuer.example.com",
        "sub": "alice",
        "groups": ["readers", "staff"],
        "org": {"team": {"name": "library"}},
        "level": 3,
    },
}


@pytest.mark.parametrize(
    ("condition", "headers", "auth", "matches"),
    [
        ("{key: 'request.headers[X-Team]', values: [books]}", {"x-team": "books"}, None, True),
        ("{key: 'request.headers[x-team]', values: ['*']}", {"x-team": ""}, None, True),  # present
        ("{key: 'request.headers[x-team]', values: ['*']}", {}, None, False),
        ("{key: 'request.headers[x-team]', notValues: [books]}", {}, None, True),
        ("{key: 'request.headers[x-team]', values: [lib*, '*s']}", {"x-team": "books,music"}, None, False),
        ("{key: source.ip, values: [10.1.2.0/24]}", {}, None, True),
        ("{key: source.namespace, values: [default]}", {}, None, True),
        ("{key: source.principal, values: [cluster.local/ns/default/sa/reader]}", {}, None, True),
        ("{key: source.serviceAccount, values: [default/reader]}", {}, None, True),
        ("{key: source.trustDomain, values: [cluster.local]}", {}, None, True),
        ("{key: destination.port, values: ['9080']}", {}, None, True),
        ("{key: destination.port, notValues: ['9080']}", {}, None, False),
        ("{key: request.auth.principal, values: ['https://issuer.example.com/alice']}", {}, JWT, True),
        ("{key: request.auth.principal, values: ['*']}", {}, None, False),  # no token: no principal
        ("{key: request.auth.audiences, values: [music]}", {}, JWT, True),
        ("{key: request.auth.presenter, values: [shelf-*]}", {}, JWT, True),
        ("{key: 'request.auth.claims[groups]', values: [staff]}", {}, JWT, True),  # a list claim
        ("{key: 'request.auth.claims[iss]', values: ['https://issuer.example.com']}", {}, JWT, True),
        ("{key: 'request.auth.claims[org][team][name]', values: [lib*]}", {}, JWT, True),  # nested
        ("{key: 'request.auth.claims[level]', values: ['3']}", {}, JWT, False),  # not a string
        ("{key: 'request.auth.claims[groups]', notValues: [admins]}", {}, JWT, True),
    ],
)
def test_conditions(
    condition: str, headers: dict[str, str], auth: dict[str, Any] | None, matches: bool
) -> None:
    c = compiled(policy("p", f"rules: [{{when: [{condition}]}}]"))
    assert decide(c, req(headers=headers, auth=auth))[0] is matches


@pytest.mark.parametrize(
    ("value", "matches"),
    [
        ("https://issuer.example.com/alice", True),
        ("https://issuer.example.com/bob", False),
        ("*", True),
        ("https://issuer.example.com/*", True),
        ("*/alice", True),
        ("*.example.com/alice", True),
        ("https://issuer.example.com/al*", True),
        ("https://other.example.com/*", False),
        ("*lice", True),  # no "/": a suffix of the subject
        ("https://iss*", False),  # Istio splits at the last "/": iss "https:/", a sub starting "iss"
    ],
)
def test_request_principals_follow_istios_iss_sub_split(value: str, matches: bool) -> None:
    c = compiled(policy("p", f"rules: [{{from: [{{source: {{requestPrincipals: ['{value}']}}}}]}}]"))
    assert decide(c, req(auth=JWT))[0] is matches
    assert decide(c, req(auth=None))[0] is False


def test_remote_ip_comes_from_the_trusted_hop_of_x_forwarded_for() -> None:
    c = compiled(policy("p", "rules: [{from: [{source: {remoteIpBlocks: [203.0.113.0/24]}}]}]"))
    assert c.uses_remote_ip
    assert decide(c, req(remote_ip="203.0.113.7"))[0]
    assert not decide(c, req())[0]


def test_a_condition_meshbus_cannot_evaluate_fails_closed() -> None:
    key = "experimental.envoy.filters.http.rbac[x]"
    allow = compiled(policy("a", f"rules: [{{when: [{{key: '{key}', values: [y]}}]}}]"))
    assert decide(allow, req()) == (False, "none")  # the ALLOW rule allows nothing
    deny = compiled(
        policy(
            "d",
            f"action: DENY\nrules: [{{to: [{{operation: {{paths: [/x]}}}}], when: [{{key: '{key}', values: [y]}}]}}]",
        )
    )
    assert decide(deny, req("/x"))[0] is False  # applied without the condition
    assert decide(deny, req("/y"))[0] is True
    assert "applied without it, so it matches more requests (fails closed)" in deny.problems[0]
    assert "matches no request" in allow.problems[0]


# -- CUSTOM ---------------------------------------------------------------------------------------------

PROVIDERS = """\
apiVersion: meshbus.io/v1
kind: MeshConfig
metadata: {name: mesh, namespace: istio-system}
spec:
  extensionProviders:
  - {name: opa, envoyExtAuthzHttp: {service: opa.authz.svc.cluster.local, port: 8181, timeout: 2s, failOpen: true,
     statusOnError: "503", includeRequestBodyInCheck: {maxRequestBytes: 100}}}
  - {name: grpc, envoyExtAuthzGrpc: {service: g.authz.svc.cluster.local, port: 9000}}
  - {name: prom, prometheus: {}}
---
"""


def custom(provider: str, name: str = "ext", paths: str = "[/private/*]") -> str:
    return policy(
        name,
        f"action: CUSTOM\nprovider: {{name: {provider}}}\nrules: [{{to: [{{operation: {{paths: {paths}}}}}]}}]",
    )


def test_a_custom_rule_names_its_provider_only_when_it_matches() -> None:
    c = compiled(PROVIDERS, custom("opa"))
    p = c.provider
    assert p is not None and (p.name, p.kind, p.host, p.port) == (
        "opa",
        "envoyExtAuthzHttp",
        "opa.authz.svc.cluster.local",
        8181,
    )
    assert (p.timeout, p.fail_open, p.status_on_error, p.max_request_bytes) == (2.0, True, 503, 100)
    assert p.target == "opa.authz.svc.cluster.local"  # no resolver: the host
    hit = c.tables.custom_match(req("/private/x"))
    assert hit is not None and hit.id == "ns[default]-policy[ext]-rule[0]"
    assert c.tables.custom_match(req("/public")) is None


@pytest.mark.parametrize(
    ("docs", "why"),
    [
        ((custom("opa"),), "no extension provider 'opa' in the MeshConfig (defined: none)"),
        ((PROVIDERS, custom("grpc")), "is envoyExtAuthzGrpc, which meshbus-proxy cannot call"),
        ((PROVIDERS, custom("prom")), "is not an authorizer"),
        ((PROVIDERS, custom("opa"), custom("grpc", "ext2")), "CUSTOM policies name 2 providers (grpc, opa)"),
    ],
)
def test_a_custom_rule_with_an_unusable_provider_denies_what_it_matches(
    docs: tuple[str, ...], why: str
) -> None:
    c = compiled(*docs)
    assert c.provider is None and why in c.problems[0]
    hit = c.tables.custom_match(req("/private/x"))
    assert hit is not None and hit.id.endswith("-deny-due-to-bad-CUSTOM-action")
    assert c.tables.custom_match(req("/public")) is None


def test_a_provider_the_proxy_cannot_reach_denies_too() -> None:
    c = compiled(PROVIDERS, custom("opa"), resolve=lambda spec: None)
    assert "service opa.authz.svc.cluster.local port 8181 is not known to this proxy" in c.problems[0]
    assert (
        compiled(PROVIDERS, custom("opa"), resolve=lambda spec: "outbound|8181||x").provider.target
        == "outbound|8181||x"
    )  # type: ignore[union-attr]


# -- the index ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "guard", "keys"),
    [
        (
            "{from: [{source: {principals: [td/ns/n/sa/a, td/ns/n/sa/b]}}]}",
            GUARD_PRINCIPAL,
            {"td/ns/n/sa/a", "td/ns/n/sa/b"},
        ),
        (
            "{from: [{source: {principals: [td/ns/n/*]}}], to: [{operation: {paths: [/a, /b]}}]}",
            GUARD_PATH,
            {"/a", "/b"},
        ),
        ("{to: [{operation: {paths: ['/api/v1/*', /admin/x]}}]}", GUARD_SEGMENT, {"/api/", "/admin/"}),
        ("{to: [{operation: {paths: ['/books/{*}/pages']}}]}", GUARD_SEGMENT, {"/books/"}),
        (
            "{to: [{operation: {paths: ['/admin*']}}], when: [{key: 'request.headers[X-Debug]', values: [on]}]}",
            GUARD_HEADER,
            {"x-debug"},
        ),
        ("{to: [{operation: {methods: [POST], paths: ['*.json']}}]}", GUARD_METHOD, {"POST"}),
        (
            "{to: [{operation: {paths: ['/admin*']}}], when: [{key: 'request.headers[x]', notValues: [y]}]}",
            None,
            None,
        ),
    ],
)
def test_each_rule_is_filed_under_the_most_selective_attribute_it_pins(
    rule: str, guard: int | None, keys: set[str] | None
) -> None:
    c = compiled(policy("p", f"rules: [{rule}]"))
    (r,) = c.tables.allow.rules  # type: ignore[union-attr]
    assert rule_guard(r) == (None if guard is None else (guard, frozenset(keys or ())))


_PRINCIPALS = [f"spiffe://td/ns/n/sa/s{i}" for i in range(4)]
_VALUES = st.sampled_from(["td/ns/n/sa/s0", "td/ns/n/sa/s1", "td/ns/n/*", "*", "td/ns/n/sa/s3"])
_PATHS = st.sampled_from(["/a", "/b", "/c*", "*", "/d/e", "/d/*", "/d*", "/{*}/e"])
_HEADER_NAMES = st.sampled_from(["x-a", "x-b"])


@st.composite
def _rule(draw: Any, i: int) -> Rule:
    froms = tuple(
        (PrincipalCheck("principals", str_match(draw(st.lists(_VALUES, min_size=1, max_size=2)))),)
        for _ in range(draw(st.integers(0, 2)))
    )
    tos = tuple(
        tuple(
            draw(st.sampled_from([
                [PathCheck("paths", str_match(draw(st.lists(_PATHS, min_size=1, max_size=2)), templates=True))],
                [MethodCheck("methods", str_match(draw(st.lists(st.sampled_from(["GET", "POST"]), min_size=1))))],
                [PathCheck("paths", str_match(["/d/*"])), MethodCheck("methods", str_match(["GET"]))],
            ]))
        )
        for _ in range(draw(st.integers(0, 2)))
    )  # fmt: skip
    when = tuple(
        HeaderCheck(
            "when", draw(_HEADER_NAMES), str_match(draw(st.lists(st.sampled_from(["1", "*"]), min_size=1)))
        )
        for _ in range(draw(st.integers(0, 1)))
    )
    return Rule(f"ns[d]-policy[p{i:02d}]-rule[0]", "ALLOW", froms, tos, when)


@st.composite
def _rules(draw: Any) -> list[Rule]:
    return [draw(_rule(i)) for i in range(draw(st.integers(1, 10)))]


@settings(max_examples=200, deadline=None)
@given(
    _rules(),
    st.sampled_from(["", *_PRINCIPALS]),
    st.sampled_from(["/a", "/b", "/cc", "/d", "/d/e", "/d/x/y", "/e", "/x/e"]),
    st.sampled_from(["GET", "POST", "PUT"]),
    st.dictionaries(_HEADER_NAMES, st.sampled_from(["1", "2", ""]), max_size=2),
)
def test_the_index_finds_the_rule_a_linear_scan_finds(
    rules: list[Rule], principal: str, path: str, method: str, headers: dict[str, str]
) -> None:
    rs = RuleSet(rules)
    r = Request(principal, "10.0.0.1", method, "h", path, headers)
    linear = next((x for x in sorted(rules, key=lambda x: x.id) if x.matches(r)), None)
    assert rs.first(r) is linear
