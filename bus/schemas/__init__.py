"""Every message that crosses the bus, one module per family (STYLE E6).

Schema ids: ``meshbus.<family>.v<major>.<Name>`` carried in the ``Meshbus-Schema``
header (see `meshbus.bus.codec`). To add a message: define a frozen dataclass with a
docstring per field in the family's module, decorate it with ``@message(id)``, give new
fields defaults, and add it to the imports and `__all__` here.

Importing one family (``meshbus.bus.schemas.ratelimit``) loads that family only: the names below
are looked up on first use, so a process that needs one message type (a proxy worker: rate limit
leases) does not load every family's dataclasses, decoders and their imports (~0.7 MB of a worker).
Each class registers its schema id when its family loads; `codec.decode` is given the class, so
nothing is looked up by id before its family loaded.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .common import ErrorReply, Health, HealthRequest
    from .config import (
        ApplyReply,
        ApplyRequest,
        ConfigChanged,
        DeleteReply,
        DeleteRequest,
        Document,
        GetRequest,
        HistoryEntry,
        HistoryReply,
        HistoryRequest,
        ListReply,
        ListRequest,
        ResourceRecord,
        ResourceRef,
        ResourceResult,
        RollbackRequest,
        StoredConfig,
        decode_value,
        encode_value,
    )
    from .discovery import (
        Deregister,
        FetchRequest,
        Heartbeat,
        ProxyConfigReply,
        ProxyConfigRequest,
        ProxyStatus,
        ProxyStatusReply,
        ProxyStatusRequest,
        Register,
        RegisterReply,
        ReplicaBeat,
        Snapshot,
        SnapshotAck,
    )
    from .identity import (
        BundleReply,
        BundleRequest,
        CertificateInfo,
        CertifyRequest,
        CertifyResponse,
        ProxyCertsReply,
        ProxyCertsRequest,
        TokenCreateReply,
        TokenCreateRequest,
        TrustBundle,
        TrustRoot,
    )
    from .telemetry import (
        AccessLogBatch,
        EdgeStats,
        FamilyDelta,
        MetricBatch,
        Source,
        SpanBatch,
        StatsReply,
        StatsRequest,
    )

_FAMILIES = ("common", "config", "discovery", "identity", "telemetry")


def __getattr__(name: str) -> Any:
    if name in _FAMILIES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in __all__:
        for family in _FAMILIES:
            module = importlib.import_module(f"{__name__}.{family}")
            if hasattr(module, name):
                value = getattr(module, name)
                globals()[name] = value
                return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AccessLogBatch",
    "ApplyReply",
    "ApplyRequest",
    "BundleReply",
    "BundleRequest",
    "CertificateInfo",
    "CertifyRequest",
    "CertifyResponse",
    "ConfigChanged",
    "DeleteReply",
    "DeleteRequest",
    "Deregister",
    "Document",
    "EdgeStats",
    "ErrorReply",
    "FamilyDelta",
    "FetchRequest",
    "GetRequest",
    "Health",
    "HealthRequest",
    "Heartbeat",
    "HistoryEntry",
    "HistoryReply",
    "HistoryRequest",
    "ListReply",
    "ListRequest",
    "MetricBatch",
    "ProxyCertsReply",
    "ProxyCertsRequest",
    "ProxyConfigReply",
    "ProxyConfigRequest",
    "ProxyStatus",
    "ProxyStatusReply",
    "ProxyStatusRequest",
    "Register",
    "RegisterReply",
    "ReplicaBeat",
    "ResourceRecord",
    "ResourceRef",
    "ResourceResult",
    "RollbackRequest",
    "Snapshot",
    "SnapshotAck",
    "Source",
    "SpanBatch",
    "StatsReply",
    "StatsRequest",
    "StoredConfig",
    "TokenCreateReply",
    "TokenCreateRequest",
    "TrustBundle",
    "TrustRoot",
    "decode_value",
    "encode_value",
]
