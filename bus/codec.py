"""Pure encode/decode of message dataclasses <-> (bytes, headers). No I/O.

Every message type is a frozen dataclass registered with `@message("meshbus.<family>.v1.<Name>")`.
The schema id travels in the ``Meshbus-Schema`` header; the body is msgpack of the fields.

Evolution rules (STYLE E6): fields are only ever added, with defaults; readers ignore
fields they do not know (peer messages decode open-world); a different major version
in the schema id is refused with `UnknownSchemaError`, never guessed at.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import msgpack

from .errors import BadRequestError, PayloadTooLargeError, UnknownSchemaError

SCHEMA_HEADER = "Meshbus-Schema"
DEFAULT_MAX_BYTES = 1024 * 1024  # NATS' default max_payload

T = TypeVar("T")

_REGISTRY: dict[str, type[Any]] = {}
_SCHEMA_OF: dict[type[Any], str] = {}
_DECODERS: dict[Any, Callable[[Any], Any]] = {}


def message(schema_id: str) -> Callable[[type[T]], type[T]]:
    """Register a dataclass as a bus message under `schema_id` (unique)."""
    parts = schema_id.split(".")
    if len(parts) < 4 or parts[0] != "meshbus" or not parts[-2].startswith("v"):
        raise ValueError(f"meshbus: schema id {schema_id!r} must look like meshbus.<family>.v1.<Name>")

    def register(cls: type[T]) -> type[T]:
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"meshbus: {cls.__name__} must be a dataclass to be a bus message")
        if schema_id in _REGISTRY and _REGISTRY[schema_id] is not cls:
            raise ValueError(f"meshbus: schema id {schema_id!r} registered twice")
        _REGISTRY[schema_id] = cls
        _SCHEMA_OF[cls] = schema_id
        return cls

    return register


def schema_id(cls_or_obj: Any) -> str:
    cls = cls_or_obj if isinstance(cls_or_obj, type) else type(cls_or_obj)
    try:
        return _SCHEMA_OF[cls]
    except KeyError:
        raise TypeError(f"meshbus: {cls.__name__} is not a registered bus message") from None


def registered() -> Mapping[str, type[Any]]:
    return dict(_REGISTRY)


def evolve(obj: T, **changes: Any) -> T:
    """`dataclasses.replace` for messages, kept here so callers never import dataclasses for it."""
    return dataclasses.replace(obj, **changes)  # type: ignore[type-var]


_FIELD_NAMES: dict[type[Any], tuple[str, ...]] = {}


def _fields_of(obj: Any) -> dict[str, Any]:
    """msgpack's ``default`` hook: a dataclass instance as the map of its fields. msgpack packs the
    lists, tuples, dicts and scalars in it itself (in C) and comes back here for nested messages,
    so encoding walks no Python-level copy of the message (bulk payloads, telemetry rows of
    thousands of scalars, included)."""
    cls = type(obj)
    names = _FIELD_NAMES.get(cls)
    if names is None:
        if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
            raise TypeError(f"meshbus: cannot encode a {cls.__name__} in a bus message")
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(obj))
    return {n: getattr(obj, n) for n in names}


def encode(msg: Any) -> tuple[bytes, dict[str, str]]:
    """Message -> (msgpack body, headers carrying the schema id)."""
    sid = schema_id(msg)
    return msgpack.packb(msg, default=_fields_of, use_bin_type=True), {SCHEMA_HEADER: sid}


class Encoder:
    """`encode` for a sender of large messages, one per thread (a msgpack Packer is not thread-safe).

    It keeps its packer, and so the packer's buffer, from one message to the next: `encode` makes a
    fresh packer, whose new buffer a large message (a 500-row telemetry batch, ~150 KB) fills
    through page faults, which measured ~0.2 ms per such batch, more than packing it."""

    __slots__ = ("_packer",)

    def __init__(self) -> None:
        self._packer = msgpack.Packer(default=_fields_of, use_bin_type=True)

    def encode(self, msg: Any) -> tuple[bytes, dict[str, str]]:
        sid = schema_id(msg)
        return self._packer.pack(msg), {SCHEMA_HEADER: sid}


def _decoder_for(tp: Any) -> Callable[[Any], Any]:
    cached = _DECODERS.get(tp)
    if cached is not None:
        return cached
    dec = _build_decoder(tp)
    _DECODERS[tp] = dec
    return dec


def _build_decoder(tp: Any) -> Callable[[Any], Any]:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _dataclass_decoder(tp)
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        inner = _decoder_for(non_none[0]) if len(non_none) == 1 else (lambda v: v)
        return lambda v: None if v is None else inner(v)
    if origin in (list, tuple):
        inner = _decoder_for(args[0]) if args else (lambda v: v)
        if origin is list:
            return lambda v: [inner(x) for x in _expect(v, (list, tuple), tp)]
        return lambda v: tuple([inner(x) for x in _expect(v, (list, tuple), tp)])
    if origin in (dict, Mapping):
        inner = _decoder_for(args[1]) if len(args) == 2 else (lambda v: v)
        return lambda v: {k: inner(x) for k, x in _expect(v, dict, tp).items()}
    if tp is float:
        return lambda v: float(_expect(v, (int, float), tp))
    if tp in (int, str, bytes, bool):

        def scalar(v: Any) -> Any:
            return v if isinstance(v, tp) else _expect(v, tp, tp)

        return scalar
    return lambda v: v


def _expect(value: Any, kinds: Any, tp: Any) -> Any:
    if not isinstance(value, kinds):
        raise BadRequestError(f"expected {getattr(tp, '__name__', tp)}, got {type(value).__name__}")
    return value


def _dataclass_decoder(cls: type[Any]) -> Callable[[Any], Any]:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    # Each field's decoder, looked up on the first decode (a message type may refer to itself).
    fields: list[tuple[str, Callable[[Any], Any]]] = []

    def decode_dc(value: Any) -> Any:
        data = _expect(value, dict, cls)
        if not fields:
            fields[:] = [(name, _decoder_for(hints[name])) for name in names]
        kwargs = {}
        for name, dec in fields:
            if name in data:  # unknown keys in `data` are ignored: peers may be newer
                try:
                    kwargs[name] = dec(data[name])
                except BadRequestError as exc:
                    raise BadRequestError(
                        f"{cls.__name__}.{name}: {exc.message.removeprefix('meshbus: ')}"
                    ) from None
        try:
            return cls(**kwargs)
        except TypeError as exc:  # a required field is missing
            raise BadRequestError(f"{cls.__name__}: {exc}") from None

    return decode_dc


def decode(
    data: bytes,
    headers: Mapping[str, str] | None,
    expected: type[T],
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> T:
    """(body, headers) -> an `expected` instance, or a typed BadRequestError subclass.

    The schema header is optional (a hand-written `nats req` has none), but when it is
    present it must name `expected`'s schema; same family and name at another major
    version raises UnknownSchemaError.
    """
    if len(data) > max_bytes:
        raise PayloadTooLargeError(f"message of {len(data)} bytes exceeds the limit of {max_bytes}")
    want = schema_id(expected)
    got = (headers or {}).get(SCHEMA_HEADER)
    if got is not None and got != want:
        raise UnknownSchemaError(f"expected schema {want!r}, got {got!r}")
    try:
        raw = msgpack.unpackb(data, raw=False, strict_map_key=False) if data else {}
    except Exception as exc:  # msgpack raises several unrelated types for garbage
        raise BadRequestError(f"undecodable {want} payload: {exc.__class__.__name__}") from None
    return typing.cast(T, _decoder_for(expected)(raw))
