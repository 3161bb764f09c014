"""The config loader, validators, analysis and the proxy's build never crash on any YAML; every bus
message decoder refuses garbage with a typed error. Kept cases replay first."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshbus.bus import codec
from tests.fuzz import targets
from tests.fuzz.mutate import _VALUES, mutated, mutated_yaml
from tests.fuzz.seeds import GOLDEN, SUITE_SAMPLE, corpus

GOLDEN_DOCS = [p.read_text() for p in sorted(GOLDEN.glob("*.yaml"))]


@pytest.mark.parametrize("target", ["config", "bus_message"])
def test_kept_cases(target: str) -> None:
    cases = corpus(target, sample=SUITE_SAMPLE)
    assert cases
    for case in cases:
        targets.TARGETS[target](case)


@given(mutated_yaml(GOLDEN_DOCS))
def test_config_documents(data: bytes) -> None:
    targets.config(data)


@given(mutated([d.encode() for d in GOLDEN_DOCS]))
def test_config_text(data: bytes) -> None:
    targets.config(data)


@st.composite
def _message(draw: st.DrawFn) -> bytes:
    """A schema's own field names with values of any type (what a peer's bug or a forger sends)."""
    index = draw(st.integers(0, len(targets.SCHEMAS) - 1))
    _sid, cls = targets.SCHEMAS[index]
    names = list(getattr(cls, "__dataclass_fields__", {}))
    body = draw(
        st.dictionaries(st.sampled_from(names) if names else st.text(), _VALUES, max_size=len(names) + 1)
    )
    return bytes([(index << 1 | draw(st.integers(0, 1))) & 0xFF]) + msgpack.packb(body, use_bin_type=True)


@given(_message() | mutated(corpus("bus_message")))
def test_every_bus_message_decoder(data: bytes) -> None:
    targets.bus_message(data)


def test_every_schema_is_fuzzed() -> None:
    ours = {sid for sid, cls in codec.registered().items() if cls.__module__.startswith("meshbus.")}
    assert set(dict(targets.SCHEMAS)) >= ours and len(targets.SCHEMAS) > 40  # (tests register their own)
