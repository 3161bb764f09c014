from __future__ import annotations

import pytest

from meshbus.proxy.core.hosts import (
    authority_aliases,
    host_matches,
    normalize_authority,
    resolve_host,
    split_authority,
)

pytestmark = pytest.mark.unit


def test_resolve_short_name_in_namespace() -> None:
    assert resolve_host("reviews", "default") == "reviews.default.svc.cluster.local"
    assert resolve_host("reviews", "prod") == "reviews.prod.svc.cluster.local"


def test_resolve_leaves_dotted_names_alone() -> None:
    # Istio expands only dotless names; "reviews.default" is taken as written.
    assert resolve_host("api.example.com", "default") == "api.example.com"
    assert resolve_host("Reviews.Default.svc.cluster.local.", "x") == "reviews.default.svc.cluster.local"
    assert resolve_host("*.example.com", "default") == "*.example.com"


@pytest.mark.parametrize(
    ("authority", "expected"),
    [
        ("reviews", ("reviews.default.svc.cluster.local", None)),
        ("reviews:9080", ("reviews.default.svc.cluster.local", 9080)),
        ("reviews.default.svc:9080", ("reviews.default.svc.cluster.local", 9080)),
        ("REVIEWS.default.svc.cluster.local", ("reviews.default.svc.cluster.local", None)),
        ("example.com:443", ("example.com", 443)),
        ("[::1]:8080", ("::1", 8080)),
        ("10.0.0.1:80", ("10.0.0.1", 80)),
        ("host:notaport", ("host.default.svc.cluster.local", None)),
    ],
)
def test_normalize_authority(authority: str, expected: tuple[str, int | None]) -> None:
    assert normalize_authority(authority, "default") == expected


def test_split_authority_bare_ipv6_has_no_port() -> None:
    assert split_authority("::1") == ("::1", None)
    assert split_authority("example.com.:80") == ("example.com", 80)


def test_aliases_same_namespace_include_short_name() -> None:
    aliases = authority_aliases("reviews.default.svc.cluster.local", "default")
    assert set(aliases) == {
        "reviews.default.svc.cluster.local",
        "reviews.default.svc",
        "reviews.default",
        "reviews",
    }


def test_aliases_other_namespace_exclude_short_name() -> None:
    aliases = authority_aliases("reviews.prod.svc.cluster.local", "default")
    assert "reviews" not in aliases
    assert "reviews.prod" in aliases


def test_aliases_of_external_host_are_just_the_host() -> None:
    assert authority_aliases("api.example.com", "default") == ["api.example.com"]


def test_host_wildcards() -> None:
    assert host_matches("*", "anything.io")
    assert host_matches("*.example.com", "a.example.com")
    assert not host_matches("*.example.com", "example.com")
    assert not host_matches("a.example.com", "b.example.com")
