"""Telemetry resources (telemetry.istio.io/v1) + the MeshConfig -> what one workload's proxy records.

Scope, as Istio: a Telemetry in the root namespace (``MeshConfig.rootNamespace``, default
istio-system) without a selector is the mesh default; one in the workload's namespace without a
selector overrides it; one there whose ``selector.matchLabels`` fit the workload overrides both
(several at one level: applied by name). Each entry of ``tracing``, ``metrics`` and
``accessLogging`` applies to the proxy's client side (outbound listener, Istio's CLIENT mode, the
``source`` reporter), its server side (inbound, SERVER, ``destination``), or both (the default).

Field by field: a more specific tracing entry overrides only what it sets (``randomSamplingPercentage``
set at the root stays unless a namespace sets its own); metric overrides add up, the later
(more specific) winning for the same metric and tag; an access-log entry sets ``disabled`` and its
``filter`` for the modes it matches.

Defaults: tracing at 1% (Istio's ``sampling: 1.0``; 0 when the MeshConfig says ``enableTracing:
false``), every request metric on with Istio's labels, an access-log record for every request.

Sans-IO: plain data in, a frozen `TelemetryPolicy` out, built with the rest of the runtime, once
per config version (and reused as is while its inputs are the same objects).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from meshbus.bus.config.cel import compile_expression, reads_request
from meshbus.bus.config.mesh_config import MeshConfigSpec
from meshbus.bus.config.proxy_kinds import MeshConfig, Resource, Telemetry

DEFAULT_ROOT_NAMESPACE: Final = "istio-system"
DEFAULT_SAMPLING_PERCENT: Final = 1.0

CLIENT: Final = "CLIENT"
SERVER: Final = "SERVER"

METRIC_NAMES: Final[tuple[str, ...]] = ("REQUEST_COUNT", "REQUEST_DURATION", "REQUEST_SIZE", "RESPONSE_SIZE")
"""The request metrics, in `meshbus.telemetry.metrics.RequestSeries` order."""

UPSERT: Final = "UPSERT"
REMOVE: Final = "REMOVE"


@dataclass(frozen=True, slots=True)
class SpanTag:
    """A span attribute: ``kind`` is literal, environment or header; ``value`` the literal, the
    variable or the header name (lowercase); ``default`` when the variable or header is missing."""

    name: str
    kind: str
    value: str
    default: str | None = None


@dataclass(frozen=True, slots=True)
class TracingSettings:
    sampling: float = DEFAULT_SAMPLING_PERCENT / 100
    """Fraction of new traces sampled (0..1); a caller's decision always wins."""
    report: bool = True
    """False: ``disableSpanReporting`` (context still propagated, no spans kept)."""
    custom_tags: tuple[SpanTag, ...] = ()
    literal_tags: tuple[tuple[str, str], ...] = ()
    """Literal and environment tags resolved once (they do not change per request)."""
    header_tags: tuple[SpanTag, ...] = ()
    provider: str = ""
    """The opentelemetry extension provider spans go to ("" = meshbus-telemetry's default)."""


@dataclass(frozen=True, slots=True)
class TagOverride:
    name: str
    operation: str
    """UPSERT or REMOVE."""
    source: str = ""
    """The CEL expression of an UPSERT."""
    program: Any = field(default=None, compare=False)
    per_request: bool = False


@dataclass(frozen=True, slots=True)
class MetricSettings:
    """What one request metric records on one side."""

    enabled: bool = True
    overrides: tuple[TagOverride, ...] = ()

    @property
    def per_request(self) -> bool:
        return any(o.per_request for o in self.overrides)


@dataclass(frozen=True, slots=True)
class AccessLogSettings:
    enabled: bool = True
    filter_source: str = ""
    filter: Any = field(default=None, compare=False)
    """Compiled CEL: a record is written only where it is true (None: every request)."""
    providers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SidePolicy:
    """Everything one side (client or server) of the proxy records."""

    tracing: TracingSettings = TracingSettings()
    metrics: tuple[MetricSettings, MetricSettings, MetricSettings, MetricSettings] = (
        MetricSettings(),
        MetricSettings(),
        MetricSettings(),
        MetricSettings(),
    )
    access_log: AccessLogSettings = AccessLogSettings()

    @property
    def custom_metrics(self) -> bool:
        """Whether any request metric differs from Istio's default (disabled, or tags changed)."""
        return any(not m.enabled or m.overrides for m in self.metrics)


@dataclass(frozen=True, slots=True)
class TelemetryPolicy:
    client: SidePolicy = SidePolicy()
    server: SidePolicy = SidePolicy()
    root_namespace: str = DEFAULT_ROOT_NAMESPACE
    sources: tuple[str, ...] = ()
    """``Kind ns/name`` of the resources it was made from (config_dump)."""
    inputs: tuple[int, ...] = field(default=(), compare=False, repr=False)
    """Identity of the input resources: the next build reuses this policy when they are the same."""

    def side(self, direction: str) -> SidePolicy:
        return self.client if direction == "outbound" else self.server

    def describe(self) -> dict[str, Any]:
        def one(p: SidePolicy) -> dict[str, Any]:
            return {
                "tracing": {
                    "samplingPercent": p.tracing.sampling * 100,
                    "report": p.tracing.report,
                    "customTags": [t.name for t in p.tracing.custom_tags],
                    "provider": p.tracing.provider,
                },
                "metrics": {
                    name: {"enabled": m.enabled, "tags": {o.name: o.operation for o in m.overrides}}
                    for name, m in zip(METRIC_NAMES, p.metrics, strict=True)
                },
                "accessLog": {"enabled": p.access_log.enabled, "filter": p.access_log.filter_source},
            }

        return {"rootNamespace": self.root_namespace, "from": list(self.sources), "client": one(self.client), "server": one(self.server)}


DEFAULT_POLICY: Final = TelemetryPolicy()


def _modes(match: Any) -> tuple[str, ...]:
    mode = getattr(match, "mode", None) if match is not None else None
    if mode == CLIENT:
        return (CLIENT,)
    if mode == SERVER:
        return (SERVER,)
    return (CLIENT, SERVER)


def _in_scope(
    resources: Iterable[Telemetry], namespace: str, labels: Mapping[str, str], root: str
) -> list[Telemetry]:
    """The Telemetry resources that apply, least specific first: root, namespace, workload."""
    levels: list[list[Telemetry]] = [[], [], []]
    for t in resources:
        ns = t.metadata.namespace
        sel = t.spec.selector.match_labels if t.spec.selector is not None else None
        if sel:
            if ns == namespace and all(labels.get(k) == v for k, v in sel.items()):
                levels[2].append(t)
        elif ns == namespace and ns != root:
            levels[1].append(t)
        elif ns == root:
            levels[0].append(t)
    return [t for level in levels for t in sorted(level, key=lambda r: r.metadata.name)]


def _tracing(
    scoped: Sequence[Telemetry], mesh: MeshConfigSpec | None, mode: str, env: Mapping[str, str]
) -> TracingSettings:
    percent = DEFAULT_SAMPLING_PERCENT if mesh is None or mesh.enable_tracing is not False else 0.0
    report = True
    tags: dict[str, SpanTag] = {}
    provider = ""
    if mesh is not None and mesh.default_providers is not None and mesh.default_providers.tracing:
        provider = mesh.default_providers.tracing[0]
    for t in scoped:
        for tr in t.spec.tracing:
            if mode not in _modes(tr.match):
                continue
            if tr.random_sampling_percentage is not None:
                percent = tr.random_sampling_percentage
            if tr.disable_span_reporting is not None:
                report = not tr.disable_span_reporting
            if tr.providers:
                provider = tr.providers[0].name
            for name, tag in tr.custom_tags.items():
                if tag.literal is not None:
                    tags[name] = SpanTag(name, "literal", tag.literal.value)
                elif tag.environment is not None:
                    tags[name] = SpanTag(name, "environment", tag.environment.name, tag.environment.default_value)
                elif tag.header is not None:
                    tags[name] = SpanTag(name, "header", tag.header.name.lower(), tag.header.default_value)
    custom = tuple(tags[n] for n in sorted(tags))
    literal: list[tuple[str, str]] = []
    for st in custom:
        if st.kind == "literal":
            literal.append((st.name, st.value))
        elif st.kind == "environment":
            value = env.get(st.value, st.default)
            if value is not None:
                literal.append((st.name, value))
    return TracingSettings(
        sampling=percent / 100,
        report=report,
        custom_tags=custom,
        literal_tags=tuple(literal),
        header_tags=tuple(t for t in custom if t.kind == "header"),
        provider=provider,
    )


def _metrics(scoped: Sequence[Telemetry], mode: str) -> tuple[MetricSettings, ...]:
    enabled = [True] * 4
    tags: list[dict[str, TagOverride]] = [{}, {}, {}, {}]
    for t in scoped:
        for m in t.spec.metrics:
            for o in m.overrides:
                if mode not in _modes(o.match):
                    continue
                match = o.match
                if match is not None and match.custom_metric is not None:
                    continue  # meshbus has no custom metrics (fates.py says so)
                metric = match.metric if match is not None and match.metric is not None else "ALL_METRICS"
                idx = range(4) if metric == "ALL_METRICS" else [METRIC_NAMES.index(metric)] if metric in METRIC_NAMES else []
                for i in idx:
                    if o.disabled is not None:
                        enabled[i] = not o.disabled
                    for name, to in o.tag_overrides.items():
                        if to.operation == REMOVE:
                            tags[i][name] = TagOverride(name, REMOVE)
                        elif to.value:
                            tags[i][name] = TagOverride(
                                name, UPSERT, to.value, compile_expression(to.value), reads_request(to.value)
                            )
    return tuple(
        MetricSettings(enabled[i], tuple(tags[i][n] for n in sorted(tags[i]))) for i in range(4)
    )


def _access_log(scoped: Sequence[Telemetry], mode: str) -> AccessLogSettings:
    enabled = True
    source = ""
    providers: tuple[str, ...] = ()
    for t in scoped:
        for al in t.spec.access_logging:
            if mode not in _modes(al.match):
                continue
            if al.disabled is not None:
                enabled = not al.disabled
            if al.filter is not None and al.filter.expression is not None:
                source = al.filter.expression
            if al.providers:
                providers = tuple(p.name for p in al.providers)
    program = compile_expression(source) if source else None
    return AccessLogSettings(enabled, source, program, providers)


def build_policy(
    resources: Sequence[Resource],
    namespace: str,
    labels: Mapping[str, str] | None = None,
    previous: TelemetryPolicy | None = None,
    env: Mapping[str, str] | None = None,
) -> TelemetryPolicy:
    """The policy for a workload in ``namespace`` with ``labels``; ``previous`` when its inputs (the
    Telemetry and MeshConfig resources, as objects) are unchanged. Raises CelError for an expression
    that does not compile (validation refuses it first)."""
    telemetry = [r for r in resources if isinstance(r, Telemetry)]
    meshes = [r for r in resources if isinstance(r, MeshConfig)]
    inputs = tuple(id(r) for r in (*telemetry, *meshes))
    if previous is not None and previous.inputs == inputs:
        return previous
    if not telemetry and not meshes:
        return DEFAULT_POLICY
    mesh = meshes[0].spec if meshes else None
    root = mesh.root_namespace if mesh is not None else DEFAULT_ROOT_NAMESPACE
    scoped = _in_scope(telemetry, namespace, labels or {}, root)
    environ = os.environ if env is None else env

    def side(mode: str) -> SidePolicy:
        m = _metrics(scoped, mode)
        return SidePolicy(_tracing(scoped, mesh, mode, environ), (m[0], m[1], m[2], m[3]), _access_log(scoped, mode))

    return TelemetryPolicy(
        client=side(CLIENT),
        server=side(SERVER),
        root_namespace=root,
        sources=tuple(t.ref for t in scoped) + tuple(m.ref for m in meshes[:1]),
        inputs=inputs,
    )
