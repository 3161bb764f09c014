"""The pass-through check of request header names (proxy/adapters/exchange.py ``_no_unsafe_name``).

It walks the head's names (a short head) or looks the unsafe ones up in it: both ways must answer as
``dict.keys().isdisjoint`` would, for heads shorter and longer than where it switches and the unsafe set.
"""

from __future__ import annotations

import pytest

from meshbus.proxy.adapters.exchange import _RAW_UNSAFE, _RAW_UNSAFE_NAMES, _no_unsafe_name

pytestmark = pytest.mark.unit

FILLER = [f"x-filler-{i}" for i in range(2 * len(_RAW_UNSAFE_NAMES))] + ["connection", "host"]


@pytest.mark.parametrize("size", range(len(FILLER) + 1))
def test_answers_as_isdisjoint_for_heads_of_every_size(size: int) -> None:
    safe = dict.fromkeys(FILLER[:size], "v")
    assert _no_unsafe_name(safe) is True
    for name in _RAW_UNSAFE:
        head = dict(safe)
        head[name] = "v"
        assert _no_unsafe_name(head) is head.keys().isdisjoint(_RAW_UNSAFE) is False
