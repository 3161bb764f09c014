"""Cross-resource analysis (istioctl analyze style codes)."""

from __future__ import annotations

import pytest

from meshbus.bus.config import Level, Resource, analyze, load_text

pytestmark = pytest.mark.unit


def se(name: str, host: str, ports: str = "[{number: 9080, name: http}]", endpoints: str = "") -> str:
    eps = (
        endpoints
        or "[{address: 10.0.0.1, labels: {version: v1}}, {address: 10.0.0.2, labels: {version: v2}}]"
    )
    return (
        f"apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}}}\n"
        f"spec:\n  hosts: [{host}]\n  ports: {ports}\n  resolution: STATIC\n  endpoints: {eps}\n"
    )


def dr(name: str, host: str, subsets: str = "[v1, v2]", extra: str = "") -> str:
    items = ", ".join(
        f"{{name: {s}, labels: {{version: {s}}}}}" for s in subsets.strip("[]").split(", ") if s
    )
    return (
        f"apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {name}}}\n"
        f"spec:\n  host: {host}\n  subsets: [{items}]\n{extra}"
    )


VS_REVIEWS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: v1
      weight: 50
    - destination:
        host: reviews
        subset: v3
      weight: 50
"""


def resources(*docs: str) -> list[Resource]:
    result = load_text("---\n".join(docs), "reviews.yaml")
    assert result.ok, result.validation.render()
    return result.resources


def rendered(*docs: str, **kwargs: object) -> list[str]:
    return [m.render() for m in analyze(resources(*docs), **kwargs).messages()]  # type: ignore[arg-type]


def test_subset_not_found_renders_like_istioctl() -> None:
    out = rendered(VS_REVIEWS, se("reviews", "reviews"), dr("reviews", "reviews"))
    assert out == [
        'Error [IST0101] (VirtualService default/reviews reviews.yaml:16) Referenced subset not found: "v3"'
    ]


def test_subset_found_through_fqdn_and_short_name() -> None:
    vs = VS_REVIEWS.replace(
        "host: reviews\n        subset: v3", "host: reviews.default.svc.cluster.local\n        subset: v2"
    )
    assert rendered(vs, se("reviews", "reviews.default.svc.cluster.local"), dr("reviews", "reviews")) == []


def test_subset_without_any_destination_rule_is_not_found() -> None:
    out = rendered(VS_REVIEWS.replace("subset: v3", "subset: v2"), se("reviews", "reviews"))
    assert len(out) == 2 and all('Referenced subset not found: "v' in m for m in out)


def test_host_not_declared_is_error_inside_mesh_and_warning_outside() -> None:
    vs = VS_REVIEWS.replace("subset: v3", "subset: v1").replace(
        "host: reviews\n        subset: v1\n      weight: 50\n",
        "host: api.example.com\n      weight: 50\n",
        1,
    )
    validation = analyze(resources(vs, dr("reviews", "reviews", "[v1]")))
    assert [m.render() for m in validation.errors] == [
        'Error [IST0101] (VirtualService default/reviews reviews.yaml:14) Referenced host not found: "reviews"'
    ]
    assert [m.render() for m in validation.warnings if m.code == "IST0101"] == [
        'Warning [IST0101] (VirtualService default/reviews reviews.yaml:11) Referenced host not found: "api.example.com"'
    ]


def test_registry_hosts_count_as_declared() -> None:
    out = rendered(
        VS_REVIEWS.replace("subset: v3", "subset: v2"),
        dr("reviews", "reviews"),
        registry_hosts=["reviews.default.svc.cluster.local"],
    )
    assert out == []


def test_conflicting_virtual_service_hosts() -> None:
    other = VS_REVIEWS.replace("name: reviews", "name: reviews-canary").replace("subset: v3", "subset: v2")
    validation = analyze(
        resources(
            VS_REVIEWS.replace("subset: v3", "subset: v2"), other, se("r", "reviews"), dr("r", "reviews")
        )
    )
    codes = [(m.level, m.code, m.resource) for m in validation.messages()]
    assert codes == [
        (Level.ERROR, "IST0109", "VirtualService default/reviews"),
        (Level.ERROR, "IST0109", "VirtualService default/reviews-canary"),
    ]
    assert "define the same host reviews.default.svc.cluster.local" in validation.errors[0].message


def test_gateway_reference_not_found() -> None:
    vs = VS_REVIEWS.replace("  hosts:\n", "  gateways: [mesh, edge]\n  hosts:\n").replace(
        "subset: v3", "subset: v2"
    )
    out = rendered(vs, se("r", "reviews"), dr("r", "reviews"))
    assert out == [
        'Error [IST0101] (VirtualService default/reviews reviews.yaml:6) Referenced gateway not found: "edge"'
    ]


def test_port_selector_required_and_port_not_found() -> None:
    ports = "[{number: 9080, name: http}, {number: 9443, name: https}]"
    vs = VS_REVIEWS.replace("subset: v3", "subset: v2")
    out = rendered(vs, se("r", "reviews", ports=ports), dr("r", "reviews"))
    assert len(out) == 2 and all(m.startswith("Error [IST0112]") for m in out)
    vs_port = vs.replace("subset: v2\n", "subset: v2\n        port: {number: 1234}\n")
    out = rendered(vs_port, se("r", "reviews", ports=ports), dr("r", "reviews"))
    assert any('Referenced port not found: "1234"' in m for m in out), out


def test_unreachable_rule_after_catch_all() -> None:
    vs = VS_REVIEWS.replace("subset: v3", "subset: v2") + (
        "  - match: [{uri: {prefix: /x}}]\n    route: [{destination: {host: reviews, subset: v1}}]\n"
    )
    out = rendered(vs, se("r", "reviews"), dr("r", "reviews"))
    assert out == [
        "Warning [IST0130] (VirtualService default/reviews reviews.yaml:18) VirtualService rule #1 not used "
        "(rule #0 has no match and catches everything; only the last rule can have no matches)."
    ]


def test_destination_rule_checks() -> None:
    validation = analyze(
        resources(
            se("r", "reviews"),
            dr("reviews", "reviews", "[v1, v9]"),
            dr("ghost", "ghost"),
            dr("ext", "api.example.com", "[]", "  trafficPolicy: {tls: {mode: SIMPLE}}\n"),
        )
    )
    codes = sorted((m.code, m.resource) for m in validation.messages())
    assert codes == [
        ("IST0128", "DestinationRule default/ext"),
        ("IST0173", "DestinationRule default/reviews"),
        ("IST0174", "DestinationRule default/ext"),
        ("IST0174", "DestinationRule default/ghost"),
    ]
    assert not validation.errors


def test_multiple_destination_rules_for_one_host() -> None:
    out = rendered(se("r", "reviews"), dr("a", "reviews"), dr("b", "reviews.default.svc.cluster.local"))
    assert len(out) == 2 and all(m.startswith("Warning [MB0001]") for m in out)


def test_rate_limit_route_references() -> None:
    vs = VS_REVIEWS.replace("subset: v3", "subset: v2").replace(
        "  - route:\n", "  - name: default\n    route:\n"
    )
    rl = (
        "apiVersion: meshbus.io/v1\nkind: LocalRateLimit\nmetadata: {name: rl}\nspec:\n"
        "  hosts: [reviews, nothing]\n  routes: [default, missing]\n  tokenBucket: {maxTokens: 1, fillInterval: 1s}\n"
    )
    validation = analyze(resources(vs, se("r", "reviews"), dr("r", "reviews"), rl))
    assert [m.message for m in validation.errors] == ['Referenced route not found: "missing"']
    assert [m.message for m in validation.warnings] == [
        'Referenced host not found: "nothing" (no VirtualService routes it)'
    ]


def test_empty_in_empty_out() -> None:
    assert analyze([]).messages() == []


def test_duplicate_match_in_later_rule_is_info() -> None:
    vs = VS_REVIEWS.replace("subset: v3", "subset: v2").replace(
        "  - route:\n",
        "  - name: first\n    match: [{uri: {prefix: /a}}]\n    route: [{destination: {host: reviews, subset: v1}}]\n"
        "  - name: second\n    match: [{name: again, uri: {prefix: /a}}]\n    route: [{destination: {host: reviews}}]\n"
        "  - route:\n",
    )
    validation = analyze(resources(vs, se("r", "reviews"), dr("r", "reviews")))
    assert not validation.errors and not validation.warnings
    assert [m.render() for m in validation.infos] == [
        "Info [IST0131] (VirtualService default/reviews reviews.yaml:13) VirtualService rule second match #0 "
        "is not used (duplicate/overlapping match in rule first)."
    ]


def test_multiple_sidecars_without_selector_in_one_namespace() -> None:
    sidecar = "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: {n}}}\nspec:\n  egress: [{{hosts: ['./*']}}]\n"
    validation = analyze(resources(sidecar.format(n="a"), sidecar.format(n="b")))
    assert [m.code for m in validation.errors] == ["IST0111", "IST0111"]
    assert 'The Sidecars [default/a default/b] in namespace "default" have no workload selector' in (
        validation.errors[0].message
    )


GATEWAY_WITH_SECRET = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: secure}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [shop.example.com]
    tls: {mode: SIMPLE, credentialName: shop-cert}
---
apiVersion: v1
kind: Pod
metadata: {name: gw-0, namespace: istio-system, labels: {istio: ingressgateway}}
---
apiVersion: v1
kind: Secret
metadata: {name: SECRET_NAME, namespace: istio-system}
stringData:
  tls.crt: |
CERT
"""


def _self_signed_pem() -> str:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "shop.example.com")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@pytest.mark.parametrize(
    ("secret", "cert", "reported"),
    [
        ("shop-cert", "not a certificate", True),
        ("shop-cert", "", False),  # filled in with a real certificate below
        ("other-cert", "not a certificate", False),  # the Secret is not in the files: the cluster may hold it
    ],
)
def test_ist0161_judges_a_gateway_credential_only_from_the_files(
    secret: str, cert: str, reported: bool
) -> None:
    pem = cert or _self_signed_pem()
    text = GATEWAY_WITH_SECRET.replace("SECRET_NAME", secret).replace(
        "CERT", "\n".join("    " + line for line in pem.splitlines())
    )
    result = load_text(text, "gw.yaml")
    findings = analyze(result.resources, kubernetes=result.kubernetes)
    codes = [m.code for m in findings.messages()]
    assert ("IST0161" in codes) is reported, findings.render()
