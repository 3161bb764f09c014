"""Durations on the command line: Go style ("90s", "1h30m") plus days ("90d"), as Istio's flags."""

from __future__ import annotations

import re

_UNITS = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(text: str) -> float:
    """Seconds in ``text``; ValueError (meshbus-prefixed) on anything else, including a bare number."""
    value = text.strip()
    pos, total = 0, 0.0
    for m in _PART.finditer(value):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not value or pos != len(value):
        raise ValueError(
            f"meshbus: invalid duration {text!r}: use a number and a unit (d, h, m, s, ms), like 24h"
        )
    if total <= 0:
        raise ValueError(f"meshbus: duration {text!r} must be positive")
    return total


def format_duration(seconds: float) -> str:
    """Compact human form: 90061 -> "1d1h1m1s"; under a second -> "250ms"."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    out, rest = [], round(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        n, rest = divmod(rest, size)
        if n:
            out.append(f"{n}{unit}")
    return "".join(out) or "0s"
