"""admission.py: all documents validated, duplicates across files, analysis deltas and the registry policy."""

from __future__ import annotations

from meshbus.bus.config.loader import load_text
from meshbus.bus.config.result import Level
from meshbus.bus.schemas.config import Document
from meshbus.control.config import admission

DR = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
"""
VS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: SUBSET}
"""


def test_every_document_of_every_file_is_validated() -> None:
    bad = VS.replace("hosts:", "hostz: [x]\n  hosts:")
    result = admission.load_documents([Document("a.yaml", DR), Document("b.yaml", bad + "---\n" + bad)])
    messages = [e.render() for e in result.validation.errors]
    # Both documents of b.yaml are reported: validation does not stop at the first error.
    assert [m.split(":")[1] for m in messages if m.startswith("b.yaml:") and "spec.hostz" in m] == ["5", "15"]
    dup = admission.load_documents([Document("a.yaml", DR), Document("c.yaml", DR)])
    assert [e.render() for e in dup.validation.errors] == [
        "c.yaml:3: DestinationRule default/reviews: metadata.name: duplicate resource: "
        "DestinationRule default/reviews is also defined at a.yaml:1"
    ]


def test_missing_subset_is_an_error_missing_host_a_warning() -> None:
    res = load_text(DR + "---\n" + VS.replace("SUBSET", "v2"), "x.yaml").resources
    findings = admission.analyze_set(res)
    assert [(m.code, m.level) for m in findings.errors] == [("IST0101", Level.ERROR)]
    assert 'subset not found: "v2"' in findings.errors[0].message
    hosts = [m for m in findings.warnings if "host not found" in m.message]
    assert hosts and all(m.code == "IST0101" and "registered by a workload" in m.message for m in hosts)


def test_only_errors_a_change_introduces_refuse_it() -> None:
    broken_vs = load_text(VS.replace("SUBSET", "v9"), "vs.yaml").resources
    dr = load_text(DR, "dr.yaml").resources
    # The stored set already had the error: applying the unrelated DR is not blamed for it.
    delta = admission.analysis_delta(broken_vs, broken_vs + dr, {"DestinationRule default/reviews"})
    assert delta.errors == []
    # Deleting the DR that a VirtualService routes through introduces one.
    good_vs = load_text(VS.replace("SUBSET", "v1"), "vs.yaml").resources
    delta = admission.analysis_delta(good_vs + dr, good_vs, {"DestinationRule default/reviews"})
    assert [m.code for m in delta.errors] == ["IST0101"]
    assert delta.errors[0].resource == "VirtualService default/reviews"


def test_render_errors_lists_every_error() -> None:
    result = admission.load_documents([Document("b.yaml", VS.replace("hosts:", "a: 1\n  b: 2\n  hosts:"))])
    text = admission.render_errors(result.validation)
    assert text.startswith("meshbus: invalid config (2 errors):\n  b.yaml:")
    assert "spec.a" in text and "spec.b" in text


def test_a_name_no_key_can_hold_is_a_field_error() -> None:
    result = admission.load_documents(
        [Document("se.yaml", DR.replace("name: reviews", "name: www.example.com"))]
    )
    assert [e.render() for e in result.validation.errors] == [
        "se.yaml:3: DestinationRule default/www.example.com: metadata.name: meshbus stores a resource under "
        "Kind.namespace.name, so a name may not contain '.' (got \"www.example.com\")"
    ]
    assert result.resources == []
