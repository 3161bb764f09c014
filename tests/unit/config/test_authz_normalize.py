"""Path normalization for authorization (bus/config/authz/normalize.py): Envoy's answers, property tests
that no traversal survives it, and the bypass attempts Istio's normalization page lists."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshbus.bus.config.authz.normalize import (
    BASE,
    DECODE_AND_MERGE_SLASHES,
    MERGE_SLASHES,
    NONE,
    normalize_path,
    split_target,
)

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]

MODES = (BASE, MERGE_SLASHES, DECODE_AND_MERGE_SLASHES)


@pytest.mark.parametrize(
    ("path", "base", "merge", "decode"),
    [
        # Istio's normalization table (istio.io docs/reference/config/security/normalization)
        ("/a/../b", "/b", "/b", "/b"),
        ("/a/./b", "/a/b", "/a/b", "/a/b"),
        ("/a\\b", "/a/b", "/a/b", "/a/b"),
        ("/a%2fb", "/a%2fb", "/a%2fb", "/a/b"),
        ("/a%5Cb", "/a%5Cb", "/a%5Cb", "/a/b"),
        ("//a//b", "//a//b", "/a/b", "/a/b"),
        ("/%61%62c", "/abc", "/abc", "/abc"),
        ("/a%2e%2E/b", "/a../b", "/a../b", "/a../b"),  # encoded dots in a name are dots, not a segment
        ("/a/%2e%2E/b", "/b", "/b", "/b"),
        # traversal attempts against a DENY on /admin
        ("/books/../admin", "/admin", "/admin", "/admin"),
        ("/books/%2e%2e/admin", "/admin", "/admin", "/admin"),
        ("/books\\..\\admin", "/admin", "/admin", "/admin"),
        ("/BOOKS%2F..%2Fadmin", "/BOOKS%2F..%2Fadmin", "/BOOKS%2F..%2Fadmin", "/admin"),
        ("/BOOKS%2F..", "/BOOKS%2F..", "/BOOKS%2F..", "/"),
        ("//admin", "//admin", "/admin", "/admin"),
        ("/./admin", "/admin", "/admin", "/admin"),
        ("/../../admin", "/admin", "/admin", "/admin"),
        ("/%2e/admin", "/admin", "/admin", "/admin"),
        # other characters: escaped as Chromium does, other escapes kept as written
        ("/a b", "/a%20b", "/a%20b", "/a%20b"),
        ("/a%3fb", "/a%3fb", "/a%3fb", "/a%3fb"),
        ("/caf\xc3\xa9", "/caf%C3%A9", "/caf%C3%A9", "/caf%C3%A9"),  # latin-1 text of UTF-8 bytes
        ("/x/%%300", "/x/%2500", "/x/%2500", "/x/%2500"),  # a nested escape cannot become %00
        ("/", "/", "/", "/"),
    ],
)
def test_envoy_answers(path: str, base: str, merge: str, decode: str) -> None:
    assert normalize_path(path, NONE) == path
    assert [normalize_path(path, m) for m in MODES] == [base, merge, decode]


@pytest.mark.parametrize("path", ["/%00", "/a/%00/b", "/a\x00", "/%2e%00"])
@pytest.mark.parametrize("mode", [NONE, *MODES])
def test_nul_is_refused_in_every_mode(path: str, mode: int) -> None:
    assert normalize_path(path, mode) is None


def test_the_query_and_fragment_are_not_part_of_the_path() -> None:
    assert split_target("/a/../b?next=/../admin#frag") == ("/a/../b", "?next=/../admin")
    assert split_target("/a#x?y") == ("/a", "")
    assert normalize_path(split_target("/a/../b?c=../d")[0], BASE) == "/b"


def test_a_path_needing_nothing_comes_back_unchanged_and_repeats_are_remembered() -> None:
    p = "/api/v1/books/42.json"
    assert normalize_path(p, DECODE_AND_MERGE_SLASHES) == p
    bad = "/seen/twice/%00"
    assert normalize_path(bad, BASE) is None and normalize_path(bad, BASE) is None  # a refusal too


# -- properties ----------------------------------------------------------------------------------------

_PIECES = st.sampled_from(
    ["admin", "books", "a", ".", "..", "%2e", "%2E", "%2e%2e", ".%2e", "", "%2f", "%2F", "%5c", "%5C",
     "\\", "%41", "%61dmin", "%25", "%252e", "%", "%%32%65", "x y", "~", "%7e", "..b", "a.", "é"]
)  # fmt: skip
_SEPARATORS = st.sampled_from(["/", "\\", "//", "/./", "%2f", "%5c"])
_PATHS = st.builds(
    lambda first, parts: "/" + first + "".join(sep + piece for sep, piece in parts),
    _PIECES,
    st.lists(st.tuples(_SEPARATORS, _PIECES), max_size=8),
)
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")


def _decode(path: str, slashes: bool) -> str:
    """What an application that decodes escapes once sees (%2F and %5C too when ``slashes``)."""

    def one(m: re.Match[str]) -> str:
        if not slashes and m.group(1).lower() in ("2f", "5c"):
            return m.group(0)
        return chr(int(m.group(1), 16))

    return _ESCAPE.sub(one, path)


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4."""
    out: list[str] = []
    for seg in path.split("/")[1:]:
        if seg == "..":
            if out:
                out.pop()
        elif seg != ".":
            out.append(seg)
    tail = "/" if path.endswith(("/.", "/..")) else ""
    return "/" + "/".join(out) + tail


@settings(max_examples=400, deadline=None)
@given(_PATHS, st.sampled_from(MODES))
def test_no_traversal_survives_for_an_application_that_decodes_once(path: str, mode: int) -> None:
    """What the application gets, decoded once (with %2F/%5C only in DECODE_AND_MERGE_SLASHES, as Istio's
    page says to choose), has no dot segment, backslash or (merging modes) double slash left to resolve:
    the app reaches the resource named by exactly the path the policy matched."""
    n = normalize_path(path, mode)
    if n is None:
        return
    seen = _decode(n, slashes=mode == DECODE_AND_MERGE_SLASHES)
    assert _remove_dot_segments(seen) == seen, (path, n, seen)
    assert "\\" not in seen
    if mode != BASE:
        assert "//" not in seen


@settings(max_examples=400, deadline=None)
@given(_PATHS, st.sampled_from(MODES))
def test_normalizing_twice_changes_nothing(path: str, mode: int) -> None:
    n = normalize_path(path, mode)
    if n is not None:
        assert normalize_path(n, mode) == n


@settings(max_examples=300, deadline=None)
@given(_PATHS)
def test_a_deny_on_admin_sees_what_the_application_resolves(path: str) -> None:
    """DECODE_AND_MERGE_SLASHES: a prefix DENY on the normalized path matches exactly when an application
    that decodes once and resolves the path lands under /admin."""
    n = normalize_path(path, DECODE_AND_MERGE_SLASHES)
    if n is None:
        return
    app = re.sub("/+", "/", _remove_dot_segments(_decode(n, slashes=True).replace("\\", "/")))
    assert (n == "/admin" or n.startswith("/admin/")) == (app == "/admin" or app.startswith("/admin/"))
