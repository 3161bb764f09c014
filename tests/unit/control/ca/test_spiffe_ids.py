"""SPIFFE ID rules (spiffe/spiffe standards/SPIFFE-ID.md) as meshbus.bus.spiffe implements them."""

from __future__ import annotations

import pytest

from meshbus.bus.spiffe import InvalidSpiffeIdError, SpiffeId, validate_trust_domain


@pytest.mark.parametrize(
    ("value", "td", "path"),
    [
        ("spiffe://cluster.local/ns/default/sa/web", "cluster.local", "/ns/default/sa/web"),
        ("spiffe://cluster.local", "cluster.local", ""),
        ("spiffe://a-b_c.9/x/Y.z/-_", "a-b_c.9", "/x/Y.z/-_"),
    ],
)
def test_valid_ids_round_trip(value: str, td: str, path: str) -> None:
    sid = SpiffeId.parse(value)
    assert (sid.trust_domain, sid.path) == (td, path)
    assert str(sid) == value


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("http://cluster.local/ns/a/sa/b", "scheme"),
        ("SPIFFE://cluster.local/ns/a/sa/b", "scheme"),
        ("spiffe:///ns/a/sa/b", "trust domain is empty"),
        ("spiffe://Cluster.local/ns/a", "lowercase"),
        ("spiffe://cluster.local:8080/ns/a", "port"),
        ("spiffe://user@cluster.local/ns/a", "userinfo"),
        ("spiffe://cluster.local/ns/a/", "trailing"),
        ("spiffe://cluster.local/", "end with '/'"),
        ("spiffe://cluster.local//ns/a", "empty"),
        ("spiffe://cluster.local/ns/./a", "'.' or '..'"),
        ("spiffe://cluster.local/ns/../a", "'.' or '..'"),
        ("spiffe://cluster.local/ns/a%20b", "percent"),
        ("spiffe://cluster.local/ns/a?x=1", "query"),
        ("spiffe://cluster.local/ns/a#frag", "fragment"),
        ("spiffe://cluster.local/ns/a b", "segment"),
        ("spiffe://cluster.local/" + "a" * 2100, "2048"),
    ],
)
def test_invalid_ids_say_which_rule(value: str, why: str) -> None:
    with pytest.raises(InvalidSpiffeIdError) as info:
        SpiffeId.parse(value)
    assert why in str(info.value)
    assert str(info.value).startswith("meshbus: ")


def test_ids_up_to_2048_bytes_are_supported() -> None:
    value = "spiffe://cluster.local/" + "a" * (2048 - len("spiffe://cluster.local/"))
    assert len(str(SpiffeId.parse(value))) == 2048


def test_workload_shape_and_parts() -> None:
    sid = SpiffeId.workload("cluster.local", "bookinfo", "reviews")
    assert str(sid) == "spiffe://cluster.local/ns/bookinfo/sa/reviews"
    assert sid.is_workload and sid.namespace == "bookinfo" and sid.service_account == "reviews"
    assert sid.principal == "cluster.local/ns/bookinfo/sa/reviews"
    other = SpiffeId.parse("spiffe://cluster.local/workload/x")
    assert not other.is_workload and other.namespace == ""
    assert str(SpiffeId.of_trust_domain("cluster.local")) == "spiffe://cluster.local"


def test_workload_refuses_bad_names() -> None:
    with pytest.raises(InvalidSpiffeIdError):
        SpiffeId.workload("cluster.local", "a/b", "web")
    with pytest.raises(InvalidSpiffeIdError):
        validate_trust_domain("")
