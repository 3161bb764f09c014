"""In-process metrics: a registry of counter, gauge and histogram families declared once.

Concurrency contract: a :class:`Registry` belongs to one thread (one event loop; each ``--workers``
process has its own). Recording takes no lock and does no I/O: a child is a slotted object whose
fields are bumped in place, and a histogram observation is a bucket search plus two in-place adds.
Rendering (``meshbus.telemetry.exposition``) reads the same objects from the same thread, off the
request path.

Histogram children keep *per-bucket* (non-cumulative) counts with the +Inf bucket last; the count is
their sum, so an observation touches one slot, and exposition makes them cumulative.

Hot path for the proxy (see :class:`IstioMetrics`): build the static part of the Istio label set once
per peer pair (proxy/filters/stats.py), get a :class:`RequestSeries` for it once, then call
``series.record(status, duration_ms, req_bytes, resp_bytes, flags)`` per request.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from itertools import pairwise
from typing import ClassVar, Final, Generic, TypeVar

from meshbus.telemetry import fields
from meshbus.telemetry.errors import LabelError, MetricDefinitionError

# Istio/Envoy default histogram buckets, in the metric's unit (ms for durations, bytes for sizes).
ISTIO_DEFAULT_BUCKETS: Final[tuple[float, ...]] = (
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000,
    30000, 60000, 300000, 600000, 1800000, 3600000,
)  # fmt: skip

_METRIC_NAME_RE: Final = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL_NAME_RE: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")


# --- children: one per label-value tuple -----------------------------------------------------------------
class CounterChild:
    """One counter series. ``inc`` must not be given a negative amount (a counter only goes up)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: int | float = 0  # object in mypyc: counts stay ints on the wire and in /stats

    def inc(self, amount: int | float = 1) -> None:
        # int | float, not float: compiled, a float parameter turns every count into a float (1 -> 1.0),
        # so the compiled build would print "2.0" where the pure one prints "2"; a boxed int also
        # spares a float allocation per call
        if amount < 0:
            raise LabelError(f"counter increment must be >= 0 (got {amount!r})")
        self.value += amount


class Tally:
    """A count its recorder keeps as a native int, added into its counter series (``child``) when the
    family is read (``Counter.series``: exposition, the deltas a proxy ships). ``tally.n += 1`` is a
    few instructions where ``CounterChild.inc`` is a few hundred (a boxed int compared and added): for
    counts taken at every call of something cheap (a plugin filter's hook)."""

    __slots__ = ("child", "n")

    def __init__(self, child: CounterChild) -> None:
        self.child = child
        self.n = 0

    def flush(self) -> None:
        n = self.n
        if n:
            self.n = 0
            self.child.value += n


class GaugeChild:
    """One gauge series."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: int | float = 0  # object in mypyc: counts stay ints on the wire and in /stats

    def set(self, value: int | float) -> None:
        self.value = value

    def inc(self, amount: int | float = 1) -> None:
        self.value += amount

    def dec(self, amount: int | float = 1) -> None:
        self.value -= amount


class HistogramChild:
    """One histogram series: per-bucket counts (``len(bounds) + 1`` slots, +Inf last) and the sum."""

    __slots__ = ("bounds", "counts", "floats", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.floats = tuple([float(b) for b in bounds])  # for bucket(): no int-to-float per compare
        self.counts: list[int] = [0] * (len(bounds) + 1)
        self.sum: float = 0.0

    def observe(self, value: float) -> None:
        self.counts[bucket(self.floats, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[int]:
        """Cumulative counts per bound, +Inf last (so the last item equals ``count``)."""
        out: list[int] = []
        running = 0
        for c in self.counts:
            running += c
            out.append(running)
        return out


def bucket(bounds: tuple[float, ...], value: float) -> int:
    """``bisect_left(bounds, value)``: the first bound >= value, i.e. the smallest bucket with value
    <= le. A scan from the low end: what the proxy records per request (a duration in ms, a body's
    bytes) sits in the first few buckets, where comparing unboxed floats in compiled code costs a
    fraction of a generic call to ``bisect`` and its object comparisons (three per request)."""
    i = 0
    n = len(bounds)
    while i < n and bounds[i] < value:
        i += 1
    return i


C = TypeVar("C", CounterChild, GaugeChild, HistogramChild)
F = TypeVar("F", "Counter", "Gauge", "Histogram")


# --- families --------------------------------------------------------------------------------------------
class _Family(Generic[C]):
    kind: ClassVar[str]

    __slots__ = ("_default", "_series", "help", "label_names", "name")

    def __init__(self, name: str, help: str, label_names: Sequence[str]) -> None:
        self.name = name
        self.help = help
        self.label_names: tuple[str, ...] = tuple(label_names)
        self._series: dict[tuple[str, ...], C] = {}
        self._default: C | None = self.labels() if not self.label_names else None

    def _new_child(self) -> C:
        raise NotImplementedError

    def labels(self, *values: str) -> C:
        """The child for these label values (created on first use). Cache it where it is used often."""
        child = self._series.get(values)
        if child is None:
            if len(values) != len(self.label_names):
                raise LabelError(
                    f"{self.name}: expected {len(self.label_names)} label values "
                    f"{self.label_names}, got {len(values)} {values!r}"
                )
            given: tuple[object, ...] = values  # compiled, a str-typed loop would raise TypeError first
            for v in given:
                if type(v) is not str:
                    raise LabelError(f"{self.name}: label values must be str (got {v!r})")
            child = self._new_child()
            self._series[values] = child
        return child

    def series(self) -> Iterator[tuple[tuple[str, ...], C]]:
        """(label values, child) in creation order."""
        return iter(list(self._series.items()))

    def __len__(self) -> int:
        return len(self._series)

    def _unlabelled(self) -> C:
        if self._default is None:
            raise LabelError(f"{self.name}: has labels {self.label_names}; use .labels(...)")
        return self._default


class Counter(_Family[CounterChild]):
    kind = "counter"
    __slots__ = ("_tallies",)

    def __init__(self, name: str, help: str, label_names: Sequence[str]) -> None:
        super().__init__(name, help, label_names)
        self._tallies: dict[tuple[str, ...], Tally] = {}

    def _new_child(self) -> CounterChild:
        return CounterChild()

    def tally(self, *values: str) -> Tally:
        """The ``Tally`` of the series with these label values (one per series, made on first use
        with the series itself)."""
        t = self._tallies.get(values)
        if t is None:
            t = self._tallies[values] = Tally(self.labels(*values))
        return t

    def series(self) -> Iterator[tuple[tuple[str, ...], CounterChild]]:
        for t in self._tallies.values():
            t.flush()
        return super().series()

    def inc(self, amount: int | float = 1) -> None:
        self._unlabelled().inc(amount)


class Gauge(_Family[GaugeChild]):
    kind = "gauge"
    __slots__ = ()

    def _new_child(self) -> GaugeChild:
        return GaugeChild()

    def set(self, value: int | float) -> None:
        self._unlabelled().set(value)

    def inc(self, amount: int | float = 1) -> None:
        self._unlabelled().inc(amount)

    def dec(self, amount: int | float = 1) -> None:
        self._unlabelled().dec(amount)


class Histogram(_Family[HistogramChild]):
    kind = "histogram"
    __slots__ = ("buckets",)

    def __init__(self, name: str, help: str, label_names: Sequence[str], buckets: Sequence[float]) -> None:
        self.buckets: tuple[float, ...] = tuple(float(b) for b in buckets)
        super().__init__(name, help, label_names)

    def _new_child(self) -> HistogramChild:
        return HistogramChild(self.buckets)

    def observe(self, value: float) -> None:
        self._unlabelled().observe(value)


Family = Counter | Gauge | Histogram


# --- registry --------------------------------------------------------------------------------------------
class Registry:
    """Metric families, declared once each, iterated in declaration order.

    A family may have *variants*: the same metric (name, kind, help, buckets) with another label set,
    for the series a Telemetry resource gives extra labels or fewer (``tagOverrides``). Prometheus
    takes one metric whose samples carry different label names; exposition renders the variants of
    a name as one group.
    """

    __slots__ = ("_families", "_variants")

    def __init__(self) -> None:
        self._families: dict[str, Family] = {}
        self._variants: dict[tuple[str, tuple[str, ...]], Family] = {}

    def counter(self, name: str, help: str, labels: Sequence[str] = ()) -> Counter:
        self._check(name, labels)
        return self._add(Counter(name, help, labels))

    def gauge(self, name: str, help: str, labels: Sequence[str] = ()) -> Gauge:
        self._check(name, labels)
        return self._add(Gauge(name, help, labels))

    def histogram(
        self,
        name: str,
        help: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = ISTIO_DEFAULT_BUCKETS,
    ) -> Histogram:
        self._check(name, labels)
        if "le" in labels:
            raise MetricDefinitionError(f"{name}: a histogram cannot have a label named 'le'")
        if not buckets or any(math.isnan(b) or math.isinf(b) for b in buckets):
            raise MetricDefinitionError(f"{name}: buckets must be finite and non-empty (got {buckets!r})")
        if any(b >= c for b, c in pairwise(buckets)):
            raise MetricDefinitionError(f"{name}: buckets must be strictly increasing (got {buckets!r})")
        return self._add(Histogram(name, help, labels, buckets))

    def variant(self, family: Family, labels: Sequence[str]) -> Family:
        """``family`` (declared here) with the label names ``labels``: the family itself when they are
        its own, else a variant, made on first use and kept."""
        names = tuple(labels)
        if names == family.label_names:
            return family
        key = (family.name, names)
        found = self._variants.get(key)
        if found is None:
            self._check_labels(family.name, names)
            if isinstance(family, Histogram):
                if "le" in names:
                    raise MetricDefinitionError(f"{family.name}: a histogram cannot have a label named 'le'")
                found = Histogram(family.name, family.help, names, family.buckets)
            elif isinstance(family, Counter):
                found = Counter(family.name, family.help, names)
            else:
                found = Gauge(family.name, family.help, names)
            self._variants[key] = found
        return found

    def get(self, name: str) -> Family | None:
        return self._families.get(name)

    def families(self) -> list[Family]:
        """Every family and variant; a name's variants follow the family they vary."""
        out: list[Family] = []
        for family in self._families.values():
            out.append(family)
            out.extend(v for (name, _), v in self._variants.items() if name == family.name)
        return out

    def _check(self, name: str, labels: Sequence[str]) -> None:
        if not _METRIC_NAME_RE.match(name):
            raise MetricDefinitionError(f"invalid metric name {name!r}")
        if name in self._families:
            raise MetricDefinitionError(f"metric {name!r} is already declared")
        self._check_labels(name, labels)

    @staticmethod
    def _check_labels(name: str, labels: Sequence[str]) -> None:
        if isinstance(labels, str):
            raise MetricDefinitionError(f"{name}: labels must be a sequence of names, not a str")
        for label in labels:
            if not _LABEL_NAME_RE.match(label) or label.startswith("__"):
                raise MetricDefinitionError(f"{name}: invalid label name {label!r}")
        if len(set(labels)) != len(labels):
            raise MetricDefinitionError(f"{name}: duplicate label names in {tuple(labels)!r}")

    def _add(self, family: F) -> F:
        self._families[family.name] = family
        return family


# --- Istio standard metrics --------------------------------------------------------------------------------
def istio_static_labels(**values: str) -> tuple[str, ...]:
    """The static part of an Istio request label set, in :data:`fields.ISTIO_STATIC_LABELS` order.

    Unnamed labels are ``"unknown"``, as in Istio (``grpc_response_status``: empty, as Istio reports
    it for HTTP). Build it once per peer pair, not per request.
    """
    unknown = set(values) - set(fields.ISTIO_STATIC_LABELS)
    if unknown:
        raise LabelError(f"not Istio static labels: {sorted(unknown)}")
    return tuple(
        values.get(name, "" if name == fields.GRPC_RESPONSE_STATUS else fields.UNKNOWN)
        for name in fields.ISTIO_STATIC_LABELS
    )


# The four request metrics, in the order RequestSeries records them (Telemetry API names).
REQUEST_COUNT: Final = 0
REQUEST_DURATION: Final = 1
REQUEST_SIZE: Final = 2
RESPONSE_SIZE: Final = 3
REQUEST_METRIC_NAMES: Final[tuple[str, ...]] = (
    "REQUEST_COUNT",
    "REQUEST_DURATION",
    "REQUEST_SIZE",
    "RESPONSE_SIZE",
)

Target = tuple[Family, tuple[str, ...]] | None
"""Where one request metric of a series goes: (family or variant, static label values), or None
when a Telemetry resource disabled that metric."""

Cells = tuple[CounterChild, HistogramChild, HistogramChild, HistogramChild]


class RequestSeries:
    """The request metrics of one peer pair; ``record`` is the per-request call.

    Each of the four metrics has its own target (its label set may differ, or it may be disabled);
    a disabled metric records into a child no registry holds, so ``record`` has no branch for it.
    """

    __slots__ = ("_cells", "_targets", "_zero_bucket", "static")

    def __init__(self, targets: tuple[Target, Target, Target, Target], buckets: tuple[float, ...]) -> None:
        self._targets = targets
        first = next((t for t in targets if t is not None), None)
        self.static: tuple[str, ...] = first[1] if first is not None else ()
        self._zero_bucket = bucket(tuple([float(b) for b in buckets]), 0.0)
        # flags -> status -> cells. Two dict lookups on values the caller already has, instead of
        # building and hashing a key tuple per request.
        self._cells: dict[str, dict[int, Cells]] = {}

    def record(
        self, status: int, duration_ms: float, req_bytes: int, resp_bytes: int, flags: str = "-"
    ) -> None:
        """Count one finished request: status is the HTTP response code (0 if none was sent)."""
        by_status = self._cells.get(flags)
        cells = by_status.get(status) if by_status is not None else None
        if cells is None:
            cells = self._create(status, flags)
        requests, duration, req_size, resp_size = cells
        requests.value += 1
        duration.counts[bucket(duration.floats, duration_ms)] += 1
        duration.sum += duration_ms
        # Most requests have no body: their bucket is known without a search.
        req_size.counts[bucket(req_size.floats, req_bytes) if req_bytes else self._zero_bucket] += 1
        req_size.sum += req_bytes
        resp_size.counts[bucket(resp_size.floats, resp_bytes)] += 1
        resp_size.sum += resp_bytes

    def _create(self, status: int, flags: str) -> Cells:
        code = str(status)
        made: list[CounterChild | GaugeChild | HistogramChild] = []
        for i, target in enumerate(self._targets):
            if target is None:
                made.append(CounterChild() if i == REQUEST_COUNT else HistogramChild(ISTIO_DEFAULT_BUCKETS))
            else:
                family, static = target
                made.append(family.labels(*static, code, flags))
        cells: Cells = (made[0], made[1], made[2], made[3])  # type: ignore[assignment]
        self._cells.setdefault(flags, {})[status] = cells
        return cells


class IstioMetrics:
    """Istio's standard request metrics, declared on ``registry`` with Istio's names and labels."""

    __slots__ = (
        "_series",
        "buckets",
        "registry",
        "request_bytes",
        "request_duration",
        "requests_total",
        "response_bytes",
    )

    def __init__(self, registry: Registry, buckets: Sequence[float] = ISTIO_DEFAULT_BUCKETS) -> None:
        labels = fields.ISTIO_REQUEST_LABELS
        self.registry = registry
        self.buckets: tuple[float, ...] = tuple(float(b) for b in buckets)
        self.requests_total = registry.counter(
            "istio_requests_total", "Counter incremented for every request handled by an Istio proxy", labels
        )
        self.request_duration = registry.histogram(
            "istio_request_duration_milliseconds", "Request duration in milliseconds", labels, buckets
        )
        self.request_bytes = registry.histogram(
            "istio_request_bytes", "HTTP request body sizes in bytes", labels, buckets
        )
        self.response_bytes = registry.histogram(
            "istio_response_bytes", "HTTP response body sizes in bytes", labels, buckets
        )
        self._series: dict[tuple[str, ...], RequestSeries] = {}

    def family(self, metric: int) -> Family:
        """REQUEST_COUNT, REQUEST_DURATION, REQUEST_SIZE or RESPONSE_SIZE."""
        return (self.requests_total, self.request_duration, self.request_bytes, self.response_bytes)[metric]

    def series(self, static: tuple[str, ...]) -> RequestSeries:
        """The (cached) recorder for a standard static label tuple, all four metrics on."""
        s = self._series.get(static)
        if s is None:
            if len(static) != len(fields.ISTIO_STATIC_LABELS):
                raise LabelError(
                    f"static label tuple must have {len(fields.ISTIO_STATIC_LABELS)} values "
                    f"{fields.ISTIO_STATIC_LABELS}, got {len(static)}"
                )
            targets = tuple((self.family(i), static) for i in range(4))
            s = self._series[static] = RequestSeries(targets, self.buckets)  # type: ignore[arg-type]
        return s


class InternalMetrics:
    """meshbus's own counters for proxy internals and telemetry health."""

    __slots__ = ("local_replies", "telemetry_dropped")

    def __init__(self, registry: Registry) -> None:
        self.local_replies = registry.counter(
            "meshbus_proxy_local_replies_total",
            "Responses generated by the proxy itself (no upstream answer), by Envoy response flag",
            (fields.RESPONSE_FLAGS,),
        )
        self.telemetry_dropped = registry.counter(
            "meshbus_telemetry_dropped_total",
            "Telemetry items dropped because a bounded queue was full, by signal",
            (fields.SIGNAL,),
        )
