"""Debounce push requests: a quiet period and a max delay (Istio ``debounce``), clock injected.

Rules:
- `add` merges the request into the pending one and remembers when the burst started and when the
  last event arrived.
- `poll(now)` releases the merged request once ``quiet`` seconds passed without a new event, or
  ``max_delay`` seconds passed since the burst started (a steady trickle still pushes).
- `deadline()` is the next instant `poll` may release something; the adapter sleeps until then.
No timers live here: the asyncio adapter owns waiting, tests drive the clock by hand.
"""

from __future__ import annotations

from dataclasses import dataclass

from .push_request import PushRequest


@dataclass(slots=True)
class Debouncer:
    quiet: float = 0.02
    max_delay: float = 0.5
    _pending: PushRequest | None = None
    _first: float = 0.0
    _last: float = 0.0
    events: int = 0
    """Events merged into the pending request."""

    def __post_init__(self) -> None:
        if self.quiet < 0 or self.max_delay < self.quiet:
            raise ValueError("meshbus: debounce needs 0 <= quiet <= max_delay")

    @property
    def pending(self) -> bool:
        return self._pending is not None

    def add(self, req: PushRequest, now: float) -> None:
        if self._pending is None:
            self._pending = req
            self._first = now
            self.events = 1
        else:
            self._pending = self._pending.merge(req)
            self.events += 1
        self._last = now

    def deadline(self) -> float | None:
        if self._pending is None:
            return None
        return min(self._last + self.quiet, self._first + self.max_delay)

    def poll(self, now: float) -> PushRequest | None:
        deadline = self.deadline()
        if deadline is None or now < deadline:
            return None
        req, self._pending = self._pending, None
        self.events = 0
        return req
