"""bus/inline.py's reading of a MSG line's sid and size: the same verdict as ``isdigit`` then ``int``."""

from __future__ import annotations

import pytest

from meshbus.bus.inline import _number


@pytest.mark.parametrize(
    "field",
    [
        b"0",
        b"7",
        b"42",
        b"1048576",
        b"9" * 18,
        b"",
        b"-1",
        b"+1",
        b" 1",
        b"1 ",
        b"1a",
        b"0x1",
        b"\xd9\xa1",
        b"1_0",
    ],
)
def test_a_field_reads_as_isdigit_then_int_would(field: bytes) -> None:
    assert _number(field) == (int(field) if field.isdigit() else -1)


def test_a_field_past_eighteen_digits_is_left_to_nats_py() -> None:
    assert _number(b"1" * 19) == -1  # no size or sid is that long: nats-py's parser says what it is
