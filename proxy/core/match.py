"""Request matching compiled once per config: Istio HTTPMatchRequest -> a tuple of predicates.

Envoy semantics for the uri: a ``prefix`` is compared against the whole ``:path`` (query included),
``exact`` and ``regex`` against the path with the query string removed; regexes must match the
whole string (RE2 full match, here ``re.fullmatch``). Header matches read only the headers they
name, so a route without header matches never touches the header mapping.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote

if TYPE_CHECKING:
    from meshbus.bus.config.types import StringMatch
    from meshbus.bus.config.virtual_service import HTTPMatchRequest
    from meshbus.proxy.core.routing import RequestView

StrPred = Callable[[str], bool]
ReqPred = Callable[["RequestView"], bool]

# Header keys Istio ignores inside ``headers`` (they are matched by their own fields).
_PSEUDO_HEADERS: Final = frozenset({"uri", "scheme", "method", "authority"})


class MatchCompileError(ValueError):
    """A match cannot be compiled; ``field`` is the path below the match block."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def compile_regex(pattern: str, field: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise MatchCompileError(field, f"invalid regex {pattern!r}: {exc}") from None


def string_pred(sm: StringMatch, field: str, *, ignore_case: bool = False) -> StrPred | None:
    """StringMatch -> predicate on a string; None for an empty match (presence)."""
    if sm.exact is not None:
        if ignore_case:
            low = sm.exact.lower()
            return lambda s: s.lower() == low
        val = sm.exact
        return lambda s: s == val
    if sm.prefix is not None:
        if ignore_case:
            lowp = sm.prefix.lower()
            return lambda s: s.lower().startswith(lowp)
        pre = sm.prefix
        return lambda s: s.startswith(pre)
    if sm.regex is not None:
        # Istio: ignoreUriCase applies to exact and prefix only.
        fm = compile_regex(sm.regex, field + ".regex").fullmatch
        return lambda s: fm(s) is not None
    return None


def describe_string_match(sm: StringMatch) -> dict[str, str]:
    if sm.exact is not None:
        return {"exact": sm.exact}
    if sm.prefix is not None:
        return {"prefix": sm.prefix}
    if sm.regex is not None:
        return {"regex": sm.regex}
    return {}


def _strip_query(path: str) -> str:
    i = path.find("?")
    return path if i < 0 else path[:i]


def _uri_pred(sm: StringMatch, ignore_case: bool) -> ReqPred:
    if sm.prefix is not None:
        if ignore_case:
            lowp = sm.prefix.lower()
            return lambda r: r.path.lower().startswith(lowp)
        pre = sm.prefix

        def prefix_pred(r: RequestView) -> bool:
            return r.path.startswith(pre)

        return _tag(prefix_pred, (PATH_PREFIX, pre, None), None)
    sp = string_pred(sm, "uri", ignore_case=ignore_case)
    if sp is None:
        return lambda r: True
    return lambda r: sp(_strip_query(r.path))


def parse_query(path: str) -> dict[str, str]:
    """First value of each query parameter, percent-decoded; ``?key`` gives ""."""
    i = path.find("?")
    out: dict[str, str] = {}
    if i < 0:
        return out
    for part in path[i + 1 :].split("&"):
        if not part:
            continue
        k, _, v = part.partition("=")
        k = unquote(k)
        if k not in out:
            out[k] = unquote(v)
    return out


def _header_pred(name: str, sm: StringMatch, field: str) -> ReqPred:
    sp = string_pred(sm, field)
    if sp is None:
        return _tag(lambda r: name in r.headers, None, name)

    def pred(r: RequestView) -> bool:
        v = r.headers.get(name)
        return v is not None and sp(v)

    if sm.exact is not None:
        return _tag(pred, (HEADER_EXACT, name, sm.exact), name)
    return _tag(pred, None, name)


# Shapes of predicate the route table scans inline instead of calling (routing.VirtualHost.match).
PATH_PREFIX: Final = 1  # (PATH_PREFIX, prefix, None): req.path.startswith(prefix)
HEADER_EXACT: Final = 2  # (HEADER_EXACT, name, value): req.headers.get(name) == value


def _tag(pred: ReqPred, shape: tuple[int, str, str | None] | None, needs_header: str | None) -> ReqPred:
    """Describe a predicate for the route table: its inline ``shape`` and the header it requires
    to be present (a request without that header cannot match)."""
    pred.shape = shape  # type: ignore[attr-defined]
    pred.needs_header = needs_header  # type: ignore[attr-defined]
    return pred


def pred_shape(pred: ReqPred) -> tuple[int, str, str | None] | None:
    return getattr(pred, "shape", None)


def pred_needs_header(pred: ReqPred) -> str | None:
    return getattr(pred, "needs_header", None)


def _without_header_pred(name: str, sm: StringMatch, field: str) -> ReqPred:
    # Istio: "if a header is matched with a matching rule among withoutHeader, the traffic
    # becomes not matched"; an absent header matches no rule, so the request passes.
    inner = _header_pred(name, sm, field)
    return lambda r: not inner(r)


def _query_pred(name: str, sm: StringMatch, field: str) -> ReqPred:
    sp = string_pred(sm, field)

    def pred(r: RequestView) -> bool:
        v = parse_query(r.path).get(name)
        if v is None:
            return False
        return True if sp is None else sp(v)

    return pred


def compile_match(m: HTTPMatchRequest) -> tuple[ReqPred, ...]:
    """One HTTPMatchRequest -> predicates that must all hold (fields inside a block are ANDed)."""
    preds: list[ReqPred] = []
    if m.uri is not None and not m.uri.is_empty:
        preds.append(_uri_pred(m.uri, m.ignore_uri_case))
    fields: tuple[tuple[str, StringMatch | None, Callable[[RequestView], str]], ...] = (
        ("method", m.method, lambda r: r.method),
        ("authority", m.authority, lambda r: r.authority),
        ("scheme", m.scheme, lambda r: r.scheme),
    )
    for attr, sm, getter in fields:
        if sm is not None and not sm.is_empty:
            sp = string_pred(sm, attr)
            if sp is not None:
                preds.append(_field_pred(getter, sp))
    for name, sm in _items(m.headers):
        lname = name.lower()
        if lname not in _PSEUDO_HEADERS:
            preds.append(_header_pred(lname, sm, f"headers.{name}"))
    for name, sm in _items(m.without_headers):
        lname = name.lower()
        if lname not in _PSEUDO_HEADERS:
            preds.append(_without_header_pred(lname, sm, f"withoutHeaders.{name}"))
    for name, sm in _items(m.query_params):
        preds.append(_query_pred(name, sm, f"queryParams.{name}"))
    return tuple(preds)


def _field_pred(getter: Callable[[RequestView], str], sp: StrPred) -> ReqPred:
    return lambda r: sp(getter(r))


def _items(d: Mapping[str, StringMatch] | None) -> list[tuple[str, StringMatch]]:
    return list(d.items()) if d else []


def describe_match(m: HTTPMatchRequest) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if m.name:
        out["name"] = m.name
    for attr, sm in (("uri", m.uri), ("method", m.method), ("authority", m.authority), ("scheme", m.scheme)):
        if sm is not None and not sm.is_empty:
            out[attr] = describe_string_match(sm)
    for key, d in (
        ("headers", m.headers),
        ("withoutHeaders", m.without_headers),
        ("queryParams", m.query_params),
    ):
        if d:
            out[key] = {k: describe_string_match(v) for k, v in d.items()}
    if m.ignore_uri_case:
        out["ignoreUriCase"] = True
    if m.port is not None:
        out["port"] = m.port
    return out
