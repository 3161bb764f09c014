"""meshctl analyze [-f FILE_OR_DIR]: the config service's validation, offline (no NATS needed).

Without ``-f`` it analyses what meshbus-config has stored (every namespace) with the hosts
discovery's registry holds, as istioctl analyze looks at the live cluster; with ``-f`` it is offline
(hosts come only from the files' ServiceEntries). ``--fates`` prints what meshbus does not enforce
(bus/config/fates.py), or with ``--fates=all`` every kind and field with its fate.

Runs exactly what ``meshctl apply`` would run on the server (per-document validation, then
cross-resource analysis of the whole set, under the same error/warning policy) and prints it in
istioctl analyze's format: ``Error [IST0101] (VirtualService default/reviews reviews.yaml:12)
Referenced subset not found: "v3"``. Field errors carry IST0106 (SchemaValidationError), as
istioctl reports a resource that fails schema validation. Exit code 1 when any error was found.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pydantic import ValidationError

from meshbus.bus.config import fates
from meshbus.bus.config.result import FieldError, Level, Validation, format_value
from meshbus.bus.config.source import Source
from meshbus.bus.config.validation.registry import validate
from meshbus.bus.schemas.config import ListReply
from meshbus.control.config import admission
from meshbus.control.config.client import DEFAULT_TIMEOUT, ConfigClient
from meshbus.control.config.manifest import from_record
from meshbus.control.discovery.client import registry_hosts

from .bus_call import timeout_args
from .config_cmds import with_client
from .manifests import ManifestError, collect

SCHEMA_VALIDATION_ERROR = "IST0106"
DEPRECATED = "IST0002"


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    conn = timeout_args(DEFAULT_TIMEOUT, "the config service (without -f)")
    p = sub.add_parser(
        "analyze", parents=[common, conn], help="validate config files offline (istioctl analyze)"
    )
    p.add_argument(
        "-f",
        "--filename",
        action="append",
        metavar="FILE_OR_DIR",
        help="files to analyse (default: the stored config)",
    )
    p.add_argument(
        "--fates",
        nargs="?",
        const="not-enforced",
        choices=["not-enforced", "all"],
        help="list the kinds and fields meshbus does not enforce (or all of them, with their fate)",
    )
    p.set_defaults(func=run)


def istio_line(m: FieldError) -> str:
    """One finding in istioctl analyze's ``<Level> [<Code>] (<Kind> <ns>/<name> file:line) text`` form."""
    if m.code:
        return m.render()
    where = f"{m.resource} {m.source}" if m.resource else str(m.source)
    text = f"{m.path}: {m.message}" if m.path else m.message
    if m.value is not None:
        text += f" (got {format_value(m.value)})"
    if m.level is Level.ERROR:
        return f"Error [{SCHEMA_VALIDATION_ERROR}] ({where}) Schema validation error: {text}"
    if "deprecated" in m.message:
        return f"{m.level.value} [{DEPRECATED}] ({where}) {text}"
    return f"{m.level.value} ({where}) {text}"


def analyze_files(paths: list[str]) -> Validation:
    loaded = admission.load_documents(collect(paths))
    result = Validation()
    result.extend(loaded.validation)
    result.extend(admission.analyze_set(loaded.resources))
    return result


def analyze_stored(args: argparse.Namespace) -> Validation:
    async def fetch(client: ConfigClient) -> tuple[ListReply, frozenset[str] | None]:
        stored = await client.list(all_namespaces=True)
        return stored, await registry_hosts(client.bus, timeout=min(args.timeout, 1.0))

    resources = []
    result = Validation()
    stored, hosts = with_client(args, fetch)
    for record in stored.items:
        try:
            resource = from_record(record).to_resource()
            result.extend(validate(resource))  # what apply said when it was stored, as meshbus is now
            resources.append(resource)
        except ValidationError as exc:
            where = Source(record.source_file or "<stored>", record.source_line)
            ref = f"{record.kind} {record.namespace}/{record.name}"
            result.add(
                FieldError(
                    where, "", f"stored revision {record.revision} no longer validates: {exc}", resource=ref
                )
            )
    result.extend(admission.analyze_set(resources, hosts or ()))
    return result


def run(args: argparse.Namespace) -> int:
    if args.fates:
        print("\n".join(fates.listing(fates.Verdict) if args.fates == "all" else fates.listing()))
        return 0
    try:
        findings = analyze_files(args.filename) if args.filename else analyze_stored(args)
    except ManifestError as exc:
        print(exc, file=sys.stderr)
        return 1
    what = ", ".join(args.filename) if args.filename else "the stored config (all namespaces)"
    for m in findings.messages():
        print(istio_line(m))
    if findings.errors:
        print(f"Error: Analyzers found issues when analyzing {what}.", file=sys.stderr)
        return 1
    if not findings.messages():
        print(f"\u2714 No validation issues found when analyzing {what}.")
    return 0
