"""The fates table (bus/config/fates.py): every model field has one, and each fate reaches the user."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from meshbus.bus.config import fates, load_text
from meshbus.bus.config.fates import FIELDS, KINDS, RESOLVED, SAME_AS, Fate, ProxyReport, Verdict
from meshbus.bus.config.resources import RESOURCE_TYPES, Metadata
from tests.support.unenforced import (
    REQUEST_AUTHENTICATION_FATE,
    UNEVALUABLE_POLICY_FATE,
    joined,
    request_authentication,
    unevaluable_authorization_policy,
)

pytestmark = pytest.mark.unit


# -- the table covers the models ---------------------------------------------------------------------


def _models(annotation: Any, suffix: str = "") -> Iterator[tuple[str, type[BaseModel]]]:
    """(path suffix, model) for each config message a field's type holds: ``[]`` in a list, ``.*`` in a map."""
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            yield suffix, annotation
        return
    origin = getattr(annotation, "__origin__", None)
    args = getattr(annotation, "__args__", ()) or ()
    if origin in (tuple, list):
        for arg in args:
            yield from _models(arg, suffix + "[]")
    elif origin is dict:
        yield from _models(args[-1], suffix + ".*")
    else:  # a union (X | None), Annotated, Literal
        for arg in args:
            yield from _models(arg, suffix)


def schema(model: type[BaseModel], prefix: str) -> Iterator[tuple[str, bool]]:
    """Every field path below ``prefix`` as users write it, and whether the field holds messages."""
    for name, info in model.model_fields.items():
        path = f"{prefix}.{info.alias or name}"
        inner = list(_models(info.annotation))
        yield path, bool(inner)
        for suffix, sub in inner:
            yield from schema(sub, path + suffix)


def _covers_subtree(fate: Fate | None) -> bool:
    return fate is not None and fate.verdict is not Verdict.ENFORCED and fate.when is None


def missing_fates(resolved: Mapping[str, Fate]) -> list[str]:
    """Fields of enforced kinds that reach no fate: neither their own, nor a container's that covers them."""
    missing = []
    for rtype in RESOURCE_TYPES:
        kind = rtype.KEY_KIND
        if _covers_subtree(KINDS.get(kind)):
            continue
        covered: list[str] = []
        fields = [*schema(Metadata, "metadata"), *schema(rtype.model_fields["spec"].annotation, "spec")]  # type: ignore[arg-type]
        for path, holds_messages in fields:
            if any(path.startswith(c + ".") or path.startswith(c + "[") for c in covered):
                continue
            fate = resolved.get(f"{kind} {path}")
            if _covers_subtree(fate):
                covered.append(path)
            elif fate is None and not holds_messages:
                missing.append(f"{kind} {path}")
    return missing


def test_every_field_of_every_enforced_kind_has_a_fate() -> None:
    assert missing_fates(RESOLVED) == []


def test_a_field_without_a_fate_is_caught() -> None:
    """The check above can fail: drop one entry (and its variants) and it names the field."""
    key = "DestinationRule spec.trafficPolicy.connectionPool.http.maxRetries"
    without = {k: v for k, v in RESOLVED.items() if not k.endswith(".connectionPool.http.maxRetries")}
    missing = missing_fates(without)
    assert key in missing
    assert (
        "DestinationRule spec.subsets[].trafficPolicy.portLevelSettings[].connectionPool.http.maxRetries"
        in missing
    )


def test_every_kind_has_a_fate_and_every_key_names_a_real_field() -> None:
    assert set(KINDS) == {t.KEY_KIND for t in RESOURCE_TYPES}
    known = {
        f"{t.KEY_KIND} {path}"
        for t in RESOURCE_TYPES
        for path, _ in schema(t.model_fields["spec"].annotation, "spec")  # type: ignore[arg-type]
    }
    assert [k for k in FIELDS if k not in known] == []
    assert [k for k in SAME_AS if not any(p.startswith(k + ".") for p in known)] == []
    assert {p for p, _ in schema(Metadata, "metadata")} == set(fates.METADATA)


def test_conditional_and_not_enforced_fates_say_why() -> None:
    for what, fate in [*KINDS.items(), *FIELDS.items(), *fates.METADATA.items()]:
        for f in (fate, fate.standalone):
            if f is not None and f.verdict is not Verdict.ENFORCED:
                assert f.why and "deprecated" not in f.why, what  # analyze maps "deprecated" to IST0002
            if f is not None and f.when is not None:
                assert f.condition, what


# -- what users see -------------------------------------------------------------------------------

PLUGIN = """\
apiVersion: meshbus.io/v1
kind: Plugin
metadata: {name: audit}
spec:
  filter: meshbus.filters.http.audit
"""
POLICIES = joined(
    unevaluable_authorization_policy("shelf-readers", "shelf"),
    request_authentication("jwt", "shelf"),
    PLUGIN,
)


def test_policy_kinds_are_warned_in_plain_words_and_plugins_are_enforced() -> None:
    result = load_text(POLICIES, "policy.yaml")
    assert result.ok
    assert [w.render() for w in result.validation.warnings] == [
        f"policy.yaml:10: AuthorizationPolicy default/shelf-readers: {UNEVALUABLE_POLICY_FATE}",
        f"policy.yaml:21: RequestAuthentication default/jwt: {REQUEST_AUTHENTICATION_FATE}",
    ]


def dr(traffic_policy: str, subset_policy: str = "") -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews}}
spec:
  host: reviews
  trafficPolicy: {traffic_policy}
  subsets:
  - name: v1
    labels: {{version: v1}}
    {"trafficPolicy: " + subset_policy if subset_policy else ""}
"""


def warnings(text: str) -> list[str]:
    result = load_text(text, "t.yaml")
    assert result.ok, result.validation.render()
    return [f"{w.path}: {w.message}" for w in result.validation.warnings]


def test_a_traffic_policy_field_is_warned_at_every_level_of_a_destination_rule() -> None:
    pool = "{connectionPool: {tcp: {tcpKeepalive: {time: 60s}}}}"
    ports = "{portLevelSettings: [{port: {number: 80}, connectionPool: {tcp: {tcpKeepalive: {time: 9s}}}}]}"
    found = warnings(dr(pool, ports)) + warnings(dr(ports))
    assert [w.split(": NOT ENFORCED")[0] for w in found] == [
        "spec.trafficPolicy.connectionPool.tcp.tcpKeepalive",
        "spec.subsets[0].trafficPolicy.portLevelSettings[0].connectionPool.tcp.tcpKeepalive",
        "spec.trafficPolicy.portLevelSettings[0].connectionPool.tcp.tcpKeepalive",
    ]
    assert all("upstream sockets use the system's keepalive" in w for w in found)
    # maxRetries is the cluster's retry budget, enforced at every level (tests/unit/proxy/test_attempts.py)
    enforced = "{connectionPool: {http: {http2MaxRequests: 3, maxRequestsPerConnection: 1, maxRetries: 2}}}"
    assert warnings(dr(enforced)) == []


def test_a_fate_with_a_condition_holds_only_when_it_is_met() -> None:
    def sans(mode: str) -> list[str]:
        return warnings(dr(f"{{tls: {{mode: {mode}, subjectAltNames: [a.example.com]}}}}"))

    assert sans("ISTIO_MUTUAL") == []
    assert sans("SIMPLE") == [
        "spec.trafficPolicy.tls.subjectAltNames: NOT ENFORCED — the server certificate is checked against "
        "the SNI name (sni, else the host) instead"
    ]
    assert warnings(dr("{loadBalancer: {simple: ROUND_ROBIN}}")) == []
    (passthrough,) = warnings(dr("{loadBalancer: {simple: PASSTHROUGH}}"))
    assert passthrough.startswith("spec.trafficPolicy.loadBalancer.simple: NOT ENFORCED — PASSTHROUGH needs")


def vs(http: str, extra: str = "") -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: r}}
spec:
  hosts: [reviews]
{extra}  http: [{http}]
"""


def test_virtual_service_fates() -> None:
    assert (
        warnings(vs("{route: [{destination: {host: reviews}}], retries: {attempts: 2, retryOn: '5xx,503'}}"))
        == []
    )
    (grpc,) = warnings(
        vs("{route: [{destination: {host: reviews}}], retries: {attempts: 2, retryOn: '5xx,unavailable'}}")
    )
    assert grpc.startswith("spec.http[0].retries.retryOn: NOT ENFORCED — meshbus-proxy retries on 5xx")
    (gateway,) = warnings(vs("{route: [{destination: {host: reviews}}]}", "  gateways: [mesh, edge]\n"))
    assert gateway.startswith("spec.gateways: NOT ENFORCED — meshbus has no gateway proxy yet")
    assert warnings(vs("{route: [{destination: {host: reviews}}]}", "  gateways: [mesh]\n")) == []
    (prefix,) = warnings(vs("{redirect: {prefixRewrite: /v2}}"))
    assert prefix.startswith("spec.http[0].redirect.prefixRewrite: NOT ENFORCED")


def test_a_refused_field_is_an_error_naming_file_and_field() -> None:
    result = load_text(vs("{delegate: {name: reviews-v1, namespace: default}}"), "r.yaml")
    assert not result.ok
    (err,) = result.validation.errors
    assert err.render().startswith("r.yaml:6: VirtualService default/r: spec.http[0].delegate: REFUSED — ")


SERVICE_ENTRY = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext}
spec:
  hosts: [api.example.com]
  ports: [{number: 80, name: http, protocol: PROTOCOL}]
"""


def test_service_entry_fates_include_the_default_resolution() -> None:
    (none,) = warnings(SERVICE_ENTRY.replace("PROTOCOL", "HTTP"))  # resolution NONE by default
    assert none.startswith("spec.resolution: NOT ENFORCED — meshbus-proxy cannot pass traffic through")
    dns = SERVICE_ENTRY.replace("PROTOCOL", "HTTP") + "  resolution: DNS\n"
    assert warnings(dns) == []
    (tcp,) = warnings(SERVICE_ENTRY.replace("PROTOCOL", "TCP") + "  resolution: DNS\n")
    assert tcp.startswith("spec.ports[0].protocol: NOT ENFORCED — meshbus-proxy speaks HTTP/1.1 only")


STANDALONE = """\
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default}
spec:
  egress: [{hosts: [./*]}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict}
spec:
  mtls: {mode: STRICT}
"""


def test_standalone_proxies_are_told_what_only_mesh_mode_enforces() -> None:
    result = load_text(STANDALONE, "s.yaml")
    assert result.ok and result.validation.warnings == []  # apply/analyze: enforced in mesh mode
    assert fates.standalone_warnings(result) == [
        "s.yaml:1: Sidecar default/default: NOT ENFORCED — a standalone proxy routes to every service in its "
        "file; Sidecar scoping is done by meshbus-discovery in mesh mode",
        "s.yaml:11: PeerAuthentication default/strict: spec.mtls.mode: NOT ENFORCED — a standalone proxy has "
        'no mesh identity: it cannot require mTLS and accepts plaintext from every caller (got "STRICT")',
    ]


def test_proxy_report_tells_each_resource_once_until_it_changes() -> None:
    report = ProxyReport()
    first = load_text(POLICIES, "snapshot v1").resources
    lines = report.new_lines(first)
    assert len(lines) == 2 and all("NOT ENFORCED" in ln for ln in lines)
    assert report.new_lines(first) == []  # the same resources in the next version: nothing new
    same_content = load_text(POLICIES, "snapshot v2").resources
    assert report.new_lines(same_content) == []  # equal content from another snapshot: nothing new
    writers = unevaluable_authorization_policy("shelf-readers", "shelf", "cluster.local/ns/default/sa/writer")
    changed = load_text(
        POLICIES.replace(unevaluable_authorization_policy("shelf-readers", "shelf"), writers),
        "snapshot v3",
    ).resources
    (again,) = report.new_lines(changed)
    assert again.startswith(
        "snapshot v3:10: AuthorizationPolicy default/shelf-readers: spec.rules[0].when[0].key: NOT ENFORCED"
    )
    assert report.new_lines(changed[1:]) == []
    assert len(report.new_lines(changed)) == 1  # gone, then back: told again


def test_listing_shows_every_fate_that_is_not_enforced() -> None:
    text = "\n".join(fates.listing())
    assert (
        "AuthorizationPolicy spec.targetRefs: NOT ENFORCED — a policy with targetRef(s) is for gateways"
        in text
    )
    assert "AuthorizationPolicy spec.rules[].when[].key (experimental.envoy.filters.*): NOT ENFORCED" in text
    assert "AuthorizationPolicy:" not in text and "MeshConfig:" not in text  # both kinds are enforced
    assert "DestinationRule spec.trafficPolicy.connectionPool.tcp.tcpKeepalive: NOT ENFORCED" in text
    assert "maxRetries" not in text
    assert "VirtualService spec.http[].delegate: REFUSED" in text
    assert "Sidecar (on a standalone proxy): NOT ENFORCED" in text
    assert "VirtualService spec.hosts" not in text
    everything = "\n".join(fates.listing(Verdict))
    assert "VirtualService spec.hosts: ENFORCED" in everything


def test_the_readme_names_every_kind_that_is_not_enforced() -> None:
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    section = readme.split("## What meshbus enforces", 1)[1].split("\n## ", 1)[0]
    # the kinds named before the dash of each item: "- `EnvoyFilter`, `WasmPlugin` — why"
    items = [line[2:].split(" — ")[0] for line in section.splitlines() if line.startswith("- ")]
    listed = {name for item in items for name in re.findall(r"`(\w+)`", item)}
    # each kind that is not enforced, everywhere or on a standalone proxy
    assert listed == {k for k, f in KINDS.items() if f.verdict is not Verdict.ENFORCED or f.standalone}


KINDS_MESHBUS_DOES_NOT_RUN = """\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  gatewayClassName: istio
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: lua}
spec:
  configPatches:
  - applyTo: HTTP_FILTER
    patch: {operation: INSERT_BEFORE, value: {name: envoy.lua}}
"""


def test_kinds_meshbus_does_not_run_take_their_fate_from_the_table_by_group_and_kind() -> None:
    """The Gateway API's Gateway is not Istio's: each gets its own entry (KEY_KIND), in the fates' words."""
    result = load_text(KINDS_MESHBUS_DOES_NOT_RUN, "k.yaml")
    assert result.ok, result.validation.render()
    assert [w.render() for w in result.validation.warnings] == [
        f"k.yaml:1: KubernetesGateway default/edge: {KINDS['KubernetesGateway'].message()}",
        f"k.yaml:8: Gateway default/edge: {KINDS['Gateway'].message()}",
        f"k.yaml:14: EnvoyFilter default/lua: {KINDS['EnvoyFilter'].message()}",
    ]
    assert "the Gateway API's Gateway" in KINDS["KubernetesGateway"].why
    assert "Plugin" in KINDS["EnvoyFilter"].why and "LocalRateLimit" in KINDS["EnvoyFilter"].why


def test_a_header_match_on_a_jwt_claim_is_warned_and_other_headers_are_not() -> None:
    claim = vs(
        "{match: [{headers: {x-tenant: {exact: gold}, '@request.auth.claims.groups': {exact: admins}}}], "
        "route: [{destination: {host: reviews}}]}"
    )
    assert warnings(claim) == [
        "spec.http[0].match[0].headers: NOT ENFORCED — meshbus-proxy does not route on JWT claims yet: it looks "
        "for a request header of that name, so the match does not see the token's claims"
    ]
    plain = vs("{match: [{headers: {x-tenant: {exact: gold}}}], route: [{destination: {host: reviews}}]}")
    assert warnings(plain) == []
