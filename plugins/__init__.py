"""meshbus.plugins: the filter SDK, the loader for the ``meshbus.filters`` entry-point group, the
remote filter host, and the filters that ship built in.

Layout:
- ``api``: the SDK users write against (``Filter``, ``LocalReply``, body modes); re-exported here.
- ``http``: what a filter sees (``Request``, ``Response``, ``Headers``, ``Peer``).
- ``registry`` (installed filters: entry points, checked on load) and ``loader`` (a Plugin's
  pluginConfig checked against the filter's Config, instances made).
- ``remote``: ``meshbus-filter-host`` (a filter served on the bus) and its wire conversions.
- ``builtin``: small filters that ship with meshbus, each an example to copy.
- ``testing``: drive a filter's hooks without a proxy.

The proxy runs filters through meshbus.proxy.filters.plugins (in process, or calling a host);
meshbus-config checks pluginConfig at apply time through ``loader`` (and a host's published schema).
Dependency rule: nothing here imports meshbus.proxy or meshbus.control.
Keep in sync with shared/ARCHITECTURE.md ("Plugins and the filter chain") and docs/plugins.md.
"""

from meshbus.plugins.api import (
    NO_BODY,
    STREAMED,
    BodyMode,
    Filter,
    FilterMetrics,
    LocalReply,
    buffered,
)
from meshbus.plugins.http import Headers, Peer, Request, Response, TraceContext

__all__ = [
    "NO_BODY",
    "STREAMED",
    "BodyMode",
    "Filter",
    "FilterMetrics",
    "Headers",
    "LocalReply",
    "Peer",
    "Request",
    "Response",
    "TraceContext",
    "buffered",
]
