"""Turn pydantic's error dicts into operator-facing messages (STYLE.md E5).

pydantic says "Extra inputs are not permitted"; an operator needs "unknown field" and, where a
known field is close, the name they probably meant.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic_core import ErrorDetails

_NO_VALUE_TYPES = {"missing", "extra_forbidden", "model_type", "dict_type", "model_attributes_type"}


def _expected(ctx: Mapping[str, Any]) -> str:
    raw = str(ctx.get("expected", ""))
    # pydantic: "'A', 'B' or 'C'" -> "A, B, C"
    return raw.replace("'", "").replace(" or ", ", ")


def human_message(err: ErrorDetails, known_fields: Sequence[str] = ()) -> str:
    """One line, no "Value error," prefix, naming what was expected."""
    typ = err["type"]
    ctx: Mapping[str, Any] = err.get("ctx") or {}
    loc = err["loc"]
    if typ == "extra_forbidden":
        name = str(loc[-1]) if loc else ""
        hint = [h for h in difflib.get_close_matches(name, list(known_fields), n=2, cutoff=0.75) if h != name]
        return f'unknown field "{name}"' + (f' (did you mean "{hint[0]}"?)' if hint else "")
    if typ == "missing":
        return "required field is missing"
    if typ == "literal_error":
        return f"must be one of {_expected(ctx)}"
    if typ in ("int_type", "int_parsing", "int_from_float"):
        return "must be an integer"
    if typ in ("float_type", "float_parsing"):
        return "must be a number"
    if typ in ("bool_type", "bool_parsing"):
        return "must be true or false"
    if typ == "string_type":
        return 'must be a string (quote numbers and booleans, e.g. "1")'
    if typ in ("dict_type", "model_type", "model_attributes_type"):
        return "must be a mapping"
    if typ in ("list_type", "tuple_type", "set_type"):
        return "must be a list"
    if typ == "greater_than":
        return f"must be > {ctx.get('gt')}"
    if typ == "greater_than_equal":
        return f"must be >= {ctx.get('ge')}"
    if typ == "less_than":
        return f"must be < {ctx.get('lt')}"
    if typ == "less_than_equal":
        return f"must be <= {ctx.get('le')}"
    if typ == "string_too_short":
        n = ctx.get("min_length")
        return "must not be empty" if n == 1 else f"must be at least {n} characters long"
    if typ == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters long"
    if typ == "string_pattern_mismatch":
        return f"must match {ctx.get('pattern')}"
    if typ == "too_short":
        return f"needs at least {ctx.get('min_length')} item(s)"
    if typ == "too_long":
        return f"takes at most {ctx.get('max_length')} item(s)"
    msg = err["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix) :]
    return msg


def shows_value(err: ErrorDetails) -> bool:
    """Whether "(got X)" helps: not for missing/unknown fields or whole mappings."""
    if err["type"] in _NO_VALUE_TYPES:
        return False
    value = err.get("input")
    return isinstance(value, str | int | float | bool)
