"""Host naming and the result types' rendering (what meshbus enforces: test_fates.py)."""

from __future__ import annotations

import pytest

from meshbus.bus.config import FieldError, Level, Source, Validation
from meshbus.bus.config.hosts import host_matches, looks_external, to_fqdn

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("host", "ns", "fqdn"),
    [
        ("reviews", "default", "reviews.default.svc.cluster.local"),
        ("Reviews", "shop", "reviews.shop.svc.cluster.local"),
        ("reviews.default.svc.cluster.local", "other", "reviews.default.svc.cluster.local"),
        ("www.googleapis.com.", "default", "www.googleapis.com"),
        ("*", "default", "*"),
        ("*.example.com", "default", "*.example.com"),
    ],
)
def test_to_fqdn(host: str, ns: str, fqdn: str) -> None:
    assert to_fqdn(host, ns) == fqdn


def test_host_matches_and_external() -> None:
    assert host_matches("*.example.com", "a.example.com")
    assert not host_matches("*.example.com", "example.com")
    assert host_matches("*", "anything")
    assert not host_matches("a.example.com", "b.example.com")
    assert looks_external("www.googleapis.com")
    assert not looks_external("reviews.default.svc.cluster.local")


def test_field_error_rendering() -> None:
    err = FieldError(Source("routes.yaml", 14), "routes[2].burst", "must be > 0", -1, "Plugin default/x")
    assert err.render() == "routes.yaml:14: Plugin default/x: routes[2].burst: must be > 0 (got -1)"
    assert str(FieldError(Source("a.yaml"), "", "boom")) == "a.yaml: boom"
    quoted = FieldError(Source("a.yaml", 1), "p", "bad", 'say "hi"')
    assert quoted.render().endswith('(got "say \\"hi\\"")')
    ist = FieldError(
        Source("r.yaml", 12),
        "spec.x",
        'Referenced subset not found: "v3"',
        None,
        "VirtualService default/reviews",
        Level.ERROR,
        "IST0101",
    )
    assert (
        ist.render()
        == 'Error [IST0101] (VirtualService default/reviews r.yaml:12) Referenced subset not found: "v3"'
    )


def test_validation_collects_by_level_and_empty_in_empty_out() -> None:
    v = Validation()
    assert v.ok and v.messages() == [] and v.render() == ""
    v.add(FieldError(Source("a"), "", "w", level=Level.WARNING))
    v.add(FieldError(Source("a"), "", "i", level=Level.INFO))
    assert v.ok
    v.add(FieldError(Source("a"), "", "e"))
    assert not v.ok
    assert [m.message for m in v.messages()] == ["e", "w", "i"]
    other = Validation()
    other.extend(v)
    assert (len(other.errors), len(other.warnings), len(other.infos)) == (1, 1, 1)


def test_source_line_of_falls_back_to_deepest_known_prefix() -> None:
    src = Source("f.yaml", 3, {("spec",): 5, ("spec", "http"): 7, ("spec", "http", 0): 8})
    assert src.line_of(("spec", "http", 0, "route", 2, "weight")) == 8
    assert src.line_of(("metadata",)) == 3
    assert src == Source("f.yaml", 3) and str(src) == "f.yaml:3"
