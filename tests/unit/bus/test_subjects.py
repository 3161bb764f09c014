import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshbus.bus.subjects import Subjects, escape_token, micro, unescape_token


def test_default_root_and_version() -> None:
    s = Subjects()
    assert s.xds_snapshot("node-1") == "mesh.v1.xds.snapshot.node-1"
    assert s.config("apply") == "mesh.v1.config.apply"
    assert s.ca("certify") == "mesh.v1.ca.certify"
    assert s.all() == "mesh.v1.>"


def test_custom_root_separates_meshes() -> None:
    assert Subjects("prod").xds_ack("n1") == "prod.v1.xds.ack.n1"
    assert Subjects("a.b").policy("check") == "a.b.v1.policy.check"


@pytest.mark.parametrize("bad", ["", "a b", "a.b", "a*", ">", "x\x00"])
def test_tokens_are_validated(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid subject"):
        Subjects().xds_snapshot(bad)


@pytest.mark.parametrize("bad", ["", "a..b", ".a", "a.", "a b", "a.>"])
def test_root_is_validated(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid subject root"):
        Subjects(bad)


def test_filter_ids_are_escaped_into_one_token() -> None:
    subject = Subjects().filter_call("meshbus.filters.http.rate_limit")
    assert subject == "mesh.v1.filter.meshbus_dfilters_dhttp_drate__limit.call"
    assert len(subject.split(".")) == 5


@given(st.text(min_size=1, max_size=40))
def test_escape_round_trips_and_is_one_safe_token(value: str) -> None:
    token = escape_token(value)
    assert all(c.isascii() and (c.isalnum() or c in "-_") for c in token)
    assert unescape_token(token) == value


def test_escape_is_injective_on_tricky_pairs() -> None:
    assert escape_token("a.b") != escape_token("a_db")
    assert escape_token("a_d") != escape_token("a.")


def test_micro_subjects() -> None:
    assert micro("PING") == "$SRV.PING"
    assert micro("INFO", "meshbus-config") == "$SRV.INFO.meshbus-config"
    assert micro("STATS", "meshbus-config", "abc") == "$SRV.STATS.meshbus-config.abc"
