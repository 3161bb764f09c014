"""Remote filter protocol: a proxy calls a filter served by ``meshbus-filter-host`` (any language).

Flow (subjects in `meshbus.bus.subjects`; docs/remote-filters.md is the page for other languages):

- proxy -> ``filter.<name>.<hook>`` (request, queue group ``q``): `FilterCall` -> `FilterVerdict`,
  one call per hook the filter implements (``request_headers``, ``request_body``,
  ``response_headers``); ``response_body`` and ``done`` are published without a reply wanted (they
  cannot change the response). Each call has the Plugin's timeout.
- anyone -> ``filter.<name>.info`` (request, queue group): `FilterInfoRequest` -> `FilterHostInfo`,
  what the filter implements and its config's JSON Schema (meshbus-config validates pluginConfig
  with it).
- Every host is a NATS micro service named ``meshbus-filter-host`` whose metadata names its filter,
  so ``nats micro ls`` and ``meshctl plugins`` list the live ones (``$SRV.INFO.meshbus-filter-host``).

Bodies are msgpack maps of these dataclasses' fields; header lists are ``[name, value]`` pairs with
lowercase names; ``body`` is msgpack bin. The ``Meshbus-Schema`` header names the message where it is
sent; calls and verdicts go without it (the subject names them: docs/remote-filters.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..codec import message

HOOKS = ("request_headers", "request_body", "response_headers", "response_body", "done")
"""The hook names on the wire (the SDK's, without ``on_``)."""
ONE_WAY_HOOKS = frozenset({"response_body", "done"})
"""Hooks the proxy publishes without waiting for a verdict."""
MICRO_SERVICE = "meshbus-filter-host"


@dataclass(frozen=True, slots=True)
class WirePeer:
    """One end of the request (the SDK's ``Peer``); empty strings for what is not known."""

    principal: str = ""
    """SPIFFE ID, when authenticated (mTLS)."""
    namespace: str = ""
    service_account: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    """Workload labels, where the proxy knows them (its own workload's)."""
    service: str = ""
    """Service host name (the destination of an outbound request)."""


@dataclass(frozen=True, slots=True)
class WireReply:
    """A local reply: the proxy answers the client with it instead of going on."""

    status: int
    body: bytes = b""
    headers: list[list[str]] = field(default_factory=list)
    details: str = ""
    """Why, for the proxy's access log."""


@message("meshbus.filter.v1.Call")
@dataclass(frozen=True, slots=True)
class FilterCall:
    """One hook call for one request."""

    hook: str
    """One of HOOKS."""
    plugin: str = ""
    """The Plugin resource, ``namespace/name`` (a host serves one filter for many Plugins)."""
    config: dict[str, Any] | None = None
    """The Plugin's ``pluginConfig`` (the host validates it and keeps one instance per digest)."""
    config_digest: str = ""
    """Content hash of ``config``: the host's cache key for the instance made from it."""
    method: str = ""
    path: str = ""
    authority: str = ""
    scheme: str = "http"
    headers: list[list[str]] = field(default_factory=list)
    """The request headers as they are at this hook."""
    request_id: str = ""
    route: str = ""
    """The name of the route the request matched."""
    source: WirePeer = field(default_factory=WirePeer)
    destination: WirePeer = field(default_factory=WirePeer)
    claims: dict[str, Any] | None = None
    """Verified JWT claims, when a RequestAuthentication accepted a token."""
    status: int = 0
    """Response hooks: the response status."""
    response_headers: list[list[str]] | None = None
    """Response hooks: the response headers."""
    body: bytes | None = None
    """Body hooks: the chunk (streamed) or the whole body (buffered)."""
    end: bool = True
    """Body hooks: the last chunk."""
    state: dict[str, Any] = field(default_factory=dict)
    """The filter's per-request state as its last verdict left it (``req.state``)."""


@message("meshbus.filter.v1.Verdict")
@dataclass(frozen=True, slots=True)
class FilterVerdict:
    """What the filter decided: continue (``reply`` None), possibly with new headers, or reply."""

    headers: list[list[str]] | None = None
    """The request headers (request hooks) or response headers (response headers hook) after the
    hook, when it changed them; None: unchanged."""
    reply: WireReply | None = None
    state: dict[str, Any] | None = None
    """The filter's per-request state to send back with the next call; None: unchanged."""
    error: str = ""
    """Set when the filter failed (raised, bad config): the proxy applies the Plugin's failStrategy."""


@message("meshbus.filter.v1.InfoRequest")
@dataclass(frozen=True, slots=True)
class FilterInfoRequest:
    """Ask a host what its filter is. No fields."""


@message("meshbus.filter.v1.HostInfo")
@dataclass(frozen=True, slots=True)
class FilterHostInfo:
    """A filter host's description of its filter."""

    filter: str
    hooks: list[str] = field(default_factory=list)
    """The hooks it implements (HOOKS names): the proxy calls only these."""
    package: str = ""
    version: str = ""
    request_body: str = "none"
    """``none``, ``streamed`` or ``buffered``."""
    request_body_limit: int = 0
    response_body: str = "none"
    response_body_limit: int = 0
    config_schema: str = ""
    """JSON Schema of pluginConfig, as JSON text ("" when the filter takes no config)."""
    instance: str = ""
    """The host's micro service id."""
    concurrency: int = 0
    language: str = "python"
