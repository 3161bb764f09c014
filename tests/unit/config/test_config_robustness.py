"""The loader never raises on hostile input: every problem becomes a finding (property tests)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from meshbus.bus.config import KINDS, load_text

pytestmark = [pytest.mark.unit, pytest.mark.timeout(120)]

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "config"

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(["1s", "-1s", "0s", "*", "*.a.com", "v1", "5xx", "ISTIO_MUTUAL", "STATIC", "http"]),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=10), inner, max_size=3)
    ),
    max_leaves=12,
)


def _valid_docs() -> list[dict[str, Any]]:
    yaml = YAML(typ="safe")
    docs: list[dict[str, Any]] = []
    for path in sorted(GOLDEN.glob("*-valid.yaml")):
        docs.extend(d for d in yaml.load_all(path.read_text()) if d)
    return docs


VALID = _valid_docs()


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _replace(node: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(node, dict):
        return {k: (_replace(v, rest, value) if k == head else v) for k, v in node.items()}
    return [(_replace(v, rest, value) if i == head else v) for i, v in enumerate(node)]


def _check(text: str) -> None:
    result = load_text(text, "fuzz.yaml")
    for finding in result.validation.messages():
        assert finding.render().startswith("fuzz.yaml")
    if not result.ok:
        assert result.validation.errors


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=st.sampled_from(VALID), data=st.data(), junk=_values)
def test_mutated_valid_documents_never_crash_the_loader(
    doc: dict[str, Any], data: st.DataObject, junk: Any
) -> None:
    path = data.draw(st.sampled_from(_paths(doc)))
    _check(json.dumps(_replace(doc, path, junk)))


@settings(max_examples=150, deadline=None)
@given(kind=st.sampled_from(sorted(KINDS)), spec=_values)
def test_random_specs_never_crash_the_loader(kind: str, spec: Any) -> None:
    group = KINDS[kind].GROUP
    version = KINDS[kind].VERSIONS[0]
    _check(
        json.dumps(
            {"apiVersion": f"{group}/{version}", "kind": kind, "metadata": {"name": "x"}, "spec": spec}
        )
    )


@settings(max_examples=150, deadline=None)
@given(text=st.text(max_size=200))
def test_arbitrary_text_never_crashes_the_loader(text: str) -> None:
    _check(text)


def test_recursive_alias_is_reported_not_followed() -> None:
    result = load_text("&a [*a]\n", "r.yaml")
    assert [e.render() for e in result.validation.errors] == [
        "r.yaml:1: YAML too complex: document nests deeper than 64 levels (recursive alias?)"
    ]


def test_alias_bomb_is_reported_not_expanded() -> None:
    lines = ["a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]"]
    for prev, name in zip("abcdef", "bcdefg", strict=True):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    result = load_text("\n".join(lines) + "\n", "bomb.yaml")
    assert len(result.validation.errors) == 1
    assert "more than 200000 values (alias expansion?)" in result.validation.errors[0].message


@pytest.mark.parametrize(("text", "key"), [(":\n", "null"), ("? [a, b]\n: 1\n", "[a, b]"), ("1: 2\n", "1")])
def test_non_string_keys_become_strings(text: str, key: str) -> None:
    result = load_text(text, "k.yaml")
    assert f'unknown field "{key}"' in result.validation.errors[0].message
