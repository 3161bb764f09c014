"""Reading ``-f FILE_OR_DIR`` for meshctl: files as the operator named them, refs for ``delete -f``."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from meshbus.bus.config.loader import YAML_SUFFIXES, list_items
from meshbus.bus.config.resources import MESH_GROUPS, api_group, resource_type, types_named
from meshbus.bus.config.yaml_source import SyntaxProblem, parse_documents
from meshbus.bus.schemas.config import Document, ResourceRef
from meshbus.control.config.kinds import UnknownKindError, resolve_kind


class ManifestError(Exception):
    """A file could not be read or named no resource; the message is for the operator."""


def collect(paths: Sequence[str]) -> list[Document]:
    """Every ``-f`` argument as Documents: ``-`` is stdin, a directory means its *.yaml/*.yml (recursive, sorted)."""
    docs: list[Document] = []
    for arg in paths:
        if arg == "-":
            docs.append(Document("<stdin>", sys.stdin.read()))
            continue
        path = Path(arg)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in YAML_SUFFIXES)
            if not files:
                raise ManifestError(f"error: no *.yaml or *.yml files found in {arg}")
        elif path.is_file():
            files = [path]
        else:
            raise ManifestError(f'error: the path "{arg}" does not exist')
        for f in files:
            try:
                docs.append(Document(str(f), f.read_text(encoding="utf-8")))
            except (OSError, UnicodeDecodeError) as exc:
                raise ManifestError(f"error: cannot read {f}: {exc}") from None
    return docs


def refs(documents: Iterable[Document]) -> list[ResourceRef]:
    """kind/namespace/name of every document (the spec need not be valid to delete it)."""
    out: list[ResourceRef] = []
    for doc in documents:
        parsed = list(parse_documents(doc.text))
        for problem in parsed:
            if isinstance(problem, SyntaxProblem):
                raise ManifestError(f"error: {doc.file}:{problem.line}: {problem.message}")
        items = [i for p in parsed if not isinstance(p, SyntaxProblem) for i in list_items(p)]
        for item in items:
            data = item.data
            if not isinstance(data, dict):
                continue
            raw_meta = data.get("metadata")
            meta: dict[str, object] = raw_meta if isinstance(raw_meta, dict) else {}
            kind, name = data.get("kind"), meta.get("name")
            if not isinstance(kind, str) or not isinstance(name, str):
                raise ManifestError(f"error: {doc.file}:{item.line}: a resource needs kind and metadata.name")
            rtype = resource_type(str(data.get("apiVersion") or ""), kind)
            if rtype is not None:
                kind = rtype.KEY_KIND
            elif not types_named(kind) and api_group(str(data.get("apiVersion") or "")) not in MESH_GROUPS:
                continue  # a Kubernetes document (Service, Deployment...): apply skipped it too
            else:
                try:
                    kind = resolve_kind(kind)
                except UnknownKindError as exc:
                    raise ManifestError(f"error: {doc.file}:{item.line}: {exc}") from None
            out.append(ResourceRef(kind, str(meta.get("namespace") or "default"), name))
    return out
