"""Sans-IO HTTP/1.1 sessions over httptools (llhttp): bytes in, events out; no sockets, no asyncio.

Rules (the listener and the upstream pool rely on them):
- ``RequestSession.feed(data)`` returns the events found in ``data``, in wire order, so pipelined
  requests come out as HEAD, BODY*, END, HEAD, ... for the caller to answer in order.
- A malformed request raises ``ProtocolError(400)``; one with both Content-Length and
  Transfer-Encoding (request smuggling) also 400 (llhttp refuses it), and one with two Host headers
  (RFC 9112 3.2; docs/smuggling.md lists every vector tested); a head over ``max_header_bytes``
  raises ``ProtocolError(431)``. After an error the session is unusable: close the connection.
- Trailer fields of a chunked message are dropped (the proxy forwards none; they never reach the next
  message's headers) and held to the head's limit, ``max_header_bytes`` (responses:
  ``MAX_RESPONSE_HEAD``), past which the session raises 431 (502). llhttp reports them through the
  header callbacks, which count the fields that have ended as a head's; httptools buffers a field
  until it ends, so reads inside a chunked body that carry none of its data (a trailer field that does
  not end) count too: a trailer section is refused before httptools holds more than the limit plus
  one read of it. Neither count alone bounds a section: the reads in which it begins and ends give
  events (the last chunk's data, the message's end), so the read count misses one that fits in those
  two reads, and the field count never sees a field that has not ended. As Envoy (431, DPE, ``http1.headers_too_large``; measured with Envoy 1.40), no field
  count is applied beyond the bytes.
- An Upgrade (or CONNECT) request ends with an ``UPGRADE`` event carrying the bytes that followed the
  head; from then on the connection is a raw tunnel and ``feed`` must not be called again.
- ``ResponseSession`` parses one upstream response per ``expect()`` call. 1xx interim responses are
  swallowed (the proxy answers ``Expect: 100-continue`` itself); a response to HEAD ends at its head.
- Header names come out lowercased ``str`` (latin-1), values as sent. HTTP/1.1 names are
  case-insensitive and Envoy lowercases them too, so the proxy forwards them lowercased, except on
  the pass-through path below.
- ``ResponseSession(raw_heads=True)`` (upstream connections) skips llhttp's per-header callbacks and
  keeps each response head as received (``ResponseHead.raw``); ``headers``/``hdict`` are parsed from
  it on first use. When no response header has to change, ``passthrough_head`` forwards those bytes
  minus hop-by-hop headers (bench/micro.py with nginx's 5 headers: 13.7 -> 11.0 us per request).
  A whole response in one read whose head repeats, byte for byte, the last head llhttp accepted on
  the connection skips llhttp altogether (its framing is known; micro.py: 10.3 -> 9.0 us).
- Requests: ``RequestHead.raw`` is the head as received (minus its blank line) when it starts a read and
  its bytes are exactly the request line plus the "name: value" lines llhttp reported; exchange.Exchange
  then forwards it with its own lines appended instead of rebuilding it (micro.py: ~0.5 us per request).
"""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Any, Final

import httptools

# Event kinds: events are (kind, payload) tuples, cheaper than objects on the hot path.
HEAD: Final = 0  # payload: RequestHead / ResponseHead
BODY: Final = 1  # payload: bytes
END: Final = 2  # payload: None
UPGRADE: Final = 3  # payload: bytes received after the head (start of the tunnel)

# Body framing of a message.
NO_BODY: Final = 0
LENGTH: Final = 1
CHUNKED: Final = 2
UNTIL_EOF: Final = 3  # responses only: no length, no chunking, body ends when the upstream closes

DEFAULT_MAX_HEADER_BYTES: Final = 60 * 1024

HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


class ProtocolError(Exception):
    """A message the proxy refuses; ``status`` is what to answer the client (400, 431)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"meshbus: {reason}")
        self.status = status
        self.reason = reason
        # RequestSession.feed: the events the read gave before the error (requests complete before
        # it, the head and body of the one that failed), for the caller to answer in order first.
        self.events: list[tuple[int, Any]] = []


class RequestHead:
    """One parsed request head. ``headers`` keeps order and duplicates; ``hdict`` joins duplicates with ","."""

    __slots__ = (
        "body",
        "content_length",
        "hdict",
        "headers",
        "keep_alive",
        "method",
        "raw",
        "target",
        "upgrade",
        "version",
    )

    def __init__(
        self,
        method: str,
        target: str,
        version: str,
        headers: list[tuple[str, str]],
        hdict: dict[str, str],
        keep_alive: bool,
        upgrade: bool,
        body: int,
        content_length: int,
        raw: bytes | None = None,
    ) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.hdict = hdict
        self.keep_alive = keep_alive
        self.upgrade = upgrade
        self.body = body
        self.content_length = content_length
        # The head as received minus its closing blank line, when it is exactly the request line and
        # "name: value" lines llhttp reported (see RequestSession.on_headers_complete); else None.
        self.raw = raw


_RESPONSE_FRAMING: Final = frozenset({"content-length", "transfer-encoding", "connection", "upgrade"})


class ResponseHead:
    """``hdict`` of a response holds only content-length, transfer-encoding, connection, upgrade.

    ``raw`` is the head as received (status line through the blank line) when the session kept it;
    ``headers`` and ``hdict`` are then parsed from it on first use (most responses never need them),
    and ``passthrough`` is ``passthrough_head(raw)``.
    """

    __slots__ = ("_hdict", "_headers", "body", "content_length", "keep_alive", "passthrough", "raw", "status")

    def __init__(
        self,
        status: int,
        headers: list[tuple[str, str]] | None,
        hdict: dict[str, str] | None,
        keep_alive: bool,
        body: int,
        content_length: int,
        raw: bytes | None = None,
    ) -> None:
        self.status = status
        self._headers = headers
        self._hdict = hdict
        self.keep_alive = keep_alive
        self.body = body
        self.content_length = content_length
        self.raw = raw
        self.passthrough: bytes | None = None  # raw minus hop-by-hop headers, when nothing else must change

    @property
    def headers(self) -> list[tuple[str, str]]:
        h = self._headers
        if h is None:
            h, self._hdict = _parse_raw_head(self.raw or b"")
            self._headers = h
        return h

    @property
    def hdict(self) -> dict[str, str]:
        d = self._hdict
        if d is None:
            self._headers, d = _parse_raw_head(self.raw or b"")
            self._hdict = d
        return d


# Header names as sent -> lowercased str. Names repeat across requests (Host, Content-Length, ...), so a
# bounded cache turns decode + lower into one dict lookup.
_NAMES: Final[dict[bytes, str]] = {}


def _name(raw: bytes) -> str:
    n = raw.decode("latin-1").lower()
    if len(_NAMES) < 1024:
        _NAMES[raw] = n
    return n


_METHODS: Final = {
    m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE")
}


def _framing(hdict: dict[str, str]) -> tuple[int, int]:
    te = hdict.get("transfer-encoding")
    if te is not None:
        return CHUNKED, -1
    cl = hdict.get("content-length")
    if cl is not None:
        n = int(cl)  # llhttp already checked it is a single decimal number
        return (LENGTH, n) if n else (NO_BODY, 0)
    return NO_BODY, 0


class _HeadFields:
    """httptools callbacks collecting the headers of one kept response head (see ResponseHead.raw)."""

    __slots__ = ("hdict", "headers")

    def __init__(self) -> None:
        self.headers: list[tuple[str, str]] = []
        self.hdict: dict[str, str] = {}

    def on_header(self, name: bytes, value: bytes) -> None:
        n = _NAMES.get(name) or _name(name)
        v = value.decode("latin-1")
        self.headers.append((n, v))
        if n in _RESPONSE_FRAMING:
            d = self.hdict
            d[n] = d[n] + "," + v if n in d else v


def _parse_raw_head(raw: bytes) -> tuple[list[tuple[str, str]], dict[str, str]]:
    # The same llhttp that accepted the head parses it again, so the fields are exactly what a session
    # with header callbacks would have produced. The body is not part of ``raw``; llhttp waits for it.
    f = _HeadFields()
    try:
        httptools.HttpResponseParser(f).feed_data(raw)
    except httptools.HttpParserUpgrade:
        pass
    return f.headers, f.hdict


class _NoHeaderCallbacks:
    """The callbacks of a raw-heads ResponseSession minus ``on_header``: httptools looks callbacks up
    once, when the parser is made, and calls into Python only for those that exist."""

    __slots__ = ("on_body", "on_headers_complete", "on_message_begin", "on_message_complete")

    def __init__(self, session: ResponseSession) -> None:
        self.on_body = session.on_body
        self.on_headers_complete = session.on_headers_complete
        self.on_message_begin = session.on_message_begin
        self.on_message_complete = session.on_message_complete


MAX_RESPONSE_HEAD: Final = 1 << 20  # a session refuses a longer response head (502) instead of buffering it


_MEMO_HEADERS: Final = 32  # the places RequestSession remembers headers at (a head rarely has more)
_MEMO_VALUE: Final = 256  # and the longest value it keeps there


def _joined(headers: list[tuple[str, str]]) -> dict[str, str]:
    """The headers by name, the values of a repeated name joined with "," in order."""
    d: dict[str, str] = {}
    for n, v in headers:
        d[n] = d[n] + "," + v if n in d else v
    return d


class RequestSession:
    """Downstream side: parses requests from a client connection."""

    __slots__ = (
        "_chunked",
        "_data",
        "_error",
        "_events",
        "_feed",
        "_fresh",
        "_get_method",
        "_hdict",
        "_headers",
        "_hsize",
        "_in_msg",
        "_max",
        "_memo_names",
        "_memo_pairs",
        "_memo_values",
        "_parser",
        "_partial",
        "_tsize",
        "_url",
        "in_head",  # a request head has started but is not complete (what the header timeout watches)
    )

    def __init__(self, max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES) -> None:
        self._max = max_header_bytes
        self._parser = httptools.HttpRequestParser(self)
        # bound once: compiled, calling a method of httptools' parser looks it up by name each read
        self._feed = self._parser.feed_data
        self._get_method = self._parser.get_method
        self._events: list[tuple[int, Any]] = []
        self._headers: list[tuple[str, str]] = []
        self._hdict: dict[str, str] = {}
        # The connection's last head by position: each header's name and value as sent, and the
        # (name, value) pair made of them (see on_header).
        self._memo_names: list[bytes] = []
        self._memo_values: list[bytes] = []
        self._memo_pairs: list[Any] = []  # Any: compiled, a tuple[str, str] would be re-boxed (a new tuple)
        self._url = b""
        self._hsize = 0
        self._partial = 0
        self.in_head = False
        self._error: ProtocolError | None = None
        self._data = b""
        self._fresh = False  # the next head starts at byte 0 of ``_data``
        self._in_msg = False
        self._chunked = False  # a chunked body (or its trailer section) is being read
        self._tsize = 0  # bytes of its trailer fields so far, counted as a head's

    def feed(self, data: bytes) -> list[tuple[int, Any]]:
        events = self._events = []
        was_in_head = self.in_head
        self._data = data
        self._fresh = not self._in_msg
        try:
            self._feed(data)
        except httptools.HttpParserUpgrade as exc:
            events.append((UPGRADE, data[exc.args[0] :]))
            return events
        except httptools.HttpParserError as exc:
            err = self._error
            if err is None:
                err = ProtocolError(400, f"malformed request: {exc}")
            err.events = events
            raise err from None
        finally:
            self._data = b""  # a long-idle keep-alive connection must not pin its last read
        if self.in_head:
            # A head still incomplete after this read: count what it has taken so far, so a client
            # that sends an endless header line gets 431 without the proxy buffering it all.
            self._partial = self._partial + len(data) if was_in_head else len(data)
            if self._partial > self._max:
                err = ProtocolError(431, "request header fields too large")
                err.events = events
                raise err
        elif self._chunked:
            # Inside a chunked body every read carries data (a BODY event) or the message's end, except
            # those of a trailer section (and of chunk-size lines): count the reads that carry neither,
            # so an endless trailer field gets 431 before httptools has buffered more than the head's
            # limit plus the read in which it began.
            if events:
                self._partial = 0
            else:
                self._partial += len(data)
                if self._partial > self._max:
                    raise ProtocolError(431, "request trailer fields too large")
        return events

    # httptools callbacks
    def on_message_begin(self) -> None:
        # The per-message lists and counters were reset when the previous head completed.
        self.in_head = True
        self._in_msg = True

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._hsize += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.in_head:
            # A trailer field of a chunked body: llhttp reports it as a header after the head is
            # complete, when the lists belong to the next request; the proxy forwards no trailers.
            # Counted as a head's fields are, so a section over the limit is 431 however it was read.
            self._tsize += len(name) + len(value) + 4
            if self._tsize > self._max:
                self._error = ProtocolError(431, "request trailer fields too large")
                raise self._error
            return
        self._hsize += len(name) + len(value) + 4
        if self._hsize > self._max:
            self._error = ProtocolError(431, "request header fields too large")
            raise self._error
        # A client sends the same names in the same order on each request of a connection, most
        # values unchanged (a sidecar's Host, User-Agent, peer and X-Forwarded-* lines): comparing
        # with the last head's header at this place is cheaper than hashing the name into _NAMES,
        # and an equal value reuses its pair (a tuple and its strs are immutable), without a decode.
        headers = self._headers
        i = len(headers)
        names = self._memo_names
        pair: Any
        # typed, its items are read natively (a tuple[str, str] kept in ``pair`` would be boxed anew)
        nv: tuple[str, str]
        if i < len(names) and names[i] == name:
            if self._memo_values[i] == value:
                pair = nv = self._memo_pairs[i]
            else:
                nv = self._memo_pairs[i]
                pair = nv = (nv[0], value.decode("latin-1"))
                self._remember(i, value, pair)
        else:
            pair = nv = (_NAMES.get(name) or _name(name), value.decode("latin-1"))
            if i < len(names):
                names[i] = name
                self._remember(i, value, pair)
            elif i < _MEMO_HEADERS:
                names.append(name)
                self._memo_values.append(b"")
                self._memo_pairs.append(None)
                self._remember(i, value, pair)
        headers.append(pair)
        # A repeated name replaces the value here; on_headers_complete joins them (one length
        # compare a head, where keeping the first value and testing each store cost ~40 a header).
        self._hdict[nv[0]] = nv[1]

    def _remember(self, i: int, value: bytes, pair: Any) -> None:
        if len(value) > _MEMO_VALUE:
            # not pinned while the connection idles: an empty value stands in (and is one when equal)
            value = b""
            pair = (pair[0], "")
        self._memo_values[i] = value
        self._memo_pairs[i] = pair

    def on_headers_complete(self) -> None:
        p = self._parser
        headers = self._headers
        hdict = self._hdict
        if len(hdict) != len(headers):
            hdict = _joined(headers)  # a name repeated (rare): its values joined in order
        if "," in hdict.get("host", ""):
            # RFC 9112 3.2: more than one Host (joined with ",") or an invalid one; no host contains a
            # comma. Routing by one and forwarding the other is the absolute-form/Host desync.
            self._error = ProtocolError(400, "more than one Host header")
            raise self._error
        if "transfer-encoding" in hdict or "content-length" in hdict:
            body, length = _framing(hdict)
            if body == CHUNKED:
                self._chunked = True
                self._tsize = 0
        else:
            body, length = NO_BODY, 0  # the common GET: no framing headers at all
        self.in_head = False
        url = self._url
        m: bytes = self._get_method()  # typed: ``data.startswith(m)`` below is then a native call
        version = None
        raw = None
        if self._fresh:
            # The first head of this read, starting at its first byte: keep it as received when its
            # length is exactly that of "METHOD url HTTP/1.1" plus one "name: value" line per header
            # llhttp reported, so no leading blank line, odd spacing or bare LF slips through. That
            # layout puts the blank line at ``end``; llhttp takes only CRLF line ends, so the head it
            # parsed from byte 0 ends at the read's first CRLF CRLF, and the blank line being where the
            # layout puts it is enough (no search of the read for it: ~1,500 instructions a request).
            self._fresh = False
            data = self._data
            lm = len(m)
            end = lm + 12 + self._hsize
            if data[end - 2 : end + 2] == b"\r\n\r\n" and data.startswith(m):
                # The version is where that layout puts it (llhttp accepted it): reading it there is
                # cheaper than get_http_version(), which formats a new string each time.
                v = lm + len(url) + 2
                if data[v : v + 8] == b"HTTP/1.1":
                    version = "1.1"
                    raw = data[:end]
        if version is None:
            version = p.get_http_version()
            if version != "1.1" and version != "1.0":
                # llhttp refuses other versions but takes 0.9 and 2.0 (then refuses the bytes after a
                # 2.0 head): neither is HTTP/1 to forward (Envoy: 426, details low_version).
                self._error = ProtocolError(400, f"unsupported HTTP version {version}")
                raise self._error
            keep_alive = p.should_keep_alive()
            upgrade = p.should_upgrade()
        elif "connection" in hdict or m == b"CONNECT":
            keep_alive = p.should_keep_alive()
            upgrade = p.should_upgrade()
        else:
            # HTTP/1.1 without a Connection header: llhttp keeps the connection (a request never
            # needs EOF to end) and cannot upgrade (that takes "Connection: upgrade", or CONNECT);
            # what its two calls would answer, without them.
            keep_alive = True
            upgrade = False
        self._headers = []  # ready for the next message (pipelining) without an on_message_begin reset
        self._hdict = {}
        self._url = b""
        self._hsize = 0
        self._events.append(
            (
                HEAD,
                RequestHead(
                    _METHODS.get(m) or m.decode("ascii"),
                    url.decode("latin-1"),
                    version,
                    headers,
                    hdict,
                    keep_alive,
                    upgrade,
                    body,
                    length,
                    raw,
                ),
            )
        )

    def on_body(self, body: bytes) -> None:
        self._events.append((BODY, body))

    def on_message_complete(self) -> None:
        self._in_msg = False
        self._chunked = False
        self._events.append((END, None))


class ResponseSession:
    """Upstream side: parses the response to each request sent on one upstream connection.

    ``raw_heads=True``: no per-header callbacks; each head is kept as bytes (``ResponseHead.raw``) and
    its framing read from them. The bytes of a head are collected from the first ``feed`` after
    ``expect()``, so only the response that was asked for has ``raw`` (anything an upstream sends
    beyond it gets empty headers; the proxy drops it anyway).
    """

    __slots__ = (
        "_at_boundary",
        "_events",
        "_hdict",
        "_headers",
        "_hsize",
        "_info",
        "_last_frame",
        "_last_raw",
        "_last_scan",
        "_no_body",
        "_parser",
        "_partial",
        "_raw",
        "_raw_heads",
        "_reset",
        "_skip",
        "_trailing",
        "_tsize",
        "_want_raw",
    )

    def __init__(self, raw_heads: bool = False) -> None:
        self._raw_heads = raw_heads
        self._parser = self._new_parser()
        self._events: list[tuple[int, Any]] = []
        self._headers: list[tuple[str, str]] = []
        self._hdict: dict[str, str] = {}
        self._no_body = False
        self._skip = False
        self._info = False
        self._reset = False
        self._raw = b""  # raw_heads: bytes received since expect(), until the head is complete
        self._want_raw = False
        # The last head scanned and what _scan_head found in it: an upstream answers one connection's
        # requests with byte-identical heads until its Date header ticks, so most scans are a compare.
        self._last_raw = b""
        self._last_scan: tuple[bytes | None, bytes | None, bytes | None] = (None, None, None)
        # (status, keep_alive, body, length) llhttp gave ``_last_raw`` as the answer to a non-HEAD
        # request, when a repeat of it can skip llhttp (see feed); None otherwise.
        self._last_frame: tuple[int, bool, int, int] | None = None
        self._at_boundary = True  # llhttp is between messages (so feeding it nothing loses no state)
        self._trailing = False  # past the head: on_header reports trailer fields (header callbacks only)
        self._partial = 0  # bytes of the reads since the last one that gave an event, inside a message
        self._tsize = 0  # bytes of the current message's trailer fields (header callbacks only)
        self._hsize = 0  # and of its head's fields so far (raw heads count ``_raw``)

    def _new_parser(self) -> Any:
        return httptools.HttpResponseParser(_NoHeaderCallbacks(self) if self._raw_heads else self)

    def expect(self, head_request: bool) -> None:
        """Prepare for the response to the next request; ``head_request`` = it was a HEAD."""
        if self._reset:
            # llhttp cannot be told a response answers HEAD; after one we start a fresh parser.
            self._parser = self._new_parser()
            self._reset = False
            self._at_boundary = True
            self._trailing = False
        self._no_body = head_request
        self._skip = False
        self._raw = b""
        self._want_raw = self._raw_heads

    def feed(self, data: bytes) -> list[tuple[int, Any]]:
        if self._want_raw and not self._raw:
            # A whole response in one read whose head is byte for byte the last one llhttp accepted on
            # this connection (an upstream repeats its heads until the Date header ticks): framing is
            # already known, so llhttp, its callbacks and the scan are skipped. Only exactly one message
            # qualifies, and only while llhttp sits between messages, so it never loses its place.
            frame = self._last_frame
            if frame is not None and self._at_boundary and not self._no_body:
                last = self._last_raw
                n = len(last)
                if len(data) == n + frame[3] and data.startswith(last):
                    self._want_raw = False
                    rh = ResponseHead(frame[0], None, None, frame[1], frame[2], frame[3], last)
                    rh.passthrough = self._last_scan[2]
                    if frame[3]:
                        return [(HEAD, rh), (BODY, data[n:]), (END, None)]
                    return [(HEAD, rh), (END, None)]
        events = self._events = []
        if self._want_raw:
            if self._raw:
                self._raw += data
                if len(self._raw) > MAX_RESPONSE_HEAD:
                    raise ProtocolError(502, "upstream response head too large")
            else:
                self._raw = data
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            events.append((UPGRADE, data[exc.args[0] :]))
        except httptools.HttpParserError as exc:
            raise ProtocolError(502, f"upstream protocol error: {exc}") from None
        if not events:
            if not self._at_boundary:
                # Inside a message, a read that gives no event carries only head or trailer bytes (body
                # data is a BODY event): count them, so that an endless trailer field is refused before
                # httptools has buffered more than MAX_RESPONSE_HEAD plus the read in which it began.
                self._partial += len(data)
                if self._partial > MAX_RESPONSE_HEAD:
                    raise ProtocolError(502, "upstream response head or trailers too large")
        elif self._partial:
            self._partial = 0
        return events

    def on_message_begin(self) -> None:
        # on_headers_complete starts the next message's lists itself; this only tracks where llhttp is.
        self._at_boundary = False

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._trailing:
            # A trailer field of a chunked body, reported after the head: the lists belong to the next
            # response by then (a trailer "Transfer-Encoding" would frame it); the proxy forwards none.
            self._tsize += len(name) + len(value) + 4
            if self._tsize > MAX_RESPONSE_HEAD:
                raise ProtocolError(502, "upstream response trailers too large")
            return
        # Bounded as a raw head is: a read that completes the head gives an event, so the count of
        # event-less reads (feed) would let a head of any size through in that one read.
        self._hsize += len(name) + len(value) + 4
        if self._hsize > MAX_RESPONSE_HEAD:
            raise ProtocolError(502, "upstream response head too large")
        n = _NAMES.get(name) or _name(name)
        v = value.decode("latin-1")
        self._headers.append((n, v))
        if n in _RESPONSE_FRAMING:
            # hdict of a response holds only what framing and hop-by-hop handling need
            d = self._hdict
            d[n] = d[n] + "," + v if n in d else v

    def on_headers_complete(self) -> None:
        p = self._parser
        status = p.get_status_code()
        raw = None
        if self._raw_heads:
            headers: list[tuple[str, str]] | None = None
            hdict: dict[str, str] | None = None
            # llhttp accepts only CRLF line ends and no obs-fold, so the first blank line ends this head.
            buf = self._raw
            end = buf.find(b"\r\n\r\n") + 4
            if 100 <= status < 200 and status != 101:
                self._raw = buf[end:] if end > 3 else b""  # the final head follows the interim one
                self._info = True
                return
            if end > 3 and self._want_raw:
                raw = buf[:end]
            else:
                headers, hdict = [], {}
            self._raw = b""
            self._want_raw = False
        else:
            self._trailing = True  # what on_header reports from here on are trailer fields
            self._tsize = 0
            self._hsize = 0
            headers = self._headers
            hdict = self._hdict
            self._headers = []
            self._hdict = {}
            if 100 <= status < 200 and status != 101:
                self._info = True
                return
        te: bytes | str | None
        cl: bytes | str | None
        if raw is not None:
            if raw == self._last_raw:
                te, cl, passthrough = self._last_scan
            else:
                te, cl, passthrough = self._last_scan = _scan_head(raw)
                self._last_raw = raw
        else:
            te = hdict.get("transfer-encoding")  # type: ignore[union-attr]
            cl = hdict.get("content-length")  # type: ignore[union-attr]
            passthrough = None
        if self._no_body or status == 204 or status == 304:
            body, length = NO_BODY, 0
        elif te is not None:
            body, length = CHUNKED, -1
        elif cl is not None:
            length = int(cl)  # llhttp already checked it is a single decimal number
            body = LENGTH if length else NO_BODY
        elif status == 101:
            body, length = NO_BODY, 0
            self._skip = True  # llhttp completes the 101 message; the UPGRADE event is what ends it
        else:
            body, length = UNTIL_EOF, -1
        keep_alive = p.should_keep_alive() and body != UNTIL_EOF
        if raw is not None:
            self._last_frame = (
                (status, keep_alive, body, length)
                if not self._no_body and (body == LENGTH or body == NO_BODY) and status != 101
                else None
            )
        rh = ResponseHead(status, headers, hdict, keep_alive, body, length, raw)
        rh.passthrough = passthrough
        self._events.append((HEAD, rh))
        if self._no_body:
            self._events.append((END, None))
            self._skip = True
            self._reset = True

    def on_body(self, body: bytes) -> None:
        if not self._skip:
            self._events.append((BODY, body))

    def on_message_complete(self) -> None:
        self._at_boundary = True
        self._trailing = False
        if self._info:
            self._info = False
        elif not self._skip:
            self._events.append((END, None))


# Framing and hop-by-hop header lines of a raw head as (line, name, value): one regex pass finds all
# (about 4x cheaper than lowercasing the head and searching it name by name). llhttp has already
# refused a space before ":", bare CR/LF and obs-fold, so every line matches exactly as written.
_HEAD_FIELDS: Final = re.compile(
    rb"(\r\n(content-length|transfer-encoding|connection|keep-alive|proxy-[!#$%&'*+.^_`|~0-9a-z-]*|te|trailer|upgrade)"
    rb":[ \t]*([^\r]*))",
    re.IGNORECASE,
)
_PLAIN_CONNECTION: Final = (b"keep-alive", b"close")


def _scan_head(raw: bytes) -> tuple[bytes | None, bytes | None, bytes | None]:
    """(Transfer-Encoding value, Content-Length value, pass-through head) of a raw response head."""
    te = cl = None
    out: bytes | None = raw if raw[:9] == b"HTTP/1.1 " else None
    for line, name, value in _HEAD_FIELDS.findall(raw):
        name = name.lower()
        if name == b"content-length":
            cl = value
        elif name == b"transfer-encoding":
            te = value
            out = None  # re-framed as chunked by the proxy: rebuilt
        elif name == b"connection" and out is raw and value.rstrip().lower() in _PLAIN_CONNECTION:
            out = raw.replace(line, b"", 1)
        else:
            out = None  # Keep-Alive, TE, Trailer, Upgrade, Proxy-*, Connection naming headers, twice
    return te, cl, out


def passthrough_head(raw: bytes) -> bytes | None:
    """A response head as received, ready to forward with hop-by-hop headers dropped; None when only
    rebuilding it can do that: another version than HTTP/1.1 in the status line, a Connection header
    naming more than keep-alive/close, any other hop-by-hop header, or chunked framing.

    Names and the reason phrase keep the upstream's spelling (HTTP/1.1 names are case-insensitive).
    ``ResponseSession(raw_heads=True)`` computes it for every head (``ResponseHead.passthrough``).
    """
    return _scan_head(raw)[2]


# ---- serializers -------------------------------------------------------------------------------

_STATUS_LINES: Final[dict[int, bytes]] = {}


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Unknown"
        line = _STATUS_LINES[status] = f"HTTP/1.1 {status} {phrase}\r\n".encode("latin-1")
    return line


_HEADER_LINE: Final = ": ".join  # (name, value) -> "name: value": the cheapest per-header step measured


def serialize_request_head(method: str, target: str, headers: list[tuple[str, str]]) -> bytes:
    """Request line + headers + blank line. Callers have already dropped hop-by-hop headers."""
    if not headers:
        return f"{method} {target} HTTP/1.1\r\n\r\n".encode("latin-1")
    # One str join + one encode; "%" beats f-strings and per-header formatting here (~40% less time).
    return (
        "%s %s HTTP/1.1\r\n%s\r\n\r\n" % (method, target, "\r\n".join(map(_HEADER_LINE, headers)))  # noqa: UP031
    ).encode("latin-1")


def serialize_response_head(status: int, headers: list[tuple[str, str]]) -> bytes:
    if not headers:
        return status_line(status) + b"\r\n"
    return status_line(status) + ("\r\n".join(map(_HEADER_LINE, headers)) + "\r\n\r\n").encode("latin-1")


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (the proxy re-frames bodies it forwards as chunked)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


LAST_CHUNK: Final = b"0\r\n\r\n"


def connection_tokens(hdict: dict[str, str]) -> frozenset[str]:
    """Header names listed in Connection (also hop-by-hop, RFC 9110 7.6.1) plus the fixed set."""
    conn = hdict.get("connection")
    if not conn:
        return HOP_BY_HOP
    tokens = _TOKENS_CACHE.get(conn)
    if tokens is None:
        tokens = HOP_BY_HOP | {t.strip().lower() for t in conn.split(",")}
        if len(_TOKENS_CACHE) < 256:  # a handful of values in practice ("keep-alive", "close", ...)
            _TOKENS_CACHE[conn] = tokens
    return tokens


_TOKENS_CACHE: Final[dict[str, frozenset[str]]] = {}


def local_reply(
    status: int, body: str | bytes, extra: list[tuple[str, str]] | None = None, *, close: bool = False
) -> bytes:
    """A complete response the proxy makes itself (no route, rate limited, timeout, ...)."""
    b = body.encode() if isinstance(body, str) else body
    headers = [("content-type", "text/plain"), ("content-length", str(len(b)))]
    if extra:
        if any(n == "content-type" for n, _ in extra):  # the reply names its own (an authorizer's denial)
            del headers[0]
        headers.extend(extra)
    if close:
        headers.append(("connection", "close"))
    return serialize_response_head(status, headers) + b
