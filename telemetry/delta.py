"""What changed in a registry since the last batch: the deltas a proxy ships (sans-IO).

``collect()`` walks every counter and histogram series once (cost: the number of series, not of
requests) and returns the families with a non-zero change plus a token; ``commit(token)`` makes
that the new baseline. A batch that could not be sent is not committed, so its changes go out with
the next one: a short bus outage loses nothing. Gauges do not add up across proxies and are not
shipped.
"""

from __future__ import annotations

from typing import Any

from meshbus.bus.schemas.telemetry import FamilyDelta
from meshbus.telemetry.metrics import CounterChild, Histogram, HistogramChild, Registry

Baseline = dict[int, tuple[Any, Any]]
"""id(child) -> (child, value at the last commit): the child is held so its id is not reused."""


class DeltaTracker:
    __slots__ = ("_last", "registry")

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._last: Baseline = {}

    def collect(self) -> tuple[list[FamilyDelta], Baseline]:
        """(families with changes, the baseline to commit once they are sent)."""
        out: list[FamilyDelta] = []
        seen: Baseline = {}
        last = self._last
        for family in self.registry.families():
            if family.kind == "gauge":
                continue
            samples: list[list[Any]] = []
            for values, child in family.series():
                key = id(child)
                prev = last.get(key)
                if isinstance(child, HistogramChild):
                    counts = list(child.counts)
                    now: Any = (counts, child.sum)
                    if prev is None:
                        delta = counts
                        dsum = child.sum
                    else:
                        delta = [a - b for a, b in zip(counts, prev[1][0], strict=True)]
                        dsum = child.sum - prev[1][1]
                    if any(delta):
                        samples.append([list(values), delta, dsum])
                elif isinstance(child, CounterChild):
                    now = child.value
                    d = now - (prev[1] if prev is not None else 0)
                    if d:
                        samples.append([list(values), d])
                else:
                    continue
                seen[key] = (child, now)
            if samples:
                buckets = list(family.buckets) if isinstance(family, Histogram) else []
                out.append(
                    FamilyDelta(
                        family.name, family.kind, family.help, list(family.label_names), buckets, samples
                    )
                )
        return out, seen

    def commit(self, baseline: Baseline) -> None:
        self._last = baseline
