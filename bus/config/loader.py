"""Operator YAML -> typed resources + every error and warning, with file:line for each field.

load_path/load_text never stop at the first problem: YAML syntax, apiVersion/kind, schema (pydantic)
and semantic (validation/registry.py) findings are all collected. A load is all-or-nothing:
``ok`` is False when any error was found, yet the resources that did decode are still listed so
tooling (meshctl analyze) can report on them.
"""

from __future__ import annotations

import copy
import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from meshbus.bus.config.humanize import human_message, shows_value
from meshbus.bus.config.resources import KINDS, RESOURCE_TYPES, Resource, supported_api_versions
from meshbus.bus.config.result import FieldError, Level, LoadError, Validation, format_path
from meshbus.bus.config.source import PathKey, Source
from meshbus.bus.config.validation.findings import Findings
from meshbus.bus.config.validation.registry import validate as validate_semantics
from meshbus.bus.config.walk import deprecated_fields
from meshbus.bus.config.yaml_source import Document, SyntaxProblem, parse_documents

log = logging.getLogger(__name__)

_TOP_LEVEL = ("apiVersion", "kind", "metadata", "spec", "status")
YAML_SUFFIXES = (".yaml", ".yml")
R = TypeVar("R", bound=Resource)


@dataclass(slots=True)
class LoadResult:
    resources: list[Resource] = field(default_factory=list)
    validation: Validation = field(default_factory=Validation)

    @property
    def ok(self) -> bool:
        return self.validation.ok

    def of_kind(self, kind: type[R]) -> list[R]:
        """The loaded resources of one kind, e.g. ``result.of_kind(VirtualService)``, in file order."""
        return [r for r in self.resources if isinstance(r, kind)]

    def raise_for_errors(self) -> list[Resource]:
        """Return the resources, or raise LoadError naming every error."""
        if not self.validation.ok:
            raise LoadError(self.validation)
        return self.resources


def load_path(path: str | Path) -> LoadResult:
    """Load a YAML file, or every *.yaml/*.yml below a directory (sorted, recursive)."""
    root = Path(path)
    result = LoadResult()
    if root.is_dir():
        # Hidden files and folders (.git, editor backups) are not config.
        files = sorted(
            p
            for p in root.rglob("*")
            if p.is_file()
            and p.suffix in YAML_SUFFIXES
            and not any(part.startswith(".") for part in p.relative_to(root).parts)
        )
        if not files:
            result.validation.warnings.append(
                FieldError(Source(str(root)), "", "no *.yaml or *.yml files found", level=Level.WARNING)
            )
    elif root.is_file():
        files = [root]
    else:
        result.validation.add(FieldError(Source(str(root)), "", "no such file or directory"))
        return result
    for file in files:
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            result.validation.add(FieldError(Source(str(file)), "", f"cannot read file: {exc}"))
            continue
        _load_into(result, text, str(file))
    _check_duplicates(result)
    return result


def load_text(text: str, source_name: str = "<text>") -> LoadResult:
    """Load one (multi-document) YAML text; ``source_name`` is used as the file in messages."""
    result = LoadResult()
    _load_into(result, text, source_name)
    _check_duplicates(result)
    return result


def _load_into(result: LoadResult, text: str, file: str) -> None:
    for doc in parse_documents(text):
        if isinstance(doc, SyntaxProblem):
            result.validation.add(FieldError(Source(file, doc.line), "", doc.message))
            continue
        resource = _decode(doc, file, result.validation)
        if resource is not None:
            result.resources.append(resource)


def _label(data: Mapping[str, Any]) -> str:
    kind = data.get("kind") if isinstance(data.get("kind"), str) else "<no kind>"
    meta = data.get("metadata")
    name = ns = None
    if isinstance(meta, Mapping):
        name, ns = meta.get("name"), meta.get("namespace", "default")
    return f"{kind} {ns or 'default'}/{name or '<no name>'}"


def _decode(doc: Document, file: str, validation: Validation) -> Resource | None:
    source = Source(file, doc.line, doc.field_lines)

    def err(path: PathKey, message: str, value: object = None, label: str = "") -> None:
        line = source.line_of(path)
        validation.add(FieldError(Source(file, line), format_path(path), message, value, label))

    data = doc.data
    if not isinstance(data, Mapping):
        err((), "a document must be a mapping with apiVersion, kind, metadata and spec")
        return None
    label = _label(data)
    ok = True
    for key in data:
        if key not in _TOP_LEVEL:
            err((key,), f'unknown field "{key}"', label=label)
            ok = False
    kind, api_version = data.get("kind"), data.get("apiVersion")
    if not isinstance(kind, str) or not kind:
        err(("kind",), "kind is required", label=label)
        return None
    rtype = KINDS.get(kind)
    if rtype is None:
        err(("kind",), f"unknown kind (supported: {', '.join(sorted(KINDS))})", kind, label)
        return None
    if not isinstance(api_version, str) or not api_version:
        err(("apiVersion",), "apiVersion is required", label=label)
        return None
    if api_version not in supported_api_versions(rtype):
        allowed = ", ".join(supported_api_versions(rtype))
        err(("apiVersion",), f"apiVersion not supported for {kind} (use {allowed})", api_version, label)
        return None
    if "status" in data:
        validation.add(
            FieldError(
                Source(file, source.line_of(("status",))),
                "status",
                "status is written by the mesh, not the operator; ignored",
                resource=label,
                level=Level.WARNING,
            )
        )
    if not ok:
        return None
    payload = {k: v for k, v in data.items() if k != "status"}
    payload.setdefault("spec", {})
    payload["source"] = source
    try:
        resource = rtype.model_validate(payload, by_alias=True, by_name=False)
    except ValidationError as exc:
        removed: list[PathKey] = []
        for e in exc.errors():
            path = _data_path(data, e["loc"])
            value = e.get("input") if shows_value(e) else None
            err(path, human_message(e, _known_fields()), value, label)
            removed.append(_removal_path(path, e["type"]))
        _salvage(rtype, payload, removed, label, validation)
        return None
    _semantics(resource, label, validation)
    return resource


def _semantics(
    resource: Resource,
    label: str,
    validation: Validation,
    removed: Sequence[PathKey] = (),
    path_map: Callable[[Sequence[str | int]], PathKey] | None = None,
) -> None:
    """Deprecation warnings, fates and semantic checks, minus findings about removed fields."""
    found = Validation()
    findings = Findings(resource, found, label=label, path_map=path_map)
    for path, replacement in deprecated_fields(resource.spec, ("spec",)):
        findings.warn(
            path, f'field "{path[-1]}" is deprecated; use "{replacement}" (meshbus converts it for now)'
        )
    found.extend(validate_semantics(resource, label=label, path_map=path_map))
    removed_text = [format_path(p) for p in removed]
    for finding in found.messages():
        if not any(_overlaps(finding.path, r) for r in removed_text):
            validation.add(finding)


def _overlaps(path: str, removed: str) -> bool:
    def under(a: str, b: str) -> bool:
        return a == b or a.startswith(b + ".") or a.startswith(b + "[")

    return under(path, removed) or under(removed, path)


def _removal_path(path: PathKey, error_type: str) -> PathKey:
    """What to drop so the rest of the resource can still be checked: the bad field, or for a
    missing field the object (mapping value or list item) that lacks it."""
    return path[:-1] if error_type == "missing" else path


_SALVAGE_ROUNDS = 4


def _salvage(
    rtype: type[Resource], payload: dict[str, Any], removed: list[PathKey], label: str, validation: Validation
) -> None:
    """After schema errors, drop the offending fields and run the semantic checks on what is left.

    So one load reports a bad duration *and* weights that do not add up, instead of making the
    operator fix errors one round at a time. Dropped list items shift later indices, so every path
    a check reports is mapped back to the operator's own indices (``original``) before it is shown.
    The salvaged resource itself is never returned.
    """
    data = copy.deepcopy(payload)
    deletions: list[tuple[PathKey, int]] = []  # (list path, index), in the order applied

    def original(path: Sequence[str | int]) -> PathKey:
        out = tuple(path)
        for lpath, idx in reversed(deletions):
            n = len(lpath)
            seg = out[n] if len(out) > n else None
            if out[:n] == lpath and isinstance(seg, int) and seg >= idx:
                out = (*lpath, seg + 1, *out[n + 1 :])
        return out

    dropped = list(removed)
    pending = list(removed)
    for _ in range(_SALVAGE_ROUNDS):
        # Highest list indices first, so one round's deletions do not move each other.
        for path in sorted(set(pending), key=_sort_key, reverse=True):
            if path[:1] == ("metadata",):
                data["metadata"] = {"name": "salvaged"}
            elif len(path) < 2:
                return  # a top-level field is broken: nothing sensible is left to check
            elif _delete(data, path) and isinstance(path[-1], int):
                deletions.append((path[:-1], path[-1]))
        try:
            resource = rtype.model_validate(data, by_alias=True, by_name=False)
        except ValidationError as exc:
            pending = [_removal_path(_data_path(data, e["loc"]), e["type"]) for e in exc.errors()]
            dropped += [original(p) for p in pending]
            continue
        _semantics(resource, label, validation, dropped, original)
        return


def _sort_key(path: PathKey) -> tuple[tuple[int, int, str], ...]:
    return tuple((1, seg, "") if isinstance(seg, int) else (0, 0, seg) for seg in path)


def _delete(data: Any, path: PathKey) -> bool:
    node = data
    for seg in path[:-1]:
        if isinstance(node, Mapping) and seg in node:
            node = node[seg]
        elif isinstance(node, list) and isinstance(seg, int) and 0 <= seg < len(node):
            node = node[seg]
        else:
            return False
    last = path[-1]
    if isinstance(node, dict) and last in node:
        del node[last]
        return True
    if isinstance(node, list) and isinstance(last, int) and 0 <= last < len(node):
        del node[last]
        return True
    return False


def _data_path(data: Any, loc: tuple[str | int, ...]) -> PathKey:
    """pydantic loc -> path through the YAML data, dropping union/validator tags pydantic inserts."""
    out: list[str | int] = []
    node = data
    for i, seg in enumerate(loc):
        if seg == "[key]":
            continue  # pydantic marks errors in a mapping key this way; the key itself is in the path
        if isinstance(node, Mapping) and seg in node:
            node = node[seg]
            out.append(seg)
        elif isinstance(node, list) and isinstance(seg, int) and 0 <= seg < len(node):
            node = node[seg]
            out.append(seg)
        elif i == len(loc) - 1 and isinstance(node, Mapping):
            out.append(seg)  # a missing field: name it
            node = None
    return tuple(out)


@functools.cache
def _known_fields() -> tuple[str, ...]:
    """Every camelCase field name in the schema, for "did you mean" hints."""
    seen: set[type[BaseModel]] = set()
    names: set[str] = set()

    def visit(model: type[BaseModel]) -> None:
        if model in seen:
            return
        seen.add(model)
        for name, info in model.model_fields.items():
            names.add(info.alias or name)
            for arg in _model_args(info.annotation):
                visit(arg)

    for rtype in RESOURCE_TYPES:
        visit(rtype.model_fields["spec"].annotation)  # type: ignore[arg-type]
    return tuple(sorted(names))


def _model_args(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    out: list[type[BaseModel]] = []
    for arg in getattr(annotation, "__args__", ()) or ():
        out.extend(_model_args(arg))
    return out


def _check_duplicates(result: LoadResult) -> None:
    first: dict[tuple[str, str, str], Resource] = {}
    for res in result.resources:
        prev = first.setdefault(res.key, res)
        if prev is not res:
            result.validation.add(
                FieldError(
                    Source(res.source.file, res.source.line_of(("metadata", "name"))),
                    "metadata.name",
                    f"duplicate resource: {res.ref} is also defined at {prev.source}",
                    resource=res.ref,
                )
            )
