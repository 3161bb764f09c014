"""The config model never goes back to an older KV revision of a key (a stale read after a reconnect)."""

from __future__ import annotations

import pytest

from meshbus.control.discovery.model import ConfigEntry, MeshModel
from tests.unit.control.discovery.helpers import model_of, vs

pytestmark = pytest.mark.timeout(10)


def weights(model: MeshModel, key: str) -> list[int]:
    e = model.entries[key]
    return [d["weight"] for d in e.value["spec"]["http"][0]["route"]]


def test_an_older_revision_of_a_key_is_ignored_and_a_newer_one_applies() -> None:
    m = model_of(vs("reviews", "reviews", ("v1", 100), ("v2", 0)), start_revision=7)
    (key,) = m.entries
    stale = m.apply([ConfigEntry.from_value(vs("reviews", "reviews", ("v1", 0), ("v2", 100)), 5)])
    assert stale.generation == m.generation and weights(stale, key) == [100, 0]
    newer = m.apply([ConfigEntry.from_value(vs("reviews", "reviews", ("v1", 0), ("v2", 100)), 9)])
    assert newer.generation != m.generation and weights(newer, key) == [0, 100]


def test_a_delete_older_than_the_entry_is_ignored() -> None:
    m = model_of(vs("reviews", "reviews", ("v1", 100)), start_revision=7)
    (key,) = m.entries
    assert key in m.apply(deletes=[(key, 6)]).entries  # e.g. a stale initial load that lacks the key
    assert key not in m.apply(deletes=[(key, 8)]).entries
