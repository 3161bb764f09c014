"""The one host resolver (bus/config/hosts.py): discovery scopes with it, the proxy builds and routes with it.

It merges two resolvers that had drifted apart (proxy/core/hosts.py and bus/config/hosts.py); the
tests marked "was:" pin each edge case on which they differed, with the behaviour kept and why.
"""

from __future__ import annotations

import pytest

from meshbus.bus.config.hosts import authority_aliases, host_matches, looks_external, split_authority, to_fqdn

pytestmark = pytest.mark.unit


def test_short_name_resolves_in_the_resource_namespace() -> None:
    assert to_fqdn("reviews", "default") == "reviews.default.svc.cluster.local"
    assert to_fqdn("reviews", "prod") == "reviews.prod.svc.cluster.local"


def test_dotted_names_wildcards_and_ipv4_are_taken_as_written() -> None:
    # Istio expands only dotless names; "reviews.default" is taken as written.
    assert to_fqdn("reviews.default", "x") == "reviews.default"
    assert to_fqdn("api.example.com", "default") == "api.example.com"
    assert to_fqdn("*.example.com", "default") == "*.example.com"
    assert to_fqdn("*", "default") == "*"
    assert to_fqdn("10.0.0.1", "default") == "10.0.0.1"


def test_case_and_trailing_dot_do_not_make_another_host() -> None:
    # Both resolvers agreed: DNS names are case-insensitive and "example.com." is example.com.
    assert to_fqdn("Reviews.Default.svc.cluster.local.", "x") == "reviews.default.svc.cluster.local"
    assert to_fqdn("Reviews", "default") == "reviews.default.svc.cluster.local"


def test_empty_host_stays_empty() -> None:
    # was: the proxy made ".default.svc.cluster.local" of it, discovery "". Kept "" (Istio's
    # ResolveShortnameToFQDN returns it unchanged): an absent name must not become a service name.
    assert to_fqdn("", "default") == ""


def test_whitespace_is_not_trimmed() -> None:
    # was: the proxy trimmed it, discovery did not, so they resolved " reviews" to different hosts.
    # Kept discovery's (and Istio's) reading: validation refuses such a host (host_problem), and a
    # name that is not a DNS name must not quietly turn into a service name here.
    assert to_fqdn(" reviews", "default") == " reviews.default.svc.cluster.local"
    assert to_fqdn(" reviews", "default") != to_fqdn("reviews", "default")


@pytest.mark.parametrize("literal", ["fd00::1", "::1", "2001:DB8::1"])
def test_ipv6_literal_is_not_a_short_name(literal: str) -> None:
    # was: both expanded a dotless IPv6 literal into "fd00::1.default.svc.cluster.local". Istio keeps
    # IP addresses as written (netutil.IsValidIPAddress), and validation accepts them as hosts.
    assert to_fqdn(literal, "default") == literal.lower()


def test_wildcards() -> None:
    assert host_matches("*", "anything.io")
    assert host_matches("*.example.com", "a.example.com")
    assert host_matches("*.example.com", "a.b.example.com")  # any depth, as Istio's suffix match
    assert not host_matches("*.example.com", "example.com")
    assert not host_matches("*.example.com", "badexample.com")
    assert not host_matches("a.example.com", "b.example.com")
    # A wildcard host under a wildcard pattern (discovery asks both ways for Istio's overlap).
    assert host_matches("*.example.com", "*.a.example.com")
    assert not host_matches("*.a.example.com", "*.example.com")


def test_external_names() -> None:
    assert looks_external("www.googleapis.com")
    assert not looks_external("reviews.default.svc.cluster.local")
    assert not looks_external("reviews")


@pytest.mark.parametrize(
    ("authority", "expected"),
    [
        ("reviews", ("reviews", None)),
        ("reviews:9080", ("reviews", 9080)),
        ("REVIEWS.default.svc.cluster.local", ("reviews.default.svc.cluster.local", None)),
        ("example.com.:80", ("example.com", 80)),
        ("example.com:443", ("example.com", 443)),
        ("[::1]:8080", ("::1", 8080)),
        ("[::1]", ("::1", None)),
        ("::1", ("::1", None)),  # a bare IPv6 literal has no port
        ("10.0.0.1:80", ("10.0.0.1", 80)),
        ("host:notaport", ("host", None)),
        ("host:0", ("host", None)),
        ("host:65536", ("host", None)),
        # a client's Host header: str.isdigit() takes these, int() refuses the first and reads the second
        ("host:²", ("host", None)),
        ("host:٣", ("host", None)),
    ],
)
def test_split_authority(authority: str, expected: tuple[str, int | None]) -> None:
    assert split_authority(authority) == expected


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
