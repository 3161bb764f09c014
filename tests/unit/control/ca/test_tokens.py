"""Bootstrap token rules: bound to one identity, expiry, max uses, secret checked, no use on failure."""

from __future__ import annotations

import pytest

from meshbus.bus.errors import PermissionDeniedError
from meshbus.bus.spiffe import SpiffeId
from meshbus.control.ca import tokens
from meshbus.control.ca.errors import (
    IdentityMismatchError,
    TokenExhaustedError,
    TokenExpiredError,
    TokenInvalidError,
)

WEB = SpiffeId.workload("cluster.local", "default", "web")
DB = SpiffeId.workload("cluster.local", "default", "db")


def test_mint_then_consume_counts_uses() -> None:
    token, record = tokens.mint(WEB, ttl_s=3600, max_uses=2, now=1000.0)
    token_id, secret = tokens.parse(token)
    assert token_id == record.token_id and secret not in record.to_bytes().decode(errors="ignore")
    once = tokens.consume(record, secret, WEB, now=1001.0)
    twice = tokens.consume(once, secret, WEB, now=1002.0)
    assert (once.uses, twice.uses) == (1, 2)
    with pytest.raises(TokenExhaustedError, match="already used 2 time"):
        tokens.consume(twice, secret, WEB, now=1003.0)


def test_record_round_trips_through_bytes() -> None:
    _token, record = tokens.mint(WEB, ttl_s=60, max_uses=3, now=5.0)
    assert tokens.TokenRecord.from_bytes(record.to_bytes()) == record


def test_wrong_identity_is_refused_without_using_the_token() -> None:
    token, record = tokens.mint(WEB, ttl_s=3600, max_uses=1, now=0.0)
    _id, secret = tokens.parse(token)
    with pytest.raises(IdentityMismatchError) as info:
        tokens.consume(record, secret, DB, now=1.0)
    assert "bound to spiffe://cluster.local/ns/default/sa/web" in str(info.value)
    assert "asks for spiffe://cluster.local/ns/default/sa/db" in str(info.value)
    assert info.value.code == "identity_mismatch"
    assert record.uses == 0
    assert tokens.consume(record, secret, WEB, now=1.0).uses == 1  # still usable by the right identity


def test_expired_token_is_refused() -> None:
    token, record = tokens.mint(WEB, ttl_s=60, max_uses=5, now=0.0)
    _id, secret = tokens.parse(token)
    with pytest.raises(TokenExpiredError, match="expired 40s ago") as info:
        tokens.consume(record, secret, WEB, now=100.0)
    assert info.value.code == "token_expired"


def test_wrong_secret_and_garbage_are_invalid() -> None:
    token, record = tokens.mint(WEB, ttl_s=60, max_uses=5, now=0.0)
    other, _ = tokens.mint(WEB, ttl_s=60, max_uses=5, now=0.0)
    _id, other_secret = tokens.parse(other)
    with pytest.raises(TokenInvalidError):
        tokens.consume(record, other_secret, WEB, now=1.0)
    for bad in ("", "mbt1.x.y", token + "x", token.replace("mbt1", "mbt2")):
        with pytest.raises(TokenInvalidError) as info:
            tokens.parse(bad)
        assert "mbt1" in str(info.value)
    assert isinstance(TokenInvalidError("x"), PermissionDeniedError)


def test_secret_is_checked_before_anything_else() -> None:
    # an attacker guessing ids learns nothing about expiry/uses/identity of a real token
    _token, record = tokens.mint(WEB, ttl_s=1, max_uses=1, now=0.0)
    with pytest.raises(TokenInvalidError):
        tokens.consume(record, "A" * 43, DB, now=99.0)


@pytest.mark.parametrize(("ttl", "uses"), [(0, 1), (31 * 86400, 1), (60, 0), (60, -3)])
def test_mint_limits(ttl: float, uses: int) -> None:
    with pytest.raises(ValueError):
        tokens.mint(WEB, ttl_s=ttl, max_uses=uses, now=0.0)


def test_tokens_bind_workload_ids_only() -> None:
    with pytest.raises(ValueError, match="workload"):
        tokens.mint(SpiffeId.parse("spiffe://cluster.local/other"), ttl_s=60, max_uses=1, now=0.0)
