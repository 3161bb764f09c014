"""Request path normalization for authorization, as Istio's ``pathNormalization`` configures Envoy.

Modes (MeshConfig ``pathNormalization.normalization``; istio.io docs/reference/config/security/normalization):

- ``NONE``: the path is matched and forwarded as received (``%00`` is still refused).
- ``BASE`` (Istio's ``DEFAULT``): RFC 3986 dot segments removed, ``\\`` turned into ``/``, percent-escapes of
  unreserved characters (``%41`` ``%7e`` ...) decoded, characters that may not appear in a path escaped.
  This is Envoy's ``normalize_path``, i.e. Chromium's path canonicalization (envoy
  source/common/chromium_url/url_canon_path.cc), which this module follows character for character:
  an encoded dot (``%2e``) counts as a dot, other escapes are kept exactly as written.
- ``MERGE_SLASHES``: BASE, then runs of ``/`` merged into one.
- ``DECODE_AND_MERGE_SLASHES``: ``%2F``/``%5C`` decoded to ``/`` and ``\\`` first (Envoy's
  ``UNESCAPE_AND_FORWARD``), then MERGE_SLASHES.

Only the path is normalized: the query string is kept as sent and is never part of what a policy's
``paths`` match; a fragment (``#...``) is dropped, as Envoy strips it. A path that holds ``%00`` (or a
NUL) is refused: `normalize_path` returns None and the proxy answers 400. The result is what the proxy
forwards upstream, so a policy decides on exactly the path the application receives.

Sans-IO and pure; compiled with the request path (setup.py). ``normalize_path`` returns the path
unchanged when there is nothing to do (letters, digits, ``/``: one regex search), and remembers the
last few thousand paths it saw, so a repeated path costs one dict lookup.
"""

from __future__ import annotations

import re
from typing import Final

NONE: Final = 0
BASE: Final = 1
MERGE_SLASHES: Final = 2
DECODE_AND_MERGE_SLASHES: Final = 3

MODES: Final = {
    "NONE": NONE,
    "BASE": BASE,
    "DEFAULT": BASE,
    "MERGE_SLASHES": MERGE_SLASHES,
    "DECODE_AND_MERGE_SLASHES": DECODE_AND_MERGE_SLASHES,
}

# Chromium's kPathCharLookup, per byte: what canonicalization does with the character.
_PASS: Final = 0
_ESCAPE: Final = 1  # written as %XX (uppercase hex)
_UNESCAPE: Final = 2  # an escape of it is decoded
_INVALID: Final = 3  # NUL: the path is refused


def _table() -> bytes:
    t = bytearray([_ESCAPE] * 256)  # controls, space and everything >= 0x7f are escaped
    t[0] = _INVALID
    for c in "!$&'()*+,/:;=@[]":
        t[ord(c)] = _PASS
    for c in "-_~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz":
        t[ord(c)] = _UNESCAPE  # plain as written; decoded when escaped
    t[ord(".")] = _PASS  # dots are handled as dot segments
    return bytes(t)


_LOOKUP: Final = _table()
_HEX: Final = "0123456789ABCDEF"
_HEXDIGITS: Final = frozenset("0123456789abcdefABCDEF")

# Anything BASE may change: an escape, a backslash, a dot right after a slash, a fragment, and every
# character that is escaped. A path without any of these is already canonical.
_BASE_WORK: Final = re.compile(r"[%\\#\x00-\x20\"<>^`{|}\x7f-\xff]|/\.")
_MERGE_WORK: Final = re.compile(r"[%\\#\x00-\x20\"<>^`{|}\x7f-\xff]|/\.|//")
_SLASHES: Final = re.compile(r"/{2,}")
_ESCAPED_SLASH: Final = re.compile(r"%(?:2[fF]|5[cC])")


def split_target(target: str) -> tuple[str, str]:
    """(path, "?query" or "") of a request target; a fragment is dropped."""
    hash_at = target.find("#")
    if hash_at >= 0:
        target = target[:hash_at]
    q = target.find("?")
    if q < 0:
        return target, ""
    return target[:q], target[q:]


_SEEN: Final[list[dict[str, str]]] = [{}, {}, {}, {}]
"""Per mode, paths seen lately -> their normalized form ("" for refused): paths repeat, and a lookup
costs less than the scan (bounded; reset when full)."""


def seen_paths(mode: int) -> dict[str, str]:
    """``normalize_path``'s memo for ``mode`` (path -> its normalized form, "" for refused), for a
    caller that looks a path up there first; the dict stays the same object (emptied when full)."""
    return _SEEN[mode]


def normalize_path(path: str, mode: int) -> str | None:
    """The path (no query) as the proxy matches and forwards it under ``mode``; None when it must be
    refused (it holds ``%00`` or a NUL). A path that does not start with ``/`` (``OPTIONS *``) is left
    as it is."""
    seen = _SEEN[mode]
    hit = seen.get(path)
    if hit is not None:
        return hit or None
    out = _normalize(path, mode)
    if len(seen) >= 4096:
        seen.clear()
    seen[path] = out if out is not None else ""
    return out


def _normalize(path: str, mode: int) -> str | None:
    if mode == NONE or path[:1] != "/":
        return None if ("%00" in path or "\x00" in path) else path
    work = _MERGE_WORK if mode != BASE else _BASE_WORK
    if work.search(path) is None:
        return path
    if mode == DECODE_AND_MERGE_SLASHES and "%" in path:
        path = _ESCAPED_SLASH.sub(_decode_slash, path)
    out = _canonical(path)
    if out is None:
        return None
    if mode != BASE and "//" in out:
        out = _SLASHES.sub("/", out)
    return out


def _decode_slash(m: re.Match[str]) -> str:
    return "/" if m.group(0)[1] == "2" else "\\"


def _dot_len(s: str, i: int, end: int) -> int:
    """Length of a dot at ``i``: 1 for ``.``, 3 for ``%2e``/``%2E``, 0 for no dot (Chromium IsDot)."""
    c = s[i]
    if c == ".":
        return 1
    if c == "%" and i + 2 < end and s[i + 1] == "2" and s[i + 2] in "eE":
        return 3
    return 0


def _is_slash(c: str) -> bool:
    return c == "/" or c == "\\"


def _canonical(s: str) -> str | None:
    """Chromium's DoPartialPath over one path (``s`` starts with a slash), one output character per
    list item; None where Chromium reports failure (an escaped or raw NUL)."""
    out: list[str] = []
    end = len(s)
    ok = True
    last_invalid_percent = -10  # index in ``out`` of a '%' that did not start a valid escape
    i = 0
    while i < end:
        c = s[i]
        dot = _dot_len(s, i, end)
        if dot:
            if out and out[-1] == "/":
                kind, consumed = _after_dot(s, i + dot, end)
                if kind == _NAME:
                    out.append(".")
                elif kind == _UP:
                    _back_up(out)
                i += dot + consumed
            else:
                out.append(".")  # part of a name (an encoded dot is decoded)
                i += dot
            continue
        if c == "\\":
            out.append("/")
            i += 1
            continue
        if c == "%":
            if i + 2 < end and s[i + 1] in _HEXDIGITS and s[i + 2] in _HEXDIGITS:
                value = int(s[i + 1 : i + 3], 16)
                flag = _LOOKUP[value]
                if flag == _UNESCAPE:
                    out.append(chr(value))
                    if last_invalid_percent >= len(out) - 3:
                        _nested_escape(s, i + 3, end, last_invalid_percent, out)
                else:
                    out.extend(s[i : i + 3])  # kept as written, hex case included
                    if flag == _INVALID:
                        ok = False
                i += 3
            else:
                last_invalid_percent = len(out)
                out.append("%")  # not an escape: kept (the permissive choice Chromium makes)
                i += 1
            continue
        flag = _LOOKUP[ord(c)] if ord(c) < 256 else _ESCAPE
        if flag == _INVALID:
            ok = False
            out.extend("%00")
        elif flag == _ESCAPE:
            out.extend(_escape(c))
        else:
            out.append(c)
        i += 1
    return "".join(out) if ok else None


def _escape(c: str) -> str:
    code = ord(c)
    if code < 256:
        return "%" + _HEX[code >> 4] + _HEX[code & 15]
    return "".join("%" + _HEX[b >> 4] + _HEX[b & 15] for b in c.encode("utf-8"))


_NAME: Final = 0
_CURRENT: Final = 1
_UP: Final = 2


def _after_dot(s: str, after: int, end: int) -> tuple[int, int]:
    """Chromium ClassifyAfterDot: (_NAME | _CURRENT | _UP, input characters consumed after the dot)."""
    if after == end:
        return _CURRENT, 0
    if _is_slash(s[after]):
        return _CURRENT, 1
    second = _dot_len(s, after, end)
    if second:
        after2 = after + second
        if after2 == end:
            return _UP, second
        if _is_slash(s[after2]):
            return _UP, second + 1
    return _NAME, 0


def _back_up(out: list[str]) -> None:
    """Chromium BackUpToPreviousSlash: ``out`` ends with "/"; drop the segment before it."""
    i = len(out) - 1
    if i == 0:
        return
    i -= 1
    while out[i] != "/" and i > 0:
        i -= 1
    del out[i + 1 :]


def _nested_escape(s: str, nxt: int, end: int, pct: int, out: list[str]) -> None:
    """Chromium CheckForNestedEscapes: an invalid '%' followed by characters that, once unescaped, read
    as a valid escape is written ``%25`` so that a second canonicalization cannot decode it."""
    length = len(out)
    last = out[-1]
    append_next = pct == length - 2
    if append_next:
        if nxt == end or ord(s[nxt]) >= 0x80:
            return
        out.append(s[nxt])  # looked at only: the caller still reads it from the input
    if pct + 2 < len(out) and out[pct + 1] in _HEXDIGITS and out[pct + 2] in _HEXDIGITS:
        if not append_next:
            out.append(out[pct + 1])
        out[pct + 1] = "2"
        out[pct + 2] = "5"
        out.append(last)
    elif append_next:
        del out[length:]
