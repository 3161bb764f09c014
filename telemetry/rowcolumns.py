"""Access-log rows turned into columns for the bus, a column of one repeated value kept once.

A sidecar's access-log rows mostly repeat themselves: method, protocol, status, flags, authority,
upstream host and cluster, route, peer, direction are the same for most requests of a batch, while
start time, duration, request and trace ids change every time. Packed as rows (one JSON array per
request), every repeated string was written again per request: ~2,500 instructions a 24-field row,
the larger half of what an access log cost a request (bench/telemetry_cost.py --callgrind). Packed
as columns, a repeated value is written once per batch (bus.schemas.telemetry.ROWS_JSON_COLUMNS).

Compiled (setup.py NATIVE_MODULES): a loop over the rows' items, which interpreted would cost more
than it saves (transposing with ``zip(*rows)`` costs about as much as packing the rows).
"""

from __future__ import annotations

import math
import struct
import sys
from typing import Any, Final

_LE: Final = "@" if sys.byteorder == "little" else "<"
"""struct's byte order for little-endian doubles: native where that is little-endian, whose packer
copies each double as it is (``<`` converts each byte by byte: ~50 instructions a value more)."""


def columns(rows: list[tuple[Any, ...]], width: int = -1) -> list[list[Any]]:
    """``rows`` (tuples of one width) as columns: a column whose values are all equal (and of one type:
    ``1`` and ``1.0`` stay apart) is the one-item list ``[value]``, any other one all its values.
    With ``width`` >= 0, only the first ``width`` columns; without, rows of other widths are a
    ValueError (the first row's width would cut longer ones short)."""
    out: list[list[Any]] = []
    if not rows:
        return out
    first = rows[0]
    if width < 0:
        w = len(first)
        for r in rows:
            if len(r) != w:
                raise ValueError(f"rows of {w} and {len(r)} values")
    for i in range(len(first) if width < 0 else width):
        v = first[i]
        same = True
        if isinstance(v, str):  # most fields: compiled, a typed str compare, not a generic one
            for r in rows:
                x = r[i]
                if x is not v and not (isinstance(x, str) and x == v):
                    same = False
                    break
        else:
            for r in rows:
                x = r[i]
                if x is not v and not same_value(x, v):
                    same = False
                    break
        out.append([v] if same else [r[i] for r in rows])
    return out


def same_value(x: object, v: object) -> bool:
    """Whether ``x`` can ship as ``v`` does: equal, of one type (``1`` and ``1.0`` stay apart), and for
    floats of one sign (``-0.0`` equals ``0.0`` but is not read back as it)."""
    if isinstance(x, str):
        return isinstance(v, str) and x == v  # compiled: a typed str compare
    if type(x) is not type(v) or x != v:
        return False
    if isinstance(x, float) and isinstance(v, float):
        fx: float = x
        fv: float = v
        return fx != 0.0 or math.copysign(1.0, fx) == math.copysign(1.0, fv)
    return True


def float_columns(cols: list[Any]) -> tuple[list[Any], bytes]:
    """``cols`` (of :func:`columns`) for `ROWS_JSON_COLUMNS_3` (bus.schemas.telemetry): each column of
    more than one value, all finite floats (start times, durations), is replaced by its index among
    those, and their values are packed, in that order, as little-endian IEEE doubles.

    orjson spends ~50 ns formatting a float (shortest round-trip digits), ~5x what it spends on an id
    string, and a row has two: as doubles they are one C call a batch (struct's, ~30 instructions a
    value; array.fromlist parses each value with a format string, ~220), and the reader gets the very
    same floats back. Only exact, finite floats: an int stays an int, and NaN or infinity stays what
    JSON made of it (null), as with `ROWS_JSON_COLUMNS`.

    A column given as bytes is such a column already packed, more than one finite float as
    little-endian doubles (telemetry/logcolumns.py ``ship_columns``): its index, its bytes as they are."""
    out: list[Any] = []
    parts: list[bytes] = []
    values: list[Any] = []
    k = 0
    for col in cols:
        if isinstance(col, bytes):
            if values:  # the doubles stay in column order
                parts.append(_pack(values))
                values = []
            parts.append(col)
            out.append(k)
            k += 1
        elif len(col) > 1 and _finite_floats(col):
            values.extend(col)
            out.append(k)
            k += 1
        else:
            out.append(col)
    if values:
        parts.append(_pack(values))
    return out, b"".join(parts)


def _pack(values: list[Any]) -> bytes:
    return struct.pack(f"{_LE}{len(values)}d", *values)


def _finite_floats(col: list[Any]) -> bool:
    for x in col:
        if type(x) is not float:
            return False
        f: float = x
        if f - f != 0.0:  # NaN or an infinity (compiled: native arithmetic, no float object made)
            return False
    return True
