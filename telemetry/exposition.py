"""Render a :class:`~meshbus.telemetry.metrics.Registry`: Prometheus text 0.0.4, and Envoy-like /stats.

Pure functions over the registry, run off the request path (a scrape or an admin request). Follows
prometheus/docs ``exposition_formats.md``: one HELP and one TYPE line per metric before its samples,
the samples of one metric as one group, label values escaped (``\\``, ``"``, newline), histograms as
cumulative ``_bucket{le=...}`` in increasing ``le`` order ending with ``le="+Inf"`` equal to ``_count``,
then ``_sum`` and ``_count``; the text ends with a newline.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, Final

from meshbus.telemetry.metrics import Family, Histogram, HistogramChild, Registry

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

# Envoy's /stats histogram quantiles (admin "supported_quantiles").
STATS_QUANTILES: Final[tuple[float, ...]] = (0, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 100)


def escape_label_value(value: str) -> str:
    if "\\" not in value and '"' not in value and "\n" not in value:
        return value
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """A sample value as Prometheus reads it: ints without a fraction, ``+Inf``/``-Inf``/``NaN``."""
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


# Istio label sets are ~25 labels long and stable between scrapes, so their rendered form is cached
# (bounded: an evicted entry is just rendered again).
@lru_cache(maxsize=16384)
def label_body(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    return ",".join(f'{n}="{escape_label_value(v)}"' for n, v in zip(names, values, strict=True))


def _render_family(family: Family, out: list[str], header: bool = True) -> None:
    name = family.name
    if header:
        out.append(f"# HELP {name} {escape_help(family.help)}")
        out.append(f"# TYPE {name} {family.kind}")
    names = family.label_names
    if isinstance(family, Histogram):
        les = [format_value(b) for b in family.buckets]
        les.append("+Inf")
        for values, hchild in family.series():
            body = label_body(names, values)
            sep = "," if body else ""
            cumulative = hchild.cumulative()
            for le, c in zip(les, cumulative, strict=True):
                out.append(f'{name}_bucket{{{body}{sep}le="{le}"}} {c}')
            labels = f"{{{body}}}" if body else ""
            out.append(f"{name}_sum{labels} {format_value(hchild.sum)}")
            out.append(f"{name}_count{labels} {cumulative[-1]}")
        return
    for values, child in family.series():
        body = label_body(names, values)
        labels = f"{{{body}}}" if body else ""
        out.append(f"{name}{labels} {format_value(child.value)}")


def render_prometheus(registry: Registry) -> str:
    """The whole registry as Prometheus text exposition format 0.0.4 (see :data:`CONTENT_TYPE`)."""
    out: list[str] = []
    last = ""
    for family in registry.families():  # a name's variants follow it: one HELP/TYPE for them all
        _render_family(family, out, family.name != last)
        last = family.name
    return "\n".join(out) + "\n" if out else ""


# --- Envoy-like /stats -----------------------------------------------------------------------------------
def histogram_quantile(q: float, child: HistogramChild) -> float:
    """Estimate quantile ``q`` (0..1) from bucket counts with linear interpolation inside the bucket.

    Same rule as PromQL ``histogram_quantile``: the lowest bucket starts at 0, and a rank that falls in
    the +Inf bucket returns the highest finite bound. NaN when the histogram is empty.
    """
    cumulative = child.cumulative()
    total = cumulative[-1]
    if total == 0:
        return math.nan
    rank = q * total
    bounds = child.bounds
    for i, c in enumerate(cumulative):
        if c >= rank:
            if i == len(bounds):
                return bounds[-1]
            lower = bounds[i - 1] if i > 0 else 0.0
            below = cumulative[i - 1] if i > 0 else 0
            in_bucket = c - below
            if in_bucket == 0:
                return bounds[i]
            return lower + (bounds[i] - lower) * (rank - below) / in_bucket
    return bounds[-1]  # pragma: no cover - the last cumulative count equals the total


def _stat_name(family: Family, values: tuple[str, ...]) -> str:
    body = label_body(family.label_names, values)
    return f"{family.name}{{{body}}}" if body else family.name


def render_stats_text(registry: Registry) -> str:
    """Envoy ``/stats`` style: ``name: value`` per series; histograms as ``P50(v) ...`` quantile lists."""
    lines: list[str] = []
    for family in registry.families():
        for values, child in family.series():
            stat = _stat_name(family, values)
            if isinstance(child, HistogramChild):
                qs = " ".join(
                    f"P{format_value(q)}({format_value(histogram_quantile(q / 100, child))})"
                    for q in STATS_QUANTILES
                )
                lines.append(f"{stat}: {qs}")
            else:
                lines.append(f"{stat}: {format_value(child.value)}")
    return "\n".join(lines) + "\n" if lines else ""


def render_stats_json(registry: Registry) -> dict[str, Any]:
    """Envoy ``/stats?format=json`` shape: ``{"stats": [{"name", "value"}, ..., {"histograms": ...}]}``."""
    stats: list[dict[str, Any]] = []
    computed: list[dict[str, Any]] = []
    for family in registry.families():
        for values, child in family.series():
            stat = _stat_name(family, values)
            if isinstance(child, HistogramChild):
                qvals = [histogram_quantile(q / 100, child) for q in STATS_QUANTILES]
                computed.append(
                    {
                        "name": stat,
                        "values": [{"cumulative": None if math.isnan(v) else v} for v in qvals],
                        "count": child.count,
                        "sum": child.sum,
                    }
                )
            else:
                stats.append({"name": stat, "value": child.value})
    stats.append(
        {"histograms": {"supported_quantiles": list(STATS_QUANTILES), "computed_quantiles": computed}}
    )
    return {"stats": stats}
