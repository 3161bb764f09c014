"""meshctl authz check / explain: which AuthorizationPolicies a workload runs, and what they decide.

- ``meshctl authz check PROXY_ID`` asks that mesh-mode proxy (as ``proxy-config`` does) for the
  authorization it enforces: the MeshConfig settings it read, then every rule in evaluation order
  (CUSTOM, AUDIT, DENY, ALLOW, dry runs beside their kind), and what it could not apply as written.
  What ``istioctl x authz check`` shows, from the proxy itself.
- ``meshctl authz explain --from SA --to SVC --method M --path P [--jwt-claims JSON]`` evaluates one
  request offline against the stored config (or ``-f`` files), with the proxies' own code
  (meshbus.bus.config.authz), and names the rule that decides, and why each other rule did not match.
  A CUSTOM rule that matches is reported as the check the proxy would send (its answer comes first).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from meshbus.bus.config.authz import normalize
from meshbus.bus.config.authz.compile import (
    BAD_CUSTOM_SUFFIX,
    Compiled,
    MeshConfigError,
    Workload,
    compile_workload,
    describe_check,
    mesh_config_of,
)
from meshbus.bus.config.authz.engine import Decision, Request
from meshbus.bus.config.resources import Resource
from meshbus.bus.schemas.config import ListReply
from meshbus.bus.schemas.discovery import ProxyConfigReply
from meshbus.control.config import admission
from meshbus.control.config.client import DEFAULT_TIMEOUT, ConfigClient
from meshbus.control.config.manifest import from_record
from meshbus.control.discovery.client import proxy_config

from .bus_call import call, timeout_args
from .config_cmds import with_client
from .manifests import ManifestError, collect
from .status_cmds import _dump  # the same JSON/YAML as proxy-status and proxy-config


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    authz = sub.add_parser("authz", help="AuthorizationPolicy: what a workload enforces").add_subparsers(
        dest="authz_command", metavar="COMMAND", required=True
    )
    out = argparse.ArgumentParser(add_help=False)
    out.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")

    p = authz.add_parser(
        "check",
        parents=[common, out, timeout_args(2.0, "the proxy")],
        help="the policies a proxy enforces, in evaluation order",
    )
    p.add_argument("proxy", metavar="PROXY_ID")
    p.set_defaults(func=run_check)

    p = authz.add_parser(
        "explain",
        parents=[common, out, timeout_args(DEFAULT_TIMEOUT, "the config service (without -f)")],
        help="evaluate one request offline and name the rule that decides",
    )
    p.add_argument(
        "--from",
        dest="source",
        default="",
        metavar="SA",
        help="caller: NS/SA, SA (in --namespace), a SPIFFE ID, or nothing for a plaintext caller",
    )
    p.add_argument(
        "--to", dest="target", required=True, metavar="SVC", help="workload: SVC, SVC.NS or NS/SVC"
    )
    p.add_argument("-n", "--namespace", default="default", help="namespace of --to and --from when unnamed")
    p.add_argument("--labels", default="", metavar="K=V,...", help="the workload's labels (default app=SVC)")
    p.add_argument("--port", type=int, default=0, help="the workload's port (destination.port, ports)")
    p.add_argument("--method", default="GET")
    p.add_argument("--path", default="/", help="request target (a query may follow)")
    p.add_argument("--host", default="", help="Host header (default SVC)")
    p.add_argument("-H", "--header", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--source-ip", default="10.0.0.1", help="the caller's address (source.ip, ipBlocks)")
    p.add_argument(
        "--remote-ip", default="", help="the client address X-Forwarded-For gives (remoteIpBlocks)"
    )
    p.add_argument(
        "--jwt-claims",
        default="",
        metavar="JSON",
        help="claims of a verified JWT: iss/sub give the request principal, aud the audiences",
    )
    p.add_argument("--trust-domain", default="cluster.local", help="trust domain of --from NS/SA")
    p.add_argument(
        "-f",
        "--filename",
        action="append",
        metavar="FILE_OR_DIR",
        help="evaluate against these files (default: the stored config)",
    )
    p.set_defaults(func=run_explain)  # fmt: skip


# -- check ----------------------------------------------------------------------------------------------


def run_check(args: argparse.Namespace) -> int:
    node = args.proxy.split(".", 1)[0]
    reply: ProxyConfigReply = call(args, lambda bus: proxy_config(bus, node, timeout=args.timeout))
    doc = reply.runtime.get("authorization")
    if args.output != "table":
        print(_dump({"proxy": reply.node, "version": reply.version, "authorization": doc}, args.output))
        return 0
    console = Console(width=160)
    if doc is None:
        console.print(f"No AuthorizationPolicy applies to {args.proxy} (snapshot v{reply.version}): "
                      "every request is allowed.")  # fmt: skip
        return 0
    _print_settings(console, args.proxy, reply.version, doc)
    table = Table(title="Rules in evaluation order")
    for col in ("#", "STEP", "RULE", "FROM", "TO", "WHEN"):
        table.add_column(col, overflow="fold")
    n = 0
    for step in doc["steps"]:
        for rule in step["rules"]:
            n += 1
            table.add_row(
                str(n), step["step"], Text(rule["id"]), Text(_groups(rule.get("from"))),
                Text(_groups(rule.get("to"))), Text("\n".join(rule.get("when", [])) or "-"),
            )  # fmt: skip
    console.print(table)
    if doc["defaultAllow"]:
        console.print("No ALLOW policy applies: a request no DENY (or CUSTOM) rule stops is allowed.")
    else:
        console.print("ALLOW policies apply: a request no ALLOW rule matches is denied (policy none).")
    for problem in doc.get("problems", []):
        console.print(f"[yellow]Warning:[/yellow] {escape(problem)}")
    return 0


def _print_settings(console: Console, proxy: str, version: int, doc: dict[str, Any]) -> None:
    head = Table.grid(padding=(0, 2))
    rows = [
        ("Proxy", f"{proxy} (snapshot v{version})"),
        ("MeshConfig", str(doc["meshConfig"])),
        ("Root namespace", str(doc["rootNamespace"])),
        ("Path normalization", str(doc["pathNormalization"])),
        ("Trusted proxies", str(doc["numTrustedProxies"])),
        ("Policies", ", ".join(doc["policies"])),
    ]
    provider = doc.get("provider")
    if provider:
        rows.append(("CUSTOM provider", f"{provider['name']} ({provider['type']}) -> {provider['target']}"))
    for name, value in rows:
        head.add_row(name, Text(value))
    console.print(head)


def _groups(groups: Sequence[Sequence[str]] | None) -> str:
    if not groups:
        return "any"
    return "\nor\n".join(" and ".join(g) for g in groups)


# -- explain --------------------------------------------------------------------------------------------


def run_explain(args: argparse.Namespace) -> int:
    try:
        resources = _resources(args)
        workload, request, raw_path = _request(args, resources)
        compiled = compile_workload(resources, workload)
    except (ManifestError, MeshConfigError, ValueError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    doc = explain(compiled, workload, request, raw_path)
    if args.output != "table":
        print(_dump(doc, args.output))
        return 0
    console = Console(width=160)
    console.print(f"[bold]{doc['decision']}[/bold]: {escape(doc['reason'])}")
    if doc.get("path") and doc["path"] != normalize.split_target(raw_path)[0]:
        console.print(Text(f"The path is matched (and forwarded) as {doc['path']}"))
    if doc.get("rules"):
        table = Table(
            title=f"{args.method} {raw_path} to {workload.namespace}/{args.target} from {args.source or 'a plaintext caller'}"
        )
        for col in ("STEP", "RULE", "RESULT", "WHY NOT"):
            table.add_column(col, overflow="fold")
        for row in doc["rules"]:
            table.add_row(
                row["step"], Text(row["rule"]), row["result"], Text("\n".join(row["failed"]) or "-")
            )
        console.print(table)
    for problem in doc.get("problems", []):
        console.print(f"[yellow]Warning:[/yellow] {escape(problem)}")
    return 0


def explain(compiled: Compiled | None, workload: Workload, request: Request, raw_path: str) -> dict[str, Any]:
    """The decision for ``request`` (path not yet normalized: ``raw_path``), with every rule's outcome."""
    if compiled is None:
        return {"decision": "ALLOW", "reason": "no AuthorizationPolicy applies to this workload", "rules": []}
    path, _query = normalize.split_target(raw_path)
    norm = normalize.normalize_path(path, compiled.settings.normalization)
    if norm is None:
        return {
            "decision": "DENY",
            "reason": "400: the path holds %00 (path_normalization_failed)",
            "rules": [],
        }
    request.path = norm
    t = compiled.tables
    rows = []
    for step, rs in t.steps():
        for rule in rs.rules:
            failed = [f"{where} {describe_check(c)}".strip() for where, c in rule.failed(request)]
            rows.append(
                {"step": step, "rule": rule.id, "result": "-" if failed else "matched", "failed": failed}
            )
    doc: dict[str, Any] = {"path": norm, "rules": rows, "problems": list(compiled.problems)}
    hit = t.custom_match(request)
    if hit is not None and hit.id.endswith(BAD_CUSTOM_SUFFIX):
        return {
            **doc,
            "decision": "DENY",
            "reason": f"{hit.id}: the CUSTOM provider cannot be used",
            "rule": hit.id,
        }
    custom = ""
    if hit is not None and compiled.provider is not None:
        p = compiled.provider
        custom = f"CUSTOM rule {hit.id} sends the request to provider {p.name} ({p.kind}); its answer decides first. "
    d: Decision = t.decide(request)
    reason = _reason(d)
    if d.dry_run:
        reason += "; dry run: " + ", ".join(f"{a} {res} ({pol or 'no rule'})" for a, res, pol in d.dry_run)
    if d.audit:
        reason += f"; audited by {d.audit}"
    return {**doc, "decision": "ALLOW" if d.allowed else "DENY", "reason": custom + reason, "rule": d.policy}


def _reason(d: Decision) -> str:
    if d.allowed and not d.action:
        return "no ALLOW policy applies and no DENY rule matches"
    if d.allowed:
        return f"allowed by {d.policy}"
    if d.policy == "none":
        return "ALLOW policies apply and none of their rules matches (403, policy none)"
    return f"denied by {d.policy} (403 RBAC: access denied)"


def _resources(args: argparse.Namespace) -> list[Resource]:
    if args.filename:
        loaded = admission.load_documents(collect(args.filename))
        if not loaded.ok:
            raise ValueError(admission.render_errors(loaded.validation))
        return list(loaded.resources)

    async def fetch(client: ConfigClient) -> ListReply:
        return await client.list(all_namespaces=True)

    out: list[Resource] = []
    for record in with_client(args, fetch).items:
        try:
            out.append(from_record(record).to_resource())
        except ValidationError as exc:
            print(
                f"Warning: stored {record.kind} {record.namespace}/{record.name} skipped: {exc}",
                file=sys.stderr,
            )
    return out


def _request(args: argparse.Namespace, resources: Sequence[Resource]) -> tuple[Workload, Request, str]:
    target = args.target
    if "/" in target:
        ns, name = target.split("/", 1)
    elif "." in target:
        name, ns = target.split(".", 2)[:2]
    else:
        name, ns = target, args.namespace
    labels = dict(kv.split("=", 1) for kv in args.labels.split(",") if kv) if args.labels else {"app": name}
    workload = Workload(ns, labels, args.port)
    headers: dict[str, str] = {}
    for h in args.header:
        k, sep, v = h.partition("=")
        if not sep:
            raise ValueError(f"--header wants NAME=VALUE, got {h!r}")
        k = k.strip().lower()
        headers[k] = f"{headers[k]},{v}" if k in headers else v
    host = args.host or name
    headers.setdefault("host", host)
    auth = _jwt(args.jwt_claims) if args.jwt_claims else None
    mesh_config_of(resources)  # several MeshConfigs: say so before anything else
    request = Request(
        _principal(args.source, args.namespace, args.trust_domain), args.source_ip, args.method, host,
        args.path, headers, auth, remote_ip=args.remote_ip, dest_port=args.port,
    )  # fmt: skip
    return workload, request, args.path


def _principal(source: str, namespace: str, trust_domain: str) -> str:
    if not source or source == "none":
        return ""
    if source.startswith("spiffe://"):
        return source
    parts = source.split("/")
    if len(parts) == 5:  # td/ns/NS/sa/SA, as policies write principals
        return "spiffe://" + source
    ns, sa = (parts[0], parts[1]) if len(parts) == 2 else (namespace, parts[0])
    return f"spiffe://{trust_domain}/ns/{ns}/sa/{sa}"


def _jwt(text: str) -> dict[str, Any]:
    try:
        claims = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--jwt-claims is not JSON: {exc}") from None
    if not isinstance(claims, dict):
        raise ValueError("--jwt-claims must be a JSON object of claims")
    aud = claims.get("aud")
    iss, sub = claims.get("iss"), claims.get("sub")
    return {
        "principal": f"{iss}/{sub}" if iss and sub else None,
        "audiences": aud if isinstance(aud, list) else ([aud] if isinstance(aud, str) else []),
        "presenter": claims.get("azp"),
        "claims": claims,
    }
