"""MetricBatch: a registry's values as plain, msgpack-able dicts, and merging batches into a registry.

A proxy ships *deltas* (:class:`DeltaTracker`) so the collector can add batches from many proxies and
from restarted ones without double counting; gauges travel as absolute values and the last one wins
(give per-proxy gauges a label that names the proxy). Shape::

    {"schema": "meshbus.telemetry.v1.MetricBatch",
     "metrics": [{"name", "type": "counter"|"gauge"|"histogram", "help", "labels": [names],
                  "buckets": [bounds]            # histograms only
                  "series": [[[label values], value]]                      # counter / gauge
                         or [[[label values], [per-bucket counts, +Inf last], sum]]}]}   # histogram

Histogram counts are per bucket (not cumulative), as stored, so deltas and merges are element-wise.
"""

from __future__ import annotations

from typing import Any, Final

from meshbus.telemetry.errors import BatchError
from meshbus.telemetry.metrics import Counter, Family, Gauge, Histogram, HistogramChild, Registry

SCHEMA: Final = "meshbus.telemetry.v1.MetricBatch"

MetricBatch = dict[str, Any]


def _describe(family: Family) -> dict[str, Any]:
    d: dict[str, Any] = {
        "name": family.name,
        "type": family.kind,
        "help": family.help,
        "labels": list(family.label_names),
    }
    if isinstance(family, Histogram):
        d["buckets"] = list(family.buckets)
    return d


def snapshot(registry: Registry) -> MetricBatch:
    """Cumulative values of every series (families with no series are still described)."""
    metrics = []
    for family in registry.families():
        d = _describe(family)
        if isinstance(family, Histogram):
            d["series"] = [[list(k), list(c.counts), c.sum] for k, c in family.series()]
        else:
            d["series"] = [[list(k), c.value] for k, c in family.series()]
        metrics.append(d)
    return {"schema": SCHEMA, "metrics": metrics}


class DeltaTracker:
    """Turns a registry's cumulative values into deltas since the previous call (sender side)."""

    __slots__ = ("_last", "_registry")

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._last: dict[tuple[str, tuple[str, ...]], Any] = {}

    def delta(self) -> MetricBatch:
        """Counters and histograms changed since the last call, plus every gauge; unchanged omitted."""
        metrics = []
        last = self._last
        for family in self._registry.families():
            series: list[list[Any]] = []
            name = family.name
            if isinstance(family, Histogram):
                for k, h in family.series():
                    prev = last.get((name, k))
                    counts = list(h.counts)
                    if prev is None:
                        d_counts, d_sum = counts, h.sum
                    else:
                        d_counts = [a - b for a, b in zip(counts, prev[0], strict=True)]
                        d_sum = h.sum - prev[1]
                    if any(d_counts):
                        series.append([list(k), d_counts, d_sum])
                        last[(name, k)] = (counts, h.sum)
            elif isinstance(family, Gauge):
                series = [[list(k), c.value] for k, c in family.series()]
            else:
                for k, c in family.series():
                    d = c.value - last.get((name, k), 0)
                    if d:
                        series.append([list(k), d])
                        last[(name, k)] = c.value
            if series:
                metrics.append({**_describe(family), "series": series})
        return {"schema": SCHEMA, "metrics": metrics}


def _declare(registry: Registry, m: dict[str, Any]) -> Family:
    name, kind, labels = m["name"], m["type"], tuple(m["labels"])
    family = registry.get(name)
    if family is None:
        help_ = m.get("help", "")
        if kind == "counter":
            return registry.counter(name, help_, labels)
        if kind == "gauge":
            return registry.gauge(name, help_, labels)
        if kind == "histogram":
            return registry.histogram(name, help_, labels, m["buckets"])
        raise BatchError(f"{name}: unknown metric type {kind!r}")
    if family.kind != kind or family.label_names != labels:
        raise BatchError(
            f"{name}: batch has {kind}{list(labels)}, registry has {family.kind}{list(family.label_names)}"
        )
    if isinstance(family, Histogram) and tuple(float(b) for b in m["buckets"]) != family.buckets:
        raise BatchError(f"{name}: batch buckets {m['buckets']} differ from {list(family.buckets)}")
    return family


def merge(registry: Registry, batch: MetricBatch) -> None:
    """Add a batch into ``registry`` (collector side): counters and histograms add, gauges are set.

    Unknown metrics are declared from the batch. The whole batch is checked before anything is added,
    so a rejected batch leaves the registry unchanged (apart from newly declared, empty families).
    """
    if batch.get("schema") != SCHEMA:
        raise BatchError(f"not a MetricBatch (schema {batch.get('schema')!r}, want {SCHEMA!r})")
    plan: list[tuple[Family, list[Any]]] = []
    for m in batch["metrics"]:
        family = _declare(registry, m)
        width = len(family.buckets) + 1 if isinstance(family, Histogram) else 0
        for s in m["series"]:
            if len(s[0]) != len(family.label_names):
                raise BatchError(f"{family.name}: series labels {s[0]!r} do not match {family.label_names}")
            if width and len(s[1]) != width:
                raise BatchError(f"{family.name}: series has {len(s[1])} bucket counts, want {width}")
        plan.append((family, m["series"]))
    for family, series in plan:
        for s in series:
            child = family.labels(*s[0])
            if isinstance(child, HistogramChild):
                counts = child.counts
                for i, c in enumerate(s[1]):
                    counts[i] += c
                child.sum += s[2]
            elif isinstance(family, Counter):
                child.value += s[1]
            else:
                child.value = s[1]
