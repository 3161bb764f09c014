"""Envoy-style response flags: the short reason a request did not get a plain upstream answer.

Sent to the client in ``x-meshbus-flags`` on every locally generated reply, and recorded in the
access log and in the ``response_flags`` metric label ("-" when no flag applies, like Envoy).
proxy-core may import these constants; nothing here does I/O.
"""

from __future__ import annotations

from typing import Final

FLAGS_HEADER: Final = "x-meshbus-flags"
NO_FLAGS: Final = "-"

NR: Final = "NR"  # no route matched (404)
UH: Final = "UH"  # no healthy upstream (503)
UF: Final = "UF"  # upstream connect failure (503)
UO: Final = "UO"  # overflow: circuit breaker / pending queue full (503)
UT: Final = "UT"  # upstream request timeout (504)
URX: Final = "URX"  # retry limit exceeded (upstream kept failing)
UC: Final = "UC"  # upstream connection termination (503)
UPE: Final = "UPE"  # upstream protocol error (502)
RL: Final = "RL"  # rate limited locally (429)
FI: Final = "FI"  # fault injection abort
DI: Final = "DI"  # fault injection delay
DC: Final = "DC"  # downstream closed before the response completed
DPE: Final = "DPE"  # downstream protocol error: the request failed to parse after its head (a bad chunk, trailers over the limit)
FF: Final = "FF"  # meshbus's own: a plugin filter failed (raised, ran past its timeout, host unreachable)
UAEX: Final = "UAEX"  # denied by an external authorization service (AuthorizationPolicy CUSTOM)

# Status and short body of each local reply, keyed by flag. The body is what curl shows a user,
# so it says what happened in words, as Envoy does ("no healthy upstream").
LOCAL_REPLIES: Final[dict[str, tuple[int, str]]] = {
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
