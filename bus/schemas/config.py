"""meshbus-config messages (``<root>.v1.config.<verb>``) and the stored value format.

Endpoints (request -> reply; errors travel as the ErrorReply envelope):
  apply    ApplyRequest    -> ApplyReply     bad_request (every validation error, one per line), conflict
  delete   DeleteRequest   -> DeleteReply    not_found, conflict, bad_request (deleting breaks a reference)
  get      GetRequest      -> ResourceRecord not_found
  list     ListRequest     -> ListReply
  history  HistoryRequest  -> HistoryReply   not_found
  rollback RollbackRequest -> ApplyReply     not_found (revision gone), conflict, bad_request
Every endpoint answers ``not_ready`` until the service has its KV bucket.
After each stored change the service publishes `ConfigChanged` on ``<root>.v1.config.changed``
(a hint only: the KV bucket is the source of truth).

Stored value format (STABLE; readers such as meshbus-discovery watch the bucket directly)
-------------------------------------------------------------------------------------------
Bucket ``Subjects.kv_bucket("config")`` (``mesh_config`` for root ``mesh``), history 64.
Key ``Subjects.config_key(kind, namespace, name)``, e.g. ``VirtualService.default.reviews``.
A key's revision is the stream sequence of its latest message. A deleted resource is a
KV delete marker (header ``KV-Operation: DEL``, empty value). Every other value is UTF-8 JSON,
keys sorted, of this shape::

    {
      "apiVersion": "networking.istio.io/v1",
      "kind": "VirtualService",
      "metadata": {"name": "reviews", "namespace": "default",
                   "labels": {"app": "reviews"},          # omitted when empty
                   "annotations": {...}},                  # omitted when empty
      "spec": {...},                                       # the Istio spec, camelCase, see below
      "source": {"file": "reviews.yaml", "line": 3},       # where the operator's YAML had it
      "change": {"operation": "apply",                     # "apply" | "rollback"
                 "updated": "2026-11-27T19:00:00.123456Z", # UTC, when this revision was written
                 "created": "2026-11-27T18:00:00.000000Z", # UTC, first write since last delete
                 "rolledBackTo": 12}                       # rollback only: the revision restored
    }

``spec`` is what validation accepted, normalised: camelCase Istio field names, fields equal to
their default omitted, durations as Istio duration strings (``"1.5s"``). It always validates
again: ``meshbus.bus.config.KINDS[kind].model_validate({apiVersion, kind, metadata, spec},
by_alias=True, by_name=False)``, which is what `StoredConfig.to_resource()` does. Readers must
ignore keys they do not know (fields are only ever added). `decode_value` / `encode_value`
are the reference reader and writer.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from ..codec import message
from ..config.source import Source
from ..errors import BadRequestError

if TYPE_CHECKING:
    from ..config.resources import Resource


@message("meshbus.config.v1.Document")
@dataclass(frozen=True, slots=True)
class Document:
    """One YAML file (any number of ``---`` documents) as the operator wrote it."""

    file: str
    """Name shown in errors (the path meshctl read)."""
    text: str


@message("meshbus.config.v1.ResourceRef")
@dataclass(frozen=True, slots=True)
class ResourceRef:
    kind: str
    namespace: str
    name: str


@message("meshbus.config.v1.ApplyRequest")
@dataclass(frozen=True, slots=True)
class ApplyRequest:
    """Validate every document, then store every resource in them, or nothing."""

    documents: list[Document] = field(default_factory=list)
    dry_run: bool = False
    """Validate and report what would change; store nothing."""
    expected_revision: int = 0
    """Optimistic concurrency for a one-resource apply: refuse (conflict) unless the stored
    revision is still this one. 0 = not stated. Refused when the request has several resources."""
    expected_revisions: dict[str, int] = field(default_factory=dict)
    """Per config key (``Kind.namespace.name``): the revision the change was based on;
    0 = the resource must not exist yet."""


@message("meshbus.config.v1.ResourceResult")
@dataclass(frozen=True, slots=True)
class ResourceResult:
    """What a change did to one resource."""

    kind: str
    group: str
    """API group, e.g. ``networking.istio.io`` (for kubectl-style ``kind.group/name`` output)."""
    namespace: str
    name: str
    revision: int
    """Revision after the change (the unchanged revision for ``unchanged``; 0 in a dry run that writes)."""
    action: str
    """``created`` | ``configured`` | ``unchanged`` | ``deleted`` | ``rolled back``."""
    previous_revision: int = 0


@message("meshbus.config.v1.ApplyReply")
@dataclass(frozen=True, slots=True)
class ApplyReply:
    results: list[ResourceResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    """Rendered findings (``file:line: Kind ns/name: path: message`` or istioctl-analyze style)."""
    dry_run: bool = False


@message("meshbus.config.v1.DeleteRequest")
@dataclass(frozen=True, slots=True)
class DeleteRequest:
    """Delete every target, or nothing."""

    targets: list[ResourceRef] = field(default_factory=list)
    dry_run: bool = False
    expected_revisions: dict[str, int] = field(default_factory=dict)
    ignore_not_found: bool = False
    force: bool = False
    """Delete even if a remaining resource would then refer to something missing (IST0101)."""


@message("meshbus.config.v1.DeleteReply")
@dataclass(frozen=True, slots=True)
class DeleteReply:
    results: list[ResourceResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    dry_run: bool = False


@message("meshbus.config.v1.GetRequest")
@dataclass(frozen=True, slots=True)
class GetRequest:
    kind: str
    name: str
    namespace: str = "default"


@message("meshbus.config.v1.ListRequest")
@dataclass(frozen=True, slots=True)
class ListRequest:
    kind: str = ""
    """Empty = every kind."""
    namespace: str = "default"
    all_namespaces: bool = False


@message("meshbus.config.v1.ResourceRecord")
@dataclass(frozen=True, slots=True)
class ResourceRecord:
    """One stored resource at its current revision."""

    api_version: str
    kind: str
    namespace: str
    name: str
    revision: int
    spec: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    source_file: str = ""
    source_line: int = 0
    updated: str = ""
    """UTC ISO-8601 time of this revision."""
    created: str = ""
    operation: str = "apply"


@message("meshbus.config.v1.ListReply")
@dataclass(frozen=True, slots=True)
class ListReply:
    items: list[ResourceRecord] = field(default_factory=list)


@message("meshbus.config.v1.HistoryRequest")
@dataclass(frozen=True, slots=True)
class HistoryRequest:
    kind: str
    name: str
    namespace: str = "default"


@message("meshbus.config.v1.HistoryEntry")
@dataclass(frozen=True, slots=True)
class HistoryEntry:
    revision: int
    operation: str
    """``apply`` | ``rollback`` | ``delete`` | ``purge``."""
    updated: str = ""
    source_file: str = ""
    source_line: int = 0
    rolled_back_to: int = 0


@message("meshbus.config.v1.HistoryReply")
@dataclass(frozen=True, slots=True)
class HistoryReply:
    kind: str
    namespace: str
    name: str
    current_revision: int
    """Revision of the latest entry (a delete marker's when the resource is deleted)."""
    entries: list[HistoryEntry] = field(default_factory=list)
    """Oldest first; the bucket keeps the last 64."""


@message("meshbus.config.v1.RollbackRequest")
@dataclass(frozen=True, slots=True)
class RollbackRequest:
    """Store the spec a resource had at ``to_revision`` as its new revision."""

    kind: str
    name: str
    to_revision: int
    namespace: str = "default"
    expected_revision: int = 0
    """The current revision the caller saw (conflict if it moved); 0 = whatever is current."""
    dry_run: bool = False


@message("meshbus.config.v1.ConfigChanged")
@dataclass(frozen=True, slots=True)
class ConfigChanged:
    """Published on ``<root>.v1.config.changed`` after a change was stored."""

    revision: int
    """Highest revision written by the change."""
    keys: list[str] = field(default_factory=list)


# -- the stored value ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredConfig:
    """A decoded KV value (see the module docstring for the wire shape)."""

    api_version: str
    kind: str
    namespace: str
    name: str
    spec: dict[str, Any]
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    source_file: str = ""
    source_line: int = 0
    operation: str = "apply"
    updated: str = ""
    created: str = ""
    rolled_back_to: int = 0

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.kind, self.namespace, self.name)

    def metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if self.labels:
            meta["labels"] = dict(self.labels)
        if self.annotations:
            meta["annotations"] = dict(self.annotations)
        return meta

    def manifest(self) -> dict[str, Any]:
        """``{apiVersion, kind, metadata, spec}``: the resource as an operator would write it."""
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "metadata": self.metadata(),
            "spec": self.spec,
        }

    def content(self) -> bytes:
        """Canonical bytes of what the operator controls (no source, no timestamps).

        Two values with equal content are the same config: re-applying it is a no-op.
        """
        return orjson.dumps(self.manifest(), option=orjson.OPT_SORT_KEYS)

    def to_resource(self) -> Resource:
        """Validate the manifest again into the typed model (raises pydantic.ValidationError)."""
        rtype = _kinds().get(self.kind)
        if rtype is None:
            raise BadRequestError(f"unknown kind {self.kind!r} in stored config")
        payload = {**self.manifest(), "source": Source(self.source_file or "<stored>", self.source_line)}
        return rtype.model_validate(payload, by_alias=True, by_name=False)


def encode_value(value: StoredConfig) -> bytes:
    change: dict[str, Any] = {
        "operation": value.operation,
        "updated": value.updated,
        "created": value.created,
    }
    if value.rolled_back_to:
        change["rolledBackTo"] = value.rolled_back_to
    doc = {
        **value.manifest(),
        "source": {"file": value.source_file, "line": value.source_line},
        "change": change,
    }
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


def decode_value(data: bytes) -> StoredConfig:
    """KV value bytes -> StoredConfig; BadRequestError for anything that is not one."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BadRequestError(f"stored config value is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadRequestError("stored config value is not a JSON object")
    meta, spec = doc.get("metadata"), doc.get("spec", {})
    src, change = doc.get("source") or {}, doc.get("change") or {}
    if not isinstance(meta, dict) or not isinstance(spec, dict) or not isinstance(src, dict):
        raise BadRequestError("stored config value lacks metadata/spec objects")
    try:
        return StoredConfig(
            api_version=str(doc["apiVersion"]),
            kind=str(doc["kind"]),
            namespace=str(meta.get("namespace", "default")),
            name=str(meta["name"]),
            spec=spec,
            labels=dict(meta.get("labels") or {}),
            annotations=dict(meta.get("annotations") or {}),
            source_file=str(src.get("file", "")),
            source_line=int(src.get("line", 0) or 0),
            operation=str(change.get("operation", "apply")),
            updated=str(change.get("updated", "")),
            created=str(change.get("created", "")),
            rolled_back_to=int(change.get("rolledBackTo", 0) or 0),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise BadRequestError(f"stored config value is incomplete: {exc!r}") from None


def manifest_resource(manifest: Mapping[str, Any], origin: str) -> Resource:
    """A manifest (``{apiVersion, kind, metadata, spec}``, as stored and as snapshots carry it) validated
    into its typed model, the one form discovery and the proxy read config in.

    ``origin`` names where it came from in errors and becomes the model's ``source``. Raises ValueError:
    ``meshbus: <origin>: <Kind> <ns>/<name>: <field>: <problem>; ...`` (every field that is wrong).
    """
    kind = str(manifest.get("kind", ""))
    meta = manifest.get("metadata") or {}
    rtype = _kinds().get(kind)
    if rtype is None:
        raise ValueError(f"meshbus: {origin}: {_ref(kind, meta)}: kind {kind!r} is not known")
    payload = {
        "apiVersion": manifest.get("apiVersion"),
        "kind": kind,
        "metadata": meta,
        "spec": manifest.get("spec", {}),
        "source": Source(origin, 0),
    }
    try:
        return rtype.model_validate(payload, by_alias=True, by_name=False)
    except ValueError as exc:  # pydantic's ValidationError is one
        from pydantic import ValidationError

        from ..config.humanize import human_message
        from ..config.result import format_path

        if not isinstance(exc, ValidationError):
            raise
        problems = "; ".join(f"{format_path(e['loc'])}: {human_message(e)}" for e in exc.errors())
        raise ValueError(f"meshbus: {origin}: {_ref(kind, meta)}: {problems}") from None


def _ref(kind: str, meta: Mapping[str, Any]) -> str:
    return f"{kind} {meta.get('namespace') or 'default'}/{meta.get('name')}"


@functools.cache
def _kinds() -> Mapping[str, type[Resource]]:
    # Imported on first use, once (this module must not load pydantic for the clients that only
    # decode values; per call, the import statement alone would cost as much as a small validation).
    from ..config.resources import KINDS

    return KINDS
