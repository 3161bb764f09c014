"""One pending push per node (Istio ``pushqueue.go``), sans-IO.

Rules:
- `enqueue(node, req)`: a node already waiting has its request merged (it keeps its place in
  line); a node being pushed right now gets the request parked and re-queued by `mark_done`, so a
  node never has two pushes in flight and never misses a change.
- `dequeue()` hands out the oldest waiting node (FIFO) and marks it in flight.
- `mark_done(node)` ends the in-flight push; a parked request goes to the back of the line.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from .push_request import PushRequest


@dataclass(slots=True)
class PushQueue:
    _waiting: OrderedDict[str, PushRequest] = field(default_factory=OrderedDict)
    _in_flight: dict[str, PushRequest | None] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self._waiting)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def enqueue(self, node: str, req: PushRequest) -> None:
        if node in self._in_flight:
            parked = self._in_flight[node]
            self._in_flight[node] = req if parked is None else parked.merge(req)
            return
        pending = self._waiting.get(node)
        self._waiting[node] = req if pending is None else pending.merge(req)

    def dequeue(self) -> tuple[str, PushRequest] | None:
        if not self._waiting:
            return None
        node, req = self._waiting.popitem(last=False)
        self._in_flight[node] = None
        return node, req

    def mark_done(self, node: str) -> None:
        parked = self._in_flight.pop(node, None)
        if parked is not None:
            self.enqueue(node, parked)

    def discard(self, node: str) -> None:
        """Forget a node that left (its in-flight push, if any, still ends with mark_done)."""
        self._waiting.pop(node, None)
        if node in self._in_flight:
            self._in_flight[node] = None
