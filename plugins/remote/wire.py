"""SDK views <-> the remote filter messages (bus/schemas/filters.py), for both sides. No I/O.

Proxy side: ``pack_call`` turns the request a filter sees into a packed ``FilterCall`` (``call_of``:
the same as the host decodes it); ``read_verdict`` and ``apply_verdict`` carry the host's answer back
onto the live request (headers, state) and return its reply.
Host side: ``call_in`` reads a call; ``views_of`` rebuilds ``Request``/``Response`` from a call; ``verdict_of`` says what the
hook changed; ``pack_verdict`` packs it.

Both sides leave out the fields at their defaults (docs/remote-filters.md: missing keys take their
defaults), and pack plain maps built here rather than going through the codec's dataclass hook: a
call is packed and a verdict read once per hook per request, and that is most of a remote filter's
cost in the proxy besides the round trip.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Final

import msgpack

from meshbus.bus import codec
from meshbus.bus.schemas.filters import FilterCall, FilterVerdict, WirePeer, WireReply
from meshbus.plugins.api import LocalReply
from meshbus.plugins.http import Headers, Peer, Request, Response


def config_digest(config: Mapping[str, Any] | None) -> str:
    """A stable hash of a pluginConfig (the host's instance cache key)."""
    text = json.dumps(config or {}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


VERDICT_SCHEMA: Final = codec.schema_id(FilterVerdict)
CONTINUE: Final = FilterVerdict()

_PEERS: dict[int, tuple[Peer, dict[str, Any]]] = {}


def _peer_map(p: Peer) -> dict[str, Any]:
    """A peer as its wire map, defaults left out; made once per peer object (the proxy keeps its
    peers: one per principal or service host, and the workload's own)."""
    hit = _PEERS.get(id(p))
    if hit is not None and hit[0] is p:
        return hit[1]
    m: dict[str, Any] = {}
    for key, value in (
        ("principal", p.principal), ("namespace", p.namespace), ("service_account", p.service_account),
        ("labels", dict(p.labels)), ("service", p.service),
    ):  # fmt: skip
        if value:
            m[key] = value
    if len(_PEERS) >= 4096:
        _PEERS.clear()
    _PEERS[id(p)] = (p, m)
    return m


def _peer_in(p: WirePeer) -> Peer:
    return Peer(
        p.principal or None, p.namespace or None, p.service_account or None, dict(p.labels), p.service or None
    )


def _pairs(h: Headers) -> list[list[str]]:
    return [[k, v] for k, v in h.items()]


def pack_call(
    hook: str,
    req: Request,
    *,
    plugin: str = "",
    config: Mapping[str, Any] | None = None,
    digest: str = "",
    resp: Response | None = None,
    body: bytes | None = None,
    end: bool = True,
) -> bytes:
    """The ``FilterCall`` for ``hook`` of ``req`` (and ``resp``), packed, defaults left out."""
    m: dict[str, Any] = {
        "hook": hook,
        "method": req.method,
        "path": req.path,
        "authority": req.authority,
        "headers": req.headers.items(),  # (name, value) tuples: msgpack arrays
    }
    if req.scheme != "http":
        m["scheme"] = req.scheme
    if plugin:
        m["plugin"] = plugin
    if config is not None:
        m["config"] = config
    if digest:
        m["config_digest"] = digest
    if req.request_id:
        m["request_id"] = req.request_id
    if req.route:
        m["route"] = req.route
    source = _peer_map(req.source)
    if source:
        m["source"] = source
    destination = _peer_map(req.destination)
    if destination:
        m["destination"] = destination
    if req.claims is not None:
        m["claims"] = req.claims
    if resp is not None:
        m["status"] = resp.status
        m["response_headers"] = resp.headers.items()
    if body is not None:
        m["body"] = body
    if not end:
        m["end"] = False
    if req.state:
        m["state"] = req.state
    return msgpack.packb(m, use_bin_type=True)


CALL_SCHEMA: Final = codec.schema_id(FilterCall)
_NONE = type(None)
_CALL_TYPES: Final[dict[str, tuple[type, ...]]] = {
    **dict.fromkeys(
        ("hook", "plugin", "config_digest", "method", "path", "authority", "scheme", "request_id", "route"), (str,)
    ),
    "config": (dict, _NONE), "claims": (dict, _NONE), "state": (dict,), "status": (int,),
    "body": (bytes, _NONE), "end": (bool,),
}  # fmt: skip
_PEER_STRS: Final = frozenset(("principal", "namespace", "service_account", "service"))
_NO_PEER: Final = WirePeer()


def _str_pairs(v: Any) -> bool:
    return type(v) is list and all(
        type(p) is list and len(p) == 2 and type(p[0]) is str and type(p[1]) is str for p in v
    )


def _peer(m: Any) -> WirePeer | None:
    if type(m) is not dict:
        return None
    for k, v in m.items():
        if k in _PEER_STRS:
            if type(v) is not str:
                return None
        elif k == "labels":
            if type(v) is not dict or not all(type(x) is str and type(y) is str for x, y in v.items()):
                return None
    kw = {k: v for k, v in m.items() if k in _PEER_STRS}
    labels = m.get("labels")
    return WirePeer(**kw, labels=dict(labels)) if labels is not None else WirePeer(**kw)


def _fast_call(m: dict[Any, Any]) -> FilterCall | None:
    """``m`` as a FilterCall when every field in it has exactly its wire type, else None."""
    kw: dict[str, Any] = {}
    for k, v in m.items():
        kinds = _CALL_TYPES.get(k)
        if kinds is not None:
            if type(v) not in kinds:
                return None
            kw[k] = v
        elif k == "headers" or k == "response_headers":
            if not _str_pairs(v) and not (k == "response_headers" and v is None):
                return None
            kw[k] = v
        elif k == "source" or k == "destination":
            peer = _peer(v)
            if peer is None:
                return None
            kw[k] = peer
        # other keys: ignored, as the codec ignores them (a newer proxy's fields)
    if "hook" not in kw:
        return None
    kw.setdefault("source", _NO_PEER)  # one shared, instead of one made per call (views copy its labels)
    kw.setdefault("destination", _NO_PEER)
    return FilterCall(**kw)


def call_in(data: bytes, headers: Mapping[str, str] | None, max_bytes: int) -> FilterCall:
    """A call as the host receives it: the same ``FilterCall`` as ``codec.decode`` makes, read
    directly when the message is well-formed (a call is decoded once per hook per request, and the
    codec's general decoder was most of a no-op filter's cost in the host); anything unusual goes
    through ``codec.decode``, for its checks and its error."""
    if len(data) <= max_bytes and (
        headers is None or headers.get(codec.SCHEMA_HEADER, CALL_SCHEMA) == CALL_SCHEMA
    ):
        try:
            m = msgpack.unpackb(data, raw=False, strict_map_key=False)
        except Exception:
            m = None
        if type(m) is dict:
            call = _fast_call(m)
            if call is not None:
                return call
    return codec.decode(data, headers, FilterCall, max_bytes=max_bytes)


def call_of(hook: str, req: Request, **kw: Any) -> FilterCall:
    """``pack_call``'s call as a host decodes it."""
    return codec.decode(pack_call(hook, req, **kw), None, FilterCall)


def read_verdict(data: bytes, headers: Mapping[str, str] | None, max_bytes: int) -> FilterVerdict:
    """A host's answer; a plain "continue" (an empty map, what ``pack_verdict`` sends for it) is
    recognised without the codec's general decoder. Raises BadRequestError as ``codec.decode``."""
    if data == b"\x80" and (
        headers is None or headers.get(codec.SCHEMA_HEADER, VERDICT_SCHEMA) == VERDICT_SCHEMA
    ):
        return CONTINUE
    return codec.decode(data, headers, FilterVerdict, max_bytes=max_bytes)


def pack_verdict(v: FilterVerdict) -> bytes:
    """``v`` packed with the fields at their defaults left out ("continue, nothing changed" is ``{}``)."""
    m: dict[str, Any] = {}
    if v.headers is not None:
        m["headers"] = v.headers
    if v.reply is not None:
        r = v.reply
        m["reply"] = {"status": r.status, "body": r.body, "headers": r.headers, "details": r.details}
    if v.state is not None:
        m["state"] = v.state
    if v.error:
        m["error"] = v.error
    return msgpack.packb(m, use_bin_type=True)


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
