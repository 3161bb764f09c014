"""meshctl apply / delete / get / history / rollback: talk to meshbus-config over NATS.

Output follows kubectl: one ``kind.group/name action`` line per resource on stdout, warnings
as ``Warning: ...`` on stderr, errors (every one of them) on stderr with exit code 1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from meshbus.bus.schemas.config import ResourceRef
from meshbus.control.config.client import DEFAULT_TIMEOUT, ConfigClient
from meshbus.control.config.kinds import UnknownKindError, kubectl_name, resolve_kind

from . import config_output as out
from .bus_call import call, timeout_args
from .manifests import ManifestError, collect, refs

T = TypeVar("T")
MAX_APPLY_BYTES = 900 * 1024  # one request must fit NATS' default max_payload (1 MiB) with its envelope


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    conn = timeout_args(DEFAULT_TIMEOUT, "the config service")

    p = sub.add_parser("apply", parents=[common, conn], help="validate and store config from files")
    p.add_argument("-f", "--filename", action="append", required=True, metavar="FILE_OR_DIR")
    p.add_argument("--dry-run", action="store_true", help="validate on the server, store nothing")
    p.add_argument(
        "--revision",
        type=int,
        default=0,
        help="refuse unless the resource is still at this revision (one resource)",
    )
    p.set_defaults(func=run_apply)

    p = sub.add_parser("delete", parents=[common, conn], help="delete config: -f FILE_OR_DIR or KIND NAME")
    p.add_argument("kind", nargs="?", metavar="KIND")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("-f", "--filename", action="append", metavar="FILE_OR_DIR")
    p.add_argument("-n", "--namespace", default="default")
    p.add_argument("--ignore-not-found", action="store_true")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--force", action="store_true", help="delete even if remaining config then refers to it")
    p.set_defaults(func=run_delete)

    p = sub.add_parser("get", parents=[common, conn], help="show stored config")
    p.add_argument("kind", metavar="KIND", help="vs, dr, se, gw, pa, ra, ap, ... or the full kind")
    p.add_argument("name", nargs="?", metavar="NAME")
    p.add_argument("-n", "--namespace", default="default")
    p.add_argument("-A", "--all-namespaces", action="store_true")
    p.add_argument("-o", "--output", choices=["table", "yaml", "json"], default="table")
    p.set_defaults(func=run_get)

    p = sub.add_parser("history", parents=[common, conn], help="revisions of one resource")
    p.add_argument("kind", metavar="KIND")
    p.add_argument("name", metavar="NAME")
    p.add_argument("-n", "--namespace", default="default")
    p.set_defaults(func=run_history)

    p = sub.add_parser("rollback", parents=[common, conn], help="restore a resource to an earlier revision")
    p.add_argument("kind", metavar="KIND")
    p.add_argument("name", metavar="NAME")
    p.add_argument("-n", "--namespace", default="default")
    p.add_argument("--to", dest="to_revision", type=int, required=True, metavar="REV")
    p.add_argument("--dry-run", action="store_true")
    p.set_defaults(func=run_rollback)


def with_client(args: argparse.Namespace, fn: Callable[[ConfigClient], Awaitable[T]]) -> T:
    return call(args, lambda bus: fn(ConfigClient(bus, timeout=args.timeout)))


def _warn(warnings: list[str]) -> None:
    for w in warnings:
        # analyzer findings already start with their level ("Warning [IST0101] ...")
        print(w if w.startswith(("Warning", "Info", "Error")) else f"Warning: {w}", file=sys.stderr)


def _kind(text: str) -> str | None:
    try:
        return resolve_kind(text)
    except UnknownKindError as exc:
        print(f"error: {str(exc).removeprefix('meshbus: ')}", file=sys.stderr)
        return None


def run_apply(args: argparse.Namespace) -> int:
    try:
        documents = collect(args.filename)
    except ManifestError as exc:
        print(exc, file=sys.stderr)
        return 1
    size = sum(len(d.text.encode()) + len(d.file) for d in documents)
    if size > MAX_APPLY_BYTES:
        print(
            f"error: {size} bytes of YAML is more than one apply carries ({MAX_APPLY_BYTES}); split it",
            file=sys.stderr,
        )
        return 1
    reply = with_client(
        args, lambda c: c.apply(documents, dry_run=args.dry_run, expected_revision=args.revision)
    )
    _warn(reply.warnings)
    for r in reply.results:
        print(out.change_line(r, reply.dry_run))
    return 0


def run_delete(args: argparse.Namespace) -> int:
    targets: list[ResourceRef] = []
    try:
        if args.filename:
            if args.kind:
                print("error: give either -f FILE_OR_DIR or KIND NAME, not both", file=sys.stderr)
                return 1
            targets = refs(collect(args.filename))
        elif args.kind and args.names:
            kind = _kind(args.kind)
            if kind is None:
                return 1
            targets = [ResourceRef(kind, args.namespace, n) for n in args.names]
        else:
            print("error: give -f FILE_OR_DIR, or KIND and NAME", file=sys.stderr)
            return 1
    except ManifestError as exc:
        print(exc, file=sys.stderr)
        return 1
    reply = with_client(
        args,
        lambda c: c.delete(
            targets, dry_run=args.dry_run, ignore_not_found=args.ignore_not_found, force=args.force
        ),
    )
    _warn(reply.warnings)
    for r in reply.results:
        print(out.change_line(r, reply.dry_run))
    return 0


def run_get(args: argparse.Namespace) -> int:
    kind = _kind(args.kind)
    if kind is None:
        return 1
    if args.name:
        records = [with_client(args, lambda c: c.get(kind, args.name, args.namespace))]
    else:
        records = with_client(
            args, lambda c: c.list(kind, args.namespace, all_namespaces=args.all_namespaces)
        ).items
    if args.output != "table":
        sys.stdout.write(out.dump(out.records_document(records, single=bool(args.name)), args.output))
        return 0
    if not records:
        where = "any namespace" if args.all_namespaces else f"{args.namespace} namespace"
        print(f"No resources found in {where}.", file=sys.stderr)
        return 0
    now = dt.datetime.now(dt.UTC)
    print(out.records_table(records, with_namespace=args.all_namespaces, now=now))
    return 0


def run_history(args: argparse.Namespace) -> int:
    kind = _kind(args.kind)
    if kind is None:
        return 1
    reply = with_client(args, lambda c: c.history(kind, args.name, args.namespace))
    rows = []
    for e in reply.entries:
        what = f"rollback to {e.rolled_back_to}" if e.operation == "rollback" else e.operation
        source = f"{e.source_file}:{e.source_line}" if e.source_file else ""
        current = "*" if e.revision == reply.current_revision else ""
        rows.append([str(e.revision), e.updated, what, source, current])
    print(kubectl_name(reply.kind, reply.name) + f" (namespace {reply.namespace})")
    print(out.table(["REVISION", "UPDATED", "OPERATION", "SOURCE", "CURRENT"], rows))
    return 0


def run_rollback(args: argparse.Namespace) -> int:
    kind = _kind(args.kind)
    if kind is None:
        return 1

    async def go(c: ConfigClient) -> Any:
        # Always state the revision we saw, so a change made meanwhile is not silently overwritten.
        hist = await c.history(kind, args.name, args.namespace)
        return await c.rollback(
            kind,
            args.name,
            args.to_revision,
            args.namespace,
            expected_revision=hist.current_revision,
            dry_run=args.dry_run,
        )

    reply = with_client(args, go)
    _warn(reply.warnings)
    for r in reply.results:
        print(out.change_line(r, reply.dry_run))
    return 0
