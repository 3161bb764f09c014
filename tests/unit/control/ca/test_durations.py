from __future__ import annotations

import pytest

from meshbus.control.ca.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"), [("24h", 86400), ("90d", 90 * 86400), ("1h30m", 5400), ("250ms", 0.25)]
)
def test_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10", "1y", "h", "-1h", "0s", "1h 2m"])
def test_parse_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="meshbus: "):
        parse_duration(text)


def test_format() -> None:
    assert format_duration(90061) == "1d1h1m1s"
    assert format_duration(0.25) == "250ms"
    assert format_duration(3600) == "1h"
