"""SDK views <-> the remote filter messages (bus/schemas/filters.py), for both sides. No I/O.

Proxy side: ``pack_call`` turns the request a filter sees into a packed ``FilterCall`` (``call_of``:
the same as the host decodes it); ``pack_request`` does it on a ``CallHead``, the part every call of
one Plugin's hook carries alike, packed once (the proxy's ``RemoteBackend`` keeps one a hook: the
hook, the Plugin, its config and digest: 19.1k -> 15.6k instructions a call, callgrind);
``read_verdict`` and ``apply_verdict`` carry the host's answer back onto the live request (headers,
state) and return its reply.
Host side: ``call_in`` reads a call into a ``HostCall`` with the ``Request``/``Response`` views its
hook sees; ``host_verdict`` says what the hook changed; ``pack_verdict`` packs it. ``views_of`` and
``verdict_of`` do the same for a decoded ``FilterCall``.

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
PACKED_CONTINUE: Final = b"\x80"
"""``CONTINUE`` as ``pack_verdict`` sends it: the empty map (read without the general decoder)."""

_pack = msgpack.Packer(use_bin_type=True).pack
"""``msgpack.packb`` without a Packer (and its buffer) made per message: one kept, used by the
event loop's thread (the proxy and the host pack calls and verdicts there only). It is left empty
after each message, a failed one included."""

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


class CallHead:
    """What every call of one Plugin's hook carries alike (the hook, the Plugin, its config and the
    config's digest), packed once: ``pack_request`` packs only the request's part of each call."""

    __slots__ = ("count", "hook", "packed")

    def __init__(
        self, hook: str, plugin: str = "", config: Mapping[str, Any] | None = None, digest: str = ""
    ) -> None:
        m: dict[str, Any] = {"hook": hook}
        if plugin:
            m["plugin"] = plugin
        if config is not None:
            m["config"] = config
        if digest:
            m["config_digest"] = digest
        self.hook = hook
        self.count = len(m)
        self.packed = _pack(m)[1:]  # the pairs without the map's header: a byte, under 16 keys


_FIXMAPS: Final = [bytes((0x80 | n,)) for n in range(16)]


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
    return pack_request(CallHead(hook, plugin, config, digest), req, resp, body, end)


def pack_request(
    head: CallHead, req: Request, resp: Response | None = None, body: bytes | None = None, end: bool = True
) -> bytes:
    """``pack_call`` with its hook's ``head`` packed already: the request's fields are packed as
    an array of keys and values, whose header is swapped for the whole map's."""
    items: list[Any] = [
        "method", req.method, "path", req.path, "authority", req.authority,
        "headers", req.headers.items(),  # (name, value) tuples: msgpack arrays
    ]  # fmt: skip
    if req.scheme != "http":
        items.append("scheme")
        items.append(req.scheme)
    if req.request_id:
        items.append("request_id")
        items.append(req.request_id)
    if req.route:
        items.append("route")
        items.append(req.route)
    source = _peer_map(req.source)
    if source:
        items.append("source")
        items.append(source)
    destination = _peer_map(req.destination)
    if destination:
        items.append("destination")
        items.append(destination)
    if req.claims is not None:
        items.append("claims")
        items.append(req.claims)
    if resp is not None:
        items.append("status")
        items.append(resp.status)
        items.append("response_headers")
        items.append(resp.headers.items())
    if body is not None:
        items.append("body")
        items.append(body)
    if not end:
        items.append("end")
        items.append(False)
    if req.state:
        items.append("state")
        items.append(req.state)
    n = head.count + len(items) // 2
    packed = _pack(items)  # an array header: a byte under 16 items, else 0xdc and two
    return b"".join(
        (
            _FIXMAPS[n] if n < 16 else b"\xde" + n.to_bytes(2, "big"),
            head.packed,
            packed[1:] if len(items) < 16 else packed[3:],
        )
    )


CALL_SCHEMA: Final = codec.schema_id(FilterCall)
_NONE = type(None)
_CALL_TYPES: Final[dict[str, tuple[type, ...]]] = {
    **dict.fromkeys(
        ("hook", "plugin", "config_digest", "method", "path", "authority", "scheme", "request_id", "route"), (str,)
    ),
    "config": (dict, _NONE), "claims": (dict, _NONE), "state": (dict,), "status": (int,),
    "body": (bytes, _NONE), "end": (bool,),
}  # fmt: skip


class HostCall:
    """A call as the host serves it: what ``_instance`` and ``host_verdict`` need, and the views the
    hook sees (``req``, ``resp``), built straight from the call's map (``call_in``). Slotted and
    plain: a frozen dataclass of FilterCall's 18 fields, then the views made from it, was most of the
    host's decode time for a no-op filter."""

    __slots__ = ("body", "config", "config_digest", "end", "headers", "hook", "req", "resp", "state")

    def __init__(
        self,
        hook: str,
        config: dict[str, Any] | None,
        config_digest: str,
        req: Request,
        resp: Response | None,
        body: bytes | None,
        end: bool,
    ) -> None:
        self.hook = hook
        self.config = config
        self.config_digest = config_digest
        self.req = req
        self.resp = resp
        self.body = body
        self.end = end
        # what the hook's edits are weighed against (host_verdict): the headers as the views hold them
        target = resp if hook == "response_headers" and resp is not None else req
        self.headers = target.headers.items()
        self.state = dict(req.state)

    @classmethod
    def of(cls, call: FilterCall) -> HostCall:
        """A ``FilterCall`` (from ``codec.decode``) as the host serves it."""
        req, resp = views_of(call)
        return cls(call.hook, call.config, call.config_digest, req, resp, call.body, call.end)


_PEERS_IN: dict[tuple[Any, ...], Peer] = {}
_NO_PEER_IN: Final = Peer()


def _host_peer(wire: Any) -> Peer | None:
    """A wire peer map as the SDK's Peer (None: malformed), one object per distinct peer (the proxy
    sends the same few: its workload, and one per principal or service host)."""
    if type(wire) is not dict:
        return None
    m: dict[Any, Any] = wire  # typed: mypyc's dict.get, not a method looked up by name
    if not m:
        return _NO_PEER_IN
    principal = m.get("principal", "")
    namespace = m.get("namespace", "")
    account = m.get("service_account", "")
    service = m.get("service", "")
    labels = m.get("labels")
    if type(principal) is not str or type(namespace) is not str or type(account) is not str:
        return None
    if type(service) is not str:
        return None
    if labels is None:
        items: tuple[tuple[str, str], ...] = ()
    elif type(labels) is dict and all(type(x) is str and type(y) is str for x, y in labels.items()):
        items = tuple(labels.items())
    else:
        return None
    key = (principal, namespace, account, service, items)
    peer = _PEERS_IN.get(key)
    if peer is None:
        if len(_PEERS_IN) >= 4096:
            _PEERS_IN.clear()
        peer = _PEERS_IN[key] = Peer(
            principal or None, namespace or None, account or None, dict(items), service or None
        )
    return peer


def _header_items(v: Any) -> list[tuple[str, str]] | None:
    """``[name, value]`` string pairs as a Headers' items (names lowercase); None: malformed."""
    if type(v) is not list:
        return None
    out = []
    for p in v:
        if type(p) is not list or len(p) != 2:
            return None
        k, val = p
        if type(k) is not str or type(val) is not str:
            return None
        out.append((k.lower(), val))
    return out


_NO_MAP: Final[dict[str, Any]] = {}


def _fast_host(m: dict[Any, Any]) -> HostCall | None:
    """``m`` as a HostCall when every field in it has exactly its wire type, else None (the codec
    takes it, or refuses it with its error). Keys it does not know are ignored, as the codec does
    (a newer proxy's fields)."""
    for k, v in m.items():
        kinds = _CALL_TYPES.get(k)
        if kinds is not None and type(v) not in kinds:
            return None
    hook = m.get("hook")
    if hook is None:
        return None
    items = _header_items(m.get("headers", []))
    if items is None:
        return None
    source = _host_peer(m.get("source", _NO_MAP))
    destination = _host_peer(m.get("destination", _NO_MAP))
    if source is None or destination is None:
        return None
    req = Request(
        m.get("method", ""), m.get("path", ""), m.get("authority", ""), Headers(items), scheme=m.get("scheme", "http"),
        request_id=m.get("request_id") or None, route=m.get("route", ""), source=source, destination=destination,
        claims=m.get("claims"),
    )  # fmt: skip
    state = m.get("state")
    if state is not None:
        req.state = dict(state)
    resp = None
    wire_resp = m.get("response_headers")
    if wire_resp is not None:
        resp_items = _header_items(wire_resp)
        if resp_items is None:
            return None
        resp = Response(m.get("status", 0), Headers(resp_items))
    return HostCall(
        hook, m.get("config"), m.get("config_digest", ""), req, resp, m.get("body"), m.get("end", True)
    )


def call_in(data: bytes, headers: Mapping[str, str] | None, max_bytes: int) -> HostCall:
    """A call as the host serves it: the call and the views its hook sees, read directly when the
    message is well-formed (a call is decoded once per hook per request: the codec's general decoder,
    then a frozen ``FilterCall``, then the views made from it were most of a no-op filter's cost in
    the host); anything unusual goes through ``codec.decode``, for its checks and its error. The
    hook sees what it would see in ``views_of(codec.decode(...))`` (tests/unit/plugins/test_wire.py)."""
    if len(data) <= max_bytes and (
        headers is None or headers.get(codec.SCHEMA_HEADER, CALL_SCHEMA) == CALL_SCHEMA
    ):
        try:
            m = msgpack.unpackb(data, raw=False, strict_map_key=False)
        except Exception:
            m = None
        if type(m) is dict:
            call = _fast_host(m)
            if call is not None:
                return call
    return HostCall.of(codec.decode(data, headers, FilterCall, max_bytes=max_bytes))


def host_verdict(result: LocalReply | None, call: HostCall) -> FilterVerdict:
    """``verdict_of`` for a HostCall: what the hook changed in its views."""
    req, resp = call.req, call.resp
    target = resp if call.hook == "response_headers" and resp is not None else req
    after = target.headers.items()
    headers = [[k, v] for k, v in after] if after != call.headers else None
    return _verdict(result, headers, req.state if req.state != call.state else None)


def _verdict(result: LocalReply | None, headers: list[list[str]] | None, state: Any) -> FilterVerdict:
    """The verdict of a hook that returned ``result`` and changed ``headers`` and ``state`` (None:
    unchanged); `CONTINUE` when it did nothing."""
    if result is None and headers is None and state is None:
        return CONTINUE
    reply = None
    if result is not None:
        body = result.body.encode() if isinstance(result.body, str) else bytes(result.body)
        reply = WireReply(result.status, body, [[k, v] for k, v in result.headers], result.details)
    return FilterVerdict(headers=headers, reply=reply, state=state)


def call_of(hook: str, req: Request, **kw: Any) -> FilterCall:
    """``pack_call``'s call as a host decodes it."""
    return codec.decode(pack_call(hook, req, **kw), None, FilterCall)


def read_verdict(data: bytes, headers: Mapping[str, str] | None, max_bytes: int) -> FilterVerdict:
    """A host's answer; a plain "continue" (an empty map, what ``pack_verdict`` sends for it) is
    recognised without the codec's general decoder. Raises BadRequestError as ``codec.decode``."""
    if data == PACKED_CONTINUE and (
        headers is None or headers.get(codec.SCHEMA_HEADER, VERDICT_SCHEMA) == VERDICT_SCHEMA
    ):
        return CONTINUE
    return codec.decode(data, headers, FilterVerdict, max_bytes=max_bytes)


def pack_verdict(v: FilterVerdict) -> bytes:
    """``v`` packed with the fields at their defaults left out ("continue, nothing changed" is ``{}``)."""
    if v is CONTINUE:
        return PACKED_CONTINUE  # the usual verdict
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
    return _pack(m)


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
    return _verdict(result, headers, req.state if req.state != call.state else None)
