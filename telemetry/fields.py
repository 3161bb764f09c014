"""Canonical log-field keys and Istio metric label names: the single source of truth.

Log records pass structured context through ``extra=`` using only the keys below, e.g.
``log.info("applied snapshot v%d", v, extra={fields.NODE_ID: node, fields.VERSION: v})``.
Metric label names are Istio's standard ones (istio.io "Istio Standard Metrics"), so existing
dashboards and alerts work unchanged; a missing value is :data:`UNKNOWN`, as in Istio.
"""

from __future__ import annotations

from typing import Final

# --- log fields (STYLE.md E9) -------------------------------------------------------------------------
COMPONENT: Final = "component"
NODE_ID: Final = "node_id"
VERSION: Final = "version"
NONCE: Final = "nonce"
SUBJECT: Final = "subject"
FILTER_ID: Final = "filter_id"
STREAM_ID: Final = "stream_id"
ERROR_CODE: Final = "error_code"

LOG_FIELDS: Final[frozenset[str]] = frozenset(
    {COMPONENT, NODE_ID, VERSION, NONCE, SUBJECT, FILTER_ID, STREAM_ID, ERROR_CODE}
)

# --- logger names ---------------------------------------------------------------------------------------
ROOT_LOGGER: Final = "meshbus"
ACCESS_LOGGER: Final = "meshbus.access"

# --- Istio metric label names ---------------------------------------------------------------------------
REPORTER: Final = "reporter"
SOURCE_WORKLOAD: Final = "source_workload"
SOURCE_WORKLOAD_NAMESPACE: Final = "source_workload_namespace"
SOURCE_PRINCIPAL: Final = "source_principal"
SOURCE_APP: Final = "source_app"
SOURCE_VERSION: Final = "source_version"
SOURCE_CANONICAL_SERVICE: Final = "source_canonical_service"
SOURCE_CANONICAL_REVISION: Final = "source_canonical_revision"
SOURCE_CLUSTER: Final = "source_cluster"
DESTINATION_WORKLOAD: Final = "destination_workload"
DESTINATION_WORKLOAD_NAMESPACE: Final = "destination_workload_namespace"
DESTINATION_PRINCIPAL: Final = "destination_principal"
DESTINATION_APP: Final = "destination_app"
DESTINATION_VERSION: Final = "destination_version"
DESTINATION_SERVICE: Final = "destination_service"
DESTINATION_SERVICE_NAME: Final = "destination_service_name"
DESTINATION_SERVICE_NAMESPACE: Final = "destination_service_namespace"
DESTINATION_CANONICAL_SERVICE: Final = "destination_canonical_service"
DESTINATION_CANONICAL_REVISION: Final = "destination_canonical_revision"
DESTINATION_CLUSTER: Final = "destination_cluster"
REQUEST_PROTOCOL: Final = "request_protocol"
CONNECTION_SECURITY_POLICY: Final = "connection_security_policy"
RESPONSE_CODE: Final = "response_code"
GRPC_RESPONSE_STATUS: Final = "grpc_response_status"
RESPONSE_FLAGS: Final = "response_flags"

UNKNOWN: Final = "unknown"
REPORTER_SOURCE: Final = "source"
REPORTER_DESTINATION: Final = "destination"
NO_RESPONSE_FLAGS: Final = "-"

# The part of an Istio label set that is fixed per (reporter, route, cluster) and so can be built once
# per snapshot by the proxy. Order matters: it is the order of the tuple passed to the metrics API.
ISTIO_STATIC_LABELS: Final[tuple[str, ...]] = (
    REPORTER,
    SOURCE_WORKLOAD,
    SOURCE_WORKLOAD_NAMESPACE,
    SOURCE_PRINCIPAL,
    SOURCE_APP,
    SOURCE_VERSION,
    SOURCE_CANONICAL_SERVICE,
    SOURCE_CANONICAL_REVISION,
    SOURCE_CLUSTER,
    DESTINATION_WORKLOAD,
    DESTINATION_WORKLOAD_NAMESPACE,
    DESTINATION_PRINCIPAL,
    DESTINATION_APP,
    DESTINATION_VERSION,
    DESTINATION_SERVICE,
    DESTINATION_SERVICE_NAME,
    DESTINATION_SERVICE_NAMESPACE,
    DESTINATION_CANONICAL_SERVICE,
    DESTINATION_CANONICAL_REVISION,
    DESTINATION_CLUSTER,
    REQUEST_PROTOCOL,
    CONNECTION_SECURITY_POLICY,
    GRPC_RESPONSE_STATUS,
)
"""grpc_response_status is static while the proxy speaks HTTP/1.1 only: Istio reports it empty for
plain HTTP traffic, and so does meshbus (an empty label is what Prometheus calls an absent one)."""

# Per-request labels, appended after the static part (and after any labels a Telemetry resource adds).
ISTIO_DYNAMIC_LABELS: Final[tuple[str, ...]] = (RESPONSE_CODE, RESPONSE_FLAGS)

ISTIO_REQUEST_LABELS: Final[tuple[str, ...]] = ISTIO_STATIC_LABELS + ISTIO_DYNAMIC_LABELS

MUTUAL_TLS: Final = "mutual_tls"
NO_TLS: Final = "none"
HTTP: Final = "http"

# --- meshbus-specific label names -----------------------------------------------------------------------
SIGNAL: Final = "signal"
