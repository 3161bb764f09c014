"""Malformed bus messages for a schema, deterministically: what a buggy or hostile peer publishes.

`garbage(cls, rng)` yields (payload, headers) pairs: empty and random bytes, msgpack of the wrong
shape, the schema's own field names with values of every wrong type (nested too), valid messages
with one field retyped, well-typed messages with hostile content (`plausible`), and right bodies under a wrong or another major version's schema header.
"""

from __future__ import annotations

import dataclasses
import random
import types
import typing
from collections.abc import Iterator
from typing import Any

import msgpack

from meshbus.bus import codec

WRONG: list[Any] = [
    None, True, -1, 2**63, 1.5e308, float("nan"), "", "x" * 300, b"\x00\xff", [], [1, "a", None], {}, {"a": [{}]},
    {"node_id": 1}, "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
]  # fmt: skip


EVIL_STR = [
    "", "x" * 5000, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "../../etc/passwd", "a.b.>",
    "\x00", "spiffe://evil/ns/x/sa/y", "999999999999999999999", "{{name()}}", "\u202e",
    "cluster.local", "default", "reviews",  # the values a handler checks first: get past them
]  # fmt: skip
EVIL_INT = [0, -1, 2**63 - 1, -(2**63), 2**64 - 1]


def plausible(tp: Any, rng: random.Random, depth: int = 0) -> Any:
    """A value that decodes as ``tp`` (so it gets past the decoder) with hostile content."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        return {f.name: plausible(hints[f.name], rng, depth + 1) for f in dataclasses.fields(tp)}
    if origin in (typing.Union, types.UnionType):
        return plausible(rng.choice([a for a in args if a is not type(None)] or [str]), rng, depth)
    if origin in (list, tuple):
        inner = args[0] if args else str
        return [plausible(inner, rng, depth + 1) for _ in range(0 if depth > 3 else rng.randint(0, 3))]
    if origin is dict or tp is dict:
        inner = args[1] if len(args) == 2 else str
        return {rng.choice(EVIL_STR): plausible(inner, rng, depth + 1) for _ in range(rng.randint(0, 3))}
    if tp is bool:
        return rng.random() < 0.5
    if tp is int:
        return rng.choice(EVIL_INT)
    if tp is float:
        return rng.choice([0.0, -1.0, 1e308, float("inf"), float("nan")])
    if tp is bytes:
        return rng.randbytes(rng.choice([0, 1, 64, 600]))
    if tp is str:
        return rng.choice(EVIL_STR)
    return rng.choice(WRONG)


def garbage(cls: type[Any], rng: random.Random, count: int = 40) -> Iterator[tuple[bytes, dict[str, str]]]:
    sid = codec.schema_id(cls)
    header = {codec.SCHEMA_HEADER: sid}
    names = [f.name for f in dataclasses.fields(cls)]
    yield b"", header
    yield rng.randbytes(64), header
    yield msgpack.packb([1, 2, 3]), header
    yield msgpack.packb("string"), header
    yield msgpack.packb({n: None for n in names}), {}
    family, _v, name = sid.rsplit(".", 2)
    yield msgpack.packb({}), {codec.SCHEMA_HEADER: f"{family}.v2.{name}"}
    yield msgpack.packb({}), {codec.SCHEMA_HEADER: "meshbus.other.v1.Thing"}
    for _ in range(count // 2):  # well-typed, hostile content: past the decoder, into the handler
        yield msgpack.packb(plausible(cls, rng), use_bin_type=True), header
    for _ in range(count - count // 2):
        body = {n: rng.choice(WRONG) for n in names if rng.random() < 0.7}
        if names and rng.random() < 0.3:
            body[rng.choice(names)] = {n: rng.choice(WRONG) for n in names}
        yield msgpack.packb(body, use_bin_type=True), header if rng.random() < 0.8 else {}
