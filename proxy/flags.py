"""Envoy-style response flags: the short reason a request did not get a plain upstream answer.

Sent to the client in ``x-meshbus-flags`` on every locally generated reply, and recorded in the
access log and in the ``response_flags`` metric label ("-" when no flag applies, like Envoy).
proxy-core may import these constants; nothing here does I/O.
"""

from __future__ import annotations

FLAGS_HEADER = "x-meshbus-flags"
NO_FLAGS = "-"

NR = "NR"  # no route matched (404)
UH = "UH"  # no healthy upstream (503)
UF = "UF"  # upstream connect failure (503)
UO = "UO"  # overflow: circuit breaker / pending queue full (503)
UT = "UT"  # upstream request timeout (504)
URX = "URX"  # retry limit exceeded (upstream kept failing)
UC = "UC"  # upstream connection termination (503)
UPE = "UPE"  # upstream protocol error (502)
RL = "RL"  # rate limited locally (429)
FI = "FI"  # fault injection abort
DI = "DI"  # fault injection delay
DC = "DC"  # downstream closed before the response completed

# Status and short body of each local reply, keyed by flag. The body is what curl shows a user,
# so it says what happened in words, as Envoy does ("no healthy upstream").
LOCAL_REPLIES: dict[str, tuple[int, str]] = {
    NR: (404, "no route\n"),
    UH: (503, "no healthy upstream\n"),
    UF: (
        503,
        "upstream connect error or disconnect/reset before headers. reset reason: connection failure\n",
    ),
    UO: (503, "upstream connect error or disconnect/reset before headers. reset reason: overflow\n"),
    UT: (504, "upstream request timeout\n"),
    UC: (
        503,
        "upstream connect error or disconnect/reset before headers. reset reason: connection termination\n",
    ),
    UPE: (502, "upstream protocol error\n"),
    RL: (429, "local_rate_limited\n"),
    FI: (503, "fault filter abort\n"),
}


def join(flags: list[str] | tuple[str, ...]) -> str:
    """Flags as logged and labelled: comma-joined in the order they happened, "-" when none."""
    return ",".join(flags) if flags else NO_FLAGS
