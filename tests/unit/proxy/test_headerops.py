from __future__ import annotations

import pytest

from meshbus.proxy.filters.headerops import EMPTY_HEADER_OPS, make_header_ops

pytestmark = pytest.mark.unit


def test_empty() -> None:
    assert EMPTY_HEADER_OPS.empty
    assert make_header_ops({}, {}, []) is EMPTY_HEADER_OPS
    h = [("a", "1")]
    assert EMPTY_HEADER_OPS.apply(h) == h


def test_set_replaces_all_values_case_insensitively() -> None:
    ops = make_header_ops({"X-A": "new"})
    assert ops.apply([("x-a", "1"), ("X-A", "2"), ("b", "3")]) == [("b", "3"), ("x-a", "new")]


def test_add_appends_and_remove_deletes() -> None:
    ops = make_header_ops(add={"x-a": "2"}, remove=["X-Gone"])
    assert ops.apply([("x-a", "1"), ("x-gone", "y")]) == [("x-a", "1"), ("x-a", "2")]


def test_remove_before_add() -> None:
    # Envoy applies removals first, so a header both removed and added ends up with the added value.
    ops = make_header_ops(add={"x-a": "new"}, remove=["x-a"])
    assert ops.apply([("x-a", "old")]) == [("x-a", "new")]


def test_input_not_mutated() -> None:
    h = [("a", "1")]
    make_header_ops({"a": "2"}).apply(h)
    assert h == [("a", "1")]


def test_then_composes_in_order() -> None:
    first = make_header_ops({"x": "1"}, {"y": "a"}, ["z"])
    second = make_header_ops({"y": "b"}, remove=["w"])
    h = [("z", "0"), ("w", "0"), ("k", "v")]
    assert first.then(second).apply(h) == second.apply(first.apply(h))
