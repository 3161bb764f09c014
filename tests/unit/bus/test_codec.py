from dataclasses import dataclass, field

import msgpack
import pytest

from meshbus.bus import codec
from meshbus.bus.errors import BadRequestError, PayloadTooLargeError, UnknownSchemaError
from meshbus.bus.schemas import ErrorReply, Health


@codec.message("meshbus.test.v1.Inner")
@dataclass(frozen=True, slots=True)
class Inner:
    name: str
    weight: int = 0


@codec.message("meshbus.test.v1.Outer")
@dataclass(frozen=True, slots=True)
class Outer:
    version: int
    inners: tuple[Inner, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    note: str | None = None
    ratio: float = 0.0


def test_round_trip_nested() -> None:
    msg = Outer(7, (Inner("a", 10), Inner("b")), {"v": "1"}, None, 1)
    data, headers = codec.encode(msg)
    assert headers == {codec.SCHEMA_HEADER: "meshbus.test.v1.Outer"}
    back = codec.decode(data, headers, Outer)
    assert back == Outer(7, (Inner("a", 10), Inner("b")), {"v": "1"}, None, 1.0)
    assert isinstance(back.ratio, float)


def test_the_body_is_the_msgpack_map_of_the_fields_nested_messages_included() -> None:
    data, _ = codec.encode(Outer(7, (Inner("a", 10),), {"v": "1"}, None, 0.5))
    plain = {
        "version": 7,
        "inners": [{"name": "a", "weight": 10}],
        "labels": {"v": "1"},
        "note": None,
        "ratio": 0.5,
    }
    assert data == msgpack.packb(plain, use_bin_type=True)
    with pytest.raises(TypeError, match="cannot encode a set"):
        codec.encode(Outer(1, labels={"v": {"not", "encodable"}}))  # type: ignore[dict-item]


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    data = msgpack.packb({"version": 1, "added_in_v1_5": [1, 2], "inners": [{"name": "x", "new": True}]})
    assert codec.decode(data, None, Outer) == Outer(1, (Inner("x"),))


def test_missing_required_field_is_a_bad_request() -> None:
    with pytest.raises(BadRequestError, match="Outer"):
        codec.decode(msgpack.packb({"inners": []}), None, Outer)


def test_wrong_type_names_the_field() -> None:
    with pytest.raises(BadRequestError, match=r"Outer.version: expected int, got str"):
        codec.decode(msgpack.packb({"version": "7"}), None, Outer)


@pytest.mark.parametrize("garbage", [b"\xc1", b"\x92\x01", b"not msgpack at all \xff\xfe"])
def test_garbage_is_a_bad_request(garbage: bytes) -> None:
    with pytest.raises(BadRequestError):
        codec.decode(garbage, None, Outer)


def test_other_schema_or_major_version_is_refused() -> None:
    data, _ = codec.encode(Outer(1))
    with pytest.raises(UnknownSchemaError, match=r"meshbus\.test\.v2\.Outer"):
        codec.decode(data, {codec.SCHEMA_HEADER: "meshbus.test.v2.Outer"}, Outer)
    with pytest.raises(UnknownSchemaError):
        codec.decode(data, {codec.SCHEMA_HEADER: "meshbus.bus.v1.Error"}, Outer)


def test_oversized_payload_is_refused_before_decoding() -> None:
    with pytest.raises(PayloadTooLargeError, match="exceeds"):
        codec.decode(b"\x00" * 101, None, Outer, max_bytes=100)


def test_registration_rules() -> None:
    with pytest.raises(ValueError, match="must look like"):
        codec.message("bad-id")
    with pytest.raises(ValueError, match="registered twice"):

        @codec.message("meshbus.test.v1.Inner")
        @dataclass
        class Other:
            x: int

    with pytest.raises(TypeError, match="not a registered bus message"):
        codec.encode(object())


def test_shared_schemas_are_registered() -> None:
    ids = codec.registered()
    assert ids["meshbus.bus.v1.Error"] is ErrorReply
    assert ids["meshbus.bus.v1.Health"] is Health
    assert codec.evolve(ErrorReply("a", "b"), code="c") == ErrorReply("c", "b")


def test_an_encoder_keeps_its_packer_and_encodes_as_encode_does() -> None:
    enc = codec.Encoder()
    big = Outer(1, tuple(Inner(f"n{i}", i) for i in range(5000)))
    for msg in (big, Outer(2), big):
        assert enc.encode(msg) == codec.encode(msg)
    with pytest.raises(TypeError, match="cannot encode a object"):
        enc.encode(Outer(3, note=object()))  # type: ignore[arg-type]
    assert enc.encode(Outer(4)) == codec.encode(Outer(4))  # nothing of the failed message is left
