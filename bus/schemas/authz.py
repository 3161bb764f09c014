"""meshbus's own external authorizer protocol (MeshConfig provider ``meshbusAuthz``), over NATS.

Flow (subjects in `meshbus.bus.subjects`; docs/ext-authz.md is the page for other languages):

- proxy -> ``<root>.v1.authz.<name>`` (request; serve it in a queue group so replicas share the load):
  `AuthzCheck` -> `AuthzDecision`, sent only for requests a CUSTOM AuthorizationPolicy rule naming
  the provider matches, with the provider's timeout. No responders, a timeout or a malformed reply is
  an error: the provider's ``failOpen`` lets the request on, else ``statusOnError`` answers it.
- meshbus-policy serves one such authorizer per entry of its ``--authz-rules`` file
  (control/policy/authz_rules.py); any process may serve another.

Bodies are msgpack maps of these dataclasses' fields; header lists are ``[name, value]`` pairs with
lowercase names; the ``Meshbus-Schema`` header names the message.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..codec import message


@message("meshbus.authz.v1.Check")
@dataclass(frozen=True, slots=True)
class AuthzCheck:
    method: str
    path: str
    """The normalized path with its query, as it will go upstream."""
    host: str
    headers: list[list[str]] = field(default_factory=list)
    """The request headers as received (lowercase names)."""
    body: bytes = b""
    partial: bool = False
    """``body`` is the first ``maxRequestBytes`` only."""
    source_ip: str = ""
    principal: str = ""
    """The caller's SPIFFE ID when it came over mTLS."""
    provider: str = ""
    """The MeshConfig provider's name."""


@message("meshbus.authz.v1.Decision")
@dataclass(frozen=True, slots=True)
class AuthzDecision:
    allowed: bool
    status: int = 403
    """The reply's status when denied."""
    headers: list[list[str]] = field(default_factory=list)
    """On deny: the reply's headers. On allow: added to the response (``headersToDownstreamOnAllow``)."""
    body: bytes = b""
    """On deny: the reply's body."""
    upstream_headers: list[list[str]] = field(default_factory=list)
    """On allow: set on the request before it goes upstream (replacing a header of the same name)."""
    remove_headers: list[str] = field(default_factory=list)
    """On allow: request headers removed before it goes upstream."""
    reason: str = ""
    """Why, for the proxy's access log and the authorizer's own logs."""
