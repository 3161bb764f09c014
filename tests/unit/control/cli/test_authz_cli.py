"""meshctl authz explain offline (-f), in process: the same decisions the proxies make, named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meshbus.control.cli.__main__ import build_parser

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

FILES = """\
apiVersion: meshbus.io/v1
kind: MeshConfig
metadata: {name: mesh, namespace: istio-system}
spec:
  extensionProviders:
  - {name: opa, envoyExtAuthzHttp: {service: opa.authz.svc.cluster.local, port: 8181}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: shelf-readers, namespace: default}
spec:
  selector: {matchLabels: {app: shelf}}
  rules:
  - from: [{source: {principals: [cluster.local/ns/default/sa/reader]}}]
    to: [{operation: {methods: [GET], paths: ["/books/*"]}}]
  - to: [{operation: {paths: ["/orders/*"]}}]
    when: [{key: "request.auth.claims[groups]", values: [buyers]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext, namespace: default}
spec:
  action: CUSTOM
  provider: {name: opa}
  rules: [{to: [{operation: {paths: ["/orders/*"]}}]}]
"""


def explain(tmp_path: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> dict:  # type: ignore[type-arg]
    (tmp_path / "shelf.yaml").write_text(FILES)
    args = build_parser().parse_args(
        ["authz", "explain", "-f", str(tmp_path), "--to", "shelf", "-o", "json", *argv]
    )
    assert args.func(args) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def test_explain_names_the_deciding_rule_and_why_the_others_miss(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = explain(tmp_path, capsys, "--from", "reader", "--path", "/books/../books/1")
    assert (doc["decision"], doc["rule"], doc["path"]) == (
        "ALLOW",
        "ns[default]-policy[shelf-readers]-rule[0]",
        "/books/1",
    )
    doc = explain(tmp_path, capsys, "--from", "default/writer", "--path", "/books/1")
    assert (doc["decision"], doc["rule"]) == ("DENY", "none")
    misses = {r["rule"]: r["failed"] for r in doc["rules"]}
    assert misses["ns[default]-policy[shelf-readers]-rule[0]"] == [
        "from[0] principals: cluster.local/ns/default/sa/reader"
    ]


def test_explain_reads_jwt_claims_and_reports_the_custom_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    claims = json.dumps({"iss": "https://idp", "sub": "alice", "groups": ["buyers"]})
    doc = explain(tmp_path, capsys, "--path", "/orders/7", "--jwt-claims", claims)
    assert doc["decision"] == "ALLOW" and doc["rule"] == "ns[default]-policy[shelf-readers]-rule[1]"
    assert doc["reason"].startswith(
        "CUSTOM rule ns[default]-policy[ext]-rule[0] sends the request to provider opa"
    )
    doc = explain(tmp_path, capsys, "--path", "/orders/7")
    assert doc["decision"] == "DENY"


def test_a_path_the_proxy_refuses_is_said_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = explain(tmp_path, capsys, "--path", "/books/%00")
    assert doc["decision"] == "DENY" and "400" in doc["reason"]
