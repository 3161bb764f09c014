"""String, path-template and address matchers, compiled once from policy values (sans-IO).

Istio's value syntax (istio/istio pilot/pkg/security/authz/matcher): ``abc`` exact, ``abc*`` prefix,
``*abc`` suffix, ``*`` any non-empty value; a ``*`` anywhere else is a literal character. Paths may be
Envoy URI templates: ``{*}`` is one segment of RFC 3986 pchar characters, ``{**}`` any number of them
(``/`` included), last only (envoy source/extensions/path/uri_template_lib). A `StrMatch` holds every
value of one list, so a request costs one set lookup for the exact ones and a scan of the few others.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from typing import Final

# Envoy's kLiteral: RFC 3986 pchar without '*' (and with '=').
_PCHAR: Final = r"a-zA-Z0-9\-._~%!$&'()+,;:@="
_ONE_SEGMENT: Final = f"[{_PCHAR}]+"
_ANY_SEGMENTS: Final = f"[{_PCHAR}/]*"


def is_template(value: str) -> bool:
    return "{*}" in value or "{**}" in value


def template_regex(template: str) -> re.Pattern[str]:
    """Envoy's uri_template as a regex: ``{*}`` one segment, ``{**}`` any rest; literals escaped."""
    parts = re.split(r"(\{\*\*\}|\{\*\})", template)
    out = []
    for part in parts:
        if part == "{**}":
            out.append(_ANY_SEGMENTS)
        elif part == "{*}":
            out.append(_ONE_SEGMENT)
        else:
            out.append(re.escape(part))
    return re.compile("".join(out))


class StrMatch:
    """Any of several Istio string values; ``match`` takes the request's value (None: absent)."""

    __slots__ = ("exact", "prefixes", "present", "regexes", "suffixes", "text")

    def __init__(
        self,
        exact: frozenset[str],
        prefixes: tuple[str, ...],
        suffixes: tuple[str, ...],
        present: bool,
        regexes: tuple[re.Pattern[str], ...],
        text: tuple[str, ...],
    ) -> None:
        self.exact = exact
        self.prefixes = prefixes
        self.suffixes = suffixes
        self.present = present
        self.regexes = regexes
        self.text = text  # the values as written (describe, explain)

    def match(self, value: str | None) -> bool:
        if value is None:
            return False
        if value in self.exact:
            return True
        if self.present and value:
            return True
        for p in self.prefixes:
            if value.startswith(p):
                return True
        for s in self.suffixes:
            if value.endswith(s):
                return True
        for r in self.regexes:
            if r.fullmatch(value) is not None:
                return True
        return False

    def only_exact(self) -> bool:
        return not (self.prefixes or self.suffixes or self.present or self.regexes)


def str_match(
    values: Iterable[str], *, lower: bool = False, templates: bool = False, glob_regex: bool = False
) -> StrMatch:
    """Compile values with Istio's wildcard rules. ``lower``: compare case-insensitively (the caller
    lowers the request's value). ``templates``: values may be path templates. ``glob_regex``: every ``*``
    is a wildcard (namespaces: Istio turns each ``*`` into ``.*``)."""
    exact: set[str] = set()
    prefixes: list[str] = []
    suffixes: list[str] = []
    regexes: list[re.Pattern[str]] = []
    present = False
    text = tuple(values)
    for v in text:
        if lower:
            v = v.lower()
        if templates and is_template(v):
            regexes.append(template_regex(v))
        elif v == "*":
            present = True
        elif glob_regex and "*" in v and not (v.count("*") == 1 and (v[0] == "*" or v[-1] == "*")):
            regexes.append(re.compile(".*".join(re.escape(p) for p in v.split("*"))))
        elif v.startswith("*"):
            suffixes.append(v[1:])
        elif v.endswith("*"):
            prefixes.append(v[:-1])
        else:
            exact.add(v)
    return StrMatch(frozenset(exact), tuple(prefixes), tuple(suffixes), present, tuple(regexes), text)


_ADDRESSES: Final[dict[str, tuple[int, int]]] = {}
"""Address text -> (IP version, integer): peers repeat, so a request parses none (bounded, reset when full)."""


def _address(ip: str) -> tuple[int, int]:
    hit = _ADDRESSES.get(ip)
    if hit is None:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            hit = (0, 0)
        else:
            hit = (addr.version, int(addr))
        if len(_ADDRESSES) >= 4096:
            _ADDRESSES.clear()
        _ADDRESSES[ip] = hit
    return hit


class IpMatch:
    """Any of several CIDR blocks (a bare address is a /32 or /128), as Envoy's CidrRange."""

    __slots__ = ("_last_hit", "_last_ip", "networks", "text")

    def __init__(self, blocks: Iterable[str]) -> None:
        self.text = tuple(blocks)
        nets: list[tuple[int, int, int]] = []
        for b in self.text:
            net = ipaddress.ip_network(b, strict=False)
            nets.append((net.version, int(net.network_address), int(net.netmask)))
        self.networks = tuple(nets)
        # The last address asked about and the answer: a connection's requests pass the same peer
        # address object, so each after its first costs an identity test.
        self._last_ip: str | None = None
        self._last_hit = False

    def match(self, ip: str | None) -> bool:
        """``ip`` as the socket (or X-Forwarded-For) gives it."""
        if not ip:
            return False
        if ip is self._last_ip:
            return self._last_hit
        version, value = _address(ip)
        hit = False
        for v, network, mask in self.networks:
            if v == version and value & mask == network:
                hit = True
                break
        self._last_ip = ip
        self._last_hit = hit
        return hit
