"""Resource <-> stored value (meshbus.bus.schemas.config.StoredConfig) and reply records. Sans-IO."""

from __future__ import annotations

import datetime as dt
from typing import Any

from meshbus.bus.config.resources import Resource
from meshbus.bus.schemas.config import ResourceRecord, StoredConfig
from meshbus.bus.subjects import Subjects


def utc_iso(when: dt.datetime) -> str:
    """``2026-11-27T19:00:00.123456Z``: the one time format of stored values."""
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def utc_now() -> str:
    return utc_iso(dt.datetime.now(dt.UTC))


def parse_iso(text: str) -> dt.datetime | None:
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def key_of(kind: str, namespace: str, name: str) -> str:
    return Subjects.config_key(kind, namespace, name)


def split_key(key: str) -> tuple[str, str, str]:
    """``VirtualService.default.reviews`` -> (kind, namespace, name)."""
    kind, namespace, name = key.split(".", 2)
    return kind, namespace, name


def spec_of(resource: Resource) -> dict[str, Any]:
    """The spec as stored: camelCase, defaults omitted, durations as Istio strings.

    Omitting defaults keeps stored values (and ``meshctl get -o yaml``) close to what the operator
    wrote, and makes the comparison that detects an unchanged re-apply insensitive to spelling
    out a default.
    """
    spec: dict[str, Any] = resource.spec.model_dump(
        by_alias=True, exclude_none=True, exclude_defaults=True, mode="json"
    )
    return spec


def to_stored(
    resource: Resource,
    *,
    updated: str,
    created: str = "",
    operation: str = "apply",
    rolled_back_to: int = 0,
) -> StoredConfig:
    src = resource.source
    return StoredConfig(
        api_version=resource.api_version,
        kind=resource.kind,
        namespace=resource.namespace,
        name=resource.name,
        spec=spec_of(resource),
        labels=dict(resource.metadata.labels),
        annotations=dict(resource.metadata.annotations),
        source_file=src.file,
        source_line=src.line,
        operation=operation,
        updated=updated,
        created=created or updated,
        rolled_back_to=rolled_back_to,
    )


def to_record(value: StoredConfig, revision: int) -> ResourceRecord:
    return ResourceRecord(
        api_version=value.api_version,
        kind=value.kind,
        namespace=value.namespace,
        name=value.name,
        revision=revision,
        spec=value.spec,
        labels=dict(value.labels),
        annotations=dict(value.annotations),
        source_file=value.source_file,
        source_line=value.source_line,
        updated=value.updated,
        created=value.created,
        operation=value.operation,
    )


def from_record(record: ResourceRecord) -> StoredConfig:
    return StoredConfig(
        api_version=record.api_version,
        kind=record.kind,
        namespace=record.namespace,
        name=record.name,
        spec=record.spec,
        labels=dict(record.labels),
        annotations=dict(record.annotations),
        source_file=record.source_file,
        source_line=record.source_line,
        operation=record.operation,
        updated=record.updated,
        created=record.created,
    )


def record_manifest(record: ResourceRecord) -> dict[str, Any]:
    """What ``meshctl get -o yaml|json`` prints: kubectl's shape, revision as resourceVersion."""
    meta: dict[str, Any] = {"name": record.name, "namespace": record.namespace}
    if record.labels:
        meta["labels"] = dict(record.labels)
    if record.annotations:
        meta["annotations"] = dict(record.annotations)
    if record.created:
        meta["creationTimestamp"] = record.created
    meta["resourceVersion"] = str(record.revision)
    return {"apiVersion": record.api_version, "kind": record.kind, "metadata": meta, "spec": record.spec}
