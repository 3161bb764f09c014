"""kubectl-style output for the config commands: tables, ages, YAML/JSON, change lines."""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Callable, Sequence
from typing import Any

from ruamel.yaml import YAML

from meshbus.bus.schemas.config import ResourceRecord, ResourceResult
from meshbus.control.config.kinds import group_of, kubectl_name
from meshbus.control.config.manifest import parse_iso, record_manifest


def human_age(seconds: float) -> str:
    """kubectl's HumanDuration: ``45s``, ``5m30s``, ``45m``, ``5h30m``, ``40h``, ``3d5h``, ``200d``, ``2y``."""
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    d = h // 24
    if d < 8:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    if d < 365 * 2:
        return f"{d}d"
    return f"{d // 365}y"


def age_of(iso: str, now: dt.datetime) -> str:
    when = parse_iso(iso)
    return "<unknown>" if when is None else human_age((now - when).total_seconds())


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by three spaces, no borders: what kubectl prints."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = [
        "   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [headers, *rows]
    ]
    return "\n".join(lines)


def _join(items: Any) -> str:
    return ",".join(str(i) for i in items) if items else ""


# Extra columns per kind, as Istio's CRDs declare additionalPrinterColumns.
_COLUMNS: dict[str, tuple[tuple[str, Callable[[dict[str, Any]], str]], ...]] = {
    "VirtualService": (
        ("GATEWAYS", lambda s: json.dumps(s.get("gateways")) if s.get("gateways") else ""),
        ("HOSTS", lambda s: json.dumps(s.get("hosts", []))),
    ),
    "DestinationRule": (("HOST", lambda s: str(s.get("host", ""))),),
    "ServiceEntry": (
        ("HOSTS", lambda s: json.dumps(s.get("hosts", []))),
        ("LOCATION", lambda s: str(s.get("location", ""))),
        ("RESOLUTION", lambda s: str(s.get("resolution", ""))),
    ),
    "WorkloadEntry": (("ADDRESS", lambda s: str(s.get("address", ""))),),
    "PeerAuthentication": (("MODE", lambda s: str((s.get("mtls") or {}).get("mode", ""))),),
    "AuthorizationPolicy": (("ACTION", lambda s: str(s.get("action", "ALLOW"))),),
}


def records_table(records: Sequence[ResourceRecord], *, with_namespace: bool, now: dt.datetime) -> str:
    kinds = {r.kind for r in records}
    extra = _COLUMNS.get(next(iter(kinds)), ()) if len(kinds) == 1 else ()
    headers = (
        (["NAMESPACE"] if with_namespace else []) + ["NAME"] + [h for h, _ in extra] + ["REVISION", "AGE"]
    )
    rows = []
    for r in records:
        name = r.name if len(kinds) == 1 else kubectl_name(r.kind, r.name)
        row = ([r.namespace] if with_namespace else []) + [name]
        row += [fn(r.spec) for _, fn in extra]
        row += [str(r.revision), age_of(r.created or r.updated, now)]
        rows.append(row)
    return table(headers, rows)


def dump(obj: Any, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(obj, indent=4) + "\n"
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    buf = io.StringIO()
    yaml.dump(obj, buf)
    return buf.getvalue()


def records_document(records: Sequence[ResourceRecord], single: bool) -> Any:
    if single and len(records) == 1:
        return record_manifest(records[0])
    return {"apiVersion": "v1", "items": [record_manifest(r) for r in records], "kind": "List"}


def change_line(result: ResourceResult, dry_run: bool) -> str:
    """``virtualservice.networking.istio.io/reviews configured`` (kubectl apply's line)."""
    suffix = " (server dry run)" if dry_run else ""
    if result.action == "deleted":
        group = group_of(result.kind)
        return f'{result.kind.lower()}.{group} "{result.name}" deleted{suffix}'
    return f"{kubectl_name(result.kind, result.name)} {result.action}{suffix}"
