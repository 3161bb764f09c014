"""A strict, independent reader of Prometheus text format 0.0.4 for tests (not a copy of the renderer).

It raises AssertionError on every rule of prometheus/docs ``exposition_formats.md`` that the renderer must
keep: HELP/TYPE at most once and before the samples, one uninterrupted group per metric, unique
name+labelset, label value escapes limited to \\\\, \\" and \\n, a trailing newline.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE_RE = re.compile(rf"({_NAME})(\{{(.*)\}})? (\S+)( -?\d+)?\Z")
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|\Z)')
_SUFFIXES = ("_bucket", "_sum", "_count")


@dataclass
class Metric:
    name: str
    help: str | None = None
    type: str = "untyped"
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)


def unescape(value: str) -> str:
    return re.sub(r"\\([\\\"n])", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def parse_value(text: str) -> float:
    if text in ("+Inf", "-Inf", "NaN"):
        return {"+Inf": math.inf, "-Inf": -math.inf, "NaN": math.nan}[text]
    return float(text)


def parse_labels(body: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    pos = 0
    while pos < len(body):
        m = _LABEL_RE.match(body, pos)
        assert m is not None, f"bad label syntax at {body[pos:]!r}"
        assert m.group(1) not in labels, f"duplicate label {m.group(1)}"
        labels[m.group(1)] = unescape(m.group(2))
        pos = m.end()
    return labels


def _family_of(sample_name: str, families: dict[str, Metric]) -> str:
    for suffix in _SUFFIXES:
        base = sample_name.removesuffix(suffix)
        if base != sample_name and families.get(base) is not None and families[base].type == "histogram":
            return base
    return sample_name


def parse(text: str) -> dict[str, Metric]:
    assert text == "" or text.endswith("\n"), "exposition must end with a newline"
    families: dict[str, Metric] = {}
    finished: set[str] = set()
    current: str | None = None
    seen_series: set[tuple[str, tuple[tuple[str, str], ...]]] = set()

    def switch(name: str) -> None:
        nonlocal current
        if current != name:
            assert name not in finished, f"metric {name} is not one uninterrupted group"
            if current is not None:
                finished.add(current)
            current = name

    for line in text.split("\n")[:-1]:  # \n only: a \r inside a label value is data
        assert line, "empty line"
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            kind, rest = line[2:6], line[7:]
            name, _, value = rest.partition(" ")
            switch(name)
            m = families.setdefault(name, Metric(name))
            assert not m.samples, f"{kind} for {name} after its samples"
            if kind == "HELP":
                assert m.help is None, f"second HELP for {name}"
                assert re.fullmatch(r"(?:[^\\\n]|\\[\\n])*", value), f"bad HELP escape {value!r}"
                m.help = unescape(value)
            else:
                assert m.type == "untyped", f"second TYPE for {name}"
                assert value in ("counter", "gauge", "histogram", "summary", "untyped"), value
                m.type = value
            continue
        assert not line.startswith("#"), f"unexpected comment {line!r}"
        sm = _SAMPLE_RE.match(line)
        assert sm is not None, f"bad sample line {line!r}"
        sample_name, body, value = sm.group(1), sm.group(3) or "", sm.group(4)
        labels = parse_labels(body)
        fam = _family_of(sample_name, families)
        switch(fam)
        key = (sample_name, tuple(sorted(labels.items())))
        assert key not in seen_series, f"duplicate series {key}"
        seen_series.add(key)
        families.setdefault(fam, Metric(fam)).samples.append((sample_name, labels, parse_value(value)))
    return families


def check_histogram(m: Metric) -> dict[tuple[tuple[str, str], ...], dict[str, object]]:
    """Per label set: buckets [(le, count)], sum, count; asserts the histogram invariants."""
    out: dict[tuple[tuple[str, str], ...], dict[str, object]] = {}
    for name, sample_labels, value in m.samples:
        labels = dict(sample_labels)
        le = labels.pop("le", None)
        key = tuple(sorted(labels.items()))
        entry = out.setdefault(key, {"buckets": [], "sum": None, "count": None})
        if name == m.name + "_bucket":
            assert le is not None, "bucket without le"
            entry["buckets"].append((parse_value(le), value))  # type: ignore[union-attr]
        elif name == m.name + "_sum":
            entry["sum"] = value
        elif name == m.name + "_count":
            entry["count"] = value
        else:
            raise AssertionError(f"unexpected sample {name} in histogram {m.name}")
    for key, entry in out.items():
        buckets = entry["buckets"]
        assert isinstance(buckets, list) and buckets, f"{key}: no buckets"
        les = [b[0] for b in buckets]
        counts = [b[1] for b in buckets]
        assert les == sorted(les) and len(set(les)) == len(les), f"{key}: le not increasing"
        assert les[-1] == math.inf, f"{key}: no +Inf bucket"
        assert counts == sorted(counts), f"{key}: buckets not cumulative"
        assert entry["count"] == counts[-1], f"{key}: +Inf bucket != _count"
        assert entry["sum"] is not None, f"{key}: no _sum"
    return out
