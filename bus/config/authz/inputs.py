"""What a workload's AUDIT, DENY and ALLOW steps read of a request, worked out once from its tables.

The authorization filter keys its memo of decisions (proxy/filters/authz.py) on exactly these
attributes: two requests equal in all of them get the same decision from `Tables.decide`, which is a
pure function of the `Request` fields its checks read. Checks whose input is not a plain hashable
value (``request.auth.audiences`` and ``presenter``, which another filter may change in the request's
identity), or that the filter reads from the connection at a cost (destination address, SNI), leave
the tables without inputs (None): such a workload's requests are decided in full each time. JWT
claims are keyed by the token they came from (the filter's `claims` flag). Sans-IO.
"""

from __future__ import annotations

from dataclasses import dataclass

from meshbus.bus.config.authz.engine import (
    _DEST_IP,
    _REMOTE_IP,
    Check,
    ClaimCheck,
    HeaderCheck,
    HostCheck,
    IpCheck,
    MethodCheck,
    NamespaceCheck,
    Never,
    Not,
    PathCheck,
    PortCheck,
    PrincipalCheck,
    RequestPrincipalCheck,
    ServiceAccountCheck,
    Tables,
    TrustDomainCheck,
)

XFF = "x-forwarded-for"


@dataclass(frozen=True)
class Inputs:
    """The request attributes the decision reads. ``headers``: names, sorted; X-Forwarded-For among
    them when a rule reads ``remoteIpBlocks`` (the remote address is worked out from it and the peer
    address, so the key holds both). The destination port is the route's own: never part of a key."""

    peer: bool = False
    """The mTLS principal (``principals``, ``namespaces``, trust domains, service accounts)."""
    request_principal: bool = False
    claims: bool = False
    """JWT claims (``request.auth.claims[...]``): the same token's claims decide the same."""
    source_ip: bool = False
    host: bool = False
    method: bool = False
    path: bool = False
    headers: tuple[str, ...] = ()


class _Reads:
    def __init__(self) -> None:
        self.peer = self.rp = self.claims = self.ip = self.host = self.method = self.path = False
        self.headers: set[str] = set()
        self.keyable = True

    def add(self, c: Check) -> None:
        if isinstance(c, Not):
            self.add(c.inner)
        elif isinstance(c, PrincipalCheck | NamespaceCheck | TrustDomainCheck | ServiceAccountCheck):
            self.peer = True
        elif isinstance(c, RequestPrincipalCheck):
            self.rp = True
        elif isinstance(c, ClaimCheck):
            self.claims = True
        elif isinstance(c, IpCheck):
            if c.which == _DEST_IP:
                self.keyable = False
            self.ip = True
            if c.which == _REMOTE_IP:
                self.headers.add(XFF)
        elif isinstance(c, HostCheck):
            self.host = True
        elif isinstance(c, MethodCheck):
            self.method = True
        elif isinstance(c, PathCheck):
            self.path = True
        elif isinstance(c, HeaderCheck):
            self.headers.add(c.name)
        elif not isinstance(c, PortCheck | Never):
            self.keyable = False  # audiences, presenter, SNI, or a check this list does not know


def decision_inputs(tables: Tables) -> Inputs | None:
    """What ``tables.decide`` reads of a request, or None when a check reads something a memo key
    cannot hold cheaply (see the module doc)."""
    reads = _Reads()
    for _name, rs in tables.steps():
        for rule in rs.rules:
            for c in rule.when:
                reads.add(c)
            for group in (*rule.froms, *rule.tos):
                for c in group:
                    reads.add(c)
    if not reads.keyable:
        return None
    return Inputs(
        peer=reads.peer,
        request_principal=reads.rp,
        claims=reads.claims,
        source_ip=reads.ip,
        host=reads.host,
        method=reads.method,
        path=reads.path,
        headers=tuple(sorted(reads.headers)),
    )
