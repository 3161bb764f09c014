"""SDK views <-> the remote filter messages (bus/schemas/filters.py), for both sides. No I/O.

Proxy side: ``call_of`` turns the request a filter sees into a ``FilterCall``; ``apply_verdict``
carries the host's answer back onto the live request (headers, state) and returns its reply.
Host side: ``views_of`` rebuilds ``Request``/``Response`` from a call; ``verdict_of`` says what the
hook changed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from meshbus.bus.schemas.filters import FilterCall, FilterVerdict, WirePeer, WireReply
from meshbus.plugins.api import LocalReply
from meshbus.plugins.http import Headers, Peer, Request, Response


def config_digest(config: Mapping[str, Any] | None) -> str:
    """A stable hash of a pluginConfig (the host's instance cache key)."""
    text = json.dumps(config or {}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _peer_out(p: Peer) -> WirePeer:
    return WirePeer(
        p.principal or "", p.namespace or "", p.service_account or "", dict(p.labels), p.service or ""
    )


def _peer_in(p: WirePeer) -> Peer:
    return Peer(
        p.principal or None, p.namespace or None, p.service_account or None, dict(p.labels), p.service or None
    )


def _pairs(h: Headers) -> list[list[str]]:
    return [[k, v] for k, v in h.items()]


def call_of(
    hook: str,
    req: Request,
    *,
    plugin: str = "",
    config: Mapping[str, Any] | None = None,
    digest: str = "",
    resp: Response | None = None,
    body: bytes | None = None,
    end: bool = True,
) -> FilterCall:
    return FilterCall(
        hook=hook,
        plugin=plugin,
        config=dict(config) if config is not None else None,
        config_digest=digest,
        method=req.method,
        path=req.path,
        authority=req.authority,
        scheme=req.scheme,
        headers=_pairs(req.headers),
        request_id=req.request_id or "",
        route=req.route,
        source=_peer_out(req.source),
        destination=_peer_out(req.destination),
        claims=dict(req.claims) if req.claims is not None else None,
        status=resp.status if resp is not None else 0,
        response_headers=_pairs(resp.headers) if resp is not None else None,
        body=body,
        end=end,
        state=req.state,
    )


def apply_verdict(v: FilterVerdict, hook: str, req: Request, resp: Response | None) -> LocalReply | None:
    """Carry a verdict onto the live views; the reply to answer with, or None to go on."""
    if v.state is not None:
        req.state = dict(v.state)
    if v.headers is not None:
        target = resp.headers if hook == "response_headers" and resp is not None else req.headers
        target.replace((k, val) for k, val in v.headers)
    r = v.reply
    if r is None:
        return None
    return LocalReply(r.status, r.body, tuple((k, v) for k, v in r.headers), r.details)


def views_of(call: FilterCall) -> tuple[Request, Response | None]:
    req = Request(
        call.method,
        call.path,
        call.authority,
        Headers([(str(k).lower(), str(v)) for k, v in call.headers]),
        scheme=call.scheme,
        request_id=call.request_id or None,
        route=call.route,
        source=_peer_in(call.source),
        destination=_peer_in(call.destination),
        claims=call.claims,
    )
    req.state = dict(call.state)
    resp = None
    if call.response_headers is not None:
        resp = Response(call.status, Headers([(str(k).lower(), str(v)) for k, v in call.response_headers]))
    return req, resp


def verdict_of(
    result: LocalReply | None,
    call: FilterCall,
    req: Request,
    resp: Response | None,
) -> FilterVerdict:
    """What a hook did to the views ``views_of`` made, as the verdict the proxy applies."""
    if call.hook == "response_headers" and resp is not None:
        after = _pairs(resp.headers)
        headers = after if after != call.response_headers else None
    else:
        after = _pairs(req.headers)
        headers = after if after != call.headers else None
    state = req.state if req.state != call.state else None
    reply = None
    if result is not None:
        body = result.body.encode() if isinstance(result.body, str) else bytes(result.body)
        reply = WireReply(result.status, body, [[k, v] for k, v in result.headers], result.details)
    return FilterVerdict(headers=headers, reply=reply, state=state)
