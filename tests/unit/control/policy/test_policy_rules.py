"""meshbus-policy's sans-IO rules: when key sets are fetched and kept, and how leases are granted."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshbus.control.policy import jwks as rules
from meshbus.control.policy.ratelimit import grant, window_of

pytestmark = pytest.mark.unit

P = rules.JwksPolicy(refresh=1200, retry=60, retry_max=3600, max_age=86400)
SRC = "uri:https://idp.test/jwks.json"
KEYS = rules.check_jwks('{"keys": [{"kty": "EC"}]}')


def test_a_new_source_is_fetched_at_once_then_every_refresh_interval() -> None:
    assert rules.next_fetch(None, P) == 0
    rec = rules.fetched(None, SRC, KEYS, "https://idp.test/jwks.json", 1000.0, P)
    assert (rec.fetched_at, rec.expires_at, rec.failures) == (1000.0, 1000.0 + 86400, 0)
    assert rules.next_fetch(rec, P) == 1000.0 + 1200


def test_failures_back_off_from_one_minute_to_an_hour_and_keep_the_last_good_keys() -> None:
    rec = rules.fetched(None, SRC, KEYS, "u", 0.0, P)
    waits = []
    t = 1200.0
    for _ in range(9):
        rec = rules.failed(rec, SRC, "HTTP 500", t)
        waits.append(rules.next_fetch(rec, P) - t)
        t = rules.next_fetch(rec, P)
    assert waits == [60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]
    assert rec.jwks == KEYS and rec.error == "HTTP 500" and rec.failures == 9
    assert rec.usable(86399.0) and not rec.usable(86400.0)
    past = rules.failed(rec, SRC, "HTTP 500", 86400.0)  # past the maximum age: the keys go
    assert past.jwks == "" and not past.usable(86400.0)
    assert rules.next_fetch(rules.fetched(past, SRC, KEYS, "u", 90000.0, P), P) == 90000.0 + 1200


def test_a_source_that_never_worked_has_no_keys() -> None:
    rec = rules.failed(None, SRC, "connection refused", 5.0)
    assert rec.jwks == "" and rec.failures == 1 and not rec.usable(5.0)


@pytest.mark.parametrize("text", ["not json", "[]", '{"keys": {}}', '{"keys": []}', '{"nokeys": 1}'])
def test_what_is_not_a_key_set_is_a_failed_fetch(text: str) -> None:
    with pytest.raises(ValueError):
        rules.check_jwks(text)


def test_key_sets_are_stored_compact_and_sorted() -> None:
    assert json.loads(KEYS) == {"keys": [{"kty": "EC"}]} and " " not in KEYS


def test_windows_are_aligned_to_the_unit() -> None:
    assert window_of(125.5, 60) == (2, 54.5)
    assert window_of(86400 * 3 + 1, 86400) == (3, 86399)


def test_grants_shrink_as_the_window_fills() -> None:
    assert grant(0, 100, 10) == 10
    assert grant(80, 100, 10) == 10
    assert grant(85, 100, 10) == 7  # 15 left: half of it
    assert grant(98, 100, 10) == 1
    assert grant(99, 100, 10) == 1
    assert grant(100, 100, 10) == 0
    assert grant(120, 100, 10) == 0  # a lowered limit


@given(st.integers(1, 10_000), st.integers(1, 1000), st.lists(st.integers(1, 1000), min_size=1, max_size=200))
def test_grants_never_exceed_the_limit_whatever_is_asked(limit: int, start: int, asks: list[int]) -> None:
    count = min(start, limit)
    for hits in asks:
        g = grant(count, limit, hits)
        assert 0 <= g <= hits
        assert g >= 1 or count == limit  # while tokens are left, every ask gets one: the window fills
        count += g
        assert count <= limit
