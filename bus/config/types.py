"""Building blocks shared by every kind: the strict base model, Duration, Percent, StringMatch.

Operator config is decoded strictly (STYLE.md E5): unknown fields are errors. Attributes are the
snake_case of Istio's camelCase YAML names; the loader validates by alias only, while Python code
may construct models by attribute name.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

DEPRECATED_KEY = "x-meshbus-deprecated"


class IstioModel(BaseModel):
    """Frozen, strict, camelCase-aliased base for every config message."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        populate_by_name=True,
        alias_generator=to_camel,
        str_strip_whitespace=False,
        # Validators and serializers are built on first use: a proxy worker only unpickles models
        # (bootstrap.load_isolated) and never builds them (~3 MB less, the import takes half the time).
        defer_build=True,
    )


def deprecated(replacement: str, default: Any = None, **kwargs: Any) -> Any:
    """A field Istio deprecated: accepted with a warning naming its replacement.

    The model copies it into the replacement (a validator does), so it still works; its fate, like
    every field's, is in fates.py.
    """
    return Field(default=default, json_schema_extra={DEPRECATED_KEY: replacement}, **kwargs)


# --- Duration ---------------------------------------------------------------------------------

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(value: object) -> float:
    """Parse an Istio/Go duration ("1s", "100ms", "1.5s", "2m", "1h30m") into float seconds.

    Istio requires at least 1ms (``agent.ValidateDuration``); a bare number is refused because
    Istio's schema takes strings only, and silently guessing a unit would hide mistakes.
    """
    if isinstance(value, bool) or not isinstance(value, str):
        raise PydanticCustomError(
            "duration_type",
            'duration must be a string with a unit, like "1s" or "100ms"',
        )
    text = value.strip()
    if text.startswith("-"):
        raise PydanticCustomError("duration_range", "duration must be positive")
    pos = 0
    total = 0.0
    for m in _DURATION_PART.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise PydanticCustomError(
            "duration_parsing",
            'invalid duration, expected a number and a unit (h, m, s, ms, us, ns) like "1.5s"',
        )
    if total < 1e-3 - 1e-12:
        raise PydanticCustomError("duration_range", "duration must be at least 1ms")
    return total


def format_duration(seconds: float) -> str:
    """Inverse of parse_duration for dumps: protobuf JSON style ("1.5s")."""
    ms = round(seconds * 1000)
    if math.isclose(ms, seconds * 1000, abs_tol=1e-6) and ms % 1000:
        return f"{ms}ms"
    return f"{seconds:g}s"


Duration = Annotated[
    float, BeforeValidator(parse_duration), PlainSerializer(format_duration, return_type=str)
]
"""A duration in float seconds, parsed from "1s" / "100ms" / "1.5s" / "2m" / "1h"."""

IntOrString = int | str
"""Ports and similar keys where Istio (or YAML) may carry either form."""

Port = Annotated[int, Field(ge=1, le=65535)]
NonNegativeInt = Annotated[int, Field(ge=0)]


# --- Common messages ---------------------------------------------------------------------------


class Percent(IstioModel):
    """Istio ``Percent``: a float share in [0, 100]."""

    value: float = Field(default=0.0, ge=0.0, le=100.0)


class StringMatch(IstioModel):
    """Istio ``StringMatch``: at most one of exact / prefix / regex (RE2).

    Empty is allowed here because ``headers: {name: {}}`` means "header present"; validators
    reject an empty match where presence makes no sense (uri, method, ...).
    """

    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None

    @model_validator(mode="after")
    def _one_of(self) -> StringMatch:
        kinds = [k for k in ("exact", "prefix", "regex") if getattr(self, k) is not None]
        if len(kinds) > 1:
            raise PydanticCustomError(
                "one_of", "set only one of exact, prefix, regex (got {kinds})", {"kinds": ", ".join(kinds)}
            )
        return self

    @property
    def kind(self) -> str | None:
        for k in ("exact", "prefix", "regex"):
            if getattr(self, k) is not None:
                return k
        return None

    @property
    def is_empty(self) -> bool:
        return self.kind is None


class PortSelector(IstioModel):
    number: Port | None = None


class WorkloadSelector(IstioModel):
    """networking.istio.io ``WorkloadSelector`` (``labels``)."""

    labels: dict[str, str] = Field(default_factory=dict)


class PolicySelector(IstioModel):
    """security.istio.io ``WorkloadSelector`` (``matchLabels``)."""

    match_labels: dict[str, str] = Field(default_factory=dict)


class PolicyTargetReference(IstioModel):
    """Gateway API style target (``targetRef``/``targetRefs``); meshbus has no Gateway API."""

    group: str = ""
    kind: str
    name: str
    namespace: str = ""
