"""Hypothesis strategies that mutate kept cases (structure-aware where it pays): byte edits with
tokens that matter to HTTP/1.1 framing, and YAML trees with values replaced, removed or retyped."""

from __future__ import annotations

import io
from typing import Any

from hypothesis import strategies as st
from ruamel.yaml import YAML

TOKENS = [
    b"\r\n", b"\n", b"\r", b" ", b"\t", b":", b";", b",", b"\x00", b"\x7f", b"\xff", b"0", b"-1", b"ffffffffffffffffff",
    b"Transfer-Encoding: chunked\r\n", b"Content-Length: 0\r\n", b"Content-Length: 99999999999\r\n",
    b"Host: x\r\n", b"HTTP/1.1", b"HTTP/1.0", b"0\r\n\r\n", b"Connection: close\r\n", b"Upgrade: h2c\r\n",
    b"Expect: 100-continue\r\n",
]  # fmt: skip

_edit = st.tuples(
    st.sampled_from(["insert", "delete", "flip", "repeat"]),
    st.floats(0, 1),
    st.floats(0, 1),
    st.sampled_from(TOKENS) | st.binary(min_size=1, max_size=8),
)


def _apply(data: bytes, edits: list[tuple[str, float, float, bytes]]) -> bytes:
    for op, a, b, token in edits:
        i = int(a * len(data))
        j = min(len(data), i + int(b * 16))
        if op == "insert":
            data = data[:i] + token + data[i:]
        elif op == "delete":
            data = data[:i] + data[j:]
        elif op == "flip" and data:
            k = min(i, len(data) - 1)
            data = data[:k] + bytes([data[k] ^ (1 << int(b * 7.99))]) + data[k + 1 :]
        elif op == "repeat":
            data = data[:j] + data[i:j] + data[j:]
    return data


def mutated(cases: list[bytes], keep_first: bool = True) -> st.SearchStrategy[bytes]:
    """A kept case with byte edits (the first byte, a target's parameter, may change too)."""
    return st.builds(_apply, st.sampled_from(cases), st.lists(_edit, max_size=6)) | st.binary(max_size=300)


_SCALARS = (
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=True)
    | st.text(max_size=20) | st.sampled_from(["*", "", "default", "reviews", "v1", "100%", "1s", "-1", "0.0.0.0/0"])
)  # fmt: skip
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def _paths(tree: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(tree, dict):
        for k, v in tree.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            out += _paths(v, (*prefix, i))
    return out


def _set(tree: Any, path: tuple[Any, ...], value: Any, delete: bool) -> Any:
    if not path:
        return value
    parent = tree
    for key in path[:-1]:
        parent = parent[key]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return tree


@st.composite
def mutated_yaml(draw: st.DrawFn, documents: list[str]) -> bytes:
    """A golden document (parsed) with a few values replaced by any YAML value, or removed."""
    yaml = YAML(typ="safe")
    trees = [t for t in yaml.load_all(draw(st.sampled_from(documents))) if t is not None]
    if not trees:
        return b""
    tree = draw(st.sampled_from(trees))
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(tree)
        path = draw(st.sampled_from(paths))
        tree = _set(tree, path, draw(_VALUES), delete=bool(path) and draw(st.booleans()))
    out = io.StringIO()
    YAML(typ="safe").dump(tree, out)
    return out.getvalue().encode()
