"""The mesh-wide metrics one meshbus-telemetry replica holds (sans-IO: batches and ``now`` in).

``ingest(batch, now)`` adds a proxy's deltas to the merged series: a series is the same metric name,
label names and label values whoever reported it, and its value is the sum of every delta received
for it, so it only ever goes up (a counter Prometheus can ``rate()``). A proxy that sends nothing
for ``grace`` seconds (proxies send a batch every second, empty or not) is forgotten: the series
only it contributed to disappear from ``render()``; a series another live proxy also feeds stays.

Several replicas: proxies publish to a queue group, so each batch is counted by exactly one replica.
Every replica's counters are therefore a part of the mesh's, each monotonic, and the parts add up
to the whole: Prometheus scrapes every replica (as it scrapes every pod of a Deployment) and the
Istio dashboards' queries, all ``sum(rate(...))``, give the mesh-wide figures. ``meshctl top`` and
the graph ask every replica (``StatsRequest``, no queue group) and add the answers up.

For them, the store also keeps the last ``horizon`` seconds of request traffic per edge (reporter,
source workload, destination workload and service), in one-second slots (`EdgeWindow`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from meshbus.bus.schemas.telemetry import EdgeStats, MetricBatch, edge_stats
from meshbus.telemetry import fields
from meshbus.telemetry.exposition import escape_help, format_value, label_body
from meshbus.telemetry.metrics import ISTIO_DEFAULT_BUCKETS

DEFAULT_GRACE_S: Final = 30.0
DEFAULT_HORIZON_S: Final = 300
REQUESTS: Final = "istio_requests_total"
DURATION: Final = "istio_request_duration_milliseconds"

EDGE_LABELS: Final[tuple[str, ...]] = (
    fields.REPORTER,
    fields.SOURCE_WORKLOAD,
    fields.SOURCE_WORKLOAD_NAMESPACE,
    fields.SOURCE_APP,
    fields.SOURCE_VERSION,
    fields.SOURCE_PRINCIPAL,
    fields.DESTINATION_WORKLOAD,
    fields.DESTINATION_WORKLOAD_NAMESPACE,
    fields.DESTINATION_APP,
    fields.DESTINATION_VERSION,
    fields.DESTINATION_SERVICE,
)
"""The labels an edge is keyed by, in `EdgeStats` field order."""

SeriesKey = tuple[str, tuple[str, ...], tuple[str, ...]]
"""(metric name, label names, label values)."""


@dataclass(slots=True)
class Family:
    name: str
    kind: str
    help: str
    buckets: tuple[float, ...] = ()
    series: dict[tuple[tuple[str, ...], tuple[str, ...]], list[Any]] = field(default_factory=dict)
    """(label names, values) -> [value] for a counter, [per-bucket counts (+Inf last), sum] for a histogram."""


@dataclass(slots=True)
class _Proxy:
    last_seen: float
    seq: int
    series: set[SeriesKey] = field(default_factory=set)


@dataclass(slots=True)
class _EdgeAcc:
    requests: int = 0
    errors: int = 0
    mtls: int = 0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(ISTIO_DEFAULT_BUCKETS) + 1))


class EdgeWindow:
    """Request traffic per edge in one-second slots, the last ``horizon`` seconds of it."""

    def __init__(self, horizon: int = DEFAULT_HORIZON_S) -> None:
        self.horizon = horizon
        self.slots: deque[tuple[int, dict[tuple[str, ...], _EdgeAcc]]] = deque()

    def _slot(self, now: float) -> dict[tuple[str, ...], _EdgeAcc]:
        second = int(now)
        if not self.slots or self.slots[-1][0] != second:
            self.slots.append((second, {}))
            while self.slots and self.slots[0][0] <= second - self.horizon:
                self.slots.popleft()
        return self.slots[-1][1]

    def add_requests(self, edge: tuple[str, ...], code: str, security: str, n: int, now: float) -> None:
        acc = self._slot(now).setdefault(edge, _EdgeAcc())
        acc.requests += n
        if code == "0" or code.startswith("5"):
            acc.errors += n
        if security == fields.MUTUAL_TLS:
            acc.mtls += n

    def add_durations(self, edge: tuple[str, ...], counts: list[int], now: float) -> None:
        if len(counts) != len(ISTIO_DEFAULT_BUCKETS) + 1:
            return  # another bucket layout: not comparable
        acc = self._slot(now).setdefault(edge, _EdgeAcc())
        acc.buckets = [a + b for a, b in zip(acc.buckets, counts, strict=True)]

    def edges(self, window: float, now: float) -> list[EdgeStats]:
        since = int(now) - max(1, int(window))
        total: dict[tuple[str, ...], _EdgeAcc] = {}
        for second, slot in self.slots:
            if second <= since:
                continue
            for edge, acc in slot.items():
                t = total.setdefault(edge, _EdgeAcc())
                t.requests += acc.requests
                t.errors += acc.errors
                t.mtls += acc.mtls
                t.buckets = [a + b for a, b in zip(t.buckets, acc.buckets, strict=True)]
        return [edge_stats(edge, a.requests, a.errors, a.mtls, a.buckets) for edge, a in total.items()]


class MetricStore:
    def __init__(self, grace: float = DEFAULT_GRACE_S, horizon: int = DEFAULT_HORIZON_S) -> None:
        self.grace = grace
        self.families: dict[str, Family] = {}
        self.proxies: dict[str, _Proxy] = {}
        self.owners: dict[SeriesKey, int] = {}
        self.window = EdgeWindow(horizon)
        self.batches = 0
        self.missed = 0
        """Batches a proxy numbered but this replica never saw (another replica's, or lost)."""
        self.rejected = 0
        self._positions: dict[tuple[str, ...], tuple[int, ...] | None] = {}

    # -- ingest ----------------------------------------------------------------------------------
    def ingest(self, batch: MetricBatch, now: float) -> None:
        node = batch.source.node
        proxy = self.proxies.get(node)
        if proxy is None:
            proxy = self.proxies[node] = _Proxy(now, batch.seq)
        else:
            if batch.seq > proxy.seq + 1:
                self.missed += batch.seq - proxy.seq - 1
            proxy.seq = max(proxy.seq, batch.seq)
            proxy.last_seen = now
        self.batches += 1
        for fd in batch.families:
            if fd.kind not in ("counter", "histogram"):
                continue
            fam = self.families.get(fd.name)
            if fam is None:
                fam = self.families[fd.name] = Family(fd.name, fd.kind, fd.help, tuple(fd.buckets))
            elif fam.kind != fd.kind or (fd.kind == "histogram" and tuple(fd.buckets) != fam.buckets):
                self.rejected += 1  # the same name as another type or layout: not mergeable
                continue
            names = tuple(fd.labels)
            for sample in fd.samples:
                try:
                    self._add(fam, names, sample, proxy, now)
                except (TypeError, ValueError, IndexError):
                    self.rejected += 1

    def _add(self, fam: Family, names: tuple[str, ...], sample: list[Any], proxy: _Proxy, now: float) -> None:
        values = tuple(str(v) for v in sample[0])
        if len(values) != len(names):
            raise ValueError("label values do not match the label names")
        skey = (names, values)
        cell = fam.series.get(skey)
        if fam.kind == "counter":
            delta = float(sample[1])
            if delta < 0:
                raise ValueError("a counter delta is negative")
            if cell is None:
                cell = fam.series[skey] = [0]
            cell[0] += int(delta) if delta.is_integer() else delta
            if fam.name == REQUESTS:
                self._edge_requests(names, values, int(delta), now)
        else:
            counts = [int(c) for c in sample[1]]
            if len(counts) != len(fam.buckets) + 1 or any(c < 0 for c in counts):
                raise ValueError("histogram buckets do not match")
            if cell is None:
                cell = fam.series[skey] = [[0] * len(counts), 0.0]
            cell[0] = [a + b for a, b in zip(cell[0], counts, strict=True)]
            cell[1] += float(sample[2])
            if fam.name == DURATION:
                edge = self._edge(names, values)
                if edge is not None:
                    self.window.add_durations(edge, counts, now)
        key = (fam.name, names, values)
        if key not in proxy.series:
            proxy.series.add(key)
            self.owners[key] = self.owners.get(key, 0) + 1

    def _edge(self, names: tuple[str, ...], values: tuple[str, ...]) -> tuple[str, ...] | None:
        pos = self._positions.get(names, ())
        if pos == ():
            pos = self._positions[names] = (
                tuple(names.index(n) for n in EDGE_LABELS) if all(n in names for n in EDGE_LABELS) else None
            )
        return None if pos is None else tuple(values[i] for i in pos)

    def _edge_requests(self, names: tuple[str, ...], values: tuple[str, ...], n: int, now: float) -> None:
        edge = self._edge(names, values)
        if edge is None or fields.RESPONSE_CODE not in names:
            return
        code = values[names.index(fields.RESPONSE_CODE)]
        sec = (
            values[names.index(fields.CONNECTION_SECURITY_POLICY)]
            if fields.CONNECTION_SECURITY_POLICY in names
            else ""
        )
        self.window.add_requests(edge, code, sec, n, now)

    # -- forgetting ------------------------------------------------------------------------------
    def expire(self, now: float) -> list[str]:
        """Forget the proxies silent for longer than the grace period; returns their ids."""
        gone = [node for node, p in self.proxies.items() if now - p.last_seen > self.grace]
        for node in gone:
            for key in self.proxies.pop(node).series:
                left = self.owners.get(key, 0) - 1
                if left > 0:
                    self.owners[key] = left
                    continue
                self.owners.pop(key, None)
                fam = self.families.get(key[0])
                if fam is not None:
                    fam.series.pop((key[1], key[2]), None)
        return gone

    def live_proxies(self) -> int:
        return len(self.proxies)

    # -- exposition ------------------------------------------------------------------------------
    def render(self, extra: Iterable[str] = ()) -> str:
        """Prometheus text 0.0.4 of every merged series (then ``extra`` lines: the replica's own)."""
        out: list[str] = []
        for fam in self.families.values():
            if not fam.series:
                continue
            name = fam.name
            out.append(f"# HELP {name} {escape_help(fam.help)}")
            out.append(f"# TYPE {name} {fam.kind}")
            if fam.kind == "counter":
                for (names, values), cell in fam.series.items():
                    body = label_body(names, values)
                    out.append(
                        f"{name}{{{body}}} {format_value(cell[0])}"
                        if body
                        else f"{name} {format_value(cell[0])}"
                    )
                continue
            les = [format_value(b) for b in fam.buckets] + ["+Inf"]
            for (names, values), (counts, total) in fam.series.items():
                body = label_body(names, values)
                sep = "," if body else ""
                running = 0
                for le, c in zip(les, counts, strict=True):
                    running += c
                    out.append(f'{name}_bucket{{{body}{sep}le="{le}"}} {running}')
                labels = f"{{{body}}}" if body else ""
                out.append(f"{name}_sum{labels} {format_value(total)}")
                out.append(f"{name}_count{labels} {running}")
        out.extend(extra)
        return "\n".join(out) + "\n" if out else ""
