"""A filter's config, checked, and its instances, made: what the proxy and meshbus-config share.

``config_problems`` is the apply-time check (every problem, with its path below ``pluginConfig``);
``make_filter`` decodes strictly (an unknown field is an error even when the filter's own Config
does not forbid extras), makes the instance and lets ``setup`` run; a failure there is an error too,
prefixed with the filter's name (STYLE.md E3: decode -> provision -> cleanup on failure).
A remote host's published JSON Schema is checked with ``schema_problems`` (the jsonschema package).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from meshbus.plugins.api import Filter, FilterMetrics, strict_config
from meshbus.plugins.registry import FilterInfo

Problem = tuple[tuple[str | int, ...], str, Any]
"""(path below pluginConfig, message, offending value or None)."""


class PluginConfigError(ValueError):
    """A pluginConfig the filter refuses; ``problems`` lists every one."""

    def __init__(self, filter_name: str, problems: Sequence[Problem]) -> None:
        self.filter_name = filter_name
        self.problems = list(problems)
        text = "; ".join(f"{_dotted(p) or '(config)'}: {m}" for p, m, _ in self.problems)
        super().__init__(f"meshbus: filter {filter_name!r}: invalid pluginConfig: {text}")


def _dotted(path: Sequence[str | int]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def config_problems(info: FilterInfo, raw: Mapping[str, Any] | None) -> list[Problem]:
    try:
        decode_config(info, raw)
    except PluginConfigError as exc:
        return exc.problems
    return []


def decode_config(info: FilterInfo, raw: Mapping[str, Any] | None) -> Any:
    """The filter's ``Config`` instance (None when it has none); PluginConfigError otherwise."""
    cfg = info.cls.Config
    if cfg is None:
        if raw:
            raise PluginConfigError(info.name, [((), f"filter {info.name!r} takes no config", None)])
        return None
    try:
        return strict_config(cfg).model_validate(dict(raw or {}))
    except ValidationError as exc:
        raise PluginConfigError(
            info.name,
            [
                (tuple(e["loc"]), e["msg"], e.get("input") if e["type"] != "missing" else None)
                for e in exc.errors()
            ],
        ) from None


def make_filter(
    info: FilterInfo,
    raw: Mapping[str, Any] | None,
    *,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
    metrics: FilterMetrics | None = None,
) -> Filter:
    """A new instance with its config; PluginConfigError or RuntimeError (setup failed) otherwise."""
    config = decode_config(info, raw)
    try:
        return info.cls(config, name=info.name, logger=logger, metrics=metrics)
    except PluginConfigError:
        raise
    except Exception as exc:
        raise RuntimeError(
            f"meshbus: filter {info.name!r} failed to start: {type(exc).__name__}: {exc}"
        ) from exc


def schema_problems(schema: Mapping[str, Any], raw: Mapping[str, Any] | None) -> list[Problem]:
    """Problems of ``raw`` against a JSON Schema (a remote host's), every one, in document order."""
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(dict(schema))
    out: list[Problem] = []
    for err in sorted(validator.iter_errors(dict(raw or {})), key=lambda e: list(map(str, e.absolute_path))):
        path = tuple(err.absolute_path)
        if err.validator == "additionalProperties" and isinstance(err.instance, dict):
            allowed = set((err.schema or {}).get("properties", {}))
            for extra in sorted(set(err.instance) - allowed):
                out.append(((*path, extra), "Extra inputs are not permitted", None))
            continue
        out.append((path, err.message, None))
    return out
