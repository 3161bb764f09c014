"""Loader: line numbers, multi-document files, directories, syntax/kind errors, warnings, all-or-nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshbus.bus.config import LoadError, ServiceEntry, VirtualService, load_path, load_text
from tests.unit.config.config_helpers import errors, load_spec, warnings

pytestmark = pytest.mark.unit

REVIEWS = """\
# canary for reviews
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
      weight: 80
    - destination:
        host: reviews
        subset: v2
      weight: 10
"""


def test_error_names_file_line_resource_and_field_path() -> None:
    result = load_text(REVIEWS, "reviews.yaml")
    assert errors(result) == [
        "reviews.yaml:18: VirtualService default/reviews: spec.http[0].route[1].weight: "
        "weights must add up to 100 (got 90)"
    ]
    (err,) = result.validation.errors
    assert err.line == 18 and err.path == "spec.http[0].route[1].weight"


def test_resource_source_is_file_and_first_line() -> None:
    result = load_text(REVIEWS.replace("weight: 10", "weight: 20"), "reviews.yaml")
    assert result.ok
    (vs,) = result.resources
    assert isinstance(vs, VirtualService)
    assert (vs.source.file, vs.source.line) == ("reviews.yaml", 2)
    assert vs.source.line_of(("spec", "http", 0, "route", 1, "weight")) == 18
    assert vs.spec.http[0].route[1].weight == 20


def test_unknown_field_is_an_error_naming_the_field_and_its_line() -> None:
    result = load_spec(
        "VirtualService", "hosts: [r]\nhttp:\n- route: [{destination: {host: r}}]\n  retires: {}\n"
    )
    assert errors(result) == [
        't.yaml:9: VirtualService default/test: spec.http[0].retires: unknown field "retires" '
        '(did you mean "retries"?)'
    ]


def test_wrong_type_messages_are_human_and_quote_the_value() -> None:
    result = load_spec("DestinationRule", "host: r\nsubsets:\n- name: v1\n  labels: {version: 1}\n")
    assert errors(result) == [
        "t.yaml:9: DestinationRule default/test: spec.subsets[0].labels.version: "
        'must be a string (quote numbers and booleans, e.g. "1") (got 1)'
    ]


def test_missing_required_field_points_at_the_parent_line() -> None:
    result = load_spec("VirtualService", "hosts: [r]\nhttp:\n- route:\n  - destination:\n      subset: v1\n")
    assert errors(result) == [
        "t.yaml:9: VirtualService default/test: spec.http[0].route[0].destination.host: required field is missing"
    ]


def test_all_errors_collected_not_just_the_first() -> None:
    result = load_spec(
        "VirtualService",
        """
        hosts: [r]
        http:
        - route: [{destination: {host: r}, weight: 50}, {destination: {host: r}, weight: 40}]
          timeout: 5
          retries: {attempts: -2, retryOn: "bogus"}
        """,
    )
    messages = [e.message for e in result.validation.errors]
    assert len(messages) == 4, messages
    assert any("duration must be a string" in m for m in messages)
    assert any("weights must add up to 100 (got 90)" in m for m in messages)
    assert any("attempts must be >= 0" in m for m in messages)
    assert any('unknown retry policy "bogus"' in m for m in messages)


def test_salvage_maps_dropped_list_items_back_to_original_indices() -> None:
    result = load_spec(
        "Gateway",
        """
        servers:
        - port: {number: 80, protocol: HTTP}
          hosts: ["*"]
        - port: {number: 81, name: b, protocol: NOPE}
          hosts: ["*"]
        """,
    )
    rendered = errors(result)
    assert rendered[0].endswith("spec.servers[0].port.name: required field is missing")
    assert any("spec.servers[1].port.protocol: unknown protocol" in r for r in rendered), rendered
    assert len(rendered) == 2


def test_yaml_syntax_error_has_a_line_and_keeps_earlier_documents() -> None:
    text = REVIEWS.replace("weight: 10", "weight: 20") + "---\nkind: [unclosed\n"
    result = load_text(text, "bad.yaml")
    assert not result.ok
    (err,) = result.validation.errors
    assert err.render().startswith("bad.yaml:21: YAML syntax error")
    assert len(result.resources) == 1


def test_duplicate_keys_are_syntax_errors() -> None:
    result = load_text(REVIEWS.replace("  name: reviews\n", "  name: reviews\n  name: again\n"), "d.yaml")
    assert not result.ok
    assert "YAML syntax error" in result.validation.errors[0].message
    assert result.validation.errors[0].line == 6


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "apiVersion: networking.istio.io/v1\nmetadata: {name: a}\nspec: {}\n",
            "t.yaml:1: <no kind> default/a: kind: kind is required",
        ),
        (
            "kind: VirtualService\nmetadata: {name: a}\nspec: {}\n",
            "t.yaml:1: VirtualService default/a: apiVersion: apiVersion is required",
        ),
        (
            "apiVersion: networking.istio.io/v1\nkind: VirtualServce\nmetadata: {name: a}\n",
            "t.yaml:2: VirtualServce default/a: kind: unknown kind (supported: AuthorizationPolicy,",
        ),
        ("- just\n- a list\n", "t.yaml:1: a document must be a mapping"),
        (
            "apiVersion: meshbus.io/v1\nkind: Plugin\nmetadata: {name: a}\nspec: {filter: a.b}\nextra: 1\n",
            't.yaml:5: Plugin default/a: extra: unknown field "extra"',
        ),
        (
            "apiVersion: meshbus.io/v1\nkind: Plugin\nmetadata: {name: a, namespace: Bad}\nspec: {filter: a.b}\n",
            "t.yaml:3: Plugin Bad/a: metadata.namespace: namespace must be a DNS-1123 label",
        ),
    ],
)
def test_envelope_errors(text: str, message: str) -> None:
    result = load_text(text, "t.yaml")
    assert any(e.startswith(message) for e in errors(result)), errors(result)


def test_empty_documents_and_comments_are_skipped() -> None:
    text = "# only a comment\n---\n---\n" + REVIEWS.replace("weight: 10", "weight: 20") + "---\n# trailing\n"
    result = load_text(text, "t.yaml")
    assert result.ok and len(result.resources) == 1


def test_multi_document_file_is_all_or_nothing_but_lists_resources() -> None:
    good = REVIEWS.replace("weight: 10", "weight: 20")
    bad = load_spec("DestinationRule", "host: reviews\nsubsets: [{name: v1}, {name: v1}]\n")
    result = load_text(
        good + "---\n" + "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
        "metadata: {name: reviews}\nspec:\n  host: reviews\n  subsets: [{name: v1}, {name: v1}]\n",
        "t.yaml",
    )
    assert not bad.ok and not result.ok
    assert [r.kind for r in result.resources] == ["VirtualService", "DestinationRule"]
    with pytest.raises(LoadError, match=r"meshbus: invalid config \(1 error\)") as info:
        result.raise_for_errors()
    assert "duplicate subset name" in str(info.value)
    assert info.value.validation is result.validation


def test_raise_for_errors_returns_resources_when_ok() -> None:
    result = load_text(REVIEWS.replace("weight: 10", "weight: 20"), "t.yaml")
    assert result.raise_for_errors() == result.resources


def test_duplicate_resources_are_errors() -> None:
    doc = REVIEWS.replace("weight: 10", "weight: 20")
    result = load_text(doc + "---\n" + doc, "t.yaml")
    assert errors(result) == [
        "t.yaml:24: VirtualService default/reviews: metadata.name: duplicate resource: "
        "VirtualService default/reviews is also defined at t.yaml:2"
    ]


def test_load_path_directory_sorted_recursive_yaml_and_yml_only(tmp_path: Path) -> None:
    se = (
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {n}}}\n"
        "spec: {{hosts: [{n}.example.com], ports: [{{number: 80, name: http}}], resolution: DNS}}\n"
    )
    (tmp_path / "b.yaml").write_text(se.format(n="b"))
    (tmp_path / "a.yml").write_text(se.format(n="a"))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.yaml").write_text(se.format(n="c"))
    (tmp_path / "notes.txt").write_text("not: config\n")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "x.yaml").write_text("not: config\n")
    (tmp_path / ".hidden.yaml").write_text("not: config\n")
    result = load_path(tmp_path)
    assert result.ok, result.validation.render()
    assert [r.name for r in result.resources] == ["a", "b", "c"]
    assert result.of_kind(ServiceEntry) == result.resources
    assert result.of_kind(VirtualService) == []
    assert result.resources[2].source.file == str(tmp_path / "sub" / "c.yaml")


def test_load_path_single_file_and_missing_path(tmp_path: Path) -> None:
    f = tmp_path / "reviews.yaml"
    f.write_text(REVIEWS)
    assert errors(load_path(str(f)))[0].startswith(f"{f}:18: ")
    missing = load_path(tmp_path / "nope")
    assert not missing.ok and "no such file or directory" in errors(missing)[0]
    (tmp_path / "empty").mkdir()
    empty = load_path(tmp_path / "empty")
    assert empty.ok and "no *.yaml" in warnings(empty)[0]


def test_fields_meshbus_does_not_enforce_are_warned_with_their_line() -> None:
    result = load_spec(
        "VirtualService",
        """
        hosts: [r]
        http:
        - route: [{destination: {host: r}}]
          match:
          - statPrefix: x
        tcp:
        - route: [{destination: {host: r}}]
        """,
    )
    assert result.ok
    assert warnings(result) == [
        "t.yaml:10: VirtualService default/test: spec.http[0].match[0].statPrefix: "
        "NOT ENFORCED — meshbus-proxy keeps no statistics per match block",
        "t.yaml:11: VirtualService default/test: spec.tcp: NOT ENFORCED — meshbus-proxy proxies HTTP only; "
        "TCP routes are ignored",
    ]


def test_fields_meshbus_does_not_enforce_are_still_schema_checked() -> None:
    result = load_spec(
        "DestinationRule", "host: r\ntrafficPolicy:\n  tunnel: {targetHost: x, targetPrt: 1}\n"
    )
    assert any('unknown field "targetPrt"' in e for e in errors(result))


def test_deprecated_percent_is_converted_with_a_warning() -> None:
    result = load_spec(
        "VirtualService",
        "hosts: [r]\nhttp:\n- route: [{destination: {host: r}}]\n  fault: {delay: {percent: 30, fixedDelay: 1s}}\n",
    )
    assert result.ok
    (vs,) = result.resources
    assert isinstance(vs, VirtualService)
    fault = vs.spec.http[0].fault
    assert fault is not None and fault.delay is not None and fault.delay.percentage is not None
    assert fault.delay.percentage.value == 30
    assert 'field "percent" is deprecated; use "percentage"' in warnings(result)[0]


def test_status_is_ignored_with_a_warning() -> None:
    result = load_text(REVIEWS.replace("weight: 10", "weight: 20") + "status: {}\n", "t.yaml")
    assert result.ok
    assert warnings(result) == [
        "t.yaml:19: VirtualService default/reviews: status: status is written by the mesh, not the operator; ignored"
    ]
